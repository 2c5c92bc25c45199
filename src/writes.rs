//! Every write Switchyard makes to the API server goes through [`Writes::send`].
//!
//! A write is fenced twice (see "Fencing (issue 12)" in docs/design-decisions.md):
//! - in time: it is not started unless the leader's term has at least
//!   [`MIN_WRITE_WINDOW`] left, and it is given up after the write timeout or the end of
//!   the term, whichever comes first, so that this replica does nothing after its term;
//! - per object: its caller puts the `resourceVersion` of the object its decision was
//!   made from into the request (a create has nothing to precondition: an existing object
//!   makes it fail with AlreadyExists). A request that a timeout gave up on may still
//!   reach the API server later; the precondition is what makes it fail there if a newer
//!   leader has written the object since.
//!
//! Each write's outcome is counted in `switchyard_api_writes_total`, by resource, verb
//! and outcome, every label a constant of this module.

use std::{future::Future, sync::Arc, time::Duration};

use crate::leader::Leadership;
use crate::metrics::Metrics;

/// How long a write may take unless configured otherwise (`--api-write-timeout`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A write is not started with less than this left of the leader's term: it could not
/// finish in time.
pub const MIN_WRITE_WINDOW: Duration = Duration::from_millis(200);

/// The `resource` label: what was written.
pub mod resource {
    /// A MigrationWave (its spec or metadata: the action log, the finalizer).
    pub const WAVES: &str = "migrationwaves";
    /// A MigrationWave's status.
    pub const WAVE_STATUS: &str = "migrationwaves/status";
    /// A CutoverPlan (its spec or metadata).
    pub const PLANS: &str = "cutoverplans";
    /// A CutoverPlan's status.
    pub const PLAN_STATUS: &str = "cutoverplans/status";
    /// A wave's HTTPRoute.
    pub const HTTP_ROUTES: &str = "httproutes";
    /// A routing table ConfigMap.
    pub const CONFIG_MAPS: &str = "configmaps";
    /// An Event.
    pub const EVENTS: &str = "events";
    /// This replica's own Pod (its leader label).
    pub const PODS: &str = "pods";
    /// Anything else (kept so that the label stays bounded).
    pub const OTHER: &str = "other";

    /// The label of `K`, or of its status subresource.
    pub fn of<K: kube::Resource<DynamicType = ()>>(status: bool) -> &'static str {
        match (K::plural(&()).as_ref(), status) {
            ("migrationwaves", false) => WAVES,
            ("migrationwaves", true) => WAVE_STATUS,
            ("cutoverplans", false) => PLANS,
            ("cutoverplans", true) => PLAN_STATUS,
            ("httproutes", _) => HTTP_ROUTES,
            ("configmaps", _) => CONFIG_MAPS,
            _ => OTHER,
        }
    }
}

/// The `verb` label.
pub mod verb {
    /// A server-side apply.
    pub const APPLY: &str = "apply";
    /// A merge or JSON patch.
    pub const PATCH: &str = "patch";
    /// A create (POST).
    pub const CREATE: &str = "create";
    /// A delete.
    pub const DELETE: &str = "delete";
}

/// The `outcome` label.
pub mod outcome {
    /// The API server accepted the write.
    pub const SUCCESS: &str = "success";
    /// 409: the precondition failed (the object changed since it was read) or the
    /// object to create exists.
    pub const CONFLICT: &str = "conflict";
    /// The API server refused or failed the write otherwise, or it could not be sent.
    pub const FAILURE: &str = "failure";
    /// No answer in time: the write was given up (it may still land, preconditioned).
    pub const TIMEOUT: &str = "timeout";
    /// Not started: too little time left on the leader Lease.
    pub const FENCED: &str = "fenced";
    /// Every outcome, for documentation and tests.
    pub const ALL: [&str; 5] = [SUCCESS, CONFLICT, FAILURE, TIMEOUT, FENCED];
}

