//! The shipped ValidatingAdmissionPolicy against a real API server, with impersonated
//! users: actions record exactly the requester, and are append-only. (Its own test
//! binary: the policy is cluster-wide.)

mod common;

use common::access::install_policies;

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use switchyard::api::MigrationWave;

async fn grant_release_manager(client: &Client, ns: &str, user: &str) {
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "act-on-waves"},
        "rules": [{"apiGroups": ["switchyard.dev"], "resources": ["migrationwaves"], "verbs": ["get", "list", "watch", "update", "patch"]},
                  {"apiGroups": ["switchyard.dev"], "resources": ["cutoverplans"], "verbs": ["get"]}]
    }))
    .unwrap();
    let _ = Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": format!("act-{user}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "act-on-waves"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// Appends `action` as `client`'s user would, and returns the API server's answer.
async fn append(
    api: &Api<MigrationWave>,
    action: serde_json::Value,
) -> Result<MigrationWave, kube::Error> {
    append_with(api, action, false).await
}

async fn append_with(
    api: &Api<MigrationWave>,
    action: serde_json::Value,
    dry_run: bool,
) -> Result<MigrationWave, kube::Error> {
    let mut wave = api.get("w").await.unwrap();
    let action = vouched(api, &wave, action).await;
    wave.spec
        .actions
        .push(serde_json::from_value(action).unwrap());
    api.patch(
        "w",
        &PatchParams {
            dry_run,
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"spec": {"actions": wave.spec.actions}})),
    )
    .await
}

/// The UID of plan `crm` in `ns`.
async fn plan_uid(admin: &Client, ns: &str) -> String {
    Api::<switchyard::api::CutoverPlan>::namespaced(admin.clone(), ns)
        .get("crm")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

/// `action` with what `kubectl wave` records besides the user, unless the test sets it:
/// the requester's groups, and the UID of the wave's plan (when it exists).
async fn vouched(
    api: &Api<MigrationWave>,
    wave: &MigrationWave,
    mut action: serde_json::Value,
) -> serde_json::Value {
    let client = api.clone().into_client();
    if action.get("groups").is_none() {
        let who = switchyard::cli::commands::whoami(&client).await.unwrap();
        action["groups"] = json!(who.groups);
    }
    if action.get("planUID").is_none() {
        let plans: Api<switchyard::api::CutoverPlan> =
            Api::namespaced(client, wave.metadata.namespace.as_deref().unwrap());
        if let Ok(Some(plan)) = plans.get_opt(&wave.spec.plan).await {
            action["planUID"] = json!(plan.metadata.uid);
        }
    }
    action
}

/// The policies take effect once the API server has loaded them, a few seconds after
/// they are created. Probes with dry runs (which change nothing) until `action` is
/// refused by a policy, then makes the real request, which must be refused the same way.
async fn first_refusal(api: &Api<MigrationWave>, action: serde_json::Value) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match append_with(api, action.clone(), true).await {
            Err(kube::Error::Api(status))
                if status.code == 403 && status.message.contains("ValidatingAdmissionPolicy") =>
            {
                break;
            }
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("the policies never refused {action}: {other:?}"),
        }
    }
    refusal(append(api, action).await)
}

