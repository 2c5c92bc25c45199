//! Alert work first: routine API calls wait while the alert lane acts on a firing alert.
//!
//! The lane has slots of its own (`lane.rs`), but its API calls still shared the API
//! server with the 32 routine reconciles and the plan controller, and while 1,000 waves
//! progress that server is the bottleneck: each of the lane's round trips waited behind
//! routine ones, and a rollback took about a second (docs/design-decisions.md, "Alert
//! lane"). So the controllers talk to the API server through a *routine* client that
//! starts no new request while [`Priority::urgent`] is held; the lane uses the plain
//! client. Requests already on the wire finish; watches that are open stay open.
//!
//! The hold is bounded ([`MAX_HOLD`]): a flood of alerts slows routine work, never stops
//! it. Leader election has its own client and is never held.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use kube::Client;
use tokio::sync::Notify;

/// The longest a routine request waits for the lane: one lane reconcile is a few round
/// trips, and a routine request should not wait for many in a row.
pub const MAX_HOLD: Duration = Duration::from_millis(500);

/// Whether alert work is in flight. Cheap to clone.
#[derive(Clone, Default)]
pub struct Priority {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    urgent: AtomicUsize,
    cleared: Notify,
}

/// Held while the lane acts; routine requests start again when the last one drops.
pub struct Urgent {
    inner: Arc<Inner>,
}

impl Drop for Urgent {
    fn drop(&mut self) {
        if self.inner.urgent.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.cleared.notify_waiters();
        }
    }
}

impl Priority {
    /// Marks alert work in flight until the guard drops.
    pub fn urgent(&self) -> Urgent {
        self.inner.urgent.fetch_add(1, Ordering::AcqRel);
        Urgent {
            inner: self.inner.clone(),
        }
    }

    fn is_urgent(&self) -> bool {
        self.inner.urgent.load(Ordering::Acquire) > 0
    }

    /// Resolves once no alert work is in flight, or after `max`, whichever is first.
    pub async fn routine_may_start(&self, max: Duration) {
        let cleared = self.inner.cleared.notified();
        tokio::pin!(cleared);
        // Registered before the check, so a clearing in between is not missed.
        cleared.as_mut().enable();
        if !self.is_urgent() {
            return;
        }
        let _ = tokio::time::timeout(max, cleared).await;
    }

    /// A client that waits [`Self::routine_may_start`] before each request it sends
    /// through `client`.
    pub fn routine_client(&self, client: Client) -> Client {
        let namespace = client.default_namespace().to_owned();
        let priority = self.clone();
        let service = tower::service_fn(move |request| {
            let (client, priority) = (client.clone(), priority.clone());
            async move {
                priority.routine_may_start(MAX_HOLD).await;
                client.send(request).await
            }
        });
        Client::new(service, namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routine_work_starts_when_the_last_urgent_guard_drops() {
        let priority = Priority::default();
        tokio::time::timeout(Duration::from_secs(5), priority.routine_may_start(MAX_HOLD))
            .await
            .expect("nothing urgent: routine work starts at once");
        let (first, second) = (priority.urgent(), priority.urgent());
        let waiting = tokio::spawn({
            let priority = priority.clone();
            async move { priority.routine_may_start(Duration::from_secs(3600)).await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one alert is still being acted on");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("routine work starts once no alert work is left")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn routine_work_is_held_for_at_most_the_bound() {
        let priority = Priority::default();
        let _stuck = priority.urgent();
        let started = tokio::time::Instant::now();
        priority.routine_may_start(MAX_HOLD).await;
        assert_eq!(started.elapsed(), MAX_HOLD);
    }
}
