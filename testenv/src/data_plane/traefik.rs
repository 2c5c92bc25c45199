//! Traefik, out of cluster, with its Kubernetes Gateway provider reading the test API
//! server as a service account; and the GatewayClass and Gateway it serves.

use std::{net::SocketAddr, path::Path};

use k8s_openapi::api::{
    authentication::v1::TokenRequest,
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::json;

use crate::{
    ControlPlane, FIELD_MANAGER, TestEnvError, binaries,
    process::{Server, free_port},
};

/// The controller name Traefik's Gateway provider claims GatewayClasses by.
pub const CONTROLLER_NAME: &str = "traefik.io/gateway-controller";
/// Label on the data plane's GatewayClass; its Traefik selects only that class, so that
/// several data planes on one API server do not write each other's statuses.
pub const DATA_PLANE_LABEL: &str = "switchyard.dev/data-plane";
/// What Traefik's Gateway provider reads and writes (as in Traefik's own Helm chart).
const CLUSTER_ROLE: &str = "switchyard-testenv-traefik";
const SERVICE_ACCOUNT: &str = "traefik";
const ENTRYPOINT: &str = "web";

pub(crate) fn gateway_api(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        kind,
    ))
}

/// A running Traefik, listening on [`Traefik::addr`]. Dropping it stops it.
pub(crate) struct Traefik {
    pub addr: SocketAddr,
    pub server: Server,
}

impl Traefik {
    /// Creates a service account bound to Traefik's role, a GatewayClass and a Gateway
    /// `gateway` in `namespace` whose HTTP listener is Traefik's entrypoint, and starts
    /// Traefik watching `namespace` only.
    ///
    /// Traefik is started on the calling thread and is killed if that thread dies
    /// (`PR_SET_PDEATHSIG`): call this from the test's own thread.
    pub async fn start(
        plane: &ControlPlane,
        client: &Client,
        namespace: &str,
        dir: &Path,
    ) -> Result<Self, TestEnvError> {
        let program = binaries::traefik()?;
        let token = service_account_token(client, namespace).await?;
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents)
                .map(|()| path.clone())
                .map_err(|source| TestEnvError::Io { path, source })
        };
        let token_path = write("traefik.token", &token)?;
        let ca_path = write("apiserver-ca.crt", plane.serving_ca_pem())?;
        let port = free_port()?;
        apply_gateway(client, namespace, port).await?;

        let path = |p: &Path| p.display().to_string();
        let args = vec![
            format!("--entryPoints.{ENTRYPOINT}.address=127.0.0.1:{port}"),
            "--providers.kubernetesGateway=true".to_owned(),
            format!(
                "--providers.kubernetesGateway.endpoint={}",
                plane.server_url()
            ),
            format!("--providers.kubernetesGateway.token={}", path(&token_path)),
            format!(
                "--providers.kubernetesGateway.certAuthFilePath={}",
                path(&ca_path)
            ),
            format!("--providers.kubernetesGateway.namespaces={namespace}"),
            format!("--providers.kubernetesGateway.labelSelector={DATA_PLANE_LABEL}={namespace}"),
            // The defaults (2 s between two applied configurations) make a test wait;
            // a production gateway keeps them, see docs/routing.md.
            "--providers.providersThrottleDuration=10ms".to_owned(),
            "--providers.kubernetesGateway.throttleDuration=0s".to_owned(),
            "--global.checkNewVersion=false".to_owned(),
            "--global.sendAnonymousUsage=false".to_owned(),
            "--log.level=INFO".to_owned(),
        ];
        let server = Server::start("traefik", &program, &args, dir)?;
        Ok(Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            server,
        })
    }
}

async fn service_account_token(client: &Client, namespace: &str) -> Result<String, TestEnvError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": CLUSTER_ROLE},
        "rules": [
            {"apiGroups": [""], "resources": ["namespaces", "services", "secrets", "configmaps"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["gateway.networking.k8s.io"],
             "resources": ["gatewayclasses", "gateways", "httproutes", "grpcroutes",
                           "referencegrants", "backendtlspolicies", "tcproutes", "tlsroutes"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["gateway.networking.k8s.io"],
             "resources": ["gatewayclasses/status", "gateways/status", "httproutes/status",
                           "grpcroutes/status", "backendtlspolicies/status",
                           "tcproutes/status", "tlsroutes/status"],
             "verbs": ["update"]},
        ],
    });
    roles
        .patch(CLUSTER_ROLE, &params, &Patch::Apply(role))
        .await
        .map_err(TestEnvError::Api)?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": SERVICE_ACCOUNT}});
    accounts
        .patch(SERVICE_ACCOUNT, &params, &Patch::Apply(account))
        .await
        .map_err(TestEnvError::Api)?;
    let binding_name = format!("{CLUSTER_ROLE}-{namespace}");
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": binding_name, "labels": {DATA_PLANE_LABEL: namespace}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": CLUSTER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                      "namespace": namespace}],
    });
    bindings
        .patch(&binding_name, &params, &Patch::Apply(binding))
        .await
        .map_err(TestEnvError::Api)?;
    // A bound token from the TokenRequest API: the API server signs it with the plane's
    // service-account key, so no token file or controller-manager is needed.
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [], "expirationSeconds": 86400}
    }))
    .expect("a valid TokenRequest");
    let issued = accounts
        .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .map_err(TestEnvError::Api)?;
    issued
        .status
        .and_then(|status| status.token)
        .ok_or_else(|| TestEnvError::Network("the TokenRequest returned no token".into()))
}

async fn apply_gateway(client: &Client, namespace: &str, port: u16) -> Result<(), TestEnvError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let class_name = gateway_class_name(namespace);
    let classes: Api<DynamicObject> = Api::all_with(client.clone(), &gateway_api("GatewayClass"));
    let class = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": class_name, "labels": {DATA_PLANE_LABEL: namespace}},
        "spec": {"controllerName": CONTROLLER_NAME},
    });
    classes
        .patch(&class_name, &params, &Patch::Apply(class))
        .await
        .map_err(TestEnvError::Api)?;
    let gateways: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &gateway_api("Gateway"));
    let gateway = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": super::GATEWAY},
        "spec": {
            "gatewayClassName": class_name,
            // Traefik binds a listener to the entrypoint with the same port.
            "listeners": [{"name": ENTRYPOINT, "protocol": "HTTP", "port": port}],
        },
    });
    gateways
        .patch(super::GATEWAY, &params, &Patch::Apply(gateway))
        .await
        .map_err(TestEnvError::Api)?;
    Ok(())
}

/// The data plane's GatewayClass (cluster-scoped, so named after the namespace).
pub(crate) fn gateway_class_name(namespace: &str) -> String {
    format!("traefik-{namespace}")
}
