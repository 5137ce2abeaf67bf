//! Per-object retry backoff. kube-runtime's `error_policy` never hears about successes, so the
//! failure count per object lives here: it grows on each failure and is reset by a success.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

/// Exponential backoff per key, with a floor, a ceiling and deterministic jitter.
#[derive(Debug)]
pub struct Backoff<K> {
    failures: Mutex<HashMap<K, u32>>,
    base: Duration,
    max: Duration,
}

impl<K: Eq + Hash + Clone> Backoff<K> {
    /// Delays start at `base` and double per consecutive failure up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            base,
            max,
        }
    }

    /// Record one more failure of `key` and return how long to wait before retrying.
    ///
    /// `at_least` lets a caller honour a server's `Retry-After`.
    pub fn next_delay(&self, key: &K, at_least: Option<Duration>) -> Duration {
        let count = {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let exponent = count.saturating_sub(1).min(16);
        let raw = self.base.saturating_mul(1u32 << exponent).min(self.max);
        // Up to +10% jitter, derived from the count so objects failing together spread out
        // without a random source (keeps tests deterministic).
        let jitter = raw.mul_f64(f64::from(count % 10) / 100.0);
        (raw + jitter).max(at_least.unwrap_or_default())
    }

    /// Forget the failures of `key` (after a success or once the object is gone).
    pub fn reset(&self, key: &K) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Number of consecutive failures recorded for `key`.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_per_key_are_capped_and_reset_on_success() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let first = backoff.next_delay(&"a", None);
        let second = backoff.next_delay(&"a", None);
        let third = backoff.next_delay(&"a", None);
        assert!(first >= Duration::from_secs(1) && first < Duration::from_millis(1200));
        assert!(second >= Duration::from_secs(2) && second < third);
        assert_eq!(backoff.failures(&"a"), 3);
        // Another key is independent.
        assert!(backoff.next_delay(&"b", None) < Duration::from_millis(1200));
        for _ in 0..20 {
            backoff.next_delay(&"a", None);
        }
        assert!(backoff.next_delay(&"a", None) <= Duration::from_secs(66));
        backoff.reset(&"a");
        assert_eq!(backoff.failures(&"a"), 0);
        assert!(backoff.next_delay(&"a", None) < Duration::from_millis(1200));
    }

    #[test]
    fn a_server_requested_delay_is_honoured() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(
            backoff.next_delay(&"a", Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }
}
