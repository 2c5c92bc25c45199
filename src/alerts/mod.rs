//! Alerts pushed by Alertmanager: the set of alerts firing now, and the webhook
//! receiver that keeps it up to date.
//!
//! The receiver only records alerts and wakes the controller for the waves they
//! match; the engine decides what a firing alert does to a wave (`alerts.onFiring`).
//! A resolved alert leaves the set and resumes nothing.
//!
//! Three rules keep one tenant's alerts, and a lost notification, from acting where they
//! should not:
//!
//! - **Scope.** An alert acts only on waves of the namespace its `namespace` label
//!   names (the Prometheus convention). An alert without one acts only on waves that set
//!   `alerts.acceptUnnamespaced`. See [`acts_on`].
//! - **Expiry.** A firing alert stops counting at its deadline: its `endsAt` when the
//!   sender set one, and never later than [`StoreLimits::ttl`] after the notification
//!   that last reported it. Alertmanager sends `endsAt` as the zero time for firing
//!   alerts, so with Alertmanager the TTL applies, renewed by every repeat
//!   (`repeat_interval`). A lost "resolved" therefore blocks a cohort for at most the
//!   TTL. Reads never return an expired alert; the controller is woken at each deadline
//!   ([`AlertStore::wakes`]), so that a wave held by the alert is looked at again.
//! - **Bounds.** At most [`StoreLimits::max_alerts`] alerts, at most
//!   [`StoreLimits::max_alerts_per_namespace`] of one namespace (alerts without a
//!   namespace share one bucket), and at most [`StoreLimits::max_labels`] labels and
//!   [`StoreLimits::max_label_bytes`] bytes of labels per alert. A new alert that does
//!   not fit is refused, never an old one evicted: evicting a firing alert would
//!   silently unblock its cohort, while a refusal is loud (the receiver answers 507, so
//!   that Alertmanager retries, and logs it) and leaves every recorded alert acting.
//!
//! Two more keep a wake-up, or a failover, from making the controller forget an alert:
//!
//! - **No lost wake-up.** Wake-ups go through a bounded broadcast channel. A subscriber
//!   that falls behind is told so, and [`AlertStore::wakes`] then yields [`Wake::All`]:
//!   every wave with `alerts` is looked at again, instead of the lost ones never.
//! - **Rebuilt at takeover.** Webhooks reach the leader only. A store made with
//!   [`AlertStore::rebuilt_at_takeover`] says its set is unknown
//!   ([`AlertStore::state_for`]) until [`rebuild`] has read Alertmanager's API for the
//!   current leadership term; meanwhile the engine holds forward moves.

pub mod rebuild;
pub mod receiver;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::Stream;
use jiff::Timestamp;
use serde::Deserialize;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::api::AlertSpec;
use crate::engine::{AlertState, FiringAlert};

/// How many wake-ups the broadcast channel holds for a subscriber that has not read them.
pub const DEFAULT_WAKE_CAPACITY: usize = 1024;

/// What changed, for the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// These alerts started firing, resolved or expired: the waves they act on.
    Alerts(Vec<FiringAlert>),
    /// Wake-ups were lost (a subscriber fell behind), or the whole set changed (rebuilt
    /// from Alertmanager): every wave with `alerts`.
    All,
}

impl Wake {
    /// The alerts of [`Wake::Alerts`]; none for [`Wake::All`].
    pub fn alerts(&self) -> &[FiringAlert] {
        match self {
            Wake::Alerts(alerts) => alerts,
            Wake::All => &[],
        }
    }
}

/// The label that names an alert's namespace (the Prometheus convention).
pub const NAMESPACE_LABEL: &str = "namespace";

/// Alertmanager's webhook payload (version 4). Unknown fields are ignored, so newer
/// Alertmanagers keep working.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    /// The payload version; Switchyard reads version 4.
    #[serde(default)]
    pub version: String,
    /// `firing` or `resolved`, for the group as a whole.
    #[serde(default)]
    pub status: String,
    /// The alerts of the notification.
    #[serde(default)]
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of a webhook notification.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// The alert's labels, `alertname` among them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the alert ends, RFC 3339. For a firing alert a lease: it stops counting
    /// then, unless a later notification reports it again. Alertmanager sends the zero
    /// time (`0001-01-01T00:00:00Z`), which means "unknown"; so does a value that does
    /// not parse, or is not a string.
    #[serde(default)]
    pub ends_at: Option<serde_json::Value>,
    /// Alertmanager's identity for the alert; derived from the labels when absent.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl WebhookAlert {
    /// The alert's namespace: its non-empty `namespace` label.
    pub fn namespace(&self) -> Option<&str> {
        label_namespace(&self.labels)
    }

    /// The store's key: the namespace, then Alertmanager's fingerprint (or the
    /// labels). With the namespace in the key, a notification about one namespace can
    /// never resolve or refresh an alert of another.
    fn key(&self) -> String {
        let identity = self.fingerprint.clone().unwrap_or_else(|| {
            self.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        });
        format!("{}/{identity}", self.namespace().unwrap_or_default())
    }

    /// `endsAt`, when it is set and means something.
    pub fn ends_at(&self) -> Option<Timestamp> {
        let ends_at: Timestamp = self.ends_at.as_ref()?.as_str()?.parse().ok()?;
        // Go's zero time, and anything before the Unix epoch, is "not set".
        (ends_at > Timestamp::UNIX_EPOCH).then_some(ends_at)
    }

    fn to_firing(&self) -> FiringAlert {
        FiringAlert {
            name: self.labels.get("alertname").cloned().unwrap_or_default(),
            labels: self.labels.clone(),
        }
    }

    /// The size of the labels as stored: names and values, in bytes.
    fn label_bytes(&self) -> usize {
        self.labels.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

fn label_namespace(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels
        .get(NAMESPACE_LABEL)
        .map(String::as_str)
        .filter(|namespace| !namespace.is_empty())
}

/// The bounds of the store, and how long a firing alert lasts without a repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// At most this many firing alerts in all.
    pub max_alerts: usize,
    /// At most this many firing alerts of one namespace (alerts without a namespace
    /// label count as one namespace), so that one tenant cannot fill the store.
    pub max_alerts_per_namespace: usize,
    /// At most this many labels per alert.
    pub max_labels: usize,
    /// At most this many bytes of label names and values per alert.
    pub max_label_bytes: usize,
    /// How long a firing alert counts after the last notification that reported it,
    /// when it has no earlier `endsAt`. Longer than Alertmanager's `repeat_interval`
    /// plus its `group_interval`, or an alert that still fires would stop counting
    /// between two repeats.
    pub ttl: Duration,
}

