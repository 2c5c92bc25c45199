//! `switchyard run` as a real process against a real API server: leader election and
//! failover, metrics scraped by a real Prometheus, graceful shutdown on SIGTERM, and
//! readiness before the CRDs exist.
//!
//! Only `failover_keeps_every_step_and_repeats_no_routing_write` routes through the
//! Gateway API: it counts the API server's HTTPRoute writes, which are global to the
//! control plane this binary shares. The other tests route through ConfigMaps.

mod common;

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{operator::*, waves::*};
use futures::StreamExt;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap, events::v1::Event};
use kube::{
    Api, Client,
    api::DeleteParams,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use switchyard::{
    api::{MigrationWave, WavePhase},
    routing::{
        HTTPRoute,
        gateway::{COHORT_RULE, LEGACY_OVERRIDE_RULE, route_name},
    },
};
use switchyard_testenv::{ControlPlane, Exporter, Prometheus};

const TOKEN: &str = "s3cret-runtime-token";
const FIRING: &str = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"Noise","team":"nobody"}}]}"#;

/// The Lease holder, as the API server has it.
async fn lease_holder(client: &Client, namespace: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    leases
        .get_opt("switchyard")
        .await
        .unwrap()
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity)
}

/// The `N/M` of each StepStarted history entry, in order.
fn steps_started(wave: &MigrationWave) -> Vec<String> {
    wave.status
        .iter()
        .flat_map(|s| &s.history)
        .filter(|entry| entry.event == "StepStarted")
        .map(|entry| {
            let message = entry.message.as_deref().unwrap_or_default();
            message
                .strip_prefix("step ")
                .and_then(|m| m.split(':').next())
                .unwrap_or(message)
                .to_owned()
        })
        .collect()
}

fn count_events(wave: &MigrationWave, event: &str) -> usize {
    wave.status
        .iter()
        .flat_map(|s| &s.history)
        .filter(|entry| entry.event == event)
        .count()
}

/// HTTPRoute write requests the API server has served (all namespaces).
async fn httproute_writes(client: &Client) -> u64 {
    switchyard_testenv::api_writes(client)
        .await
        .unwrap()
        .get("httproutes")
        .copied()
        .unwrap_or(0)
}

/// A route's generation, target weight and whether its legacy override is on.
type RouteVersion = (i64, (i32, bool));

/// The target weight and whether the legacy override is on, as the route has them.
fn route_state(route: &HTTPRoute) -> (i32, bool) {
    let weight = route
        .spec
        .rules
        .iter()
        .filter(|rule| rule.name.as_deref() == Some(COHORT_RULE))
        .flat_map(|rule| &rule.backend_refs)
        .filter(|backend| backend.name == "orchestration")
        .map(|backend| backend.weight)
        .sum();
    let legacy_override = route
        .spec
        .rules
        .iter()
        .any(|rule| rule.name.as_deref() == Some(LEGACY_OVERRIDE_RULE));
    (weight, legacy_override)
}

/// Which of `operators` leads, once exactly one does and the others report standing by.
async fn the_leader(operators: &[Operator]) -> Result<usize, String> {
    let mut leaders = Vec::new();
    for (i, operator) in operators.iter().enumerate() {
        if operator.leads().await? {
            leaders.push(i);
        }
    }
    match leaders.as_slice() {
        [one] => Ok(*one),
        many => Err(format!("{} replicas lead", many.len())),
    }
}

async fn leads(operator: &Operator) -> Result<(), String> {
    match operator.leads().await? {
        true => Ok(()),
        false => Err("standing by".into()),
    }
}

async fn ready(operator: &Operator) -> Result<String, String> {
    match operator.get("/readyz").await? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("/readyz answered {status}: {body}")),
    }
}

