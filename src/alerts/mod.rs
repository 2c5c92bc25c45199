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
use tracing::info;

use crate::api::AlertSpec;
use crate::engine::FiringAlert;

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
    wake: broadcast::Sender<Vec<FiringAlert>>,
}

impl Default for AlertStore {
    fn default() -> Self {
        Self::new(StoreLimits::default())
    }
}

impl AlertStore {
    /// An empty store with these bounds.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            state: Mutex::default(),
            limits,
            wake: broadcast::channel(1024).0,
        }
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
        let ttl_deadline = now
            .checked_add(
                jiff::SignedDuration::try_from(limits.ttl).unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(Timestamp::MAX);
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
                if !known {
                    if state.count >= limits.max_alerts {
                        refused.push(Refusal::StoreFull {
                            alert: firing_alert.name.clone(),
                        });
                        continue;
                    }
                    if state.namespace_count(&namespace) >= limits.max_alerts_per_namespace {
                        refused.push(Refusal::NamespaceFull {
                            alert: firing_alert.name.clone(),
                            namespace,
                        });
                        continue;
                    }
                }
                state.insert(
                    namespace,
                    key,
                    Stored {
                        alert: firing_alert.clone(),
                        expires_at,
                    },
                );
                changed.push(firing_alert);
            }
            state.count
        };
        if !changed.is_empty() {
            // No subscriber (no controller yet) is fine: the alerts are recorded.
            let _ = self.wake.send(changed);
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
            let _ = self.wake.send(expired);
        }
        count
    }

    /// Notifications of alerts whose state changed, for waking the controller. Prefer
    /// [`AlertStore::wakes`], which also expires alerts at their deadlines.
    pub fn subscribe(&self) -> broadcast::Receiver<Vec<FiringAlert>> {
        self.wake.subscribe()
    }

    /// The alerts whose state changed: newly firing, resolved, or expired. Expiry is
    /// driven by deadlines: the stream sleeps until the earliest one, removes what is due
    /// and wakes every subscriber with it. Any subscriber's timer expires alerts for all.
    pub fn wakes(self: &Arc<Self>) -> impl Stream<Item = Vec<FiringAlert>> + Send + 'static {
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
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
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
        assert_eq!(wake.try_recv().unwrap()[0].labels["team"], "support");
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
            wake.try_recv().unwrap()[0].name,
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
        assert_eq!(wakes.next().await.unwrap()[0].name, "A", "newly firing");
        let expired = tokio::time::timeout(Duration::from_secs(10), wakes.next())
            .await
            .expect("a wake at the deadline, without any notification")
            .unwrap();
        assert_eq!(expired[0].name, "A");
        assert!(store.firing().is_empty());
        assert_eq!(store.next_expiry(), None);
    }
}
