//! The ledger: what each grant holds in the databases and what it currently asks for. Owned
//! by the grant reconciler (the only writer); the target reconciler reads it for drift repair
//! and deletion. Assumes one active replica (leader election makes it so).
//!
//! `held` is the in-process copy of `status.held`, seeded from the status the first time a
//! grant is seen after a start and authoritative from then on (the watch cache can lag the
//! status this process wrote, and a status edited by someone else must not steer revocations).
//! `wants` is what the grant's last decision asked for. Deciding what to release happens
//! under the ledger's one lock, together with recording the new `wants`, so grants sharing a
//! holding and changing at the same moment see each other's latest answer: at least one of
//! them finds nobody else asking and revokes it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;

use super::decide::{Other, Settlement, settle};
use crate::backend::Holding;

/// A grant, as the ledger knows it.
pub type GrantKey = ObjectRef<DynamicObject>;

#[derive(Clone, Debug, Default)]
struct Entry {
    held: BTreeSet<String>,
    /// `None`: not decided in this process yet; `Some(None)`: asks for nothing.
    wants: Option<Option<Holding>>,
    /// The holding last granted, and for which generation of the grant.
    granted: Option<(String, Option<i64>)>,
}

/// Per-grant records; see the module documentation.
#[derive(Default)]
pub struct Ledger(
    Mutex<HashMap<GrantKey, Entry>>,
    /// When the ledger was last seeded from the whole grant cache.
    Mutex<Option<tokio::time::Instant>>,
);

impl Ledger {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<GrantKey, Entry>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a seeding from the whole grant cache is due (none yet, or the last one is
    /// `every` old); if so, it counts as done from now.
    pub fn seed_due(&self, every: std::time::Duration) -> bool {
        let now = tokio::time::Instant::now();
        let mut last = self
            .1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at) < every) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// What `key` holds, seeding it from `recorded` (its status) when first seen.
    pub fn held(&self, key: &GrantKey, recorded: &[String]) -> BTreeSet<String> {
        self.map()
            .entry(key.clone())
            .or_insert_with(|| Entry {
                held: recorded.iter().map(|id| id.to_ascii_lowercase()).collect(),
                ..Entry::default()
            })
            .held
            .clone()
    }

    /// Replace what `key` holds (after it was written to the status, or before a write).
    pub fn set_held(&self, key: &GrantKey, held: BTreeSet<String>) {
        self.map().entry(key.clone()).or_default().held = held;
    }

    /// Record that `key` now asks for `wants` and decide, atomically with every other grant's
    /// decision, which of its `held` records it releases.
    pub fn decide(
        &self,
        key: &GrantKey,
        held: &BTreeSet<String>,
        wants: Option<Holding>,
        identity_known: bool,
    ) -> Settlement {
        let mut map = self.map();
        let entry = map.entry(key.clone()).or_default();
        entry.wants = Some(wants.clone());
        // Only records this grant might release need the others' view: usually there is none
        // (it holds nothing, or only what it asks for), and at thousands of grants copying
        // every other grant's records on each decision was most of the operator's CPU.
        let releasing: Vec<&String> = held
            .iter()
            .filter(|id| wants.as_ref().is_none_or(|w| &w.id != *id))
            .collect();
        if releasing.is_empty() {
            return settle(held, wants.as_ref(), identity_known, &[]);
        }
        let concerns = |e: &Entry| {
            releasing.iter().any(|id| {
                e.held.contains(*id)
                    || e.wants
                        .as_ref()
                        .is_some_and(|w| w.as_ref().is_some_and(|h| &h.id == *id))
            })
        };
        let others: Vec<Other> = map
            .iter()
            .filter(|(other, e)| *other != key && concerns(e))
            .map(|(_, e)| Other {
                wants: e.wants.as_ref().map(|w| w.as_ref().map(|h| h.id.clone())),
                held: e.held.clone(),
            })
            .collect();
        settle(held, wants.as_ref(), identity_known, &others)
    }

    /// Whether `key` was granted `holding` for `generation` in this process.
    pub fn granted(&self, key: &GrantKey, holding: &str, generation: Option<i64>) -> bool {
        self.map().get(key).is_some_and(|e| {
            e.granted
                .as_ref()
                .is_some_and(|(id, g)| id == holding && *g == generation)
        })
    }

    /// Remember that `holding` was granted for `generation` of `key`.
    pub fn set_granted(&self, key: &GrantKey, holding: Option<(String, Option<i64>)>) {
        self.map().entry(key.clone()).or_default().granted = holding;
    }

