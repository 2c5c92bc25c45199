//! `switchyard run`: the controllers, the analyzer and the HTTP server (health and the
//! Alertmanager receiver) in one process.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{Router, routing::get};
use tracing::info;

use crate::alerts::{
    AlertStore,
    receiver::{self, Token, TokenError, TokenSource},
};
use crate::analysis::{Analyzer, Prometheus, PrometheusSettings, PrometheusSetupError};
use crate::controller::{Services, Settings, Stats};

/// Settings of `switchyard run`; every flag has an environment-variable fallback.
#[derive(Clone, Debug, clap::Args)]
pub struct RunOptions {
    /// Watch only this namespace; all namespaces when omitted.
    #[arg(long, env = "SWITCHYARD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where the HTTP server (health, Alertmanager receiver) listens.
    #[arg(long, env = "SWITCHYARD_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
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
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::api::parse_duration(s).map_err(|e| e.to_string())
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
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let client = kube::Client::try_default()
        .await
        .map_err(RunError::Client)?;
    let prometheus = match &options.prometheus_url {
        Some(url) => {
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
            Some(Prometheus::new(&PrometheusSettings {
                url: url.clone(),
                bearer_token,
                timeout: options.prometheus_timeout,
                max_concurrent: options.prometheus_max_concurrent,
            })?)
        }
        None => None,
    };
    let services = Services {
        stats: Arc::new(Stats::default()),
        analyzer: Arc::new(Analyzer::new(prometheus, options.prometheus_max_concurrent)),
        alerts: Arc::new(AlertStore::default()),
    };
    let token_source = match (&options.receiver_token_file, &options.receiver_token_secret) {
        (Some(path), _) => Some(TokenSource::File(path.clone())),
        (None, Some((namespace, name, key))) => Some(TokenSource::Secret {
            namespace: namespace.clone(),
            name: name.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
    };
    let mut app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    match token_source {
        Some(source) => {
            let token = Token::load(&source, Some(&client)).await?;
            app = app.merge(receiver::router(token, services.alerts.clone(), None));
        }
        None => info!("no receiver token configured: the Alertmanager receiver is off"),
    }
    let listener = tokio::net::TcpListener::bind(options.http_addr)
        .await
        .map_err(|source| RunError::Listen {
            addr: options.http_addr,
            source,
        })?;
    info!(addr = %options.http_addr, "serving HTTP");
    let server = axum::serve(listener, app);
    let settings = Settings {
        namespace: options.namespace,
        ..Settings::default()
    };
    tokio::select! {
        () = crate::controller::run(client, settings, services) => {}
        result = server => {
            if let Err(err) = result {
                tracing::error!(error = %err, "the HTTP server stopped");
            }
        }
        () = shutdown_signal() => info!("shutting down"),
    }
    Ok(())
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
}
