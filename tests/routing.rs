//! The routers against a real kube-apiserver: the Gateway API router's HTTPRoutes (with
//! the Gateway API CRDs' defaulting and validation) and the ConfigMap router's shared
//! routing table under concurrent waves.

mod common;

use std::collections::BTreeMap;

use common::{admin_in_fresh_namespace, dynamic_api};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use switchyard::api::{HeaderMatch, ParentRef, ServiceRef};
use switchyard::routing::configmap::{ROUTING_TABLE_LABEL, field_manager};
use switchyard::routing::gateway::{HTTPRouteSpec, desired_route, route_name};
use switchyard::routing::{
    ConfigMapRouter, GatewayRouter, HTTPRoute, MANAGED_BY_LABEL, PLAN_LABEL, Router, RouterConfig,
    RoutingError, RoutingState, RoutingTableEntry, WAVE_LABEL, WaveRoute, Written,
};

const PLAN: &str = "crm";
const TABLE: &str = "crm-routing";

fn service(name: &str, port: i32) -> ServiceRef {
    ServiceRef {
        name: name.to_owned(),
        port,
    }
}

/// A wave of plan `crm` whose cohort is `team = <team>`.
fn wave_route(namespace: &str, wave: &str, team: &str, router: RouterConfig) -> WaveRoute {
    WaveRoute {
        namespace: namespace.to_owned(),
        wave: wave.to_owned(),
        // The API server takes any non-empty string as an owner's UID, and no garbage
        // collector runs here, so the wave object need not exist.
        wave_uid: format!("uid-of-{wave}"),
        plan: PLAN.to_owned(),
        cohort: BTreeMap::from([("team".to_owned(), team.to_owned())]),
        cohort_headers: BTreeMap::from([("x-crm-team".to_owned(), team.to_owned())]),
        legacy: service("crm-legacy", 8080),
        target: service("crm-next", 80),
        maintenance: Some(service("crm-maintenance", 8081)),
        legacy_access: Some(HeaderMatch {
            header: "x-switchyard-legacy".to_owned(),
            value: "true".to_owned(),
        }),
        router,
    }
}

fn gateway_wave(namespace: &str, wave: &str, team: &str) -> WaveRoute {
    wave_route(
        namespace,
        wave,
        team,
        RouterConfig::GatewayApi {
            parent_refs: vec![
                ParentRef {
                    name: "public".to_owned(),
                    namespace: None,
                    section_name: Some("https".to_owned()),
                    port: None,
                },
                ParentRef {
                    name: "internal".to_owned(),
                    namespace: Some("gateways".to_owned()),
                    section_name: None,
                    port: Some(8443),
                },
            ],
            hostnames: vec!["crm.example.com".to_owned()],
        },
    )
}

fn table_wave(namespace: &str, wave: &str, team: &str) -> WaveRoute {
    wave_route(
        namespace,
        wave,
        team,
        RouterConfig::ConfigMap {
            name: TABLE.to_owned(),
        },
    )
}

fn state(target_weight: u8, quiet: bool, legacy_override: bool) -> RoutingState {
    RoutingState {
        target_weight,
        quiet,
        legacy_override,
    }
}

fn rule_names(spec: &HTTPRouteSpec) -> Vec<String> {
    spec.rules
        .iter()
        .map(|rule| rule.name.clone().unwrap_or_default())
        .collect()
}

async fn resource_version<K>(api: &Api<K>, name: &str) -> String
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get(name)
        .await
        .unwrap()
        .meta()
        .resource_version
        .clone()
        .unwrap()
}

fn routes(client: &Client, namespace: &str) -> Api<HTTPRoute> {
    Api::namespaced(client.clone(), namespace)
}

