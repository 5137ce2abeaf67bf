//! One module per database kind: how a grant's role and scope map onto that backend's access
//! model (pure), and the seam through which the reconcilers reach it (`CosmosAccess`), so the
//! controllers never see HTTP and tests can swap the implementation.

pub mod cosmos;

use std::time::Duration;

use azure_core::credentials::Secret;
use k8s_openapi::jiff::Timestamp;

use crate::api::Reason;

/// A failure reported by a backend, already classified into the reason users will see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// The condition reason.
    pub reason: Reason,
    /// What happened, for humans; never contains a token.
    pub message: String,
    /// How long the remote side asked us to wait, if it did (HTTP 429 Retry-After).
    pub retry_after: Option<Duration>,
}

impl BackendError {
    /// A failure with no server-requested delay.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// An identity resolved by exchanging a ServiceAccount token at Entra ID.
#[derive(Clone, Debug)]
pub struct ResolvedIdentity {
    /// Object id of the identity's service principal (the token's `oid`).
    pub principal_id: String,
    /// Tenant the token was issued in (the token's `tid`).
    pub tenant_id: String,
    /// The identity's data-plane access token (redacted in Debug).
    pub access_token: Secret,
    /// When `access_token` expires.
    pub expires_at: Timestamp,
}
