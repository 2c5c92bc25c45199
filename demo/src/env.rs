//! The demo's world: the cluster (the embedded control plane, or the one of `KUBECONFIG`),
//! the synthetic metrics source, Prometheus, Alertmanager and the operator process, and
//! how each is stopped again.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
        core::v1::Namespace,
        rbac::v1::ClusterRole,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    discovery::{self, Scope},
    runtime::wait::{await_condition, conditions},
};
use serde_json::Value;
use switchyard::api::{CutoverPlan, MigrationWave};
use switchyard::cli::Tone;
use switchyard_testenv::{Alertmanager, ControlPlane, Exporter, Prometheus, TestEnvError};

use crate::error::DemoError;
use crate::screen::Screen;
use crate::traffic::Traffic;

/// The field manager of everything the demo applies.
pub const FIELD_MANAGER: &str = "switchyard-demo";
/// Switchyard's admission policies and ClusterRoles, as `kubectl apply -f policies/` has them.
const RBAC_YAML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/rbac.yaml");
/// The ClusterRole the example's RoleBindings bind release managers to.
const RELEASE_MANAGER_ROLE: &str = "switchyard-release-manager";
/// The Gateway API CRDs the example's Gateway and the waves' HTTPRoutes need.
const GATEWAY_CRDS: [&str; 2] = [
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
];
/// How long a real cluster may take to delete the demo's plan and waves.
const CLUSTER_DELETE_WAIT: Duration = Duration::from_secs(15);

/// Everything the demo started, so that it can all be stopped, in order, whatever
/// happens (the end, an error, Ctrl-C, the timeout).
pub struct Environment {
    /// The output.
    pub screen: Screen,
    /// The demo's own directory: the operator's log and the receiver's token.
    pub workdir: Option<PathBuf>,
    plane_host: Option<PlaneHost>,
    /// The embedded control plane.
    pub plane: Option<ControlPlane>,
    /// A namespace the demo created on a real cluster (deleted at the end).
    pub cluster_namespace: Option<(Client, String)>,
    /// The synthetic metrics source.
    pub exporter: Option<Arc<Exporter>>,
    /// The task that raises the failed hand-offs during the incident.
    pub incident: Option<tokio::task::JoinHandle<()>>,
    /// Alertmanager.
    pub alertmanager: Option<Alertmanager>,
    /// Prometheus.
    pub prometheus: Option<Prometheus>,
    /// The operator.
    pub operator: Option<Operator>,
    /// The load generator and the data plane it sends through.
    pub traffic: Option<Traffic>,
}

impl Environment {
    /// Nothing started yet.
    pub fn new(screen: Screen) -> Self {
        Environment {
            screen,
            workdir: None,
            plane_host: None,
            plane: None,
            cluster_namespace: None,
            exporter: None,
            incident: None,
            alertmanager: None,
            prometheus: None,
            operator: None,
            traffic: None,
        }
    }

