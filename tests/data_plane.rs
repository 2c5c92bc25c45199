//! Routing through a real gateway: Traefik's Gateway API provider reading the test API
//! server, echo backends in a network namespace (`switchyard_testenv::DataPlane`), and
//! the real `switchyard run` binary. Every routing state of docs/routing.md is checked
//! by the backend that answers, not by reading the route.

mod common;

use std::time::{Duration, Instant};

use common::operator::Operator;
use common::waves::{act, wait_phase};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::json;
use switchyard::api::{CutoverPlan, MigrationWave, WavePhase};
use switchyard_testenv::{BASE_ROUTE, Backend, Counts, DataPlane, GATEWAY, Request};

const HOST: &str = "crm.example.com";
const LEGACY: &str = "legacy-crm";
const TARGET: &str = "orchestration";
const MAINTENANCE: &str = "crm-maintenance";
/// A backend of a route that Switchyard does not own.
const FOREIGN: &str = "team-tools";
const OVERRIDE: (&str, &str) = ("x-switchyard-legacy", "true");
const WRITES: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];
/// How long the gateway may take to serve a route once it is written.
const CONVERGE: Duration = Duration::from_secs(20);
/// Requests per check of a weighted split.
const SPLIT_SAMPLES: usize = 200;
/// Answers per round while waiting for a split to reach its share.
const SPLIT_WINDOW: usize = 20;

fn backends() -> Vec<Backend> {
    [
        (LEGACY, 80),
        (TARGET, 8080),
        (MAINTENANCE, 80),
        (FOREIGN, 80),
    ]
    .into_iter()
    .map(|(name, port)| Backend::new(name, port))
    .collect()
}

async fn start_data_plane() -> DataPlane {
    let plane = common::plane();
    let started = Instant::now();
    let data = DataPlane::start(plane, HOST, &backends(), LEGACY)
        .await
        .unwrap_or_else(|err| panic!("the data plane did not start: {err}"));
    eprintln!("data plane up in {:?}: {data:?}", started.elapsed());
    data
}

fn start_operator(data: &DataPlane) -> Operator {
    let ns = data.namespace();
    Operator::start(
        common::plane().kubeconfig_path(),
        "data-plane",
        &["--namespaces", ns, "--leader-election", "false"],
    )
}

fn http_routes(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// A plan whose routes attach to the data plane's Gateway; `waves` are (name, after).
fn plan(ns: &str, waves: &[(&str, Option<&str>)]) -> CutoverPlan {
    let waves: Vec<_> = waves
        .iter()
        .map(|(name, after)| match after {
            Some(after) => json!({"name": name, "after": [after]}),
            None => json!({"name": name}),
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "CutoverPlan",
        "metadata": {"name": "crm"},
        "spec": {
            "legacy": {"service": {"name": LEGACY, "port": 80}},
            "target": {"service": {"name": TARGET, "port": 8080}},
            "maintenance": {"service": {"name": MAINTENANCE, "port": 80}},
            "routing": {"gatewayAPI": {"parentRefs": [{"name": GATEWAY, "namespace": ns}],
                                       "hostnames": [HOST]}},
            "cohortKeys": {"team": {"header": "x-crm-team"}, "region": {"header": "x-crm-region"}},
            "legacyAccess": {"header": OVERRIDE.0, "value": OVERRIDE.1},
            "waves": waves,
            "maxConcurrentWaves": 4,
            "approvers": {"groups": [common::TEST_ACTORS]},
            "rollbackAuthority": {"groups": [common::TEST_ACTORS]}
        }
    }))
    .unwrap()
}

async fn create_wave(
    client: &Client,
    ns: &str,
    name: &str,
    cohort: (&str, &str),
    steps: serde_json::Value,
) {
    let wave: MigrationWave = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "MigrationWave",
        "metadata": {"name": name},
        "spec": {"plan": "crm", "cohort": {"team": cohort.0, "region": cohort.1}, "steps": steps}
    }))
    .unwrap();
    Api::<MigrationWave>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &wave)
        .await
        .unwrap();
}

