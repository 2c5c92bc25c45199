//! Alert to route flipped, with 1,000 active waves (DESIGN.md §7: p99 under 100 ms).
//!
//! A real API server (the test harness), the real controller and receiver in this
//! process. 1,000 waves wait at an approval step, each with its own HTTPRoute and its
//! own alert label. For a sample of them, one at a time, the bench posts a firing alert
//! to the receiver and measures from the receiver's 200 to the moment a watch sees the
//! wave's HTTPRoute deleted (the rollback's routing write, as the cluster sees it).
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
                "waves": waves, "maxConcurrentWaves": 64
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
    loop {
        let list = waves.list(&Default::default()).await.unwrap();
        let ready = list
            .items
            .iter()
            .filter(|w| {
                w.status
                    .as_ref()
                    .is_some_and(|s| s.phase == WavePhase::AwaitingApproval)
            })
            .count();
        if ready == WAVES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{WAVES} waves active (AwaitingApproval, one HTTPRoute each) after {:.1?}; {} reconciles so far",
        started.elapsed(),
        stats.reconciles()
    );

    // Watch route deletions and note when each is seen.
    let deleted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let routes: Api<HTTPRoute> = Api::namespaced(client.clone(), &ns);
    let rv = routes
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let sink = deleted.clone();
    tokio::spawn(async move {
        let mut stream = routes
            .watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        while let Some(Ok(event)) = stream.next().await {
            if let WatchEvent::Deleted(route) = event {
                sink.lock()
                    .unwrap()
                    .insert(route.metadata.name.unwrap(), Instant::now());
            }
        }
    });

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(SAMPLES);
    for s in 0..SAMPLES {
        let i = s * (WAVES / SAMPLES);
        let body = json!({"version": "4", "status": "firing", "alerts": [{"status": "firing",
            "labels": {"alertname": "Bench", "wave_id": i.to_string(), "namespace": &ns}, "fingerprint": format!("fp{i}")}]});
        let response = http
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let accepted = Instant::now();
        let route = format!("switchyard-w{i}");
        let seen = loop {
            if let Some(at) = deleted.lock().unwrap().get(&route).copied() {
                break at;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        latencies.push(seen.saturating_duration_since(accepted));
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(latencies.len() - 1)]
    };
    println!(
        "alert accepted -> HTTPRoute deleted, {SAMPLES} samples with {WAVES} active waves: median {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}
