//! The pure decision core.
//!
//! `decide(spec, status, observations, now)` takes what the controller observed and
//! returns what should be true: the cohort's routing, the new status, the Events to emit
//! and when to look again. It has no client, no clock and no I/O, so every rule of a
//! wave's lifecycle is tested here, by table tests and property tests of the invariants
//! in DESIGN.md §4. Before it, the validate stage ([`validate`]) says whether the wave
//! and its plan hold together and builds the wave's route. Nothing here imports the
//! routers, the controllers or a client.

pub mod action_log;
pub mod authority;
pub mod cohorts;
pub mod conditions;
mod decision;
pub mod freeze;
mod observations;
pub mod plan;
pub mod route;
pub mod validate;
mod wave;

pub use decision::{Decision, EngineEvent, EventKind, RoutingIntent};
pub use observations::{
    AlertState, FiringAlert, Hold, MetricObservation, MetricOutcome, MetricPolicy, Observations,
    PlanPermission, PlanRollback, Problem,
};
pub use wave::{
    MAX_HISTORY, decide, describe_step, evidence_horizon, is_routed, routing_for_step, weight_at,
    when_routing_failed,
};

use jiff::Timestamp;

/// Status timestamps have whole-second precision on the wire; the engine works in the
/// same precision so that a decision read back from the API server is identical.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).expect("a valid timestamp stays valid when truncated")
}