#[tokio::test]
async fn the_route_follows_the_state_and_is_written_only_when_it_differs() {
    let (client, ns) = admin_in_fresh_namespace("route-lifecycle").await;
    let router = GatewayRouter::new(client.clone());
    let routes = routes(&client, &ns);
    let wave = gateway_wave(&ns, "support", "support");
    let name = route_name("support");

    // Weight 10: created, with the cohort split.
    assert_eq!(
        router.apply(&wave, &state(10, false, false)).await.unwrap(),
        Written::Changed
    );
    let stored = routes.get(&name).await.unwrap();
    let desired = desired_route(&wave, &state(10, false, false)).unwrap();
    assert_eq!(
        stored.spec, desired.spec,
        "the API server defaulted nothing"
    );
    assert_eq!(rule_names(&stored.spec), ["cohort"]);
    let split: Vec<_> = stored.spec.rules[0]
        .backend_refs
        .iter()
        .map(|b| (b.name.as_str(), b.weight))
        .collect();
    assert_eq!(split, [("crm-next", 10), ("crm-legacy", 90)]);
    let labels = stored.metadata.labels.clone().unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], "switchyard");
    assert_eq!(labels[WAVE_LABEL], "support");
    assert_eq!(labels[PLAN_LABEL], PLAN);
    let owner = &stored.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("MigrationWave", "support", "uid-of-support")
    );
    assert_eq!(owner.api_version, "switchyard.dev/v1alpha1");
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(false))
    );

    // The same state again: no write at all.
    let before = resource_version(&routes, &name).await;
    assert_eq!(
        router.apply(&wave, &state(10, false, false)).await.unwrap(),
        Written::Unchanged
    );
    assert_eq!(resource_version(&routes, &name).await, before);

    // Quiet: the writes rule appears.
    assert_eq!(
        router.apply(&wave, &state(10, true, false)).await.unwrap(),
        Written::Changed
    );
    let stored = routes.get(&name).await.unwrap();
    assert_eq!(rule_names(&stored.spec), ["cohort", "quiet-writes"]);
    assert_eq!(stored.spec.rules[1].matches.len(), 4);
    assert_eq!(stored.spec.rules[1].backend_refs[0].name, "crm-maintenance");
    assert_eq!(
        stored.spec,
        desired_route(&wave, &state(10, true, false)).unwrap().spec
    );

    // Remove: gone; a second remove has nothing to do.
    assert_eq!(
        router.remove(&ns, "support").await.unwrap(),
        Written::Changed
    );
    assert!(routes.get_opt(&name).await.unwrap().is_none());
    assert_eq!(
        router.remove(&ns, "support").await.unwrap(),
        Written::Unchanged
    );
}

#[tokio::test]
async fn every_routing_state_is_accepted_and_reads_back_as_written() {
    let (client, ns) = admin_in_fresh_namespace("route-states").await;
    let router = GatewayRouter::new(client.clone());
    let routes = routes(&client, &ns);
    let wave = gateway_wave(&ns, "support", "support");
    let name = route_name("support");
    let states = [
        state(0, false, false),
        state(10, false, false),
        state(50, true, false),
        state(100, false, false),
        state(100, true, false),
        state(100, false, true),
        state(100, true, true),
        state(0, false, false),
    ];
    for state in states {
        assert_eq!(
            router.apply(&wave, &state).await.unwrap(),
            Written::Changed,
            "{state:?}"
        );
        let stored = routes.get(&name).await.unwrap();
        assert_eq!(
            stored.spec,
            desired_route(&wave, &state).unwrap().spec,
            "{state:?}: the stored route differs from the applied one"
        );
        let version = stored.metadata.resource_version.clone();
        assert_eq!(
            router.apply(&wave, &state).await.unwrap(),
            Written::Unchanged,
            "{state:?}"
        );
        assert_eq!(
            resource_version(&routes, &name).await,
            version.unwrap(),
            "{state:?}"
        );
    }
    router.remove(&ns, "support").await.unwrap();
}

