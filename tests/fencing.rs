//! Fencing (issue 12) against a real API server: a write decided from a version that is
//! no longer the object's is refused, whoever sends it, and a replica that lost the
//! Lease cannot land a write after its successor's, even when its request reaches the
//! API server late.
//!
//! Both tests use a plan's freeze window: at the window's edge the plan controller
//! writes the plan's status from its cache, with no read before, so the write is the
//! only request a fault has to catch.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{operator::*, waves::*};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;
use switchyard::{
    api::{CutoverPlan, CutoverPlanStatus},
    controller::{Context, Services, Settings},
};
use switchyard_testenv::proxy::{FaultProxy, kubeconfig_through};

/// Every minute, frozen for 30 s: the plan's status changes at each :00 and :30.
fn frozen_plan() -> CutoverPlan {
    let mut plan = serde_json::to_value(plan("crm", &["support-emea"], true)).unwrap();
    plan["spec"]["freezeWindows"] =
        json!([{"name": "half-minutes", "schedule": "* * * * *", "duration": "30s"}]);
    serde_json::from_value(plan).unwrap()
}

fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Whether the freeze window is open at `t` (seconds since the epoch, UTC).
fn frozen_at(t: f64) -> bool {
    (t as u64) % 60 < 30
}

/// The first window edge at least `ahead` from now, in seconds since the epoch.
fn next_edge(ahead: Duration) -> u64 {
    let earliest = epoch_seconds() + ahead.as_secs_f64();
    (earliest as u64).div_ceil(30) * 30
}

/// The tokio instant of `t` seconds since the epoch, shifted by `offset_ms`.
fn instant_of(t: u64, offset_ms: i64) -> tokio::time::Instant {
    let wait = t as f64 + offset_ms as f64 / 1000.0 - epoch_seconds();
    tokio::time::Instant::now() + Duration::from_secs_f64(wait.max(0.0))
}

/// Whether `now` is a later state written on top of `before` (under load the next
/// window edge may pass while the test waits, and B writes it): its history extends
/// `before`'s with newer entries. A late write decided before `before` cannot.
fn moved_on(before: &CutoverPlan, now: &CutoverPlan) -> bool {
    let history = |p: &CutoverPlan| {
        p.status
            .as_ref()
            .map(|s| s.history.clone())
            .unwrap_or_default()
    };
    let (old, new) = (history(before), history(now));
    new.len() > old.len()
        && new.starts_with(&old)
        && new[old.len()..]
            .iter()
            .all(|e| old.last().is_none_or(|last| e.at.0 > last.at.0))
}

async fn plan_now(client: &Client, namespace: &str) -> CutoverPlan {
    Api::<CutoverPlan>::namespaced(client.clone(), namespace)
        .get("crm")
        .await
        .unwrap()
}

/// The plan, once its status says the window is `frozen`.
async fn plan_showing(
    client: &Client,
    namespace: &str,
    frozen: bool,
) -> Result<CutoverPlan, String> {
    let plan = plan_now(client, namespace).await;
    let shown = plan.status.as_ref().map(|s| s.freeze.is_some());
    if shown == Some(frozen) {
        Ok(plan)
    } else {
        Err(format!("the status shows frozen = {shown:?}"))
    }
}

