//! The controllers: observe → decide → apply → record.
//!
//! Each reconcile reads what it needs (observe), asks the pure engine what should be true
//! (decide), makes the routing so (apply), then writes status and Events (record), and
//! requeues at the engine's next deadline. Only `observe`, `apply` and `record` talk to
//! the API server.

pub mod plan;
pub mod wave;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use kube::{Client, runtime::events::Reporter};

use crate::alerts::AlertStore;
use crate::analysis::Analyzer;

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

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch one namespace, or all when None.
    pub namespace: Option<String>,
    /// The name Events are reported under.
    pub reporter: String,
    /// Identifies this replica in Events.
    pub instance: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            reporter: "switchyard".into(),
            instance: None,
        }
    }
}

/// The long-lived parts the controllers share with the rest of the operator (the HTTP
/// server's receiver, the metrics).
#[derive(Clone)]
pub struct Services {
    /// Controller counters.
    pub stats: Arc<Stats>,
    /// Evaluates analysis metrics against Prometheus.
    pub analyzer: Arc<Analyzer>,
    /// The alerts Alertmanager reports firing.
    pub alerts: Arc<AlertStore>,
}

impl Default for Services {
    /// No Prometheus (every metric is an Error, which pauses), no alerts yet.
    fn default() -> Self {
        Self {
            stats: Arc::default(),
            analyzer: Arc::new(Analyzer::new(None, 8)),
            alerts: Arc::default(),
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
}

impl Context {
    /// Writes `status` to `object`'s status subresource by server-side apply, under the
    /// one field manager. Callers write only when the status changed.
    pub async fn apply_status<K>(
        &self,
        object: &K,
        status: &impl serde::Serialize,
    ) -> Result<(), kube::Error>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        use kube::ResourceExt;
        let api: kube::Api<K> =
            kube::Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        api.patch_status(
            &object.name_any(),
            &kube::api::PatchParams::apply(crate::routing::FIELD_MANAGER).force(),
            &kube::api::Patch::Apply(&patch),
        )
        .await?;
        Stats::bump(&self.services.stats.status_writes);
        Ok(())
    }

    /// Publishes one Event per engine event about `reference`. An Event is a
    /// notification: losing one is logged and does not fail the reconcile.
    pub async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        events: &[crate::engine::EngineEvent],
    ) {
        use kube::runtime::events::{Event, EventType};
        for event in events {
            let published = self
                .recorder
                .publish(
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
        Self {
            recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
            client,
            services,
        }
    }
}

/// Runs the CutoverPlan and MigrationWave controllers until the future is dropped.
pub async fn run(client: Client, settings: Settings, services: Services) {
    tokio::join!(
        plan::run(client.clone(), settings.clone(), services.clone()),
        wave::run(client, settings, services),
    );
}