/// The default number of alerts in the store.
pub const DEFAULT_MAX_ALERTS: usize = 5000;
/// The default number of alerts of one namespace.
pub const DEFAULT_MAX_ALERTS_PER_NAMESPACE: usize = 500;
/// The default time an alert counts without a repeat: above Alertmanager's default
/// `repeat_interval` (4h) plus its `group_interval` (5m).
pub const DEFAULT_ALERT_TTL: Duration = Duration::from_secs(6 * 3600);

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_alerts: DEFAULT_MAX_ALERTS,
            max_alerts_per_namespace: DEFAULT_MAX_ALERTS_PER_NAMESPACE,
            max_labels: 64,
            max_label_bytes: 8 * 1024,
            ttl: DEFAULT_ALERT_TTL,
        }
    }
}

/// Why a firing alert was not recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The store holds [`StoreLimits::max_alerts`] alerts.
    StoreFull { alert: String },
    /// The alert's namespace holds [`StoreLimits::max_alerts_per_namespace`] alerts.
    NamespaceFull {
        alert: String,
        namespace: Option<String>,
    },
    /// The alert has more labels, or more bytes of labels, than allowed.
    TooLarge { alert: String, why: String },
}

impl Refusal {
    /// Whether the same notification could be taken later, once alerts resolve or
    /// expire (Alertmanager retries on a 5xx, not on a 4xx).
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::TooLarge { .. })
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::StoreFull { alert } => {
                write!(f, "alert {alert}: the store of firing alerts is full")
            }
            Self::NamespaceFull {
                alert,
                namespace: Some(namespace),
            } => write!(
                f,
                "alert {alert}: namespace {namespace} has as many firing alerts as allowed"
            ),
            Self::NamespaceFull {
                alert,
                namespace: None,
            } => write!(
                f,
                "alert {alert}: alerts without a namespace label are as many as allowed"
            ),
            Self::TooLarge { alert, why } => write!(f, "alert {alert}: {why}"),
        }
    }
}

/// What a notification changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// How many alerts fire now, in all.
    pub firing: usize,
    /// The firing alerts that were not recorded, and why.
    pub refused: Vec<Refusal>,
}

struct Stored {
    alert: FiringAlert,
    expires_at: Timestamp,
    /// When a notification (or a rebuild) last reported it.
    noted_at: Timestamp,
}

/// Whether the set must be rebuilt from Alertmanager at each takeover, and for which
/// leadership term it was.
#[derive(Debug, Default)]
struct Rebuild {
    required: bool,
    /// The leadership term the set was last rebuilt for.
    term: Option<u64>,
    /// Why the last attempt failed, for the waves' condition.
    failure: Option<String>,
}

#[derive(Default)]
struct State {
    /// Namespace (None: no namespace label) → key → alert.
    by_namespace: HashMap<Option<String>, HashMap<String, Stored>>,
    /// Every alert's deadline, earliest first.
    deadlines: BTreeSet<(Timestamp, Option<String>, String)>,
    count: usize,
}

impl State {
    fn remove(&mut self, namespace: &Option<String>, key: &str) -> Option<Stored> {
        let bucket = self.by_namespace.get_mut(namespace)?;
        let stored = bucket.remove(key)?;
        if bucket.is_empty() {
            self.by_namespace.remove(namespace);
        }
        self.deadlines
            .remove(&(stored.expires_at, namespace.clone(), key.to_owned()));
        self.count -= 1;
        Some(stored)
    }

    fn insert(&mut self, namespace: Option<String>, key: String, stored: Stored) {
        self.deadlines
            .insert((stored.expires_at, namespace.clone(), key.clone()));
        self.by_namespace
            .entry(namespace)
            .or_default()
            .insert(key, stored);
        self.count += 1;
    }

    fn namespace_count(&self, namespace: &Option<String>) -> usize {
        self.by_namespace.get(namespace).map_or(0, HashMap::len)
    }

