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
    // Under the admission policies that bind the operator, too. (Only those: the
    // policies for people would refuse this test's admin its rollback, and tests of this
    // binary share the control plane.)
    install_operator_policies(&admin).await;
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
    install_operator_policies(&admin).await;
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
    // (In the test plans' authorised group, so that admission's authority check passes
    // too: RBAC is what this test is about.)
    let rita = Api::<MigrationWave>::namespaced(
        plane
            .client_as("rita", &[common::TEST_ACTORS])
            .await
            .unwrap(),
        &ns,
    );
    rita.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"actions": [{"type": "Pause", "user": "rita", "groups": [common::TEST_ACTORS, "system:authenticated"],
            "planUID": Api::<switchyard::api::CutoverPlan>::namespaced(admin.clone(), &ns)
                .get("crm").await.unwrap().metadata.uid}]}})),
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

// ---------------------------------------------------------------------------------------
// Least privilege: what the operator's ServiceAccount may write, checked with real
// requests under the shipped roles and admission policies.

/// The groups a ServiceAccount of `switchyard-system` has.
const OPERATOR_GROUPS: [&str; 2] = [
    "system:serviceaccounts",
    "system:serviceaccounts:switchyard-system",
];

/// The operator, impersonated: its username and groups, without a Pod-bound token.
async fn impersonated_operator() -> Client {
    common::plane()
        .client_as(OPERATOR, &OPERATOR_GROUPS)
        .await
        .unwrap()
}

/// The admission policies that bind the operator, as generated (for
/// `switchyard-system/switchyard`).
async fn install_operator_policies(admin: &Client) {
    common::access::install_operator_policies_for(
        admin,
        switchyard::policies::operator::DEFAULT_OPERATOR,
        "",
    )
    .await;
}

/// The roles and the policies, and the operator's cluster-wide bindings (the chart's
/// default mode).
async fn install_cluster_wide(admin: &Client) {
    install_roles(admin).await;
    install_operator_policies(admin).await;
    bind_operator_cluster_wide(admin, "switchyard-operator").await;
    bind_operator_cluster_wide(admin, "switchyard-operator-crds").await;
}

/// The message of a refusal by the admission policy `policy`.
fn refused_by<T: std::fmt::Debug>(policy: &str, result: Result<T, kube::Error>) -> String {
    let message = forbidden(result);
    assert!(
        message.contains(&format!("ValidatingAdmissionPolicy '{policy}'")),
        "refused, but not by {policy}: {message}"
    );
    message
}

/// Policies take effect a few seconds after they are created: retries `probe` (a dry
/// run) until the API server refuses it with a policy's message.
async fn until_a_policy_refuses<T, F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match probe().await {
            Err(kube::Error::Api(status))
                if status.code == 403 && status.message.contains("ValidatingAdmissionPolicy") =>
            {
                return;
            }
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(err) => panic!("the policies never refused {what}: {err}"),
            Ok(_) => panic!("the policies never refused {what}"),
        }
    }
}

fn config_map(name: &str, labels: serde_json::Value) -> k8s_openapi::api::core::v1::ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"}
    }))
    .unwrap()
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

fn merge(patch: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(patch)
}

const ROUTING_TABLES: &str = switchyard::policies::routing_tables::ROUTING_TABLES_POLICY;
const ROUTES: &str = switchyard::policies::routing_tables::ROUTES_POLICY;
const OWN_POD: &str = switchyard::policies::operator_pod::OPERATOR_POD_POLICY;