/// Writes to CutoverPlan status that the API server refused with 409, from its own
/// `apiserver_request_total`.
async fn refused_plan_status_writes(client: &Client) -> u64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    text.lines()
        .filter(|line| {
            line.starts_with("apiserver_request_total{")
                && line.contains("resource=\"cutoverplans\"")
                && line.contains("subresource=\"status\"")
                && line.contains("code=\"409\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The `switchyard_api_writes_total` of plan status applies with `outcome`, in an
/// OpenMetrics text.
fn plan_status_writes(metrics: &str, outcome: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("switchyard_api_writes_total{")
                && line.contains("resource=\"cutoverplans/status\"")
                && line.contains("verb=\"apply\"")
                && line.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn upstream(plane: &switchyard_testenv::ControlPlane) -> std::net::SocketAddr {
    plane
        .server_url()
        .trim_start_matches("https://")
        .parse()
        .expect("the API server listens on an IP address")
}

fn signal(operator: &Operator, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &operator.pid().to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(sent.success(), "kill {signal} failed");
}

#[tokio::test]
async fn a_stale_status_write_is_refused_and_the_reconcile_decides_again() {
    let plane = common::plane();
    let (client, ns) = common::admin_in_fresh_namespace("stale").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &frozen_plan()).await;

    // The API server refuses an apply that carries a resourceVersion the object has
    // moved past, and the counters say so.
    let services = Services::default();
    let metrics = services.metrics.clone();
    let ctx = Context::new(client.clone(), &Settings::default(), services);
    let read = plan_now(&client, &ns).await;
    let first = CutoverPlanStatus {
        waves_summary: Some("first".into()),
        ..CutoverPlanStatus::default()
    };
    ctx.apply_status(&read, &first)
        .await
        .expect("a write from the current version lands");
    let second = CutoverPlanStatus {
        waves_summary: Some("from a stale read".into()),
        ..CutoverPlanStatus::default()
    };
    let refused = ctx
        .apply_status(&read, &second)
        .await
        .expect_err("a write from a stale version is refused");
    assert!(refused.is_conflict(), "{refused}");
    let stored = plan_now(&client, &ns).await;
    assert_eq!(
        stored.status.unwrap().waves_summary.as_deref(),
        Some("first")
    );
    let text = metrics.encode();
    assert_eq!(plan_status_writes(&text, "success"), 1.0, "{text}");
    assert_eq!(plan_status_writes(&text, "conflict"), 1.0, "{text}");

    // A controller whose view lags: every byte between it and the API server takes 3 s.
    let proxy = FaultProxy::start(upstream(plane)).await.unwrap();
    let yaml = kubeconfig_through(&plane.kubeconfig_yaml(None), &proxy.url()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&yaml).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let lagging = Client::try_from(config).unwrap();
    let services = Services::default();
    let metrics = services.metrics.clone();
    let settings = Settings {
        namespaces: vec![ns.clone()],
        api_write_timeout: Duration::from_secs(30),
        ..Settings::default()
    };
    let controller = tokio::spawn(switchyard::controller::run(lagging, settings, services));
    // Its own status, not the one written above (which may show the same window).
    eventually(
        Duration::from_secs(30),
        "the controller writes the status",
        || async {
            let plan = plan_showing(&client, &ns, frozen_at(epoch_seconds())).await?;
            match plan.status.and_then(|s| s.waves_summary).as_deref() {
                Some("0/1") => Ok(()),
                other => Err(format!("waves summary {other:?}")),
            }
        },
    )
    .await;

    let edge = next_edge(Duration::from_secs(8));
    proxy.set_latency(Duration::from_secs(3));
    let refused_before = refused_plan_status_writes(&client).await;
    // 1.5 s before the edge someone else writes the status. At the edge the controller
    // decides from its cache, which has not seen that write yet (it arrives 1.5 s after
    // the edge), and its write reaches the API server 3 s after the edge.
    tokio::time::sleep_until(instant_of(edge, -1500)).await;
    Api::<CutoverPlan>::namespaced(client.clone(), &ns)
        .patch_status(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"wavesSummary": "written by someone else"}})),
        )
        .await
        .unwrap();
    let frozen_after = frozen_at(edge as f64);
    let decided = eventually(
        Duration::from_secs(60),
        "the controller decides again from the new version",
        || async {
            let plan = plan_showing(&client, &ns, frozen_after).await?;
            match plan
                .status
                .as_ref()
                .and_then(|s| s.waves_summary.as_deref())
            {
                Some("written by someone else") => Err("the other write still stands".into()),
                _ => Ok(plan),
            }
        },
    )
    .await;
    let text = metrics.encode();
    assert!(
        refused_plan_status_writes(&client).await > refused_before,
        "the API server refused no plan status write; the controller's metrics:\n{text}"
    );
    assert!(plan_status_writes(&text, "conflict") >= 1.0, "{text}");
    // The answer to the write that landed takes 3 s to come back through the proxy.
    eventually(
        Duration::from_secs(30),
        "the controller counts its write",
        || async {
            let text = metrics.encode();
            (plan_status_writes(&text, "success") >= 2.0)
                .then_some(())
                .ok_or(text)
        },
    )
    .await;
    assert_eq!(
        decided.status.unwrap().waves_summary.as_deref(),
        Some("0/1"),
        "the status is the controller's decision"
    );
    controller.abort();
}

