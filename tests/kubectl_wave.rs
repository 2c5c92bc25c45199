//! The `kubectl-wave` binary as a subprocess against a real API server, as impersonated
//! users, with the shipped admission policies and ClusterRoles in force and the
//! controllers running: output, exit codes, and what actually happens to the waves.

mod common;

use common::access::{bind, install_policies, install_roles};

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::waves::{self, RunningController};
use futures::StreamExt;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use switchyard::api::{CutoverPlan, MigrationWave, WavePhase};
use tokio::io::AsyncBufReadExt;

/// What one run of the plugin did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A namespace with the plan `crm`, the policies and roles, the controllers, and a
/// kubeconfig per person.
struct World {
    admin: Client,
    ns: String,
    dir: tempfile::TempDir,
    _controller: RunningController,
}

impl World {
    async fn new(prefix: &str, plan: CutoverPlan) -> Self {
        let plane = common::plane();
        let (admin, ns) = common::admin_in_fresh_namespace(prefix).await;
        install_policies(&admin).await;
        install_roles(&admin).await;
        // People and their roles in this namespace.
        for user in ["alice", "sam", "mallory"] {
            bind(&admin, &ns, "switchyard-release-manager", user).await;
        }
        bind(&admin, &ns, "switchyard-viewer", "victor").await;
        waves::create_backends(&admin, &ns).await;
        waves::create(&admin, &ns, &plan).await;
        let dir = tempfile::tempdir().unwrap();
        for (user, groups) in [
            ("alice", vec!["release-managers"]),
            ("sam", vec!["sre"]),
            ("mallory", vec![]),
            ("victor", vec![]),
            ("eve", vec![]),
        ] {
            std::fs::write(
                dir.path().join(format!("{user}.yaml")),
                plane.kubeconfig_yaml(Some((user, &groups))),
            )
            .unwrap();
        }
        let controller = RunningController::start(&admin, &ns);
        Self {
            admin,
            ns,
            dir,
            _controller: controller,
        }
    }

    fn kubeconfig(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("{user}.yaml"))
    }

    fn command(&self, user: &str, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-wave"));
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig(user))
            .args(["-n", &self.ns])
            .args(args)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        command
    }

    async fn run(&self, user: &str, args: &[&str]) -> Run {
        let output = self.command(user, args).output().await.unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// Runs a command that must succeed, and returns its stdout.
    async fn ok(&self, user: &str, args: &[&str]) -> String {
        let run = self.run(user, args).await;
        assert_eq!(
            run.code, 0,
            "kubectl wave {args:?} as {user} failed: {}",
            run.stderr
        );
        assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
        run.stdout
    }

    /// Runs a command that must fail, and returns its one-line error.
    async fn fails(&self, user: &str, args: &[&str]) -> String {
        let run = self.run(user, args).await;
        assert_eq!(
            run.code, 1,
            "kubectl wave {args:?} as {user} should have failed; stdout: {}",
            run.stdout
        );
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "errors are one line: {:?}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
        run.stderr.trim_end().to_owned()
    }

    async fn wave(&self, name: &str) -> MigrationWave {
        Api::<MigrationWave>::namespaced(self.admin.clone(), &self.ns)
            .get(name)
            .await
            .unwrap()
    }

    async fn wait_phase(&self, name: &str, phase: WavePhase, step: Option<i32>) -> MigrationWave {
        waves::wait_phase(&self.admin, &self.ns, name, phase, step).await
    }
}

fn crm_plan(waves: &[&str], manual_gate: bool) -> CutoverPlan {
    let mut plan = waves::plan("crm", waves, false);
    plan.spec.approvers =
        Some(serde_json::from_value(json!({"groups": ["release-managers"]})).unwrap());
    plan.spec.rollback_authority = Some(serde_json::from_value(json!({"users": ["sam"]})).unwrap());
    if manual_gate {
        plan.spec.readiness_gates =
            serde_json::from_value(json!([{"name": "rehearsal-accepted", "manual": {}}])).unwrap();
    }
    plan
}

