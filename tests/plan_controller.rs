//! The CutoverPlan controller with the wave controller on a real API server (and a real
//! Prometheus for gates): order and concurrency, gates, freeze windows, the failure
//! policies, and deletion.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use common::waves::*;
use jiff::Timestamp;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use switchyard::{
    alerts::{AlertStore, WebhookPayload},
    analysis::{Analyzer, Prometheus as PrometheusClient, PrometheusSettings},
    api::{CutoverPlan, MigrationWave, PlanPhase, WavePhase},
    controller::Services,
    routing::{HTTPRoute, gateway::route_name},
};

fn started_at(wave: &MigrationWave) -> Timestamp {
    wave.status
        .as_ref()
        .unwrap()
        .history
        .iter()
        .find(|h| h.event == "WaveStarted")
        .expect("started")
        .at
        .0
}

fn completed_at(wave: &MigrationWave) -> Timestamp {
    wave.status
        .as_ref()
        .unwrap()
        .history
        .iter()
        .find(|h| h.event == "Completed")
        .expect("completed")
        .at
        .0
}

async fn three_waves(max: i32) -> (Client, String, RunningController) {
    let (client, ns) = common::admin_in_fresh_namespace(&format!("order-{max}")).await;
    create_backends(&client, &ns).await;
    let mut p = plan("crm", &["a", "b", "c"], false);
    p.spec.waves[1].after = vec!["a".into()];
    p.spec.waves[2].after = vec!["a".into()];
    p.spec.max_concurrent_waves = Some(max);
    create(&client, &ns, &p).await;
    let controller = RunningController::start(&client, &ns);
    for (name, team) in [("a", "support"), ("b", "sales"), ("c", "marketing")] {
        create(
            &client,
            &ns,
            &wave(
                name,
                "crm",
                team,
                "emea",
                json!([{"setWeight": 50}, {"analysis": {"duration": "2s"}}]),
            ),
        )
        .await;
    }
    (client, ns, controller)
}

