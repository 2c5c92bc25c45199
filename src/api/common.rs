//! Types shared by both custom resources.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::{self, DurationString};
use super::rules;

/// A backend that receives the cohort's requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// The Kubernetes Service in the plan's namespace that serves this backend.
    pub service: ServiceRef,
}

/// A Service and port in the plan's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// Name of the Service: an RFC 1035 label, as Service names are.
    #[x_kube(validation = rules::matches(
        "service.name",
        rules::SERVICE_NAME_PATTERN,
        63,
        "the name of a Service: 1-63 lowercase letters, digits or '-', starting with a letter and ending with a letter or digit",
    ))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Port of the Service that receives the traffic (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// A group name, exactly as the API server authenticates it.
pub type GroupName = String;

/// A set of users and groups, as the API server authenticates them. At least one user
/// or group; not a group everybody is in (`system:authenticated`,
/// `system:unauthenticated`, `system:serviceaccounts`), not `system:anonymous`, no
/// wildcards: names are matched exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::subjects()[0].clone())]
#[x_kube(validation = rules::subjects()[1].clone())]
#[x_kube(validation = rules::subjects()[2].clone())]
#[x_kube(validation = rules::subjects()[3].clone())]
#[x_kube(validation = rules::subjects()[4].clone())]
#[x_kube(validation = rules::subjects()[5].clone())]
pub struct Subjects {
    /// Usernames, exactly as the API server reports them (`kubectl auth whoami`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub users: Vec<String>,
    /// Group names, exactly as the API server reports them (`kubectl auth whoami`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub groups: Vec<String>,
}

// What to do when a metric breaches its threshold, or an alert fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailureAction {
    /// Hold the wave where it is until a human resumes it.
    Pause,
    /// Send 100% of the cohort back to legacy at once.
    Rollback,
}

/// Prometheus analysis: metrics that must stay healthy while a wave is active.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.metrics) || self.metrics.all(m, self.metrics.exists_one(x, x.name == m.name))"
).message("analysis.metrics: metric names must be unique").field_path(".metrics"))]
pub struct AnalysisSpec {
    /// How often each metric is evaluated, for example `1m`: from 1s to 1h. Defaults
    /// to `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = duration::bounds_rule(
        "analysis.interval",
        duration::MIN_SPAN,
        duration::MAX_INTERVAL,
        " (status timestamps have whole seconds; a metric looked at less often than hourly guards nothing)",
    ))]
    pub interval: Option<DurationString>,
    /// The metrics to evaluate. A wave's metric overrides the plan's metric of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub metrics: Vec<Metric>,
    /// What to do when a query returns no data (an empty result or NaN): Pause or
    /// Rollback. Defaults to Pause: a migration never advances on missing evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_no_data: Option<FailureAction>,
    /// What to do when Prometheus is unreachable or the query fails: Pause or Rollback.
    /// Defaults to Pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<FailureAction>,
}

/// One PromQL threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.min) || has(self.max)")
    .message("metric needs min, max or both: the healthy range of the query's value"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max")
    .message("metric min must be less than or equal to max").field_path(".min"))]
pub struct Metric {
    /// Name of the metric, unique within the analysis. Shown in status and Events.
    #[x_kube(validation = rules::simple_name("metric name"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// An instant PromQL query. `{{team}}`, `{{region}}`, `{{wave}}` and `{{namespace}}`
    /// (and any other cohort key, as `{{key}}`) are replaced by the wave's escaped values.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// The lowest healthy value, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The highest healthy value, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// How many consecutive breaches trigger `onFailure`. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: Option<i32>,
    /// What to do once `failureLimit` consecutive breaches are seen: Pause (hold until a
    /// human resumes) or Rollback (send the cohort back to legacy). Defaults to Pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<FailureAction>,
}

/// The standard label map, kept ordered so that status and output are stable.
pub type Labels = BTreeMap<String, String>;

/// One entry of the bounded audit trail kept in status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When the operator recorded the event.
    pub at: Time,
    /// What happened, as a constant such as `StepStarted`, `Approved`, `RolledBack`.
    pub event: String,
    /// Why it happened, as a constant such as `MetricBreached` or `AlertFiring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who caused it: a username for human actions, `switchyard` for automatic ones,
    /// `alertmanager` for alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Human-readable detail: an approval message, a rollback reason, the breaching value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
