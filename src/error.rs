//! The operator's one error type. Each variant maps to a condition reason, so whatever goes
//! wrong is explained on the object it concerns.

use kube::runtime::finalizer;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API request failed (network, RBAC, conflict, ...).
    #[error("Kubernetes API request failed")]
    Kube(#[source] kube::Error),

    /// An object lacks a field the API server always sets (only hand-built objects do).
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    /// Adding or removing the finalizer failed, or the cleanup it guards failed.
    /// Boxed because `finalizer::Error` nests this type.
    #[error("finalizer step failed")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

/// Shorthand for results of reconcile code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The condition reason this error is reported under (CamelCase, stable, documented).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubernetesApiError",
            Self::MissingObjectKey(_) => "InvalidObject",
            Self::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "FinalizerFailed",
            },
        }
    }

    /// Whether retrying later may succeed without the user changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube(_) => true,
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
    fn reasons_are_camel_case_and_nested_errors_keep_their_reason() {
        let inner = Error::MissingObjectKey("metadata.namespace");
        assert_eq!(inner.reason(), "InvalidObject");
        assert!(!inner.is_transient());
        let wrapped = Error::Finalizer(Box::new(finalizer::Error::ApplyFailed(inner)));
        assert_eq!(wrapped.reason(), "InvalidObject");
        assert!(!wrapped.is_transient());
        for reason in [wrapped.reason(), "KubernetesApiError", "FinalizerFailed"] {
            assert!(
                reason
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
            );
            assert!(reason.chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }
}