#[tokio::test]
async fn the_operator_writes_only_configmaps_labelled_as_routing_tables() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (admin, ns) = common::admin_in_fresh_namespace("rbac-tables").await;
    install_cluster_wide(&admin).await;
    let operator = impersonated_operator().await;
    let as_operator: Api<ConfigMap> = Api::namespaced(operator.clone(), &ns);
    let as_admin: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let table = json!({"switchyard.dev/routing-table": "true"});
    until_a_policy_refuses("an unlabelled ConfigMap", || {
        let api = as_operator.clone();
        async move {
            api.create(&dry_run(), &config_map("probe", json!({})))
                .await
        }
    })
    .await;

    // Without the label: refused, on create and by server-side apply.
    let message = refused_by(
        ROUTING_TABLES,
        as_operator
            .create(
                &PostParams::default(),
                &config_map("plain", json!({"app": "crm"})),
            )
            .await,
    );
    assert!(
        message.contains(&format!(
            "the Switchyard operator writes only objects labelled switchyard.dev/routing-table=true; ConfigMap {ns}/plain would not carry that label"
        )),
        "{message}"
    );
    refused_by(
        ROUTING_TABLES,
        as_operator
            .patch(
                "applied",
                &PatchParams::apply("switchyard").force(),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "applied"}, "data": {"k": "v"}})),
            )
            .await,
    );
    // A label of another value is not the label.
    refused_by(
        ROUTING_TABLES,
        as_operator
            .create(
                &PostParams::default(),
                &config_map("false", json!({"switchyard.dev/routing-table": "false"})),
            )
            .await,
    );
    // With it: allowed, and it may be changed while it keeps the label.
    as_operator
        .create(&PostParams::default(), &config_map("table", table.clone()))
        .await
        .expect("a routing table is the operator's to write");
    as_operator
        .patch(
            "table",
            &PatchParams::default(),
            &merge(json!({"data": {"wave": "{}"}})),
        )
        .await
        .expect("the operator changes its routing table");
    // ... but not lose it.
    refused_by(
        ROUTING_TABLES,
        as_operator
            .patch(
                "table",
                &PatchParams::default(),
                &merge(json!({"metadata": {"labels": {"switchyard.dev/routing-table": null}}})),
            )
            .await,
    );

    // Someone else's ConfigMap cannot be hijacked by labelling it in the same write.
    as_admin
        .create(
            &PostParams::default(),
            &config_map("theirs", json!({"app": "crm"})),
        )
        .await
        .unwrap();
    let message = refused_by(
        ROUTING_TABLES,
        as_operator
            .patch(
                "theirs",
                &PatchParams::default(),
                &merge(
                    json!({"metadata": {"labels": {"switchyard.dev/routing-table": "true"}},
                              "data": {"k": "hijacked"}}),
                ),
            )
            .await,
    );
    assert!(
        message.contains(&format!(
            "the Switchyard operator changes only objects already labelled switchyard.dev/routing-table=true; ConfigMap {ns}/theirs is not"
        )),
        "{message}"
    );
    assert_eq!(
        as_admin.get("theirs").await.unwrap().data.unwrap()["k"],
        "v"
    );

    // Cluster-wide mode still keeps it out of kube-system's ConfigMaps.
    let system: Api<ConfigMap> = Api::namespaced(admin.clone(), "kube-system");
    let name = format!("{ns}-coredns");
    system
        .create(&PostParams::default(), &config_map(&name, json!({})))
        .await
        .unwrap();
    refused_by(
        ROUTING_TABLES,
        Api::<ConfigMap>::namespaced(operator.clone(), "kube-system")
            .patch(
                &name,
                &PatchParams::default(),
                &merge(json!({"metadata": {"labels": {"switchyard.dev/routing-table": "true"}}})),
            )
            .await,
    );
    refused_by(
        ROUTING_TABLES,
        Api::<ConfigMap>::namespaced(operator, "kube-system")
            .create(
                &PostParams::default(),
                &config_map(&format!("{name}-new"), json!({})),
            )
            .await,
    );
    // The policy binds the operator only: people write ConfigMaps as before.
    as_admin
        .create(&PostParams::default(), &config_map("people", json!({})))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_operator_writes_only_its_own_http_routes() {
    use kube::api::DynamicObject;
    use switchyard::routing::HTTPRoute;
    let (admin, ns) = common::admin_in_fresh_namespace("rbac-routes").await;
    install_cluster_wide(&admin).await;
    let operator = impersonated_operator().await;
    let as_operator = common::dynamic_api::<HTTPRoute>(operator, &ns);
    let as_admin = common::dynamic_api::<HTTPRoute>(admin, &ns);
    let route = |name: &str, labels: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "labels": labels},
            "spec": {"parentRefs": [{"name": "public"}]}
        }))
        .unwrap()
    };
    let ours = json!({"app.kubernetes.io/managed-by": "switchyard"});
    until_a_policy_refuses("an unlabelled HTTPRoute", || {
        let (api, probe) = (as_operator.clone(), route("probe", json!({})));
        async move { api.create(&dry_run(), &probe).await }
    })
    .await;
    let message = refused_by(
        ROUTES,
        as_operator
            .create(&PostParams::default(), &route("plain", json!({})))
            .await,
    );
    assert!(
        message.contains("labelled app.kubernetes.io/managed-by=switchyard; HTTPRoute"),
        "{message}"
    );
    as_operator
        .create(&PostParams::default(), &route("switchyard-w", ours.clone()))
        .await
        .expect("the operator writes its own routes");
    // Someone else's route: not changed, not taken over, not deleted.
    as_admin
        .create(
            &PostParams::default(),
            &route("theirs", json!({"team": "web"})),
        )
        .await
        .unwrap();
    refused_by(
        ROUTES,
        as_operator
            .patch(
                "theirs",
                &PatchParams::default(),
                &merge(
                    json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "switchyard"}}}),
                ),
            )
            .await,
    );
    let message = refused_by(
        ROUTES,
        as_operator.delete("theirs", &DeleteParams::default()).await,
    );
    assert!(
        message.contains(&format!("HTTPRoute {ns}/theirs is not")),
        "{message}"
    );
    as_operator
        .delete("switchyard-w", &DeleteParams::default())
        .await
        .expect("the operator deletes its own route");
    assert!(as_admin.get_opt("theirs").await.unwrap().is_some());
}