#[tokio::test]
async fn failover_keeps_every_step_and_repeats_no_routing_write() {
    let plane = common::plane();
    let (client, ns) = common::admin_in_fresh_namespace("failover").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["support-emea"], false)).await;
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let token_file = token_file.to_str().unwrap();
    let args = [
        "--namespaces",
        &ns,
        "--lease-namespace",
        &ns,
        "--lease-duration",
        "4s",
        "--receiver-token-file",
        token_file,
    ];
    let kubeconfig = plane.kubeconfig_path();
    let mut replicas = vec![
        Operator::start(kubeconfig, "replica-a", &args),
        Operator::start(kubeconfig, "replica-b", &args),
    ];

    // Both become ready (the standby too), and exactly one leads: the Lease holder.
    for replica in &replicas {
        eventually(Duration::from_secs(30), "/readyz 200", || ready(replica)).await;
    }
    let leader = eventually(Duration::from_secs(30), "exactly one leader", || {
        the_leader(&replicas)
    })
    .await;
    let standby = 1 - leader;
    assert_eq!(
        lease_holder(&client, &ns).await.as_deref(),
        Some(replicas[leader].identity.as_str())
    );
    assert!(ready(&replicas[standby]).await.unwrap().contains("standby"));

    // Only the leader takes alerts: they live in its memory.
    assert_eq!(
        replicas[leader]
            .post("/alertmanager", TOKEN, FIRING)
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        replicas[standby]
            .post("/alertmanager", TOKEN, FIRING)
            .await
            .unwrap(),
        503
    );

    // Record every version of the wave's route.
    let routes: Api<HTTPRoute> = Api::namespaced(client.clone(), &ns);
    let versions: Arc<Mutex<Vec<RouteVersion>>> = Arc::default();
    let seen = versions.clone();
    let watch = tokio::spawn(
        watcher(
            routes.clone(),
            watcher::Config::default()
                .fields(&format!("metadata.name={}", route_name("support-emea"))),
        )
        .applied_objects()
        .for_each(move |route| {
            let seen = seen.clone();
            async move {
                let route = route.expect("the route watch works");
                let generation = route.metadata.generation.unwrap_or_default();
                let mut seen = seen.lock().unwrap();
                if seen.last().map(|(g, _)| *g) != Some(generation) {
                    seen.push((generation, route_state(&route)));
                }
            }
        }),
    );
    let writes_before = httproute_writes(&client).await;

    let steps = json!([
        {"setWeight": 10}, {"analysis": {"duration": "3s"}},
        {"setWeight": 50}, {"analysis": {"duration": "3s"}},
        {"setWeight": 100}, {"dualAccess": {"duration": "3s"}}
    ]);
    create(
        &client,
        &ns,
        &wave("support-emea", "crm", "support", "emea", steps),
    )
    .await;
    wait_phase(
        &client,
        &ns,
        "support-emea",
        WavePhase::Progressing,
        Some(1),
    )
    .await;

    // So far only the leader has acted: the standby timed no reconcile, and every Event
    // was reported by the leader.
    let standby_metrics = replicas[standby].metrics().await.unwrap();
    assert!(
        standby_metrics
            .series("switchyard_reconcile_duration_seconds_count", &[])
            .iter()
            .all(|s| s.value == 0.0),
        "the standby reconciled: {:?}",
        standby_metrics.series("switchyard_reconcile_duration_seconds_count", &[])
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let reporters: BTreeSet<Option<String>> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        // The API server's own controllers report on the test's Services here too.
        .filter(|event| event.reporting_controller.as_deref() == Some("switchyard"))
        .map(|event| event.reporting_instance)
        .collect();
    assert_eq!(
        reporters,
        BTreeSet::from([Some(replicas[leader].identity.clone())]),
        "Events were reported by the standby"
    );

    // The leader dies mid-step, without releasing the Lease.
    replicas[leader].kill();
    let killed_at = Instant::now();
    let survivor = &replicas[standby];
    eventually(Duration::from_secs(30), "the standby takes over", || {
        leads(survivor)
    })
    .await;
    let takeover = killed_at.elapsed();
    println!("takeover {takeover:?} after the leader was killed (lease duration 4s)");
    // The Lease expires at most 4 s after the kill; the standby notices at expiry and
    // waits up to 1 s (kube-lease-manager's jitter) before taking it.
    assert!(
        takeover < Duration::from_secs(8),
        "the takeover took {takeover:?}, with a lease duration of 4s"
    );
    assert_eq!(
        lease_holder(&client, &ns).await.as_deref(),
        Some(survivor.identity.as_str())
    );

    let done = wait_wave(
        &client,
        &ns,
        "support-emea",
        Duration::from_secs(60),
        "Completed",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.phase == WavePhase::Completed)
        },
    )
    .await;
    assert_eq!(
        steps_started(&done),
        ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6"],
        "every step ran once, in order: {:#?}",
        done.status.as_ref().map(|s| &s.history)
    );
    assert_eq!(count_events(&done, "WaveStarted"), 1);
    assert_eq!(count_events(&done, "LegacyRetired"), 1);
    assert_eq!(count_events(&done, "Completed"), 1);

    // One write per routing change, none repeated by the new leader.
    let route = routes.get(&route_name("support-emea")).await.unwrap();
    let expected = [
        (10, false),
        (50, false),
        (100, false),
        (100, true),
        (100, false),
    ];
    assert_eq!(route.metadata.generation, Some(expected.len() as i64));
    eventually(
        Duration::from_secs(10),
        "the watch sees the last version",
        || {
            let versions = versions.clone();
            async move {
                let versions = versions.lock().unwrap().clone();
                match versions.last() {
                    Some((generation, _)) if *generation == expected.len() as i64 => Ok(()),
                    other => Err(format!("last seen: {other:?}")),
                }
            }
        },
    )
    .await;
    watch.abort();
    let versions = versions.lock().unwrap().clone();
    let states: Vec<(i32, bool)> = versions.iter().map(|(_, state)| *state).collect();
    assert_eq!(states, expected, "the route's versions: {versions:?}");
    let writes = httproute_writes(&client).await - writes_before;
    assert_eq!(
        writes,
        expected.len() as u64,
        "HTTPRoute writes served by the API server during the wave"
    );
}