fn refusal(result: Result<MigrationWave, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            status.message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn actions_record_exactly_the_requester_and_are_append_only() {
    let plane = common::plane();
    let (admin, ns) = common::admin_in_fresh_namespace("policy").await;
    install_policies(&admin).await;
    grant_release_manager(&admin, &ns, "alice").await;
    let wave: MigrationWave = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationWave", "metadata": {"name": "w"},
        "spec": {"plan": "crm", "cohort": {"team": "support"}, "steps": [{"approval": {}}]}
    }))
    .unwrap();
    Api::<MigrationWave>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &wave)
        .await
        .unwrap();
    let alice: Api<MigrationWave> = Api::namespaced(
        plane
            .client_as("alice", &["release-managers"])
            .await
            .unwrap(),
        &ns,
    );

    // The policy takes effect once the API server has loaded it.
    let spoof = first_refusal(&alice, json!({"type": "Approve", "step": 0, "user": "bob"})).await;
    assert!(
        spoof.contains("must record the requesting user and groups exactly: write user: alice"),
        "{spoof}"
    );

    let accepted = append(
        &alice,
        json!({"type": "Approve", "step": 0, "user": "alice", "message": "go"}),
    )
    .await
    .unwrap();
    assert_eq!(accepted.spec.actions.len(), 1);
    assert_eq!(accepted.spec.actions[0].user, "alice");

    // Editing or deleting an earlier entry is refused, for alice and for the admin.
    let mut edited = alice.get("w").await.unwrap();
    edited.spec.actions[0].message = Some("changed my mind".into());
    let message = refusal(
        alice
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"actions": edited.spec.actions}})),
            )
            .await,
    );
    assert!(message.contains("spec.actions is append-only"), "{message}");
    let admin_api: Api<MigrationWave> = Api::namespaced(admin.clone(), &ns);
    let message = refusal(
        admin_api
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"actions": []}})),
            )
            .await,
    );
    assert!(message.contains("append-only"), "{message}");
    assert_eq!(
        admin_api.get("w").await.unwrap().spec.actions.len(),
        1,
        "nothing changed"
    );

    // A change that leaves the actions alone (as the operator's writes do) passes.
    admin_api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"note": "x"}}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_plans_approvers_and_rollback_authority_may_act() {
    let plane = common::plane();
    let (admin, ns) = common::admin_in_fresh_namespace("authority").await;
    install_policies(&admin).await;
    for user in ["alice", "mallory", "sam"] {
        grant_release_manager(&admin, &ns, user).await;
    }
    let plan: switchyard::api::CutoverPlan = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "CutoverPlan", "metadata": {"name": "crm"},
        "spec": {
            "legacy": {"service": {"name": "legacy", "port": 80}},
            "target": {"service": {"name": "target", "port": 80}},
            "routing": {"configMap": {"name": "t"}},
            "cohortKeys": {"team": {"header": "x-team"}},
            "waves": [{"name": "w"}],
            "readinessGates": [{"name": "rehearsal", "manual": {}}],
            "approvers": {"groups": ["release-managers"]},
            "rollbackAuthority": {"users": ["sam"], "groups": ["sre"]}
        }
    }))
    .unwrap();
    Api::<switchyard::api::CutoverPlan>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &plan)
        .await
        .unwrap();
    let wave: MigrationWave = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationWave", "metadata": {"name": "w"},
        "spec": {"plan": "crm", "cohort": {"team": "support"}, "steps": [{"approval": {}}]}
    }))
    .unwrap();
    Api::<MigrationWave>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &wave)
        .await
        .unwrap();
    let as_user = |user: &'static str, groups: &'static [&'static str]| {
        let ns = ns.clone();
        async move {
            Api::<MigrationWave>::namespaced(plane.client_as(user, groups).await.unwrap(), &ns)
        }
    };
    let mallory = as_user("mallory", &["contractors"]).await;
    let alice = as_user("alice", &["release-managers"]).await;
    let sam = as_user("sam", &["ops"]).await;

    let denied = first_refusal(
        &mallory,
        json!({"type": "Approve", "step": 0, "user": "mallory"}),
    )
    .await;
    assert!(denied.contains("only the approvers of CutoverPlan crm may approve a step (users: none; groups: release-managers)"), "{denied}");
    let message = refusal(append(&mallory, json!({"type": "Rollback", "user": "mallory"})).await);
    assert!(message.contains("only the rollbackAuthority of CutoverPlan crm may roll back or retry a wave (users: sam; groups: sre)"), "{message}");
    let message = refusal(append(&mallory, json!({"type": "Pause", "user": "mallory"})).await);
    assert!(message.contains("may pause or resume"), "{message}");
    let message = refusal(append(&alice, json!({"type": "Rollback", "user": "alice"})).await);
    assert!(
        message.contains("rollbackAuthority"),
        "an approver is not a rollback authority: {message}"
    );

    append(
        &alice,
        json!({"type": "Approve", "step": 0, "user": "alice"}),
    )
    .await
    .expect("an approver approves");
    append(
        &sam,
        json!({"type": "Rollback", "user": "sam", "message": "duplicates"}),
    )
    .await
    .expect("the rollback authority rolls back");
    append(&alice, json!({"type": "Pause", "user": "alice"}))
        .await
        .expect("an approver pauses");
    assert_eq!(
        Api::<MigrationWave>::namespaced(admin.clone(), &ns)
            .get("w")
            .await
            .unwrap()
            .spec
            .actions
            .len(),
        3
    );

    // Manual gates: only the plan's approvers pass them.
    let plans_role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pass-gates"},
        "rules": [{"apiGroups": ["switchyard.dev"], "resources": ["cutoverplans"], "verbs": ["get", "patch", "update"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &plans_role)
        .await
        .unwrap();
    for user in ["alice", "mallory"] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": format!("gates-{user}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pass-gates"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(admin.clone(), &ns)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
    let pass = |user: &'static str, groups: &'static [&'static str]| {
        let ns = ns.clone();
        async move {
            let plans: Api<switchyard::api::CutoverPlan> =
                Api::namespaced(plane.client_as(user, groups).await.unwrap(), &ns);
            let groups = [groups, &["system:authenticated"]].concat();
            let actions =
                json!([{"type": "PassGate", "gate": "rehearsal", "user": user, "groups": groups}]);
            plans
                .patch(
                    "crm",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"actions": actions}})),
                )
                .await
        }
    };
    match pass("mallory", &["contractors"]).await {
        Err(kube::Error::Api(status)) => assert!(
            status
                .message
                .contains("only the approvers of CutoverPlan crm may pass a gate"),
            "{}",
            status.message
        ),
        other => panic!("mallory passed a gate: {other:?}"),
    }
    pass("alice", &["release-managers"])
        .await
        .expect("an approver passes the gate");
}