    /// Starts etcd and kube-apiserver on a thread of their own (their processes die with
    /// the thread that started them, so it lives until [`Environment::cleanup`]); the
    /// receiver gets the plane once it is ready.
    pub fn start_plane(
        &mut self,
    ) -> tokio::sync::oneshot::Receiver<Result<ControlPlane, TestEnvError>> {
        let (plane_tx, plane_rx) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || match plane_tx.send(ControlPlane::start()) {
                // Keep the thread (and so the processes) until cleanup drops `release`.
                Ok(()) => {
                    let _ = released.recv();
                }
                // Nobody waits any more (Ctrl-C while it started): stop it here.
                Err(plane) => drop(plane),
            });
        match thread {
            Ok(thread) => {
                self.plane_host = Some(PlaneHost {
                    release: Some(release),
                    thread: Some(thread),
                });
            }
            Err(err) => {
                // The receiver reports the failure: the sender was dropped with the closure.
                eprintln!("cannot start the control plane's thread: {err}");
            }
        }
        plane_rx
    }

    /// Stops everything that runs, in order, and says what it stopped. The operator's log
    /// is kept when `keep_log` (a failure) or when the operator did not clean up a real
    /// cluster's objects in time, and removed with the demo's directory otherwise.
    pub async fn cleanup(&mut self, keep_log: bool) {
        self.screen.stop_drawing();
        let mut lines: Vec<String> = Vec::new();
        let mut keep_log = keep_log;
        if let Some((client, namespace)) = self.cluster_namespace.take() {
            let (line, clean) = delete_cluster_namespace(&client, &namespace).await;
            lines.push(line);
            keep_log |= !clean;
        }
        if let Some(task) = self.incident.take() {
            task.abort();
        }
        if let Some(operator) = self.operator.take() {
            let pid = operator.pid;
            let how = operator.stop().await;
            lines.push(format!("stopped the operator (pid {pid}, {how})"));
        }
        if let Some(mut traffic) = self.traffic.take() {
            traffic.stop().await;
            let (netns, _) = traffic.plane().netns();
            let line = format!(
                "stopped the load generator, Traefik and the echo backends; deleted the network namespace {netns}"
            );
            // Before the control plane: Traefik watches its API server until it stops.
            drop(traffic);
            lines.push(line);
        }
        if let Some(mut prometheus) = self.prometheus.take() {
            let pid = prometheus.pid();
            prometheus.stop();
            drop(prometheus);
            lines.push(format!("stopped Prometheus{}", pid_note(pid)));
        }
        if let Some(alertmanager) = self.alertmanager.take() {
            let pid = alertmanager.pid();
            drop(alertmanager);
            lines.push(format!("stopped Alertmanager{}", pid_note(pid)));
        }
        if let Some(exporter) = self.exporter.take() {
            let addr = exporter.addr();
            drop(exporter);
            lines.push(format!("stopped the metrics exporter on {addr}"));
        }
        let plane_delivered = self.plane.is_some();
        if let Some(plane) = self.plane.take() {
            let pids = plane.pids();
            plane.stop();
            drop(plane);
            lines.push(format!(
                "stopped etcd and kube-apiserver (pids {})",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(mut host) = self.plane_host.take() {
            drop(host.release.take());
            if let Some(thread) = host.thread.take() {
                if !plane_delivered && !thread.is_finished() {
                    lines.push(
                        "waited for the control plane to finish starting, and stopped it".into(),
                    );
                }
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
        if let Some(dir) = self.workdir.take() {
            if keep_log {
                lines.push(format!(
                    "kept the operator's log: {}",
                    dir.join("operator.log").display()
                ));
            } else if std::fs::remove_dir_all(&dir).is_ok() {
                lines.push(format!(
                    "removed {} (the operator's log and token)",
                    dir.display()
                ));
            }
        }
        if !lines.is_empty() {
            self.screen.say_in(Tone::Bold, "Cleaned up:");
            for line in lines {
                self.screen.say_in(Tone::Dim, &format!("  {line}"));
            }
        }
    }
}

fn pid_note(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

struct PlaneHost {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Deletes the demo's waves, then its plan, then its namespace on a real cluster while the
/// operator still runs, so that their finalizers can finish (a wave's routing cleanup
/// needs its plan, so the waves go first). What the operator has not finished by
/// [`CLUSTER_DELETE_WAIT`] loses its finalizers: the namespace is the demo's own, and its
/// routing objects go with it. Says what happened, and whether all went as it should.
async fn delete_cluster_namespace(client: &Client, namespace: &str) -> (String, bool) {
    let plans: Api<CutoverPlan> = Api::namespaced(client.clone(), namespace);
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + CLUSTER_DELETE_WAIT;
    let mut trouble = Vec::new();
    if let Err(err) = delete_all(&waves, deadline).await {
        trouble.push(err);
    }
    // The plan's own cleanup (rolling back active waves) is quick once its waves are gone.
    let plan_deadline = deadline.max(Instant::now() + Duration::from_secs(5));
    if let Err(err) = delete_all(&plans, plan_deadline).await {
        trouble.push(err);
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Err(err) = namespaces.delete(namespace, &DeleteParams::default()).await {
        trouble.push(format!("could not delete namespace {namespace}: {err}"));
    }
    if trouble.is_empty() {
        (
            format!(
                "deleted the waves, the plan, then namespace {namespace} (it finishes terminating by itself)"
            ),
            true,
        )
    } else {
        (
            format!(
                "deleted namespace {namespace}, but: {} (see the operator's log)",
                trouble.join("; ")
            ),
            false,
        )
    }
}

/// Deletes every object of `api` and waits (until `deadline`, or Ctrl-C) for them to go;
/// strips the finalizers of those still there then.
async fn delete_all<K>(api: &Api<K>, deadline: Instant) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let all = ListParams::default();
    let kind = std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or("object");
    api.delete_collection(&DeleteParams::default(), &all)
        .await
        .map_err(|err| format!("could not delete the {kind}s: {err}"))?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let left = loop {
        let left: Vec<String> = api
            .list(&all)
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|o| o.meta().name.clone().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break left;
        }
        tokio::select! {
            _ = &mut interrupted => break left,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    };
    let strip = serde_json::json!({"metadata": {"finalizers": null}});
    for name in &left {
        let _ = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&strip))
            .await;
    }
    Err(format!(
        "the operator had not finished cleaning up {kind} {} within {}s, so the demo removed their finalizers",
        left.join(", "),
        CLUSTER_DELETE_WAIT.as_secs()
    ))
}

// ---------------------------------------------------------------------------------------
// The cluster

/// Where the demo runs.
pub enum Choice {
    /// The embedded control plane.
    Embedded,
    /// The cluster of `--kubeconfig FILE`.
    Kubeconfig(PathBuf),
    /// The cluster of `$KUBECONFIG`.
    Env(String),
}

/// The cluster rule: `--embedded` always uses the embedded control plane;
/// `--kubeconfig FILE` uses that cluster (and fails if it does not answer); otherwise a
/// non-empty `KUBECONFIG` is used when its cluster answers, and the embedded plane
/// otherwise.
pub fn choose(embedded: bool, kubeconfig: Option<&Path>) -> Choice {
    if embedded {
        return Choice::Embedded;
    }
    if let Some(path) = kubeconfig {
        return Choice::Kubeconfig(path.to_owned());
    }
    match std::env::var("KUBECONFIG") {
        Ok(value) if !value.trim().is_empty() => Choice::Env(value),
        _ => Choice::Embedded,
    }
}

/// A client for the cluster of `choice` (not the embedded one), once it has answered,
/// and the cluster's URL.
pub async fn external_client(choice: &Choice) -> Result<(Client, String), DemoError> {
    let (config, name) = match choice {
        Choice::Kubeconfig(path) => {
            let name = format!("--kubeconfig {}", path.display());
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| DemoError::Kubeconfig {
                    source_name: name.clone(),
                    source,
                })?;
            let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| DemoError::Kubeconfig {
                    source_name: name.clone(),
                    source,
                })?;
            (config, name)
        }
        Choice::Env(value) => {
            let name = format!("KUBECONFIG={value}");
            let config = Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|source| DemoError::Kubeconfig {
                    source_name: name.clone(),
                    source,
                })?;
            (config, name)
        }
        Choice::Embedded => {
            return Err(DemoError::Stalled(
                "the embedded control plane has a client of its own".into(),
            ));
        }
    };
    let mut config = config;
    let url = config.cluster_url.to_string();
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(10));
    let client = Client::try_from(config)
        .map_err(DemoError::kube(format!("cannot build a client for {name}")))?;
    match tokio::time::timeout(Duration::from_secs(8), client.apiserver_version()).await {
        Ok(Ok(_)) => Ok((client, url)),
        Ok(Err(err)) => Err(DemoError::Kube {
            what: format!("the cluster of {name} does not answer"),
            source: err,
        }),
        Err(_) => Err(DemoError::Stalled(format!(
            "the cluster of {name} did not answer within 8s"
        ))),
    }
}

