//! `examples/crm-unification/`, the complete CRM migration: its manifests parse into the
//! API types and say what the README says (six cohorts in an acyclic order, gates,
//! freeze, quiet, 72h of dual access, analysis on the documented metrics), the real API
//! server accepts every object, and the controllers hold the plan until its gates pass:
//! first with no Prometheus, then with a real one fed the metrics contract.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use common::waves::{RunningController, condition, wait_wave};
use jiff::Timestamp;
use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    rbac::v1::RoleBinding,
};
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
    discovery::{self, Scope},
    runtime::wait::await_condition,
};
use serde_json::{Value, json};
use switchyard::{
    analysis::{self, Analyzer, Prometheus as PrometheusClient, PrometheusSettings, template},
    api::{CutoverPlan, CutoverPlanSpec, CutoverPlanStatus, MigrationWave, PlanPhase, WavePhase},
    controller::Services,
    engine::freeze::{self, FreezeState},
    routing::{HTTPRoute, gateway::route_name},
};
use switchyard_testenv::{Exporter, Prometheus};

const EXAMPLE: &str = "examples/crm-unification";
const PLAN: &str = "crm-unification";
/// The namespace the example's files name; the API-server test rewrites it.
const NAMESPACE: &str = "crm";
const FIELD_MANAGER: &str = "crm-unification-example";
/// What a Prometheus gate says when the operator has no Prometheus (docs/analysis.md).
const NO_PROMETHEUS: &str = "Error: no Prometheus URL is configured (--prometheus-url)";
/// What a manual gate says until someone passes it.
const MANUAL_PENDING: &str = "waits for an approver to pass it (kubectl wave gate pass)";

// ---------------------------------------------------------------------------------------
// Reading the example

struct Document {
    file: String,
    text: String,
    value: Value,
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE)
}

fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(example_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// Every YAML document of the example, in `kubectl apply -f` order (by file name).
fn documents() -> Vec<Document> {
    let mut documents = Vec::new();
    for path in yaml_files() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|err| panic!("{file}: not YAML: {err}"));
            if !value.is_null() {
                documents.push(Document {
                    file: file.clone(),
                    text: text.clone(),
                    value,
                });
            }
        }
    }
    documents
}

fn of_kind(kind: &str) -> Vec<Value> {
    documents()
        .into_iter()
        .filter(|d| d.value["kind"] == kind)
        .map(|d| d.value)
        .collect()
}

fn plan() -> CutoverPlan {
    let plans = of_kind("CutoverPlan");
    assert_eq!(plans.len(), 1, "the example has one CutoverPlan");
    serde_json::from_value(plans[0].clone()).expect("the plan deserializes into CutoverPlan")
}

fn waves() -> Vec<MigrationWave> {
    of_kind("MigrationWave")
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("a wave deserializes into MigrationWave"))
        .collect()
}

fn name(value: &Value) -> &str {
    value["metadata"]["name"].as_str().unwrap_or_default()
}

/// Paths of `written` that `typed` (the same object after a round trip through the Rust
/// types) lost: fields serde ignored because they are misspelled or not in the API.
fn dropped_fields(written: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (written, typed) {
        (Value::Object(w), Value::Object(t)) => {
            for (key, value) in w {
                let here = format!("{path}.{key}");
                match t.get(key) {
                    Some(inner) => dropped_fields(value, inner, &here, out),
                    None => out.push(here),
                }
            }
        }
        (Value::Array(w), Value::Array(t)) => {
            for (i, value) in w.iter().enumerate() {
                match t.get(i) {
                    Some(inner) => dropped_fields(value, inner, &format!("{path}[{i}]"), out),
                    None => out.push(format!("{path}[{i}]")),
                }
            }
        }
        _ => {}
    }
}

fn assert_round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(document: &Document) {
    let typed: T = serde_json::from_value(document.value.clone()).unwrap_or_else(|err| {
        panic!(
            "{} ({}) does not deserialize: {err}",
            document.file,
            name(&document.value)
        )
    });
    let mut dropped = Vec::new();
    dropped_fields(
        &document.value,
        &serde_json::to_value(&typed).unwrap(),
        "",
        &mut dropped,
    );
    assert!(
        dropped.is_empty(),
        "{} ({}): fields the API types do not know: {dropped:?}",
        document.file,
        name(&document.value)
    );
}

fn wave_names(waves: &[MigrationWave]) -> BTreeSet<String> {
    waves
        .iter()
        .map(|w| w.metadata.name.clone().unwrap())
        .collect()
}

/// The waves each wave waits for, directly or not.
fn predecessors(spec: &CutoverPlanSpec) -> BTreeMap<String, BTreeSet<String>> {
    let mut all: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Kahn's algorithm: take a wave once everything it waits for is taken.
    let mut remaining: Vec<_> = spec.waves.iter().collect();
    while !remaining.is_empty() {
        let ready = remaining
            .iter()
            .position(|w| w.after.iter().all(|a| all.contains_key(a)))
            .unwrap_or_else(|| {
                panic!(
                    "the after order has a cycle (or names an unknown wave) among {:?}",
                    remaining.iter().map(|w| &w.name).collect::<Vec<_>>()
                )
            });
        let wave = remaining.remove(ready);
        let mut before = BTreeSet::new();
        for dep in &wave.after {
            before.insert(dep.clone());
            before.extend(all[dep].iter().cloned());
        }
        all.insert(wave.name.clone(), before);
    }
    all
}

