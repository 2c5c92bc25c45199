//! The Alertmanager receiver with the wave controller on a real API server: a matching
//! firing alert rolls a wave back at once; bad requests are refused and change nothing.
//! An alert acts only in the namespace it names (or, without one, on waves that accept
//! it), stops counting at its endsAt, and the store is bounded. The HTTP server cuts
//! slow clients off, refuses connections over its limit, and speaks TLS when asked.

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

fn notification(
    status: &str,
    namespace: &str,
    team: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut payload = json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HandoffFailures\"}",
        "status": status,
        "receiver": "switchyard",
        "groupLabels": {"alertname": "HandoffFailures"},
        "commonLabels": {"alertname": "HandoffFailures", "team": team, "region": "emea", "namespace": namespace},
        "externalURL": "http://alertmanager",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "HandoffFailures", "team": team, "region": "emea", "severity": "page", "namespace": namespace},
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
    setup_with_store(prefix, on_firing, Arc::new(AlertStore::default())).await
}

async fn setup_with_store(
    prefix: &str,
    on_firing: &str,
    store: Arc<AlertStore>,
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
        .json(&notification("firing", &ns, "support", json!({})))
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
        .json(&notification("firing", &ns, "support", json!({})))
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

/// The wake-up channel overflows (a burst of notifications faster than the controller
/// reads them): the wake-up of the alert that matters is dropped, and the wave it acts on
/// must still roll back. Before issue 12 the dropped wake-up was simply lost, and the
/// wave, waiting at its approval step with nothing else to wake it, stayed routed.
#[tokio::test]
async fn a_wave_still_rolls_back_when_its_alert_s_wake_up_is_dropped() {
    let store = Arc::new(AlertStore::with_wake_capacity(
        switchyard::alerts::StoreLimits::default(),
        2,
    ));
    let (client, ns, _url, _controller, store) =
        setup_with_store("alert-lag", "Rollback", store).await;
    let payload = |status: &str, team: &str| -> switchyard::alerts::WebhookPayload {
        serde_json::from_value(notification(status, &ns, team, json!({}))).unwrap()
    };
    // This test runs on one thread: nothing reads the channel between these calls. The
    // matching alert's wake-up is the oldest, and the channel keeps only the newest two.
    store.apply(&payload("firing", "support"));
    for noise in ["nobody-1", "nobody-2", "nobody-3"] {
        store.apply(&payload("firing", noise));
    }
    let rolled = wait_phase(&client, &ns, "support-emea", WavePhase::RolledBack, None).await;
    assert_eq!(condition(&rolled, "RolledBack"), "True/AlertFiring");
    let routes: Api<HTTPRoute> = Api::namespaced(client.clone(), &ns);
    assert!(
        routes
            .get_opt(&route_name("support-emea"))
            .await
            .unwrap()
            .is_none(),
        "legacy restored"
    );
    let sales: MigrationWave = Api::namespaced(client.clone(), &ns)
        .get("sales-emea")
        .await
        .unwrap();
    assert_eq!(
        sales.status.unwrap().phase,
        WavePhase::AwaitingApproval,
        "looking at every wave again acts only where an alert matches"
    );
}

#[tokio::test]
async fn a_resolved_alert_resumes_nothing() {
    let (client, ns, url, _controller, store) = setup("alert-pause", "Pause").await;
    let http = http_client();
    http.post(&url)
        .bearer_auth(TOKEN)
        .json(&notification("firing", &ns, "sales", json!({})))
        .send()
        .await
        .unwrap();
    let paused = wait_phase(&client, &ns, "sales-emea", WavePhase::Paused, Some(1)).await;
    assert_eq!(condition(&paused, "Paused"), "True/AlertFiring");
    let response = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&notification("resolved", &ns, "sales", json!({})))
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
    let firing = notification("firing", &ns, "support", json!({}));

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
        &ns,
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
        .json(&notification("resolved", &ns, "x", json!({})))
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

// ---- Scope, expiry and bounds ----

/// A webhook payload of one alert; `namespace` None leaves the label out.
fn one_alert(
    namespace: Option<&str>,
    labels: serde_json::Value,
    ends_at: Option<String>,
    fingerprint: &str,
) -> serde_json::Value {
    let mut labels = labels.as_object().cloned().unwrap_or_default();
    if let Some(namespace) = namespace {
        labels.insert("namespace".into(), json!(namespace));
    }
    json!({
        "version": "4",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "startsAt": "2026-11-22T10:00:00Z",
            "endsAt": ends_at.unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "fingerprint": fingerprint,
        }]
    })
}