#[tokio::test]
async fn the_router_refuses_to_take_over_a_configmap_that_is_not_a_routing_table() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use switchyard::routing::{
        ConfigMapRouter, Router, RouterConfig, RoutingError, RoutingState, WaveRoute,
    };
    let (admin, ns) = common::admin_in_fresh_namespace("rbac-takeover").await;
    install_cluster_wide(&admin).await;
    let router = ConfigMapRouter::new(impersonated_operator().await);
    let as_admin: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let route = |table: &str| WaveRoute {
        namespace: ns.clone(),
        wave: "support".into(),
        wave_uid: "uid".into(),
        plan: "crm".into(),
        cohort: [("team".to_owned(), "support".to_owned())].into(),
        cohort_headers: [("x-crm-team".to_owned(), "support".to_owned())].into(),
        legacy: switchyard::api::ServiceRef {
            name: "legacy-crm".into(),
            port: 80,
        },
        target: switchyard::api::ServiceRef {
            name: "orchestration".into(),
            port: 8080,
        },
        maintenance: None,
        legacy_access: None,
        router: RouterConfig::ConfigMap { name: table.into() },
    };
    let state = RoutingState {
        target_weight: 10,
        quiet: false,
        legacy_override: false,
    };
    // Once Switchyard's but no routing table (say, labelled by hand): still not taken over.
    for (name, labels, missing) in [
        (
            "plain",
            json!({}),
            "app.kubernetes.io/managed-by=switchyard",
        ),
        (
            "managed",
            json!({"app.kubernetes.io/managed-by": "switchyard"}),
            "switchyard.dev/routing-table=true",
        ),
    ] {
        as_admin
            .create(&PostParams::default(), &config_map(name, labels))
            .await
            .unwrap();
        let before = as_admin.get(name).await.unwrap();
        let error = router.apply(&route(name), &state).await.unwrap_err();
        assert!(
            matches!(
                &error,
                RoutingError::NotOwned {
                    kind: "ConfigMap",
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("ConfigMap {ns}/{name} exists and is not managed by Switchyard (it lacks the label {missing})")),
            "{message}"
        );
        assert_eq!(
            router
                .remove_from_table(&ns, name, "support")
                .await
                .unwrap(),
            switchyard::routing::Written::Unchanged
        );
        let after = as_admin.get(name).await.unwrap();
        assert_eq!(
            after.metadata.resource_version,
            before.metadata.resource_version
        );
    }
    // A table of its own it creates and writes, under the policy.
    router
        .apply(&route("crm-routing"), &state)
        .await
        .expect("the operator writes the table it creates");
    let table = as_admin.get("crm-routing").await.unwrap();
    assert_eq!(
        table.metadata.labels.unwrap()["switchyard.dev/routing-table"],
        "true"
    );
    assert!(table.data.unwrap().contains_key("support"));
}

