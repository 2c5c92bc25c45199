//! The MigrationWave controller.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, ReflectHandle},
        watcher,
    },
};
use tracing::{debug, info, warn};

use super::finalizer::{self, Event as Finalize};
use super::lane::Prefetched;
use super::{Cache, Context, ErrorCategory, NotLeader, Services, Settings, Shutdown, Stats};
use crate::analysis;
use crate::api::{CutoverPlan, MigrationWave, MigrationWaveStatus, WavePhase};
use crate::engine::authority::{Authority, PlanAuthority};
use crate::engine::{self, Decision, Observations, Problem, RoutingIntent, action_log, validate};
use crate::metrics::RollbackCause;
use crate::routing::{
    ConfigMapRouter, GatewayRouter, HTTPRoute, MANAGED_BY, MANAGED_BY_LABEL, Router, RouterConfig,
    RoutingError, WaveRoute, Written,
};

/// The finalizer that makes deleting a wave remove its routing first.
pub const FINALIZER: &str = "switchyard.dev/routing-cleanup";

/// How often a wave whose Service is missing is looked at again. Services are not
/// watched (that would mean watching every Service in the cluster).
const MISSING_BACKEND_POLL: Duration = Duration::from_secs(10);

/// When a reconcile that yielded to the alert lane looks again (the lane's write wakes
/// it sooner, through the watch).
const YIELDED_REQUEUE: Duration = Duration::from_secs(1);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the plan or a Service failed.
    #[error("could not read {what}: {source}")]
    Observe {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// Applying or removing routing failed.
    #[error("could not apply routing: {0}")]
    Routing(#[source] RoutingError),
    /// Writing status (or compacting the action log) failed.
    #[error("could not write status: {0}")]
    Status(#[source] Box<crate::writes::WriteError>),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// The object has no namespace (it is namespaced, so this is an API server bug).
    #[error("the MigrationWave has no namespace")]
    NoNamespace,
    /// Leadership was lost during the reconcile; it stopped before its next write.
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
}

impl Error {
    /// A bounded category, for metrics labels and logs.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Observe { source, .. } => ErrorCategory::of_api(source),
            Error::Routing(err) => routing_category(err),
            Error::Status(err) => ErrorCategory::of_write(err),
            Error::Finalizer(err) => ErrorCategory::of_finalizer(err, Error::category),
            Error::NoNamespace => ErrorCategory::InvalidSpec,
            Error::NotLeader(_) => ErrorCategory::NotLeader,
        }
    }
}