    /// Why a new alert does not fit, if it does not.
    fn refusal(
        &self,
        limits: &StoreLimits,
        namespace: &Option<String>,
        alert: &FiringAlert,
    ) -> Option<Refusal> {
        if self.count >= limits.max_alerts {
            return Some(Refusal::StoreFull {
                alert: alert.name.clone(),
            });
        }
        (self.namespace_count(namespace) >= limits.max_alerts_per_namespace).then(|| {
            Refusal::NamespaceFull {
                alert: alert.name.clone(),
                namespace: namespace.clone(),
            }
        })
    }

    /// Removes the alerts whose deadline is at or before `now`; returns them.
    fn expire(&mut self, now: Timestamp) -> Vec<FiringAlert> {
        let mut expired = Vec::new();
        while let Some((at, namespace, key)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            if let Some(stored) = self.remove(&namespace, &key) {
                expired.push(stored.alert);
            }
        }
        expired
    }
}

/// The alerts firing now, shared by the receiver and the controller.
pub struct AlertStore {
    state: Mutex<State>,
    limits: StoreLimits,
    wake: broadcast::Sender<Wake>,
    rebuild: Mutex<Rebuild>,
}

impl Default for AlertStore {
    fn default() -> Self {
        Self::new(StoreLimits::default())
    }
}

impl AlertStore {
    /// An empty store with these bounds.
    pub fn new(limits: StoreLimits) -> Self {
        Self::with_wake_capacity(limits, DEFAULT_WAKE_CAPACITY)
    }