async fn post(url: &str, body: &serde_json::Value) -> (u16, String) {
    let response = http_client()
        .post(url)
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A namespace with the backends and a plan `crm` listing `waves`.
async fn namespace_with_plan(client: &kube::Client, prefix: &str, waves: &[&str]) -> String {
    let namespace = common::plane().create_namespace(prefix).await.unwrap();
    create_backends(client, &namespace).await;
    create(client, &namespace, &plan("crm", waves, false)).await;
    namespace
}

fn alerting_wave(name: &str, team: &str, region: &str, alerts: serde_json::Value) -> MigrationWave {
    let mut w = wave(
        name,
        "crm",
        team,
        region,
        json!([{"setWeight": 25}, {"approval": {}}]),
    );
    w.spec.alerts = Some(serde_json::from_value(alerts).unwrap());
    w
}

/// Waits until the wave is Pending, held by a firing alert.
async fn wait_held_by_alert(client: &kube::Client, ns: &str, name: &str) -> MigrationWave {
    wait_wave(
        client,
        ns,
        name,
        Duration::from_secs(30),
        "Pending, held by a firing alert",
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.phase == WavePhase::Pending)
                && condition(w, "Progressing") == "False/AlertFiring"
        },
    )
    .await
}

#[tokio::test]
async fn a_tenant_s_alert_acts_only_on_waves_of_its_own_namespace() {
    let client = common::plane().client().await.unwrap();
    let tenant_a = namespace_with_plan(&client, "tenant-a", &["support-emea"]).await;
    let tenant_b = namespace_with_plan(&client, "tenant-b", &["support-emea", "late"]).await;
    let store = Arc::new(AlertStore::default());
    let (url, _server) = serve_receiver(TOKEN, store.clone()).await;
    let services = Services {
        alerts: store.clone(),
        ..Services::default()
    };
    let _a = RunningController::start_with_services(&client, &tenant_a, services.clone());
    let _b = RunningController::start_with_services(&client, &tenant_b, services);
    let alerts = json!({"matchLabels": {"team": "support"}, "onFiring": "Rollback"});
    for ns in [&tenant_a, &tenant_b] {
        create(
            &client,
            ns,
            &alerting_wave("support-emea", "support", "emea", alerts.clone()),
        )
        .await;
        wait_phase(
            &client,
            ns,
            "support-emea",
            WavePhase::AwaitingApproval,
            Some(1),
        )
        .await;
    }
    let b_before: MigrationWave = Api::namespaced(client.clone(), &tenant_b)
        .get("support-emea")
        .await
        .unwrap();

    // Tenant a's rule fires for team=support: its namespace label names tenant a.
    let (status, _) = post(
        &url,
        &one_alert(
            Some(&tenant_a),
            json!({"alertname": "HandoffFailures", "team": "support"}),
            None,
            "fp-a",
        ),
    )
    .await;
    assert_eq!(status, 200);
    let rolled = wait_phase(
        &client,
        &tenant_a,
        "support-emea",
        WavePhase::RolledBack,
        None,
    )
    .await;
    assert_eq!(condition(&rolled, "RolledBack"), "True/AlertFiring");

    // In tenant b, a wave created now is not held by it: it starts and reaches its
    // approval. So the alert is not in scope there, and the earlier wave kept its state.
    create(
        &client,
        &tenant_b,
        &alerting_wave("late", "support", "amer", alerts),
    )
    .await;
    wait_phase(
        &client,
        &tenant_b,
        "late",
        WavePhase::AwaitingApproval,
        Some(1),
    )
    .await;
    let b_after: MigrationWave = Api::namespaced(client.clone(), &tenant_b)
        .get("support-emea")
        .await
        .unwrap();
    assert_eq!(
        b_after.status.as_ref().unwrap().phase,
        WavePhase::AwaitingApproval
    );
    assert_eq!(
        b_after.status.unwrap().history.len(),
        b_before.status.unwrap().history.len(),
        "tenant b's wave was not touched"
    );
    assert_eq!(
        store.firing().len(),
        1,
        "the alert still fires, for tenant a"
    );
}

