//! Fresh evidence: a forward move that analysis guards happens only on evaluations made
//! at or after the moment the move became due.
//!
//! Every forward move (the start of the wave, the end of each step: a higher weight,
//! the next step, the retirement of legacy, completion) has a *horizon*:
//!
//! | the move                          | its horizon                                   |
//! |-----------------------------------|-----------------------------------------------|
//! | start (Pending to the first step) | the decision's time                           |
//! | past a `setWeight` step           | the step's start (`stepStartedAt`)            |
//! | past an `analysis` or `quiet` step | the step's end (`stepStartedAt` + duration)  |
//! | past an `approval` step           | the decision's time (after the approval)      |
//! | past a `dualAccess` step          | the window's end (`dualAccessUntil`)          |
//!
//! The move happens only if every metric that applies to the wave was last evaluated
//! at or after the horizon, and Healthy. The horizon is never later than the decision,
//! and never earlier than the start of the step the move leaves: no move rests on an
//! evaluation older than the step or the move it guards. The controller asks for the
//! horizon before it observes ([`evidence_horizon`]) and has any metric whose latest
//! evaluation is Healthy but older evaluated at once, so a step keeps its duration.

use jiff::Timestamp;

use super::{StepKind, Wave, add, parse_steps};
use crate::api::{MigrationWaveSpec, MigrationWaveStatus, WavePhase};
use crate::engine::conditions::reason;
use crate::engine::observations::Observations;
use crate::engine::whole_seconds;

/// What the history and the Event of an analysis step say when no metric applies to
/// the wave: the step is a timed hold (see docs/design-decisions.md).
pub(super) const NO_METRICS: &str =
    " (no analysis metrics apply to this wave: a timed hold, watched only by alerts and people)";

impl Wave<'_> {
    /// Whether the controller said that no analysis metric applies to the wave.
    pub(super) fn no_metrics(&self) -> bool {
        self.obs
            .analysis_metrics
            .as_ref()
            .is_some_and(Vec::is_empty)
            && self.obs.metrics.is_empty()
    }

    /// The metrics a forward move needs evidence for: those that apply to the wave,
    /// and any other that was observed.
    fn required_metrics(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .obs
            .analysis_metrics
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        for observed in &self.obs.metrics {
            if !names.contains(&observed.name.as_str()) {
                names.push(&observed.name);
            }
        }
        names
    }

    /// The horizon of the wave's next forward move, if that move is due now but for
    /// the evidence: nothing else (a problem, a plan hold, a pause, the plan's order,
    /// an alert, an approval still missing, a step's time) holds it.
    pub(super) fn evidence_horizon(&self) -> Option<Timestamp> {
        if !self.obs.problems.is_empty() || self.obs.plan.hold.is_some() {
            return None;
        }
        let horizon = match self.phase() {
            WavePhase::Pending => {
                let may_start = self.obs.plan.may_start
                    && self.obs.plan.rollback.is_none()
                    && self.matching_alert().is_none();
                return may_start.then_some(self.now);
            }
            WavePhase::Progressing
            | WavePhase::AwaitingApproval
            | WavePhase::Quiet
            | WavePhase::DualAccess => {
                let (_, kind) = self.step()?;
                if !self.step_done() {
                    return None;
                }
                let started = self.status.step_started_at.as_ref().map(|t| t.0);
                match kind {
                    StepKind::SetWeight(_) => started.unwrap_or(self.now),
                    StepKind::Analysis(d) | StepKind::Quiet(d) => {
                        started.map_or(self.now, |s| add(s, d))
                    }
                    StepKind::Approval => self.now,
                    StepKind::DualAccess(_) => self
                        .status
                        .dual_access_until
                        .as_ref()
                        .map_or(self.now, |t| t.0),
                }
            }
            _ => return None,
        };
        Some(horizon.min(self.now))
    }

    /// Why the evidence does not allow the next forward move, if it does not: a metric
    /// whose latest outcome is not Healthy, or, when the move is due, a metric not
    /// evaluated at or after its horizon.
    pub(super) fn evidence_block(&self) -> Option<(&'static str, String)> {
        if let Some(block) = self.metrics_block() {
            return Some(block);
        }
        let horizon = self.evidence_horizon()?;
        for name in self.required_metrics() {
            match self.obs.metrics.iter().find(|m| m.name == name) {
                None => {
                    return Some((
                        reason::AWAITING_EVIDENCE,
                        format!("metric {name} has not been evaluated yet; waiting for it"),
                    ));
                }
                Some(m) if whole_seconds(m.evaluated_at) < horizon => {
                    return Some((
                        reason::AWAITING_EVIDENCE,
                        format!(
                            "metric {name} was last evaluated at {}, before {horizon}; \
                             moving on needs an evaluation at or after {horizon}",
                            whole_seconds(m.evaluated_at)
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }
}

/// The moment at or after which the wave's metrics must have been evaluated for its
/// next forward move, if that move is due now but for the evidence (see the module
/// documentation). The controller calls it before observing: a metric whose latest
/// evaluation is Healthy but older than the horizon is evaluated at once, and a
/// pending wave's metrics are evaluated only then. `None`: no move is due, so the
/// metrics are only evaluated on their interval. Pure, like [`super::decide`].
pub fn evidence_horizon(
    spec: &MigrationWaveSpec,
    status: &MigrationWaveStatus,
    observations: &Observations,
    now: Timestamp,
) -> Option<Timestamp> {
    let steps = parse_steps(spec).ok()?;
    let wave = Wave {
        spec,
        obs: observations,
        steps,
        now: whole_seconds(now),
        status: status.clone(),
        events: Vec::new(),
        new_pause: None,
        new_rollback: None,
    };
    wave.evidence_horizon()
}