    /// An empty store whose wake-up channel holds `capacity` unread wake-ups per
    /// subscriber (at least 1); a subscriber further behind gets [`Wake::All`].
    pub fn with_wake_capacity(limits: StoreLimits, capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            limits,
            wake: broadcast::channel(capacity.max(1)).0,
            rebuild: Mutex::default(),
        }
    }

    /// The store of a replica among several: its set is unknown at each takeover until
    /// it is rebuilt from Alertmanager's API ([`rebuild`]), because the webhooks went to
    /// the previous leader.
    pub fn rebuilt_at_takeover(self) -> Self {
        self.rebuild_state().required = true;
        self
    }

    fn rebuild_state(&self) -> std::sync::MutexGuard<'_, Rebuild> {
        self.rebuild.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the set of firing alerts is complete for leadership term `term` (None:
    /// not leading). Always known when no rebuild is required (one replica: every
    /// notification comes here).
    pub fn state_for(&self, term: Option<u64>) -> AlertState {
        let rebuild = self.rebuild_state();
        if !rebuild.required || (term.is_some() && rebuild.term == term) {
            return AlertState::Known;
        }
        let message = match &rebuild.failure {
            Some(failure) => format!(
                "this replica took over and could not read the firing alerts from Alertmanager yet ({failure}); retrying"
            ),
            None => "this replica took over and is reading the firing alerts from Alertmanager"
                .to_owned(),
        };
        AlertState::Unknown { message }
    }

    /// Whether the set was rebuilt for `term`.
    pub fn rebuilt_for(&self, term: u64) -> bool {
        self.rebuild_state().term == Some(term)
    }

    /// Notes that a rebuild failed; the set stays unknown.
    pub fn rebuild_failed(&self, failure: String) {
        self.rebuild_state().failure = Some(failure);
    }

    /// Replaces the set with what Alertmanager reported for leadership term `term`, read
    /// by a request sent at `asked_at`: every reported alert is recorded as a firing
    /// notification received at `now` would be (the TTL applies; one whose `endsAt` has
    /// passed is left out), a recorded alert keeps the later of its deadlines, and a
    /// recorded alert Alertmanager did not report is removed unless a notification
    /// reported it after `asked_at` (the answer is older than that notification). Then
    /// the set is known for `term`, and every wave with alerts is woken. Returns what
    /// the store holds, and what it refused.
    pub fn rebuild_at(
        &self,
        term: u64,
        reported: &[WebhookAlert],
        asked_at: Timestamp,
        now: Timestamp,
    ) -> Applied {
        let ttl_deadline = self.ttl_deadline(now);
        let mut refused = Vec::new();
        let firing = {
            let mut state = self.state();
            let mut keep = std::collections::HashSet::new();
            for alert in reported {
                let namespace = alert.namespace().map(str::to_owned);
                let key = alert.key();
                if alert.ends_at().is_some_and(|ends_at| ends_at <= now) {
                    continue;
                }
                let firing_alert = alert.to_firing();
                if let Some(why) = too_large(alert, &self.limits) {
                    refused.push(Refusal::TooLarge {
                        alert: firing_alert.name.clone(),
                        why,
                    });
                    continue;
                }
                let expires_at = match state.remove(&namespace, &key) {
                    Some(known) => known.expires_at.max(ttl_deadline),
                    None => {
                        if let Some(refusal) =
                            state.refusal(&self.limits, &namespace, &firing_alert)
                        {
                            refused.push(refusal);
                            continue;
                        }
                        ttl_deadline
                    }
                };
                state.insert(
                    namespace.clone(),
                    key.clone(),
                    Stored {
                        alert: firing_alert,
                        expires_at,
                        noted_at: now,
                    },
                );
                keep.insert((namespace, key));
            }
            let stale: Vec<_> = state
                .by_namespace
                .iter()
                .flat_map(|(namespace, bucket)| {
                    bucket
                        .iter()
                        .filter(|(_, stored)| stored.noted_at < asked_at)
                        .map(|(key, _)| (namespace.clone(), key.clone()))
                })
                .filter(|entry| !keep.contains(entry))
                .collect();
            for (namespace, key) in stale {
                state.remove(&namespace, &key);
            }
            state.count
        };
        {
            let mut rebuild = self.rebuild_state();
            rebuild.term = Some(term);
            rebuild.failure = None;
        }
        info!(
            firing,
            refused = refused.len(),
            "rebuilt the firing alerts from Alertmanager"
        );
        let _ = self.wake.send(Wake::All);
        Applied { firing, refused }
    }

    fn ttl_deadline(&self, now: Timestamp) -> Timestamp {
        now.checked_add(
            jiff::SignedDuration::try_from(self.limits.ttl).unwrap_or(jiff::SignedDuration::MAX),
        )
        .unwrap_or(Timestamp::MAX)
    }

    /// The store's bounds.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a notification now. See [`AlertStore::apply_at`].
    pub fn apply(&self, payload: &WebhookPayload) -> Applied {
        self.apply_at(payload, Timestamp::now())
    }

    /// Applies a notification received at `now`: firing alerts are recorded (a repeat
    /// renews the deadline), resolved ones removed, and a firing alert whose `endsAt`
    /// has passed is treated as resolved. A new alert that does not fit is refused and
    /// no recorded alert is evicted. Wakes the controller with every alert whose state
    /// changed, so that the waves they concern are looked at again.
    pub fn apply_at(&self, payload: &WebhookPayload, now: Timestamp) -> Applied {
        let limits = self.limits;
        let ttl_deadline = self.ttl_deadline(now);
        let mut changed = Vec::new();
        let mut refused = Vec::new();
        let firing = {
            let mut state = self.state();
            for alert in &payload.alerts {
                let namespace = alert.namespace().map(str::to_owned);
                let key = alert.key();
                let expires_at = alert
                    .ends_at()
                    .map_or(ttl_deadline, |ends_at| ends_at.min(ttl_deadline));
                if alert.status != "firing" || expires_at <= now {
                    if state.remove(&namespace, &key).is_some() {
                        changed.push(alert.to_firing());
                    }
                    continue;
                }
                let firing_alert = alert.to_firing();
                if let Some(why) = too_large(alert, &limits) {
                    refused.push(Refusal::TooLarge {
                        alert: firing_alert.name.clone(),
                        why,
                    });
                    continue;
                }
                let known = state.remove(&namespace, &key).is_some();
                if !known && let Some(refusal) = state.refusal(&limits, &namespace, &firing_alert) {
                    refused.push(refusal);
                    continue;
                }
                state.insert(
                    namespace,
                    key,
                    Stored {
                        alert: firing_alert.clone(),
                        expires_at,
                        noted_at: now,
                    },
                );
                changed.push(firing_alert);
            }
            state.count
        };
        if !changed.is_empty() {
            // No subscriber (no controller yet) is fine: the alerts are recorded.
            let _ = self.wake.send(Wake::Alerts(changed));
        }
        Applied { firing, refused }
    }

    /// Every alert firing now.
    pub fn firing(&self) -> Vec<FiringAlert> {
        self.firing_at(Timestamp::now())
    }

    /// Every alert firing at `now`: expired ones are left out even before they are
    /// removed.
    pub fn firing_at(&self, now: Timestamp) -> Vec<FiringAlert> {
        let state = self.state();
        let mut alerts: Vec<FiringAlert> = state
            .by_namespace
            .values()
            .flat_map(HashMap::values)
            .filter(|stored| stored.expires_at > now)
            .map(|stored| stored.alert.clone())
            .collect();
        sort(&mut alerts);
        alerts
    }

    /// The alerts firing now that may act on a wave of `namespace` with these alert
    /// settings: those of its namespace, and those without a namespace if the wave
    /// accepts them. None when the wave has no alert settings. The engine matches their
    /// labels against the wave's.
    pub fn in_scope(&self, spec: Option<&AlertSpec>, namespace: &str) -> Vec<FiringAlert> {
        self.in_scope_at(spec, namespace, Timestamp::now())
    }

    /// [`AlertStore::in_scope`] at `now`.
    pub fn in_scope_at(
        &self,
        spec: Option<&AlertSpec>,
        namespace: &str,
        now: Timestamp,
    ) -> Vec<FiringAlert> {
        let Some(spec) = spec else {
            return Vec::new();
        };
        let state = self.state();
        let own = state.by_namespace.get(&Some(namespace.to_owned()));
        let unnamespaced = spec
            .accept_unnamespaced
            .then(|| state.by_namespace.get(&None))
            .flatten();
        let mut alerts: Vec<FiringAlert> = own
            .into_iter()
            .chain(unnamespaced)
            .flat_map(HashMap::values)
            .filter(|stored| stored.expires_at > now)
            .map(|stored| stored.alert.clone())
            .collect();
        sort(&mut alerts);
        alerts
    }

    /// The earliest deadline of a recorded alert.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.state().deadlines.first().map(|(at, _, _)| *at)
    }

    /// Removes the alerts whose deadline has come by `now`, and wakes the controller
    /// with them. Returns how many expired.
    pub fn expire_at(&self, now: Timestamp) -> usize {
        let expired = self.state().expire(now);
        let count = expired.len();
        if count > 0 {
            for alert in &expired {
                info!(
                    alert = %alert.name,
                    namespace = label_namespace(&alert.labels).unwrap_or(""),
                    "a firing alert expired without a resolved notification: it no longer acts"
                );
            }
            let _ = self.wake.send(Wake::Alerts(expired));
        }
        count
    }

    /// Notifications of alerts whose state changed, for waking the controller. Prefer
    /// [`AlertStore::wakes`], which also expires alerts at their deadlines.
    pub fn subscribe(&self) -> broadcast::Receiver<Wake> {
        self.wake.subscribe()
    }

    /// The alerts whose state changed: newly firing, resolved, or expired. Expiry is
    /// driven by deadlines: the stream sleeps until the earliest one, removes what is due
    /// and wakes every subscriber with it. Any subscriber's timer expires alerts for all.
    /// A subscriber that fell behind the channel's capacity gets [`Wake::All`] for what
    /// it missed.
    pub fn wakes(self: &Arc<Self>) -> impl Stream<Item = Wake> + Send + 'static {
        let receiver = self.wake.subscribe();
        futures::stream::unfold(
            (self.clone(), receiver),
            |(store, mut receiver)| async move {
                loop {
                    let until_expiry = store.next_expiry().map(|at| {
                        let wait = at.duration_since(Timestamp::now());
                        Duration::try_from(wait).unwrap_or(Duration::ZERO)
                    });
                    let expiry = async {
                        match until_expiry {
                            Some(wait) => tokio::time::sleep(wait).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        received = receiver.recv() => match received {
                            Ok(batch) => return Some((batch, (store, receiver))),
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                warn!(
                                    missed,
                                    "alert wake-ups were dropped (the controller fell behind): \
                                     looking at every wave with alerts again"
                                );
                                return Some((Wake::All, (store, receiver)));
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        () = expiry => {
                            // Wakes every subscriber, this one included, through the
                            // channel.
                            store.expire_at(Timestamp::now());
                        }
                    }
                }
            },
        )
    }
}