#[tokio::test]
async fn the_operator_patches_only_its_own_lease() {
    use k8s_openapi::api::coordination::v1::Lease;
    let (admin, ns) = common::admin_in_fresh_namespace("rbac-lease").await;
    install_roles(&admin).await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "switchyard-leader-election"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "switchyard-leader-election"},
        "subjects": [{"kind": "ServiceAccount", "name": "switchyard", "namespace": "switchyard-system"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let operator = impersonated_operator().await;
    // What its ServiceAccount may do, as the API server decides it.
    for (verb, name, allowed) in [
        ("create", None, true),
        ("get", Some("switchyard"), true),
        ("patch", Some("switchyard"), true),
        ("watch", Some("switchyard"), true),
        ("list", Some("switchyard"), true),
        ("patch", Some("another-controller"), false),
        ("get", Some("another-controller"), false),
        ("update", Some("switchyard"), false),
        ("delete", Some("switchyard"), false),
        ("list", None, false),
        ("watch", None, false),
    ] {
        assert_eq!(
            can(&operator, verb, "coordination.k8s.io", "leases", &ns, name).await,
            allowed,
            "{verb} leases/{name:?}"
        );
    }
    // And for real: another component's Lease cannot be patched, its own can.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &ns);
    for name in ["another-controller"] {
        leases
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let as_operator: Api<Lease> = Api::namespaced(operator, &ns);
    let take = merge(json!({"spec": {"holderIdentity": "switchyard-0"}}));
    let message = forbidden(
        as_operator
            .patch("another-controller", &PatchParams::default(), &take)
            .await,
    );
    assert!(
        message.contains("cannot patch resource \"leases\""),
        "{message}"
    );
    as_operator
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "switchyard"}})).unwrap(),
        )
        .await
        .expect("the operator creates its Lease");
    as_operator
        .patch("switchyard", &PatchParams::default(), &take)
        .await
        .expect("the operator takes its own Lease");
}

/// Whether `client` may `verb` the resource (SelfSubjectAccessReview).
async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> bool {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "verb": verb, "group": group, "resource": resource, "namespace": namespace,
            "name": name.unwrap_or_default()
        }}
    }))
    .unwrap();
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

