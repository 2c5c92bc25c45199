//! The API as the real kube-apiserver serves it: CRDs established, examples valid,
//! documentation published, printer columns, the status subresource, and RBAC.

mod common;

use std::path::Path;

use common::{admin_in_fresh_namespace, dynamic_api, plane};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Resource,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use switchyard::api::{CutoverPlan, MigrationWave};

#[tokio::test]
async fn both_crds_are_established() {
    let client = plane().client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for name in [
        "cutoverplans.switchyard.dev",
        "migrationwaves.switchyard.dev",
    ] {
        let crd = crds.get(name).await.unwrap();
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not Established");
    }
    // The Gateway API standard CRDs are installed alongside.
    crds.get("httproutes.gateway.networking.k8s.io")
        .await
        .unwrap();
}

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn every_example_manifest_applies_cleanly() {
    let client = plane().client().await.unwrap();
    let mut applied = 0;
    // Each example directory is one migration: its own namespace, so that examples with
    // the same object names do not overwrite each other.
    let mut dirs: Vec<_> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "examples/ holds example directories");
    for dir in dirs {
        let ns = plane().create_namespace("examples").await.unwrap();
        let mut files = Vec::new();
        yaml_files(&dir, &mut files);
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value: Value = serde::Deserialize::deserialize(document).unwrap();
                if value.is_null() {
                    continue;
                }
                let api = match value["kind"].as_str() {
                    Some("CutoverPlan") => dynamic_api::<CutoverPlan>(client.clone(), &ns),
                    Some("MigrationWave") => dynamic_api::<MigrationWave>(client.clone(), &ns),
                    // Namespaces, Services, Gateways and RoleBindings around a plan are
                    // applied by the example's own test (tests/examples.rs).
                    _ => continue,
                };
                let mut object: DynamicObject = serde_json::from_value(value).unwrap();
                object.metadata.namespace = None;
                let name = object.metadata.name.clone().unwrap();
                api.patch(
                    &name,
                    &PatchParams::apply("examples-test"),
                    &Patch::Apply(&object),
                )
                .await
                .unwrap_or_else(|err| panic!("{} ({name}) was refused: {err}", file.display()));
                // What the server stored parses back into our types.
                let stored = api.get(&name).await.unwrap();
                match object.types.as_ref().map(|t| t.kind.as_str()) {
                    Some("CutoverPlan") => {
                        serde_json::from_value::<CutoverPlan>(
                            serde_json::to_value(&stored).unwrap(),
                        )
                        .unwrap();
                    }
                    _ => {
                        serde_json::from_value::<MigrationWave>(
                            serde_json::to_value(&stored).unwrap(),
                        )
                        .unwrap();
                    }
                }
                applied += 1;
            }
        }
    }
    assert!(applied >= 10, "applied {applied} objects");
}

#[tokio::test]
async fn the_published_openapi_schema_carries_field_descriptions() {
    let client = plane().client().await.unwrap();
    let request = http::Request::get("/openapi/v3/apis/switchyard.dev/v1alpha1")
        .body(Vec::new())
        .unwrap();
    let doc: Value = serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let wave = &schemas["dev.switchyard.v1alpha1.MigrationWave"];
    let plan = &schemas["dev.switchyard.v1alpha1.CutoverPlan"];
    let description = |root: &Value, path: &[&str]| -> String {
        let mut node = root;
        for key in path {
            node = &node["properties"][key];
            if node.get("items").is_some() && node.get("properties").is_none() {
                node = &node["items"];
            }
        }
        node["description"].as_str().unwrap_or_default().to_owned()
    };
    let checks = [
        (
            wave,
            vec!["spec", "cohort"],
            "The cohort's value for each of the plan's cohort keys",
        ),
        (
            wave,
            vec!["spec", "steps", "setWeight"],
            "percentage (0-100)",
        ),
        (
            wave,
            vec!["spec", "steps", "dualAccess"],
            "legacy-access override",
        ),
        (
            wave,
            vec!["spec", "actions", "user"],
            "Admission rejects an entry whose user is not the requester",
        ),
        (
            wave,
            vec!["status", "dualAccessUntil"],
            "legacy is retired only after this instant",
        ),
        (
            plan,
            vec!["spec", "routing", "gatewayAPI"],
            "one HTTPRoute per wave",
        ),
        (
            plan,
            vec!["spec", "onWaveFailure"],
            "RollbackWave rolls back only the failed wave",
        ),
        (
            plan,
            vec!["spec", "freezeWindows", "timeZone"],
            "IANA time zone",
        ),
    ];
    for (root, path, expected) in checks {
        let found = description(root, &path);
        assert!(
            found.contains(expected),
            "{path:?}: expected {expected:?} in {found:?}"
        );
    }
}

