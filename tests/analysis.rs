//! Analysis and alerts against a real Prometheus and Alertmanager (Debian's packages)
//! and a real API server. The tests set exporter values; Prometheus scrapes them every
//! second.

mod common;

use std::{sync::Arc, time::Duration};

use common::waves::*;
use kube::{Api, Client};
use serde_json::json;
use switchyard::{
    alerts::AlertStore,
    analysis::{Analyzer, Prometheus as PrometheusClient, PrometheusSettings},
    api::{MigrationWave, WavePhase},
    controller::Services,
    routing::{HTTPRoute, gateway::route_name},
};
use switchyard_testenv::{Alertmanager, Exporter, Prometheus};

const TOKEN: &str = "receiver-token";

const RULES: &str = r#"
groups:
  - name: crm
    rules:
      - alert: CustomerComplaints
        expr: crm_complaints > 3
        for: 0s
        labels: { severity: page }
"#;

struct Stack {
    client: Client,
    ns: String,
    exporter: Exporter,
    prometheus: Prometheus,
    _alertmanager: Alertmanager,
    services: Services,
    _receiver: tokio::task::JoinHandle<()>,
}

async fn stack(prefix: &str, config_map: bool) -> Stack {
    let (client, ns) = common::admin_in_fresh_namespace(prefix).await;
    create_backends(&client, &ns).await;
    let exporter = Exporter::start().await.unwrap();
    let alerts = Arc::new(AlertStore::default());
    let (receiver_url, receiver) = serve_receiver(TOKEN, alerts.clone()).await;
    let alertmanager = Alertmanager::start(&receiver_url, TOKEN).await.unwrap();
    let prometheus = Prometheus::start(exporter.addr(), RULES, Some(alertmanager.addr()))
        .await
        .unwrap();
    let query_client = PrometheusClient::new(&PrometheusSettings {
        url: prometheus.url(),
        bearer_token: None,
        timeout: Duration::from_secs(2),
        max_concurrent: 4,
    })
    .unwrap();
    let services = Services {
        analyzer: Arc::new(Analyzer::new(Some(query_client), 4)),
        alerts,
        ..Services::default()
    };
    let names = ["support-emea", "sales-emea", "marketing-emea"];
    create(&client, &ns, &plan("crm", &names, config_map)).await;
    Stack {
        client,
        ns,
        exporter,
        prometheus,
        _alertmanager: alertmanager,
        services,
        _receiver: receiver,
    }
}

fn analysed_wave(
    name: &str,
    team: &str,
    on_failure: &str,
    steps: serde_json::Value,
) -> MigrationWave {
    let mut w = wave(name, "crm", team, "emea", steps);
    w.spec.analysis = Some(
        serde_json::from_value(json!({
            "interval": "1s",
            "metrics": [{
                "name": "failed-handoffs",
                "query": "crm_handoff_failures{team=\"{{team}}\",region=\"{{region}}\"}",
                "max": 5,
                "failureLimit": 2,
                "onFailure": on_failure
            }]
        }))
        .unwrap(),
    );
    w
}

fn steps() -> serde_json::Value {
    json!([{"setWeight": 20}, {"analysis": {"duration": "2s"}}, {"approval": {}}])
}

async fn route(client: &Client, ns: &str, wave: &str) -> Option<HTTPRoute> {
    Api::<HTTPRoute>::namespaced(client.clone(), ns)
        .get_opt(&route_name(wave))
        .await
        .unwrap()
}

