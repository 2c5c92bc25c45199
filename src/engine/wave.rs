//! `decide` for one MigrationWave.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::action_log;
use super::authority::{self, Refusal};
use super::conditions::{self as cond, event, reason};
use super::decision::{Decision, EngineEvent, EventKind, RoutingIntent};
use super::observations::{AlertState, FiringAlert, MetricOutcome, Observations, Problem};
use super::route::RoutingState;
use super::whole_seconds;
use crate::api::{
    FailureAction, HistoryEntry, MetricStatus, MigrationWaveSpec, MigrationWaveStatus, Step,
    WaveActionType, WavePhase,
};

mod evidence;
pub use evidence::evidence_horizon;

/// The audit trail in status keeps this many newest entries.
pub const MAX_HISTORY: usize = 50;

/// A step, with its duration parsed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StepKind {
    SetWeight(u8),
    Analysis(Duration),
    Approval,
    Quiet(Duration),
    DualAccess(Duration),
}

impl StepKind {
    fn parse(step: &Step) -> Result<Self, String> {
        let duration = |d: &crate::api::DurationString| d.parse().map_err(|e| e.to_string());
        match step {
            Step {
                set_weight: Some(w),
                ..
            } => Ok(StepKind::SetWeight((*w).clamp(0, 100) as u8)),
            Step {
                analysis: Some(t), ..
            } => Ok(StepKind::Analysis(duration(&t.duration)?)),
            Step {
                approval: Some(_), ..
            } => Ok(StepKind::Approval),
            Step { quiet: Some(t), .. } => Ok(StepKind::Quiet(duration(&t.duration)?)),
            Step {
                dual_access: Some(t),
                ..
            } => Ok(StepKind::DualAccess(duration(&t.duration)?)),
            _ => Err("a step sets none of setWeight, analysis, approval, quiet, dualAccess".into()),
        }
    }

    fn phase(self) -> WavePhase {
        match self {
            StepKind::SetWeight(_) | StepKind::Analysis(_) => WavePhase::Progressing,
            StepKind::Approval => WavePhase::AwaitingApproval,
            StepKind::Quiet(_) => WavePhase::Quiet,
            StepKind::DualAccess(_) => WavePhase::DualAccess,
        }
    }

    fn describe(self) -> String {
        match self {
            StepKind::SetWeight(w) => format!("setWeight {w}"),
            StepKind::Analysis(d) => format!("analysis for {}", human(d)),
            StepKind::Approval => "approval".into(),
            StepKind::Quiet(d) => format!("quiet for {}", human(d)),
            StepKind::DualAccess(d) => format!("dual access for {}", human(d)),
        }
    }
}

fn human(d: Duration) -> String {
    format!(
        "{:#}",
        SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
    )
}

fn parse_steps(spec: &MigrationWaveSpec) -> Result<Vec<StepKind>, String> {
    spec.steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepKind::parse(s).map_err(|e| format!("spec.steps[{i}]: {e}")))
        .collect()
}

/// A step in words, as Events, history and `kubectl wave` show it: `setWeight 25`,
/// `analysis for 30m`, `approval`, `quiet for 20m`, `dual access for 72h`.
pub fn describe_step(step: &Step) -> String {
    StepKind::parse(step).map_or_else(
        |problem| format!("invalid step ({problem})"),
        StepKind::describe,
    )
}

/// The percentage of the cohort on the target at step `index`: the last `setWeight` at
/// or before it, or 0 before any.
pub fn weight_at(spec: &MigrationWaveSpec, index: usize) -> u8 {
    spec.steps
        .iter()
        .take(index + 1)
        .filter_map(|s| s.set_weight)
        .next_back()
        .map_or(0, |w| w.clamp(0, 100) as u8)
}

