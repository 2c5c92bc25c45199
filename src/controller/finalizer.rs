//! The finalizers of waves and plans: kube-runtime's `finalizer` helper, but with its
//! two writes (adding and removing the finalizer) fenced like every other write: sent
//! through [`Writes`](crate::writes::Writes), on condition that the object is still the
//! version the reconcile saw.

use std::{future::Future, sync::Arc};

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};

use crate::writes::{WriteError, Writes, precondition, resource, verb};

/// What the reconcile is asked to do.
pub enum Event<K> {
    /// The object is live and carries the finalizer: make it so.
    Apply(Arc<K>),
    /// The object is being deleted: clean up; the finalizer goes once this succeeds.
    Cleanup(Arc<K>),
}

/// Why a finalized reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error<E: std::error::Error + 'static> {
    /// The reconcile of a live object failed.
    #[error("failed to apply object: {0}")]
    ApplyFailed(#[source] E),
    /// The cleanup of an object being deleted failed; the finalizer stays.
    #[error("failed to clean up object: {0}")]
    CleanupFailed(#[source] E),
    /// Adding the finalizer failed.
    #[error("failed to add finalizer: {0}")]
    AddFinalizer(#[source] WriteError),
    /// Removing the finalizer failed.
    #[error("failed to remove finalizer: {0}")]
    RemoveFinalizer(#[source] WriteError),
    /// The object has no name.
    #[error("object has no name")]
    UnnamedObject,
}

impl<E: std::error::Error + 'static> Error<E> {
    /// The finalizer write was refused: the object changed since the reconcile saw it.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::AddFinalizer(err) | Error::RemoveFinalizer(err) if err.is_conflict())
    }
}

/// Runs `reconcile` for `object` with the finalizer `name`: adds it first (and waits
/// for the change that brings), cleans up and removes it when the object is deleted.
pub async fn finalizer<K, F, Fut, E>(
    api: &Api<K>,
    writes: &Writes,
    name: &str,
    object: Arc<K>,
    reconcile: F,
) -> Result<Action, Error<E>>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    F: FnOnce(Event<K>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
    E: std::error::Error + 'static,
{
    let finalizers = object.finalizers().to_vec();
    let holds = finalizers.iter().any(|f| f == name);
    let deleting = object.meta().deletion_timestamp.is_some();
    let object_name = object.meta().name.clone().ok_or(Error::UnnamedObject)?;
    let write = |finalizers: Vec<String>| {
        let mut patch = serde_json::json!({"metadata": {"finalizers": finalizers}});
        precondition(&mut patch, object.resource_version());
        patch
    };
    match (holds, deleting) {
        (true, false) => reconcile(Event::Apply(object.clone()))
            .await
            .map_err(Error::ApplyFailed),
        (true, true) => {
            let action = reconcile(Event::Cleanup(object.clone()))
                .await
                .map_err(Error::CleanupFailed)?;
            let kept = finalizers.into_iter().filter(|f| f != name).collect();
            writes
                .send(
                    resource::of::<K>(false),
                    verb::PATCH,
                    api.patch(
                        &object_name,
                        &PatchParams::default(),
                        &Patch::Merge(write(kept)),
                    ),
                )
                .await
                .map_err(Error::RemoveFinalizer)?;
            Ok(action)
        }
        (false, false) => {
            let mut added = finalizers;
            added.push(name.to_owned());
            writes
                .send(
                    resource::of::<K>(false),
                    verb::PATCH,
                    api.patch(
                        &object_name,
                        &PatchParams::default(),
                        &Patch::Merge(write(added)),
                    ),
                )
                .await
                .map_err(Error::AddFinalizer)?;
            // The write wakes the object again, with the finalizer.
            Ok(Action::await_change())
        }
        (false, true) => Ok(Action::await_change()),
    }
}