// ---------------------------------------------------------------------------------------
// The manifests themselves

#[test]
fn every_document_parses_into_its_api_type() {
    let files: Vec<String> = std::fs::read_dir(example_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for file in &files {
        assert!(
            file == "README.md" || file.ends_with(".yaml"),
            "{file}: `kubectl apply -f {EXAMPLE}/` would try to apply it, or it is not documented"
        );
    }
    let documents = documents();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for document in &documents {
        let kind = document.value["kind"].as_str().unwrap_or_default();
        *kinds.entry(kind.to_owned()).or_default() += 1;
        assert!(
            !name(&document.value).is_empty(),
            "{}: a document without a name",
            document.file
        );
        if kind != "Namespace" {
            assert_eq!(
                document.value["metadata"]["namespace"],
                NAMESPACE,
                "{} ({}) must live in the crm namespace",
                document.file,
                name(&document.value)
            );
        }
        match kind {
            "Namespace" => assert_round_trips::<Namespace>(document),
            "Service" => assert_round_trips::<Service>(document),
            "RoleBinding" => assert_round_trips::<RoleBinding>(document),
            "CutoverPlan" => assert_round_trips::<CutoverPlan>(document),
            "MigrationWave" => assert_round_trips::<MigrationWave>(document),
            // No Rust types for these (Switchyard models only what it writes of an
            // HTTPRoute); the API server checks them in the test below.
            "HTTPRoute" | "Gateway" => {
                assert_eq!(document.value["apiVersion"], "gateway.networking.k8s.io/v1")
            }
            other => panic!("{}: unexpected kind {other}", document.file),
        }
    }
    let expected: BTreeMap<String, usize> = [
        ("Namespace", 1),
        ("Service", 3),
        ("Gateway", 1),
        ("HTTPRoute", 1),
        ("CutoverPlan", 1),
        ("MigrationWave", 6),
        ("RoleBinding", 4),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(kinds, expected);
    assert_eq!(name(&of_kind("Namespace")[0]), NAMESPACE);
}

#[test]
fn six_waves_one_per_cohort_in_an_acyclic_order() {
    let plan = plan();
    let waves = waves();
    assert_eq!(plan.metadata.name.as_deref(), Some(PLAN));
    assert_eq!(
        waves.len(),
        6,
        "marketing, sales and support in two regions"
    );

    let mut cohorts = BTreeSet::new();
    for wave in &waves {
        let wave_name = wave.metadata.name.clone().unwrap();
        assert_eq!(wave.spec.plan, PLAN, "{wave_name} names another plan");
        for key in wave.spec.cohort.keys() {
            assert!(
                plan.spec.cohort_keys.contains_key(key),
                "{wave_name}: cohort key {key} is not one of the plan's cohortKeys"
            );
        }
        let cohort = (
            wave.spec.cohort["team"].clone(),
            wave.spec.cohort["region"].clone(),
        );
        assert_eq!(
            wave_name,
            format!("{}-{}", cohort.0, cohort.1),
            "a wave is named after its cohort"
        );
        assert!(cohorts.insert(cohort), "{wave_name}: cohort used twice");
    }
    let expected: BTreeSet<(String, String)> = ["marketing", "sales", "support"]
        .iter()
        .flat_map(|t| ["emea", "amer"].map(|r| (t.to_string(), r.to_owned())))
        .collect();
    assert_eq!(cohorts, expected);

    let listed: BTreeSet<String> = plan.spec.waves.iter().map(|w| w.name.clone()).collect();
    assert_eq!(
        listed.len(),
        plan.spec.waves.len(),
        "the plan lists a wave twice"
    );
    assert_eq!(
        listed,
        wave_names(&waves),
        "spec.waves and the MigrationWaves differ"
    );

    // Acyclic, and each `after` names a wave listed earlier (what the CEL rule enforces).
    let order = predecessors(&plan.spec);
    for (i, wave) in plan.spec.waves.iter().enumerate() {
        for dep in &wave.after {
            let at = plan.spec.waves.iter().position(|w| &w.name == dep);
            assert!(
                at.is_some_and(|at| at < i),
                "{}: after {dep} must name a wave listed before it",
                wave.name
            );
        }
    }
    // The story: the marketing pilot alone first; in each region marketing, then sales,
    // then support; support-amer last of all.
    let roots: Vec<&str> = plan
        .spec
        .waves
        .iter()
        .filter(|w| w.after.is_empty())
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(roots, ["marketing-emea"], "one pilot, and it goes first");
    for region in ["emea", "amer"] {
        let waits = |wave: &str, dep: &str| order[&format!("{wave}-{region}")].contains(dep);
        assert!(waits("sales", &format!("marketing-{region}")));
        assert!(waits("support", &format!("sales-{region}")));
    }
    assert_eq!(
        order["support-amer"].len(),
        5,
        "support-amer comes after every other wave"
    );
    // maxConcurrentWaves > 1 means something only if some waves are independent.
    let max = plan.spec.max_concurrent_waves.unwrap_or(1);
    assert_eq!(max, 2);
    let independent = |a: &str, b: &str| !order[a].contains(b) && !order[b].contains(a);
    assert!(independent("marketing-amer", "sales-emea"));
    assert!(independent("sales-amer", "support-emea"));
}

#[test]
fn every_wave_canaries_waits_for_approval_goes_quiet_and_keeps_72h_of_dual_access() {
    let texts: BTreeMap<String, String> =
        documents().into_iter().map(|d| (d.file, d.text)).collect();
    for (file, text) in &texts {
        // A mechanical rewrite of durations (the demo shortens them) needs every duration
        // spelled out where it is used: no anchors or aliases.
        let anchors = regex_lite::Regex::new(r"(^|[\s\[{,:-])[&*][A-Za-z0-9_]").unwrap();
        assert!(
            !anchors.is_match(text),
            "{file} uses a YAML anchor or alias"
        );
    }
    let waves_text = &texts["30-waves.yaml"];
    for wave in waves() {
        let wave_name = wave.metadata.name.clone().unwrap();
        let steps = &wave.spec.steps;
        let last = steps.last().unwrap();
        let dual = last
            .dual_access
            .as_ref()
            .unwrap_or_else(|| panic!("{wave_name}: the last step must be dualAccess"));
        assert_eq!(
            dual.duration.parse().unwrap(),
            Duration::from_secs(72 * 3600),
            "{wave_name}: dual access lasts 72h"
        );
        assert_eq!(
            steps.iter().filter(|s| s.dual_access.is_some()).count(),
            1,
            "{wave_name}: one dual-access window"
        );

        let quiet = steps
            .iter()
            .position(|s| s.quiet.is_some())
            .unwrap_or_else(|| panic!("{wave_name}: no quiet step for the final delta sync"));
        let full = steps
            .iter()
            .position(|s| s.set_weight == Some(100))
            .unwrap_or_else(|| panic!("{wave_name}: never reaches 100%"));
        assert_eq!(
            full,
            quiet + 1,
            "{wave_name}: 100% right after the final sync"
        );
        assert!(
            steps[quiet - 1].approval.is_some(),
            "{wave_name}: the cutover (quiet, then 100%) needs an approval first"
        );

        // Weights only go up, and every increase after the first canary weight has an
        // approval (and an analysis soak) since the previous weight.
        let mut previous: Option<i32> = None;
        let (mut approved, mut soaked) = (false, false);
        for (i, step) in steps.iter().enumerate() {
            if let Some(weight) = step.set_weight {
                if let Some(before) = previous {
                    assert!(weight > before, "{wave_name} step {i}: weight goes down");
                    assert!(
                        approved,
                        "{wave_name} step {i}: {before}% -> {weight}% without approval"
                    );
                    assert!(
                        soaked,
                        "{wave_name} step {i}: {before}% -> {weight}% without analysis"
                    );
                } else {
                    assert!(
                        weight <= 10,
                        "{wave_name}: the first weight is a small canary"
                    );
                }
                previous = Some(weight);
                (approved, soaked) = (false, false);
            }
            approved |= step.approval.is_some();
            soaked |= step.analysis.is_some();
        }

        // Realistic durations, written where a mechanical rewrite finds them.
        for step in steps {
            for (what, timed) in [
                ("analysis", &step.analysis),
                ("quiet", &step.quiet),
                ("dualAccess", &step.dual_access),
            ] {
                let Some(timed) = timed else { continue };
                let duration = timed.duration.parse().unwrap();
                let at_least = if what == "quiet" { 15 * 60 } else { 3600 };
                assert!(
                    duration >= Duration::from_secs(at_least),
                    "{wave_name}: a {what} step of {} is a demo value, not a real one",
                    timed.duration
                );
                assert!(
                    waves_text.contains(&format!("duration: {}", timed.duration)),
                    "{wave_name}: duration {} is not written as `duration: {}`",
                    timed.duration,
                    timed.duration
                );
            }
        }

        // The wave's alerts match its own cohort's labels.
        let alerts = wave
            .spec
            .alerts
            .as_ref()
            .unwrap_or_else(|| panic!("{wave_name}: no alert route"));
        assert_eq!(
            alerts.match_labels.get("migration").map(String::as_str),
            Some(PLAN)
        );
        assert_eq!(
            alerts.match_labels.get("cohort_team"),
            wave.spec.cohort.get("team")
        );
        assert_eq!(
            alerts.match_labels.get("cohort_region"),
            wave.spec.cohort.get("region")
        );
    }
}

#[test]
fn the_plan_has_its_gates_freeze_authority_and_backends() {
    let plan = plan();
    let spec = &plan.spec;
    let gate = |name: &str| {
        spec.readiness_gates
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no readiness gate {name}"))
    };
    let defects = gate("critical-defects-zero")
        .prometheus
        .clone()
        .expect("a Prometheus gate");
    assert_eq!((defects.min, defects.max), (None, Some(0.0)));
    assert!(defects.query.contains(r#"severity="critical""#));
    let integrations = gate("integrations-passing")
        .prometheus
        .clone()
        .expect("a Prometheus gate");
    assert!(integrations.min.is_some_and(|m| m > 0.0));
    for manual in ["rehearsal-accepted", "training-complete"] {
        assert!(
            gate(manual).manual.is_some(),
            "{manual} is passed by a person"
        );
    }
    assert_eq!(spec.readiness_gates.len(), 4);

    // Approvers and the rollback authority: release managers approve; on-call SREs may
    // roll back but not approve.
    let approvers = spec.approvers.clone().unwrap_or_default();
    let rollback = spec.rollback_authority.clone().unwrap_or_default();
    assert_eq!(approvers.groups, ["crm-release-managers"]);
    assert!(rollback.groups.contains(&"crm-release-managers".to_owned()));
    assert!(rollback.groups.contains(&"crm-sre".to_owned()));

    // The quarter-end freeze, read by the engine itself: open over each quarter's last
    // days, closed in the middle of a quarter.
    assert_eq!(spec.freeze_windows.len(), 1);
    let windows: Vec<_> = spec
        .freeze_windows
        .iter()
        .map(|w| freeze::parse(w).unwrap_or_else(|err| panic!("{err}")))
        .collect();
    let zone = jiff::tz::TimeZone::get("America/New_York").unwrap();
    let at = |date: &str| {
        jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M", date)
            .unwrap()
            .to_zoned(zone.clone())
            .unwrap()
            .timestamp()
    };
    for inside in [
        "2027-03-24 00:00",
        "2027-03-31 23:59",
        "2027-04-01 12:00",
        "2027-06-30 18:00",
        "2027-09-30 18:00",
        "2027-12-31 18:00",
    ] {
        assert!(
            matches!(freeze::evaluate(&windows, at(inside)), FreezeState::Open { ref window, .. } if window == "quarter-end"),
            "the quarter-end freeze is not open at {inside} New York time"
        );
    }
    for outside in [
        "2027-03-23 23:59",
        "2027-04-03 00:00",
        "2027-05-15 12:00",
        "2027-11-23 09:00",
    ] {
        assert!(
            matches!(
                freeze::evaluate(&windows, at(outside)),
                FreezeState::Closed { .. }
            ),
            "the quarter-end freeze is open at {outside} New York time"
        );
    }

    // The Services the plan routes to exist in the example, with the plan's ports.
    let services: BTreeMap<String, Service> = of_kind("Service")
        .into_iter()
        .map(|v| (name(&v).to_owned(), serde_json::from_value(v).unwrap()))
        .collect();
    let maintenance = spec
        .maintenance
        .as_ref()
        .expect("quiet steps need maintenance");
    for backend in [
        &spec.legacy.service,
        &spec.target.service,
        &maintenance.service,
    ] {
        let service = services.get(&backend.name).unwrap_or_else(|| {
            panic!(
                "the plan routes to {}, which 10-backends.yaml lacks",
                backend.name
            )
        });
        let ports = service.spec.as_ref().unwrap().ports.as_ref().unwrap();
        assert!(
            ports.iter().any(|p| p.port == backend.port),
            "Service {} has no port {}",
            backend.name,
            backend.port
        );
    }
    assert_eq!(spec.legacy.service.name, "legacy-crm");
    assert_eq!(spec.target.service.name, "unified-orchestration");
    assert!(
        spec.legacy_access.is_some(),
        "dual access needs the override header"
    );

    // The router: the waves attach where the platform's base route does, with the same
    // hostname, and the base route sends everything else to legacy with no header match
    // (so the cohorts' header matches outrank it).
    let gateway_api = spec
        .routing
        .gateway_api
        .as_ref()
        .expect("the Gateway API router");
    let gateways = of_kind("Gateway");
    let parent = &gateway_api.parent_refs[0];
    assert_eq!(parent.name, name(&gateways[0]));
    assert!(
        parent.namespace.is_none(),
        "the Gateway is in the plan's namespace"
    );
    let listener = gateways[0]["spec"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| Some(l["name"].as_str().unwrap()) == parent.section_name.as_deref())
        .expect("the parentRef's sectionName is a listener of the Gateway");
    assert_eq!(
        listener["hostname"].as_str(),
        Some(gateway_api.hostnames[0].as_str())
    );
    let base = &of_kind("HTTPRoute")[0]["spec"];
    assert_eq!(base["hostnames"], json!(gateway_api.hostnames));
    assert_eq!(
        base["parentRefs"],
        json!([{"name": parent.name, "sectionName": parent.section_name}])
    );
    let rules = base["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "the base route has one catch-all rule");
    assert_eq!(
        rules[0]["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/"}}]),
        "PathPrefix / and no header or method match, so every cohort rule outranks it"
    );
    assert_eq!(
        rules[0]["backendRefs"],
        json!([{"name": spec.legacy.service.name, "port": spec.legacy.service.port}])
    );

    // The release managers and SREs have the RBAC to append actions.
    let bindings = of_kind("RoleBinding");
    for group in approvers.groups.iter().chain(&rollback.groups) {
        assert!(
            bindings
                .iter()
                .any(|b| b["roleRef"]["name"] == "switchyard-release-manager"
                    && b["subjects"][0]["name"] == group.as_str()),
            "group {group} has no RoleBinding to switchyard-release-manager"
        );
    }
}

/// The metric names and the label names each query selects on, e.g.
/// `crm_open_defects` -> {system, severity}.
fn selectors(query: &str) -> BTreeMap<String, BTreeSet<String>> {
    let selector = regex_lite::Regex::new(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}").unwrap();
    let label = regex_lite::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=|!=|=~|!~)\s*""#).unwrap();
    selector
        .captures_iter(query)
        .map(|c| {
            let labels = label
                .captures_iter(&c[2])
                .map(|l| l[1].to_owned())
                .collect();
            (c[1].to_owned(), labels)
        })
        .collect()
}

#[test]
fn analysis_renders_for_every_cohort_and_uses_only_the_documented_metrics() {
    let plan = plan();
    let mut queries: Vec<String> = plan
        .spec
        .readiness_gates
        .iter()
        .filter_map(|g| g.prometheus.as_ref().map(|p| p.query.clone()))
        .collect();
    for wave in waves() {
        let wave_name = wave.metadata.name.clone().unwrap();
        let effective =
            analysis::effective(plan.spec.analysis.as_ref(), wave.spec.analysis.as_ref()).unwrap();
        let names: BTreeSet<&str> = effective
            .metrics
            .iter()
            .map(|m| m.metric.name.as_str())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["failed-handoffs", "duplicate-records", "complaint-rate"]),
            "{wave_name}"
        );
        let values = template::wave_values(&wave.spec.cohort, &wave_name, NAMESPACE);
        for metric in &effective.metrics {
            let rendered = template::render(&metric.metric.query, &values)
                .unwrap_or_else(|err| panic!("{wave_name} {}: {err}", metric.metric.name));
            let team = &wave.spec.cohort["team"];
            let region = &wave.spec.cohort["region"];
            assert!(
                rendered.contains(&format!(r#"cohort_team="{team}""#))
                    && rendered.contains(&format!(r#"cohort_region="{region}""#)),
                "{wave_name} {}: the query does not select the cohort: {rendered}",
                metric.metric.name
            );
            assert!(
                rendered.starts_with("sum("),
                "aggregate to one series: {rendered}"
            );
            assert!(
                metric.metric.max.is_some(),
                "{}: a ceiling",
                metric.metric.name
            );
            queries.push(rendered);
        }
        if wave.spec.cohort["team"] == "support" {
            let complaints = effective
                .metrics
                .iter()
                .find(|m| m.metric.name == "complaint-rate")
                .unwrap();
            let default = plan
                .spec
                .analysis
                .as_ref()
                .unwrap()
                .metrics
                .iter()
                .find(|m| m.name == "complaint-rate")
                .unwrap();
            assert!(
                complaints.metric.max < default.max,
                "{wave_name}: support tightens the complaint threshold"
            );
        }
    }

    // Every metric and label the queries use is in the README's metrics contract, in
    // the row of its metric, so that a synthetic source written against the README
    // satisfies the queries.
    let readme = std::fs::read_to_string(example_dir().join("README.md")).unwrap();
    let contract = readme
        .split("\n## ")
        .find(|section| section.starts_with("Metrics contract"))
        .expect("README.md has a `## Metrics contract` section");
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for query in &queries {
        for (metric, labels) in selectors(query) {
            used.entry(metric).or_default().extend(labels);
        }
    }
    assert_eq!(used.len(), 5, "metrics used: {used:?}");
    for (metric, labels) in &used {
        let row = contract
            .lines()
            .find(|line| line.starts_with('|') && line.contains(&format!("`{metric}`")))
            .unwrap_or_else(|| panic!("the metrics contract has no row for `{metric}`"));
        for label in labels {
            assert!(
                row.contains(&format!("`{label}`")),
                "the contract's row for {metric} does not list its label `{label}`: {row}"
            );
        }
    }
    // And the contract lists nothing the queries do not use.
    let row_metric = regex_lite::Regex::new(r"^\| `([a-z_:]+)`").unwrap();
    let documented: BTreeSet<String> = contract
        .lines()
        .filter_map(|line| row_metric.captures(line).map(|c| c[1].to_owned()))
        .collect();
    assert_eq!(documented, used.keys().cloned().collect::<BTreeSet<_>>());
}

// ---------------------------------------------------------------------------------------
// On a real API server, with the controllers

/// Applies every document of a YAML file at the repository's root (cluster-scoped
/// objects: the policies and ClusterRoles), as `kubectl apply -f policies/` would.
async fn install(client: &Client, file: &str) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document).unwrap();
        if value.is_null() {
            continue;
        }
        apply(client, None, value, false).await.unwrap();
    }
}

