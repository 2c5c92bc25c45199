//! Gateway API router: one HTTPRoute per wave.
//!
//! The route for wave `W` is named `switchyard-W` (see [`route_name`]) and lives in the
//! wave's namespace. It carries up to three rules, all limited to the cohort's requests
//! by exact header matches:
//!
//! 1. `cohort`: every request of the cohort, split between target and legacy by weight;
//! 2. `quiet-writes` (quiet steps only): the cohort's POST, PUT, PATCH and DELETE
//!    requests, sent to the maintenance backend;
//! 3. `legacy-override` (dual access only): requests that also carry the plan's
//!    legacy-access header, sent to legacy.
//!
//! [`desired_route`] builds the route from the decision; it is pure and sets every field
//! the HTTPRoute CRD would otherwise default, so the object read back from the API server
//! equals the desired one and a settled wave causes no writes.
//!
//! The `gateway-api` crate does not build with kube 5, so the few HTTPRoute fields
//! Switchyard writes are modelled here.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{
    Api, Client, CustomResource, Resource,
    api::{DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, PostParams},
    core::ApiResource,
};
use serde::{Deserialize, Serialize};

use super::{
    FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, PLAN_LABEL, Router, RouterConfig, RoutingError,
    RoutingState, WAVE_LABEL, WaveRoute, Written, check_legacy_access, write_error,
};
use crate::api::{MigrationWave, ParentRef, ServiceRef};
use crate::writes::{Writes, resource, verb};

/// The kind, for errors.
const KIND: &str = "HTTPRoute";
/// The Gateway API group, which is also the default group of a parent reference.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The name of the rule that splits the cohort between target and legacy.
pub const COHORT_RULE: &str = "cohort";
/// The name of the rule that sends the cohort's writes to maintenance.
pub const QUIET_WRITES_RULE: &str = "quiet-writes";
/// The name of the rule that keeps the legacy override reaching legacy.
pub const LEGACY_OVERRIDE_RULE: &str = "legacy-override";

/// The subset of the Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`) that
/// Switchyard writes. Fields it does not model are ignored when reading.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    /// The Gateways (or listeners) the route attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<RouteParentRef>,
    /// The hostnames the route matches. Empty matches every hostname of the parents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules: how matching requests are forwarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HTTPRouteRule>,
}

/// A reference to a parent (a Gateway or one of its listeners) of a route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentRef {
    /// API group of the parent. The API server defaults it to `gateway.networking.k8s.io`.
    pub group: String,
    /// Kind of the parent. The API server defaults it to `Gateway`.
    pub kind: String,
    /// Namespace of the parent. None means the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the parent.
    pub name: String,
    /// The listener of the parent to attach to. None means every listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// The listener port to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// One rule of a route: requests matching any of `matches` go to `backend_refs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    /// Name of the rule, unique within the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The conditions, any one of which selects a request for this rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HTTPRouteMatch>,
    /// Where the selected requests go, split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HTTPBackendRef>,
}

/// One condition of a rule; all its parts must hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteMatch {
    /// The request path must match this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathMatch>,
    /// The request must carry each of these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HTTPHeaderMatch>,
    /// The request must use this method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HTTPMethod>,
}

/// A condition on the request path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPPathMatch {
    /// How `value` is compared with the path.
    #[serde(rename = "type")]
    pub type_: PathMatchType,
    /// The path, or path prefix, to match.
    pub value: String,
}

/// How a path is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatchType {
    /// The path equals the value.
    Exact,
    /// The path starts with the value, element by element.
    PathPrefix,
    /// The path matches the value as a regular expression.
    RegularExpression,
}

/// A condition on one request header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeaderMatch {
    /// How `value` is compared with the header's value.
    #[serde(rename = "type")]
    pub type_: HeaderMatchType,
    /// The header name (case-insensitive).
    pub name: String,
    /// The value to match.
    pub value: String,
}

/// How a header value is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeaderMatchType {
    /// The header's value equals the value.
    Exact,
    /// The header's value matches the value as a regular expression.
    RegularExpression,
}

