//! Property tests of the plan engine: invariant 6 (waves respect plan order and
//! maxConcurrentWaves), and a freeze never blocks a rollback, over random plans and
//! random sequences of wave events.

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use switchyard::{
    api::{CutoverPlanSpec, CutoverPlanStatus, FreezeWindow, OnWaveFailure, WavePhase, WaveRef},
    engine::plan::{PlanObservations, WaveView, decide_plan},
};

#[derive(Clone, Debug)]
struct Plan {
    afters: Vec<Vec<usize>>,
    max: i32,
    policy: OnWaveFailure,
    frozen: bool,
}

fn plan_strategy() -> impl Strategy<Value = Plan> {
    (2..7usize)
        .prop_flat_map(|n| {
            let afters = (0..n)
                .map(|i| {
                    if i == 0 {
                        Just(Vec::new()).boxed()
                    } else {
                        prop::collection::vec(0..i, 0..3).boxed()
                    }
                })
                .collect::<Vec<_>>();
            (
                afters,
                1..4i32,
                prop_oneof![
                    Just(OnWaveFailure::PausePlan),
                    Just(OnWaveFailure::RollbackWave),
                    Just(OnWaveFailure::RollbackPlan)
                ],
                prop::bool::weighted(0.2),
            )
        })
        .prop_map(|(afters, max, policy, frozen)| Plan {
            afters,
            max,
            policy,
            frozen,
        })
}

fn spec(plan: &Plan) -> CutoverPlanSpec {
    let mut spec: CutoverPlanSpec = serde_json::from_value(serde_json::json!({
        "legacy": {"service": {"name": "l", "port": 80}},
        "target": {"service": {"name": "t", "port": 80}},
        "routing": {"configMap": {"name": "table"}},
        "cohortKeys": {"team": {"header": "x-team"}},
        "waves": [{"name": "w0"}]
    }))
    .unwrap();
    spec.waves = plan
        .afters
        .iter()
        .enumerate()
        .map(|(i, after)| WaveRef {
            name: format!("w{i}"),
            after: after.iter().map(|a| format!("w{a}")).collect(),
        })
        .collect();
    spec.max_concurrent_waves = Some(plan.max);
    spec.on_wave_failure = Some(plan.policy);
    if plan.frozen {
        // Every minute, for an hour: always open.
        spec.freeze_windows = vec![FreezeWindow {
            name: "always".into(),
            schedule: "* * * * *".into(),
            duration: "1h".into(),
            time_zone: Some("Europe/Berlin".into()),
        }];
    }
    spec
}

/// What happens to one wave between two plan decisions.
#[derive(Clone, Copy, Debug)]
enum Move {
    Nothing,
    Start,
    Complete,
    Fail,
    Retry,
}

fn move_strategy() -> impl Strategy<Value = Move> {
    prop_oneof![
        3 => Just(Move::Nothing),
        3 => Just(Move::Start),
        2 => Just(Move::Complete),
        1 => Just(Move::Fail),
        1 => Just(Move::Retry),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn waves_respect_order_and_concurrency_and_freezes_never_block_rollbacks(
        plan in plan_strategy(),
        moves in prop::collection::vec(prop::collection::vec(move_strategy(), 6), 1..40),
    ) {
        let spec = spec(&plan);
        let n = spec.waves.len();
        let mut waves: Vec<WaveView> = spec
            .waves
            .iter()
            .map(|w| WaveView { name: w.name.clone(), exists: true, phase: WavePhase::Pending, started: false, failure: None })
            .collect();
        let mut status = CutoverPlanStatus::default();
        let mut now: Timestamp = "2026-05-01T10:00:00Z".parse().unwrap();
        for round in &moves {
            let observations = PlanObservations { waves: waves.clone(), ..PlanObservations::default() };
            let decision = decide_plan(&spec, &status, &observations, now);
            let summary = |name: &str| decision.status.waves.iter().find(|w| w.name == name).unwrap().clone();

            // A freeze never blocks a rollback the policy requires.
            let failed = waves.iter().any(|w| w.failure.is_some());
            if failed && plan.policy == OnWaveFailure::RollbackPlan {
                for wave in waves.iter().filter(|w| w.active()) {
                    prop_assert!(summary(&wave.name).rollback.is_some(), "{} not told to roll back (frozen: {})", wave.name, plan.frozen);
                }
            }
            if plan.frozen {
                prop_assert!(decision.status.waves.iter().all(|w| !w.admitted), "a wave was admitted during a freeze");
            }

            for (i, mv) in round.iter().enumerate().take(n) {
                let s = summary(&waves[i].name);
                let wave = &mut waves[i];
                match mv {
                    // Waves start only when admitted (the wave engine's may_start).
                    Move::Start if wave.phase == WavePhase::Pending && s.admitted => {
                        wave.phase = WavePhase::Progressing;
                        wave.started = true;
                    }
                    Move::Complete if wave.active() => wave.phase = WavePhase::Completed,
                    Move::Fail if wave.active() => {
                        wave.phase = WavePhase::RolledBack;
                        wave.failure = Some("MetricBreached".into());
                    }
                    Move::Retry if wave.phase == WavePhase::RolledBack => {
                        wave.phase = WavePhase::Pending;
                        wave.started = false;
                        wave.failure = None;
                    }
                    _ => {}
                }
                // Waves told to roll back do.
                if s.rollback.is_some() && waves[i].active() {
                    waves[i].phase = WavePhase::RolledBack;
                }
            }

            // Invariant 6, after this round's starts.
            let active = waves.iter().filter(|w| w.active()).count();
            prop_assert!(active <= plan.max as usize, "{active} active waves, max {}", plan.max);
            for (i, wave) in waves.iter().enumerate() {
                if wave.started && wave.phase != WavePhase::RolledBack {
                    for dep in &plan.afters[i] {
                        prop_assert_eq!(waves[*dep].phase, WavePhase::Completed,
                            "w{} started before w{} completed", i, dep);
                    }
                }
            }
            status = decision.status;
            now += SignedDuration::from_secs(30);
        }
    }
}
