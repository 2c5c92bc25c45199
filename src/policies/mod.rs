//! ValidatingAdmissionPolicies shipped with Switchyard, generated like the CRDs and kept
//! in `policies/`.
//!
//! Human actions are entries of `spec.actions` (see the API reference). These policies
//! make the API server, not the client, vouch for who made each one, so that the
//! operator can check authority itself (`engine::authority`):
//! - a new entry must record exactly the requesting user and groups (no spoofing), and
//!   on a wave the UID of the plan it was checked against;
//! - one new entry per request, none on CREATE, the last slots kept for Pause and
//!   Rollback; recorded entries can never be edited or removed, except that the
//!   operator may drop the processed ones it compacts;
//! - changing anything else (spec, labels, annotations, finalizers, ownerReferences)
//!   needs the `update` verb on the resource, which editors hold and release managers
//!   do not (they `patch`, to append actions). The operator, which alone may patch the
//!   status subresource, may change only Switchyard's finalizers and compact.
//!
//! The `operator*` and `routing_tables` modules hold the operator itself to least
//! privilege.

pub mod operator;
pub mod operator_pod;
pub mod routing_tables;
mod verify;
pub use verify::verify;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde_json::json;

/// The policy and binding names.
pub const ACTIONS_POLICY: &str = "switchyard-actions-record-the-requester";
/// Who may act on a wave: the plan's approvers and rollback authority.
pub const WAVE_AUTHORITY_POLICY: &str = "switchyard-wave-action-authority";
/// Who may pass a plan's manual gates: the plan's approvers.
pub const GATE_AUTHORITY_POLICY: &str = "switchyard-gate-pass-authority";

/// CEL: whether the requester is in the Subjects at `path` (users or groups).
fn member_of(path: &str) -> String {
    format!(
        "has({path}) && ((has({path}.users) && request.userInfo.username in {path}.users) || \
         (has({path}.groups) && request.userInfo.groups.exists(g, g in {path}.groups)))"
    )
}

/// CEL: the Subjects at `path`, for a denial message.
fn describe(path: &str) -> String {
    format!(
        "'users: ' + (has({path}) && has({path}.users) ? {path}.users.join(', ') : 'none') + \
         '; groups: ' + (has({path}) && has({path}.groups) ? {path}.groups.join(', ') : 'none')"
    )
}

/// CEL variables shared by the authority policies: the entries this request adds.
fn new_actions_variables() -> serde_json::Value {
    json!([
        {"name": "actions", "expression": "has(object.spec.actions) ? object.spec.actions : []"},
        {"name": "oldActions", "expression": "oldObject != null && has(oldObject.spec.actions) ? oldObject.spec.actions : []"},
        {"name": "newActions", "expression":
            "size(variables.actions) >= size(variables.oldActions) ? variables.actions.slice(size(variables.oldActions), size(variables.actions)) : []"}
    ])
}

fn labels() -> serde_json::Value {
    json!({"app.kubernetes.io/part-of": "switchyard"})
}

fn binding_for(
    policy: &str,
    param_ref: Option<serde_json::Value>,
) -> ValidatingAdmissionPolicyBinding {
    let mut spec = json!({"policyName": policy, "validationActions": ["Deny"]});
    if let Some(param_ref) = param_ref {
        spec["paramRef"] = param_ref;
    }
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy, "labels": labels()},
        "spec": spec
    }))
    .expect("a valid ValidatingAdmissionPolicyBinding")
}

/// CEL: whether the Approve entry `a` is for a step that names its own approvers (in the
/// wave as stored before the request, so nobody names themselves and approves at once).
fn step_has_own_approvers(a: &str) -> String {
    format!(
        "(has({a}.step) && {a}.step < size(variables.steps) && has(variables.steps[{a}.step].approval) && \
         has(variables.steps[{a}.step].approval.approvers))"
    )
}

