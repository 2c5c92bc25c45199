//! Property tests of the wave engine's invariants (DESIGN.md §4, 1-5), over random specs,
//! random sequences of human actions and observations, and random clock jumps.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use switchyard::{
    api::{
        AlertSpec, DurationString, FailureAction, MigrationWaveSpec, MigrationWaveStatus, Step,
        Subjects, TimedStep, WaveAction, WaveActionType, WavePhase,
    },
    engine::{
        self, AlertState, FiringAlert, Hold, MetricObservation, MetricOutcome, MetricPolicy,
        Observations, PlanPermission, PlanRollback, RoutingIntent,
        authority::{Admission, Authority, PlanAuthority},
    },
};

fn timed(secs: u32) -> Option<TimedStep> {
    Some(TimedStep {
        duration: DurationString::new(format!("{secs}s")),
    })
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..=100i32).prop_map(|w| Step {
            set_weight: Some(w),
            ..Step::default()
        }),
        (1..120u32).prop_map(|d| Step {
            analysis: timed(d),
            ..Step::default()
        }),
        Just(Step {
            approval: Some(Default::default()),
            ..Step::default()
        }),
        (1..120u32).prop_map(|d| Step {
            quiet: timed(d),
            ..Step::default()
        }),
        (1..300u32).prop_map(|d| Step {
            dual_access: timed(d),
            ..Step::default()
        }),
    ]
}

fn spec_strategy() -> impl Strategy<Value = MigrationWaveSpec> {
    (
        prop::collection::vec(step_strategy(), 1..8),
        prop::option::of(prop::bool::ANY),
    )
        .prop_map(|(steps, alert_pauses)| MigrationWaveSpec {
            plan: "crm".into(),
            cohort: BTreeMap::from([("team".to_owned(), "support".to_owned())]),
            steps,
            analysis: None,
            alerts: alert_pauses.map(|pause| AlertSpec {
                match_labels: BTreeMap::from([("team".to_owned(), "support".to_owned())]),
                on_firing: Some(if pause {
                    FailureAction::Pause
                } else {
                    FailureAction::Rollback
                }),
                accept_unnamespaced: false,
            }),
            actions: Vec::new(),
        })
}

#[derive(Clone, Debug)]
enum Human {
    None,
    Pause,
    Resume,
    Rollback,
    Retry,
    ApproveCurrent,
    ApproveOther(i32),
}

#[derive(Clone, Debug)]
struct Event {
    /// Seconds the clock moves before this reconcile (sometimes far).
    jump: i64,
    human: Human,
    /// One metric's outcome this tick, or no metric at all.
    metric: Option<(MetricOutcome, u32, bool)>,
    alert: bool,
    /// The firing alerts may be incomplete (a new leader rebuilding them).
    alerts_unknown: bool,
    hold: bool,
    may_start: bool,
    plan_rollback: bool,
}

fn event_strategy() -> impl Strategy<Value = Event> {
    let human = prop_oneof![
        6 => Just(Human::None),
        1 => Just(Human::Pause),
        1 => Just(Human::Resume),
        1 => Just(Human::Rollback),
        1 => Just(Human::Retry),
        2 => Just(Human::ApproveCurrent),
        1 => (0..8i32).prop_map(Human::ApproveOther),
    ];
    let outcome = prop_oneof![
        4 => Just(MetricOutcome::Healthy),
        1 => Just(MetricOutcome::Breached),
        1 => Just(MetricOutcome::NoData),
        1 => Just(MetricOutcome::Error),
    ];
    (
        prop_oneof![3 => 0..5i64, 2 => 5..200i64, 1 => 200..100_000i64],
        human,
        prop::option::of((outcome, 1..4u32, prop::bool::ANY)),
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.03),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(jump, human, metric, alert, hold, may_start, plan_rollback, alerts_unknown)| Event {
                jump,
                human,
                metric,
                alert,
                alerts_unknown,
                hold,
                may_start,
                plan_rollback,
            },
        )
}

