//! Whether a recorded human action may take effect: the operator's own check of
//! authority, behind admission's.
//!
//! Admission refuses unauthorised actions at once wherever it can see the plan. Where it
//! cannot (the plan did not exist yet, the policies were not installed), an action could
//! be recorded that nobody authorised. So the operator checks every action again before
//! applying it, on the identity admission vouched for in the entry (user and groups),
//! and refuses it visibly when:
//! - Switchyard's admission policies are not known to be installed and current, so the
//!   recorded identity itself may be forged;
//! - the wave's plan does not exist, or is not the plan the action was recorded under
//!   (`planUID`): an action recorded before its plan existed never takes effect;
//! - the recorded identity is not among the subjects the plan, step or gate names now.
//!   Authority revoked between recording and applying wins: that fails closed.

use crate::api::{
    ApprovalStep, CutoverPlanSpec, MigrationWaveSpec, PlanAction, Subjects, WaveAction,
    WaveActionType,
};

/// Whether the identity recorded in actions can be believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Admission {
    /// Not checked yet (the operator just started): actions wait, unprocessed.
    #[default]
    Unknown,
    /// Switchyard's admission policies and bindings are installed and current.
    Verified,
    /// They are missing or outdated: every human action is refused, with why.
    Missing { message: String },
    /// The operator was started with `--trust-actions-without-admission-policies`: the
    /// recorded identity is believed without the policies.
    Trusted,
}

impl Admission {
    /// Whether actions can be judged now (otherwise they wait).
    pub fn is_known(&self) -> bool {
        !matches!(self, Admission::Unknown)
    }
}

/// What a wave's actions are judged against.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Authority {
    /// Whether recorded identities can be believed.
    pub admission: Admission,
    /// The wave's plan as it stands now, when it exists.
    pub plan: Option<PlanAuthority>,
}

/// The parts of a plan that say who may act.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanAuthority {
    /// The plan's `metadata.uid`.
    pub uid: String,
    /// The plan's name, for messages.
    pub name: String,
    /// Who may approve steps (and pause or resume).
    pub approvers: Option<Subjects>,
    /// Who may roll back and retry (and pause or resume).
    pub rollback_authority: Option<Subjects>,
}

impl PlanAuthority {
    /// The authority of `spec`, a plan with `uid`.
    pub fn of(name: &str, uid: &str, spec: &CutoverPlanSpec) -> Self {
        Self {
            uid: uid.to_owned(),
            name: name.to_owned(),
            approvers: spec.approvers.clone(),
            rollback_authority: spec.rollback_authority.clone(),
        }
    }
}

/// The AdmissionPolicies condition: whether human actions can take effect, and why.
pub fn condition(admission: &Admission) -> Option<(bool, &'static str, String)> {
    match admission {
        Admission::Unknown => None,
        Admission::Verified => Some((
            true,
            super::conditions::reason::POLICIES_IN_FORCE,
            "Switchyard's admission policies are installed and current".into(),
        )),
        Admission::Trusted => Some((
            true,
            super::conditions::reason::POLICIES_NOT_REQUIRED,
            "the operator trusts recorded identities without admission policies \
             (--trust-actions-without-admission-policies)"
                .into(),
        )),
        Admission::Missing { message } => Some((
            false,
            super::conditions::reason::POLICIES_MISSING,
            format!(
                "human actions are refused until Switchyard's admission policies are installed: {message}"
            ),
        )),
    }
}

