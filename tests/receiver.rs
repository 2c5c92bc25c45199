//! The Alertmanager receiver with the wave controller on a real API server: a matching
//! firing alert rolls a wave back at once; bad requests are refused and change nothing.

mod common;

use std::{sync::Arc, time::Duration};

use common::waves::*;
use kube::Api;
use serde_json::json;
use switchyard::{
    alerts::AlertStore,
    api::{MigrationWave, WavePhase},
    controller::Services,
    routing::{HTTPRoute, gateway::route_name},
};

const TOKEN: &str = "s3cret-token";

fn notification(status: &str, team: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut payload = json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HandoffFailures\"}",
        "status": status,
        "receiver": "switchyard",
        "groupLabels": {"alertname": "HandoffFailures"},
        "commonLabels": {"alertname": "HandoffFailures", "team": team, "region": "emea"},
        "externalURL": "http://alertmanager",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "HandoffFailures", "team": team, "region": "emea", "severity": "page"},
            "annotations": {"summary": "hand-offs failing"},
            "startsAt": "2026-11-22T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": format!("fp-{team}")
        }]
    });
    if let (Some(map), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
        map.extend(extra.clone());
    }
    payload
}

async fn setup(
    prefix: &str,
    on_firing: &str,
) -> (
    kube::Client,
    String,
    String,
    RunningController,
    Arc<AlertStore>,
) {
    let (client, ns) = common::admin_in_fresh_namespace(prefix).await;
    create_backends(&client, &ns).await;
    create(
        &client,
        &ns,
        &plan("crm", &["support-emea", "sales-emea"], false),
    )
    .await;
    let store = Arc::new(AlertStore::default());
    let (url, _server) = serve_receiver(TOKEN, store.clone()).await;
    let controller = RunningController::start_with_services(
        &client,
        &ns,
        Services {
            alerts: store.clone(),
            ..Services::default()
        },
    );
    for (name, team) in [("support-emea", "support"), ("sales-emea", "sales")] {
        let mut w = wave(
            name,
            "crm",
            team,
            "emea",
            json!([{"setWeight": 25}, {"approval": {}}]),
        );
        w.spec.alerts = Some(
            serde_json::from_value(
                json!({"matchLabels": {"team": team, "region": "emea"}, "onFiring": on_firing}),
            )
            .unwrap(),
        );
        create(&client, &ns, &w).await;
        wait_phase(&client, &ns, name, WavePhase::AwaitingApproval, Some(1)).await;
    }
    (client, ns, url, controller, store)
}