/// A proxy in front of Prometheus that holds each query for `delay`, so that a reconcile
/// is certainly running when the test acts. It reports when each query arrives.
struct SlowPrometheus {
    url: String,
    arrivals: tokio::sync::broadcast::Sender<jiff::Timestamp>,
    _server: tokio::task::JoinHandle<()>,
}

impl SlowPrometheus {
    async fn start(upstream: String, delay: Duration) -> Self {
        use axum::{
            extract::{Request, State},
            http::StatusCode,
            response::IntoResponse,
        };
        #[derive(Clone)]
        struct Proxy {
            upstream: String,
            delay: Duration,
            arrivals: tokio::sync::broadcast::Sender<jiff::Timestamp>,
            http: reqwest::Client,
        }
        async fn forward(State(proxy): State<Proxy>, request: Request) -> impl IntoResponse {
            let _ = proxy.arrivals.send(jiff::Timestamp::now());
            tokio::time::sleep(proxy.delay).await;
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let method = request.method().clone();
            let content_type = request.headers().get("content-type").cloned();
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let mut upstream = proxy
                .http
                .request(method, format!("{}{path}", proxy.upstream))
                .body(body);
            if let Some(content_type) = content_type {
                upstream = upstream.header("content-type", content_type);
            }
            match upstream.send().await {
                Ok(response) => {
                    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
                    let body = response.bytes().await.unwrap_or_default();
                    (status, [("content-type", "application/json")], body).into_response()
                }
                Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
            }
        }
        let (arrivals, _) = tokio::sync::broadcast::channel(64);
        let proxy = Proxy {
            upstream,
            delay,
            arrivals: arrivals.clone(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            arrivals,
            _server: server,
        }
    }
}

#[tokio::test]
async fn sigterm_lets_the_running_reconcile_finish_and_releases_the_lease() {
    let plane = common::plane();
    let (client, ns) = common::admin_in_fresh_namespace("sigterm").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["support-emea"], true)).await;
    let exporter = Exporter::start().await.unwrap();
    exporter.set(
        "crm_errors",
        &[("team", "support"), ("region", "emea")],
        0.0,
    );
    let prometheus = Prometheus::start(exporter.addr(), "", None).await.unwrap();
    prometheus
        .wait_for_value("crm_errors", |v| v == 0.0, Duration::from_secs(30))
        .await
        .unwrap();
    let slow = SlowPrometheus::start(prometheus.url(), Duration::from_secs(2)).await;
    let args = [
        "--namespaces",
        &ns,
        "--lease-namespace",
        &ns,
        "--lease-duration",
        "30s",
        "--prometheus-url",
        &slow.url,
    ];
    let kubeconfig = plane.kubeconfig_path();
    let mut first = Operator::start(kubeconfig, "first", &args);
    eventually(Duration::from_secs(30), "the first replica leads", || {
        leads(&first)
    })
    .await;

    let mut wave = wave(
        "support-emea",
        "crm",
        "support",
        "emea",
        json!([{"setWeight": 10}, {"analysis": {"duration": "8s"}}, {"setWeight": 100}]),
    );
    wave.spec.analysis = Some(
        serde_json::from_value(json!({
            "interval": "1s",
            "metrics": [{
                "name": "errors",
                "query": "sum(crm_errors{team=\"{{team}}\",region=\"{{region}}\"})",
                "max": 1
            }]
        }))
        .unwrap(),
    );
    create(&client, &ns, &wave).await;
    wait_phase(
        &client,
        &ns,
        "support-emea",
        WavePhase::Progressing,
        Some(1),
    )
    .await;

    // The next query to arrive: a reconcile is now waiting 2 s for Prometheus.
    let mut arrivals = slow.arrivals.subscribe();
    let queried_at = loop {
        match tokio::time::timeout(Duration::from_secs(15), arrivals.recv()).await {
            Ok(Ok(at)) => break at,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            other => panic!("no analysis query reached Prometheus: {other:?}"),
        }
    };
    let status = first.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "switchyard exited with {status}");
    assert!(
        first.log().contains("left the leader Lease"),
        "{}",
        first.log_tail(20)
    );
    assert_eq!(
        lease_holder(&client, &ns).await,
        None,
        "the Lease was released"
    );

    // The reconcile that was waiting on Prometheus finished and recorded its result.
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    let stopped = waves.get("support-emea").await.unwrap();
    let status = stopped.status.clone().unwrap();
    assert_eq!(status.step_index, Some(1), "{status:#?}");
    let evaluated = status
        .analysis
        .iter()
        .find(|m| m.name == "errors")
        .and_then(|m| m.evaluated_at.clone())
        .expect("an evaluation of the metric")
        .0;
    assert!(
        evaluated > queried_at,
        "the evaluation in flight at SIGTERM ({queried_at}) was not recorded; the last one is from {evaluated}"
    );

    // A new replica carries on from there.
    let mut second = Operator::start(kubeconfig, "second", &args);
    let done = wait_wave(
        &client,
        &ns,
        "support-emea",
        Duration::from_secs(60),
        "Completed",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.phase == WavePhase::Completed)
        },
    )
    .await;
    assert_eq!(steps_started(&done), ["1/3", "2/3", "3/3"]);
    assert_eq!(count_events(&done, "WaveStarted"), 1);
    assert_eq!(lease_holder(&client, &ns).await.as_deref(), Some("second"));

    // A standby takes over as soon as the leader leaves, not when its term would have
    // expired (10 to 30 s later).
    let third = Operator::start(kubeconfig, "third", &args);
    let body = eventually(
        Duration::from_secs(30),
        "the third replica is ready",
        || ready(&third),
    )
    .await;
    // Ready before its first check of the admission policies, and it says so.
    assert!(body.starts_with("ok (standby)"), "{body}");
    let status = second.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "switchyard exited with {status}");
    let left_at = Instant::now();
    eventually(Duration::from_secs(40), "the standby takes over", || {
        leads(&third)
    })
    .await;
    let takeover = left_at.elapsed();
    println!("a standby took over {takeover:?} after the leader left (lease duration 30s)");
    assert!(
        takeover < Duration::from_secs(5),
        "the standby took {takeover:?}: it waited for the Lease to expire"
    );
    assert_eq!(lease_holder(&client, &ns).await.as_deref(), Some("third"));
}

