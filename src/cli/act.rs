//! The actions of `kubectl wave`: what each one checks before it writes (so that a
//! release manager hears "nothing to approve" instead of a silently ignored entry), and
//! the JSON patch that appends it to `spec.actions`.

use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{
    CutoverPlan, MigrationWave, PlanAction, PlanActionType, WaveAction, WaveActionType, WavePhase,
};
use crate::engine::{conditions as cond, describe_step};

/// A human action on a wave, as the command line gives it.
#[derive(Clone, Debug, PartialEq)]
pub enum WaveCommand {
    /// Approve the approval step `step` (the current step when None).
    Approve {
        /// The step index.
        step: Option<i32>,
        /// The approval note.
        message: Option<String>,
    },
    /// Hold the wave.
    Pause {
        /// Why.
        message: Option<String>,
    },
    /// Continue a paused wave.
    Resume {
        /// Why.
        message: Option<String>,
    },
    /// Send the cohort back to legacy.
    Rollback {
        /// Why.
        reason: Option<String>,
    },
    /// Start a rolled-back wave again.
    Retry {
        /// Why.
        message: Option<String>,
    },
}

/// Why an action is not sent: the wave or plan is not in a state where it would do
/// anything. Each message is one line a release manager can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The wave is not waiting at the approval step asked for.
    #[error("nothing to approve: {0}")]
    NothingToApprove(String),
    /// The action would be ignored in the wave's current state.
    #[error("{0}")]
    NotApplicable(String),
    /// The same action is recorded and the operator has not processed it yet.
    #[error("already requested: {0}")]
    AlreadyRequested(String),
    /// The plan has no such gate, or it is not a manual gate.
    #[error("{0}")]
    NoSuchGate(String),
    /// The object says Switchyard's admission policies are not in force: the operator
    /// would refuse the entry, so it is not recorded.
    #[error("{0}")]
    PoliciesNotInForce(String),
}

/// Refuses to record while `conditions` say the admission policies are not in force (or
/// were not, at the operator's last look): the operator refuses such entries, and a
/// release manager should hear it before, not after.
fn policies_in_force(
    kind: &str,
    name: &str,
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Result<(), ActionError> {
    match cond::get(conditions, cond::ADMISSION_POLICIES).filter(|c| c.status == "False") {
        None => Ok(()),
        Some(c) => Err(ActionError::PoliciesNotInForce(format!(
            "not recorded: {kind} {name} says Switchyard's admission policies are not in \
             force ({}), so the operator would refuse any human action; once they are \
             reinstalled and its AdmissionPolicies condition is True, act again",
            c.message
        ))),
    }
}

/// What `-o json|yaml` prints after an action.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded<A: Serialize> {
    /// `MigrationWave` or `CutoverPlan`.
    pub kind: &'static str,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The entry appended to `spec.actions`.
    pub action: A,
    /// Its index in `spec.actions`.
    pub index: usize,
}

/// Who acts, as the API server authenticates them (a SelfSubjectReview). Admission
/// checks that an entry records exactly this.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The username.
    pub user: String,
    /// The groups.
    pub groups: Vec<String>,
}

/// The first entry of `spec.actions` the operator has not processed yet.
fn first_pending(meta: &kube::api::ObjectMeta, processed: i32, len: usize) -> usize {
    crate::engine::action_log::first_unprocessed(
        processed,
        crate::engine::action_log::compacted_of(meta.annotations.as_ref()),
        len,
    )
}