#[tokio::test]
async fn a_route_switchyard_does_not_own_is_left_alone() {
    let (client, ns) = admin_in_fresh_namespace("route-foreign").await;
    let router = GatewayRouter::new(client.clone());
    let routes = routes(&client, &ns);
    let name = route_name("support");
    // Written as a user would, relying on the CRD's defaults. It even carries the
    // wave's label, but not Switchyard's managed-by label.
    let foreign: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": name,
            "labels": {WAVE_LABEL: "support", MANAGED_BY_LABEL: "someone-else"},
        },
        "spec": {
            "parentRefs": [{"name": "someone-elses-gateway"}],
            "rules": [{"backendRefs": [{"name": "their-service", "port": 80}]}],
        },
    }))
    .unwrap();
    dynamic_api::<HTTPRoute>(client.clone(), &ns)
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let before = routes.get(&name).await.unwrap();

    let wave = gateway_wave(&ns, "support", "support");
    let error = router
        .apply(&wave, &state(10, false, false))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RoutingError::NotOwned { kind: "HTTPRoute", name: n, .. } if *n == name),
        "{error:?}"
    );
    assert!(error.to_string().contains("not managed by Switchyard"));
    assert_eq!(
        router.remove(&ns, "support").await.unwrap(),
        Written::Unchanged
    );

    let after = routes.get(&name).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.spec, before.spec);
}

/// The target weight of the cohort rule of a stored route.
fn target_weight(route: &HTTPRoute) -> Option<i32> {
    route.spec.rules[0]
        .backend_refs
        .iter()
        .find(|backend| backend.name == "crm-next")
        .map(|backend| backend.weight)
}

fn is_conflict(error: &RoutingError) -> bool {
    matches!(error, RoutingError::Write { source, .. } if source.is_conflict())
}

/// The alert lane reads a wave's route beside the wave and deletes it later from that
/// read. A route changed since, or deleted and made again under the same name, is
/// refused with a conflict (on which the lane decides again from fresh reads), and is
/// never deleted on the strength of the older read.
#[tokio::test]
async fn a_removal_from_an_older_read_is_refused_and_one_from_a_fresh_read_deletes() {
    let (client, ns) = admin_in_fresh_namespace("route-stale-read").await;
    let router = GatewayRouter::new(client.clone());
    let routes = routes(&client, &ns);
    let wave = gateway_wave(&ns, "support", "support");
    let name = route_name("support");
    router.apply(&wave, &state(10, false, false)).await.unwrap();

    // Changed since the read (a newer leader moved the weight on).
    let older = routes.get_metadata_opt(&name).await;
    router.apply(&wave, &state(50, false, false)).await.unwrap();
    let error = router.remove_read(&ns, "support", older).await.unwrap_err();
    assert!(is_conflict(&error), "{error:?}");
    let kept = routes.get(&name).await.unwrap();
    assert_eq!(target_weight(&kept), Some(50), "the newer route stays");

    // Replaced since the read: same name, another object.
    let older = routes.get_metadata_opt(&name).await;
    routes.delete(&name, &Default::default()).await.unwrap();
    router.apply(&wave, &state(50, false, false)).await.unwrap();
    let replaced = routes.get(&name).await.unwrap();
    assert_ne!(replaced.metadata.uid, kept.metadata.uid);
    let error = router.remove_read(&ns, "support", older).await.unwrap_err();
    assert!(is_conflict(&error), "{error:?}");
    assert_eq!(
        routes.get(&name).await.unwrap().metadata.uid,
        replaced.metadata.uid,
        "the new route stays"
    );

    // Read afresh: deleted. Read when there was none: nothing to do.
    let fresh = routes.get_metadata_opt(&name).await;
    assert_eq!(
        router.remove_read(&ns, "support", fresh).await.unwrap(),
        Written::Changed
    );
    assert!(routes.get_opt(&name).await.unwrap().is_none());
    let none = routes.get_metadata_opt(&name).await;
    assert_eq!(
        router.remove_read(&ns, "support", none).await.unwrap(),
        Written::Unchanged
    );
}

