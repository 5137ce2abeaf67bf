//! Storage: every object of every served resource, one global resourceVersion counter, and a
//! bounded history of changes that watches resume from (older versions get `410 Gone`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use super::resources::ServedResource;

/// `(group, plural)`: one resource, whatever version a client asks for.
pub type ResKey = (String, String);
/// `(namespace, name)`; the namespace is `""` for cluster-scoped objects.
pub type ObjKey = (String, String);

/// How many changes the server remembers for resuming watches.
const HISTORY: usize = 10_000;

/// One change, as watches deliver it.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// The resource changed.
    pub key: ResKey,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change (before it, for `DELETED`, with the new resourceVersion).
    pub object: Value,
}

/// Shared storage.
pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// The state behind the lock.
pub struct Inner {
    /// The last resourceVersion handed out.
    pub rv: u64,
    /// Every served resource (built-ins and established CRDs).
    pub resources: Vec<ServedResource>,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Value>>,
    history: VecDeque<Arc<Change>>,
    /// Changes at or below this version are forgotten.
    pub compacted: u64,
    changes: broadcast::Sender<Arc<Change>>,
}

impl Store {
    /// Empty storage serving `resources`.
    pub fn new(resources: Vec<ServedResource>) -> Self {
        let (changes, _) = broadcast::channel(16_384);
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                resources,
                objects: HashMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                changes: changes.clone(),
            }),
            changes,
        }
    }

    /// The state, locked. Never hold it across an await.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }
}

impl Inner {
    /// The served resource at `group/version` named `plural`.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ServedResource> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// The served resource of `kind` in `group` (any version).
    pub fn resource_of_kind(&self, group: &str, kind: &str) -> Option<ServedResource> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    /// One object.
    pub fn get(&self, key: &ResKey, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Every object of a resource (in one namespace, or all), in key order.
    pub fn list(&self, key: &ResKey, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .get(key)
            .map(|objects| {
                objects
                    .iter()
                    .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every stored object with its resource, for garbage collection.
    pub fn all_objects(&self) -> Vec<(ResKey, Value)> {
        self.objects
            .iter()
            .flat_map(|(key, objects)| objects.values().map(move |v| (key.clone(), v.clone())))
            .collect()
    }

    /// Store `object` (created or changed): a new resourceVersion and a change event.
    pub fn put(&mut self, key: &ResKey, ns: &str, name: &str, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let objects = self.objects.entry(key.clone()).or_default();
        let kind = if objects.contains_key(&(ns.to_string(), name.to_string())) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        objects.insert((ns.to_string(), name.to_string()), object.clone());
        self.record(key, kind, object.clone());
        object
    }

    /// Remove an object for good: a new resourceVersion and a `DELETED` event.
    pub fn remove(&mut self, key: &ResKey, ns: &str, name: &str) -> Option<Value> {
        let mut object = self
            .objects
            .get_mut(key)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.record(key, "DELETED", object.clone());
        Some(object)
    }

    /// Forget all history, so every resuming watch gets `410 Gone`.
    pub fn compact(&mut self) {
        // Every version handed out so far becomes too old; the bump gives lists a version
        // that is not, so clients can list and watch again.
        self.rv += 1;
        self.compacted = self.rv;
        self.history.clear();
    }

    /// Changes to `key` after `rv`, oldest first; `None` when `rv` is too old.
    pub fn changes_since(&self, key: &ResKey, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv < self.compacted {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|c| c.rv > rv && &c.key == key)
                .cloned()
                .collect(),
        )
    }

    fn record(&mut self, key: &ResKey, kind: &'static str, object: Value) {
        let change = Arc::new(Change {
            rv: self.rv,
            key: key.clone(),
            kind,
            object,
        });
        self.history.push_back(change.clone());
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.changes.send(change);
    }
}
