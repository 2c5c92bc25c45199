//! Whether the admission policies in the cluster are the ones this operator ships.
//!
//! The operator trusts the identity recorded in an action only because these policies
//! vouch for it, so it compares what is installed with what it would install: every
//! field it generates must be there with the same value. The API server adds defaults
//! (`matchPolicy`, selectors), which are allowed; a changed expression, a missing
//! validation or a binding that only warns is not.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde_json::Value;

/// Whether `expected` is contained in `actual`: objects may have more keys, arrays must
/// match element by element.
fn contains(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|found| contains(v, found))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| contains(e, a))
        }
        (e, a) => e == a,
    }
}

fn check<T: serde::Serialize>(
    kind: &str,
    expected: &[T],
    installed: &[T],
    name_of: impl Fn(&T) -> Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for want in expected {
        let name = name_of(want).unwrap_or_default();
        let spec = |t: &T| {
            serde_json::to_value(t)
                .ok()
                .and_then(|v| v.get("spec").cloned())
        };
        match installed.iter().find(|have| name_of(have) == Some(name)) {
            None => problems.push(format!("{kind} {name} is missing")),
            Some(have) => {
                if !contains(
                    &spec(want).unwrap_or_default(),
                    &spec(have).unwrap_or_default(),
                ) {
                    problems.push(format!(
                        "{kind} {name} differs from the one this operator ships"
                    ));
                }
            }
        }
    }
    problems
}

/// Ok when every policy and binding of [`super::action_policies`] is installed as
/// generated;
/// otherwise what is missing or different, for people.
pub fn verify(
    policies: &[ValidatingAdmissionPolicy],
    bindings: &[ValidatingAdmissionPolicyBinding],
) -> Result<(), String> {
    let (want_policies, want_bindings) = super::action_policies();
    let mut problems = check("ValidatingAdmissionPolicy", &want_policies, policies, |p| {
        p.metadata.name.as_deref()
    });
    problems.extend(check(
        "ValidatingAdmissionPolicyBinding",
        &want_bindings,
        bindings,
        |b| b.metadata.name.as_deref(),
    ));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_policies_verify_and_defaults_are_allowed() {
        let (policies, mut bindings) = super::super::action_policies();
        let mut defaulted = policies.clone();
        let spec = defaulted[0].spec.as_mut().unwrap();
        spec.match_constraints.as_mut().unwrap().match_policy = Some("Equivalent".into());
        assert_eq!(verify(&defaulted, &bindings), Ok(()));
        bindings.pop();
        let missing = verify(&policies, &bindings).unwrap_err();
        assert!(
            missing.contains("Binding") && missing.contains("missing"),
            "{missing}"
        );
    }

    #[test]
    fn a_changed_expression_or_a_warn_only_binding_does_not_verify() {
        let (mut policies, mut bindings) = super::super::action_policies();
        let validations = policies[0]
            .spec
            .as_mut()
            .unwrap()
            .validations
            .as_mut()
            .unwrap();
        validations[0].expression = "true".into();
        let changed = verify(&policies, &bindings).unwrap_err();
        assert!(changed.contains("differs"), "{changed}");
        let (policies, _) = super::super::action_policies();
        bindings[0].spec.validation_actions = vec!["Warn".into()];
        assert!(verify(&policies, &bindings).is_err());
    }
}
