//! Fault injection and request counters, for tests and benchmarks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// Which requests a fault applies to, and what it does.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// Verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`); `None` for any.
    pub verb: Option<String>,
    /// Plural resource (`secrets`, `databaseaccessgrants`); `None` for any.
    pub resource: Option<String>,
    /// Answer with this status (409, 429, 500, ...) instead of serving the request.
    pub status: Option<u16>,
    /// Wait this long before serving.
    pub latency: Option<Duration>,
    /// How many matching requests it hits; `None` for all until cleared.
    pub times: Option<u32>,
}

/// Requests served, by verb and resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<(String, String), u64>);

impl Counters {
    /// Requests with `verb` on `resource`.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.0
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// All requests with `verb`, whatever the resource.
    pub fn verb(&self, verb: &str) -> u64 {
        self.0
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }
}

/// A cheap handle on the simulator's faults and counters.
#[derive(Clone)]
pub struct Faults {
    rules: Arc<Mutex<Vec<Fault>>>,
    counters: Arc<Mutex<Counters>>,
    /// Requests on a subresource, keyed `(verb, "plural/subresource")`, kept apart so the
    /// counters above (and sums over them) stay as they were.
    subresources: Arc<Mutex<Counters>>,
    epoch: Arc<watch::Sender<u64>>,
    expire: Arc<dyn Fn() + Send + Sync>,
}

impl Faults {
    pub(crate) fn new(expire: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self {
            rules: Arc::default(),
            counters: Arc::default(),
            subresources: Arc::default(),
            epoch: Arc::new(watch::channel(0).0),
            expire,
        }
    }

    /// Add a fault.
    pub fn inject(&self, fault: Fault) {
        lock(&self.rules).push(fault);
    }

    /// Remove every fault.
    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// End every open watch (clients resume from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Forget the change history and end every open watch, so resuming clients get `410 Gone`
    /// and must list again.
    pub fn expire_watches(&self) {
        (self.expire)();
        self.drop_watches();
    }

    /// The request counters so far.
    pub fn counters(&self) -> Counters {
        lock(&self.counters).clone()
    }

    /// Requests on subresources so far, keyed `(verb, "plural/subresource")` (e.g. `("patch",
    /// "databaseaccessgrants/status")`).
    pub fn subresource_counters(&self) -> Counters {
        lock(&self.subresources).clone()
    }

    /// Both kinds of counters as JSON, `{"verb resource": n}` (resource `plural` or
    /// `plural/subresource`), as the simulator serves them.
    pub fn counters_json(&self) -> serde_json::Value {
        let mut all = serde_json::Map::new();
        for counters in [self.counters(), self.subresource_counters()] {
            for ((verb, resource), count) in counters.0 {
                all.insert(format!("{verb} {resource}"), count.into());
            }
        }
        serde_json::Value::Object(all)
    }

    pub(crate) fn count_subresource(&self, verb: &str, resource: &str, subresource: &str) {
        *lock(&self.subresources)
            .0
            .entry((verb.to_string(), format!("{resource}/{subresource}")))
            .or_default() += 1;
    }

    pub(crate) fn watch_epoch(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Count a request and return the fault it hits, if any.
    pub(crate) fn hit(&self, verb: &str, resource: &str) -> Option<Fault> {
        *lock(&self.counters)
            .0
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
        let mut rules = lock(&self.rules);
        let index = rules.iter().position(|f| {
            f.verb.as_deref().is_none_or(|v| v == verb)
                && f.resource.as_deref().is_none_or(|r| r == resource)
        })?;
        let fault = rules[index].clone();
        if let Some(times) = &mut rules[index].times {
            *times = times.saturating_sub(1);
            if *times == 0 {
                rules.remove(index);
            }
        }
        Some(fault)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
