//! 10,000 MigrationWaves (DESIGN.md §7): resident memory under 150 MB, all reconciled
//! within 30 s of a cold start, and zero API writes per minute once settled.
//!
//! A real API server (the test harness) holds 200 plans of 50 waves each, every wave
//! with a first step that sets a weight and a second that waits for an approval.
//! All of them exist before the operator starts. Then the real `switchyard run` binary
//! starts as a subprocess: the bench measures how long until every wave's status
//! describes its current generation at its approval step, the operator's resident
//! memory (VmRSS, sampled every 250 ms: peak, and once settled), and then the writes the
//! API server counts (`apiserver_request_total`) during a minute of steady state.
//!
//! Run with `cargo bench --bench scale` (or `make bench`). Prints figures; asserts
//! nothing about time or memory.

use std::{
    collections::{BTreeMap, HashSet},
    process::Stdio,
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use switchyard::api::{CutoverPlan, MigrationWave, WavePhase};
use switchyard_testenv::ControlPlane;

const PLANS: usize = 200;
const PER_PLAN: usize = 50;
const STEADY: Duration = Duration::from_secs(60);

fn main() {
    let waves = std::env::var("SWITCHYARD_BENCH_WAVES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(PLANS * PER_PLAN);
    let plane = ControlPlane::start().expect("control plane");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(&plane, waves));
}

async fn bench(plane: &ControlPlane, total: usize) {
    let crds: Vec<_> = switchyard::crdgen::all()
        .unwrap()
        .into_iter()
        .map(|c| c.crd)
        .collect();
    plane.install_crds(&crds).await.unwrap();
    let client = plane.client().await.unwrap();
    let ns = plane.create_namespace("scale").await.unwrap();
    for (name, port) in [("legacy-crm", 80), ("orchestration", 8080)] {
        let svc: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name}, "spec": {"ports": [{"port": port}]}}))
        .unwrap();
        Api::<Service>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
    }

    let created = Instant::now();
    create_objects(&client, &ns, total).await;
    println!(
        "created {} plans and {total} waves in {:.1} s",
        total.div_ceil(PER_PLAN),
        created.elapsed().as_secs_f64()
    );

    // Watch the waves before the operator starts, so no status update is missed.
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    let (settled_tx, mut settled_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut settled = HashSet::new();
        let mut events = watcher(waves, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let event = event.unwrap();
            if matches!(event, watcher::Event::InitDone)
                && let Some(tx) = ready_tx.take()
            {
                let _ = tx.send(());
            }
            if let watcher::Event::Apply(w) | watcher::Event::InitApply(w) = event {
                let status = w.status.unwrap_or_default();
                if status.phase == WavePhase::AwaitingApproval
                    && status.observed_generation == w.metadata.generation
                    && settled.insert(w.metadata.name.unwrap())
                {
                    let _ = settled_tx.send(settled.len());
                }
            }
        }
    });
    ready_rx.await.unwrap();

    let before_start = write_counts(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let started = Instant::now();
    let mut operator = start_operator(plane, &ns, port, &dir.path().join("operator.log"));
    let pid = operator.id().unwrap();

    let mut peak_rss = 0u64;
    let mut sampler = tokio::time::interval(Duration::from_millis(250));
    let mut settled = 0usize;
    let mut milestones = BTreeMap::new();
    let deadline = started + Duration::from_secs(1800);
    while settled < total {
        tokio::select! {
            count = settled_rx.recv() => {
                settled = count.expect("the watch ended");
                for fraction in [10, 50, 90, 100] {
                    if settled * 100 >= total * fraction {
                        milestones.entry(fraction).or_insert_with(|| started.elapsed());
                    }
                }
            }
            _ = sampler.tick() => {
                peak_rss = peak_rss.max(rss_kib(pid));
                if let Ok(Some(status)) = operator.try_wait() {
                    panic!("the operator exited with {status}; see {}", dir.path().join("operator.log").display());
                }
                assert!(Instant::now() < deadline, "only {settled} of {total} waves settled in 30 minutes");
            }
        }
    }
    // The plans catch up with their waves a little later: wait until 5 s pass without a
    // status write, then count a minute of steady state.
    let mut after_settle = write_counts(&client).await;
    let quiet_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = write_counts(&client).await;
        let busy = ["migrationwaves/status", "cutoverplans/status"]
            .iter()
            .any(|k| now.get(*k) != after_settle.get(*k));
        after_settle = now;
        if !busy || Instant::now() > quiet_deadline {
            break;
        }
    }

    // A minute of steady state: nothing changes, so nothing should be written.
    let steady_from = Instant::now();
    let mut steady_peak = 0u64;
    while steady_from.elapsed() < STEADY {
        sampler.tick().await;
        peak_rss = peak_rss.max(rss_kib(pid));
        steady_peak = steady_peak.max(rss_kib(pid));
    }
    let after_steady = write_counts(&client).await;
    let steady_rss = rss_kib(pid);
    watch.abort();

    // A cold start: a new process, with every wave already reconciled. It must look at
    // every wave again (its reconcile count), and should write nothing.
    operator.start_kill().unwrap();
    let _ = operator.wait().await;
    let before_restart = write_counts(&client).await;
    let restarted = Instant::now();
    let mut operator = start_operator(plane, &ns, port, &dir.path().join("restart.log"));
    let pid = operator.id().unwrap();
    let http = reqwest_client();
    let mut restart_peak = 0u64;
    let mut seen = 0u64;
    let restart_done = loop {
        sampler.tick().await;
        restart_peak = restart_peak.max(rss_kib(pid));
        if let Some(count) = wave_reconciles(&http, port).await {
            seen = count;
            if count >= total as u64 {
                break restarted.elapsed();
            }
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(600),
            "only {seen} of {total} waves reconciled in 10 minutes after the restart"
        );
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_restart = write_counts(&client).await;
    let restart_rss = rss_kib(pid);
    let _ = operator.start_kill();

    println!(
        "\n10,000-wave scale (target: < 150 MB resident, all reconciled < 30 s of a cold start, 0 writes/min settled)"
    );
    println!("  waves                         {total}");
    println!("  first start (every wave new: admitted, started, routed, waiting for approval)");
    for (fraction, at) in &milestones {
        println!(
            "    {fraction:>3}% settled after          {:.1} s",
            at.as_secs_f64()
        );
    }
    println!(
        "    resident memory: peak {:.1} MB, settled {:.1} MB (max {:.1} MB over the steady minute)",
        peak_rss as f64 / 1024.0,
        steady_rss as f64 / 1024.0,
        steady_peak as f64 / 1024.0
    );
    println!(
        "    writes until settled (plans included): {}",
        diff(&before_start, &after_settle)
    );
    println!(
        "    writes during {} s settled:   {}",
        STEADY.as_secs(),
        diff(&after_settle, &after_steady)
    );
    println!("  cold start (a new process; every wave already settled)");
    println!(
        "    every wave reconciled after  {:.1} s",
        restart_done.as_secs_f64()
    );
    println!(
        "    resident memory: peak {:.1} MB, after {:.1} MB",
        restart_peak as f64 / 1024.0,
        restart_rss as f64 / 1024.0
    );
    println!(
        "    writes:                      {}",
        diff(&before_restart, &after_restart)
    );
}

