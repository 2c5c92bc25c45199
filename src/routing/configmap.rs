//! ConfigMap router: a JSON routing table, for applications that route in code.
//!
//! Each plan has one ConfigMap (named in the plan's `routing.configMap.name`) labelled
//! [`ROUTING_TABLE_LABEL`]` = "true"`. Each wave owns one key of its `data`: the wave's
//! name, whose value is a [`RoutingTableEntry`] as JSON. The application reads the table
//! and routes a request of a cohort as its entry says.
//!
//! # One field manager per wave
//!
//! Everywhere else Switchyard writes under the single field manager
//! [`FIELD_MANAGER`](super::FIELD_MANAGER). Here it cannot: several waves of a plan run
//! at once and share the ConfigMap. With server-side apply, an apply *replaces* the set
//! of fields its manager owns, so one shared manager applying `{data: {wave-a: …}}`
//! would delete `wave-b`'s key, and a read-modify-write of the whole map would lose
//! updates when two waves write together.
//!
//! So each wave writes under its own manager, [`field_manager`]`(wave)` =
//! `switchyard-wave-<wave>`, and applies only its own key (plus the shared labels).
//! The API server merges the keys of the different managers, so concurrent waves never
//! overwrite each other. Each write still carries the resourceVersion of the table it
//! was decided from (fencing, see [`crate::writes`]), so two waves writing at once may
//! conflict; the one refused reads the table again and re-applies its own key. The labels
//! are applied with equal values by every wave, so they are co-owned.
//!
//! Removing a wave's entry is an apply of the same labels and *no* data by that wave's
//! manager: the API server deletes the fields the manager no longer applies and no other
//! manager owns (its key), and keeps the co-owned labels and the other waves' keys. If
//! someone else has since taken the key over (`kubectl edit`, say), that apply leaves
//! it, and the router removes the key with a merge patch that sets only that key to null.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    MANAGED_BY, MANAGED_BY_LABEL, PLAN_LABEL, Router, RouterConfig, RoutingError, RoutingState,
    WaveRoute, Written, check_legacy_access, write_error,
};
use crate::api::{HeaderMatch, ServiceRef};
use crate::writes::{Writes, precondition, resource, verb};

/// The kind, for errors.
const KIND: &str = "ConfigMap";
/// Label: set to `"true"` on every routing table ConfigMap.
pub const ROUTING_TABLE_LABEL: &str = "switchyard.dev/routing-table";

/// The field manager a wave writes its routing table key under.
pub fn field_manager(wave: &str) -> String {
    format!("switchyard-wave-{wave}")
}

/// One wave's entry in the routing table: how to route the requests of its cohort.
///
/// A request belongs to the cohort when it carries every header of `headers` with
/// exactly that value. Such a request goes:
/// - to `legacy` when `legacyOverride` is true and it carries `legacyAccessHeader`;
/// - else to `maintenance` when `quiet` is true and its method is POST, PUT, PATCH or
///   DELETE;
/// - else to `target` with probability `targetWeight`/100, and to `legacy` otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingTableEntry {
    /// The cohort: cohort key to value, e.g. `team: support`.
    pub cohort: BTreeMap<String, String>,
    /// The request headers that identify the cohort: header name to exact value.
    pub headers: BTreeMap<String, String>,
    /// Percent (0-100) of the cohort's requests that go to the target.
    pub target_weight: u8,
    /// The cohort's writes (POST, PUT, PATCH, DELETE) go to `maintenance`.
    pub quiet: bool,
    /// Requests carrying `legacyAccessHeader` go to legacy. Only true when the plan
    /// defines the header.
    pub legacy_override: bool,
    /// The header and value of the legacy override; absent when the plan has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_access_header: Option<HeaderMatch>,
    /// The Service the cohort moves to.
    pub target: ServiceRef,
    /// The Service the cohort moves from.
    pub legacy: ServiceRef,
    /// The Service that answers writes during quiet steps; absent when the plan has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<ServiceRef>,
}

