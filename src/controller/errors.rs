//! A bounded classification of reconcile errors, for metric labels and logs.

use super::finalizer;

/// This replica does not hold the leader Lease, so it must not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this replica is not the leader; the leader makes this change")]
pub struct NotLeader;

/// A bounded classification of reconcile errors, for metric labels and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    /// The API server refused or failed a request (other than a conflict).
    Api,
    /// A write lost a race with another change to the object; the retry sees it.
    Conflict,
    /// Routing could not be applied (an HTTPRoute or routing-table write, or a
    /// foreign object in the way).
    Routing,
    /// The objects cannot be acted on as written; a human must change them.
    InvalidSpec,
    /// Leadership was lost during the reconcile, which stopped before its next write.
    NotLeader,
    /// Not a failure: the reconcile waits for something to finish (a plan's deletion
    /// waiting for its waves' rollbacks).
    Waiting,
}

impl ErrorCategory {
    /// Every category, for documentation and tests.
    pub const ALL: [ErrorCategory; 6] = [
        ErrorCategory::Api,
        ErrorCategory::Conflict,
        ErrorCategory::Routing,
        ErrorCategory::InvalidSpec,
        ErrorCategory::NotLeader,
        ErrorCategory::Waiting,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Api => "api",
            ErrorCategory::Conflict => "conflict",
            ErrorCategory::Routing => "routing",
            ErrorCategory::InvalidSpec => "invalid_spec",
            ErrorCategory::NotLeader => "not_leader",
            ErrorCategory::Waiting => "waiting",
        }
    }

    /// The category of a failed API request.
    pub fn of_api(error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 409 => ErrorCategory::Conflict,
            _ => ErrorCategory::Api,
        }
    }

    /// The category of a failed write: a write not started for lack of time on the
    /// Lease is the leader's to make.
    pub fn of_write(error: &crate::writes::WriteError) -> Self {
        use crate::writes::WriteError;
        match error {
            WriteError::Fenced { .. } => ErrorCategory::NotLeader,
            WriteError::TimedOut { .. } => ErrorCategory::Api,
            WriteError::Api { source, .. } => Self::of_api(source),
        }
    }

    /// The category of a finalizer failure, whose reconcile errors have their own.
    pub fn of_finalizer<E: std::error::Error + 'static>(
        error: &finalizer::Error<E>,
        inner: impl Fn(&E) -> ErrorCategory,
    ) -> Self {
        match error {
            finalizer::Error::ApplyFailed(err) | finalizer::Error::CleanupFailed(err) => inner(err),
            finalizer::Error::AddFinalizer(err) | finalizer::Error::RemoveFinalizer(err) => {
                Self::of_write(err)
            }
            finalizer::Error::UnnamedObject => ErrorCategory::InvalidSpec,
        }
    }

    /// Whether a retry cannot help: a human must change the objects first.
    pub fn is_permanent(self) -> bool {
        self == ErrorCategory::InvalidSpec
    }

    /// Whether errors of this category count as failed reconciles.
    pub fn is_failure(self) -> bool {
        !matches!(self, ErrorCategory::NotLeader | ErrorCategory::Waiting)
    }
}