/// An HTTP method a match can require.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HTTPMethod {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// CONNECT
    Connect,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// PATCH
    Patch,
}

/// The methods a quiet step sends to maintenance.
pub const WRITE_METHODS: [HTTPMethod; 4] = [
    HTTPMethod::Post,
    HTTPMethod::Put,
    HTTPMethod::Patch,
    HTTPMethod::Delete,
];

/// A backend of a rule, with its share of the rule's requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPBackendRef {
    /// API group of the backend; `""` (the core group) for a Service.
    pub group: String,
    /// Kind of the backend, `Service`.
    pub kind: String,
    /// Name of the backend.
    pub name: String,
    /// Namespace of the backend. None means the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port that receives the requests.
    pub port: i32,
    /// The backend's share: weight / (sum of the rule's weights).
    pub weight: i32,
}

/// The name of the wave's HTTPRoute.
pub fn route_name(wave: &str) -> String {
    format!("switchyard-{wave}")
}

/// The labels on the wave's HTTPRoute.
fn route_labels(route: &WaveRoute) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (WAVE_LABEL.to_owned(), route.wave.clone()),
        (PLAN_LABEL.to_owned(), route.plan.clone()),
    ])
}

/// The wave as the route's controlling owner. Switchyard deletes routes itself and does
/// not rely on garbage collection; the reference shows where the route comes from.
fn wave_owner(route: &WaveRoute) -> OwnerReference {
    OwnerReference {
        api_version: MigrationWave::api_version(&()).into_owned(),
        kind: MigrationWave::kind(&()).into_owned(),
        name: route.wave.clone(),
        uid: route.wave_uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }
}

fn parent_ref(parent: &ParentRef) -> RouteParentRef {
    RouteParentRef {
        group: GATEWAY_GROUP.to_owned(),
        kind: "Gateway".to_owned(),
        namespace: parent.namespace.clone(),
        name: parent.name.clone(),
        section_name: parent.section_name.clone(),
        port: parent.port,
    }
}

fn service_backend(service: &ServiceRef, weight: i32) -> HTTPBackendRef {
    HTTPBackendRef {
        group: String::new(),
        kind: "Service".to_owned(),
        name: service.name.clone(),
        namespace: None,
        port: service.port,
        weight,
    }
}

