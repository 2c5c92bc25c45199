//! The controllers: observe → decide → apply → record.
//!
//! Each reconcile reads what it needs (observe), asks the pure engine what should be true
//! (decide), makes the routing so (apply), then writes status and Events (record), and
//! requeues at the engine's next deadline. Only `observe`, `apply` and `record` talk to
//! the API server.

mod admission_guard;
pub mod backoff;
mod caches;
mod compaction;
mod errors;
mod finalizer;
mod lane;
pub mod plan;
pub mod priority;
pub mod wave;

pub use admission_guard::AdmissionGuard;
pub use caches::Readiness;
use caches::{Cache, cache, shared_cache};
pub use errors::{ErrorCategory, NotLeader};

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use futures::{
    StreamExt,
    future::{BoxFuture, FutureExt, Shared},
};
use kube::{
    Client,
    runtime::{events::Reporter, watcher},
};

use crate::alerts::AlertStore;
use crate::analysis::Analyzer;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::writes::{WriteError, Writes, resource, verb};
use kube::runtime::controller::Action;

/// Counters a caller can read while the controller runs (tests, metrics).
#[derive(Debug, Default)]
pub struct Stats {
    reconciles: AtomicU64,
    errors: AtomicU64,
    routing_writes: AtomicU64,
    status_writes: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Stats {
    /// Reconciles started.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }
    /// Reconciles that failed.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// Routing changes written (HTTPRoute or ConfigMap writes and deletions).
    pub fn routing_writes(&self) -> u64 {
        self.routing_writes.load(Ordering::Relaxed)
    }
    /// Status patches written.
    pub fn status_writes(&self) -> u64 {
        self.status_writes.load(Ordering::Relaxed)
    }
    /// The last reconcile error, for diagnosis.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn error(&self, error: &dyn std::error::Error) {
        Self::bump(&self.errors);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many reconciles of each controller run at once, unless configured otherwise.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 32;

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch these namespaces, or all namespaces when empty. Each namespace gets its own
    /// pair of controllers with namespaced watches, so that the operator needs no
    /// cluster-wide read access to its objects.
    pub namespaces: Vec<String>,
    /// Whether the Gateway API's HTTPRoute is served: only then are routes watched.
    pub gateway_api: bool,
    /// The name Events are reported under.
    pub reporter: String,
    /// Identifies this replica in Events.
    pub instance: Option<String>,
    /// At most this many reconciles of each controller run at once. Each one reads
    /// from the API server, and an unbounded number of them (every wave at a cold
    /// start) would open as many connections, and hold their memory afterwards.
    pub max_concurrent_reconciles: u16,
    /// Each API write is given up after this long, or at the end of the leader's term
    /// if that comes first (see [`crate::writes`]).
    pub api_write_timeout: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            gateway_api: true,
            reporter: "switchyard".into(),
            instance: None,
            max_concurrent_reconciles: DEFAULT_MAX_CONCURRENT_RECONCILES,
            api_write_timeout: crate::writes::DEFAULT_WRITE_TIMEOUT,
        }
    }
}

impl Settings {
    /// The configuration of each controller.
    fn controller_config(&self) -> kube::runtime::controller::Config {
        kube::runtime::controller::Config::default().concurrency(self.max_concurrent_reconciles)
    }

    /// The scopes to run controllers in: each namespace, or the whole cluster (None).
    fn scopes(&self) -> Vec<Option<String>> {
        if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        }
    }
}

/// Logs what a controller's run stream yields. Failed reconciles were logged by the
/// error policy already; a failing watch is logged here, because without it the
/// controller is blind (a missing CRD, RBAC that forbids a list).
fn log_outcome<K, E: std::error::Error>(
    controller: &'static str,
    outcome: Result<
        (
            kube::runtime::reflector::ObjectRef<K>,
            kube::runtime::controller::Action,
        ),
        kube::runtime::controller::Error<E, watcher::Error>,
    >,
) where
    K: kube::Resource,
{
    use kube::runtime::controller::Error;
    match outcome {
        Ok((object, _)) => tracing::debug!(controller, object = %object.name, "reconciled"),
        Err(Error::ReconcilerFailed(..) | Error::ObjectNotFound(_)) => {}
        Err(Error::QueueError(err)) => log_watch_error(controller, &err),
        Err(err @ Error::RunnerError(_)) => {
            tracing::error!(controller, error = %err, "the controller failed")
        }
    }
}

