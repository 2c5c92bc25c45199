//! Alert to route flipped, with 1,000 active waves (DESIGN.md §7: p99 under 100 ms,
//! "while the controller is busy with other reconciles").
//!
//! A real API server (the test harness), the real controller and receiver in this
//! process. 1,000 waves go to an approval step, each with its own HTTPRoute and its own
//! alert label. For a sample of them, one at a time, the bench posts a firing alert to
//! the receiver and measures from the receiver's 200 to the moment a watch sees the
//! wave's HTTPRoute deleted (the rollback's routing write, as the cluster sees it).
//!
//! Two phases: **busy** samples start right after the waves are created, while the
//! controller is still reconciling most of them (each sample takes a wave that is
//! already routed); **settled** samples follow once every other wave waits at its
//! approval step.
//!
//! Run with `cargo bench --bench alert_to_route` (or `make bench`). Prints figures; no
//! assertions on time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::{
    Api,
    api::{PostParams, WatchEvent, WatchParams},
};
use serde_json::json;
use switchyard::{
    alerts::{AlertStore, receiver},
    api::{CutoverPlan, MigrationWave, WavePhase},
    controller::{Services, Settings},
    routing::HTTPRoute,
};
use switchyard_testenv::ControlPlane;

const WAVES: usize = 1000;
const PER_PLAN: usize = 50;
const SAMPLES: usize = 100;
const TOKEN: &str = "bench-token";

fn main() {
    let plane = ControlPlane::start().expect("control plane");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(&plane));
}