#[tokio::test]
async fn a_step_or_gate_naming_its_own_approvers_overrides_the_plans() {
    let plane = common::plane();
    let (admin, ns) = common::admin_in_fresh_namespace("own-approvers").await;
    install_policies(&admin).await;
    for user in ["alice", "carol", "tina", "mallory"] {
        grant_release_manager(&admin, &ns, user).await;
    }
    let plans_role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pass-gates"},
        "rules": [{"apiGroups": ["switchyard.dev"], "resources": ["cutoverplans"], "verbs": ["get", "patch"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &plans_role)
        .await
        .unwrap();
    for user in ["alice", "tina"] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": format!("gates-{user}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pass-gates"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(admin.clone(), &ns)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
    let plan: switchyard::api::CutoverPlan = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "CutoverPlan", "metadata": {"name": "crm"},
        "spec": {
            "legacy": {"service": {"name": "legacy", "port": 80}},
            "target": {"service": {"name": "target", "port": 80}},
            "routing": {"configMap": {"name": "t"}},
            "cohortKeys": {"team": {"header": "x-team"}},
            "waves": [{"name": "w"}],
            "readinessGates": [
                {"name": "rehearsal", "manual": {}},
                {"name": "training", "manual": {"approvers": {"users": ["tina"]}}}
            ],
            "approvers": {"groups": ["release-managers"]}
        }
    }))
    .unwrap();
    Api::<switchyard::api::CutoverPlan>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &plan)
        .await
        .unwrap();
    let wave: MigrationWave = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationWave", "metadata": {"name": "w"},
        "spec": {"plan": "crm", "cohort": {"team": "support"},
                 "steps": [{"approval": {"approvers": {"users": ["carol"]}}}, {"approval": {}}]}
    }))
    .unwrap();
    Api::<MigrationWave>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &wave)
        .await
        .unwrap();
    let waves_as = |user: &'static str, groups: &'static [&'static str]| {
        let ns = ns.clone();
        async move {
            Api::<MigrationWave>::namespaced(plane.client_as(user, groups).await.unwrap(), &ns)
        }
    };
    let alice = waves_as("alice", &["release-managers"]).await;
    let carol = waves_as("carol", &[]).await;
    let mallory = waves_as("mallory", &[]).await;

    // A plan approver may not approve a step that names its own approvers.
    let denied = first_refusal(
        &alice,
        json!({"type": "Approve", "step": 0, "user": "alice"}),
    )
    .await;
    assert!(
        denied.contains(
            "only the approvers of step 0 of MigrationWave w may approve it (users: carol; groups: none)"
        ),
        "{denied}"
    );
    // The step's own approver may, though not a plan approver...
    append(
        &carol,
        json!({"type": "Approve", "step": 0, "user": "carol"}),
    )
    .await
    .expect("the step's approver approves it");
    // ...but only that step.
    let message = refusal(
        append(
            &carol,
            json!({"type": "Approve", "step": 1, "user": "carol"}),
        )
        .await,
    );
    assert!(
        message.contains("only the approvers of CutoverPlan crm may approve a step"),
        "{message}"
    );
    append(
        &alice,
        json!({"type": "Approve", "step": 1, "user": "alice"}),
    )
    .await
    .expect("a plan approver approves a step without its own approvers");

    // Naming oneself as the step's approver and approving in the same write is refused:
    // the approvers are read from the wave as it was.
    let mut current = alice.get("w").await.unwrap();
    current.spec.steps[0].approval =
        Some(serde_json::from_value(json!({"approvers": {"users": ["mallory"]}})).unwrap());
    current.spec.actions.push(
        serde_json::from_value(json!({"type": "Approve", "step": 0, "user": "mallory",
            "groups": ["system:authenticated"], "planUID": plan_uid(&admin, &ns).await}))
        .unwrap(),
    );
    let message = refusal(
        mallory
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"steps": current.spec.steps, "actions": current.spec.actions}}),
                ),
            )
            .await,
    );
    assert!(
        message.contains("(users: carol; groups: none)"),
        "{message}"
    );

    // Gates: a gate's own approvers replace the plan's.
    let pass = |user: &'static str, groups: &'static [&'static str], gate: &'static str| {
        let ns = ns.clone();
        async move {
            let plans: Api<switchyard::api::CutoverPlan> =
                Api::namespaced(plane.client_as(user, groups).await.unwrap(), &ns);
            let mut actions = plans.get("crm").await.unwrap().spec.actions;
            let groups = [groups, &["system:authenticated"]].concat();
            actions.push(
                serde_json::from_value(
                    json!({"type": "PassGate", "gate": gate, "user": user, "groups": groups}),
                )
                .unwrap(),
            );
            plans
                .patch(
                    "crm",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"actions": actions}})),
                )
                .await
        }
    };
    match pass("alice", &["release-managers"], "training").await {
        Err(kube::Error::Api(status)) => assert!(
            status.message.contains(
                "only the approvers of gate training of CutoverPlan crm may pass it (users: tina; groups: none)"
            ),
            "{}",
            status.message
        ),
        other => panic!("a plan approver passed a gate with its own approvers: {other:?}"),
    }
    pass("tina", &[], "training")
        .await
        .expect("the gate's approver passes it");
    match pass("tina", &[], "rehearsal").await {
        Err(kube::Error::Api(status)) => assert!(
            status
                .message
                .contains("only the approvers of CutoverPlan crm may pass a gate"),
            "{}",
            status.message
        ),
        other => panic!("a gate approver passed another gate: {other:?}"),
    }
    pass("alice", &["release-managers"], "rehearsal")
        .await
        .expect("a plan approver passes a gate without its own approvers");
}

