//! Shared set-up for integration tests: one real control plane per test binary, with
//! Switchyard's CRDs and the Gateway API CRDs installed, and a namespace per test.
#![allow(dead_code)]

pub mod access;
pub mod operator;
pub mod waves;

use kube::{
    Api, Client,
    api::{DynamicObject, PostParams},
    core::{ApiResource, Status},
};
use switchyard_testenv::ControlPlane;

pub fn plane() -> &'static ControlPlane {
    ControlPlane::shared(|| {
        switchyard::crdgen::all()
            .expect("CRDs generate")
            .into_iter()
            .map(|generated| generated.crd)
            .collect()
    })
    .unwrap_or_else(|err| panic!("{err}"))
}

/// The group the test plans authorise for every action, and whose members may act
/// (the release-manager role, cluster-wide).
pub const TEST_ACTORS: &str = "switchyard-test-actors";

/// The admin client and a fresh namespace for one test. The plane has Switchyard's
/// admission policies and roles installed, as the chart installs them, so that the
/// operator applies actions: it refuses every action while the policies are missing.
pub async fn admin_in_fresh_namespace(prefix: &str) -> (Client, String) {
    let admin = admin_with_access().await;
    let namespace = plane().create_namespace(prefix).await.expect("namespace");
    (admin, namespace)
}

/// The admin client, once the plane has Switchyard's admission policies and roles (for
/// a test that brings its own namespace, such as a data plane's).
pub async fn admin_with_access() -> Client {
    static ACCESS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let admin = plane().client().await.expect("admin client");
    ACCESS
        .get_or_init(|| async {
            access::install_policies(&admin).await;
            access::install_roles(&admin).await;
            access::bind_group_cluster_wide(&admin, "switchyard-release-manager", TEST_ACTORS)
                .await;
            access::await_policies_in_force(&admin).await;
        })
        .await;
    admin
}

/// Creates `object` (JSON, as a user would write it) and returns the API server's refusal.
/// Fails the test if the object is accepted or refused for another reason than validation.
pub async fn refusal(api: &Api<DynamicObject>, object: serde_json::Value) -> Status {
    let object: DynamicObject = serde_json::from_value(object).expect("valid JSON object");
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => panic!(
            "the API server accepted an invalid object: {}",
            serde_json::to_string(&created.data).unwrap()
        ),
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 422,
                "expected a validation error, got {status:?}"
            );
            *status
        }
        Err(other) => panic!("expected a validation error, got {other}"),
    }
}

pub fn dynamic_api<K: kube::Resource<DynamicType = ()>>(
    client: Client,
    namespace: &str,
) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<K>(&());
    Api::namespaced_with(client, namespace, &resource)
}
