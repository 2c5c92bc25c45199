//! Routers carry out the engine's routing decision for one cohort.
//!
//! The engine decides a [`RoutingState`] (how much of the cohort goes to the target,
//! whether its writes go to maintenance, whether the legacy override is on). A router
//! turns that into objects: an HTTPRoute per wave ([`gateway`]) or a key in a routing
//! table ConfigMap ([`configmap`]). Routers write only when the cluster differs from the
//! decision, so a settled wave costs no writes. Another router (Istio, say) is one more
//! implementation of [`Router`]; the engine does not change.

pub mod configmap;
pub mod gateway;

pub use configmap::{ConfigMapRouter, RoutingTableEntry};
pub use gateway::{GatewayRouter, HTTPRoute, RouteRead};

pub use crate::engine::route::{RouterConfig, RoutingState, WaveRoute};

/// The field manager for every write Switchyard makes, except the per-wave managers of
/// the ConfigMap router (see [`configmap`]).
pub const FIELD_MANAGER: &str = "switchyard";
/// Label: the wave a routing object belongs to.
pub const WAVE_LABEL: &str = "switchyard.dev/wave";
/// Label: the plan a routing object belongs to.
pub const PLAN_LABEL: &str = "switchyard.dev/plan";
/// Label: set to `switchyard` on every object Switchyard owns.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "switchyard";

/// How a router's writes are made: through [`crate::writes::Writes`], named for the
/// error of a failed one.
pub(crate) fn write_error(
    kind: &'static str,
    namespace: &str,
    name: &str,
) -> impl FnOnce(crate::writes::WriteError) -> RoutingError {
    let namespace = namespace.to_owned();
    let name = name.to_owned();
    move |source| RoutingError::Write {
        kind,
        namespace,
        name,
        source: Box::new(source),
    }
}

/// Whether a router call changed anything in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The cluster already matched; no write was made.
    Unchanged,
    /// One or more writes were made.
    Changed,
}

/// Why routing could not be applied or removed.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// The API server refused or failed a request.
    #[error("{action} {kind} {namespace}/{name}: {source}")]
    Api {
        action: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        /// Boxed: `kube::Error` is large, and every `Result` carrying this error would be.
        #[source]
        source: Box<kube::Error>,
    },
    /// A write was refused, failed, timed out or not started (see [`crate::writes`]).
    #[error("write {kind} {namespace}/{name}: {source}")]
    Write {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<crate::writes::WriteError>,
    },
    /// An object with the route's name exists but is not Switchyard's (it lacks the
    /// label `label` = `value`); it is left alone. Switchyard takes over no object it did
    /// not create, and its admission policies refuse it such writes anyway.
    #[error(
        "{kind} {namespace}/{name} exists and is not managed by Switchyard (it lacks the label {label}={value}); Switchyard takes over no object it did not create: rename or remove it"
    )]
    NotOwned {
        kind: &'static str,
        namespace: String,
        name: String,
        label: &'static str,
        value: &'static str,
    },
    /// A decision needs a backend the plan does not define.
    #[error("the plan defines no {0} backend, which this routing state needs")]
    MissingBackend(&'static str),
    /// A router was handed a wave whose plan uses another router (a controller bug).
    #[error(
        "wave {wave}: its plan does not route through {expected}, so this router cannot apply it"
    )]
    RouterMismatch {
        wave: String,
        expected: &'static str,
    },
    /// The plan's legacy-access header is also one of its cohort headers, so no request
    /// can be told apart as an override.
    #[error("{}", crate::engine::route::legacy_access_clash(header))]
    LegacyAccessClash { header: String },
    /// A routing table entry could not be encoded or decoded.
    #[error("routing table entry for wave {wave}: {source}")]
    Table {
        wave: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Refuses a plan whose legacy-access header is one of the cohort headers (compared
/// without case, as HTTP does). Checked whatever the state, so that the plan is fixed
/// before a migration starts rather than at its dual-access step; the validate stage
/// checks it first (`engine::validate`), so that it shows as the wave's condition, and
/// each router checks it again before it writes.
pub fn check_legacy_access(route: &WaveRoute) -> Result<(), RoutingError> {
    match route.legacy_access_clash() {
        Some(header) => Err(RoutingError::LegacyAccessClash {
            header: header.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Carries out routing decisions for cohorts.
pub trait Router {
    /// Makes the cohort's routing match `state`. Writes nothing when it already does.
    fn apply(
        &self,
        route: &WaveRoute,
        state: &RoutingState,
    ) -> impl Future<Output = Result<Written, RoutingError>> + Send;

    /// Removes the wave's routing, so the cohort falls back to the platform's route to
    /// legacy. Finds what to remove by label, so it works when the plan is gone.
    /// Writes nothing when there is nothing to remove.
    fn remove(
        &self,
        namespace: &str,
        wave: &str,
    ) -> impl Future<Output = Result<Written, RoutingError>> + Send;
}