/// Checks `command` against the wave's state and builds the entry that records it for
/// `who`, under the wave's plan, whose UID is `plan_uid`.
pub fn wave_action(
    wave: &MigrationWave,
    command: &WaveCommand,
    who: &Identity,
    plan_uid: &str,
) -> Result<WaveAction, ActionError> {
    let status = wave.status.clone().unwrap_or_default();
    let name = wave.metadata.name.as_deref().unwrap_or_default();
    policies_in_force("wave", name, &status.conditions)?;
    let phase = status.phase;
    let at = match status.step_index {
        Some(i) => format!(
            "step {i} ({})",
            wave.spec
                .steps
                .get(i as usize)
                .map_or("?".into(), describe_step)
        ),
        None => "no step yet".into(),
    };
    let entry = |action: WaveActionType, step: Option<i32>, message: &Option<String>| WaveAction {
        action,
        user: who.user.clone(),
        groups: who.groups.clone(),
        plan_uid: Some(plan_uid.to_owned()),
        step,
        message: message.clone().filter(|m| !m.is_empty()),
    };
    let pending: Vec<&WaveAction> = wave
        .spec
        .actions
        .iter()
        .skip(first_pending(
            &wave.metadata,
            status.actions_processed,
            wave.spec.actions.len(),
        ))
        .collect();
    let action = match command {
        WaveCommand::Approve { step, message } => {
            let current = status.step_index;
            let step = match (step, current) {
                (Some(s), _) => *s,
                (None, Some(c)) => c,
                (None, None) => {
                    return Err(ActionError::NothingToApprove(format!(
                        "wave {name} has not started (it is {phase:?})"
                    )));
                }
            };
            let at_approval = current == Some(step)
                && wave
                    .spec
                    .steps
                    .get(step as usize)
                    .is_some_and(|s| s.approval.is_some());
            let waiting = matches!(phase, WavePhase::AwaitingApproval | WavePhase::Paused);
            if !at_approval || !waiting {
                return Err(ActionError::NothingToApprove(format!(
                    "wave {name} is {phase:?} at {at}, not waiting for approval of step {step}"
                )));
            }
            if let Some(by) = &status.approved_by {
                return Err(ActionError::NothingToApprove(format!(
                    "step {step} of wave {name} is already approved by {by}"
                )));
            }
            entry(WaveActionType::Approve, Some(step), message)
        }
        WaveCommand::Pause { message } => match phase {
            WavePhase::Paused if manually_paused(&status) => {
                return Err(ActionError::NotApplicable(format!(
                    "wave {name} is already paused"
                )));
            }
            WavePhase::Pending
            | WavePhase::Progressing
            | WavePhase::AwaitingApproval
            | WavePhase::Quiet
            | WavePhase::DualAccess => entry(WaveActionType::Pause, None, message),
            _ => {
                return Err(ActionError::NotApplicable(format!(
                    "nothing to pause: wave {name} is {phase:?}"
                )));
            }
        },
        WaveCommand::Resume { message } => match phase {
            WavePhase::Paused => entry(WaveActionType::Resume, None, message),
            _ => {
                return Err(ActionError::NotApplicable(format!(
                    "nothing to resume: wave {name} is {phase:?}, not Paused"
                )));
            }
        },
        WaveCommand::Rollback { reason } => match phase {
            WavePhase::RolledBack => {
                return Err(ActionError::NotApplicable(format!(
                    "wave {name} is already rolled back"
                )));
            }
            _ => entry(WaveActionType::Rollback, None, reason),
        },
        WaveCommand::Retry { message } => match phase {
            WavePhase::RolledBack | WavePhase::Failed => {
                entry(WaveActionType::Retry, None, message)
            }
            _ => {
                return Err(ActionError::NotApplicable(format!(
                    "nothing to retry: only a rolled-back wave can be retried, and {name} is {phase:?}"
                )));
            }
        },
    };
    if let Some(same) = pending
        .iter()
        .find(|p| p.action == action.action && p.step == action.step)
    {
        return Err(ActionError::AlreadyRequested(format!(
            "{:?} by {} is recorded on wave {name} and waits for the operator",
            same.action, same.user
        )));
    }
    Ok(action)
}

fn manually_paused(status: &crate::api::MigrationWaveStatus) -> bool {
    cond::get(&status.conditions, cond::PAUSED)
        .is_some_and(|c| c.status == "True" && c.reason == cond::reason::MANUAL_PAUSE)
}

/// Checks that `gate` is a manual gate of the plan not yet passed, and builds the entry
/// that passes it for `who`.
pub fn pass_gate(
    plan: &CutoverPlan,
    gate: &str,
    who: &Identity,
    message: Option<String>,
) -> Result<PlanAction, ActionError> {
    let name = plan.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = plan.spec.readiness_gates.iter().find(|g| g.name == gate) else {
        let manual: Vec<&str> = plan
            .spec
            .readiness_gates
            .iter()
            .filter(|g| g.manual.is_some())
            .map(|g| g.name.as_str())
            .collect();
        return Err(ActionError::NoSuchGate(format!(
            "plan {name} has no readiness gate {gate:?} (manual gates: {})",
            if manual.is_empty() {
                "none".into()
            } else {
                manual.join(", ")
            }
        )));
    };
    if spec.manual.is_none() {
        return Err(ActionError::NoSuchGate(format!(
            "gate {gate} of plan {name} is a prometheus gate: it passes by its query, not by hand"
        )));
    }
    let status = plan.status.clone().unwrap_or_default();
    policies_in_force("plan", name, &status.conditions)?;
    if let Some(passed) = status.gates.iter().find(|g| g.name == gate && g.passing) {
        return Err(ActionError::NotApplicable(format!(
            "gate {gate} of plan {name} is already passed by {}",
            passed.passed_by.as_deref().unwrap_or("someone")
        )));
    }
    if let Some(same) = plan
        .spec
        .actions
        .iter()
        .skip(first_pending(
            &plan.metadata,
            status.actions_processed,
            plan.spec.actions.len(),
        ))
        .find(|a| a.gate == gate)
    {
        return Err(ActionError::AlreadyRequested(format!(
            "{} passed gate {gate}; the operator has not processed it yet",
            same.user
        )));
    }
    Ok(PlanAction {
        action: PlanActionType::PassGate,
        user: who.user.clone(),
        groups: who.groups.clone(),
        gate: gate.to_owned(),
        message: message.filter(|m| !m.is_empty()),
    })
}

