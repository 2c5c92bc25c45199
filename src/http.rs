//! The operator's HTTP servers: `/healthz`, `/readyz`, `/metrics`, and the
//! Alertmanager receiver (`POST /alertmanager`), on one listener or the receiver on a
//! listener of its own (optionally TLS).
//!
//! Every listener is hardened the same way ([`serve`]): HTTP/1.1 only; a client must send
//! a request's headers within the header timeout (which also closes idle keep-alive
//! connections and bounds a TLS handshake); request headers are at most 64 KiB; and at
//! most `max_connections` connections are open at once. A connection beyond that is
//! refused at once, not queued: on plain HTTP it gets a 503 with `Retry-After`, on TLS it
//! is closed, and it is logged and counted (`switchyard_http_connections_refused_total`).
//! Refusing keeps memory and file descriptors bounded whatever the clients do, and
//! Alertmanager retries a failed notification. Bodies are read only by the receiver,
//! under its body timeout and size limit.
//!
//! Only the leader takes alerts. Alerts live in the leader's memory, so a standby that
//! accepted one would keep it from the leader; it answers 503 and closes the connection,
//! and Alertmanager retries, on a new connection that the Service may send to the leader.

use std::{
    future::Future,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};

use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown, service::TowerToHyperService};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

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

/// What the receiver needs: its token, the store, and how long a body may take.
#[derive(Clone)]
pub struct ReceiverConfig {
    pub token: Token,
    pub alerts: Arc<AlertStore>,
    pub body_timeout: Duration,
}

impl ReceiverConfig {
    /// The receiver with the default body timeout.
    pub fn new(token: Token, alerts: Arc<AlertStore>) -> Self {
        Self {
            token,
            alerts,
            body_timeout: receiver::DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// The server's routes; the receiver's only when it has a token.
pub fn router(health: Health, receiver: Option<ReceiverConfig>) -> Router {
    let app = health_router(health.clone());
    match receiver {
        Some(receiver) => app.merge(receiver_router(health, receiver)),
        None => app,
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn health_router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(export))
        .with_state(health)
}

/// The receiver's routes, answered by the leader only.
pub fn receiver_router(health: Health, receiver: ReceiverConfig) -> Router {
    let metrics = health.metrics.clone();
    let observe: receiver::ResponseObserver =
        Arc::new(move |code: StatusCode| metrics.receiver_request(code.as_u16()));
    receiver::router_with_body_timeout(
        receiver.token,
        receiver.alerts,
        Some(observe),
        receiver.body_timeout,
    )
    .layer(middleware::from_fn_with_state(health, leader_only))
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

/// The limits of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// How long a client may take to send a request's headers, from the moment the
    /// server waits for them: after the connection opens, and after each response on a
    /// kept-alive connection (so this is also the idle timeout). It also bounds a TLS
    /// handshake.
    pub header_timeout: Duration,
    /// At most this many connections open at once; the next ones are refused.
    pub max_connections: usize,
}

/// The default header timeout.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default connection limit of a listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
/// The largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long running requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How one listener serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// The listener's name in logs and metrics: `http` or `receiver`.
    pub name: &'static str,
    pub limits: ServerLimits,
    /// TLS, when set: plain HTTP is then refused.
    pub tls: Option<Arc<ServerConfig>>,
    /// Counts refused connections.
    pub metrics: Option<Arc<Metrics>>,
}

/// What a connection over the limit gets on plain HTTP, before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-type: text/plain\r\ncontent-length: 21\r\n\r\ntoo many connections\n";

/// Serves `app` on `listener` with the limits of `options` until `shutdown` resolves;
/// then lets running requests finish (at most a few seconds).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(options.limits.max_connections));
    let graceful = GracefulShutdown::new();
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let last_warning = AtomicU64::new(0);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(options.limits.header_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    let service = TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: back off a little, do not spin.
                    warn!(listener = options.name, error = %err, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if acceptor.is_none() {
                // A fresh socket's send buffer is empty: this never blocks.
                let _ = stream.try_write(REFUSED);
            }
            drop(stream);
            if let Some(metrics) = &options.metrics {
                metrics.http_connection_refused(options.name);
            }
            warn_at_most_every_10s(&last_warning, || {
                warn!(
                    listener = options.name,
                    %peer,
                    max_connections = options.limits.max_connections,
                    "refused a connection: as many connections are open as allowed"
                );
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let service = service.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let header_timeout = options.limits.header_timeout;
        let name = options.name;
        tokio::spawn(async move {
            let _permit = permit;
            let result = match acceptor {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            debug!(listener = name, %peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(listener = name, %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await
                }
            };
            if let Err(err) = result {
                debug!(listener = name, %peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            listener = options.name,
            "requests still running after {SHUTDOWN_GRACE:?} are dropped"
        );
    }
}

fn warn_at_most_every_10s(last: &AtomicU64, warn: impl FnOnce()) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let before = last.load(Ordering::Relaxed);
    if now >= before + 10
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        warn();
    }
}

/// The files of a TLS certificate (PEM, the chain leaf first) and its private key (PEM),
/// such as `tls.crt` and `tls.key` of a mounted `kubernetes.io/tls` Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read the certificate file {path}: {why}")]
    Cert { path: PathBuf, why: String },
    #[error("could not read the private key file {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("the certificate {cert} and the key {key} do not go together: {why}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("could not set up TLS: {0}")]
    Config(String),
}

/// A server configuration (TLS 1.2 and 1.3, ring, HTTP/1.1) serving the certificate of
/// `files`. The files are read now, and again at a handshake after they changed (a
/// Secret's mounted files are replaced when the Secret is); a change that cannot be
/// used is logged and the previous certificate kept.
pub fn tls_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCert::load(files.clone(), provider.clone())?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.cert, &files.key].map(|path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_error = |why: String| TlsError::Cert {
        path: files.cert.clone(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("no PEM certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        why: e.to_string(),
    })?;
    CertifiedKey::from_der(certs, key, provider)
        .map(Arc::new)
        .map_err(|e| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            why: e.to_string(),
        })
}

#[derive(Debug)]
struct ReloadingCert {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<(Stamp, Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    fn load(files: TlsFiles, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let stamp = stamp(&files);
        let key = load_pair(&files, &provider)?;
        Ok(Self {
            files,
            provider,
            current: RwLock::new((stamp, key)),
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let now = stamp(&self.files);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == now {
                return Some(current.1.clone());
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.0 != now {
            // Whatever happens, do not try these files again until they change.
            current.0 = now;
            match load_pair(&self.files, &self.provider) {
                Ok(key) => {
                    info!(cert = %self.files.cert.display(), "the receiver's TLS certificate changed: serving the new one");
                    current.1 = key;
                }
                Err(err) => {
                    warn!(error = %err, "the receiver's TLS certificate changed but cannot be used: still serving the previous one");
                }
            }
        }
        Some(current.1.clone())
    }
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

    async fn receiver() -> Option<ReceiverConfig> {
        let token = Token::load(&receiver::TokenSource::Literal("s3cret".into()), None)
            .await
            .unwrap();
        Some(ReceiverConfig::new(token, Arc::default()))
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
