//! `MigrationWave`: moves one cohort (a team, a region, or both) from legacy to target.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AnalysisSpec, FailureAction, HistoryEntry, Labels};
use super::duration::{self, DurationString};
use super::rules;

/// One cohort's migration from the legacy backend to the target, in declared steps.
// clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "MigrationWave",
    namespaced,
    status = "MigrationWaveStatus",
    shortname = "mw",
    category = "switchyard",
    doc = "MigrationWave moves one cohort (a team, a region, or both) from the legacy backend to the target, step by step.",
    printcolumn(
        name = "Plan",
        type_ = "string",
        json_path = ".spec.plan",
        description = "The CutoverPlan this wave belongs to"
    ),
    printcolumn(
        name = "Cohort",
        type_ = "string",
        json_path = ".status.cohort",
        description = "The cohort this wave moves, as key=value pairs (from status, written by the operator)"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the wave is in its lifecycle"
    ),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.stepIndex",
        description = "Index of the current step"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.targetWeight",
        description = "Percent of the cohort's requests sent to the target"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63").message(
        "metadata.name of a MigrationWave must be at most 63 characters: it is written as a label value (switchyard.dev/wave) on the wave's routing objects"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.plan == oldSelf.plan")
    .message("spec.plan is immutable: create a new wave to move a cohort under another plan")
    .field_path(".plan"))]
#[x_kube(validation = kube::core::Rule::new("self.cohort == oldSelf.cohort")
    .message("spec.cohort is immutable: create a new wave for another cohort")
    .field_path(".cohort"))]
pub struct MigrationWaveSpec {
    /// Name of the CutoverPlan, in the same namespace, that lists this wave. Immutable.
    #[x_kube(validation = rules::object_name("spec.plan", 63))]
    #[schemars(length(min = 1, max = 63))]
    pub plan: String,
    /// The cohort's value for each of the plan's cohort keys, for example
    /// `{team: support, region: emea}`. At least one key. Immutable.
    #[x_kube(validation = kube::core::Rule::new("self.size() >= 1")
        .message("spec.cohort must set at least one cohort key, for example team: support"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, self[k] != '')")
        .message("spec.cohort values must not be empty: give each key the cohort's value, for example team: support"))]
    #[x_kube(validation = rules::cohort_values("spec.cohort"))]
    #[x_kube(validation = rules::cohort_key_names("spec.cohort"))]
    #[x_kube(validation = rules::cohort_keys_not_reserved("spec.cohort"))]
    #[schemars(extend(
        "maxProperties" = 8,
        "additionalProperties" = {"type": "string", "maxLength": 63}
    ))]
    pub cohort: BTreeMap<String, CohortValue>,
    /// The steps, run in order. A wave that finishes its last step is Completed.
    #[schemars(length(min = 1, max = 64))]
    pub steps: Vec<Step>,
    /// Prometheus analysis for this wave. Metrics here override the plan's metrics of the
    /// same name; the plan's other metrics still apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,
    /// Alertmanager alerts that act on this wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertSpec>,
    /// Human actions on this wave (approve, pause, resume, rollback, retry), in the order
    /// they were made. Append-only, one entry per request: `kubectl wave` adds entries,
    /// and admission checks that each new entry records the requesting user, their
    /// groups and the plan's UID. The operator removes entries it has processed once
    /// there are many (see the `switchyard.dev/actions-compacted` annotation), so that
    /// a pause or a rollback can always be recorded. The last slots are kept for Pause
    /// and Rollback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub actions: Vec<WaveAction>,
}

/// A cohort key's value, such as `support` or `emea`: 1-63 letters, digits, `-`, `_`
/// or `.`, starting and ending with a letter or digit (a label value's syntax).
pub type CohortValue = String;

/// One step of a wave. Exactly one of its fields is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.setWeight), has(self.analysis), has(self.approval), has(self.quiet), has(self.dualAccess)].filter(x, x).size() == 1"
).message("each step must set exactly one of setWeight, analysis, approval, quiet or dualAccess"))]
pub struct Step {
    /// Send this percentage (0-100) of the cohort's requests to the target, the rest to legacy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,
    /// Hold here while the analysis metrics stay healthy for the duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<TimedStep>,
    /// Wait until an authorised person approves this step (`kubectl wave approve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalStep>,
    /// Send the cohort's writes (POST, PUT, PATCH, DELETE) to the maintenance backend for
    /// the duration, while the final data sync runs. Reads keep their routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet: Option<TimedStep>,
    /// The target serves the cohort; requests carrying the plan's legacy-access override
    /// still reach legacy until the duration has elapsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_access: Option<TimedStep>,
}

/// A step that lasts for a duration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimedStep {
    /// How long the step lasts, for example `30m` or `72h`: from 1s to 8784h (366 days).
    #[x_kube(validation = duration::bounds_rule(
        "a step's duration",
        duration::MIN_SPAN,
        duration::MAX_SPAN,
        " (366 days): a step of zero would do nothing, and no step needs to hold a cohort for more than a year",
    ))]
    pub duration: DurationString,
}

/// An approval step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStep {
    /// Who may approve this step. Defaults to the plan's `approvers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<super::common::Subjects>,
}