/// Approvals need the step's own approvers where the step names them, else the plan's;
/// pauses need the plan's approvers or its rollback authority; rollbacks and retries its
/// rollback authority. A policy cannot read another object by a name taken from the
/// request, so every CutoverPlan of the wave's namespace is a parameter, and each rule
/// only speaks for the parameter that is the wave's own plan.
fn wave_authority() -> ValidatingAdmissionPolicy {
    let approver = member_of("params.spec.approvers");
    let authority = member_of("params.spec.rollbackAuthority");
    let own = step_has_own_approvers("a");
    let step_member = member_of("variables.steps[a.step].approval.approvers");
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": WAVE_AUTHORITY_POLICY, "labels": labels()},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "switchyard.dev/v1alpha1", "kind": "CutoverPlan"},
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["switchyard.dev"], "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["migrationwaves"]
            }]},
            "variables": new_actions_variables().as_array().unwrap().iter().cloned().chain([
                json!({"name": "ownPlan", "expression": "params.metadata.name == object.spec.plan"}),
                json!({"name": "approver", "expression": approver}),
                json!({"name": "authority", "expression": authority}),
                json!({"name": "steps", "expression": "oldObject != null ? oldObject.spec.steps : object.spec.steps"}),
                json!({"name": "deniedSteps", "expression":
                    format!("variables.newActions.filter(a, a.type == 'Approve' && {own} && !({step_member}))")}),
            ]).collect::<Vec<_>>(),
            "validations": [
                {
                    "expression": format!("!variables.ownPlan || variables.approver || !variables.newActions.exists(a, a.type == 'Approve' && !{own})"),
                    "messageExpression": format!("'only the approvers of CutoverPlan ' + params.metadata.name + ' may approve a step (' + {} + ')'", describe("params.spec.approvers")),
                    "reason": "Forbidden"
                },
                {
                    "expression": "!variables.ownPlan || size(variables.deniedSteps) == 0",
                    "messageExpression": format!(
                        "'only the approvers of step ' + string(variables.deniedSteps[0].step) + ' of MigrationWave ' + object.metadata.name + ' may approve it (' + {} + ')'",
                        describe("variables.steps[variables.deniedSteps[0].step].approval.approvers")),
                    "reason": "Forbidden"
                },
                {
                    "expression": "!variables.ownPlan || variables.authority || !variables.newActions.exists(a, a.type == 'Rollback' || a.type == 'Retry')",
                    "messageExpression": format!("'only the rollbackAuthority of CutoverPlan ' + params.metadata.name + ' may roll back or retry a wave (' + {} + ')'", describe("params.spec.rollbackAuthority")),
                    "reason": "Forbidden"
                },
                {
                    "expression": "!variables.ownPlan || variables.newActions.all(a, has(a.planUID) && a.planUID == params.metadata.uid)",
                    "messageExpression": "'a new action must name the plan it is recorded under: write planUID: ' + params.metadata.uid + ' (CutoverPlan ' + params.metadata.name + ')'",
                    "reason": "Forbidden"
                },
                {
                    "expression": "!variables.ownPlan || variables.approver || variables.authority || !variables.newActions.exists(a, a.type == 'Pause' || a.type == 'Resume')",
                    "messageExpression": "'only the approvers or the rollbackAuthority of CutoverPlan ' + params.metadata.name + ' may pause or resume a wave'",
                    "reason": "Forbidden"
                }
            ]
        }
    }))
    .expect("a valid ValidatingAdmissionPolicy")
}

/// Gate passes need the gate's own approvers where it names them, else the plan's
/// approvers; both as they were before this request (so nobody adds themselves and
/// passes a gate in one write).
fn gate_authority() -> ValidatingAdmissionPolicy {
    let approver = member_of("oldObject.spec.approvers");
    let gate = "oldObject.spec.readinessGates.filter(g, g.name == a.gate)[0]";
    let own = "(has(oldObject.spec.readinessGates) && oldObject.spec.readinessGates.exists(g, g.name == a.gate && has(g.manual) && has(g.manual.approvers)))";
    let gate_member = member_of(&format!("{gate}.manual.approvers"));
    let denied = "variables.deniedGates[0]";
    let denied_own = own.replace("a.gate", &format!("{denied}.gate"));
    let denied_gate = gate.replace("a.gate", &format!("{denied}.gate"));
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": GATE_AUTHORITY_POLICY, "labels": labels()},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["switchyard.dev"], "apiVersions": ["v1alpha1"],
                "operations": ["UPDATE"], "resources": ["cutoverplans"]
            }]},
            "variables": new_actions_variables().as_array().unwrap().iter().cloned().chain([
                json!({"name": "approver", "expression": approver}),
                json!({"name": "deniedGates", "expression":
                    format!("variables.newActions.filter(a, a.type == 'PassGate' && !({own} ? ({gate_member}) : variables.approver))")}),
            ]).collect::<Vec<_>>(),
            "validations": [{
                "expression": "variables.newActions.all(a, a.type != 'PassGate' || (has(oldObject.spec.readinessGates) && oldObject.spec.readinessGates.exists(g, g.name == a.gate && has(g.manual))))",
                "messageExpression": "'gate ' + variables.newActions.filter(a, a.type == 'PassGate')[0].gate + ' is not a manual readiness gate of CutoverPlan ' + object.metadata.name + ' as it stands; only existing manual gates can be passed'",
                "reason": "Invalid"
            }, {
                "expression": "size(variables.deniedGates) == 0",
                "messageExpression": format!(
                    "{denied_own} ? 'only the approvers of gate ' + {denied}.gate + ' of CutoverPlan ' + object.metadata.name + ' may pass it (' + {} + ')' : 'only the approvers of CutoverPlan ' + object.metadata.name + ' may pass a gate (' + {} + ')'",
                    describe(&format!("{denied_gate}.manual.approvers")),
                    describe("oldObject.spec.approvers")),
                "reason": "Forbidden"
            }]
        }
    }))
    .expect("a valid ValidatingAdmissionPolicy")
}

