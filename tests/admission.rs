//! Admission against a real kube-apiserver: every invalid case is refused with a message
//! that names the field and says what is allowed, and valid objects are accepted.

mod common;

use common::{admin_in_fresh_namespace, dynamic_api, refusal};
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