/// The key of `object`'s failure count.
pub(super) fn backoff_key(object: &impl Resource) -> String {
    let meta = object.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn routing_category(error: &RoutingError) -> ErrorCategory {
    match error {
        RoutingError::Api { source, .. } => match ErrorCategory::of_api(source) {
            ErrorCategory::Conflict => ErrorCategory::Conflict,
            _ => ErrorCategory::Routing,
        },
        RoutingError::Write { source, .. } => match ErrorCategory::of_write(source) {
            category @ (ErrorCategory::Conflict | ErrorCategory::NotLeader) => category,
            _ => ErrorCategory::Routing,
        },
        RoutingError::NotOwned { .. } | RoutingError::Table { .. } => ErrorCategory::Routing,
        RoutingError::MissingBackend(_)
        | RoutingError::RouterMismatch { .. }
        | RoutingError::LegacyAccessClash { .. } => ErrorCategory::InvalidSpec,
    }
}

/// The controller label of this controller's metrics.
const CONTROLLER: &str = "wave";

/// Runs the MigrationWave controller in `scope` (a namespace, or all of them) until
/// `shutdown` resolves and the running reconciles have finished.
/// The wave controller's API clients (see `priority.rs`).
pub(crate) struct Clients {
    /// For routine reconciles: holds new requests while the alert lane acts.
    pub routine: Client,
    /// For the alert lane: never held.
    pub urgent: Client,
    /// What the routine client waits for.
    pub priority: super::priority::Priority,
}

pub(crate) async fn run(
    clients: Clients,
    scope: Option<String>,
    settings: Settings,
    services: Services,
    shutdown: Shutdown,
    waves: Cache<MigrationWave>,
    changes: ReflectHandle<MigrationWave>,
) {
    let client = clients.routine;
    let plans: Api<CutoverPlan> = scoped(&client, scope.as_deref());
    let routes: Api<HTTPRoute> = scoped(&client, scope.as_deref());
    let alerts = services.alerts.wakes();
    let gained = services.leadership.gained();
    let admission_changes = services.admission.changes();
    let context = Arc::new(Context {
        waves: Some(waves.clone()),
        ..Context::new(client, &settings, services.clone())
    });
    // The same reconcile, through the client that is never held; one lock table and
    // one backoff with the controller.
    let lane_context = Arc::new(Context {
        waves: Some(waves.clone()),
        locks: context.locks.clone(),
        backend_hints: context.backend_hints.clone(),
        backoff: context.backoff.clone(),
        ..Context::new(clients.urgent, &settings, services)
    });

    let store = waves.store();
    let controller = Controller::for_shared_stream(changes, store.clone())
        .with_config(settings.controller_config());
    // An alert that fires, resolves or expires: the alert lane reconciles the waves it
    // acts on at once; what the lane cannot take comes to this controller's queue.
    let (to_controller, from_lane) = tokio::sync::mpsc::unbounded_channel();
    let lane = super::lane::run(
        alerts,
        store.clone(),
        lane_context,
        clients.priority,
        to_controller,
    );
    let from_lane = futures::stream::unfold(from_lane, |mut from_lane| async move {
        from_lane.recv().await.map(|wave| (wave, from_lane))
    });
    let mut controller = controller
        .reconcile_on(from_lane)
        // A replica that becomes the leader reconciles every wave: as a standby it
        // left them all to the leader.
        .reconcile_all_on(gained)
        // Whether actions may take effect changed: judge the waiting ones, and update
        // the plans' AdmissionPolicies condition.
        .reconcile_all_on(admission_changes)
        .graceful_shutdown_on(shutdown);
    if settings.gateway_api {
        controller = controller.owns(
            routes,
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        );
    }
    let running = controller
        .watches(plans, watcher::Config::default(), {
            let plan_changes = std::sync::Mutex::new(PlanChanges::default());
            move |plan| {
                // A change of the plan's spec (routing, backends, cohort keys, freeze
                // windows...) or its deletion concerns all its waves; a status change only
                // the waves whose entry in status.waves changed. (Every wave's progress
                // changes its plan's status, so waking all of them each time would cost
                // waves² reconciles per plan.)
                let namespace = plan.namespace();
                let name = plan.name_any();
                let concerned = plan_changes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .concerned(&plan);
                let within = |wave: &str| {
                    let wave = ObjectRef::new(wave);
                    match &namespace {
                        Some(namespace) => wave.within(namespace),
                        None => wave,
                    }
                };
                match concerned {
                    // Named in the plan's status: no need to look through every wave
                    // in the cache (a plan's status changes with each of its waves'
                    // steps). A name the cache lacks is skipped by the controller.
                    Concerned::Only(names) => names.iter().map(|n| within(n)).collect(),
                    Concerned::All => store
                        .state()
                        .into_iter()
                        .filter(|wave| wave.namespace() == namespace && wave.spec.plan == name)
                        .map(|wave| ObjectRef::from_obj(&*wave))
                        .collect::<Vec<_>>(),
                }
            }
        })
        .run(reconcile, error_policy, context)
        .for_each(|outcome| async move { super::log_outcome(CONTROLLER, outcome) });
    // The lane ends with the alert store's wake-ups, which outlive the controller: it
    // stops with the controller.
    tokio::select! {
        () = running => {}
        () = lane => {}
    }
}

/// Which waves a plan's change concerns.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Concerned {
    /// Every wave of the plan.
    All,
    /// Only these.
    Only(std::collections::BTreeSet<String>),
}

/// What the wave controller last saw of each plan: its generation and, per wave, the
/// part of its `status.waves` entry a wave acts on (everything but the phase, which
/// mirrors the wave itself).
#[derive(Debug, Default)]
pub(crate) struct PlanChanges {
    seen: std::collections::HashMap<(Option<String>, String), SeenPlan>,
}

#[derive(Debug, PartialEq)]
struct SeenPlan {
    generation: Option<i64>,
    entries: std::collections::BTreeMap<String, String>,
}

