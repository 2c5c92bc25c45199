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
        atomic::{AtomicBool, Ordering},
    },
};

use futures::{Stream, StreamExt};
use kube::{Api, runtime::reflector::ObjectRef};
use tokio::sync::{Notify, OwnedMutexGuard, Semaphore, mpsc};
use tracing::debug;

use super::Context;
use crate::alerts::{Wake, acts_on};
use crate::api::MigrationWave;

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
    /// Waves the lane wrote since the controller last reconciled them.
    written_by_lane: Mutex<HashSet<Key>>,
}

/// One wave's lock, and the lane's request that whoever holds it yield.
#[derive(Default)]
struct Entry {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The lane waits for this wave: a routine reconcile stops at its next check.
    wanted: AtomicBool,
    wanted_now: Notify,
}

/// A held [`WaveLocks`] entry; released on drop.
pub struct WaveGuard {
    locks: Arc<WaveLocks>,
    key: Key,
    entry: Arc<Entry>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl WaveGuard {
    /// Whether the alert lane waits for this wave: a routine reconcile should stop
    /// before its next write and let the lane decide on the alert.
    pub fn yield_requested(&self) -> bool {
        self.entry.wanted.load(Ordering::Acquire)
    }

    /// Resolves when the alert lane asks for this wave. Only for steps that write
    /// nothing (observing), which may be abandoned at any point.
    pub async fn yield_requested_now(&self) {
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
        }
    }

    /// Takes the wave's lock for the alert lane: a routine reconcile that holds it is
    /// asked to stop before its next write (it writes nothing more and requeues), so the
    /// lane waits for at most one API call, not for a whole reconcile.
    pub async fn lock_for_alert(self: &Arc<Self>, wave: &ObjectRef<MigrationWave>) -> WaveGuard {
        let key = key_of(wave);
        let entry = self.entry(&key);
        entry.wanted.store(true, Ordering::Release);
        entry.wanted_now.notify_waiters();
        let guard = entry.lock.clone().lock_owned().await;
        entry.wanted.store(false, Ordering::Release);
        WaveGuard {
            locks: self.clone(),
            key,
            entry,
            guard: Some(guard),
        }
    }

    fn written_by_lane(&self) -> std::sync::MutexGuard<'_, HashSet<Key>> {
        self.written_by_lane
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lane reconciled the wave since the controller last did; clears it.
    pub fn take_lane_write(&self, wave: &ObjectRef<MigrationWave>) -> bool {
        self.written_by_lane().remove(&key_of(wave))
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

/// Takes `wakes` until it ends: reconciles each matching wave at once when a slot is
/// free, else hands it to the controller through `to_controller`.
pub(super) async fn run(
    wakes: impl Stream<Item = Wake> + Send + 'static,
    waves: kube::runtime::reflector::Store<MigrationWave>,
    ctx: Arc<Context>,
    locks: Arc<WaveLocks>,
    to_controller: mpsc::UnboundedSender<ObjectRef<MigrationWave>>,
) {
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
            let (ctx, locks, to_controller) = (ctx.clone(), locks.clone(), to_controller.clone());
            tokio::spawn(async move {
                let _slot = slot;
                if !reconcile_now(&reference, &ctx, &locks).await {
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
) -> bool {
    if !ctx.is_leader() {
        return true;
    }
    if ctx.waves.as_ref().is_some_and(|waves| !waves.is_synced()) {
        // The controller waits for its cache and retries.
        return false;
    }
    let guard = locks.lock_for_alert(reference).await;
    let wave = match read_fresh(ctx, reference).await {
        Ok(Some(wave)) => wave,
        Ok(None) => return true,
        Err(err) => {
            debug!(wave = %reference.name, error = %err, "alert lane: could not read the wave; the controller takes it");
            return false;
        }
    };
    locks.written_by_lane().insert(key_of(reference));
    match super::wave::reconcile_locked(Arc::new(wave), ctx.clone(), &guard).await {
        Ok(_) => true,
        Err(err) => {
            debug!(wave = %reference.name, error = %err, "alert lane: the reconcile failed; the controller retries it with backoff");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
