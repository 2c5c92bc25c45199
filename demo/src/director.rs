//! The demo's release manager and its incident: watches the plan and its waves, passes
//! the manual gates and approves each approval step through `kubectl wave` (the plugin's
//! own code), breaks the failed-hand-off metric of one cohort once it reaches 25%, shows
//! the automatic rollback and the plan's hold, fixes the metric and retries the wave.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use jiff::Timestamp;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use switchyard::{
    analysis::{self, template},
    api::{CutoverPlan, MigrationWave, PlanPhase, WavePhase},
    cli::{
        Tone,
        commands::{self, CliError, Command, GateCommand, Output},
        view,
    },
    engine::{conditions as cond, describe_step},
};
use switchyard_testenv::{Exporter, Prometheus};

use crate::env::{HANDOFF_FAILURES, Operator, REGION_LABEL, TEAM_LABEL};
use crate::error::DemoError;
use crate::screen::{Mode, Screen, since};
use crate::traffic::Traffic;
use crate::traffic_view::{self, Report};

/// The wave whose cohort the incident hits.
pub const VICTIM: &str = "sales-emea";
/// The analysis metric the incident breaks (it rolls back on failure).
pub const INCIDENT_METRIC: &str = "failed-handoffs";
/// The weight at which the incident starts.
const INCIDENT_WEIGHT: i32 = 25;
/// Failed hand-offs added every second during the incident.
const INCIDENT_RATE: f64 = 4.0;
/// How long a release manager looks at a wave waiting for approval before approving.
const APPROVAL_THINK: Duration = Duration::from_secs(1);
/// How long the demo shows the plan's hold before fixing the incident.
const HOLD_SHOWN: Duration = Duration::from_secs(3);
/// How long each part of the incident may take before the demo gives up.
const INCIDENT_LIMIT: Duration = Duration::from_secs(90);
/// What the API server says when a JSON patch's `test` operation fails (422, the cause
/// only in the details): for `kubectl wave`, the object changed since it was read.
const CHANGED_UNDERNEATH: &str = "the server rejected our request due to an error in our request";
/// How long the plan may take to report Completed after its last wave.
const PLAN_CATCH_UP: Duration = Duration::from_secs(5);
/// How often the view is checked for a redraw.
const TICK: Duration = Duration::from_millis(250);

/// Who the release manager is and where the plan lives.
pub struct Context {
    /// The API client (read-only use: watches).
    pub client: Client,
    /// The namespace.
    pub namespace: String,
    /// The plan's name.
    pub plan: String,
    /// The demo's user.
    pub me: String,
    /// `--kubeconfig` for `kubectl wave` (None: its default, `$KUBECONFIG`).
    pub plugin_kubeconfig: Option<PathBuf>,
    /// The live view's header.
    pub header: String,
    /// The plan as applied (for the queries the incident watches).
    pub plan_spec: CutoverPlan,
    /// The waves as applied.
    pub waves_spec: Vec<MigrationWave>,
    /// When the demo started.
    pub started: Instant,
    /// The setup's milestones, (elapsed, what).
    pub milestones: Vec<(String, String)>,
}

/// The parts of the environment the director drives.
pub struct Parts<'a> {
    /// The output.
    pub screen: &'a mut Screen,
    /// Prometheus, for the incident's queries.
    pub prometheus: &'a Prometheus,
    /// The metrics source the incident changes.
    pub exporter: Arc<Exporter>,
    /// Where the incident's task is kept, so that cleanup stops it.
    pub incident_task: &'a mut Option<tokio::task::JoinHandle<()>>,
    /// The operator, checked on every tick.
    pub operator: &'a mut Operator,
    /// The load generator, when the demo runs a data plane.
    pub traffic: Option<&'a mut Traffic>,
}

/// A rollback the demo saw.
#[derive(Clone, Debug)]
pub struct Rollback {
    /// The wave.
    pub wave: String,
    /// Its attempt (0 for the first).
    pub attempt: i32,
    /// The RolledBack condition's reason.
    pub reason: String,
    /// Its message.
    pub message: String,
    /// When, since the demo started.
    pub at: String,
}

/// What happened, for the summary.
#[derive(Debug, Default)]
pub struct Record {
    /// (elapsed, what) for the timeline.
    pub milestones: Vec<(String, String)>,
    /// Approvals made, by wave.
    pub approvals: BTreeMap<String, usize>,
    /// Gates passed.
    pub gates: Vec<String>,
    /// Waves retried.
    pub retries: Vec<String>,
    /// Rollbacks seen.
    pub rollbacks: Vec<Rollback>,
    /// The waves the plan held after the rollback.
    pub held: Option<Vec<String>>,
    /// Alert states seen during the incident.
    pub alerts: Vec<String>,
}

/// How the migration ended.
pub struct Finish {
    /// What happened.
    pub record: Record,
    /// Each wave's final phase and attempts.
    pub waves: Vec<(String, WavePhase, i32)>,
    /// The plan's final phase.
    pub plan_phase: Option<PlanPhase>,
    /// What the gateway measured, when the demo ran a data plane.
    pub traffic: Option<Report>,
}

