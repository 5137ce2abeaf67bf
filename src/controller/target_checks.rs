//! How much of its store a target's pass looks at. Every grant change wakes the target (its
//! grant count), and a burst of grants woke it hundreds of times, each pass reading the account,
//! its role definitions and its assignments from ARM: the subscription's read bucket went on
//! that instead of on the grants' own long-running operations. Now a pass reads Azure only
//! when something is due:
//!
//! - **full** (the account, its role definitions, then drift): for a new or changed spec, after
//!   a failure, and once per [`DEEP_INTERVAL`];
//! - **drift** (one list of the store's access): once per resync interval;
//! - otherwise **count only**: the grant count is updated and Azure is not called.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The longest a target goes without its store being checked in full.
pub const DEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// What a target pass does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Check the store in full, then repair drift.
    Full,
    /// Repair drift only (one list of the store's access).
    Drift,
    /// Update the grant count only; the next drift check is due after this long.
    CountOnly(Duration),
}

/// When a target's store was last checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The target's generation then.
    pub generation: Option<i64>,
    /// The last full check.
    pub full_at: Instant,
    /// The last drift check (a full check is one too).
    pub drift_at: Instant,
}

/// What this pass of a target does, given its last check.
pub fn pass(
    last: Option<&Checked>,
    generation: Option<i64>,
    ready: bool,
    now: Instant,
    resync: Duration,
) -> Pass {
    let Some(last) = last else {
        return Pass::Full;
    };
    if !ready || last.generation != generation {
        return Pass::Full;
    }
    if now.duration_since(last.full_at) >= DEEP_INTERVAL.max(resync) {
        return Pass::Full;
    }
    // A tenth of slack: a resync requeued for exactly the interval must not just miss it.
    let since = now.duration_since(last.drift_at);
    if since + resync / 10 >= resync {
        return Pass::Drift;
    }
    Pass::CountOnly(resync - since)
}

/// The last check of each target, by name. Written by the target reconciler only.
#[derive(Default)]
pub struct TargetChecks(Mutex<HashMap<String, Checked>>);

impl TargetChecks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Checked>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What this pass of target `name` does now.
    pub fn pass(&self, name: &str, generation: Option<i64>, ready: bool, resync: Duration) -> Pass {
        pass(
            self.map().get(name),
            generation,
            ready,
            Instant::now(),
            resync,
        )
    }

    /// Record a pass that succeeded.
    pub fn done(&self, name: &str, generation: Option<i64>, pass: Pass) {
        let now = Instant::now();
        let mut map = self.map();
        match (pass, map.get_mut(name)) {
            (Pass::Full, _) | (Pass::Drift, None) => {
                map.insert(
                    name.to_string(),
                    Checked {
                        generation,
                        full_at: now,
                        drift_at: now,
                    },
                );
            }
            (Pass::Drift, Some(checked)) => checked.drift_at = now,
            (Pass::CountOnly(_), _) => {}
        }
    }

    /// Forget a target (it failed, or it is gone): its next pass is a full one.
    pub fn forget(&self, name: &str) {
        self.map().remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESYNC: Duration = Duration::from_secs(300);

    #[test]
    fn a_pass_reads_azure_only_when_something_is_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let checked = Checked {
            generation: Some(2),
            full_at: t0,
            drift_at: t0,
        };
        let drifted = Checked {
            drift_at: t0 + s(3000),
            ..checked
        };
        // (last check, generation, ready, seconds after t0, expected)
        let table: &[(Option<&Checked>, i64, bool, u64, Pass)] = &[
            (None, 2, true, 0, Pass::Full),
            (Some(&checked), 3, true, 1, Pass::Full),
            (Some(&checked), 2, false, 1, Pass::Full),
            (Some(&checked), 2, true, 1, Pass::CountOnly(s(299))),
            (Some(&checked), 2, true, 269, Pass::CountOnly(s(31))),
            (Some(&checked), 2, true, 270, Pass::Drift),
            (Some(&checked), 2, true, 400, Pass::Drift),
            (Some(&drifted), 2, true, 3100, Pass::CountOnly(s(200))),
            (Some(&drifted), 2, true, 3600, Pass::Full),
        ];
        for (i, (last, generation, ready, at, expected)) in table.iter().enumerate() {
            let got = pass(*last, Some(*generation), *ready, t0 + s(*at), RESYNC);
            assert_eq!(got, *expected, "row {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_or_a_new_spec_means_a_full_check_next() {
        let checks = TargetChecks::default();
        assert_eq!(checks.pass("db", Some(1), true, RESYNC), Pass::Full);
        checks.done("db", Some(1), Pass::Full);
        assert!(matches!(
            checks.pass("db", Some(1), true, RESYNC),
            Pass::CountOnly(_)
        ));
        tokio::time::advance(RESYNC).await;
        assert_eq!(checks.pass("db", Some(1), true, RESYNC), Pass::Drift);
        checks.done("db", Some(1), Pass::Drift);
        assert!(matches!(
            checks.pass("db", Some(1), true, RESYNC),
            Pass::CountOnly(_)
        ));
        assert_eq!(checks.pass("db", Some(2), true, RESYNC), Pass::Full);
        checks.forget("db");
        assert_eq!(checks.pass("db", Some(1), true, RESYNC), Pass::Full);
    }
}
