//! The alert lane: a firing alert's wave is reconciled at once, not behind routine work.
//!
//! The wave controller runs at most `max_concurrent_reconciles` reconciles, and while
//! many waves progress (each one writing routing and status) a wave woken by an alert
//! waited in its queue behind them (docs/design-decisions.md, "Alert lane"). The lane
//! takes the alert store's wake-ups itself and runs the same reconcile (observe →
//! decide → apply → record, the engine's decision and nothing else) for each matching
//! wave right away, on a few slots of its own.
//!
//! - One reconcile per wave at a time: the lane and the controller take the wave's
//!   [`WaveLocks`] entry around every reconcile. A routine reconcile of the wave that
//!   holds it when an alert comes stops at its next check, before any further write
//!   (its observing is abandoned, a write in flight is finished), and requeues: so the
//!   lane waits for at most one API call, not for a reconcile slowed by a busy API
//!   server.
//! - Fresh reads: the lane reads the wave from the API server, not from the cache, which
//!   may not show the controller's last write yet; and the controller's next reconcile
//!   of a wave the lane wrote reads it afresh too, for the same reason.
//! - Nothing is lost: a wake-up the lane cannot take at once (its slots are busy, the
//!   reconcile failed) goes to the controller's queue, with its backoff. [`Wake::All`]
//!   (wake-ups were lost, or the set of alerts was rebuilt) goes there too, for every
//!   wave with `alerts`: the controller's queue merges repeats.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::{Api, core::PartialObjectMeta, runtime::reflector::ObjectRef};
use tokio::sync::{Notify, OwnedMutexGuard, Semaphore, mpsc};
use tracing::debug;

use super::{Context, errors::ErrorCategory, priority::Priority};
use crate::alerts::{Wake, acts_on};
use crate::api::{CutoverPlan, MigrationWave};
use crate::routing::{HTTPRoute, RouteRead};

/// How many alert-woken reconciles the lane runs at once, beside the controller's.
pub const LANE_SLOTS: usize = 8;

type Key = (String, String);

fn key_of(wave: &ObjectRef<MigrationWave>) -> Key {
    (
        wave.namespace.clone().unwrap_or_default(),
        wave.name.clone(),
    )
}

/// One lock per wave, shared by the lane and the controller, so that a wave is never
/// reconciled by both at once. Entries live only while someone holds or waits for them.
#[derive(Default)]
pub struct WaveLocks {
    locks: Mutex<HashMap<Key, Arc<Entry>>>,
    /// Waves whose cached copy may predate a write: the lane wrote them, or the
    /// controller's last reconcile of them hit a conflict, since the controller last
    /// read them afresh.
    stale: Mutex<HashSet<Key>>,
}

/// One wave's lock, and the lane's request that whoever holds it yield.
#[derive(Default)]
struct Entry {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// One lane reconcile of the wave at a time (two alerts for one wave).
    lane: Arc<tokio::sync::Mutex<()>>,
    /// Lane reconciles of this wave waiting or running: while there is one, a routine
    /// reconcile stops at its next check.
    wanted: AtomicUsize,
    wanted_now: Notify,
}

/// A held [`WaveLocks`] entry; released on drop.
pub struct WaveGuard {
    locks: Arc<WaveLocks>,
    key: Key,
    entry: Arc<Entry>,
    /// None when the lane went ahead without the routine holder (see
    /// [`WaveLocks::lock_for_alert`]).
    guard: Option<OwnedMutexGuard<()>>,
    /// Held by the lane's guards only.
    lane: Option<OwnedMutexGuard<()>>,
}

impl WaveGuard {
    /// Whether the alert lane waits for this wave: a routine reconcile should stop
    /// before its next write and let the lane decide on the alert.
    pub fn yield_requested(&self) -> bool {
        self.lane.is_none() && self.entry.wanted.load(Ordering::Acquire) > 0
    }

    /// Resolves when the alert lane asks for this wave (never for the lane itself). Only
    /// for steps that write nothing (observing), which may be abandoned at any point.
    pub async fn yield_requested_now(&self) {
        if self.lane.is_some() {
            return std::future::pending().await;
        }
        let notified = self.entry.wanted_now.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.yield_requested() {
            return;
        }
        notified.await;
    }
}

