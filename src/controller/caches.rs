//! The controllers' caches, and whether they hold the cluster's state yet.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use futures::{Stream, StreamExt};
use kube::{
    Api, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ReflectHandle, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// What a watch yields.
type WatchEvent<K> = Result<watcher::Event<K>, watcher::Error>;

/// Whether the controllers' caches hold the cluster's state: true once every cache has
/// finished its first list.
#[derive(Debug, Default)]
pub struct Readiness {
    expected: AtomicUsize,
    synced: AtomicUsize,
}

impl Readiness {
    /// True once every cache of the running controllers has synced.
    pub fn is_ready(&self) -> bool {
        let expected = self.expected.load(Ordering::Acquire);
        expected > 0 && self.synced.load(Ordering::Acquire) >= expected
    }

    pub(crate) fn expect(&self, caches: usize) {
        self.expected.fetch_add(caches, Ordering::AcqRel);
    }

    pub(crate) fn mark_synced(&self) {
        self.synced.fetch_add(1, Ordering::AcqRel);
    }
}

/// A cache of objects, and whether its first complete list is in.
#[derive(Clone)]
pub(crate) struct Cache<K: kube::Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    synced: watch::Receiver<bool>,
}

impl<K: kube::Resource + Clone + 'static> Cache<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The cached objects.
    pub(crate) fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// The cached object `reference`, if any.
    pub(crate) fn get(&self, reference: &reflector::ObjectRef<K>) -> Option<Arc<K>> {
        self.store.get(reference)
    }

    /// The store itself, for a controller.
    pub(crate) fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Whether the cache holds a complete list; before that it may hold none.
    pub(crate) fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// One item when the cache first holds a complete list.
    pub(crate) fn first_synced(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut synced = self.synced.clone();
        futures::stream::once(async move { synced.wait_for(|synced| *synced).await.is_ok() })
            .filter_map(|synced| async move { synced.then_some(()) })
    }
}

/// A watch of `api` into a cache: the cache, and the watch events it has applied. The
/// cache's first complete list marks it synced, and counts it in `readiness`.
///
/// Readiness is read from the events rather than from `Store::wait_until_ready`, whose
/// future wakes only the latest of its waiters, and a controller's runner waits on it.
pub(crate) fn cache<K>(
    api: Api<K>,
    readiness: Arc<Readiness>,
) -> (Cache<K>, impl Stream<Item = WatchEvent<K>> + Send + 'static)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let (synced, mark) = synced_on_first_list(readiness);
    let events = reflector::reflector(writer, watch_stripped(api)).inspect(mark);
    (Cache { store, synced }, events)
}

/// The watch of `api`, with client-go's backoff after errors. managedFields are a large
/// share of each object and nothing here reads them: they are dropped.
fn watch_stripped<K>(api: Api<K>) -> impl Stream<Item = WatchEvent<K>> + Send
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|object| {
            object.managed_fields_mut().clear();
        })
}

/// Whether a cache holds its first complete list, and the inspector of its watch events
/// that sets it and counts the cache in `readiness`.
fn synced_on_first_list<K>(
    readiness: Arc<Readiness>,
) -> (
    watch::Receiver<bool>,
    impl FnMut(&WatchEvent<K>) + Send + 'static,
) {
    let (first_list, synced) = watch::channel(false);
    let mark = move |event: &WatchEvent<K>| {
        if matches!(event, Ok(watcher::Event::InitDone)) && !first_list.send_replace(true) {
            readiness.mark_synced();
        }
    };
    (synced, mark)
}

/// How many changes a shared cache holds for its slowest subscriber before its watch
/// waits for that subscriber (the controllers take them into their queues at once).
const SHARED_BUFFER: usize = 1024;

/// One watch of `api` into one cache that several controllers read: the cache, a
/// subscription per controller (each yields every object the watch applies), and the
/// watch events, which someone must drive for any of it to move.
///
/// Two controllers that each watched the same kind would hold every object twice.
pub(crate) fn shared_cache<K, const SUBSCRIBERS: usize>(
    api: Api<K>,
    readiness: Arc<Readiness>,
) -> (
    Cache<K>,
    [ReflectHandle<K>; SUBSCRIBERS],
    impl Stream<Item = WatchEvent<K>> + Send + 'static,
)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store_shared(SHARED_BUFFER);
    let handles = std::array::from_fn(|_| {
        writer
            .subscribe()
            .expect("a shared store's writer can be subscribed to")
    });
    let (synced, mark) = synced_on_first_list(readiness);
    let events = reflector::reflector(writer, watch_stripped(api)).inspect(mark);
    (Cache { store, synced }, handles, events)
}
