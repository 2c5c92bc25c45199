//! An independent recorder for the chaos suite: its own client, straight to the API
//! server (no fault proxy), watching the waves, plans, HTTPRoutes, routing-table
//! ConfigMaps and the Lease of one namespace, and keeping every version it is told of
//! with the API server's resourceVersion and the time it arrived.
//!
//! The API server has one etcd, so resourceVersions are one counter across every kind:
//! ordering versions of different objects by it orders them as etcd committed them. The
//! arrival time is never earlier than the commit, which is what the time-based checks
//! rely on (see `invariants.rs`).
//!
//! A watch that breaks lists again, and an object deleted in between is simply absent
//! from the list: the recorder records its deletion then (`infer_deletions`).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap};
use kube::{
    Api, Client,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};
use switchyard::{
    api::{CutoverPlan, MigrationWave},
    routing::HTTPRoute,
};

/// The kinds the recorder watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Wave,
    Plan,
    Route,
    Table,
    Lease,
}

/// One version of one object as the watch delivered it; `object` is None for a deletion.
#[derive(Clone, Debug)]
pub struct Version {
    pub kind: Kind,
    pub name: String,
    pub rv: u64,
    pub at: Timestamp,
    pub object: Option<serde_json::Value>,
}

/// The running watches and what they recorded.
pub struct Recorder {
    versions: Arc<Mutex<Vec<Version>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Recorder {
    pub fn start(client: &Client, namespace: &str) -> Self {
        let versions: Arc<Mutex<Vec<Version>>> = Arc::default();
        let tasks = vec![
            watch::<MigrationWave>(client, namespace, Kind::Wave, &versions),
            watch::<CutoverPlan>(client, namespace, Kind::Plan, &versions),
            watch::<HTTPRoute>(client, namespace, Kind::Route, &versions),
            watch::<ConfigMap>(client, namespace, Kind::Table, &versions),
            watch::<Lease>(client, namespace, Kind::Lease, &versions),
        ];
        Self { versions, tasks }
    }

    /// Every version so far, ordered by resourceVersion, without duplicates (a relist
    /// after a broken watch repeats the versions it had already delivered).
    pub fn versions(&self) -> Vec<Version> {
        let mut all = self.versions.lock().unwrap().clone();
        all.sort_by_key(|v| (v.rv, v.kind, v.name.clone(), v.object.is_none()));
        all.dedup_by(|b, a| a.rv == b.rv && a.kind == b.kind && a.name == b.name);
        all
    }

    /// The highest resourceVersion seen for `kind`/`name`.
    pub fn latest_rv(&self, kind: Kind, name: &str) -> Option<u64> {
        self.versions
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v.kind == kind && v.name == name)
            .map(|v| v.rv)
            .max()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn watch<K>(
    client: &Client,
    namespace: &str,
    kind: Kind,
    versions: &Arc<Mutex<Vec<Version>>>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let versions = versions.clone();
    tokio::spawn(async move {
        let mut events =
            std::pin::pin!(watcher(api.clone(), watcher::Config::default()).default_backoff());
        // The objects the recorder holds as alive, and, during a relist, the ones the
        // relist has shown so far.
        let mut alive: HashSet<String> = HashSet::new();
        let mut relisted: Option<HashSet<String>> = None;
        while let Some(event) = events.next().await {
            let (object, deleted) = match event {
                Ok(watcher::Event::Apply(o)) => (o, false),
                Ok(watcher::Event::InitApply(o)) => {
                    if let Some(seen) = relisted.as_mut() {
                        seen.insert(o.meta().name.clone().unwrap_or_default());
                    }
                    (o, false)
                }
                Ok(watcher::Event::Delete(o)) => (o, true),
                Ok(watcher::Event::Init) => {
                    relisted = Some(HashSet::new());
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    let seen = relisted.take().unwrap_or_default();
                    let gone: Vec<String> = alive.difference(&seen).cloned().collect();
                    if !gone.is_empty() {
                        infer_deletions(&api, kind, gone, &mut alive, &versions).await;
                    }
                    continue;
                }
                // Errors are retried by the backoff.
                Err(_) => continue,
            };
            let meta = object.meta();
            let Some(rv) = meta
                .resource_version
                .as_deref()
                .and_then(|rv| rv.parse().ok())
            else {
                continue;
            };
            let name = meta.name.clone().unwrap_or_default();
            if deleted {
                alive.remove(&name);
            } else {
                alive.insert(name.clone());
            }
            let version = Version {
                kind,
                name,
                rv,
                at: Timestamp::now(),
                object: (!deleted).then(|| serde_json::to_value(&object).unwrap()),
            };
            versions.lock().unwrap().push(version);
        }
    })
}

/// Records the deletion of objects that a relist no longer shows: they were deleted
/// while the watch was broken, and the watch never delivers such a deletion. The
/// deletion's own resourceVersion is unknown; it is at most the resourceVersion of a
/// list made now, and it happened at most now, so it is recorded at both. A deletion
/// moves routing towards legacy, never forward, so a late record can make a rollback
/// look slower, never hide a move that came too early.
async fn infer_deletions<K>(
    api: &Api<K>,
    kind: Kind,
    gone: Vec<String>,
    alive: &mut HashSet<String>,
    versions: &Arc<Mutex<Vec<Version>>>,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let mut upper = None;
    for _ in 0..50 {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(list) => {
                upper = list
                    .metadata
                    .resource_version
                    .and_then(|rv| rv.parse::<u64>().ok());
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    let Some(rv) = upper else {
        eprintln!("recorder: {kind:?} {gone:?} vanished in a relist; no list bounds when");
        return;
    };
    let at = Timestamp::now();
    let mut recorded = versions.lock().unwrap();
    for name in gone {
        alive.remove(&name);
        recorded.push(Version {
            kind,
            name,
            rv,
            at,
            object: None,
        });
    }
}
