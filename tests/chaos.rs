//! The chaos suite (issue 12, item 5): a multi-wave plan migrated by two real
//! `switchyard run` replicas with leader election, against the real API server, a real
//! Prometheus and a real Alertmanager, while faults are injected at random times drawn
//! from a printed seed, and human actions arrive throughout. An independent recorder
//! (tests/common/recorder.rs) keeps every version of the objects; the invariants
//! (tests/common/invariants.rs) are checked over the whole timeline at the end.
//!
//! `SWITCHYARD_CHAOS_SEED` fixes the seed (printed first as `chaos seed=N`),
//! `SWITCHYARD_CHAOS_FAULTS` the number of faults (30 by default; `make chaos` runs
//! 200). The schedule of faults and actions follows the seed; the interleaving with
//! the operator's own timing does not, so a seed reproduces the schedule, not the run.
//! See docs/testing.md for how to read the figures.

mod common;
#[path = "common/invariants.rs"]
mod invariants;
#[path = "common/recorder.rs"]
mod recorder;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{TEST_ACTORS, operator::Operator, waves::create_backends};
use invariants::{ActionRecord, Window};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use rand::{RngExt, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde_json::json;
use switchyard::{
    api::{CutoverPlan, MigrationWave, WaveAction, WavePhase},
    routing::{HTTPRoute, configmap::RoutingTableEntry, gateway::route_name},
};
use switchyard_testenv::{
    Alertmanager, Exporter, Prometheus,
    proxy::{FaultProxy, kubeconfig_through},
};

const TOKEN: &str = "chaos-receiver-token";
const LEASE: Duration = Duration::from_secs(3);
/// The plans freeze the first FREEZE_SECS of every minute.
const FREEZE_SECS: i64 = 8;
const REPLICA_PREFIX: &str = "chaos-replica-";
const TARGET: &str = "orchestration";
const PLAN: &str = "crm";
const TABLE_PLAN: &str = "tables";
const TABLE: &str = "crm-routing";
/// (wave, plan, team, region)
const WAVES: [(&str, &str, &str, &str); 4] = [
    ("support-emea", PLAN, "support", "emea"),
    ("sales-emea", PLAN, "sales", "emea"),
    ("support-amer", PLAN, "support", "amer"),
    ("marketing-apac", TABLE_PLAN, "marketing", "apac"),
];
/// How long after a fault clears the cluster must be correct again.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);
/// How long after a fault clears an alert's rollback must be in place.
const ALERT_BOUND: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    KillLeader,
    StopLeader,
    ApiserverRestart,
    ApiLatency,
    PrometheusOutage,
    AlertmanagerOutage,
    AlertDuringFailover,
    MetricBreach,
}

const KINDS: [FaultKind; 8] = [
    FaultKind::KillLeader,
    FaultKind::StopLeader,
    FaultKind::ApiserverRestart,
    FaultKind::ApiLatency,
    FaultKind::PrometheusOutage,
    FaultKind::AlertmanagerOutage,
    FaultKind::AlertDuringFailover,
    FaultKind::MetricBreach,
];

struct FaultRecord {
    kind: FaultKind,
    injected: Timestamp,
    cleared: Timestamp,
    settled_after: Option<Duration>,
}

/// One operator replica slot: its own fault proxy to the API server, and its current
/// incarnation (a killed replica comes back under a new identity, so that the audit log
/// tells incarnations apart).
struct Replica {
    slot: char,
    incarnation: u32,
    operator: Option<Operator>,
    proxy: FaultProxy,
    stopped: bool,
    /// Where each incarnation's log is kept (beside the timeline).
    logs: std::path::PathBuf,
}

impl Replica {
    fn identity(&self) -> String {
        format!("{REPLICA_PREFIX}{}{}", self.slot, self.incarnation)
    }

    /// Starts the next incarnation, acting as a user of its own (impersonated by the
    /// admin, in system:masters) through this slot's proxy.
    fn start(&mut self, dir: &std::path::Path, args: &[String]) {
        self.incarnation += 1;
        let identity = self.identity();
        let plane = common::plane();
        let yaml = plane.kubeconfig_yaml(Some((&identity, &["system:masters"])));
        let yaml = kubeconfig_through(&yaml, &self.proxy.url()).unwrap();
        let path = dir.join(format!("kubeconfig-{identity}"));
        std::fs::write(&path, yaml).unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.logs.join(format!("{identity}.log"));
        self.operator = Some(Operator::start(&path, &identity, &args).keeping_log_at(log));
        self.stopped = false;
    }

    fn signal(&self, signal: &str) {
        let pid = self.operator.as_ref().expect("running").pid().to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
    }
}