/// CEL: the map or list at `path` of `metadata`, or `empty` when unset.
fn meta(object: &str, field: &str, empty: &str) -> String {
    format!("(has({object}.metadata.{field}) ? {object}.metadata.{field} : {empty})")
}

/// CEL: metadata `field` is the same in the object and as stored (`empty` when unset).
fn unchanged(field: &str, empty: &str) -> String {
    format!(
        "{} == {}",
        meta("object", field, empty),
        meta("oldObject", field, empty)
    )
}

/// CEL: the compaction count an object's annotation holds (0 when absent or garbled,
/// so that a bad value cannot make every later request fail to evaluate).
fn compacted(object: &str) -> String {
    let annotations = meta(object, "annotations", "{}");
    format!(
        "('{COMPACTED}' in {annotations} && {annotations}['{COMPACTED}'].matches('^[0-9]{{1,12}}$') ? int({annotations}['{COMPACTED}']) : 0)"
    )
}

const COMPACTED: &str = crate::engine::action_log::COMPACTED_ANNOTATION;

/// Who may do what to the object itself, and what a new action must record.
///
/// - Editors (`update`) may change anything but recorded actions.
/// - The operator (it may patch the status subresource; nobody else needs to) may add or
///   remove Switchyard's finalizers and compact processed actions (drop a prefix it has
///   processed, raising the `actions-compacted` annotation by as many).
/// - Everyone else may only append one action per request: no other spec field, and no
///   labels, annotations, finalizers or ownerReferences.
fn actions_policy() -> ValidatingAdmissionPolicy {
    let labels_same = unchanged("labels", "{}");
    let annotations_same = unchanged("annotations", "{}");
    let finalizers_same = unchanged("finalizers", "[]");
    let owners_same = unchanged("ownerReferences", "[]");
    let (new_ann, old_ann) = (
        meta("object", "annotations", "{}"),
        meta("oldObject", "annotations", "{}"),
    );
    let annotations_same_but_compaction = format!(
        "{new_ann}.all(k, k == '{COMPACTED}' || (k in {old_ann} && {new_ann}[k] == {old_ann}[k])) && {old_ann}.all(k, k == '{COMPACTED}' || k in {new_ann})"
    );
    let foreign = "filter(f, !f.startsWith('switchyard.dev/'))";
    let finalizers_same_but_ours = format!(
        "{}.{foreign} == {}.{foreign}",
        meta("object", "finalizers", "[]"),
        meta("oldObject", "finalizers", "[]")
    );
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": ACTIONS_POLICY, "labels": labels()},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["switchyard.dev"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["migrationwaves", "cutoverplans"]
            }]},
            "variables": [
                {"name": "actions", "expression": "has(object.spec.actions) ? object.spec.actions : []"},
                {"name": "oldActions", "expression": "oldObject != null && has(oldObject.spec.actions) ? oldObject.spec.actions : []"},
                {"name": "appendOnly", "expression":
                    "size(variables.actions) >= size(variables.oldActions) && variables.actions.slice(0, size(variables.oldActions)) == variables.oldActions"},
                {"name": "newActions", "expression":
                    "variables.appendOnly ? variables.actions.slice(size(variables.oldActions), size(variables.actions)) : []"},
                {"name": "mayEditSpec", "expression":
                    "authorizer.group('switchyard.dev').resource(request.resource.resource).namespace(object.metadata.namespace).name(object.metadata.name).check('update').allowed()"},
                {"name": "mayWriteStatus", "expression":
                    "authorizer.group('switchyard.dev').resource(request.resource.resource).subresource('status').namespace(object.metadata.namespace).name(object.metadata.name).check('patch').allowed()"},
                {"name": "dropped", "expression": format!("oldObject == null ? 0 : {} - {}", compacted("object"), compacted("oldObject"))},
                {"name": "processedUncompacted", "expression": format!(
                    "oldObject != null && has(oldObject.status) && has(oldObject.status.actionsProcessed) ? oldObject.status.actionsProcessed - {} : 0", compacted("oldObject"))},
                {"name": "compaction", "expression":
                    "variables.mayWriteStatus && variables.dropped > 0 && variables.dropped <= variables.processedUncompacted && variables.dropped <= size(variables.oldActions) && variables.actions == variables.oldActions.slice(variables.dropped, size(variables.oldActions))"},
                {"name": "specUnchanged", "expression":
                    "oldObject == null || (object.spec.all(k, k == 'actions' || (k in oldObject.spec && object.spec[k] == oldObject.spec[k])) && oldObject.spec.all(k, k == 'actions' || k in object.spec))"},
                {"name": "metadataUnchanged", "expression": format!(
                    "oldObject == null || ({labels_same} && {annotations_same} && {finalizers_same} && {owners_same})")},
                {"name": "operatorMetadataOnly", "expression": format!(
                    "oldObject != null && {labels_same} && {owners_same} && {annotations_same_but_compaction} && {finalizers_same_but_ours}")},
                {"name": "groups", "expression": "has(request.userInfo.groups) ? request.userInfo.groups : []"},
            ],
            "validations": [
                {
                    "expression": "variables.appendOnly || variables.compaction",
                    "message": "spec.actions is append-only: recorded actions cannot be edited or removed; add a new entry instead",
                    "reason": "Forbidden"
                },
                {
                    "expression": "oldObject != null || size(variables.actions) == 0",
                    "message": "spec.actions must be empty when the object is created: actions are recorded on an existing object (kubectl wave), so that admission can check them against it",
                    "reason": "Forbidden"
                },
                {
                    "expression": "size(variables.newActions) <= 1",
                    "message": "spec.actions takes one new entry per request",
                    "reason": "Forbidden"
                },
                {
                    "expression": format!("size(variables.oldActions) < {} || variables.newActions.all(a, a.type == 'Pause' || a.type == 'Rollback')", crate::engine::action_log::RESERVED_FROM),
                    "message": format!("spec.actions holds {} entries or more: the remaining slots are kept for Pause and Rollback until the operator compacts the log", crate::engine::action_log::RESERVED_FROM),
                    "reason": "Forbidden"
                },
                {
                    "expression": "variables.newActions.all(a, a.user == request.userInfo.username && (has(a.groups) ? a.groups : []).all(g, g in variables.groups) && variables.groups.all(g, g in (has(a.groups) ? a.groups : [])))",
                    "messageExpression": "'a new entry in spec.actions must record the requesting user and groups exactly: write user: ' + request.userInfo.username + ' and groups: [' + variables.groups.join(', ') + ']'",
                    "reason": "Forbidden"
                },
                {
                    "expression": "variables.mayEditSpec || (variables.specUnchanged && (variables.metadataUnchanged || (variables.mayWriteStatus && variables.operatorMetadataOnly)))",
                    "messageExpression": "'only users who may update ' + request.resource.resource + ' (the switchyard-editor role) may change the spec, labels, annotations, finalizers or ownerReferences; ' + request.userInfo.username + ' may only append to spec.actions'",
                    "reason": "Forbidden"
                }
            ]
        }
    }))
    .expect("a valid ValidatingAdmissionPolicy")
}