impl RoutingTableEntry {
    /// The entry for the wave's cohort in `state`. Pure.
    ///
    /// Fails with [`RoutingError::MissingBackend`] when the state is quiet and the plan
    /// has no maintenance backend, and with [`RoutingError::LegacyAccessClash`] when the
    /// plan's legacy-access header is a cohort header.
    pub fn new(route: &WaveRoute, state: &RoutingState) -> Result<Self, RoutingError> {
        check_legacy_access(route)?;
        if state.quiet && route.maintenance.is_none() {
            return Err(RoutingError::MissingBackend("maintenance"));
        }
        Ok(Self {
            cohort: route.cohort.clone(),
            headers: route.cohort_headers.clone(),
            target_weight: state.target_weight.min(100),
            quiet: state.quiet,
            legacy_override: state.legacy_override && route.legacy_access.is_some(),
            legacy_access_header: route.legacy_access.clone(),
            target: route.target.clone(),
            legacy: route.legacy.clone(),
            maintenance: route.maintenance.clone(),
        })
    }

    /// The entry as it is stored in the ConfigMap.
    pub fn to_json(&self, wave: &str) -> Result<String, RoutingError> {
        serde_json::to_string(self).map_err(|source| RoutingError::Table {
            wave: wave.to_owned(),
            source,
        })
    }

    /// Reads an entry as stored in the ConfigMap.
    pub fn from_json(wave: &str, json: &str) -> Result<Self, RoutingError> {
        serde_json::from_str(json).map_err(|source| RoutingError::Table {
            wave: wave.to_owned(),
            source,
        })
    }
}

/// The labels of a routing table ConfigMap.
fn table_labels(plan: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (PLAN_LABEL.to_owned(), plan.to_owned()),
        (ROUTING_TABLE_LABEL.to_owned(), "true".to_owned()),
    ])
}

fn has_labels(config_map: &ConfigMap, wanted: &BTreeMap<String, String>) -> bool {
    let labels = config_map.metadata.labels.as_ref();
    wanted
        .iter()
        .all(|(key, value)| labels.and_then(|labels| labels.get(key)) == Some(value))
}

/// Refuses to take over an existing ConfigMap that is not a routing table of
/// Switchyard's: it must carry both [`MANAGED_BY_LABEL`] and [`ROUTING_TABLE_LABEL`].
/// Adding them would take over whatever the ConfigMap holds for someone else, and the
/// admission policy `switchyard-operator-writes-only-routing-tables` refuses the
/// operator any write of a ConfigMap that did not carry the routing-table label before.
fn check_owned(existing: &ConfigMap, namespace: &str, name: &str) -> Result<(), RoutingError> {
    for (label, value) in [
        (MANAGED_BY_LABEL, MANAGED_BY),
        (ROUTING_TABLE_LABEL, "true"),
    ] {
        if !has_labels(
            existing,
            &BTreeMap::from([(label.to_owned(), value.to_owned())]),
        ) {
            return Err(RoutingError::NotOwned {
                kind: KIND,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                label,
                value,
            });
        }
    }
    Ok(())
}

/// The server-side apply intent of `wave`'s manager: the labels and, if given, its key.
fn apply_intent(
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    entry: Option<(&str, &str)>,
) -> serde_json::Value {
    let mut intent = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "namespace": namespace, "labels": labels },
    });
    if let Some((key, value)) = entry {
        intent["data"] = json!({ key: value });
    }
    intent
}