/// What the faults, the human actions, the relay and the checks share.
struct World {
    admin: Client,
    ns: String,
    exporter: Exporter,
    actions: Mutex<Vec<ActionRecord>>,
    /// Waves with a firing alert, until its endsAt: no retry before then.
    alerted: Mutex<HashMap<String, Instant>>,
    /// Waves whose metric breaches, until when: no resume before then.
    breached: Mutex<HashMap<String, Instant>>,
    next_user: AtomicU64,
    /// The replicas' HTTP addresses, for the Alertmanager relay.
    receivers: Mutex<Vec<SocketAddr>>,
    stop_actions: AtomicBool,
    http: reqwest::Client,
}

fn labels(wave: &str) -> [(&'static str, &'static str); 2] {
    let (_, _, team, region) = WAVES.iter().find(|w| w.0 == wave).unwrap();
    [("team", team), ("region", region)]
}

impl World {
    async fn wave(&self, name: &str) -> Result<MigrationWave, String> {
        Api::<MigrationWave>::namespaced(self.admin.clone(), &self.ns)
            .get(name)
            .await
            .map_err(|e| e.to_string())
    }

    /// One human action, chosen by the wave's phase, as a release manager of its own.
    /// With `force`, some action is always taken (a pause or a resume when the phase
    /// calls for none), so that every fault gets one.
    async fn act_randomly(&self, rng: &mut StdRng, force: bool) {
        let name = WAVES[rng.random_range(0..WAVES.len())].0;
        let requested = Timestamp::now();
        // A human keeps trying while the API server restarts (when forced to act).
        let deadline = Instant::now() + Duration::from_secs(if force { 30 } else { 0 });
        let wave = loop {
            match self.wave(name).await {
                Ok(wave) => break wave,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(300)).await
                }
                Err(_) => return,
            }
        };
        let status = wave.status.clone().unwrap_or_default();
        let now = Instant::now();
        let alerted = self
            .alerted
            .lock()
            .unwrap()
            .get(name)
            .is_some_and(|t| *t > now);
        let breached = self
            .breached
            .lock()
            .unwrap()
            .get(name)
            .is_some_and(|t| *t > now);
        let roll = rng.random_range(0..100);
        let step = status.step_index;
        let action = match status.phase {
            WavePhase::AwaitingApproval if roll < 75 => Some(("Approve", step)),
            WavePhase::AwaitingApproval if roll < 85 => Some(("Approve", step.map(|s| s + 1))),
            WavePhase::AwaitingApproval => Some(("Pause", None)),
            WavePhase::Paused if !breached && roll < 70 => Some(("Resume", None)),
            WavePhase::Paused if roll < 80 => Some(("Rollback", None)),
            WavePhase::Completed if roll < 50 => Some(("Rollback", None)),
            WavePhase::RolledBack | WavePhase::Failed if !alerted && roll < 60 => {
                Some(("Retry", None))
            }
            WavePhase::Progressing
            | WavePhase::Quiet
            | WavePhase::DualAccess
            | WavePhase::Pending
                if roll < 8 =>
            {
                Some(("Pause", None))
            }
            WavePhase::Progressing | WavePhase::Quiet | WavePhase::DualAccess if roll < 12 => {
                Some(("Rollback", None))
            }
            // A human who has not caught up: a resume of a wave that is not paused.
            _ if roll < 15 => Some(("Resume", None)),
            WavePhase::Paused if force => Some(("Resume", None)),
            _ if force => Some(("Pause", None)),
            _ => None,
        };
        if let Some((kind, step)) = action
            && let Err(err) = self.append_action(name, kind, step, requested).await
        {
            eprintln!("chaos: action {kind} on {name} not recorded: {err}");
        }
    }

    /// Appends an action to the wave as `kubectl wave` does (guarded by the wave's
    /// resourceVersion), as a user of its own so that its history entry is unmistakable.
    /// Transport errors (an API server restarting) are retried; an append whose answer
    /// was lost is recognised by its user, so an action is never appended twice.
    async fn append_action(
        &self,
        wave: &str,
        kind: &str,
        step: Option<i32>,
        requested: Timestamp,
    ) -> Result<(), String> {
        let n = self.next_user.fetch_add(1, Ordering::Relaxed);
        let user = format!("chaos-rm-{n}");
        let actor = common::plane()
            .client_as(&user, &[TEST_ACTORS])
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let groups = loop {
            match switchyard::cli::commands::whoami(&actor).await {
                Ok(who) => break who.groups,
                Err(err) if Instant::now() > deadline => return Err(err.to_string()),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        };
        let mut action: WaveAction = serde_json::from_value(json!({
            "type": kind, "user": user, "message": format!("chaos action {n}"),
        }))
        .unwrap();
        action.groups = groups;
        action.step = step;
        let api: Api<MigrationWave> = Api::namespaced(actor.clone(), &self.ns);
        let plans: Api<CutoverPlan> = Api::namespaced(actor, &self.ns);
        loop {
            let attempt: Result<(), kube::Error> = async {
                let current = api.get(wave).await?;
                if current.spec.actions.iter().any(|a| a.user == user) {
                    return Ok(());
                }
                let plan = plans.get(&current.spec.plan).await?;
                action.plan_uid = plan.metadata.uid.clone();
                let mut actions = current.spec.actions.clone();
                actions.push(action.clone());
                api.patch(
                    wave,
                    &PatchParams::default(),
                    &Patch::Merge(json!({
                        "metadata": {"resourceVersion": current.metadata.resource_version},
                        "spec": {"actions": actions},
                    })),
                )
                .await?;
                Ok(())
            }
            .await;
            match attempt {
                Ok(()) => {
                    self.actions.lock().unwrap().push(ActionRecord {
                        requested,
                        wave: wave.to_owned(),
                        user,
                        kind: kind.to_owned(),
                        at: Timestamp::now(),
                    });
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(kube::Error::Api(status)) if status.code < 500 => {
                    return Err(format!("refused: {}", status.message));
                }
                Err(err) if Instant::now() > deadline => return Err(err.to_string()),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    /// A firing alert for `wave`, posted to Alertmanager as Prometheus would: retried
    /// until Alertmanager takes it.
    async fn raise_alert(
        &self,
        alertmanager: &str,
        wave: &str,
        lasts: Duration,
    ) -> Result<(), String> {
        let [(_, team), (_, region)] = labels(wave);
        let now = Timestamp::now();
        let ends = now + SignedDuration::try_from(lasts).unwrap();
        let body = json!([{
            "labels": {
                "alertname": "ChaosCohortDown", "namespace": self.ns, "team": team, "region": region,
            },
            "startsAt": now.to_string(), "endsAt": ends.to_string(),
        }]);
        self.alerted
            .lock()
            .unwrap()
            .insert(wave.to_owned(), Instant::now() + lasts);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let sent = self
                .http
                .post(format!("{alertmanager}/api/v2/alerts"))
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                other if Instant::now() > deadline => return Err(format!("{other:?}")),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// Stands in for the chart's Service, which selects the leader's Pod: forwards each
/// notification to the replicas in turn and answers with the first 200, else 503 (so
/// Alertmanager redelivers, as it would when no Pod is ready).
async fn serve_relay(world: Arc<World>) -> String {
    use axum::{
        Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post,
    };
    async fn relay(State(world): State<Arc<World>>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let receivers = world.receivers.lock().unwrap().clone();
        for addr in receivers {
            let sent = world
                .http
                .post(format!(
                    "http://{addr}{}",
                    switchyard::alerts::receiver::PATH
                ))
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .timeout(Duration::from_secs(1))
                .body(body.clone())
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().as_u16() == 200) {
                return StatusCode::OK;
            }
        }
        StatusCode::SERVICE_UNAVAILABLE
    }
    let app = Router::new()
        .route(switchyard::alerts::receiver::PATH, post(relay))
        .with_state(world);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        switchyard::alerts::receiver::PATH
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    url
}

fn plan_object(name: &str, waves: &[&str], config_map: bool) -> CutoverPlan {
    let mut plan = serde_json::to_value(common::waves::plan(name, waves, config_map)).unwrap();
    let spec = &mut plan["spec"];
    if name == PLAN {
        spec["waves"] = json!([
            {"name": "support-emea"},
            {"name": "sales-emea", "after": ["support-emea"]},
            {"name": "support-amer"},
        ]);
    }
    spec["maxConcurrentWaves"] = json!(2);
    spec["readinessGates"] = json!([{
        "name": "critical-defects-zero",
        "prometheus": {"query": "sum(chaos_open_defects)", "max": 0}
    }]);
    spec["freezeWindows"] = json!([{
        "name": "top-of-the-minute",
        "schedule": "* * * * *",
        "duration": format!("{FREEZE_SECS}s"),
        "timeZone": "UTC"
    }]);
    spec["onWaveFailure"] = json!("PausePlan");
    serde_json::from_value(plan).unwrap()
}

fn wave_object(name: &str, plan: &str, team: &str, region: &str) -> MigrationWave {
    let mut wave = common::waves::wave(
        name,
        plan,
        team,
        region,
        json!([
            {"setWeight": 20},
            {"analysis": {"duration": "3s"}},
            {"approval": {}},
            {"quiet": {"duration": "2s"}},
            {"setWeight": 100},
            {"dualAccess": {"duration": "5s"}},
        ]),
    );
    wave.spec.analysis = Some(
        serde_json::from_value(json!({
            "interval": "1s",
            "metrics": [{
                "name": "errors",
                "query": "sum(chaos_errors{team=\"{{team}}\",region=\"{{region}}\"})",
                "max": 0.5,
                "failureLimit": 1,
                "onFailure": "Pause"
            }],
            "onNoData": "Pause",
            "onError": "Pause"
        }))
        .unwrap(),
    );
    wave.spec.alerts = Some(
        serde_json::from_value(json!({
            "matchLabels": {"team": team, "region": region},
            "onFiring": "Rollback"
        }))
        .unwrap(),
    );
    wave
}

async fn lease_holder(admin: &Client, ns: &str) -> Result<Option<String>, String> {
    Api::<Lease>::namespaced(admin.clone(), ns)
        .get_opt("switchyard")
        .await
        .map_err(|e| e.to_string())
        .map(|l| l.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

async fn leader_slot(world: &World, replicas: &[Replica]) -> Option<usize> {
    let holder = lease_holder(&world.admin, &world.ns).await.ok()??;
    replicas
        .iter()
        .position(|r| r.operator.is_some() && r.identity() == holder)
}

/// The routing the cluster has for `wave`: its HTTPRoute or its routing-table entry.
async fn routed_weight(world: &World, wave: &str, plan: &str) -> Result<i32, String> {
    if plan == TABLE_PLAN {
        let table = Api::<ConfigMap>::namespaced(world.admin.clone(), &world.ns)
            .get_opt(TABLE)
            .await
            .map_err(|e| e.to_string())?;
        let entry = table
            .and_then(|t| t.data)
            .and_then(|d| d.get(wave).cloned())
            .map(|json| RoutingTableEntry::from_json(wave, &json).map_err(|e| e.to_string()))
            .transpose()?;
        Ok(entry.map_or(0, |e| i32::from(e.target_weight)))
    } else {
        let route = Api::<HTTPRoute>::namespaced(world.admin.clone(), &world.ns)
            .get_opt(&route_name(wave))
            .await
            .map_err(|e| e.to_string())?;
        Ok(route.map_or(0, |r| invariants::route_state(&r, TARGET).weight))
    }
}

/// A correct cluster: one Lease holder, running and reporting itself the leader; every
/// wave's status current (its generation observed, every action processed); every
/// wave's routing as its status says; every alerted wave rolled back.
async fn correct(world: &World, replicas: &[Replica], alerted: &[String]) -> Result<(), String> {
    let holder = lease_holder(&world.admin, &world.ns)
        .await?
        .ok_or("no Lease holder")?;
    let leader = replicas
        .iter()
        .find(|r| r.operator.is_some() && !r.stopped && r.identity() == holder)
        .ok_or(format!(
            "the Lease holder {holder} is not a running replica"
        ))?;
    if !leader.operator.as_ref().unwrap().leads().await? {
        return Err(format!("{holder} holds the Lease but does not lead yet"));
    }
    for (name, plan, _, _) in WAVES {
        let wave = world.wave(name).await?;
        let status = wave.status.clone().ok_or(format!("{name} has no status"))?;
        if status.observed_generation != wave.metadata.generation {
            return Err(format!("{name}: generation not observed yet"));
        }
        let compacted =
            switchyard::engine::action_log::compacted_of(wave.metadata.annotations.as_ref());
        if u64::try_from(status.actions_processed).unwrap_or(0)
            != compacted + wave.spec.actions.len() as u64
        {
            return Err(format!("{name}: actions not all processed"));
        }
        let want = status.target_weight.unwrap_or(0);
        let have = routed_weight(world, name, plan).await?;
        if want != have {
            return Err(format!("{name}: status says {want}%, routing has {have}%"));
        }
        if alerted.iter().any(|a| a == name) && status.phase != WavePhase::RolledBack {
            return Err(format!("{name}: alerted but {:?}", status.phase));
        }
    }
    Ok(())
}

/// Waits for a correct cluster; returns how long that took, or the last reason not.
async fn settle(
    world: &World,
    replicas: &[Replica],
    alerted: &[String],
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        match correct(world, replicas, alerted).await {
            Ok(()) => return Ok(started.elapsed()),
            Err(last) if started.elapsed() > timeout => return Err(last),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A wave carrying traffic at a step that an alert can roll back (not its last one, so
/// that it does not complete before the alert arrives).
async fn routed_wave(world: &World, rng: &mut StdRng) -> Option<String> {
    let mut names: Vec<&str> = WAVES.iter().map(|w| w.0).collect();
    names.shuffle(rng);
    for name in names {
        let Ok(wave) = world.wave(name).await else {
            continue;
        };
        let Some(status) = wave.status else { continue };
        let routed = matches!(
            status.phase,
            WavePhase::Progressing | WavePhase::AwaitingApproval | WavePhase::Quiet
        ) || (status.phase == WavePhase::Paused
            && status.step_index.is_some_and(|i| i < 4));
        if routed && status.step_index.is_some_and(|i| i < 4) {
            return Some(name.to_owned());
        }
    }
    None
}

fn spawn_action(
    world: &Arc<World>,
    rng: &mut StdRng,
    within: Duration,
    handles: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    let world = world.clone();
    let mut rng = StdRng::seed_from_u64(rng.random());
    let delay = Duration::from_millis(rng.random_range(0..within.as_millis().max(1) as u64));
    handles.push(tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        world.act_randomly(&mut rng, true).await;
    }));
}

fn millis(rng: &mut StdRng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.random_range(from..to))
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_keeps_every_invariant() {
    let seed = env_number("SWITCHYARD_CHAOS_SEED").unwrap_or_else(rand::random);
    let faults = env_number("SWITCHYARD_CHAOS_FAULTS").unwrap_or(30) as usize;
    println!("chaos seed={seed} faults={faults}");
    // The timeline, the audit log and every replica's log, for reading a violation
    // after the fact.
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{seed}"));
    std::fs::create_dir_all(&artifacts).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let plane = common::plane();
    let (admin, ns) = common::admin_in_fresh_namespace("chaos").await;
    create_backends(&admin, &ns).await;
    let exporter = Exporter::start().await.unwrap();
    exporter.set("chaos_open_defects", &[], 0.0);
    for (name, _, _, _) in WAVES {
        exporter.set("chaos_errors", &labels(name), 0.0);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let world = Arc::new(World {
        admin: admin.clone(),
        ns: ns.clone(),
        exporter,
        actions: Mutex::default(),
        alerted: Mutex::default(),
        breached: Mutex::default(),
        next_user: AtomicU64::new(0),
        receivers: Mutex::default(),
        stop_actions: AtomicBool::new(false),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    });
    let relay = serve_relay(world.clone()).await;
    let mut alertmanager = Alertmanager::start(&relay, TOKEN).await.unwrap();
    let mut prometheus = Prometheus::start(world.exporter.addr(), "", None)
        .await
        .unwrap();
    prometheus
        .wait_for_value("chaos_open_defects", |v| v == 0.0, Duration::from_secs(30))
        .await
        .unwrap();

    let recorder = recorder::Recorder::start(&admin, &ns);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let args: Vec<String> = [
        "--namespaces",
        &ns,
        "--lease-namespace",
        &ns,
        "--lease-duration",
        &format!("{}s", LEASE.as_secs()),
        "--prometheus-url",
        &prometheus.url(),
        // As the chart runs it: each new leader reads the firing alerts from
        // Alertmanager, because the notifications went to the replica it replaces.
        "--alertmanager-url",
        &alertmanager.url(),
        "--receiver-token-file",
        token_file.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut replicas = Vec::new();
    for slot in ['a', 'b'] {
        let mut replica = Replica {
            slot,
            incarnation: 0,
            operator: None,
            proxy: FaultProxy::start(plane.apiserver_addr()).await.unwrap(),
            stopped: false,
            logs: artifacts.clone(),
        };
        replica.start(dir.path(), &args);
        replicas.push(replica);
    }
    let update_receivers = |replicas: &[Replica]| {
        *world.receivers.lock().unwrap() = replicas
            .iter()
            .filter_map(|r| r.operator.as_ref().map(|o| o.addr))
            .collect();
    };
    update_receivers(&replicas);

    for (name, waves, table) in [
        (
            PLAN,
            vec!["support-emea", "sales-emea", "support-amer"],
            false,
        ),
        (TABLE_PLAN, vec!["marketing-apac"], true),
    ] {
        common::waves::create(&admin, &ns, &plan_object(name, &waves, table)).await;
    }
    for (name, plan, team, region) in WAVES {
        common::waves::create(&admin, &ns, &wave_object(name, plan, team, region)).await;
    }
    settle(&world, &replicas, &[], Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("the plan did not start cleanly: {e}"));

    // Human actions all along, at random times.
    let mut action_tasks = Vec::new();
    {
        let world = world.clone();
        let mut rng = StdRng::seed_from_u64(rng.random());
        action_tasks.push(tokio::spawn(async move {
            while !world.stop_actions.load(Ordering::Relaxed) {
                tokio::time::sleep(millis(&mut rng, 300, 1500)).await;
                world.act_randomly(&mut rng, false).await;
            }
        }));
    }

    let mut records: Vec<FaultRecord> = Vec::new();
    let mut prometheus_outages: Vec<Window> = Vec::new();
    let mut liveness: Vec<String> = Vec::new();
    let mut deck: Vec<FaultKind> = Vec::new();
    for n in 0..faults {
        if deck.is_empty() {
            deck = KINDS.to_vec();
            deck.shuffle(&mut rng);
        }
        let kind = deck.pop().unwrap();
        tokio::time::sleep(millis(&mut rng, 100, 800)).await;
        let mut alerted: Vec<String> = Vec::new();
        let injected = Timestamp::now();
        let detail = match kind {
            FaultKind::KillLeader => {
                let i = match leader_slot(&world, &replicas).await {
                    Some(i) => i,
                    None => rng.random_range(0..replicas.len()),
                };
                let down = millis(&mut rng, 200, 3000);
                let who = replicas[i].identity();
                spawn_action(&world, &mut rng, down, &mut action_tasks);
                replicas[i].operator.take();
                tokio::time::sleep(down).await;
                replicas[i].start(dir.path(), &args);
                update_receivers(&replicas);
                format!(
                    "kill -9 {who}, down {down:?}, back as {}",
                    replicas[i].identity()
                )
            }
            FaultKind::StopLeader => {
                let Some(i) = leader_slot(&world, &replicas).await else {
                    records.push(FaultRecord {
                        kind,
                        injected,
                        cleared: Timestamp::now(),
                        settled_after: None,
                    });
                    continue;
                };
                let who = replicas[i].identity();
                replicas[i].signal("-STOP");
                replicas[i].stopped = true;
                spawn_action(&world, &mut rng, LEASE * 2, &mut action_tasks);
                let deadline = Instant::now() + LEASE * 4;
                let mut successor = None;
                while Instant::now() < deadline {
                    if let Ok(Some(holder)) = lease_holder(&world.admin, &world.ns).await
                        && holder != who
                    {
                        successor = Some(holder);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if successor.is_none() {
                    liveness.push(format!("fault {n} (StopLeader): no standby took the Lease from the stopped {who} within {:?}", LEASE * 4));
                }
                // Let the successor act for a while before the old leader wakes up.
                let acting = millis(&mut rng, 300, 2500);
                tokio::time::sleep(acting).await;
                replicas[i].signal("-CONT");
                replicas[i].stopped = false;
                format!("SIGSTOP {who}; {successor:?} took over; SIGCONT after it acted {acting:?}")
            }
            FaultKind::ApiserverRestart => {
                let grace = millis(&mut rng, 0, 2000);
                spawn_action(&world, &mut rng, Duration::from_secs(3), &mut action_tasks);
                plane.restart_apiserver(grace).await.unwrap();
                format!("kube-apiserver restarted (SIGTERM, SIGKILL after {grace:?})")
            }
            FaultKind::ApiLatency => {
                let leader = leader_slot(&world, &replicas).await.unwrap_or(0);
                let both = rng.random_bool(0.3);
                let latency = millis(&mut rng, 100, 1200);
                let lasts = millis(&mut rng, 1000, 5000);
                let hold = rng.random_bool(0.4).then(|| millis(&mut rng, 500, 5000));
                let targets: Vec<usize> = if both { vec![0, 1] } else { vec![leader] };
                spawn_action(&world, &mut rng, lasts, &mut action_tasks);
                for &t in &targets {
                    replicas[t].proxy.set_latency(latency);
                }
                tokio::time::sleep(lasts).await;
                if let Some(hold) = hold {
                    for &t in &targets {
                        replicas[t].proxy.hold(true);
                    }
                    tokio::time::sleep(hold).await;
                    for &t in &targets {
                        replicas[t].proxy.hold(false);
                    }
                }
                for &t in &targets {
                    replicas[t].proxy.set_latency(Duration::ZERO);
                }
                let who: Vec<String> = targets.iter().map(|&t| replicas[t].identity()).collect();
                format!("{latency:?} latency for {lasts:?} to {who:?}, then held {hold:?}")
            }
            FaultKind::PrometheusOutage => {
                // During analysis: wait (a little) for a wave at its analysis step.
                let deadline = Instant::now() + Duration::from_secs(6);
                while Instant::now() < deadline {
                    let mut analysing = false;
                    for (name, _, _, _) in WAVES {
                        if let Ok(w) = world.wave(name).await {
                            analysing |= w.status.as_ref().is_some_and(|s| {
                                s.phase == WavePhase::Progressing && s.step_index == Some(1)
                            });
                        }
                    }
                    if analysing {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let lasts = millis(&mut rng, 1500, 6000);
                spawn_action(&world, &mut rng, lasts, &mut action_tasks);
                let from = Timestamp::now();
                prometheus.stop();
                tokio::time::sleep(lasts).await;
                // Down until it is started again: it can answer the operator's queries
                // before this test's readiness poll sees it up.
                let until = Timestamp::now();
                prometheus.restart().await.unwrap();
                prometheus_outages.push(Window {
                    what: format!("Prometheus outage (fault {n})"),
                    from,
                    until,
                });
                format!("Prometheus down for {lasts:?} (+ restart)")
            }
            FaultKind::AlertmanagerOutage => {
                let wave = routed_wave(&world, &mut rng).await;
                let lasts = millis(&mut rng, 1000, 4000);
                spawn_action(&world, &mut rng, lasts, &mut action_tasks);
                alertmanager.stop();
                tokio::time::sleep(lasts).await;
                alertmanager.restart().await.unwrap();
                if let Some(wave) = &wave {
                    world
                        .raise_alert(&alertmanager.url(), wave, Duration::from_secs(40))
                        .await
                        .unwrap();
                    alerted.push(wave.clone());
                }
                format!("Alertmanager down for {lasts:?}, then an alert for {wave:?}")
            }
            FaultKind::AlertDuringFailover => {
                let wave = routed_wave(&world, &mut rng).await;
                if let Some(wave) = &wave {
                    world
                        .raise_alert(&alertmanager.url(), wave, Duration::from_secs(40))
                        .await
                        .unwrap();
                    alerted.push(wave.clone());
                }
                tokio::time::sleep(millis(&mut rng, 0, 1500)).await;
                let i = leader_slot(&world, &replicas).await.unwrap_or(0);
                let who = replicas[i].identity();
                let down = millis(&mut rng, 300, 2000);
                spawn_action(&world, &mut rng, down, &mut action_tasks);
                replicas[i].operator.take();
                tokio::time::sleep(down).await;
                replicas[i].start(dir.path(), &args);
                update_receivers(&replicas);
                format!("alert for {wave:?}, then kill -9 {who} (down {down:?})")
            }
            FaultKind::MetricBreach => {
                let wave = routed_wave(&world, &mut rng)
                    .await
                    .unwrap_or_else(|| WAVES[0].0.to_owned());
                let lasts = millis(&mut rng, 1500, 5000);
                world.breached.lock().unwrap().insert(
                    wave.clone(),
                    Instant::now() + lasts + Duration::from_secs(3),
                );
                spawn_action(&world, &mut rng, lasts, &mut action_tasks);
                world.exporter.set("chaos_errors", &labels(&wave), 1.0);
                tokio::time::sleep(lasts).await;
                world.exporter.set("chaos_errors", &labels(&wave), 0.0);
                format!("{wave}'s errors breached for {lasts:?}")
            }
        };
        let cleared = Timestamp::now();
        let timeout = if alerted.is_empty() {
            SETTLE_TIMEOUT
        } else {
            ALERT_BOUND
        };
        let settled = settle(&world, &replicas, &alerted, timeout).await;
        if let Err(last) = &settled {
            liveness.push(format!(
                "fault {n} ({kind:?}: {detail}) cleared at {cleared}: the cluster was not correct within {timeout:?}; last: {last}"
            ));
        }
        println!(
            "chaos fault {n:>3} {kind:?} {injected}..{cleared}: {detail}; settled {}",
            settled
                .as_ref()
                .map_or("NEVER".into(), |d| format!("after {d:?}"))
        );
        records.push(FaultRecord {
            kind,
            injected,
            cleared,
            settled_after: settled.ok(),
        });
    }

    // Stop acting, let the cluster settle, and let the recorder catch up.
    world.stop_actions.store(true, Ordering::Relaxed);
    for task in action_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
    }
    if let Err(last) = settle(&world, &replicas, &[], SETTLE_TIMEOUT).await {
        liveness.push(format!(
            "after the last fault the cluster was not correct within {SETTLE_TIMEOUT:?}: {last}"
        ));
    }
    for (name, _, _, _) in WAVES {
        let rv: u64 = world
            .wave(name)
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while recorder
            .latest_rv(recorder::Kind::Wave, name)
            .is_none_or(|seen| seen < rv)
        {
            assert!(
                Instant::now() < deadline,
                "the recorder never saw {name} at rv {rv}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let final_phases: Vec<String> = {
        let mut phases = Vec::new();
        for (name, _, _, _) in WAVES {
            let w = world.wave(name).await.unwrap();
            let s = w.status.unwrap_or_default();
            phases.push(format!(
                "{name}={:?}@{:?} attempt {}",
                s.phase,
                s.step_index,
                s.attempt + 1
            ));
        }
        phases
    };
    // Every write the replicas will ever make is in the audit log once they are gone.
    for replica in &mut replicas {
        if replica.stopped {
            replica.signal("-CONT");
        }
        replica.operator.take();
    }
    let audit = std::fs::read_to_string(plane.audit_log_path()).unwrap_or_default();
    let versions = recorder.versions();
    // The whole timeline, for reading a violation after the fact.
    let timeline = artifacts;
    let lines: Vec<String> = versions
        .iter()
        .map(|v| {
            json!({"kind": format!("{:?}", v.kind), "name": v.name, "rv": v.rv, "at": v.at.to_string(), "object": v.object})
                .to_string()
        })
        .collect();
    std::fs::write(timeline.join("timeline.jsonl"), lines.join("\n")).unwrap();
    std::fs::write(timeline.join("audit.log"), &audit).unwrap();
    let actions = world.actions.lock().unwrap().clone();
    let fault_windows: Vec<Window> = records
        .iter()
        .map(|r| Window {
            what: format!("{:?}", r.kind),
            from: r.injected,
            until: r.cleared,
        })
        .collect();
    let cx = invariants::Context {
        versions: &versions,
        actions: &actions,
        prometheus_outages: &prometheus_outages,
        faults: &fault_windows,
        freeze_secs: FREEZE_SECS,
        rollback_bound: SignedDuration::from_secs(15),
        audit: &audit,
        replica_user_prefix: REPLICA_PREFIX,
        namespace: &ns,
    };
    let (mut report, rollback_latencies, fencing) = invariants::check_all(&cx);
    for failure in &liveness {
        report.check(
            "correct state within the bound after each fault",
            false,
            || failure.clone(),
        );
    }
    let recovered = records.iter().filter(|r| r.settled_after.is_some()).count();
    for _ in 0..recovered {
        report.check(
            "correct state within the bound after each fault",
            true,
            String::new,
        );
    }

    // Figures.
    println!(
        "\nchaos seed={seed}: {} faults in {:?}",
        records.len(),
        started.elapsed()
    );
    let mut by_kind: BTreeMap<FaultKind, Vec<&FaultRecord>> = BTreeMap::new();
    for r in &records {
        by_kind.entry(r.kind).or_default().push(r);
    }
    println!(
        "faults injected, by kind (time from the fault clearing to a correct cluster: median / max):"
    );
    for (kind, list) in &by_kind {
        let mut times: Vec<Duration> = list.iter().filter_map(|r| r.settled_after).collect();
        times.sort();
        let with_actions = list
            .iter()
            .filter(|r| {
                actions
                    .iter()
                    .any(|a| a.requested >= r.injected && a.requested <= r.cleared)
            })
            .count();
        println!(
            "  {kind:?}: {} ({} with human actions during it), settled {:?} / {:?}",
            list.len(),
            with_actions,
            quantile(&times, 0.5),
            times.last().copied().unwrap_or_default()
        );
    }
    let mut all: Vec<Duration> = records.iter().filter_map(|r| r.settled_after).collect();
    all.sort();
    println!(
        "  all: {} faults, settled median {:?}, max {:?}",
        records.len(),
        quantile(&all, 0.5),
        all.last().copied().unwrap_or_default()
    );
    let mut by_action: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &actions {
        *by_action.entry(a.kind.as_str()).or_default() += 1;
    }
    println!("human actions recorded: {} {by_action:?}", actions.len());
    let mut rollbacks: Vec<SignedDuration> = rollback_latencies.clone();
    rollbacks.sort();
    println!(
        "rollbacks: {} (status to 100% legacy routing: median {:?}, max {:?})",
        rollbacks.len(),
        rollbacks
            .get(rollbacks.len() / 2)
            .copied()
            .unwrap_or_default(),
        rollbacks.last().copied().unwrap_or_default()
    );
    println!(
        "recorder: {} versions; audit: {} replica writes in {} Lease terms ({} landed after the successor took the Lease, before it acted); {} handovers seen by the watch",
        versions.len(),
        fencing.writes,
        fencing.terms,
        fencing.after_takeover,
        fencing.handovers_recorded
    );
    println!("final: {}", final_phases.join(", "));
    println!(
        "timeline, audit log and replica logs: {}",
        timeline.display()
    );
    println!("invariant checks made: {}", report.total_checks());
    for (check, n) in &report.checks {
        println!("  {check}: {n}");
    }
    println!("violations: {}", report.violations.len());
    for v in &report.violations {
        println!("VIOLATION {v}");
    }
    assert!(
        report.violations.is_empty(),
        "chaos seed={seed}: {} invariant violations (printed above)",
        report.violations.len()
    );
}
