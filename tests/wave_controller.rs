//! The MigrationWave controller against the real API server: full walks with both
//! routers, pause/resume, rollback at every step type, retry, deletion, isolation of
//! waves, and bad input. Step durations are seconds.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::waves::*;
use futures::StreamExt;
use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use switchyard::{
    api::{CutoverPlan, MigrationWave, WavePhase},
    routing::{
        HTTPRoute, RoutingTableEntry,
        gateway::{COHORT_RULE, HTTPMethod, LEGACY_OVERRIDE_RULE, QUIET_WRITES_RULE, route_name},
    },
};

/// A compact, complete description of a wave's HTTPRoute, checked field by field.
fn describe_route(route: &HTTPRoute, team: &str, region: &str) -> String {
    let spec = &route.spec;
    assert_eq!(spec.hostnames, ["crm.example.com"]);
    assert_eq!(spec.parent_refs.len(), 1);
    assert_eq!(spec.parent_refs[0].name, "public");
    assert_eq!(spec.parent_refs[0].namespace.as_deref(), Some("gateways"));
    let cohort_headers = vec![
        ("x-crm-region".to_owned(), region.to_owned()),
        ("x-crm-team".to_owned(), team.to_owned()),
    ];
    let mut weight = None;
    let mut quiet = "-";
    let mut over = "-";
    for rule in &spec.rules {
        match rule.name.as_deref() {
            Some(COHORT_RULE) => {
                assert_eq!(rule.matches.len(), 1);
                let m = &rule.matches[0];
                assert_eq!(m.method, None);
                let headers: Vec<(String, String)> = m
                    .headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect();
                assert_eq!(
                    headers, cohort_headers,
                    "the cohort rule matches exactly the cohort's headers"
                );
                let target: i32 = rule
                    .backend_refs
                    .iter()
                    .filter(|b| b.name == "orchestration")
                    .map(|b| b.weight)
                    .sum();
                let legacy: i32 = rule
                    .backend_refs
                    .iter()
                    .filter(|b| b.name == "legacy-crm")
                    .map(|b| b.weight)
                    .sum();
                assert_eq!(target + legacy, 100, "weights add up to 100");
                weight = Some(target);
            }
            Some(QUIET_WRITES_RULE) => {
                let methods: Vec<HTTPMethod> =
                    rule.matches.iter().filter_map(|m| m.method).collect();
                assert_eq!(
                    methods,
                    [
                        HTTPMethod::Post,
                        HTTPMethod::Put,
                        HTTPMethod::Patch,
                        HTTPMethod::Delete
                    ]
                );
                for m in &rule.matches {
                    assert_eq!(m.headers.len(), 2, "writes of the cohort only");
                }
                assert_eq!(rule.backend_refs.len(), 1);
                assert_eq!(rule.backend_refs[0].name, "crm-maintenance");
                quiet = "quiet";
            }
            Some(LEGACY_OVERRIDE_RULE) => {
                let headers: Vec<(String, String)> = rule.matches[0]
                    .headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect();
                assert!(
                    headers.contains(&("x-switchyard-legacy".into(), "true".into())),
                    "{headers:?}"
                );
                assert_eq!(headers.len(), 3, "cohort headers plus the override");
                assert_eq!(rule.backend_refs.len(), 1);
                assert_eq!(rule.backend_refs[0].name, "legacy-crm");
                over = "override";
            }
            other => panic!("unexpected rule {other:?}"),
        }
    }
    format!("{}/{quiet}/{over}", weight.expect("a cohort rule"))
}

fn describe_entry(entry: &RoutingTableEntry) -> String {
    format!(
        "{}/{}/{}",
        entry.target_weight,
        if entry.quiet { "quiet" } else { "-" },
        if entry.legacy_override {
            "override"
        } else {
            "-"
        }
    )
}

