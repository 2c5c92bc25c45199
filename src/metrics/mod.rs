//! The operator's own Prometheus metrics, served at `/metrics` in the OpenMetrics text
//! format.
//!
//! Every label holds a bounded value: a constant (phase, controller, error category,
//! rollback cause, query outcome, HTTP code), a namespace that has waves, or, only with
//! `--per-wave-metrics`, the name of a wave that exists (`waves.rs`).

mod waves;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::api::WavePhase;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every wave phase, in the order of the lifecycle; `switchyard_waves` has one series per
/// phase for each namespace with waves.
pub const PHASES: [WavePhase; 10] = [
    WavePhase::Pending,
    WavePhase::Progressing,
    WavePhase::AwaitingApproval,
    WavePhase::Quiet,
    WavePhase::DualAccess,
    WavePhase::Paused,
    WavePhase::RollingBack,
    WavePhase::RolledBack,
    WavePhase::Completed,
    WavePhase::Failed,
];

/// The name of a phase, as in `status.phase`.
pub fn phase_name(phase: WavePhase) -> &'static str {
    match phase {
        WavePhase::Pending => "Pending",
        WavePhase::Progressing => "Progressing",
        WavePhase::AwaitingApproval => "AwaitingApproval",
        WavePhase::Quiet => "Quiet",
        WavePhase::DualAccess => "DualAccess",
        WavePhase::Paused => "Paused",
        WavePhase::RollingBack => "RollingBack",
        WavePhase::RolledBack => "RolledBack",
        WavePhase::Completed => "Completed",
        WavePhase::Failed => "Failed",
    }
}

/// Why a wave was rolled back: the `cause` label of `switchyard_rollbacks_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RollbackCause {
    /// A metric breached its threshold `failureLimit` times in a row.
    Metric,
    /// A metric's query returned no data, and `onNoData` is Rollback.
    NoData,
    /// A metric's query failed, and `onError` is Rollback.
    QueryError,
    /// A matching Alertmanager alert fired, and `alerts.onFiring` is Rollback.
    Alert,
    /// Someone recorded a Rollback action.
    Manual,
    /// The plan rolled the wave back (`onWaveFailure: RollbackPlan`, or plan deletion).
    Plan,
    /// A reason this version does not know (kept so that the label stays bounded).
    Other,
}

impl RollbackCause {
    /// Every cause, for documentation and tests.
    pub const ALL: [RollbackCause; 7] = [
        RollbackCause::Metric,
        RollbackCause::NoData,
        RollbackCause::QueryError,
        RollbackCause::Alert,
        RollbackCause::Manual,
        RollbackCause::Plan,
        RollbackCause::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackCause::Metric => "metric",
            RollbackCause::NoData => "nodata",
            RollbackCause::QueryError => "query_error",
            RollbackCause::Alert => "alert",
            RollbackCause::Manual => "manual",
            RollbackCause::Plan => "plan",
            RollbackCause::Other => "other",
        }
    }

    /// The cause recorded as the reason of a wave's `RolledBack` condition.
    pub fn from_reason(reason: &str) -> Self {
        use crate::engine::conditions::reason;
        match reason {
            reason::METRIC_BREACHED => RollbackCause::Metric,
            reason::NO_DATA => RollbackCause::NoData,
            reason::QUERY_ERROR => RollbackCause::QueryError,
            reason::ALERT_FIRING => RollbackCause::Alert,
            reason::MANUAL_ROLLBACK => RollbackCause::Manual,
            reason::PLAN_ROLLBACK => RollbackCause::Plan,
            _ => RollbackCause::Other,
        }
    }
}

/// How one analysis query ended: the `outcome` label of `switchyard_analysis_queries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryOutcome {
    /// Prometheus answered with one value.
    Success,
    /// Prometheus answered with no data.
    NoData,
    /// The query failed, timed out, or its answer could not be used.
    Error,
}

impl QueryOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryOutcome::Success => "success",
            QueryOutcome::NoData => "nodata",
            QueryOutcome::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    resource: &'static str,
    verb: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

/// Buckets from 5 ms to about 20 s: reconciles and Prometheus queries both live there.
#[derive(Clone)]
struct DurationBuckets;