fn observations(event: &Event, now: Timestamp) -> Observations {
    Observations {
        generation: Some(1),
        problems: Vec::new(),
        plan: PlanPermission {
            may_start: event.may_start,
            hold: event.hold.then(|| Hold {
                reason: "FreezeWindow".into(),
                message: "frozen".into(),
                until: Some(now + SignedDuration::from_secs(3600)),
            }),
            rollback: event.plan_rollback.then(|| PlanRollback {
                message: "plan policy".into(),
            }),
        },
        metrics: event
            .metric
            .iter()
            .map(|(outcome, limit, rollback)| MetricObservation {
                name: "errors".into(),
                outcome: *outcome,
                value: Some(1.0),
                evaluated_at: now,
                message: None,
                policy: MetricPolicy {
                    failure_limit: *limit,
                    on_failure: if *rollback {
                        FailureAction::Rollback
                    } else {
                        FailureAction::Pause
                    },
                    on_no_data: FailureAction::Pause,
                    on_error: if *rollback {
                        FailureAction::Rollback
                    } else {
                        FailureAction::Pause
                    },
                },
            })
            .collect(),
        analysis_metrics: None,
        next_evaluation_at: event
            .metric
            .as_ref()
            .map(|_| now + SignedDuration::from_secs(10)),
        firing_alerts: event
            .alert
            .then(|| FiringAlert {
                name: "HandoffFailures".into(),
                labels: BTreeMap::from([("team".to_owned(), "support".to_owned())]),
            })
            .into_iter()
            .collect(),
        alert_state: if event.alerts_unknown {
            AlertState::Unknown {
                message: "rebuilding".into(),
            }
        } else {
            AlertState::Known
        },
        authority: Authority {
            admission: Admission::Verified,
            plan: Some(PlanAuthority {
                uid: "plan-uid".into(),
                name: "crm".into(),
                approvers: Some(release_managers()),
                rollback_authority: Some(release_managers()),
            }),
        },
        actions_compacted: 0,
    }
}

fn release_managers() -> Subjects {
    Subjects {
        users: Vec::new(),
        groups: vec!["release-managers".into()],
    }
}

fn action(human: &Human, status: &MigrationWaveStatus) -> Option<WaveAction> {
    let (kind, step) = match human {
        Human::None => return None,
        Human::Pause => (WaveActionType::Pause, None),
        Human::Resume => (WaveActionType::Resume, None),
        Human::Rollback => (WaveActionType::Rollback, None),
        Human::Retry => (WaveActionType::Retry, None),
        Human::ApproveCurrent => (
            WaveActionType::Approve,
            Some(status.step_index.unwrap_or(0)),
        ),
        Human::ApproveOther(step) => (WaveActionType::Approve, Some(*step)),
    };
    Some(WaveAction {
        action: kind,
        user: "alice".into(),
        groups: vec!["release-managers".into()],
        plan_uid: Some("plan-uid".into()),
        step,
        message: None,
    })
}

/// How far a wave has got: higher is further. Completed is past every step.
fn progress(status: &MigrationWaveStatus, steps: usize) -> i64 {
    match status.phase {
        WavePhase::Completed => steps as i64 + 1,
        WavePhase::Pending | WavePhase::RolledBack => -1,
        _ => status.step_index.map_or(-1, i64::from),
    }
}