/// Server-side applies `value` (in `namespace` if it is namespaced), with strict field
/// validation, so that an unknown or duplicated field is refused rather than dropped.
/// A dry run goes through validation and admission and stores nothing.
async fn apply(
    client: &Client,
    namespace: Option<&str>,
    value: Value,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let mut object: DynamicObject = serde_json::from_value(value).unwrap();
    let types = object.types.clone().expect("apiVersion and kind");
    let (group, version) = types
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", &types.api_version));
    let gvk = GroupVersionKind::gvk(group, version, &types.kind);
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match (capabilities.scope, namespace) {
        (Scope::Namespaced, Some(namespace)) => {
            object.metadata.namespace = Some(namespace.to_owned());
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        (Scope::Namespaced, None) => panic!("{} needs a namespace", types.kind),
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    let name = object.metadata.name.clone().unwrap();
    let mut params = PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_strict();
    params.dry_run = dry_run;
    api.patch(&name, &params, &Patch::Apply(&object)).await
}

async fn wait_plan(
    client: &Client,
    namespace: &str,
    what: &str,
    check: impl Fn(&CutoverPlanStatus) -> bool,
) -> CutoverPlanStatus {
    let api: Api<CutoverPlan> = Api::namespaced(client.clone(), namespace);
    let condition =
        move |plan: Option<&CutoverPlan>| plan.and_then(|p| p.status.as_ref()).is_some_and(&check);
    match tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(api.clone(), PLAN, condition),
    )
    .await
    {
        Ok(Ok(Some(plan))) => plan.status.unwrap(),
        Ok(other) => panic!("watching the plan for {what}: {other:?}"),
        Err(_) => {
            let status = api.get(PLAN).await.unwrap().status;
            panic!(
                "the plan did not reach {what} within 30s; it is {}",
                serde_json::to_string_pretty(&status).unwrap()
            )
        }
    }
}

/// Appends a PassGate action as `client`'s user, with the JSON patch README.md gives
/// as the raw `kubectl patch` equivalent of `kubectl wave gate pass`: an atomic append,
/// so it needs no resourceVersion and cannot conflict with the operator's status writes.
async fn pass_gate(
    client: &Client,
    namespace: &str,
    user: &str,
    gate: &str,
    dry_run: bool,
) -> Result<CutoverPlan, kube::Error> {
    let api: Api<CutoverPlan> = Api::namespaced(client.clone(), namespace);
    // The groups as the API server knows the requester: admission checks them.
    let groups = switchyard::cli::commands::whoami(client)
        .await
        .map(|who| who.groups)
        .unwrap_or_default();
    let entry = json!({"type": "PassGate", "gate": gate, "user": user, "groups": groups, "message": format!("{gate}: signed off")});
    // The first action creates the list; later ones append to it.
    let first = api.get(PLAN).await?.spec.actions.is_empty();
    let operation = if first {
        json!({"op": "add", "path": "/spec/actions", "value": [entry]})
    } else {
        json!({"op": "add", "path": "/spec/actions/-", "value": entry})
    };
    let patch = Patch::Json::<()>(serde_json::from_value(json!([operation])).unwrap());
    let params = PatchParams {
        dry_run,
        ..PatchParams::default()
    };
    api.patch(PLAN, &params, &patch).await
}

fn gate<'a>(status: &'a CutoverPlanStatus, name: &str) -> &'a switchyard::api::GateStatus {
    status
        .gates
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no status for gate {name}: {:?}", status.gates))
}