#[tokio::test]
async fn a_matching_firing_alert_rolls_back_only_its_wave_at_once() {
    let (client, ns, url, _controller, _store) = setup("alert-rollback", "Rollback").await;
    let http = http_client();
    let sales_route = Api::<HTTPRoute>::namespaced(client.clone(), &ns)
        .get(&route_name("sales-emea"))
        .await
        .unwrap();

    let response = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&notification("firing", "support", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rolled = wait_phase(&client, &ns, "support-emea", WavePhase::RolledBack, None).await;
    assert_eq!(condition(&rolled, "RolledBack"), "True/AlertFiring");
    let entry = rolled
        .status
        .as_ref()
        .unwrap()
        .history
        .iter()
        .find(|h| h.event == "RolledBack")
        .unwrap();
    assert_eq!(entry.actor.as_deref(), Some("alertmanager"));
    let message = entry.message.as_deref().unwrap();
    assert!(message.contains("HandoffFailures"), "{message}");
    assert!(
        message.contains("team=support")
            && message.contains("region=emea")
            && message.contains("severity=page"),
        "{message}"
    );
    let routes: Api<HTTPRoute> = Api::namespaced(client.clone(), &ns);
    assert!(
        routes
            .get_opt(&route_name("support-emea"))
            .await
            .unwrap()
            .is_none(),
        "legacy restored"
    );

    // The same notification again changes nothing.
    let history = rolled.status.as_ref().unwrap().history.len();
    let response = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&notification("firing", "support", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again: MigrationWave = Api::namespaced(client.clone(), &ns)
        .get("support-emea")
        .await
        .unwrap();
    assert_eq!(
        again.status.unwrap().history.len(),
        history,
        "a duplicate notification is idempotent"
    );

    // The other cohort's wave was not touched.
    let sales = Api::<HTTPRoute>::namespaced(client.clone(), &ns)
        .get(&route_name("sales-emea"))
        .await
        .unwrap();
    assert_eq!(
        sales.metadata.resource_version,
        sales_route.metadata.resource_version
    );
    let sales_wave: MigrationWave = Api::namespaced(client.clone(), &ns)
        .get("sales-emea")
        .await
        .unwrap();
    assert_eq!(
        sales_wave.status.unwrap().phase,
        WavePhase::AwaitingApproval
    );
}

#[tokio::test]
async fn a_resolved_alert_resumes_nothing() {
    let (client, ns, url, _controller, store) = setup("alert-pause", "Pause").await;
    let http = http_client();
    http.post(&url)
        .bearer_auth(TOKEN)
        .json(&notification("firing", "sales", json!({})))
        .send()
        .await
        .unwrap();
    let paused = wait_phase(&client, &ns, "sales-emea", WavePhase::Paused, Some(1)).await;
    assert_eq!(condition(&paused, "Paused"), "True/AlertFiring");
    let response = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&notification("resolved", "sales", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(store.firing().is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still: MigrationWave = Api::namespaced(client.clone(), &ns)
        .get("sales-emea")
        .await
        .unwrap();
    assert_eq!(
        still.status.unwrap().phase,
        WavePhase::Paused,
        "only a human resumes"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_no_wave() {
    let (client, ns, url, _controller, store) = setup("alert-refused", "Rollback").await;
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    let before = waves
        .get("support-emea")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let http = http_client();
    let firing = notification("firing", "support", json!({}));

    let missing = http.post(&url).json(&firing).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let wrong = http
        .post(&url)
        .bearer_auth("s3cret-tokem")
        .json(&firing)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let longer = http
        .post(&url)
        .bearer_auth(format!("{TOKEN}x"))
        .json(&firing)
        .send()
        .await
        .unwrap();
    assert_eq!(longer.status(), 401);
    let malformed = http
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"alerts\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(
        malformed
            .text()
            .await
            .unwrap()
            .contains("not an Alertmanager webhook payload")
    );
    let huge = format!(
        "{{\"alerts\": [], \"pad\": \"{}\"}}",
        "x".repeat(1024 * 1024 + 10)
    );
    let oversized = http
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);
    assert!(
        store.firing().is_empty(),
        "no refused request recorded an alert"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = waves.get("support-emea").await.unwrap();
    assert_eq!(after.metadata.resource_version, before, "no wave changed");
    assert_eq!(after.status.unwrap().phase, WavePhase::AwaitingApproval);

    // Unknown fields are fine (Alertmanager adds fields over time).
    let extended = notification(
        "resolved",
        "nobody",
        json!({"truncatedAlerts": 0, "somethingNew": {"a": 1}}),
    );
    let accepted = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&extended)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
}

#[tokio::test]
async fn the_token_can_come_from_a_secret_or_a_file() {
    use switchyard::alerts::receiver::{Token, TokenError, TokenSource};
    let (client, ns) = common::admin_in_fresh_namespace("token").await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "switchyard"},
        "stringData": {"token": "from-a-secret\n"}
    }))
    .unwrap();
    create(&client, &ns, &secret).await;
    let source = TokenSource::Secret {
        namespace: ns.clone(),
        name: "switchyard".into(),
        key: "token".into(),
    };
    let token = Token::load(&source, Some(&client)).await.unwrap();
    let store = Arc::new(AlertStore::default());
    let app = switchyard::alerts::receiver::router(token, store, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alertmanager", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = http_client();
    let ok = http
        .post(&url)
        .bearer_auth("from-a-secret")
        .json(&notification("resolved", "x", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.status(),
        200,
        "the Secret's value, trimmed, is the token"
    );

    let missing_key = TokenSource::Secret {
        namespace: ns.clone(),
        name: "switchyard".into(),
        key: "nope".into(),
    };
    let err = Token::load(&missing_key, Some(&client)).await.unwrap_err();
    assert!(matches!(err, TokenError::MissingKey { .. }), "{err}");
    assert!(err.to_string().contains("has no key \"nope\""), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "  \n").unwrap();
    let empty = Token::load(&TokenSource::File(path.clone()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(empty, TokenError::Empty),
        "an empty token is refused: {empty}"
    );
    let absent = Token::load(&TokenSource::File(dir.path().join("absent")), None)
        .await
        .unwrap_err();
    assert!(
        absent
            .to_string()
            .contains("could not read the receiver token file"),
        "{absent}"
    );
}