/// A request of the cohort `team`/`region`.
fn cohort(method: &str, team: &str, region: &str) -> Request {
    Request::new(method, "/accounts/42")
        .header("x-crm-team", team)
        .header("x-crm-region", region)
}

/// Waits until every answer to `request` comes from `who`, then checks 20 more.
async fn expect_only(data: &DataPlane, request: &Request, who: &str) {
    data.wait_until(request, 5, CONVERGE, |c| c.only(who))
        .await
        .unwrap_or_else(|err| panic!("{request} should reach only {who}: {err}"));
    let counts = data.counts(request, 20).await.unwrap();
    assert!(
        counts.only(who),
        "{request} should reach only {who}: {counts}"
    );
}

/// Waits until `request` is split between the target and legacy at `percent`, then
/// checks over [`SPLIT_SAMPLES`] requests that the target's share is `percent` within
/// five binomial standard deviations: Traefik's weighted round robin is exact, and a
/// random split would stay inside these bounds but for about one run in 1.7 million.
///
/// The wait asks for the new share, not only for a split: a step from one weight to
/// the next is split both before and after Traefik applies it, and sampling the old
/// weights for part of the run once failed CI (82 of 200 at 60%). Round robin gives
/// each window of [`SPLIT_WINDOW`] answers within one of its share, and this test's
/// steps are 30 points (six answers of a window) apart, so the old weights never pass.
async fn expect_split(data: &DataPlane, request: &Request, percent: u32) -> Counts {
    let expected = SPLIT_WINDOW as f64 * f64::from(percent) / 100.0;
    data.wait_until(request, SPLIT_WINDOW, CONVERGE, |c| {
        c.exactly(&[TARGET, LEGACY]) && (c.of(TARGET) as f64 - expected).abs() <= 1.5
    })
    .await
    .unwrap_or_else(|err| panic!("{request} should be split {percent}%: {err}"));
    let counts = data.counts(request, SPLIT_SAMPLES).await.unwrap();
    let n = SPLIT_SAMPLES as f64;
    let p = f64::from(percent) / 100.0;
    let sigma = (n * p * (1.0 - p)).sqrt();
    let target = counts.of(TARGET) as f64;
    assert_eq!(
        counts.of(TARGET) + counts.of(LEGACY),
        SPLIT_SAMPLES,
        "{request}: {counts}"
    );
    assert!(
        (target - n * p).abs() <= 5.0 * sigma,
        "{request} should send {percent}% to the target: {counts} (bounds {:.0}..={:.0})",
        n * p - 5.0 * sigma,
        n * p + 5.0 * sigma,
    );
    counts
}

/// Appends an action and waits for the phase it leads to.
async fn act_and_wait(
    client: &Client,
    ns: &str,
    wave: &str,
    action: serde_json::Value,
    phase: WavePhase,
    step: Option<i32>,
) {
    act(client, ns, wave, action).await;
    wait_phase(client, ns, wave, phase, step).await;
}

