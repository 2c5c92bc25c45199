//! Retry delays for reconciles that failed transiently: exponential in the number of
//! failures in a row of the object, with random jitter, reset by a success.
//!
//! kube-runtime calls the error policy once per failure, with nothing of the failures
//! before; the counts live here, one per object, dropped at the object's next success.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use kube::runtime::controller::Action;

use super::ErrorCategory;

/// The delays after conflicts: the first within 150–300 ms, usually long enough for the
/// watch to bring the newer version into the cache and short enough not to be noticed;
/// doubling while they repeat (a cache that does not catch up), up to 30 s.
pub const CONFLICTS: Schedule = Schedule {
    first: Duration::from_millis(300),
    max: Duration::from_secs(30),
};

/// The delays: the n-th failure in a row waits a random time in
/// `[d/2, d]`, where `d = min(max, first * 2^(n-1))`. Half of each delay is random, so
/// that objects failing together (the API server restarting) do not retry in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The longest delay of the first retry.
    pub first: Duration,
    /// No delay is longer.
    pub max: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Schedule {
    /// The longest delay after `failures` failures in a row (at least 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay after `failures` failures in a row, for `unit` drawn uniformly from
    /// `[0, 1)`.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(failures);
        ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }
}

/// How many objects' failure counts are kept at most. Counts are dropped on success;
/// past this many failing objects, a new one starts at the first delay each time.
const MAX_TRACKED: usize = 100_000;

/// The failures in a row of each object, and the schedule of their retries.
#[derive(Debug, Default)]
pub struct Backoff {
    schedule: Schedule,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Retries on `schedule`.
    pub fn new(schedule: Schedule) -> Self {
        Self {
            schedule,
            failures: Mutex::default(),
        }
    }

    /// Counts a failure of `object` and returns how long to wait before its retry.
    pub fn failed(&self, object: &str) -> Duration {
        self.schedule
            .delay(self.count(object), rand::random::<f64>())
    }

    /// Counts a failure of `object`; returns its failures in a row.
    fn count(&self, object: &str) -> u32 {
        let mut all = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let full = all.len() >= MAX_TRACKED;
        match all.get_mut(object) {
            Some(count) => {
                *count = count.saturating_add(1);
                *count
            }
            None if full => 1,
            None => {
                all.insert(object.to_owned(), 1);
                1
            }
        }
    }

    /// What to do after a failed reconcile of `object`: a conflict decides again soon,
    /// from a fresher version (on [`CONFLICTS`]); a permanent error waits for a change
    /// of the object (the watches wake it); any other failure retries on the schedule.
    pub fn after_failure(&self, object: &str, category: ErrorCategory) -> Action {
        if category.is_permanent() {
            return Action::await_change();
        }
        let failures = self.count(object);
        let schedule = if category == ErrorCategory::Conflict {
            CONFLICTS
        } else {
            self.schedule
        };
        Action::requeue(schedule.delay(failures, rand::random::<f64>()))
    }

    /// `object` reconciled: its next failure starts the schedule again.
    pub fn succeeded(&self, object: &str) {
        let mut all = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if !all.is_empty() {
            all.remove(object);
        }
    }

    /// The failures in a row of `object`.
    pub fn failures(&self, object: &str) -> u32 {
        let all = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        all.get(object).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_bound() {
        let schedule = Schedule::default();
        let ceilings: Vec<u64> = (1..=11).map(|n| schedule.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(schedule.ceiling(u32::MAX), schedule.max, "no overflow");
        assert_eq!(schedule.ceiling(0), schedule.first);
    }

    #[test]
    fn the_jitter_spans_the_upper_half_of_the_ceiling() {
        let schedule = Schedule::default();
        assert_eq!(schedule.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(schedule.delay(3, 0.5), Duration::from_secs(3));
        assert!(schedule.delay(3, 0.999_999) < Duration::from_secs(4));
        assert_eq!(schedule.delay(3, 7.0), Duration::from_secs(4), "clamped");
    }

    #[test]
    fn delays_grow_are_random_within_range_and_reset_on_success() {
        let backoff = Backoff::default();
        let schedule = Schedule::default();
        for n in 1..=12 {
            let delay = backoff.failed("ns/a");
            let ceiling = schedule.ceiling(n);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "failure {n}: {delay:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        assert_eq!(backoff.failures("ns/a"), 12);
        assert_eq!(backoff.failures("ns/b"), 0, "counts are per object");
        backoff.succeeded("ns/a");
        assert_eq!(backoff.failures("ns/a"), 0);
        assert!(backoff.failed("ns/a") <= schedule.first, "starts over");

        // Real randomness: many draws of one step are not all equal.
        let draws: std::collections::HashSet<Duration> = (0..50)
            .map(|_| {
                backoff.succeeded("ns/c");
                backoff.failed("ns/c");
                backoff.failed("ns/c")
            })
            .collect();
        assert!(draws.len() > 10, "{} distinct delays in 50", draws.len());
    }

    #[test]
    fn conflicts_retry_soon_and_permanent_errors_wait_for_a_change() {
        let backoff = Backoff::default();
        assert_eq!(
            backoff.after_failure("ns/a", ErrorCategory::InvalidSpec),
            Action::await_change()
        );
        assert_eq!(backoff.failures("ns/a"), 0, "waiting is not a retry");
        // A first conflict retries within 150-300 ms.
        assert_ne!(
            backoff.after_failure("ns/a", ErrorCategory::Conflict),
            Action::await_change()
        );
        assert_eq!(backoff.failures("ns/a"), 1);
        assert_eq!(CONFLICTS.delay(1, 0.0), Duration::from_millis(150));
        assert_eq!(CONFLICTS.delay(1, 1.0), Duration::from_millis(300));
        // Repeated ones slow down, bounded.
        for _ in 0..20 {
            backoff.after_failure("ns/a", ErrorCategory::Conflict);
        }
        assert_eq!(CONFLICTS.ceiling(backoff.failures("ns/a")), CONFLICTS.max);
        backoff.succeeded("ns/a");
        backoff.after_failure("ns/a", ErrorCategory::Api);
        backoff.after_failure("ns/a", ErrorCategory::Routing);
        assert_eq!(backoff.failures("ns/a"), 2);
    }

    #[test]
    fn the_counts_are_bounded() {
        let backoff = Backoff::default();
        backoff
            .failures
            .lock()
            .unwrap()
            .extend((0..MAX_TRACKED).map(|i| (i.to_string(), 1)));
        backoff.failed("new");
        backoff.failed("new");
        assert_eq!(backoff.failures("new"), 0, "not tracked past the bound");
        assert_eq!(backoff.failures.lock().unwrap().len(), MAX_TRACKED);
    }
}
