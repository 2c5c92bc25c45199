//! The shipped ClusterRoles (policies/rbac.yaml) on a real API server: the operator runs
//! a whole wave with nothing but its role, and the people's roles allow what they say.

mod common;

use common::access::{bind, install_roles};

use common::waves::*;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use switchyard::api::{MigrationWave, WavePhase};

const OPERATOR: &str = "system:serviceaccount:switchyard-system:switchyard";

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => status.message,
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn the_operator_runs_a_wave_with_nothing_but_its_role() {
    let plane = common::plane();
    let (admin, ns) = common::admin_in_fresh_namespace("rbac-operator").await;
    install_roles(&admin).await;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "switchyard-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "switchyard-operator"},
        "subjects": [{"kind": "ServiceAccount", "name": "switchyard", "namespace": "switchyard-system"}]
    }))
    .unwrap();
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await;
    create_backends(&admin, &ns).await;
    create(&admin, &ns, &plan("crm", &["gw", "cm"], false)).await;
    let operator = plane
        .client_as(
            OPERATOR,
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:switchyard-system",
            ],
        )
        .await
        .unwrap();
    let controller = RunningController::start(&operator, &ns);
    let steps = json!([{"setWeight": 10}, {"quiet": {"duration": "1s"}}, {"setWeight": 100}]);
    create(
        &admin,
        &ns,
        &wave("gw", "crm", "support", "emea", steps.clone()),
    )
    .await;
    wait_phase(&admin, &ns, "gw", WavePhase::Completed, None).await;
    create(
        &admin,
        &ns,
        &wave(
            "cm",
            "crm",
            "sales",
            "emea",
            json!([{"setWeight": 10}, {"approval": {}}]),
        ),
    )
    .await;
    wait_phase(&admin, &ns, "cm", WavePhase::AwaitingApproval, Some(1)).await;
    act(
        &admin,
        &ns,
        "cm",
        json!({"type": "Rollback", "user": "switchyard-admin"}),
    )
    .await;
    wait_phase(&admin, &ns, "cm", WavePhase::RolledBack, None).await;
    Api::<MigrationWave>::namespaced(admin.clone(), &ns)
        .delete("gw", &DeleteParams::default())
        .await
        .unwrap();
    let waves: Api<MigrationWave> = Api::namespaced(admin.clone(), &ns);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while waves.get_opt("gw").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finalizer was not removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        controller.stats.errors(),
        0,
        "last error: {:?}",
        controller.stats.last_error()
    );
}

/// Binds a ClusterRole to the operator's service account across the cluster.
async fn bind_operator_cluster_wide(admin: &Client, role: &str) {
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "switchyard", "namespace": "switchyard-system"}]
    }))
    .unwrap();
    // Tests of this binary share the control plane: the binding may exist already.
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await;
}

#[tokio::test]
async fn the_binary_runs_with_nothing_but_its_roles() {
    use common::operator::{Operator, eventually};
    let plane = common::plane();
    let (admin, ns) = common::admin_in_fresh_namespace("rbac-binary").await;
    install_roles(&admin).await;
    bind_operator_cluster_wide(&admin, "switchyard-operator").await;
    bind_operator_cluster_wide(&admin, "switchyard-operator-crds").await;
    let lease_binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "switchyard-leader-election"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "switchyard-leader-election"},
        "subjects": [{"kind": "ServiceAccount", "name": "switchyard", "namespace": "switchyard-system"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &lease_binding)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        plane.kubeconfig_yaml(Some((
            OPERATOR,
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:switchyard-system",
            ],
        ))),
    )
    .unwrap();
    let operator = Operator::start(
        &kubeconfig,
        "rbac-replica",
        &["--namespaces", &ns, "--lease-namespace", &ns],
    );
    let replica = &operator;
    eventually(
        std::time::Duration::from_secs(30),
        "ready and leading",
        || async move {
            let (status, body) = replica.get("/readyz").await?;
            if status == 200 && body.contains("leader") {
                Ok(())
            } else {
                Err(format!("{status}: {body}"))
            }
        },
    )
    .await;
    create_backends(&admin, &ns).await;
    create(&admin, &ns, &plan("crm", &["gw"], false)).await;
    create(
        &admin,
        &ns,
        &wave("gw", "crm", "support", "emea", json!([{"setWeight": 100}])),
    )
    .await;
    wait_phase(&admin, &ns, "gw", WavePhase::Completed, None).await;
    let log = operator.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("forbidden") || line.contains(" 403"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
}

#[tokio::test]
async fn people_can_do_what_their_role_says_and_no_more() {
    let plane = common::plane();
    let (admin, ns) = common::admin_in_fresh_namespace("rbac-people").await;
    install_roles(&admin).await;
    bind(&admin, &ns, "switchyard-viewer", "vic").await;
    bind(&admin, &ns, "switchyard-editor", "eddie").await;
    bind(&admin, &ns, "switchyard-release-manager", "rita").await;
    let api = |user: &'static str| {
        let ns = ns.clone();
        async move { Api::<MigrationWave>::namespaced(plane.client_as(user, &[]).await.unwrap(), &ns) }
    };
    let w = wave("w", "crm", "support", "emea", json!([{"approval": {}}]));
    // The editor writes specs.
    api("eddie")
        .await
        .create(&PostParams::default(), &w)
        .await
        .expect("an editor creates a wave");
    let eddie_plans: Api<switchyard::api::CutoverPlan> =
        Api::namespaced(plane.client_as("eddie", &[]).await.unwrap(), &ns);
    eddie_plans
        .create(&PostParams::default(), &plan("crm", &["w"], false))
        .await
        .expect("an editor creates a plan");
    // The viewer reads, and nothing else.
    let vic = api("vic").await;
    assert_eq!(vic.list(&Default::default()).await.unwrap().items.len(), 1);
    let message = forbidden(
        vic.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await,
    );
    assert!(
        message.contains("cannot patch resource \"migrationwaves\""),
        "{message}"
    );
    // The release manager acts on waves but neither creates nor deletes them.
    let rita = api("rita").await;
    rita.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"actions": [{"type": "Pause", "user": "rita"}]}})),
    )
    .await
    .expect("a release manager appends an action");
    let mut other = w.clone();
    other.metadata.name = Some("other".into());
    let message = forbidden(rita.create(&PostParams::default(), &other).await);
    assert!(
        message.contains("cannot create resource \"migrationwaves\""),
        "{message}"
    );
    forbidden(rita.delete("w", &DeleteParams::default()).await);
}
