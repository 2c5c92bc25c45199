//! A real Prometheus and Alertmanager, and a metrics exporter the test controls, for
//! integration tests of Prometheus analysis and of an Alertmanager webhook receiver.
//!
//! The binaries come from the Debian packages `prometheus` and `prometheus-alertmanager`
//! (`make test` installs them); `$PROMETHEUS` and `$ALERTMANAGER` override their paths.
//! Each server runs on a free loopback port in a temporary directory of its own, which
//! is deleted when it is dropped (unless `SWITCHYARD_TESTENV_KEEP` is set).
//!
//! Start them in this order, because each needs the address of the one before:
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_testenv::TestEnvError> {
//! use switchyard_testenv::{Alertmanager, Exporter, Prometheus};
//! let exporter = Exporter::start().await?;
//! exporter.set("crm_handoff_failures", &[("team", "payments")], 0.0);
//! let webhook_url = "http://127.0.0.1:8080/alerts"; // the test's own receiver
//! let alertmanager = Alertmanager::start(webhook_url, "s3cret").await?;
//! let rules = "groups: []";
//! let prometheus = Prometheus::start(exporter.addr(), rules, Some(alertmanager.addr())).await?;
//! # Ok(()) }
//! ```
//!
//! The processes are killed by the kernel if the thread that started them exits, so
//! start them from the thread that holds them (a `#[tokio::test]` body runs on the test's
//! own thread, which is what you want).

use std::{
    collections::BTreeMap,
    ffi::OsString,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Deserialize;
use serde_json::json;

use crate::{
    TestEnvError,
    process::{Server, free_port, log_tail},
};

const START_ATTEMPTS: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The Prometheus binary to run: `$PROMETHEUS`, else `prometheus` on `PATH` or in
/// `/usr/bin` (from the Debian package `prometheus`).
pub fn prometheus_binary() -> Result<PathBuf, TestEnvError> {
    find_binary(
        Binary::PROMETHEUS,
        std::env::var_os(Binary::PROMETHEUS.env),
        std::env::var_os("PATH"),
    )
}

/// The Alertmanager binary to run: `$ALERTMANAGER`, else `prometheus-alertmanager` on
/// `PATH` or in `/usr/bin` (from the Debian package `prometheus-alertmanager`).
pub fn alertmanager_binary() -> Result<PathBuf, TestEnvError> {
    find_binary(
        Binary::ALERTMANAGER,
        std::env::var_os(Binary::ALERTMANAGER.env),
        std::env::var_os("PATH"),
    )
}

struct Binary {
    name: &'static str,
    env: &'static str,
    package: &'static str,
}

impl Binary {
    const PROMETHEUS: Binary = Binary {
        name: "prometheus",
        env: "PROMETHEUS",
        package: "prometheus",
    };
    const ALERTMANAGER: Binary = Binary {
        name: "prometheus-alertmanager",
        env: "ALERTMANAGER",
        package: "prometheus-alertmanager",
    };

    fn missing(&self, detail: String) -> TestEnvError {
        TestEnvError::MissingBinary {
            program: self.name,
            env: self.env,
            package: self.package,
            detail,
        }
    }
}

fn find_binary(
    binary: Binary,
    from_env: Option<OsString>,
    path_var: Option<OsString>,
) -> Result<PathBuf, TestEnvError> {
    if let Some(path) = from_env {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(binary.missing(format!("{}={} is not a file", binary.env, path.display())))
        };
    }
    let dirs = path_var
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .map(PathBuf::as_path)
        .chain([Path::new("/usr/bin")])
        .map(|dir| dir.join(binary.name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| binary.missing("it is neither on PATH nor in /usr/bin".into()))
}

// ---------------------------------------------------------------------------------------
// Exporter

/// Metric name → canonical (sorted) label set → value.
type Families = BTreeMap<String, BTreeMap<Vec<(String, String)>, f64>>;

/// A tiny HTTP server on `127.0.0.1` that serves `GET /metrics` in the Prometheus text
/// exposition format, with gauges whose values the test sets.
///
/// It runs as a task on the current Tokio runtime and stops when dropped.
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    families: Arc<Mutex<Families>>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    /// Starts the exporter on a free port of `127.0.0.1`, with no metrics yet.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime.
    pub async fn start() -> Result<Exporter, TestEnvError> {
        let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let io_error = |source| TestEnvError::Io {
            path: PathBuf::from(bind.to_string()),
            source,
        };
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(io_error)?;
        let addr = listener.local_addr().map_err(io_error)?;
        let families = Arc::new(Mutex::new(Families::new()));
        let shared = Arc::clone(&families);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = render(&lock(&shared));
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        );
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!(%err, "the test exporter stopped serving");
            }
        });
        Ok(Exporter {
            addr,
            families,
            task,
        })
    }

    /// Sets the gauge `name` with `labels` (in any order) to `value`, adding the series if
    /// it is new. Label values may hold any text; they are escaped in the exposition.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid metric name, a label name is not valid (or is reserved,
    /// starting with `__`), or a label name repeats: Prometheus would reject the whole
    /// scrape, so that is a bug in the test.
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let key = series_key(name, labels);
        lock(&self.families)
            .entry(name.to_owned())
            .or_default()
            .insert(key, value);
    }

    /// Removes the series `name` with `labels` (in any order); it then goes stale in
    /// Prometheus after the next scrape. Returns whether it existed.
    ///
    /// # Panics
    ///
    /// Under the same conditions as [`Exporter::set`].
    pub fn remove(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        let key = series_key(name, labels);
        let mut families = lock(&self.families);
        let Some(series) = families.get_mut(name) else {
            return false;
        };
        let removed = series.remove(&key).is_some();
        if series.is_empty() {
            families.remove(name);
        }
        removed
    }

    /// The address the exporter listens on, the scrape target to give [`Prometheus`].
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `GET /metrics` serves right now.
    pub fn exposition(&self) -> String {
        render(&lock(&self.families))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Dropping the serve future also closes its open (keep-alive) connections.
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn series_key(name: &str, labels: &[(&str, &str)]) -> Vec<(String, String)> {
    assert!(
        valid_name(name, true),
        "{name:?} is not a valid Prometheus metric name"
    );
    let mut key: Vec<(String, String)> = labels
        .iter()
        .map(|&(label, value)| {
            assert!(
                valid_name(label, false) && !label.starts_with("__"),
                "{label:?} is not a valid label name for a scraped series"
            );
            (label.to_owned(), value.to_owned())
        })
        .collect();
    key.sort();
    for pair in key.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "the label {:?} is given twice for {name}",
            pair[0].0
        );
    }
    key
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names, the same without `:` for label names.
fn valid_name(name: &str, colon_allowed: bool) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon_allowed && c == ':');
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| allowed(first) && !first.is_ascii_digit())
        && chars.all(allowed)
}

