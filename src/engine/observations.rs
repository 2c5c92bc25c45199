//! What the controller observed, as plain values.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::api::FailureAction;

use super::conditions::reason;

/// Everything the engine needs to know besides the wave itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// The wave's `metadata.generation`, recorded as `observedGeneration`.
    pub generation: Option<i64>,
    /// Configuration problems that stop the wave from routing.
    pub problems: Vec<Problem>,
    /// What the wave's plan allows.
    pub plan: PlanPermission,
    /// The latest evaluation of each analysis metric, with its policy.
    pub metrics: Vec<MetricObservation>,
    /// The names of the analysis metrics that apply to the wave (its own and its
    /// plan's, merged), whether or not they were evaluated for this decision. A forward
    /// move needs a fresh Healthy evaluation of each (see `evidence_horizon`); one that
    /// is missing from `metrics` holds the wave. `None` means "the ones in `metrics`".
    pub analysis_metrics: Option<Vec<String>>,
    /// When the metrics are evaluated next, if the wave has any.
    pub next_evaluation_at: Option<Timestamp>,
    /// Alerts firing now that may act on this wave: those of its namespace, and those
    /// without a namespace if the wave accepts them. The engine matches their labels.
    pub firing_alerts: Vec<FiringAlert>,
    /// Whether `firing_alerts` is known to be complete. When it is not, a wave with
    /// `alerts` makes no forward move (it could be under an alert nobody reported to
    /// this replica), while the alerts that are known still roll back or pause it.
    pub alert_state: AlertState,
    /// What human actions are judged against.
    pub authority: super::authority::Authority,
    /// Entries removed from `spec.actions` so far (the `actions-compacted` annotation).
    pub actions_compacted: u64,
}

/// Whether the operator knows every alert firing now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AlertState {
    /// The set of firing alerts is complete: the webhook keeps it up to date, and (with
    /// several replicas) it was rebuilt from Alertmanager when this replica took over.
    #[default]
    Known,
    /// It may be missing alerts: this replica has just taken over and has not read
    /// Alertmanager's alerts yet, or could not reach Alertmanager.
    Unknown {
        /// Why, for people.
        message: String,
    },
}

impl AlertState {
    /// Whether the set is complete.
    pub fn is_known(&self) -> bool {
        matches!(self, Self::Known)
    }
}

/// What the plan allows this wave to do now.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanPermission {
    /// The wave may start (its turn in the plan's order and concurrency has come).
    pub may_start: bool,
    /// No forward progress until this hold lifts (a gate failing, a freeze window).
    pub hold: Option<Hold>,
    /// The plan's failure policy requires this wave to roll back.
    pub rollback: Option<PlanRollback>,
}

impl Default for PlanPermission {
    fn default() -> Self {
        Self {
            may_start: true,
            hold: None,
            rollback: None,
        }
    }
}

/// A plan-level reason to hold a wave where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    /// A constant reason, such as `FreezeWindow` or `GateFailing`.
    pub reason: String,
    /// What holds the wave, for people.
    pub message: String,
    /// When the hold lifts by itself, if it does (the end of a freeze window).
    pub until: Option<Timestamp>,
}

/// A plan-level instruction to roll a wave back.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRollback {
    /// Why, for people: which wave failed, which policy applied.
    pub message: String,
}

/// A configuration problem found while observing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The wave's plan does not exist.
    PlanNotFound { plan: String },
    /// The plan exists but does not list this wave.
    NotInPlan { plan: String },
    /// A Service the plan names does not exist.
    BackendNotFound { role: &'static str, service: String },
    /// The wave uses a cohort key the plan does not define.
    UnknownCohortKey { key: String, known: Vec<String> },
    /// The wave has a quiet step but the plan names no maintenance backend.
    MaintenanceNotConfigured,
    /// The spec passed admission but cannot be run (for example an absurd duration).
    InvalidSpec { message: String },
    /// Another wave of the plan has the same cohort and holds it (see
    /// [`cohorts`](super::cohorts)).
    DuplicateCohort { wave: String, cohort: String },
}

