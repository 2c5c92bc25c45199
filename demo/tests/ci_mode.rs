//! `make demo ARGS=--ci`, end to end: the demo binary runs the whole CRM unification
//! example on its embedded control plane, with a real Prometheus, Alertmanager and the
//! `switchyard` operator binary, and must show the planned rollback (MetricBreached on
//! the failed-hand-off metric), the retry, and all six waves completed.
//!
//! The operator is the real `switchyard` binary next to the demo's. `cargo test
//! --workspace` (`make test`) builds it with the switchyard package's tests, but
//! `cargo test -p switchyard-demo` does not, and a left-over one may be stale; so the
//! test first runs `cargo build --bins -p switchyard` into the same target directory and
//! profile (a no-op when it is up to date; cargo releases its build lock before it runs
//! tests, so this cannot deadlock). That keeps the test on the real process boundary
//! (flags, `KUBECONFIG`, the receiver's token file) rather than an in-process stand-in.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The demo itself finishes in about two minutes; its own `--timeout` stops it first.
const DEMO_TIMEOUT: &str = "5m";
const HARD_LIMIT: Duration = Duration::from_secs(6 * 60);

/// Builds `switchyard` next to the demo binary and returns its path.
fn operator_binary(demo: &Path) -> PathBuf {
    let profile_dir = demo
        .parent()
        .expect("the demo binary is in a profile directory");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory is in a target directory");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "--bins", "-p", "switchyard"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build --bins -p switchyard failed");
    let binary = profile_dir.join("switchyard");
    assert!(binary.is_file(), "{} was not built", binary.display());
    binary
}

#[test]
fn the_demo_rolls_back_retries_and_completes_all_six_waves_in_ci_mode() {
    let demo = PathBuf::from(env!("CARGO_BIN_EXE_switchyard-demo"));
    let operator = operator_binary(&demo);
    let started = Instant::now();
    let mut child = Command::new(&demo)
        .args(["--ci", "--embedded", "--timeout", DEMO_TIMEOUT])
        .arg("--operator")
        .arg(&operator)
        // A developer's cluster must not be touched, whatever their environment says.
        .env_remove("KUBECONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    // Drain both pipes on threads, so that a full pipe cannot block the demo.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("the demo can be waited for") {
            break status;
        }
        if started.elapsed() > HARD_LIMIT {
            // SIGINT, as Ctrl-C: the demo stops what it started.
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            std::thread::sleep(Duration::from_secs(20));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the demo ran longer than {HARD_LIMIT:?}:\n{}\n{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out.join().expect("stdout");
    let stderr = err.join().expect("stderr");
    let took = started.elapsed();
    let all = format!("{stdout}\n--- stderr ---\n{stderr}");
    assert!(
        status.success(),
        "the demo failed ({status}) after {took:?}:\n{all}"
    );
    eprintln!("the demo took {took:?}");

    // Plain output: no colors, no screen redraws.
    assert!(!stdout.contains('\x1b'), "escape codes in CI mode:\n{all}");
    // The rollback and its cause: the condition and the history entry.
    assert!(
        stdout.contains(
            "sales-emea rolled back automatically: condition RolledBack=True, reason MetricBreached: metric failed-handoffs"
        ),
        "no automatic rollback on failed-handoffs:\n{all}"
    );
    assert!(
        stdout.contains("RolledBack (MetricBreached) by switchyard"),
        "no history entry for the rollback:\n{all}"
    );
    // The plan's hold, the fix and the retry.
    assert!(
        stdout.contains("onWaveFailure PausePlan holds"),
        "the plan's hold is not shown:\n{all}"
    );
    assert!(
        stdout.contains("kubectl wave retry sales-emea"),
        "no retry:\n{all}"
    );
    assert!(
        stdout.contains("sales-emea: RolledBack → Pending (attempt 2)"),
        "the retry did not start a second attempt:\n{all}"
    );
    // Every approval went through the plugin as the demo's user.
    assert!(
        stdout.contains("switchyard-admin: kubectl wave approve marketing-emea --step 2"),
        "{all}"
    );
    assert!(
        stdout.contains(
            "switchyard-admin: kubectl wave gate pass crm-unification rehearsal-accepted"
        ),
        "{all}"
    );

    // The summary: six Completed waves, sales-emea on its second attempt with its cause.
    let summary = stdout
        .split("\nSummary (")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{all}"));
    let rows: Vec<&str> = summary
        .lines()
        .filter(|line| {
            line.trim_start()
                .starts_with(|c: char| c.is_ascii_lowercase())
        })
        .filter(|line| line.contains("-emea") || line.contains("-amer"))
        .take(6)
        .collect();
    assert_eq!(rows.len(), 6, "six waves in the summary:\n{summary}");
    for row in &rows {
        assert!(row.contains(" Completed "), "not completed: {row}");
    }
    let sales_emea = rows
        .iter()
        .find(|row| row.trim_start().starts_with("sales-emea "))
        .unwrap_or_else(|| panic!("no sales-emea row:\n{summary}"));
    assert!(
        sales_emea.contains("MetricBreached") && sales_emea.contains("failed-handoffs"),
        "{sales_emea}"
    );
    let columns: Vec<&str> = sales_emea.split_whitespace().collect();
    assert_eq!(columns.get(2), Some(&"2"), "two attempts: {sales_emea}");
    // The traffic through Traefik (CI runs as root, so the demo has a data plane): the
    // counts per backend, the rollback at the gateway, and every cohort on the target.
    assert!(
        summary.contains("traffic through Traefik: "),
        "no traffic in the summary:\n{summary}"
    );
    assert!(
        summary.contains("rollback at the gateway: every request of sales-emea's cohort"),
        "no rollback at the gateway:\n{summary}"
    );
    assert!(
        summary.contains("after completion every cohort's requests reached"),
        "{summary}"
    );
    assert!(stdout.contains("Demo complete in"), "{all}");
    assert!(stdout.contains("Cleaned up:"), "{all}");
}