fn held(status: &CutoverPlanStatus, reason: &str, message_part: &str) -> bool {
    status.waves.len() == 6
        && status.waves.iter().all(|w| {
            !w.admitted
                && w.held_by.as_deref() == Some(reason)
                && w.message
                    .as_deref()
                    .unwrap_or_default()
                    .contains(message_part)
        })
}

#[tokio::test]
async fn the_example_applies_and_its_gates_hold_every_wave_until_they_pass() {
    let plane = common::plane();
    let admin = plane.client().await.unwrap();
    // What `kubectl apply -f policies/` installs before the example: the admission
    // policies that tie actions to their authors, and the ClusterRoles 40-access.yaml binds.
    install(&admin, "policies/rbac.yaml").await;
    install(&admin, "policies/actions.yaml").await;
    common::access::await_policies_in_force(&admin).await;
    let ns = plane.create_namespace("crm-unification").await.unwrap();

    // Every object, as `kubectl apply --server-side -f examples/crm-unification/` would
    // create it (in a fresh namespace instead of crm: the test's own Namespace).
    // The Namespace itself is only checked (a server-side dry run), since it would
    // outlive the test: namespaces never finish terminating here.
    for document in documents() {
        let what = format!("{} ({})", document.file, name(&document.value));
        let dry_run = document.value["kind"] == "Namespace";
        apply(&admin, Some(&ns), document.value.clone(), dry_run)
            .await
            .unwrap_or_else(|err| panic!("{what} was refused: {err}"));
    }
    let plans: Api<CutoverPlan> = Api::namespaced(admin.clone(), &ns);
    let stored = plans.get(PLAN).await.unwrap();
    assert_eq!(
        stored.spec,
        plan().spec,
        "the API server stored the plan as written"
    );
    let stored_waves = Api::<MigrationWave>::namespaced(admin.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(wave_names(&stored_waves.items), wave_names(&waves()));

    // If the test runs inside the quarter-end freeze, the freeze holds the waves first.
    let windows: Vec<_> = stored
        .spec
        .freeze_windows
        .iter()
        .map(|w| freeze::parse(w).unwrap())
        .collect();
    let frozen = matches!(
        freeze::evaluate(&windows, Timestamp::now()),
        FreezeState::Open { .. }
    );
    let (first_hold, first_hold_message) = if frozen {
        ("Frozen", "quarter-end")
    } else {
        ("GateFailing", "critical-defects-zero")
    };

    // 1. No Prometheus: the operator as `switchyard run` starts without --prometheus-url.
    let controller = RunningController::start(&admin, &ns);
    let status = wait_plan(&admin, &ns, "every gate evaluated, every wave held", |s| {
        s.gates.len() == 4
            && s.gates
                .iter()
                .all(|g| g.message.as_deref() != Some("not evaluated yet"))
            && held(s, first_hold, first_hold_message)
    })
    .await;
    for name in ["critical-defects-zero", "integrations-passing"] {
        let g = gate(&status, name);
        assert!(!g.passing, "{name} passes without Prometheus");
        assert_eq!(g.message.as_deref(), Some(NO_PROMETHEUS), "{name}");
        assert_eq!(g.value, None);
    }
    for name in ["rehearsal-accepted", "training-complete"] {
        let g = gate(&status, name);
        assert!(
            !g.passing && g.passed_by.is_none(),
            "{name} passed by nobody"
        );
        assert_eq!(g.message.as_deref(), Some(MANUAL_PENDING));
    }
    assert_eq!(status.gates_summary.as_deref(), Some("0/4"));
    assert_eq!(status.waves_summary.as_deref(), Some("0/6"));
    assert_eq!(
        status.phase,
        if frozen {
            PlanPhase::Frozen
        } else {
            PlanPhase::Pending
        }
    );
    let gates_passing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "GatesPassing")
        .unwrap();
    assert_eq!(
        (gates_passing.status.as_str(), gates_passing.reason.as_str()),
        ("False", "GateFailing")
    );
    let pilot = wait_wave(
        &admin,
        &ns,
        "marketing-emea",
        Duration::from_secs(20),
        "held by the plan",
        |w| condition(w, "Progressing") == "False/HeldByPlan",
    )
    .await;
    let pilot_status = pilot.status.unwrap();
    assert_eq!(
        (pilot_status.phase, pilot_status.step_index),
        (WavePhase::Pending, None)
    );

    // 2. The release managers pass the manual gates; an on-call SRE may not (they are in
    // the rollbackAuthority, not the approvers). Each person acts as themselves.
    let sam = plane.client_as("sam", &["crm-sre"]).await.unwrap();
    let alice = plane
        .client_as("alice", &["crm-release-managers"])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let refusal = loop {
        // A dry run goes through admission without storing anything, so it can wait
        // for the policies to be loaded without risking an unchecked pass.
        match pass_gate(&sam, &ns, "sam", "rehearsal-accepted", true).await {
            Err(kube::Error::Api(status))
                if status.code == 403 && status.message.contains("only the approvers") =>
            {
                break status.message;
            }
            other if tokio::time::Instant::now() < deadline => {
                let _ = other;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => panic!("an SRE passed a gate, or the policy never loaded: {other:?}"),
        }
    };
    assert!(
        refusal.contains("only the approvers of CutoverPlan crm-unification may pass a gate")
            && refusal.contains("groups: crm-release-managers"),
        "{refusal}"
    );
    for gate_name in ["rehearsal-accepted", "training-complete"] {
        pass_gate(&alice, &ns, "alice", gate_name, false)
            .await
            .unwrap_or_else(|err| panic!("alice could not pass {gate_name}: {err}"));
    }
    let status = wait_plan(&admin, &ns, "the manual gates passed", |s| {
        s.gates_summary.as_deref() == Some("2/4")
    })
    .await;
    for name in ["rehearsal-accepted", "training-complete"] {
        let g = gate(&status, name);
        assert!(g.passing, "{name}");
        assert_eq!(g.passed_by.as_deref(), Some("alice"));
    }
    let passed: Vec<_> = status
        .history
        .iter()
        .filter(|h| h.event == "GatePassed")
        .map(|h| h.actor.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(
        passed,
        ["alice", "alice"],
        "the audit trail names who passed each gate"
    );
    // Without Prometheus the query gates cannot pass: still nothing is admitted.
    assert!(
        held(
            &status,
            first_hold,
            if frozen {
                "quarter-end"
            } else {
                "no Prometheus URL is configured"
            }
        ),
        "{:?}",
        status.waves
    );
    let pilot = Api::<MigrationWave>::namespaced(admin.clone(), &ns)
        .get("marketing-emea")
        .await
        .unwrap();
    assert_eq!(pilot.status.unwrap().phase, WavePhase::Pending);
    controller.stop().await;

    // 3. A real Prometheus, scraping an exporter that serves the metrics contract at
    // healthy values: the query gates pass and the pilot (and only the pilot) starts.
    let exporter = Exporter::start().await.unwrap();
    let system = ("system", "unified-orchestration");
    exporter.set("crm_open_defects", &[system, ("severity", "critical")], 0.0);
    exporter.set("crm_open_defects", &[system, ("severity", "major")], 7.0);
    for integration in ["erp", "billing", "email", "telephony"] {
        exporter.set(
            "crm_integration_check_success",
            &[system, ("integration", integration)],
            1.0,
        );
    }
    for wave in waves() {
        let cohort = [
            ("cohort_team", wave.spec.cohort["team"].as_str()),
            ("cohort_region", wave.spec.cohort["region"].as_str()),
        ];
        exporter.set("crm_handoff_failures_total", &cohort, 2.0);
        exporter.set("crm_duplicate_records", &cohort, 3.0);
        exporter.set("crm_customer_complaints_total", &cohort, 11.0);
    }
    let prometheus = Prometheus::start(exporter.addr(), "", None).await.unwrap();
    // Wait until each query has an answer (increase() and rate() need two samples), so
    // the first evaluation is Healthy rather than a NoData pause.
    let pilot_wave = waves()
        .into_iter()
        .find(|w| w.metadata.name.as_deref() == Some("marketing-emea"))
        .unwrap();
    let values = template::wave_values(&pilot_wave.spec.cohort, "marketing-emea", &ns);
    let mut ready: Vec<String> = stored
        .spec
        .analysis
        .as_ref()
        .unwrap()
        .metrics
        .iter()
        .map(|m| template::render(&m.query, &values).unwrap())
        .collect();
    ready.extend(
        stored
            .spec
            .readiness_gates
            .iter()
            .filter_map(|g| g.prometheus.as_ref().map(|p| p.query.clone())),
    );
    for query in &ready {
        prometheus
            .wait_for_value(query, |v| v.is_finite(), Duration::from_secs(30))
            .await
            .unwrap_or_else(|err| panic!("{err}"));
    }
    // The demo's mechanical shortening, for the one duration this test waits on: the
    // gates were last evaluated by the run without Prometheus, and would be again only
    // a whole 1m interval later.
    let mut shortened = serde_json::json!({"spec": {"analysis": {"interval": "1s"}}});
    if frozen {
        // Admission cannot be shown inside the freeze; the freeze itself was shown above.
        shortened["spec"]["freezeWindows"] = json!([]);
    }
    plans
        .patch(PLAN, &PatchParams::default(), &Patch::Merge(&shortened))
        .await
        .unwrap();
    let services = Services {
        analyzer: Arc::new(Analyzer::new(
            Some(
                PrometheusClient::new(&PrometheusSettings {
                    url: prometheus.url(),
                    bearer_token: None,
                    timeout: Duration::from_secs(2),
                    max_concurrent: 4,
                })
                .unwrap(),
            ),
            4,
        )),
        ..Services::default()
    };
    let _controller = RunningController::start_with_services(&admin, &ns, services);

    let pilot = wait_wave(
        &admin,
        &ns,
        "marketing-emea",
        Duration::from_secs(30),
        "its 4h analysis at 5%, metrics healthy",
        |w| {
            w.status.as_ref().is_some_and(|s| {
                s.phase == WavePhase::Progressing
                    && s.step_index == Some(1)
                    && s.analysis.len() == 3
                    && s.analysis.iter().all(|m| m.result == "Healthy")
            })
        },
    )
    .await;
    let pilot_status = pilot.status.unwrap();
    assert_eq!(pilot_status.target_weight, Some(5));
    let analysis: BTreeMap<&str, Option<f64>> = pilot_status
        .analysis
        .iter()
        .map(|m| (m.name.as_str(), m.value))
        .collect();
    assert_eq!(
        analysis,
        BTreeMap::from([
            ("failed-handoffs", Some(0.0)),
            ("duplicate-records", Some(3.0)),
            ("complaint-rate", Some(0.0))
        ])
    );

    let status = wait_plan(
        &admin,
        &ns,
        "the pilot progressing, the rest waiting their turn",
        |s| {
            s.gates_summary.as_deref() == Some("4/4")
                && s.phase == PlanPhase::Progressing
                && s.waves
                    .iter()
                    .any(|w| w.name == "marketing-emea" && w.phase == WavePhase::Progressing)
        },
    )
    .await;
    assert_eq!(
        gate(&status, "critical-defects-zero").value,
        Some(0.0),
        "the major defects do not count"
    );
    assert_eq!(gate(&status, "integrations-passing").value, Some(1.0));
    let waiting: BTreeMap<&str, (Option<&str>, Option<&str>)> = status
        .waves
        .iter()
        .filter(|w| w.name != "marketing-emea")
        .map(|w| {
            (
                w.name.as_str(),
                (w.held_by.as_deref(), w.message.as_deref()),
            )
        })
        .collect();
    let order = |message| (Some("Order"), Some(message));
    assert_eq!(
        waiting,
        BTreeMap::from([
            (
                "marketing-amer",
                order("waits for marketing-emea to complete")
            ),
            ("sales-emea", order("waits for marketing-emea to complete")),
            (
                "sales-amer",
                order("waits for marketing-amer, sales-emea to complete")
            ),
            ("support-emea", order("waits for sales-emea to complete")),
            (
                "support-amer",
                order("waits for sales-amer, support-emea to complete")
            ),
        ])
    );

    // The pilot's route: attached to the example's Gateway listener, 5% to the new layer.
    let route = Api::<HTTPRoute>::namespaced(admin.clone(), &ns)
        .get(&route_name("marketing-emea"))
        .await
        .unwrap();
    assert_eq!(route.spec.parent_refs[0].name, "crm-gateway");
    assert_eq!(
        route.spec.parent_refs[0].section_name.as_deref(),
        Some("http")
    );
    assert_eq!(route.spec.hostnames, ["crm.example.com"]);
    let weights: BTreeMap<&str, i32> = route.spec.rules[0]
        .backend_refs
        .iter()
        .map(|b| (b.name.as_str(), b.weight))
        .collect();
    assert_eq!(
        weights,
        BTreeMap::from([("unified-orchestration", 5), ("legacy-crm", 95)])
    );
    assert!(
        Api::<HTTPRoute>::namespaced(admin.clone(), &ns)
            .get_opt(&route_name("marketing-amer"))
            .await
            .unwrap()
            .is_none(),
        "a waiting wave routes nothing"
    );
}
