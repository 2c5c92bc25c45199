//! The CRDs' descriptions as users read them: through a real `kubectl explain` against
//! the test API server (kubectl of the same Kubernetes version, `hack/build-kube.sh`).
//!
//! kubectl wraps a description to its own width. A description that kept its doc
//! comment's line wraps came out broken mid-sentence ("…to the maintenance backend for"
//! / "the duration…"), so the generator joins them (`switchyard::crdgen::reflow`).

mod common;

use std::process::Command;

/// Fields whose doc comments span several source lines, paragraphs or lists.
const FIELDS: &[(&str, &str)] = &[
    ("cutoverplans.spec", "/spec"),
    ("cutoverplans.spec.actions", "/spec/actions"),
    ("cutoverplans.spec.readinessGates", "/spec/readinessGates"),
    ("migrationwaves.spec", "/spec"),
    ("migrationwaves.spec.steps", "/spec/steps"),
    ("migrationwaves.status", "/status"),
];

fn explain(field: &str) -> String {
    let kubectl = switchyard_testenv::kubectl().unwrap_or_else(|err| panic!("{err}"));
    let output = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(common::plane().kubeconfig_path())
        .args(["explain", field])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl explain {field}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The DESCRIPTION block of `kubectl explain`'s output, one string per line, trimmed.
fn description_lines(output: &str) -> Vec<String> {
    let mut lines: Vec<String> = output
        .lines()
        .skip_while(|line| !line.starts_with("DESCRIPTION:"))
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with(' '))
        .map(|line| line.trim().to_owned())
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// The schema's description at `pointer` (below openAPIV3Schema's properties).
fn schema_description(plural: &str, pointer: &str) -> String {
    let crd = switchyard::crdgen::all()
        .unwrap()
        .into_iter()
        .find(|c| c.file_name.starts_with(plural))
        .unwrap();
    let value = serde_json::to_value(&crd.crd).unwrap();
    let mut node = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        node = &node["properties"][part];
    }
    let own = node["description"].as_str().unwrap_or_default();
    // kubectl explains an array field by its own description and then its items'.
    match node["items"]["description"].as_str() {
        Some(items) => format!("{own}\n\n{items}"),
        None => own.to_owned(),
    }
}

/// The lines of `text` that rightly start a line of their own, whatever the wrapping:
/// the first line of each paragraph, and list items. Judged from the text itself, not
/// from its line breaks.
fn block_starts(text: &str) -> Vec<String> {
    let mut starts = Vec::new();
    let mut after_blank = true;
    for line in text.lines().map(str::trim) {
        let numbered = line
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !line.is_empty() && (after_blank || numbered || line.starts_with("- ")) {
            starts.push(line.to_owned());
        }
        after_blank = line.is_empty();
    }
    starts
}

fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[test]
fn descriptions_read_as_sentences_in_kubectl_explain() {
    // Each field with kubectl's lines and the lines of the schema's text that rightly
    // start a new line (a paragraph, a list item, an array's items).
    let explained: Vec<(&str, Vec<String>, Vec<String>)> = FIELDS
        .iter()
        .map(|(field, pointer)| {
            let lines = description_lines(&explain(field));
            let plural = field.split('.').next().unwrap();
            let expected = schema_description(plural, pointer);
            let blocks = block_starts(&expected);
            assert!(
                !lines.is_empty(),
                "kubectl explain {field} shows no description"
            );
            assert_eq!(
                words(&lines.join(" ")),
                words(&expected),
                "kubectl explain {field} shows another text than the schema's"
            );
            (*field, lines, blocks)
        })
        .collect();
    // kubectl's own width: the longest line it printed. A line that ends although the
    // next line's first word would have fitted after it was broken by the source, not by
    // kubectl: that is the mid-sentence break this test is about.
    let width = explained
        .iter()
        .flat_map(|(_, lines, _)| lines.iter().map(|l| l.chars().count()))
        .max()
        .unwrap();
    assert!(width > 40, "kubectl's lines are implausibly short: {width}");
    for (field, lines, blocks) in &explained {
        for pair in lines.windows(2) {
            let (line, next) = (&pair[0], &pair[1]);
            let starts_block = blocks.iter().any(|block| block.starts_with(next.as_str()));
            if line.is_empty() || next.is_empty() || starts_block {
                continue;
            }
            let first = next.split_whitespace().next().unwrap_or_default();
            assert!(
                line.chars().count() + 1 + first.chars().count() > width,
                "kubectl explain {field} breaks a sentence early:\n{line}\n{next}\n(kubectl wraps at {width})"
            );
        }
    }
}