fn sort(alerts: &mut [FiringAlert]) {
    alerts.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
}

fn too_large(alert: &WebhookAlert, limits: &StoreLimits) -> Option<String> {
    if alert.labels.len() > limits.max_labels {
        return Some(format!(
            "{} labels, more than the {} allowed",
            alert.labels.len(),
            limits.max_labels
        ));
    }
    let bytes = alert.label_bytes();
    (bytes > limits.max_label_bytes).then(|| {
        format!(
            "{bytes} bytes of labels, more than the {} allowed",
            limits.max_label_bytes
        )
    })
}

/// Whether `alert` carries every label of `match_labels`.
pub fn matches(match_labels: &BTreeMap<String, String>, alert: &FiringAlert) -> bool {
    !match_labels.is_empty()
        && match_labels
            .iter()
            .all(|(k, v)| alert.labels.get(k) == Some(v))
}

/// Whether an alert of `alert_namespace` (None: no namespace label) may act on a wave of
/// `wave_namespace`: only in its own namespace, and without a namespace only where the
/// wave accepts it.
pub fn in_scope(
    alert_namespace: Option<&str>,
    wave_namespace: &str,
    accept_unnamespaced: bool,
) -> bool {
    match alert_namespace {
        Some(namespace) => namespace == wave_namespace,
        None => accept_unnamespaced,
    }
}