fn exact_header(name: &str, value: &str) -> HTTPHeaderMatch {
    HTTPHeaderMatch {
        type_: HeaderMatchType::Exact,
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// A match on every path, the given headers and, optionally, a method.
fn match_all_paths(headers: Vec<HTTPHeaderMatch>, method: Option<HTTPMethod>) -> HTTPRouteMatch {
    HTTPRouteMatch {
        path: Some(HTTPPathMatch {
            type_: PathMatchType::PathPrefix,
            value: "/".to_owned(),
        }),
        headers,
        method,
    }
}

/// The wave's HTTPRoute for `state`: name, labels, owner reference and spec. Pure.
///
/// Fails with [`RoutingError::MissingBackend`] when the state is quiet and the plan has
/// no maintenance backend, with [`RoutingError::LegacyAccessClash`] when the plan's
/// legacy-access header is a cohort header (the API server would answer the duplicate
/// header match with a 500), and with [`RoutingError::RouterMismatch`] when the plan does
/// not route through the Gateway API.
pub fn desired_route(route: &WaveRoute, state: &RoutingState) -> Result<HTTPRoute, RoutingError> {
    let RouterConfig::GatewayApi {
        parent_refs,
        hostnames,
    } = &route.router
    else {
        return Err(RoutingError::RouterMismatch {
            wave: route.wave.clone(),
            expected: "gatewayAPI",
        });
    };
    check_legacy_access(route)?;

    let cohort_headers: Vec<HTTPHeaderMatch> = route
        .cohort_headers
        .iter()
        .map(|(name, value)| exact_header(name, value))
        .collect();

    let target_weight = i32::from(state.target_weight.min(100));
    let split = [
        service_backend(&route.target, target_weight),
        service_backend(&route.legacy, 100 - target_weight),
    ];
    let mut rules = vec![HTTPRouteRule {
        name: Some(COHORT_RULE.to_owned()),
        matches: vec![match_all_paths(cohort_headers.clone(), None)],
        backend_refs: split.into_iter().filter(|b| b.weight > 0).collect(),
    }];

    if state.quiet {
        let maintenance = route
            .maintenance
            .as_ref()
            .ok_or(RoutingError::MissingBackend("maintenance"))?;
        rules.push(HTTPRouteRule {
            name: Some(QUIET_WRITES_RULE.to_owned()),
            matches: WRITE_METHODS
                .iter()
                .map(|method| match_all_paths(cohort_headers.clone(), Some(*method)))
                .collect(),
            backend_refs: vec![service_backend(maintenance, 1)],
        });
    }

    if state.legacy_override
        && let Some(access) = &route.legacy_access
    {
        let mut headers = cohort_headers.clone();
        headers.push(exact_header(&access.header, &access.value));
        headers.sort_by(|a, b| a.name.cmp(&b.name));
        rules.push(HTTPRouteRule {
            name: Some(LEGACY_OVERRIDE_RULE.to_owned()),
            matches: vec![match_all_paths(headers, None)],
            backend_refs: vec![service_backend(&route.legacy, 1)],
        });
    }

    let mut object = HTTPRoute::new(
        &route_name(&route.wave),
        HTTPRouteSpec {
            parent_refs: parent_refs.iter().map(parent_ref).collect(),
            hostnames: hostnames.clone(),
            rules,
        },
    );
    object.metadata = ObjectMeta {
        name: Some(route_name(&route.wave)),
        namespace: Some(route.namespace.clone()),
        labels: Some(route_labels(route)),
        owner_references: Some(vec![wave_owner(route)]),
        ..ObjectMeta::default()
    };
    Ok(object)
}

/// Whether `existing` already is `desired`: the same spec, field for field (including
/// fields Switchyard does not model, which it would remove), our labels and our owner
/// reference.
fn is_settled(existing: &DynamicObject, desired: &HTTPRoute) -> bool {
    // The spec always serialises; were it not to, the apply that follows reports it.
    let Ok(desired_spec) = serde_json::to_value(&desired.spec) else {
        return false;
    };
    if existing.data.get("spec") != Some(&desired_spec) {
        return false;
    }
    let labels = existing.metadata.labels.as_ref();
    let has_labels = desired
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.and_then(|labels| labels.get(key)) == Some(value));
    let owners = existing
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    let has_owner = desired
        .metadata
        .owner_references
        .iter()
        .flatten()
        .all(|owner| owners.contains(owner));
    has_labels && has_owner
}

fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == MANAGED_BY)
}

fn api_error(
    action: &'static str,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> RoutingError {
    let namespace = namespace.to_owned();
    let name = name.to_owned();
    move |source| RoutingError::Api {
        action,
        kind: KIND,
        namespace,
        name,
        source: Box::new(source),
    }
}

/// Routes cohorts with one Gateway API HTTPRoute per wave.
#[derive(Clone)]
pub struct GatewayRouter {
    /// The client the router reads and writes HTTPRoutes with.
    pub client: Client,
    /// How it writes: within the leader's term, with a timeout.
    pub writes: Writes,
}

impl GatewayRouter {
    /// A router that uses `client`, and writes with a timeout but no leader's term.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            writes: Writes::default(),
        }
    }

    /// The same router, writing through `writes`.
    pub fn with_writes(self, writes: Writes) -> Self {
        Self { writes, ..self }
    }

    fn routes(&self, namespace: &str) -> Api<HTTPRoute> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