/// The JSON patch that appends `entry` to `spec.actions`, which holds `existing`
/// entries. It is guarded by the resourceVersion the command checked the action against,
/// so the entry lands only on the state it was checked on (and two first actions cannot
/// overwrite each other); a concurrent change makes it fail, and the command checks
/// again.
pub fn append_patch(entry: &impl Serialize, existing: usize, resource_version: &str) -> Value {
    let value = serde_json::to_value(entry).expect("actions serialize");
    let add = if existing == 0 {
        json!({"op": "add", "path": "/spec/actions", "value": [value]})
    } else {
        json!({"op": "add", "path": "/spec/actions/-", "value": value})
    };
    json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        add,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            user: "alice".into(),
            groups: vec!["release-managers".into()],
        }
    }

    fn wave(yaml: &str) -> MigrationWave {
        serde_yaml::from_str(yaml).unwrap()
    }

    const AT_APPROVAL: &str = r#"
apiVersion: switchyard.dev/v1alpha1
kind: MigrationWave
metadata: { name: support-emea, namespace: crm }
spec:
  plan: crm
  cohort: { team: support }
  steps: [{setWeight: 10}, {approval: {}}, {setWeight: 100}]
status: { phase: AwaitingApproval, stepIndex: 1, targetWeight: 10, actionsProcessed: 0 }
"#;

    #[test]
    fn approve_defaults_to_the_current_step() {
        let action = wave_action(
            &wave(AT_APPROVAL),
            &WaveCommand::Approve {
                step: None,
                message: Some("go".into()),
            },
            &alice(),
            "plan-uid",
        )
        .unwrap();
        assert_eq!(action.step, Some(1));
        assert_eq!(action.user, "alice");
        assert_eq!(action.groups, vec!["release-managers".to_owned()]);
        assert_eq!(action.plan_uid.as_deref(), Some("plan-uid"));
        assert_eq!(action.message.as_deref(), Some("go"));
    }

    #[test]
    fn nothing_is_recorded_while_the_wave_says_the_policies_are_missing() {
        let mut w = wave(AT_APPROVAL);
        cond::set(
            &mut w.status.as_mut().unwrap().conditions,
            cond::ADMISSION_POLICIES,
            false,
            cond::reason::POLICIES_MISSING,
            "binding switchyard-actions is missing",
            Some(1),
            jiff::Timestamp::UNIX_EPOCH,
        );
        let err = wave_action(
            &w,
            &WaveCommand::Rollback { reason: None },
            &alice(),
            "plan-uid",
        )
        .unwrap_err();
        assert!(matches!(err, ActionError::PoliciesNotInForce(_)), "{err}");
        assert!(
            err.to_string().contains("switchyard-actions is missing"),
            "{err}"
        );
    }

    #[test]
    fn approving_another_step_says_where_the_wave_is() {
        let err = wave_action(
            &wave(AT_APPROVAL),
            &WaveCommand::Approve {
                step: Some(2),
                message: None,
            },
            &alice(),
            "plan-uid",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "nothing to approve: wave support-emea is AwaitingApproval at step 1 (approval), not waiting for approval of step 2"
        );
    }

    #[test]
    fn a_recorded_but_unprocessed_approval_is_not_sent_twice() {
        let mut w = wave(AT_APPROVAL);
        w.spec.actions.push(WaveAction {
            action: WaveActionType::Approve,
            user: "bob".into(),
            groups: Vec::new(),
            plan_uid: None,
            step: Some(1),
            message: None,
        });
        let err = wave_action(
            &w,
            &WaveCommand::Approve {
                step: None,
                message: None,
            },
            &alice(),
            "plan-uid",
        )
        .unwrap_err();
        assert!(matches!(err, ActionError::AlreadyRequested(_)), "{err}");
    }

    #[test]
    fn retry_needs_a_rolled_back_wave() {
        let err = wave_action(
            &wave(AT_APPROVAL),
            &WaveCommand::Retry { message: None },
            &alice(),
            "plan-uid",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("nothing to retry"), "{err}");
        let err = wave_action(
            &wave(AT_APPROVAL),
            &WaveCommand::Resume { message: None },
            &alice(),
            "plan-uid",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("nothing to resume"), "{err}");
    }

    #[test]
    fn the_first_action_creates_the_list_under_a_resource_version_guard() {
        let entry = WaveAction {
            action: WaveActionType::Pause,
            user: "alice".into(),
            groups: Vec::new(),
            plan_uid: None,
            step: None,
            message: None,
        };
        let patch = append_patch(&entry, 0, "42");
        assert_eq!(patch[0]["op"], "test");
        assert_eq!(patch[0]["value"], "42");
        assert_eq!(patch[1]["path"], "/spec/actions");
        let patch = append_patch(&entry, 3, "43");
        assert_eq!(patch[0]["value"], "43");
        assert_eq!(patch[1]["path"], "/spec/actions/-");
        assert_eq!(patch[1]["value"]["user"], "alice");
    }
}
