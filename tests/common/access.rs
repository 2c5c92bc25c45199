//! The shipped access control, installed for real: the admission policies
//! (`switchyard::policies`, as in `policies/actions.yaml`) and the ClusterRoles of
//! `policies/rbac.yaml`, and RoleBindings to them.

use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

/// Applies the admission policies and their bindings (cluster-wide).
pub async fn install_policies(client: &Client) {
    let (policies, bindings) = switchyard::policies::all();
    let params = PatchParams::apply("switchyard-test").force();
    let policy_api: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    for p in &policies {
        policy_api
            .patch(
                p.metadata.name.as_deref().unwrap(),
                &params,
                &Patch::Apply(p),
            )
            .await
            .unwrap();
    }
    let binding_api: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    for b in &bindings {
        binding_api
            .patch(
                b.metadata.name.as_deref().unwrap(),
                &params,
                &Patch::Apply(b),
            )
            .await
            .unwrap();
    }
}

/// Waits until the API server enforces the policies just installed: until then, a
/// request they match fails with "not yet synced" (the plans they take as parameters
/// are still being listed) or passes unchecked. Probes with a dry-run create of a wave
/// that records an action, which the policies refuse once in force.
pub async fn await_policies_in_force(admin: &Client) {
    use kube::api::{DynamicObject, PostParams};
    let api = super::dynamic_api::<switchyard::api::MigrationWave>(admin.clone(), "default");
    let probe: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationWave",
        "metadata": {"name": "policy-probe"},
        "spec": {"plan": "p", "cohort": {"team": "t"}, "steps": [{"setWeight": 1}],
                 "actions": [{"type": "Pause", "user": "nobody"}]}
    }))
    .unwrap();
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let last = match api.create(&params, &probe).await {
            Err(kube::Error::Api(status))
                if status.code == 403
                    && status
                        .message
                        .contains("must be empty when the object is created")
                    && !status.message.contains("not yet synced") =>
            {
                return;
            }
            other => format!("{other:?}"),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admission policies were not in force within 60s: {last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Applies the ClusterRoles of `policies/rbac.yaml`.
pub async fn install_roles(admin: &Client) {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/rbac.yaml"))
            .unwrap();
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    for document in serde_yaml::Deserializer::from_str(&text) {
        let role: ClusterRole = serde::Deserialize::deserialize(document).unwrap();
        roles
            .patch(
                role.metadata.name.as_deref().unwrap(),
                &PatchParams::apply("switchyard-test").force(),
                &Patch::Apply(&role),
            )
            .await
            .unwrap();
    }
}

/// Binds the ClusterRole `role` to `group` in every namespace.
pub async fn bind_group_cluster_wide(admin: &Client, role: &str, group: &str) {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{role}-{group}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(
            &format!("{role}-{group}"),
            &PatchParams::apply("switchyard-test").force(),
            &Patch::Apply(&binding),
        )
        .await
        .unwrap();
}

/// Binds the ClusterRole `role` to `user` in `ns`.
pub async fn bind(admin: &Client, ns: &str, role: &str, user: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{role}-{user}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// Creates `object` unless it exists (tests of one binary share the control plane).
async fn create_if_missing<K>(api: &Api<K>, object: serde_json::Value)
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("{err}"),
    }
}

/// Makes sure namespace `namespace` and ServiceAccount `account` in it exist.
pub async fn ensure_service_account(admin: &Client, namespace: &str, account: &str) {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    create_if_missing(
        &Api::<Namespace>::all(admin.clone()),
        json!({"metadata": {"name": namespace}}),
    )
    .await;
    create_if_missing(
        &Api::<ServiceAccount>::namespaced(admin.clone(), namespace),
        json!({"metadata": {"name": account}}),
    )
    .await;
}

/// Creates Pod `pod` of ServiceAccount `account` in `namespace` (no kubelet runs it), as
/// a Deployment would, and returns a token bound to it, as the kubelet would mount into
/// it: the API server adds the Pod's name and UID to every request made with it.
pub async fn pod_bound_token(admin: &Client, namespace: &str, account: &str, pod: &str) -> String {
    use k8s_openapi::api::{
        authentication::v1::TokenRequest,
        core::v1::{Pod, ServiceAccount},
    };
    ensure_service_account(admin, namespace, account).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    let created = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": pod, "labels": {"app": "switchyard"}},
                "spec": {
                    "serviceAccountName": account,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "switchyard", "image": "switchyard"}]
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {
            "audiences": [],
            "expirationSeconds": 3600,
            "boundObjectRef": {
                "apiVersion": "v1", "kind": "Pod", "name": pod,
                "uid": created.metadata.uid.unwrap()
            }
        }
    });
    let response: TokenRequest = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .unwrap();
    response.status.unwrap().token.unwrap()
}

/// A kubeconfig for the test control plane that authenticates with a bearer `token`.
pub fn token_kubeconfig(token: &str) -> String {
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&super::plane().kubeconfig_yaml(None)).unwrap();
    config["users"][0]["user"] = serde_yaml::to_value(json!({ "token": token })).unwrap();
    serde_yaml::to_string(&config).unwrap()
}

/// A client that authenticates with a bearer `token`: real requests as its owner.
pub async fn token_client(token: &str) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&token_kubeconfig(token)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Applies the policies that bind the operator (`switchyard::policies::operator`) once
/// more, for the ServiceAccount `username`, under names ending in `suffix`: as the
/// chart would render them for a release with that ServiceAccount, next to the
/// generated ones.
pub async fn install_operator_policies_for(client: &Client, username: &str, suffix: &str) {
    use switchyard::policies::operator::{OPERATOR_CONDITION, for_operator};
    let (policies, bindings) = switchyard::policies::all();
    let params = PatchParams::apply("switchyard-test").force();
    let ours: Vec<ValidatingAdmissionPolicy> = for_operator(policies, username)
        .into_iter()
        .filter(|p| {
            let conditions = p.spec.as_ref().and_then(|s| s.match_conditions.as_ref());
            conditions
                .into_iter()
                .flatten()
                .any(|c| c.name == OPERATOR_CONDITION)
        })
        .collect();
    for mut policy in ours {
        let original = policy.metadata.name.clone().unwrap();
        let name = format!("{original}{suffix}");
        policy.metadata.name = Some(name.clone());
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .patch(&name, &params, &Patch::Apply(&policy))
            .await
            .unwrap();
        let mut binding = bindings
            .iter()
            .find(|b| b.metadata.name.as_deref() == Some(&original))
            .unwrap()
            .clone();
        binding.metadata.name = Some(name.clone());
        binding.spec.policy_name = name.clone();
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .patch(&name, &params, &Patch::Apply(&binding))
            .await
            .unwrap();
    }
}

/// A client acting as the chart's operator ServiceAccount, bound to nothing but the
/// operator's ClusterRoles (as the chart binds them cluster-wide).
pub async fn operator_client() -> Client {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let plane = super::plane();
    let admin = plane.client().await.unwrap();
    install_roles(&admin).await;
    for role in ["switchyard-operator", "switchyard-operator-crds"] {
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{role}-test")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "switchyard", "namespace": "switchyard-system"}]
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(admin.clone())
            .patch(
                &format!("{role}-test"),
                &PatchParams::apply("switchyard-test").force(),
                &Patch::Apply(&binding),
            )
            .await
            .unwrap();
    }
    plane
        .client_as(
            switchyard::policies::operator::DEFAULT_OPERATOR,
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:switchyard-system",
            ],
        )
        .await
        .unwrap()
}
