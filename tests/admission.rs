//! Admission against a real kube-apiserver: every invalid case is refused with a message
//! that names the field and says what is allowed, and valid objects are accepted.

mod common;

use common::{admin_in_fresh_namespace, dynamic_api, refusal};
use kube::api::{DynamicObject, PostParams};
use serde_json::{Value, json};
use switchyard::api::{CutoverPlan, MigrationWave};

fn valid_wave() -> Value {
    json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "MigrationWave",
        "metadata": {"name": "support-emea"},
        "spec": {
            "plan": "crm",
            "cohort": {"team": "support", "region": "emea"},
            "steps": [
                {"setWeight": 10},
                {"analysis": {"duration": "30m"}},
                {"approval": {}},
                {"quiet": {"duration": "20m"}},
                {"setWeight": 100},
                {"dualAccess": {"duration": "72h"}}
            ],
            "analysis": {"metrics": [{"name": "errors", "query": "sum(up)", "max": 1}]}
        }
    })
}

fn valid_plan() -> Value {
    json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "CutoverPlan",
        "metadata": {"name": "crm"},
        "spec": {
            "legacy": {"service": {"name": "legacy-crm", "port": 80}},
            "target": {"service": {"name": "orchestration", "port": 8080}},
            "routing": {"gatewayAPI": {"parentRefs": [{"name": "public"}]}},
            "cohortKeys": {"team": {"header": "x-crm-team"}},
            "waves": [{"name": "a"}, {"name": "b", "after": ["a"]}],
            "maxConcurrentWaves": 1
        }
    })
}

/// Replaces the value at a JSON pointer inside `spec`.
fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    *object
        .pointer_mut(&format!("/spec{pointer}"))
        .unwrap_or_else(|| panic!("{pointer} exists in the fixture")) = value;
    object
}

fn assert_says(message: &str, expected: &[&str]) {
    for part in expected {
        assert!(message.contains(part), "expected {part:?} in:\n{message}");
    }
}

#[tokio::test]
async fn valid_objects_are_accepted() {
    let (client, ns) = admin_in_fresh_namespace("valid").await;
    let waves = dynamic_api::<MigrationWave>(client.clone(), &ns);
    let plans = dynamic_api::<CutoverPlan>(client, &ns);
    let pp = kube::api::PostParams::default();
    plans
        .create(&pp, &serde_json::from_value(valid_plan()).unwrap())
        .await
        .expect("valid plan accepted");
    waves
        .create(&pp, &serde_json::from_value(valid_wave()).unwrap())
        .await
        .expect("valid wave accepted");
}

#[tokio::test]
async fn wave_validation_messages_name_the_field_and_what_is_allowed() {
    let (client, ns) = admin_in_fresh_namespace("wave-invalid").await;
    let api = dynamic_api::<MigrationWave>(client, &ns);
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "weight above 100",
            with(valid_wave(), "/steps/0", json!({"setWeight": 150})),
            vec!["spec.steps[0].setWeight", "less than or equal to 100"],
        ),
        (
            "weight below 0",
            with(valid_wave(), "/steps/0", json!({"setWeight": -1})),
            vec!["spec.steps[0].setWeight", "greater than or equal to 0"],
        ),
        (
            "step with no action",
            with(valid_wave(), "/steps/2", json!({})),
            vec![
                "spec.steps[2]",
                "each step must set exactly one of setWeight, analysis, approval, quiet or dualAccess",
            ],
        ),
        (
            "step with two actions",
            with(
                valid_wave(),
                "/steps/2",
                json!({"approval": {}, "setWeight": 50}),
            ),
            vec!["spec.steps[2]", "each step must set exactly one of"],
        ),
        (
            "unparsable duration",
            with(
                valid_wave(),
                "/steps/3",
                json!({"quiet": {"duration": "3 days"}}),
            ),
            vec![
                "spec.steps[3].quiet.duration",
                "must be a duration such as 90s, 20m, 72h or 1h30m",
            ],
        ),
        (
            "metric with neither min nor max",
            with(
                valid_wave(),
                "/analysis/metrics/0",
                json!({"name": "e", "query": "up"}),
            ),
            vec!["spec.analysis.metrics[0]", "metric needs min, max or both"],
        ),
        (
            "metric min above max",
            with(
                valid_wave(),
                "/analysis/metrics/0",
                json!({"name": "e", "query": "up", "min": 5, "max": 1}),
            ),
            vec![
                "spec.analysis.metrics[0].min",
                "metric min must be less than or equal to max",
            ],
        ),
        (
            "cohort with no key",
            with(valid_wave(), "/cohort", json!({})),
            vec!["spec.cohort", "must set at least one cohort key"],
        ),
        (
            "cohort key with an empty value",
            with(
                valid_wave(),
                "/cohort",
                json!({"team": "", "region": "emea"}),
            ),
            vec!["spec.cohort", "values must not be empty"],
        ),
        (
            "approval action without its step",
            with(valid_wave(), "/steps/0", json!({"setWeight": 10})).pipe(|mut w| {
                w["spec"]["actions"] = json!([{"type": "Approve", "user": "alice"}]);
                w
            }),
            vec!["spec.actions[0].step", "step is required for Approve"],
        ),
    ];
    for (name, object, expected) in cases {
        let status = refusal(&api, object).await;
        println!("{name}: {}", status.message);
        assert_says(&status.message, &expected);
    }
}