/// The base route as the gateway has accepted it: Traefik writes its status once.
async fn accepted_base_route(routes: &Api<DynamicObject>) -> DynamicObject {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let route = routes.get(BASE_ROUTE).await.unwrap();
        let accepted = route.data["status"]["parents"][0]["conditions"]
            .as_array()
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c["type"] == "Accepted" && c["status"] == "True")
            });
        if accepted {
            return route;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never accepted the base route: {:?}",
            route.data
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_routing_state_for_two_cohorts_at_once() {
    let started = Instant::now();
    let data = start_data_plane().await;
    let ns = data.namespace().to_owned();
    let client = common::admin_with_access().await;
    let routes = http_routes(&client, &ns);
    let base = accepted_base_route(&routes).await;

    // support-emea walks weights, quiet and a rollback; sales-emea goes to 100%, dual
    // access and completion; support-amer waits for support-emea, so it stays Pending.
    Api::<CutoverPlan>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &plan(
                &ns,
                &[
                    ("support-emea", None),
                    ("sales-emea", None),
                    ("support-amer", Some("support-emea")),
                ],
            ),
        )
        .await
        .unwrap();
    let held_step = json!({"duration": "8s"});
    create_wave(&client, &ns, "support-emea", ("support", "emea"), json!([
        {"setWeight": 30}, {"approval": {}}, {"quiet": held_step}, {"setWeight": 60}, {"approval": {}}
    ])).await;
    create_wave(
        &client,
        &ns,
        "sales-emea",
        ("sales", "emea"),
        json!([
            {"setWeight": 100}, {"approval": {}}, {"dualAccess": held_step}
        ]),
    )
    .await;
    create_wave(
        &client,
        &ns,
        "support-amer",
        ("support", "amer"),
        json!([{"setWeight": 100}]),
    )
    .await;

    // Pending, before any operator has run: no route, the base route serves every cohort.
    for request in [
        cohort("GET", "support", "emea"),
        cohort("GET", "sales", "emea"),
    ] {
        expect_only(&data, &request, LEGACY).await;
    }

    let _operator = start_operator(&data);
    wait_phase(
        &client,
        &ns,
        "support-emea",
        WavePhase::AwaitingApproval,
        Some(1),
    )
    .await;
    wait_phase(
        &client,
        &ns,
        "sales-emea",
        WavePhase::AwaitingApproval,
        Some(1),
    )
    .await;
    wait_phase(&client, &ns, "support-amer", WavePhase::Pending, None).await;

    // At a weight step: 30% of support-emea, all of sales-emea, reads and writes alike.
    let counts = expect_split(&data, &cohort("GET", "support", "emea"), 30).await;
    eprintln!("support-emea at 30%: {counts}");
    expect_split(&data, &cohort("POST", "support", "emea"), 30).await;
    expect_only(&data, &cohort("GET", "sales", "emea"), TARGET).await;
    expect_only(&data, &cohort("DELETE", "sales", "emea"), TARGET).await;
    // No dual-access step yet: the override header changes nothing.
    expect_only(
        &data,
        &cohort("GET", "sales", "emea").header(OVERRIDE.0, OVERRIDE.1),
        TARGET,
    )
    .await;

    // Header names match in any case; header values exactly.
    let shouting = Request::get("/")
        .header("X-CRM-Team", "sales")
        .header("X-Crm-REGION", "emea");
    expect_only(&data, &shouting, TARGET).await;
    expect_only(&data, &cohort("GET", "Sales", "emea"), LEGACY).await;

    // Everyone else: the base route to legacy.
    let everyone_else = [
        cohort("GET", "support", "amer"), // the Pending wave's cohort
        cohort("GET", "billing", "emea"), // a cohort of no wave
        cohort("GET", "sales", "amer"),
        Request::get("/").header("x-crm-team", "sales"), // one header of two
        Request::get("/").header("x-crm-region", "emea"),
        Request::new("POST", "/").header("x-crm-team", "support"),
        Request::get("/"), // no cohort header
        Request::get("/").header(OVERRIDE.0, OVERRIDE.1),
    ];
    for request in &everyone_else {
        expect_only(&data, request, LEGACY).await;
    }

    // Quiet, and paused there: writes to maintenance, reads still at 30%.
    act_and_wait(
        &client,
        &ns,
        "support-emea",
        json!({"type": "Approve", "step": 1, "user": "alice"}),
        WavePhase::Quiet,
        Some(2),
    )
    .await;
    act_and_wait(
        &client,
        &ns,
        "support-emea",
        json!({"type": "Pause", "user": "bob"}),
        WavePhase::Paused,
        Some(2),
    )
    .await;
    for method in WRITES {
        expect_only(&data, &cohort(method, "support", "emea"), MAINTENANCE).await;
    }
    expect_split(&data, &cohort("GET", "support", "emea"), 30).await;
    expect_split(
        &data,
        &cohort("HEAD", "support", "emea").header("x-probe", "1"),
        30,
    )
    .await;
    expect_only(&data, &cohort("POST", "sales", "emea"), TARGET).await;

    // Dual access, and paused there: the override header reaches legacy, in any case.
    act_and_wait(
        &client,
        &ns,
        "sales-emea",
        json!({"type": "Approve", "step": 1, "user": "alice"}),
        WavePhase::DualAccess,
        Some(2),
    )
    .await;
    act_and_wait(
        &client,
        &ns,
        "sales-emea",
        json!({"type": "Pause", "user": "bob"}),
        WavePhase::Paused,
        Some(2),
    )
    .await;
    expect_only(
        &data,
        &cohort("GET", "sales", "emea").header(OVERRIDE.0, OVERRIDE.1),
        LEGACY,
    )
    .await;
    expect_only(
        &data,
        &cohort("POST", "sales", "emea").header("X-Switchyard-Legacy", OVERRIDE.1),
        LEGACY,
    )
    .await;
    expect_only(
        &data,
        &cohort("GET", "sales", "emea").header(OVERRIDE.0, "false"),
        TARGET,
    )
    .await;
    expect_only(&data, &cohort("GET", "sales", "emea"), TARGET).await;
    // The override is the cohort's own: another cohort's override request is legacy's
    // through the base route, and support-emea's quiet writes still go to maintenance.
    expect_only(&data, &cohort("POST", "support", "emea"), MAINTENANCE).await;

    // Completed: everything of sales-emea to the target, the override too.
    act_and_wait(
        &client,
        &ns,
        "sales-emea",
        json!({"type": "Resume", "user": "bob"}),
        WavePhase::Completed,
        None,
    )
    .await;
    for request in [
        cohort("GET", "sales", "emea"),
        cohort("PUT", "sales", "emea"),
        cohort("GET", "sales", "emea").header(OVERRIDE.0, OVERRIDE.1),
    ] {
        expect_only(&data, &request, TARGET).await;
    }

    // The next weight step: quiet is over, writes follow the split again.
    act_and_wait(
        &client,
        &ns,
        "support-emea",
        json!({"type": "Resume", "user": "bob"}),
        WavePhase::AwaitingApproval,
        Some(4),
    )
    .await;
    let counts = expect_split(&data, &cohort("GET", "support", "emea"), 60).await;
    eprintln!("support-emea at 60%: {counts}");
    expect_split(&data, &cohort("PATCH", "support", "emea"), 60).await;

    // Rolled back: legacy for reads and writes, and the wave's route is gone.
    act_and_wait(
        &client,
        &ns,
        "support-emea",
        json!({"type": "Rollback", "user": "carol", "message": "drill"}),
        WavePhase::RolledBack,
        None,
    )
    .await;
    expect_only(&data, &cohort("GET", "support", "emea"), LEGACY).await;
    expect_only(&data, &cohort("POST", "support", "emea"), LEGACY).await;
    assert!(
        routes
            .get_opt("switchyard-support-emea")
            .await
            .unwrap()
            .is_none()
    );
    // Still Pending behind it, still legacy's.
    wait_phase(&client, &ns, "support-amer", WavePhase::Pending, None).await;
    expect_only(&data, &cohort("GET", "support", "amer"), LEGACY).await;
    expect_only(&data, &cohort("GET", "sales", "emea"), TARGET).await;

    // The platform's base route: never written by anyone since the gateway accepted it.
    let after = routes.get(BASE_ROUTE).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        base.metadata.resource_version
    );
    assert_eq!(after.data["spec"], base.data["spec"]);
    eprintln!("every routing state checked in {:?}", started.elapsed());
}