/// Alertmanager alerts that act on this wave.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertSpec {
    /// A firing alert whose labels include all of these labels acts on this wave.
    #[x_kube(validation = kube::core::Rule::new("self.size() >= 1")
        .message("alerts.matchLabels must hold at least one label, or every alert would match"))]
    #[schemars(extend("maxProperties" = 16))]
    pub match_labels: Labels,
    /// What a matching firing alert does: Pause or Rollback. Defaults to Rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_firing: Option<FailureAction>,
    /// Whether alerts without a `namespace` label may act on this wave too. An alert
    /// with a `namespace` label (the Prometheus convention) acts only on waves of that
    /// namespace; one without it acts only on waves that set this to true. Opt in only
    /// for cluster-wide rules that you trust to concern this wave. Defaults to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_unnamespaced: bool,
}

// The kind of a human action on a wave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WaveActionType {
    /// Approve the approval step given by `step`.
    Approve,
    /// Hold the wave at its current step.
    Pause,
    /// Continue a paused wave.
    Resume,
    /// Send 100% of the cohort back to legacy.
    Rollback,
    /// Start a rolled-back or failed wave again from its first step.
    Retry,
}

/// One human action, recorded with the user who made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.type == 'Approve' ? has(self.step) : !has(self.step)")
    .message("actions: step is required for Approve and not allowed for other action types")
    .field_path(".step"))]
pub struct WaveAction {
    /// What the user asks for: Approve, Pause, Resume, Rollback or Retry.
    #[serde(rename = "type")]
    pub action: WaveActionType,
    /// The username of the person who made this action, exactly as the API server
    /// authenticated them. Admission rejects an entry whose user is not the requester.
    #[schemars(length(min = 1, max = 253))]
    pub user: String,
    /// The groups of the person who made this action, exactly as the API server
    /// authenticated them (`kubectl auth whoami`). Admission rejects an entry whose
    /// groups are not the requester's, so the operator can check authority itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub groups: Vec<super::common::GroupName>,
    /// The UID of the wave's CutoverPlan when the action was recorded. Admission checks
    /// it against the plan it authorised the action with; the operator applies an action
    /// only while that plan still exists, so an action recorded before its plan did
    /// never takes effect.
    #[serde(default, rename = "planUID", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub plan_uid: Option<String>,
    /// For Approve: the index of the approval step being approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 63))]
    pub step: Option<i32>,
    /// A free-text note: the approval message, or the reason for a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub message: Option<String>,
}

// The lifecycle of a wave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WavePhase {
    /// Not started: waiting for its plan to let it start.
    #[default]
    Pending,
    /// Running a setWeight or analysis step.
    Progressing,
    /// Waiting at an approval step.
    AwaitingApproval,
    /// Running a quiet step: the cohort's writes go to maintenance.
    Quiet,
    /// Running the dual-access step: legacy still reachable by override.
    DualAccess,
    /// Held by a human, a metric, an alert, a gate or a freeze window.
    Paused,
    /// Restoring 100% legacy routing.
    RollingBack,
    /// The cohort is back on legacy; waits for an explicit retry.
    RolledBack,
    /// All steps done; the cohort is on the target.
    Completed,
    /// Cannot proceed, for example because its configuration is invalid.
    Failed,
}

/// The last evaluation of one analysis metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// The metric's name.
    pub name: String,
    /// The last value the query returned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The outcome: Healthy, Breached, NoData or Error.
    pub result: String,
    /// Consecutive breaches so far; `failureLimit` applies.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// When the metric was last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<Time>,
    /// Detail about NoData and Error outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the operator observed and decided for a wave. Written only by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationWaveStatus {
    /// Where the wave is in its lifecycle: Pending, Progressing, AwaitingApproval, Quiet,
    /// DualAccess, Paused, RollingBack, RolledBack, Completed or Failed.
    #[serde(default)]
    pub phase: WavePhase,
    /// The cohort, as `key=value` pairs, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    /// Index of the current step in `spec.steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_index: Option<i32>,
    /// Percent of the cohort's requests currently sent to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_weight: Option<i32>,
    /// When the current step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// When the dual-access window ends; legacy is retired only after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_access_until: Option<Time>,
    /// Who approved the current approval step, once someone has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// How many entries of `spec.actions` the operator has processed.
    #[serde(default)]
    pub actions_processed: i32,
    /// How many times the wave has been retried after a rollback.
    #[serde(default)]
    pub attempt: i32,
    /// The last evaluation of each analysis metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<MetricStatus>,
    /// Standard conditions: Ready, Progressing, Paused, RolledBack, Valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// A bounded audit trail of what happened and who caused it, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Default action for a firing alert.
pub const DEFAULT_ON_FIRING: FailureAction = FailureAction::Rollback;

impl MigrationWaveSpec {
    /// The cohort as `key=value` pairs in key order, as shown in `status.cohort`.
    pub fn cohort_display(&self) -> String {
        self.cohort
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohort_display_is_sorted_key_value_pairs() {
        let spec: MigrationWaveSpec = serde_yaml::from_str(
            "plan: p\ncohort: {team: support, region: emea}\nsteps: [{setWeight: 5}]",
        )
        .unwrap();
        assert_eq!(spec.cohort_display(), "region=emea,team=support");
    }
}