#[tokio::test]
async fn plan_validation_messages_name_the_field_and_what_is_allowed() {
    let (client, ns) = admin_in_fresh_namespace("plan-invalid").await;
    let api = dynamic_api::<CutoverPlan>(client, &ns);
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "no router",
            with(valid_plan(), "/routing", json!({})),
            vec![
                "spec.routing",
                "must set exactly one router: gatewayAPI or configMap",
            ],
        ),
        (
            "two routers",
            with(
                valid_plan(),
                "/routing",
                json!({"gatewayAPI": {"parentRefs": [{"name": "g"}]}, "configMap": {"name": "t"}}),
            ),
            vec!["spec.routing", "must set exactly one router"],
        ),
        (
            "duplicate wave names",
            with(
                valid_plan(),
                "/waves",
                json!([{"name": "a"}, {"name": "a"}]),
            ),
            vec!["spec.waves", "wave names must be unique"],
        ),
        (
            "after names an unknown wave",
            with(
                valid_plan(),
                "/waves",
                json!([{"name": "a"}, {"name": "b", "after": ["zz"]}]),
            ),
            vec![
                "spec.waves",
                "every name in after must be a wave listed in spec.waves",
            ],
        ),
        (
            "after names a later wave",
            with(
                valid_plan(),
                "/waves",
                json!([{"name": "a", "after": ["b"]}, {"name": "b"}]),
            ),
            vec!["spec.waves", "only come after waves listed before it"],
        ),
        (
            "maxConcurrentWaves below 1",
            with(valid_plan(), "/maxConcurrentWaves", json!(0)),
            vec!["spec.maxConcurrentWaves", "greater than or equal to 1"],
        ),
        (
            "no cohort keys",
            with(valid_plan(), "/cohortKeys", json!({})),
            vec!["spec.cohortKeys", "must define at least one key"],
        ),
        (
            "gate with two kinds",
            valid_plan().pipe(|mut p| {
                p["spec"]["readinessGates"] = json!([{"name": "g", "manual": {},
                    "prometheus": {"query": "up", "min": 1}}]);
                p
            }),
            vec![
                "spec.readinessGates[0]",
                "exactly one of prometheus or manual",
            ],
        ),
        (
            "freeze window with a bad schedule",
            valid_plan().pipe(|mut p| {
                p["spec"]["freezeWindows"] = json!([{"name": "q", "schedule": "every friday",
                    "duration": "96h"}]);
                p
            }),
            vec![
                "spec.freezeWindows[0].schedule",
                "cron expression with five fields",
            ],
        ),
        (
            "legacy-access header reused as a cohort header",
            valid_plan().pipe(|mut p| {
                p["spec"]["legacyAccess"] = json!({"header": "X-CRM-Team", "value": "true"});
                p
            }),
            vec![
                "spec.legacyAccess.header",
                "must differ from every cohortKeys header",
            ],
        ),
        (
            "unknown onWaveFailure",
            with(valid_plan(), "/maxConcurrentWaves", json!(1)).pipe(|mut p| {
                p["spec"]["onWaveFailure"] = json!("Shrug");
                p
            }),
            vec![
                "spec.onWaveFailure",
                "supported values: \"PausePlan\", \"RollbackWave\", \"RollbackPlan\"",
            ],
        ),
    ];
    for (name, object, expected) in cases {
        let status = refusal(&api, object).await;
        println!("{name}: {}", status.message);
        assert_says(&status.message, &expected);
    }
}

#[tokio::test]
async fn plan_and_cohort_of_a_wave_are_immutable() {
    let (client, ns) = admin_in_fresh_namespace("immutable").await;
    let api = dynamic_api::<MigrationWave>(client, &ns);
    let pp = kube::api::PostParams::default();
    let created = api
        .create(&pp, &serde_json::from_value(valid_wave()).unwrap())
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.data["spec"]["cohort"]["team"] = json!("sales");
    changed.data["spec"]["plan"] = json!("other");
    let err = api
        .replace("support-emea", &pp, &changed)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected a refusal, got {err}")
    };
    assert_says(
        &status.message,
        &["spec.plan is immutable", "spec.cohort is immutable"],
    );
}

/// A small helper so the table above can tweak fixtures inline.
trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}
impl Pipe for Value {}

// ---------------------------------------------------------------------------------------
// Input that nothing could use later (names, headers, values, durations, subject lists,
// hostnames, backends) is refused at the door, with a message that names the field and
// says what is allowed; the boundary values are accepted.
// ---------------------------------------------------------------------------------------

/// Sets `value` at `path` (keys of nested objects, created when missing) under `spec`.
fn set(mut object: Value, path: &[&str], value: Value) -> Value {
    let mut at = &mut object["spec"];
    for key in path {
        at = &mut at[*key];
    }
    *at = value;
    object
}

fn named(mut object: Value, name: &str) -> Value {
    object["metadata"]["name"] = json!(name);
    object
}