impl PlanChanges {
    /// The waves `plan`'s change concerns, compared with the last version seen.
    pub(crate) fn concerned(&mut self, plan: &CutoverPlan) -> Concerned {
        let key = (plan.namespace(), plan.name_any());
        let entries = plan
            .status
            .iter()
            .flat_map(|s| &s.waves)
            .map(|entry| {
                let mut entry = entry.clone();
                entry.phase = WavePhase::default();
                (
                    entry.name.clone(),
                    serde_json::to_string(&entry).unwrap_or_default(),
                )
            })
            .collect();
        let now = SeenPlan {
            generation: plan.metadata.generation,
            entries,
        };
        // A plan being deleted concerns every wave, at each of its events.
        if plan.metadata.deletion_timestamp.is_some() {
            self.seen.remove(&key);
            return Concerned::All;
        }
        let concerned = match self.seen.get(&key) {
            Some(before) if before.generation == now.generation => {
                let names = before
                    .entries
                    .keys()
                    .chain(now.entries.keys())
                    .filter(|name| before.entries.get(*name) != now.entries.get(*name))
                    .cloned()
                    .collect();
                Concerned::Only(names)
            }
            _ => Concerned::All,
        };
        self.seen.insert(key, now);
        concerned
    }
}

pub(super) fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// The controller's reconcile: under the wave's lock, which the alert lane takes too.
async fn reconcile(wave: Arc<MigrationWave>, ctx: Arc<Context>) -> Result<Action, Error> {
    let reference = ObjectRef::from_obj(&*wave);
    let guard = ctx.locks.lock(&reference).await;
    // The lane wrote this wave meanwhile, or the last reconcile hit a conflict: the
    // cached copy may predate that write.
    let wave = if ctx.locks.take_read_fresh(&reference) {
        match super::lane::read_fresh(&ctx, &reference).await {
            Ok(Some(fresh)) => Arc::new(fresh),
            Ok(None) => return Ok(Action::await_change()),
            Err(source) => {
                return Err(Error::Observe {
                    what: format!("MigrationWave {}", reference.name),
                    source: Box::new(source),
                });
            }
        }
    } else {
        wave
    };
    reconcile_locked(wave, ctx, &guard, Prefetched::default()).await
}