#[tokio::test]
async fn printer_columns_appear_in_a_table_response() {
    let (client, ns) = admin_in_fresh_namespace("columns").await;
    let waves: Api<MigrationWave> = Api::namespaced(client.clone(), &ns);
    let wave: MigrationWave = serde_yaml::from_str(
        r#"
apiVersion: switchyard.dev/v1alpha1
kind: MigrationWave
metadata: {name: support-emea}
spec:
  plan: crm
  cohort: {team: support, region: emea}
  steps: [{setWeight: 10}]
"#,
    )
    .unwrap();
    waves.create(&PostParams::default(), &wave).await.unwrap();
    let mut with_status = waves.get("support-emea").await.unwrap();
    with_status.status = Some(switchyard::api::MigrationWaveStatus {
        phase: switchyard::api::WavePhase::Progressing,
        cohort: Some(with_status.spec.cohort_display()),
        step_index: Some(0),
        target_weight: Some(10),
        ..Default::default()
    });
    waves
        .replace_status("support-emea", &PostParams::default(), &with_status)
        .await
        .unwrap();

    let table = |path: String| {
        let client = client.clone();
        async move {
            let request = http::Request::get(path)
                .header(
                    "Accept",
                    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
                )
                .body(Vec::new())
                .unwrap();
            serde_json::from_str::<Value>(&client.request_text(request).await.unwrap()).unwrap()
        }
    };
    let wave_table = table(format!(
        "/apis/switchyard.dev/v1alpha1/namespaces/{ns}/migrationwaves"
    ))
    .await;
    let columns: Vec<&str> = wave_table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Name", "Plan", "Cohort", "Phase", "Step", "Weight", "Age"]
    );
    let cells = &wave_table["rows"][0]["cells"];
    assert_eq!(cells[0], json!("support-emea"));
    assert_eq!(cells[1], json!("crm"));
    assert_eq!(cells[2], json!("region=emea,team=support"));
    assert_eq!(cells[3], json!("Progressing"));
    assert_eq!(cells[4], json!(0));
    assert_eq!(cells[5], json!(10));

    let plan_table = table(format!(
        "/apis/switchyard.dev/v1alpha1/namespaces/{ns}/cutoverplans"
    ))
    .await;
    let columns: Vec<&str> = plan_table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "Phase", "Waves", "Gates", "Age"]);
}

#[tokio::test]
async fn status_written_through_the_main_resource_is_ignored() {
    let (client, ns) = admin_in_fresh_namespace("status").await;
    let api = dynamic_api::<MigrationWave>(client, &ns);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "MigrationWave",
        "metadata": {"name": "w"},
        "spec": {"plan": "crm", "cohort": {"team": "support"}, "steps": [{"setWeight": 10}]},
        "status": {"phase": "Completed", "targetWeight": 100}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &object).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status was kept on create: {:?}",
        created.data
    );

    let mut updated = created.clone();
    updated.data["status"] = json!({"phase": "Completed", "targetWeight": 100});
    let replaced = api
        .replace("w", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert!(
        replaced.data.get("status").is_none(),
        "status was kept on update"
    );

    let patched = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Completed"}})),
        )
        .await
        .unwrap();
    assert!(
        patched.data.get("status").is_none(),
        "status was kept on patch"
    );
}

#[tokio::test]
async fn a_user_without_rbac_rights_is_refused_and_the_admin_is_allowed() {
    let (admin, ns) = admin_in_fresh_namespace("rbac").await;
    let admin_waves: Api<MigrationWave> = Api::namespaced(admin, &ns);
    admin_waves
        .list(&Default::default())
        .await
        .expect("admin may list");

    let eve = plane().client_as("eve", &["contractors"]).await.unwrap();
    let eve_waves: Api<MigrationWave> = Api::namespaced(eve, &ns);
    let err = eve_waves.list(&Default::default()).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected a refusal, got {err}")
    };
    assert_eq!(status.code, 403);
    assert!(
        status.message.contains(&format!(
            "User \"eve\" cannot list resource \"migrationwaves\" in API group \"switchyard.dev\" in the namespace \"{ns}\""
        )),
        "{}",
        status.message
    );
    assert_eq!(MigrationWave::group(&()), "switchyard.dev");
}