/// Records every distinct state the wave's routing goes through, from a watch.
struct RoutingTape {
    seen: Arc<Mutex<Vec<String>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl RoutingTape {
    fn gateway(client: &Client, namespace: &str, wave: &str, team: &str, region: &str) -> Self {
        let api: Api<HTTPRoute> = Api::namespaced(client.clone(), namespace);
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", route_name(wave)));
        let (team, region) = (team.to_owned(), region.to_owned());
        Self::record(watcher(api, config), move |event| match event {
            watcher::Event::Apply(route) | watcher::Event::InitApply(route) => {
                Some(describe_route(&route, &team, &region))
            }
            watcher::Event::Delete(_) => Some("none".into()),
            _ => None,
        })
    }

    fn table(client: &Client, namespace: &str, wave: &str) -> Self {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields("metadata.name=crm-routing");
        let wave = wave.to_owned();
        Self::record(watcher(api, config), move |event| match event {
            watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) => {
                Some(match cm.data.as_ref().and_then(|d| d.get(&wave)) {
                    Some(json) => {
                        describe_entry(&RoutingTableEntry::from_json(&wave, json).unwrap())
                    }
                    None => "none".into(),
                })
            }
            watcher::Event::Delete(_) => Some("none".into()),
            _ => None,
        })
    }

    fn record<K: Send + 'static>(
        stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
        describe: impl Fn(watcher::Event<K>) -> Option<String> + Send + 'static,
    ) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let handle = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream.default_backoff());
            while let Some(event) = stream.next().await {
                if let Some(state) = event.ok().and_then(&describe) {
                    let mut seen = sink.lock().unwrap();
                    if seen.last() != Some(&state) {
                        seen.push(state);
                    }
                }
            }
        });
        Self { seen, handle }
    }

    fn states(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RoutingTape {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

async fn current_route(client: &Client, namespace: &str, wave: &str) -> Option<HTTPRoute> {
    Api::<HTTPRoute>::namespaced(client.clone(), namespace)
        .get_opt(&route_name(wave))
        .await
        .unwrap()
}

fn full_walk_steps() -> serde_json::Value {
    json!([
        {"setWeight": 10},
        {"analysis": {"duration": "2s"}},
        {"approval": {}},
        {"quiet": {"duration": "2s"}},
        {"setWeight": 100},
        {"dualAccess": {"duration": "3s"}}
    ])
}

async fn walk(config_map: bool) {
    let (client, ns) =
        common::admin_in_fresh_namespace(if config_map { "walk-cm" } else { "walk-gw" }).await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["support-emea"], config_map)).await;
    let tape = if config_map {
        RoutingTape::table(&client, &ns, "support-emea")
    } else {
        RoutingTape::gateway(&client, &ns, "support-emea", "support", "emea")
    };
    let controller = RunningController::start(&client, &ns);
    create(
        &client,
        &ns,
        &wave("support-emea", "crm", "support", "emea", full_walk_steps()),
    )
    .await;

    let at = |phase, step| wait_phase(&client, &ns, "support-emea", phase, Some(step));
    let analysis = at(WavePhase::Progressing, 1).await;
    assert_eq!(analysis.status.as_ref().unwrap().target_weight, Some(10));
    if !config_map {
        let route = current_route(&client, &ns, "support-emea")
            .await
            .expect("route exists");
        assert_eq!(describe_route(&route, "support", "emea"), "10/-/-");
        let labels = route.metadata.labels.unwrap();
        assert_eq!(labels["switchyard.dev/wave"], "support-emea");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "switchyard");
        let owner = &route.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("MigrationWave", "support-emea")
        );
    }
    let waiting = at(WavePhase::AwaitingApproval, 2).await;
    assert_eq!(condition(&waiting, "Progressing"), "False/AwaitingApproval");
    act(
        &client,
        &ns,
        "support-emea",
        json!({"type": "Approve", "step": 2, "user": "alice", "message": "go"}),
    )
    .await;
    at(WavePhase::Quiet, 3).await;
    if !config_map {
        let route = current_route(&client, &ns, "support-emea").await.unwrap();
        assert_eq!(describe_route(&route, "support", "emea"), "10/quiet/-");
    }
    let dual = at(WavePhase::DualAccess, 5).await;
    let until = dual
        .status
        .as_ref()
        .unwrap()
        .dual_access_until
        .clone()
        .expect("window persisted");
    if !config_map {
        let route = current_route(&client, &ns, "support-emea").await.unwrap();
        assert_eq!(describe_route(&route, "support", "emea"), "100/-/override");
    }
    let done = wait_phase(&client, &ns, "support-emea", WavePhase::Completed, None).await;
    let status = done.status.as_ref().unwrap();
    assert_eq!(condition(&done, "Ready"), "True/Completed");
    let retired = status
        .history
        .iter()
        .find(|h| h.event == "LegacyRetired")
        .expect("legacy retired");
    assert!(
        retired.at >= until,
        "legacy retired at {:?}, before the window ended at {:?}",
        retired.at,
        until
    );
    let approved = status
        .history
        .iter()
        .find(|h| h.event == "Approved")
        .unwrap();
    assert_eq!(approved.actor.as_deref(), Some("alice"));

    // The routing went through exactly these states, in this order.
    let expected = [
        "10/-/-",
        "10/quiet/-",
        "100/-/-",
        "100/-/override",
        "100/-/-",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tape.states() != expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tape.states(), expected, "routing states over the walk");
    let stats = controller.stop().await;
    println!(
        "full walk ({}): {} reconciles, {} status writes, {} routing writes, {} errors",
        if config_map {
            "ConfigMap"
        } else {
            "Gateway API"
        },
        stats.reconciles(),
        stats.status_writes(),
        stats.routing_writes(),
        stats.errors()
    );
    assert_eq!(stats.errors(), 0, "last error: {:?}", stats.last_error());
    assert_eq!(
        stats.routing_writes(),
        expected.len() as u64,
        "one routing write per routing state"
    );
}

