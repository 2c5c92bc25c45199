//! The Alertmanager webhook receiver: `POST /alertmanager`.
//!
//! - A bearer token is required and compared in constant time: without it, 401.
//! - A body over 1 MiB: 413. A body that does not arrive within the body timeout: 408.
//!   Malformed JSON: 400. Unknown fields are accepted.
//! - Firing alerts are recorded and the controller is woken at once for the waves they
//!   match; resolved alerts are forgotten and resume nothing.
//! - A firing alert the store cannot take (full, or its namespace full) is refused and
//!   nothing recorded is evicted: 507, which Alertmanager retries. An alert with too many
//!   labels: 422, which it does not retry. The other alerts of the notification are
//!   recorded either way.

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::post,
};
use k8s_openapi::api::core::v1::Secret;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::{AlertStore, Refusal, WebhookPayload};

/// The path Alertmanager posts to.
pub const PATH: &str = "/alertmanager";
/// The largest accepted body.
pub const MAX_BODY: usize = 1024 * 1024;
/// How long a client may take to send a request's body, by default.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the receiver's bearer token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A file holding the token (surrounding whitespace ignored), e.g. a mounted Secret.
    File(PathBuf),
    /// A key of a Secret, read through the API at start.
    Secret {
        namespace: String,
        name: String,
        key: String,
    },
    /// The token itself (tests, and the local demo).
    Literal(String),
}

/// Why the token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("could not read the receiver token file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not read Secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    MissingKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("the receiver token is empty; Alertmanager could not authenticate")]
    Empty,
}

/// A loaded bearer token.
#[derive(Clone)]
pub struct Token(Arc<Vec<u8>>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Loads the token from its source.
    pub async fn load(
        source: &TokenSource,
        client: Option<&kube::Client>,
    ) -> Result<Self, TokenError> {
        let raw = match source {
            TokenSource::Literal(token) => token.clone().into_bytes(),
            TokenSource::File(path) => std::fs::read(path).map_err(|source| TokenError::File {
                path: path.clone(),
                source,
            })?,
            TokenSource::Secret {
                namespace,
                name,
                key,
            } => {
                let secret_error = |source| TokenError::Secret {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source: Box::new(source),
                };
                let client = client.ok_or_else(|| TokenError::MissingKey {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    key: key.clone(),
                })?;
                let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
                let secret = secrets.get(name).await.map_err(secret_error)?;
                secret
                    .data
                    .and_then(|mut data| data.remove(key))
                    .map(|bytes| bytes.0)
                    .ok_or_else(|| TokenError::MissingKey {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        key: key.clone(),
                    })?
            }
        };
        let trimmed = String::from_utf8_lossy(&raw).trim().as_bytes().to_vec();
        if trimmed.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(Self(Arc::new(trimmed)))
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        // ConstantTimeEq on slices of different lengths returns false without leaking
        // where they differ.
        presented.trim().as_bytes().ct_eq(&self.0).into()
    }
}

/// Counts of answers by status code, for metrics.
pub type ResponseObserver = Arc<dyn Fn(StatusCode) + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    token: Token,
    store: Arc<AlertStore>,
    observe: Option<ResponseObserver>,
    body_timeout: Duration,
}

/// The receiver's routes, to be served by the operator's HTTP server, with the default
/// body timeout.
pub fn router(token: Token, store: Arc<AlertStore>, observe: Option<ResponseObserver>) -> Router {
    router_with_body_timeout(token, store, observe, DEFAULT_BODY_TIMEOUT)
}

/// The receiver's routes; a request whose body has not arrived within `body_timeout`
/// (after its headers) is answered 408 and its connection closed.
pub fn router_with_body_timeout(
    token: Token,
    store: Arc<AlertStore>,
    observe: Option<ResponseObserver>,
    body_timeout: Duration,
) -> Router {
    let state = ReceiverState {
        token,
        store,
        observe,
        body_timeout,
    };
    Router::new()
        .route(PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route_layer(middleware::from_fn_with_state(state.clone(), body_deadline))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

async fn count(State(state): State<ReceiverState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(observe) = &state.observe {
        observe(response.status());
    }
    response
}

/// Reading the body (inside the handler) must finish within the body timeout: a client
/// that trickles its body cannot hold a connection for long.
async fn body_deadline(
    State(state): State<ReceiverState>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(state.body_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            warn!(timeout = ?state.body_timeout, "refused an Alertmanager notification whose body did not arrive in time");
            let mut response = (
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {:?}\n", state.body_timeout),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn authenticate(
    State(state): State<ReceiverState>,
    request: Request,
    next: Next,
) -> Response {
    if state.token.accepts(request.headers()) {
        return next.run(request).await;
    }
    warn!("refused an Alertmanager notification without the right bearer token");
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required\n",
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// How many refusals a log line and an answer name; the rest are counted.
const NAMED_REFUSALS: usize = 5;

async fn receive(State(state): State<ReceiverState>, body: Bytes) -> Response {
    let payload: WebhookPayload = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is not an Alertmanager webhook payload: {err}\n"),
            )
                .into_response();
        }
    };
    let applied = state.store.apply(&payload);
    info!(
        version = %payload.version,
        status = %payload.status,
        alerts = payload.alerts.len(),
        firing_now = applied.firing,
        refused = applied.refused.len(),
        "Alertmanager notification"
    );
    let firing = applied.firing;
    if applied.refused.is_empty() {
        return (StatusCode::OK, format!("{{\"firing\":{firing}}}\n")).into_response();
    }
    let named: Vec<String> = applied
        .refused
        .iter()
        .take(NAMED_REFUSALS)
        .map(Refusal::to_string)
        .collect();
    let more = applied.refused.len().saturating_sub(NAMED_REFUSALS);
    let retryable = applied.refused.iter().any(Refusal::retryable);
    warn!(
        refused = applied.refused.len(),
        first = %named.join("; "),
        limits = ?state.store.limits(),
        "firing alerts refused; the alerts already recorded keep acting"
    );
    // 507 when room may come (Alertmanager retries 5xx); 422 when the alerts
    // themselves are too large (a retry would not help).
    let status = if retryable {
        StatusCode::INSUFFICIENT_STORAGE
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = serde_json::json!({
        "firing": firing,
        "refused": applied.refused.len(),
        "reasons": named,
        "moreReasons": more,
    });
    (status, format!("{body}\n")).into_response()
}