impl std::fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::controller::plan;
    use crate::routing::RoutingError;
    use crate::writes::WriteError;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("refused", "Refused").with_code(code),
        ))
    }

    fn write_error(code: u16) -> Box<WriteError> {
        Box::new(WriteError::Api {
            resource: crate::writes::resource::WAVE_STATUS,
            verb: crate::writes::verb::APPLY,
            source: Box::new(api_error(code)),
        })
    }

    #[test]
    fn error_categories_are_a_small_fixed_set() {
        let labels: HashSet<&str> = ErrorCategory::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), ErrorCategory::ALL.len());
        assert!(
            labels
                .iter()
                .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }

    #[test]
    fn wave_errors_map_to_categories() {
        use crate::controller::wave::Error;
        let cases: Vec<(Error, ErrorCategory)> = vec![
            (
                Error::Observe {
                    what: "CutoverPlan crm/x".into(),
                    source: Box::new(api_error(500)),
                },
                ErrorCategory::Api,
            ),
            (Error::Status(write_error(409)), ErrorCategory::Conflict),
            (Error::Status(write_error(403)), ErrorCategory::Api),
            (
                Error::Status(Box::new(WriteError::Fenced {
                    resource: crate::writes::resource::WAVE_STATUS,
                    verb: crate::writes::verb::APPLY,
                    left: std::time::Duration::ZERO,
                })),
                ErrorCategory::NotLeader,
            ),
            (
                Error::Routing(RoutingError::Write {
                    kind: "HTTPRoute",
                    namespace: "crm".into(),
                    name: "r".into(),
                    source: write_error(409),
                }),
                ErrorCategory::Conflict,
            ),
            (
                Error::Routing(RoutingError::Api {
                    action: "apply",
                    kind: "HTTPRoute",
                    namespace: "crm".into(),
                    name: "r".into(),
                    source: Box::new(api_error(409)),
                }),
                ErrorCategory::Conflict,
            ),
            (
                Error::Routing(RoutingError::Api {
                    action: "apply",
                    kind: "HTTPRoute",
                    namespace: "crm".into(),
                    name: "r".into(),
                    source: Box::new(api_error(404)),
                }),
                ErrorCategory::Routing,
            ),
            (
                Error::Routing(RoutingError::NotOwned {
                    kind: "HTTPRoute",
                    namespace: "crm".into(),
                    name: "r".into(),
                    label: "app.kubernetes.io/managed-by",
                    value: "switchyard",
                }),
                ErrorCategory::Routing,
            ),
            (
                Error::Routing(RoutingError::LegacyAccessClash {
                    header: "x-team".into(),
                }),
                ErrorCategory::InvalidSpec,
            ),
            (
                Error::Routing(RoutingError::MissingBackend("maintenance")),
                ErrorCategory::InvalidSpec,
            ),
            (Error::NoNamespace, ErrorCategory::InvalidSpec),
            (Error::NotLeader(NotLeader), ErrorCategory::NotLeader),
            (
                Error::Finalizer(Box::new(finalizer::Error::ApplyFailed(Error::NotLeader(
                    NotLeader,
                )))),
                ErrorCategory::NotLeader,
            ),
            (
                Error::Finalizer(Box::new(finalizer::Error::AddFinalizer(*write_error(409)))),
                ErrorCategory::Conflict,
            ),
            (
                Error::Finalizer(Box::new(finalizer::Error::RemoveFinalizer(*write_error(
                    500,
                )))),
                ErrorCategory::Api,
            ),
            (
                Error::Finalizer(Box::new(finalizer::Error::UnnamedObject)),
                ErrorCategory::InvalidSpec,
            ),
        ];
        for (error, category) in cases {
            assert_eq!(error.category(), category, "{error}");
        }
    }

    #[test]
    fn plan_errors_map_to_categories() {
        use plan::Error;
        assert_eq!(
            Error::Status(write_error(409)).category(),
            ErrorCategory::Conflict
        );
        assert_eq!(
            Error::Status(write_error(503)).category(),
            ErrorCategory::Api
        );
        assert_eq!(Error::RollbackPending(2).category(), ErrorCategory::Waiting);
        assert!(!ErrorCategory::Waiting.is_failure());
        assert_eq!(Error::NoNamespace.category(), ErrorCategory::InvalidSpec);
        assert_eq!(
            Error::Finalizer(Box::new(finalizer::Error::CleanupFailed(Error::NotLeader(
                NotLeader
            ))))
            .category(),
            ErrorCategory::NotLeader
        );
        assert!(!ErrorCategory::NotLeader.is_failure());
        assert!(ErrorCategory::Conflict.is_failure());
    }
}
