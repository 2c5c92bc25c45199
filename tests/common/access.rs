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
