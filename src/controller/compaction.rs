//! Removes processed entries from the front of `spec.actions` (see
//! `engine::action_log`), so that the log never fills and a rollback can always be
//! recorded.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use tracing::{debug, info};

use super::Context;
use crate::engine::action_log::{COMPACTED_ANNOTATION, Compaction};
use crate::writes::{WriteError, resource, verb};

/// Drops `compaction.drop` entries of `actions` and raises the annotation, in one write
/// guarded by the resourceVersion the decision was made on. A conflict means the object
/// changed (a new action, say): the next reconcile decides again, so it is not an error.
pub(crate) async fn compact<K, A>(
    ctx: &Context,
    object: &K,
    actions: &[A],
    compaction: Compaction,
) -> Result<(), WriteError>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    A: serde::Serialize,
{
    let kept = actions.get(compaction.drop..).unwrap_or_default();
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": object.resource_version(),
            "annotations": {COMPACTED_ANNOTATION: compaction.compacted.to_string()},
        },
        "spec": {"actions": kept},
    });
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let name = object.name_any();
    match ctx
        .writes
        .send(
            resource::of::<K>(false),
            verb::PATCH,
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
    {
        Ok(_) => {
            info!(
                object = %object.name_any(),
                removed = compaction.drop,
                compacted = compaction.compacted,
                "compacted the processed actions"
            );
            Ok(())
        }
        Err(err) if err.is_conflict() => {
            debug!(object = %object.name_any(), "the object changed; compaction waits");
            Ok(())
        }
        // The term ended: the next leader compacts.
        Err(err) if err.is_fenced() => Ok(()),
        Err(err) => Err(err),
    }
}
