//! The operator changes only the leader label, and only on its own Pod.
//!
//! With `--label-leader-pod` the leader keeps `switchyard.dev/leader: "true"` on its own
//! Pod (see [`crate::leader::label_own_pod`]), which needs `patch` on Pods. RBAC cannot
//! narrow that to one Pod (a Deployment's Pod names are random, so `resourceNames`
//! cannot list them) nor to one label, so RBAC alone would let the operator change the
//! labels of every Pod of its namespace, and with them which Pods a Service selects.
//!
//! This policy refuses, for the operator's ServiceAccount:
//! - an update of any Pod but the requester's own: a token the kubelet mounts into a
//!   Pod is bound to it, and the API server then records the Pod's name and UID in the
//!   request's `userInfo.extra` (`authentication.kubernetes.io/pod-name`, `…/pod-uid`).
//!   A request whose token is bound to no Pod (a long-lived Secret token, an
//!   impersonation, a TokenRequest without a bound Pod) has no own Pod, so it may
//!   update none;
//! - any change but to the leader label, whose value may only be `"true"` (or the
//!   label may be removed);
//! - creating and deleting Pods, which it never does (and RBAC does not grant).

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use serde_json::json;

use super::operator::operator_only;
use crate::leader::LEADER_POD_LABEL;

/// The policy's name.
pub const OPERATOR_POD_POLICY: &str = "switchyard-operator-labels-only-its-own-pod";
/// Where the API server records the name of the Pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// Where the API server records the UID of the Pod a token is bound to.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// CEL: the values of `userInfo.extra[key]`, or an empty list.
fn extra(key: &str) -> String {
    format!(
        "has(request.userInfo.extra) && '{key}' in request.userInfo.extra ? request.userInfo.extra['{key}'] : []"
    )
}

/// CEL: `field` of `object`'s metadata, or `empty` when it is absent.
fn meta(object: &str, field: &str, empty: &str) -> String {
    format!("has({object}.metadata.{field}) ? {object}.metadata.{field} : {empty}")
}

/// The policy, for the operator `operator`.
pub(super) fn policy(operator: &str) -> ValidatingAdmissionPolicy {
    let leader = LEADER_POD_LABEL;
    let unchanged = |field: &str, empty: &str| {
        format!(
            "({}) == ({})",
            meta("object", field, empty),
            meta("oldObject", field, empty)
        )
    };
    super::operator::policy(
        OPERATOR_POD_POLICY,
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["pods"]
            }]},
            "matchConditions": operator_only(operator),
            "variables": [
                {"name": "podName", "expression": extra(POD_NAME_EXTRA)},
                {"name": "podUid", "expression": extra(POD_UID_EXTRA)},
                {"name": "labels", "expression": meta("object", "labels", "{}")},
                {"name": "oldLabels", "expression": meta("oldObject", "labels", "{}")},
            ],
            "validations": [
                {
                    "expression": "request.operation == 'UPDATE'",
                    "message": "the Switchyard operator never creates or deletes Pods",
                    "reason": "Forbidden"
                },
                {
                    "expression": "request.operation != 'UPDATE' || (size(variables.podName) == 1 && variables.podName[0] == oldObject.metadata.name && size(variables.podUid) == 1 && variables.podUid[0] == oldObject.metadata.uid)",
                    "messageExpression": format!(
                        "size(variables.podName) == 0 ? 'the Switchyard operator may change only its own Pod, and the token of this request is bound to no Pod (no {POD_NAME_EXTRA} in its user info)' : 'the Switchyard operator may change only its own Pod ' + variables.podName[0] + ', not Pod ' + request.namespace + '/' + request.name"
                    ),
                    "reason": "Forbidden"
                },
                {
                    "expression": format!(
                        "request.operation != 'UPDATE' || (variables.labels.all(k, k == '{leader}' || (k in variables.oldLabels && variables.oldLabels[k] == variables.labels[k])) && variables.oldLabels.all(k, k == '{leader}' || k in variables.labels) && (!('{leader}' in variables.labels) || variables.labels['{leader}'] == 'true'))"
                    ),
                    "message": format!(
                        "the Switchyard operator may change only the label {leader} on its Pod (set to \"true\", or removed); no other label"
                    ),
                    "reason": "Forbidden"
                },
                {
                    "expression": format!(
                        "request.operation != 'UPDATE' || (object.spec == oldObject.spec && {} && {} && {})",
                        unchanged("annotations", "{}"),
                        unchanged("ownerReferences", "[]"),
                        unchanged("finalizers", "[]")
                    ),
                    "message": format!(
                        "the Switchyard operator may change only the label {leader} on its Pod; not its spec, annotations, owner references or finalizers"
                    ),
                    "reason": "Forbidden"
                }
            ]
        }),
    )
}