/// Every case is refused, and its message holds every expected part.
async fn assert_refused(
    api: &kube::Api<kube::api::DynamicObject>,
    cases: Vec<(&str, Value, Vec<&str>)>,
) {
    let mut failures = Vec::new();
    for (name, object, expected) in cases {
        let object: DynamicObject = serde_json::from_value(object).unwrap();
        match api.create(&PostParams::default(), &object).await {
            Ok(created) => {
                failures.push(format!("{name}: accepted"));
                // So that the next cases are not refused merely as already existing.
                let _ = api
                    .delete(
                        &created.metadata.name.unwrap_or_default(),
                        &Default::default(),
                    )
                    .await;
            }
            Err(kube::Error::Api(status)) => {
                println!("{name}: {}", status.message);
                if status.code != 422 {
                    failures.push(format!(
                        "{name}: refused with {}: {}",
                        status.code, status.message
                    ));
                }
                for part in &expected {
                    if !status.message.contains(part) {
                        failures.push(format!("{name}: expected {part:?} in:\n{}", status.message));
                    }
                }
            }
            Err(other) => failures.push(format!("{name}: {other}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

type OwnedCase = (String, Value, Vec<String>);

fn as_refs(cases: &[OwnedCase]) -> Vec<(&str, Value, Vec<&str>)> {
    cases
        .iter()
        .map(|(n, v, e)| {
            (
                n.as_str(),
                v.clone(),
                e.iter().map(String::as_str).collect(),
            )
        })
        .collect()
}

/// Every object is accepted (each needs a name of its own).
async fn assert_accepted(api: &kube::Api<kube::api::DynamicObject>, objects: Vec<(&str, Value)>) {
    let mut failures = Vec::new();
    for (name, object) in objects {
        let object: DynamicObject = serde_json::from_value(object).unwrap();
        if let Err(err) = api.create(&PostParams::default(), &object).await {
            failures.push(format!("{name}: {err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn plan_with(path: &[&str], value: Value) -> Value {
    set(valid_plan(), path, value)
}

fn wave_with(path: &[&str], value: Value) -> Value {
    set(valid_wave(), path, value)
}

const TOKEN_CHARS: &str = "!#$%&'*+-.^_`|~";

#[tokio::test]
async fn header_names_must_be_http_tokens_that_reach_the_router() {
    let (client, ns) = admin_in_fresh_namespace("headers").await;
    let api = dynamic_api::<CutoverPlan>(client, &ns);
    let cohort_header =
        |header: &str| plan_with(&["cohortKeys"], json!({"team": {"header": header}}));
    let legacy_header = |header: &str| {
        plan_with(
            &["legacyAccess"],
            json!({"header": header, "value": "true"}),
        )
    };
    let mut cases: Vec<(&str, Value, Vec<&str>)> = Vec::new();
    for (name, header) in [
        ("a space", "x crm team"),
        ("a colon", "x:team"),
        ("a pseudo-header", ":authority"),
        ("a double quote", "x\"team"),
        ("a newline", "x-team\n"),
        ("a slash", "x/team"),
        ("a non-ASCII letter", "x-équipe"),
        ("parentheses", "x(team)"),
    ] {
        cases.push((
            name,
            cohort_header(header),
            vec![
                "spec.cohortKeys",
                "cohort key header must be an HTTP header name",
                "an RFC 9110 token",
            ],
        ));
    }
    cases.push((
        "a cohort header of 129 characters",
        cohort_header(&"x".repeat(129)),
        vec!["spec.cohortKeys.team.header", "may not be more than 128"],
    ));
    for (name, header) in [
        ("connection", "Connection"),
        ("transfer-encoding", "transfer-encoding"),
        ("te", "TE"),
        ("upgrade", "upgrade"),
        ("host", "Host"),
        ("content-length", "content-length"),
    ] {
        cases.push((
            name,
            cohort_header(header),
            vec![
                "spec.cohortKeys",
                "cohort key header must not be one of",
                "proxies remove or rewrite",
            ],
        ));
    }
    cases.push((
        "a legacy-access header with a space",
        legacy_header("x legacy"),
        vec!["spec.legacyAccess.header", "must be an HTTP header name"],
    ));
    cases.push((
        "a legacy-access header that proxies drop",
        legacy_header("Keep-Alive"),
        vec!["spec.legacyAccess.header must not be one of"],
    ));
    cases.push((
        "a legacy-access header of 129 characters",
        legacy_header(&"y".repeat(129)),
        vec!["spec.legacyAccess.header", "may not be more than 128"],
    ));
    cases.push((
        "two cohort keys on one header",
        plan_with(
            &["cohortKeys"],
            json!({"team": {"header": "x-crm"}, "region": {"header": "X-CRM"}}),
        ),
        vec!["spec.cohortKeys", "each key needs a header of its own"],
    ));
    assert_refused(&api, cases).await;

    let longest = format!("{TOKEN_CHARS}{}", "a".repeat(128 - TOKEN_CHARS.len()));
    assert_eq!(longest.len(), 128);
    assert_accepted(
        &api,
        vec![
            ("every token character, 128 long", named(cohort_header(&longest), "h1")),
            ("mixed case", named(cohort_header("X-CRM-Team"), "h2")),
            ("one character", named(cohort_header("t"), "h3")),
            (
                "a legacy-access header of 128 characters",
                named(legacy_header(&"y".repeat(128)), "h4"),
            ),
            (
                "headers that only contain a reserved name",
                named(
                    plan_with(
                        &["cohortKeys"],
                        json!({"team": {"header": "x-host"}, "region": {"header": "connection-id"}}),
                    ),
                    "h5",
                ),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn cohort_values_must_be_usable_as_header_and_label_values() {
    let (client, ns) = admin_in_fresh_namespace("values").await;
    let waves = dynamic_api::<MigrationWave>(client.clone(), &ns);
    let plans = dynamic_api::<CutoverPlan>(client, &ns);
    let team = |value: &str| wave_with(&["cohort"], json!({"team": value, "region": "emea"}));
    let mut cases: Vec<(&str, Value, Vec<&str>)> = Vec::new();
    for (name, value) in [
        ("a newline", "support\n"),
        ("a carriage return", "support\r"),
        ("a tab", "sup\tport"),
        ("a NUL", "sup\u{0}port"),
        ("a double quote", "o\"brien"),
        ("a backslash", "a\\b"),
        ("a space", "customer support"),
        ("a leading dash", "-support"),
        ("a trailing dot", "support."),
        ("a comma", "a,b"),
        ("an equals sign", "a=b"),
        ("a non-ASCII letter", "développement"),
    ] {
        cases.push((
            name,
            team(value),
            vec![
                "spec.cohort.team must be 1-63 letters, digits, '-', '_' or '.'",
                "header values",
            ],
        ));
    }
    for (name, value) in [
        ("300 characters", "s".repeat(300)),
        ("64 characters", "s".repeat(64)),
    ] {
        cases.push((
            name,
            team(&value),
            vec!["spec.cohort.team", "may not be more than 63"],
        ));
    }
    for (name, key, expected) in [
        (
            "a reserved key: wave",
            "wave",
            "cohort key wave is reserved",
        ),
        (
            "a reserved key: namespace",
            "namespace",
            "cohort key namespace is reserved",
        ),
        (
            "a reserved key: plan",
            "plan",
            "cohort key plan is reserved",
        ),
        ("an uppercase key", "Team", "cohort key Team is not allowed"),
        (
            "a key with a space",
            "the team",
            "cohort key the team is not allowed",
        ),
        (
            "a key with a brace",
            "team}}",
            "cohort key team}} is not allowed",
        ),
    ] {
        cases.push((
            name,
            wave_with(&["cohort"], json!({key: "support"})),
            vec!["spec.cohort", expected],
        ));
    }
    assert_refused(&waves, cases).await;

    let legacy_value = |value: &str| {
        plan_with(
            &["legacyAccess"],
            json!({"header": "x-legacy", "value": value}),
        )
    };
    let mut cases: Vec<(&str, Value, Vec<&str>)> = Vec::new();
    for (name, value) in [
        ("a newline", "true\n"),
        ("a double quote", "\"true\""),
        ("a leading space", " true"),
    ] {
        cases.push((
            name,
            legacy_value(value),
            vec!["spec.legacyAccess.value must be 1-128 letters, digits"],
        ));
    }
    cases.push((
        "129 characters",
        legacy_value(&"t".repeat(129)),
        vec!["spec.legacyAccess.value", "may not be more than 128"],
    ));
    for (name, key, expected) in [
        (
            "a reserved plan key: wave",
            "wave",
            "spec.cohortKeys: cohort key wave is reserved",
        ),
        (
            "a reserved plan key: namespace",
            "namespace",
            "cohort key namespace is reserved",
        ),
        (
            "a reserved plan key: plan",
            "plan",
            "cohort key plan is reserved",
        ),
        (
            "a plan key with a dot",
            "team.name",
            "cohort key team.name is not allowed",
        ),
        (
            "a plan key starting with a digit",
            "1team",
            "cohort key 1team is not allowed",
        ),
        (
            "a plan key of 64 characters",
            &"k".repeat(64),
            "is not allowed: a cohort key must be 1-63",
        ),
    ] {
        cases.push((
            name,
            plan_with(&["cohortKeys"], json!({key: {"header": "x-k"}})),
            vec!["spec.cohortKeys", expected],
        ));
    }
    assert_refused(&plans, cases).await;

    let longest_value = "s".repeat(63);
    let longest_key = format!("k{}", "_".repeat(61)) + "z";
    assert_accepted(
        &waves,
        vec![
            (
                "a value of 63 characters",
                named(team(&longest_value), "v1"),
            ),
            (
                "dots, dashes, underscores",
                named(team("us-east-1.a_b"), "v2"),
            ),
            ("one character", named(team("a"), "v3")),
            ("upper case", named(team("EMEA"), "v4")),
            (
                "a key of 63 characters",
                named(
                    wave_with(&["cohort"], json!({longest_key.as_str(): "x"})),
                    "v5",
                ),
            ),
        ],
    )
    .await;
    assert_accepted(
        &plans,
        vec![
            (
                "a legacy value of 128 characters",
                named(legacy_value(&"t".repeat(128)), "p1"),
            ),
            (
                "keys with - and _",
                named(
                    plan_with(
                        &["cohortKeys"],
                        json!({"cost_center": {"header": "x-cc"}, "sub-team": {"header": "x-st"},
                               longest_key.as_str(): {"header": "x-long"}}),
                    ),
                    "p2",
                ),
            ),
            (
                "a key that only starts like a reserved one",
                named(
                    plan_with(&["cohortKeys"], json!({"waves": {"header": "x-w"}})),
                    "p3",
                ),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn durations_of_zero_or_past_their_bound_are_refused() {
    let (client, ns) = admin_in_fresh_namespace("durations").await;
    let waves = dynamic_api::<MigrationWave>(client.clone(), &ns);
    let plans = dynamic_api::<CutoverPlan>(client, &ns);
    let step = |i: usize, kind: &str, d: &str| {
        let mut w = valid_wave();
        w["spec"]["steps"][i] = json!({kind: {"duration": d}});
        w
    };
    let overflow = "99999999999999999999h";
    let mut cases: Vec<(&str, Value, Vec<&str>)> = Vec::new();
    for (name, object, field) in [
        (
            "analysis step of 0s",
            step(1, "analysis", "0s"),
            "spec.steps[1].analysis.duration",
        ),
        (
            "quiet step of 0ms",
            step(3, "quiet", "0ms"),
            "spec.steps[3].quiet.duration",
        ),
        (
            "dual access of 0h0m",
            step(5, "dualAccess", "0h0m"),
            "spec.steps[5].dualAccess.duration",
        ),
        (
            "analysis step of 500ms",
            step(1, "analysis", "500ms"),
            "spec.steps[1].analysis.duration",
        ),
        (
            "dual access of a year and a day",
            step(5, "dualAccess", "8785h"),
            "spec.steps[5].dualAccess.duration",
        ),
        (
            "quiet step of 99999h",
            step(3, "quiet", "99999h"),
            "spec.steps[3].quiet.duration",
        ),
        (
            "analysis step of 9999999m",
            step(1, "analysis", "9999999m"),
            "spec.steps[1].analysis.duration",
        ),
    ] {
        cases.push((
            name,
            object,
            vec![
                field,
                "a step's duration must be at least 1s and at most 8784h",
            ],
        ));
    }
    for (name, value) in [
        ("0s", "0s"),
        ("900ms", "900ms"),
        ("2h", "2h"),
        ("1h0m1s", "1h0m1s"),
    ] {
        cases.push((
            name,
            wave_with(&["analysis", "interval"], json!(value)),
            vec![
                "spec.analysis.interval",
                "analysis.interval must be at least 1s and at most 1h",
            ],
        ));
    }
    for (name, object, field) in [
        (
            "an overflowing step",
            step(1, "analysis", overflow),
            "spec.steps[1].analysis.duration",
        ),
        (
            "an overflowing interval",
            wave_with(&["analysis", "interval"], json!(overflow)),
            "spec.analysis.interval",
        ),
        (
            "100000h",
            step(3, "quiet", "100000h"),
            "spec.steps[3].quiet.duration",
        ),
        (
            "10000000s",
            step(3, "quiet", "10000000s"),
            "spec.steps[3].quiet.duration",
        ),
    ] {
        cases.push((
            name,
            object,
            vec![field, "must be a duration such as 90s", "at most 99999h"],
        ));
    }
    assert_refused(&waves, cases).await;

    let window = |d: &str| {
        plan_with(
            &["freezeWindows"],
            json!([{"name": "q", "schedule": "0 0 28 3,6,9,12 *", "duration": d}]),
        )
    };
    let mut cases: Vec<(&str, Value, Vec<&str>)> = Vec::new();
    for d in ["0s", "0.5s", "8785h", "99999h"] {
        cases.push((
            d,
            window(d),
            vec![
                "spec.freezeWindows[0].duration",
                "freeze window duration must be at least 1s and at most 8784h",
            ],
        ));
    }
    cases.push((
        "an overflowing window",
        window(overflow),
        vec![
            "spec.freezeWindows[0].duration",
            "must be a duration such as",
        ],
    ));
    for d in ["0s", "61m", overflow] {
        cases.push((
            d,
            plan_with(&["analysis"], json!({"interval": d})),
            vec!["spec.analysis.interval"],
        ));
    }
    assert_refused(&plans, cases).await;
    // Only the message that says what to write: an overflow is not an evaluation error.
    let status = refusal(&plans, window(overflow)).await;
    assert!(!status.message.contains("evaluation"), "{}", status.message);

    let mut boundaries = valid_wave();
    boundaries["spec"]["steps"] = json!([
        {"analysis": {"duration": "1s"}},
        {"quiet": {"duration": "8784h"}},
        {"dualAccess": {"duration": "8783h59m59s1000ms"}},
        {"analysis": {"duration": "1.5s"}},
    ]);
    assert_accepted(
        &waves,
        vec![
            ("steps at their bounds", named(boundaries, "d1")),
            (
                "interval of 1s",
                named(wave_with(&["analysis", "interval"], json!("1s")), "d2"),
            ),
            (
                "interval of 1h",
                named(wave_with(&["analysis", "interval"], json!("59m60s")), "d3"),
            ),
        ],
    )
    .await;
    assert_accepted(
        &plans,
        vec![
            ("a window of 8784h", named(window("8784h"), "d4")),
            ("a window of 1s", named(window("1s"), "d5")),
            (
                "a plan interval of 1h",
                named(plan_with(&["analysis"], json!({"interval": "1h"})), "d6"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn names_that_become_label_values_or_name_objects_are_checked() {
    let (client, ns) = admin_in_fresh_namespace("names").await;
    let waves = dynamic_api::<MigrationWave>(client.clone(), &ns);
    let plans = dynamic_api::<CutoverPlan>(client, &ns);
    let n64 = "n".repeat(64);
    let n63 = "n".repeat(63);
    assert_refused(
        &waves,
        vec![
            (
                "a wave name of 64 characters",
                named(valid_wave(), &n64),
                vec![
                    "metadata.name of a MigrationWave must be at most 63 characters",
                    "label value",
                ],
            ),
            (
                "a plan reference of 64 characters",
                wave_with(&["plan"], json!(n64)),
                vec!["spec.plan"],
            ),
            (
                "a plan reference in upper case",
                wave_with(&["plan"], json!("CRM")),
                vec!["spec.plan must be the name of an object"],
            ),
        ],
    )
    .await;
    let gate = |name: &str| plan_with(&["readinessGates"], json!([{"name": name, "manual": {}}]));
    let metric = |name: &str| {
        plan_with(
            &["analysis"],
            json!({"metrics": [{"name": name, "query": "up", "max": 1}]}),
        )
    };
    let window = |name: &str| {
        plan_with(
            &["freezeWindows"],
            json!([{"name": name, "schedule": "0 0 * * *", "duration": "1h"}]),
        )
    };
    let mut cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "a plan name of 64 characters",
            named(valid_plan(), &n64),
            vec![
                "metadata.name of a CutoverPlan must be at most 63 characters",
                "label value",
            ],
        ),
        (
            "a wave name in upper case",
            plan_with(&["waves"], json!([{"name": "Support"}])),
            vec!["spec.waves[0].name", "must be the name of an object"],
        ),
        (
            "a wave name of 64 characters",
            plan_with(&["waves"], json!([{"name": n64}])),
            vec!["spec.waves[0].name"],
        ),
        (
            "after with an invalid name",
            plan_with(
                &["waves"],
                json!([{"name": "a"}, {"name": "b", "after": ["a", "A_"]}]),
            ),
            vec!["spec.waves[1].after", "must name objects"],
        ),
        (
            "a gate name with a space",
            gate("rehearsal accepted"),
            vec![
                "spec.readinessGates[0].name",
                "readiness gate name must be 1-63 letters",
            ],
        ),
        (
            "a gate name with a newline",
            gate("gate\n"),
            vec!["readiness gate name must be"],
        ),
        (
            "a metric name with a slash",
            metric("errors/s"),
            vec![
                "spec.analysis.metrics[0].name",
                "metric name must be 1-63 letters",
            ],
        ),
        (
            "a metric name with a quote",
            metric("it's"),
            vec!["metric name must be"],
        ),
        (
            "a window name with a colon",
            window("q:4"),
            vec!["spec.freezeWindows[0].name", "freeze window name must be"],
        ),
        (
            "a legacy Service in upper case",
            plan_with(&["legacy", "service", "name"], json!("Legacy")),
            vec![
                "spec.legacy.service.name",
                "service.name must be the name of a Service",
            ],
        ),
        (
            "a target Service starting with a digit",
            plan_with(&["target", "service", "name"], json!("1crm")),
            vec!["spec.target.service.name", "the name of a Service"],
        ),
        (
            "a maintenance Service with a dot",
            plan_with(
                &["maintenance"],
                json!({"service": {"name": "crm.maintenance", "port": 80}}),
            ),
            vec!["spec.maintenance.service.name", "the name of a Service"],
        ),
        (
            "a Gateway name with a space",
            plan_with(
                &["routing", "gatewayAPI", "parentRefs"],
                json!([{"name": "public gateway"}]),
            ),
            vec![
                "spec.routing.gatewayAPI.parentRefs[0].name",
                "must be the name of an object",
            ],
        ),
        (
            "a Gateway namespace in upper case",
            plan_with(
                &["routing", "gatewayAPI", "parentRefs"],
                json!([{"name": "g", "namespace": "Gateways"}]),
            ),
            vec![
                "spec.routing.gatewayAPI.parentRefs[0].namespace",
                "the name of a namespace",
            ],
        ),
        (
            "a Gateway namespace of 64 characters",
            plan_with(
                &["routing", "gatewayAPI", "parentRefs"],
                json!([{"name": "g", "namespace": n64}]),
            ),
            vec!["spec.routing.gatewayAPI.parentRefs[0].namespace"],
        ),
        (
            "a listener name with an underscore",
            plan_with(
                &["routing", "gatewayAPI", "parentRefs"],
                json!([{"name": "g", "sectionName": "https_443"}]),
            ),
            vec![
                "spec.routing.gatewayAPI.parentRefs[0].sectionName",
                "must be the name of an object",
            ],
        ),
        (
            "a ConfigMap name with a space",
            plan_with(&["routing"], json!({"configMap": {"name": "crm routing"}})),
            vec!["spec.routing.configMap.name must be the name of an object"],
        ),
        (
            "the cluster CA ConfigMap",
            plan_with(
                &["routing"],
                json!({"configMap": {"name": "kube-root-ca.crt"}}),
            ),
            vec!["spec.routing.configMap.name must not be kube-root-ca.crt"],
        ),
        (
            "a time zone with a semicolon",
            plan_with(
                &["freezeWindows"],
                json!([{"name": "q", "schedule": "0 0 * * *", "duration": "1h", "timeZone": "UTC;rm"}]),
            ),
            vec![
                "spec.freezeWindows[0].timeZone",
                "must be an IANA time zone name",
            ],
        ),
        (
            "a schedule with a dollar sign",
            plan_with(
                &["freezeWindows"],
                json!([{"name": "q", "schedule": "0 0 * * $HOME", "duration": "1h"}]),
            ),
            vec![
                "spec.freezeWindows[0].schedule",
                "may only hold digits, month and day names",
            ],
        ),
    ];
    assert_refused(&plans, std::mem::take(&mut cases)).await;

    let mut long = named(valid_plan(), &n63);
    long["spec"]["waves"] = json!([{"name": n63}, {"name": "b.c", "after": [n63]}]);
    long["spec"]["readinessGates"] = json!([{"name": "Critical_Defects.zero-2", "manual": {}}]);
    long["spec"]["freezeWindows"] = json!([{"name": n63, "schedule": "0 0 28 MAR,JUN * ", "duration": "1h",
        "timeZone": "America/Argentina/Buenos_Aires"}]);
    long["spec"]["routing"] = json!({"gatewayAPI": {"parentRefs": [
        {"name": "public.gateways", "namespace": n63, "sectionName": "https.crm-1"}]}});
    assert_accepted(
        &plans,
        vec![
            ("names at their bounds", long),
            (
                "an Etc time zone",
                named(
                    plan_with(&["freezeWindows"], json!([{"name": "q", "schedule": "0 0 * * 1-5", "duration": "1h", "timeZone": "Etc/GMT+5"}])),
                    "tz",
                ),
            ),
            (
                "a ConfigMap name with dots",
                named(plan_with(&["routing"], json!({"configMap": {"name": "crm.routing-table"}})), "cm"),
            ),
        ],
    )
    .await;
    assert_accepted(
        &waves,
        vec![
            ("a wave name of 63 characters", named(valid_wave(), &n63)),
            (
                "a plan reference of 63 characters",
                named(wave_with(&["plan"], json!(n63)), "w2"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn subject_lists_must_name_someone_and_not_everyone() {
    let (client, ns) = admin_in_fresh_namespace("subjects").await;
    let waves = dynamic_api::<MigrationWave>(client.clone(), &ns);
    let plans = dynamic_api::<CutoverPlan>(client, &ns);
    let bad: Vec<(&str, Value, &str)> = vec![
        ("empty", json!({}), "must name at least one user or group"),
        (
            "empty lists",
            json!({"users": [], "groups": []}),
            "must name at least one user or group",
        ),
        (
            "every authenticated user",
            json!({"groups": ["sre", "system:authenticated"]}),
            "groups must not name system:authenticated",
        ),
        (
            "every anonymous request",
            json!({"groups": ["system:unauthenticated"]}),
            "groups must not name",
        ),
        (
            "every ServiceAccount",
            json!({"groups": ["system:serviceaccounts"]}),
            "every ServiceAccount",
        ),
        (
            "the anonymous user",
            json!({"users": ["system:anonymous"]}),
            "users must not name system:anonymous",
        ),
        (
            "a wildcard user",
            json!({"users": ["*"]}),
            "a wildcard (*) would match nobody",
        ),
        (
            "a wildcard group",
            json!({"groups": ["release-*"]}),
            "a wildcard (*) would match nobody",
        ),
        (
            "an empty user",
            json!({"users": [""]}),
            "not empty, no control characters",
        ),
        (
            "a padded group",
            json!({"groups": [" sre"]}),
            "no spaces at either end",
        ),
        (
            "a user with a newline",
            json!({"users": ["alice\n"]}),
            "no control characters",
        ),
    ];
    let mut plan_cases: Vec<OwnedCase> = Vec::new();
    let mut wave_cases: Vec<OwnedCase> = Vec::new();
    for (name, subjects, expected) in &bad {
        for (field, path) in [
            ("spec.approvers", vec!["approvers"]),
            ("spec.rollbackAuthority", vec!["rollbackAuthority"]),
        ] {
            plan_cases.push((
                format!("{field}: {name}"),
                plan_with(&path, subjects.clone()),
                vec![field.to_owned(), (*expected).to_owned()],
            ));
        }
        plan_cases.push((
            format!("gate approvers: {name}"),
            plan_with(
                &["readinessGates"],
                json!([{"name": "g", "manual": {"approvers": subjects}}]),
            ),
            vec![
                "spec.readinessGates[0].manual.approvers".to_owned(),
                (*expected).to_owned(),
            ],
        ));
        let mut wave = valid_wave();
        wave["spec"]["steps"][2] = json!({"approval": {"approvers": subjects}});
        wave_cases.push((
            format!("step approvers: {name}"),
            wave,
            vec![
                "spec.steps[2].approval.approvers".to_owned(),
                (*expected).to_owned(),
            ],
        ));
    }
    assert_refused(&plans, as_refs(&plan_cases)).await;
    assert_refused(&waves, as_refs(&wave_cases)).await;

    let fine = json!({
        "users": ["alice@example.com", "system:serviceaccount:crm:deployer", "John Doe"],
        "groups": ["release-managers", "system:serviceaccounts:crm", "system:masters"]
    });
    let mut plan = named(valid_plan(), "fine");
    plan["spec"]["approvers"] = json!({"groups": ["release-managers"]});
    plan["spec"]["rollbackAuthority"] = fine.clone();
    plan["spec"]["readinessGates"] =
        json!([{"name": "g", "manual": {"approvers": {"users": ["carol"]}}}]);
    let mut wave = named(valid_wave(), "fine");
    wave["spec"]["steps"][2] = json!({"approval": {"approvers": fine}});
    assert_accepted(&plans, vec![("named subjects", plan)]).await;
    assert_accepted(&waves, vec![("named subjects", wave)]).await;
}

#[tokio::test]
async fn hostnames_parent_refs_and_backends_must_be_usable() {
    let (client, ns) = admin_in_fresh_namespace("routing").await;
    let plans = dynamic_api::<CutoverPlan>(client, &ns);
    let hosts = |h: Value| plan_with(&["routing", "gatewayAPI", "hostnames"], h);
    let parents = |p: Value| plan_with(&["routing", "gatewayAPI", "parentRefs"], p);
    let service = |name: &str, port: i32| json!({"service": {"name": name, "port": port}});
    let mut cases: Vec<(&str, Value, Vec<&str>)> = Vec::new();
    for (name, host) in [
        ("upper case", "CRM.example.com"),
        ("an underscore", "crm_1.example.com"),
        ("a bare wildcard", "*"),
        ("a wildcard in the middle", "crm.*.example.com"),
        ("two wildcards", "*.*.example.com"),
        ("a wildcard without its dot", "*example.com"),
        ("a trailing dot", "crm.example.com."),
        ("a space", "crm example.com"),
        ("a port", "crm.example.com:443"),
        ("an IPv4 address", "10.0.0.1"),
        ("a leading dash", "-crm.example.com"),
        ("an empty label", "crm..example.com"),
    ] {
        cases.push((
            name,
            hosts(json!(["ok.example.com", host])),
            vec![
                "spec.routing.gatewayAPI.hostnames",
                "must be DNS names such as crm.example.com",
            ],
        ));
    }
    cases.push((
        "a repeated hostname",
        hosts(json!(["crm.example.com", "crm.example.com"])),
        vec!["spec.routing.gatewayAPI.hostnames must not repeat a hostname"],
    ));
    cases.push((
        "a hostname of 254 characters",
        hosts(json!([format!("{}.com", "a.".repeat(125))])),
        vec!["spec.routing.gatewayAPI.hostnames"],
    ));
    cases.push((
        "the same Gateway twice",
        parents(
            json!([{"name": "public", "namespace": "gw"}, {"name": "public", "namespace": "gw"}]),
        ),
        vec!["spec.routing.gatewayAPI.parentRefs must be unique"],
    ));
    cases.push((
        "the same listener twice",
        parents(json!([{"name": "public", "sectionName": "https"}, {"name": "public", "sectionName": "https"}])),
        vec!["spec.routing.gatewayAPI.parentRefs must be unique"],
    ));
    cases.push((
        "one Gateway, once whole and once by listener",
        parents(json!([{"name": "public"}, {"name": "public", "sectionName": "https"}])),
        vec![
            "spec.routing.gatewayAPI.parentRefs",
            "must each set sectionName or port",
        ],
    ));
    cases.push((
        "the target is the legacy backend",
        plan_with(&["target"], service("legacy-crm", 80)),
        vec!["spec.target must not be the legacy backend (the same Service and port)"],
    ));
    cases.push((
        "maintenance is the legacy backend",
        plan_with(&["maintenance"], service("legacy-crm", 80)),
        vec!["spec.maintenance must not be the legacy backend"],
    ));
    cases.push((
        "maintenance is the target backend",
        plan_with(&["maintenance"], service("orchestration", 8080)),
        vec!["spec.maintenance must not be the target backend"],
    ));
    assert_refused(&plans, cases).await;

    let longest_host = format!(
        "{}.com",
        "a".repeat(63) + "." + &"b".repeat(63) + "." + &"c".repeat(63) + "." + &"d".repeat(57)
    );
    assert_eq!(longest_host.len(), 253);
    assert_accepted(
        &plans,
        vec![
            (
                "wildcards, digits, a single label and 253 characters",
                named(
                    hosts(json!([
                        "*.example.com",
                        "crm-1.example.com",
                        "localhost",
                        "1crm.example.com",
                        longest_host
                    ])),
                    "r1",
                ),
            ),
            (
                "one Gateway by two listeners and two ports",
                named(
                    parents(json!([
                        {"name": "public", "sectionName": "http"},
                        {"name": "public", "sectionName": "https"},
                        {"name": "internal", "port": 80},
                        {"name": "internal", "port": 443},
                        {"name": "public", "namespace": "other"}
                    ])),
                    "r2",
                ),
            ),
            (
                "the legacy Service on another port",
                named(plan_with(&["target"], service("legacy-crm", 8080)), "r3"),
            ),
            (
                "maintenance of its own",
                named(
                    plan_with(&["maintenance"], service("crm-maintenance", 80)),
                    "r4",
                ),
            ),
        ],
    )
    .await;
}