#[tokio::test]
async fn metrics_follow_a_wave_and_a_real_prometheus_scrapes_them() {
    let plane = common::plane();
    let (client, ns) = common::admin_in_fresh_namespace("metrics").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["support-emea"], true)).await;
    let operator = Operator::start(
        plane.kubeconfig_path(),
        "only",
        &[
            "--namespaces",
            &ns,
            "--lease-namespace",
            &ns,
            "--per-wave-metrics",
            "true",
        ],
    );
    let prometheus = Prometheus::start(operator.addr, "", None).await.unwrap();
    eventually(Duration::from_secs(30), "the replica leads", || {
        leads(&operator)
    })
    .await;
    // A scrape that fails to parse sets `up` to 0 and stores nothing.
    prometheus
        .wait_for_value(
            "switchyard_leader{job=\"exporter\"}",
            |v| v == 1.0,
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    let labels = [("namespace", ns.as_str()), ("wave", "support-emea")];
    create(
        &client,
        &ns,
        &wave(
            "support-emea",
            "crm",
            "support",
            "emea",
            json!([{"setWeight": 20}, {"analysis": {"duration": "2s"}},
                   {"setWeight": 60}, {"analysis": {"duration": "2s"}}, {"setWeight": 100}]),
        ),
    )
    .await;
    // Follow the wave in /metrics until it completes.
    let seen: RefCell<(Vec<f64>, Vec<String>)> = RefCell::default();
    let (operator_ref, seen_ref, labels_ref) = (&operator, &seen, &labels);
    let last = eventually(
        Duration::from_secs(60),
        "the wave completes in /metrics",
        || {
            let (operator, labels) = (operator_ref, labels_ref);
            async move {
                let metrics = operator.metrics().await?;
                let weight = metrics
                    .value("switchyard_wave_target_weight", labels)
                    .ok_or("no target weight yet")?;
                let current: Vec<&Sample> = metrics
                    .series("switchyard_wave_phase", labels)
                    .into_iter()
                    .filter(|s| s.value == 1.0)
                    .collect();
                let [current] = current.as_slice() else {
                    return Err(format!("{} phases at 1", current.len()));
                };
                let phase = current.labels["phase"].clone();
                let (weights, phases) = &mut *seen_ref.borrow_mut();
                if weights.last() != Some(&weight) {
                    weights.push(weight);
                }
                if phases.last() != Some(&phase) {
                    phases.push(phase.clone());
                }
                if phase == "Completed" {
                    Ok(metrics)
                } else {
                    Err(format!("{phase} at {weight}"))
                }
            }
        },
    )
    .await;
    let (weights, phases) = seen.into_inner();
    let moves: Vec<f64> = weights.iter().copied().filter(|w| *w > 0.0).collect();
    assert_eq!(moves, [20.0, 60.0, 100.0], "weights seen: {weights:?}");
    assert!(
        phases.contains(&"Progressing".to_owned()),
        "phases seen: {phases:?}"
    );
    // The count by namespace and phase, which is there without --per-wave-metrics too.
    let namespace = [("namespace", ns.as_str())];
    let counts = last.series("switchyard_waves", &namespace);
    assert_eq!(counts.len(), 10, "one series per phase: {counts:?}");
    let completed: Vec<_> = counts.iter().filter(|s| s.value != 0.0).collect();
    assert!(
        completed.len() == 1
            && completed[0].labels["phase"] == "Completed"
            && completed[0].value == 1.0,
        "{counts:?}"
    );
    let all_phases = last.series("switchyard_wave_phase", &labels);
    assert_eq!(all_phases.len(), 10, "one series per phase");
    assert_eq!(
        all_phases.iter().filter(|s| s.value == 0.0).count(),
        9,
        "{all_phases:?}"
    );
    assert!(
        last.value(
            "switchyard_reconcile_duration_seconds_count",
            &[("controller", "wave")]
        )
        .is_some_and(|n| n > 0.0)
    );

    // Prometheus stored the same story.
    let selector = format!("{{namespace=\"{ns}\",wave=\"support-emea\"}}");
    prometheus
        .wait_for_value(
            &format!("switchyard_wave_target_weight{selector}"),
            |v| v == 100.0,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    prometheus
        .wait_for_value(
            &format!("switchyard_wave_phase{{namespace=\"{ns}\",wave=\"support-emea\",phase=\"Completed\"}}"),
            |v| v == 1.0,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let changes = prometheus
        .query(&format!(
            "changes(switchyard_wave_target_weight{selector}[10m])"
        ))
        .await
        .unwrap();
    assert!(
        changes.len() == 1 && changes[0].value >= 2.0,
        "Prometheus saw the weight move: {changes:?}"
    );
    let up = prometheus.query("up{job=\"exporter\"}").await.unwrap();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].value, 1.0, "every scrape parsed");

    // Deleting the wave deletes its series.
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    waves
        .delete("support-emea", &DeleteParams::default())
        .await
        .unwrap();
    // Its own series, and its namespace's counts: it was the namespace's only wave.
    let ns_ref = &ns;
    eventually(
        Duration::from_secs(30),
        "the wave's series are gone",
        || async move {
            let metrics = operator_ref.metrics().await?;
            let left: Vec<&Sample> = metrics
                .samples
                .iter()
                .filter(|s| {
                    s.labels.get("wave").map(String::as_str) == Some("support-emea")
                        || s.labels.get("namespace") == Some(ns_ref)
                })
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{} series left", left.len()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn not_ready_until_the_crds_exist_and_no_gateway_api_is_needed() {
    // A control plane of its own, without any CRD.
    let plane = ControlPlane::start().unwrap();
    let client = plane.client().await.unwrap();
    let operator = Operator::start(
        plane.kubeconfig_path(),
        "early",
        &["--lease-namespace", "default"],
    );
    let early = &operator;
    eventually(Duration::from_secs(30), "/healthz 200", || async move {
        match early.get("/healthz").await? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status}: {body}")),
        }
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "waiting for the CRDs",
        || async move {
            if early.log().contains("waiting for Switchyard's CRDs") {
                Ok(())
            } else {
                Err(early.log_tail(5))
            }
        },
    )
    .await;
    let (status, body) = operator.get("/readyz").await.unwrap();
    assert_eq!(status, 503, "ready without CRDs: {body}");

    let crds: Vec<_> = switchyard::crdgen::all()
        .unwrap()
        .into_iter()
        .map(|generated| generated.crd)
        .collect();
    plane.install_crds(&crds).await.unwrap();
    // Ready comes first (a standby is ready too); winning the Lease follows within
    // a moment, as the only replica.
    let body = eventually(Duration::from_secs(60), "/readyz 200", || ready(&operator)).await;
    assert!(body.starts_with("ok ("), "{body}");
    eventually(Duration::from_secs(30), "the only replica leads", || {
        leads(&operator)
    })
    .await;
    assert!(
        operator.log().contains("the Gateway API is not installed"),
        "{}",
        operator.log_tail(20)
    );

    // Waves route through a ConfigMap, and nothing asks for HTTPRoutes.
    let ns = plane.create_namespace("no-gateway").await.unwrap();
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["support-emea"], true)).await;
    create(
        &client,
        &ns,
        &wave(
            "support-emea",
            "crm",
            "support",
            "emea",
            json!([{"setWeight": 100}]),
        ),
    )
    .await;
    let waves_done = wait_wave(
        &client,
        &ns,
        "support-emea",
        Duration::from_secs(30),
        "Completed",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.phase == WavePhase::Completed)
        },
    )
    .await;
    assert_eq!(steps_started(&waves_done), ["1/1"]);
    let tables: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let table = tables.get("crm-routing").await.unwrap();
    let data: BTreeMap<String, String> = table.data.unwrap_or_default();
    assert!(data.contains_key("support-emea"), "{data:?}");
    // Deleting the wave removes its routing and lets the deletion finish, although
    // there is no HTTPRoute resource to look in.
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    waves
        .delete("support-emea", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "the wave deleted", || {
        let waves = waves.clone();
        async move {
            match waves.get_opt("support-emea").await {
                Ok(None) => Ok(()),
                Ok(Some(w)) => Err(format!(
                    "still there, finalizers {:?}",
                    w.metadata.finalizers
                )),
                Err(err) => Err(err.to_string()),
            }
        }
    })
    .await;
    let data = tables
        .get("crm-routing")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    assert!(!data.contains_key("support-emea"), "{data:?}");
    // Once the CRDs are in, nothing fails: no watch of a resource the cluster lacks.
    let log = operator.log();
    let (_, running) = log
        .split_once("Switchyard's CRDs are Established")
        .expect("the CRDs were seen");
    let complaints: Vec<&str> = running
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        // This cluster has no admission policies: the operator must say so.
        .filter(|l| !l.contains("admission policies not in force"))
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
}

