//! Alert to rollback, with 1,000 active waves (DESIGN.md §7: p99 under 100 ms, "while
//! the controller is busy with other reconciles"), measured twice per trial: when a
//! watch sees the wave's HTTPRoute deleted (the rollback's routing write, as the cluster
//! sees it), and when every request of the cohort is answered by legacy at a real
//! gateway (what users feel).
//!
//! A real API server (the test harness), a real data plane (Traefik with its Gateway
//! API provider, echo backends in a network namespace: `switchyard_testenv::DataPlane`),
//! the real controller and receiver in this process. 1,000 waves go to weight 100 and an
//! approval step, each with its own HTTPRoute, cohort header and alert label. For a
//! sample of them, one at a time, the bench posts a firing alert to the receiver and
//! measures from the receiver's 200.
//!
//! Three phases:
//! - **busy**: samples start right after the waves are created, while the controller is
//!   still reconciling most of them; each takes a wave the gateway already serves from
//!   the target;
//! - **settled**: once every other wave waits at its approval step;
//! - **breach**: a metric breach through analysis instead of an alert, from Prometheus
//!   first answering the breaching value to legacy at the gateway (`breach.rs`).
//!
//! Run with `cargo bench --bench alert_to_route` (or `make bench`); needs root and
//! iproute2, like the data-plane tests. Prints figures; no assertions on time.

mod breach;
mod figures;
mod gateway;
mod routes;

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api,
    api::{ListParams, PostParams},
    core::ApiResource,
};
use serde_json::json;
use switchyard::{
    alerts::{AlertStore, receiver},
    analysis::{Analyzer, Prometheus as PrometheusClient, PrometheusSettings},
    api::{CutoverPlan, MigrationWave, WavePhase},
    controller::{Services, Settings},
    routing::HTTPRoute,
};
use switchyard_testenv::{Backend, ControlPlane, DataPlane, Exporter, GATEWAY, Prometheus};

use figures::{Trial, report, report_one};
use gateway::{COHORT_HEADER, Gateway, LEGACY, TARGET};
use routes::{RouteLog, route_name};

const WAVES: usize = 1000;
const PER_PLAN: usize = 50;
const SAMPLES: usize = 100;
const BREACH_SAMPLES: usize = 100;
const TOKEN: &str = "bench-token";
const HOST: &str = "crm.example.com";
/// How long a trial waits for the rollback before it counts as missed.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Candidates checked at the gateway per busy sample (1–2 ms each).
const BUSY_CANDIDATES: usize = 50;

fn main() {
    let plane = ControlPlane::start().expect("control plane");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // The data plane's Traefik dies with the thread that starts it: block_on runs the
    // bench on this one.
    runtime.block_on(bench(&plane));
}

fn plan_json(name: &str, ns: &str) -> serde_json::Value {
    json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "CutoverPlan", "metadata": {"name": name},
        "spec": {
            "legacy": {"service": {"name": LEGACY, "port": 80}},
            "target": {"service": {"name": TARGET, "port": 8080}},
            "routing": {"gatewayAPI": {"parentRefs": [{"name": GATEWAY, "namespace": ns}],
                                       "hostnames": [HOST]}},
            "cohortKeys": {"team": {"header": COHORT_HEADER}},
            "waves": [], "maxConcurrentWaves": 64,
            // The sampled waves roll back while the others go on.
            "onWaveFailure": "RollbackWave"
        }
    })
}