#[tokio::test]
async fn waves_of_one_plan_never_touch_each_others_routes() {
    let (client, ns) = admin_in_fresh_namespace("route-two-waves").await;
    let router = GatewayRouter::new(client.clone());
    let routes = routes(&client, &ns);
    let support = gateway_wave(&ns, "support", "support");
    let sales = gateway_wave(&ns, "sales", "sales");

    router
        .apply(&support, &state(10, false, false))
        .await
        .unwrap();
    router
        .apply(&sales, &state(30, false, false))
        .await
        .unwrap();
    let sales_route = routes.get(&route_name("sales")).await.unwrap();
    assert_eq!(
        sales_route.spec.rules[0].matches[0].headers[0].value,
        "sales"
    );
    let support_route = routes.get(&route_name("support")).await.unwrap();
    assert_eq!(
        support_route.spec.rules[0].matches[0].headers[0].value,
        "support"
    );
    let sales_version = sales_route.metadata.resource_version.unwrap();

    // Moving one wave leaves the other's route as it was.
    assert_eq!(
        router
            .apply(&support, &state(50, true, false))
            .await
            .unwrap(),
        Written::Changed
    );
    assert_eq!(
        resource_version(&routes, &route_name("sales")).await,
        sales_version
    );

    // So does removing it.
    assert_eq!(
        router.remove(&ns, "support").await.unwrap(),
        Written::Changed
    );
    assert!(
        routes
            .get_opt(&route_name("support"))
            .await
            .unwrap()
            .is_none()
    );
    let sales_after = routes.get(&route_name("sales")).await.unwrap();
    assert_eq!(
        sales_after.metadata.resource_version.unwrap(),
        sales_version
    );
    assert_eq!(
        router
            .apply(&sales, &state(30, false, false))
            .await
            .unwrap(),
        Written::Unchanged
    );
}

fn entry_in(table: &ConfigMap, wave: &str) -> Option<RoutingTableEntry> {
    let json = table.data.as_ref()?.get(wave)?;
    Some(RoutingTableEntry::from_json(wave, json).unwrap())
}

fn table_keys(table: &ConfigMap) -> Vec<String> {
    table
        .data
        .iter()
        .flat_map(|data| data.keys().cloned())
        .collect()
}

fn managers(table: &ConfigMap) -> Vec<String> {
    table
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|entry| entry.manager.clone())
        .collect()
}

/// Whether `manager` owns `data.<key>` of `table`, per its managed fields.
fn owns_key(table: &ConfigMap, manager: &str, key: &str) -> bool {
    table
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some(manager))
        .any(|entry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|fields| fields.0.pointer(&format!("/f:data/f:{key}")))
                .is_some()
        })
}

/// Applies `state` as the wave controller does: a write refused because the table
/// changed since it was read (each write is preconditioned on the version read) is
/// decided again from a fresh read. Returns how many times it was refused.
async fn apply_deciding_again(
    router: &ConfigMapRouter,
    wave: &WaveRoute,
    state: &RoutingState,
) -> u32 {
    let mut conflicts = 0;
    loop {
        match router.apply(wave, state).await {
            Ok(written) => {
                assert_eq!(written, Written::Changed);
                return conflicts;
            }
            Err(RoutingError::Write { source, .. }) if source.is_conflict() && conflicts < 20 => {
                conflicts += 1;
            }
            Err(err) => panic!("{err}"),
        }
    }
}

