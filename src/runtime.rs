//! `switchyard run`: the controllers, the analyzer, the leader election and the HTTP
//! server (health, readiness, metrics and the Alertmanager receiver) in one process.
//!
//! Start-up: serve HTTP (live, not ready) → wait for Switchyard's CRDs → campaign for
//! the Lease and start the controllers, which sync their caches as standbys → ready.
//! Shutdown (SIGTERM or Ctrl-C): not ready → no new reconciles, the running ones finish
//! → stop acting and release the Lease, so a standby takes over at once → exit 0.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, runtime::wait::Condition};
use tracing::{info, warn};

use crate::alerts::{
    AlertStore, StoreLimits,
    receiver::{Token, TokenError, TokenSource},
};
use crate::analysis::{Analyzer, Prometheus, PrometheusSettings, PrometheusSetupError};
use crate::controller::{self, AdmissionGuard, Readiness, Services, Settings, Shutdown, Stats};
use crate::http::{ReceiverConfig, ServeOptions, ServerLimits, TlsError, TlsFiles};
use crate::leader::{Election, Leadership, LeaseSettings, MIN_LEASE_DURATION};
use crate::metrics::Metrics;

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// The CRDs Switchyard cannot run without.
const OUR_CRDS: [&str; 2] = [
    "cutoverplans.switchyard.dev",
    "migrationwaves.switchyard.dev",
];
/// The Gateway API's HTTPRoute CRD; without it, HTTPRoutes are not watched.
const HTTPROUTE_CRD: &str = "httproutes.gateway.networking.k8s.io";
/// How long running reconciles may take to finish at shutdown. Under Kubernetes' default
/// grace period (30 s), so that the Lease is still released before SIGKILL.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest wait between two looks at the CRDs.
const MAX_CRD_POLL: Duration = Duration::from_secs(30);

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Settings of `switchyard run`; every flag has an environment-variable fallback.
#[derive(Clone, Debug, clap::Args)]
pub struct RunOptions {
    /// Watch only these namespaces (comma-separated); all namespaces when empty or
    /// omitted. Each namespace gets its own namespaced watches, so namespaced RBAC is
    /// enough.
    #[arg(
        long,
        alias = "namespace",
        env = "SWITCHYARD_NAMESPACES",
        value_delimiter = ',',
        value_name = "NS[,NS...]"
    )]
    pub namespaces: Vec<String>,
    /// Where the HTTP server (/healthz, /readyz, /metrics, and the Alertmanager receiver
    /// unless --receiver-addr moves it) listens.
    #[arg(long, env = "SWITCHYARD_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// How long a client may take to send a request's headers (also the idle timeout of a
    /// kept-alive connection, and the limit of a TLS handshake), on every listener.
    #[arg(long, env = "SWITCHYARD_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub http_header_timeout: Duration,
    /// How long a client may take to send the body of a notification to the receiver,
    /// once its headers have arrived.
    #[arg(long, env = "SWITCHYARD_HTTP_BODY_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub http_body_timeout: Duration,
    /// At most this many connections open at once on each listener; more are refused
    /// (a 503 on plain HTTP, closed on TLS).
    #[arg(
        long,
        env = "SWITCHYARD_HTTP_MAX_CONNECTIONS",
        default_value_t = crate::http::DEFAULT_MAX_CONNECTIONS,
        value_parser = parse_count
    )]
    pub http_max_connections: usize,
    /// How logs are written: text, or one JSON object per line.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Elect a leader through a Lease, so that several replicas can run: one acts, the
    /// others stand by with warm caches. Turn off only when exactly one replica runs.
    #[arg(
        long,
        env = "SWITCHYARD_LEADER_ELECTION",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "true|false"
    )]
    pub leader_election: bool,
    /// The name of the leader Lease.
    #[arg(long, env = "SWITCHYARD_LEASE_NAME", default_value = "switchyard")]
    pub lease_name: String,
    /// The namespace of the leader Lease; by default $POD_NAMESPACE, else the service
    /// account's namespace, else `default`.
    #[arg(long, env = "SWITCHYARD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the Lease stays valid after the leader's last renewal: about the
    /// failover time when a leader dies without releasing it. Whole seconds, at least 2s.
    #[arg(
        long,
        env = "SWITCHYARD_LEASE_DURATION",
        default_value = "15s",
        value_parser = parse_lease_duration
    )]
    pub lease_duration: Duration,
    /// Keep the label `switchyard.dev/leader: "true"` on this replica's own Pod (named by
    /// $POD_NAME in $POD_NAMESPACE) while it leads, so that a Service selecting it sends
    /// Alertmanager's notifications to the leader only. Needs `patch` on that Pod.
    #[arg(
        long,
        env = "SWITCHYARD_LABEL_LEADER_POD",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "true|false"
    )]
    pub label_leader_pod: bool,
    /// This replica's identity in the Lease and in Events; by default HOSTNAME-PID.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Apply human actions even when Switchyard's admission policies are not installed.
    /// Dangerous: without them nothing vouches for the user recorded in an action, so
    /// anyone who may patch a wave or plan can approve or roll back as anyone. Only for
    /// clusters that enforce the same rules some other way.
    #[arg(
        long,
        env = "SWITCHYARD_TRUST_ACTIONS_WITHOUT_ADMISSION_POLICIES",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "true|false"
    )]
    pub trust_actions_without_admission_policies: bool,
    /// The Prometheus base URL for analysis and gates, e.g. http://prometheus:9090.
    /// Without it, every metric counts as an Error, which pauses waves by default.
    #[arg(long, env = "SWITCHYARD_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// A file holding a bearer token to send to Prometheus.
    #[arg(long, env = "SWITCHYARD_PROMETHEUS_TOKEN_FILE")]
    pub prometheus_token_file: Option<PathBuf>,
    /// How long one Prometheus query may take.
    #[arg(long, env = "SWITCHYARD_PROMETHEUS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub prometheus_timeout: Duration,
    /// At most this many Prometheus queries at once.
    #[arg(
        long,
        env = "SWITCHYARD_PROMETHEUS_MAX_CONCURRENT",
        default_value_t = 8
    )]
    pub prometheus_max_concurrent: usize,
    /// A file holding the bearer token Alertmanager must present.
    #[arg(
        long,
        env = "SWITCHYARD_RECEIVER_TOKEN_FILE",
        conflicts_with = "receiver_token_secret"
    )]
    pub receiver_token_file: Option<PathBuf>,
    /// The Secret key holding the receiver's token, as NAMESPACE/NAME/KEY.
    #[arg(long, env = "SWITCHYARD_RECEIVER_TOKEN_SECRET", value_parser = parse_secret_ref)]
    pub receiver_token_secret: Option<(String, String, String)>,
    /// Serve the Alertmanager receiver on this address, on a listener of its own, instead
    /// of on --http-addr. Needed for TLS.
    #[arg(long, env = "SWITCHYARD_RECEIVER_ADDR")]
    pub receiver_addr: Option<SocketAddr>,
    /// A PEM certificate (chain) for the receiver: it then speaks HTTPS only. Typically
    /// `tls.crt` of a mounted `kubernetes.io/tls` Secret; read again when it changes.
    #[arg(
        long,
        env = "SWITCHYARD_RECEIVER_TLS_CERT",
        requires_all = ["receiver_tls_key", "receiver_addr"]
    )]
    pub receiver_tls_cert: Option<PathBuf>,
    /// The PEM private key of --receiver-tls-cert (`tls.key` of the Secret).
    #[arg(
        long,
        env = "SWITCHYARD_RECEIVER_TLS_KEY",
        requires = "receiver_tls_cert"
    )]
    pub receiver_tls_key: Option<PathBuf>,
    /// At most this many firing alerts are held; a new one beyond is refused (507, which
    /// Alertmanager retries), and none held is evicted.
    #[arg(
        long,
        env = "SWITCHYARD_RECEIVER_MAX_ALERTS",
        default_value_t = crate::alerts::DEFAULT_MAX_ALERTS,
        value_parser = parse_count
    )]
    pub receiver_max_alerts: usize,
    /// At most this many firing alerts of one namespace (alerts without a namespace
    /// label share one bucket), so that one tenant cannot fill the store.
    #[arg(
        long,
        env = "SWITCHYARD_RECEIVER_MAX_ALERTS_PER_NAMESPACE",
        default_value_t = crate::alerts::DEFAULT_MAX_ALERTS_PER_NAMESPACE,
        value_parser = parse_count
    )]
    pub receiver_max_alerts_per_namespace: usize,
    /// How long a firing alert counts after the last notification that reported it
    /// (unless its endsAt is earlier). Set it above Alertmanager's repeat_interval plus
    /// group_interval; a lost "resolved" keeps acting this long at most.
    #[arg(
        long,
        env = "SWITCHYARD_RECEIVER_ALERT_TTL",
        default_value = "6h",
        value_parser = parse_positive_duration
    )]
    pub receiver_alert_ttl: Duration,
    /// Alertmanager's base URL, e.g. http://alertmanager:9093. Webhooks reach the leader
    /// only, so at each takeover (and at start) the leader reads the firing alerts from
    /// Alertmanager's API (`GET /api/v2/alerts`: active, not silenced, not inhibited).
    /// Until that read has worked, waves with `alerts` make no forward move (condition
    /// Progressing, reason AlertsUnknown); rollbacks and pauses still happen. Without
    /// it, a new leader knows only the notifications it receives itself.
    #[arg(long, env = "SWITCHYARD_ALERTMANAGER_URL")]
    pub alertmanager_url: Option<String>,
    /// How long one read of Alertmanager's alerts may take.
    #[arg(long, env = "SWITCHYARD_ALERTMANAGER_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub alertmanager_timeout: Duration,
    /// At most this many reconciles at once, in each controller and namespace. Every
    /// reconcile reads from the API server; more run the API server harder.
    #[arg(
        long,
        env = "SWITCHYARD_MAX_CONCURRENT_RECONCILES",
        default_value_t = crate::controller::DEFAULT_MAX_CONCURRENT_RECONCILES,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_concurrent_reconciles: u16,
    /// Each write to the API server is given up after this long, or at the end of the
    /// leader's term if that comes first. A write given up may still land; its
    /// resourceVersion precondition keeps it from overwriting a newer leader's write.
    #[arg(
        long,
        env = "SWITCHYARD_API_WRITE_TIMEOUT",
        default_value = "5s",
        value_parser = parse_positive_duration
    )]
    pub api_write_timeout: Duration,
    /// Also export each wave's own phase and target weight (`switchyard_wave_phase`,
    /// `switchyard_wave_target_weight`): eleven series per wave, so off by default;
    /// `switchyard_waves` counts waves by namespace and phase either way.
    #[arg(
        long,
        env = "SWITCHYARD_PER_WAVE_METRICS",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "true|false"
    )]
    pub per_wave_metrics: bool,
}

