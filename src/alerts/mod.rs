//! Alerts pushed by Alertmanager: the set of alerts firing now, and the webhook
//! receiver that keeps it up to date.
//!
//! The receiver only records alerts and wakes the controller for the waves they
//! match; the engine decides what a firing alert does to a wave (`alerts.onFiring`).
//! A resolved alert leaves the set and resumes nothing.

pub mod receiver;

use std::{
    collections::{BTreeMap, HashMap},
    sync::RwLock,
};

use serde::Deserialize;
use tokio::sync::broadcast;

use crate::engine::FiringAlert;

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
    /// Alertmanager's identity for the alert; derived from the labels when absent.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl WebhookAlert {
    fn key(&self) -> String {
        self.fingerprint.clone().unwrap_or_else(|| {
            self.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    fn to_firing(&self) -> FiringAlert {
        FiringAlert {
            name: self.labels.get("alertname").cloned().unwrap_or_default(),
            labels: self.labels.clone(),
        }
    }
}

/// The alerts firing now, shared by the receiver and the controller.
pub struct AlertStore {
    firing: RwLock<HashMap<String, FiringAlert>>,
    wake: broadcast::Sender<Vec<FiringAlert>>,
}

impl Default for AlertStore {
    fn default() -> Self {
        Self {
            firing: RwLock::default(),
            wake: broadcast::channel(1024).0,
        }
    }
}

impl AlertStore {
    /// Applies a notification: firing alerts are added (again, harmlessly, when a
    /// notification repeats), resolved ones removed. Wakes the controller with the
    /// firing alerts of the notification. Returns how many alerts fire now.
    pub fn apply(&self, payload: &WebhookPayload) -> usize {
        let mut firing_now = Vec::new();
        let count = {
            let mut firing = self.firing.write().unwrap_or_else(|e| e.into_inner());
            for alert in &payload.alerts {
                if alert.status == "firing" {
                    let firing_alert = alert.to_firing();
                    firing.insert(alert.key(), firing_alert.clone());
                    firing_now.push(firing_alert);
                } else {
                    firing.remove(&alert.key());
                }
            }
            firing.len()
        };
        if !firing_now.is_empty() {
            // No subscriber (no controller yet) is fine: the alerts are recorded.
            let _ = self.wake.send(firing_now);
        }
        count
    }

    /// Every alert firing now.
    pub fn firing(&self) -> Vec<FiringAlert> {
        let firing = self.firing.read().unwrap_or_else(|e| e.into_inner());
        let mut alerts: Vec<FiringAlert> = firing.values().cloned().collect();
        alerts.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        alerts
    }

    /// Notifications of newly reported firing alerts, for waking the controller.
    pub fn subscribe(&self) -> broadcast::Receiver<Vec<FiringAlert>> {
        self.wake.subscribe()
    }
}

/// Whether `alert` carries every label of `match_labels`.
pub fn matches(match_labels: &BTreeMap<String, String>, alert: &FiringAlert) -> bool {
    !match_labels.is_empty()
        && match_labels
            .iter()
            .all(|(k, v)| alert.labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(status: &str, labels: &[(&str, &str)]) -> WebhookPayload {
        serde_json::from_value(serde_json::json!({
            "version": "4",
            "status": status,
            "alerts": [{"status": status, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>(), "fingerprint": "abc"}],
        }))
        .unwrap()
    }

    #[test]
    fn firing_is_recorded_once_and_resolved_removes_it() {
        let store = AlertStore::default();
        let mut wake = store.subscribe();
        let firing = payload(
            "firing",
            &[("alertname", "HandoffFailures"), ("team", "support")],
        );
        assert_eq!(store.apply(&firing), 1);
        assert_eq!(
            store.apply(&firing),
            1,
            "a duplicate notification changes nothing"
        );
        assert_eq!(store.firing().len(), 1);
        assert_eq!(store.firing()[0].name, "HandoffFailures");
        assert_eq!(wake.try_recv().unwrap()[0].labels["team"], "support");
        assert_eq!(
            store.apply(&payload("resolved", &[("alertname", "HandoffFailures")])),
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
}