#[tokio::test]
async fn deleted_waves_and_plans_fall_back_to_legacy_and_foreign_routes_stay() {
    let started = Instant::now();
    let data = start_data_plane().await;
    let ns = data.namespace().to_owned();
    let client = common::admin_with_access().await;
    let routes = http_routes(&client, &ns);

    // Two routes Switchyard does not own: one under the name billing-emea's route would
    // take, one of a team's own, both sending requests to another backend.
    let foreign = |name: &str, header: (&str, &str)| {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {
                "parentRefs": [{"name": GATEWAY}],
                "hostnames": [HOST],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                                 "headers": [{"name": header.0, "value": header.1}]}],
                    "backendRefs": [{"name": FOREIGN, "port": 80}],
                }],
            },
        })
    };
    let mut kept = Vec::new();
    for (name, header) in [
        ("switchyard-billing-emea", ("x-crm-team", "billing")),
        ("team-tools", ("x-tools", "yes")),
    ] {
        let object: DynamicObject = serde_json::from_value(foreign(name, header)).unwrap();
        routes
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
        kept.push(name);
    }
    let billing = Request::get("/")
        .header("x-crm-team", "billing")
        .header("x-crm-region", "emea");
    let tools = Request::get("/").header("x-tools", "yes");
    expect_only(&data, &billing, FOREIGN).await;
    expect_only(&data, &tools, FOREIGN).await;
    let before: Vec<DynamicObject> = accepted_routes(&routes, &kept).await;

    Api::<CutoverPlan>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &plan(
                &ns,
                &[
                    ("support-emea", None),
                    ("sales-emea", None),
                    ("billing-emea", None),
                ],
            ),
        )
        .await
        .unwrap();
    let steps = json!([{"setWeight": 100}, {"approval": {}}]);
    for (wave, team) in [
        ("support-emea", "support"),
        ("sales-emea", "sales"),
        ("billing-emea", "billing"),
    ] {
        create_wave(&client, &ns, wave, (team, "emea"), steps.clone()).await;
    }
    let _operator = start_operator(&data);
    for wave in ["support-emea", "sales-emea"] {
        wait_phase(&client, &ns, wave, WavePhase::AwaitingApproval, Some(1)).await;
    }
    expect_only(&data, &cohort("GET", "support", "emea"), TARGET).await;
    expect_only(&data, &cohort("GET", "sales", "emea"), TARGET).await;
    // billing-emea's route name is taken: the foreign route keeps routing.
    expect_only(&data, &billing, FOREIGN).await;

    // A deleted wave: its route goes with it (the operator's finalizer; no garbage
    // collector runs here), and its cohort is legacy's again.
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    waves
        .delete("support-emea", &DeleteParams::default())
        .await
        .unwrap();
    expect_only(&data, &cohort("GET", "support", "emea"), LEGACY).await;
    expect_only(&data, &cohort("GET", "sales", "emea"), TARGET).await;

    // A deleted plan with an active wave: its cohort goes back to legacy.
    Api::<CutoverPlan>::namespaced(client.clone(), &ns)
        .delete("crm", &DeleteParams::default())
        .await
        .unwrap();
    expect_only(&data, &cohort("GET", "sales", "emea"), LEGACY).await;
    expect_only(&data, &cohort("POST", "sales", "emea"), LEGACY).await;

    // The routes Switchyard does not own: untouched, and still serving.
    expect_only(&data, &billing, FOREIGN).await;
    expect_only(&data, &tools, FOREIGN).await;
    let after = accepted_routes(&routes, &kept).await;
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(
            after.metadata.resource_version, before.metadata.resource_version,
            "{:?}",
            after.metadata.name
        );
        assert_eq!(after.metadata.labels, before.metadata.labels);
    }
    eprintln!("deletions checked in {:?}", started.elapsed());
}