#[tokio::test]
async fn healthy_metrics_let_waves_progress_and_a_sustained_breach_rolls_back_or_pauses() {
    let s = stack("analysis-breach", false).await;
    for team in ["support", "sales"] {
        s.exporter.set(
            "crm_handoff_failures",
            &[("team", team), ("region", "emea")],
            1.0,
        );
    }
    s.prometheus
        .wait_for_value(
            "crm_handoff_failures{team=\"sales\"}",
            |v| v == 1.0,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let _controller = RunningController::start_with_services(&s.client, &s.ns, s.services.clone());
    create(
        &s.client,
        &s.ns,
        &analysed_wave("support-emea", "support", "Rollback", steps()),
    )
    .await;
    create(
        &s.client,
        &s.ns,
        &analysed_wave("sales-emea", "sales", "Pause", steps()),
    )
    .await;
    for name in ["support-emea", "sales-emea"] {
        let waiting =
            wait_phase(&s.client, &s.ns, name, WavePhase::AwaitingApproval, Some(2)).await;
        let metric = &waiting.status.unwrap().analysis[0];
        assert_eq!(
            (metric.result.as_str(), metric.value),
            ("Healthy", Some(1.0))
        );
    }

    for team in ["support", "sales"] {
        s.exporter.set(
            "crm_handoff_failures",
            &[("team", team), ("region", "emea")],
            9.0,
        );
    }
    let rolled = wait_phase(
        &s.client,
        &s.ns,
        "support-emea",
        WavePhase::RolledBack,
        None,
    )
    .await;
    assert_eq!(condition(&rolled, "RolledBack"), "True/MetricBreached");
    let metric = &rolled.status.as_ref().unwrap().analysis[0];
    assert_eq!(metric.result, "Breached");
    assert_eq!(metric.value, Some(9.0));
    assert!(
        metric.consecutive_failures >= 2,
        "failureLimit 2 applies: {}",
        metric.consecutive_failures
    );
    assert!(
        route(&s.client, &s.ns, "support-emea").await.is_none(),
        "rolled back to legacy"
    );

    let paused = wait_phase(&s.client, &s.ns, "sales-emea", WavePhase::Paused, Some(2)).await;
    assert_eq!(condition(&paused, "Paused"), "True/MetricBreached");
    let kept = route(&s.client, &s.ns, "sales-emea")
        .await
        .expect("a paused wave keeps its routing");
    let target: i32 = kept.spec.rules[0]
        .backend_refs
        .iter()
        .filter(|b| b.name == "orchestration")
        .map(|b| b.weight)
        .sum();
    assert_eq!(target, 20);
    assert!(s.services.analyzer.stats.queries_sent() > 0);
}

#[tokio::test]
async fn an_empty_result_keeps_a_wave_from_starting_and_pauses_a_running_one() {
    let s = stack("analysis-nodata", false).await;
    let _controller = RunningController::start_with_services(&s.client, &s.ns, s.services.clone());
    // Nothing exports the series for this cohort: the wave's start is evaluated, and it
    // does not start on missing evidence.
    create(
        &s.client,
        &s.ns,
        &analysed_wave("marketing-emea", "marketing", "Rollback", steps()),
    )
    .await;
    let pending = wait_wave(
        &s.client,
        &s.ns,
        "marketing-emea",
        Duration::from_secs(30),
        "Pending on NoData",
        |w| condition(w, "Progressing") == "False/MetricUnknown",
    )
    .await;
    let status = pending.status.as_ref().unwrap();
    assert_eq!(
        (status.phase, status.step_index),
        (WavePhase::Pending, None)
    );
    assert_eq!(status.analysis[0].result, "NoData");
    assert!(route(&s.client, &s.ns, "marketing-emea").await.is_none());

    // The series appears: the wave starts and runs to its approval.
    let labels = [("team", "marketing"), ("region", "emea")];
    s.exporter.set("crm_handoff_failures", &labels, 1.0);
    wait_phase(
        &s.client,
        &s.ns,
        "marketing-emea",
        WavePhase::AwaitingApproval,
        Some(2),
    )
    .await;
    // It disappears: NoData pauses the running wave, which keeps its routing.
    s.exporter.remove("crm_handoff_failures", &labels);
    let paused = wait_phase(
        &s.client,
        &s.ns,
        "marketing-emea",
        WavePhase::Paused,
        Some(2),
    )
    .await;
    assert_eq!(condition(&paused, "Paused"), "True/NoData");
    let paused_at = paused.status.as_ref().unwrap().analysis[0]
        .evaluated_at
        .clone()
        .unwrap()
        .0;
    assert!(route(&s.client, &s.ns, "marketing-emea").await.is_some());
    // Later evaluations (every second) change nothing: it never advances on missing
    // evidence.
    let later = wait_wave(
        &s.client,
        &s.ns,
        "marketing-emea",
        Duration::from_secs(20),
        "a later evaluation",
        |w| {
            w.status.as_ref().is_some_and(|st| {
                st.analysis
                    .first()
                    .and_then(|m| m.evaluated_at.as_ref())
                    .is_some_and(|at| at.0 > paused_at + jiff::SignedDuration::from_secs(2))
            })
        },
    )
    .await;
    let status = later.status.unwrap();
    assert_eq!(
        (status.phase, status.step_index),
        (WavePhase::Paused, Some(2)),
        "never advances on missing evidence"
    );
}

#[tokio::test]
async fn prometheus_down_pauses_and_coming_back_resumes_nothing() {
    let mut s = stack("analysis-outage", false).await;
    s.exporter.set(
        "crm_handoff_failures",
        &[("team", "support"), ("region", "emea")],
        0.0,
    );
    s.prometheus
        .wait_for_value(
            "crm_handoff_failures{team=\"support\"}",
            |v| v == 0.0,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let _controller = RunningController::start_with_services(&s.client, &s.ns, s.services.clone());
    let steps = json!([{"setWeight": 20}, {"analysis": {"duration": "1h"}}]);
    create(
        &s.client,
        &s.ns,
        &analysed_wave("support-emea", "support", "Rollback", steps),
    )
    .await;
    wait_wave(
        &s.client,
        &s.ns,
        "support-emea",
        Duration::from_secs(30),
        "a healthy evaluation at step 1",
        |w| {
            w.status.as_ref().is_some_and(|st| {
                st.step_index == Some(1)
                    && st.analysis.first().is_some_and(|m| m.result == "Healthy")
            })
        },
    )
    .await;

    s.prometheus.stop();
    let paused = wait_phase(&s.client, &s.ns, "support-emea", WavePhase::Paused, Some(1)).await;
    assert_eq!(condition(&paused, "Paused"), "True/QueryError");
    assert_eq!(paused.status.as_ref().unwrap().analysis[0].result, "Error");
    assert!(
        route(&s.client, &s.ns, "support-emea").await.is_some(),
        "an Error pauses; it does not roll back by default"
    );

    s.prometheus.restart().await.unwrap();
    s.prometheus
        .wait_for_value(
            "crm_handoff_failures{team=\"support\"}",
            |v| v == 0.0,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    wait_wave(
        &s.client,
        &s.ns,
        "support-emea",
        Duration::from_secs(20),
        "a healthy evaluation again",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|st| st.analysis.first().is_some_and(|m| m.result == "Healthy"))
        },
    )
    .await;
    let still: MigrationWave = Api::namespaced(s.client.clone(), &s.ns)
        .get("support-emea")
        .await
        .unwrap();
    assert_eq!(
        still.status.unwrap().phase,
        WavePhase::Paused,
        "Prometheus coming back resumes nothing"
    );
    act(
        &s.client,
        &s.ns,
        "support-emea",
        json!({"type": "Resume", "user": "bob"}),
    )
    .await;
    wait_phase(
        &s.client,
        &s.ns,
        "support-emea",
        WavePhase::Progressing,
        Some(1),
    )
    .await;
}

#[tokio::test]
async fn the_full_alerting_chain_rolls_a_wave_back() {
    let s = stack("alert-chain", false).await;
    let _controller = RunningController::start_with_services(&s.client, &s.ns, s.services.clone());
    let mut w = wave(
        "support-emea",
        "crm",
        "support",
        "emea",
        json!([{"setWeight": 30}, {"approval": {}}]),
    );
    w.spec.alerts = Some(
        serde_json::from_value(json!({"matchLabels": {"team": "support", "region": "emea"}}))
            .unwrap(),
    );
    create(&s.client, &s.ns, &w).await;
    wait_phase(
        &s.client,
        &s.ns,
        "support-emea",
        WavePhase::AwaitingApproval,
        Some(1),
    )
    .await;
    assert!(route(&s.client, &s.ns, "support-emea").await.is_some());

    // The exporter crosses the rule's threshold: Prometheus fires, Alertmanager posts.
    // The series carries the namespace, as series scraped in a cluster do; the alert
    // keeps it, and so acts on waves of that namespace only.
    s.exporter.set(
        "crm_complaints",
        &[
            ("team", "support"),
            ("region", "emea"),
            ("namespace", &s.ns),
        ],
        10.0,
    );
    let rolled = wait_wave(
        &s.client,
        &s.ns,
        "support-emea",
        Duration::from_secs(60),
        "RolledBack by the alert",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|st| st.phase == WavePhase::RolledBack)
        },
    )
    .await;
    assert_eq!(condition(&rolled, "RolledBack"), "True/AlertFiring");
    let entry = rolled
        .status
        .unwrap()
        .history
        .into_iter()
        .find(|h| h.event == "RolledBack")
        .unwrap();
    assert!(entry.message.unwrap().contains("CustomerComplaints"));
    assert!(route(&s.client, &s.ns, "support-emea").await.is_none());
}