impl Problem {
    /// The constant reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::PlanNotFound { .. } => reason::PLAN_NOT_FOUND,
            Problem::NotInPlan { .. } => reason::NOT_IN_PLAN,
            Problem::BackendNotFound { .. } => reason::BACKEND_NOT_FOUND,
            Problem::UnknownCohortKey { .. } => reason::UNKNOWN_COHORT_KEY,
            Problem::MaintenanceNotConfigured => reason::MAINTENANCE_NOT_CONFIGURED,
            Problem::InvalidSpec { .. } => reason::INVALID_SPEC,
            Problem::DuplicateCohort { .. } => reason::DUPLICATE_COHORT,
        }
    }

    /// What is wrong and how to fix it, for people.
    pub fn message(&self) -> String {
        match self {
            Problem::PlanNotFound { plan } => format!(
                "CutoverPlan {plan:?} does not exist in this namespace; create it or fix spec.plan"
            ),
            Problem::NotInPlan { plan } => {
                format!("CutoverPlan {plan:?} does not list this wave in spec.waves; add it there")
            }
            Problem::BackendNotFound { role, service } => {
                format!("the plan's {role} Service {service:?} does not exist in this namespace")
            }
            Problem::UnknownCohortKey { key, known } => format!(
                "cohort key {key:?} is not one of the plan's cohortKeys ({})",
                known.join(", ")
            ),
            Problem::MaintenanceNotConfigured => "the wave has a quiet step but the plan sets no \
                maintenance backend to answer writes; set spec.maintenance on the plan"
                .to_owned(),
            Problem::InvalidSpec { message } => message.clone(),
            Problem::DuplicateCohort { wave, cohort } => format!(
                "MigrationWave {wave:?} of the same plan already has the cohort {cohort}, so \
                 this wave is not routed: two waves of one cohort would make routing \
                 ambiguous; delete one of them, or create a wave for another cohort"
            ),
        }
    }

    /// Whether the problem can go away without any watched object changing (a Service
    /// being created), or through a change that does not wake this wave (the other wave
    /// of a duplicate cohort being deleted), so the controller should look again later.
    pub fn needs_polling(&self) -> bool {
        matches!(
            self,
            Problem::BackendNotFound { .. } | Problem::DuplicateCohort { .. }
        )
    }
}

/// The outcome of one metric evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricOutcome {
    /// Within `min`/`max`.
    Healthy,
    /// Outside `min`/`max`.
    Breached,
    /// The query returned nothing (or NaN).
    NoData,
    /// Prometheus could not be reached, or the query failed.
    Error,
}

impl MetricOutcome {
    /// The value written to `status.analysis[].result`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricOutcome::Healthy => "Healthy",
            MetricOutcome::Breached => "Breached",
            MetricOutcome::NoData => "NoData",
            MetricOutcome::Error => "Error",
        }
    }

    /// Parses the value of `status.analysis[].result`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Healthy, Self::Breached, Self::NoData, Self::Error]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// What to do about a metric's outcomes (from the effective analysis spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricPolicy {
    /// Consecutive breaches that trigger `on_failure`.
    pub failure_limit: u32,
    /// What a breach at the limit does.
    pub on_failure: FailureAction,
    /// What NoData does.
    pub on_no_data: FailureAction,
    /// What Error does.
    pub on_error: FailureAction,
}

impl Default for MetricPolicy {
    fn default() -> Self {
        Self {
            failure_limit: 1,
            on_failure: FailureAction::Pause,
            on_no_data: FailureAction::Pause,
            on_error: FailureAction::Pause,
        }
    }
}

/// The latest evaluation of one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricObservation {
    /// The metric's name.
    pub name: String,
    /// What the evaluation found.
    pub outcome: MetricOutcome,
    /// The value, when there was one.
    pub value: Option<f64>,
    /// When it was evaluated. A later time means a new evaluation.
    pub evaluated_at: Timestamp,
    /// Detail for NoData and Error.
    pub message: Option<String>,
    /// The metric's policy.
    pub policy: MetricPolicy,
}

/// An alert Alertmanager reported as firing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiringAlert {
    /// The alert's name (its `alertname` label).
    pub name: String,
    /// All of its labels.
    pub labels: BTreeMap<String, String>,
}