/// Logs a failed watch. One whose resourceVersion has expired (410 Gone) is routine: the
/// watcher lists again and goes on.
fn log_watch_error(controller: &'static str, err: &watcher::Error) {
    match err {
        watcher::Error::WatchError(status) if status.code == 410 => {
            tracing::debug!(controller, error = %status, "a watch expired; listing again")
        }
        err => tracing::warn!(controller, error = %err, "a watch failed; retrying with backoff"),
    }
}

/// Resolves when the operator is asked to stop. Cheap to clone.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

/// A [`Shutdown`] made of any future.
pub fn shutdown_on(signal: impl std::future::Future<Output = ()> + Send + 'static) -> Shutdown {
    signal.boxed().shared()
}

/// The caches each scope (namespace, or the cluster) runs: the waves, which both
/// controllers read, and the plans.
const CACHES_PER_SCOPE: usize = 2;

/// The long-lived parts the controllers share with the rest of the operator (the HTTP
/// server's receiver, the metrics, the leader election).
#[derive(Clone)]
pub struct Services {
    /// Controller counters.
    pub stats: Arc<Stats>,
    /// Evaluates analysis metrics against Prometheus.
    pub analyzer: Arc<Analyzer>,
    /// The alerts Alertmanager reports firing.
    pub alerts: Arc<AlertStore>,
    /// The Prometheus metrics served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// Whether the controllers' caches have synced.
    pub readiness: Arc<Readiness>,
    /// Whether Switchyard's admission policies vouch for recorded actions.
    pub admission: Arc<AdmissionGuard>,
}

impl Default for Services {
    /// No Prometheus (every metric is an Error, which pauses), no alerts yet, no leader
    /// election (the replica always acts).
    fn default() -> Self {
        let metrics = Arc::new(Metrics::new());
        Self {
            stats: Arc::default(),
            analyzer: Arc::new(Analyzer::new(None, 8).with_metrics(metrics.clone())),
            alerts: Arc::default(),
            metrics,
            leadership: Leadership::default(),
            readiness: Arc::default(),
            admission: Arc::default(),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: kube::runtime::events::Recorder,
    /// Counters, the analyzer and the alert store.
    pub services: Services,
    /// The wave controller's cache of waves, where it checks that no two waves of a
    /// plan share a cohort. None in the plan controller.
    pub(crate) waves: Option<Cache<crate::api::MigrationWave>>,
    /// Every API write goes through it: within the leader's term, with a timeout.
    pub writes: Writes,
    /// The failures in a row of each object, for its retry delay.
    pub backoff: Arc<backoff::Backoff>,
    /// One lock per wave, shared by the wave controller and the alert lane.
    pub(crate) locks: Arc<lane::WaveLocks>,
    /// The Services each plan's waves need, which the alert lane reads beside the wave.
    pub(crate) backend_hints: Arc<lane::BackendHints>,
}

impl Context {
    /// Whether this replica may write now.
    pub fn is_leader(&self) -> bool {
        self.services.leadership.is_leader()
    }

    /// Checked right before every write: a replica that lost the Lease stops there.
    pub fn ensure_leader(&self) -> Result<(), NotLeader> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(NotLeader)
        }
    }

    /// Writes `status` to `object`'s status subresource by server-side apply, under the
    /// one field manager, on condition that the object is still the version `object` is
    /// (its resourceVersion is in the body): a decision made from an older version, by
    /// this replica or one that lost the Lease, is refused with 409 Conflict. Callers
    /// write only when the status changed.
    pub async fn apply_status<K>(
        &self,
        object: &K,
        status: &impl serde::Serialize,
    ) -> Result<(), WriteError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        use kube::ResourceExt;
        let api: kube::Api<K> =
            kube::Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let mut patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": {"name": object.name_any()},
            "status": status,
        });
        crate::writes::precondition(&mut patch, object.resource_version());
        let params = kube::api::PatchParams::apply(crate::routing::FIELD_MANAGER).force();
        let name = object.name_any();
        self.writes
            .send(
                resource::of::<K>(true),
                verb::APPLY,
                api.patch_status(&name, &params, &kube::api::Patch::Apply(&patch)),
            )
            .await?;
        Stats::bump(&self.services.stats.status_writes);
        Ok(())
    }

    /// What to do after a failed reconcile of `object` (namespace/name), by the
    /// category of its error (see [`backoff::Backoff::after_failure`]).
    pub(crate) fn retry(&self, object: &str, category: ErrorCategory) -> Action {
        self.backoff.after_failure(object, category)
    }

    /// Publishes one Event per engine event about `reference`. An Event is a
    /// notification: losing one is logged and does not fail the reconcile. A replica
    /// that is no longer the leader publishes nothing.
    pub async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        events: &[crate::engine::EngineEvent],
    ) {
        use kube::runtime::events::{Event, EventType};
        for event in events {
            if !self.is_leader() {
                tracing::debug!(object = ?reference.name, "not the leader: Events left to the leader");
                return;
            }
            let published = self
                .writes
                .send(
                    resource::EVENTS,
                    verb::CREATE,
                    self.recorder.publish(
                        &Event {
                            type_: match event.kind {
                                crate::engine::EventKind::Normal => EventType::Normal,
                                crate::engine::EventKind::Warning => EventType::Warning,
                            },
                            reason: event.reason.clone(),
                            note: Some(event.note.chars().take(1000).collect()),
                            action: "Reconcile".into(),
                            secondary: None,
                        },
                        reference,
                    ),
                )
                .await;
            if let Err(err) = published {
                tracing::warn!(object = ?reference.name, error = %err, "could not publish an Event");
            }
        }
    }

    /// A context for these settings.
    pub fn new(client: Client, settings: &Settings, services: Services) -> Self {
        let reporter = Reporter {
            controller: settings.reporter.clone(),
            instance: settings.instance.clone(),
        };
        let writes = Writes::new(
            services.leadership.clone(),
            services.metrics.clone(),
            settings.api_write_timeout,
        );
        Self {
            recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
            client,
            services,
            waves: None,
            writes,
            backoff: Arc::default(),
            locks: Arc::default(),
            backend_hints: Arc::default(),
        }
    }
}

