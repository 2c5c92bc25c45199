//! Helpers for tests that run the MigrationWave controller against the real API server.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Service;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use serde_json::json;
use switchyard::{
    api::{CutoverPlan, MigrationWave, WavePhase},
    controller::{Services, Settings, Stats},
};

/// A running controller, scoped to one namespace. Dropping it stops it.
pub struct RunningController {
    pub stats: Arc<Stats>,
    handle: tokio::task::JoinHandle<()>,
}

impl RunningController {
    pub fn start(client: &Client, namespace: &str) -> Self {
        Self::start_with(client, namespace, Arc::default())
    }

    /// Starts a controller that keeps counting into `stats`.
    pub fn start_with(client: &Client, namespace: &str, stats: Arc<Stats>) -> Self {
        Self::start_with_services(
            client,
            namespace,
            Services {
                stats,
                ..Services::default()
            },
        )
    }

    /// Starts a controller with its analyzer and alert store.
    pub fn start_with_services(client: &Client, namespace: &str, services: Services) -> Self {
        let settings = Settings {
            namespaces: vec![namespace.to_owned()],
            ..Settings::default()
        };
        let stats = services.stats.clone();
        let handle = tokio::spawn(switchyard::controller::run(
            client.clone(),
            settings,
            services,
        ));
        Self { stats, handle }
    }

    /// Stops the controller at once, as a crash would.
    pub async fn stop(mut self) -> Arc<Stats> {
        self.handle.abort();
        let handle = std::mem::replace(&mut self.handle, tokio::spawn(async {}));
        let _ = handle.await;
        self.stats.clone()
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub async fn create_service(client: &Client, namespace: &str, name: &str, port: i32) {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"port": port}], "selector": {"app": name}}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
}

/// The backends every test plan uses.
pub async fn create_backends(client: &Client, namespace: &str) {
    create_service(client, namespace, "legacy-crm", 80).await;
    create_service(client, namespace, "orchestration", 8080).await;
    create_service(client, namespace, "crm-maintenance", 80).await;
}

/// A plan routing through the Gateway API (or a ConfigMap table) with the given waves.
pub fn plan(name: &str, waves: &[&str], config_map: bool) -> CutoverPlan {
    let routing = if config_map {
        json!({"configMap": {"name": "crm-routing"}})
    } else {
        json!({"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "gateways"}],
               "hostnames": ["crm.example.com"]}})
    };
    serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "CutoverPlan",
        "metadata": {"name": name},
        "spec": {
            "legacy": {"service": {"name": "legacy-crm", "port": 80}},
            "target": {"service": {"name": "orchestration", "port": 8080}},
            "maintenance": {"service": {"name": "crm-maintenance", "port": 80}},
            "routing": routing,
            "cohortKeys": {"team": {"header": "x-crm-team"}, "region": {"header": "x-crm-region"}},
            "legacyAccess": {"header": "x-switchyard-legacy", "value": "true"},
            "waves": waves.iter().map(|w| json!({"name": w})).collect::<Vec<_>>(),
            "maxConcurrentWaves": 4,
            "approvers": {"groups": [super::TEST_ACTORS]},
            "rollbackAuthority": {"groups": [super::TEST_ACTORS]}
        }
    }))
    .unwrap()
}

pub fn wave(
    name: &str,
    plan: &str,
    team: &str,
    region: &str,
    steps: serde_json::Value,
) -> MigrationWave {
    serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "MigrationWave",
        "metadata": {"name": name},
        "spec": {"plan": plan, "cohort": {"team": team, "region": region}, "steps": steps}
    }))
    .unwrap()
}

pub async fn create<K>(client: &Client, namespace: &str, object: &K)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), object).await.unwrap();
}

/// Waits until the wave satisfies `check`, failing the test after `timeout`.
pub async fn wait_wave(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&MigrationWave) -> bool,
) -> MigrationWave {
    let api: Api<MigrationWave> = Api::namespaced(client.clone(), namespace);
    let condition = move |wave: Option<&MigrationWave>| wave.is_some_and(&check);
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(wave))) => wave,
        Ok(Ok(None)) => panic!("wave {name} disappeared while waiting for {what}"),
        Ok(Err(err)) => panic!("watching wave {name}: {err}"),
        Err(_) => {
            let wave = api.get_opt(name).await.unwrap();
            panic!(
                "wave {name} did not reach {what} within {timeout:?}; it is {}",
                serde_json::to_string_pretty(&wave.map(|w| w.status)).unwrap()
            )
        }
    }
}