impl Router for GatewayRouter {
    async fn apply(
        &self,
        route: &WaveRoute,
        state: &RoutingState,
    ) -> Result<Written, RoutingError> {
        let desired = desired_route(route, state)?;
        let name = route_name(&route.wave);
        let namespace = route.namespace.as_str();

        // Read untyped, so that a route someone else wrote (in any shape) is recognised
        // as not ours instead of failing to parse, and so that fields this module does
        // not model count as differences.
        let raw: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            namespace,
            &ApiResource::erase::<HTTPRoute>(&()),
        );
        let existing = raw
            .get_opt(&name)
            .await
            .map_err(api_error("get", namespace, &name))?;
        let Some(existing) = existing else {
            // Nothing to precondition: if another replica created the route meanwhile,
            // the create fails with AlreadyExists (a conflict), and the wave decides
            // again from what is there.
            self.writes
                .send(
                    resource::HTTP_ROUTES,
                    verb::CREATE,
                    self.routes(namespace).create(
                        &PostParams {
                            field_manager: Some(FIELD_MANAGER.to_owned()),
                            ..PostParams::default()
                        },
                        &desired,
                    ),
                )
                .await
                .map_err(write_error(KIND, namespace, &name))?;
            return Ok(Written::Changed);
        };
        if !is_managed(&existing.metadata) {
            return Err(RoutingError::NotOwned {
                kind: KIND,
                namespace: namespace.to_owned(),
                name,
                label: MANAGED_BY_LABEL,
                value: MANAGED_BY,
            });
        }
        if is_settled(&existing, &desired) {
            return Ok(Written::Unchanged);
        }
        // On condition that the route is still the version just compared: a replica
        // that lost the Lease cannot overwrite its successor's route.
        let mut desired = desired;
        desired.metadata.resource_version = existing.metadata.resource_version.clone();
        let api = self.routes(namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.writes
            .send(
                resource::HTTP_ROUTES,
                verb::APPLY,
                api.patch(&name, &params, &Patch::Apply(&desired)),
            )
            .await
            .map_err(write_error(KIND, namespace, &name))?;
        Ok(Written::Changed)
    }

    /// Deletes `switchyard-<wave>` if Switchyard owns it. A read by name goes to etcd
    /// directly; a list would wait for the API server's watch cache to catch up, which
    /// costs about 100 ms on every rollback.
    async fn remove(&self, namespace: &str, wave: &str) -> Result<Written, RoutingError> {
        let read = self
            .routes(namespace)
            .get_metadata_opt(&route_name(wave))
            .await;
        self.remove_read(namespace, wave, read).await
    }
}

/// What reading a wave's route's metadata gave (`Api::get_metadata_opt`).
pub type RouteRead = Result<Option<PartialObjectMeta<HTTPRoute>>, kube::Error>;

