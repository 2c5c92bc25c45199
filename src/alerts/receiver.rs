//! The Alertmanager webhook receiver: `POST /alertmanager`.
//!
//! - A bearer token is required and compared in constant time: without it, 401.
//! - A body over 1 MiB: 413. Malformed JSON: 400. Unknown fields are accepted.
//! - Firing alerts are recorded and the controller is woken at once for the waves they
//!   match; resolved alerts are forgotten and resume nothing.

use std::{path::PathBuf, sync::Arc};

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

use super::{AlertStore, WebhookPayload};

/// The path Alertmanager posts to.
pub const PATH: &str = "/alertmanager";
/// The largest accepted body.
pub const MAX_BODY: usize = 1024 * 1024;

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
}

/// The receiver's routes, to be served by the operator's HTTP server.
pub fn router(token: Token, store: Arc<AlertStore>, observe: Option<ResponseObserver>) -> Router {
    let state = ReceiverState {
        token,
        store,
        observe,
    };
    Router::new()
        .route(PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
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
    let firing = state.store.apply(&payload);
    info!(
        version = %payload.version,
        status = %payload.status,
        alerts = payload.alerts.len(),
        firing_now = firing,
        "Alertmanager notification"
    );
    (StatusCode::OK, format!("{{\"firing\":{firing}}}\n")).into_response()
}