/// Runs the CutoverPlan and MigrationWave controllers until the future is dropped.
pub async fn run(client: Client, settings: Settings, services: Services) {
    run_until(
        client,
        settings,
        services,
        shutdown_on(std::future::pending()),
    )
    .await;
}

/// Runs the CutoverPlan and MigrationWave controllers in every scope of `settings` until
/// `shutdown` resolves; then starts no new reconcile, lets the running ones finish, and
/// returns.
pub async fn run_until(client: Client, settings: Settings, services: Services, shutdown: Shutdown) {
    let scopes = settings.scopes();
    services.readiness.expect(scopes.len() * CACHES_PER_SCOPE);
    // The alert lane's requests go first: everything else waits while it acts.
    let priority = priority::Priority::default();
    let (urgent, client) = (client.clone(), priority.routine_client(client));
    let guard = services.admission.clone().watch(client.clone());
    let guard = async move {
        guard.await;
        std::future::pending::<()>().await
    };
    let runs = scopes.into_iter().map(|scope| {
        let (client, urgent, priority, settings, services, shutdown) = (
            client.clone(),
            urgent.clone(),
            priority.clone(),
            settings.clone(),
            services.clone(),
            shutdown.clone(),
        );
        async move {
            // One watch of the scope's waves, read by both controllers: each would
            // otherwise hold every wave in a cache of its own.
            let (waves, [for_waves, for_plans], watch) = shared_cache(
                wave::scoped::<crate::api::MigrationWave>(&client, scope.as_deref()),
                services.readiness.clone(),
            );
            // A subscription yields the waves the watch applies, not the deleted ones;
            // a deleted wave's plan must still hear of it, to drop it from its status.
            let (deleted_tx, deleted) = tokio::sync::mpsc::unbounded_channel();
            let watch = watch.take_until(shutdown.clone()).for_each(move |event| {
                match event {
                    Ok(watcher::Event::Delete(wave)) => {
                        if let Some(plan) = plan::of_wave(&wave) {
                            let _ = deleted_tx.send(plan);
                        }
                    }
                    Ok(_) => {}
                    Err(err) => log_watch_error("wave", &err),
                }
                std::future::ready(())
            });
            tokio::join!(
                watch,
                plan::run(
                    client.clone(),
                    scope.clone(),
                    settings.clone(),
                    services.clone(),
                    shutdown.clone(),
                    plan::Waves {
                        cache: waves.clone(),
                        changes: for_plans,
                        deleted,
                    },
                ),
                wave::run(
                    wave::Clients {
                        routine: client,
                        urgent,
                        priority,
                    },
                    scope,
                    settings,
                    services,
                    shutdown,
                    waves,
                    for_waves
                ),
            );
        }
    });
    // The guard's watch never ends by itself; the controllers end at shutdown.
    tokio::select! {
        _ = futures::future::join_all(runs) => {}
        () = guard => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_the_namespaces_or_the_cluster() {
        assert_eq!(Settings::default().scopes(), vec![None]);
        let settings = Settings {
            namespaces: vec!["a".into(), "b".into()],
            ..Settings::default()
        };
        assert_eq!(
            settings.scopes(),
            vec![Some("a".to_owned()), Some("b".to_owned())]
        );
    }
}