#[tokio::test]
async fn the_operator_changes_only_the_leader_label_of_its_own_pod() {
    use k8s_openapi::api::core::v1::Pod;
    use switchyard::leader::LEADER_POD_LABEL;
    let plane = common::plane();
    let admin = plane.client().await.unwrap();
    install_roles(&admin).await;
    install_operator_policies(&admin).await;
    let (_, ns) = common::admin_in_fresh_namespace("rbac-pod").await;
    // Its Pods live in its own namespace; one test of this binary makes Pods there.
    let system = "switchyard-system";
    common::access::ensure_service_account(&admin, system, "switchyard").await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": format!("leader-election-{ns}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "switchyard-leader-election"},
        "subjects": [{"kind": "ServiceAccount", "name": "switchyard", "namespace": system}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), system)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let (own, other) = (format!("{ns}-a"), format!("{ns}-b"));
    let token = common::access::pod_bound_token(&admin, system, "switchyard", &own).await;
    common::access::pod_bound_token(&admin, system, "switchyard", &other).await;
    let as_pod: Api<Pod> = Api::namespaced(common::access::token_client(&token).await, system);
    let label = |value: serde_json::Value| {
        merge(json!({"metadata": {"labels": {LEADER_POD_LABEL: value}}}))
    };
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    until_a_policy_refuses("a patch of another Pod", || {
        let (api, other, dry, patch) = (
            as_pod.clone(),
            other.clone(),
            dry.clone(),
            label(json!("true")),
        );
        async move { api.patch(&other, &dry, &patch).await }
    })
    .await;

    // Its own Pod's leader label: set and removed.
    as_pod
        .patch(&own, &PatchParams::default(), &label(json!("true")))
        .await
        .expect("the leader labels its own Pod");
    as_pod
        .patch(
            &own,
            &PatchParams::default(),
            &label(serde_json::Value::Null),
        )
        .await
        .expect("a standby removes the label");
    // Another Pod, even of the same ServiceAccount.
    let message = refused_by(
        OWN_POD,
        as_pod
            .patch(&other, &PatchParams::default(), &label(json!("true")))
            .await,
    );
    assert!(
        message.contains(&format!(
            "the Switchyard operator may change only its own Pod {own}, not Pod {system}/{other}"
        )),
        "{message}"
    );
    // Anything else on its own Pod.
    for (what, patch) in [
        (
            "another label",
            json!({"metadata": {"labels": {"app": "hijacked"}}}),
        ),
        (
            "a selector label removed",
            json!({"metadata": {"labels": {"app": null}}}),
        ),
        (
            "another value",
            json!({"metadata": {"labels": {LEADER_POD_LABEL: "false"}}}),
        ),
        (
            "an annotation",
            json!({"metadata": {"annotations": {"x": "y"}}}),
        ),
        ("its spec", json!({"spec": {"activeDeadlineSeconds": 1}})),
        (
            "a finalizer",
            json!({"metadata": {"finalizers": ["example.com/keep"]}}),
        ),
    ] {
        let message = refused_by(
            OWN_POD,
            as_pod
                .patch(&own, &PatchParams::default(), &merge(patch))
                .await,
        );
        assert!(
            message.contains(&format!(
                "may change only the label {LEADER_POD_LABEL} on its Pod"
            )),
            "{what}: {message}"
        );
    }
    // Without a Pod-bound token (impersonated, or a Secret's token) it has no own Pod.
    let message = refused_by(
        OWN_POD,
        Api::<Pod>::namespaced(impersonated_operator().await, system)
            .patch(&own, &PatchParams::default(), &label(json!("true")))
            .await,
    );
    assert!(message.contains("is bound to no Pod"), "{message}");
    // Nor may it delete Pods; RBAC says so before the policy does.
    forbidden(as_pod.delete(&other, &DeleteParams::default()).await);
    let pods: Api<Pod> = Api::namespaced(admin, system);
    let labels = pods.get(&own).await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels.get("app").map(String::as_str), Some("switchyard"));
    assert!(!labels.contains_key(LEADER_POD_LABEL));
    for pod in [own, other] {
        let _ = pods.delete(&pod, &DeleteParams::default()).await;
    }
}

