//! The operator's one error type for failures a reconcile does not report as a step of its
//! own. Each variant maps to a condition reason, so whatever goes wrong is explained on the
//! object it concerns.

use kube::runtime::finalizer;

use crate::api::Reason;
use crate::backend::BackendError;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API request failed (network, RBAC, conflict, ...).
    #[error("Kubernetes API request failed")]
    Kube(#[source] kube::Error),

    /// An object lacks a field the API server always sets (only hand-built objects do).
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    /// Revoking access while deleting a grant failed; the finalizer stays.
    #[error("revoking access failed")]
    Cleanup(#[source] BackendError),

    /// Adding or removing the finalizer failed, or the cleanup it guards failed.
    /// Boxed because `finalizer::Error` nests this type.
    #[error("finalizer step failed")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

/// An error and every cause under it, `outer: inner: innermost`, for logs (the causes say
/// what actually went wrong; the outer message only says where).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Many errors (kube's among them) already print their cause: say it once.
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// Shorthand for results of reconcile code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The condition reason this error is reported under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => Reason::KubernetesApiError.as_str(),
            Self::MissingObjectKey(_) => Reason::InvalidSpec.as_str(),
            Self::Cleanup(_) => Reason::CleanupFailed.as_str(),
            Self::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => Reason::KubernetesApiError.as_str(),
            },
        }
    }

    /// The finalizer patch lost a race with a write the watch cache has not shown yet (its
    /// JSON-patch `test` failed, or the object changed): routine in any controller, retried
    /// at once against the fresher object.
    pub fn is_stale_cache(&self) -> bool {
        let Self::Finalizer(inner) = self else {
            return false;
        };
        match inner.as_ref() {
            finalizer::Error::AddFinalizer(kube::Error::Api(status))
            | finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) => {
                status.code == 409
                    || (status.code == 422 && status.message.contains("did not match"))
            }
            _ => false,
        }
    }

    /// How soon to look again when the failure was only a busy store (contention ends within
    /// one operation, so it never earns a growing backoff).
    pub fn busy_retry(&self) -> Option<std::time::Duration> {
        let busy = |e: &BackendError| {
            (e.reason == Reason::AccountBusy)
                .then(|| e.retry_after.unwrap_or(std::time::Duration::from_secs(2)))
        };
        match self {
            Self::Cleanup(e) => busy(e),
            Self::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.busy_retry()
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether retrying later may succeed without the user changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube(_) | Self::Cleanup(_) => true,
            Self::MissingObjectKey(_) => false,
            Self::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.is_transient()
                }
                _ => true,
            },
        }
    }
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_store_is_retried_soon_however_deeply_it_is_wrapped() {
        let busy = Error::Cleanup(BackendError::new(Reason::AccountBusy, "in flight"));
        assert_eq!(busy.busy_retry(), Some(std::time::Duration::from_secs(2)));
        let wrapped = Error::Finalizer(Box::new(finalizer::Error::CleanupFailed(busy)));
        assert_eq!(
            wrapped.busy_retry(),
            Some(std::time::Duration::from_secs(2))
        );
        let other = Error::Cleanup(BackendError::new(Reason::AzureUnavailable, "503"));
        assert_eq!(other.busy_retry(), None);
    }

    #[test]
    fn nested_errors_keep_their_reason_and_transience() {
        let inner = Error::MissingObjectKey("metadata.namespace");
        assert_eq!(inner.reason(), "InvalidSpec");
        assert!(!inner.is_transient());
        let wrapped = Error::Finalizer(Box::new(finalizer::Error::ApplyFailed(inner)));
        assert_eq!(wrapped.reason(), "InvalidSpec");
        assert!(!wrapped.is_transient());
        let cleanup = Error::Finalizer(Box::new(finalizer::Error::CleanupFailed(Error::Cleanup(
            BackendError::new(Reason::AzureUnavailable, "timeout"),
        ))));
        assert_eq!(cleanup.reason(), "CleanupFailed");
        assert!(cleanup.is_transient());
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, if code == 409 { "Conflict" } else { "Invalid" })
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn a_lost_race_with_the_watch_cache_is_told_apart_from_real_failures() {
        let stale = Error::Finalizer(Box::new(finalizer::Error::AddFinalizer(api_error(
            422,
            "operation '/0' failed at path '/metadata/finalizers': value did not match",
        ))));
        assert!(stale.is_stale_cache());
        let conflict = Error::Finalizer(Box::new(finalizer::Error::RemoveFinalizer(api_error(
            409,
            "the object has been modified",
        ))));
        assert!(conflict.is_stale_cache());
        let forbidden = Error::Finalizer(Box::new(finalizer::Error::AddFinalizer(api_error(
            403,
            "forbidden",
        ))));
        assert!(!forbidden.is_stale_cache());
        assert!(!Error::Kube(api_error(409, "conflict")).is_stale_cache());
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        let error = Error::Finalizer(Box::new(finalizer::Error::AddFinalizer(api_error(
            422,
            "value did not match",
        ))));
        let text = chain(&error);
        // kube's own message is there once (before, each layer repeated it).
        assert_eq!(text.matches("ApiError:").count(), 1, "{text}");
        assert_eq!(text.matches("failed to add finalizer").count(), 1, "{text}");
        assert!(
            text.starts_with("finalizer step failed: failed to add finalizer"),
            "{text}"
        );
    }
}
