//! Why the demo stopped. Each error prints as one line (its sources joined with ": ").

use std::path::PathBuf;
use std::time::Duration;

use switchyard::cli::commands::CliError;
use switchyard_testenv::TestEnvError;

use crate::rewrite::RewriteError;

/// Everything that can stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The control plane, Prometheus or Alertmanager could not run.
    #[error("{what}")]
    TestEnv {
        /// What was being started.
        what: &'static str,
        /// The harness's error.
        #[source]
        source: TestEnvError,
    },
    /// An API request failed.
    #[error("{what}")]
    Kube {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// A kubeconfig could not be used.
    #[error("cannot use the kubeconfig {source_name}")]
    Kubeconfig {
        /// `--kubeconfig FILE` or `$KUBECONFIG`.
        source_name: String,
        /// The error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The example could not be read or rewritten.
    #[error("the example")]
    Example(#[from] RewriteError),
    /// A local file could not be written or read.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The operator binary is missing.
    #[error(
        "the operator binary {path} does not exist: build it with `cargo build --bins -p switchyard` \
         (make demo does), or pass --operator PATH"
    )]
    OperatorMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The operator could not be started.
    #[error("cannot start the operator {path}")]
    OperatorSpawn {
        /// The binary.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The operator stopped by itself.
    #[error("the operator stopped ({how}); its log is {log}")]
    OperatorExited {
        /// Its exit status.
        how: String,
        /// Its log file.
        log: PathBuf,
    },
    /// The operator did not become healthy.
    #[error("the operator did not answer {url} within {waited:?}; its log is {log}")]
    OperatorNotReady {
        /// The health URL.
        url: String,
        /// How long the demo waited.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
    },
    /// `kubectl wave` refused or failed.
    #[error("kubectl wave {command}")]
    Plugin {
        /// The command line, after `kubectl wave`.
        command: String,
        /// The plugin's error.
        #[source]
        source: CliError,
    },
    /// Something in the story did not happen in time.
    #[error("{0}")]
    Stalled(String),
    /// A wave was rolled back that the demo did not plan to roll back.
    #[error("wave {wave} was rolled back unexpectedly ({reason}: {message})")]
    UnexpectedRollback {
        /// The wave.
        wave: String,
        /// The RolledBack condition's reason.
        reason: String,
        /// Its message.
        message: String,
    },
    /// A wave paused by itself: the demo does not resume the fail-safe.
    #[error(
        "wave {wave} paused by itself ({reason}: {message}); a person must look before it goes on, \
         so the demo stops here rather than resume it"
    )]
    PausedByItself {
        /// The wave.
        wave: String,
        /// The Paused condition's reason (NoData, QueryError, MetricBreached).
        reason: String,
        /// Its message.
        message: String,
    },
}

impl DemoError {
    /// A Kubernetes API error with what was being done.
    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> DemoError {
        let what = what.into();
        move |source| DemoError::Kube { what, source }
    }
}

/// The error and its sources, `outer: inner: root`, on one line (only the first line of
/// each, so that a process's log tail does not spill over the terminal).
pub fn one_line(err: &dyn std::error::Error) -> String {
    let mut parts = vec![first_line(&err.to_string())];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = first_line(&cause.to_string());
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// The lines after the first of each error in the chain (log tails), if any.
pub fn details(err: &dyn std::error::Error) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        out.extend(text.lines().skip(1).map(str::to_owned));
        current = e.source();
    }
    out
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}
