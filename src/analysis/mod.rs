//! Prometheus analysis: which metrics apply to a wave, which are due, and their
//! outcomes as engine observations.
//!
//! Queries are deduplicated: identical rendered queries due within one interval are
//! sent once, whichever waves ask. Queries run at most `max_concurrent` at a time, each
//! with a timeout. Without a Prometheus URL every metric is an Error, which pauses by
//! default: a migration never advances on missing evidence.

pub mod prometheus;
pub mod template;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{OnceCell, Semaphore};

use crate::api::{AnalysisSpec, FailureAction, Metric, MetricStatus};
use crate::engine::{MetricObservation, MetricOutcome, MetricPolicy, whole_seconds};
use crate::metrics::{Metrics, QueryOutcome};
pub use prometheus::{Prometheus, PrometheusSettings, PrometheusSetupError, QueryResult};

/// The interval when neither the wave nor the plan sets one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest interval honoured; status timestamps have whole seconds.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// One metric as it applies to a wave, with its policy resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectiveMetric {
    /// The metric as written (in the wave, or inherited from the plan).
    pub metric: Metric,
    /// What its outcomes do.
    pub policy: MetricPolicy,
}

/// The analysis that applies to a wave.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectiveAnalysis {
    /// How often each metric is evaluated.
    pub interval: Duration,
    /// The metrics, the plan's first, overridden and extended by the wave's.
    pub metrics: Vec<EffectiveMetric>,
}

/// Merges the plan's default analysis with the wave's own: a wave metric replaces the
/// plan metric of the same name; settings the wave leaves out come from the plan.
pub fn effective(
    plan: Option<&AnalysisSpec>,
    wave: Option<&AnalysisSpec>,
) -> Result<EffectiveAnalysis, String> {
    let interval = match wave
        .and_then(|a| a.interval.as_ref())
        .or(plan.and_then(|a| a.interval.as_ref()))
    {
        Some(interval) => interval
            .parse()
            .map_err(|e| format!("analysis.interval: {e}"))?,
        None => DEFAULT_INTERVAL,
    }
    .max(MIN_INTERVAL);
    let pick = |f: fn(&AnalysisSpec) -> Option<FailureAction>| {
        wave.and_then(f)
            .or(plan.and_then(f))
            .unwrap_or(FailureAction::Pause)
    };
    let on_no_data = pick(|a| a.on_no_data);
    let on_error = pick(|a| a.on_error);
    let mut metrics: Vec<Metric> = plan.map(|a| a.metrics.clone()).unwrap_or_default();
    for metric in wave.map(|a| a.metrics.as_slice()).unwrap_or_default() {
        match metrics.iter_mut().find(|m| m.name == metric.name) {
            Some(existing) => *existing = metric.clone(),
            None => metrics.push(metric.clone()),
        }
    }
    Ok(EffectiveAnalysis {
        interval,
        metrics: metrics
            .into_iter()
            .map(|metric| EffectiveMetric {
                policy: MetricPolicy {
                    failure_limit: metric.failure_limit.map_or(1, |l| l.max(1) as u32),
                    on_failure: metric.on_failure.unwrap_or(FailureAction::Pause),
                    on_no_data,
                    on_error,
                },
                metric,
            })
            .collect(),
    })
}

/// Counters for the analysis machinery.
#[derive(Debug, Default)]
pub struct AnalysisStats {
    queries_sent: AtomicU64,
    queries_shared: AtomicU64,
}

impl AnalysisStats {
    /// Queries sent to Prometheus.
    pub fn queries_sent(&self) -> u64 {
        self.queries_sent.load(Ordering::Relaxed)
    }
    /// Evaluations answered from a query another wave already sent in the interval.
    pub fn queries_shared(&self) -> u64 {
        self.queries_shared.load(Ordering::Relaxed)
    }
}

struct Evaluation {
    cell: OnceCell<(QueryResult, Timestamp)>,
}

