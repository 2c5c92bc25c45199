//! The demo's data plane: the example's three Services as echo backends behind a real
//! Traefik (`switchyard_testenv::DataPlane`), on the embedded control plane only.

use switchyard::api::CutoverPlan;
use switchyard_testenv::{Backend, ControlPlane, DataPlane};

use crate::error::DemoError;
use crate::rewrite::Example;

/// The backends the plan routes between, by role.
#[derive(Clone, Debug)]
pub struct Backends {
    /// The legacy Service's name.
    pub legacy: String,
    /// The target Service's name.
    pub target: String,
    /// The maintenance Service's name, if the plan has one.
    pub maintenance: Option<String>,
    /// The cohort headers, by cohort key (`team` → `x-crm-team`).
    pub cohort_headers: Vec<(String, String)>,
    /// The plan's first hostname: the gateway routes on it.
    pub hostname: String,
    services: Vec<Backend>,
}

impl Backends {
    /// Reads them from the example's CutoverPlan.
    pub fn of(example: &Example) -> Result<Self, DemoError> {
        let plan = example
            .documents
            .iter()
            .find(|d| d.kind() == "CutoverPlan")
            .ok_or_else(|| DemoError::Stalled("the example has no CutoverPlan".into()))?;
        let plan: CutoverPlan = serde_json::from_value(plan.value.clone())
            .map_err(|err| DemoError::Stalled(format!("the example's CutoverPlan: {err}")))?;
        let spec = plan.spec;
        let hostname = spec
            .routing
            .gateway_api
            .as_ref()
            .and_then(|r| r.hostnames.first().cloned())
            .ok_or_else(|| {
                DemoError::Stalled("the example's plan routes through no Gateway hostname".into())
            })?;
        let mut services = vec![
            Backend::new(&spec.legacy.service.name, spec.legacy.service.port),
            Backend::new(&spec.target.service.name, spec.target.service.port),
        ];
        if let Some(m) = &spec.maintenance {
            services.push(Backend::new(&m.service.name, m.service.port));
        }
        Ok(Backends {
            legacy: spec.legacy.service.name.clone(),
            target: spec.target.service.name.clone(),
            maintenance: spec.maintenance.as_ref().map(|m| m.service.name.clone()),
            cohort_headers: spec
                .cohort_keys
                .iter()
                .map(|(key, k)| (key.clone(), k.header.clone()))
                .collect(),
            hostname,
            services,
        })
    }
}

/// Why the demo runs without traffic, or None when it can run a data plane.
pub fn unavailable(embedded: bool) -> Option<&'static str> {
    if !embedded {
        return Some(
            "no traffic: the data plane (echo backends in a network namespace, Traefik) runs only \
             with the embedded control plane, whose API server its endpoints and Traefik use",
        );
    }
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "no traffic: the data plane needs root (a network namespace and a veth pair); \
             run the demo as root to see the requests",
        );
    }
    None
}

/// Starts the data plane in a namespace of its own, which becomes the demo's.
///
/// Traefik dies with the thread that starts it: call this from the future `block_on`
/// polls on the main thread, not from a spawned task.
pub async fn start(plane: &ControlPlane, backends: &Backends) -> Result<DataPlane, DemoError> {
    DataPlane::start(
        plane,
        &backends.hostname,
        &backends.services,
        &backends.legacy,
    )
    .await
    .map_err(|source| DemoError::TestEnv {
        what: "cannot start the data plane (Traefik and the echo backends)",
        source,
    })
}
