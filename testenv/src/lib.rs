//! A real Kubernetes control plane (etcd and kube-apiserver) for Switchyard's integration
//! tests and local demo.
//!
//! It follows the envtest pattern: real binaries on free loopback ports in a temporary
//! directory, certificates generated on the spot, the RBAC authorizer on, and nothing
//! mocked. There is no controller-manager or scheduler: namespaces never finish
//! terminating and pods never run, which is why each test simply gets a fresh namespace.
//!
//! For tests of Prometheus analysis and Alertmanager webhooks, it also runs a real
//! [`Prometheus`] and [`Alertmanager`], fed by an [`Exporter`] whose metrics the test sets.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_testenv::TestEnvError> {
//! let plane = switchyard_testenv::ControlPlane::start()?;
//! let admin = plane.client().await?;
//! let alice = plane.client_as("alice", &["release-managers"]).await?;
//! let namespace = plane.create_namespace("demo").await?;
//! # Ok(()) }
//! ```

mod binaries;
mod certs;
mod data_plane;
mod monitoring;
mod process;
pub mod proxy;

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};
use serde_json::json;

pub use binaries::{
    GATEWAY_API_VERSION, KUBE_VERSION, TRAEFIK_VERSION, crds_in_yaml, etcd, gateway_api_crds,
    kube_apiserver, kubectl, traefik,
};
use certs::Pki;
pub use data_plane::{
    Answer, BASE_ROUTE, Backend, CONTROLLER_NAME, Counts, DATA_PLANE_LABEL, DataPlane, GATEWAY,
    Request,
};
pub use monitoring::{
    Alertmanager, Exporter, Prometheus, Sample, alertmanager_binary, prometheus_binary,
};
use process::{Server, free_port, log_tail};

/// The field manager the harness applies CRDs with.
pub const FIELD_MANAGER: &str = "switchyard-testenv";
/// Label on every namespace the harness creates.
pub const TEST_NAMESPACE_LABEL: &str = "switchyard.dev/test-namespace";

const START_ATTEMPTS: usize = 3;
const AUDIT_LOG: &str = "audit.log";
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Everything that can go wrong while running the control plane.
#[derive(Debug, thiserror::Error)]
pub enum TestEnvError {
    #[error("could not generate the control plane's certificates: {0}")]
    Certificates(#[source] rcgen::Error),
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not get {what}: {detail}")]
    Build { what: String, detail: String },
    #[error("could not read manifests in {path}: {detail}")]
    Manifest { path: PathBuf, detail: String },
    #[error("{name} stopped: {how}; the end of its log:\n{log_tail}")]
    ProcessExited {
        name: &'static str,
        how: String,
        log_tail: String,
    },
    #[error("{what} was not ready after {waited:?}: {detail}")]
    NotReady {
        what: String,
        waited: Duration,
        detail: String,
    },
    #[error("could not build a client configuration: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("API request failed: {0}")]
    Api(#[source] kube::Error),
    #[error("the shared control plane failed to start: {0}")]
    Shared(String),
    /// A monitoring binary (Prometheus or Alertmanager) is not installed.
    #[error(
        "{program} is not installed ({detail}): run `make test`, which installs the Debian \
         package {package}, or set {env} to the binary's path"
    )]
    MissingBinary {
        /// The binary's name, e.g. `prometheus`.
        program: &'static str,
        /// The environment variable that overrides its path.
        env: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
        /// Where it was looked for.
        detail: String,
    },
    /// The data plane's network (namespace, veth pair, backends, requests) failed.
    #[error("data plane network: {0}")]
    Network(String),
    /// A Prometheus query could not be run, or its answer could not be read.
    #[error("the Prometheus query {query} failed: {detail}")]
    Query {
        /// The PromQL expression.
        query: String,
        /// What went wrong: the HTTP error, or Prometheus's error type and message.
        detail: String,
    },
}

struct Servers {
    etcd: Option<Server>,
    apiserver: Option<Server>,
    /// The API server's binary and arguments, to restart it exactly as it was started.
    apiserver_command: Option<(PathBuf, Vec<String>)>,
}

/// The audit policy of the test API server: the metadata of every completed write to the
/// objects Switchyard reads or writes (its own, HTTPRoutes, ConfigMaps), and Lease writes
/// with their request and response (the holder they leave), and nothing else, so that a
/// test can say who wrote what, when, and who held the Lease then, as the server saw it.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: None
    verbs: [get, list, watch]
  - level: RequestResponse
    resources:
      - group: coordination.k8s.io
        resources: [leases]
  - level: Metadata
    resources:
      - group: switchyard.dev
      - group: gateway.networking.k8s.io
      - group: \"\"
        resources: [configmaps]
  - level: None