/// Whether a CustomResourceDefinition exists.
pub async fn crd_exists(client: &Client, name: &str) -> Result<bool, DemoError> {
    Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(name)
        .await
        .map(|crd| crd.is_some())
        .map_err(DemoError::kube(format!("cannot read CRD {name}")))
}

/// Whether the cluster serves the Gateway API kinds the example uses.
pub async fn gateway_api_installed(client: &Client) -> Result<bool, DemoError> {
    for name in GATEWAY_CRDS {
        if !crd_exists(client, name).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether the ClusterRoles of `policies/rbac.yaml` exist.
pub async fn release_manager_role_exists(client: &Client) -> Result<bool, DemoError> {
    Api::<ClusterRole>::all(client.clone())
        .get_opt(RELEASE_MANAGER_ROLE)
        .await
        .map(|r| r.is_some())
        .map_err(DemoError::kube("cannot read ClusterRoles"))
}

/// Applies the CRDs that are missing (server-side) and waits until they are Established;
/// returns the names it installed.
pub async fn install_missing_crds(
    client: &Client,
    crds: Vec<CustomResourceDefinition>,
) -> Result<Vec<String>, DemoError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut installed = Vec::new();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        if api
            .get_opt(&name)
            .await
            .map_err(DemoError::kube(format!("cannot read CRD {name}")))?
            .is_some()
        {
            continue;
        }
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(DemoError::kube(format!("cannot apply CRD {name}")))?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(Duration::from_secs(30), established).await {
            Ok(Ok(_)) => installed.push(name),
            Ok(Err(err)) => {
                return Err(DemoError::Stalled(format!(
                    "CRD {name} did not become Established: {err}"
                )));
            }
            Err(_) => {
                return Err(DemoError::Stalled(format!(
                    "CRD {name} did not become Established within 30s"
                )));
            }
        }
    }
    Ok(installed)
}