async fn bench(plane: &ControlPlane) {
    let mut crds: Vec<_> = switchyard::crdgen::all()
        .unwrap()
        .into_iter()
        .map(|c| c.crd)
        .collect();
    crds.extend(switchyard_testenv::gateway_api_crds().unwrap());
    plane.install_crds(&crds).await.unwrap();
    let client = plane.client().await.unwrap();
    let backends = [Backend::new(LEGACY, 80), Backend::new(TARGET, 8080)];
    let data = DataPlane::start(plane, HOST, &backends, LEGACY)
        .await
        .unwrap_or_else(|err| panic!("the data plane did not start: {err}"));
    let gateway = Gateway { data: &data };
    let ns = data.namespace().to_owned();

    // Prometheus for the breach phase; the operator's analyzer queries it from the start.
    let exporter = Exporter::start().await.unwrap();
    let prometheus = Prometheus::start(exporter.addr(), "groups: []", None)
        .await
        .unwrap();
    let query_client = PrometheusClient::new(&PrometheusSettings {
        url: prometheus.url(),
        bearer_token: None,
        timeout: Duration::from_secs(2),
        max_concurrent: 8,
    })
    .unwrap();

    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &ns);
    for p in 0..WAVES / PER_PLAN {
        let mut plan = plan_json(&format!("plan-{p}"), &ns);
        plan["spec"]["waves"] = (0..PER_PLAN)
            .map(|i| json!({"name": format!("w{}", p * PER_PLAN + i)}))
            .collect();
        let plan: CutoverPlan = serde_json::from_value(plan).unwrap();
        plans.create(&PostParams::default(), &plan).await.unwrap();
    }

    let alerts = Arc::new(AlertStore::default());
    let services = Services {
        alerts: alerts.clone(),
        analyzer: Arc::new(Analyzer::new(Some(query_client), 8)),
        ..Services::default()
    };
    let stats = services.stats.clone();
    let metrics = services.metrics.clone();
    let settings = Settings {
        namespaces: vec![ns.clone()],
        ..Settings::default()
    };
    tokio::spawn(switchyard::controller::run(
        client.clone(),
        settings,
        services,
    ));
    let token = receiver::Token::load(&receiver::TokenSource::Literal(TOKEN.into()), None)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        receiver::PATH
    );
    tokio::spawn(async move {
        axum::serve(listener, receiver::router(token, alerts, None))
            .await
            .unwrap()
    });

    // Watch the routes from before the first wave exists: when each one appears (the
    // wave is routed, so an alert has something to roll back) and when it is deleted.
    let routes_seen = RouteLog::watch(Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<HTTPRoute>(&()),
    ));

    let started = Instant::now();
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    let creates = futures::stream::iter(0..WAVES).map(|i| {
        let waves = waves.clone();
        async move {
            let wave: MigrationWave = serde_json::from_value(json!({
                "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationWave", "metadata": {"name": format!("w{i}")},
                "spec": {"plan": format!("plan-{}", i / PER_PLAN), "cohort": {"team": team(i)},
                         "steps": [{"setWeight": 100}, {"approval": {}}],
                         "alerts": {"matchLabels": {"wave_id": i.to_string()}}}
            }))
            .unwrap();
            waves.create(&PostParams::default(), &wave).await.unwrap();
        }
    });
    creates.buffer_unordered(16).collect::<Vec<_>>().await;
    println!(
        "{WAVES} waves created after {:.1?}; {} routed so far, {} reconciles so far",
        started.elapsed(),
        routes_seen.routed(),
        stats.reconciles()
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let probe = Probe {
        http: reqwest::Client::new(),
        url,
        namespace: ns.clone(),
        routes: routes_seen.clone(),
        gateway: &gateway,
    };

    // Phase 1, busy: sample at once, while most waves are still being reconciled (each
    // reconcile writes routing and status, and every wave's progress rewrites its plan's
    // status). Each sample takes the earliest routed wave that the gateway already serves
    // from the target (Traefik serves new routes well behind their writes meanwhile).
    let mut busy = Vec::with_capacity(SAMPLES);
    let mut sampled = HashSet::new();
    let mut unsettled_during = Vec::new();
    let mut settled = 0;
    let mut last_count = Instant::now() - Duration::from_secs(1);
    while busy.len() < SAMPLES {
        // Listing 1,000 waves is itself load on the API server: twice a second at most.
        if last_count.elapsed() >= Duration::from_millis(500) {
            settled = awaiting_approval(&waves).await;
            last_count = Instant::now();
        }
        if settled + sampled.len() >= WAVES {
            break;
        }
        let mut chosen = None;
        for i in routes_seen
            .routed_waves(&sampled)
            .into_iter()
            .take(BUSY_CANDIDATES)
        {
            if gateway.serves_target(&team(i)).await {
                chosen = Some(i);
                break;
            }
        }
        let Some(i) = chosen else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        sampled.insert(i);
        unsettled_during.push(WAVES - settled);
        busy.push(probe.sample(i).await);
    }
    let busy_ended = started.elapsed();
    wait_settled(&waves, &sampled).await;
    println!(
        "{} waves settled (AwaitingApproval, one HTTPRoute each) after {:.1?}; {} reconciles so far",
        WAVES - sampled.len(),
        started.elapsed(),
        stats.reconciles()
    );
    report(
        &format!(
            "busy: alert accepted -> rolled back, while waves were still being reconciled \
             (unsettled waves at each sample: {} down to {}; busy phase ended after {busy_ended:.1?})",
            unsettled_during.first().copied().unwrap_or(0),
            unsettled_during.last().copied().unwrap_or(0),
        ),
        &busy,
    );

    // Phase 2, settled: every other wave waits at its approval step, and the gateway has
    // caught up with every route (it has written each one's status); sample waves spread
    // across all plans, each once the gateway serves it from the target.
    wait_gateway_caught_up(&routes_seen).await;
    let mut settled_trials = Vec::with_capacity(SAMPLES);
    let mut i = 0;
    while settled_trials.len() < SAMPLES && sampled.len() < WAVES {
        if !sampled.contains(&i) {
            if gateway
                .wait_target(&team(i), Duration::from_secs(300))
                .await
            {
                settled_trials.push(probe.sample(i).await);
            } else {
                println!("settled: the gateway never served w{i} from the target; skipped");
            }
            sampled.insert(i);
        }
        i += (WAVES / SAMPLES).max(1);
        if i >= WAVES {
            i = i % WAVES + 1;
        }
    }
    report(
        &format!("settled: alert accepted -> rolled back, with {WAVES} active waves"),
        &settled_trials,
    );

    // Phase 3, breach: a metric crossing its ceiling instead of an alert.
    let breaches = breach::run(
        &client,
        &ns,
        plan_json("breach", &ns),
        &gateway,
        (&exporter, &prometheus),
        &routes_seen,
        BREACH_SAMPLES,
    )
    .await;
    report_one(
        &format!(
            "breach: Prometheus answers the breach -> every request of the cohort answered by legacy at the gateway \
             (analysis interval 1 s; {} waves at their approval step)",
            WAVES - sampled.len()
        ),
        &breaches,
    );
    // What went wrong along the way: a wave whose reconciles keep failing backs off, and
    // its analysis waits with it.
    println!("failed reconciles and writes that did not succeed, over the whole run:");
    for line in metrics.encode().lines().filter(|line| {
        line.starts_with("switchyard_reconcile_errors_total{")
            || (line.starts_with("switchyard_api_writes_total{")
                && !line.contains("outcome=\"success\""))
    }) {
        println!("  {line}");
    }
}