/// Namespaced mode, as the chart installs it with `watchNamespaces`: the operator's role
/// bound in one namespace only, the cluster-wide reads, the leader election in its own
/// namespace, and the policies for its ServiceAccount. The real binary, with a token
/// bound to its Pod, runs a wave through each router, leads and labels its own Pod, and
/// is refused nothing; the same ServiceAccount may write nothing in another namespace.
#[tokio::test]
async fn in_namespaced_mode_the_binary_runs_with_a_pod_bound_token_and_writes_only_there() {
    use common::operator::{Operator, eventually};
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    let plane = common::plane();
    let (admin, ns) = common::admin_in_fresh_namespace("rbac-namespaced").await;
    let other = plane.create_namespace("rbac-elsewhere").await.unwrap();
    install_roles(&admin).await;
    // A ServiceAccount of its own: other tests of this binary bind `switchyard`
    // cluster-wide. The chart fits the policies to its ServiceAccount the same way.
    let system = "switchyard-system";
    let account = "switchyard-namespaced";
    let username = format!("system:serviceaccount:{system}:{account}");
    common::access::install_operator_policies_for(&admin, &username, "-namespaced").await;
    let subject = json!([{"kind": "ServiceAccount", "name": account, "namespace": system}]);
    let role_binding = |name: &str, role: &str| -> RoleBinding {
        serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subject
        }))
        .unwrap()
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &role_binding("switchyard-operator", "switchyard-operator"),
        )
        .await
        .unwrap();
    common::access::ensure_service_account(&admin, system, account).await;
    Api::<RoleBinding>::namespaced(admin.clone(), system)
        .create(
            &PostParams::default(),
            &role_binding(
                &format!("{account}-leader-election"),
                "switchyard-leader-election",
            ),
        )
        .await
        .unwrap();
    let crds: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{account}-crds")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "switchyard-operator-crds"},
        "subjects": subject
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &crds)
        .await
        .unwrap();

    let pod = format!("{ns}-0");
    let token = common::access::pod_bound_token(&admin, system, account, &pod).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, common::access::token_kubeconfig(&token)).unwrap();
    let operator = Operator::start_with_env(
        &kubeconfig,
        &pod,
        &[
            "--namespaces",
            &ns,
            "--lease-namespace",
            system,
            "--label-leader-pod",
            "true",
        ],
        &[("POD_NAME", &pod), ("POD_NAMESPACE", system)],
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
    let pods: Api<Pod> = Api::namespaced(admin.clone(), system);
    let pods = &pods;
    let pod_name = &pod;
    eventually(
        std::time::Duration::from_secs(10),
        "its Pod labelled",
        || async move {
            let labels = pods
                .get(pod_name)
                .await
                .unwrap()
                .metadata
                .labels
                .unwrap_or_default();
            match labels
                .get(switchyard::leader::LEADER_POD_LABEL)
                .map(String::as_str)
            {
                Some("true") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    create_backends(&admin, &ns).await;
    create(&admin, &ns, &plan("crm", &["gw"], false)).await;
    create(&admin, &ns, &plan("crm-table", &["cm"], true)).await;
    create(
        &admin,
        &ns,
        &wave("gw", "crm", "support", "emea", json!([{"setWeight": 100}])),
    )
    .await;
    create(
        &admin,
        &ns,
        &wave(
            "cm",
            "crm-table",
            "sales",
            "emea",
            json!([{"setWeight": 100}]),
        ),
    )
    .await;
    wait_phase(&admin, &ns, "gw", WavePhase::Completed, None).await;
    wait_phase(&admin, &ns, "cm", WavePhase::Completed, None).await;
    let table = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .get("crm-routing")
        .await
        .unwrap();
    assert!(table.data.unwrap().contains_key("cm"));
    let log = operator.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|line| {
            line.contains("forbidden") || line.contains(" 403") || line.contains("denied")
        })
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");

    // The same ServiceAccount, elsewhere: RBAC refuses even a routing table.
    let as_operator = common::access::token_client(&token).await;
    for namespace in [other.as_str(), "kube-system"] {
        let message = forbidden(
            Api::<ConfigMap>::namespaced(as_operator.clone(), namespace)
                .create(
                    &PostParams::default(),
                    &config_map(
                        "crm-routing",
                        json!({"switchyard.dev/routing-table": "true"}),
                    ),
                )
                .await,
        );
        assert!(
            message.contains("cannot create resource \"configmaps\""),
            "{message}"
        );
        for (verb, group, resource) in [
            ("patch", "gateway.networking.k8s.io", "httproutes"),
            ("list", "", "configmaps"),
            ("patch", "switchyard.dev", "migrationwaves"),
        ] {
            assert!(
                !can(&as_operator, verb, group, resource, namespace, None).await,
                "{verb} {resource} in {namespace}"
            );
        }
    }
    // Cluster-wide it reads, and writes nothing.
    for (verb, group, resource, allowed) in [
        (
            "list",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            true,
        ),
        (
            "watch",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicybindings",
            true,
        ),
        (
            "patch",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            false,
        ),
        ("list", "", "configmaps", false),
        ("create", "", "configmaps", false),
    ] {
        assert_eq!(
            can(&as_operator, verb, group, resource, "", None).await,
            allowed,
            "{verb} {resource} cluster-wide"
        );
    }
    drop(operator);
    let _ = pods.delete(&pod, &DeleteParams::default()).await;
}