    /// Every holding an allowed grant asks for and was granted in this process, with one grant
    /// asking for it: what drift repair may restore. (Asked for but never granted is the grant
    /// reconciler's to retry, not the drift repair's.) Only those whose id `select` picks (one
    /// store's): every target's drift repair runs at its resync, often together, and each
    /// copying every grant's holding made memory grow with targets × grants.
    pub fn wanted_where(&self, select: impl Fn(&str) -> bool) -> Vec<(GrantKey, Holding)> {
        let map = self.map();
        let mut seen = BTreeSet::new();
        let mut wanted = Vec::new();
        for (key, entry) in map.iter() {
            if let Some(Some(holding)) = &entry.wants
                && select(&holding.id)
                && entry.held.contains(&holding.id)
                && entry
                    .granted
                    .as_ref()
                    .is_some_and(|(id, _)| id == &holding.id)
                && seen.insert(holding.id.clone())
            {
                wanted.push((key.clone(), holding.clone()));
            }
        }
        wanted
    }

    /// Every holding id some grant records, with the grants recording it.
    pub fn recorded(&self) -> Vec<(GrantKey, String)> {
        self.map()
            .iter()
            .flat_map(|(key, e)| e.held.iter().map(move |id| (key.clone(), id.clone())))
            .collect()
    }

    /// Forget every grant not in `live` (gone without a cleanup of ours, e.g. a finalizer
    /// removed by hand): they ask for nothing.
    pub fn prune(&self, live: &HashSet<GrantKey>) {
        self.map().retain(|key, _| live.contains(key));
    }

    /// Forget a grant that is gone.
    pub fn forget(&self, key: &GrantKey) {
        self.map().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> GrantKey {
        ObjectRef::<crate::api::DatabaseAccessGrant>::new(name)
            .within("ns")
            .erase()
    }

    fn holding(id: &str) -> Holding {
        Holding {
            id: id.into(),
            principal_id: "p".into(),
            role_id: "r".into(),
            scope: "s".into(),
        }
    }

    #[test]
    fn a_record_is_seeded_once_from_the_status_then_the_ledger_is_the_truth() {
        let ledger = Ledger::default();
        let a = key("a");
        assert_eq!(
            ledger.held(&a, &["X".into()]),
            BTreeSet::from(["x".to_string()])
        );
        // A later (edited, or lagging) status does not change what the ledger knows.
        assert_eq!(
            ledger.held(&a, &["y".into()]),
            BTreeSet::from(["x".to_string()])
        );
        ledger.forget(&a);
        assert_eq!(ledger.held(&a, &[]), BTreeSet::new());
    }

    #[test]
    fn sharers_deciding_through_the_ledger_leave_exactly_one_revoker() {
        let ledger = Ledger::default();
        let (a, b) = (key("a"), key("b"));
        let x = BTreeSet::from(["x".to_string()]);
        ledger.set_held(&a, x.clone());
        ledger.set_held(&b, x.clone());
        ledger.decide(&a, &x, Some(holding("x")), true);
        ledger.decide(&b, &x, Some(holding("x")), true);
        // Both refused now: the first hands on (the other still asks), the second revokes.
        let first = ledger.decide(&a, &x, None, true);
        let second = ledger.decide(&b, &x, None, true);
        assert_eq!(first.handed_on, vec!["x".to_string()]);
        assert_eq!(second.release, vec!["x".to_string()]);
    }

    #[test]
    fn only_wanted_recorded_and_granted_holdings_are_restored_and_gone_grants_are_pruned() {
        let ledger = Ledger::default();
        let (a, b) = (key("a"), key("b"));
        ledger.set_held(&a, BTreeSet::from(["x".to_string()]));
        ledger.set_held(&b, BTreeSet::from(["y".to_string()]));
        ledger.decide(&a, &BTreeSet::new(), Some(holding("x")), true);
        ledger.decide(&b, &BTreeSet::new(), Some(holding("y")), true);
        assert!(
            ledger.wanted_where(|_| true).is_empty(),
            "asked for and recorded, not granted yet"
        );
        ledger.set_granted(&a, Some(("x".to_string(), Some(1))));
        let wanted: Vec<String> = ledger
            .wanted_where(|_| true)
            .into_iter()
            .map(|(_, h)| h.id)
            .collect();
        assert_eq!(wanted, vec!["x".to_string()], "y is not granted yet");
        ledger.prune(&HashSet::from([b.clone()]));
        assert!(ledger.wanted_where(|_| true).is_empty());
        assert_eq!(ledger.recorded(), vec![(b, "y".to_string())]);
    }
}
