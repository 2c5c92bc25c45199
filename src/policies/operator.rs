//! Policies that bind Switchyard's own operator, where RBAC cannot.
//!
//! RBAC grants verbs on resources, optionally by object name; it cannot say "only
//! ConfigMaps with this label" or "only the label `switchyard.dev/leader` of the
//! requester's own Pod". These policies say it, for requests made by the operator's
//! ServiceAccount and nobody else:
//! - [`routing_tables`](super::routing_tables): it writes only ConfigMaps labelled as
//!   routing tables, and only HTTPRoutes labelled as Switchyard's;
//! - [`operator_pod`](super::operator_pod): it updates only its own Pod, and only the
//!   leader label on it.
//!
//! # How a policy knows the operator
//!
//! A ValidatingAdmissionPolicyBinding has no matchConditions, and a policy cannot look
//! up who the operator is, so each of these policies carries a match condition named
//! [`OPERATOR_CONDITION`] that compares the requester's username with the operator's:
//! `request.userInfo.username == 'system:serviceaccount:NS:NAME'`. Requests by anyone
//! else do not match, so the policies cost them nothing and never refuse them.
//!
//! The generated `policies/actions.yaml` names [`DEFAULT_OPERATOR`], the ServiceAccount
//! `switchyard` in `switchyard-system` (the chart's defaults). The Helm chart rewrites
//! that one condition to its own ServiceAccount when it renders the file (exactly what
//! [`for_operator`] does; tests/helm.rs checks the two agree). Whoever applies
//! `policies/` by hand with another ServiceAccount runs
//! [`for_operator`]'s equivalent: edit the condition named [`OPERATOR_CONDITION`].

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde_json::json;

/// The username of the operator's ServiceAccount in the generated policies: the chart's
/// default release (`switchyard` in `switchyard-system`).
pub const DEFAULT_OPERATOR: &str = "system:serviceaccount:switchyard-system:switchyard";

/// The name of the match condition that selects the operator's requests.
pub const OPERATOR_CONDITION: &str = "switchyard-operator";

/// The username of ServiceAccount `name` in `namespace`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// CEL: whether the request comes from `username`. The chart builds the same string.
pub fn is_operator(username: &str) -> String {
    format!("request.userInfo.username == '{username}'")
}

/// The match conditions of a policy that binds only the operator.
pub(super) fn operator_only(username: &str) -> serde_json::Value {
    json!([{"name": OPERATOR_CONDITION, "expression": is_operator(username)}])
}

/// The labels of every policy and binding.
pub(super) fn labels() -> serde_json::Value {
    json!({"app.kubernetes.io/part-of": "switchyard"})
}

/// A policy built from JSON (a programming error if it does not parse).
pub(super) fn policy(name: &str, spec: serde_json::Value) -> ValidatingAdmissionPolicy {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": labels()},
        "spec": spec
    }))
    .expect("a valid ValidatingAdmissionPolicy")
}

/// The binding of policy `name`: every request it matches, refused when it fails.
fn binding(name: &str) -> ValidatingAdmissionPolicyBinding {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": labels()},
        "spec": {"policyName": name, "validationActions": ["Deny"]}
    }))
    .expect("a valid ValidatingAdmissionPolicyBinding")
}

type Policies = (
    Vec<ValidatingAdmissionPolicy>,
    Vec<ValidatingAdmissionPolicyBinding>,
);

/// The policies and bindings that bind the operator, for [`DEFAULT_OPERATOR`].
pub(super) fn all() -> Policies {
    (
        vec![
            super::routing_tables::routing_tables(DEFAULT_OPERATOR),
            super::routing_tables::routes(DEFAULT_OPERATOR),
            super::operator_pod::policy(DEFAULT_OPERATOR),
        ],
        vec![
            binding(super::routing_tables::ROUTING_TABLES_POLICY),
            binding(super::routing_tables::ROUTES_POLICY),
            binding(super::operator_pod::OPERATOR_POD_POLICY),
        ],
    )
}

/// `others` followed by the operator's policies and bindings ([`all`]).
pub(super) fn and_operator_policies((mut policies, mut bindings): Policies) -> Policies {
    let (ours, our_bindings) = all();
    policies.extend(ours);
    bindings.extend(our_bindings);
    (policies, bindings)
}

/// Rewrites the operator's match condition in every policy that has one, so that the
/// policies bind the ServiceAccount `username` (as the Helm chart does for its own).
pub fn for_operator(
    mut policies: Vec<ValidatingAdmissionPolicy>,
    username: &str,
) -> Vec<ValidatingAdmissionPolicy> {
    for policy in &mut policies {
        let conditions = policy
            .spec
            .as_mut()
            .and_then(|spec| spec.match_conditions.as_mut());
        for condition in conditions.into_iter().flatten() {
            if condition.name == OPERATOR_CONDITION {
                *condition = MatchCondition {
                    name: OPERATOR_CONDITION.to_owned(),
                    expression: is_operator(username),
                };
            }
        }
    }
    policies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_policy_matches_only_the_operator() {
        let (policies, bindings) = all();
        assert_eq!(policies.len(), bindings.len());
        for policy in &policies {
            let name = policy.metadata.name.as_deref().unwrap();
            assert!(name.starts_with("switchyard-operator-"), "{name}");
            let conditions = policy.spec.as_ref().unwrap().match_conditions.as_ref();
            assert_eq!(
                conditions.unwrap(),
                &[MatchCondition {
                    name: OPERATOR_CONDITION.into(),
                    expression: format!("request.userInfo.username == '{DEFAULT_OPERATOR}'"),
                }],
                "{name}"
            );
        }
    }

    #[test]
    fn for_operator_rewrites_the_operator_condition_only() {
        let (mut policies, _) = super::super::all();
        let untouched = policies.remove(0);
        policies.insert(0, untouched.clone());
        let username = service_account_username("ops", "sy");
        assert_eq!(username, "system:serviceaccount:ops:sy");
        let rewritten = for_operator(policies.clone(), &username);
        assert_eq!(rewritten[0], untouched, "policies for people are unchanged");
        let mut changed = 0;
        for (before, after) in policies.iter().zip(&rewritten) {
            let text = serde_json::to_string(after).unwrap();
            if before != after {
                changed += 1;
                assert!(!text.contains(DEFAULT_OPERATOR), "{text}");
                assert!(
                    text.contains("request.userInfo.username == 'system:serviceaccount:ops:sy'")
                );
            }
        }
        assert_eq!(changed, all().0.len());
    }
}
