//! Missing admission policies are loud, and while they are missing no human action
//! takes effect. (Its own test binary: it removes a cluster-wide policy binding.)

mod common;

use std::time::Duration;

use common::waves::*;
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use serde_json::json;
use switchyard::api::{CutoverPlan, MigrationWave, WavePhase};

/// Waits until plan `crm`'s AdmissionPolicies condition is `want` (`status/reason`).
async fn wait_plan_condition(admin: &Client, ns: &str, want: &str) {
    let plans: Api<CutoverPlan> = Api::namespaced(admin.clone(), ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let plan = plans.get("crm").await.unwrap();
        let got = plan
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "AdmissionPolicies"))
            .map(|c| format!("{}/{}", c.status, c.reason))
            .unwrap_or_else(|| "absent".into());
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "AdmissionPolicies is {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_the_policies_human_actions_are_refused_and_the_plans_say_why() {
    let (admin, ns) = common::admin_in_fresh_namespace("guard").await;
    create_backends(&admin, &ns).await;
    create(&admin, &ns, &plan("crm", &["w"], false)).await;
    let steps = json!([{"setWeight": 10}, {"approval": {}}, {"setWeight": 100}]);
    create(&admin, &ns, &wave("w", "crm", "support", "emea", steps)).await;
    let _controller = RunningController::start(&admin, &ns);
    wait_phase(&admin, &ns, "w", WavePhase::AwaitingApproval, Some(1)).await;
    wait_plan_condition(&admin, &ns, "True/PoliciesInForce").await;

    // The binding that makes actions record their real author goes away.
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(admin.clone());
    bindings
        .delete(
            switchyard::policies::ACTIONS_POLICY,
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    wait_plan_condition(&admin, &ns, "False/PoliciesMissing").await;
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    let warned = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("PoliciesMissing"));
    assert!(warned, "no PoliciesMissing Event");

    // An approval now is refused, visibly, and the wave stays where it is.
    act(
        &admin,
        &ns,
        "w",
        json!({"type": "Approve", "step": 1, "user": "alice"}),
    )
    .await;
    let refused = wait_wave(
        &admin,
        &ns,
        "w",
        Duration::from_secs(30),
        "the approval judged",
        |w: &MigrationWave| w.status.as_ref().is_some_and(|s| s.actions_processed == 1),
    )
    .await;
    let status = refused.status.unwrap();
    assert_eq!(status.phase, WavePhase::AwaitingApproval);
    assert_eq!(status.approved_by, None);
    let last = status.history.last().unwrap();
    assert_eq!(last.event, "ActionRefused");
    let why = last.message.as_deref().unwrap_or_default();
    assert!(
        why.contains("admission policies were not in force")
            || why.contains("admission policies are not in force"),
        "{last:?}"
    );

    // Reinstalled, the policies are in force again and a new approval takes effect.
    common::access::install_policies(&admin).await;
    common::access::await_policies_in_force(&admin).await;
    // The wave judged its pending entries with the policies missing, so it must say
    // they are back before a new entry is trusted (kubectl wave refuses until then).
    wait_plan_condition(&admin, &ns, "True/PoliciesInForce").await;
    wait_wave(
        &admin,
        &ns,
        "w",
        Duration::from_secs(30),
        "AdmissionPolicies True on the wave",
        |w: &MigrationWave| {
            w.status.as_ref().is_some_and(|s| {
                switchyard::engine::conditions::is_true(
                    &s.conditions,
                    switchyard::engine::conditions::ADMISSION_POLICIES,
                )
            })
        },
    )
    .await;
    act(
        &admin,
        &ns,
        "w",
        json!({"type": "Approve", "step": 1, "user": "alice"}),
    )
    .await;
    wait_phase(&admin, &ns, "w", WavePhase::Completed, None).await;
}