fn start_operator(
    plane: &ControlPlane,
    ns: &str,
    port: u16,
    log: &std::path::Path,
) -> tokio::process::Child {
    let log = std::fs::File::create(log).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "run",
            "--namespaces",
            ns,
            "--leader-election",
            "false",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", plane.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn reqwest_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Wave reconciles the operator has timed, from its /metrics.
async fn wave_reconciles(http: &reqwest::Client, port: u16) -> Option<u64> {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("switchyard_reconcile_duration_seconds_count{controller=\"wave\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

async fn create_objects(client: &Client, ns: &str, total: usize) {
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), ns);
    let plan_count = total.div_ceil(PER_PLAN);
    for p in 0..plan_count {
        let waves: Vec<_> = (0..PER_PLAN)
            .map(|i| p * PER_PLAN + i)
            .filter(|i| *i < total)
            .map(|i| json!({"name": format!("w{i}")}))
            .collect();
        let plan: CutoverPlan = serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "CutoverPlan", "metadata": {"name": format!("plan-{p}")},
            "spec": {
                "legacy": {"service": {"name": "legacy-crm", "port": 80}},
                "target": {"service": {"name": "orchestration", "port": 8080}},
                "routing": {"configMap": {"name": format!("routing-{p}")}},
                "cohortKeys": {"team": {"header": "x-team"}},
                "waves": waves, "maxConcurrentWaves": PER_PLAN
            }
        }))
        .unwrap();
        plans.create(&PostParams::default(), &plan).await.unwrap();
    }
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), ns);
    stream::iter(0..total)
        .map(|i| {
            let waves = waves.clone();
            async move {
                let wave: MigrationWave = serde_json::from_value(json!({
                    "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationWave",
                    "metadata": {"name": format!("w{i}")},
                    "spec": {"plan": format!("plan-{}", i / PER_PLAN), "cohort": {"team": format!("t{i}")},
                             "steps": [{"setWeight": 10}, {"approval": {}}]}
                }))
                .unwrap();
                waves.create(&PostParams::default(), &wave).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

/// The process's resident set in KiB, from /proc (0 once it has exited).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Write requests to the resources the operator writes, as the API server counts them.
async fn write_counts(client: &Client) -> BTreeMap<String, u64> {
    let ours = [
        "migrationwaves",
        "cutoverplans",
        "configmaps",
        "events",
        "leases",
    ];
    switchyard_testenv::api_writes(client)
        .await
        .unwrap()
        .into_iter()
        .filter(|(key, _)| ours.contains(&key.split('/').next().unwrap_or("")))
        .collect()
}

fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{k} {d}"))
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}