async fn bench(plane: &ControlPlane) {
    let crds: Vec<_> = switchyard::crdgen::all()
        .unwrap()
        .into_iter()
        .map(|c| c.crd)
        .collect();
    let mut all = crds;
    all.extend(switchyard_testenv::gateway_api_crds().unwrap());
    plane.install_crds(&all).await.unwrap();
    let client = plane.client().await.unwrap();
    let ns = plane.create_namespace("bench").await.unwrap();

    for (name, port) in [("legacy-crm", 80), ("orchestration", 8080)] {
        let svc: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name}, "spec": {"ports": [{"port": port}]}}))
        .unwrap();
        Api::<Service>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
    }
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &ns);
    for p in 0..WAVES / PER_PLAN {
        let waves: Vec<_> = (0..PER_PLAN)
            .map(|i| json!({"name": format!("w{}", p * PER_PLAN + i)}))
            .collect();
        let plan: CutoverPlan = serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "CutoverPlan", "metadata": {"name": format!("plan-{p}")},
            "spec": {
                "legacy": {"service": {"name": "legacy-crm", "port": 80}},
                "target": {"service": {"name": "orchestration", "port": 8080}},
                "routing": {"gatewayAPI": {"parentRefs": [{"name": "public"}]}},
                "cohortKeys": {"team": {"header": "x-team"}},
                "waves": waves, "maxConcurrentWaves": 64,
                // The sampled waves roll back while the others go on.
                "onWaveFailure": "RollbackWave"
            }
        }))
        .unwrap();
        plans.create(&PostParams::default(), &plan).await.unwrap();
    }

    let alerts = Arc::new(AlertStore::default());
    let services = Services {
        alerts: alerts.clone(),
        ..Services::default()
    };
    let stats = services.stats.clone();
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
    let routes_seen = RouteLog::default();
    let routes: Api<HTTPRoute> = Api::namespaced(client.clone(), &ns);
    let rv = routes
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let sink = routes_seen.clone();
    tokio::spawn(async move {
        let mut stream = routes
            .watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        while let Some(Ok(event)) = stream.next().await {
            match event {
                WatchEvent::Added(route) => sink.added(route.metadata.name.unwrap()),
                WatchEvent::Deleted(route) => sink.deleted(route.metadata.name.unwrap()),
                _ => {}
            }
        }
    });

    let started = Instant::now();
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    let creates = futures::stream::iter(0..WAVES).map(|i| {
        let waves = waves.clone();
        async move {
            let wave: MigrationWave = serde_json::from_value(json!({
                "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationWave", "metadata": {"name": format!("w{i}")},
                "spec": {"plan": format!("plan-{}", i / PER_PLAN), "cohort": {"team": format!("team-{i}")},
                         "steps": [{"setWeight": 10}, {"approval": {}}],
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
    };

    // Phase 1, busy: sample at once, while most waves are still being reconciled (each
    // reconcile writes routing and status, and every wave's progress rewrites its plan's
    // status). Each sample takes a wave that is routed already and not sampled yet.
    let mut busy = Vec::with_capacity(SAMPLES);
    let mut sampled = std::collections::HashSet::new();
    let mut unsettled_during = Vec::new();
    while busy.len() < SAMPLES {
        let settled = awaiting_approval(&waves).await;
        if settled == WAVES {
            break;
        }
        let Some(i) = routes_seen.routed_wave(&sampled) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        sampled.insert(i);
        unsettled_during.push(WAVES - settled);
        busy.push(probe.sample(i).await);
    }
    let settled_after = started.elapsed();
    wait_settled(&waves, &sampled).await;
    println!(
        "{} waves settled (AwaitingApproval, one HTTPRoute each) after {:.1?}; {} reconciles so far",
        WAVES - sampled.len(),
        started.elapsed(),
        stats.reconciles()
    );
    report(
        &format!(
            "busy: alert accepted -> HTTPRoute deleted while waves were still being reconciled \
             (unsettled waves at each sample: {} down to {}; busy phase ended after {settled_after:.1?})",
            unsettled_during.first().copied().unwrap_or(0),
            unsettled_during.last().copied().unwrap_or(0),
        ),
        busy,
    );

    // Phase 2, settled: every other wave waits at its approval step; sample waves spread
    // across all plans.
    let mut settled = Vec::with_capacity(SAMPLES);
    let mut i = 0;
    while settled.len() < SAMPLES && i < WAVES {
        if !sampled.contains(&i) {
            settled.push(probe.sample(i).await);
            sampled.insert(i);
        }
        i += (WAVES / SAMPLES).max(1);
        if i >= WAVES {
            i = i % WAVES + 1;
        }
    }
    report(
        &format!("settled: alert accepted -> HTTPRoute deleted with {WAVES} active waves"),
        settled,
    );
}

/// When each wave's HTTPRoute appeared and was deleted, as a watch saw it.
#[derive(Clone, Default)]
struct RouteLog {
    added: Arc<Mutex<Vec<usize>>>,
    deleted: Arc<Mutex<HashMap<String, Instant>>>,
}

impl RouteLog {
    fn added(&self, route: String) {
        if let Some(i) = route
            .strip_prefix("switchyard-w")
            .and_then(|i| i.parse().ok())
        {
            self.added.lock().unwrap().push(i);
        }
    }

    fn deleted(&self, route: String) {
        self.deleted.lock().unwrap().insert(route, Instant::now());
    }

    fn routed(&self) -> usize {
        self.added.lock().unwrap().len()
    }

    /// The most recently routed wave not sampled yet: it is the likeliest to be in the
    /// middle of its own reconciles.
    fn routed_wave(&self, sampled: &std::collections::HashSet<usize>) -> Option<usize> {
        let deleted = self.deleted.lock().unwrap();
        self.added
            .lock()
            .unwrap()
            .iter()
            .rev()
            .copied()
            .find(|i| !sampled.contains(i) && !deleted.contains_key(&format!("switchyard-w{i}")))
    }

    fn deleted_at(&self, route: &str) -> Option<Instant> {
        self.deleted.lock().unwrap().get(route).copied()
    }
}

struct Probe {
    http: reqwest::Client,
    url: String,
    namespace: String,
    routes: RouteLog,
}

impl Probe {
    /// Posts a firing alert for wave `i`; returns the time from the receiver's 200 to
    /// the watch seeing the wave's HTTPRoute deleted, or None if that took over 30 s.
    async fn sample(&self, i: usize) -> Option<Duration> {
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
        let route = format!("switchyard-w{i}");
        let deadline = accepted + Duration::from_secs(30);
        loop {
            if let Some(at) = self.routes.deleted_at(&route) {
                return Some(at.saturating_duration_since(accepted));
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

async fn awaiting_approval(waves: &Api<MigrationWave>) -> usize {
    let list = waves.list(&Default::default()).await.unwrap();
    list.items
        .iter()
        .filter(|w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.phase == WavePhase::AwaitingApproval)
        })
        .count()
}

/// Waits until every wave not sampled waits at its approval step.
async fn wait_settled(waves: &Api<MigrationWave>, sampled: &std::collections::HashSet<usize>) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let list = waves.list(&Default::default()).await.unwrap();
        let waiting = list
            .items
            .iter()
            .filter(|w| {
                w.status
                    .as_ref()
                    .is_some_and(|s| s.phase == WavePhase::AwaitingApproval)
            })
            .count();
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

fn report(phase: &str, samples: Vec<Option<Duration>>) {
    let missed = samples.iter().filter(|s| s.is_none()).count();
    let mut latencies: Vec<Duration> = samples.into_iter().flatten().collect();
    if latencies.is_empty() {
        println!("{phase}: no samples ({missed} over 30 s)");
        return;
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(latencies.len() - 1)]
    };
    println!(
        "{phase}: {} samples: median {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}{}",
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
