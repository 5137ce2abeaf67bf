//! One RBAC write at a time per Cosmos DB account. Cosmos DB takes an exclusive lock per account
//! for each role-assignment or role-definition write and answers a concurrent one with 412, so
//! the operator serialises its own writes instead of provoking that. A busy account makes the
//! caller requeue shortly rather than park a worker behind a long operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use crate::api::Reason;
use crate::backend::BackendError;

/// Per-account write locks, keyed by the lower-cased account id.
#[derive(Debug, Default)]
pub struct AccountLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AccountLocks {
    /// Take the account's lock if nobody holds it; `None` when another write is in flight.
    pub fn try_lock(&self, account_id: &str) -> Option<OwnedMutexGuard<()>> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks
                .entry(account_id.to_ascii_lowercase())
                .or_default()
                .clone()
        };
        lock.try_lock_owned().ok()
    }

    /// Take the account's lock, or fail with `AccountBusy` (retried shortly) when another
    /// write holds it.
    pub fn lock_or_busy(&self, account_id: &str) -> Result<OwnedMutexGuard<()>, BackendError> {
        self.try_lock(account_id).ok_or_else(|| BackendError {
            retry_after: Some(Duration::from_secs(2)),
            ..BackendError::new(
                Reason::AccountBusy,
                "another RBAC write on the account is in flight",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_per_account_and_accounts_are_independent() {
        let locks = AccountLocks::default();
        let held = locks.try_lock("/subscriptions/x/accounts/A");
        assert!(held.is_some());
        assert!(
            locks.try_lock("/subscriptions/x/accounts/a").is_none(),
            "ids are case-insensitive"
        );
        assert!(locks.try_lock("/subscriptions/x/accounts/b").is_some());
        drop(held);
        assert!(locks.try_lock("/subscriptions/x/accounts/a").is_some());
    }
}