#[tokio::test]
async fn with_one_slot_waves_start_strictly_in_order() {
    let (client, ns, controller) = three_waves(1).await;
    let pending = wait_wave(
        &client,
        &ns,
        "b",
        Duration::from_secs(20),
        "held by order",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.phase == WavePhase::Pending)
        },
    )
    .await;
    assert_eq!(pending.status.unwrap().step_index, None);
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &ns);
    // The plan records its waves once its cache of them has synced, which may be just
    // after b's own first status.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let b = loop {
        let early = plans.get("crm").await.unwrap().status.unwrap_or_default();
        if let Some(b) = early.waves.into_iter().find(|w| w.name == "b") {
            break b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the plan never listed wave b"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        matches!(b.held_by.as_deref(), Some("Order" | "Concurrency")),
        "{b:?}"
    );

    let waves: Vec<MigrationWave> = futures::future::join_all(
        ["a", "b", "c"].map(|n| wait_phase(&client, &ns, n, WavePhase::Completed, None)),
    )
    .await;
    let (a, b, c) = (&waves[0], &waves[1], &waves[2]);
    assert!(
        started_at(b) >= completed_at(a),
        "b started before a completed"
    );
    assert!(
        started_at(c) >= completed_at(a),
        "c started before a completed"
    );
    assert!(
        started_at(c) >= completed_at(b),
        "with one slot, c waits for b (the plan's order)"
    );
    // The plan sees the last completion on its next reconcile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let plan = plans.get("crm").await.unwrap().status.unwrap();
        if plan.phase == PlanPhase::Completed {
            assert_eq!(plan.waves_summary.as_deref(), Some("3/3"));
            println!(
                "three-wave plan to Completed: {} reconciles (plan and waves), {} status writes, {} routing writes",
                controller.stats.reconciles(),
                controller.stats.status_writes(),
                controller.stats.routing_writes()
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "plan is {:?}",
            plan.phase
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn with_two_slots_b_and_c_run_together_after_a() {
    let (client, ns, _controller) = three_waves(2).await;
    let waves: Vec<MigrationWave> = futures::future::join_all(
        ["a", "b", "c"].map(|n| wait_phase(&client, &ns, n, WavePhase::Completed, None)),
    )
    .await;
    let (a, b, c) = (&waves[0], &waves[1], &waves[2]);
    assert!(started_at(b) >= completed_at(a) && started_at(c) >= completed_at(a));
    assert!(
        started_at(c) < completed_at(b) && started_at(b) < completed_at(c),
        "b and c overlapped"
    );
}

#[tokio::test]
async fn gates_hold_every_wave_until_they_pass() {
    let (client, ns) = common::admin_in_fresh_namespace("gates").await;
    create_backends(&client, &ns).await;
    let exporter = switchyard_testenv::Exporter::start().await.unwrap();
    exporter.set("crm_open_defects", &[("severity", "critical")], 3.0);
    let prometheus = switchyard_testenv::Prometheus::start(exporter.addr(), "", None)
        .await
        .unwrap();
    prometheus
        .wait_for_value(
            "sum(crm_open_defects)",
            |v| v == 3.0,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let services = Services {
        analyzer: Arc::new(Analyzer::new(
            Some(
                PrometheusClient::new(&PrometheusSettings {
                    url: prometheus.url(),
                    bearer_token: None,
                    timeout: Duration::from_secs(2),
                    max_concurrent: 4,
                })
                .unwrap(),
            ),
            4,
        )),
        ..Services::default()
    };
    let mut p = plan("crm", &["a", "b"], false);
    p.spec.analysis = Some(serde_json::from_value(json!({"interval": "1s"})).unwrap());
    p.spec.readiness_gates = serde_json::from_value(json!([
        {"name": "critical-defects-zero", "prometheus": {"query": "sum(crm_open_defects{severity=\"critical\"})", "max": 0}},
        {"name": "rehearsal-accepted", "manual": {}}
    ]))
    .unwrap();
    create(&client, &ns, &p).await;
    let _controller = RunningController::start_with_services(&client, &ns, services);
    create(
        &client,
        &ns,
        &wave(
            "a",
            "crm",
            "support",
            "emea",
            json!([{"setWeight": 10}, {"approval": {}}]),
        ),
    )
    .await;
    create(
        &client,
        &ns,
        &wave(
            "b",
            "crm",
            "sales",
            "emea",
            json!([{"setWeight": 10}, {"approval": {}}]),
        ),
    )
    .await;

    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &ns);
    let held = |gate: &'static str| {
        let plans = plans.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let status = plans.get("crm").await.unwrap().status.unwrap_or_default();
                let all_held = status.waves.len() == 2
                    && status.waves.iter().all(|w| {
                        w.held_by.as_deref() == Some("GateFailing")
                            && w.message.as_deref().unwrap_or("").contains(gate)
                    });
                if all_held {
                    return status;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "waves not held by {gate}: {:?}",
                    status.waves
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let status = held("critical-defects-zero").await;
    let gate = status
        .gates
        .iter()
        .find(|g| g.name == "critical-defects-zero")
        .unwrap();
    assert_eq!((gate.passing, gate.value), (false, Some(3.0)));
    assert_eq!(status.gates_summary.as_deref(), Some("0/2"));
    let a = wait_wave(
        &client,
        &ns,
        "a",
        Duration::from_secs(10),
        "held by the plan",
        |w| condition(w, "Progressing") == "False/HeldByPlan",
    )
    .await;
    assert_eq!(a.status.unwrap().phase, WavePhase::Pending);

    exporter.set("crm_open_defects", &[("severity", "critical")], 0.0);
    held("rehearsal-accepted").await;
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        waves.get("a").await.unwrap().status.unwrap().phase,
        WavePhase::Pending,
        "the manual gate still holds"
    );

    pass_gate(
        &ns,
        "crm",
        "rehearsal-accepted",
        "alice",
        "rehearsal #3 signed off",
    )
    .await;
    wait_phase(&client, &ns, "a", WavePhase::AwaitingApproval, Some(1)).await;
    wait_phase(&client, &ns, "b", WavePhase::AwaitingApproval, Some(1)).await;
    let status = plans.get("crm").await.unwrap().status.unwrap();
    let manual = status
        .gates
        .iter()
        .find(|g| g.name == "rehearsal-accepted")
        .unwrap();
    assert_eq!(manual.passed_by.as_deref(), Some("alice"));
    assert_eq!(status.gates_summary.as_deref(), Some("2/2"));
}

#[tokio::test]
async fn a_freeze_window_holds_progress_but_not_rollbacks() {
    let (client, ns) = common::admin_in_fresh_namespace("freeze").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["a", "b"], false)).await;
    let _controller = RunningController::start(&client, &ns);
    let steps = json!([{"setWeight": 10}, {"analysis": {"duration": "1s"}}, {"setWeight": 30}, {"approval": {}}]);
    create(
        &client,
        &ns,
        &wave("a", "crm", "support", "emea", steps.clone()),
    )
    .await;
    create(&client, &ns, &wave("b", "crm", "sales", "emea", steps)).await;
    wait_phase(&client, &ns, "a", WavePhase::AwaitingApproval, Some(3)).await;
    wait_phase(&client, &ns, "b", WavePhase::AwaitingApproval, Some(3)).await;

    // A window in Asia/Kolkata that opened at the start of this minute and closes ~12 s from now.
    let now = Timestamp::now();
    let local = now.to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").unwrap());
    let schedule = format!("{} {} * * *", local.minute(), local.hour());
    let duration = format!("{}s", local.second() + 12);
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &ns);
    plans
        .patch("crm", &PatchParams::default(), &Patch::Merge(json!({"spec": {"freezeWindows": [
            {"name": "quarter-end", "schedule": schedule, "duration": duration, "timeZone": "Asia/Kolkata"}]}})))
        .await
        .unwrap();
    act(
        &client,
        &ns,
        "a",
        json!({"type": "Approve", "step": 3, "user": "alice"}),
    )
    .await;
    let held = wait_wave(
        &client,
        &ns,
        "a",
        Duration::from_secs(10),
        "approved but frozen",
        |w| {
            w.status.as_ref().is_some_and(|s| s.approved_by.is_some())
                && condition(w, "Progressing") == "False/HeldByPlan"
        },
    )
    .await;
    let status = held.status.unwrap();
    assert_eq!(
        (status.phase, status.step_index),
        (WavePhase::AwaitingApproval, Some(3)),
        "no progress inside the window"
    );
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap()
        .message;
    assert!(
        message.contains("quarter-end") && message.contains("open until"),
        "{message}"
    );
    let plan_status = plans.get("crm").await.unwrap().status.unwrap();
    let freeze = plan_status.freeze.expect("the plan shows the open window");
    assert_eq!(freeze.window, "quarter-end");
    assert_eq!(plan_status.phase, PlanPhase::Frozen);

    // A rollback inside the window happens at once.
    act(
        &client,
        &ns,
        "b",
        json!({"type": "Rollback", "user": "carol"}),
    )
    .await;
    wait_phase(&client, &ns, "b", WavePhase::RolledBack, None).await;
    assert!(
        Api::<HTTPRoute>::namespaced(client.clone(), &ns)
            .get_opt(&route_name("b"))
            .await
            .unwrap()
            .is_none()
    );

    // When the window closes, progress resumes by itself.
    let done = wait_wave(
        &client,
        &ns,
        "a",
        Duration::from_secs(40),
        "Completed after the window",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.phase == WavePhase::Completed)
        },
    )
    .await;
    assert!(
        completed_at(&done) >= freeze.until.0,
        "completed inside the window"
    );
}

