//! One token exchange per (identity, scope) per refresh window, however many grants project a
//! token of the same identity for the same scope.
//!
//! A grant whose Secret is due asks for a token issued after the one it holds. The first such
//! grant exchanges; the others, due a little later (their jitter differs), find that newer
//! token and reuse it. Exchanges for one key run one at a time, so grants due at the same
//! moment wait for one exchange instead of each making their own. This is not
//! azure_identity's cache: nothing here decides *when* to refresh, the Secrets' schedules do.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;

use super::{Issued, REFRESH_MARGIN};

/// Tokens recently issued, by what they were issued for.
pub struct Broker<K> {
    slots: Mutex<HashMap<K, Arc<tokio::sync::Mutex<Option<Issued>>>>>,
}

impl<K> Default for Broker<K> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

/// Whether `issued` may serve a grant whose own token was issued at `newer_than`, at `now`:
/// it is newer, and still has more than the refresh margin (and half its life) ahead.
fn serves(issued: &Issued, newer_than: Option<Timestamp>, now: Timestamp) -> bool {
    let newer = newer_than.is_none_or(|t| issued.issued_at > t);
    let life = issued.expires_at.duration_since(issued.issued_at);
    let left = issued.expires_at.duration_since(now);
    let margin = k8s_openapi::jiff::SignedDuration::try_from(REFRESH_MARGIN).unwrap_or_default();
    newer && left > margin && left * 2 > life
}

impl<K: Hash + Eq + Clone> Broker<K> {
    fn slot(&self, key: &K) -> Arc<tokio::sync::Mutex<Option<Issued>>> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(key.clone()).or_default().clone()
    }

    /// A token for `key` issued after `newer_than`: one already obtained if it is young
    /// enough, else the result of `exchange` (whose failures are not kept).
    pub async fn token<F, Fut, E>(
        &self,
        key: &K,
        newer_than: Option<Timestamp>,
        now: impl Fn() -> Timestamp,
        exchange: F,
    ) -> Result<Issued, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued, E>>,
    {
        let slot = self.slot(key);
        let mut held = slot.lock().await;
        if let Some(issued) = held.as_ref().filter(|i| serves(i, newer_than, now())) {
            return Ok(issued.clone());
        }
        let issued = exchange().await?;
        *held = Some(issued.clone());
        Ok(issued)
    }

    /// Keep a token obtained elsewhere (the identity's own exchange) if none newer is held and
    /// no exchange for the key is running.
    pub fn offer(&self, key: &K, issued: Issued) {
        let slot = self.slot(key);
        if let Ok(mut held) = slot.try_lock()
            && held.as_ref().is_none_or(|h| h.issued_at < issued.issued_at)
        {
            *held = Some(issued);
        }
    }

    /// Forget tokens that expired by `now` (and keys no longer used).
    pub fn prune(&self, now: Timestamp) {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(held) => held.as_ref().is_some_and(|i| i.expires_at > now),
            // An exchange is running for it.
            Err(_) => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use azure_core::credentials::Secret;

    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("time")
    }

    fn issued(at_second: i64) -> Issued {
        Issued {
            token: Secret::new(format!("token-{at_second}")),
            issued_at: at(at_second),
            expires_at: at(at_second + 3_600),
            refresh_in: None,
        }
    }

    #[tokio::test]
    async fn grants_due_in_one_window_share_one_exchange() {
        let broker = Broker::<&str>::default();
        let calls = AtomicUsize::new(0);
        let exchange = |second: i64| {
            let calls = &calls;
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(issued(second))
            }
        };
        // 100 grants whose tokens were issued at 0 come due between 1700 and 1800.
        for i in 0..100 {
            let now = 1_700 + i;
            let got = broker
                .token(&"id", Some(at(0)), || at(now), exchange(now))
                .await
                .expect("token");
            assert_eq!(got.issued_at, at(1_700));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Another scope or identity is another key.
        broker
            .token(&"other", None, || at(1_750), exchange(1_750))
            .await
            .expect("token");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // The next window exchanges again.
        broker
            .token(&"id", Some(at(1_700)), || at(3_500), exchange(3_500))
            .await
            .expect("token");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_token_past_half_life_or_inside_the_margin_is_not_lent() {
        let broker = Broker::<&str>::default();
        broker
            .token(&"id", None, || at(0), || async { Ok::<_, ()>(issued(0)) })
            .await
            .expect("token");
        let again = broker
            .token(
                &"id",
                None,
                || at(1_900),
                || async { Ok::<_, ()>(issued(1_900)) },
            )
            .await
            .expect("token");
        assert_eq!(again.issued_at, at(1_900), "past half-life: exchanged anew");
    }

    #[tokio::test]
    async fn failures_are_not_kept() {
        let broker = Broker::<&str>::default();
        let failed = broker
            .token(&"id", None, || at(0), || async { Err::<Issued, _>("down") })
            .await;
        assert_eq!(failed.err(), Some("down"));
        let got = broker
            .token(&"id", None, || at(1), || async { Ok::<_, &str>(issued(1)) })
            .await
            .expect("token");
        assert_eq!(got.issued_at, at(1));
        broker.prune(at(10_000));
        assert!(broker.slots.lock().expect("lock").is_empty());
    }
}