#[tokio::test]
async fn a_release_manager_approves_and_the_history_shows_who() {
    let world = World::new("kw-approve", crm_plan(&["support-emea"], false)).await;
    waves::create(
        &world.admin,
        &world.ns,
        &waves::wave(
            "support-emea",
            "crm",
            "support",
            "emea",
            json!([{"setWeight": 10}, {"approval": {}}, {"setWeight": 100}]),
        ),
    )
    .await;
    world
        .wait_phase("support-emea", WavePhase::AwaitingApproval, Some(1))
        .await;
    wait_for_policies::<MigrationWave>(
        &world,
        "support-emea",
        json!({"type": "Pause", "user": "somebody-else"}),
    )
    .await;

    // Who the plugin records.
    assert_eq!(world.ok("alice", &["whoami"]).await, "alice\n");

    // Someone who is not an approver is refused by the API server, with who may.
    let refused = world
        .fails("mallory", &["approve", "support-emea", "-m", "me too"])
        .await;
    assert!(
        refused.starts_with("error: the API server refused the change: "),
        "{refused}"
    );
    assert!(refused.contains("release-managers"), "{refused}");
    assert!(world.wave("support-emea").await.spec.actions.is_empty());

    // Someone who may only look is told which permission is missing.
    let denied = world.fails("victor", &["approve", "support-emea"]).await;
    assert_eq!(
        denied,
        format!(
            "error: not permitted: victor may not patch migrationwaves.switchyard.dev in namespace \"{}\" (the switchyard-release-manager role grants it)",
            world.ns
        )
    );
    // Someone without any role cannot even read it.
    let denied = world.fails("eve", &["get", "support-emea"]).await;
    assert!(
        denied.starts_with("error: not permitted: eve may not read migrationwaves"),
        "{denied}"
    );

    // Approving another step, or a wave that does not exist, says so.
    let wrong = world
        .fails("alice", &["approve", "support-emea", "--step", "2"])
        .await;
    assert_eq!(
        wrong,
        "error: nothing to approve: wave support-emea is AwaitingApproval at step 1 (approval), not waiting for approval of step 2"
    );
    let missing = world.fails("alice", &["approve", "nope"]).await;
    assert_eq!(
        missing,
        format!(
            "error: no MigrationWave \"nope\" in namespace \"{}\"",
            world.ns
        )
    );

    // The approver approves; the wave advances; the history shows them and the message.
    let out = world
        .ok(
            "alice",
            &["approve", "support-emea", "-m", "CHG-1042 signed off"],
        )
        .await;
    assert_eq!(
        out,
        "wave/support-emea: approval of step 1 recorded for alice\n"
    );
    let done = world
        .wait_phase("support-emea", WavePhase::Completed, None)
        .await;
    let history = &done.status.as_ref().unwrap().history;
    let approved = history
        .iter()
        .find(|h| h.event == "Approved")
        .expect("an Approved history entry");
    assert_eq!(approved.actor.as_deref(), Some("alice"));
    assert!(
        approved
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("step 1 approved") && m.contains("CHG-1042 signed off")),
        "the history names the step as --step and the plugin's reply do: {approved:?}"
    );
    assert_eq!(done.spec.actions.len(), 1, "{:?}", done.spec.actions);
    assert_eq!(done.spec.actions[0].user, "alice");

    // And now there is nothing to approve.
    let late = world.fails("alice", &["approve", "support-emea"]).await;
    assert!(
        late.starts_with("error: nothing to approve: wave support-emea is Completed"),
        "{late}"
    );

    // The readable view and the machine-readable one agree with the object.
    let view = world.ok("victor", &["get", "support-emea"]).await;
    assert!(
        view.starts_with(&format!(
            "MigrationWave {}/support-emea  Completed",
            world.ns
        )),
        "{view}"
    );
    assert!(view.contains("Approved       alice: "), "{view}");
    assert!(
        !view.contains('\x1b'),
        "no colors when not on a terminal: {view:?}"
    );
    let json: MigrationWave = serde_json::from_str(
        &world
            .ok("victor", &["get", "support-emea", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(json.status.unwrap().phase, WavePhase::Completed);
    let yaml: MigrationWave = serde_yaml::from_str(
        &world
            .ok("victor", &["get", "support-emea", "-o", "yaml"])
            .await,
    )
    .unwrap();
    assert_eq!(yaml.spec.actions[0].user, "alice");
}

#[tokio::test]
async fn rollback_needs_rollback_authority_and_retry_starts_again() {
    let world = World::new("kw-rollback", crm_plan(&["sales-amer"], false)).await;
    waves::create(
        &world.admin,
        &world.ns,
        &waves::wave(
            "sales-amer",
            "crm",
            "sales",
            "amer",
            json!([{"setWeight": 25}, {"approval": {}}, {"setWeight": 100}]),
        ),
    )
    .await;
    world
        .wait_phase("sales-amer", WavePhase::AwaitingApproval, Some(1))
        .await;
    wait_for_policies::<MigrationWave>(
        &world,
        "sales-amer",
        json!({"type": "Pause", "user": "somebody-else"}),
    )
    .await;

    // An approver is not a rollback authority.
    let refused = world
        .fails("alice", &["rollback", "sales-amer", "--reason", "nervous"])
        .await;
    assert!(
        refused.starts_with("error: the API server refused the change: ")
            && refused.contains("rollbackAuthority")
            && refused.contains("sam"),
        "{refused}"
    );
    assert_eq!(
        world.wave("sales-amer").await.status.unwrap().phase,
        WavePhase::AwaitingApproval
    );

    // Pause and resume: either authority may.
    world
        .ok("alice", &["pause", "sales-amer", "-m", "hold on"])
        .await;
    world
        .wait_phase("sales-amer", WavePhase::Paused, None)
        .await;
    let again = world.fails("alice", &["pause", "sales-amer"]).await;
    assert_eq!(again, "error: wave sales-amer is already paused");
    world.ok("sam", &["resume", "sales-amer"]).await;
    world
        .wait_phase("sales-amer", WavePhase::AwaitingApproval, Some(1))
        .await;

    // Retry before a rollback is refused by the plugin, with why.
    let early = world.fails("sam", &["retry", "sales-amer"]).await;
    assert_eq!(
        early,
        "error: nothing to retry: only a rolled-back wave can be retried, and sales-amer is AwaitingApproval"
    );

    // The rollback authority rolls back; the wave goes back to legacy.
    let out = world
        .ok(
            "sam",
            &[
                "rollback",
                "sales-amer",
                "--reason",
                "duplicate records",
                "-o",
                "json",
            ],
        )
        .await;
    let recorded: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(recorded["action"]["type"], "Rollback");
    assert_eq!(recorded["action"]["user"], "sam");
    assert_eq!(recorded["action"]["message"], "duplicate records");
    let rolled = world
        .wait_phase("sales-amer", WavePhase::RolledBack, None)
        .await;
    assert_eq!(rolled.status.as_ref().unwrap().target_weight, Some(0));
    assert!(
        rolled
            .status
            .unwrap()
            .history
            .iter()
            .any(|h| h.event == "RolledBack" && h.actor.as_deref() == Some("sam")),
    );

    // Retry needs the rollback authority too; then the wave starts over.
    let refused = world.fails("alice", &["retry", "sales-amer"]).await;
    assert!(refused.contains("rollbackAuthority"), "{refused}");
    world.ok("sam", &["retry", "sales-amer"]).await;
    let retried = world
        .wait_phase("sales-amer", WavePhase::AwaitingApproval, Some(1))
        .await;
    assert_eq!(retried.status.unwrap().attempt, 1);
}

#[tokio::test]
async fn a_manual_gate_passed_with_the_plugin_lets_the_plan_start() {
    let world = World::new("kw-gate", crm_plan(&["marketing-emea"], true)).await;
    waves::create(
        &world.admin,
        &world.ns,
        &waves::wave(
            "marketing-emea",
            "crm",
            "marketing",
            "emea",
            json!([{"setWeight": 10}, {"approval": {}}]),
        ),
    )
    .await;
    // The gate holds the wave.
    let plans: Api<CutoverPlan> = Api::namespaced(world.admin.clone(), &world.ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while plans
        .get("crm")
        .await
        .unwrap()
        .status
        .is_none_or(|s| s.gates.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the plan never evaluated its gates"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tree = world.ok("victor", &["plan", "crm"]).await;
    assert!(tree.contains("✗ rehearsal-accepted  manual"), "{tree}");
    assert!(
        tree.contains("kubectl wave gate pass crm rehearsal-accepted"),
        "{tree}"
    );
    assert_eq!(
        world
            .wave("marketing-emea")
            .await
            .status
            .unwrap_or_default()
            .phase,
        WavePhase::Pending
    );
    let listed = world.ok("victor", &["list"]).await;
    assert!(listed.contains("gates: rehearsal-accepted"), "{listed}");

    // Only approvers may pass it; a gate that does not exist is named.
    let unknown = world
        .fails("alice", &["gate", "pass", "crm", "rehersal"])
        .await;
    assert_eq!(
        unknown,
        "error: plan crm has no readiness gate \"rehersal\" (manual gates: rehearsal-accepted)"
    );
    wait_for_policies::<CutoverPlan>(
        &world,
        "crm",
        json!({"type": "PassGate", "gate": "rehearsal-accepted", "user": "somebody-else"}),
    )
    .await;
    let refused = world
        .fails("mallory", &["gate", "pass", "crm", "rehearsal-accepted"])
        .await;
    assert!(
        refused.starts_with("error: the API server refused the change: ")
            && refused.contains("release-managers"),
        "{refused}"
    );

    let out = world
        .ok(
            "alice",
            &[
                "gate",
                "pass",
                "crm",
                "rehearsal-accepted",
                "-m",
                "rehearsal report #42",
            ],
        )
        .await;
    assert_eq!(out, "plan/crm: gate rehearsal-accepted passed by alice\n");
    world
        .wait_phase("marketing-emea", WavePhase::AwaitingApproval, Some(1))
        .await;
    let plan = plans.get("crm").await.unwrap();
    let gate = &plan.status.unwrap().gates[0];
    assert!(gate.passing);
    assert_eq!(gate.passed_by.as_deref(), Some("alice"));

    // The list shows the wave with what it waits for, across namespaces too.
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&world.ok("victor", &["list", "-o", "json"]).await).unwrap();
    let row = rows
        .iter()
        .find(|r| r["name"] == "marketing-emea")
        .expect("the wave is listed");
    assert_eq!(row["phase"], "AwaitingApproval");
    assert_eq!(row["step"], "1/2");
    assert_eq!(row["weight"], 10);
    assert!(
        row["waitingFor"]
            .as_str()
            .unwrap()
            .starts_with("approval of step 1 by groups release-managers"),
        "{row}"
    );
    let usage = world
        .fails("victor", &["get", "marketing-emea", "-A"])
        .await;
    assert_eq!(usage, "error: -A/--all-namespaces works only with list");
}

#[tokio::test]
async fn get_watch_shows_a_step_change_within_a_second() {
    let world = World::new("kw-watch", crm_plan(&["support-amer"], false)).await;
    waves::create(
        &world.admin,
        &world.ns,
        &waves::wave(
            "support-amer",
            "crm",
            "support",
            "amer",
            json!([{"setWeight": 10}, {"approval": {}}, {"setWeight": 50}, {"approval": {}}]),
        ),
    )
    .await;
    world
        .wait_phase("support-amer", WavePhase::AwaitingApproval, Some(1))
        .await;

    let mut child = world
        .command("victor", &["get", "support-amer", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines_tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    // The first frame shows the wave waiting at step 1.
    next_line_containing(&mut lines, ">  1  approval", Duration::from_secs(10)).await;

    // Our own watch, running before the approval, notes the instant the step changes
    // in the API server.
    let api: Api<MigrationWave> = Api::namespaced(world.admin.clone(), &world.ns);
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let observer = tokio::spawn(async move {
        let mut changes = watcher(
            api,
            watcher::Config::default().fields("metadata.name=support-amer"),
        )
        .applied_objects()
        .boxed();
        let mut ready_tx = Some(ready_tx);
        while let Some(wave) = changes.next().await {
            let wave = wave.unwrap();
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(());
            }
            if wave.status.is_some_and(|s| s.step_index == Some(3)) {
                return Instant::now();
            }
        }
        panic!("the watch ended");
    });
    ready.await.unwrap();
    world.ok("alice", &["approve", "support-amer"]).await;
    let changed_at = tokio::time::timeout(Duration::from_secs(30), observer)
        .await
        .expect("the wave moves on to step 3")
        .unwrap();
    let (shown_at, _) =
        next_line_containing(&mut lines, ">  3  approval", Duration::from_secs(5)).await;
    let lag = shown_at.saturating_duration_since(changed_at);
    assert!(
        lag < Duration::from_secs(1),
        "get --watch showed the step change {lag:?} after it happened"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

async fn next_line_containing(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>,
    needle: &str,
    timeout: Duration,
) -> (Instant, String) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some((at, line))) if line.contains(needle) => return (at, line),
            Ok(Some((_, line))) => seen.push(line),
            Ok(None) => panic!("the watch ended; it printed:\n{}", seen.join("\n")),
            Err(_) => panic!(
                "no line with {needle:?} within {timeout:?}; the watch printed:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[tokio::test]
async fn an_action_is_checked_again_when_the_wave_changes_before_it_is_written() {
    let world = World::new("kw-stale", crm_plan(&["sales-emea"], false)).await;
    waves::create(
        &world.admin,
        &world.ns,
        &waves::wave(
            "sales-emea",
            "crm",
            "sales",
            "emea",
            json!([{"setWeight": 10}, {"approval": {}}]),
        ),
    )
    .await;
    world
        .wait_phase("sales-emea", WavePhase::AwaitingApproval, Some(1))
        .await;
    // The plugin reads the wave, then waits; meanwhile the wave changes.
    let child = world
        .command("alice", &["pause", "sales-emea", "-m", "hold"])
        .env("SWITCHYARD_TEST_DELAY_WRITE_MS", "1500")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    Api::<MigrationWave>::namespaced(world.admin.clone(), &world.ns)
        .patch(
            "sales-emea",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "the plugin gave up on a wave that changed under it: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "wave/sales-emea: pause recorded for alice\n"
    );
    let wave = world.wave("sales-emea").await;
    assert_eq!(wave.spec.actions.len(), 1, "{:?}", wave.spec.actions);
    assert_eq!(wave.metadata.labels.unwrap()["touched"], "yes");
}

/// The policies take effect once the API server has loaded them: until a spoofed entry
/// (`spoof`, an action recorded for someone else) is refused on `name`, in a dry run, a
/// test would measure nothing.
async fn wait_for_policies<K>(world: &World, name: &str, spoof: serde_json::Value)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(
        common::plane().client_as("mallory", &[]).await.unwrap(),
        &world.ns,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let patch = json!([{"op": "add", "path": "/spec/actions", "value": [spoof.clone()]}]);
        match api
            .patch(
                name,
                &PatchParams {
                    dry_run: true,
                    ..PatchParams::default()
                },
                &Patch::<()>::Json(serde_json::from_value(patch).unwrap()),
            )
            .await
        {
            Err(kube::Error::Api(s)) if s.message.contains("ValidatingAdmissionPolicy") => return,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("the admission policies never took effect: {other:?}"),
        }
    }
}
