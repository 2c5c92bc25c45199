//! The monitoring harness against the real binaries: the exporter is scraped by a real
//! Prometheus, whose alerts go through a real Alertmanager to a webhook run by the test.

use std::{net::SocketAddr, time::Duration};

use axum::{Json, extract::State, http::HeaderMap, routing::post};
use serde_json::Value;
use switchyard_testenv::{Alertmanager, Exporter, Prometheus, TestEnvError};
use tokio::sync::mpsc;

/// How long a value may take to travel from the exporter into a query (1 s scrapes).
const SCRAPED: Duration = Duration::from_secs(20);
/// How long an alert may take to reach the webhook (1 s evaluation, 1 s group wait).
const NOTIFIED: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_exported_value_is_queryable_and_follows_changes() {
    let exporter = Exporter::start().await.unwrap();
    exporter.set("crm_queue_depth", &[("team", "payments")], 7.0);
    let prometheus = Prometheus::start(exporter.addr(), "", None).await.unwrap();

    let seen = prometheus
        .wait_for_value(r#"crm_queue_depth{team="payments"}"#, |v| v == 7.0, SCRAPED)
        .await
        .unwrap();
    assert_eq!(seen, 7.0);

    exporter.set("crm_queue_depth", &[("team", "payments")], 42.5);
    let seen = prometheus
        .wait_for_value(
            r#"crm_queue_depth{team="payments"}"#,
            |v| v == 42.5,
            SCRAPED,
        )
        .await
        .unwrap();
    assert_eq!(seen, 42.5);

    // The series carries the scrape's own labels, and only the one the test set.
    let samples = prometheus.query("crm_queue_depth").await.unwrap();
    assert_eq!(samples.len(), 1, "{samples:?}");
    let labels = &samples[0].labels;
    assert_eq!(labels["team"], "payments");
    assert_eq!(labels["job"], "exporter");
    assert_eq!(labels["instance"], exporter.addr().to_string());

    // Dropping the exporter stops it, keep-alive connections included: scrapes fail.
    drop(exporter);
    let up = prometheus
        .wait_for_value(r#"up{job="exporter"}"#, |v| v == 0.0, SCRAPED)
        .await
        .unwrap();
    assert_eq!(up, 0.0);
}

#[tokio::test]
async fn hostile_label_values_round_trip_through_a_scrape() {
    let exporter = Exporter::start().await.unwrap();
    let hostile = "o\"brien {x}";
    let worse = "back\\slash\nnew line";
    exporter.set("crm_x", &[("team", hostile), ("note", worse)], 3.0);
    // A decoy that a sloppy escape (or a sloppy PromQL) could match instead.
    exporter.set("crm_x", &[("team", "o"), ("note", "decoy")], 99.0);
    let prometheus = Prometheus::start(exporter.addr(), "", None).await.unwrap();

    let value = prometheus
        .wait_for_value(r#"crm_x{team="o\"brien {x}"}"#, |v| v == 3.0, SCRAPED)
        .await
        .unwrap();
    assert_eq!(value, 3.0);

    let samples = prometheus
        .query(r#"crm_x{note="back\\slash\nnew line"}"#)
        .await
        .unwrap();
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].labels["team"], hostile);
    assert_eq!(samples[0].labels["note"], worse);
    assert_eq!(samples[0].value, 3.0);

    assert_eq!(prometheus.query("crm_x").await.unwrap().len(), 2);
}

/// One webhook request: its headers and JSON body.
type Notification = (HeaderMap, Value);

/// A webhook receiver on a free port that hands every request to the test.
async fn webhook() -> (SocketAddr, mpsc::UnboundedReceiver<Notification>) {
    let (tx, rx) = mpsc::unbounded_channel::<Notification>();
    let app = axum::Router::new()
        .route(
            "/alerts",
            post(
                |State(tx): State<mpsc::UnboundedSender<Notification>>,
                 headers: HeaderMap,
                 Json(body): Json<Value>| async move {
                    let _ = tx.send((headers, body));
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rx)
}

/// The next notification, or a panic with Alertmanager's log after `NOTIFIED`.
async fn next_notification(
    rx: &mut mpsc::UnboundedReceiver<Notification>,
    alertmanager: &Alertmanager,
    prometheus: &Prometheus,
    waiting_for: &str,
) -> Notification {
    match tokio::time::timeout(NOTIFIED, rx.recv()).await {
        Ok(Some(notification)) => notification,
        Ok(None) => panic!("the webhook server stopped"),
        Err(_) => panic!(
            "no {waiting_for} notification within {NOTIFIED:?}\n\
             Alertmanager's log:\n{}\nPrometheus's log:\n{}",
            alertmanager.log_tail(30),
            prometheus.log_tail(10)
        ),
    }
}

const RULES: &str = r#"
groups:
  - name: switchyard
    rules:
      - alert: HandoffFailures
        expr: crm_handoff_failures > 5
        for: 0s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.team }} in {{ $labels.region }} fails handoffs"
"#;

#[tokio::test]
async fn a_firing_rule_reaches_the_webhook_with_the_token_and_then_resolves() {
    const TOKEN: &str = "t0ken-with \"quotes\" and spaces";
    let series = [("team", "payments"), ("region", "eu-west")];

    let exporter = Exporter::start().await.unwrap();
    exporter.set("crm_handoff_failures", &series, 1.0);
    let (hook, mut notifications) = webhook().await;
    let alertmanager = Alertmanager::start(&format!("http://{hook}/alerts"), TOKEN)
        .await
        .unwrap();
    let prometheus = Prometheus::start(exporter.addr(), RULES, Some(alertmanager.addr()))
        .await
        .unwrap();
    prometheus
        .wait_for_value("crm_handoff_failures", |v| v == 1.0, SCRAPED)
        .await
        .unwrap();
    assert!(
        notifications.try_recv().is_err(),
        "nothing fires below the threshold"
    );

    exporter.set("crm_handoff_failures", &series, 9.0);
    let (headers, body) =
        next_notification(&mut notifications, &alertmanager, &prometheus, "firing").await;
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(body["version"], "4", "{body:#}");
    assert_eq!(body["status"], "firing", "{body:#}");
    assert_eq!(body["receiver"], Alertmanager::RECEIVER, "{body:#}");
    assert_eq!(
        body["groupLabels"],
        serde_json::json!({"alertname": "HandoffFailures", "team": "payments", "region": "eu-west"}),
        "{body:#}"
    );
    let alerts = body["alerts"].as_array().expect("an alerts array");
    assert_eq!(alerts.len(), 1, "{body:#}");
    let alert = &alerts[0];
    assert_eq!(alert["status"], "firing", "{body:#}");
    assert_eq!(alert["labels"]["alertname"], "HandoffFailures", "{body:#}");
    assert_eq!(alert["labels"]["team"], "payments", "{body:#}");
    assert_eq!(alert["labels"]["region"], "eu-west", "{body:#}");
    assert_eq!(alert["labels"]["severity"], "page", "{body:#}");
    assert_eq!(
        alert["annotations"]["summary"], "payments in eu-west fails handoffs",
        "{body:#}"
    );

    exporter.set("crm_handoff_failures", &series, 0.0);
    // A repeat of the firing group may still be in flight; the resolution must follow.
    let deadline = tokio::time::Instant::now() + NOTIFIED;
    let (headers, body) = loop {
        let (headers, body) =
            next_notification(&mut notifications, &alertmanager, &prometheus, "resolved").await;
        if body["status"] == "resolved" {
            break (headers, body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no resolved notification within {NOTIFIED:?}; the last one: {body:#}"
        );
    };
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let alert = &body["alerts"][0];
    assert_eq!(alert["status"], "resolved", "{body:#}");
    assert_eq!(alert["labels"]["alertname"], "HandoffFailures", "{body:#}");
    assert_eq!(alert["labels"]["team"], "payments", "{body:#}");
    assert_ne!(alert["endsAt"], "0001-01-01T00:00:00Z", "{body:#}");
}

#[tokio::test]
async fn prometheus_restarts_on_the_same_url_with_its_data() {
    let exporter = Exporter::start().await.unwrap();
    exporter.set("crm_restart_probe", &[], 100.0);
    let mut prometheus = Prometheus::start(exporter.addr(), "", None).await.unwrap();
    let url = prometheus.url();
    prometheus
        .wait_for_value("crm_restart_probe", |v| v == 100.0, SCRAPED)
        .await
        .unwrap();

    prometheus.stop();
    assert_eq!(prometheus.pid(), None);
    let err = prometheus.query("crm_restart_probe").await.unwrap_err();
    assert!(matches!(err, TestEnvError::Query { .. }), "{err}");
    let down = reqwest::get(format!("{url}/-/ready")).await;
    assert!(down.is_err(), "{down:?}");

    // While it is down the value drops; only the old TSDB can still hold the 100.
    exporter.set("crm_restart_probe", &[], 1.0);
    prometheus.restart().await.unwrap();
    assert_eq!(prometheus.url(), url);
    let value = prometheus
        .wait_for_value("crm_restart_probe", |v| v == 1.0, SCRAPED)
        .await
        .unwrap();
    assert_eq!(value, 1.0);
    let max = prometheus
        .query("max_over_time(crm_restart_probe[1h])")
        .await
        .unwrap();
    assert_eq!(max.len(), 1, "{max:?}");
    assert_eq!(
        max[0].value, 100.0,
        "the data from before the restart is kept"
    );
}
