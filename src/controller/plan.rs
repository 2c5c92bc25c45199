//! The CutoverPlan controller: gates, order, concurrency, freezes and the failure
//! policy, written into the plan's status, where each wave reads its permission.
//!
//! It watches its waves (a wave's status change wakes its plan), and the wave controller
//! watches plans (a plan's status change wakes its waves), so plan and wave reconciles
//! wake each other through the API server, with no side channel.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{ObjectRef, ReflectHandle},
    },
};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, info, warn};

use super::finalizer::{self, Event as Finalize};
use super::{Cache, Context, ErrorCategory, NotLeader, Services, Settings, Shutdown, Stats};
use crate::analysis::{self, EffectiveAnalysis, EffectiveMetric};
use crate::api::{CutoverPlan, CutoverPlanStatus, Metric, MetricStatus, MigrationWave};
use crate::engine::{
    MetricPolicy, action_log,
    plan::{GateObservation, PlanDecision, PlanObservations, decide_plan, wave_views},
};

/// The finalizer that rolls a plan's active waves back before the plan goes away.
pub const FINALIZER: &str = "switchyard.dev/rollback-waves";

/// Why a plan reconcile failed, or must come back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing status failed.
    #[error("could not write the plan's status: {0}")]
    Status(#[source] Box<crate::writes::WriteError>),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// Deletion waits until the plan's active waves are back on legacy.
    #[error("waiting for {0} active wave(s) to roll back before the plan is deleted")]
    RollbackPending(usize),
    /// Reading the plan afresh, past a cache that lags its last write, failed.
    #[error("could not read the CutoverPlan afresh: {0}")]
    Read(#[source] kube::Error),
    /// The object has no namespace.
    #[error("the CutoverPlan has no namespace")]
    NoNamespace,
    /// Leadership was lost during the reconcile; it stopped before its next write.
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
}

impl Error {
    /// A bounded category, for metrics labels and logs.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Status(err) => ErrorCategory::of_write(err),
            Error::Finalizer(err) => ErrorCategory::of_finalizer(err, Error::category),
            Error::RollbackPending(_) => ErrorCategory::Waiting,
            Error::Read(err) => ErrorCategory::of_api(err),
            Error::NoNamespace => ErrorCategory::InvalidSpec,
            Error::NotLeader(_) => ErrorCategory::NotLeader,
        }
    }
}

/// The controller label of this controller's metrics.
const CONTROLLER: &str = "plan";

struct PlanContext {
    inner: Context,
    waves: Cache<MigrationWave>,
    behind: Behind,
}

/// For each plan, the versions its status writes and conflicts were decided from:
/// while the cache shows one of them, it has not caught up with the write (or with
/// whatever refused it), and the reconcile reads the plan from the API server.
///
/// Every wave's progress wakes its plan, so the next reconcile often comes before the
/// watch has delivered the plan's own last write; decided from the cache, its write
/// was refused with a conflict, and so were the retries while the cache lagged (705
/// in one bench run). Only equality of resourceVersions is used, which the API allows:
/// a version the cache shows that is none of these is newer than all of them (the
/// cache only moves forward), and the memory of the plan is dropped.
#[derive(Default)]
struct Behind(std::sync::Mutex<HashMap<(String, String), Vec<String>>>);

impl Behind {
    /// Versions remembered per plan at most: a cache that lags more writes than this
    /// costs a conflict, not a wrong decision.
    const MAX_VERSIONS: usize = 16;

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Vec<String>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(plan: &CutoverPlan) -> (String, String) {
        (plan.namespace().unwrap_or_default(), plan.name_any())
    }

    /// `plan`'s version is outdated by a write of ours, or refused one.
    fn outdated(&self, plan: &CutoverPlan) {
        let Some(rv) = plan.resource_version() else {
            return;
        };
        let mut entries = self.entries();
        let versions = entries.entry(Self::key(plan)).or_default();
        if !versions.contains(&rv) {
            if versions.len() >= Self::MAX_VERSIONS {
                versions.remove(0);
            }
            versions.push(rv);
        }
    }