fn fire(store: &AlertStore, namespace: &str, team: &str) {
    let payload: WebhookPayload = serde_json::from_value(json!({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "HandoffFailures", "team": team, "namespace": namespace}, "fingerprint": team}]}))
    .unwrap();
    store.apply(&payload);
}

async fn failure_policy(policy: &str) -> (Client, String, RunningController) {
    let (client, ns) =
        common::admin_in_fresh_namespace(&format!("policy-{}", policy.to_lowercase())).await;
    create_backends(&client, &ns).await;
    let mut p = plan("crm", &["a", "b"], false);
    p.spec.on_wave_failure = Some(serde_json::from_value(json!(policy)).unwrap());
    create(&client, &ns, &p).await;
    let store = Arc::new(AlertStore::default());
    let controller = RunningController::start_with_services(
        &client,
        &ns,
        Services {
            alerts: store.clone(),
            ..Services::default()
        },
    );
    for (name, team) in [("a", "support"), ("b", "sales")] {
        let mut w = wave(
            name,
            "crm",
            team,
            "emea",
            json!([{"setWeight": 40}, {"approval": {}}, {"setWeight": 80}, {"approval": {}}]),
        );
        w.spec.alerts =
            Some(serde_json::from_value(json!({"matchLabels": {"team": team}})).unwrap());
        create(&client, &ns, &w).await;
        wait_phase(&client, &ns, name, WavePhase::AwaitingApproval, Some(1)).await;
    }
    fire(&store, &ns, "support");
    wait_phase(&client, &ns, "a", WavePhase::RolledBack, None).await;
    (client, ns, controller)
}

