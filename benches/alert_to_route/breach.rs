//! A metric breach through analysis: from the moment Prometheus first answers the
//! breaching value to the moment the cohort's requests are answered by legacy at the
//! gateway. The operator evaluates the metric every `interval` (1 s here), so most of
//! this figure is that interval; the rest is the rollback's write and the gateway.

use std::time::{Duration, Instant};

use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::json;
use switchyard::api::{CutoverPlan, MigrationWave, WavePhase};
use switchyard_testenv::{Exporter, Prometheus};

use crate::gateway::Gateway;

const METRIC: &str = "bench_handoff_failures";
/// A plan lists at most 64 waves: the breach waves go in plans of this many.
const PER_PLAN: usize = 50;
const MAX: f64 = 5.0;

fn plan_name(p: usize) -> String {
    format!("breach-{p}")
}

fn team(i: usize) -> String {
    format!("breach-{i}")
}

/// Creates `n` waves at weight 100 in an hour-long analysis step, waits until the gateway
/// serves each one's cohort from the target, then breaches them one at a time.
pub async fn run(
    client: &Client,
    ns: &str,
    plan: serde_json::Value,
    gateway: &Gateway<'_>,
    (exporter, prometheus): (&Exporter, &Prometheus),
    routes: &crate::routes::RouteLog,
    n: usize,
) -> Vec<Option<Duration>> {
    for i in 0..n {
        exporter.set(METRIC, &[("team", &team(i))], 0.0);
    }
    prometheus
        .wait_for_value(
            &format!("count({METRIC})"),
            |v| v == n as f64,
            Duration::from_secs(60),
        )
        .await
        .expect("Prometheus scrapes the breach metric");

    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), ns);
    for p in 0..n.div_ceil(PER_PLAN) {
        let mut plan = plan.clone();
        plan["metadata"]["name"] = json!(plan_name(p));
        plan["spec"]["waves"] = (p * PER_PLAN..((p + 1) * PER_PLAN).min(n))
            .map(|i| json!({"name": format!("b{i}")}))
            .collect();
        plan["spec"]["maxConcurrentWaves"] = json!(PER_PLAN);
        let plan: CutoverPlan = serde_json::from_value(plan).unwrap();
        plans.create(&PostParams::default(), &plan).await.unwrap();
    }
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), ns);
    for i in 0..n {
        let wave: MigrationWave = serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationWave",
            "metadata": {"name": format!("b{i}")},
            "spec": {
                "plan": plan_name(i / PER_PLAN), "cohort": {"team": team(i)},
                "steps": [{"setWeight": 100}, {"analysis": {"duration": "1h"}}],
                "analysis": {"interval": "1s", "metrics": [{
                    "name": "failed-handoffs",
                    "query": format!("{METRIC}{{team=\"{{{{team}}}}\"}}"),
                    "max": MAX, "failureLimit": 1, "onFailure": "Rollback"
                }]}
            }
        }))
        .unwrap();
        waves.create(&PostParams::default(), &wave).await.unwrap();
    }
    let analysing = wait_analysing(&waves, n).await;
    crate::wait_gateway_caught_up(routes).await;
    let started = Instant::now();
    for &i in &analysing {
        assert!(
            gateway
                .wait_target(&team(i), Duration::from_secs(300))
                .await,
            "the gateway never served breach wave b{i} from the target"
        );
    }
    println!(
        "{} breach waves analysing, each served from the target at the gateway ({:.1?} after they all analysed)",
        analysing.len(),
        started.elapsed()
    );

    let mut samples = Vec::with_capacity(n);
    for &i in &analysing {
        exporter.set(METRIC, &[("team", &team(i))], MAX * 2.0);
        let breached = breached_at(prometheus, &team(i)).await;
        let deadline = breached + Duration::from_secs(30);
        let sample = gateway.until_legacy(&team(i), breached, deadline).await;
        if sample.is_none_or(|took| took > SLOW) {
            explain(&waves, i, sample).await;
        }
        samples.push(sample);
    }
    samples
}

/// A breach slower than this is explained from the wave's status.
const SLOW: Duration = Duration::from_secs(5);

/// Prints what the wave's status says of a slow or missed breach: its phase, its last
/// evaluation and its newest history.
async fn explain(waves: &Api<MigrationWave>, i: usize, sample: Option<Duration>) {
    let took = sample.map_or("over 30 s".to_owned(), |took| format!("{took:.1?}"));
    let Ok(wave) = waves.get(&format!("b{i}")).await else {
        println!("breach wave b{i} took {took}; its status could not be read");
        return;
    };
    let status = wave.status.unwrap_or_default();
    println!("breach wave b{i} took {took}: now {:?}", status.phase);
    for metric in &status.analysis {
        println!(
            "  analysis {}: {} value {:?} at {:?} ({} failures) {}",
            metric.name,
            metric.result,
            metric.value,
            metric.evaluated_at.as_ref().map(|t| t.0),
            metric.consecutive_failures,
            metric.message.as_deref().unwrap_or("")
        );
    }
    for entry in status.history.iter().rev().take(6).rev() {
        println!(
            "  {:?} {} {} {}",
            entry.at.0,
            entry.event,
            entry.reason.as_deref().unwrap_or(""),
            entry.message.as_deref().unwrap_or("")
        );
    }
}

/// When Prometheus first answers the breaching value (polled every 10 ms).
async fn breached_at(prometheus: &Prometheus, team: &str) -> Instant {
    let query = format!("{METRIC}{{team=\"{team}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = prometheus.query(&query).await.unwrap_or_default();
        if samples.iter().any(|s| s.value > MAX) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw {team}'s breach"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until none of the `n` breach waves is pending (two minutes at most), and returns
/// the ones in their analysis step. A wave whose evaluations failed (a Prometheus query
/// timing out under the bench's load is an Error, which holds a start and pauses a
/// running wave) is left out and reported.
async fn wait_analysing(waves: &Api<MigrationWave>, n: usize) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let params = ListParams::default();
    loop {
        let list = waves.list(&params).await.unwrap();
        let phases: Vec<(usize, WavePhase, String)> = list
            .items
            .iter()
            .filter_map(|w| {
                let i = w
                    .metadata
                    .name
                    .as_deref()?
                    .strip_prefix('b')?
                    .parse()
                    .ok()?;
                let status = w.status.clone().unwrap_or_default();
                let result = status
                    .analysis
                    .first()
                    .map(|m| m.result.clone())
                    .unwrap_or_default();
                Some((i, status.phase, result))
            })
            .collect();
        let started = phases
            .iter()
            .filter(|(_, phase, _)| *phase != WavePhase::Pending)
            .count();
        if started == n || Instant::now() >= deadline {
            let mut analysing = Vec::new();
            for (i, phase, result) in phases {
                if phase == WavePhase::Progressing {
                    analysing.push(i);
                } else {
                    println!("breach wave b{i} left out: {phase:?} (analysis {result})");
                }
            }
            analysing.sort();
            return analysing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
