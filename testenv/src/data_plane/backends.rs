//! Echo backends inside the data plane's network namespace, and the Services and
//! EndpointSlices that point Traefik at them.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use axum::{Json, Router, extract::State, http::HeaderMap, http::Method};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{Answer, netns, requests::BACKEND_HEADER};
use crate::{FIELD_MANAGER, TestEnvError};

/// The name of every Service port and EndpointSlice port: Traefik pairs them by name.
const PORT_NAME: &str = "http";

/// A backend a test asks for: a Service `name` whose port `port` the routes refer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    pub port: i32,
}

impl Backend {
    pub fn new(name: &str, port: i32) -> Self {
        Self {
            name: name.to_owned(),
            port,
        }
    }
}

/// The running echo servers: one thread, inside the namespace, serving every backend on
/// a port of its own. Dropping it stops them.
pub(crate) struct EchoServers {
    /// Each backend's listening address, by name.
    pub addrs: BTreeMap<String, SocketAddr>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServers {
    pub fn start(
        netns: PathBuf,
        addr: Ipv4Addr,
        backends: &[Backend],
    ) -> Result<Self, TestEnvError> {
        let names: Vec<String> = backends.iter().map(|b| b.name.clone()).collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("testenv-backends".into())
            .spawn(move || serve(netns, addr, names, ready_tx, stop))
            .map_err(|err| TestEnvError::Network(format!("no backend thread: {err}")))?;
        let addrs = ready_rx
            .recv()
            .map_err(|_| TestEnvError::Network("the backend thread died".into()))??;
        Ok(Self {
            addrs,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Ready = std::sync::mpsc::Sender<Result<BTreeMap<String, SocketAddr>, TestEnvError>>;

fn serve(
    netns: PathBuf,
    addr: Ipv4Addr,
    names: Vec<String>,
    ready: Ready,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    // The thread enters the namespace before building the runtime, so every socket the
    // servers open (listeners and accepted connections) is the namespace's.
    if let Err(err) = netns::enter(&netns) {
        let _ = ready.send(Err(err));
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(TestEnvError::Network(format!("no runtime: {err}"))));
            return;
        }
    };
    runtime.block_on(async move {
        let mut addrs = BTreeMap::new();
        let mut servers = tokio::task::JoinSet::new();
        for name in names {
            let listener = match tokio::net::TcpListener::bind((addr, 0)).await {
                Ok(listener) => listener,
                Err(source) => {
                    let _ = ready.send(Err(TestEnvError::Io {
                        path: PathBuf::from(format!("{addr}:0")),
                        source,
                    }));
                    return;
                }
            };
            let local = listener
                .local_addr()
                .expect("a bound listener has an address");
            addrs.insert(name.clone(), local);
            let app = Router::new().fallback(echo).with_state(name);
            servers.spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        let _ = ready.send(Ok(addrs));
        let _ = stop.await;
        servers.shutdown().await;
    });
}

async fn echo(
    State(name): State<String>,
    method: Method,
    headers: HeaderMap,
) -> ([(&'static str, String); 1], Json<Answer>) {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // Also in a header, for answers without a body (HEAD).
    (
        [(BACKEND_HEADER, name.clone())],
        Json(Answer {
            status: 200,
            backend: Some(name),
            method: method.to_string(),
            headers,
        }),
    )
}

/// Applies a headless Service and an EndpointSlice per backend. There is no
/// controller-manager to derive the slices from selectors, so they are written here,
/// labelled with `kubernetes.io/service-name` as the EndpointSlice controller would.
pub(crate) async fn apply_services(
    client: &Client,
    namespace: &str,
    backends: &[Backend],
    addrs: &BTreeMap<String, SocketAddr>,
) -> Result<(), TestEnvError> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for backend in backends {
        let addr = addrs[&backend.name];
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": backend.name},
            "spec": {
                "clusterIP": "None",
                "ports": [{"name": PORT_NAME, "port": backend.port,
                           "targetPort": addr.port(), "protocol": "TCP"}],
            },
        });
        services
            .patch(&backend.name, &params, &Patch::Apply(service))
            .await
            .map_err(TestEnvError::Api)?;
        let slice_name = format!("{}-data-plane", backend.name);
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": slice_name,
                "labels": {"kubernetes.io/service-name": backend.name},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": PORT_NAME, "port": addr.port(), "protocol": "TCP"}],
        });
        slices
            .patch(&slice_name, &params, &Patch::Apply(slice))
            .await
            .map_err(TestEnvError::Api)?;
    }
    Ok(())
}
