//! ValidatingAdmissionPolicies shipped with Switchyard, generated like the CRDs and kept
//! in `policies/`.
//!
//! Human actions are entries of `spec.actions` (see the API reference). These policies
//! make the API server, not the client, vouch for who made each one:
//! - a new entry must record exactly the requesting user (no spoofing);
//! - recorded entries can never be edited or removed (append-only).
//!
//! The operator itself never writes `spec.actions` (it writes status and finalizers), so
//! it needs no exemption: its writes leave the list unchanged, which passes both rules.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde_json::json;

/// The policy and binding names.
pub const ACTIONS_POLICY: &str = "switchyard-actions-record-the-requester";

/// The policies and their bindings, in apply order.
pub fn all() -> (
    Vec<ValidatingAdmissionPolicy>,
    Vec<ValidatingAdmissionPolicyBinding>,
) {
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": ACTIONS_POLICY, "labels": {"app.kubernetes.io/part-of": "switchyard"}},
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
                    "size(variables.actions) >= size(variables.oldActions) && variables.actions.slice(0, size(variables.oldActions)) == variables.oldActions"}
            ],
            "validations": [
                {
                    "expression": "variables.appendOnly",
                    "message": "spec.actions is append-only: recorded actions cannot be edited or removed; add a new entry instead",
                    "reason": "Forbidden"
                },
                {
                    "expression": "!variables.appendOnly || variables.actions.slice(size(variables.oldActions), size(variables.actions)).all(a, a.user == request.userInfo.username)",
                    "messageExpression": "'a new entry in spec.actions must record the requesting user: write user: ' + request.userInfo.username",
                    "reason": "Forbidden"
                }
            ]
        }
    }))
    .expect("a valid ValidatingAdmissionPolicy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": ACTIONS_POLICY, "labels": {"app.kubernetes.io/part-of": "switchyard"}},
        "spec": {"policyName": ACTIONS_POLICY, "validationActions": ["Deny"]}
    }))
    .expect("a valid ValidatingAdmissionPolicyBinding");
    (vec![policy], vec![binding])
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