#[tokio::test]
async fn a_status_write_held_past_the_lease_never_lands_after_the_new_leaders() {
    let plane = common::plane();
    let (client, ns) = common::admin_in_fresh_namespace("fencing").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &frozen_plan()).await;

    // Replica A reaches the API server only through the proxy; B directly.
    let proxy = FaultProxy::start(upstream(plane)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let through = dir.path().join("kubeconfig");
    std::fs::write(
        &through,
        kubeconfig_through(&plane.kubeconfig_yaml(None), &proxy.url()).unwrap(),
    )
    .unwrap();
    let args = [
        "--namespaces",
        &ns,
        "--lease-namespace",
        &ns,
        "--lease-duration",
        "15s",
    ];
    let mut a = Operator::start(&through, "replica-a", &args);
    eventually(Duration::from_secs(60), "A leads", || async {
        a.leads()
            .await?
            .then_some(())
            .ok_or("standing by".to_owned())
    })
    .await;
    let b = Operator::start(plane.kubeconfig_path(), "replica-b", &args);
    eventually(Duration::from_secs(30), "B is ready", || async {
        match b.get("/readyz").await? {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code}: {body}")),
        }
    })
    .await;
    assert!(!b.leads().await.unwrap(), "B stands by while A leads");
    eventually(Duration::from_secs(30), "A writes the status", || {
        plan_showing(&client, &ns, frozen_at(epoch_seconds()))
    })
    .await;

    // Just before the window's edge, A's traffic is held: its Lease renewals stall, and
    // the status write it makes at the edge (from its cache, within its term) stays on
    // the wire. A is then paused, so that its connection stays open and its request is
    // still there to be delivered.
    let edge = next_edge(Duration::from_secs(5));
    let frozen_after = frozen_at(edge as f64);
    tokio::time::sleep_until(instant_of(edge, -500)).await;
    proxy.hold(true);
    tokio::time::sleep_until(instant_of(edge, 800)).await;
    signal(&a, "-STOP");

    // A's term runs out; B takes the Lease and writes the status of the new window.
    eventually(Duration::from_secs(40), "B takes over", || async {
        b.leads()
            .await?
            .then_some(())
            .ok_or("standing by".to_owned())
    })
    .await;
    let by_b = eventually(Duration::from_secs(30), "B writes the status", || {
        plan_showing(&client, &ns, frozen_after)
    })
    .await;
    let refused_before = refused_plan_status_writes(&client).await;

    // A's held write now reaches the API server, after B's, and must not land. A stays
    // paused meanwhile: were it to give up first and close its connection, the API
    // server could drop the request unprocessed, and the test would prove nothing.
    proxy.hold(false);
    eventually(
        Duration::from_secs(30),
        "the API server refuses A's late write",
        || async {
            let refused = refused_plan_status_writes(&client).await;
            let now = plan_now(&client, &ns).await;
            if now.resource_version() != by_b.resource_version() && !moved_on(&by_b, &now) {
                panic!(
                    "a write landed after B's: {:?} became {:?}",
                    by_b.status, now.status
                );
            }
            (refused > refused_before)
                .then_some(())
                .ok_or(format!("{refused} refused, as before"))
        },
    )
    .await;
    let last = plan_now(&client, &ns).await;
    if last.resource_version() != by_b.resource_version() {
        assert!(
            moved_on(&by_b, &last),
            "the status is not B's: {:?}",
            last.status
        );
    }
    signal(&a, "-CONT");

    // A saw its write fail: a conflict, or the timeout that ended its term.
    let failed = eventually(Duration::from_secs(30), "A counts its write", || async {
        let (_, text) = a.get("/metrics").await?;
        let failed = plan_status_writes(&text, "conflict") + plan_status_writes(&text, "timeout");
        (failed >= 1.0).then_some(failed).ok_or(format!(
            "no failed plan status write in A's metrics:\n{text}"
        ))
    })
    .await;
    println!("A's late write: refused by the API server; A counted {failed} failed write(s)");
    eventually(
        Duration::from_secs(30),
        "A stands by after its term",
        || async {
            (!a.leads().await?)
                .then_some(())
                .ok_or("A leads".to_owned())
        },
    )
    .await;
    a.kill();
}
