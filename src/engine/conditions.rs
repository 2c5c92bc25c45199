//! Condition types, reasons and history events: constants, so that users, alerts and
//! tests can rely on them.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition: the wave has completed and its cohort is on the target.
pub const READY: &str = "Ready";
/// Condition: the wave is moving through its steps (False says what holds it).
pub const PROGRESSING: &str = "Progressing";
/// Condition: the wave is held until someone resumes it.
pub const PAUSED: &str = "Paused";
/// Condition: the wave's cohort was sent back to legacy.
pub const ROLLED_BACK: &str = "RolledBack";
/// Condition: the wave's configuration (plan, backends, cohort keys) can be routed.
pub const VALID: &str = "Valid";
/// Whether Switchyard's admission policies are in force, so that human actions apply.
pub const ADMISSION_POLICIES: &str = "AdmissionPolicies";

/// Reasons, shared by conditions, history entries and Events.
pub mod reason {
    pub const VALID: &str = "Valid";
    pub const PLAN_NOT_FOUND: &str = "PlanNotFound";
    pub const NOT_IN_PLAN: &str = "NotInPlan";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const UNKNOWN_COHORT_KEY: &str = "UnknownCohortKey";
    pub const MAINTENANCE_NOT_CONFIGURED: &str = "MaintenanceNotConfigured";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const DUPLICATE_COHORT: &str = "DuplicateCohort";

    pub const PENDING: &str = "Pending";
    pub const STEP_RUNNING: &str = "StepRunning";
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    pub const METRIC_BREACHING: &str = "MetricBreaching";
    pub const METRIC_UNKNOWN: &str = "MetricUnknown";
    pub const AWAITING_EVIDENCE: &str = "AwaitingEvidence";
    pub const HELD_BY_PLAN: &str = "HeldByPlan";
    /// The operator does not know yet which alerts fire (a new leader rebuilding the set
    /// from Alertmanager, or Alertmanager unreachable): forward moves of a wave with
    /// `alerts` wait; rollbacks and pauses do not.
    pub const ALERTS_UNKNOWN: &str = "AlertsUnknown";
    pub const COMPLETED: &str = "Completed";
    pub const NOT_COMPLETED: &str = "NotCompleted";

    pub const MANUAL_PAUSE: &str = "ManualPause";
    pub const MANUAL_ROLLBACK: &str = "ManualRollback";
    pub const METRIC_BREACHED: &str = "MetricBreached";
    pub const NO_DATA: &str = "NoData";
    pub const QUERY_ERROR: &str = "QueryError";
    pub const ALERT_FIRING: &str = "AlertFiring";
    pub const PLAN_ROLLBACK: &str = "PlanRollback";
    pub const NOT_PAUSED: &str = "NotPaused";
    pub const NOT_ROLLED_BACK: &str = "NotRolledBack";
    pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
    /// A human action whose author was not authorised, or could not be shown to be.
    pub const NOT_AUTHORISED: &str = "NotAuthorised";
    pub const POLICIES_IN_FORCE: &str = "PoliciesInForce";
    pub const POLICIES_NOT_REQUIRED: &str = "PoliciesNotRequired";
    pub const POLICIES_MISSING: &str = "PoliciesMissing";
}

/// History events (the `event` field of a history entry, and the Event reason).
pub mod event {
    pub const WAVE_STARTED: &str = "WaveStarted";
    pub const STEP_STARTED: &str = "StepStarted";
    pub const APPROVED: &str = "Approved";
    pub const PAUSED: &str = "Paused";
    pub const RESUMED: &str = "Resumed";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const RETRIED: &str = "Retried";
    pub const LEGACY_RETIRED: &str = "LegacyRetired";
    pub const COMPLETED: &str = "Completed";
    pub const ACTION_IGNORED: &str = "ActionIgnored";
    /// A human action that did not take effect: its author was not authorised.
    pub const ACTION_REFUSED: &str = "ActionRefused";
    pub const METRIC_BREACHED: &str = "MetricBreached";
    pub const INVALID: &str = "Invalid";
}

/// The actor recorded for decisions Switchyard makes on its own.
pub const ACTOR_SWITCHYARD: &str = "switchyard";
/// The actor recorded for decisions caused by an Alertmanager alert.
pub const ACTOR_ALERTMANAGER: &str = "alertmanager";

/// Sets a condition, keeping `lastTransitionTime` unless its status really changes.
/// Returns true when the status flipped (or the condition is new).
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status = if status { "True" } else { "False" }.to_owned();
    let message = message.into();
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let flipped = existing.status != status;
        if flipped {
            existing.last_transition_time = Time(now);
        }
        existing.status = status;
        existing.reason = reason.to_owned();
        existing.message = message;
        existing.observed_generation = generation;
        flipped
    } else {
        conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        });
        true
    }
}

/// The condition of this type, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of this type is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}
