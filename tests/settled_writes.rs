//! Reconciling a settled wave writes nothing. Writes are counted by the API server itself
//! (`apiserver_request_total`), so this test has a control plane of its own (a test
//! binary of its own) and nothing else writes to it meanwhile.

mod common;

use std::collections::BTreeMap;

use common::waves::*;
use kube::Client;
use serde_json::json;
use switchyard::api::WavePhase;

// ConfigMaps are left out: the API server itself writes some in kube-system, and this
// test routes through the Gateway API.
const OUR_RESOURCES: [&str; 4] = ["migrationwaves", "cutoverplans", "httproutes", "events"];

/// Write requests the API server has served to our resources, by resource.
async fn writes(client: &Client) -> BTreeMap<String, u64> {
    switchyard_testenv::api_writes(client)
        .await
        .unwrap()
        .into_iter()
        .filter(|(key, _)| OUR_RESOURCES.contains(&key.split('/').next().unwrap_or("")))
        .collect()
}

#[tokio::test]
async fn reconciling_a_settled_wave_writes_nothing() {
    let (client, ns) = common::admin_in_fresh_namespace("settled").await;
    create_backends(&client, &ns).await;
    create(&client, &ns, &plan("crm", &["support-emea"], false)).await;
    let before_walk = writes(&client).await;
    let controller = RunningController::start(&client, &ns);
    let steps = json!([
        {"setWeight": 10}, {"analysis": {"duration": "1s"}}, {"approval": {}},
        {"quiet": {"duration": "1s"}}, {"setWeight": 100}, {"dualAccess": {"duration": "2s"}}
    ]);
    create(
        &client,
        &ns,
        &wave("support-emea", "crm", "support", "emea", steps),
    )
    .await;
    wait_phase(
        &client,
        &ns,
        "support-emea",
        WavePhase::AwaitingApproval,
        Some(2),
    )
    .await;
    act(
        &client,
        &ns,
        "support-emea",
        json!({"type": "Approve", "step": 2, "user": "alice"}),
    )
    .await;
    wait_phase(&client, &ns, "support-emea", WavePhase::Completed, None).await;
    // The plan records the completion on its next reconcile.
    let plans: kube::Api<switchyard::api::CutoverPlan> = kube::Api::namespaced(client.clone(), &ns);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while plans
        .get("crm")
        .await
        .unwrap()
        .status
        .unwrap_or_default()
        .phase
        != switchyard::api::PlanPhase::Completed
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the plan did not complete"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The Completed Event is published right after the status write; let it land.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(client.clone(), &ns);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Completed"))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Completed Event");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let stats = controller.stop().await;
    let after_walk = writes(&client).await;
    let walk: BTreeMap<&String, u64> = after_walk
        .iter()
        .map(|(k, v)| (k, v - before_walk.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    println!(
        "one full wave: {} reconciles; API writes by resource (the test's own 2: the wave's creation and one approval): {walk:?}",
        stats.reconciles()
    );

    // A fresh controller reconciles the settled wave from scratch, and writes nothing.
    let restarted = RunningController::start(&client, &ns);
    // (Polled: nothing changes the wave, so a watch of it would not wake us.)
    let stats = &restarted.stats;
    common::operator::eventually(
        std::time::Duration::from_secs(10),
        "a reconcile",
        || async move {
            match stats.reconciles() {
                0 => Err("no reconcile yet".to_owned()),
                _ => Ok(()),
            }
        },
    )
    .await;
    // Let any write it might make reach the API server before counting.
    let settled_at = restarted.stats.reconciles();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let stats = restarted.stop().await;
    let after_restart = writes(&client).await;
    assert_eq!(stats.errors(), 0);
    assert!(stats.reconciles() >= settled_at);
    assert_eq!(after_restart, after_walk, "a settled wave was written to");
    assert_eq!(stats.status_writes() + stats.routing_writes(), 0);
}