    /// Whether the cached `plan` is a version known to be outdated; forgets the plan
    /// once the cache shows another.
    fn is_outdated(&self, plan: &CutoverPlan) -> bool {
        let key = Self::key(plan);
        let mut entries = self.entries();
        let Some(versions) = entries.get(&key) else {
            return false;
        };
        if plan
            .resource_version()
            .is_some_and(|rv| versions.contains(&rv))
        {
            return true;
        }
        entries.remove(&key);
        false
    }
}

/// The plan controller's view of the waves, which it shares with the wave controller.
pub(crate) struct Waves {
    /// Every wave in the scope.
    pub(crate) cache: Cache<MigrationWave>,
    /// Each wave the cache's watch applies.
    pub(crate) changes: ReflectHandle<MigrationWave>,
    /// The plan of each wave the watch saw deleted.
    pub(crate) deleted: UnboundedReceiver<ObjectRef<CutoverPlan>>,
}

/// The plan a wave names: a wave's change concerns it.
pub(crate) fn of_wave(wave: &MigrationWave) -> Option<ObjectRef<CutoverPlan>> {
    Some(ObjectRef::new(&wave.spec.plan).within(&wave.namespace()?))
}

/// Runs the CutoverPlan controller in `scope` (a namespace, or all of them) until
/// `shutdown` resolves and the running reconciles have finished.
pub(crate) async fn run(
    client: Client,
    scope: Option<String>,
    settings: Settings,
    services: Services,
    shutdown: Shutdown,
    waves: Waves,
) {
    let plans: Api<CutoverPlan> = super::wave::scoped(&client, scope.as_deref());
    let (plan_cache, plan_events) = super::cache(plans, services.readiness.clone());
    let gained = services.leadership.gained();
    let admission_changes = services.admission.changes();
    let waves_synced = waves.cache.first_synced();
    let deleted = futures::stream::unfold(waves.deleted, |mut deleted| async move {
        deleted.recv().await.map(|plan| (plan, deleted))
    });
    let context = Arc::new(PlanContext {
        inner: Context::new(client, &settings, services),
        waves: waves.cache,
        behind: Behind::default(),
    });
    Controller::for_stream(plan_events.applied_objects(), plan_cache.store())
        .with_config(settings.controller_config())
        .watches_shared_stream(waves.changes, |wave| of_wave(&wave))
        .reconcile_on(deleted)
        // A replica that becomes the leader reconciles every plan: as a standby it left
        // them all to the leader.
        .reconcile_all_on(gained)
        // Whether actions may take effect changed: judge the waiting ones, and update
        // the plans' AdmissionPolicies condition.
        .reconcile_all_on(admission_changes)
        .reconcile_all_on(waves_synced)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|outcome| async move { super::log_outcome(CONTROLLER, outcome) })
        .await;
}

async fn reconcile(plan: Arc<CutoverPlan>, ctx: Arc<PlanContext>) -> Result<Action, Error> {
    if !ctx.inner.is_leader() {
        // A standby keeps its caches warm and leaves the plan to the leader.
        return Ok(Action::await_change());
    }
    if !ctx.waves.is_synced() {
        // The plan's decisions count its waves (order, concurrency); before the first
        // list of waves is in, it would count none and could admit too many. Every
        // plan is reconciled again once that list is in.
        return Ok(Action::await_change());
    }
    let _timer = ctx.inner.services.metrics.time_reconcile(CONTROLLER);
    Stats::bump(&ctx.inner.services.stats.reconciles);
    let namespace = plan.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<CutoverPlan> = Api::namespaced(ctx.inner.client.clone(), &namespace);
    let plan = if ctx.behind.is_outdated(&plan) {
        match api.get_opt(&plan.name_any()).await.map_err(Error::Read)? {
            Some(fresh) => Arc::new(fresh),
            None => return Ok(Action::await_change()),
        }
    } else {
        plan
    };
    let key = super::wave::backoff_key(&*plan);
    let action = finalizer::finalizer(&api, &ctx.inner.writes, FINALIZER, plan, |event| async {
        match event {
            Finalize::Apply(plan) => apply(&plan, &ctx, false).await,
            Finalize::Cleanup(plan) => apply(&plan, &ctx, true).await,
        }
    })
    .await
    .map_err(|err| match err {
        finalizer::Error::CleanupFailed(Error::RollbackPending(n)) => Error::RollbackPending(n),
        other => Error::Finalizer(Box::new(other)),
    })?;
    ctx.inner.backoff.succeeded(&key);
    Ok(action)
}

