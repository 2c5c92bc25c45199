//! The real `switchyard` binary as a subprocess of a test, and a strict reader of the
//! metrics it serves.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

/// Environment variables `switchyard run` reads; the tests pass flags instead.
const INHERITED_SETTINGS: [&str; 12] = [
    "POD_NAME",
    "POD_NAMESPACE",
    "SWITCHYARD_NAMESPACES",
    "SWITCHYARD_HTTP_ADDR",
    "SWITCHYARD_LOG_FORMAT",
    "SWITCHYARD_LEADER_ELECTION",
    "SWITCHYARD_LEASE_NAME",
    "SWITCHYARD_LEASE_NAMESPACE",
    "SWITCHYARD_LEASE_DURATION",
    "SWITCHYARD_PROMETHEUS_URL",
    "SWITCHYARD_RECEIVER_TOKEN_FILE",
    "SWITCHYARD_RECEIVER_TOKEN_SECRET",
];

/// A running `switchyard run`, on a free loopback port. Dropping it kills it; if the test
/// is failing, the end of its log is printed first.
pub struct Operator {
    pub identity: String,
    pub addr: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
    /// Where the log is copied when the process ends (see [`Operator::keeping_log_at`]).
    keep_log: Option<PathBuf>,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Operator {
    /// Starts `switchyard run --identity IDENTITY --http-addr 127.0.0.1:PORT ARGS...`
    /// against the cluster of `kubeconfig`.
    pub fn start(kubeconfig: &Path, identity: &str, args: &[&str]) -> Self {
        Self::start_with_env(kubeconfig, identity, args, &[])
    }

    /// Like [`Operator::start`], with these environment variables set as well.
    pub fn start_with_env(
        kubeconfig: &Path,
        identity: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("switchyard.log");
        let out = std::fs::File::create(&log).expect("a log file");
        let err = out.try_clone().expect("a log file handle");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command
            .arg("run")
            .args(["--identity", identity])
            .args(["--http-addr", &addr.to_string()])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("SWITCHYARD_TEST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for name in INHERITED_SETTINGS {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let child = command.spawn().expect("the switchyard binary starts");
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            identity: identity.to_owned(),
            addr,
            child: Some(child),
            log,
            keep_log: None,
            _dir: dir,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("still running").id()
    }

    /// The status code and body of `GET path`.
    pub async fn get(&self, path: &str) -> Result<(u16, String), String> {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    /// The status code of `POST path` with a bearer token and a JSON body.
    pub async fn post(&self, path: &str, token: &str, body: &str) -> Result<u16, String> {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        Ok(response.status().as_u16())
    }

    /// `/metrics`, parsed strictly.
    pub async fn metrics(&self) -> Result<Exposition, String> {
        let (status, body) = self.get("/metrics").await?;
        if status != 200 {
            return Err(format!("/metrics answered {status}: {body}"));
        }
        parse_exposition(&body)
    }

    /// Whether `/metrics` reports this replica as the leader.
    pub async fn leads(&self) -> Result<bool, String> {
        let metrics = self.metrics().await?;
        match metrics.value("switchyard_leader", &[]) {
            Some(v) => Ok(v == 1.0),
            None => Err("no switchyard_leader".into()),
        }
    }

    /// Kills the process at once (SIGKILL), as a node failure would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit, at most `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill(1) runs");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("still running");
            if let Some(status) = child.try_wait().expect("the child's state") {
                self.child = None;
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "switchyard did not exit within {timeout:?} of SIGTERM; its log:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Operator {
    /// Copies the whole log to `path` when this process is dropped (killed), so that a
    /// long test can be read afterwards; otherwise it goes with its temporary directory.
    pub fn keeping_log_at(mut self, path: PathBuf) -> Self {
        self.keep_log = Some(path);
        self
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- the end of {}'s log ---\n{}",
                self.identity,
                self.log_tail(40)
            );
        }
        self.kill();
        if let Some(keep) = &self.keep_log {
            let _ = std::fs::copy(&self.log, keep);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `probe` every 100 ms until it succeeds; fails the test with its last error
/// after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One sample of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed OpenMetrics exposition.
#[derive(Clone, Debug)]
pub struct Exposition {
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The samples named `name` whose labels include `labels`.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample named `name` with `labels`; None when there is none.
    /// Fails the test when several match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.series(name, labels).as_slice() {
            [] => None,
            [one] => Some(one.value),
            many => panic!("{} series {name}{labels:?}: {many:?}", many.len()),
        }
    }
}

const METRIC_TYPES: [&str; 8] = [
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "summary",
    "info",
    "stateset",
    "unknown",
];
const SUFFIXES: [&str; 6] = ["_total", "_bucket", "_count", "_sum", "_created", "_info"];

/// Parses the OpenMetrics text format strictly: every line is a HELP, TYPE or UNIT
/// comment or a sample of a declared family, label values are quoted and escaped, every
/// value is a number, and the exposition ends with `# EOF`.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.pop() != Some("") {
        return Err("the exposition does not end with a newline".into());
    }
    if lines.pop() != Some("# EOF") {
        return Err("the exposition does not end with # EOF".into());
    }
    let mut families: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            let family = parts
                .next()
                .ok_or_else(|| at("a comment without a name".into()))?;
            check_name(family).map_err(at)?;
            match kind {
                "HELP" | "UNIT" => {}
                "TYPE" => {
                    let type_ = parts.next().unwrap_or_default();
                    if !METRIC_TYPES.contains(&type_) {
                        return Err(at(format!("unknown type {type_:?}")));
                    }
                    if families
                        .insert(family.to_owned(), type_.to_owned())
                        .is_some()
                    {
                        return Err(at("a second TYPE for one family".into()));
                    }
                }
                other => return Err(at(format!("unknown comment {other:?}"))),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let declared = families.keys().any(|family| {
            sample.name == *family
                || sample
                    .name
                    .strip_prefix(family.as_str())
                    .is_some_and(|suffix| SUFFIXES.contains(&suffix))
        });
        if !declared {
            return Err(at("a sample of an undeclared family".into()));
        }
        samples.push(sample);
    }
    Ok(Exposition { samples })
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric or label name"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "a sample without a value".to_owned())?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut pos = 0;
        loop {
            if inner[pos..].starts_with('}') {
                rest = &inner[pos + 1..];
                break;
            }
            let eq = pos + inner[pos..].find('=').ok_or("unterminated labels")?;
            let label = &inner[pos..eq];
            check_name(label)?;
            if !inner[eq + 1..].starts_with('"') {
                return Err(format!("the value of label {label} is not quoted"));
            }
            let mut value = String::new();
            let mut end = None;
            let mut escaped = false;
            for (i, c) in inner[eq + 2..].char_indices() {
                if escaped {
                    match c {
                        'n' => value.push('\n'),
                        '\\' | '"' => value.push(c),
                        other => return Err(format!("bad escape \\{other}")),
                    }
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(eq + 2 + i);
                    break;
                } else {
                    value.push(c);
                }
            }
            let end = end.ok_or("an unterminated label value")?;
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} repeats"));
            }
            pos = end + 1;
            if inner[pos..].starts_with(',') {
                pos += 1;
            } else if !inner[pos..].starts_with('}') {
                return Err("labels must be separated by commas".into());
            }
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut parts = value.split(' ');
    let value = parts.next().unwrap_or_default();
    if let Some(timestamp) = parts.next() {
        timestamp
            .parse::<f64>()
            .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing fields after the value".into());
    }
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other
            .parse::<f64>()
            .map_err(|_| format!("{other:?} is not a number"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}
