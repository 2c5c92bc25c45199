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
                reflow_descriptions(schema);
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

/// Every `description` in `schema`, reflowed (see [`reflow`]).
fn reflow_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    Value::String(text) if key == "description" => *text = reflow(text),
                    _ => reflow_descriptions(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(reflow_descriptions),
        _ => {}
    }
}

/// Joins a doc comment's line wraps. `kubectl explain` wraps descriptions to the
/// terminal itself, so the source's wraps broke its lines mid-sentence. Paragraph breaks,
/// list items (a continuation line joins its item), headings, tables and fenced code stay
/// as written.
pub fn reflow(text: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    // Whether the last line is prose that the next line may continue.
    let mut open = false;
    let mut code = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            code = !code;
            lines.push(trimmed.to_owned());
            open = false;
        } else if code {
            lines.push(line.trim_end().to_owned());
        } else if trimmed.is_empty() {
            lines.push(String::new());
            open = false;
        } else if open && !starts_block(trimmed) {
            let last = lines.last_mut().expect("an open line exists");
            last.push(' ');
            last.push_str(trimmed);
        } else {
            lines.push(trimmed.to_owned());
            open = !(trimmed.starts_with('#') || trimmed.starts_with('|'));
        }
    }
    lines.join("\n")
}

/// Whether a line starts a block of its own rather than continuing the line before.
fn starts_block(line: &str) -> bool {
    let numbered = line.split_once(['.', ')']).is_some_and(|(n, rest)| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with(' ')
    });
    numbered
        || line.starts_with("- ")
        || line.starts_with("* ")
        || line.starts_with('#')
        || line.starts_with('|')
}

#[cfg(test)]
mod tests {
    use super::reflow;

    #[test]
    fn wrapped_prose_is_joined_and_paragraphs_stay() {
        assert_eq!(
            reflow(
                "Writes go to the maintenance backend for\nthe duration.\n\nA second\nparagraph."
            ),
            "Writes go to the maintenance backend for the duration.\n\nA second paragraph."
        );
    }

    #[test]
    fn list_items_stay_on_their_own_lines_and_take_their_continuations() {
        assert_eq!(
            reflow(
                "Either:\n- `Rollback`: the wave\n  goes back;\n- `Pause`.\n1. first\n2) second"
            ),
            "Either:\n- `Rollback`: the wave goes back;\n- `Pause`.\n1. first\n2) second"
        );
    }

    #[test]
    fn code_tables_and_headings_stay_as_written() {
        let text =
            "# Heading\n| a | b |\n| 1 | 2 |\n```\nkubectl wave\n  approve\n```\nText\nafter.";
        assert_eq!(
            reflow(text),
            "# Heading\n| a | b |\n| 1 | 2 |\n```\nkubectl wave\n  approve\n```\nText after."
        );
    }

    #[test]
    fn a_number_that_begins_a_wrapped_line_is_not_a_list() {
        assert_eq!(
            reflow("at most\n64 waves; version\n1.2 or later"),
            "at most 64 waves; version 1.2 or later"
        );
    }
}