/// The routing of a wave that is at step `index`.
pub fn routing_for_step(spec: &MigrationWaveSpec, index: usize) -> RoutingState {
    let step = spec.steps.get(index);
    RoutingState {
        target_weight: weight_at(spec, index),
        quiet: step.is_some_and(|s| s.quiet.is_some()),
        legacy_override: step.is_some_and(|s| s.dual_access.is_some()),
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

struct Wave<'a> {
    spec: &'a MigrationWaveSpec,
    obs: &'a Observations,
    steps: Vec<StepKind>,
    now: Timestamp,
    status: MigrationWaveStatus,
    events: Vec<EngineEvent>,
    new_pause: Option<(&'static str, String)>,
    new_rollback: Option<(&'static str, String)>,
}

impl Wave<'_> {
    fn phase(&self) -> WavePhase {
        self.status.phase
    }

    fn step(&self) -> Option<(usize, StepKind)> {
        let i = usize::try_from(self.status.step_index?).ok()?;
        self.steps.get(i).map(|k| (i, *k))
    }

    /// Phases in which the cohort has routing that Switchyard maintains.
    fn routed(&self) -> bool {
        is_routed(&self.status)
    }

    fn record(
        &mut self,
        kind: EventKind,
        event: &str,
        reason: Option<&str>,
        actor: &str,
        message: String,
    ) {
        self.status.history.push(HistoryEntry {
            at: Time(self.now),
            event: event.to_owned(),
            reason: reason.map(str::to_owned),
            actor: Some(actor.to_owned()),
            message: Some(message.clone()).filter(|m| !m.is_empty()),
        });
        let note = match reason {
            Some(reason) => format!("{message} (reason: {reason}, by {actor})"),
            None => format!("{message} (by {actor})"),
        };
        self.events.push(EngineEvent {
            kind,
            reason: event.to_owned(),
            note,
        });
    }

    fn enter_step(&mut self, index: usize) {
        let kind = self.steps[index];
        self.status.step_index = Some(index as i32);
        self.status.step_started_at = Some(Time(self.now));
        self.status.approved_by = None;
        self.status.phase = kind.phase();
        self.status.target_weight = Some(i32::from(weight_at(self.spec, index)));
        self.status.dual_access_until = match kind {
            StepKind::DualAccess(d) => Some(Time(add(self.now, d))),
            _ => None,
        };
        let total = self.steps.len();
        let mut message = format!("step {}/{total}: {}", index + 1, kind.describe());
        if matches!(kind, StepKind::Analysis(_)) && self.no_metrics() {
            message.push_str(evidence::NO_METRICS);
        }
        self.record(
            EventKind::Normal,
            event::STEP_STARTED,
            None,
            cond::ACTOR_SWITCHYARD,
            message,
        );
    }

    fn pause(&mut self, why: &'static str, actor: &str, message: String) {
        if self.phase() == WavePhase::Paused {
            return;
        }
        self.status.phase = WavePhase::Paused;
        let kind = if why == reason::MANUAL_PAUSE {
            EventKind::Normal
        } else {
            EventKind::Warning
        };
        self.record(kind, event::PAUSED, Some(why), actor, message.clone());
        self.new_pause = Some((why, message));
    }

    fn resume(&mut self, actor: &str, message: String) {
        self.status.phase = match self.step() {
            Some((_, kind)) => kind.phase(),
            None => WavePhase::Pending,
        };
        // The step's clock restarts: an analysis must see its full duration of health.
        // Dual access keeps its persisted end, so a pause never shortens the window.
        if let Some((_, kind)) = self.step()
            && !matches!(kind, StepKind::DualAccess(_))
        {
            self.status.step_started_at = Some(Time(self.now));
        }
        for metric in &mut self.status.analysis {
            metric.consecutive_failures = 0;
        }
        self.record(EventKind::Normal, event::RESUMED, None, actor, message);
    }

    fn rollback(&mut self, why: &'static str, actor: &str, message: String) {
        if self.phase() == WavePhase::RolledBack {
            return;
        }
        self.status.phase = WavePhase::RolledBack;
        self.status.target_weight = Some(0);
        self.status.dual_access_until = None;
        self.status.approved_by = None;
        self.record(
            EventKind::Warning,
            event::ROLLED_BACK,
            Some(why),
            actor,
            message.clone(),
        );
        self.new_rollback = Some((why, message));
    }

    fn retry(&mut self, actor: &str, message: String) {
        self.status.phase = WavePhase::Pending;
        self.status.attempt += 1;
        self.status.step_index = None;
        self.status.step_started_at = None;
        self.status.target_weight = None;
        self.status.dual_access_until = None;
        self.status.approved_by = None;
        self.status.analysis.clear();
        let attempt = self.status.attempt;
        self.record(
            EventKind::Normal,
            event::RETRIED,
            None,
            actor,
            format!("attempt {}: {message}", attempt + 1)
                .trim_end_matches(": ")
                .to_owned(),
        );
    }

    fn ignore(&mut self, actor: &str, message: String) {
        self.record(
            EventKind::Warning,
            event::ACTION_IGNORED,
            None,
            actor,
            message,
        );
    }

    /// Records an action that did not take effect because its author was not
    /// authorised, or authority could not be established.
    fn refuse(&mut self, actor: &str, what: WaveActionType, refusal: Refusal) {
        self.record(
            EventKind::Warning,
            event::ACTION_REFUSED,
            Some(reason::NOT_AUTHORISED),
            actor,
            format!("{what:?} refused: {}", refusal.0),
        );
    }

    fn apply_actions(&mut self) {
        // Until the operator knows whether admission vouches for recorded identities,
        // actions wait: judging them now could refuse good ones or apply forged ones.
        if !self.obs.authority.admission.is_known() {
            return;
        }
        let total = self.spec.actions.len();
        let start = action_log::first_unprocessed(
            self.status.actions_processed,
            self.obs.actions_compacted,
            total,
        );
        let distrusted = authority::was_missing(&self.status.conditions);
        for action in &self.spec.actions[start..] {
            let user = action.user.as_str();
            let judged = match &distrusted {
                Some(refusal) => Err(refusal.clone()),
                None => authority::check_wave_action(action, self.spec, &self.obs.authority),
            };
            if let Err(refusal) = judged {
                self.refuse(user, action.action, refusal);
                continue;
            }
            let message = action.message.clone().unwrap_or_default();
            let phase = self.phase();
            match action.action {
                WaveActionType::Pause => match phase {
                    WavePhase::Pending
                    | WavePhase::Progressing
                    | WavePhase::AwaitingApproval
                    | WavePhase::Quiet
                    | WavePhase::DualAccess => self.pause(reason::MANUAL_PAUSE, user, message),
                    _ => self.ignore(user, format!("pause ignored: the wave is {phase:?}")),
                },
                WaveActionType::Resume => match phase {
                    WavePhase::Paused => self.resume(user, message),
                    _ => self.ignore(user, format!("resume ignored: the wave is {phase:?}")),
                },
                WaveActionType::Rollback => match phase {
                    WavePhase::RolledBack => {
                        self.ignore(user, "rollback ignored: the wave is already rolled back".into())
                    }
                    _ => self.rollback(reason::MANUAL_ROLLBACK, user, message),
                },
                WaveActionType::Retry => match phase {
                    WavePhase::RolledBack | WavePhase::Failed => self.retry(user, message),
                    _ => self.ignore(
                        user,
                        format!("retry ignored: only a rolled-back wave can be retried, and this one is {phase:?}"),
                    ),
                },
                WaveActionType::Approve => {
                    let wanted = action.step.unwrap_or(-1);
                    let at_that_approval = matches!(self.step(), Some((i, StepKind::Approval)) if i as i32 == wanted)
                        && matches!(phase, WavePhase::AwaitingApproval | WavePhase::Paused)
                        && self.status.approved_by.is_none();
                    if at_that_approval {
                        self.status.approved_by = Some(user.to_owned());
                        self.record(
                            EventKind::Normal,
                            event::APPROVED,
                            None,
                            user,
                            format!("step {wanted} approved{}", suffix(&message)),
                        );
                    } else {
                        let at = self.status.step_index.map_or("no step".to_owned(), |i| format!("step {i}"));
                        self.ignore(
                            user,
                            format!("approval of step {wanted} ignored: the wave is {phase:?} at {at}"),
                        );
                    }
                }
            }
        }
        let processed = self.obs.actions_compacted + total as u64;
        self.status.actions_processed = i32::try_from(processed).unwrap_or(i32::MAX);
    }

    /// A firing alert whose labels include all of the wave's `alerts.matchLabels`.
    fn matching_alert(&self) -> Option<&FiringAlert> {
        let alerts = self.spec.alerts.as_ref()?;
        self.obs.firing_alerts.iter().find(|alert| {
            alerts
                .match_labels
                .iter()
                .all(|(k, v)| alert.labels.get(k) == Some(v))
        })
    }

    /// Why forward moves wait for the alert state, if they do: the wave acts on alerts,
    /// and the operator does not know yet whether one of them fires.
    fn alerts_unknown(&self) -> Option<&str> {
        self.spec.alerts.as_ref()?;
        match &self.obs.alert_state {
            AlertState::Known => None,
            AlertState::Unknown { message } => Some(message),
        }
    }

    fn apply_alerts(&mut self) {
        let Some(alerts) = &self.spec.alerts else {
            return;
        };
        if !self.routed() {
            return;
        }
        let Some(alert) = self.matching_alert() else {
            return;
        };
        let labels = alert
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let message = format!("alert {} firing {{{labels}}}", alert.name);
        match alerts.on_firing.unwrap_or(crate::api::DEFAULT_ON_FIRING) {
            FailureAction::Rollback => {
                self.rollback(reason::ALERT_FIRING, cond::ACTOR_ALERTMANAGER, message)
            }
            FailureAction::Pause => {
                self.pause(reason::ALERT_FIRING, cond::ACTOR_ALERTMANAGER, message)
            }
        }
    }

    fn apply_metrics(&mut self) {
        // A pending wave's evaluations (asked for when it may start) are recorded, to
        // show why it does not start, but act on nothing: nothing is routed yet.
        let acting = self.routed();
        if !acting && (self.phase() != WavePhase::Pending || self.obs.metrics.is_empty()) {
            return;
        }
        let observations = &self.obs.metrics;
        self.status
            .analysis
            .retain(|m| observations.iter().any(|o| o.name == m.name));
        for observation in observations {
            let at = whole_seconds(observation.evaluated_at);
            let previous = self
                .status
                .analysis
                .iter()
                .find(|m| m.name == observation.name);
            let is_new = previous
                .and_then(|m| m.evaluated_at.as_ref())
                .is_none_or(|t| at > t.0);
            if !is_new {
                continue;
            }
            let failures = previous.map_or(0, |m| m.consecutive_failures);
            let failures = match observation.outcome {
                _ if !acting => 0,
                MetricOutcome::Healthy => 0,
                MetricOutcome::Breached => failures.saturating_add(1),
                MetricOutcome::NoData | MetricOutcome::Error => failures,
            };
            let entry = MetricStatus {
                name: observation.name.clone(),
                value: observation.value.filter(|v| v.is_finite()),
                result: observation.outcome.as_str().to_owned(),
                consecutive_failures: failures,
                evaluated_at: Some(Time(at)),
                message: observation.message.clone(),
            };
            match self
                .status
                .analysis
                .iter_mut()
                .find(|m| m.name == observation.name)
            {
                Some(existing) => *existing = entry,
                None => self.status.analysis.push(entry),
            }
            if !acting {
                continue;
            }
            let policy = observation.policy;
            let value = observation
                .value
                .map_or("no value".to_owned(), |v| v.to_string());
            let trigger = match observation.outcome {
                MetricOutcome::Breached if failures as u32 >= policy.failure_limit.max(1) => {
                    Some((
                        policy.on_failure,
                        reason::METRIC_BREACHED,
                        format!(
                            "metric {} breached its threshold {failures} time(s) in a row (value {value})",
                            observation.name
                        ),
                    ))
                }
                MetricOutcome::NoData => Some((
                    policy.on_no_data,
                    reason::NO_DATA,
                    format!("metric {} returned no data", observation.name),
                )),
                MetricOutcome::Error => Some((
                    policy.on_error,
                    reason::QUERY_ERROR,
                    format!(
                        "metric {} could not be evaluated: {}",
                        observation.name,
                        observation.message.as_deref().unwrap_or("query failed")
                    ),
                )),
                _ => None,
            };
            if let Some((action, why, message)) = trigger {
                match action {
                    FailureAction::Rollback => {
                        self.rollback(why, cond::ACTOR_SWITCHYARD, message);
                        return;
                    }
                    FailureAction::Pause => self.pause(why, cond::ACTOR_SWITCHYARD, message),
                }
            }
        }
    }

    /// Why metrics stop forward progress now, if they do.
    fn metrics_block(&self) -> Option<(&'static str, String)> {
        let bad = self
            .obs
            .metrics
            .iter()
            .find(|m| m.outcome != MetricOutcome::Healthy)?;
        let why = if bad.outcome == MetricOutcome::Breached {
            reason::METRIC_BREACHING
        } else {
            reason::METRIC_UNKNOWN
        };
        Some((
            why,
            format!("metric {} is {}", bad.name, bad.outcome.as_str()),
        ))
    }

    /// Whether the current step's own work is done (time elapsed, approval given).
    fn step_done(&self) -> bool {
        let Some((_, kind)) = self.step() else {
            return false;
        };
        let started = self
            .status
            .step_started_at
            .as_ref()
            .map_or(self.now, |t| t.0);
        match kind {
            StepKind::SetWeight(_) => true,
            StepKind::Analysis(d) | StepKind::Quiet(d) => self.now >= add(started, d),
            StepKind::Approval => self.status.approved_by.is_some(),
            StepKind::DualAccess(_) => self
                .status
                .dual_access_until
                .as_ref()
                .is_some_and(|until| self.now >= until.0),
        }
    }

    /// When the current step's own work will be done by time alone.
    fn step_deadline(&self) -> Option<Timestamp> {
        let (_, kind) = self.step()?;
        let started = self.status.step_started_at.as_ref()?.0;
        match kind {
            StepKind::Analysis(d) | StepKind::Quiet(d) => Some(add(started, d)),
            StepKind::DualAccess(_) => self.status.dual_access_until.as_ref().map(|t| t.0),
            StepKind::SetWeight(_) | StepKind::Approval => None,
        }
    }

    /// Whether a pending wave may start: its plan lets it, no alert or plan rollback
    /// speaks against it, and its metrics were just evaluated Healthy.
    fn may_start(&self) -> bool {
        self.obs.plan.may_start
            && self.obs.plan.rollback.is_none()
            && self.matching_alert().is_none()
            && self.evidence_block().is_none()
    }

    /// Moves forward by at most one step, if nothing holds the wave.
    fn progress(&mut self) {
        if self.obs.plan.hold.is_some() || self.alerts_unknown().is_some() {
            return;
        }
        match self.phase() {
            WavePhase::Pending if self.may_start() => {
                self.record(
                    EventKind::Normal,
                    event::WAVE_STARTED,
                    None,
                    cond::ACTOR_SWITCHYARD,
                    format!("cohort {}", self.spec.cohort_display()),
                );
                self.enter_step(0);
            }
            WavePhase::Progressing
            | WavePhase::AwaitingApproval
            | WavePhase::Quiet
            | WavePhase::DualAccess => {
                let Some((index, kind)) = self.step() else {
                    return;
                };
                if !self.step_done() || self.evidence_block().is_some() {
                    return;
                }
                if let StepKind::DualAccess(_) = kind {
                    self.record(
                        EventKind::Normal,
                        event::LEGACY_RETIRED,
                        None,
                        cond::ACTOR_SWITCHYARD,
                        "dual-access window elapsed; the legacy override is removed".into(),
                    );
                }
                if index + 1 < self.steps.len() {
                    self.enter_step(index + 1);
                } else {
                    self.status.phase = WavePhase::Completed;
                    self.status.target_weight = Some(100);
                    self.record(
                        EventKind::Normal,
                        event::COMPLETED,
                        None,
                        cond::ACTOR_SWITCHYARD,
                        "the cohort is on the target".into(),
                    );
                }
            }
            _ => {}
        }
    }

    fn routing(&self) -> RoutingIntent {
        match self.phase() {
            WavePhase::Completed => RoutingIntent::Route(RoutingState {
                target_weight: 100,
                quiet: false,
                legacy_override: false,
            }),
            WavePhase::RolledBack | WavePhase::RollingBack | WavePhase::Failed => {
                RoutingIntent::Remove
            }
            _ if !self.obs.problems.is_empty() => RoutingIntent::Leave,
            WavePhase::Pending => RoutingIntent::Remove,
            _ => match self.step() {
                Some((index, _)) => RoutingIntent::Route(routing_for_step(self.spec, index)),
                None => RoutingIntent::Remove,
            },
        }
    }

    fn set_conditions(&mut self) {
        let generation = self.obs.generation;
        let now = self.now;
        let phase = self.phase();
        let progressing = self.progressing_condition();
        let latched =
            |conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
             type_: &str,
             fresh: &Option<(&'static str, String)>,
             fallback: &str|
             -> (String, String) {
                match fresh {
                    Some((why, message)) => ((*why).to_owned(), message.clone()),
                    None => match cond::get(conditions, type_).filter(|c| c.status == "True") {
                        Some(c) => (c.reason.clone(), c.message.clone()),
                        None => (fallback.to_owned(), String::new()),
                    },
                }
            };
        let paused = (phase == WavePhase::Paused).then(|| {
            latched(
                &self.status.conditions,
                cond::PAUSED,
                &self.new_pause,
                reason::MANUAL_PAUSE,
            )
        });
        let rolled_back = (phase == WavePhase::RolledBack).then(|| {
            latched(
                &self.status.conditions,
                cond::ROLLED_BACK,
                &self.new_rollback,
                reason::MANUAL_ROLLBACK,
            )
        });
        let conditions = &mut self.status.conditions;

        let completed = phase == WavePhase::Completed;
        let (why, message) = if completed {
            (reason::COMPLETED, "the cohort is on the target".to_owned())
        } else {
            (reason::NOT_COMPLETED, format!("the wave is {phase:?}"))
        };
        cond::set(
            conditions,
            cond::READY,
            completed,
            why,
            message,
            generation,
            now,
        );

        set_latched(
            conditions,
            cond::PAUSED,
            paused,
            reason::NOT_PAUSED,
            generation,
            now,
        );
        set_latched(
            conditions,
            cond::ROLLED_BACK,
            rolled_back,
            reason::NOT_ROLLED_BACK,
            generation,
            now,
        );
        let (moving, why, message) = progressing;
        cond::set(
            conditions,
            cond::PROGRESSING,
            moving,
            why,
            message,
            generation,
            now,
        );
    }

    /// The Progressing condition, from the state after the decision.
    fn progressing_condition(&self) -> (bool, &'static str, String) {
        if let Some(problem) = self.obs.problems.first() {
            return (false, reason::INVALID_CONFIGURATION, problem.message());
        }
        let phase = self.phase();
        match phase {
            WavePhase::Completed => return (false, reason::COMPLETED, "all steps done".into()),
            WavePhase::RolledBack => {
                return (
                    false,
                    event::ROLLED_BACK,
                    "waits for an explicit retry".into(),
                );
            }
            WavePhase::Paused => {
                return (false, cond::PAUSED, "waits for kubectl wave resume".into());
            }
            _ => {}
        }
        if let Some(hold) = &self.obs.plan.hold {
            return (false, reason::HELD_BY_PLAN, hold.message.clone());
        }
        if let Some(message) = self.alerts_unknown() {
            return (
                false,
                reason::ALERTS_UNKNOWN,
                format!("no forward move until the firing alerts are known: {message}"),
            );
        }
        if phase == WavePhase::Pending {
            if let Some((why, message)) = self.evidence_block() {
                return (false, why, message);
            }
            if let Some(alert) = self.matching_alert() {
                return (
                    false,
                    reason::ALERT_FIRING,
                    format!("alert {} is firing for this cohort", alert.name),
                );
            }
            if let Some(rollback) = &self.obs.plan.rollback {
                return (false, reason::PLAN_ROLLBACK, rollback.message.clone());
            }
            if !self.obs.plan.may_start {
                return (
                    false,
                    reason::PENDING,
                    "waiting for its plan to start it".into(),
                );
            }
            return (true, reason::STEP_RUNNING, "starting".into());
        }
        let Some((index, kind)) = self.step() else {
            return (true, reason::STEP_RUNNING, "starting".into());
        };
        if kind == StepKind::Approval && self.status.approved_by.is_none() {
            return (
                false,
                reason::AWAITING_APPROVAL,
                format!(
                    "step {} waits for an approval (kubectl wave approve)",
                    index + 1
                ),
            );
        }
        if self.step_done()
            && let Some((why, message)) = self.evidence_block()
        {
            return (false, why, message);
        }
        (
            true,
            reason::STEP_RUNNING,
            format!(
                "step {}/{}: {}",
                index + 1,
                self.steps.len(),
                kind.describe()
            ),
        )
    }

    fn requeue_at(&self) -> Option<Timestamp> {
        let mut candidates = Vec::new();
        // A pending wave that may start watches its metrics too.
        let starting = self.phase() == WavePhase::Pending && self.evidence_horizon().is_some();
        if self.routed() || starting {
            candidates.extend(self.obs.next_evaluation_at);
        }
        let active = matches!(
            self.phase(),
            WavePhase::Progressing
                | WavePhase::AwaitingApproval
                | WavePhase::Quiet
                | WavePhase::DualAccess
        );
        if self.obs.problems.is_empty() && (active || self.phase() == WavePhase::Pending) {
            match &self.obs.plan.hold {
                Some(hold) => candidates.extend(hold.until),
                // The controller wakes every wave with alerts once the state is known.
                None if self.alerts_unknown().is_some() => {}
                None => {
                    // A move held only for fresh evidence is due now: the controller
                    // evaluates at once.
                    if active {
                        if self.step_done() {
                            if self.metrics_block().is_none() {
                                candidates.push(self.now);
                            }
                        } else {
                            candidates.extend(self.step_deadline());
                        }
                    } else if starting && self.metrics_block().is_none() {
                        candidates.push(self.now);
                    }
                }
            }
        }
        candidates.into_iter().min()
    }
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Sets a latched condition: True with its reason while latched, else False.
fn set_latched(
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    type_: &str,
    latched: Option<(String, String)>,
    off_reason: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    match latched {
        Some((why, message)) => cond::set(conditions, type_, true, &why, message, generation, now),
        None => cond::set(conditions, type_, false, off_reason, "", generation, now),
    };
}

/// Whether a wave in `status` has its cohort routed by Switchyard: from its first step
/// until it completes or rolls back, paused included once a step has run. Only then do
/// its analysis metrics decide anything.
pub fn is_routed(status: &MigrationWaveStatus) -> bool {
    match status.phase {
        WavePhase::Progressing
        | WavePhase::AwaitingApproval
        | WavePhase::Quiet
        | WavePhase::DualAccess => true,
        WavePhase::Paused => status.step_index.is_some(),
        _ => false,
    }
}

/// The status to record when a decision's routing could not be applied: a rollback
/// not carried out yet shows as RollingBack, so that nobody mistakes it for done (the
/// next decision takes it for RolledBack and the removal is retried); any other
/// decision is recorded only once its routing is in place, so nothing.
pub fn when_routing_failed(decided: &MigrationWaveStatus) -> Option<MigrationWaveStatus> {
    (decided.phase == WavePhase::RolledBack).then(|| MigrationWaveStatus {
        phase: WavePhase::RollingBack,
        ..decided.clone()
    })
}

/// Decides what should be true for one wave, from its spec, its last status, what was
/// observed, and the time. Pure: the same inputs always give the same decision.
pub fn decide(
    spec: &MigrationWaveSpec,
    status: &MigrationWaveStatus,
    observations: &Observations,
    now: Timestamp,
) -> Decision {
    let now = whole_seconds(now);
    // Compaction drops entries that the stored status already counts as processed, in
    // a write guarded by the resourceVersion this decision was made on.
    let compact = action_log::compaction_due(
        status.actions_processed,
        observations.actions_compacted,
        spec.actions.len(),
    );
    let mut problems = observations.problems.clone();
    let steps = match parse_steps(spec) {
        Ok(steps) => steps,
        Err(message) => {
            problems.push(Problem::InvalidSpec { message });
            Vec::new()
        }
    };
    let mut status = status.clone();
    // RollingBack records a rollback whose routing removal has not been confirmed yet;
    // the decision is still "rolled back", and the controller retries the removal.
    if status.phase == WavePhase::RollingBack {
        status.phase = WavePhase::RolledBack;
    }
    status.cohort = Some(spec.cohort_display());
    status.observed_generation = observations.generation;
    if let Some(i) = status.step_index
        && usize::try_from(i).map_or(true, |i| i >= steps.len())
        && !matches!(
            status.phase,
            WavePhase::Completed | WavePhase::RolledBack | WavePhase::Pending
        )
    {
        problems.push(Problem::InvalidSpec {
            message: format!(
                "spec.steps has {} steps but the wave is at step index {i}; restore the steps, or roll back and retry",
                steps.len()
            ),
        });
    }
    let observations = Observations {
        problems,
        ..observations.clone()
    };
    let mut wave = Wave {
        spec,
        obs: &observations,
        steps,
        now,
        status,
        events: Vec::new(),
        new_pause: None,
        new_rollback: None,
    };

    let valid = wave.obs.problems.is_empty();
    let (why, message) = match wave.obs.problems.first() {
        Some(problem) => (problem.reason(), problem.message()),
        None => (
            reason::VALID,
            "the plan, its backends and the cohort keys check out".to_owned(),
        ),
    };
    let flipped = cond::set(
        &mut wave.status.conditions,
        cond::VALID,
        valid,
        why,
        message.clone(),
        observations.generation,
        now,
    );
    if flipped && !valid {
        wave.record(
            EventKind::Warning,
            event::INVALID,
            Some(why),
            cond::ACTOR_SWITCHYARD,
            message,
        );
    }

    wave.apply_actions();
    if let Some((in_force, why, message)) = authority::condition(&observations.authority.admission)
    {
        cond::set(
            &mut wave.status.conditions,
            cond::ADMISSION_POLICIES,
            in_force,
            why,
            message,
            observations.generation,
            now,
        );
    }
    if let Some(rollback) = &observations.plan.rollback
        && wave.status.step_index.is_some()
        && !matches!(wave.phase(), WavePhase::RolledBack | WavePhase::Completed)
    {
        wave.rollback(
            reason::PLAN_ROLLBACK,
            cond::ACTOR_SWITCHYARD,
            rollback.message.clone(),
        );
    }
    wave.apply_alerts();
    wave.apply_metrics();
    if wave.obs.problems.is_empty() {
        wave.progress();
        // A wave that just started records the evaluations it now answers to, so that
        // the next decision on the same observations changes nothing.
        wave.apply_metrics();
    }

    let routing = wave.routing();
    wave.set_conditions();
    let requeue_at = wave.requeue_at();
    let overflow = wave.status.history.len().saturating_sub(MAX_HISTORY);
    wave.status.history.drain(..overflow);
    Decision {
        routing,
        status: wave.status,
        events: wave.events,
        requeue_at,
        compact,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: WavePhase, step_index: Option<i32>) -> MigrationWaveStatus {
        MigrationWaveStatus {
            phase,
            step_index,
            ..MigrationWaveStatus::default()
        }
    }

    #[test]
    fn a_wave_is_routed_from_its_first_step_until_it_ends() {
        use WavePhase::*;
        let table = [
            (Pending, None, false),
            (Progressing, Some(0), true),
            (AwaitingApproval, Some(1), true),
            (Quiet, Some(2), true),
            (DualAccess, Some(3), true),
            (Paused, None, false),
            (Paused, Some(1), true),
            (RollingBack, Some(1), false),
            (RolledBack, Some(1), false),
            (Failed, Some(1), false),
            (Completed, Some(3), false),
        ];
        for (phase, step, routed) in table {
            assert_eq!(
                is_routed(&status(phase, step)),
                routed,
                "{phase:?} {step:?}"
            );
        }
    }

    #[test]
    fn only_a_rollback_is_recorded_when_its_routing_fails_and_then_as_rolling_back() {
        use WavePhase::*;
        let failed = when_routing_failed(&status(RolledBack, Some(1))).expect("recorded");
        assert_eq!(failed, status(RollingBack, Some(1)));
        for phase in [
            Pending,
            Progressing,
            AwaitingApproval,
            Quiet,
            DualAccess,
            Paused,
            Completed,
        ] {
            assert_eq!(
                when_routing_failed(&status(phase, Some(1))),
                None,
                "{phase:?}"
            );
        }
    }
}