/// Installs Switchyard's admission policies (from `switchyard::policies::all()`) and
/// ClusterRoles (`policies/rbac.yaml`), as `kubectl apply -f policies/` would; returns a
/// description.
pub async fn install_policies(client: &Client) -> Result<String, DemoError> {
    let (policies, bindings) = switchyard::policies::all();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let policy_api: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let mut names = Vec::new();
    for policy in &policies {
        let name = policy.metadata.name.clone().unwrap_or_default();
        policy_api
            .patch(&name, &params, &Patch::Apply(policy))
            .await
            .map_err(DemoError::kube(format!("cannot apply the policy {name}")))?;
        names.push(name);
    }
    let binding_api: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    for binding in &bindings {
        let name = binding.metadata.name.clone().unwrap_or_default();
        binding_api
            .patch(&name, &params, &Patch::Apply(binding))
            .await
            .map_err(DemoError::kube(format!(
                "cannot apply the policy binding {name}"
            )))?;
    }
    let text = std::fs::read_to_string(RBAC_YAML).map_err(|source| DemoError::Io {
        what: "cannot read",
        path: RBAC_YAML.into(),
        source,
    })?;
    let mut roles = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|err| DemoError::Stalled(format!("{RBAC_YAML} is not YAML: {err}")))?;
        if value.is_null() {
            continue;
        }
        roles.push(
            value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        apply(client, None, &value)
            .await
            .map_err(DemoError::kube(format!(
                "cannot apply {} from policies/rbac.yaml",
                value["metadata"]["name"]
            )))?;
    }
    Ok(format!(
        "admission policies {} and ClusterRoles {}",
        names.join(", "),
        roles.join(", ")
    ))
}