impl Drop for WaveGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        if self.lane.take().is_some() {
            self.entry.wanted.fetch_sub(1, Ordering::AcqRel);
        }
        let mut locks = self.locks.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map and this guard hold it now: nobody waits for this wave.
        if locks
            .get(&self.key)
            .is_some_and(|entry| Arc::strong_count(entry) == 2)
        {
            locks.remove(&self.key);
        }
    }
}

/// How long the lane waits for a routine reconcile to let go of the wave before it goes
/// ahead anyway. One that is observing lets go at once; one that has decided finishes
/// its writes first, and under a busy API server that took up to a second.
pub const TAKEOVER_AFTER: std::time::Duration = std::time::Duration::from_millis(25);

impl WaveLocks {
    fn entry(&self, key: &Key) -> Arc<Entry> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Waits for the wave's lock (the controller's way).
    pub async fn lock(self: &Arc<Self>, wave: &ObjectRef<MigrationWave>) -> WaveGuard {
        let key = key_of(wave);
        let entry = self.entry(&key);
        let guard = entry.lock.clone().lock_owned().await;
        WaveGuard {
            locks: self.clone(),
            key,
            entry,
            guard: Some(guard),
            lane: None,
        }
    }

    /// Takes the wave for the alert lane. A routine reconcile that holds it is asked to
    /// stop before its next write; one that has already decided may still be writing,
    /// and after [`TAKEOVER_AFTER`] the lane goes ahead beside it. That is safe because
    /// every write carries the resourceVersion it was decided from: of the two, the one
    /// that lands second on the same object is refused with a conflict, and the lane
    /// re-reads and decides again. While the lane's guard lives, every routine reconcile
    /// of the wave stops at its first check, so at most the writes of the one decided
    /// before the alert overlap the lane's.
    pub async fn lock_for_alert(self: &Arc<Self>, wave: &ObjectRef<MigrationWave>) -> WaveGuard {
        let key = key_of(wave);
        let entry = self.entry(&key);
        let lane = entry.lane.clone().lock_owned().await;
        entry.wanted.fetch_add(1, Ordering::AcqRel);
        entry.wanted_now.notify_waiters();
        let guard = tokio::time::timeout(TAKEOVER_AFTER, entry.lock.clone().lock_owned())
            .await
            .ok();
        WaveGuard {
            locks: self.clone(),
            key,
            entry,
            guard,
            lane: Some(lane),
        }
    }

    fn stale(&self) -> std::sync::MutexGuard<'_, HashSet<Key>> {
        self.stale.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the controller's next reconcile of the wave must read it afresh (see
    /// [`WaveLocks::read_fresh_next`]); clears it.
    pub fn take_read_fresh(&self, wave: &ObjectRef<MigrationWave>) -> bool {
        self.stale().remove(&key_of(wave))
    }

    /// The controller's next reconcile of the wave reads it from the API server, not the
    /// cache. After a conflict: the retry must decide from a version at least as new as
    /// the one that refused the write, and a cache behind a busy API server can lag by
    /// seconds, so retrying from it conflicted again and again, each retry waiting twice
    /// as long (up to 30 s), while the wave's analysis waited too.
    pub fn read_fresh_next(&self, wave: &ObjectRef<MigrationWave>) {
        self.stale().insert(key_of(wave));
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.locks.lock().unwrap().len()
    }
}

/// Reads the wave afresh from the API server; None when it is gone.
pub(super) async fn read_fresh(
    ctx: &Context,
    wave: &ObjectRef<MigrationWave>,
) -> Result<Option<MigrationWave>, kube::Error> {
    let api: Api<MigrationWave> = Api::namespaced(
        ctx.client.clone(),
        wave.namespace.as_deref().unwrap_or_default(),
    );
    api.get_opt(&wave.name).await
}

/// A Service's metadata as read, or the failed read.
pub(super) type ServiceRead = Result<Option<PartialObjectMeta<Service>>, kube::Error>;