impl MetricConstructor<Histogram> for DurationBuckets {
    fn new_metric(&self) -> Histogram {
        duration_histogram()
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// The operator's metrics: one registry, shared by the controllers, the analyzer, the
/// HTTP server and the leader election.
pub struct Metrics {
    registry: Registry,
    waves: waves::WaveSeries,
    reconcile_duration: Family<ControllerLabels, Histogram, DurationBuckets>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    analysis_query_duration: Histogram,
    analysis_queries: Family<OutcomeLabels, Counter>,
    receiver_requests: Family<CodeLabels, Counter>,
    http_connections_refused: Family<ListenerLabels, Counter>,
    api_writes: Family<WriteLabels, Counter>,
    leader: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every Switchyard metric registered, without per-wave series.
    pub fn new() -> Self {
        Self::with_per_wave_series(false)
    }

    /// A registry with every Switchyard metric registered; `per_wave` adds each wave's
    /// phase and target weight (`--per-wave-metrics`).
    pub fn with_per_wave_series(per_wave: bool) -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let waves = waves::WaveSeries::register(&mut registry, per_wave);
        let reconcile_duration = Family::new_with_constructor(DurationBuckets);
        let reconcile_errors = Family::default();
        let analysis_query_duration = duration_histogram();
        let analysis_queries = Family::default();
        let receiver_requests = Family::default();
        let http_connections_refused = Family::default();
        let api_writes = Family::default();
        let leader = Gauge::default();
        registry.register(
            "reconcile_duration_seconds",
            "How long the leader's reconciles took, by controller",
            Family::clone(&reconcile_duration),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by controller and error category",
            Family::clone(&reconcile_errors),
        );
        registry.register(
            "analysis_query_duration_seconds",
            "How long Prometheus took to answer analysis and gate queries",
            analysis_query_duration.clone(),
        );
        registry.register(
            "analysis_queries",
            "Analysis and gate queries evaluated, by outcome",
            Family::clone(&analysis_queries),
        );
        registry.register(
            "receiver_requests",
            "Requests to the Alertmanager receiver, by HTTP status code",
            Family::clone(&receiver_requests),
        );
        registry.register(
            "http_connections_refused",
            "Connections refused because the listener had as many open as allowed, by listener",
            Family::clone(&http_connections_refused),
        );
        registry.register(
            "api_writes",
            "Writes to the API server, by resource, verb and outcome (success, conflict, failure, timeout, or fenced: not started for lack of time on the leader Lease)",
            Family::clone(&api_writes),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and acts, else 0",
            leader.clone(),
        );
        Self {
            registry,
            waves,
            reconcile_duration,
            reconcile_errors,
            analysis_query_duration,
            analysis_queries,
            receiver_requests,
            http_connections_refused,
            api_writes,
            leader,
        }
    }

    /// The whole exposition, `# EOF` included.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Records the phase and target weight a wave is in now.
    pub fn observe_wave(&self, namespace: &str, wave: &str, phase: WavePhase, weight: i32) {
        self.waves.observe(namespace, wave, phase, weight);
    }

    /// Counts a rollback of a wave.
    pub fn rollback(&self, namespace: &str, cause: RollbackCause) {
        self.waves.rollback(namespace, cause);
    }

    /// Deletes a wave from the counts, and its own series (it was deleted).
    pub fn forget_wave(&self, namespace: &str, wave: &str) {
        self.waves.forget(namespace, wave);
    }

    /// Deletes every wave series: this replica no longer leads, so it no longer knows.
    pub fn forget_all_waves(&self) {
        self.waves.forget_all();
    }

    /// Starts timing a reconcile of `controller`; the time is recorded when the guard
    /// is dropped, however the reconcile ends.
    pub fn time_reconcile(self: &Arc<Self>, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            metrics: self.clone(),
            controller,
            started: Instant::now(),
        }
    }

    /// Counts one API write's outcome. Every label is a constant of [`crate::writes`].
    pub fn api_write(&self, resource: &'static str, verb: &'static str, outcome: &'static str) {
        self.api_writes
            .get_or_create(&WriteLabels {
                resource,
                verb,
                outcome,
            })
            .inc();
    }