/// The name of the plan's routing table, or an error when the plan uses another router.
fn table_name(route: &WaveRoute) -> Result<&str, RoutingError> {
    match &route.router {
        RouterConfig::ConfigMap { name } => Ok(name),
        RouterConfig::GatewayApi { .. } => Err(RoutingError::RouterMismatch {
            wave: route.wave.clone(),
            expected: "configMap",
        }),
    }
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

/// Routes cohorts through a routing table ConfigMap per plan.
#[derive(Clone)]
pub struct ConfigMapRouter {
    /// The client the router reads and writes ConfigMaps with.
    pub client: Client,
    /// How it writes: within the leader's term, with a timeout.
    pub writes: Writes,
}

impl ConfigMapRouter {
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

    fn config_maps(&self, namespace: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Removes `wave`'s key from one table that holds it.
    /// Removes `wave`'s key from the named table, when the plan (and so the table) is
    /// known. A read by name goes to etcd directly, where a list would wait for the API
    /// server's watch cache to catch up (about 100 ms).
    pub async fn remove_from_table(
        &self,
        namespace: &str,
        table: &str,
        wave: &str,
    ) -> Result<Written, RoutingError> {
        let api = self.config_maps(namespace);
        let Some(found) = api
            .get_opt(table)
            .await
            .map_err(api_error("read", namespace, table))?
        else {
            return Ok(Written::Unchanged);
        };
        // Not Switchyard's table: its keys are not Switchyard's to remove.
        let managed = check_owned(&found, namespace, table).is_ok();
        let holds_key = found.data.as_ref().is_some_and(|d| d.contains_key(wave));
        if !managed || !holds_key {
            return Ok(Written::Unchanged);
        }
        self.remove_key(namespace, &found, wave).await?;
        Ok(Written::Changed)
    }

    async fn remove_key(
        &self,
        namespace: &str,
        table: &ConfigMap,
        wave: &str,
    ) -> Result<(), RoutingError> {
        let api = self.config_maps(namespace);
        let name = table.metadata.name.clone().unwrap_or_default();
        // Keep applying the table's own labels (ours, as it carries them), so that they
        // stay co-owned and survive this apply.
        let labels: BTreeMap<String, String> = table
            .metadata
            .labels
            .iter()
            .flatten()
            .filter(|(key, _)| {
                [MANAGED_BY_LABEL, PLAN_LABEL, ROUTING_TABLE_LABEL].contains(&key.as_str())
            })
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        // On condition that the table is still the version read; so are the writes below.
        let mut intent = apply_intent(&name, namespace, &labels, None);
        precondition(&mut intent, table.metadata.resource_version.clone());
        let params = PatchParams::apply(&field_manager(wave)).force();
        let after = self
            .writes
            .send(
                resource::CONFIG_MAPS,
                verb::APPLY,
                api.patch(&name, &params, &Patch::Apply(&intent)),
            )
            .await
            .map_err(write_error(KIND, namespace, &name))?;
        let still_there = after
            .data
            .as_ref()
            .is_some_and(|data| data.contains_key(wave));
        if still_there {
            // Another manager owns the key now. A merge patch with a null value removes
            // exactly that key and touches nothing else.
            let mut patch = json!({ "data": { wave: null } });
            precondition(&mut patch, after.metadata.resource_version.clone());
            let params = PatchParams {
                field_manager: Some(field_manager(wave)),
                ..PatchParams::default()
            };
            self.writes
                .send(
                    resource::CONFIG_MAPS,
                    verb::PATCH,
                    api.patch(&name, &params, &Patch::Merge(&patch)),
                )
                .await
                .map_err(write_error(KIND, namespace, &name))?;
        }
        Ok(())
    }
}

impl Router for ConfigMapRouter {
    async fn apply(
        &self,
        route: &WaveRoute,
        state: &RoutingState,
    ) -> Result<Written, RoutingError> {
        let name = table_name(route)?;
        let namespace = route.namespace.as_str();
        let wave = route.wave.as_str();
        let entry = RoutingTableEntry::new(route, state)?;
        let labels = table_labels(&route.plan);

        let api = self.config_maps(namespace);
        let existing = api
            .get_opt(name)
            .await
            .map_err(api_error("get", namespace, name))?;
        let json = entry.to_json(wave)?;
        let mut intent = apply_intent(name, namespace, &labels, Some((wave, &json)));
        let Some(existing) = existing else {
            // Nothing to precondition: if another replica created the table meanwhile,
            // the create fails with AlreadyExists, and the wave decides again.
            let table: ConfigMap =
                serde_json::from_value(intent).map_err(|source| RoutingError::Table {
                    wave: wave.to_owned(),
                    source,
                })?;
            let params = PostParams {
                field_manager: Some(field_manager(wave)),
                ..PostParams::default()
            };
            self.writes
                .send(
                    resource::CONFIG_MAPS,
                    verb::CREATE,
                    api.create(&params, &table),
                )
                .await
                .map_err(write_error(KIND, namespace, name))?;
            return Ok(Written::Changed);
        };
        check_owned(&existing, namespace, name)?;
        // An entry that does not parse is rewritten, not reported.
        let stored = existing
            .data
            .as_ref()
            .and_then(|data| data.get(wave))
            .and_then(|json| RoutingTableEntry::from_json(wave, json).ok());
        if stored.as_ref() == Some(&entry) && has_labels(&existing, &labels) {
            return Ok(Written::Unchanged);
        }
        // On condition that the table is the version just compared. Waves sharing the
        // table may then conflict with one another; the loser decides again at once.
        precondition(&mut intent, existing.metadata.resource_version.clone());
        let params = PatchParams::apply(&field_manager(wave)).force();
        self.writes
            .send(
                resource::CONFIG_MAPS,
                verb::APPLY,
                api.patch(name, &params, &Patch::Apply(&intent)),
            )
            .await
            .map_err(write_error(KIND, namespace, name))?;
        Ok(Written::Changed)
    }

    async fn remove(&self, namespace: &str, wave: &str) -> Result<Written, RoutingError> {
        let api = self.config_maps(namespace);
        let selector = format!("{ROUTING_TABLE_LABEL}=true,{MANAGED_BY_LABEL}={MANAGED_BY}");
        let tables = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_error("list", namespace, "(routing tables)"))?;
        let mut written = Written::Unchanged;
        for table in &tables.items {
            let holds_key = table
                .data
                .as_ref()
                .is_some_and(|data| data.contains_key(wave));
            if holds_key {
                self.remove_key(namespace, table, wave).await?;
                written = Written::Changed;
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn service(name: &str, port: i32) -> ServiceRef {
        ServiceRef {
            name: name.to_owned(),
            port,
        }
    }

    fn wave_route() -> WaveRoute {
        WaveRoute {
            namespace: "crm".to_owned(),
            wave: "support".to_owned(),
            wave_uid: "uid-1".to_owned(),
            plan: "crm-cutover".to_owned(),
            cohort: BTreeMap::from([("team".to_owned(), "support".to_owned())]),
            cohort_headers: BTreeMap::from([("x-crm-team".to_owned(), "support".to_owned())]),
            legacy: service("crm-legacy", 8080),
            target: service("crm-next", 80),
            maintenance: Some(service("crm-maintenance", 8081)),
            legacy_access: Some(HeaderMatch {
                header: "x-switchyard-legacy".to_owned(),
                value: "true".to_owned(),
            }),
            router: RouterConfig::ConfigMap {
                name: "crm-routing".to_owned(),
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

    #[test]
    fn each_wave_has_its_own_field_manager() {
        assert_eq!(field_manager("support"), "switchyard-wave-support");
        assert_ne!(field_manager("a"), field_manager("b"));
    }

    #[test]
    fn the_entry_has_the_documented_json_shape() {
        let entry = RoutingTableEntry::new(&wave_route(), &state(10, false, true)).unwrap();
        let json: Value = serde_json::from_str(&entry.to_json("support").unwrap()).unwrap();
        assert_eq!(
            json,
            json!({
                "cohort": {"team": "support"},
                "headers": {"x-crm-team": "support"},
                "targetWeight": 10,
                "quiet": false,
                "legacyOverride": true,
                "legacyAccessHeader": {"header": "x-switchyard-legacy", "value": "true"},
                "target": {"name": "crm-next", "port": 80},
                "legacy": {"name": "crm-legacy", "port": 8080},
                "maintenance": {"name": "crm-maintenance", "port": 8081},
            })
        );
    }

    #[test]
    fn optional_backends_and_headers_are_absent_not_null() {
        let mut route = wave_route();
        route.maintenance = None;
        route.legacy_access = None;
        let entry = RoutingTableEntry::new(&route, &state(100, false, true)).unwrap();
        let json: Value = serde_json::from_str(&entry.to_json("support").unwrap()).unwrap();
        let object = json.as_object().unwrap();
        assert!(!object.contains_key("maintenance"));
        assert!(!object.contains_key("legacyAccessHeader"));
        // Without the header there is no override to honour.
        assert_eq!(json["legacyOverride"], false);
    }

    #[test]
    fn the_json_is_stable_and_reads_back_as_the_entry() {
        let entry = RoutingTableEntry::new(&wave_route(), &state(55, true, false)).unwrap();
        let first = entry.to_json("support").unwrap();
        assert_eq!(first, entry.to_json("support").unwrap());
        assert_eq!(
            RoutingTableEntry::from_json("support", &first).unwrap(),
            entry
        );
    }

    #[test]
    fn quiet_without_a_maintenance_backend_is_an_error() {
        let mut route = wave_route();
        route.maintenance = None;
        let error = RoutingTableEntry::new(&route, &state(10, true, false)).unwrap_err();
        assert!(
            matches!(error, RoutingError::MissingBackend("maintenance")),
            "{error:?}"
        );
    }

    #[test]
    fn an_unreadable_entry_is_a_table_error() {
        let error = RoutingTableEntry::from_json("support", "{not json").unwrap_err();
        assert!(matches!(error, RoutingError::Table { ref wave, .. } if wave == "support"));
    }

    #[test]
    fn an_override_header_that_is_a_cohort_header_is_refused() {
        let mut route = wave_route();
        route.legacy_access = Some(HeaderMatch {
            header: "x-crm-team".to_owned(),
            value: "legacy".to_owned(),
        });
        let error = RoutingTableEntry::new(&route, &state(10, false, false)).unwrap_err();
        assert!(
            matches!(error, RoutingError::LegacyAccessClash { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn weights_above_100_are_read_as_100() {
        let entry = RoutingTableEntry::new(&wave_route(), &state(200, false, false)).unwrap();
        assert_eq!(entry.target_weight, 100);
    }

    #[test]
    fn the_apply_intent_holds_the_labels_and_only_the_waves_key() {
        let labels = table_labels("crm-cutover");
        let intent = apply_intent("crm-routing", "crm", &labels, Some(("support", "{}")));
        assert_eq!(
            intent,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "crm-routing",
                    "namespace": "crm",
                    "labels": {
                        "app.kubernetes.io/managed-by": "switchyard",
                        "switchyard.dev/plan": "crm-cutover",
                        "switchyard.dev/routing-table": "true",
                    },
                },
                "data": {"support": "{}"},
            })
        );
        let removal = apply_intent("crm-routing", "crm", &labels, None);
        assert!(removal.get("data").is_none());
        assert_eq!(removal["metadata"], intent["metadata"]);
    }

    #[test]
    fn only_a_table_with_both_labels_is_taken_over() {
        let table = |labels: &[(&str, &str)]| ConfigMap {
            metadata: kube::api::ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..ConfigMap::default()
        };
        assert!(check_owned(&table(&[]), "crm", "t").is_err());
        let error = check_owned(&table(&[(MANAGED_BY_LABEL, MANAGED_BY)]), "crm", "t").unwrap_err();
        assert!(
            matches!(
                error,
                RoutingError::NotOwned {
                    label: ROUTING_TABLE_LABEL,
                    value: "true",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("lacks the label switchyard.dev/routing-table=true")
        );
        check_owned(
            &table(&[
                (MANAGED_BY_LABEL, MANAGED_BY),
                (ROUTING_TABLE_LABEL, "true"),
            ]),
            "crm",
            "t",
        )
        .unwrap();
    }

    #[test]
    fn the_table_is_the_one_the_plan_names() {
        assert_eq!(table_name(&wave_route()).unwrap(), "crm-routing");
    }

    #[test]
    fn a_gateway_plan_is_refused() {
        let mut route = wave_route();
        route.router = RouterConfig::GatewayApi {
            parent_refs: vec![],
            hostnames: vec![],
        };
        let error = table_name(&route).unwrap_err();
        assert!(
            matches!(
                error,
                RoutingError::RouterMismatch {
                    expected: "configMap",
                    ..
                }
            ),
            "{error:?}"
        );
    }
}
