//! `decide_plan`: which waves of a CutoverPlan may start or move forward now, what the
//! plan's failure policy requires, and the plan's status.
//!
//! Waves take their permission from the plan's status (`status.waves[]`): the plan
//! controller is the only one that admits waves, one plan at a time, so two waves can
//! never both take the last concurrency slot.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::action_log::{self, Compaction};
use super::authority::{self, Admission};
use super::conditions::{self as cond};
use super::decision::{EngineEvent, EventKind};
use super::freeze::{self, FreezeState};
use super::observations::{Hold, MetricOutcome, PlanPermission, PlanRollback};
use super::whole_seconds;
use crate::api::{
    CutoverPlanSpec, CutoverPlanStatus, FreezeStatus, GateFailAction, GateStatus, HistoryEntry,
    OnWaveFailure, PlanPhase, WavePhase, WaveSummary,
};

/// Constant hold reasons in `status.waves[].heldBy`.
pub mod held_by {
    /// A wave named in `after` has not completed.
    pub const ORDER: &str = "Order";
    /// `maxConcurrentWaves` waves are already active.
    pub const CONCURRENCY: &str = "Concurrency";
    /// A readiness gate does not pass.
    pub const GATE_FAILING: &str = "GateFailing";
    /// A freeze window is open.
    pub const FROZEN: &str = "Frozen";
    /// A wave failed and the plan's policy holds the rest.
    pub const PLAN_PAUSED: &str = "PlanPaused";
    /// A freeze window cannot be evaluated, so the plan holds to be safe.
    pub const INVALID_FREEZE_WINDOW: &str = "InvalidFreezeWindow";
    /// The plan is being deleted.
    pub const PLAN_DELETING: &str = "PlanDeleting";
}

/// Plan condition types.
pub mod condition {
    /// Every wave completed.
    pub const READY: &str = "Ready";
    /// Every readiness gate passes.
    pub const GATES_PASSING: &str = "GatesPassing";
    /// A freeze window is open.
    pub const FROZEN: &str = "Frozen";
    /// The plan's waves and freeze windows check out.
    pub const VALID: &str = "Valid";
}

/// One wave of the plan as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct WaveView {
    /// The wave's name, as listed in the plan.
    pub name: String,
    /// Whether the MigrationWave exists.
    pub exists: bool,
    /// Its phase (Pending when it does not exist).
    pub phase: WavePhase,
    /// Whether it has started (it has a current step).
    pub started: bool,
    /// Why it failed, when it rolled back on its own (a metric, an alert) or failed.
    pub failure: Option<String>,
}

impl WaveView {
    /// Started and neither completed nor rolled back: it holds a concurrency slot.
    pub fn active(&self) -> bool {
        self.started
            && !matches!(
                self.phase,
                WavePhase::Completed | WavePhase::RolledBack | WavePhase::Pending
            )
    }
}

/// A readiness gate's latest Prometheus evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct GateObservation {
    /// The gate's name.
    pub name: String,
    /// Healthy means passing.
    pub outcome: MetricOutcome,
    /// The value, when there was one.
    pub value: Option<f64>,
    /// When it was evaluated.
    pub evaluated_at: Timestamp,
    /// Detail when not passing.
    pub message: Option<String>,
}

/// What the plan controller observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanObservations {
    /// The plan's `metadata.generation`.
    pub generation: Option<i64>,
    /// Every wave listed in `spec.waves`, in order.
    pub waves: Vec<WaveView>,
    /// Waves in the namespace that name this plan but are not listed in it.
    pub unlisted: Vec<String>,
    /// Prometheus gate evaluations.
    pub gates: Vec<GateObservation>,
    /// When the gates are evaluated next.
    pub next_gate_evaluation_at: Option<Timestamp>,
    /// The plan is being deleted.
    pub deleting: bool,
    /// Whether admission vouches for the identities recorded in `spec.actions`.
    pub admission: Admission,
    /// Entries removed from `spec.actions` so far (the `actions-compacted` annotation).
    pub actions_compacted: u64,
}

