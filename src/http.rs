//! The operator's one HTTP server: `/healthz`, `/readyz`, `/metrics`, and the
//! Alertmanager receiver (`POST /alertmanager`).
//!
//! Only the leader takes alerts. Alerts live in the leader's memory, so a standby that
//! accepted one would keep it from the leader; it answers 503 and closes the connection,
//! and Alertmanager retries, on a new connection that the Service may send to the leader.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::alerts::{
    AlertStore,
    receiver::{self, Token},
};
use crate::controller::{AdmissionGuard, Readiness};
use crate::engine::authority::Admission;
use crate::leader::Leadership;
use crate::metrics::{self, Metrics};

/// What the HTTP server reports on.
#[derive(Clone)]
pub struct Health {
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Whether the controllers' caches have synced.
    pub readiness: Arc<Readiness>,
    /// Whether this replica leads.
    pub leadership: Leadership,
    /// Whether Switchyard's admission policies are in force.
    pub admission: Arc<AdmissionGuard>,
    /// Set when shutdown begins: the replica is no longer ready.
    pub stopping: Arc<AtomicBool>,
}

/// The server's routes; the receiver's only when it has a token.
pub fn router(health: Health, receiver: Option<(Token, Arc<AlertStore>)>) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(export))
        .with_state(health.clone());
    if let Some((token, alerts)) = receiver {
        let metrics = health.metrics.clone();
        let observe: receiver::ResponseObserver =
            Arc::new(move |code: StatusCode| metrics.receiver_request(code.as_u16()));
        app = app.merge(
            receiver::router(token, alerts, Some(observe))
                .layer(middleware::from_fn_with_state(health, leader_only)),
        );
    }
    app
}

async fn ready(State(health): State<Health>) -> (StatusCode, String) {
    if health.stopping.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    if !health.readiness.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the CRDs and the first sync of the caches\n".into(),
        );
    }
    let role = if health.leadership.is_leader() {
        "leader"
    } else {
        "standby"
    };
    // Missing policies do not make the replica unready (it still rolls back on metrics
    // and alerts), but the detail says that human actions are refused.
    let admission = match health.admission.current() {
        Admission::Missing { message } => {
            format!("; admission policies not in force, human actions are refused: {message}")
        }
        Admission::Trusted => "; human actions trusted without admission policies".into(),
        Admission::Unknown => "; admission policies not checked yet".into(),
        Admission::Verified => String::new(),
    };
    (StatusCode::OK, format!("ok ({role}){admission}\n"))
}

async fn export(State(health): State<Health>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        health.metrics.encode(),
    )
        .into_response()
}

async fn leader_only(State(health): State<Health>, request: Request, next: Next) -> Response {
    if health.leadership.is_leader() {
        return next.run(request).await;
    }
    health
        .metrics
        .receiver_request(StatusCode::SERVICE_UNAVAILABLE.as_u16());
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        "this replica is a standby; only the leader takes alerts\n",
    )
        .into_response();
    let headers = response.headers_mut();
    // A new connection lets the Service pick another replica for the retry.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn health(leadership: Leadership) -> Health {
        Health {
            metrics: Arc::new(Metrics::new()),
            readiness: Arc::default(),
            leadership,
            admission: Arc::new(AdmissionGuard::fixed(Admission::Verified)),
            stopping: Arc::default(),
        }
    }

    async fn call(app: &Router, method: &str, path: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, "Bearer s3cret")
            .body(Body::from(
                r#"{"version":"4","status":"firing","alerts":[]}"#,
            ))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn receiver() -> Option<(Token, Arc<AlertStore>)> {
        let token = Token::load(&receiver::TokenSource::Literal("s3cret".into()), None)
            .await
            .unwrap();
        Some((token, Arc::default()))
    }

    #[tokio::test]
    async fn not_ready_until_synced_and_not_ready_once_stopping() {
        let health = health(Leadership::always());
        let app = router(health.clone(), None);
        assert_eq!(call(&app, "GET", "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            call(&app, "GET", "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.readiness.expect(1);
        assert_eq!(
            call(&app, "GET", "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.readiness.mark_synced();
        assert_eq!(
            call(&app, "GET", "/readyz").await,
            (StatusCode::OK, "ok (leader)\n".into())
        );
        health.stopping.store(true, Ordering::Release);
        assert_eq!(
            call(&app, "GET", "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn readiness_says_when_human_actions_are_refused() {
        let health = Health {
            admission: Arc::new(AdmissionGuard::fixed(Admission::Missing {
                message: "ValidatingAdmissionPolicy x is missing".into(),
            })),
            ..health(Leadership::always())
        };
        health.readiness.expect(1);
        health.readiness.mark_synced();
        let (status, body) = call(&router(health, None), "GET", "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            "ok (leader); admission policies not in force, human actions are refused: \
             ValidatingAdmissionPolicy x is missing\n"
        );
    }

    #[tokio::test]
    async fn a_standby_refuses_alerts_and_counts_the_refusal() {
        let health = health(Leadership::elected());
        let app = router(health.clone(), receiver().await);
        let (status, _) = call(&app, "POST", receiver::PATH).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, metrics) = call(&app, "GET", "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            metrics.contains(r#"switchyard_receiver_requests_total{code="503"} 1"#),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn the_leader_takes_alerts_and_counts_the_answers() {
        let health = health(Leadership::always());
        let app = router(health.clone(), receiver().await);
        assert_eq!(call(&app, "POST", receiver::PATH).await.0, StatusCode::OK);
        let (_, metrics) = call(&app, "GET", "/metrics").await;
        assert!(
            metrics.contains(r#"switchyard_receiver_requests_total{code="200"} 1"#),
            "{metrics}"
        );
    }
}