#[tokio::test]
async fn an_alert_without_a_namespace_acts_only_on_waves_that_accept_it() {
    let client = common::plane().client().await.unwrap();
    let ns = namespace_with_plan(&client, "unnamespaced", &["opted", "strict"]).await;
    let store = Arc::new(AlertStore::default());
    let (url, _server) = serve_receiver(TOKEN, store.clone()).await;
    let _controller = RunningController::start_with_services(
        &client,
        &ns,
        Services {
            alerts: store.clone(),
            ..Services::default()
        },
    );
    // A cluster-wide rule without a namespace label fires for the region.
    let (status, _) = post(
        &url,
        &one_alert(
            None,
            json!({"alertname": "RegionDown", "region": "emea"}),
            None,
            "fp-region",
        ),
    )
    .await;
    assert_eq!(status, 200);
    create(
        &client,
        &ns,
        &alerting_wave(
            "opted",
            "support",
            "emea",
            json!({"matchLabels": {"region": "emea"}, "acceptUnnamespaced": true}),
        ),
    )
    .await;
    create(
        &client,
        &ns,
        &alerting_wave(
            "strict",
            "sales",
            "emea",
            json!({"matchLabels": {"region": "emea"}}),
        ),
    )
    .await;
    let held = wait_held_by_alert(&client, &ns, "opted").await;
    assert!(
        held.spec.alerts.as_ref().unwrap().accept_unnamespaced,
        "the API server keeps acceptUnnamespaced (it is in the schema)"
    );
    wait_phase(&client, &ns, "strict", WavePhase::AwaitingApproval, Some(1)).await;
    let opted: MigrationWave = Api::namespaced(client.clone(), &ns)
        .get("opted")
        .await
        .unwrap();
    assert_eq!(opted.status.unwrap().phase, WavePhase::Pending);
}

#[tokio::test]
async fn an_alert_stops_counting_at_its_ends_at_without_a_resolved_notification() {
    let client = common::plane().client().await.unwrap();
    let ns = namespace_with_plan(&client, "expiry", &["support-emea"]).await;
    let store = Arc::new(AlertStore::default());
    let (url, _server) = serve_receiver(TOKEN, store.clone()).await;
    let _controller = RunningController::start_with_services(
        &client,
        &ns,
        Services {
            alerts: store.clone(),
            ..Services::default()
        },
    );
    let ends_at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(8);
    let (status, _) = post(
        &url,
        &one_alert(
            Some(&ns),
            json!({"alertname": "HandoffFailures", "team": "support"}),
            Some(ends_at.to_string()),
            "fp-expiring",
        ),
    )
    .await;
    assert_eq!(status, 200);
    create(
        &client,
        &ns,
        &alerting_wave(
            "support-emea",
            "support",
            "emea",
            json!({"matchLabels": {"team": "support"}}),
        ),
    )
    .await;
    wait_held_by_alert(&client, &ns, "support-emea").await;
    // No resolved notification comes. At endsAt the alert stops counting, and the
    // controller is woken for the wave, which starts.
    let started = wait_phase(
        &client,
        &ns,
        "support-emea",
        WavePhase::AwaitingApproval,
        Some(1),
    )
    .await;
    assert!(
        jiff::Timestamp::now() >= ends_at,
        "the wave started only once the alert had expired"
    );
    assert!(
        store.firing().is_empty(),
        "the expired alert left the store"
    );
    assert_ne!(condition(&started, "Progressing"), "False/AlertFiring");
}