/// Evaluates metrics for the wave controller, sharing identical queries.
pub struct Analyzer {
    prometheus: Option<Prometheus>,
    cache: Mutex<HashMap<String, Arc<Evaluation>>>,
    limit: Semaphore,
    /// Counters, for tests and metrics.
    pub stats: AnalysisStats,
    metrics: Option<Arc<Metrics>>,
}

/// What analysis observed for one wave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaveAnalysis {
    /// One observation per metric: a fresh evaluation when due, else the last one.
    pub observations: Vec<MetricObservation>,
    /// When the next metric is due.
    pub next_evaluation_at: Option<Timestamp>,
}

impl Analyzer {
    /// An analyzer that queries `prometheus`, or reports every metric as an Error
    /// when there is none.
    pub fn new(prometheus: Option<Prometheus>, max_concurrent: usize) -> Self {
        Self {
            prometheus,
            cache: Mutex::default(),
            limit: Semaphore::new(max_concurrent.max(1)),
            stats: AnalysisStats::default(),
            metrics: None,
        }
    }

    /// Also records each query's duration and outcome in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Evaluates the due metrics of a wave whose rendered queries are `queries` (one
    /// per metric of `analysis`), reusing the last evaluation in `status` for the rest.
    ///
    /// A metric is due when its last evaluation is one interval old, and also when
    /// `fresh_since` is set (the horizon of a forward move, `engine::evidence_horizon`)
    /// and its last evaluation is Healthy but older: the move needs fresh evidence.
    /// Whatever is evaluated while `fresh_since` is set is at or after it, so a query
    /// another wave sent earlier is not reused for it. A last evaluation that is not
    /// Healthy holds the wave whatever its age, so it waits for its interval.
    pub async fn observe(
        &self,
        analysis: &EffectiveAnalysis,
        queries: &[String],
        status: &[MetricStatus],
        now: Timestamp,
        fresh_since: Option<Timestamp>,
    ) -> WaveAnalysis {
        let interval = SignedDuration::try_from(analysis.interval).unwrap_or(SignedDuration::MAX);
        let mut observations = Vec::with_capacity(analysis.metrics.len());
        let mut next: Option<Timestamp> = None;
        for (metric, query) in analysis.metrics.iter().zip(queries) {
            let last = status.iter().find(|s| s.name == metric.metric.name);
            let last_at = last.and_then(|s| s.evaluated_at.as_ref()).map(|t| t.0);
            let stale = fresh_since.is_some_and(|horizon| {
                last.is_none_or(|last| {
                    MetricOutcome::parse(&last.result) == Some(MetricOutcome::Healthy)
                        && last_at.is_none_or(|at| at < horizon)
                })
            });
            let due = stale || last_at.is_none_or(|at| at + interval <= now);
            let observation = match (due, last) {
                (false, Some(last)) => MetricObservation {
                    name: metric.metric.name.clone(),
                    outcome: MetricOutcome::parse(&last.result).unwrap_or(MetricOutcome::Error),
                    value: last.value,
                    evaluated_at: last_at.unwrap_or(now),
                    message: last.message.clone(),
                    policy: metric.policy,
                },
                _ => {
                    let (result, at) = self.evaluate(query, interval, now, fresh_since).await;
                    let (outcome, value, message) =
                        prometheus::judge(&result, metric.metric.min, metric.metric.max);
                    MetricObservation {
                        name: metric.metric.name.clone(),
                        outcome,
                        value,
                        evaluated_at: at,
                        message,
                        policy: metric.policy,
                    }
                }
            };
            let due_at = whole_seconds(observation.evaluated_at) + interval;
            next = Some(next.map_or(due_at, |n| n.min(due_at)));
            observations.push(observation);
        }
        WaveAnalysis {
            observations,
            next_evaluation_at: next,
        }
    }