fn error_policy(plan: Arc<CutoverPlan>, error: &Error, ctx: Arc<PlanContext>) -> Action {
    let category = error.category();
    if category == ErrorCategory::NotLeader {
        debug!(plan = %plan.name_any(), error = %error, "stopped: no longer the leader");
        return Action::await_change();
    }
    if category.is_failure() {
        ctx.inner
            .services
            .metrics
            .reconcile_error(CONTROLLER, category.as_str());
    }
    if let Error::RollbackPending(n) = error {
        debug!(plan = %plan.name_any(), waves = n, "deletion waits for rollbacks");
        return Action::requeue(Duration::from_millis(500));
    }
    let action = ctx.inner.retry(&super::wave::backoff_key(&*plan), category);
    if category == ErrorCategory::Conflict {
        // Decided from a version older than the plan's: decide again from a fresh one.
        ctx.behind.outdated(&plan);
        debug!(plan = %plan.name_any(), error = %error, "conflict with a newer version; deciding again");
        return action;
    }
    ctx.inner.services.stats.error(error);
    if category.is_permanent() {
        warn!(plan = %plan.name_any(), category = %category, error = %error, "plan reconcile failed; waiting for the plan to change");
    } else {
        warn!(plan = %plan.name_any(), category = %category, error = %error, "plan reconcile failed; retrying with backoff");
    }
    action
}

async fn apply(plan: &CutoverPlan, ctx: &PlanContext, deleting: bool) -> Result<Action, Error> {
    let now = Timestamp::now();
    let namespace = plan.namespace().ok_or(Error::NoNamespace)?;
    let name = plan.name_any();
    let status = plan.status.clone().unwrap_or_default();

    let mut by_name = BTreeMap::new();
    let mut unlisted = Vec::new();
    for wave in ctx.waves.state() {
        if wave.namespace().as_deref() != Some(namespace.as_str()) || wave.spec.plan != name {
            continue;
        }
        let wave_name = wave.name_any();
        if plan.spec.waves.iter().any(|w| w.name == wave_name) {
            by_name.insert(wave_name, wave.status.clone().unwrap_or_default());
        } else {
            unlisted.push(wave_name);
        }
    }
    unlisted.sort();
    let (gates, next_gate_evaluation_at) = observe_gates(plan, &status, &namespace, ctx, now).await;
    let observations = PlanObservations {
        generation: plan.metadata.generation,
        waves: wave_views(&plan.spec, &by_name),
        unlisted,
        gates,
        next_gate_evaluation_at,
        deleting,
        admission: ctx.inner.services.admission.current(),
        actions_compacted: action_log::compacted_of(plan.metadata.annotations.as_ref()),
    };
    let decision = decide_plan(&plan.spec, &status, &observations, now);
    if record(plan, &status, &decision, &ctx.inner).await? {
        ctx.behind.outdated(plan);
    }
    if decision.status == status
        && let Some(compaction) = decision.compact
    {
        super::compaction::compact(&ctx.inner, plan, &plan.spec.actions, compaction)
            .await
            .map_err(|err| Error::Status(Box::new(err)))?;
    }
    if deleting {
        if decision.may_finish_deletion {
            info!(plan = %name, "every active wave is back on legacy; the plan may go");
            return Ok(Action::await_change());
        }
        let active = observations.waves.iter().filter(|w| w.active()).count();
        return Err(Error::RollbackPending(active));
    }
    Ok(match decision.requeue_at {
        Some(at) => Action::requeue(Duration::from_millis(
            at.duration_since(now).as_millis().max(0) as u64 + 50,
        )),
        None => Action::await_change(),
    })
}