";

/// A running etcd and kube-apiserver. Dropping it stops both and deletes its files.
pub struct ControlPlane {
    dir: PathBuf,
    server_url: String,
    kubeconfig_path: PathBuf,
    pki: Pki,
    servers: Mutex<Servers>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the API server is ready.
    ///
    /// Blocking; safe to call from inside an async runtime. Processes are started on the
    /// calling thread and are killed by the kernel if that thread dies, so start the
    /// plane on a thread that lives as long as it does.
    pub fn start() -> Result<Self, TestEnvError> {
        let apiserver = kube_apiserver()?;
        let etcd = etcd()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&apiserver, &etcd) {
                Ok(plane) => return Ok(plane),
                // A port taken between choosing and binding it shows up as an early exit.
                Err(err @ TestEnvError::ProcessExited { .. })
                    if err.to_string().contains("address already in use") =>
                {
                    last_error = Some(err)
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    fn try_start(apiserver: &Path, etcd: &Path) -> Result<Self, TestEnvError> {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-testenv-")
            .tempdir()
            .map_err(|source| TestEnvError::Io {
                path: std::env::temp_dir(),
                source,
            })?
            .keep();
        let pki = Pki::generate()?;
        let write = |name: &str, contents: &str| -> Result<PathBuf, TestEnvError> {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|source| TestEnvError::Io {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        };
        let serving_cert = write("serving.crt", &pki.serving_cert)?;
        let serving_key = write("serving.key", &pki.serving_key)?;
        let client_ca = write("client-ca.crt", &pki.client_ca)?;
        let sa_key = write("service-account.key", &pki.service_account_key)?;
        let sa_public_key = write("service-account.pub", &pki.service_account_public_key)?;

        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let secure_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let path = |p: &Path| p.display().to_string();

        let mut plane = ControlPlane {
            server_url: format!("https://127.0.0.1:{secure_port}"),
            kubeconfig_path: dir.join("kubeconfig"),
            pki,
            servers: Mutex::new(Servers {
                etcd: None,
                apiserver: None,
                apiserver_command: None,
            }),
            dir: dir.clone(),
        };
        let etcd_args = vec![
            "--name=default".to_owned(),
            format!("--data-dir={}", path(&dir.join("etcd"))),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let etcd_server = Server::start("etcd", etcd, &etcd_args, &dir)?;
        plane.servers.get_mut().expect("not shared yet").etcd = Some(etcd_server);

        let audit_policy = write("audit-policy.yaml", AUDIT_POLICY)?;
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--audit-policy-file={}", path(&audit_policy)),
            format!("--audit-log-path={}", path(&dir.join(AUDIT_LOG))),
            "--audit-log-format=json".to_owned(),
            "--audit-log-mode=blocking".to_owned(),
            format!("--cert-dir={}", path(&dir)),
            format!("--tls-cert-file={}", path(&serving_cert)),
            format!("--tls-private-key-file={}", path(&serving_key)),
            format!("--client-ca-file={}", path(&client_ca)),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--secure-port={secure_port}"),
            "--authorization-mode=RBAC".to_owned(),
            "--service-cluster-ip-range=10.96.0.0/24".to_owned(),
            "--service-account-issuer=https://switchyard-testenv.invalid".to_owned(),
            format!("--service-account-key-file={}", path(&sa_public_key)),
            format!("--service-account-signing-key-file={}", path(&sa_key)),
            // No node runs here, so nothing can serve the kubernetes Service's endpoints.
            "--endpoint-reconciler-type=none".to_owned(),
            "--allow-privileged=true".to_owned(),
            "--profiling=false".to_owned(),
            "--v=1".to_owned(),
        ];
        let apiserver_server = Server::start("kube-apiserver", apiserver, &apiserver_args, &dir)?;
        let servers = plane.servers.get_mut().expect("not shared yet");
        servers.apiserver = Some(apiserver_server);
        servers.apiserver_command = Some((apiserver.to_owned(), apiserver_args));

        std::fs::write(&plane.kubeconfig_path, plane.kubeconfig_yaml(None)).map_err(|source| {
            TestEnvError::Io {
                path: plane.kubeconfig_path.clone(),
                source,
            }
        })?;
        block_on(plane.wait_ready())?;
        Ok(plane)
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// A kubeconfig file for the admin, for subprocesses such as `kubectl` plugins.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The CA (PEM) that signed the API server's serving certificate, for clients that
    /// do not take a kubeconfig (Traefik).
    pub fn serving_ca_pem(&self) -> &str {
        &self.pki.serving_ca
    }

    /// The directory that holds the control plane's data, certificates and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process ids of etcd and kube-apiserver, while they run.
    pub fn pids(&self) -> Vec<u32> {
        let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        [&servers.etcd, &servers.apiserver]
            .into_iter()
            .flatten()
            .filter_map(Server::pid)
            .collect()
    }

    /// The API server's audit log (JSON lines): one event per completed write to
    /// Switchyard's objects, HTTPRoutes, ConfigMaps and Leases, with the user (and the
    /// impersonated user), the verb, the object, the response code and `stageTimestamp`;
    /// Lease writes also carry the Lease as written (`responseObject`).
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join(AUDIT_LOG)
    }

    /// The API server's address, `127.0.0.1:PORT`, e.g. for a [`proxy::FaultProxy`].
    pub fn apiserver_addr(&self) -> std::net::SocketAddr {
        self.server_url
            .trim_start_matches("https://")
            .parse()
            .expect("the server URL is https://127.0.0.1:PORT")
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after `grace`) and starts it again on
    /// the same port with the same arguments; etcd keeps running, and so keeps every
    /// object. Returns once the new API server answers `/readyz`.
    ///
    /// The new process is started on a thread of its own that lives as long as the test
    /// binary, since the kernel kills it when the thread that started it exits.
    pub async fn restart_apiserver(&self, grace: Duration) -> Result<(), TestEnvError> {
        let (program, args) = {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut running) = servers.apiserver.take() {
                running.stop(grace);
            }
            servers
                .apiserver_command
                .clone()
                .ok_or_else(|| TestEnvError::Shared("the API server was never started".into()))?
        };
        let dir = self.dir.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("testenv-apiserver".into())
            .spawn(move || {
                let _ = tx.send(Server::start("kube-apiserver", &program, &args, &dir));
                loop {
                    std::thread::park();
                }
            })
            .map_err(|source| TestEnvError::Io {
                path: self.dir.clone(),
                source,
            })?;
        let server = rx
            .await
            .map_err(|_| TestEnvError::Shared("the API server thread died".into()))??;
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apiserver = Some(server);
        self.wait_ready().await
    }

    /// The end of the API server's log, for diagnosing a failed test.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir.join("kube-apiserver.log"), lines)
    }

    /// A kubeconfig for the admin (`system:masters`), or for the admin impersonating
    /// `user` in `groups`.
    pub fn kubeconfig_yaml(&self, impersonate: Option<(&str, &[&str])>) -> String {
        use base64_pem as b64;
        let mut user = json!({
            "client-certificate-data": b64(&self.pki.admin_cert),
            "client-key-data": b64(&self.pki.admin_key),
        });
        if let Some((name, groups)) = impersonate {
            user["as"] = json!(name);
            user["as-groups"] = json!(groups);
        }
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testenv", "cluster": {
                "server": self.server_url,
                "certificate-authority-data": b64(&self.pki.serving_ca),
            }}],
            "users": [{"name": "testenv", "user": user}],
            "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": "testenv"}}],
            "current-context": "testenv",
        });
        serde_yaml::to_string(&config).expect("a JSON value always renders as YAML")
    }

    async fn config(&self, impersonate: Option<(&str, &[&str])>) -> Result<Config, TestEnvError> {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig_yaml(impersonate))
            .map_err(TestEnvError::Kubeconfig)?;
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(TestEnvError::Kubeconfig)
    }

    /// A client authenticated as the admin, a member of `system:masters`.
    pub async fn client(&self) -> Result<Client, TestEnvError> {
        Client::try_from(self.config(None).await?).map_err(TestEnvError::Api)
    }

    /// A client that impersonates `user` in `groups` (plus `system:authenticated`, which
    /// the API server adds), so that RBAC and admission see that user.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client, TestEnvError> {
        Client::try_from(self.config(Some((user, groups))).await?).map_err(TestEnvError::Api)
    }

    async fn wait_ready(&self) -> Result<(), TestEnvError> {
        let client = self.client().await?;
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < READY_TIMEOUT {
            {
                let mut guard = self.servers.lock().unwrap_or_else(|e| e.into_inner());
                let servers = &mut *guard;
                for server in [&mut servers.etcd, &mut servers.apiserver]
                    .into_iter()
                    .flatten()
                {
                    server.check_running()?;
                }
            }
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = body,
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(TestEnvError::NotReady {
            what: "kube-apiserver".into(),
            waited: READY_TIMEOUT,
            detail: format!("{last}\n{}", self.apiserver_log_tail(20)),
        })
    }

    /// Applies CRDs with server-side apply and waits until each one is Established.
    pub async fn install_crds(
        &self,
        crds: &[CustomResourceDefinition],
    ) -> Result<(), TestEnvError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await?);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &params, &Patch::Apply(crd))
                .await
                .map_err(TestEnvError::Api)?;
        }
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let established = await_condition(api.clone(), &name, conditions::is_crd_established());
            match tokio::time::timeout(Duration::from_secs(30), established).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    return Err(TestEnvError::NotReady {
                        what: format!("CRD {name}"),
                        waited: Duration::from_secs(30),
                        detail: err.to_string(),
                    });
                }
                Err(_) => {
                    return Err(TestEnvError::NotReady {
                        what: format!("CRD {name}"),
                        waited: Duration::from_secs(30),
                        detail: "it never became Established".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Creates a namespace with a random suffix, labelled as a test namespace, and
    /// returns its name. Each test uses its own, so tests never see each other's objects.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String, TestEnvError> {
        let api: Api<Namespace> = Api::all(self.client().await?);
        let suffix: u32 = rand::random();
        let prefix: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!("{prefix}-{suffix:08x}");
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &namespace)
            .await
            .map_err(TestEnvError::Api)?;
        Ok(name)
    }

    /// Stops both processes and deletes the directory (unless `SWITCHYARD_TESTENV_KEEP`
    /// is set, for debugging). Idempotent; also run on drop.
    pub fn stop(&self) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut apiserver) = servers.apiserver.take() {
            apiserver.stop(Duration::from_secs(5));
        }
        if let Some(mut etcd) = servers.etcd.take() {
            etcd.stop(Duration::from_secs(5));
        }
        if std::env::var_os("SWITCHYARD_TESTENV_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// One control plane for the whole test binary, started on first use, with `crds`
    /// and the Gateway API standard CRDs installed.
    ///
    /// Its processes live on a thread of their own and are stopped, and its files
    /// deleted, when the process exits (through `atexit`, which the test harness reaches
    /// even when tests panic). Every caller gets the same plane; create a namespace per
    /// test.
    pub fn shared(
        crds: impl FnOnce() -> Vec<CustomResourceDefinition>,
    ) -> Result<&'static ControlPlane, TestEnvError> {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(Ok(plane)) = SHARED.get() {
                plane.stop();
            }
        }
        let result = SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("testenv-processes".into())
                .spawn(move || {
                    let _ = tx.send(ControlPlane::start());
                    // Keep the thread alive: the kernel kills the processes when it dies.
                    loop {
                        std::thread::park();
                    }
                });
            if let Err(err) = spawned {
                return Err(format!("could not start the supervisor thread: {err}"));
            }
            let plane = match rx.recv() {
                Ok(Ok(plane)) => plane,
                Ok(Err(err)) => return Err(err.to_string()),
                Err(_) => return Err("the supervisor thread died".into()),
            };
            // SAFETY: registering a plain extern "C" fn with no captured state.
            unsafe {
                libc::atexit(stop_shared);
            }
            let mut all = crds();
            match gateway_api_crds() {
                Ok(gateway) => all.extend(gateway),
                Err(err) => return Err(err.to_string()),
            }
            block_on(plane.install_crds(&all)).map_err(|err| err.to_string())?;
            Ok(plane)
        });
        result
            .as_ref()
            .map_err(|message| TestEnvError::Shared(message.clone()))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn base64_pem(pem: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(pem)
}

/// Runs a future to completion on a fresh runtime in a scoped thread, so that it works
/// whether or not the caller is inside a runtime.
fn block_on<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime always builds")
                    .block_on(future)
            })
            .join()
            .expect("the setup thread does not panic")
    })
}

/// The write verbs of `apiserver_request_total`.
const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// The write requests the API server has served so far (refused ones included), by
/// resource (`migrationwaves`) or subresource (`migrationwaves/status`), from its own
/// `apiserver_request_total`. Diff two readings to count the writes in between.
pub async fn api_writes(
    client: &Client,
) -> Result<std::collections::BTreeMap<String, u64>, TestEnvError> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("static request");
    let text = client
        .request_text(request)
        .await
        .map_err(TestEnvError::Api)?;
    let mut counts = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
        };
        if !WRITE_VERBS.contains(&label("verb")) {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let key = match label("subresource") {
            "" => label("resource").to_owned(),
            sub => format!("{}/{sub}", label("resource")),
        };
        *counts.entry(key).or_default() += value as u64;
    }
    Ok(counts)
}
