//! The generated CRDs: `crds/` matches the types, and every field is documented.
//! No API server needed.

use std::path::Path;

use serde_json::Value;

#[test]
fn crds_directory_matches_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let generated = switchyard::crdgen::all().unwrap();
    let mut expected_files: Vec<String> = generated.iter().map(|c| c.file_name.clone()).collect();
    for crd in &generated {
        let path = dir.join(&crd.file_name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!(
                "{}: {err}; run `cargo run -- crds --out-dir crds`",
                path.display()
            )
        });
        assert!(
            on_disk == crd.to_yaml().unwrap(),
            "{} differs from what the types generate. crds/ is generated: never edit it by \
             hand; run `cargo run -- crds --out-dir crds` and commit the result",
            path.display()
        );
    }
    let mut on_disk_files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    on_disk_files.sort();
    expected_files.sort();
    assert_eq!(
        on_disk_files, expected_files,
        "crds/ holds exactly one file per kind"
    );
}

fn undocumented(schema: &Value, path: String, out: &mut Vec<String>) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_path = format!("{path}.{name}");
            let top_level =
                path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&name.as_str());
            let described = child
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !described && !top_level {
                out.push(child_path.clone());
            }
            undocumented(child, child_path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, format!("{path}[]"), out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        undocumented(values, format!("{path}{{}}"), out);
    }
}

#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    for crd in switchyard::crdgen::all().unwrap() {
        let value = serde_json::to_value(&crd.crd).unwrap();
        let schema = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        undocumented(schema, String::new(), &mut missing);
        assert!(
            missing.is_empty(),
            "{}: fields without a description: {missing:?}",
            crd.kind
        );
    }
}

#[test]
fn enum_fields_keep_their_own_description() {
    // kube-derive hoists an enum type's doc comment over the field's for Option<Enum>;
    // the API keeps enum types undocumented so each field's own text survives.
    let plan = serde_json::to_value(&switchyard::crdgen::all().unwrap()[0].crd).unwrap();
    let on_fail = &plan["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["readinessGates"]["items"]["properties"]["onFail"]["description"];
    assert!(
        on_fail
            .as_str()
            .unwrap()
            .starts_with("What happens when the gate stops passing"),
        "{on_fail}"
    );
}

#[test]
fn policies_directory_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/actions.yaml");
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(
        on_disk == switchyard::policies::yaml(),
        "{} differs from src/policies.rs; run `cargo run -- policies > policies/actions.yaml`",
        path.display()
    );
}
