//! The operator writes only its own routing objects: ConfigMaps labelled as routing
//! tables, and HTTPRoutes labelled as Switchyard's.
//!
//! RBAC gives the operator `create` and `patch` on ConfigMaps and HTTPRoutes in every
//! namespace it watches (in the whole cluster when it watches all of them), and RBAC
//! cannot filter by label. These policies refuse any write by the operator's
//! ServiceAccount (see [`operator`](super::operator) for how they recognise it) of an
//! object that does not carry the label, as it is after the request (CREATE, UPDATE)
//! and as it was before it (UPDATE, DELETE). The second half is what stops a label
//! hijack: the operator cannot take over `kube-system/coredns` by adding the label in
//! the same patch, because the ConfigMap did not carry it before.
//!
//! The operator sets these labels on everything it writes, and refuses by itself to
//! take over an existing object without them (`RoutingError::NotOwned`, shown in the
//! wave's conditions), so these policies never refuse a write it makes in normal work.
//! Reads (`get`, `list`) are not admission requests and stay as RBAC grants them.

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use serde_json::json;

use super::operator::{operator_only, policy};
use crate::routing::{MANAGED_BY, MANAGED_BY_LABEL, configmap::ROUTING_TABLE_LABEL};

/// The policy that limits the operator's ConfigMap writes to routing tables.
pub const ROUTING_TABLES_POLICY: &str = "switchyard-operator-writes-only-routing-tables";
/// The policy that limits the operator's HTTPRoute writes to Switchyard's routes.
pub const ROUTES_POLICY: &str = "switchyard-operator-writes-only-its-routes";

/// CEL: whether `object` (which may be null) carries the label `key` = `value`.
fn labelled(object: &str, key: &str, value: &str) -> String {
    format!(
        "{object} != null && has({object}.metadata.labels) && '{key}' in {object}.metadata.labels && {object}.metadata.labels['{key}'] == '{value}'"
    )
}

/// A policy that lets `operator` write objects of `resource` only when they carry the
/// label `key` = `value`, before and after the request.
fn label_guard(
    name: &str,
    operator: &str,
    rule: serde_json::Value,
    kind: &str,
    key: &str,
    value: &str,
) -> ValidatingAdmissionPolicy {
    let target = format!("'{kind} ' + request.namespace + '/' + request.name");
    policy(
        name,
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rule]},
            "matchConditions": operator_only(operator),
            "validations": [
                {
                    "expression": format!("request.operation == 'DELETE' || ({})", labelled("object", key, value)),
                    "messageExpression": format!(
                        "'the Switchyard operator writes only objects labelled {key}={value}; ' + {target} + ' would not carry that label'"
                    ),
                    "reason": "Forbidden"
                },
                {
                    "expression": format!("request.operation == 'CREATE' || ({})", labelled("oldObject", key, value)),
                    "messageExpression": format!(
                        "'the Switchyard operator changes only objects already labelled {key}={value}; ' + {target} + ' is not, so the operator may not change it'"
                    ),
                    "reason": "Forbidden"
                }
            ]
        }),
    )
}

/// ConfigMaps: only routing tables (`switchyard.dev/routing-table: "true"`).
pub(super) fn routing_tables(operator: &str) -> ValidatingAdmissionPolicy {
    label_guard(
        ROUTING_TABLES_POLICY,
        operator,
        json!({
            "apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["configmaps"]
        }),
        "ConfigMap",
        ROUTING_TABLE_LABEL,
        "true",
    )
}

/// HTTPRoutes: only Switchyard's (`app.kubernetes.io/managed-by: switchyard`), which
/// is how the Gateway API router tells its routes from others' already.
pub(super) fn routes(operator: &str) -> ValidatingAdmissionPolicy {
    label_guard(
        ROUTES_POLICY,
        operator,
        json!({
            "apiGroups": ["gateway.networking.k8s.io"], "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["httproutes"]
        }),
        "HTTPRoute",
        MANAGED_BY_LABEL,
        MANAGED_BY,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guards_check_the_labels_the_routers_write() {
        for (policy, label) in [
            (
                routing_tables("u"),
                "'switchyard.dev/routing-table'] == 'true'",
            ),
            (
                routes("u"),
                "'app.kubernetes.io/managed-by'] == 'switchyard'",
            ),
        ] {
            let validations = policy.spec.unwrap().validations.unwrap();
            assert_eq!(validations.len(), 2);
            assert!(
                validations[0]
                    .expression
                    .contains(&format!("object.metadata.labels[{label}"))
            );
            assert!(
                validations[1]
                    .expression
                    .contains(&format!("oldObject.metadata.labels[{label}"))
            );
        }
    }
}