#[tokio::test]
async fn concurrent_waves_share_the_routing_table_without_losing_updates() {
    let (client, ns) = admin_in_fresh_namespace("table-concurrent").await;
    let router = ConfigMapRouter::new(client.clone());
    let tables: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let support = table_wave(&ns, "support", "support");
    let sales = table_wave(&ns, "sales", "sales");

    // The first round creates the ConfigMap from two concurrent writes.
    let mut last = (state(0, false, false), state(0, false, false));
    let mut conflicts = 0;
    for round in 0..10u8 {
        let support_state = state(round * 10 + 5, round % 3 == 0, false);
        let sales_state = state(95 - round * 10, false, round % 2 == 0);
        last = (support_state, sales_state);
        let (a, b) = tokio::join!(
            apply_deciding_again(&router, &support, &support_state),
            apply_deciding_again(&router, &sales, &sales_state)
        );
        conflicts += a + b;
        let table = tables.get(TABLE).await.unwrap();
        assert_eq!(
            entry_in(&table, "support"),
            Some(RoutingTableEntry::new(&support, &support_state).unwrap()),
            "round {round}: the support entry was lost or is stale"
        );
        assert_eq!(
            entry_in(&table, "sales"),
            Some(RoutingTableEntry::new(&sales, &sales_state).unwrap()),
            "round {round}: the sales entry was lost or is stale"
        );
    }

    println!("{conflicts} writes of 20 were refused as concurrent and decided again");
    let table = tables.get(TABLE).await.unwrap();
    let labels = table.metadata.labels.clone().unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], "switchyard");
    assert_eq!(labels[PLAN_LABEL], PLAN);
    assert_eq!(labels[ROUTING_TABLE_LABEL], "true");
    let managers = managers(&table);
    assert!(managers.contains(&field_manager("support")), "{managers:?}");
    assert!(managers.contains(&field_manager("sales")), "{managers:?}");
    // Each wave's manager owns its own key, and only that one.
    assert!(owns_key(&table, &field_manager("support"), "support"));
    assert!(owns_key(&table, &field_manager("sales"), "sales"));
    assert!(!owns_key(&table, &field_manager("support"), "sales"));
    assert!(!owns_key(&table, &field_manager("sales"), "support"));

    // The same states again: nothing written.
    let before = table.metadata.resource_version.clone().unwrap();
    let (support_state, sales_state) = last;
    let (a, b) = tokio::join!(
        router.apply(&support, &support_state),
        router.apply(&sales, &sales_state)
    );
    assert_eq!(a.unwrap(), Written::Unchanged);
    assert_eq!(b.unwrap(), Written::Unchanged);
    assert_eq!(resource_version(&tables, TABLE).await, before);

    // Removing one wave takes only its key; the other's entry and the labels stay.
    assert_eq!(
        router.remove(&ns, "support").await.unwrap(),
        Written::Changed
    );
    let table = tables.get(TABLE).await.unwrap();
    assert_eq!(table_keys(&table), ["sales"]);
    assert_eq!(
        entry_in(&table, "sales"),
        Some(RoutingTableEntry::new(&sales, &sales_state).unwrap())
    );
    assert_eq!(table.metadata.labels.clone().unwrap(), labels);
    assert_eq!(
        router.remove(&ns, "support").await.unwrap(),
        Written::Unchanged
    );
    assert_eq!(
        router.apply(&sales, &sales_state).await.unwrap(),
        Written::Unchanged
    );

    // Removing the last wave empties the table; the ConfigMap and its labels remain.
    assert_eq!(router.remove(&ns, "sales").await.unwrap(), Written::Changed);
    let table = tables.get(TABLE).await.unwrap();
    assert!(table_keys(&table).is_empty(), "{:?}", table.data);
    assert_eq!(table.metadata.labels.clone().unwrap(), labels);
}

#[tokio::test]
async fn removal_takes_back_a_key_someone_else_has_edited() {
    let (client, ns) = admin_in_fresh_namespace("table-edited").await;
    let router = ConfigMapRouter::new(client.clone());
    let tables: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let support = table_wave(&ns, "support", "support");
    let sales = table_wave(&ns, "sales", "sales");
    router
        .apply(&support, &state(10, false, false))
        .await
        .unwrap();
    router
        .apply(&sales, &state(20, false, false))
        .await
        .unwrap();

    // Someone edits the support entry by hand: their manager now owns the key.
    let edited = RoutingTableEntry::new(&support, &state(100, false, false)).unwrap();
    tables
        .patch(
            TABLE,
            &PatchParams {
                field_manager: Some("kubectl-edit".to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"data": {"support": edited.to_json("support").unwrap()}})),
        )
        .await
        .unwrap();
    let table = tables.get(TABLE).await.unwrap();
    assert!(owns_key(&table, "kubectl-edit", "support"));
    assert!(
        !owns_key(&table, &field_manager("support"), "support"),
        "the wave's manager lost the key to the edit, so its empty apply alone cannot remove it"
    );

    assert_eq!(
        router.remove(&ns, "support").await.unwrap(),
        Written::Changed
    );
    let table = tables.get(TABLE).await.unwrap();
    assert_eq!(table_keys(&table), ["sales"]);
    assert_eq!(
        entry_in(&table, "sales"),
        Some(RoutingTableEntry::new(&sales, &state(20, false, false)).unwrap())
    );
}

