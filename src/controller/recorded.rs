//! The role assignment id each grant's status was last written with by this process, and the
//! generation access was last granted for.
//!
//! A reconcile reads the grant from the controller's cache, which can lag the status this
//! process just wrote. Acting on a stale `status.roleAssignmentId` after a principal or scope
//! change would forget the assignment that still has to be removed (a leak), and a stale
//! `AccessGranted` would send the same PUT again, holding the account's RBAC lock for nothing.
//! So the reconciler prefers what it recorded here; after a restart the cache is fresh and the
//! status is enough.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    assignment: Option<String>,
    granted_for: Option<i64>,
}

/// Last written assignment id per grant (`None`: written without one).
#[derive(Default)]
pub struct RecordedAssignments(Mutex<HashMap<ObjectRef<DynamicObject>, Record>>);

impl RecordedAssignments {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<DynamicObject>, Record>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What was last written for `key`, if anything was in this process.
    pub fn get(&self, key: &ObjectRef<DynamicObject>) -> Option<Option<String>> {
        self.map().get(key).map(|r| r.assignment.clone())
    }

    /// Record what the status was just written with: the assignment, and the generation whose
    /// access it granted (`None` when AccessGranted was not True).
    pub fn set(
        &self,
        key: &ObjectRef<DynamicObject>,
        assignment: Option<String>,
        granted_for: Option<i64>,
    ) {
        self.map().insert(
            key.clone(),
            Record {
                assignment,
                granted_for,
            },
        );
    }

    /// Whether this process last wrote `assignment` as granted for `generation`.
    pub fn granted(
        &self,
        key: &ObjectRef<DynamicObject>,
        assignment: &str,
        generation: Option<i64>,
    ) -> bool {
        self.map().get(key).is_some_and(|r| {
            r.granted_for.is_some()
                && r.granted_for == generation
                && r.assignment
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(assignment))
        })
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
        recorded.set(&a, Some("x".into()), Some(2));
        recorded.set(&b, None, None);
        assert_eq!(recorded.get(&a), Some(Some("x".into())));
        assert_eq!(recorded.get(&b), Some(None));
        recorded.forget(&a);
        assert_eq!(recorded.get(&a), None);
        assert!(!recorded.granted(&a, "x", Some(2)), "forgotten");
    }

    #[test]
    fn granted_holds_only_for_the_same_assignment_and_generation() {
        let recorded = RecordedAssignments::default();
        let a = ObjectRef::<crate::api::DatabaseAccessGrant>::new("a")
            .within("ns")
            .erase();
        recorded.set(&a, Some("/x/sqlRoleAssignments/G".into()), Some(3));
        assert!(recorded.granted(&a, "/X/sqlRoleAssignments/g", Some(3)));
        assert!(!recorded.granted(&a, "/x/sqlRoleAssignments/h", Some(3)));
        assert!(!recorded.granted(&a, "/x/sqlRoleAssignments/G", Some(4)));
        recorded.set(&a, Some("/x/sqlRoleAssignments/G".into()), None);
        assert!(!recorded.granted(&a, "/x/sqlRoleAssignments/G", None));
    }
}
