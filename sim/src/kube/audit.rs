//! Every authorization decision made for a ServiceAccount, as the API server's audit log would
//! record it: lets a test show that each rule a role grants is used, and nothing was denied.

use std::sync::{Arc, Mutex};

use super::rbac::Attributes;

/// One decision.
#[derive(Clone, Debug)]
pub struct Authorization {
    /// `system:serviceaccount:NS:NAME`.
    pub user: String,
    /// What was asked.
    pub attributes: Attributes,
    /// Whether RBAC allowed it.
    pub allowed: bool,
}

/// The decisions so far.
#[derive(Clone, Debug, Default)]
pub struct Audit(Arc<Mutex<Vec<Authorization>>>);

impl Audit {
    pub(crate) fn record(&self, authorization: Authorization) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(authorization);
    }

    /// Every decision, oldest first.
    pub fn authorizations(&self) -> Vec<Authorization> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
