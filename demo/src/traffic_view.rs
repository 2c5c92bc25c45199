//! The traffic as the demo shows it: under the plan view, each cohort's measured share
//! next to the weight Switchyard set; in the summary, what each backend served.

use std::{collections::BTreeMap, fmt::Write as _};

use switchyard::{
    api::MigrationWave,
    cli::{Style, Tone},
};

use crate::traffic::{Share, Traffic, WINDOW, routing_of};

/// A snapshot of the live table, taken outside the view's closure.
pub struct Table {
    rows: Vec<(String, String, Share)>,
    backends: (String, String, String),
}

/// The table for `waves` now.
pub fn snapshot(traffic: &Traffic, waves: &BTreeMap<String, MigrationWave>) -> Table {
    let rows = traffic
        .cohorts()
        .iter()
        .map(|c| {
            (
                c.wave.clone(),
                routing_of(waves.get(&c.wave)),
                traffic.recent(&c.wave),
            )
        })
        .collect();
    let b = traffic.backends();
    Table {
        rows,
        backends: (
            b.target.clone(),
            b.legacy.clone(),
            b.maintenance.clone().unwrap_or_else(|| "-".into()),
        ),
    }
}

impl Table {
    /// The lines under the plan view.
    pub fn render(&self, style: Style) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| r.0.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let (target, legacy, maintenance) = &self.backends;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{}",
            style.paint(
                Tone::Bold,
                &format!(
                    "Traffic through Traefik, measured over the last {:.1}s: target {target}, legacy {legacy}, maint. {maintenance}",
                    WINDOW.as_secs_f64()
                )
            )
        );
        let _ = writeln!(
            out,
            "  {:width$}  {:<22}  {:>7}  {:>7}  {:>7}  {:>6}  {:>5}",
            "COHORT", "SWITCHYARD SET", "TARGET", "LEGACY", "MAINT.", "OTHER", "REQS"
        );
        for (wave, set, share) in &self.rows {
            let pct = |n: usize| {
                if share.total() == 0 {
                    "-".to_owned()
                } else {
                    format!("{:.0}%", share.percent(n))
                }
            };
            let tone = if share.other > 0 {
                Tone::Bad
            } else if share.target == share.total() && share.total() > 0 {
                Tone::Good
            } else if share.target > 0 || share.maintenance > 0 {
                Tone::Active
            } else {
                Tone::Dim
            };
            let _ = writeln!(
                out,
                "  {:width$}  {:<22}  {}  {:>7}  {:>7}  {:>6}  {:>5}",
                wave,
                set,
                style.paint(tone, &format!("{:>7}", pct(share.target))),
                pct(share.legacy),
                pct(share.maintenance),
                if share.other == 0 {
                    "-".to_owned()
                } else {
                    share.other.to_string()
                },
                share.total()
            );
        }
        out
    }
}

/// What the summary says about the traffic.
#[derive(Clone, Debug)]
pub struct Report {
    lines: Vec<String>,
    /// Why the measured traffic disagrees with the routing, if it does.
    pub failures: Vec<String>,
}

impl Report {
    /// The report, given whether every cohort ended on the target.
    pub fn new(traffic: &Traffic, on_target: Result<(), String>, victim: &str) -> Report {
        let b = traffic.backends();
        let (totals, other) = traffic.totals();
        let all: usize = totals.iter().map(|(_, s)| s.total()).sum();
        let seconds = traffic.running_for().as_secs_f64().max(0.001);
        let width = totals
            .iter()
            .map(|(w, _)| w.len())
            .max()
            .unwrap_or(4)
            .max(6);
        let maintenance = b
            .maintenance
            .clone()
            .unwrap_or_else(|| "maintenance".into());
        let mut lines = vec![
            format!(
                "traffic through Traefik: {all} requests in {seconds:.0}s ({:.0}/s), answered per cohort by:",
                all as f64 / seconds
            ),
            format!(
                "    {:width$}  {:>w1$}  {:>w2$}  {:>w3$}  {:>5}",
                "COHORT",
                b.legacy,
                b.target,
                maintenance,
                "OTHER",
                w1 = b.legacy.len(),
                w2 = b.target.len(),
                w3 = maintenance.len(),
            ),
        ];
        for (wave, s) in &totals {
            lines.push(format!(
                "    {:width$}  {:>w1$}  {:>w2$}  {:>w3$}  {:>5}",
                wave,
                s.legacy,
                s.target,
                s.maintenance,
                s.other,
                w1 = b.legacy.len(),
                w2 = b.target.len(),
                w3 = maintenance.len(),
            ));
        }
        if !other.is_empty() {
            let what: Vec<String> = other.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            lines.push(format!("    answered by no backend: {}", what.join(", ")));
        }
        let mut failures = Vec::new();
        match traffic.gateway_rollback() {
            Some(rollback) => {
                lines.push(format!(
                    "rollback at the gateway: every request of {victim}'s cohort answered by {} from {} (the breach: Prometheus first answered above the ceiling; a request every {:.2}s per cohort)",
                    b.legacy,
                    rollback.describe(),
                    1.0 / f64::from(crate::traffic::PER_COHORT)
                ));
            }
            None => failures.push(format!(
                "the gateway did not send every request of {victim}'s cohort back to {} after its rollback",
                b.legacy
            )),
        }
        match on_target {
            Ok(()) => lines.push(format!(
                "after completion every cohort's requests reached {} (the last {:.1}s)",
                b.target,
                crate::traffic::WINDOW.as_secs_f64()
            )),
            Err(off) => failures.push(format!(
                "after completion not every cohort's requests reach {}: {off}",
                b.target
            )),
        }
        Report { lines, failures }
    }

    /// The lines, each to be indented once by the caller.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}