impl RunOptions {
    /// The bounds of the store of firing alerts.
    pub fn store_limits(&self) -> StoreLimits {
        StoreLimits {
            max_alerts: self.receiver_max_alerts,
            max_alerts_per_namespace: self.receiver_max_alerts_per_namespace,
            ttl: self.receiver_alert_ttl,
            ..StoreLimits::default()
        }
    }

    /// The limits of each listener.
    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            header_timeout: self.http_header_timeout,
            max_connections: self.http_max_connections,
        }
    }

    /// The receiver's certificate files, when it speaks TLS.
    pub fn receiver_tls(&self) -> Option<TlsFiles> {
        match (&self.receiver_tls_cert, &self.receiver_tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// The namespaces to watch, without blanks or repeats; empty for all namespaces.
    pub fn watched_namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = Vec::new();
        for namespace in self.namespaces.iter().map(|n| n.trim()) {
            if !namespace.is_empty() && !namespaces.iter().any(|n| n == namespace) {
                namespaces.push(namespace.to_owned());
            }
        }
        namespaces
    }

    /// The Lease this replica campaigns for, with the documented fallbacks.
    pub fn lease(&self) -> LeaseSettings {
        LeaseSettings {
            name: self.lease_name.clone(),
            namespace: lease_namespace(
                self.lease_namespace.as_deref(),
                std::env::var("POD_NAMESPACE").ok().as_deref(),
                Path::new(SERVICE_ACCOUNT_NAMESPACE),
            ),
            identity: self.identity(),
            duration: self.lease_duration,
        }
    }

    /// This replica's identity: --identity ($POD_NAME), else HOSTNAME-PID.
    pub fn identity(&self) -> String {
        match self.identity.as_deref().map(str::trim) {
            Some(identity) if !identity.is_empty() => identity.to_owned(),
            _ => format!("{}-{}", hostname(), std::process::id()),
        }
    }
}