async fn route_weight(client: &Client, ns: &str, wave: &str) -> Option<i32> {
    let route = Api::<HTTPRoute>::namespaced(client.clone(), ns)
        .get_opt(&route_name(wave))
        .await
        .unwrap()?;
    Some(
        route.spec.rules[0]
            .backend_refs
            .iter()
            .filter(|b| b.name == "orchestration")
            .map(|b| b.weight)
            .sum(),
    )
}

#[tokio::test]
async fn pause_plan_holds_every_unfinished_wave() {
    let (client, ns, _controller) = failure_policy("PausePlan").await;
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &ns);
    act(
        &client,
        &ns,
        "b",
        json!({"type": "Approve", "step": 1, "user": "alice"}),
    )
    .await;
    let held = wait_wave(
        &client,
        &ns,
        "b",
        Duration::from_secs(20),
        "held by the paused plan",
        |w| {
            condition(w, "Progressing") == "False/HeldByPlan"
                && w.status.as_ref().is_some_and(|s| s.approved_by.is_some())
        },
    )
    .await;
    assert_eq!(
        held.status.unwrap().step_index,
        Some(1),
        "b does not advance"
    );
    assert_eq!(
        route_weight(&client, &ns, "a").await,
        None,
        "a is back on legacy"
    );
    assert_eq!(
        route_weight(&client, &ns, "b").await,
        Some(40),
        "b keeps its routing"
    );
    let status = plans.get("crm").await.unwrap().status.unwrap();
    assert_eq!(status.phase, PlanPhase::Paused);
    assert_eq!(
        status
            .waves
            .iter()
            .find(|w| w.name == "b")
            .unwrap()
            .held_by
            .as_deref(),
        Some("PlanPaused")
    );
}

#[tokio::test]
async fn rollback_wave_rolls_back_only_the_failed_wave() {
    let (client, ns, _controller) = failure_policy("RollbackWave").await;
    act(
        &client,
        &ns,
        "b",
        json!({"type": "Approve", "step": 1, "user": "alice"}),
    )
    .await;
    wait_phase(&client, &ns, "b", WavePhase::AwaitingApproval, Some(3)).await;
    assert_eq!(route_weight(&client, &ns, "a").await, None);
    assert_eq!(route_weight(&client, &ns, "b").await, Some(80), "b goes on");
    let plan = Api::<CutoverPlan>::namespaced(client.clone(), &ns)
        .get("crm")
        .await
        .unwrap();
    assert_eq!(plan.status.unwrap().phase, PlanPhase::Progressing);
}