/// Whether `alert` acts on a wave of `wave_namespace` with these alert settings: it is
/// in scope ([`in_scope`]) and carries every label of `matchLabels`.
pub fn acts_on(spec: &AlertSpec, wave_namespace: &str, alert: &FiringAlert) -> bool {
    in_scope(
        label_namespace(&alert.labels),
        wave_namespace,
        spec.accept_unnamespaced,
    ) && matches(&spec.match_labels, alert)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(status: &str, labels: &[(&str, &str)]) -> WebhookPayload {
        alerts(&[(status, labels, None, "abc")])
    }

    /// One alert: status, labels, endsAt, fingerprint.
    type Alert<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>, &'a str);

    fn alerts(list: &[Alert<'_>]) -> WebhookPayload {
        let alerts: Vec<_> = list
            .iter()
            .map(|(status, labels, ends_at, fingerprint)| {
                serde_json::json!({
                    "status": status,
                    "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>(),
                    "endsAt": ends_at.unwrap_or("0001-01-01T00:00:00Z"),
                    "fingerprint": fingerprint,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "version": "4", "status": "firing", "alerts": alerts,
        }))
        .unwrap()
    }

    fn spec(labels: &[(&str, &str)], accept_unnamespaced: bool) -> AlertSpec {
        AlertSpec {
            match_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            on_firing: None,
            accept_unnamespaced,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn firing_is_recorded_once_and_resolved_removes_it() {
        let store = AlertStore::default();
        let mut wake = store.subscribe();
        let firing = payload(
            "firing",
            &[("alertname", "HandoffFailures"), ("team", "support")],
        );
        assert_eq!(store.apply(&firing).firing, 1);
        assert_eq!(
            store.apply(&firing).firing,
            1,
            "a duplicate notification changes nothing"
        );
        assert_eq!(store.firing().len(), 1);
        assert_eq!(store.firing()[0].name, "HandoffFailures");
        assert_eq!(
            wake.try_recv().unwrap().alerts()[0].labels["team"],
            "support"
        );
        assert_eq!(
            store
                .apply(&payload("resolved", &[("alertname", "HandoffFailures")]))
                .firing,
            0
        );
        assert!(store.firing().is_empty());
    }

    #[test]
    fn matching_needs_every_label() {
        let alert = FiringAlert {
            name: "X".into(),
            labels: BTreeMap::from([
                ("team".into(), "support".into()),
                ("region".into(), "emea".into()),
            ]),
        };
        let want = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(matches(&want(&[("team", "support")]), &alert));
        assert!(matches(
            &want(&[("team", "support"), ("region", "emea")]),
            &alert
        ));
        assert!(!matches(
            &want(&[("team", "support"), ("region", "amer")]),
            &alert
        ));
        assert!(
            !matches(&BTreeMap::new(), &alert),
            "empty selectors match nothing"
        );
    }

    #[test]
    fn an_alert_acts_only_in_the_namespace_it_names_or_where_unnamespaced_ones_are_accepted() {
        let alert = |labels: &[(&str, &str)]| FiringAlert {
            name: "X".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let tenant_a = alert(&[("team", "support"), ("namespace", "a")]);
        let unnamespaced = alert(&[("team", "support")]);
        let empty_namespace = alert(&[("team", "support"), ("namespace", "")]);
        let strict = spec(&[("team", "support")], false);
        let open = spec(&[("team", "support")], true);

        assert!(acts_on(&strict, "a", &tenant_a));
        assert!(!acts_on(&strict, "b", &tenant_a), "another tenant's alert");
        assert!(
            !acts_on(&open, "b", &tenant_a),
            "opting in to unnamespaced alerts does not admit other namespaces"
        );
        assert!(!acts_on(&strict, "a", &unnamespaced));
        assert!(acts_on(&open, "a", &unnamespaced));
        assert!(
            !acts_on(&strict, "a", &empty_namespace),
            "an empty namespace label is no namespace, as in Prometheus"
        );
        assert!(acts_on(&open, "a", &empty_namespace));
        // A wave cannot reach into another namespace by naming it in matchLabels.
        let reaching = spec(&[("namespace", "a")], true);
        assert!(!acts_on(&reaching, "b", &tenant_a));
        assert!(
            !acts_on(&spec(&[("team", "sales")], true), "a", &tenant_a),
            "labels must still match"
        );
    }

    #[test]
    fn in_scope_returns_the_namespace_s_alerts_and_unnamespaced_ones_only_when_accepted() {
        let store = AlertStore::default();
        store.apply(&alerts(&[
            (
                "firing",
                &[("alertname", "A"), ("namespace", "a")],
                None,
                "1",
            ),
            (
                "firing",
                &[("alertname", "B"), ("namespace", "b")],
                None,
                "2",
            ),
            ("firing", &[("alertname", "Global")], None, "3"),
        ]));
        let names =
            |alerts: Vec<FiringAlert>| alerts.into_iter().map(|a| a.name).collect::<Vec<_>>();
        assert_eq!(
            names(store.in_scope(Some(&spec(&[("x", "y")], false)), "a")),
            ["A"]
        );
        assert_eq!(
            names(store.in_scope(Some(&spec(&[("x", "y")], true)), "a")),
            ["A", "Global"]
        );
        assert!(
            store.in_scope(None, "a").is_empty(),
            "no alert settings, no alerts"
        );
        assert!(
            store
                .in_scope(Some(&spec(&[("x", "y")], false)), "c")
                .is_empty()
        );
    }

    #[test]
    fn the_same_fingerprint_in_another_namespace_is_another_alert() {
        let store = AlertStore::default();
        store.apply(&alerts(&[
            (
                "firing",
                &[("alertname", "A"), ("namespace", "a")],
                None,
                "same",
            ),
            (
                "firing",
                &[("alertname", "B"), ("namespace", "b")],
                None,
                "same",
            ),
        ]));
        assert_eq!(store.firing().len(), 2);
        // A "resolved" naming namespace b resolves nothing of namespace a.
        store.apply(&alerts(&[(
            "resolved",
            &[("namespace", "b")],
            None,
            "same",
        )]));
        assert_eq!(store.firing().len(), 1);
        assert_eq!(store.firing()[0].name, "A");
    }

    #[test]
    fn an_alert_stops_counting_at_its_ends_at() {
        let store = AlertStore::default();
        let now = at("2026-11-22T10:00:00Z");
        store.apply_at(
            &alerts(&[(
                "firing",
                &[("alertname", "A"), ("namespace", "a")],
                Some("2026-11-22T10:05:00Z"),
                "1",
            )]),
            now,
        );
        let spec = spec(&[("alertname", "A")], false);
        assert_eq!(store.in_scope_at(Some(&spec), "a", now).len(), 1);
        assert_eq!(store.next_expiry(), Some(at("2026-11-22T10:05:00Z")));
        let later = at("2026-11-22T10:05:00Z");
        assert!(
            store.in_scope_at(Some(&spec), "a", later).is_empty(),
            "an expired alert is not firing, even before it is removed"
        );
        assert!(store.firing_at(later).is_empty());
        let mut wake = store.subscribe();
        assert_eq!(store.expire_at(later), 1);
        assert_eq!(
            wake.try_recv().unwrap().alerts()[0].name,
            "A",
            "the expiry wakes the controller"
        );
        assert_eq!(store.next_expiry(), None);
        assert_eq!(store.expire_at(later), 0);
    }

    #[test]
    fn without_ends_at_an_alert_lasts_the_ttl_and_a_repeat_renews_it() {
        let store = AlertStore::new(StoreLimits {
            ttl: Duration::from_secs(600),
            ..StoreLimits::default()
        });
        let firing = alerts(&[("firing", &[("alertname", "A")], None, "1")]);
        store.apply_at(&firing, at("2026-11-22T10:00:00Z"));
        assert_eq!(store.next_expiry(), Some(at("2026-11-22T10:10:00Z")));
        store.apply_at(&firing, at("2026-11-22T10:08:00Z"));
        assert_eq!(store.next_expiry(), Some(at("2026-11-22T10:18:00Z")));
        assert_eq!(store.firing_at(at("2026-11-22T10:17:59Z")).len(), 1);
        assert!(store.firing_at(at("2026-11-22T10:18:00Z")).is_empty());
        // A far endsAt cannot outlast the TTL: a lost "resolved" blocks for the TTL at most.
        let far = alerts(&[(
            "firing",
            &[("alertname", "B")],
            Some("9999-01-01T00:00:00Z"),
            "2",
        )]);
        store.apply_at(&far, at("2026-11-22T10:00:00Z"));
        assert!(
            store
                .firing_at(at("2026-11-22T10:10:00Z"))
                .iter()
                .all(|a| a.name != "B")
        );
        // An endsAt that is not a string is "unknown" too, and not a bad payload.
        let number: WebhookPayload = serde_json::from_value(serde_json::json!({
            "alerts": [{"status": "firing", "labels": {"alertname": "D"}, "endsAt": 17}]
        }))
        .unwrap();
        assert_eq!(number.alerts[0].ends_at(), None);
        // An unparseable endsAt is "unknown": the TTL applies.
        let odd = alerts(&[("firing", &[("alertname", "C")], Some("soon"), "3")]);
        store.apply_at(&odd, at("2026-11-22T10:00:00Z"));
        assert!(
            store
                .firing_at(at("2026-11-22T10:09:00Z"))
                .iter()
                .any(|a| a.name == "C")
        );
    }

    #[test]
    fn a_firing_alert_whose_ends_at_has_passed_is_not_recorded_and_removes_a_known_one() {
        let store = AlertStore::default();
        let now = at("2026-11-22T10:00:00Z");
        store.apply_at(
            &alerts(&[("firing", &[("alertname", "A")], None, "1")]),
            now,
        );
        assert_eq!(store.firing_at(now).len(), 1);
        let stale = alerts(&[(
            "firing",
            &[("alertname", "A")],
            Some("2026-11-22T09:00:00Z"),
            "1",
        )]);
        let applied = store.apply_at(&stale, now);
        assert_eq!(applied.firing, 0);
        assert!(applied.refused.is_empty());
        let fresh = alerts(&[(
            "firing",
            &[("alertname", "B")],
            Some("2026-11-22T09:00:00Z"),
            "2",
        )]);
        assert_eq!(store.apply_at(&fresh, now).firing, 0);
    }

    #[test]
    fn a_full_store_refuses_new_alerts_and_keeps_every_recorded_one() {
        let store = AlertStore::new(StoreLimits {
            max_alerts: 3,
            max_alerts_per_namespace: 2,
            ..StoreLimits::default()
        });
        let applied = store.apply(&alerts(&[
            (
                "firing",
                &[("alertname", "A1"), ("namespace", "a")],
                None,
                "1",
            ),
            (
                "firing",
                &[("alertname", "A2"), ("namespace", "a")],
                None,
                "2",
            ),
            (
                "firing",
                &[("alertname", "A3"), ("namespace", "a")],
                None,
                "3",
            ),
            (
                "firing",
                &[("alertname", "B1"), ("namespace", "b")],
                None,
                "4",
            ),
            (
                "firing",
                &[("alertname", "B2"), ("namespace", "b")],
                None,
                "5",
            ),
        ]));
        assert_eq!(applied.firing, 3);
        assert_eq!(
            applied.refused,
            [
                Refusal::NamespaceFull {
                    alert: "A3".into(),
                    namespace: Some("a".into())
                },
                Refusal::StoreFull { alert: "B2".into() },
            ]
        );
        assert!(applied.refused.iter().all(Refusal::retryable));
        let names: Vec<_> = store.firing().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["A1", "A2", "B1"], "nothing recorded was evicted");
        // A repeat of a recorded alert is still taken when full.
        let repeat = store.apply(&alerts(&[(
            "firing",
            &[("alertname", "A1"), ("namespace", "a")],
            None,
            "1",
        )]));
        assert!(repeat.refused.is_empty());
        // Room made by a resolution is used again.
        store.apply(&alerts(&[("resolved", &[("namespace", "b")], None, "4")]));
        let retried = store.apply(&alerts(&[(
            "firing",
            &[("alertname", "B2"), ("namespace", "b")],
            None,
            "5",
        )]));
        assert!(retried.refused.is_empty());
        assert_eq!(retried.firing, 3);
    }

    #[test]
    fn an_alert_with_too_many_labels_or_bytes_is_refused() {
        let store = AlertStore::new(StoreLimits {
            max_labels: 3,
            max_label_bytes: 40,
            ..StoreLimits::default()
        });
        let long = "x".repeat(40);
        let applied = store.apply(&alerts(&[
            (
                "firing",
                &[("alertname", "Many"), ("a", "1"), ("b", "2"), ("c", "3")],
                None,
                "1",
            ),
            ("firing", &[("alertname", "Long"), ("v", &long)], None, "2"),
            ("firing", &[("alertname", "Fine"), ("v", "1")], None, "3"),
        ]));
        assert_eq!(applied.firing, 1);
        assert_eq!(applied.refused.len(), 2);
        assert!(!applied.refused[0].retryable());
        assert!(
            applied.refused[0].to_string().contains("4 labels"),
            "{}",
            applied.refused[0]
        );
        assert!(
            applied.refused[1].to_string().contains("bytes of labels"),
            "{}",
            applied.refused[1]
        );
    }

    #[tokio::test]
    async fn wakes_expire_alerts_at_their_deadline() {
        use futures::StreamExt;
        let store = Arc::new(AlertStore::new(StoreLimits {
            ttl: Duration::from_secs(1),
            ..StoreLimits::default()
        }));
        let mut wakes = Box::pin(store.wakes());
        store.apply(&alerts(&[("firing", &[("alertname", "A")], None, "1")]));
        assert_eq!(
            wakes.next().await.unwrap().alerts()[0].name,
            "A",
            "newly firing"
        );
        let expired = tokio::time::timeout(Duration::from_secs(10), wakes.next())
            .await
            .expect("a wake at the deadline, without any notification")
            .unwrap();
        assert_eq!(expired.alerts()[0].name, "A");
        assert!(store.firing().is_empty());
        assert_eq!(store.next_expiry(), None);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_look_at_every_wave() {
        use futures::StreamExt;
        let store = Arc::new(AlertStore::with_wake_capacity(StoreLimits::default(), 2));
        let mut wakes = Box::pin(store.wakes());
        for i in 0..5 {
            let fingerprint = i.to_string();
            store.apply(&alerts(&[(
                "firing",
                &[("alertname", "A")],
                None,
                &fingerprint,
            )]));
        }
        assert_eq!(
            wakes.next().await,
            Some(Wake::All),
            "three wake-ups were dropped: every wave with alerts is looked at"
        );
        // Then the ones the channel still held.
        assert_eq!(wakes.next().await.unwrap().alerts().len(), 1);
    }

    fn reported(labels: &[(&str, &str)], fingerprint: &str, ends_at: Option<&str>) -> WebhookAlert {
        serde_json::from_value(serde_json::json!({
            "status": "firing",
            "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            "endsAt": ends_at.unwrap_or("0001-01-01T00:00:00Z"),
            "fingerprint": fingerprint,
        }))
        .unwrap()
    }

    #[test]
    fn a_store_rebuilt_at_takeover_is_unknown_until_rebuilt_for_the_current_term() {
        let store = AlertStore::default().rebuilt_at_takeover();
        assert!(!store.state_for(None).is_known(), "a standby");
        assert!(
            !store.state_for(Some(1)).is_known(),
            "a new leader, not rebuilt yet"
        );
        store.rebuild_failed("connection refused".into());
        match store.state_for(Some(1)) {
            AlertState::Unknown { message } => assert!(message.contains("connection refused")),
            AlertState::Known => panic!("known after a failed rebuild"),
        }
        let now = at("2026-11-22T10:00:00Z");
        store.rebuild_at(1, &[], now, now);
        assert!(store.state_for(Some(1)).is_known());
        assert!(
            !store.state_for(Some(2)).is_known(),
            "the next term needs its own rebuild"
        );
        assert!(
            AlertStore::default().state_for(None).is_known(),
            "one replica: every notification comes here"
        );
    }

    #[test]
    fn a_rebuild_replaces_the_set_but_keeps_what_was_notified_after_it_asked() {
        let store = AlertStore::new(StoreLimits {
            ttl: Duration::from_secs(600),
            ..StoreLimits::default()
        });
        let early = at("2026-11-22T09:00:00Z");
        let asked = at("2026-11-22T10:00:00Z");
        let now = at("2026-11-22T10:00:01Z");
        // Resolved while this replica stood by: Alertmanager no longer reports it.
        store.apply_at(
            &alerts(&[("firing", &[("alertname", "Old")], None, "old")]),
            early,
        );
        // Notified while the request was in flight: newer than the answer.
        store.apply_at(
            &alerts(&[("firing", &[("alertname", "New")], None, "new")]),
            now,
        );
        let applied = store.rebuild_at(
            1,
            &[
                reported(
                    &[("alertname", "Missed")],
                    "missed",
                    Some("2026-11-22T10:03:00Z"),
                ),
                reported(
                    &[("alertname", "Over")],
                    "over",
                    Some("2026-11-22T09:59:00Z"),
                ),
            ],
            asked,
            now,
        );
        let names: Vec<_> = store.firing_at(now).into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["Missed", "New"]);
        assert_eq!(applied.firing, 2);
        // A firing alert's endsAt from the API is the sender's estimate, which it keeps
        // extending: the rebuilt alert lasts the TTL, as a notification would.
        assert!(
            store
                .firing_at(at("2026-11-22T10:09:00Z"))
                .iter()
                .any(|a| a.name == "Missed")
        );
    }
}