#[tokio::test]
async fn a_wave_walks_every_step_to_completed_through_gateway_api() {
    walk(false).await;
}

#[tokio::test]
async fn a_wave_walks_every_step_to_completed_through_a_configmap_table() {
    walk(true).await;
}

#[tokio::test]
async fn pause_holds_resume_continues_and_rollback_waits_for_a_retry() {
    let (client, ns) = common::admin_in_fresh_namespace("pause").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["sales-amer"], false)).await;
    let controller = RunningController::start(&client, &ns);
    let steps = json!([{"setWeight": 20}, {"analysis": {"duration": "2s"}}, {"approval": {}}, {"setWeight": 50}]);
    create(
        &client,
        &ns,
        &wave("sales-amer", "crm", "sales", "amer", steps),
    )
    .await;

    wait_phase(&client, &ns, "sales-amer", WavePhase::Progressing, Some(1)).await;
    act(
        &client,
        &ns,
        "sales-amer",
        json!({"type": "Pause", "user": "bob"}),
    )
    .await;
    let paused = wait_phase(&client, &ns, "sales-amer", WavePhase::Paused, Some(1)).await;
    assert_eq!(condition(&paused, "Paused"), "True/ManualPause");
    // Held past the analysis step's end: still paused, routing unchanged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = wait_phase(&client, &ns, "sales-amer", WavePhase::Paused, Some(1)).await;
    assert_eq!(still.status.unwrap().step_index, Some(1));
    let route = current_route(&client, &ns, "sales-amer").await.unwrap();
    assert_eq!(describe_route(&route, "sales", "amer"), "20/-/-");

    act(
        &client,
        &ns,
        "sales-amer",
        json!({"type": "Resume", "user": "bob"}),
    )
    .await;
    wait_phase(
        &client,
        &ns,
        "sales-amer",
        WavePhase::AwaitingApproval,
        Some(2),
    )
    .await;

    act(
        &client,
        &ns,
        "sales-amer",
        json!({"type": "Rollback", "user": "carol", "message": "duplicates"}),
    )
    .await;
    let rolled = wait_phase(&client, &ns, "sales-amer", WavePhase::RolledBack, None).await;
    assert_eq!(condition(&rolled, "RolledBack"), "True/ManualRollback");
    assert!(
        current_route(&client, &ns, "sales-amer").await.is_none(),
        "rollback removes the route"
    );

    // A later approval does not move a rolled-back wave; it stays until a retry.
    let before = controller.stats.reconciles();
    act(
        &client,
        &ns,
        "sales-amer",
        json!({"type": "Approve", "step": 2, "user": "alice"}),
    )
    .await;
    let ignored = wait_wave(
        &client,
        &ns,
        "sales-amer",
        Duration::from_secs(10),
        "the approval processed",
        |w| w.status.as_ref().is_some_and(|s| s.actions_processed == 4),
    )
    .await;
    assert!(controller.stats.reconciles() > before);
    assert_eq!(
        ignored.status.as_ref().unwrap().phase,
        WavePhase::RolledBack
    );
    assert_eq!(
        ignored.status.unwrap().history.last().unwrap().event,
        "ActionIgnored"
    );
    assert!(current_route(&client, &ns, "sales-amer").await.is_none());

    act(
        &client,
        &ns,
        "sales-amer",
        json!({"type": "Retry", "user": "carol"}),
    )
    .await;
    let retried = wait_phase(&client, &ns, "sales-amer", WavePhase::Progressing, Some(1)).await;
    assert_eq!(retried.status.unwrap().attempt, 1);
    let route = current_route(&client, &ns, "sales-amer").await.unwrap();
    assert_eq!(describe_route(&route, "sales", "amer"), "20/-/-");
}