fn weight(routing: &RoutingIntent) -> i32 {
    match routing {
        RoutingIntent::Route(state) => i32::from(state.target_weight),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_histories(
        mut spec in spec_strategy(),
        events in prop::collection::vec(event_strategy(), 1..60),
    ) {
        let steps = spec.steps.len();
        let mut now: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let mut status = MigrationWaveStatus::default();
        let mut routing = RoutingIntent::Remove;
        for event in &events {
            now += SignedDuration::from_secs(event.jump);
            let new_action = action(&event.human, &status);
            spec.actions.extend(new_action.clone());
            let obs = observations(event, now);
            let decision = engine::decide(&spec, &status, &obs, now);
            let next = &decision.status;
            let kind = new_action.as_ref().map(|a| a.action);
            let moved_forward = progress(next, steps) > progress(&status, steps)
                || weight(&decision.routing) > weight(&routing) && next.phase != WavePhase::Completed;

            // Invariant 1: no forward progress while held, breaching or unknown, paused,
            // or missing an approval.
            let metric_bad = event.metric.is_some_and(|(o, _, _)| o != MetricOutcome::Healthy);
            if event.hold || metric_bad {
                prop_assert!(!moved_forward, "moved forward while held or on a bad metric: {:?} -> {:?}", status.phase, next.phase);
            }
            // Issue 12: none either under an alert the operator may not know of.
            if event.alerts_unknown && spec.alerts.is_some() {
                prop_assert!(!moved_forward, "moved forward while the firing alerts were unknown: {:?} -> {:?}", status.phase, next.phase);
            }
            if status.phase == WavePhase::Paused && kind != Some(WaveActionType::Resume) {
                prop_assert!(!moved_forward, "a paused wave moved forward");
            }
            if kind == Some(WaveActionType::Pause) && status.phase != WavePhase::Paused {
                prop_assert!(!moved_forward, "moved forward in the reconcile that paused it");
            }
            let at_approval = status.step_index.and_then(|i| spec.steps.get(i as usize)).is_some_and(|s| s.approval.is_some());
            let approved_now = kind == Some(WaveActionType::Approve)
                && new_action.as_ref().and_then(|a| a.step) == status.step_index;
            if at_approval && status.approved_by.is_none() && !approved_now
                && matches!(status.phase, WavePhase::AwaitingApproval | WavePhase::Paused)
            {
                prop_assert!(!moved_forward, "passed an approval step without an approval");
            }

            // Issue 4: a breach at the limit acts (pause or rollback) and never advances.
            if let Some((MetricOutcome::Breached, limit, rollback)) = event.metric {
                let failures = next.analysis.iter().find(|m| m.name == "errors").map_or(0, |m| m.consecutive_failures);
                let was_routed = status.step_index.is_some()
                    && matches!(status.phase, WavePhase::Progressing | WavePhase::AwaitingApproval | WavePhase::Quiet | WavePhase::DualAccess);
                // Only a new evaluation acts; the same one seen again (the clock did not
                // move) is not counted twice, even if failureLimit changed meanwhile.
                let fresh = status
                    .analysis
                    .iter()
                    .find(|m| m.name == "errors")
                    .and_then(|m| m.evaluated_at.as_ref())
                    .is_none_or(|at| at.0 < engine::whole_seconds(now));
                if was_routed && fresh && kind.is_none() && failures as u32 >= limit {
                    let acted = if rollback { WavePhase::RolledBack } else { WavePhase::Paused };
                    prop_assert!(next.phase == acted || next.phase == WavePhase::RolledBack,
                        "a breach at the limit left the wave {:?}", next.phase);
                }
            }

            // Invariant 2: legacy access is never retired before the window has elapsed.
            if let RoutingIntent::Route(before) = routing
                && before.legacy_override
                && next.phase != WavePhase::RolledBack
                && !matches!(decision.routing, RoutingIntent::Route(after) if after.legacy_override)
            {
                let until = status.dual_access_until.as_ref().expect("dual access has an end").0;
                prop_assert!(now >= until, "legacy retired at {now}, window ends {until}");
            }

            // Invariant 3: a rollback always happens, and restores 100% legacy at once.
            let plan_rollback_applies = kind.is_none()
                && event.plan_rollback
                && status.step_index.is_some()
                && status.phase != WavePhase::Completed;
            if kind == Some(WaveActionType::Rollback) || plan_rollback_applies {
                prop_assert_eq!(next.phase, WavePhase::RolledBack);
                prop_assert_eq!(decision.routing, RoutingIntent::Remove);
            }

            // Invariant 4: a rolled-back wave stays rolled back until an explicit retry.
            if status.phase == WavePhase::RolledBack && kind != Some(WaveActionType::Retry) {
                prop_assert_eq!(next.phase, WavePhase::RolledBack);
                prop_assert_eq!(decision.routing, RoutingIntent::Remove);
            }
            if next.phase != WavePhase::RolledBack && status.phase == WavePhase::RolledBack {
                prop_assert_eq!(next.attempt, status.attempt + 1, "left RolledBack without a recorded retry");
                prop_assert!(next.history.iter().any(|h| h.event == "Retried" && h.actor.as_deref() == Some("alice")));
            }

            // Invariant 5: deciding again on the same observations writes nothing,
            // unless a transition was due right now; and repeating settles.
            let mut settled = decision.clone();
            for _ in 0..=steps + 2 {
                let again = engine::decide(&spec, &settled.status, &obs, now);
                if again.status == settled.status && again.routing == settled.routing {
                    prop_assert!(again.events.is_empty(), "an unchanged decision emitted events");
                    break;
                }
                prop_assert_eq!(settled.requeue_at, Some(engine::whole_seconds(now)),
                    "the status changed on a second decision although nothing was due");
                settled = again;
            }
            let last = engine::decide(&spec, &settled.status, &obs, now);
            prop_assert_eq!(&last.status, &settled.status, "did not settle");

            status = decision.status;
            routing = decision.routing;
        }
    }
}

// Fresh evidence (issue 11, finding 5; DESIGN.md §7): no forward move on an evaluation
// older than the step or the move it guards.

/// What the controller hands over for one metric at a tick.
#[derive(Clone, Copy, Debug)]
enum Eval {
    /// Evaluated at this tick.
    Now(MetricOutcome),
    /// The previous evaluation again (the metric was not due), or none if there was none.
    Same,
    /// An evaluation this many seconds old.
    Ago(i64, MetricOutcome),
    /// Not evaluated at all (as for a pending wave the controller did not evaluate).
    Missing,
}

#[derive(Clone, Debug)]
struct Tick {
    jump: i64,
    human: Human,
    evals: [Eval; 2],
    hold: bool,
    may_start: bool,
}

const METRICS: [&str; 2] = ["errors", "latency"];

fn tick_strategy() -> impl Strategy<Value = Tick> {
    let human = prop_oneof![
        8 => Just(Human::None),
        1 => Just(Human::Pause),
        2 => Just(Human::Resume),
        1 => Just(Human::Rollback),
        1 => Just(Human::Retry),
        3 => Just(Human::ApproveCurrent),
    ];
    let outcome = prop_oneof![
        8 => Just(MetricOutcome::Healthy),
        1 => Just(MetricOutcome::Breached),
        1 => Just(MetricOutcome::NoData),
    ];
    let eval = prop_oneof![
        3 => outcome.clone().prop_map(Eval::Now),
        5 => Just(Eval::Same),
        2 => (0..400i64, outcome).prop_map(|(ago, o)| Eval::Ago(ago, o)),
        1 => Just(Eval::Missing),
    ];
    (
        prop_oneof![3 => 0..3i64, 3 => 3..120i64, 1 => 120..10_000i64],
        human,
        [eval.clone(), eval],
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(jump, human, evals, hold, may_start)| Tick {
            jump,
            human,
            evals,
            hold,
            may_start,
        })
}

fn seconds(step: &Step) -> Option<SignedDuration> {
    step.analysis.as_ref().or(step.quiet.as_ref()).map(|t| {
        SignedDuration::from_secs(t.duration.as_str().trim_end_matches('s').parse().unwrap())
    })
}

/// The moment the evidence for a move from `before` must be no older than, worked out
/// from the rule itself: the start of the step the move leaves and, for a step that
/// ends by time or approval, that end; for a start, the moment of the start.
fn required_since(
    spec: &MigrationWaveSpec,
    before: &MigrationWaveStatus,
    after: &MigrationWaveStatus,
    approved_now: bool,
    now: Timestamp,
) -> Timestamp {
    let now = engine::whole_seconds(now);
    let Some(index) = before
        .step_index
        .filter(|_| after.attempt == before.attempt && before.phase != WavePhase::RolledBack)
    else {
        return now;
    };
    let step = &spec.steps[index as usize];
    let started = before.step_started_at.as_ref().map_or(now, |t| t.0);
    if let Some(d) = seconds(step) {
        started + d
    } else if step.dual_access.is_some() {
        before
            .dual_access_until
            .as_ref()
            .expect("dual access has an end")
            .0
    } else if step.approval.is_some() {
        if approved_now {
            now
        } else {
            before
                .history
                .iter()
                .rev()
                .find(|h| h.event == "Approved")
                .map_or(started, |h| h.at.0.max(started))
        }
    } else {
        started
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn no_forward_move_rests_on_an_evaluation_older_than_the_step_or_the_move(
        mut spec in spec_strategy(),
        ticks in prop::collection::vec(tick_strategy(), 1..60),
    ) {
        spec.alerts = None;
        let steps = spec.steps.len();
        let mut now: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let mut status = MigrationWaveStatus::default();
        let mut routing = RoutingIntent::Remove;
        let mut last: [Option<(Timestamp, MetricOutcome)>; 2] = [None, None];
        for tick in &ticks {
            now += SignedDuration::from_secs(tick.jump);
            let new_action = action(&tick.human, &status);
            spec.actions.extend(new_action.clone());
            for (slot, eval) in last.iter_mut().zip(tick.evals) {
                *slot = match eval {
                    Eval::Now(outcome) => Some((now, outcome)),
                    Eval::Same => *slot,
                    Eval::Ago(ago, outcome) => Some((now - SignedDuration::from_secs(ago), outcome)),
                    Eval::Missing => None,
                };
            }
            let obs = Observations {
                generation: Some(1),
                plan: PlanPermission {
                    may_start: tick.may_start,
                    hold: tick.hold.then(|| Hold {
                        reason: "FreezeWindow".into(),
                        message: "frozen".into(),
                        until: Some(now + SignedDuration::from_secs(3600)),
                    }),
                    rollback: None,
                },
                metrics: METRICS
                    .iter()
                    .zip(last)
                    .filter_map(|(name, eval)| {
                        let (at, outcome) = eval?;
                        Some(MetricObservation {
                            name: (*name).into(),
                            outcome,
                            value: Some(0.0),
                            evaluated_at: at,
                            message: None,
                            policy: MetricPolicy::default(),
                        })
                    })
                    .collect(),
                analysis_metrics: Some(METRICS.iter().map(|m| (*m).to_owned()).collect()),
                next_evaluation_at: Some(now + SignedDuration::from_secs(3600)),
                ..Observations::default()
            };
            let decision = engine::decide(&spec, &status, &obs, now);
            let next = &decision.status;
            let retired = matches!(routing, RoutingIntent::Route(r) if r.legacy_override)
                && next.phase != WavePhase::RolledBack
                && !matches!(decision.routing, RoutingIntent::Route(r) if r.legacy_override);
            let moved = progress(next, steps) > progress(&status, steps) || retired;
            if moved {
                let approved_now = new_action.as_ref().is_some_and(|a| {
                    a.action == WaveActionType::Approve && a.step == status.step_index
                });
                let since = required_since(&spec, &status, next, approved_now, now);
                for metric in METRICS {
                    let seen = obs.metrics.iter().find(|m| m.name == metric);
                    prop_assert!(seen.is_some(), "moved {:?} step {:?} -> {:?} step {:?} without evaluating {metric}",
                        status.phase, status.step_index, next.phase, next.step_index);
                    let seen = seen.unwrap();
                    prop_assert_eq!(seen.outcome, MetricOutcome::Healthy, "moved on {} {:?}", metric, seen.outcome);
                    prop_assert!(engine::whole_seconds(seen.evaluated_at) >= since,
                        "moved {:?} step {:?} -> {:?} step {:?} at {} on {metric} evaluated at {}, older than {since}",
                        status.phase, status.step_index, next.phase, next.step_index, now, seen.evaluated_at);
                }
            }
            // The horizon the controller asks for is what the decision needs: with every
            // metric evaluated Healthy at or after it, a due move happens in the same
            // reconcile, so the controller never waits for the next interval.
            if let Some(horizon) = engine::evidence_horizon(&spec, &status, &obs, now) {
                prop_assert!(horizon <= engine::whole_seconds(now));
                if let Some(started) = status.step_started_at.as_ref().filter(|_| status.step_index.is_some()) {
                    prop_assert!(horizon >= started.0, "a horizon before the step started");
                }
                let fresh = METRICS.iter().all(|name| obs.metrics.iter().any(|m| {
                    m.name == *name && m.outcome == MetricOutcome::Healthy
                        && engine::whole_seconds(m.evaluated_at) >= horizon
                }));
                if fresh && new_action.is_none() {
                    prop_assert!(moved, "fresh Healthy evidence at the horizon {horizon} did not move the wave ({:?} step {:?})",
                        status.phase, status.step_index);
                }
            }
            status = decision.status;
            routing = decision.routing;
        }
    }
}