#[tokio::test]
async fn the_store_is_bounded_and_refuses_new_alerts_rather_than_evicting() {
    let store = Arc::new(AlertStore::new(switchyard::alerts::StoreLimits {
        max_alerts: 3,
        max_alerts_per_namespace: 2,
        max_labels: 8,
        ..switchyard::alerts::StoreLimits::default()
    }));
    let (url, _server) = serve_receiver(TOKEN, store.clone()).await;
    let firing = |ns: &str, name: &str| json!({"status": "firing", "labels": {"alertname": name, "namespace": ns}, "fingerprint": name});
    let payload = |alerts: Vec<serde_json::Value>| json!({"version": "4", "status": "firing", "alerts": alerts});
    let (status, body) = post(
        &url,
        &payload(vec![
            firing("a", "A1"),
            firing("a", "A2"),
            firing("a", "A3"),
            firing("b", "B1"),
            firing("c", "C1"),
        ]),
    )
    .await;
    assert_eq!(status, 507, "{body}");
    assert!(
        body.contains("namespace a has as many firing alerts as allowed"),
        "{body}"
    );
    assert!(
        body.contains("the store of firing alerts is full"),
        "{body}"
    );
    let names: Vec<String> = store.firing().into_iter().map(|a| a.name).collect();
    assert_eq!(
        names,
        ["A1", "A2", "B1"],
        "what fit is recorded; nothing was evicted"
    );

    // Too many labels: 422 (retrying would not help).
    let labels: serde_json::Map<String, serde_json::Value> =
        (0..9).map(|i| (format!("l{i}"), json!("v"))).collect();
    let (status, body) = post(
        &url,
        &payload(vec![
            json!({"status": "firing", "labels": labels, "fingerprint": "big"}),
        ]),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("9 labels, more than the 8 allowed"), "{body}");

    // A repeat of a recorded alert is taken even when full; a resolution makes room.
    let (status, _) = post(&url, &payload(vec![firing("a", "A1")])).await;
    assert_eq!(status, 200);
    let resolved = json!({"status": "resolved", "labels": {"alertname": "B1", "namespace": "b"}, "fingerprint": "B1"});
    assert_eq!(post(&url, &payload(vec![resolved])).await.0, 200);
    let (status, body) = post(&url, &payload(vec![firing("c", "C1")])).await;
    assert_eq!((status, body.trim()), (200, r#"{"firing":3}"#));
}

// ---- The HTTP server ----

fn health() -> switchyard::http::Health {
    switchyard::http::Health {
        metrics: Arc::new(switchyard::metrics::Metrics::new()),
        readiness: Arc::default(),
        leadership: switchyard::leader::Leadership::always(),
        admission: Arc::new(switchyard::controller::AdmissionGuard::fixed(
            switchyard::engine::authority::Admission::Verified,
        )),
        stopping: Arc::default(),
    }
}

/// Serves the health routes and the receiver on a free loopback port with `limits`.
async fn serve_hardened(
    limits: switchyard::http::ServerLimits,
    body_timeout: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (
    std::net::SocketAddr,
    switchyard::http::Health,
    tokio::task::JoinHandle<()>,
) {
    use switchyard::alerts::receiver::{Token, TokenSource};
    let token = Token::load(&TokenSource::Literal(TOKEN.into()), None)
        .await
        .unwrap();
    let health = health();
    let app = switchyard::http::router(
        health.clone(),
        Some(switchyard::http::ReceiverConfig {
            token,
            alerts: Arc::default(),
            body_timeout,
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = switchyard::http::ServeOptions {
        name: "http",
        limits,
        tls,
        metrics: Some(health.metrics.clone()),
    };
    let server = tokio::spawn(switchyard::http::serve(
        listener,
        app,
        options,
        std::future::pending(),
    ));
    (addr, health, server)
}

/// Reads until the peer closes the connection (or resets it); fails after `within`.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server did not close the connection within {within:?}"
    );
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_or_body_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let limits = switchyard::http::ServerLimits {
        header_timeout: Duration::from_secs(1),
        max_connections: 8,
    };
    let (addr, _health, _server) = serve_hardened(limits, Duration::from_secs(1), None).await;

    // Slowloris: the request line and one header, then nothing.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /alertmanager HTTP/1.1\r\nhost: switchyard\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed by the header timeout, not at once: {:?}",
        started.elapsed()
    );

    // Complete headers, then a body that never arrives: 408, and the connection closes.
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(
            format!(
                "POST /alertmanager HTTP/1.1\r\nhost: switchyard\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"alerts\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut trickle, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // An idle kept-alive connection is closed too, after a complete request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: switchyard\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_at_once_with_a_503() {
    let limits = switchyard::http::ServerLimits {
        header_timeout: Duration::from_secs(60),
        max_connections: 2,
    };
    let (addr, health, _server) = serve_hardened(limits, Duration::from_secs(10), None).await;
    // Two connections that say nothing hold both slots.
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let answer = read_until_closed(&mut third, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.ends_with("too many connections\n"), "{answer}");

    // A slot that frees is used again.
    drop(first);
    let http = http_client();
    let url = format!("http://{addr}/healthz");
    common::operator::eventually(
        Duration::from_secs(10),
        "a request once a slot is free",
        || {
            let http = http.clone();
            let url = url.clone();
            async move {
                match http.get(&url).send().await {
                    Ok(response) if response.status() == 200 => Ok(()),
                    Ok(response) => Err(format!("{}", response.status())),
                    Err(err) => Err(err.to_string()),
                }
            }
        },
    )
    .await;
    let exposition = health.metrics.encode();
    let refused = exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"switchyard_http_connections_refused_total{listener="http"} "#)
        })
        .expect("the refusals are counted");
    assert!(refused.parse::<f64>().unwrap() >= 1.0, "{exposition}");
}

/// A CA and a serving certificate for localhost and 127.0.0.1, as PEM.
fn certificate(ca_name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = leaf.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// Writes `contents` to `path` atomically, as the kubelet updates a mounted Secret.
fn replace_file(path: &std::path::Path, contents: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn https_client(ca: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_receiver_speaks_tls_with_a_mounted_certificate_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let files = switchyard::http::TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let (ca, cert, key) = certificate("receiver-ca-1");
    replace_file(&files.cert, &cert);
    replace_file(&files.key, &key);
    let tls = switchyard::http::tls_config(&files).unwrap();
    let (addr, _health, _server) = serve_hardened(
        switchyard::http::ServerLimits::default(),
        Duration::from_secs(10),
        Some(tls),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/alertmanager", addr.port());
    let body = json!({"version": "4", "status": "resolved", "alerts": []});
    let response = https_client(&ca)
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Plain HTTP on the TLS port gets no answer.
    let plain = http_client()
        .post(format!("http://127.0.0.1:{}/alertmanager", addr.port()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // The Secret is renewed: new files, signed by another CA. New handshakes serve them.
    let (new_ca, new_cert, new_key) = certificate("receiver-ca-2");
    replace_file(&files.key, &new_key);
    replace_file(&files.cert, &new_cert);
    let renewed = https_client(&new_ca);
    common::operator::eventually(Duration::from_secs(10), "the renewed certificate", || {
        let renewed = renewed.clone();
        let url = url.clone();
        let body = body.clone();
        async move {
            let response = renewed
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            (response.status() == 200)
                .then_some(())
                .ok_or_else(|| response.status().to_string())
        }
    })
    .await;
    let old = https_client(&ca)
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await;
    assert!(old.is_err(), "the old certificate is no longer served");

    // Files that do not go together are refused at start.
    let (_, other_cert, _) = certificate("receiver-ca-3");
    replace_file(&files.cert, &other_cert);
    let err = switchyard::http::tls_config(&files).unwrap_err();
    assert!(err.to_string().contains("do not go together"), "{err}");
}

#[tokio::test]
async fn switchyard_run_serves_the_receiver_on_its_own_tls_listener() {
    let (_client, ns) = common::admin_in_fresh_namespace("run-tls").await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate("run-ca");
    let (cert_file, key_file, token_file) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("token"),
    );
    replace_file(&cert_file, &cert);
    replace_file(&key_file, &key);
    replace_file(&token_file, TOKEN);
    let receiver_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let operator = common::operator::Operator::start(
        common::plane().kubeconfig_path(),
        "run-tls",
        &[
            "--leader-election",
            "false",
            "--namespaces",
            &ns,
            "--receiver-token-file",
            token_file.to_str().unwrap(),
            "--receiver-addr",
            &receiver_addr.to_string(),
            "--receiver-tls-cert",
            cert_file.to_str().unwrap(),
            "--receiver-tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    let url = format!("https://127.0.0.1:{}/alertmanager", receiver_addr.port());
    let https = https_client(&ca);
    let body = json!({"version": "4", "status": "resolved", "alerts": []});
    common::operator::eventually(Duration::from_secs(30), "the TLS receiver answers", || {
        let https = https.clone();
        let url = url.clone();
        let body = body.clone();
        async move {
            let response = https
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            (response.status() == 200)
                .then_some(())
                .ok_or_else(|| response.status().to_string())
        }
    })
    .await;
    // The receiver moved: the main listener serves health and metrics only.
    assert_eq!(
        operator.post("/alertmanager", TOKEN, "{}").await.unwrap(),
        404
    );
    assert_eq!(operator.get("/healthz").await.unwrap().0, 200);
    let plain = http_client()
        .post(format!("http://{receiver_addr}/alertmanager"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
}