/// The policies that vouch for human actions (who recorded them, with what authority),
/// and their bindings: what the operator checks is installed before it applies actions.
pub fn action_policies() -> (
    Vec<ValidatingAdmissionPolicy>,
    Vec<ValidatingAdmissionPolicyBinding>,
) {
    let plans_of_the_namespace = json!({"selector": {}, "parameterNotFoundAction": "Allow"});
    (
        vec![actions_policy(), wave_authority(), gate_authority()],
        vec![
            binding_for(ACTIONS_POLICY, None),
            binding_for(WAVE_AUTHORITY_POLICY, Some(plans_of_the_namespace)),
            binding_for(GATE_AUTHORITY_POLICY, None),
        ],
    )
}

/// Every policy and binding, in apply order: the action policies, then those that
/// hold the operator to least privilege.
pub fn all() -> (
    Vec<ValidatingAdmissionPolicy>,
    Vec<ValidatingAdmissionPolicyBinding>,
) {
    operator::and_operator_policies(action_policies())
}

/// All of them as one YAML stream, as kept in `policies/actions.yaml`.
pub fn yaml() -> String {
    let (policies, bindings) = all();
    let mut out =
        String::from("# Generated from src/policies.rs by `switchyard policies`. Do not edit.\n");
    let documents: Vec<String> = policies
        .iter()
        .map(|p| serde_yaml::to_string(p).expect("renders"))
        .chain(
            bindings
                .iter()
                .map(|b| serde_yaml::to_string(b).expect("renders")),
        )
        .collect();
    out.push_str(&documents.join("---\n"));
    out
}
