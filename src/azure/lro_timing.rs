//! When to poll a long-running operation that came without `Retry-After`. Cosmos DB's RBAC
//! writes are serialised per account, so the time between an operation finishing and the
//! operator noticing is lost for every write queued behind it: polling on a fixed schedule
//! (first after 0.25 s, then 0.5 s) made a 0.3 s operation cost 0.75 s. Instead each kind of
//! operation keeps an estimate of how long it takes, learnt from the polls themselves, and the
//! first poll comes at that estimate; an operation still running is polled again after a small
//! step (an eighth of the estimate, doubling). The estimate creeps down after each first-poll
//! hit and jumps to the middle of the bracket after a miss, so it stays just above the real
//! duration: most writes cost one poll, a few two.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The shortest first poll and step (no tighter loop than this against ARM).
pub const MIN_WAIT: Duration = Duration::from_millis(25);

/// The estimate after an operation was seen done `done_at` after it was accepted, having been
/// seen running last at `last_running` (`None`: done at the first poll).
pub fn next_estimate(
    current: Option<Duration>,
    last_running: Option<Duration>,
    done_at: Duration,
    ceiling: Duration,
) -> Duration {
    let estimate = match last_running {
        // Done in (last_running, done_at]: aim at the middle.
        Some(running) => running + (done_at.saturating_sub(running)) / 2,
        // Done by the first poll: it may be shorter than we thought; try a little sooner.
        None => current.unwrap_or(done_at).min(done_at).mul_f64(0.95),
    };
    estimate.clamp(MIN_WAIT, ceiling.max(MIN_WAIT))
}

/// The wait before poll number `polls` (0: the first) of an operation of a kind whose
/// estimate is `estimate`; `fallback` is the configured poll interval.
pub fn wait_before(estimate: Option<Duration>, polls: u32, fallback: Duration) -> Duration {
    let doubling = |base: Duration, n: u32| base.saturating_mul(1 << n.min(6)).min(fallback);
    match (estimate, polls) {
        (Some(estimate), 0) => estimate.min(fallback),
        (Some(estimate), n) => doubling((estimate / 8).max(MIN_WAIT), n - 1),
        // Nothing learnt yet: an eighth of the interval, doubling up to it.
        (None, n) => doubling(fallback / 8, n),
    }
}

/// The learnt duration of each kind of operation (keyed by the call's operation name).
#[derive(Debug, Default)]
pub struct LroTimes(Mutex<HashMap<&'static str, Duration>>);

impl LroTimes {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Duration>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current estimate for `operation`.
    pub fn estimate(&self, operation: &'static str) -> Option<Duration> {
        self.map().get(operation).copied()
    }

    /// Learn from an operation of kind `operation` seen done (see [`next_estimate`]).
    pub fn learn(
        &self,
        operation: &'static str,
        last_running: Option<Duration>,
        done_at: Duration,
        ceiling: Duration,
    ) {
        let mut map = self.map();
        let current = map.get(operation).copied();
        map.insert(
            operation,
            next_estimate(current, last_running, done_at, ceiling),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_estimate_follows_the_bracket_of_each_operation() {
        let ceiling = ms(2000);
        // (current, last seen running, seen done, expected)
        let table = [
            (None, None, ms(250), ms(237)),
            (Some(ms(400)), None, ms(400), ms(380)),
            (Some(ms(400)), None, ms(300), ms(285)),
            (Some(ms(280)), Some(ms(280)), ms(320), ms(300)),
            (None, Some(ms(250)), ms(750), ms(500)),
            (Some(ms(26)), None, ms(26), MIN_WAIT),
            (None, Some(ms(9000)), ms(9500), ceiling),
        ];
        for (i, (current, running, done, expected)) in table.into_iter().enumerate() {
            let got = next_estimate(current, running, done, ceiling);
            assert!(
                got.abs_diff(expected) <= ms(1),
                "row {i}: {got:?} != {expected:?}"
            );
        }
    }

    #[test]
    fn polls_come_at_the_estimate_then_in_small_doubling_steps() {
        let interval = ms(2000);
        assert_eq!(wait_before(Some(ms(300)), 0, interval), ms(300));
        assert_eq!(
            wait_before(Some(ms(300)), 1, interval),
            ms(37) + Duration::from_micros(500)
        );
        assert_eq!(wait_before(Some(ms(300)), 2, interval), ms(75));
        assert_eq!(wait_before(Some(ms(300)), 30, interval), interval);
        assert_eq!(wait_before(Some(ms(5000)), 0, interval), interval);
        assert_eq!(wait_before(Some(ms(40)), 1, interval), MIN_WAIT);
        assert_eq!(wait_before(None, 0, interval), ms(250));
        assert_eq!(wait_before(None, 1, interval), ms(500));
        assert_eq!(wait_before(None, 9, interval), interval);
    }

    #[test]
    fn a_steady_operation_costs_mostly_one_poll_and_little_wasted_time() {
        // Simulate 200 writes of a 300 ms operation polled with 20 ms latency.
        let times = LroTimes::default();
        let (duration, interval) = (ms(300), ms(2000));
        let (mut polls, mut waited) = (0u32, Duration::ZERO);
        for _ in 0..200 {
            let mut at = Duration::ZERO;
            let mut running = None;
            for n in 0.. {
                at += wait_before(times.estimate("put"), n, interval);
                polls += 1;
                if at >= duration {
                    times.learn("put", running, at, interval);
                    break;
                }
                running = Some(at);
            }
            waited += at;
        }
        let per_write = waited / 200;
        assert!(polls <= 200 * 3 / 2, "{polls} polls for 200 writes");
        assert!(per_write <= ms(330), "{per_write:?} per 300 ms write");
    }
}