/// The plan engine's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanDecision {
    /// The plan's new status; `status.waves` carries each wave's permission.
    pub status: CutoverPlanStatus,
    /// Events for transitions.
    pub events: Vec<EngineEvent>,
    /// When to look again by time alone.
    pub requeue_at: Option<Timestamp>,
    /// Deleting, and every started wave is back on legacy: the deletion may finish.
    pub may_finish_deletion: bool,
    /// Processed entries to remove from `spec.actions`, once the status is written.
    pub compact: Option<Compaction>,
}

const MAX_HISTORY: usize = 50;

/// A hold that applies to every unfinished wave of the plan.
struct GlobalHold {
    reason: &'static str,
    message: String,
    until: Option<Timestamp>,
}

/// Decides the plan's status and each wave's permission. Pure.
pub fn decide_plan(
    spec: &CutoverPlanSpec,
    status: &CutoverPlanStatus,
    observations: &PlanObservations,
    now: Timestamp,
) -> PlanDecision {
    let now = whole_seconds(now);
    let generation = observations.generation;
    let mut next = status.clone();
    next.observed_generation = generation;
    let mut events = Vec::new();
    let mut requeue: Vec<Timestamp> = observations.next_gate_evaluation_at.into_iter().collect();
    let mut record =
        |history: &mut Vec<HistoryEntry>, kind, event: &str, actor: &str, message: String| {
            history.push(HistoryEntry {
                at: Time(now),
                event: event.to_owned(),
                reason: None,
                actor: Some(actor.to_owned()),
                message: Some(message.clone()),
            });
            events.push(EngineEvent {
                kind,
                reason: event.to_owned(),
                note: format!("{message} (by {actor})"),
            });
        };

    // Manual gate passes, judged and recorded once each. A pass is kept in the gate's
    // status, not looked up in the log again: it counts only for the gate as it stood
    // when the pass was processed, and survives the log's compaction.
    let mut passes: BTreeMap<&str, &str> = BTreeMap::new();
    let distrusted = authority::was_missing(&status.conditions);
    if observations.admission.is_known() {
        let total_actions = spec.actions.len();
        let start = action_log::first_unprocessed(
            next.actions_processed,
            observations.actions_compacted,
            total_actions,
        );
        for action in &spec.actions[start..] {
            let judged = match &distrusted {
                Some(refusal) => Err(refusal.clone()),
                None => authority::check_gate_pass(action, spec, &observations.admission),
            };
            match judged {
                Ok(()) => {
                    passes.insert(&action.gate, &action.user);
                    let message = format!(
                        "gate {} passed{}",
                        action.gate,
                        action
                            .message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    );
                    record(
                        &mut next.history,
                        EventKind::Normal,
                        "GatePassed",
                        &action.user,
                        message,
                    );
                }
                Err(refusal) => record(
                    &mut next.history,
                    EventKind::Warning,
                    crate::engine::conditions::event::ACTION_REFUSED,
                    &action.user,
                    format!("PassGate refused: {}", refusal.0),
                ),
            }
        }
        let processed = observations.actions_compacted + total_actions as u64;
        next.actions_processed = i32::try_from(processed).unwrap_or(i32::MAX);
    }

    // Gates.
    let mut gates = Vec::with_capacity(spec.readiness_gates.len());
    for gate in &spec.readiness_gates {
        let previous = status.gates.iter().find(|g| g.name == gate.name);
        let gate_status = if gate.manual.is_some() {
            let passed_by = passes
                .get(gate.name.as_str())
                .map(|user| (*user).to_owned())
                .or_else(|| previous.and_then(|p| p.passed_by.clone()));
            GateStatus {
                name: gate.name.clone(),
                passing: passed_by.is_some(),
                value: None,
                message: Some(match &passed_by {
                    Some(user) => format!("passed by {user}"),
                    None => "waits for an approver to pass it (kubectl wave gate pass)".into(),
                }),
                passed_by,
                last_evaluated: previous.and_then(|p| p.last_evaluated.clone()),
            }
        } else {
            match observations.gates.iter().find(|g| g.name == gate.name) {
                Some(observed) => GateStatus {
                    name: gate.name.clone(),
                    passing: observed.outcome == MetricOutcome::Healthy,
                    value: observed.value.filter(|v| v.is_finite()),
                    passed_by: None,
                    message: Some(match (observed.outcome, &observed.message) {
                        (MetricOutcome::Healthy, _) => "within its thresholds".into(),
                        (outcome, Some(message)) => format!("{}: {message}", outcome.as_str()),
                        (outcome, None) => outcome.as_str().to_owned(),
                    }),
                    last_evaluated: Some(Time(whole_seconds(observed.evaluated_at))),
                },
                None => GateStatus {
                    name: gate.name.clone(),
                    passing: false,
                    value: None,
                    passed_by: None,
                    message: Some("not evaluated yet".into()),
                    last_evaluated: None,
                },
            }
        };
        let was_passing = previous.is_some_and(|p| p.passing);
        if gate_status.passing != was_passing && previous.is_some() {
            let (kind, event) = if gate_status.passing {
                (EventKind::Normal, "GatePassing")
            } else {
                (EventKind::Warning, "GateFailing")
            };
            let message = format!(
                "gate {}: {}",
                gate.name,
                gate_status.message.clone().unwrap_or_default()
            );
            record(
                &mut next.history,
                kind,
                event,
                cond::ACTOR_SWITCHYARD,
                message,
            );
        }
        gates.push(gate_status);
    }
    let failing_gates: Vec<&GateStatus> = gates.iter().filter(|g| !g.passing).collect();
    let passing = gates.len() - failing_gates.len();
    next.gates_summary = Some(format!("{passing}/{}", gates.len()));
    next.gates = gates.clone();

    // Freeze windows.
    let mut parsed = Vec::new();
    let mut freeze_errors = Vec::new();
    for window in &spec.freeze_windows {
        match freeze::parse(window) {
            Ok(window) => parsed.push(window),
            Err(err) => freeze_errors.push(err.to_string()),
        }
    }
    let freeze_state = freeze::evaluate(&parsed, now);
    next.freeze = match &freeze_state {
        FreezeState::Open { window, until } => Some(FreezeStatus {
            window: window.clone(),
            until: Time(*until),
        }),
        FreezeState::Closed { .. } => None,
    };
    match &freeze_state {
        FreezeState::Open { until, .. } => requeue.push(*until),
        FreezeState::Closed {
            next_open: Some(at),
        } => requeue.push(*at),
        FreezeState::Closed { next_open: None } => {}
    }
    if status.freeze.is_none() != next.freeze.is_none() {
        let message = match &next.freeze {
            Some(f) => format!("freeze window {} is open until {}", f.window, f.until.0),
            None => "no freeze window is open".into(),
        };
        let event = if next.freeze.is_some() {
            "FreezeStarted"
        } else {
            "FreezeEnded"
        };
        record(
            &mut next.history,
            EventKind::Normal,
            event,
            cond::ACTOR_SWITCHYARD,
            message,
        );
    }

    // Failures and the policy.
    let failed: Vec<&WaveView> = observations
        .waves
        .iter()
        .filter(|w| w.failure.is_some())
        .collect();
    let policy = spec.on_wave_failure.unwrap_or_default();
    let rollback_gate = failing_gates.iter().find(|g| {
        spec.readiness_gates.iter().any(|spec_gate| {
            spec_gate.name == g.name && spec_gate.on_fail == Some(GateFailAction::Rollback)
        })
    });
    let any_started = observations.waves.iter().any(|w| w.started);

    let rollback_all: Option<String> = if observations.deleting {
        Some("the plan is being deleted".into())
    } else if let (OnWaveFailure::RollbackPlan, Some(first)) = (policy, failed.first()) {
        Some(format!(
            "wave {} failed ({}) and the plan's onWaveFailure is RollbackPlan",
            first.name,
            first.failure.clone().unwrap_or_default()
        ))
    } else if let (Some(gate), true) = (rollback_gate, any_started) {
        Some(format!(
            "gate {} stopped passing and says onFail: Rollback",
            gate.name
        ))
    } else {
        None
    };

    let global_hold: Option<GlobalHold> = if observations.deleting {
        Some(GlobalHold {
            reason: held_by::PLAN_DELETING,
            message: "the plan is being deleted".into(),
            until: None,
        })
    } else if !freeze_errors.is_empty() {
        Some(GlobalHold {
            reason: held_by::INVALID_FREEZE_WINDOW,
            message: freeze_errors.join("; "),
            until: None,
        })
    } else if let FreezeState::Open { window, until } = &freeze_state {
        Some(GlobalHold {
            reason: held_by::FROZEN,
            message: format!("freeze window {window} is open until {until}"),
            until: Some(*until),
        })
    } else if let (OnWaveFailure::PausePlan | OnWaveFailure::RollbackPlan, Some(first)) =
        (policy, failed.first())
    {
        Some(GlobalHold {
            reason: held_by::PLAN_PAUSED,
            message: format!(
                "wave {} failed ({}); retry or roll it back to go on",
                first.name,
                first.failure.clone().unwrap_or_default()
            ),
            until: None,
        })
    } else {
        failing_gates.first().map(|gate| GlobalHold {
            reason: held_by::GATE_FAILING,
            message: format!(
                "gate {} does not pass: {}",
                gate.name,
                gate.message.clone().unwrap_or_default()
            ),
            until: None,
        })
    };

    // Admission, in the plan's order.
    let max = usize::try_from(spec.max_concurrent_waves.unwrap_or(1).max(1)).unwrap_or(1);
    let mut slots_taken = observations.waves.iter().filter(|w| w.active()).count();
    let completed: Vec<&str> = observations
        .waves
        .iter()
        .filter(|w| w.phase == WavePhase::Completed)
        .map(|w| w.name.as_str())
        .collect();
    let mut summaries = Vec::with_capacity(spec.waves.len());
    for wave_ref in &spec.waves {
        let view = observations.waves.iter().find(|w| w.name == wave_ref.name);
        let phase = view.map_or(WavePhase::Pending, |w| w.phase);
        let started = view.is_some_and(|w| w.started);
        let finished = matches!(phase, WavePhase::Completed);
        let mut summary = WaveSummary {
            name: wave_ref.name.clone(),
            phase,
            admitted: false,
            held_by: None,
            message: None,
            until: None,
            rollback: None,
        };
        let unfinished_started = started && !finished && phase != WavePhase::RolledBack;
        if let Some(message) = &rollback_all
            && unfinished_started
        {
            summary.rollback = Some(message.clone());
        }
        if finished || phase == WavePhase::RolledBack {
            summaries.push(summary);
            continue;
        }
        if let Some(hold) = &global_hold {
            summary.held_by = Some(hold.reason.to_owned());
            summary.message = Some(hold.message.clone());
            summary.until = hold.until.map(Time);
        } else if !started {
            let waiting: Vec<&str> = wave_ref
                .after
                .iter()
                .map(String::as_str)
                .filter(|dep| !completed.contains(dep))
                .collect();
            if !waiting.is_empty() {
                summary.held_by = Some(held_by::ORDER.into());
                summary.message = Some(format!("waits for {} to complete", waiting.join(", ")));
            } else if slots_taken >= max {
                summary.held_by = Some(held_by::CONCURRENCY.into());
                summary.message = Some(format!(
                    "{slots_taken} of {max} waves are active (maxConcurrentWaves)"
                ));
            } else {
                summary.admitted = true;
                slots_taken += 1;
            }
        }
        summaries.push(summary);
    }
    next.waves = summaries;

    // Summary, phase and conditions.
    let done = observations
        .waves
        .iter()
        .filter(|w| w.phase == WavePhase::Completed)
        .count();
    next.waves_summary = Some(format!("{done}/{}", spec.waves.len()));
    let any_active = observations.waves.iter().any(WaveView::active);
    next.phase = if rollback_all.is_some() && any_active {
        PlanPhase::RollingBack
    } else if !spec.waves.is_empty() && done == spec.waves.len() {
        PlanPhase::Completed
    } else if !failed.is_empty() && policy == OnWaveFailure::RollbackPlan {
        PlanPhase::Failed
    } else if !failed.is_empty() && policy == OnWaveFailure::PausePlan {
        PlanPhase::Paused
    } else if next.freeze.is_some() {
        PlanPhase::Frozen
    } else if any_active {
        PlanPhase::Progressing
    } else {
        PlanPhase::Pending
    };
    let conditions = &mut next.conditions;
    let completed_all = next.phase == PlanPhase::Completed;
    cond::set(
        conditions,
        condition::READY,
        completed_all,
        if completed_all {
            "Completed"
        } else {
            "NotCompleted"
        },
        format!("{done} of {} waves completed", spec.waves.len()),
        generation,
        now,
    );
    cond::set(
        conditions,
        condition::GATES_PASSING,
        failing_gates.is_empty(),
        if failing_gates.is_empty() {
            "AllGatesPassing"
        } else {
            "GateFailing"
        },
        if failing_gates.is_empty() {
            format!("{passing} of {} gates pass", gates.len())
        } else {
            failing_gates
                .iter()
                .map(|g| format!("{}: {}", g.name, g.message.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ")
        },
        generation,
        now,
    );
    let (frozen, frozen_message) = match &next.freeze {
        Some(f) => (
            true,
            format!("freeze window {} is open until {}", f.window, f.until.0),
        ),
        None => (false, "no freeze window is open".to_owned()),
    };
    cond::set(
        conditions,
        condition::FROZEN,
        frozen,
        if frozen { "WindowOpen" } else { "NoWindowOpen" },
        frozen_message,
        generation,
        now,
    );
    let mut problems = freeze_errors.clone();
    if !observations.unlisted.is_empty() {
        problems.push(format!(
            "waves {} name this plan but are not in spec.waves; add them or fix their spec.plan",
            observations.unlisted.join(", ")
        ));
    }
    let valid = problems.is_empty();
    let flipped = cond::set(
        conditions,
        condition::VALID,
        valid,
        if valid {
            "Valid"
        } else if freeze_errors.is_empty() {
            "UnlistedWaves"
        } else {
            held_by::INVALID_FREEZE_WINDOW
        },
        if valid {
            "waves and freeze windows check out".to_owned()
        } else {
            problems.join("; ")
        },
        generation,
        now,
    );
    if flipped && !valid {
        record(
            &mut next.history,
            EventKind::Warning,
            "Invalid",
            cond::ACTOR_SWITCHYARD,
            problems.join("; "),
        );
    }

    if let Some((in_force, why, message)) = authority::condition(&observations.admission) {
        let flipped = cond::set(
            &mut next.conditions,
            cond::ADMISSION_POLICIES,
            in_force,
            why,
            message.clone(),
            generation,
            now,
        );
        if flipped && !in_force {
            record(
                &mut next.history,
                EventKind::Warning,
                why,
                cond::ACTOR_SWITCHYARD,
                message,
            );
        }
    }

    let overflow = next.history.len().saturating_sub(MAX_HISTORY);
    next.history.drain(..overflow);
    let may_finish_deletion =
        observations.deleting && !observations.waves.iter().any(WaveView::active);
    // Only entries the stored status already counts as processed (see the wave engine).
    let compact = action_log::compaction_due(
        status.actions_processed,
        observations.actions_compacted,
        spec.actions.len(),
    );
    PlanDecision {
        status: next,
        events,
        // A gate evaluation already due asks for a prompt look, never a stale deadline.
        requeue_at: requeue.into_iter().map(|t| t.max(now)).min(),
        may_finish_deletion,
        compact,
    }
}

/// What a wave may do, from its plan's status and spec, at `now`. The wave computes the
/// freeze itself too, so a window holds it from its first second even before the plan
/// controller has looked.
pub fn permission_for(
    wave: &str,
    spec: &CutoverPlanSpec,
    status: Option<&CutoverPlanStatus>,
    now: Timestamp,
) -> PlanPermission {
    let entry = status.and_then(|s| s.waves.iter().find(|w| w.name == wave));
    let mut permission = PlanPermission {
        may_start: entry.is_some_and(|e| e.admitted),
        hold: None,
        rollback: entry
            .and_then(|e| e.rollback.clone())
            .map(|message| PlanRollback { message }),
    };
    if let Some(entry) = entry
        && let Some(reason) = &entry.held_by
        && ![held_by::ORDER, held_by::CONCURRENCY].contains(&reason.as_str())
    {
        permission.hold = Some(Hold {
            reason: reason.clone(),
            message: entry.message.clone().unwrap_or_default(),
            until: entry.until.as_ref().map(|t| t.0),
        });
    }
    let parsed: Result<Vec<_>, _> = spec.freeze_windows.iter().map(freeze::parse).collect();
    match parsed {
        Ok(windows) => {
            if let FreezeState::Open { window, until } =
                freeze::evaluate(&windows, whole_seconds(now))
            {
                permission.hold = Some(Hold {
                    reason: held_by::FROZEN.into(),
                    message: format!("freeze window {window} is open until {until}"),
                    until: Some(until),
                });
            }
        }
        Err(err) => {
            permission.hold = Some(Hold {
                reason: held_by::INVALID_FREEZE_WINDOW.into(),
                message: err.to_string(),
                until: None,
            });
        }
    }
    permission
}

/// The failure of a wave, from its status, when it rolled back on its own or failed:
/// the plan's failure policy applies to these. A rollback a person asked for, or one
/// the plan itself caused, is not a failure.
pub fn wave_failure(status: &crate::api::MigrationWaveStatus) -> Option<String> {
    use super::conditions::reason;
    match status.phase {
        WavePhase::Failed => Some("the wave failed".into()),
        WavePhase::RolledBack | WavePhase::RollingBack => {
            let condition = cond::get(&status.conditions, cond::ROLLED_BACK)?;
            let automatic = [
                reason::METRIC_BREACHED,
                reason::NO_DATA,
                reason::QUERY_ERROR,
                reason::ALERT_FIRING,
            ];
            automatic
                .contains(&condition.reason.as_str())
                .then(|| format!("{}: {}", condition.reason, condition.message))
        }
        _ => None,
    }
}

/// Waves, by name, as the plan engine sees them.
pub fn wave_views(
    spec: &CutoverPlanSpec,
    waves: &BTreeMap<String, crate::api::MigrationWaveStatus>,
) -> Vec<WaveView> {
    spec.waves
        .iter()
        .map(|wave_ref| match waves.get(&wave_ref.name) {
            Some(status) => WaveView {
                name: wave_ref.name.clone(),
                exists: true,
                phase: status.phase,
                started: status.step_index.is_some(),
                failure: wave_failure(status),
            },
            None => WaveView {
                name: wave_ref.name.clone(),
                exists: false,
                phase: WavePhase::Pending,
                started: false,
                failure: None,
            },
        })
        .collect()
}