/// Why a write did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Not started: the leader's term is (nearly) over, or this replica does not lead.
    #[error(
        "{verb} {resource} was not started: {left:?} left of this replica's leader term, less than {MIN_WRITE_WINDOW:?}"
    )]
    Fenced {
        resource: &'static str,
        verb: &'static str,
        left: Duration,
    },
    /// No answer in time. The request may still reach the API server; its precondition
    /// keeps it from overwriting anything newer.
    #[error("{verb} {resource} got no answer within {after:?} and was given up")]
    TimedOut {
        resource: &'static str,
        verb: &'static str,
        after: Duration,
        #[source]
        source: tokio::time::error::Elapsed,
    },
    /// The API server refused or failed the write.
    #[error("{verb} {resource}: {source}")]
    Api {
        resource: &'static str,
        verb: &'static str,
        /// Boxed: `kube::Error` is large.
        #[source]
        source: Box<kube::Error>,
    },
}

impl WriteError {
    /// The API server's error, if it answered.
    pub fn api(&self) -> Option<&kube::Error> {
        match self {
            WriteError::Api { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The object changed since it was read (or, for a create, exists): decide again
    /// from a fresh read.
    pub fn is_conflict(&self) -> bool {
        matches!(self.api(), Some(kube::Error::Api(status)) if status.code == 409)
    }

    /// The object is gone.
    pub fn is_not_found(&self) -> bool {
        matches!(self.api(), Some(kube::Error::Api(status)) if status.code == 404)
    }

    /// The write was not started because the term is over.
    pub fn is_fenced(&self) -> bool {
        matches!(self, WriteError::Fenced { .. })
    }
}

/// Sends writes within the leader's term, with a timeout, and counts their outcomes.
/// Cheap to clone.
#[derive(Clone)]
pub struct Writes {
    leadership: Leadership,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes")
            .field("leadership", &self.leadership)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Writes {
    /// No leader election (writes are bounded by the timeout only), metrics of its own.
    fn default() -> Self {
        Self::new(
            Leadership::always(),
            Arc::new(Metrics::new()),
            DEFAULT_WRITE_TIMEOUT,
        )
    }
}

impl Writes {
    /// Writes within `leadership`'s term, each given up after `timeout` at most.
    pub fn new(leadership: Leadership, metrics: Arc<Metrics>, timeout: Duration) -> Self {
        Self {
            leadership,
            metrics,
            timeout,
        }
    }

    /// How long the next write may take, or why it must not start.
    fn budget(&self, resource: &'static str, verb: &'static str) -> Result<Duration, WriteError> {
        match self.leadership.time_left() {
            None => Ok(self.timeout),
            Some(left) if left < MIN_WRITE_WINDOW => Err(WriteError::Fenced {
                resource,
                verb,
                left,
            }),
            Some(left) => Ok(self.timeout.min(left)),
        }
    }

    /// Sends `request` (a write of `resource` by `verb`) if there is time, and gives it
    /// up when its time is out. The request must carry its precondition. A future does
    /// nothing until polled, so nothing is sent when the write is not started.
    pub async fn send<T>(
        &self,
        resource: &'static str,
        verb: &'static str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, WriteError> {
        let result = match self.budget(resource, verb) {
            Err(fenced) => Err(fenced),
            Ok(budget) => match tokio::time::timeout(budget, request).await {
                Ok(Ok(written)) => Ok(written),
                Ok(Err(source)) => Err(WriteError::Api {
                    resource,
                    verb,
                    source: Box::new(source),
                }),
                Err(source) => Err(WriteError::TimedOut {
                    resource,
                    verb,
                    after: budget,
                    source,
                }),
            },
        };
        let outcome = match &result {
            Ok(_) => outcome::SUCCESS,
            Err(err) if err.is_conflict() => outcome::CONFLICT,
            Err(WriteError::Fenced { .. }) => outcome::FENCED,
            Err(WriteError::TimedOut { .. }) => outcome::TIMEOUT,
            Err(WriteError::Api { .. }) => outcome::FAILURE,
        };
        self.metrics.api_write(resource, verb, outcome);
        result
    }
}

/// Puts `resource_version` into `body`'s metadata: the API server then refuses the
/// write (409 Conflict) if the object's version is no longer that one. A server-side
/// apply, a merge patch and a replace all honour it.
pub fn precondition(body: &mut serde_json::Value, resource_version: Option<String>) {
    if let Some(body) = body.as_object_mut() {
        let metadata = body
            .entry("metadata")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert(
                "resourceVersion".into(),
                resource_version.map_or(serde_json::Value::Null, Into::into),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("refused", "Refused").with_code(code),
        ))
    }

    fn count(metrics: &Metrics, verb: &str, outcome: &str) -> bool {
        metrics.encode().lines().any(|line| {
            line.starts_with("switchyard_api_writes_total{")
                && line.contains(&format!("verb=\"{verb}\""))
                && line.contains(&format!("outcome=\"{outcome}\""))
                && line.ends_with(" 1")
        })
    }

    #[tokio::test]
    async fn each_outcome_is_counted() {
        let metrics = Arc::new(Metrics::new());
        let writes = Writes::new(
            Leadership::always(),
            metrics.clone(),
            Duration::from_millis(50),
        );
        let ok = writes
            .send(resource::WAVE_STATUS, verb::APPLY, async { Ok(()) })
            .await;
        assert!(ok.is_ok());
        let conflict = writes
            .send(resource::WAVE_STATUS, verb::PATCH, async {
                Err::<(), _>(refused(409))
            })
            .await
            .unwrap_err();
        assert!(conflict.is_conflict());
        let failed = writes
            .send(resource::WAVE_STATUS, verb::CREATE, async {
                Err::<(), _>(refused(500))
            })
            .await
            .unwrap_err();
        assert!(!failed.is_conflict() && failed.api().is_some());
        let slow = writes
            .send(
                resource::WAVE_STATUS,
                verb::DELETE,
                std::future::pending::<Result<(), kube::Error>>(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(slow, WriteError::TimedOut { after, .. } if after == Duration::from_millis(50))
        );
        assert!(count(&metrics, "apply", "success"));
        assert!(count(&metrics, "patch", "conflict"));
        assert!(count(&metrics, "create", "failure"));
        assert!(count(&metrics, "delete", "timeout"));
    }

    #[tokio::test]
    async fn a_replica_that_does_not_lead_starts_no_write() {
        let metrics = Arc::new(Metrics::new());
        let writes = Writes::new(
            Leadership::elected(),
            metrics.clone(),
            DEFAULT_WRITE_TIMEOUT,
        );
        let sent = std::sync::atomic::AtomicBool::new(false);
        let fenced = writes
            .send(resource::HTTP_ROUTES, verb::APPLY, async {
                sent.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(fenced.is_fenced(), "{fenced}");
        assert!(
            !sent.load(std::sync::atomic::Ordering::SeqCst),
            "the request was sent"
        );
        assert!(count(&metrics, "apply", "fenced"));
    }

    #[test]
    fn the_precondition_is_the_resource_version_in_the_metadata() {
        let mut body = serde_json::json!({"status": {"phase": "Pending"}});
        precondition(&mut body, Some("42".into()));
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        let mut body = serde_json::json!({"metadata": {"name": "a"}});
        precondition(&mut body, Some("7".into()));
        assert_eq!(
            body["metadata"],
            serde_json::json!({"name": "a", "resourceVersion": "7"})
        );
    }

    #[test]
    fn resource_labels_are_bounded() {
        use crate::api::{CutoverPlan, MigrationWave};
        assert_eq!(resource::of::<MigrationWave>(true), resource::WAVE_STATUS);
        assert_eq!(resource::of::<CutoverPlan>(false), resource::PLANS);
        assert_eq!(
            resource::of::<k8s_openapi::api::core::v1::Secret>(false),
            resource::OTHER
        );
    }
}