/// Ok once `pod` carries the leader label.
async fn labelled_leader(client: &Client, namespace: &str, pod: &str) -> Result<(), String> {
    match leader_label(client, namespace, pod).await.as_deref() {
        Some("true") => Ok(()),
        other => Err(format!("label {other:?}")),
    }
}

async fn leader_label(client: &Client, namespace: &str, pod: &str) -> Option<String> {
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), namespace)
        .get(pod)
        .await
        .unwrap()
        .metadata
        .labels
        .and_then(|labels| labels.get(switchyard::leader::LEADER_POD_LABEL).cloned())
}

#[tokio::test]
async fn the_leader_labels_its_own_pod_and_the_label_follows_the_lease() {
    let plane = common::plane();
    let (client, ns) = common::admin_in_fresh_namespace("leader-pod").await;
    // The replicas' Pods, as a Deployment would make them (no kubelet runs them here;
    // the processes below play their part). Pod admission needs the default
    // ServiceAccount.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), &ns);
    accounts
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    for name in ["replica-a", "replica-b"] {
        pods.create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": "switchyard"}},
                "spec": {"containers": [{"name": "switchyard", "image": "switchyard"}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    let args = [
        "--namespaces",
        &ns,
        "--lease-namespace",
        &ns,
        "--lease-duration",
        "4s",
        "--label-leader-pod",
        "true",
    ];
    let kubeconfig = plane.kubeconfig_path();
    let mut replicas: Vec<Operator> = ["replica-a", "replica-b"]
        .into_iter()
        .map(|name| {
            Operator::start_with_env(
                kubeconfig,
                name,
                &args,
                &[("POD_NAME", name), ("POD_NAMESPACE", &ns)],
            )
        })
        .collect();
    let leader = eventually(Duration::from_secs(30), "exactly one leader", || {
        the_leader(&replicas)
    })
    .await;
    let standby = 1 - leader;
    let (leader_pod, standby_pod) = (
        replicas[leader].identity.clone(),
        replicas[standby].identity.clone(),
    );
    eventually(Duration::from_secs(10), "the leader's Pod labelled", || {
        labelled_leader(&client, &ns, &leader_pod)
    })
    .await;
    assert_eq!(leader_label(&client, &ns, &standby_pod).await, None);

    // The leader dies; the label moves with the Lease.
    replicas[leader].kill();
    eventually(
        Duration::from_secs(15),
        "the new leader's Pod labelled",
        || labelled_leader(&client, &ns, &standby_pod),
    )
    .await;
    leads(&replicas[standby]).await.unwrap();
}