/// observe → decide → apply → record for one wave, whose lock the caller holds.
pub(super) async fn reconcile_locked(
    wave: Arc<MigrationWave>,
    ctx: Arc<Context>,
    guard: &super::lane::WaveGuard,
    prefetched: Prefetched,
) -> Result<Action, Error> {
    if !ctx.is_leader() {
        // A standby keeps its cache warm and leaves the wave to the leader; when it
        // becomes the leader, it reconciles every wave again.
        return Ok(Action::await_change());
    }
    if ctx.waves.as_ref().is_some_and(|waves| !waves.is_synced()) {
        // Whether another wave of the plan has this wave's cohort is read from the
        // cache; before its first complete list it would find none.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let _timer = ctx.services.metrics.time_reconcile(CONTROLLER);
    Stats::bump(&ctx.services.stats.reconciles);
    let namespace = wave.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<MigrationWave> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = backoff_key(&*wave);
    let action = finalizer::finalizer(&api, &ctx.writes, FINALIZER, wave, |event| async {
        match event {
            Finalize::Apply(wave) => apply(&wave, &ctx, guard, prefetched).await,
            Finalize::Cleanup(wave) => cleanup(&wave, &ctx).await,
        }
    })
    .await
    .map_err(|err| Error::Finalizer(Box::new(err)))?;
    ctx.backoff.succeeded(&key);
    Ok(action)
}

fn error_policy(wave: Arc<MigrationWave>, error: &Error, ctx: Arc<Context>) -> Action {
    let category = error.category();
    if !category.is_failure() {
        // Leadership was lost: the new leader carries on, and should this replica lead
        // again, it reconciles every wave then.
        debug!(wave = %wave.name_any(), error = %error, "stopped: no longer the leader");
        return Action::await_change();
    }
    ctx.services
        .metrics
        .reconcile_error(CONTROLLER, category.as_str());
    let permanent = category.is_permanent();
    let action = ctx.retry(&backoff_key(&*wave), category);
    if category == ErrorCategory::Conflict {
        // Decided from a version older than the object's (a stale cache, or a write by
        // someone else): the retry decides again from a fresh read, not from the cache.
        ctx.locks.read_fresh_next(&ObjectRef::from_obj(&*wave));
        debug!(wave = %wave.name_any(), error = %error, "conflict with a newer version; deciding again from a fresh read");
        return action;
    }
    ctx.services.stats.error(error);
    if permanent {
        warn!(wave = %wave.name_any(), category = %category, error = %error, "reconcile failed; waiting for the wave or its plan to change");
    } else {
        warn!(wave = %wave.name_any(), category = %category, error = %error, "reconcile failed; retrying with backoff");
    }
    action
}

/// observe → decide → apply → record, for a wave that is not being deleted.
async fn apply(
    wave: &MigrationWave,
    ctx: &Context,
    guard: &super::lane::WaveGuard,
    mut prefetched: Prefetched,
) -> Result<Action, Error> {
    let now = Timestamp::now();
    // An alert for this wave came in: the lane decides on it, with fresh observations.
    // Observing writes nothing, so it is abandoned; nothing is written after it either.
    let yielded = || Ok(Action::requeue(YIELDED_REQUEUE));
    let (observations, route) = tokio::select! {
        biased;
        () = guard.yield_requested_now() => return yielded(),
        observed = observe(wave, ctx, now, &mut prefetched) => observed?,
    };
    if guard.yield_requested() {
        return yielded();
    }
    let status = wave.status.clone().unwrap_or_default();
    let decision = engine::decide(&wave.spec, &status, &observations, now);

    let recorded = &decision.status;
    if let Err(err) = apply_routing(&decision, route.as_ref(), wave, ctx, prefetched).await {
        if let Some(failed) = engine::when_routing_failed(recorded) {
            record(wave, &status, &failed, &decision, ctx).await?;
        }
        return Err(err);
    }
    record(wave, &status, recorded, &decision, ctx).await?;
    if *recorded == status
        && let Some(compaction) = decision.compact
    {
        super::compaction::compact(ctx, wave, &wave.spec.actions, compaction)
            .await
            .map_err(|err| Error::Status(Box::new(err)))?;
    }
    Ok(next_action(&decision, &observations, now))
}

fn next_action(decision: &Decision, observations: &Observations, now: Timestamp) -> Action {
    let poll = observations
        .problems
        .iter()
        .any(Problem::needs_polling)
        .then_some(MISSING_BACKEND_POLL);
    let deadline = decision.requeue_at.map(|at| {
        let wait = at.duration_since(now).as_millis().max(0) as u64;
        // Timestamps have whole seconds; waking just after the deadline avoids a
        // reconcile that finds it not quite reached.
        Duration::from_millis(wait + 50)
    });
    match (poll, deadline) {
        (Some(a), Some(b)) => Action::requeue(a.min(b)),
        (Some(d), None) | (None, Some(d)) => Action::requeue(d),
        (None, None) => Action::await_change(),
    }
}

/// Reads the wave's plan (unless `prefetched` holds it) and backends into observations;
/// the validate stage (`engine::validate`) says what does not hold together and, when
/// everything does, builds the route to apply.
async fn observe(
    wave: &MigrationWave,
    ctx: &Context,
    now: Timestamp,
    prefetched: &mut Prefetched,
) -> Result<(Observations, Option<WaveRoute>), Error> {
    let client = &ctx.client;
    let namespace = wave.namespace().ok_or(Error::NoNamespace)?;
    let name = wave.name_any();
    let mut observations = Observations {
        generation: wave.metadata.generation,
        firing_alerts: ctx
            .services
            .alerts
            .in_scope(wave.spec.alerts.as_ref(), &namespace),
        alert_state: ctx
            .services
            .alerts
            .state_for(ctx.services.leadership.term()),
        authority: Authority {
            admission: ctx.services.admission.current(),
            plan: None,
        },
        actions_compacted: action_log::compacted_of(wave.metadata.annotations.as_ref()),
        ..Observations::default()
    };
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), &namespace);
    let read = |what: String| {
        move |source| Error::Observe {
            what,
            source: Box::new(source),
        }
    };
    let plan = match prefetched.take_plan(&wave.spec.plan) {
        Some(read) => read,
        None => plans.get_opt(&wave.spec.plan).await,
    };
    let Some(plan) = plan.map_err(read(format!("CutoverPlan {namespace}/{}", wave.spec.plan)))?
    else {
        observations.problems.push(Problem::PlanNotFound {
            plan: wave.spec.plan.clone(),
        });
        return Ok((observations, None));
    };
    observations.authority.plan = Some(PlanAuthority::of(
        &plan.name_any(),
        plan.uid().as_deref().unwrap_or_default(),
        &plan.spec,
    ));
    let spec = &plan.spec;
    let plan_name = plan.name_any();
    observations
        .problems
        .extend(validate::plan_problems(&name, &wave.spec, &plan_name, spec));
    observations
        .problems
        .extend(duplicate_cohort(wave, &namespace, ctx));
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let backends = validate::needed_backends(&wave.spec, spec);
    ctx.backend_hints.remember(
        &namespace,
        &plan_name,
        backends.iter().map(|(_, s)| s.name.clone()).collect(),
    );
    // Read together (or beside the wave, by the lane): on an alert's path every round
    // trip counts.
    let found = futures::future::join_all(backends.iter().map(|(_, service)| {
        let read = prefetched.take_service(&service.name);
        let services = services.clone();
        async move {
            match read {
                Some(read) => read,
                None => services.get_metadata_opt(&service.name).await,
            }
        }
    }))
    .await;
    for ((role, service), found) in backends.into_iter().zip(found) {
        let found = found.map_err(read(format!("Service {namespace}/{}", service.name)))?;
        if found.is_none() {
            observations.problems.push(Problem::BackendNotFound {
                role,
                service: service.name.clone(),
            });
        }
    }
    if !observations.problems.is_empty() {
        return Ok((observations, None));
    }
    observations.plan = crate::engine::plan::permission_for(&name, spec, plan.status.as_ref(), now);
    observe_analysis(wave, &plan, &namespace, ctx, now, &mut observations).await;
    if !observations.problems.is_empty() {
        return Ok((observations, None));
    }
    let uid = wave.uid().unwrap_or_default();
    let identity = validate::WaveIdentity {
        namespace: &namespace,
        name: &name,
        uid: &uid,
    };
    match validate::route(identity, &wave.spec, &plan_name, spec) {
        Ok(route) => Ok((observations, Some(route))),
        Err(problem) => {
            observations.problems.push(problem);
            Ok((observations, None))
        }
    }
}