/// The first non-blank of: the flag (or $SWITCHYARD_LEASE_NAMESPACE), $POD_NAMESPACE,
/// the service account's namespace file, `default`.
fn lease_namespace(flag: Option<&str>, pod_namespace: Option<&str>, file: &Path) -> String {
    let from_file = std::fs::read_to_string(file).ok();
    [flag, pod_namespace, from_file.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|namespace| !namespace.is_empty())
        .unwrap_or("default")
        .to_owned()
}

fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .chain(std::env::var("HOSTNAME").ok())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "switchyard".into())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::api::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(err) => Err(format!("{s:?} is not a whole number: {err}")),
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let duration = parse_duration(s)?;
    if duration.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(duration)
}

fn parse_lease_duration(s: &str) -> Result<Duration, String> {
    let duration = parse_duration(s)?;
    if duration < MIN_LEASE_DURATION {
        return Err(format!(
            "the lease duration must be at least {MIN_LEASE_DURATION:?}"
        ));
    }
    // The Lease counts whole seconds.
    Ok(Duration::from_secs(duration.as_secs()))
}

fn parse_secret_ref(s: &str) -> Result<(String, String, String), String> {
    match s.split('/').collect::<Vec<_>>().as_slice() {
        [namespace, name, key] if !namespace.is_empty() && !name.is_empty() && !key.is_empty() => {
            Ok(((*namespace).into(), (*name).into(), (*key).into()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME/KEY")),
    }
}

/// Why `switchyard run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "--label-leader-pod needs $POD_NAME and $POD_NAMESPACE (from the downward API) to name this replica's Pod"
    )]
    OwnPodUnknown,
    #[error("could not connect to the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Prometheus(#[from] PrometheusSetupError),
    #[error("could not read the Prometheus token file {path}: {source}")]
    PrometheusToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ReceiverToken(#[from] TokenError),
    #[error(transparent)]
    Alertmanager(#[from] crate::alerts::rebuild::SetupError),
    #[error("the receiver's TLS certificate: {0}")]
    ReceiverTls(#[from] TlsError),
    #[error(
        "--receiver-tls-cert and --receiver-addr need a receiver token (--receiver-token-file or --receiver-token-secret): without one the receiver is off"
    )]
    ReceiverOff,
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs until Ctrl-C or SIGTERM, then shuts down gracefully.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    // kube and reqwest use rustls with the ring provider; aws-lc is never built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(RunError::Client)?;
    let own_pod = if options.label_leader_pod {
        match (std::env::var("POD_NAMESPACE"), std::env::var("POD_NAME")) {
            (Ok(namespace), Ok(pod)) if !namespace.is_empty() && !pod.is_empty() => {
                Some((namespace, pod))
            }
            _ => return Err(RunError::OwnPodUnknown),
        }
    } else {
        None
    };
    let metrics = Arc::new(Metrics::with_per_wave_series(options.per_wave_metrics));
    let leadership = if options.leader_election {
        Leadership::elected()
    } else {
        Leadership::always()
    };
    let services = Services {
        stats: Arc::new(Stats::default()),
        analyzer: Arc::new(
            Analyzer::new(prometheus(&options)?, options.prometheus_max_concurrent)
                .with_metrics(metrics.clone()),
        ),
        alerts: Arc::new(match &options.alertmanager_url {
            Some(_) => AlertStore::new(options.store_limits()).rebuilt_at_takeover(),
            None => AlertStore::new(options.store_limits()),
        }),
        metrics: metrics.clone(),
        leadership: leadership.clone(),
        readiness: Arc::new(Readiness::default()),
        admission: Arc::new(if options.trust_actions_without_admission_policies {
            warn!(
                "--trust-actions-without-admission-policies: recorded identities are believed \
                 without Switchyard's admission policies; anyone who may patch a wave can act as anyone"
            );
            AdmissionGuard::trusting()
        } else {
            AdmissionGuard::checking()
        }),
    };
    let receiver = match receiver_token_source(&options) {
        Some(source) => Some(ReceiverConfig {
            token: Token::load(&source, Some(&client)).await?,
            alerts: services.alerts.clone(),
            body_timeout: options.http_body_timeout,
        }),
        None => {
            if options.receiver_addr.is_some() || options.receiver_tls().is_some() {
                return Err(RunError::ReceiverOff);
            }
            info!("no receiver token configured: the Alertmanager receiver is off");
            None
        }
    };
    let tls = options
        .receiver_tls()
        .map(|files| crate::http::tls_config(&files))
        .transpose()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let health = crate::http::Health {
        metrics: metrics.clone(),
        readiness: services.readiness.clone(),
        admission: services.admission.clone(),
        leadership: leadership.clone(),
        stopping: stopping.clone(),
    };
    let (stop_serving, serving_stopped) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut serving_stopped = serving_stopped.clone();
        async move {
            let _ = serving_stopped.wait_for(|stop| *stop).await;
        }
    };
    let limits = options.server_limits();
    let mut servers = Vec::new();
    let (app, receiver_apart) = match (options.receiver_addr, receiver) {
        (Some(addr), Some(receiver)) => (
            crate::http::health_router(health.clone()),
            Some((addr, crate::http::receiver_router(health.clone(), receiver))),
        ),
        (_, receiver) => (crate::http::router(health.clone(), receiver), None),
    };
    let listener = listen(options.http_addr).await?;
    info!(addr = %options.http_addr, ?limits, "serving HTTP");
    servers.push(tokio::spawn(crate::http::serve(
        listener,
        app,
        ServeOptions {
            name: "http",
            limits,
            tls: None,
            metrics: Some(metrics.clone()),
        },
        stopped(),
    )));
    if let Some((addr, app)) = receiver_apart {
        let listener = listen(addr).await?;
        info!(%addr, tls = tls.is_some(), "serving the Alertmanager receiver");
        servers.push(tokio::spawn(crate::http::serve(
            listener,
            app,
            ServeOptions {
                name: "receiver",
                limits,
                tls,
                metrics: Some(metrics.clone()),
            },
            stopped(),
        )));
    }
    tokio::spawn(report_leadership(leadership.clone(), metrics.clone()));
    match &options.alertmanager_url {
        Some(url) => {
            let api =
                crate::alerts::rebuild::AlertmanagerApi::new(url, options.alertmanager_timeout)?;
            info!(%url, "the firing alerts are read from Alertmanager at each takeover");
            tokio::spawn(crate::alerts::rebuild::keep_rebuilt(
                services.alerts.clone(),
                api,
                leadership.clone(),
            ));
        }
        None if options.leader_election => warn!(
            "no --alertmanager-url: a replica that takes over knows only the alerts notified to it \
             from then on, not those that fired before"
        ),
        None => {}
    }

    let shutdown = controller::shutdown_on(shutdown_signal());
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            stopping.store(true, Ordering::Release);
            info!("shutting down: no new reconciles; letting the running ones finish");
        }
    });
    let crds_installed = tokio::select! {
        () = wait_for_crds(&client) => true,
        () = shutdown.clone() => false,
    };
    if crds_installed {
        let identity = options.identity();
        let settings = Settings {
            namespaces: options.watched_namespaces(),
            gateway_api: gateway_api_installed(&client).await,
            instance: Some(identity),
            max_concurrent_reconciles: options.max_concurrent_reconciles,
            api_write_timeout: options.api_write_timeout,
            ..Settings::default()
        };
        info!(namespaces = ?settings.namespaces, "starting the controllers (an empty list means all namespaces)");
        let election = options
            .leader_election
            .then(|| Election::start(client.clone(), options.lease(), leadership.clone()));
        if let Some((namespace, pod)) = &own_pod {
            tokio::spawn(crate::leader::label_own_pod(
                client.clone(),
                namespace.clone(),
                pod.clone(),
                leadership.clone(),
                // Not fenced by the term: the label must come off after it ends.
                crate::writes::Writes::new(
                    Leadership::always(),
                    metrics.clone(),
                    options.api_write_timeout,
                ),
            ));
        }
        drain(
            controller::run_until(client, settings, services, shutdown.clone()),
            shutdown,
        )
        .await;
        if let Some(election) = election {
            election.release().await;
        }
    }
    let _ = stop_serving.send(true);
    for server in servers {
        if let Err(err) = server.await {
            warn!(error = %err, "the HTTP server task failed");
        }
    }
    info!("stopped");
    Ok(())
}

async fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener, RunError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Listen { addr, source })
}

fn prometheus(options: &RunOptions) -> Result<Option<Prometheus>, RunError> {
    let Some(url) = &options.prometheus_url else {
        return Ok(None);
    };
    let bearer_token = match &options.prometheus_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| RunError::PrometheusToken {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    Ok(Some(Prometheus::new(&PrometheusSettings {
        url: url.clone(),
        bearer_token,
        timeout: options.prometheus_timeout,
        max_concurrent: options.prometheus_max_concurrent,
    })?))
}

fn receiver_token_source(options: &RunOptions) -> Option<TokenSource> {
    match (&options.receiver_token_file, &options.receiver_token_secret) {
        (Some(path), _) => Some(TokenSource::File(path.clone())),
        (None, Some((namespace, name, key))) => Some(TokenSource::Secret {
            namespace: namespace.clone(),
            name: name.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
    }
}

/// Runs the controllers until they have drained after `shutdown`, or until
/// [`DRAIN_TIMEOUT`] after it; then drops them, which cancels what still runs.
async fn drain(controllers: impl std::future::Future<Output = ()>, shutdown: Shutdown) {
    let deadline = async {
        shutdown.await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        () = controllers => info!("the running reconciles have finished"),
        () = deadline => warn!("reconciles still running after {DRAIN_TIMEOUT:?} are cancelled"),
    }
}

/// Keeps `switchyard_leader` current, and drops the wave series of a replica that stops
/// leading: only the leader knows the waves' state.
async fn report_leadership(leadership: Leadership, metrics: Arc<Metrics>) {
    let mut changes = leadership.subscribe();
    loop {
        let leading = *changes.borrow_and_update();
        metrics.set_leader(leading);
        if !leading {
            metrics.forget_all_waves();
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Waits until Switchyard's CRDs are installed and Established, looking again with
/// backoff, so that the operator can be installed before its CRDs.
async fn wait_for_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut delay = Duration::from_secs(1);
    loop {
        let mut waiting = Vec::new();
        for name in OUR_CRDS {
            match crds.get_opt(name).await {
                Ok(crd) if established(crd.as_ref()) => {}
                Ok(Some(_)) => waiting.push(format!("{name} is not Established yet")),
                Ok(None) => waiting.push(format!("{name} is not installed")),
                Err(err) => waiting.push(format!("{name} could not be read: {err}")),
            }
        }
        if waiting.is_empty() {
            info!("Switchyard's CRDs are Established");
            return;
        }
        let hint = if waiting.iter().any(|w| w.ends_with("is not installed")) {
            " (install them first: `switchyard crds | kubectl apply -f -`, or the chart's crds/)"
        } else {
            ""
        };
        warn!(
            "waiting for Switchyard's CRDs: {}{hint}; looking again in {delay:?}",
            waiting.join("; ")
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_CRD_POLL);
    }
}

fn established(crd: Option<&CustomResourceDefinition>) -> bool {
    kube::runtime::wait::conditions::is_crd_established().matches_object(crd)
}

/// Whether the Gateway API's HTTPRoute is served. When it is not, routes are not
/// watched, and plans must route through a ConfigMap.
async fn gateway_api_installed(client: &Client) -> bool {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.get_opt(HTTPROUTE_CRD).await {
        Ok(crd) if established(crd.as_ref()) => true,
        Ok(_) => {
            info!(
                "the Gateway API is not installed ({HTTPROUTE_CRD} is not Established): HTTPRoutes are not watched; plans can route through a ConfigMap. Restart Switchyard after installing the Gateway API"
            );
            false
        }
        Err(err) => {
            warn!(error = %err, "could not tell whether the Gateway API is installed; assuming it is");
            true
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunOptions,
    }

    fn parse(args: &[&str]) -> Result<RunOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied()))
            .map(|cli| cli.run)
    }

    #[test]
    fn receiver_tls_needs_its_own_listener_and_a_key_and_limits_are_checked() {
        assert!(
            parse(&[
                "--receiver-tls-cert",
                "c.pem",
                "--receiver-tls-key",
                "k.pem"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--receiver-tls-cert",
                "c.pem",
                "--receiver-addr",
                "0.0.0.0:8443"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--receiver-tls-key",
                "k.pem",
                "--receiver-addr",
                "0.0.0.0:8443"
            ])
            .is_err()
        );
        let options = parse(&[
            "--receiver-addr",
            "0.0.0.0:8443",
            "--receiver-tls-cert",
            "c.pem",
            "--receiver-tls-key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(
            options.receiver_tls(),
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.store_limits(), StoreLimits::default());
        assert_eq!(defaults.server_limits(), ServerLimits::default());
        assert_eq!(defaults.receiver_tls(), None);
        assert!(parse(&["--http-max-connections", "0"]).is_err());
        assert!(parse(&["--receiver-max-alerts", "0"]).is_err());
        assert!(parse(&["--http-header-timeout", "0s"]).is_err());
        let tuned = parse(&[
            "--receiver-alert-ttl",
            "30m",
            "--http-max-connections",
            "16",
        ])
        .unwrap();
        assert_eq!(tuned.store_limits().ttl, Duration::from_secs(1800));
        assert_eq!(tuned.server_limits().max_connections, 16);
    }

    #[test]
    fn secret_refs_need_three_parts() {
        assert_eq!(
            parse_secret_ref("ops/switchyard/token").unwrap(),
            ("ops".into(), "switchyard".into(), "token".into())
        );
        assert!(
            parse_secret_ref("ops/switchyard")
                .unwrap_err()
                .contains("NAMESPACE/NAME/KEY")
        );
        assert!(parse_secret_ref("ops//token").is_err());
    }

    #[test]
    fn namespaces_are_a_comma_separated_list_and_namespace_is_an_alias() {
        let options = parse(&["--namespaces", "crm, billing,crm,"]).unwrap();
        assert_eq!(options.watched_namespaces(), ["crm", "billing"]);
        let options = parse(&["--namespaces", "crm", "--namespaces", "sales"]).unwrap();
        assert_eq!(options.watched_namespaces(), ["crm", "sales"]);
        let options = parse(&["--namespace", "crm"]).unwrap();
        assert_eq!(options.watched_namespaces(), ["crm"]);
    }

    #[test]
    fn leader_election_takes_a_value_and_lease_durations_are_checked() {
        let options = parse(&["--leader-election", "false", "--lease-duration", "4s"]).unwrap();
        assert!(!options.leader_election);
        assert_eq!(options.lease_duration, Duration::from_secs(4));
        let options = parse(&["--leader-election", "true"]).unwrap();
        assert!(options.leader_election);
        assert!(parse(&["--lease-duration", "1s"]).is_err());
        assert!(parse(&["--log-format", "yaml"]).is_err());
        assert_eq!(
            parse(&["--log-format", "json"]).unwrap().log_format,
            LogFormat::Json
        );
    }

    #[test]
    fn the_lease_namespace_falls_back_to_the_pod_then_the_service_account_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("namespace");
        assert_eq!(lease_namespace(None, None, &file), "default");
        std::fs::write(&file, "ops\n").unwrap();
        assert_eq!(lease_namespace(None, None, &file), "ops");
        assert_eq!(lease_namespace(None, Some("pods-ns"), &file), "pods-ns");
        assert_eq!(
            lease_namespace(Some("flag-ns"), Some("pods-ns"), &file),
            "flag-ns"
        );
        assert_eq!(lease_namespace(Some(" "), Some(""), &file), "ops");
    }

    #[test]
    fn the_identity_defaults_to_hostname_and_pid() {
        let options = parse(&["--identity", "switchyard-7d9f-abc"]).unwrap();
        assert_eq!(options.identity(), "switchyard-7d9f-abc");
        let options = RunOptions {
            identity: None,
            ..options
        };
        let identity = options.identity();
        assert!(
            identity.ends_with(&format!("-{}", std::process::id())),
            "{identity}"
        );
        assert!(identity.len() > format!("-{}", std::process::id()).len());
    }
}
