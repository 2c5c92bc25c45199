//! When each wave's HTTPRoute appeared and was deleted, as a watch saw it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use futures::StreamExt;
use kube::{
    Api,
    api::DynamicObject,
    runtime::{WatchStreamExt, watcher},
};

/// Routes of the bench's waves are `switchyard-<prefix><i>`.
const ROUTE_PREFIX: &str = "switchyard-w";

#[derive(Clone, Default)]
pub struct RouteLog {
    added: Arc<Mutex<Vec<usize>>>,
    deleted: Arc<Mutex<HashMap<String, Instant>>>,
    /// Routes that exist, and whether the gateway has written its status to each (it
    /// has processed it).
    live: Arc<Mutex<HashMap<String, bool>>>,
}

impl RouteLog {
    /// Watches `routes` from now on, for as long as the bench runs. A watcher (not a
    /// single watch call) because the API server ends each watch after about five
    /// minutes, and a deletion after that must still be seen.
    pub fn watch(routes: Api<DynamicObject>) -> Self {
        let log = Self::default();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut known = HashSet::new();
            let mut events = watcher(routes, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(route) | watcher::Event::InitApply(route)) => {
                        let name = route.metadata.name.clone().unwrap_or_default();
                        let parents = &route.data["status"]["parents"];
                        let processed = parents.as_array().is_some_and(|p| !p.is_empty());
                        sink.live.lock().unwrap().insert(name.clone(), processed);
                        if known.insert(name.clone()) {
                            sink.added(&name);
                        }
                    }
                    Ok(watcher::Event::Delete(route)) => {
                        let name = route.metadata.name.unwrap_or_default();
                        sink.live.lock().unwrap().remove(&name);
                        sink.deleted(name)
                    }
                    Ok(_) => {}
                    Err(err) => eprintln!("route watch: {err}"),
                }
            }
        });
        log
    }

    fn added(&self, route: &str) {
        if let Some(i) = route
            .strip_prefix(ROUTE_PREFIX)
            .and_then(|i| i.parse().ok())
        {
            self.added.lock().unwrap().push(i);
        }
    }

    fn deleted(&self, route: String) {
        self.deleted.lock().unwrap().insert(route, Instant::now());
    }

    /// Routes that exist and have no status from the gateway yet.
    pub fn unprocessed(&self) -> usize {
        self.live.lock().unwrap().values().filter(|p| !**p).count()
    }

    pub fn routed(&self) -> usize {
        self.added.lock().unwrap().len()
    }

    /// Routed waves not sampled and not rolled back, in the order they were routed: the
    /// gateway applies routes in that order, and some time after they are written.
    pub fn routed_waves(&self, sampled: &HashSet<usize>) -> Vec<usize> {
        let deleted = self.deleted.lock().unwrap();
        self.added
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|i| !sampled.contains(i) && !deleted.contains_key(&route_name(*i)))
            .collect()
    }

    pub fn deleted_at(&self, route: &str) -> Option<Instant> {
        self.deleted.lock().unwrap().get(route).copied()
    }
}

pub fn route_name(i: usize) -> String {
    format!("{ROUTE_PREFIX}{i}")
}
