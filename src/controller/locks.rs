//! One RBAC write at a time per Cosmos DB account. Cosmos DB takes an exclusive lock per account
//! for each role-assignment or role-definition write and answers a concurrent one with 412, so
//! the operator serialises its own writes instead of provoking that.
//!
//! A busy account keeps one grant waiting for the lock (`acquire`), so the next write starts
//! the moment the current one ends: N writes on one account cost N operations back to back,
//! not N operations plus N requeue delays. Every other grant finding it busy requeues shortly
//! rather than park a worker, and a cap on waiters across accounts keeps workers free for
//! accounts that are idle.

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
    /// Accounts with a grant waiting for their lock.
    waiting: Mutex<std::collections::HashSet<String>>,
}

/// How many grants may wait for busy accounts at once (each holds a reconcile worker).
const MAX_WAITERS: usize = 4;

impl AccountLocks {
    /// Take the account's lock; when another write holds it, wait for it (at most `max_wait`)
    /// if no other grant is already waiting for this account and few wait overall. `None`:
    /// busy, look again shortly.
    pub async fn acquire(
        &self,
        account_id: &str,
        max_wait: Duration,
    ) -> Option<OwnedMutexGuard<()>> {
        if let Some(guard) = self.try_lock(account_id) {
            return Some(guard);
        }
        let key = account_id.to_ascii_lowercase();
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if waiting.len() >= MAX_WAITERS || !waiting.insert(key.clone()) {
                return None;
            }
        }
        let lock = self.lock_of(&key);
        let guard = tokio::time::timeout(max_wait, lock.lock_owned()).await.ok();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        guard
    }

    fn lock_of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Take the account's lock if nobody holds it; `None` when another write is in flight.
    pub fn try_lock(&self, account_id: &str) -> Option<OwnedMutexGuard<()>> {
        self.lock_of(&account_id.to_ascii_lowercase())
            .try_lock_owned()
            .ok()
    }

    /// Take the account's lock (waiting as `acquire` does), or fail with `AccountBusy`
    /// (retried shortly) when another write holds it.
    pub async fn lock_or_busy(
        &self,
        account_id: &str,
        max_wait: Duration,
    ) -> Result<OwnedMutexGuard<()>, BackendError> {
        self.acquire(account_id, max_wait)
            .await
            .ok_or_else(|| BackendError {
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

    #[tokio::test(start_paused = true)]
    async fn one_grant_waits_for_a_busy_account_and_gets_it_the_moment_it_frees() {
        let locks = Arc::new(AccountLocks::default());
        let held = locks.try_lock("a").unwrap();
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.acquire("a", Duration::from_secs(60)).await.is_some() })
        };
        tokio::task::yield_now().await;
        // A second grant does not queue behind the first: it looks again later.
        assert!(locks.acquire("a", Duration::from_secs(60)).await.is_none());
        drop(held);
        assert!(
            waiter.await.unwrap(),
            "the waiter took the lock as it freed"
        );
        // Waiting is bounded.
        let _held = locks.try_lock("a").unwrap();
        assert!(locks.acquire("a", Duration::from_secs(5)).await.is_none());
    }

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