#[tokio::test]
async fn release_managers_append_actions_but_only_editors_change_the_spec() {
    let plane = common::plane();
    let (admin, ns) = common::admin_in_fresh_namespace("spec-guard").await;
    install_policies(&admin).await;
    common::access::install_roles(&admin).await;
    common::access::bind(&admin, &ns, "switchyard-editor", "eddie").await;
    common::access::bind(&admin, &ns, "switchyard-release-manager", "rita").await;
    let eddie = plane.client_as("eddie", &[]).await.unwrap();
    let rita = plane
        .client_as("rita", &["release-managers"])
        .await
        .unwrap();
    let plan: switchyard::api::CutoverPlan = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "CutoverPlan", "metadata": {"name": "crm"},
        "spec": {
            "legacy": {"service": {"name": "legacy", "port": 80}},
            "target": {"service": {"name": "target", "port": 80}},
            "routing": {"configMap": {"name": "t"}},
            "cohortKeys": {"team": {"header": "x-team"}},
            "waves": [{"name": "w"}],
            "approvers": {"groups": ["release-managers"]}
        }
    }))
    .unwrap();
    let eddie_plans: Api<switchyard::api::CutoverPlan> = Api::namespaced(eddie.clone(), &ns);
    eddie_plans
        .create(&PostParams::default(), &plan)
        .await
        .expect("an editor creates the plan");
    let wave: MigrationWave = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationWave", "metadata": {"name": "w"},
        "spec": {"plan": "crm", "cohort": {"team": "support"}, "steps": [{"setWeight": 10}, {"approval": {}}]}
    }))
    .unwrap();
    Api::<MigrationWave>::namespaced(eddie.clone(), &ns)
        .create(&PostParams::default(), &wave)
        .await
        .expect("an editor creates the wave");
    let rita_waves: Api<MigrationWave> = Api::namespaced(rita.clone(), &ns);
    let rita_plans: Api<switchyard::api::CutoverPlan> = Api::namespaced(rita.clone(), &ns);

    // A release manager who adds herself to the approvers is refused, with why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let add_herself =
        json!({"spec": {"approvers": {"users": ["rita"], "groups": ["release-managers"]}}});
    let message = loop {
        match rita_plans
            .patch(
                "crm",
                &PatchParams {
                    dry_run: true,
                    ..PatchParams::default()
                },
                &Patch::Merge(&add_herself),
            )
            .await
        {
            Err(kube::Error::Api(status))
                if status.message.contains("ValidatingAdmissionPolicy") =>
            {
                break refusal_of(
                    rita_plans
                        .patch("crm", &PatchParams::default(), &Patch::Merge(&add_herself))
                        .await,
                );
            }
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => {
                panic!("the spec guard never refused a release manager's spec edit: {other:?}")
            }
        }
    };
    assert!(
        message.contains(
            "only users who may update cutoverplans (the switchyard-editor role) may change the spec, labels, annotations, finalizers or ownerReferences; rita may only append to spec.actions"
        ),
        "{message}"
    );
    // So is a change to a wave's steps.
    let message = refusal(
        rita_waves
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"steps": [{"setWeight": 100}]}})),
            )
            .await,
    );
    assert!(message.contains("may update migrationwaves"), "{message}");

    // Appending an action is hers to do; the object's metadata is not: ownerReferences
    // (a garbage collector would delete the plan), finalizers (a deletion would skip the
    // rollback), labels and annotations, on plans and waves alike.
    append(
        &rita_waves,
        json!({"type": "Pause", "user": "rita", "message": "hold"}),
    )
    .await
    .expect("a release manager appends an action");
    let owner = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "bait",
                       "uid": "6b0e8d3c-0000-4000-8000-000000000001"});
    let metadata_changes = [
        json!({"metadata": {"ownerReferences": [owner]}}),
        json!({"metadata": {"finalizers": null}}),
        json!({"metadata": {"finalizers": ["example.com/hold"]}}),
        json!({"metadata": {"labels": {"ticket": "chg-1"}}}),
        json!({"metadata": {"annotations": {"switchyard.dev/actions-compacted": "900"}}}),
    ];
    // Finalizers to remove (the operator's, as it would have added them).
    eddie_plans
        .patch(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["switchyard.dev/rollback-waves"]}})),
        )
        .await
        .expect("an editor may set finalizers");
    Api::<MigrationWave>::namespaced(eddie.clone(), &ns)
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["switchyard.dev/routing-cleanup"]}})),
        )
        .await
        .expect("an editor may set finalizers");
    for change in &metadata_changes {
        let on_plan = refusal_of(
            rita_plans
                .patch("crm", &PatchParams::default(), &Patch::Merge(change))
                .await,
        );
        assert!(
            on_plan.contains("rita may only append to spec.actions"),
            "{change}: {on_plan}"
        );
        let on_wave = refusal(
            rita_waves
                .patch("w", &PatchParams::default(), &Patch::Merge(change))
                .await,
        );
        assert!(
            on_wave.contains("rita may only append to spec.actions"),
            "{change}: {on_wave}"
        );
    }
    // The plan's finalizer is still there, and no owner was added.
    let stored = eddie_plans.get("crm").await.unwrap();
    assert!(
        stored
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        stored.metadata.finalizers.unwrap_or_default(),
        vec!["switchyard.dev/rollback-waves".to_owned()]
    );
    eddie_plans
        .patch(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    // An editor keeps full control of metadata.
    eddie_plans
        .patch(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"ticket": "chg-1"}}})),
        )
        .await
        .expect("an editor labels the plan");
    // The editor changes the spec.
    eddie_plans
        .patch(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxConcurrentWaves": 2}})),
        )
        .await
        .expect("an editor changes the spec");
    let stored = eddie_plans.get("crm").await.unwrap();
    assert_eq!(stored.spec.max_concurrent_waves, Some(2));
    assert_eq!(
        stored.spec.approvers.unwrap().users,
        Vec::<String>::new(),
        "the refused edit left nothing behind"
    );
}

fn refusal_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            status.message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
