//! A real data plane for routing tests: echo backends in a network namespace, Traefik
//! with its Kubernetes Gateway provider reading the test API server, a Gateway, and the
//! platform's base route to legacy. Requests go to Traefik, and each answer says which
//! backend served it.
//!
//! ```no_run
//! # async fn demo(plane: &switchyard_testenv::ControlPlane) -> Result<(), switchyard_testenv::TestEnvError> {
//! use switchyard_testenv::{Backend, DataPlane, Request};
//! let backends = [Backend::new("legacy-crm", 80), Backend::new("orchestration", 8080)];
//! let data = DataPlane::start(plane, "crm.example.com", &backends, "legacy-crm").await?;
//! let answer = data.send(&Request::get("/").header("x-crm-team", "support")).await?;
//! assert_eq!(answer.backend.as_deref(), Some("legacy-crm"));
//! # Ok(()) }
//! ```

mod backends;
mod netns;
mod requests;
mod traefik;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::json;

pub use backends::Backend;
pub use requests::{Answer, Counts, Request};
pub use traefik::{CONTROLLER_NAME, DATA_PLANE_LABEL};

use crate::{ControlPlane, FIELD_MANAGER, TestEnvError};

/// The data plane's Gateway, in its namespace.
pub const GATEWAY: &str = "gateway";
/// The platform's base route to legacy, in the data plane's namespace.
pub const BASE_ROUTE: &str = "platform-base";
/// How long [`DataPlane::start`] waits for the gateway to route through the base route.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A running data plane in a fresh namespace of `plane`. Dropping it stops Traefik and
/// the backends, then deletes the network namespace (on unwinding panics too); the API
/// objects stay, in the namespace, like every test's.
pub struct DataPlane {
    namespace: String,
    hostname: String,
    // Field order is drop order: Traefik first, then the servers, then their namespace.
    traefik: traefik::Traefik,
    servers: backends::EchoServers,
    netns: netns::NetNs,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("namespace", &self.namespace)
            .field("gateway", &self.traefik.addr)
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// Starts the backends and Traefik in a new namespace of `plane`, with a Gateway
    /// [`GATEWAY`] and a base route [`BASE_ROUTE`] (`PathPrefix /` on `hostname`) to
    /// the backend named `base`, and returns once a request reaches `base` through it.
    ///
    /// Needs root and `ip` (iproute2). Traefik is started on the calling thread and dies
    /// with it: call this from the test's own thread (a `#[tokio::test]` does).
    pub async fn start(
        plane: &ControlPlane,
        hostname: &str,
        backends: &[Backend],
        base: &str,
    ) -> Result<Self, TestEnvError> {
        let base_backend = backends
            .iter()
            .find(|b| b.name == base)
            .ok_or_else(|| TestEnvError::Network(format!("no backend named {base}")))?
            .clone();
        let client = plane.client().await?;
        let namespace = plane.create_namespace("data-plane").await?;
        let dir = tempfile::Builder::new()
            .prefix("switchyard-data-plane-")
            .tempdir()
            .map_err(|source| TestEnvError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let netns = netns::NetNs::create()?;
        let servers = backends::EchoServers::start(netns.path(), netns.addr(), backends)?;
        backends::apply_services(&client, &namespace, backends, &servers.addrs).await?;
        apply_base_route(&client, &namespace, hostname, &base_backend).await?;
        let traefik = traefik::Traefik::start(plane, &client, &namespace, dir.path()).await?;
        let mut data_plane = Self {
            namespace,
            hostname: hostname.to_owned(),
            traefik,
            servers,
            netns,
            _dir: dir,
        };
        let probe = Request::get("/");
        let ready = data_plane
            .wait_until(&probe, 1, READY_TIMEOUT, |counts| counts.only(base))
            .await;
        if let Err(err) = ready {
            let how = data_plane.traefik.server.check_running().err();
            return Err(how.unwrap_or(err));
        }
        Ok(data_plane)
    }

    /// The namespace that holds the Gateway, the Services, the base route, and the
    /// test's plans and waves (Traefik watches only this one).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The hostname of the base route; [`DataPlane::send`] sets it as `Host`.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Traefik's entrypoint, `127.0.0.1:PORT`.
    pub fn gateway_addr(&self) -> std::net::SocketAddr {
        self.traefik.addr
    }

    /// The network namespace's name (`ip netns list`) and the backends' address in it.
    pub fn netns(&self) -> (&str, std::net::Ipv4Addr) {
        (self.netns.name(), self.netns.addr())
    }

    /// Where each backend listens, by name.
    pub fn backend_addrs(&self) -> &BTreeMap<String, std::net::SocketAddr> {
        &self.servers.addrs
    }

    /// Traefik's log file, for diagnosing a failed test.
    pub fn traefik_log(&self) -> PathBuf {
        self.traefik.server.log.clone()
    }

    /// The end of Traefik's log.
    pub fn traefik_log_tail(&self, lines: usize) -> String {
        crate::process::log_tail(&self.traefik.server.log, lines)
    }

    /// Sends one request through the gateway. A gateway answer that is not a backend's
    /// (404 without a route, 5xx without endpoints) is an [`Answer`] with no backend.
    pub async fn send(&self, request: &Request) -> Result<Answer, TestEnvError> {
        requests::send(self.traefik.addr, &self.hostname, request, SEND_TIMEOUT).await
    }

    /// Sends `request` `n` times, one after another; the answers by backend.
    pub async fn counts(&self, request: &Request, n: usize) -> Result<Counts, TestEnvError> {
        let mut counts = Counts::default();
        for _ in 0..n {
            counts.add(&self.send(request).await?);
        }
        Ok(counts)
    }

    /// Sends `request` `n` times per round until `expected` holds for a round's counts,
    /// and returns those counts. Traefik applies new routes asynchronously (a watch
    /// event, then a configuration reload), so tests wait for them this way.
    pub async fn wait_until(
        &self,
        request: &Request,
        n: usize,
        timeout: Duration,
        expected: impl Fn(&Counts) -> bool,
    ) -> Result<Counts, TestEnvError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.counts(request, n).await {
                Ok(counts) if expected(&counts) => return Ok(counts),
                Ok(counts) => counts.to_string(),
                Err(err) => err.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(TestEnvError::NotReady {
                    what: format!("the gateway's routing of {request}"),
                    waited: timeout,
                    detail: format!("last answers: {last}\n{}", self.traefik_log_tail(15)),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- the end of the data plane's Traefik log ---\n{}",
                self.traefik_log_tail(30)
            );
        }
    }
}

async fn apply_base_route(
    client: &Client,
    namespace: &str,
    hostname: &str,
    legacy: &Backend,
) -> Result<(), TestEnvError> {
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &traefik::gateway_api("HTTPRoute"),
    );
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": BASE_ROUTE},
        "spec": {
            "parentRefs": [{"name": GATEWAY}],
            "hostnames": [hostname],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": legacy.name, "port": legacy.port}],
            }],
        },
    });
    routes
        .patch(
            BASE_ROUTE,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(route),
        )
        .await
        .map_err(TestEnvError::Api)?;
    Ok(())
}
