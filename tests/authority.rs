//! Authority that fails closed, exact gates and a log that never blocks a rollback,
//! against a real API server with the shipped policies, impersonated users and the
//! controllers running.

mod common;

use std::time::Duration;

use common::waves::*;
use common::{TEST_ACTORS, plane};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use switchyard::api::{CutoverPlan, MigrationWave, WavePhase};
use switchyard::engine::action_log::{COMPACTED_ANNOTATION, RESERVED_FROM};

/// Appends `action` (JSON) to wave `name` as `client`, guarded by the resourceVersion
/// read; returns the API server's answer.
async fn append_as(
    client: &Client,
    namespace: &str,
    name: &str,
    action: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<MigrationWave> = Api::namespaced(client.clone(), namespace);
    loop {
        let wave = api.get(name).await?;
        let patch = if wave.spec.actions.is_empty() {
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": wave.metadata.resource_version},
                   {"op": "add", "path": "/spec/actions", "value": [action]}])
        } else {
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": wave.metadata.resource_version},
                   {"op": "add", "path": "/spec/actions/-", "value": action}])
        };
        let patch: Patch<()> = Patch::Json(serde_json::from_value(patch).unwrap());
        match api.patch(name, &PatchParams::default(), &patch).await {
            // A failed resourceVersion test (422) or a conflict: the operator wrote in
            // between (a status, a compaction). Read again, as kubectl wave does.
            Err(kube::Error::Api(status))
                if status.code == 409
                    || (status.code == 422
                        && api.get(name).await?.metadata.resource_version
                            != wave.metadata.resource_version) =>
            {
                continue;
            }
            other => return other.map(|_| ()),
        }
    }
}

async fn groups_of(client: &Client) -> Vec<String> {
    switchyard::cli::commands::whoami(client)
        .await
        .unwrap()
        .groups
}