#[tokio::test]
async fn hostile_cohort_values_are_escaped_in_queries() {
    let s = stack("analysis-escape", true).await;
    // Admission refuses quotes, backslashes, braces and spaces in cohort values
    // (tests/admission.rs), so no value that could break out of a PromQL string reaches
    // the operator; the escaping stays as a second line and is unit-tested in
    // analysis::template. Here: the punctuation a value may still hold, which a regex
    // would read as metacharacters, selects exactly its own series.
    let hostile = "o.brien_x-1";
    s.exporter.set(
        "crm_handoff_failures",
        &[("team", hostile), ("region", "emea")],
        2.0,
    );
    // Another series that an injected `or` / broken matcher would pick up instead.
    s.exporter.set(
        "crm_handoff_failures",
        &[("team", "support"), ("region", "emea")],
        50.0,
    );
    let values = std::collections::BTreeMap::from([("team".to_owned(), hostile.to_owned())]);
    let escaped =
        switchyard::analysis::template::render("crm_handoff_failures{team=\"{{team}}\"}", &values)
            .unwrap();
    s.prometheus
        .wait_for_value(&escaped, |v| v == 2.0, Duration::from_secs(20))
        .await
        .unwrap();
    let _controller = RunningController::start_with_services(&s.client, &s.ns, s.services.clone());
    create(
        &s.client,
        &s.ns,
        &analysed_wave("support-emea", hostile, "Rollback", steps()),
    )
    .await;
    let waiting = wait_phase(
        &s.client,
        &s.ns,
        "support-emea",
        WavePhase::AwaitingApproval,
        Some(2),
    )
    .await;
    let metric = &waiting.status.unwrap().analysis[0];
    assert_eq!(
        (metric.result.as_str(), metric.value),
        ("Healthy", Some(2.0)),
        "the query matched exactly the hostile cohort's series"
    );
}

