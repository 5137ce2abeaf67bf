//! One RBAC write at a time per Cosmos DB account. Cosmos DB takes an exclusive lock per account
//! for each role-assignment or role-definition write and answers a concurrent one with 412, so
//! the operator serialises its own writes instead of provoking that.
//!
//! A busy account keeps a short line of grants waiting for its lock (`acquire`), so each write
//! starts the moment the one before ends: N writes on one account cost N operations back to
//! back, not N operations plus requeue delays. With a line of one, grants that found the account
//! busy all came back together after the requeue delay, one took the lock, one queued, and the
//! account sat idle until the rest came back: two writes per requeue delay. The line is long
//! enough to bridge that delay, and a cap on waiters across accounts (from the reconcile
//! concurrency) keeps workers free for other work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use crate::api::Reason;
use crate::backend::BackendError;

/// How many grants may wait in line for one account.
pub const LINE_PER_ACCOUNT: usize = 8;

/// Per-account write locks, keyed by the lower-cased account id.
#[derive(Debug)]
pub struct AccountLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Grants waiting, per account.
    waiting: Mutex<HashMap<String, usize>>,
    /// How many grants may wait across accounts (each holds a reconcile worker).
    max_waiters: usize,
}

impl Default for AccountLocks {
    fn default() -> Self {
        Self::new(12)
    }
}

impl AccountLocks {
    /// Locks letting at most `max_waiters` grants wait across accounts.
    pub fn new(max_waiters: usize) -> Self {
        Self {
            locks: Mutex::default(),
            waiting: Mutex::default(),
            max_waiters,
        }
    }

    /// The waiters to allow for a reconcile concurrency (0: unbounded): three quarters of the
    /// workers, so a quarter stays free for grants on idle accounts and everything else.
    pub fn waiters_for(concurrency: u16) -> usize {
        match concurrency {
            0 => 64,
            n => (usize::from(n) * 3 / 4).max(1),
        }
    }

    /// Take the account's lock; when another write holds it, wait in its line (at most
    /// `max_wait`) if the line and the waiters overall leave room. `None`: busy, look again
    /// shortly.
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
            let total: usize = waiting.values().sum();
            let line = waiting.entry(key.clone()).or_default();
            if total >= self.max_waiters || *line >= LINE_PER_ACCOUNT {
                return None;
            }
            *line += 1;
        }
        // tokio's Mutex is fair: the line is served in order.
        let lock = self.lock_of(&key);
        let guard = tokio::time::timeout(max_wait, lock.lock_owned()).await.ok();
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(line) = waiting.get_mut(&key) {
            *line = line.saturating_sub(1);
            if *line == 0 {
                waiting.remove(&key);
            }
        }
        guard
    }

    fn lock_of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Take the account's lock only if it is free now.
    pub fn try_lock(&self, account_id: &str) -> Option<OwnedMutexGuard<()>> {
        self.lock_of(&account_id.to_ascii_lowercase())
            .try_lock_owned()
            .ok()
    }

    /// [`Self::acquire`], or an `AccountBusy` error to retry shortly.
    ///
    /// # Errors
    /// `AccountBusy` when the account's line is full.
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
    async fn a_line_waits_for_a_busy_account_and_is_served_in_order() {
        let locks = Arc::new(AccountLocks::new(100));
        let held = locks.try_lock("a").unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..LINE_PER_ACCOUNT {
            let (locks, order) = (locks.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let guard = locks.acquire("a", Duration::from_secs(60)).await;
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
                guard.is_some()
            }));
            tokio::task::yield_now().await;
        }
        // The line is full: the next grant looks again later.
        assert!(locks.acquire("a", Duration::from_secs(60)).await.is_none());
        drop(held);
        for waiter in waiters {
            assert!(waiter.await.unwrap(), "each waiter got the lock in turn");
        }
        assert_eq!(
            *order.lock().unwrap(),
            (0..LINE_PER_ACCOUNT).collect::<Vec<_>>()
        );
        // Waiting is bounded in time.
        let _held = locks.try_lock("a").unwrap();
        assert!(locks.acquire("a", Duration::from_secs(5)).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_across_accounts_are_capped() {
        let locks = Arc::new(AccountLocks::new(2));
        let _a = locks.try_lock("a").unwrap();
        let _b = locks.try_lock("b").unwrap();
        for account in ["a", "b"] {
            let locks = locks.clone();
            tokio::spawn(async move { locks.acquire(account, Duration::from_secs(60)).await });
            tokio::task::yield_now().await;
        }
        assert!(
            locks.acquire("a", Duration::from_secs(60)).await.is_none(),
            "two wait already"
        );
        assert!(
            locks.try_lock("c").is_some(),
            "an idle account is unaffected"
        );
        assert_eq!(AccountLocks::waiters_for(16), 12);
        assert_eq!(AccountLocks::waiters_for(1), 1);
        assert_eq!(AccountLocks::waiters_for(0), 64);
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