#[tokio::test]
async fn rollback_plan_rolls_back_every_started_wave() {
    let (client, ns, _controller) = failure_policy("RollbackPlan").await;
    let b = wait_phase(&client, &ns, "b", WavePhase::RolledBack, None).await;
    assert_eq!(condition(&b, "RolledBack"), "True/PlanRollback");
    assert_eq!(route_weight(&client, &ns, "a").await, None);
    assert_eq!(route_weight(&client, &ns, "b").await, None);
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while plans.get("crm").await.unwrap().status.unwrap().phase != PlanPhase::Failed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "plan did not reach Failed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn deleting_a_plan_restores_legacy_before_the_plan_goes() {
    let (client, ns) = common::admin_in_fresh_namespace("plan-delete").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["a"], false)).await;
    let _controller = RunningController::start(&client, &ns);
    create(
        &client,
        &ns,
        &wave(
            "a",
            "crm",
            "support",
            "emea",
            json!([{"setWeight": 60}, {"approval": {}}]),
        ),
    )
    .await;
    wait_phase(&client, &ns, "a", WavePhase::AwaitingApproval, Some(1)).await;
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &ns);
    let plan = plans.get("crm").await.unwrap();
    assert!(
        plan.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"switchyard.dev/rollback-waves".to_owned())
    );

    // Watch the plan disappear, and check legacy at that moment.
    plans.delete("crm", &DeleteParams::default()).await.unwrap();
    let uid = plan.metadata.uid.unwrap();
    let gone = tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            plans.clone(),
            "crm",
            kube::runtime::wait::conditions::is_deleted(&uid),
        ),
    )
    .await;
    assert!(matches!(gone, Ok(Ok(_))), "the plan's deletion finished");
    assert_eq!(
        route_weight(&client, &ns, "a").await,
        None,
        "legacy restored before the plan went"
    );
    let wave: MigrationWave = Api::namespaced(client.clone(), &ns).get("a").await.unwrap();
    let status = wave.status.unwrap();
    assert_eq!(status.phase, WavePhase::RolledBack);
    let rolled = status
        .history
        .iter()
        .find(|h| h.event == "RolledBack")
        .unwrap();
    assert!(
        rolled
            .message
            .as_deref()
            .unwrap()
            .contains("the plan is being deleted")
    );
    let _ = BTreeMap::<String, String>::new();
}

#[tokio::test]
async fn unlisted_waves_and_unknown_time_zones_are_clear_conditions() {
    let (client, ns) = common::admin_in_fresh_namespace("plan-invalid").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["a"], false)).await;
    let _controller = RunningController::start(&client, &ns);
    create(
        &client,
        &ns,
        &wave(
            "stray",
            "crm",
            "support",
            "emea",
            json!([{"setWeight": 10}]),
        ),
    )
    .await;
    let stray = wait_wave(
        &client,
        &ns,
        "stray",
        Duration::from_secs(20),
        "NotInPlan",
        |w| condition(w, "Valid") == "False/NotInPlan",
    )
    .await;
    assert_eq!(stray.status.unwrap().phase, WavePhase::Pending);
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &ns);
    let plan_condition = |reason: &'static str| {
        let plans = plans.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let status = plans.get("crm").await.unwrap().status.unwrap_or_default();
                if let Some(c) = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Valid" && c.reason == reason && c.status == "False")
                {
                    return c.message.clone();
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "plan condition {reason} missing: {:?}",
                    status.conditions
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let message = plan_condition("UnlistedWaves").await;
    assert!(
        message.contains("stray") && message.contains("not in spec.waves"),
        "{message}"
    );

    plans
        .patch("crm", &PatchParams::default(), &Patch::Merge(json!({"spec": {"freezeWindows": [
            {"name": "quarter-end", "schedule": "0 0 28 3,6,9,12 *", "duration": "96h", "timeZone": "Mars/Olympus"}]}})))
        .await
        .unwrap();
    let message = plan_condition("InvalidFreezeWindow").await;
    assert!(message.contains("Mars/Olympus"), "{message}");
    create(
        &client,
        &ns,
        &wave("a", "crm", "sales", "emea", json!([{"setWeight": 10}])),
    )
    .await;
    let held = wait_wave(&client, &ns, "a", Duration::from_secs(20), "held", |w| {
        condition(w, "Progressing") == "False/HeldByPlan"
    })
    .await;
    assert_eq!(
        held.status.unwrap().phase,
        WavePhase::Pending,
        "an unreadable freeze window holds to be safe"
    );
}