#[tokio::test]
async fn a_configmap_switchyard_does_not_own_is_left_alone() {
    let (client, ns) = admin_in_fresh_namespace("table-foreign").await;
    let router = ConfigMapRouter::new(client.clone());
    let tables: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let foreign = ConfigMap {
        metadata: ObjectMeta {
            name: Some(TABLE.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "support".to_owned(),
            "theirs".to_owned(),
        )])),
        ..ConfigMap::default()
    };
    tables
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let before = tables.get(TABLE).await.unwrap();

    let error = router
        .apply(
            &table_wave(&ns, "support", "support"),
            &state(10, false, false),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RoutingError::NotOwned { kind: "ConfigMap", name, .. } if name == TABLE),
        "{error:?}"
    );
    assert_eq!(
        router.remove(&ns, "support").await.unwrap(),
        Written::Unchanged
    );
    let after = tables.get(TABLE).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.data, before.data);
}

/// Why the ConfigMap router uses one field manager per wave: under a single shared
/// manager, applying one wave's key deletes every key the manager applied before.
#[tokio::test]
async fn a_single_shared_field_manager_would_delete_the_other_waves_keys() {
    let (client, ns) = admin_in_fresh_namespace("table-shared-manager").await;
    let tables: Api<ConfigMap> = Api::namespaced(client, &ns);
    let shared = PatchParams::apply("switchyard").force();
    for wave in ["support", "sales"] {
        let intent = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": TABLE},
            "data": {wave: "{}"},
        });
        tables
            .patch(TABLE, &shared, &Patch::Apply(&intent))
            .await
            .unwrap();
    }
    let table = tables.get(TABLE).await.unwrap();
    assert_eq!(table_keys(&table), ["sales"], "support's key was lost");
}

/// What the router's own check (`RoutingError::LegacyAccessClash`) prevents: an
/// HTTPRoute whose header matches repeat a name is refused by server-side apply, with a
/// 500 (not a 422) from kube-apiserver v1.37, which a controller would take for a
/// transient failure and retry forever.
#[tokio::test]
async fn the_api_server_answers_a_repeated_header_match_with_a_500() {
    let (client, ns) = admin_in_fresh_namespace("route-dup-header").await;
    let wave = gateway_wave(&ns, "support", "support");
    let mut route = desired_route(&wave, &state(10, false, false)).unwrap();
    let headers = &mut route.spec.rules[0].matches[0].headers;
    headers.push(headers[0].clone());
    let error = routes(&client, &ns)
        .patch(
            &route_name("support"),
            &PatchParams::apply("switchyard").force(),
            &Patch::Apply(&route),
        )
        .await
        .unwrap_err();
    match &error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 500, "{status:?}");
            assert!(status.message.contains("duplicate entries"), "{status:?}");
        }
        other => panic!("expected the API server's refusal, got {other:?}"),
    }

    // The router refuses such a plan itself, before any request.
    let mut clashing = wave.clone();
    clashing.legacy_access = Some(HeaderMatch {
        header: "x-crm-team".to_owned(),
        value: "legacy".to_owned(),
    });
    let error = GatewayRouter::new(client.clone())
        .apply(&clashing, &state(100, false, true))
        .await
        .unwrap_err();
    assert!(
        matches!(error, RoutingError::LegacyAccessClash { .. }),
        "{error:?}"
    );
    assert!(
        routes(&client, &ns)
            .get_opt(&route_name("support"))
            .await
            .unwrap()
            .is_none()
    );
}