/// When the last decision found the policies not in force (the `AdmissionPolicies`
/// condition is False), entries not processed since may have been recorded without them,
/// even if the policies are back now (the operator may have been down in between): the
/// refusal they get. Fails closed; people record them again.
pub fn was_missing(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<Refusal> {
    super::conditions::get(conditions, super::conditions::ADMISSION_POLICIES)
        .filter(|c| c.status == "False")
        .map(|_| {
            Refusal(
                "it may have been recorded while Switchyard's admission policies were not in \
                 force, so its recorded identity cannot be trusted; record it again"
                    .into(),
            )
        })
}

/// Why an action was refused, for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Whether `subjects` include the user or one of the groups.
fn admits(subjects: Option<&Subjects>, user: &str, groups: &[String]) -> bool {
    subjects.is_some_and(|s| {
        s.users.iter().any(|u| u == user) || s.groups.iter().any(|g| groups.contains(g))
    })
}

fn admission_refusal(admission: &Admission) -> Option<Refusal> {
    match admission {
        Admission::Verified | Admission::Trusted => None,
        Admission::Unknown => Some(Refusal(
            "the operator has not checked Switchyard's admission policies yet".into(),
        )),
        Admission::Missing { message } => Some(Refusal(format!(
            "Switchyard's admission policies are not in force ({message}), so the recorded \
             identity cannot be trusted; install them (the Helm chart does) and record the \
             action again"
        ))),
    }
}

/// Checks one wave action against the authority as it stands.
pub fn check_wave_action(
    action: &WaveAction,
    wave: &MigrationWaveSpec,
    authority: &Authority,
) -> Result<(), Refusal> {
    if let Some(refusal) = admission_refusal(&authority.admission) {
        return Err(refusal);
    }
    let Some(plan) = &authority.plan else {
        return Err(Refusal(format!(
            "CutoverPlan {:?} does not exist, so nobody can be authorised to act on this wave",
            wave.plan
        )));
    };
    if action.plan_uid.as_deref() != Some(plan.uid.as_str()) {
        return Err(Refusal(format!(
            "the action was not recorded under CutoverPlan {} as it exists now (planUID {}, \
             the plan's is {}); record it again",
            plan.name,
            action.plan_uid.as_deref().unwrap_or("missing"),
            plan.uid
        )));
    }
    let (user, groups) = (action.user.as_str(), action.groups.as_slice());
    let approver = admits(plan.approvers.as_ref(), user, groups);
    let authority_member = admits(plan.rollback_authority.as_ref(), user, groups);
    let allowed = match action.action {
        WaveActionType::Approve => {
            let step_approvers = action
                .step
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| wave.steps.get(i))
                .and_then(|s| s.approval.as_ref())
                .and_then(|a: &ApprovalStep| a.approvers.as_ref());
            match step_approvers {
                Some(own) => admits(Some(own), user, groups)
                    .then_some(())
                    .ok_or("the step's own approvers"),
                None => approver.then_some(()).ok_or("the plan's approvers"),
            }
        }
        WaveActionType::Pause | WaveActionType::Resume => (approver || authority_member)
            .then_some(())
            .ok_or("the plan's approvers or rollbackAuthority"),
        WaveActionType::Rollback | WaveActionType::Retry => authority_member
            .then_some(())
            .ok_or("the plan's rollbackAuthority"),
    };
    allowed.map_err(|who| {
        Refusal(format!(
            "{user} (groups: {}) is not among {who} in CutoverPlan {}",
            describe_groups(groups),
            plan.name
        ))
    })
}

/// Checks one gate pass against the plan as it stands: the gate must exist and be
/// manual, and the passer must be among its own approvers, or else the plan's.
pub fn check_gate_pass(
    action: &PlanAction,
    plan: &CutoverPlanSpec,
    admission: &Admission,
) -> Result<(), Refusal> {
    if let Some(refusal) = admission_refusal(admission) {
        return Err(refusal);
    }
    let Some(gate) = plan.readiness_gates.iter().find(|g| g.name == action.gate) else {
        return Err(Refusal(format!(
            "gate {} is not a readiness gate of this plan",
            action.gate
        )));
    };
    let Some(manual) = &gate.manual else {
        return Err(Refusal(format!(
            "gate {} is not a manual gate: it passes by its query alone",
            action.gate
        )));
    };
    let (user, groups) = (action.user.as_str(), action.groups.as_slice());
    let (subjects, who) = match manual.approvers.as_ref() {
        Some(own) => (Some(own), "the gate's own approvers"),
        None => (plan.approvers.as_ref(), "the plan's approvers"),
    };
    if admits(subjects, user, groups) {
        Ok(())
    } else {
        Err(Refusal(format!(
            "{user} (groups: {}) is not among {who} for gate {}",
            describe_groups(groups),
            action.gate
        )))
    }
}

fn describe_groups(groups: &[String]) -> String {
    if groups.is_empty() {
        "none recorded".into()
    } else {
        groups.join(", ")
    }
}