impl Finish {
    /// Why the demo failed, or None when it showed what it should: the victim rolled back
    /// automatically because of the failed-hand-off metric, and all six waves completed.
    pub fn failure(&self) -> Option<String> {
        let planned = self.record.rollbacks.iter().find(|r| r.wave == VICTIM);
        match planned {
            None => return Some(format!("{VICTIM} was never rolled back")),
            Some(r)
                if r.reason != cond::reason::METRIC_BREACHED
                    || !r.message.contains(INCIDENT_METRIC) =>
            {
                return Some(format!(
                    "{VICTIM} was rolled back by {} ({}), not by {} on {INCIDENT_METRIC}",
                    r.reason,
                    r.message,
                    cond::reason::METRIC_BREACHED
                ));
            }
            Some(_) => {}
        }
        let unfinished: Vec<String> = self
            .waves
            .iter()
            .filter(|(_, phase, _)| *phase != WavePhase::Completed)
            .map(|(name, phase, _)| format!("{name} is {phase:?}"))
            .collect();
        if self.waves.len() != 6 || !unfinished.is_empty() {
            return Some(format!(
                "not all six waves completed: {}",
                unfinished.join(", ")
            ));
        }
        let traffic = self.traffic.as_ref().map(|r| r.failures.clone());
        traffic.filter(|f| !f.is_empty()).map(|f| {
            format!(
                "the measured traffic disagrees with the routing: {}",
                f.join("; ")
            )
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Incident {
    /// Waiting for the victim to reach 25%.
    Armed,
    /// Failed hand-offs rising; the victim's approvals are held.
    Injecting(Instant),
    /// Rolled back: showing the plan's hold.
    Holding(Instant),
    /// The failures stopped; waiting for the metric to be healthy again.
    Fixing(Instant),
    /// The wave was retried.
    Over,
}

enum Acted {
    Recorded,
    Skipped,
    Transient,
}

/// Runs the migration to its end.
pub struct Director<'a> {
    ctx: Context,
    parts: Parts<'a>,
    plan: Option<CutoverPlan>,
    waves: BTreeMap<String, MigrationWave>,
    seen: BTreeMap<String, (WavePhase, i32)>,
    plan_seen: Option<(PlanPhase, Option<String>)>,
    approvals: BTreeSet<(String, i32, i32)>,
    awaiting_since: BTreeMap<(String, i32, i32), Instant>,
    gates: BTreeSet<String>,
    held_noted: BTreeSet<(String, i32, i32)>,
    incident: Incident,
    alert_states: BTreeSet<(String, String)>,
    next_alert_query: Instant,
    next_metric_query: Instant,
    completed_at: Option<Instant>,
    backoff_until: Option<Instant>,
    record: Record,
}

impl<'a> Director<'a> {
    /// A director for the applied plan.
    pub fn new(ctx: Context, parts: Parts<'a>) -> Self {
        let record = Record {
            milestones: ctx.milestones.clone(),
            ..Record::default()
        };
        Director {
            ctx,
            parts,
            plan: None,
            waves: BTreeMap::new(),
            seen: BTreeMap::new(),
            plan_seen: None,
            approvals: BTreeSet::new(),
            awaiting_since: BTreeMap::new(),
            gates: BTreeSet::new(),
            held_noted: BTreeSet::new(),
            incident: Incident::Armed,
            alert_states: BTreeSet::new(),
            next_alert_query: Instant::now(),
            next_metric_query: Instant::now(),
            completed_at: None,
            backoff_until: None,
            record,
        }
    }

    /// Records a milestone for the timeline.
    pub fn milestone(&mut self, what: &str) {
        let at = format!("+{}", since(self.ctx.started));
        self.record.milestones.push((at, what.to_owned()));
    }

    /// Watches and acts until every wave completed; an error when the story cannot go on.
    pub async fn run(mut self) -> Result<Finish, (DemoError, Finish)> {
        let log = self.parts.operator.log.display().to_string();
        self.parts
            .screen
            .event_in(Tone::Dim, &format!("the operator logs to {log}"));
        match self.drive().await {
            Ok(()) => Ok(self.finish()),
            Err(err) => {
                self.show(true);
                Err((err, self.finish()))
            }
        }
    }

    fn finish(self) -> Finish {
        let waves = self
            .ctx
            .plan_spec
            .spec
            .waves
            .iter()
            .map(|r| {
                let status = self
                    .waves
                    .get(&r.name)
                    .and_then(|w| w.status.clone())
                    .unwrap_or_default();
                (r.name.clone(), status.phase, status.attempt)
            })
            .collect();
        Finish {
            record: self.record,
            waves,
            plan_phase: self
                .plan
                .as_ref()
                .and_then(|p| p.status.as_ref())
                .map(|s| s.phase),
            traffic: None,
        }
    }

    async fn drive(&mut self) -> Result<(), DemoError> {
        let plans: Api<CutoverPlan> = Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace);
        let waves: Api<MigrationWave> =
            Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace);
        let mut plan_events = watcher(
            plans,
            watcher::Config::default().fields(&format!("metadata.name={}", self.ctx.plan)),
        )
        .default_backoff()
        .boxed();
        let mut wave_events = watcher(waves, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                Some(event) = plan_events.next() => match event {
                    Ok(event) => self.on_plan(event),
                    Err(err) => self.parts.screen.event_in(Tone::Dim, &format!("watching the plan: {err} (retrying)")),
                },
                Some(event) = wave_events.next() => match event {
                    Ok(event) => self.on_wave(event),
                    Err(err) => self.parts.screen.event_in(Tone::Dim, &format!("watching the waves: {err} (retrying)")),
                },
                _ = tick.tick() => {}
            }
            self.parts.operator.check_running()?;
            self.observe()?;
            if let Some(line) = self.parts.traffic.as_mut().and_then(|t| t.rollback_event()) {
                self.parts.screen.event_in(Tone::Good, &line);
            }
            self.act().await?;
            self.show(false);
            if self.completed_at.is_none() && self.all_completed() {
                self.milestone("all six waves completed");
                self.parts.screen.event_in(
                    Tone::Good,
                    "every wave is Completed: all six cohorts are on the new layer",
                );
                self.completed_at = Some(Instant::now());
            }
            // Give the plan a moment to say so too.
            if let Some(at) = self.completed_at {
                let plan_done = self
                    .plan
                    .as_ref()
                    .and_then(|p| p.status.as_ref())
                    .is_some_and(|s| s.phase == PlanPhase::Completed);
                if plan_done || at.elapsed() > PLAN_CATCH_UP {
                    self.show(true);
                    return Ok(());
                }
            }
        }
    }

