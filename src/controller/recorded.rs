//! The role assignment id each grant's status was last written with by this process.
//!
//! A reconcile reads the grant from the controller's cache, which can lag the status this
//! process just wrote. Acting on a stale `status.roleAssignmentId` after a principal or scope
//! change would forget the assignment that still has to be removed (a leak), so the reconciler
//! prefers what it recorded here; after a restart the cache is fresh and the status is enough.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;

/// Last written assignment id per grant (`None`: written without one).
#[derive(Default)]
pub struct RecordedAssignments(Mutex<HashMap<ObjectRef<DynamicObject>, Option<String>>>);

impl RecordedAssignments {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<DynamicObject>, Option<String>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What was last written for `key`, if anything was in this process.
    pub fn get(&self, key: &ObjectRef<DynamicObject>) -> Option<Option<String>> {
        self.map().get(key).cloned()
    }

    /// Record what the status was just written with.
    pub fn set(&self, key: &ObjectRef<DynamicObject>, assignment: Option<String>) {
        self.map().insert(key.clone(), assignment);
    }

    /// Forget a grant that is gone.
    pub fn forget(&self, key: &ObjectRef<DynamicObject>) {
        self.map().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_per_grant_and_can_be_forgotten() {
        let recorded = RecordedAssignments::default();
        let grant = |name: &str| {
            ObjectRef::<crate::api::DatabaseAccessGrant>::new(name)
                .within("ns")
                .erase()
        };
        let (a, b) = (grant("a"), grant("b"));
        assert_eq!(recorded.get(&a), None);
        recorded.set(&a, Some("x".into()));
        recorded.set(&b, None);
        assert_eq!(recorded.get(&a), Some(Some("x".into())));
        assert_eq!(recorded.get(&b), Some(None));
        recorded.forget(&a);
        assert_eq!(recorded.get(&a), None);
    }
}