/// The families in the text exposition format, version 0.0.4.
fn render(families: &Families) -> String {
    let mut out = String::new();
    for (name, series) in families {
        out.push_str(&format!("# TYPE {name} gauge\n"));
        for (labels, value) in series {
            out.push_str(name);
            if !labels.is_empty() {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(label, value)| format!("{label}=\"{}\"", escape_label_value(value)))
                    .collect();
                out.push('{');
                out.push_str(&pairs.join(","));
                out.push('}');
            }
            out.push(' ');
            out.push_str(&format_value(*value));
            out.push('\n');
        }
    }
    out
}

/// Escapes a label value for the text exposition format: `\`, `"` and newline.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str(r#"\""#),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
    out
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        value.to_string()
    }
}

// ---------------------------------------------------------------------------------------
// The processes

/// A server process on a fixed loopback port in a directory of its own, which it deletes
/// when dropped.
struct Daemon {
    name: &'static str,
    binary: PathBuf,
    dir: PathBuf,
    /// Every argument except `--web.listen-address`.
    args: Vec<String>,
    port: u16,
    server: Option<Server>,
    http: reqwest::Client,
}

impl Daemon {
    fn new(name: &'static str, binary: PathBuf) -> Result<Daemon, TestEnvError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("switchyard-{name}-"))
            .tempdir()
            .map_err(|source| TestEnvError::Io {
                path: std::env::temp_dir(),
                source,
            })?
            .keep();
        Ok(Daemon {
            name,
            binary,
            dir,
            args: Vec::new(),
            port: 0,
            server: None,
            http: http_client()?,
        })
    }