#[tokio::test]
async fn rollback_at_every_step_type_restores_legacy() {
    let (client, ns) = common::admin_in_fresh_namespace("rollback").await;
    create_backends(&client, &ns).await;
    let cases = [
        (
            "at-weight",
            json!([{"setWeight": 30}, {"analysis": {"duration": "1h"}}]),
            WavePhase::Progressing,
        ),
        (
            "at-approval",
            json!([{"setWeight": 30}, {"approval": {}}]),
            WavePhase::AwaitingApproval,
        ),
        (
            "at-quiet",
            json!([{"setWeight": 30}, {"quiet": {"duration": "1h"}}]),
            WavePhase::Quiet,
        ),
        (
            "at-dual",
            json!([{"setWeight": 100}, {"dualAccess": {"duration": "1h"}}]),
            WavePhase::DualAccess,
        ),
    ];
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    create(&client, &ns, &plan("crm", &names, false)).await;
    let _controller = RunningController::start(&client, &ns);
    for (name, steps, _) in &cases {
        create(
            &client,
            &ns,
            &wave(name, "crm", name, "emea", steps.clone()),
        )
        .await;
    }
    for (name, _, phase) in &cases {
        wait_phase(&client, &ns, name, *phase, Some(1)).await;
        assert!(current_route(&client, &ns, name).await.is_some());
        act(
            &client,
            &ns,
            name,
            json!({"type": "Rollback", "user": "carol"}),
        )
        .await;
    }
    for (name, _, _) in &cases {
        let wave = wait_phase(&client, &ns, name, WavePhase::RolledBack, Some(1)).await;
        assert_eq!(wave.status.unwrap().target_weight, Some(0));
        assert!(
            current_route(&client, &ns, name).await.is_none(),
            "{name}: route removed"
        );
    }
}

#[tokio::test]
async fn a_controller_restart_does_not_reset_the_dual_access_window() {
    let (client, ns) = common::admin_in_fresh_namespace("restart").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["support-apac"], false)).await;
    let controller = RunningController::start(&client, &ns);
    let steps = json!([{"setWeight": 100}, {"dualAccess": {"duration": "8s"}}]);
    create(
        &client,
        &ns,
        &wave("support-apac", "crm", "support", "apac", steps),
    )
    .await;
    let dual = wait_phase(&client, &ns, "support-apac", WavePhase::DualAccess, Some(1)).await;
    let until = dual.status.unwrap().dual_access_until.unwrap();
    controller.stop().await;

    // Wait out most of the window with no controller running.
    let until_std =
        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(until.0.as_second() as u64);
    let remaining = until_std
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(remaining.saturating_sub(Duration::from_secs(3))).await;

    let restarted = RunningController::start(&client, &ns);
    let seen = wait_wave(
        &client,
        &ns,
        "support-apac",
        Duration::from_secs(10),
        "a reconcile after restart",
        |_| restarted.stats.reconciles() > 0,
    )
    .await;
    let status = seen.status.unwrap();
    assert_eq!(
        status.dual_access_until.as_ref(),
        Some(&until),
        "the window was not reset"
    );
    if jiff::Timestamp::now() < until.0 {
        assert_eq!(status.phase, WavePhase::DualAccess);
        let route = current_route(&client, &ns, "support-apac").await.unwrap();
        assert_eq!(describe_route(&route, "support", "apac"), "100/-/override");
    }
    let done = wait_phase(&client, &ns, "support-apac", WavePhase::Completed, None).await;
    let retired = done
        .status
        .unwrap()
        .history
        .into_iter()
        .find(|h| h.event == "LegacyRetired")
        .unwrap();
    assert!(
        retired.at >= until,
        "retired at {:?}, window ended {:?}",
        retired.at,
        until
    );
    let route = current_route(&client, &ns, "support-apac").await.unwrap();
    assert_eq!(describe_route(&route, "support", "apac"), "100/-/-");
}

