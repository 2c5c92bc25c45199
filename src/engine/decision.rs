//! What the engine decided.

use jiff::Timestamp;

use super::route::RoutingState;
use crate::api::MigrationWaveStatus;

/// The engine's answer for one wave.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// What the cohort's routing must be.
    pub routing: RoutingIntent,
    /// The wave's new status. The controller writes it only if it differs.
    pub status: MigrationWaveStatus,
    /// Events to emit: one per transition.
    pub events: Vec<EngineEvent>,
    /// When to reconcile again, if anything is due by time alone.
    pub requeue_at: Option<Timestamp>,
    /// Processed entries to remove from `spec.actions`, once the status is written.
    pub compact: Option<super::action_log::Compaction>,
}

/// What to do with the cohort's routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingIntent {
    /// Route the cohort like this.
    Route(RoutingState),
    /// Remove the cohort's routing: it falls back to legacy.
    Remove,
    /// Touch nothing (the configuration is broken; see the Valid condition).
    Leave,
}

/// Whether an Event reports something normal or something to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// A Kubernetes Event to emit for a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineEvent {
    /// Normal or Warning.
    pub kind: EventKind,
    /// A constant reason (a history event or condition reason).
    pub reason: String,
    /// What happened, for people.
    pub note: String,
}