    fn write(&self, file: &str, contents: &str) -> Result<PathBuf, TestEnvError> {
        let path = self.dir.join(file);
        std::fs::write(&path, contents).map_err(|source| TestEnvError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts on a free port, choosing another if the first is taken before it is bound.
    async fn start(&mut self) -> Result<(), TestEnvError> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            self.port = free_port()?;
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(err) if port_taken(&err) => last_error = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    /// Starts again on the same port and with the same files; waits until it is ready.
    async fn restart(&mut self) -> Result<(), TestEnvError> {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch().await {
                // Something else may hold the port for a moment (say, an outgoing
                // connection that the kernel gave it as its ephemeral port).
                Err(err) if port_taken(&err) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                result => return result,
            }
        }
    }

    async fn launch(&mut self) -> Result<(), TestEnvError> {
        let mut args = self.args.clone();
        args.push(format!("--web.listen-address=127.0.0.1:{}", self.port));
        self.server = Some(Server::start(self.name, &self.binary, &args, &self.dir)?);
        let result = self.wait_ready().await;
        if result.is_err() {
            self.stop();
        }
        result
    }

    async fn wait_ready(&mut self) -> Result<(), TestEnvError> {
        let ready = format!("{}/-/ready", self.url());
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < READY_TIMEOUT {
            if let Some(server) = self.server.as_mut() {
                server.check_running()?;
            }
            match self.http.get(&ready).send().await {
                Ok(response) if response.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(response) => last = format!("GET {ready} answered {}", response.status()),
                Err(err) => last = error_chain(&err),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Err(TestEnvError::NotReady {
            what: self.name.into(),
            waited: READY_TIMEOUT,
            detail: format!("{last}\n{}", self.log_tail(20)),
        })
    }

    fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir.join(format!("{}.log", self.name)), lines)
    }

    fn pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(Server::pid)
    }

    fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop(STOP_GRACE);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("SWITCHYARD_TESTENV_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn port_taken(err: &TestEnvError) -> bool {
    matches!(err, TestEnvError::ProcessExited { .. })
        && err.to_string().contains("address already in use")
}

fn http_client() -> Result<reqwest::Client, TestEnvError> {
    // In the workspace, reqwest's TLS (without a bundled provider) is switched on by the
    // operator crate; it then needs the process's provider, which is kube's `ring`.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|err| TestEnvError::Build {
            what: "an HTTP client".into(),
            detail: error_chain(&err),
        })
}

/// An error and its sources, `outer: inner: root`.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn yaml(value: &serde_json::Value) -> String {
    serde_yaml::to_string(value).expect("a JSON value always renders as YAML")
}

// ---------------------------------------------------------------------------------------
// Prometheus

/// A real Prometheus that scrapes one target every second, evaluates the given alerting
/// rules every second, and optionally sends alerts to an Alertmanager.
///
/// Dropping it stops it and deletes its directory (unless `SWITCHYARD_TESTENV_KEEP` is
/// set).
pub struct Prometheus {
    daemon: Daemon,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("url", &self.url())
            .field("dir", &self.daemon.dir)
            .finish_non_exhaustive()
    }
}

