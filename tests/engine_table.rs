//! Table tests of the pure engine, from the YAML scenarios in tests/fixtures/engine.
//!
//! Each scenario is a wave spec and a list of ticks. A tick appends human actions,
//! states what was observed and the time, runs `decide` once on the previous tick's
//! status, and checks what the decision says. No API server.

use std::{collections::BTreeMap, path::Path};

use jiff::Timestamp;
use serde::Deserialize;
use switchyard::{
    api::{FailureAction, MigrationWaveSpec, MigrationWaveStatus, WaveAction},
    engine::{
        self, AlertState, FiringAlert, Hold, MetricObservation, MetricOutcome, MetricPolicy,
        Observations, PlanPermission, PlanRollback, Problem, RoutingIntent,
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    description: String,
    spec: MigrationWaveSpec,
    ticks: Vec<Tick>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Tick {
    at: Timestamp,
    #[serde(default)]
    actions: Vec<WaveAction>,
    #[serde(default)]
    observe: Observe,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Observe {
    #[serde(default = "yes")]
    may_start: bool,
    hold: Option<HoldFixture>,
    plan_rollback: Option<String>,
    #[serde(default)]
    metrics: Vec<MetricFixture>,
    /// The names of the metrics that apply to the wave, evaluated or not.
    analysis_metrics: Option<Vec<String>>,
    #[serde(default)]
    alerts: Vec<BTreeMap<String, String>>,
    /// The firing alerts may be incomplete (a new leader rebuilding them), with this
    /// message.
    alerts_unknown: Option<String>,
    #[serde(default)]
    problems: Vec<String>,
    next_evaluation_at: Option<Timestamp>,
}

fn yes() -> bool {
    true
}

impl Default for Observe {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("an empty observation parses")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HoldFixture {
    reason: String,
    message: String,
    until: Option<Timestamp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MetricFixture {
    name: String,
    outcome: String,
    value: Option<f64>,
    at: Timestamp,
    #[serde(default = "one")]
    failure_limit: u32,
    on_failure: Option<FailureAction>,
    on_no_data: Option<FailureAction>,
    on_error: Option<FailureAction>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    phase: String,
    step: Option<i32>,
    weight: Option<i32>,
    /// `remove`, `leave`, or `weight/quiet/override` such as `10/-/-` or `100/-/override`.
    routing: String,
    /// The history events this tick added, in order.
    #[serde(default)]
    events: Vec<String>,
    /// `now`, `never`, or a timestamp.
    requeue: String,
    /// Condition type to `True/Reason` or `False/Reason`.
    #[serde(default)]
    conditions: BTreeMap<String, String>,
    approved_by: Option<String>,
    dual_access_until: Option<Timestamp>,
    /// Metric name to consecutive failures.
    #[serde(default)]
    failures: BTreeMap<String, i32>,
    attempt: Option<i32>,
}

/// The group the table's plan authorises for every action.
const TABLE_ACTORS: &str = "table-actors";

fn everyone_in_the_table() -> switchyard::api::Subjects {
    switchyard::api::Subjects {
        users: Vec::new(),
        groups: vec![TABLE_ACTORS.into()],
    }
}

fn observations(observe: &Observe, generation: i64) -> Observations {
    Observations {
        generation: Some(generation),
        problems: observe
            .problems
            .iter()
            .map(|p| match p.as_str() {
                "PlanNotFound" => Problem::PlanNotFound { plan: "crm".into() },
                "BackendNotFound" => Problem::BackendNotFound {
                    role: "target",
                    service: "orchestration".into(),
                },
                "UnknownCohortKey" => Problem::UnknownCohortKey {
                    key: "tier".into(),
                    known: vec!["team".into()],
                },
                other => panic!("unknown problem {other}"),
            })
            .collect(),
        plan: PlanPermission {
            may_start: observe.may_start,
            hold: observe.hold.as_ref().map(|h| Hold {
                reason: h.reason.clone(),
                message: h.message.clone(),
                until: h.until,
            }),
            rollback: observe.plan_rollback.as_ref().map(|message| PlanRollback {
                message: message.clone(),
            }),
        },
        metrics: observe
            .metrics
            .iter()
            .map(|m| MetricObservation {
                name: m.name.clone(),
                outcome: MetricOutcome::parse(&m.outcome).expect("a known outcome"),
                value: m.value,
                evaluated_at: m.at,
                message: None,
                policy: MetricPolicy {
                    failure_limit: m.failure_limit,
                    on_failure: m.on_failure.unwrap_or(FailureAction::Pause),
                    on_no_data: m.on_no_data.unwrap_or(FailureAction::Pause),
                    on_error: m.on_error.unwrap_or(FailureAction::Pause),
                },
            })
            .collect(),
        analysis_metrics: observe.analysis_metrics.clone(),
        next_evaluation_at: observe.next_evaluation_at,
        firing_alerts: observe
            .alerts
            .iter()
            .map(|labels| FiringAlert {
                name: labels.get("alertname").cloned().unwrap_or_default(),
                labels: labels.clone(),
            })
            .collect(),
        alert_state: match &observe.alerts_unknown {
            Some(message) => AlertState::Unknown {
                message: message.clone(),
            },
            None => AlertState::Known,
        },
        authority: switchyard::engine::authority::Authority {
            admission: switchyard::engine::authority::Admission::Verified,
            plan: Some(switchyard::engine::authority::PlanAuthority {
                uid: "plan-uid".into(),
                name: "crm".into(),
                approvers: Some(everyone_in_the_table()),
                rollback_authority: Some(everyone_in_the_table()),
            }),
        },
        actions_compacted: 0,
    }
}

fn routing_text(routing: &RoutingIntent) -> String {
    match routing {
        RoutingIntent::Remove => "remove".into(),
        RoutingIntent::Leave => "leave".into(),
        RoutingIntent::Route(state) => format!(
            "{}/{}/{}",
            state.target_weight,
            if state.quiet { "quiet" } else { "-" },
            if state.legacy_override {
                "override"
            } else {
                "-"
            }
        ),
    }
}

fn run(path: &Path) {
    let scenario: Scenario = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = format!(
        "{} ({})",
        path.file_name().unwrap().to_string_lossy(),
        scenario.description
    );
    let mut spec = scenario.spec;
    let mut status = MigrationWaveStatus::default();
    for (n, tick) in scenario.ticks.iter().enumerate() {
        let at = format!("{name}, tick {n} at {}", tick.at);
        // The table's actions are recorded as admission vouches for them, under the
        // plan's UID and with the group the plan authorises, unless a scenario says
        // otherwise (to show a refusal).
        spec.actions
            .extend(tick.actions.iter().cloned().map(|mut a| {
                if a.groups.is_empty() {
                    a.groups = vec![TABLE_ACTORS.into()];
                }
                a.plan_uid.get_or_insert_with(|| "plan-uid".into());
                a
            }));
        let obs = observations(&tick.observe, 1);
        let decision = engine::decide(&spec, &status, &obs, tick.at);
        let got = &decision.status;
        let expect = &tick.expect;
        assert_eq!(format!("{:?}", got.phase), expect.phase, "{at}: phase");
        assert_eq!(got.step_index, expect.step, "{at}: step");
        assert_eq!(got.target_weight, expect.weight, "{at}: weight");
        assert_eq!(
            routing_text(&decision.routing),
            expect.routing,
            "{at}: routing"
        );
        let new_events: Vec<&str> = got.history[status.history.len().min(got.history.len())..]
            .iter()
            .map(|h| h.event.as_str())
            .collect();
        assert_eq!(new_events, expect.events, "{at}: history events");
        assert_eq!(
            decision.events.len(),
            new_events.len(),
            "{at}: one Event per history entry"
        );
        let requeue = match decision.requeue_at {
            None => "never".to_owned(),
            Some(t) if t == engine::whole_seconds(tick.at) => "now".to_owned(),
            Some(t) => t.to_string(),
        };
        assert_eq!(requeue, expect.requeue, "{at}: requeue");
        for (type_, want) in &expect.conditions {
            let c = got
                .conditions
                .iter()
                .find(|c| &c.type_ == type_)
                .unwrap_or_else(|| panic!("{at}: no {type_} condition"));
            assert_eq!(
                &format!("{}/{}", c.status, c.reason),
                want,
                "{at}: condition {type_}: {}",
                c.message
            );
        }
        assert_eq!(got.approved_by, expect.approved_by, "{at}: approvedBy");
        assert_eq!(
            got.dual_access_until.as_ref().map(|t| t.0),
            expect.dual_access_until,
            "{at}: dualAccessUntil"
        );
        for (metric, failures) in &expect.failures {
            let m = got
                .analysis
                .iter()
                .find(|m| &m.name == metric)
                .unwrap_or_else(|| panic!("{at}: no status for {metric}"));
            assert_eq!(
                m.consecutive_failures, *failures,
                "{at}: failures of {metric}"
            );
        }
        if let Some(attempt) = expect.attempt {
            assert_eq!(got.attempt, attempt, "{at}: attempt");
        }
        // Every tick is idempotent: deciding again on what it wrote, at the same time,
        // changes nothing unless something was due right now.
        if decision.requeue_at != Some(engine::whole_seconds(tick.at)) {
            let again = engine::decide(&spec, got, &obs, tick.at);
            assert_eq!(
                &again.status, got,
                "{at}: a second decision changed the status"
            );
            assert!(
                again.events.is_empty(),
                "{at}: a second decision emitted events"
            );
        }
        status = decision.status;
    }
}

#[test]
fn engine_scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engine");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the scenario fixtures, found {}",
        files.len()
    );
    for file in files {
        run(&file);
    }
}