/// Server-side applies `value` (into `namespace` when it is namespaced), with strict field
/// validation, as `kubectl apply --server-side` would.
pub async fn apply(
    client: &Client,
    namespace: Option<&str>,
    value: &Value,
) -> Result<DynamicObject, kube::Error> {
    let mut object: DynamicObject = serde_json::from_value(value.clone())
        .map_err(|err| kube::Error::Service(format!("not an object: {err}").into()))?;
    let types = object
        .types
        .clone()
        .ok_or_else(|| kube::Error::Service("no apiVersion and kind".into()))?;
    let (group, version) = types
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", &types.api_version));
    let gvk = GroupVersionKind::gvk(group, version, &types.kind);
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match (capabilities.scope, namespace) {
        (Scope::Namespaced, Some(namespace)) => {
            object.metadata.namespace = Some(namespace.to_owned());
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        (Scope::Namespaced, None) => {
            return Err(kube::Error::Service(
                format!("{} needs a namespace", types.kind).into(),
            ));
        }
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    let name = object.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_strict();
    api.patch(&name, &params, &Patch::Apply(&object)).await
}

// ---------------------------------------------------------------------------------------
// Metrics

/// The label of the cohort's team in the metrics contract.
pub const TEAM_LABEL: &str = "cohort_team";
/// The label of the cohort's region in the metrics contract.
pub const REGION_LABEL: &str = "cohort_region";
/// The counter of failed hand-offs the incident raises.
pub const HANDOFF_FAILURES: &str = "crm_handoff_failures_total";
const SYSTEM: (&str, &str) = ("system", "unified-orchestration");
const INTEGRATIONS: [&str; 4] = ["erp", "billing", "email", "telephony"];

/// Serves the example's metrics contract (README.md) at healthy values: every series
/// from the start, with explicit zeros. Returns a description.
pub fn serve_contract(exporter: &Exporter, cohorts: &[(String, String)]) -> String {
    exporter.set("crm_open_defects", &[SYSTEM, ("severity", "critical")], 0.0);
    for integration in INTEGRATIONS {
        exporter.set(
            "crm_integration_check_success",
            &[SYSTEM, ("integration", integration)],
            1.0,
        );
    }
    for (team, region) in cohorts {
        let labels = [(TEAM_LABEL, team.as_str()), (REGION_LABEL, region.as_str())];
        exporter.set(HANDOFF_FAILURES, &labels, 0.0);
        exporter.set("crm_duplicate_records", &labels, 0.0);
        exporter.set("crm_customer_complaints_total", &labels, 0.0);
    }
    format!(
        "critical defects 0, integration checks ({}) passing, and for each of {} cohorts 0 failed hand-offs, 0 duplicates, 0 complaints",
        INTEGRATIONS.join(", "),
        cohorts.len()
    )
}

/// Starts the exporter, Alertmanager (sending to `receiver_url` with `token`) and
/// Prometheus (scraping the exporter, evaluating `rules`, alerting Alertmanager).
pub async fn start_monitoring(
    env: &mut Environment,
    cohorts: &[(String, String)],
    rules: &str,
    receiver_url: &str,
    token: &str,
) -> Result<(), DemoError> {
    let exporter = Exporter::start()
        .await
        .map_err(|source| DemoError::TestEnv {
            what: "cannot start the metrics exporter",
            source,
        })?;
    let served = serve_contract(&exporter, cohorts);
    env.screen.say(&format!(
        "  metrics exporter  http://{}/metrics: the example's metrics contract: {served}",
        exporter.addr()
    ));
    let exporter = Arc::new(exporter);
    env.exporter = Some(Arc::clone(&exporter));
    let alertmanager = Alertmanager::start(receiver_url, token)
        .await
        .map_err(|source| DemoError::TestEnv {
            what: "cannot start Alertmanager",
            source,
        })?;
    env.screen.say(&format!(
            "  Alertmanager      {}: sends every alert to the operator's receiver {receiver_url} (bearer token)",
            alertmanager.url()
        ),
    );
    let alertmanager_addr = alertmanager.addr();
    env.alertmanager = Some(alertmanager);
    let prometheus = Prometheus::start(exporter.addr(), rules, Some(alertmanager_addr))
        .await
        .map_err(|source| DemoError::TestEnv {
            what: "cannot start Prometheus",
            source,
        })?;
    env.screen.say(&format!(
            "  Prometheus        {}: scrapes the exporter and evaluates rules every 1s, alerts Alertmanager",
            prometheus.url()
        ),
    );
    env.prometheus = Some(prometheus);
    Ok(())
}

/// A free port on 127.0.0.1 (another process may take it before the operator binds it;
/// the operator then fails to start, and says so).
pub fn free_port() -> Result<u16, DemoError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| DemoError::Io {
        what: "cannot find a free port on",
        path: "127.0.0.1".into(),
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| DemoError::Io {
            what: "cannot find a free port on",
            path: "127.0.0.1".into(),
            source,
        })
}

// ---------------------------------------------------------------------------------------
// The operator

/// What `switchyard run` is given.
pub struct OperatorSettings {
    /// The namespace it watches.
    pub namespace: String,
    /// Where it serves health and the Alertmanager receiver.
    pub http_addr: SocketAddr,
    /// Prometheus.
    pub prometheus_url: String,
    /// The file holding the receiver's bearer token.
    pub token_file: PathBuf,
}

/// The `switchyard run` command line: every flag the demo passes, in one place
/// (`switchyard run --help` documents them; docs/operations.md too).
pub fn operator_args(settings: &OperatorSettings) -> Vec<String> {
    vec![
        "run".into(),
        // Only the demo's namespace: on a real cluster, other namespaces are not ours.
        "--namespaces".into(),
        settings.namespace.clone(),
        // One replica; its Lease lives in the demo's namespace, never in `default`.
        "--leader-election".into(),
        "true".into(),
        "--lease-namespace".into(),
        settings.namespace.clone(),
        "--http-addr".into(),
        settings.http_addr.to_string(),
        "--prometheus-url".into(),
        settings.prometheus_url.clone(),
        "--receiver-token-file".into(),
        settings.token_file.display().to_string(),
    ]
}

/// The operator, `switchyard run`, as a child process logging to a file.
pub struct Operator {
    child: tokio::process::Child,
    /// Its process id.
    pub pid: u32,
    /// Its log file.
    pub log: PathBuf,
}

impl Operator {
    /// Starts `binary` with `args`, `KUBECONFIG` set to `kubeconfig` (inherited when
    /// None), its output appended to `log`; waits until `GET <health_url>` answers 200.
    pub async fn start(
        binary: &Path,
        args: &[String],
        kubeconfig: Option<&Path>,
        log: &Path,
        health_url: &str,
    ) -> Result<Operator, DemoError> {
        let io = |source| DemoError::Io {
            what: "cannot open the operator's log",
            path: log.to_owned(),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io)?;
        let err = out.try_clone().map_err(io)?;
        let mut command = tokio::process::Command::new(binary);
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        // SAFETY: setpgid and prctl are async-signal-safe and only change the child. Its own
        // process group keeps a terminal's Ctrl-C from reaching it: the demo stops it
        // itself, after a real cluster's cleanup that needs it. PR_SET_PDEATHSIG stops it
        // if the demo's main thread dies without doing so (kill -9 on the demo).
        unsafe {
            command.pre_exec(|| {
                if libc::setpgid(0, 0) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| DemoError::OperatorSpawn {
            path: binary.to_owned(),
            source,
        })?;
        let mut operator = Operator {
            pid: child.id().unwrap_or_default(),
            child,
            log: log.to_owned(),
        };
        operator.wait_ready(health_url).await?;
        Ok(operator)
    }

    async fn wait_ready(&mut self, url: &str) -> Result<(), DemoError> {
        const WAIT: Duration = Duration::from_secs(30);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(|err| DemoError::Stalled(format!("cannot build an HTTP client: {err}")))?;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            self.check_running()?;
            if let Ok(response) = http.get(url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(DemoError::OperatorNotReady {
            url: url.to_owned(),
            waited: WAIT,
            log: self.log.clone(),
        })
    }

    /// An error if the operator has exited.
    pub fn check_running(&mut self) -> Result<(), DemoError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(DemoError::OperatorExited {
                how: status.to_string(),
                log: self.log.clone(),
            }),
            Err(err) => Err(DemoError::OperatorExited {
                how: format!("its state is unknown: {err}"),
                log: self.log.clone(),
            }),
        }
    }

    /// SIGTERM, then SIGKILL after 5 s; says how it ended.
    pub async fn stop(mut self) -> String {
        if let Ok(Some(status)) = self.child.try_wait() {
            return format!("it had already exited: {status}");
        }
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => "exited cleanly on SIGTERM".into(),
            Ok(Ok(status)) => format!("exited on SIGTERM: {status}"),
            _ => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                "killed after 5s".into()
            }
        }
    }
}

/// The end of a log file, for an error message.
pub fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}