fn team(i: usize) -> String {
    format!("team-{i}")
}

struct Probe<'a> {
    http: reqwest::Client,
    url: String,
    namespace: String,
    routes: RouteLog,
    gateway: &'a Gateway<'a>,
}

impl Probe<'_> {
    /// Posts a firing alert for wave `i`, then measures from the receiver's 200 to the
    /// watch seeing the wave's HTTPRoute deleted, and to the gateway answering every
    /// request of its cohort from legacy.
    async fn sample(&self, i: usize) -> Trial {
        let body = json!({"version": "4", "status": "firing", "alerts": [{"status": "firing",
            "labels": {"alertname": "Bench", "wave_id": i.to_string(), "namespace": &self.namespace},
            "fingerprint": format!("fp{i}")}]});
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let accepted = Instant::now();
        let deadline = accepted + TRIAL_TIMEOUT;
        let at_gateway = self
            .gateway
            .until_legacy(&team(i), accepted, deadline)
            .await;
        let route = route_name(i);
        let route_deleted = loop {
            if let Some(at) = self.routes.deleted_at(&route) {
                break Some(at.saturating_duration_since(accepted));
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        Trial {
            route_deleted,
            at_gateway,
        }
    }
}

/// Waits until Traefik has written its status to every route: until then it is still
/// working through the routes' creation, and a trial would measure that backlog.
pub(crate) async fn wait_gateway_caught_up(routes: &RouteLog) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(900);
    while routes.unprocessed() > 0 {
        assert!(
            Instant::now() < deadline,
            "the gateway had not processed {} routes after 15 minutes",
            routes.unprocessed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "the gateway had processed every route {:.1?} later",
        started.elapsed()
    );
}

fn is_waiting(w: &MigrationWave) -> bool {
    w.status
        .as_ref()
        .is_some_and(|s| s.phase == WavePhase::AwaitingApproval)
}

async fn awaiting_approval(waves: &Api<MigrationWave>) -> usize {
    let list = waves.list(&ListParams::default()).await.unwrap();
    list.items.iter().filter(|w| is_waiting(w)).count()
}

/// Waits until every wave not sampled waits at its approval step.
async fn wait_settled(waves: &Api<MigrationWave>, sampled: &HashSet<usize>) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let waiting = awaiting_approval(waves).await;
        if waiting + sampled.len() >= WAVES {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {waiting} waves settled within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