/// The routes named `names`, once the gateway has accepted each (it writes their status
/// once, so from then on their resourceVersion changes only if someone else writes).
async fn accepted_routes(routes: &Api<DynamicObject>, names: &[&str]) -> Vec<DynamicObject> {
    let mut got = Vec::new();
    for name in names {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let route = routes.get(name).await.unwrap();
            if route.data["status"]["parents"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
            {
                got.push(route);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never took route {name}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    got
}

#[tokio::test]
async fn the_data_plane_answers_quickly_and_echoes_what_it_saw() {
    let data = start_data_plane().await;
    let request = Request::new("PATCH", "/x").header("X-CRM-Team", "support");
    let answer = data.send(&request).await.unwrap();
    assert_eq!(
        (answer.who().as_str(), answer.method.as_str()),
        (LEGACY, "PATCH")
    );
    assert_eq!(
        answer.headers.get("x-crm-team").map(String::as_str),
        Some("support")
    );
    let started = Instant::now();
    let counts = data.counts(&request, 200).await.unwrap();
    eprintln!("send(): {:?} per request over 200", started.elapsed() / 200);
    assert!(counts.only(LEGACY), "{counts}");
    // The network namespace goes with the data plane.
    let (netns, _) = data.netns();
    let netns = netns.to_owned();
    drop(data);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&netns),
        "{netns} is left behind"
    );
}