/// Evaluates the plan's Prometheus gates with the same machinery (and the same NoData
/// and Error meaning: not passing) as wave analysis.
async fn observe_gates(
    plan: &CutoverPlan,
    status: &CutoverPlanStatus,
    namespace: &str,
    ctx: &PlanContext,
    now: Timestamp,
) -> (Vec<GateObservation>, Option<Timestamp>) {
    let interval = plan
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.interval.as_ref())
        .and_then(|i| i.parse().ok())
        .unwrap_or(analysis::DEFAULT_INTERVAL)
        .max(analysis::MIN_INTERVAL);
    let mut metrics = Vec::new();
    let mut queries = Vec::new();
    let values = analysis::template::wave_values(&BTreeMap::new(), "", namespace);
    for gate in &plan.spec.readiness_gates {
        let Some(prometheus) = &gate.prometheus else {
            continue;
        };
        let query = analysis::template::render(&prometheus.query, &values)
            .unwrap_or_else(|_| prometheus.query.clone());
        queries.push(query);
        metrics.push(EffectiveMetric {
            metric: Metric {
                name: gate.name.clone(),
                query: prometheus.query.clone(),
                min: prometheus.min,
                max: prometheus.max,
                failure_limit: None,
                on_failure: None,
            },
            policy: MetricPolicy::default(),
        });
    }
    if metrics.is_empty() {
        return (Vec::new(), None);
    }
    // The last evaluations, as the analyzer remembers metrics.
    let last: Vec<MetricStatus> = status
        .gates
        .iter()
        .filter_map(|g| {
            Some(MetricStatus {
                name: g.name.clone(),
                value: g.value,
                result: if g.passing { "Healthy" } else { "Breached" }.into(),
                consecutive_failures: 0,
                evaluated_at: Some(g.last_evaluated.clone()?),
                message: g.message.clone(),
            })
        })
        .collect();
    let analysis = EffectiveAnalysis { interval, metrics };
    let result = ctx
        .inner
        .services
        .analyzer
        .observe(&analysis, &queries, &last, now, None)
        .await;
    let gates = result
        .observations
        .into_iter()
        .map(|o| GateObservation {
            name: o.name,
            outcome: o.outcome,
            value: o.value,
            evaluated_at: o.evaluated_at,
            message: o.message,
        })
        .collect();
    (gates, result.next_evaluation_at)
}

async fn record(
    plan: &CutoverPlan,
    before: &CutoverPlanStatus,
    decision: &PlanDecision,
    ctx: &Context,
) -> Result<bool, Error> {
    let changed = &decision.status != before;
    if changed {
        ctx.ensure_leader()?;
        ctx.apply_status(plan, &decision.status)
            .await
            .map_err(|err| Error::Status(Box::new(err)))?;
    }
    ctx.publish(&plan.object_ref(&()), &decision.events).await;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rv: &str) -> CutoverPlan {
        let mut plan: CutoverPlan = serde_json::from_value(serde_json::json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "CutoverPlan",
            "metadata": {"name": "crm", "namespace": "ops"},
            "spec": {
                "legacy": {"service": {"name": "legacy", "port": 80}},
                "target": {"service": {"name": "target", "port": 80}},
                "routing": {"gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
                "cohortKeys": {"team": {"header": "x-team"}},
                "waves": []
            }
        }))
        .unwrap();
        plan.metadata.resource_version = Some(rv.into());
        plan
    }

    #[test]
    fn a_cached_plan_is_read_afresh_only_while_it_shows_the_version_a_write_outdated() {
        let behind = Behind::default();
        assert!(
            !behind.is_outdated(&plan("5")),
            "nothing written: the cache is trusted"
        );
        behind.outdated(&plan("5"));
        assert!(
            behind.is_outdated(&plan("5")),
            "the cache has not seen the write"
        );
        assert!(behind.is_outdated(&plan("5")), "nor on the next wake-up");
        assert!(!behind.is_outdated(&plan("7")), "the cache moved on");
        assert!(
            !behind.is_outdated(&plan("5")),
            "forgotten once the cache moved on"
        );
        // Read afresh (6), decided and written again: the cache may still show 5.
        behind.outdated(&plan("5"));
        behind.outdated(&plan("6"));
        assert!(behind.is_outdated(&plan("5")));
        assert!(behind.is_outdated(&plan("6")));
        assert!(!behind.is_outdated(&plan("8")), "the last write arrived");
        for rv in 0..2 * Behind::MAX_VERSIONS {
            behind.outdated(&plan(&rv.to_string()));
        }
        assert_eq!(
            behind.entries().values().next().unwrap().len(),
            Behind::MAX_VERSIONS
        );
    }
}