    /// Counts a failed reconcile.
    pub fn reconcile_error(&self, controller: &'static str, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller,
                category,
            })
            .inc();
    }

    /// Records one query sent to Prometheus.
    pub fn analysis_query(&self, outcome: QueryOutcome, took: Option<Duration>) {
        self.analysis_queries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
        if let Some(took) = took {
            self.analysis_query_duration.observe(took.as_secs_f64());
        }
    }

    /// Counts an answer of the Alertmanager receiver.
    pub fn receiver_request(&self, code: u16) {
        self.receiver_requests
            .get_or_create(&CodeLabels { code })
            .inc();
    }

    /// Counts a connection refused by a listener over its connection limit.
    pub fn http_connection_refused(&self, listener: &'static str) {
        self.http_connections_refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer {
    metrics: Arc<Metrics>,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|line| {
                line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
            })
            .collect()
    }

    #[test]
    fn waves_are_counted_per_namespace_and_phase_and_never_by_name() {
        let metrics = Metrics::new();
        metrics.observe_wave("crm", "support-emea", WavePhase::Progressing, 10);
        metrics.observe_wave("crm", "sales-emea", WavePhase::Progressing, 30);
        metrics.observe_wave("crm", "sales-emea", WavePhase::Progressing, 60);
        metrics.observe_wave("billing", "all", WavePhase::Pending, 0);
        metrics.rollback("crm", RollbackCause::Alert);
        let text = metrics.encode();
        assert_eq!(
            series(&text, "switchyard_waves").len(),
            2 * PHASES.len(),
            "{text}"
        );
        for line in [
            r#"switchyard_waves{namespace="crm",phase="Progressing"} 2"#,
            r#"switchyard_waves{namespace="crm",phase="Pending"} 0"#,
            r#"switchyard_waves{namespace="billing",phase="Pending"} 1"#,
            r#"switchyard_rollbacks_total{namespace="crm",cause="alert"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("emea"), "no wave's name by default: {text}");
        assert!(!text.contains("switchyard_wave_phase"), "{text}");
        assert!(text.ends_with("# EOF\n"));

        // A move is counted once; a deleted wave leaves the counts.
        metrics.observe_wave("crm", "support-emea", WavePhase::RolledBack, 0);
        metrics.forget_wave("crm", "sales-emea");
        let text = metrics.encode();
        for line in [
            r#"switchyard_waves{namespace="crm",phase="Progressing"} 0"#,
            r#"switchyard_waves{namespace="crm",phase="RolledBack"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // A namespace's series go with its last wave; all of them when leading stops.
        metrics.forget_wave("billing", "all");
        let text = metrics.encode();
        assert!(!text.contains("billing"), "{text}");
        metrics.forget_all_waves();
        let text = metrics.encode();
        assert!(series(&text, "switchyard_waves").is_empty(), "{text}");
        assert!(
            series(&text, "switchyard_rollbacks_total").is_empty(),
            "{text}"
        );
    }

    #[test]
    fn per_wave_series_only_when_asked_for_and_gone_with_the_wave() {
        let metrics = Metrics::with_per_wave_series(true);
        metrics.observe_wave("crm", "support-emea", WavePhase::Progressing, 10);
        metrics.observe_wave("crm", "sales-emea", WavePhase::Pending, 0);
        let text = metrics.encode();
        let phases = series(&text, "switchyard_wave_phase");
        assert_eq!(phases.len(), 2 * PHASES.len(), "{text}");
        assert!(phases.contains(
            &r#"switchyard_wave_phase{namespace="crm",wave="support-emea",phase="Progressing"} 1"#
        ));
        assert!(phases.contains(
            &r#"switchyard_wave_phase{namespace="crm",wave="support-emea",phase="Pending"} 0"#
        ));
        assert!(
            text.contains(
                r#"switchyard_wave_target_weight{namespace="crm",wave="support-emea"} 10"#
            )
        );
        metrics.forget_wave("crm", "support-emea");
        let text = metrics.encode();
        assert!(!text.contains("support-emea"), "{text}");
        assert_eq!(series(&text, "switchyard_wave_phase").len(), PHASES.len());
        metrics.forget_all_waves();
        let text = metrics.encode();
        assert!(series(&text, "switchyard_wave_phase").is_empty(), "{text}");
        assert!(series(&text, "switchyard_wave_target_weight").is_empty());
    }

    #[test]
    fn every_phase_has_a_distinct_name() {
        use std::collections::HashSet;
        let names: HashSet<&str> = PHASES.iter().map(|p| phase_name(*p)).collect();
        assert_eq!(names.len(), PHASES.len());
        for phase in PHASES {
            // The label value is the phase as written in status.phase.
            assert_eq!(
                serde_json::to_value(phase).unwrap(),
                serde_json::json!(phase_name(phase))
            );
        }
    }

    #[test]
    fn rollback_causes_come_from_the_condition_reason() {
        use crate::engine::conditions::reason;
        assert_eq!(
            RollbackCause::from_reason(reason::METRIC_BREACHED),
            RollbackCause::Metric
        );
        assert_eq!(
            RollbackCause::from_reason(reason::NO_DATA),
            RollbackCause::NoData
        );
        assert_eq!(
            RollbackCause::from_reason(reason::QUERY_ERROR),
            RollbackCause::QueryError
        );
        assert_eq!(
            RollbackCause::from_reason(reason::ALERT_FIRING),
            RollbackCause::Alert
        );
        assert_eq!(
            RollbackCause::from_reason(reason::MANUAL_ROLLBACK),
            RollbackCause::Manual
        );
        assert_eq!(
            RollbackCause::from_reason(reason::PLAN_ROLLBACK),
            RollbackCause::Plan
        );
        assert_eq!(
            RollbackCause::from_reason("SomethingNew"),
            RollbackCause::Other
        );
        let labels: std::collections::HashSet<&str> =
            RollbackCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), RollbackCause::ALL.len());
    }

    #[test]
    fn timers_errors_queries_receiver_and_leader_are_exposed() {
        let metrics = Arc::new(Metrics::new());
        drop(metrics.time_reconcile("wave"));
        metrics.reconcile_error("wave", "api");
        metrics.analysis_query(QueryOutcome::NoData, Some(Duration::from_millis(20)));
        metrics.receiver_request(401);
        metrics.set_leader(true);
        let text = metrics.encode();
        for line in [
            r#"switchyard_reconcile_duration_seconds_count{controller="wave"} 1"#,
            r#"switchyard_reconcile_errors_total{controller="wave",category="api"} 1"#,
            r#"switchyard_analysis_queries_total{outcome="nodata"} 1"#,
            "switchyard_analysis_query_duration_seconds_count 1",
            r#"switchyard_receiver_requests_total{code="401"} 1"#,
            "switchyard_leader 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