impl GatewayRouter {
    /// [`Router::remove`] from a read of the route made earlier (the alert lane reads it
    /// beside the wave). The delete is on condition that the route is still that version,
    /// so an older read is refused with a conflict rather than deleting a newer route.
    pub async fn remove_read(
        &self,
        namespace: &str,
        wave: &str,
        read: RouteRead,
    ) -> Result<Written, RoutingError> {
        let api = self.routes(namespace);
        let name = route_name(wave);
        let found = match read {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(Written::Unchanged),
            // A bare 404 ("404 page not found", no Status): the cluster has no HTTPRoute
            // resource at all (the Gateway API is not installed), so there is no route.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Ok(Written::Unchanged);
            }
            Err(error) => return Err(api_error("read", namespace, &name)(error)),
        };
        let ours = is_managed(&found.metadata)
            && found
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(WAVE_LABEL))
                .is_some_and(|w| w == wave);
        if !ours {
            return Ok(Written::Unchanged);
        }
        // Exactly the route read: neither a new one of the same name, nor one changed
        // since (by a newer leader).
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: found.metadata.uid,
                resource_version: found.metadata.resource_version,
            }),
            ..DeleteParams::default()
        };
        match self
            .writes
            .send(
                resource::HTTP_ROUTES,
                verb::DELETE,
                api.delete(&name, &params),
            )
            .await
        {
            Ok(_) => Ok(Written::Changed),
            Err(error) if error.is_not_found() => Ok(Written::Unchanged),
            Err(error) => Err(write_error(KIND, namespace, &name)(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::HeaderMatch;

    fn service(name: &str, port: i32) -> ServiceRef {
        ServiceRef {
            name: name.to_owned(),
            port,
        }
    }

    fn wave_route() -> WaveRoute {
        WaveRoute {
            namespace: "crm".to_owned(),
            wave: "support-emea".to_owned(),
            wave_uid: "0b7c5a4e-0000-4000-8000-000000000001".to_owned(),
            plan: "crm-cutover".to_owned(),
            cohort: BTreeMap::from([
                ("team".to_owned(), "support".to_owned()),
                ("region".to_owned(), "emea".to_owned()),
            ]),
            cohort_headers: BTreeMap::from([
                ("x-crm-team".to_owned(), "support".to_owned()),
                ("x-crm-region".to_owned(), "emea".to_owned()),
            ]),
            legacy: service("crm-legacy", 8080),
            target: service("crm-next", 80),
            maintenance: Some(service("crm-maintenance", 8081)),
            legacy_access: Some(HeaderMatch {
                header: "x-switchyard-legacy".to_owned(),
                value: "true".to_owned(),
            }),
            router: RouterConfig::GatewayApi {
                parent_refs: vec![ParentRef {
                    name: "public".to_owned(),
                    namespace: Some("gateways".to_owned()),
                    section_name: Some("https".to_owned()),
                    port: None,
                }],
                hostnames: vec!["crm.example.com".to_owned()],
            },
        }
    }

    fn state(target_weight: u8, quiet: bool, legacy_override: bool) -> RoutingState {
        RoutingState {
            target_weight,
            quiet,
            legacy_override,
        }
    }

    fn rules(route: &WaveRoute, state: &RoutingState) -> Vec<HTTPRouteRule> {
        desired_route(route, state).unwrap().spec.rules
    }

    fn rule_names(rules: &[HTTPRouteRule]) -> Vec<&str> {
        rules.iter().map(|r| r.name.as_deref().unwrap()).collect()
    }

    fn backends(rule: &HTTPRouteRule) -> Vec<(&str, i32)> {
        rule.backend_refs
            .iter()
            .map(|b| (b.name.as_str(), b.weight))
            .collect()
    }

    #[test]
    fn the_route_is_named_after_the_wave() {
        assert_eq!(route_name("support-emea"), "switchyard-support-emea");
    }

    #[test]
    fn the_whole_route_at_weight_10_serialises_with_every_default_explicit() {
        let route = desired_route(&wave_route(), &state(10, false, false)).unwrap();
        let value = serde_json::to_value(&route).unwrap();
        assert_eq!(
            value,
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {
                    "name": "switchyard-support-emea",
                    "namespace": "crm",
                    "labels": {
                        "app.kubernetes.io/managed-by": "switchyard",
                        "switchyard.dev/plan": "crm-cutover",
                        "switchyard.dev/wave": "support-emea",
                    },
                    "ownerReferences": [{
                        "apiVersion": "switchyard.dev/v1alpha1",
                        "kind": "MigrationWave",
                        "name": "support-emea",
                        "uid": "0b7c5a4e-0000-4000-8000-000000000001",
                        "controller": true,
                        "blockOwnerDeletion": false,
                    }],
                },
                "spec": {
                    "parentRefs": [{
                        "group": "gateway.networking.k8s.io",
                        "kind": "Gateway",
                        "namespace": "gateways",
                        "name": "public",
                        "sectionName": "https",
                    }],
                    "hostnames": ["crm.example.com"],
                    "rules": [{
                        "name": "cohort",
                        "matches": [{
                            "path": {"type": "PathPrefix", "value": "/"},
                            "headers": [
                                {"type": "Exact", "name": "x-crm-region", "value": "emea"},
                                {"type": "Exact", "name": "x-crm-team", "value": "support"},
                            ],
                        }],
                        "backendRefs": [
                            {"group": "", "kind": "Service", "name": "crm-next", "port": 80, "weight": 10},
                            {"group": "", "kind": "Service", "name": "crm-legacy", "port": 8080, "weight": 90},
                        ],
                    }],
                },
            })
        );
        // And it reads back as itself.
        let back: HTTPRoute = serde_json::from_value(value).unwrap();
        assert_eq!(back, route);
    }

    #[test]
    fn weight_0_sends_the_cohort_only_to_legacy() {
        let rules = rules(&wave_route(), &state(0, false, false));
        assert_eq!(rule_names(&rules), ["cohort"]);
        assert_eq!(backends(&rules[0]), [("crm-legacy", 100)]);
    }

    #[test]
    fn weight_10_splits_the_cohort() {
        let rules = rules(&wave_route(), &state(10, false, false));
        assert_eq!(backends(&rules[0]), [("crm-next", 10), ("crm-legacy", 90)]);
    }

    #[test]
    fn weight_100_sends_the_cohort_only_to_the_target() {
        let rules = rules(&wave_route(), &state(100, false, false));
        assert_eq!(rule_names(&rules), ["cohort"]);
        assert_eq!(backends(&rules[0]), [("crm-next", 100)]);
    }

    #[test]
    fn a_weight_above_100_is_read_as_100() {
        let rules = rules(&wave_route(), &state(250, false, false));
        assert_eq!(backends(&rules[0]), [("crm-next", 100)]);
    }

    #[test]
    fn the_cohort_rule_matches_every_path_with_the_cohort_headers_in_name_order() {
        let rules = rules(&wave_route(), &state(50, false, false));
        assert_eq!(
            rules[0].matches,
            [HTTPRouteMatch {
                path: Some(HTTPPathMatch {
                    type_: PathMatchType::PathPrefix,
                    value: "/".to_owned(),
                }),
                headers: vec![
                    exact_header("x-crm-region", "emea"),
                    exact_header("x-crm-team", "support"),
                ],
                method: None,
            }]
        );
    }

    #[test]
    fn quiet_sends_the_cohorts_writes_to_maintenance() {
        let rules = rules(&wave_route(), &state(100, true, false));
        assert_eq!(rule_names(&rules), ["cohort", "quiet-writes"]);
        let quiet = &rules[1];
        assert_eq!(backends(quiet), [("crm-maintenance", 1)]);
        assert_eq!(quiet.backend_refs[0].port, 8081);
        let methods: Vec<_> = quiet.matches.iter().map(|m| m.method).collect();
        assert_eq!(
            methods,
            [
                Some(HTTPMethod::Post),
                Some(HTTPMethod::Put),
                Some(HTTPMethod::Patch),
                Some(HTTPMethod::Delete)
            ]
        );
        for m in &quiet.matches {
            assert_eq!(m.path, rules[0].matches[0].path);
            assert_eq!(m.headers, rules[0].matches[0].headers);
        }
        // Reads keep the cohort rule's split.
        assert_eq!(backends(&rules[0]), [("crm-next", 100)]);
        let json = serde_json::to_value(&quiet.matches[2]).unwrap();
        assert_eq!(json["method"], "PATCH");
    }

    #[test]
    fn without_quiet_there_is_no_quiet_rule() {
        let rules = rules(&wave_route(), &state(40, false, false));
        assert!(
            rules
                .iter()
                .all(|r| r.name.as_deref() != Some("quiet-writes"))
        );
    }

    #[test]
    fn quiet_without_a_maintenance_backend_is_an_error() {
        let mut route = wave_route();
        route.maintenance = None;
        let error = desired_route(&route, &state(10, true, false)).unwrap_err();
        assert!(
            matches!(error, RoutingError::MissingBackend("maintenance")),
            "{error:?}"
        );
        // Without quiet, the missing backend does not matter.
        desired_route(&route, &state(10, false, false)).unwrap();
    }

    #[test]
    fn the_override_keeps_reaching_legacy() {
        let rules = rules(&wave_route(), &state(100, false, true));
        assert_eq!(rule_names(&rules), ["cohort", "legacy-override"]);
        let override_rule = &rules[1];
        assert_eq!(backends(override_rule), [("crm-legacy", 1)]);
        assert_eq!(override_rule.matches.len(), 1);
        assert_eq!(
            override_rule.matches[0].headers,
            [
                exact_header("x-crm-region", "emea"),
                exact_header("x-crm-team", "support"),
                exact_header("x-switchyard-legacy", "true"),
            ]
        );
        assert_eq!(override_rule.matches[0].path, rules[0].matches[0].path);
        assert_eq!(override_rule.matches[0].method, None);
    }

    #[test]
    fn without_override_there_is_no_override_rule() {
        let rules = rules(&wave_route(), &state(100, false, false));
        assert_eq!(rule_names(&rules), ["cohort"]);
    }

    #[test]
    fn the_override_needs_the_plans_legacy_access_header() {
        let mut route = wave_route();
        route.legacy_access = None;
        let rules = rules(&route, &state(100, false, true));
        assert_eq!(rule_names(&rules), ["cohort"]);
    }

    #[test]
    fn an_override_header_that_is_a_cohort_header_is_refused_in_any_state() {
        let mut route = wave_route();
        route.legacy_access = Some(HeaderMatch {
            header: "X-CRM-Team".to_owned(),
            value: "legacy".to_owned(),
        });
        for state in [state(10, false, false), state(100, false, true)] {
            let error = desired_route(&route, &state).unwrap_err();
            assert!(
                matches!(&error, RoutingError::LegacyAccessClash { header } if header == "X-CRM-Team"),
                "{error:?}"
            );
        }
    }

    #[test]
    fn quiet_and_override_together_make_three_rules_in_order() {
        let rules = rules(&wave_route(), &state(100, true, true));
        assert_eq!(
            rule_names(&rules),
            ["cohort", "quiet-writes", "legacy-override"]
        );
    }

    #[test]
    fn parent_refs_keep_an_absent_namespace_absent() {
        let mut route = wave_route();
        route.router = RouterConfig::GatewayApi {
            parent_refs: vec![ParentRef {
                name: "internal".to_owned(),
                namespace: None,
                section_name: None,
                port: Some(8443),
            }],
            hostnames: vec![],
        };
        let spec = desired_route(&route, &state(10, false, false))
            .unwrap()
            .spec;
        assert_eq!(
            serde_json::to_value(&spec.parent_refs).unwrap(),
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "internal", "port": 8443}])
        );
        assert!(spec.hostnames.is_empty());
        assert!(
            serde_json::to_value(&spec)
                .unwrap()
                .get("hostnames")
                .is_none()
        );
    }

    #[test]
    fn a_configmap_plan_is_refused() {
        let mut route = wave_route();
        route.router = RouterConfig::ConfigMap {
            name: "table".to_owned(),
        };
        let error = desired_route(&route, &state(10, false, false)).unwrap_err();
        assert!(
            matches!(
                error,
                RoutingError::RouterMismatch {
                    expected: "gatewayAPI",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_stored_route_equal_to_the_desired_one_is_settled() {
        let desired = desired_route(&wave_route(), &state(10, true, true)).unwrap();
        let mut stored: DynamicObject =
            serde_json::from_value(serde_json::to_value(&desired).unwrap()).unwrap();
        stored.metadata.resource_version = Some("42".to_owned());
        stored
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".to_owned(), "crm".to_owned());
        stored.data["status"] = json!({"parents": []});
        assert!(is_settled(&stored, &desired));

        // An unmodelled field in the spec is a difference.
        let mut extra = stored.clone();
        extra.data["spec"]["rules"][0]["timeouts"] = json!({"request": "10s"});
        assert!(!is_settled(&extra, &desired));

        // So are a missing label and a different owner.
        let mut unlabelled = stored.clone();
        unlabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(PLAN_LABEL);
        assert!(!is_settled(&unlabelled, &desired));
        let mut other_owner = stored.clone();
        other_owner.metadata.owner_references.as_mut().unwrap()[0].uid = "other".to_owned();
        assert!(!is_settled(&other_owner, &desired));
    }
}