#[tokio::test]
async fn deleting_a_wave_removes_its_routing_and_leaves_the_other_waves_alone() {
    let (client, ns) = common::admin_in_fresh_namespace("delete").await;
    create_backends(&client, &ns).await;
    create(
        &client,
        &ns,
        &plan("crm", &["support-emea", "sales-emea"], false),
    )
    .await;
    let _controller = RunningController::start(&client, &ns);
    let steps = json!([{"setWeight": 10}, {"approval": {}}]);
    create(
        &client,
        &ns,
        &wave("support-emea", "crm", "support", "emea", steps.clone()),
    )
    .await;
    let steps = json!([{"setWeight": 40}, {"approval": {}}]);
    create(
        &client,
        &ns,
        &wave("sales-emea", "crm", "sales", "emea", steps),
    )
    .await;
    wait_phase(
        &client,
        &ns,
        "support-emea",
        WavePhase::AwaitingApproval,
        Some(1),
    )
    .await;
    wait_phase(
        &client,
        &ns,
        "sales-emea",
        WavePhase::AwaitingApproval,
        Some(1),
    )
    .await;
    let support = current_route(&client, &ns, "support-emea").await.unwrap();
    let sales = current_route(&client, &ns, "sales-emea").await.unwrap();
    assert_eq!(describe_route(&support, "support", "emea"), "10/-/-");
    assert_eq!(describe_route(&sales, "sales", "emea"), "40/-/-");
    let wave_api: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    let with_finalizer = wave_api.get("support-emea").await.unwrap();
    assert!(
        with_finalizer
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"switchyard.dev/routing-cleanup".to_owned())
    );

    wave_api
        .delete("support-emea", &DeleteParams::default())
        .await
        .unwrap();
    let gone = tokio::time::timeout(
        Duration::from_secs(20),
        kube::runtime::wait::await_condition(
            wave_api.clone(),
            "support-emea",
            kube::runtime::wait::conditions::is_deleted(
                &with_finalizer.metadata.uid.clone().unwrap(),
            ),
        ),
    )
    .await;
    assert!(matches!(gone, Ok(Ok(_))), "the wave's deletion finished");
    assert!(
        current_route(&client, &ns, "support-emea").await.is_none(),
        "its route is gone"
    );
    let sales_after = current_route(&client, &ns, "sales-emea").await.unwrap();
    assert_eq!(
        sales_after.metadata.resource_version, sales.metadata.resource_version,
        "the other wave's route was not touched"
    );
    // The plan hears of the deletion itself (not only of the deletion's start, while
    // the finalizer held the wave): its entry goes back to Pending, as for a wave not
    // created yet.
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &ns);
    common::operator::eventually(Duration::from_secs(10), "the plan forgets the wave", || {
        let plans = plans.clone();
        async move {
            let plan = plans.get("crm").await.map_err(|e| e.to_string())?;
            let entry = plan
                .status
                .unwrap_or_default()
                .waves
                .into_iter()
                .find(|w| w.name == "support-emea")
                .ok_or("no entry")?;
            match entry.phase {
                WavePhase::Pending => Ok(()),
                phase => Err(format!("support-emea is {phase:?} in the plan")),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn bad_input_becomes_a_clear_condition_and_routes_nothing() {
    let (client, ns) = common::admin_in_fresh_namespace("bad-input").await;
    create_service(&client, &ns, "legacy-crm", 80).await; // the target Service is missing
    create(
        &client,
        &ns,
        &plan("crm", &["no-backend", "odd-key"], false),
    )
    .await;
    let controller = RunningController::start(&client, &ns);
    let steps = json!([{"setWeight": 10}]);
    create(
        &client,
        &ns,
        &wave("orphan", "missing-plan", "support", "emea", steps.clone()),
    )
    .await;
    create(
        &client,
        &ns,
        &wave("no-backend", "crm", "support", "emea", steps.clone()),
    )
    .await;
    let mut odd = wave("odd-key", "crm", "support", "emea", steps);
    odd.spec.cohort.insert("tier".into(), "gold".into());
    create(&client, &ns, &odd).await;

    let check = |name: &'static str, reason: &'static str, text: &'static str| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let wave = wait_wave(&client, &ns, name, Duration::from_secs(20), reason, |w| {
                condition(w, "Valid") == format!("False/{reason}")
            })
            .await;
            let status = wave.status.unwrap();
            let message = &status
                .conditions
                .iter()
                .find(|c| c.type_ == "Valid")
                .unwrap()
                .message;
            assert!(message.contains(text), "{name}: {message}");
            assert_eq!(status.phase, WavePhase::Pending);
            assert!(
                current_route(&client, &ns, name).await.is_none(),
                "{name}: nothing routed"
            );
        }
    };
    check(
        "orphan",
        "PlanNotFound",
        "CutoverPlan \"missing-plan\" does not exist",
    )
    .await;
    check(
        "no-backend",
        "BackendNotFound",
        "target Service \"orchestration\" does not exist",
    )
    .await;
    check(
        "odd-key",
        "UnknownCohortKey",
        "cohort key \"tier\" is not one of the plan's cohortKeys (region, team)",
    )
    .await;

    // One Warning Event, then no hot loop: the orphan is not reconciled again and again.
    let before = controller.stats.reconciles();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let extra = controller.stats.reconciles() - before;
    assert!(
        extra <= 4,
        "{extra} reconciles in 3 s with nothing changing"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let warnings: Vec<Event> = events
        .list(&ListParams::default().fields("regarding.name=orphan"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].reason.as_deref(), Some("Invalid"));
    assert!(
        warnings[0]
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("PlanNotFound")
    );
}

#[tokio::test]
async fn a_second_wave_of_the_same_cohort_is_marked_and_routes_nothing() {
    let (client, ns) = common::admin_in_fresh_namespace("dup-cohort").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["first", "second"], false)).await;
    let _controller = RunningController::start(&client, &ns);
    let steps = json!([{"setWeight": 10}, {"approval": {}}]);
    create(
        &client,
        &ns,
        &wave("first", "crm", "support", "emea", steps),
    )
    .await;
    wait_phase(&client, &ns, "first", WavePhase::AwaitingApproval, Some(1)).await;
    let first_route = current_route(&client, &ns, "first").await.unwrap();

    let steps = json!([{"setWeight": 50}, {"approval": {}}]);
    create(
        &client,
        &ns,
        &wave("second", "crm", "support", "emea", steps),
    )
    .await;
    let second = wait_wave(
        &client,
        &ns,
        "second",
        Duration::from_secs(20),
        "Valid=False/DuplicateCohort",
        |w| condition(w, "Valid") == "False/DuplicateCohort",
    )
    .await;
    let status = second.status.unwrap();
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .unwrap()
        .message;
    assert!(
        message.contains("MigrationWave \"first\" of the same plan already has the cohort region=emea,team=support"),
        "{message}"
    );
    assert_eq!(status.phase, WavePhase::Pending);
    assert!(
        current_route(&client, &ns, "second").await.is_none(),
        "the duplicate routes nothing"
    );
    let first = Api::<MigrationWave>::namespaced(client.clone(), &ns)
        .get("first")
        .await
        .unwrap();
    assert_eq!(
        condition(&first, "Valid"),
        "True/Valid",
        "the first wave keeps its cohort"
    );
    let route_now = current_route(&client, &ns, "first").await.unwrap();
    assert_eq!(
        route_now.metadata.resource_version, first_route.metadata.resource_version,
        "the first wave's route is untouched"
    );

    // Once the first wave is gone, the cohort is free: the second one starts by itself.
    Api::<MigrationWave>::namespaced(client.clone(), &ns)
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    let started = wait_phase(&client, &ns, "second", WavePhase::AwaitingApproval, Some(1)).await;
    assert_eq!(condition(&started, "Valid"), "True/Valid");
    let route = current_route(&client, &ns, "second").await.unwrap();
    assert_eq!(describe_route(&route, "support", "emea"), "50/-/-");
}