/// Reads the lane makes beside the wave's own, each a round trip saved on the alert's
/// path: the plan (a wave's plan is immutable, so the cached wave names it), the
/// wave's HTTPRoute, which a rollback deletes on condition that it is still the version
/// read, and the Services its plan named last time ([`BackendHints`]).
#[derive(Default)]
pub(super) struct Prefetched {
    plan: Option<(String, Result<Option<CutoverPlan>, kube::Error>)>,
    route: Option<RouteRead>,
    services: HashMap<String, ServiceRead>,
}

/// The Services each plan's waves needed at their last reconcile, by namespace and
/// plan: the lane reads them beside the wave, before the fresh plan says which it
/// needs. A guess only: the reconcile reads any Service it needs and was not read.
#[derive(Default)]
pub(crate) struct BackendHints {
    hints: Mutex<HashMap<Key, Vec<String>>>,
}

impl BackendHints {
    /// Plans remembered at most; past it the memory starts again.
    const MAX_PLANS: usize = 10_000;

    fn hints(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<String>>> {
        self.hints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Services a reconcile of a wave of `plan` needed.
    pub(super) fn remember(&self, namespace: &str, plan: &str, services: Vec<String>) {
        let key = (namespace.to_owned(), plan.to_owned());
        let mut hints = self.hints();
        if hints.get(&key) == Some(&services) {
            return;
        }
        if hints.len() >= Self::MAX_PLANS && !hints.contains_key(&key) {
            hints.clear();
        }
        hints.insert(key, services);
    }

    fn of(&self, namespace: &str, plan: &str) -> Vec<String> {
        self.hints()
            .get(&(namespace.to_owned(), plan.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

impl Prefetched {
    /// The plan read, if it was read and is `name`; the reconcile reads it otherwise.
    pub(super) fn take_plan(
        &mut self,
        name: &str,
    ) -> Option<Result<Option<CutoverPlan>, kube::Error>> {
        self.plan
            .take()
            .filter(|(read, _)| read == name)
            .map(|(_, result)| result)
    }

    /// The route's read, if it was read; the router reads it otherwise.
    pub(super) fn take_route(&mut self) -> Option<RouteRead> {
        self.route.take()
    }

    /// Service `name`'s read, if it was read; the reconcile reads it otherwise.
    pub(super) fn take_service(&mut self, name: &str) -> Option<ServiceRead> {
        self.services.remove(name)
    }
}

/// Reads the wave and, at the same time, its plan and its HTTPRoute, all afresh.
async fn read_prefetching(
    ctx: &Context,
    wave: &ObjectRef<MigrationWave>,
) -> (Result<Option<MigrationWave>, kube::Error>, Prefetched) {
    let cached = ctx.waves.as_ref().and_then(|waves| waves.get(wave));
    let Some(plan) = cached.map(|cached| cached.spec.plan.clone()) else {
        return (read_fresh(ctx, wave).await, Prefetched::default());
    };
    let namespace = wave.namespace.as_deref().unwrap_or_default();
    let plans: Api<CutoverPlan> = Api::namespaced(ctx.client.clone(), namespace);
    let routes: Api<HTTPRoute> = Api::namespaced(ctx.client.clone(), namespace);
    let route_name = crate::routing::gateway::route_name(&wave.name);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let service_names = ctx.backend_hints.of(namespace, &plan);
    let (read, plan_read, route_read, service_reads) = tokio::join!(
        read_fresh(ctx, wave),
        plans.get_opt(&plan),
        routes.get_metadata_opt(&route_name),
        futures::future::join_all(
            service_names
                .iter()
                .map(|name| services.get_metadata_opt(name))
        )
    );
    (
        read,
        Prefetched {
            plan: Some((plan, plan_read)),
            route: Some(route_read),
            services: service_names.into_iter().zip(service_reads).collect(),
        },
    )
}

/// Takes `wakes` until it ends: reconciles each matching wave at once when a slot is
/// free, else hands it to the controller through `to_controller`.
pub(super) async fn run(
    wakes: impl Stream<Item = Wake> + Send + 'static,
    waves: kube::runtime::reflector::Store<MigrationWave>,
    ctx: Arc<Context>,
    priority: Priority,
    to_controller: mpsc::UnboundedSender<ObjectRef<MigrationWave>>,
) {
    let locks = ctx.locks.clone();
    let slots = Arc::new(Semaphore::new(LANE_SLOTS));
    let mut wakes = std::pin::pin!(wakes);
    while let Some(wake) = wakes.next().await {
        let woken = waves.state().into_iter().filter(|wave| {
            let namespace = wave.metadata.namespace.as_deref().unwrap_or_default();
            wave.spec.alerts.as_ref().is_some_and(|spec| match &wake {
                Wake::All => true,
                Wake::Alerts(batch) => batch.iter().any(|alert| acts_on(spec, namespace, alert)),
            })
        });
        for wave in woken {
            let reference = ObjectRef::from_obj(&*wave);
            let slot = match &wake {
                Wake::Alerts(_) => slots.clone().try_acquire_owned().ok(),
                Wake::All => None,
            };
            let Some(slot) = slot else {
                let _ = to_controller.send(reference);
                continue;
            };
            let (ctx, locks, priority, to_controller) = (
                ctx.clone(),
                locks.clone(),
                priority.clone(),
                to_controller.clone(),
            );
            tokio::spawn(async move {
                let _slot = slot;
                if !reconcile_now(&reference, &ctx, &locks, &priority).await {
                    let _ = to_controller.send(reference);
                }
            });
        }
    }
}

/// The lane's reconcile of one wave; false when the controller should take it instead.
async fn reconcile_now(
    reference: &ObjectRef<MigrationWave>,
    ctx: &Arc<Context>,
    locks: &Arc<WaveLocks>,
    priority: &Priority,
) -> bool {
    if !ctx.is_leader() {
        return true;
    }
    if ctx.waves.as_ref().is_some_and(|waves| !waves.is_synced()) {
        // The controller waits for its cache and retries.
        return false;
    }
    let guard = locks.lock_for_alert(reference).await;
    // Once the wave is ours (or taken over): a routine reconcile that holds it may
    // have a write to finish, which is on the wire already.
    let _urgent = priority.urgent();
    for attempt in 1..=CONFLICT_ATTEMPTS {
        let (read, prefetched) = read_prefetching(ctx, reference).await;
        let wave = match read {
            Ok(Some(wave)) => wave,
            Ok(None) => return true,
            Err(err) => {
                debug!(wave = %reference.name, error = %err, "alert lane: could not read the wave; the controller takes it");
                return false;
            }
        };
        locks.read_fresh_next(reference);
        match super::wave::reconcile_locked(Arc::new(wave), ctx.clone(), &guard, prefetched).await {
            Ok(_) => return true,
            // A write of the reconcile the lane took over landed first: decide again
            // from what it wrote, at once.
            Err(err)
                if err.category() == ErrorCategory::Conflict && attempt < CONFLICT_ATTEMPTS =>
            {
                debug!(wave = %reference.name, error = %err, attempt, "alert lane: conflict; deciding again");
            }
            Err(err) => {
                debug!(wave = %reference.name, error = %err, "alert lane: the reconcile failed; the controller retries it with backoff");
                return false;
            }
        }
    }
    false
}

/// How many times the lane decides again after a conflict before it leaves the wave to
/// the controller's backoff. The reconcile it took over writes at most a few objects.
const CONFLICT_ATTEMPTS: u32 = 4;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn backend_hints_follow_the_last_reconcile_of_each_plan_and_stay_bounded() {
        let hints = BackendHints::default();
        assert!(
            hints.of("ns", "crm").is_empty(),
            "nothing known: nothing read ahead"
        );
        hints.remember("ns", "crm", vec!["legacy".into(), "target".into()]);
        hints.remember("other", "crm", vec!["x".into()]);
        assert_eq!(hints.of("ns", "crm"), ["legacy", "target"]);
        hints.remember("ns", "crm", vec!["legacy".into(), "target-v2".into()]);
        assert_eq!(hints.of("ns", "crm"), ["legacy", "target-v2"]);
        assert_eq!(hints.of("other", "crm"), ["x"]);
        for i in 0..BackendHints::MAX_PLANS + 1 {
            hints.remember("ns", &format!("p{i}"), vec![]);
        }
        assert!(hints.hints().len() <= BackendHints::MAX_PLANS);
    }

    #[tokio::test]
    async fn a_wave_is_reconciled_by_one_holder_at_a_time_and_its_entry_goes_with_the_last() {
        let locks = Arc::new(WaveLocks::default());
        let wave = ObjectRef::<MigrationWave>::new("w").within("ns");
        let other = ObjectRef::<MigrationWave>::new("v").within("ns");
        let held = locks.lock(&wave).await;
        // Another wave is not blocked.
        drop(locks.lock(&other).await);
        let waiting = tokio::spawn({
            let (locks, wave) = (locks.clone(), wave.clone());
            async move { drop(locks.lock(&wave).await) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a second holder waits");
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiter gets the lock once it is released")
            .unwrap();
        assert_eq!(locks.held(), 0, "no entry outlives its holders");
    }

    #[tokio::test]
    async fn the_lane_asks_a_routine_holder_to_yield() {
        let locks = Arc::new(WaveLocks::default());
        let wave = ObjectRef::<MigrationWave>::new("w").within("ns");
        let routine = locks.lock(&wave).await;
        assert!(!routine.yield_requested());
        let lane = tokio::spawn({
            let (locks, wave) = (locks.clone(), wave.clone());
            async move { locks.lock_for_alert(&wave).await.yield_requested() }
        });
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            routine.yield_requested_now(),
        )
        .await
        .expect("the routine holder is told at once");
        assert!(routine.yield_requested());
        drop(routine);
        assert!(
            !lane.await.unwrap(),
            "the lane itself is not asked to yield"
        );
        assert_eq!(locks.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lane_takes_over_from_a_holder_that_is_still_writing() {
        let locks = Arc::new(WaveLocks::default());
        let wave = ObjectRef::<MigrationWave>::new("w").within("ns");
        let writing = locks.lock(&wave).await;
        let started = tokio::time::Instant::now();
        let lane = locks.lock_for_alert(&wave).await;
        assert_eq!(
            started.elapsed(),
            TAKEOVER_AFTER,
            "the lane waits that long, no longer"
        );
        assert!(writing.yield_requested(), "the holder is told to stop");
        assert!(!lane.yield_requested());
        drop(writing);
        // A routine reconcile that gets the wave while the lane acts stops at once.
        let next = locks.lock(&wave).await;
        assert!(next.yield_requested());
        tokio::time::timeout(Duration::from_secs(1), next.yield_requested_now())
            .await
            .expect("its observing is abandoned at once");
        drop(lane);
        assert!(!next.yield_requested(), "the lane is done with the wave");
        drop(next);
        assert_eq!(locks.held(), 0);
    }

    #[test]
    fn a_wave_marked_stale_is_read_afresh_once() {
        let locks = WaveLocks::default();
        let wave = ObjectRef::<MigrationWave>::new("w").within("ns");
        assert!(!locks.take_read_fresh(&wave));
        locks.read_fresh_next(&wave);
        assert!(
            locks.take_read_fresh(&wave),
            "the next reconcile reads afresh"
        );
        assert!(!locks.take_read_fresh(&wave), "and only the next one");
    }

    #[tokio::test]
    async fn two_lane_reconciles_of_one_wave_take_turns() {
        let locks = Arc::new(WaveLocks::default());
        let wave = ObjectRef::<MigrationWave>::new("w").within("ns");
        let first = locks.lock_for_alert(&wave).await;
        let second = tokio::spawn({
            let (locks, wave) = (locks.clone(), wave.clone());
            async move { drop(locks.lock_for_alert(&wave).await) }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "the second waits for the first");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("then it runs")
            .unwrap();
        assert_eq!(locks.held(), 0);
    }
}