    /// The result of `query`, sent now unless an identical query was sent (or is in
    /// flight) within the last interval, and, when `not_before` is set, at or after it.
    async fn evaluate(
        &self,
        query: &str,
        interval: SignedDuration,
        now: Timestamp,
        not_before: Option<Timestamp>,
    ) -> (QueryResult, Timestamp) {
        let entry = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            // An evaluation is shared until the wave that records it is due again. Status
            // keeps whole seconds, so that is its whole second plus the interval: shared
            // any longer, a due wave would get the same answer back, find itself still
            // due, and spin until the evaluation aged out.
            let current = |at: &Timestamp| whole_seconds(*at) + interval > now;
            // Forget evaluations too old to be shared, so the cache stays bounded.
            cache.retain(|_, e| e.cell.get().is_none_or(|(_, at)| current(at)));
            // An evaluation still in flight ends after `now`, so after `not_before`.
            let usable = |e: &Evaluation| {
                e.cell
                    .get()
                    .is_none_or(|(_, at)| current(at) && not_before.is_none_or(|nb| *at >= nb))
            };
            match cache.get(query).filter(|e| usable(e)) {
                Some(existing) => {
                    self.stats.queries_shared.fetch_add(1, Ordering::Relaxed);
                    existing.clone()
                }
                None => {
                    let fresh = Arc::new(Evaluation {
                        cell: OnceCell::new(),
                    });
                    cache.insert(query.to_owned(), fresh.clone());
                    fresh
                }
            }
        };
        entry
            .cell
            .get_or_init(|| async {
                let _permit = self
                    .limit
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                self.stats.queries_sent.fetch_add(1, Ordering::Relaxed);
                let (result, took) = match &self.prometheus {
                    Some(prometheus) => {
                        let started = std::time::Instant::now();
                        let result = prometheus.query(query).await;
                        (result, Some(started.elapsed()))
                    }
                    None => (
                        QueryResult::Error(
                            "no Prometheus URL is configured (--prometheus-url)".into(),
                        ),
                        None,
                    ),
                };
                if let Some(metrics) = &self.metrics {
                    let outcome = match result {
                        QueryResult::Value(_) => QueryOutcome::Success,
                        QueryResult::NoData(_) => QueryOutcome::NoData,
                        QueryResult::Error(_) => QueryOutcome::Error,
                    };
                    metrics.analysis_query(outcome, took);
                }
                // Answered now, which is never before the reconcile began.
                (result, Timestamp::now().max(now))
            })
            .await
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, max: f64) -> Metric {
        Metric {
            name: name.into(),
            query: format!("q_{name}"),
            min: None,
            max: Some(max),
            failure_limit: None,
            on_failure: None,
        }
    }

    #[test]
    fn the_wave_overrides_the_plan_metric_by_metric() {
        let plan = AnalysisSpec {
            interval: Some("30s".into()),
            metrics: vec![metric("errors", 1.0), metric("dupes", 2.0)],
            on_no_data: Some(FailureAction::Rollback),
            on_error: None,
        };
        let mut mine = metric("errors", 5.0);
        mine.failure_limit = Some(3);
        mine.on_failure = Some(FailureAction::Rollback);
        let wave = AnalysisSpec {
            interval: None,
            metrics: vec![mine, metric("complaints", 0.1)],
            on_no_data: None,
            on_error: Some(FailureAction::Rollback),
        };
        let e = effective(Some(&plan), Some(&wave)).unwrap();
        assert_eq!(e.interval, Duration::from_secs(30));
        let names: Vec<&str> = e.metrics.iter().map(|m| m.metric.name.as_str()).collect();
        assert_eq!(names, ["errors", "dupes", "complaints"]);
        assert_eq!(e.metrics[0].metric.max, Some(5.0));
        assert_eq!(e.metrics[0].policy.failure_limit, 3);
        assert_eq!(e.metrics[0].policy.on_failure, FailureAction::Rollback);
        assert_eq!(e.metrics[1].policy.on_failure, FailureAction::Pause);
        assert!(
            e.metrics
                .iter()
                .all(|m| m.policy.on_no_data == FailureAction::Rollback)
        );
        assert!(
            e.metrics
                .iter()
                .all(|m| m.policy.on_error == FailureAction::Rollback)
        );
    }

    #[test]
    fn defaults_pause_on_missing_evidence() {
        let e = effective(
            None,
            Some(&AnalysisSpec {
                metrics: vec![metric("e", 1.0)],
                ..Default::default()
            }),
        )
        .unwrap();
        assert_eq!(e.interval, DEFAULT_INTERVAL);
        assert_eq!(e.metrics[0].policy, MetricPolicy::default());
        assert!(effective(None, None).unwrap().metrics.is_empty());
    }

    #[tokio::test]
    async fn each_query_sent_counts_its_outcome() {
        let metrics = Arc::new(Metrics::new());
        let analyzer = Analyzer::new(None, 4).with_metrics(metrics.clone());
        let analysis = effective(
            None,
            Some(&AnalysisSpec {
                metrics: vec![metric("e", 1.0)],
                ..Default::default()
            }),
        )
        .unwrap();
        let queries = vec!["up".to_owned()];
        let now = Timestamp::now();
        analyzer.observe(&analysis, &queries, &[], now, None).await;
        // Shared within the interval: not sent again, not counted again.
        analyzer.observe(&analysis, &queries, &[], now, None).await;
        let text = metrics.encode();
        assert!(
            text.lines()
                .any(|l| l == r#"switchyard_analysis_queries_total{outcome="error"} 1"#),
            "{text}"
        );
        // Nothing was sent to a Prometheus, so no duration was observed.
        assert!(
            text.lines()
                .any(|l| l == "switchyard_analysis_query_duration_seconds_count 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn identical_queries_in_one_interval_are_sent_once_and_reused_until_due() {
        let analyzer = Analyzer::new(None, 4);
        let analysis = effective(
            None,
            Some(&AnalysisSpec {
                metrics: vec![metric("e", 1.0)],
                interval: Some("10s".into()),
                ..Default::default()
            }),
        )
        .unwrap();
        let now = Timestamp::now();
        let queries = vec!["up".to_owned()];
        let first = analyzer.observe(&analysis, &queries, &[], now, None).await;
        let second = analyzer.observe(&analysis, &queries, &[], now, None).await;
        assert_eq!(analyzer.stats.queries_sent(), 1);
        assert_eq!(analyzer.stats.queries_shared(), 1);
        assert_eq!(first.observations[0].outcome, MetricOutcome::Error);
        assert!(
            first.observations[0]
                .message
                .as_deref()
                .unwrap()
                .contains("--prometheus-url")
        );
        assert_eq!(second.observations, first.observations);
        // Not due yet: the last evaluation in status is reused without asking.
        let status = vec![MetricStatus {
            name: "e".into(),
            value: Some(0.2),
            result: "Healthy".into(),
            consecutive_failures: 0,
            evaluated_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                whole_seconds(now),
            )),
            message: None,
        }];
        let reused = analyzer
            .observe(
                &analysis,
                &queries,
                &status,
                now + SignedDuration::from_secs(5),
                None,
            )
            .await;
        assert_eq!(reused.observations[0].outcome, MetricOutcome::Healthy);
        assert_eq!(
            reused.next_evaluation_at,
            Some(whole_seconds(now) + SignedDuration::from_secs(10))
        );
        assert_eq!(analyzer.stats.queries_sent(), 1);
        // Due again after the interval: a new query.
        analyzer
            .observe(
                &analysis,
                &queries,
                &status,
                now + SignedDuration::from_secs(11),
                None,
            )
            .await;
        assert_eq!(analyzer.stats.queries_sent(), 2);
    }

    #[tokio::test]
    async fn a_move_due_on_old_evidence_evaluates_at_once_and_reuses_only_evidence_as_new() {
        let analyzer = Analyzer::new(None, 4);
        let analysis = effective(
            None,
            Some(&AnalysisSpec {
                metrics: vec![metric("e", 1.0)],
                interval: Some("1h".into()),
                ..Default::default()
            }),
        )
        .unwrap();
        let queries = vec!["up".to_owned()];
        let now = whole_seconds(Timestamp::now());
        let last = |result: &str| {
            vec![MetricStatus {
                name: "e".into(),
                value: Some(0.2),
                result: result.into(),
                consecutive_failures: 0,
                evaluated_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    now - SignedDuration::from_secs(30),
                )),
                message: None,
            }]
        };
        // Not due by its interval, and no move is due: the old evaluation stands.
        let kept = analyzer
            .observe(&analysis, &queries, &last("Healthy"), now, None)
            .await;
        assert_eq!(kept.observations[0].outcome, MetricOutcome::Healthy);
        assert_eq!(analyzer.stats.queries_sent(), 0);
        // A move is due since a moment after it: evaluated now.
        let fresh = analyzer
            .observe(&analysis, &queries, &last("Healthy"), now, Some(now))
            .await;
        assert!(whole_seconds(fresh.observations[0].evaluated_at) >= now);
        assert_eq!(analyzer.stats.queries_sent(), 1);
        assert_eq!(
            fresh.next_evaluation_at,
            Some(
                whole_seconds(fresh.observations[0].evaluated_at) + SignedDuration::from_secs(3600)
            ),
            "the evaluation restarts the metric's interval"
        );
        // Another wave whose move is due since the same moment shares it...
        analyzer
            .observe(&analysis, &queries, &last("Healthy"), now, Some(now))
            .await;
        assert_eq!(
            (
                analyzer.stats.queries_sent(),
                analyzer.stats.queries_shared()
            ),
            (1, 1)
        );
        // ...but one due since a later moment does not.
        let later = now + SignedDuration::from_secs(5);
        analyzer
            .observe(&analysis, &queries, &last("Healthy"), later, Some(later))
            .await;
        assert_eq!(analyzer.stats.queries_sent(), 2);
        // A last evaluation that is not Healthy holds the wave anyway: it waits for its
        // interval.
        let held = analyzer
            .observe(&analysis, &queries, &last("Breached"), later, Some(later))
            .await;
        assert_eq!(held.observations[0].outcome, MetricOutcome::Breached);
        assert_eq!(analyzer.stats.queries_sent(), 2);
    }

    /// The wave records an evaluation in whole seconds and comes back at its next due
    /// time: that evaluation must then not be handed back to it, or it stays due and
    /// spins (it did, some twenty reconciles a second per 1 s-interval wave).
    #[tokio::test]
    async fn a_due_wave_is_never_handed_back_the_evaluation_that_made_it_due() {
        let analyzer = Analyzer::new(None, 4);
        let analysis = effective(
            None,
            Some(&AnalysisSpec {
                metrics: vec![metric("e", 1.0)],
                interval: Some("1s".into()),
                ..Default::default()
            }),
        )
        .unwrap();
        let queries = vec!["up".to_owned()];
        // Well ahead of the clock, 0.7 s into a second: the answer is stamped `now`.
        let start = whole_seconds(Timestamp::now()) + SignedDuration::from_secs(60);
        let mut now = start + SignedDuration::from_millis(700);
        let mut status: Vec<MetricStatus> = Vec::new();
        let mut answered = now;
        for round in 0..5 {
            let observed = analyzer
                .observe(&analysis, &queries, &status, now, None)
                .await;
            let next = observed.next_evaluation_at.expect("a metric is due again");
            assert!(
                next > now,
                "round {round}: due again at once ({next} ≤ {now})"
            );
            let o = &observed.observations[0];
            answered = o.evaluated_at;
            status = vec![MetricStatus {
                name: o.name.clone(),
                value: o.value,
                result: o.outcome.as_str().into(),
                consecutive_failures: 0,
                evaluated_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    whole_seconds(o.evaluated_at),
                )),
                message: o.message.clone(),
            }];
            // The controller comes back 50 ms after the due time.
            now = next + SignedDuration::from_millis(50);
        }
        assert_eq!(analyzer.stats.queries_sent(), 5, "one query per due time");
        // Another wave within the same whole second as the last answer shares it.
        let shared = analyzer
            .observe(
                &analysis,
                &queries,
                &[],
                answered + SignedDuration::from_millis(100),
                None,
            )
            .await;
        assert_eq!(shared.observations[0].evaluated_at, answered);
        assert_eq!(analyzer.stats.queries_shared(), 1);
    }
}
