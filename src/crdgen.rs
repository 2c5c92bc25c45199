//! Generates the CustomResourceDefinitions from the API types.
//!
//! `crds/` holds the output, one file per kind, and a test fails when it drifts from the
//! types. Any adjustment to what kube-derive produces is made here on serde values, never
//! by editing text.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::api::{CutoverPlan, MigrationWave};

/// The first line of every generated file.
pub const HEADER: &str =
    "# Generated from the Rust types in src/api by `switchyard crds`. Do not edit.\n";

/// Errors while generating or writing CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdGenError {
    /// The CRD could not be converted to or from a serde value.
    #[error("could not convert the {kind} CRD: {source}")]
    Convert {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The CRD could not be written as YAML.
    #[error("could not render the {kind} CRD as YAML: {source}")]
    Yaml {
        kind: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
}

/// One generated CRD, with the file name it is kept under in `crds/`.
pub struct GeneratedCrd {
    /// The kind, for messages.
    pub kind: &'static str,
    /// The file name under `crds/`.
    pub file_name: String,
    /// The CRD itself.
    pub crd: CustomResourceDefinition,
}

impl GeneratedCrd {
    /// The YAML document, with the generated-file header.
    pub fn to_yaml(&self) -> Result<String, CrdGenError> {
        let body = serde_yaml::to_string(&self.crd).map_err(|source| CrdGenError::Yaml {
            kind: self.kind,
            source,
        })?;
        Ok(format!("{HEADER}{body}"))
    }
}

/// Both CRDs, post-processed, in a stable order.
pub fn all() -> Result<Vec<GeneratedCrd>, CrdGenError> {
    [
        ("CutoverPlan", CutoverPlan::crd()),
        ("MigrationWave", MigrationWave::crd()),
    ]
    .into_iter()
    .map(|(kind, crd)| {
        let crd = post_process(kind, crd)?;
        Ok(GeneratedCrd {
            kind,
            file_name: format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or(kind)),
            crd,
        })
    })
    .collect()
}

/// All CRDs as one multi-document YAML stream, as `switchyard crds` prints it.
pub fn all_yaml() -> Result<String, CrdGenError> {
    let mut out = String::new();
    for (i, crd) in all()?.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&crd.to_yaml()?);
    }
    Ok(out)
}

fn post_process(
    kind: &'static str,
    crd: CustomResourceDefinition,
) -> Result<CustomResourceDefinition, CrdGenError> {
    let convert = |source| CrdGenError::Convert { kind, source };
    let mut value = serde_json::to_value(&crd).map_err(convert)?;
    if let Some(versions) = value
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    {
        for version in versions {
            if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
                strip_empty_required(schema);
            }
        }
    }
    serde_json::from_value(value).map_err(convert)
}

/// schemars writes `required: []` on structs whose fields are all optional; the API
/// server accepts it but `kubectl explain` and diffs are cleaner without it.
fn strip_empty_required(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map
                .get("required")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                map.remove("required");
            }
            for child in map.values_mut() {
                strip_empty_required(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_empty_required),
        _ => {}
    }
}
