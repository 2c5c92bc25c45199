//! What a router is told: the routing state the engine decides, and the wave's route
//! (its cohort, backends and router), which the validate stage builds from the wave and
//! its plan. Plain data, so that the engine needs nothing of the routers.

use std::collections::BTreeMap;

use crate::api::{HeaderMatch, ParentRef, ServiceRef};

/// How the cohort's requests are routed, as the engine decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoutingState {
    /// Percent (0-100) of the cohort's requests sent to the target; the rest go to legacy.
    pub target_weight: u8,
    /// The cohort's writes (POST, PUT, PATCH, DELETE) go to the maintenance backend.
    pub quiet: bool,
    /// Requests carrying the plan's legacy-access header still reach legacy.
    pub legacy_override: bool,
}

/// Which router a plan uses, with its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum RouterConfig {
    /// One HTTPRoute per wave, attached to these parents.
    GatewayApi {
        parent_refs: Vec<ParentRef>,
        hostnames: Vec<String>,
    },
    /// A routing table in the named ConfigMap.
    ConfigMap { name: String },
}

/// Everything a router needs to know about one wave's cohort. Built by the validate
/// stage ([`super::validate::route`]) from the wave and its plan.
#[derive(Clone, Debug, PartialEq)]
pub struct WaveRoute {
    /// The namespace of the wave, its plan and its routing objects.
    pub namespace: String,
    /// The wave's name.
    pub wave: String,
    /// The wave's UID, for owner references.
    pub wave_uid: String,
    /// The plan's name.
    pub plan: String,
    /// The cohort: cohort key to value, e.g. `team -> support`.
    pub cohort: BTreeMap<String, String>,
    /// The request headers that identify the cohort: header name to exact value,
    /// e.g. `x-crm-team -> support`. Sorted by header name.
    pub cohort_headers: BTreeMap<String, String>,
    /// Where the cohort's traffic goes by default.
    pub legacy: ServiceRef,
    /// Where the cohort moves to.
    pub target: ServiceRef,
    /// Answers the cohort's writes during quiet steps.
    pub maintenance: Option<ServiceRef>,
    /// The override that reaches legacy during dual access.
    pub legacy_access: Option<HeaderMatch>,
    /// The router and its settings.
    pub router: RouterConfig,
}

impl WaveRoute {
    /// The plan's legacy-access header when it is also one of the cohort's headers
    /// (header names match in any case): then no request can be told apart as an
    /// override, and no router can carry the plan out.
    pub fn legacy_access_clash(&self) -> Option<&str> {
        let access = self.legacy_access.as_ref()?;
        self.cohort_headers
            .keys()
            .any(|header| header.eq_ignore_ascii_case(&access.header))
            .then_some(access.header.as_str())
    }
}

/// What is wrong when the legacy-access header is a cohort header, for people.
pub fn legacy_access_clash(header: &str) -> String {
    format!(
        "the plan's legacy-access header {header} is also a cohort header; give legacyAccess a header of its own"
    )
}