/// One sample of an instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels, `__name__` included when the query keeps it.
    pub labels: BTreeMap<String, String>,
    /// The sample's value.
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus on a free port of `127.0.0.1` and waits until `/-/ready` answers
    /// 200.
    ///
    /// It scrapes `scrape_target` (`/metrics`, job `exporter`) and evaluates `rules_yaml`
    /// — a whole rule file, `groups: [...]`; empty for none — every second, and sends its
    /// alerts to `alertmanager` if given. A bad rule file shows up as
    /// [`TestEnvError::ProcessExited`] with Prometheus's complaint.
    ///
    /// Ready does not mean scraping: Prometheus hands new targets (scrape targets and
    /// Alertmanagers alike) to its scrapers and notifier at most every 5 s, so the first
    /// scrape comes about 5 s after this returns, and again after [`restart`]. Wait for
    /// data with [`wait_for_value`] rather than querying at once.
    ///
    /// [`restart`]: Prometheus::restart
    /// [`wait_for_value`]: Prometheus::wait_for_value
    pub async fn start(
        scrape_target: SocketAddr,
        rules_yaml: &str,
        alertmanager: Option<SocketAddr>,
    ) -> Result<Prometheus, TestEnvError> {
        let mut daemon = Daemon::new("prometheus", prometheus_binary()?)?;
        let mut config = json!({
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "scrape_configs": [{
                "job_name": "exporter",
                "static_configs": [{"targets": [scrape_target.to_string()]}],
            }],
        });
        if !rules_yaml.trim().is_empty() {
            let rules = daemon.write("rules.yml", rules_yaml)?;
            config["rule_files"] = json!([rules.display().to_string()]);
        }
        if let Some(alertmanager) = alertmanager {
            config["alerting"] = json!({
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager.to_string()]}]}],
            });
        }
        let config = daemon.write("prometheus.yml", &yaml(&config))?;
        daemon.args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", daemon.dir.join("data").display()),
            "--log.level=info".into(),
        ];
        daemon.start().await?;
        Ok(Prometheus { daemon })
    }

    /// The base URL, `http://127.0.0.1:PORT`. It stays the same across [`restart`].
    ///
    /// [`restart`]: Prometheus::restart
    pub fn url(&self) -> String {
        self.daemon.url()
    }

    /// The directory that holds the configuration, the rule file, the TSDB and the log.
    pub fn dir(&self) -> &Path {
        &self.daemon.dir
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The end of Prometheus's log, for diagnosing a failed test.
    pub fn log_tail(&self, lines: usize) -> String {
        self.daemon.log_tail(lines)
    }

    /// Stops Prometheus: SIGTERM, then SIGKILL after 5 s. Blocks until it has exited.
    /// Idempotent. Its port and data stay reserved for [`restart`].
    ///
    /// [`restart`]: Prometheus::restart
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// Starts Prometheus again (stopping it first if it runs) on the same port, with the
    /// same configuration and TSDB, and waits until it is ready.
    pub async fn restart(&mut self) -> Result<(), TestEnvError> {
        self.daemon.restart().await
    }

    /// Runs the instant query `query` now and returns its samples (one, for a scalar).
    pub async fn query(&self, query: &str) -> Result<Vec<Sample>, TestEnvError> {
        let failed = |detail: String| TestEnvError::Query {
            query: query.to_owned(),
            detail,
        };
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url()),
            [("query", query)],
        )
        .map_err(|err| failed(err.to_string()))?;
        let response = self
            .daemon
            .http
            .get(url)
            .send()
            .await
            .map_err(|err| failed(error_chain(&err)))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|err| failed(error_chain(&err)))?;
        let answer: QueryResponse = serde_json::from_str(&body)
            .map_err(|err| failed(format!("HTTP {status}, unexpected body ({err}): {body}")))?;
        if answer.status != "success" {
            return Err(failed(format!(
                "HTTP {status}, {}: {}",
                answer.error_type.unwrap_or_default(),
                answer.error.unwrap_or_default()
            )));
        }
        let data = answer
            .data
            .ok_or_else(|| failed(format!("no data in {body}")))?;
        let value = |(_, text): &(f64, String)| {
            parse_value(text).ok_or_else(|| failed(format!("{text:?} is not a number")))
        };
        match data.result_type.as_str() {
            "vector" => {
                let series: Vec<VectorSample> = serde_json::from_value(data.result)
                    .map_err(|err| failed(format!("bad vector ({err}): {body}")))?;
                series
                    .into_iter()
                    .map(|sample| {
                        Ok(Sample {
                            value: value(&sample.value)?,
                            labels: sample.metric,
                        })
                    })
                    .collect()
            }
            "scalar" => {
                let scalar: (f64, String) = serde_json::from_value(data.result)
                    .map_err(|err| failed(format!("bad scalar ({err}): {body}")))?;
                Ok(vec![Sample {
                    labels: BTreeMap::new(),
                    value: value(&scalar)?,
                }])
            }
            other => Err(failed(format!(
                "a {other} result; only instant vectors and scalars are supported"
            ))),
        }
    }

    /// Polls the instant query `query` until it returns exactly one sample whose value
    /// satisfies `pred`, and returns that value; a [`TestEnvError::NotReady`] with the
    /// last answer once `timeout` has passed.
    pub async fn wait_for_value(
        &self,
        query: &str,
        pred: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> Result<f64, TestEnvError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.query(query).await {
                Ok(samples) => match samples.as_slice() {
                    [sample] if pred(sample.value) => return Ok(sample.value),
                    [sample] => format!("the value is {}", sample.value),
                    samples => format!("{} samples: {samples:?}", samples.len()),
                },
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(TestEnvError::NotReady {
                    what: format!("the query {query}"),
                    waited: timeout,
                    detail: format!(
                        "{last}\nthe end of Prometheus's log:\n{}",
                        self.log_tail(10)
                    ),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryResponse {
    status: String,
    data: Option<QueryData>,
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        text => text.parse().ok(),
    }
}

// ---------------------------------------------------------------------------------------
// Alertmanager

/// A real Alertmanager, clustering off, that sends every alert group to one webhook
/// with a bearer token.
///
/// The route groups by `alertname`, `team` and `region`, with `group_wait` and
/// `group_interval` of 1 s, `repeat_interval` of 1 m, and `send_resolved: true`. Dropping
/// it stops it and deletes its directory (unless `SWITCHYARD_TESTENV_KEEP` is set).
pub struct Alertmanager {
    daemon: Daemon,
}

impl std::fmt::Debug for Alertmanager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alertmanager")
            .field("url", &self.url())
            .field("dir", &self.daemon.dir)
            .finish_non_exhaustive()
    }
}

impl Alertmanager {
    /// The receiver name in the generated configuration (the payload's `receiver`).
    pub const RECEIVER: &'static str = "webhook";

    /// Starts Alertmanager on a free port of `127.0.0.1`, sending notifications to
    /// `webhook_url` with `Authorization: Bearer <bearer_token>`, and waits until
    /// `/-/ready` answers 200.
    pub async fn start(
        webhook_url: &str,
        bearer_token: &str,
    ) -> Result<Alertmanager, TestEnvError> {
        Self::start_with_repeat_interval(webhook_url, bearer_token, "1m").await
    }

    /// Like [`Alertmanager::start`], repeating a still-firing group's notification
    /// every `repeat_interval` (such as `1h`: a test that must not be saved by a repeat).
    pub async fn start_with_repeat_interval(
        webhook_url: &str,
        bearer_token: &str,
        repeat_interval: &str,
    ) -> Result<Alertmanager, TestEnvError> {
        let mut daemon = Daemon::new("alertmanager", alertmanager_binary()?)?;
        let config = json!({
            "route": {
                "receiver": Self::RECEIVER,
                "group_by": ["alertname", "team", "region"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": repeat_interval,
            },
            "receivers": [{
                "name": Self::RECEIVER,
                "webhook_configs": [{
                    "url": webhook_url,
                    "send_resolved": true,
                    "http_config": {
                        "authorization": {"type": "Bearer", "credentials": bearer_token},
                    },
                }],
            }],
        });
        let config = daemon.write("alertmanager.yml", &yaml(&config))?;
        daemon.args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", daemon.dir.join("data").display()),
            "--cluster.listen-address=".into(),
            "--log.level=debug".into(),
        ];
        daemon.start().await?;
        Ok(Alertmanager { daemon })
    }

    /// The address it listens on, for [`Prometheus::start`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.daemon.port))
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.daemon.url()
    }

    /// The directory that holds the configuration, the data and the log.
    pub fn dir(&self) -> &Path {
        &self.daemon.dir
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Stops Alertmanager: SIGTERM, then SIGKILL after 5 s. Blocks until it has exited.
    /// Idempotent. Its port and data directory (silences, notification log; alerts live
    /// in memory only) stay reserved for [`restart`](Alertmanager::restart).
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// Starts Alertmanager again (stopping it first if it runs) on the same port, with
    /// the same configuration and data directory, and waits until it is ready.
    pub async fn restart(&mut self) -> Result<(), TestEnvError> {
        self.daemon.restart().await
    }

    /// The end of Alertmanager's log (at debug level), for diagnosing a failed test.
    pub fn log_tail(&self, lines: usize) -> String {
        self.daemon.log_tail(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_each_family_gets_one_type_line() {
        let mut families = Families::new();
        for (labels, value) in [
            (vec![("team", "o\"brien {x}"), ("note", "a\\b\nc")], 1.5),
            (vec![("note", "plain"), ("team", "ops")], f64::INFINITY),
        ] {
            let name = "crm_x";
            families
                .entry(name.into())
                .or_default()
                .insert(series_key(name, &labels), value);
        }
        families
            .entry("crm_y".into())
            .or_default()
            .insert(series_key("crm_y", &[]), f64::NAN);
        assert_eq!(
            render(&families),
            concat!(
                "# TYPE crm_x gauge\n",
                "crm_x{note=\"a\\\\b\\nc\",team=\"o\\\"brien {x}\"} 1.5\n",
                "crm_x{note=\"plain\",team=\"ops\"} +Inf\n",
                "# TYPE crm_y gauge\n",
                "crm_y NaN\n",
            )
        );
    }

    #[test]
    #[should_panic(expected = "given twice")]
    fn a_repeated_label_name_is_refused() {
        series_key("crm_x", &[("team", "a"), ("team", "b")]);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("crm:handoff_failures_total", true));
        assert!(!valid_name("crm:x", false));
        assert!(!valid_name("1crm", true));
        assert!(!valid_name("crm-x", true));
        assert!(!valid_name("", true));
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let err = find_binary(
            Binary::PROMETHEUS,
            Some("/nonexistent/prometheus".into()),
            None,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, TestEnvError::MissingBinary { .. }));
        assert!(message.contains("make test"), "{message}");
        assert!(
            message.contains("PROMETHEUS=/nonexistent/prometheus"),
            "{message}"
        );

        let empty = tempfile::tempdir().unwrap();
        let found = find_binary(
            Binary {
                name: "surely-not-installed-anywhere",
                env: "SURELY_NOT",
                package: "none",
            },
            None,
            Some(empty.path().into()),
        );
        assert!(
            matches!(found, Err(TestEnvError::MissingBinary { .. })),
            "{found:?}"
        );
    }

    #[test]
    fn a_binary_is_found_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("prometheus");
        std::fs::write(&fake, "").unwrap();
        let found = find_binary(Binary::PROMETHEUS, None, Some(dir.path().into())).unwrap();
        assert_eq!(found, fake);
    }

    #[test]
    fn query_values_parse_including_special_ones() {
        assert_eq!(parse_value("42"), Some(42.0));
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_value("x"), None);
    }
}