/// Issue 11, finding 5: with `interval: 1h`, both 15 s analysis steps used to pass on the
/// one evaluation made before the first of them started, although the metric breached
/// right after it, and the wave reached 100%. Now an analysis step ends only on an
/// evaluation made at or after its end: the breach rolls the wave back at the end of the
/// first analysis step, not an hour later.
#[tokio::test]
async fn an_analysis_step_shorter_than_the_interval_ends_only_on_an_evaluation_at_its_end() {
    let s = stack("analysis-fresh", false).await;
    let labels = [("team", "support"), ("region", "emea")];
    s.exporter.set("crm_handoff_failures", &labels, 0.0);
    s.prometheus
        .wait_for_value(
            "crm_handoff_failures{team=\"support\"}",
            |v| v == 0.0,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let _controller = RunningController::start_with_services(&s.client, &s.ns, s.services.clone());
    let mut w = wave(
        "support-emea",
        "crm",
        "support",
        "emea",
        json!([
            {"setWeight": 5},
            {"analysis": {"duration": "15s"}},
            {"setWeight": 50},
            {"analysis": {"duration": "15s"}},
            {"setWeight": 100}
        ]),
    );
    w.spec.analysis = Some(
        serde_json::from_value(json!({
            "interval": "1h",
            "metrics": [{
                "name": "failed-handoffs",
                "query": "crm_handoff_failures{team=\"{{team}}\",region=\"{{region}}\"}",
                "max": 1,
                "failureLimit": 1,
                "onFailure": "Rollback"
            }]
        }))
        .unwrap(),
    );
    create(&s.client, &s.ns, &w).await;
    let first = wait_wave(
        &s.client,
        &s.ns,
        "support-emea",
        Duration::from_secs(30),
        "a first, Healthy evaluation",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|st| st.analysis.first().is_some_and(|m| m.result == "Healthy"))
        },
    )
    .await;
    let first_at = first.status.unwrap().analysis[0]
        .evaluated_at
        .clone()
        .unwrap()
        .0;

    // The metric breaches right after its first evaluation.
    s.exporter.set("crm_handoff_failures", &labels, 5.0);
    s.prometheus
        .wait_for_value(
            "crm_handoff_failures{team=\"support\"}",
            |v| v == 5.0,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let done = wait_wave(
        &s.client,
        &s.ns,
        "support-emea",
        Duration::from_secs(60),
        "RolledBack or Completed",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|st| matches!(st.phase, WavePhase::RolledBack | WavePhase::Completed))
        },
    )
    .await;
    let status = done.status.clone().unwrap();
    let steps: Vec<String> = status
        .history
        .iter()
        .map(|h| format!("{} {}", h.event, h.message.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        status.phase,
        WavePhase::RolledBack,
        "the breach must roll the wave back: {steps:#?}"
    );
    assert_eq!(condition(&done, "RolledBack"), "True/MetricBreached");
    assert!(
        !steps.iter().any(|s| s.contains("setWeight 50")),
        "never past 5%: {steps:#?}"
    );
    assert!(route(&s.client, &s.ns, "support-emea").await.is_none());
    // At the end of the first analysis step (the evaluation at its end), not an
    // interval later.
    let at = |event: &str, contains: &str| {
        status
            .history
            .iter()
            .find(|h| h.event == event && h.message.as_deref().unwrap_or("").contains(contains))
            .unwrap_or_else(|| panic!("no {event} {contains:?}: {steps:#?}"))
            .at
            .0
    };
    let step_end = at("StepStarted", "analysis for 15s") + jiff::SignedDuration::from_secs(15);
    let rolled_back = at("RolledBack", "");
    let metric = &status.analysis[0];
    let evaluated = metric.evaluated_at.clone().unwrap().0;
    assert_eq!(
        (metric.result.as_str(), metric.value),
        ("Breached", Some(5.0))
    );
    assert!(
        evaluated >= step_end && evaluated > first_at,
        "the deciding evaluation ({evaluated}) is from the step's end ({step_end}) on"
    );
    assert!(
        rolled_back <= step_end + jiff::SignedDuration::from_secs(2),
        "rolled back at {rolled_back}, the step ended at {step_end}"
    );
    // Evidence on demand is a query per guarded move, not a poll: at most the start,
    // the move past setWeight 5 (normally answered by the start's evaluation) and the
    // step's end, within the one-hour interval.
    let sent = s.services.analyzer.stats.queries_sent();
    assert!((2..=3).contains(&sent), "{sent} queries");
}

/// An analysis step with no metric to hold on (neither the wave's nor its plan's) is a
/// timed hold (docs/design-decisions.md), and its history entry and Event say so.
#[tokio::test]
async fn an_analysis_step_without_metrics_is_a_timed_hold_and_says_so() {
    let (client, ns) = common::admin_in_fresh_namespace("analysis-nometrics").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["support-emea"], false)).await;
    let _controller = RunningController::start(&client, &ns);
    create(
        &client,
        &ns,
        &wave(
            "support-emea",
            "crm",
            "support",
            "emea",
            json!([{"setWeight": 10}, {"analysis": {"duration": "1s"}}]),
        ),
    )
    .await;
    let done = wait_phase(&client, &ns, "support-emea", WavePhase::Completed, None).await;
    let status = done.status.unwrap();
    let started = status
        .history
        .iter()
        .find(|h| {
            h.event == "StepStarted" && h.message.as_deref().unwrap_or("").contains("analysis")
        })
        .expect("the analysis step started");
    assert!(
        started
            .message
            .as_deref()
            .unwrap()
            .contains("no analysis metrics apply to this wave: a timed hold"),
        "{started:?}"
    );
    assert!(status.analysis.is_empty());
}
