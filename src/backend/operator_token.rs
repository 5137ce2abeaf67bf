//! The operator's own Entra token for a database's audience (PostgreSQL, Azure SQL): the one
//! seam both SQL backends sign in through, so tests can hand them a token of their own.

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};

use crate::api::Reason;
use crate::backend::BackendError;

/// A fresh token of the operator's identity for one database audience.
#[async_trait::async_trait]
pub trait OperatorToken: Send + Sync {
    /// A token valid now.
    async fn token(&self) -> Result<Secret, BackendError>;
}

/// [`OperatorToken`] from an azure_identity credential (which caches and renews) and a scope.
pub struct CredentialToken {
    credential: Arc<dyn TokenCredential>,
    scope: String,
    /// The database kind, for messages (`PostgreSQL`, `Azure SQL`).
    service: &'static str,
}

impl CredentialToken {
    /// Tokens of `credential` for `scope`, used to sign in to `service`.
    pub fn new(credential: Arc<dyn TokenCredential>, scope: String, service: &'static str) -> Self {
        Self {
            credential,
            scope,
            service,
        }
    }
}

#[async_trait::async_trait]
impl OperatorToken for CredentialToken {
    async fn token(&self) -> Result<Secret, BackendError> {
        self.credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map(|t| t.token)
            .map_err(|e| {
                BackendError::new(
                    Reason::AzureUnavailable,
                    format!(
                        "getting the operator's {} token from Entra ID: {e}",
                        self.service
                    ),
                )
            })
    }
}

/// No credential for `service` (an operator built for Cosmos DB only, or a test).
pub struct NoToken(pub &'static str);

#[async_trait::async_trait]
impl OperatorToken for NoToken {
    async fn token(&self) -> Result<Secret, BackendError> {
        Err(BackendError::new(
            Reason::TargetNotPrepared,
            format!(
                "this operator was started without a credential for {}",
                self.0
            ),
        ))
    }
}
