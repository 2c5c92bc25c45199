//! The printed figures: median, p90, p99 and max of each phase's trials.

use std::time::Duration;

/// One alert trial, both measured from the receiver's 200; None past the trial timeout.
pub struct Trial {
    /// A watch saw the wave's HTTPRoute deleted.
    pub route_deleted: Option<Duration>,
    /// Every request of the cohort was answered by legacy at the gateway.
    pub at_gateway: Option<Duration>,
}

pub fn report(phase: &str, trials: &[Trial]) {
    println!("{phase}:");
    let deleted: Vec<_> = trials.iter().map(|t| t.route_deleted).collect();
    let gateway: Vec<_> = trials.iter().map(|t| t.at_gateway).collect();
    report_one("  -> HTTPRoute deleted", &deleted);
    report_one("  -> legacy at the gateway", &gateway);
}

pub fn report_one(what: &str, samples: &[Option<Duration>]) {
    let missed = samples.iter().filter(|s| s.is_none()).count();
    let mut latencies: Vec<Duration> = samples.iter().flatten().copied().collect();
    if latencies.is_empty() {
        println!("{what}: no samples ({missed} over 30 s)");
        return;
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(latencies.len() - 1)]
    };
    println!(
        "{what}: {} samples: median {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}{}",
        latencies.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies[latencies.len() - 1],
        if missed > 0 {
            format!("; {missed} more took over 30 s")
        } else {
            String::new()
        }
    );
}
