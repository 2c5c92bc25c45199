//! Rebuilding the firing alerts from Alertmanager's API when this replica takes over.
//!
//! Alertmanager notifies the leader only (the chart's Service selects it), so a replica
//! that takes over holds none of the alerts that fired while it stood by, and a
//! restarted one has forgotten them all. With `--alertmanager-url`, each leadership term
//! starts by reading `GET /api/v2/alerts` (active, not silenced, not inhibited). Until
//! that has worked, [`AlertStore::state_for`] says the set is unknown and the engine
//! makes no forward move for a wave with `alerts`; the read is retried with backoff.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use serde::Deserialize;
use tracing::{info, warn};

use super::{AlertStore, WebhookAlert};
use crate::leader::Leadership;

/// The first wait after a failed read; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between two reads.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Why the alerts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: not a list of alerts: {source}")]
    Body {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Why the client could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client for Alertmanager: {0}")]
pub struct SetupError(#[source] reqwest::Error);

/// Alertmanager's v2 API, for reading the alerts it holds.
#[derive(Clone, Debug)]
pub struct AlertmanagerApi {
    alerts_url: String,
    http: reqwest::Client,
}

/// One alert of `GET /api/v2/alerts` (a `gettableAlert`); other fields are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableAlert {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    ends_at: Option<serde_json::Value>,
    #[serde(default)]
    status: AlertStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertStatus {
    #[serde(default)]
    state: String,
    #[serde(default)]
    silenced_by: Vec<String>,
    #[serde(default)]
    inhibited_by: Vec<String>,
}

impl AlertmanagerApi {
    /// A client of the Alertmanager at `base_url` (e.g. `http://alertmanager:9093`);
    /// each read may take `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, SetupError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(SetupError)?;
        Ok(Self {
            alerts_url: format!(
                "{}/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=false",
                base_url.trim_end_matches('/')
            ),
            http,
        })
    }

    /// The alerts firing now: active, neither silenced nor inhibited (Alertmanager
    /// filters them; they are checked again here), as firing notifications.
    pub async fn firing(&self) -> Result<Vec<WebhookAlert>, FetchError> {
        let url = &self.alerts_url;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|source| FetchError::Request {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.clone(),
                status: status.as_u16(),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|source| FetchError::Request {
                url: url.clone(),
                source,
            })?;
        parse(&body).map_err(|source| FetchError::Body {
            url: url.clone(),
            source,
        })
    }
}

fn parse(body: &[u8]) -> Result<Vec<WebhookAlert>, serde_json::Error> {
    let alerts: Vec<GettableAlert> = serde_json::from_slice(body)?;
    Ok(alerts
        .into_iter()
        .filter(|alert| {
            alert.status.state == "active"
                && alert.status.silenced_by.is_empty()
                && alert.status.inhibited_by.is_empty()
        })
        .map(|alert| WebhookAlert {
            status: "firing".into(),
            labels: alert.labels,
            ends_at: alert.ends_at,
            fingerprint: alert.fingerprint,
        })
        .collect())
}

/// Rebuilds `store` from Alertmanager at the start of each leadership term, retrying
/// with backoff until it works or the term ends. Runs until the leadership's sender is
/// gone.
pub async fn keep_rebuilt(store: Arc<AlertStore>, api: AlertmanagerApi, leadership: Leadership) {
    let mut changes = leadership.subscribe();
    loop {
        if let Some(term) = leadership.term()
            && !store.rebuilt_for(term)
        {
            rebuild_for(&store, &api, &leadership, term).await;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn rebuild_for(
    store: &AlertStore,
    api: &AlertmanagerApi,
    leadership: &Leadership,
    term: u64,
) {
    let mut retry = FIRST_RETRY;
    let mut changes = leadership.subscribe();
    while leadership.term() == Some(term) {
        let asked_at = Timestamp::now();
        match api.firing().await {
            Ok(alerts) => {
                if leadership.term() == Some(term) {
                    store.rebuild_at(term, &alerts, asked_at, Timestamp::now());
                    info!(term, reported = alerts.len(), "the firing alerts are known");
                }
                return;
            }
            Err(err) => {
                warn!(error = %err, "could not read the firing alerts from Alertmanager; forward moves of waves with alerts wait; retrying in {retry:?}");
                store.rebuild_failed(err.to_string());
            }
        }
        // A change of leadership ends the wait: the term may be over.
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = changes.changed() => {}
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_alerts_neither_silenced_nor_inhibited_are_firing() {
        let body = serde_json::json!([
            {"labels": {"alertname": "A"}, "fingerprint": "a", "endsAt": "2026-11-22T10:05:00Z",
             "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
             "receivers": [{"name": "switchyard"}], "annotations": {}},
            {"labels": {"alertname": "S"}, "fingerprint": "s",
             "status": {"state": "suppressed", "silencedBy": ["x"], "inhibitedBy": []}},
            {"labels": {"alertname": "I"}, "fingerprint": "i",
             "status": {"state": "suppressed", "silencedBy": [], "inhibitedBy": ["y"]}},
            {"labels": {"alertname": "U"}, "fingerprint": "u",
             "status": {"state": "unprocessed", "silencedBy": [], "inhibitedBy": []}}
        ]);
        let alerts = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].labels["alertname"], "A");
        assert_eq!(alerts[0].status, "firing");
        assert_eq!(
            alerts[0].ends_at(),
            Some("2026-11-22T10:05:00Z".parse().unwrap())
        );
        assert!(parse(b"{\"not\": \"a list\"}").is_err());
    }
}
