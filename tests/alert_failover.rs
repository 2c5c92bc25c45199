//! Firing alerts survive a failover (issue 12): Alertmanager notifies the leader only, so
//! the replica that takes over reads the firing alerts from Alertmanager's API before it
//! lets a wave with `alerts` move forward. Two `switchyard run` processes with leader
//! election, a real Alertmanager and a real API server.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use common::{operator::*, waves::*};
use serde_json::json;
use switchyard::api::WavePhase;
use switchyard_testenv::Alertmanager;

const TOKEN: &str = "s3cret-failover-token";

/// Stands in for the chart's receiver Service, which selects the leader's Pod: it passes
/// each notification to the replica it points at, and counts them.
#[derive(Clone, Default)]
struct LeaderService {
    target: Arc<Mutex<Option<String>>>,
    notifications: Arc<AtomicUsize>,
}

async fn forward(
    State(service): State<LeaderService>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    service.notifications.fetch_add(1, Ordering::SeqCst);
    let Some(target) = service.target.lock().unwrap().clone() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let mut request = http_client().post(target).body(body.to_vec());
    for name in ["authorization", "content-type"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    match request.send().await {
        Ok(response) => StatusCode::from_u16(response.status().as_u16()).unwrap(),
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

async fn the_leader(operators: &[Operator]) -> Result<usize, String> {
    let mut leaders = Vec::new();
    for (i, operator) in operators.iter().enumerate() {
        if operator.leads().await? {
            leaders.push(i);
        }
    }
    match leaders.as_slice() {
        [one] => Ok(*one),
        many => Err(format!("{} replicas lead", many.len())),
    }
}

#[tokio::test]
async fn a_new_leader_knows_the_alerts_that_fired_before_it_took_over() {
    let plane = common::plane();
    let (client, ns) = common::admin_in_fresh_namespace("alert-failover").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["support-emea"], true)).await;

    let service = LeaderService::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_url = format!("http://{}/alertmanager", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/alertmanager", post(forward))
        .with_state(service.clone());
    let _service = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // A repeat would hand the alert to the new leader anyway: none comes within the test.
    let alertmanager = Alertmanager::start_with_repeat_interval(&service_url, TOKEN, "2h")
        .await
        .unwrap();

    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let alertmanager_url = alertmanager.url();
    let args = [
        "--namespaces",
        &ns,
        "--lease-namespace",
        &ns,
        "--lease-duration",
        "4s",
        "--receiver-token-file",
        token_file.to_str().unwrap(),
        "--alertmanager-url",
        &alertmanager_url,
    ];
    let kubeconfig = plane.kubeconfig_path();
    let mut replicas = vec![
        Operator::start(kubeconfig, "replica-a", &args),
        Operator::start(kubeconfig, "replica-b", &args),
    ];
    let leader = eventually(Duration::from_secs(30), "exactly one leader", || {
        the_leader(&replicas)
    })
    .await;
    let standby = 1 - leader;
    *service.target.lock().unwrap() = Some(replicas[leader].url("/alertmanager"));

    let mut support = wave(
        "support-emea",
        "crm",
        "support",
        "emea",
        json!([{"setWeight": 10}, {"approval": {}}]),
    );
    support.spec.alerts = Some(
        serde_json::from_value(
            json!({"matchLabels": {"team": "support", "region": "emea"}, "onFiring": "Rollback"}),
        )
        .unwrap(),
    );
    create(&client, &ns, &support).await;
    wait_phase(
        &client,
        &ns,
        "support-emea",
        WavePhase::AwaitingApproval,
        Some(1),
    )
    .await;

    // The alert fires in Alertmanager, which notifies the leader: it rolls the wave back.
    let now = jiff::Timestamp::now();
    let posted = http_client()
        .post(format!("{alertmanager_url}/api/v2/alerts"))
        .json(&json!([{
            "labels": {"alertname": "HandoffFailures", "team": "support", "region": "emea",
                       "namespace": &ns, "severity": "page"},
            "startsAt": now.to_string(),
            "endsAt": (now + jiff::SignedDuration::from_secs(3600)).to_string(),
        }]))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200, "{}", posted.text().await.unwrap());
    let rolled = wait_phase(&client, &ns, "support-emea", WavePhase::RolledBack, None).await;
    assert_eq!(condition(&rolled, "RolledBack"), "True/AlertFiring");
    assert_eq!(service.notifications.load(Ordering::SeqCst), 1);

    // The leader dies; the standby, which never received the notification, takes over.
    replicas[leader].kill();
    eventually(Duration::from_secs(30), "the standby leads", || async {
        match replicas[standby].leads().await? {
            true => Ok(()),
            false => Err("standing by".to_owned()),
        }
    })
    .await;

    // A release manager retries the wave. The new leader records the retry, and does not
    // start the wave: it knows the alert still fires, from Alertmanager's API.
    act(
        &client,
        &ns,
        "support-emea",
        json!({"type": "Retry", "user": "carol"}),
    )
    .await;
    let held = wait_wave(
        &client,
        &ns,
        "support-emea",
        Duration::from_secs(30),
        "retried, and held by the alert",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.attempt == 1 && s.phase == WavePhase::Pending)
                && condition(w, "Progressing") == "False/AlertFiring"
        },
    )
    .await;
    let history = &held.status.as_ref().unwrap().history;
    let retried = history.iter().rposition(|h| h.event == "Retried").unwrap();
    assert!(
        history[retried..].iter().all(|h| h.event != "WaveStarted"),
        "the wave started again under a firing alert: {history:?}"
    );
    assert_eq!(
        service.notifications.load(Ordering::SeqCst),
        1,
        "Alertmanager did not repeat the notification: the new leader read its API"
    );
    assert!(
        replicas[standby]
            .log()
            .contains("rebuilt the firing alerts from Alertmanager"),
        "{}",
        replicas[standby].log_tail(40)
    );
}
