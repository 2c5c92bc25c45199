//! Child processes that cannot outlive the control plane that started them.

use std::{
    fs::OpenOptions,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::TestEnvError;

/// A running server process. Dropping it kills it and reaps it.
pub(crate) struct Server {
    pub name: &'static str,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts `program` with `args`, appending its output to `<dir>/<name>.log`.
    ///
    /// The child is also asked to be killed by the kernel if the thread that started it
    /// dies (`PR_SET_PDEATHSIG`), so that a test binary killed outright leaves nothing behind.
    pub fn start(
        name: &'static str,
        program: &Path,
        args: &[String],
        dir: &Path,
    ) -> Result<Self, TestEnvError> {
        let log = dir.join(format!("{name}.log"));
        // Append, so that a restarted server's log follows the previous run's.
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| TestEnvError::Io {
                path: log.clone(),
                source,
            })?;
        let err = out.try_clone().map_err(|source| TestEnvError::Io {
            path: log.clone(),
            source,
        })?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| TestEnvError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        Ok(Self {
            name,
            log,
            child: Some(child),
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An error if the process has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<(), TestEnvError> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.exited("it was stopped".into()));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(format!("it exited with {status}"))),
            Err(err) => Err(self.exited(format!("its state is unknown: {err}"))),
        }
    }

    /// The error for a process that stopped, with the end of its log.
    pub fn exited(&self, how: String) -> TestEnvError {
        TestEnvError::ProcessExited {
            name: self.name,
            how,
            log_tail: log_tail(&self.log, 30),
        }
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL. Idempotent.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free TCP port on 127.0.0.1. Another process may take it before we bind it; the
/// caller retries the start when that happens.
pub(crate) fn free_port() -> Result<u16, TestEnvError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| TestEnvError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|source| TestEnvError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })
}