pub async fn wait_phase(
    client: &Client,
    namespace: &str,
    name: &str,
    phase: WavePhase,
    step: Option<i32>,
) -> MigrationWave {
    wait_wave(
        client,
        namespace,
        name,
        Duration::from_secs(30),
        &format!("{phase:?} at step {step:?}"),
        |w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.phase == phase && (step.is_none() || s.step_index == step))
        },
    )
    .await
}

/// Appends a human action to the wave, as `kubectl wave` does.
///
/// The append is guarded by the wave's resourceVersion, so an operator's status write
/// between the read and the write is a conflict: read again and retry, as
/// `kubectl wave` does.
pub async fn act(client: &Client, namespace: &str, name: &str, action: serde_json::Value) {
    let _ = client;
    let mut action: switchyard::api::WaveAction =
        serde_json::from_value(action).expect("a valid action");
    // The action is made by the user it names, a member of the test plans' authorised
    // group, and records what admission vouches for: their groups and the plan's UID.
    let actor = super::plane()
        .client_as(&action.user, &[super::TEST_ACTORS])
        .await
        .expect("an impersonating client");
    let who = switchyard::cli::commands::whoami(&actor).await.unwrap();
    action.groups = who.groups;
    let api: Api<MigrationWave> = Api::namespaced(actor.clone(), namespace);
    let plans: Api<CutoverPlan> = Api::namespaced(actor, namespace);
    for _ in 0..10 {
        let mut wave = api.get(name).await.unwrap();
        let plan = plans.get(&wave.spec.plan).await.unwrap();
        action.plan_uid = plan.metadata.uid.clone();
        wave.spec.actions.push(action.clone());
        let appended = api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"resourceVersion": wave.metadata.resource_version},
                    "spec": {"actions": wave.spec.actions},
                })),
            )
            .await;
        match appended {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => panic!("appending an action to {name}: {err}"),
        }
    }
    panic!("appending an action to {name}: 10 conflicts in a row");
}

/// Passes gate `gate` of plan `plan` as `user`, a member of the test plans' authorised
/// group, recording what admission vouches for, as `kubectl wave gate pass` does.
pub async fn pass_gate(namespace: &str, plan: &str, gate: &str, user: &str, message: &str) {
    let actor = super::plane()
        .client_as(user, &[super::TEST_ACTORS])
        .await
        .expect("an impersonating client");
    let who = switchyard::cli::commands::whoami(&actor).await.unwrap();
    let plans: Api<CutoverPlan> = Api::namespaced(actor, namespace);
    for _ in 0..10 {
        let mut current = plans.get(plan).await.unwrap();
        current.spec.actions.push(switchyard::api::PlanAction {
            action: switchyard::api::PlanActionType::PassGate,
            user: who.user.clone(),
            groups: who.groups.clone(),
            gate: gate.to_owned(),
            message: Some(message.to_owned()),
        });
        let appended = plans
            .patch(
                plan,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"resourceVersion": current.metadata.resource_version},
                    "spec": {"actions": current.spec.actions},
                })),
            )
            .await;
        match appended {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => panic!("passing gate {gate} of {plan}: {err}"),
        }
    }
    panic!("passing gate {gate} of {plan}: 10 conflicts in a row");
}

/// A condition's `status/reason`, or "absent".
pub fn condition(wave: &MigrationWave, type_: &str) -> String {
    wave.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map_or("absent".into(), |c| format!("{}/{}", c.status, c.reason))
}

/// An HTTP client for tests (reqwest with the process's rustls provider).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("an HTTP client")
}

/// Serves the Alertmanager receiver on a free loopback port; returns its URL.
pub async fn serve_receiver(
    token: &str,
    store: Arc<switchyard::alerts::AlertStore>,
) -> (String, tokio::task::JoinHandle<()>) {
    use switchyard::alerts::receiver;
    let token = receiver::Token::load(&receiver::TokenSource::Literal(token.into()), None)
        .await
        .unwrap();
    let app = receiver::router(token, store, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        receiver::PATH
    );
    let handle = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, handle)
}