fn history_of(wave: &MigrationWave) -> Vec<(String, String, String)> {
    wave.status
        .as_ref()
        .map(|s| {
            s.history
                .iter()
                .map(|h| {
                    (
                        h.event.clone(),
                        h.actor.clone().unwrap_or_default(),
                        h.message.clone().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_action_recorded_before_its_plan_existed_never_takes_effect() {
    let (admin, ns) = common::admin_in_fresh_namespace("no-plan").await;
    create_backends(&admin, &ns).await;
    // The wave exists, its plan does not: admission cannot check authority, and lets
    // the action through.
    let steps = json!([{"setWeight": 10}, {"approval": {}}, {"setWeight": 100}]);
    create(
        &admin,
        &ns,
        &wave("support-emea", "crm", "support", "emea", steps),
    )
    .await;
    let mallory = plane().client_as("mallory", &[TEST_ACTORS]).await.unwrap();
    let groups = groups_of(&mallory).await;
    for action in [
        json!({"type": "Rollback", "user": "mallory", "groups": groups, "planUID": "guessed"}),
        json!({"type": "Approve", "step": 1, "user": "mallory", "groups": groups}),
    ] {
        append_as(&mallory, &ns, "support-emea", action)
            .await
            .expect("admission cannot refuse without the plan");
    }
    let _controller = RunningController::start(&admin, &ns);
    // Refused at once: nobody can be authorised without the plan.
    let refused = wait_wave(
        &admin,
        &ns,
        "support-emea",
        Duration::from_secs(30),
        "both actions processed",
        |w: &MigrationWave| w.status.as_ref().is_some_and(|s| s.actions_processed == 2),
    )
    .await;
    let history = history_of(&refused);
    assert_eq!(
        history
            .iter()
            .filter(|(event, actor, _)| event == "ActionRefused" && actor == "mallory")
            .count(),
        2,
        "{history:?}"
    );
    assert!(
        history
            .iter()
            .any(|(_, _, m)| m.contains("CutoverPlan \"crm\" does not exist")),
        "{history:?}"
    );
    // The plan appears, naming mallory's group: the earlier actions stay refused, and
    // the wave runs as if they had never been recorded.
    create(&admin, &ns, &plan("crm", &["support-emea"], false)).await;
    let waiting = wait_phase(
        &admin,
        &ns,
        "support-emea",
        WavePhase::AwaitingApproval,
        Some(1),
    )
    .await;
    let status = waiting.status.unwrap();
    assert_eq!(status.approved_by, None);
    assert_eq!(status.attempt, 0);
    // A forged planUID is refused at admission now that the plan is there.
    let refused = append_as(
        &mallory,
        &ns,
        "support-emea",
        json!({"type": "Approve", "step": 1, "user": "mallory", "groups": groups, "planUID": "guessed"}),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("write planUID: "), "{refused}");
    // And an action made properly takes effect.
    act(
        &admin,
        &ns,
        "support-emea",
        json!({"type": "Approve", "step": 1, "user": "mallory"}),
    )
    .await;
    wait_phase(&admin, &ns, "support-emea", WavePhase::Completed, None).await;
}

#[tokio::test]
async fn a_gate_counts_only_passes_recorded_while_it_existed_by_its_own_approvers() {
    let (admin, ns) = common::admin_in_fresh_namespace("gates").await;
    create_backends(&admin, &ns).await;
    let mut p = plan("crm", &["a"], false);
    p.spec.readiness_gates = serde_json::from_value(json!([
        {"name": "rehearsal", "manual": {}}
    ]))
    .unwrap();
    create(&admin, &ns, &p).await;
    let alice = plane().client_as("alice", &[TEST_ACTORS]).await.unwrap();
    let groups = groups_of(&alice).await;
    let plans: Api<CutoverPlan> = Api::namespaced(alice.clone(), &ns);
    let pass = |gate: &str| json!({"spec": {"actions": [{"type": "PassGate", "gate": gate, "user": "alice", "groups": groups}]}});
    // A pass for a gate that does not exist yet is refused, with why.
    let refused = plans
        .patch(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(pass("training")),
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains(
            "gate training is not a manual readiness gate of CutoverPlan crm as it stands"
        ),
        "{refused}"
    );
    // So is a plan created with actions already in it.
    let mut seeded = plan("crm-2", &["a"], false);
    seeded.spec.readiness_gates = p.spec.readiness_gates.clone();
    seeded.spec.actions = serde_json::from_value(
        json!([{"type": "PassGate", "gate": "rehearsal", "user": "switchyard-admin"}]),
    )
    .unwrap();
    let refused = Api::<CutoverPlan>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &seeded)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("must be empty when the object is created"),
        "{refused}"
    );

    // The gate is added later with its own approvers, another group: alice's earlier
    // attempt left nothing that could count for it, and her pass now is refused.
    Api::<CutoverPlan>::namespaced(admin.clone(), &ns)
        .patch(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"readinessGates": [
                {"name": "rehearsal", "manual": {}},
                {"name": "training", "manual": {"approvers": {"groups": ["trainers"]}}}
            ]}})),
        )
        .await
        .unwrap();
    let _controller = RunningController::start(&admin, &ns);
    let refused = plans
        .patch(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(pass("training")),
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("only the approvers of gate training"),
        "{refused}"
    );
    let plan_api: Api<CutoverPlan> = Api::namespaced(admin.clone(), &ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = plan_api
            .get("crm")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if status.gates.len() == 2 {
            let training = status.gates.iter().find(|g| g.name == "training").unwrap();
            assert!(!training.passing, "{training:?}");
            assert_eq!(training.passed_by, None);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the plan never showed its gates"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The trainer passes it, and only that counts.
    pass_gate(&ns, "crm", "rehearsal", "alice", "rehearsed").await;
    let trainer = plane()
        .client_as("tom", &["trainers", TEST_ACTORS])
        .await
        .unwrap();
    let trainer_groups = groups_of(&trainer).await;
    let trainer_plans = Api::<CutoverPlan>::namespaced(trainer, &ns);
    let pass = serde_json::from_value(
        json!({"type": "PassGate", "gate": "training", "user": "tom", "groups": trainer_groups}),
    )
    .unwrap();
    // The append is on condition of the version read, and the controller's status writes
    // change it: on a conflict, read again and append again, as kubectl-wave does.
    let mut attempts = 0;
    loop {
        let mut current = trainer_plans.get("crm").await.unwrap();
        current.spec.actions.push(Clone::clone(&pass));
        let appended = trainer_plans
            .patch(
                "crm",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"resourceVersion": current.metadata.resource_version},
                                     "spec": {"actions": current.spec.actions}}),
                ),
            )
            .await;
        match appended {
            Ok(_) => break,
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 10 => attempts += 1,
            Err(err) => panic!("the gate's own approver passes it: {err}"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = plan_api
            .get("crm")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        let by: Vec<_> = status.gates.iter().map(|g| g.passed_by.clone()).collect();
        if by == [Some("alice".to_owned()), Some("tom".to_owned())] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gates: {:?}",
            status.gates
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn thousands_of_actions_never_block_a_rollback() {
    let (admin, ns) = common::admin_in_fresh_namespace("log").await;
    create_backends(&admin, &ns).await;
    create(&admin, &ns, &plan("crm", &["w"], false)).await;
    let steps = json!([{"setWeight": 10}, {"approval": {}}, {"setWeight": 100}]);
    create(&admin, &ns, &wave("w", "crm", "support", "emea", steps)).await;
    let rita = plane().client_as("rita", &[TEST_ACTORS]).await.unwrap();
    let groups = groups_of(&rita).await;
    let uid = Api::<CutoverPlan>::namespaced(admin.clone(), &ns)
        .get("crm")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let entry =
        |kind: &str| json!({"type": kind, "user": "rita", "groups": groups, "planUID": uid});

    // Two entries in one request are refused: one action per request.
    let api: Api<MigrationWave> = Api::namespaced(rita.clone(), &ns);
    let refused = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"actions": [entry("Pause"), entry("Pause")]}})),
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("one new entry per request"),
        "{refused}"
    );

    // With no operator running, the log fills up to the reserved slots; after that only
    // Pause and Rollback are accepted.
    for i in 0..RESERVED_FROM {
        let kind = if i % 2 == 0 { "Resume" } else { "Pause" };
        append_as(&rita, &ns, "w", entry(kind)).await.unwrap();
    }
    let refused = append_as(&rita, &ns, "w", entry("Resume"))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("kept for Pause and Rollback"),
        "{refused}"
    );
    append_as(&rita, &ns, "w", entry("Pause"))
        .await
        .expect("a pause fits in the reserved slots");

    // The operator, as its ServiceAccount (which may compact, and nothing more),
    // processes and compacts the log; a thousand more go in, one at a time.
    let operator = common::access::operator_client().await;
    let _controller = RunningController::start(&operator, &ns);
    let waves: Api<MigrationWave> = Api::namespaced(admin.clone(), &ns);
    wait_wave(
        &admin,
        &ns,
        "w",
        Duration::from_secs(120),
        "the log processed and compacted",
        |w: &MigrationWave| {
            w.spec.actions.len() < 256
                && w.status
                    .as_ref()
                    .is_some_and(|s| s.actions_processed as usize > RESERVED_FROM)
        },
    )
    .await;
    for i in 0..1000 {
        let kind = if i % 2 == 0 { "Resume" } else { "Pause" };
        append_as(&rita, &ns, "w", entry(kind)).await.unwrap();
    }
    append_as(&rita, &ns, "w", entry("Rollback"))
        .await
        .expect("a rollback can always be recorded");
    let rolled = wait_phase(&admin, &ns, "w", WavePhase::RolledBack, None).await;
    let total = RESERVED_FROM + 1 + 1000 + 1;
    assert_eq!(
        rolled.status.as_ref().unwrap().actions_processed as usize,
        total
    );
    let stored = waves.get("w").await.unwrap();
    let compacted: usize = stored
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(COMPACTED_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(compacted >= RESERVED_FROM, "compacted only {compacted}");
    assert_eq!(
        compacted + stored.spec.actions.len(),
        total,
        "no entry lost or invented"
    );
    let history = history_of(&rolled);
    assert!(
        history
            .iter()
            .any(|(event, actor, _)| event == "RolledBack" && actor == "rita"),
        "{history:?}"
    );
    // Nobody but the operator may compact: rita cannot drop processed entries.
    let mut current = waves.get("w").await.unwrap();
    current.spec.actions.remove(0);
    let refused = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {COMPACTED_ANNOTATION: (compacted + 1).to_string()}},
                                 "spec": {"actions": current.spec.actions}})),
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
}