    fn on_plan(&mut self, event: watcher::Event<CutoverPlan>) {
        match event {
            watcher::Event::Apply(plan) | watcher::Event::InitApply(plan) => {
                self.plan = Some(plan);
            }
            watcher::Event::Delete(_) => self.plan = None,
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    fn on_wave(&mut self, event: watcher::Event<MigrationWave>) {
        match event {
            watcher::Event::Apply(wave) | watcher::Event::InitApply(wave) => {
                let name = wave.metadata.name.clone().unwrap_or_default();
                self.waves.insert(name, wave);
            }
            watcher::Event::Delete(wave) => {
                self.waves
                    .remove(wave.metadata.name.as_deref().unwrap_or_default());
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    fn all_completed(&self) -> bool {
        let names = &self.ctx.plan_spec.spec.waves;
        !names.is_empty()
            && names.iter().all(|r| {
                self.waves
                    .get(&r.name)
                    .and_then(|w| w.status.as_ref())
                    .is_some_and(|s| s.phase == WavePhase::Completed)
            })
    }

    fn show(&mut self, force: bool) {
        let Some(plan) = self.plan.clone() else {
            return;
        };
        let waves: Vec<MigrationWave> = self.waves.values().cloned().collect();
        let header = self.ctx.header.clone();
        let table = self
            .parts
            .traffic
            .as_deref()
            .map(|t| traffic_view::snapshot(t, &self.waves));
        self.parts.screen.show(
            &header,
            |style| {
                let plan = view::plan_view(&plan, &waves, Timestamp::now(), style);
                match &table {
                    Some(table) => plan + &table.render(style),
                    None => plan,
                }
            },
            force,
        );
    }

    // -----------------------------------------------------------------------------------
    // What changed

    fn observe(&mut self) -> Result<(), DemoError> {
        if let Some(status) = self.plan.as_ref().and_then(|p| p.status.clone()) {
            let now = (status.phase, status.gates_summary.clone());
            let before = self.plan_seen.replace(now.clone());
            let name = self.ctx.plan.clone();
            match before {
                None => {
                    let held = status
                        .waves
                        .iter()
                        .find_map(|w| w.held_by.clone().zip(w.message.clone()));
                    let mut line = format!(
                        "plan {name}: {:?}, gates {} passing",
                        now.0,
                        now.1.as_deref().unwrap_or("?")
                    );
                    if let Some((reason, message)) = held {
                        let _ = write!(line, "; every wave held ({reason}: {message})");
                    }
                    self.parts.screen.event_in(Tone::Warn, &line);
                }
                Some(before) => {
                    if before.1 != now.1 {
                        let line = format!(
                            "plan {name}: gates {} → {} passing",
                            before.1.as_deref().unwrap_or("?"),
                            now.1.as_deref().unwrap_or("?")
                        );
                        self.parts.screen.event(&line);
                        if now.1.as_deref().is_some_and(all_passing) {
                            self.milestone("all gates passing");
                        }
                    }
                    if before.0 != now.0 {
                        let tone = match now.0 {
                            PlanPhase::Completed => Tone::Good,
                            PlanPhase::Paused | PlanPhase::Frozen => Tone::Warn,
                            PlanPhase::RollingBack | PlanPhase::Failed => Tone::Bad,
                            _ => Tone::Active,
                        };
                        let line = format!(
                            "plan {name}: {:?} → {:?} (waves {} completed)",
                            before.0,
                            now.0,
                            status.waves_summary.as_deref().unwrap_or("?")
                        );
                        self.parts.screen.event_in(tone, &line);
                    }
                }
            }
        }
        let names: Vec<String> = self
            .ctx
            .plan_spec
            .spec
            .waves
            .iter()
            .map(|r| r.name.clone())
            .collect();
        for name in names {
            let Some(wave) = self.waves.get(&name).cloned() else {
                continue;
            };
            let status = wave.status.clone().unwrap_or_default();
            let now = (status.phase, status.attempt);
            if matches!(now.0, WavePhase::RollingBack | WavePhase::RolledBack)
                && let Some(traffic) = self.parts.traffic.as_mut()
            {
                traffic.rolled_back(&name);
            }
            let before = self.seen.insert(name.clone(), now);
            if before == Some(now) || (before.is_none() && now.0 == WavePhase::Pending) {
                continue;
            }
            let from = before.map_or("-".to_owned(), |(p, _)| format!("{p:?}"));
            let mut line = format!("{name}: {from} → {:?}", now.0);
            if let Some(i) = status.step_index {
                let step = wave
                    .spec
                    .steps
                    .get(i as usize)
                    .map(describe_step)
                    .unwrap_or_default();
                let _ = write!(
                    line,
                    " at step {i} ({step}), {}% on the new layer",
                    status.target_weight.unwrap_or(0)
                );
            }
            if now.0 == WavePhase::Completed {
                line.push_str(": the cohort is on the new layer, legacy retired");
            }
            if status.attempt > 0 && now.0 == WavePhase::Pending {
                let _ = write!(line, " (attempt {})", status.attempt + 1);
            }
            let tone = match now.0 {
                WavePhase::Completed => Tone::Good,
                WavePhase::AwaitingApproval | WavePhase::Paused => Tone::Warn,
                WavePhase::RollingBack | WavePhase::RolledBack | WavePhase::Failed => Tone::Bad,
                _ => Tone::Active,
            };
            self.parts.screen.event_in(tone, &line);
            if before.is_none_or(|(p, _)| p == WavePhase::Pending)
                && now.0 != WavePhase::Pending
                && !self
                    .record
                    .milestones
                    .iter()
                    .any(|(_, m)| m == "first wave started")
            {
                self.milestone("first wave started");
            }
            if now.0 == WavePhase::RolledBack {
                self.rolled_back(&wave)?;
            }
        }
        Ok(())
    }

    fn rolled_back(&mut self, wave: &MigrationWave) -> Result<(), DemoError> {
        let name = wave.metadata.name.clone().unwrap_or_default();
        let status = wave.status.clone().unwrap_or_default();
        let (reason, message) = cond::get(&status.conditions, cond::ROLLED_BACK)
            .map(|c| (c.reason.clone(), c.message.clone()))
            .unwrap_or_else(|| ("?".into(), "no RolledBack condition".into()));
        let history = status
            .history
            .iter()
            .rev()
            .find(|h| h.event == cond::event::ROLLED_BACK);
        let screen = &mut *self.parts.screen;
        screen.event_in(
            Tone::Bad,
            &format!(
                "{name} rolled back automatically: condition RolledBack=True, reason {reason}: {message}"
            ),
        );
        if let Some(h) = history {
            screen.event_in(
                Tone::Bad,
                &format!(
                    "{name} history: {} {} ({}) by {}: {}",
                    h.at.0,
                    h.event,
                    h.reason.as_deref().unwrap_or("-"),
                    h.actor.as_deref().unwrap_or("-"),
                    h.message.as_deref().unwrap_or("-")
                ),
            );
        }
        let at = format!("+{}", since(self.ctx.started));
        self.record.rollbacks.push(Rollback {
            wave: name.clone(),
            attempt: status.attempt,
            reason: reason.clone(),
            message: message.clone(),
            at,
        });
        let planned = name == VICTIM
            && status.attempt == 0
            && matches!(self.incident, Incident::Injecting(_));
        if !planned {
            return Err(DemoError::UnexpectedRollback {
                wave: name,
                reason,
                message,
            });
        }
        self.milestone(&format!("{name} rolled back ({reason})"));
        self.incident = Incident::Holding(Instant::now());
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // What the release manager does

    async fn act(&mut self) -> Result<(), DemoError> {
        if self
            .backoff_until
            .is_some_and(|until| Instant::now() < until)
        {
            return Ok(());
        }
        self.pass_gates().await?;
        self.incident_step().await?;
        self.refuse_automatic_pauses()?;
        self.approve().await?;
        self.parts.screen.waiting_for = self.waiting_for();
        Ok(())
    }

    fn waiting_for(&self) -> String {
        match self.incident {
            Incident::Injecting(_) => format!("{VICTIM} to roll back on {INCIDENT_METRIC}"),
            Incident::Holding(_) => {
                format!("the plan to hold the other waves after {VICTIM}'s rollback")
            }
            Incident::Fixing(_) => format!("{INCIDENT_METRIC} of {VICTIM} to be healthy again"),
            Incident::Armed | Incident::Over => {
                let done = self
                    .waves
                    .values()
                    .filter(|w| {
                        w.status
                            .as_ref()
                            .is_some_and(|s| s.phase == WavePhase::Completed)
                    })
                    .count();
                format!("the waves to complete ({done}/6 so far)")
            }
        }
    }

    async fn pass_gates(&mut self) -> Result<(), DemoError> {
        let Some(plan) = self.plan.clone() else {
            return Ok(());
        };
        let Some(status) = plan.status.as_ref().filter(|s| !s.gates.is_empty()) else {
            // The operator has not evaluated the gates yet: let it show them failing first.
            return Ok(());
        };
        for gate in plan
            .spec
            .readiness_gates
            .iter()
            .filter(|g| g.manual.is_some())
        {
            if self.gates.contains(&gate.name)
                || status
                    .gates
                    .iter()
                    .any(|g| g.name == gate.name && g.passing)
            {
                continue;
            }
            let message = match gate.name.as_str() {
                "rehearsal-accepted" => "dress rehearsal on a production copy signed off",
                "training-complete" => "every affected team finished training",
                _ => "signed off",
            };
            let display = format!(
                "gate pass {} {} -n {} -m \"{message}\"",
                self.ctx.plan, gate.name, self.ctx.namespace
            );
            let command = Command::Gate {
                command: GateCommand::Pass {
                    plan: self.ctx.plan.clone(),
                    gate: gate.name.clone(),
                    message: Some(message.into()),
                },
            };
            match self.kubectl_wave(command, &display).await? {
                Acted::Recorded | Acted::Skipped => {
                    self.gates.insert(gate.name.clone());
                    self.record.gates.push(gate.name.clone());
                }
                Acted::Transient => return Ok(()),
            }
        }
        Ok(())
    }

    async fn approve(&mut self) -> Result<(), DemoError> {
        let order: Vec<String> = self
            .ctx
            .plan_spec
            .spec
            .waves
            .iter()
            .map(|r| r.name.clone())
            .collect();
        for name in order {
            let Some(wave) = self.waves.get(&name).cloned() else {
                continue;
            };
            let status = wave.status.clone().unwrap_or_default();
            let Some(step) = status.step_index else {
                continue;
            };
            let at_approval = wave
                .spec
                .steps
                .get(step as usize)
                .is_some_and(|s| s.approval.is_some());
            if status.phase != WavePhase::AwaitingApproval
                || !at_approval
                || status.approved_by.is_some()
            {
                continue;
            }
            let key = (name.clone(), status.attempt, step);
            if self.approvals.contains(&key) {
                continue;
            }
            let incident_on = matches!(
                self.incident,
                Incident::Injecting(_) | Incident::Holding(_) | Incident::Fixing(_)
            );
            if name == VICTIM && status.attempt == 0 && incident_on {
                if self.held_noted.insert(key) {
                    self.parts.screen.event_in(
                        Tone::Warn,
                        &format!(
                            "{}: holding the approval of {name} step {step} while its hand-offs fail",
                            self.ctx.me
                        ),
                    );
                }
                continue;
            }
            let since = *self
                .awaiting_since
                .entry(key.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() < APPROVAL_THINK {
                continue;
            }
            let message = approval_note(&wave, step as usize, status.target_weight.unwrap_or(0));
            let display = format!(
                "approve {name} --step {step} -n {} -m \"{message}\"",
                self.ctx.namespace
            );
            let command = Command::Approve {
                wave: name.clone(),
                step: Some(step),
                message: Some(message),
            };
            match self.kubectl_wave(command, &display).await? {
                Acted::Recorded => {
                    self.approvals.insert(key);
                    *self.record.approvals.entry(name.clone()).or_default() += 1;
                }
                Acted::Skipped => {
                    self.approvals.insert(key);
                }
                Acted::Transient => return Ok(()),
            }
        }
        Ok(())
    }

    /// A wave that paused on its own (no data, a query error, a metric whose onFailure is
    /// Pause) waits for a person: that is the fail-safe the product promises, so the
    /// demo never resumes it; it stops and says why instead.
    fn refuse_automatic_pauses(&self) -> Result<(), DemoError> {
        for (name, wave) in &self.waves {
            let Some(status) = wave
                .status
                .as_ref()
                .filter(|s| s.phase == WavePhase::Paused)
            else {
                continue;
            };
            if let Some(c) = cond::get(&status.conditions, cond::PAUSED)
                && c.status == "True"
                && c.reason != cond::reason::MANUAL_PAUSE
            {
                return Err(DemoError::PausedByItself {
                    wave: name.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                });
            }
        }
        Ok(())
    }

    /// Runs one `kubectl wave` command through the plugin's own code, as the demo's user.
    async fn kubectl_wave(&mut self, command: Command, display: &str) -> Result<Acted, DemoError> {
        let cli = commands::Cli {
            kubeconfig: self.ctx.plugin_kubeconfig.clone(),
            context: None,
            namespace: Some(self.ctx.namespace.clone()),
            all_namespaces: false,
            output: Output::Text,
            command,
        };
        let mut out = Vec::new();
        match commands::run(cli, &mut out).await {
            Ok(()) => {
                self.parts.screen.event_in(
                    Tone::Active,
                    &format!("{}: kubectl wave {display}", self.ctx.me),
                );
                Ok(Acted::Recorded)
            }
            Err(CliError::Action(err)) => {
                self.parts.screen.event_in(
                    Tone::Dim,
                    &format!("{}: kubectl wave {display}: not sent: {err}", self.ctx.me),
                );
                Ok(Acted::Skipped)
            }
            // kubectl wave guards its append with a JSON-patch test of the resourceVersion;
            // when the operator writes the status in between, the API server answers 422
            // with only this generic message (the cause is in the details), which the
            // plugin reports as a refusal. The action was not recorded: try again.
            Err(CliError::Refused(message)) if message == CHANGED_UNDERNEATH => {
                self.parts.screen.event_in(
                    Tone::Dim,
                    &format!(
                        "{}: kubectl wave {display}: the object changed while it was being recorded; trying again",
                        self.ctx.me
                    ),
                );
                self.backoff_until = Some(Instant::now() + Duration::from_millis(200));
                Ok(Acted::Transient)
            }
            Err(
                err @ (CliError::Refused(_)
                | CliError::NotPermitted { .. }
                | CliError::Identity(_)
                | CliError::Kubeconfig(_)
                | CliError::Infer(_)
                | CliError::NotFound { .. }
                | CliError::Usage(_)),
            ) => Err(DemoError::Plugin {
                command: display.to_owned(),
                source: err,
            }),
            Err(err) => {
                self.parts.screen.event_in(
                    Tone::Dim,
                    &format!(
                        "{}: kubectl wave {display}: {err} (trying again)",
                        self.ctx.me
                    ),
                );
                self.backoff_until = Some(Instant::now() + Duration::from_secs(1));
                Ok(Acted::Transient)
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // The incident

    fn victim_cohort(&self) -> (String, String) {
        let wave = self
            .ctx
            .waves_spec
            .iter()
            .find(|w| w.metadata.name.as_deref() == Some(VICTIM));
        let get = |k: &str| {
            wave.and_then(|w| w.spec.cohort.get(k).cloned())
                .unwrap_or_default()
        };
        (get("team"), get("region"))
    }

    /// The victim's failed-hand-off query, as the operator sends it, and its ceiling.
    fn incident_query(&self) -> Option<(String, f64)> {
        let wave = self
            .ctx
            .waves_spec
            .iter()
            .find(|w| w.metadata.name.as_deref() == Some(VICTIM))?;
        let effective = analysis::effective(
            self.ctx.plan_spec.spec.analysis.as_ref(),
            wave.spec.analysis.as_ref(),
        )
        .ok()?;
        let metric = effective
            .metrics
            .iter()
            .find(|m| m.metric.name == INCIDENT_METRIC)?;
        let values = template::wave_values(&wave.spec.cohort, VICTIM, &self.ctx.namespace);
        let query = template::render(&metric.metric.query, &values).ok()?;
        Some((query, metric.metric.max.unwrap_or(0.0)))
    }

    async fn incident_step(&mut self) -> Result<(), DemoError> {
        match self.incident {
            Incident::Armed => {
                let Some(status) = self.waves.get(VICTIM).and_then(|w| w.status.clone()) else {
                    return Ok(());
                };
                if status.attempt == 0
                    && status.target_weight.unwrap_or(0) >= INCIDENT_WEIGHT
                    && status.phase != WavePhase::RolledBack
                {
                    self.start_incident();
                }
            }
            Incident::Injecting(since) => {
                self.watch_alerts().await;
                self.watch_breach().await;
                if since.elapsed() > INCIDENT_LIMIT {
                    return Err(DemoError::Stalled(format!(
                        "{VICTIM} was not rolled back within {}s of its hand-offs failing",
                        INCIDENT_LIMIT.as_secs()
                    )));
                }
            }
            Incident::Holding(since) => {
                self.watch_alerts().await;
                let held = self.plan_hold();
                if held.is_some() && self.record.held.is_none() {
                    let held = held.unwrap_or_default();
                    let message = self
                        .plan
                        .as_ref()
                        .and_then(|p| p.status.as_ref())
                        .and_then(|s| s.waves.iter().find_map(|w| w.message.clone()))
                        .unwrap_or_default();
                    self.parts.screen.event_in(
                        Tone::Warn,
                        &format!(
                            "plan {}: onWaveFailure PausePlan holds {} (PlanPaused: {message})",
                            self.ctx.plan,
                            held.join(", ")
                        ),
                    );
                    self.milestone("plan paused (onWaveFailure: PausePlan)");
                    self.record.held = Some(held);
                    self.show(true);
                }
                let shown = self.record.held.is_some() && since.elapsed() >= HOLD_SHOWN;
                if shown || since.elapsed() > Duration::from_secs(20) {
                    if self.record.held.is_none() {
                        self.parts.screen.event_in(
                            Tone::Warn,
                            &format!(
                                "plan {}: no hold seen after 20s; fixing anyway",
                                self.ctx.plan
                            ),
                        );
                    }
                    self.fix();
                }
            }
            Incident::Fixing(since) => {
                self.watch_alerts().await;
                if Instant::now() < self.next_metric_query {
                    return Ok(());
                }
                self.next_metric_query = Instant::now() + Duration::from_millis(500);
                let Some((query, max)) = self.incident_query() else {
                    return Err(DemoError::Stalled(format!(
                        "the plan has no {INCIDENT_METRIC} metric for {VICTIM}"
                    )));
                };
                let value = match self.parts.prometheus.query(&query).await {
                    Ok(samples) => samples.first().map(|s| s.value),
                    Err(_) => None,
                };
                let firing = self.alert_states.iter().any(|(_, state)| state == "firing");
                if value == Some(0.0) && !firing {
                    let (team, region) = self.victim_cohort();
                    self.parts.screen.event_in(
                        Tone::Good,
                        &format!(
                            "{INCIDENT_METRIC} for {team}/{region} is 0 again (at most {max}), {} after the fix",
                            since_text(since)
                        ),
                    );
                    self.retry().await?;
                } else if since.elapsed() > INCIDENT_LIMIT {
                    return Err(DemoError::Stalled(format!(
                        "{INCIDENT_METRIC} of {VICTIM} was not healthy again within {}s of the fix (last value {value:?})",
                        INCIDENT_LIMIT.as_secs()
                    )));
                }
            }
            Incident::Over => {}
        }
        Ok(())
    }

    fn start_incident(&mut self) {
        let (team, region) = self.victim_cohort();
        let exporter = Arc::clone(&self.parts.exporter);
        let labels = [(TEAM_LABEL, team.clone()), (REGION_LABEL, region.clone())];
        let task = tokio::spawn(async move {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut total = 0.0;
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                total += INCIDENT_RATE;
                exporter.set(HANDOFF_FAILURES, &labels, total);
            }
        });
        if let Some(old) = self.parts.incident_task.replace(task) {
            old.abort();
        }
        let max = self.incident_query().map_or(0.0, |(_, max)| max);
        self.parts.screen.event_in(
            Tone::Bad,
            &format!(
                "incident: {VICTIM} is at {INCIDENT_WEIGHT}% and hand-offs for {team}/{region} start failing on the new layer: \
                 {HANDOFF_FAILURES}{{{TEAM_LABEL}=\"{team}\",{REGION_LABEL}=\"{region}\"}} +{INCIDENT_RATE} a second \
                 ({INCIDENT_METRIC} allows at most {max})"
            ),
        );
        self.milestone(&format!("incident starts ({VICTIM} at {INCIDENT_WEIGHT}%)"));
        self.incident = Incident::Injecting(Instant::now());
    }

    fn fix(&mut self) {
        if let Some(task) = self.parts.incident_task.take() {
            task.abort();
        }
        let (team, region) = self.victim_cohort();
        self.parts.screen.event_in(
            Tone::Good,
            &format!(
                "fix: the hand-off bug is fixed; no more failed hand-offs for {team}/{region}. Waiting for {INCIDENT_METRIC} to be healthy again"
            ),
        );
        self.milestone("fix deployed");
        self.incident = Incident::Fixing(Instant::now());
    }

    async fn retry(&mut self) -> Result<(), DemoError> {
        let message = format!("hand-off bug fixed; {INCIDENT_METRIC} back to 0");
        let display = format!("retry {VICTIM} -n {} -m \"{message}\"", self.ctx.namespace);
        let command = Command::Retry {
            wave: VICTIM.into(),
            message: Some(message),
        };
        match self.kubectl_wave(command, &display).await? {
            Acted::Recorded => {
                if let Some(traffic) = self.parts.traffic.as_mut() {
                    traffic.retried();
                }
                self.record.retries.push(VICTIM.into());
                self.milestone(&format!("{VICTIM} retried"));
                self.incident = Incident::Over;
            }
            Acted::Skipped => self.incident = Incident::Over,
            Acted::Transient => {}
        }
        Ok(())
    }

    /// The unfinished waves the plan holds with PlanPaused, when it does.
    fn plan_hold(&self) -> Option<Vec<String>> {
        let status = self.plan.as_ref()?.status.as_ref()?;
        let held: Vec<String> = status
            .waves
            .iter()
            .filter(|w| w.held_by.as_deref() == Some("PlanPaused"))
            .map(|w| w.name.clone())
            .collect();
        (status.phase == PlanPhase::Paused && !held.is_empty()).then_some(held)
    }

    /// Notes when Prometheus first answers the victim's metric above its ceiling: the
    /// breach the gateway's rollback time is measured from.
    async fn watch_breach(&mut self) {
        let Some(traffic) = self.parts.traffic.as_deref() else {
            return;
        };
        if traffic.breached_at().is_some() || Instant::now() < self.next_metric_query {
            return;
        }
        self.next_metric_query = Instant::now() + Duration::from_millis(200);
        let Some((query, max)) = self.incident_query() else {
            return;
        };
        let Ok(samples) = self.parts.prometheus.query(&query).await else {
            return;
        };
        if let Some(value) = samples.first().map(|s| s.value).filter(|v| *v > max)
            && let Some(traffic) = self.parts.traffic.as_mut()
        {
            traffic.breached();
            self.parts.screen.event_in(
                Tone::Bad,
                &format!(
                    "Prometheus: {INCIDENT_METRIC} of {VICTIM} is {value:.1}, above its ceiling {max}: the breach (the analysis acts after failureLimit evaluations in a row)"
                ),
            );
            self.milestone(&format!("{INCIDENT_METRIC} breaches"));
        }
    }

    /// Reports the incident's alerts as Prometheus sees them (pending, firing, gone).
    async fn watch_alerts(&mut self) {
        if Instant::now() < self.next_alert_query {
            return;
        }
        self.next_alert_query = Instant::now() + Duration::from_millis(500);
        let (team, region) = self.victim_cohort();
        let query = format!("ALERTS{{{TEAM_LABEL}=\"{team}\",{REGION_LABEL}=\"{region}\"}}");
        let Ok(samples) = self.parts.prometheus.query(&query).await else {
            return;
        };
        let now: BTreeSet<(String, String)> = samples
            .iter()
            .map(|s| {
                let get = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
                (get("alertname"), get("alertstate"))
            })
            .collect();
        for (name, state) in now.difference(&self.alert_states) {
            let line = match state.as_str() {
                "firing" => format!(
                    "Prometheus: alert {name} firing for {team}/{region}; Alertmanager sends it to the operator's receiver"
                ),
                _ => format!(
                    "Prometheus: alert {name} {state} for {team}/{region} (the analysis acts before its for: elapses)"
                ),
            };
            self.parts.screen.event_in(Tone::Warn, &line);
            self.record.alerts.push(format!("{name} {state}"));
        }
        for (name, state) in self.alert_states.difference(&now) {
            let line = format!("Prometheus: alert {name} no longer {state} for {team}/{region}");
            self.parts.screen.event_in(Tone::Dim, &line);
        }
        self.alert_states = now;
    }
}

fn all_passing(summary: &str) -> bool {
    summary
        .split_once('/')
        .is_some_and(|(a, b)| a == b && !a.is_empty())
}

fn since_text(at: Instant) -> String {
    format!("{:.1}s", at.elapsed().as_secs_f64())
}

/// What an approval approves, for its note: `5% → 25%`, or the cutover.
fn approval_note(wave: &MigrationWave, step: usize, weight: i32) -> String {
    let rest = wave.spec.steps.iter().skip(step + 1);
    for next in rest {
        if next.quiet.is_some() {
            return "cutover: final sync (quiet), then 100%".into();
        }
        if let Some(w) = next.set_weight {
            return format!("{weight}% → {w}%: metrics healthy");
        }
    }
    "metrics healthy".into()
}

/// Prints the summary: each wave's end, the rollbacks and their causes, the actions and
/// the timeline.
pub fn print_summary(screen: &mut Screen, finish: &Finish, started: Instant) {
    let style = screen.style();
    screen.say("");
    screen.say_in(Tone::Bold, &format!("Summary ({} in all)", since(started)));
    let width = finish
        .waves
        .iter()
        .map(|(n, _, _)| n.len())
        .max()
        .unwrap_or(4)
        .max(4);
    screen.say(&format!(
        "  {:width$}  {:16}  {:<8}  {:<9}  ROLLBACKS",
        "WAVE", "PHASE", "ATTEMPTS", "APPROVALS"
    ));
    for (name, phase, attempt) in &finish.waves {
        let rollbacks: Vec<String> = finish
            .record
            .rollbacks
            .iter()
            .filter(|r| &r.wave == name)
            .map(|r| {
                format!(
                    "attempt {} at {}: {}: {}",
                    r.attempt + 1,
                    r.at,
                    r.reason,
                    r.message
                )
            })
            .collect();
        let tone = if *phase == WavePhase::Completed {
            Tone::Good
        } else {
            Tone::Bad
        };
        screen.say(&format!(
            "  {:width$}  {}  {:<8}  {:<9}  {}",
            name,
            style.pad(tone, &format!("{phase:?}"), 16),
            attempt + 1,
            finish.record.approvals.get(name).copied().unwrap_or(0),
            if rollbacks.is_empty() {
                "-".into()
            } else {
                rollbacks.join("; ")
            }
        ));
    }
    if let Some(phase) = finish.plan_phase {
        screen.say(&format!("  plan: {phase:?}"));
    }
    let approvals: usize = finish.record.approvals.values().sum();
    screen.say(&format!(
        "  release manager: {} gate pass(es) ({}), {approvals} approvals, {} retry ({})",
        finish.record.gates.len(),
        finish.record.gates.join(", "),
        finish.record.retries.len(),
        finish.record.retries.join(", "),
    ));
    if let Some(held) = &finish.record.held {
        screen.say(&format!(
            "  onWaveFailure PausePlan held: {}",
            held.join(", ")
        ));
    }
    if !finish.record.alerts.is_empty() {
        screen.say(&format!(
            "  alerts seen during the incident: {}",
            finish.record.alerts.join(", ")
        ));
    }
    for line in finish.traffic.iter().flat_map(|r| r.lines()) {
        screen.say(&format!("  {line}"));
    }
    let timeline: Vec<String> = finish
        .record
        .milestones
        .iter()
        .map(|(at, what)| format!("{at} {what}"))
        .collect();
    screen.say(&format!("  timeline: {}", timeline.join(" · ")));
    if screen.mode() == Mode::Log {
        screen.say("");
    }
}