/// The problem of `wave` when another wave of its plan, in the cache, has the same cohort
/// and holds it (the rule is [`engine::cohorts`]).
fn duplicate_cohort(wave: &MigrationWave, namespace: &str, ctx: &Context) -> Option<Problem> {
    use engine::cohorts::CohortClaim;
    fn claim(w: &MigrationWave) -> CohortClaim<'_> {
        CohortClaim {
            name: w.metadata.name.as_deref().unwrap_or_default(),
            cohort: &w.spec.cohort,
            phase: w.status.as_ref().map(|s| s.phase).unwrap_or_default(),
            created: w.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
    let waves = ctx.waves.as_ref()?.state();
    let others: Vec<CohortClaim> = waves
        .iter()
        .filter(|w| w.namespace().as_deref() == Some(namespace) && w.spec.plan == wave.spec.plan)
        .map(|w| claim(w))
        .collect();
    engine::cohorts::duplicate_cohort(&claim(wave), &others)
}

/// Evaluates the wave's analysis metrics, if the wave is active or about to start: only
/// then do they decide anything, and only then does Switchyard put load on Prometheus.
/// Metrics are evaluated on their interval, and at once when a forward move is due and
/// their latest evaluation is older than the move's horizon (`engine::evidence_horizon`).
async fn observe_analysis(
    wave: &MigrationWave,
    plan: &CutoverPlan,
    namespace: &str,
    ctx: &Context,
    now: Timestamp,
    observations: &mut Observations,
) {
    let status = wave.status.clone().unwrap_or_default();
    let analysis =
        match analysis::effective(plan.spec.analysis.as_ref(), wave.spec.analysis.as_ref()) {
            Ok(analysis) => analysis,
            Err(message) => {
                observations.problems.push(Problem::InvalidSpec { message });
                return;
            }
        };
    observations.analysis_metrics = Some(
        analysis
            .metrics
            .iter()
            .map(|m| m.metric.name.clone())
            .collect(),
    );
    let active = engine::is_routed(&status);
    let horizon = engine::evidence_horizon(&wave.spec, &status, observations, now);
    // A pending wave is evaluated only when it may start.
    if analysis.metrics.is_empty() || !(active || horizon.is_some()) {
        return;
    }
    let values = analysis::template::wave_values(&wave.spec.cohort, &wave.name_any(), namespace);
    let mut queries = Vec::with_capacity(analysis.metrics.len());
    for metric in &analysis.metrics {
        match analysis::template::render(&metric.metric.query, &values) {
            Ok(query) => queries.push(query),
            Err(err) => {
                observations.problems.push(Problem::InvalidSpec {
                    message: format!("analysis metric {:?}: {err}", metric.metric.name),
                });
                return;
            }
        }
    }
    let result = ctx
        .services
        .analyzer
        .observe(&analysis, &queries, &status.analysis, now, horizon)
        .await;
    observations.metrics = result.observations;
    observations.next_evaluation_at = result.next_evaluation_at;
}

async fn apply_routing(
    decision: &Decision,
    route: Option<&WaveRoute>,
    wave: &MigrationWave,
    ctx: &Context,
    prefetched: Prefetched,
) -> Result<(), Error> {
    if decision.routing != RoutingIntent::Leave {
        ctx.ensure_leader()?;
    }
    let written = route_as_decided(decision, route, wave, ctx, prefetched)
        .await
        .map_err(Error::Routing)?;
    if written == Written::Changed {
        Stats::bump(&ctx.services.stats.routing_writes);
    }
    Ok(())
}

async fn route_as_decided(
    decision: &Decision,
    route: Option<&WaveRoute>,
    wave: &MigrationWave,
    ctx: &Context,
    mut prefetched: Prefetched,
) -> Result<Written, RoutingError> {
    Ok(match (decision.routing, route) {
        (RoutingIntent::Leave, _) => Written::Unchanged,
        (RoutingIntent::Route(state), Some(route)) => match route.router {
            RouterConfig::GatewayApi { .. } => {
                GatewayRouter::new(ctx.client.clone())
                    .with_writes(ctx.writes.clone())
                    .apply(route, &state)
                    .await?
            }
            RouterConfig::ConfigMap { .. } => {
                ConfigMapRouter::new(ctx.client.clone())
                    .with_writes(ctx.writes.clone())
                    .apply(route, &state)
                    .await?
            }
        },
        // The engine routes only valid waves, and a valid wave always has a route.
        (RoutingIntent::Route(_), None) => Written::Unchanged,
        (RoutingIntent::Remove, Some(route)) => match route.router {
            RouterConfig::GatewayApi { .. } => {
                let router = GatewayRouter::new(ctx.client.clone()).with_writes(ctx.writes.clone());
                match prefetched.take_route() {
                    Some(read) => {
                        router
                            .remove_read(&route.namespace, &route.wave, read)
                            .await?
                    }
                    None => router.remove(&route.namespace, &route.wave).await?,
                }
            }
            RouterConfig::ConfigMap { ref name } => {
                ConfigMapRouter::new(ctx.client.clone())
                    .with_writes(ctx.writes.clone())
                    .remove_from_table(&route.namespace, name, &route.wave)
                    .await?
            }
        },
        (RoutingIntent::Remove, None) => remove_everywhere(wave, ctx).await?,
    })
}

/// Removes the wave's routing from every router; needs no plan.
async fn remove_everywhere(wave: &MigrationWave, ctx: &Context) -> Result<Written, RoutingError> {
    let namespace = wave.namespace().unwrap_or_default();
    let name = wave.name_any();
    let gateway = GatewayRouter::new(ctx.client.clone())
        .with_writes(ctx.writes.clone())
        .remove(&namespace, &name)
        .await?;
    let table = ConfigMapRouter::new(ctx.client.clone())
        .with_writes(ctx.writes.clone())
        .remove(&namespace, &name)
        .await?;
    Ok(
        if gateway == Written::Changed || table == Written::Changed {
            Written::Changed
        } else {
            Written::Unchanged
        },
    )
}

/// Writes status if it changed, one Event per transition, and the wave's metrics.
async fn record(
    wave: &MigrationWave,
    before: &MigrationWaveStatus,
    after: &MigrationWaveStatus,
    decision: &Decision,
    ctx: &Context,
) -> Result<(), Error> {
    if after != before {
        ctx.ensure_leader()?;
        ctx.apply_status(wave, after)
            .await
            .map_err(|err| Error::Status(Box::new(err)))?;
        if after.phase != before.phase {
            info!(wave = %wave.name_any(), from = ?before.phase, to = ?after.phase, "phase changed");
        }
    }
    ctx.publish(&wave.object_ref(&()), &decision.events).await;
    report(wave, before, after, ctx);
    Ok(())
}

/// Updates the wave's series, and counts a rollback this reconcile recorded.
fn report(
    wave: &MigrationWave,
    before: &MigrationWaveStatus,
    after: &MigrationWaveStatus,
    ctx: &Context,
) {
    if !ctx.is_leader() {
        // Only the leader reports waves; a replica that just stepped down has dropped
        // its wave series.
        return;
    }
    let metrics = &ctx.services.metrics;
    let namespace = wave.namespace().unwrap_or_default();
    let name = wave.name_any();
    metrics.observe_wave(
        &namespace,
        &name,
        after.phase,
        after.target_weight.unwrap_or(0),
    );
    let rolled_back = |phase| matches!(phase, WavePhase::RolledBack | WavePhase::RollingBack);
    if rolled_back(after.phase) && !rolled_back(before.phase) {
        let reason = crate::engine::conditions::get(
            &after.conditions,
            crate::engine::conditions::ROLLED_BACK,
        )
        .map(|c| c.reason.as_str())
        .unwrap_or_default();
        metrics.rollback(&namespace, RollbackCause::from_reason(reason));
    }
}

/// The wave is being deleted: remove its routing, then let the deletion finish.
async fn cleanup(wave: &MigrationWave, ctx: &Context) -> Result<Action, Error> {
    ctx.ensure_leader()?;
    let written = remove_everywhere(wave, ctx).await.map_err(Error::Routing)?;
    if written == Written::Changed {
        Stats::bump(&ctx.services.stats.routing_writes);
    }
    ctx.services
        .metrics
        .forget_wave(&wave.namespace().unwrap_or_default(), &wave.name_any());
    info!(wave = %wave.name_any(), "routing removed before deletion");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with(generation: i64, entries: serde_json::Value) -> CutoverPlan {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "CutoverPlan",
            "metadata": {"name": "crm", "namespace": "ns", "generation": generation},
            "spec": {
                "legacy": {"service": {"name": "l", "port": 80}},
                "target": {"service": {"name": "t", "port": 80}},
                "routing": {"configMap": {"name": "r"}},
                "cohortKeys": {"team": {"header": "x-team"}},
                "waves": [{"name": "a"}, {"name": "b"}]
            },
            "status": {"waves": entries}
        }))
        .unwrap()
    }

    #[test]
    fn a_plan_status_change_concerns_only_the_waves_whose_entry_changed() {
        let mut changes = PlanChanges::default();
        let first = plan_with(
            1,
            serde_json::json!([
                {"name": "a", "phase": "Pending", "admitted": false, "heldBy": "Order"},
                {"name": "b", "phase": "Pending", "admitted": false, "heldBy": "Order"}
            ]),
        );
        assert_eq!(changes.concerned(&first), Concerned::All, "first sight");
        // a starts: only its phase changes, which mirrors a itself.
        let started = plan_with(
            1,
            serde_json::json!([
                {"name": "a", "phase": "Progressing", "admitted": false, "heldBy": "Order"},
                {"name": "b", "phase": "Pending", "admitted": false, "heldBy": "Order"}
            ]),
        );
        assert_eq!(
            changes.concerned(&started),
            Concerned::Only(Default::default())
        );
        // b is admitted: b only.
        let admitted = plan_with(
            1,
            serde_json::json!([
                {"name": "a", "phase": "Progressing", "admitted": false, "heldBy": "Order"},
                {"name": "b", "phase": "Pending", "admitted": true}
            ]),
        );
        assert_eq!(
            changes.concerned(&admitted),
            Concerned::Only(["b".to_owned()].into())
        );
        // A spec change concerns all of them.
        let edited = plan_with(
            2,
            serde_json::json!([
                {"name": "a", "phase": "Progressing", "admitted": false, "heldBy": "Order"},
                {"name": "b", "phase": "Pending", "admitted": true}
            ]),
        );
        assert_eq!(changes.concerned(&edited), Concerned::All);
        // So does every event of a plan being deleted.
        let mut deleting = edited.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        assert_eq!(changes.concerned(&deleting), Concerned::All);
        assert_eq!(changes.concerned(&deleting), Concerned::All);
    }
}
