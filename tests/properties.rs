//! Property tests: no input from Azure, Entra ID or Kubernetes can panic the operator's
//! parsers or its decisions, and the decisions keep their promises for any input.

use std::collections::{BTreeMap, BTreeSet};

use dbgrant::api::{DatabaseAccessGrantSpec, DatabaseTargetSpec, DeletionPolicy};
use dbgrant::azure::entra::read_claims;
use dbgrant::azure::error::{ArmError, arm_failure, entra_failure, parse_retry_after};
use dbgrant::backend::cosmos::parse_assignment_id;
use dbgrant::backend::{BackendError, Holding, MAX_RETRY_AFTER};
use dbgrant::controller::decide::{Gate, Other, TargetView, gate, settle};
use dbgrant::controller::identity::claimed_identity;
use dbgrant::settings::parse_duration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn retry_after_never_panics_and_stays_bounded(value in any::<String>(), digits in "[0-9]{1,40}") {
        for input in [value.as_str(), digits.as_str()] {
            if let Some(wait) = parse_retry_after(input) {
                prop_assert!(wait <= MAX_RETRY_AFTER);
            }
        }
    }

    #[test]
    fn azure_error_bodies_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        json_code in any::<String>(),
        json_message in any::<String>(),
        status in proptest::option::of(0u16..1000),
    ) {
        let _ = ArmError::parse(&body);
        let shaped = serde_json::json!({"error": {"code": json_code, "message": json_message}}).to_string();
        for body in [body.as_slice(), shaped.as_bytes()] {
            let error = arm_failure("PUT x", status, body, None);
            prop_assert!(!error.message.is_empty());
            let error = entra_failure("exchange", status.unwrap_or(400), body);
            prop_assert!(!error.message.is_empty());
        }
    }

    #[test]
    fn token_claims_and_ids_never_panic(token in any::<String>(), id in any::<String>()) {
        let _ = read_claims(&token);
        let _ = parse_assignment_id(&id);
        let with_segment = format!("{id}/sqlRoleAssignments/{id}");
        let _ = parse_assignment_id(&with_segment);
        let _ = parse_duration(&id);
    }

    #[test]
    fn service_account_annotations_never_panic(
        annotations in proptest::collection::btree_map(any::<String>(), any::<String>(), 0..6),
        client in any::<String>(),
    ) {
        let mut annotations = annotations;
        annotations.insert("azure.workload.identity/client-id".into(), client);
        let _ = claimed_identity("sa", &annotations, None);
    }

    #[test]
    fn the_gate_never_opens_for_a_namespace_or_role_the_target_refuses(
        labels in proptest::collection::btree_map("[a-z]{1,3}", "[a-z]{1,3}", 0..4),
        selector in proptest::collection::btree_map("[a-z]{1,3}", "[a-z]{1,3}", 0..3),
        operator in "In|NotIn|Exists|DoesNotExist|Bogus",
        values in proptest::collection::vec("[a-z]{0,3}", 0..3),
        role in "[a-z]{1,12}",
        allowed in proptest::collection::vec("[a-z]{1,12}", 0..3),
        ready in proptest::option::of(any::<bool>()),
    ) {
        let target = DatabaseTargetSpec {
            cosmos: None,
            postgres: None,
            sql: None,
            allowed_namespaces: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "k".into(),
                    operator: operator.clone(),
                    values: Some(values),
                }]),
            }),
            allowed_roles: allowed.clone(),
        };
        let spec = DatabaseAccessGrantSpec {
            service_account_name: "sa".into(),
            target: "t".into(),
            role: role.clone(),
            database: None,
            container: None,
            token_secret: None,
            deletion_policy: DeletionPolicy::Delete,
        };
        let verdict = gate(&spec, "ns", &labels, &TargetView::Present { spec: &target, ready }, Ok(()));
        let allowed_by_policy = dbgrant::controller::policy::check(&target, "ns", &labels, &role).is_ok();
        if !allowed_by_policy {
            prop_assert!(matches!(verdict, Gate::Refused(..)));
        }
        if matches!(verdict, Gate::Open) {
            prop_assert!(allowed_by_policy && ready == Some(true));
        }
        let declared = gate(&spec, "ns", &labels, &TargetView::Present { spec: &target, ready }, Err(BackendError::new(dbgrant::api::Reason::InvalidSpec, "x")));
        prop_assert!(!matches!(declared, Gate::Open));
        let _ = BTreeMap::<String, String>::new();
    }

    #[test]
    fn settling_never_revokes_what_is_wanted_or_might_be(
        held in proptest::collection::btree_set("[a-e]", 0..5),
        want in proptest::option::of("[a-e]"),
        known in any::<bool>(),
        others in proptest::collection::vec(
            (proptest::option::of(proptest::option::of("[a-e]")), proptest::collection::btree_set("[a-e]", 0..3)),
            0..4,
        ),
    ) {
        let want = want.map(|id| Holding { id, principal_id: "p".into(), role_id: "r".into(), scope: "s".into() });
        let others: Vec<Other> = others.into_iter().map(|(wants, held)| Other { wants, held }).collect();
        let settled = settle(&held, want.as_ref(), known, &others);
        let all: Vec<&String> = settled.release.iter().chain(&settled.handed_on).chain(&settled.pending).collect();
        // Every held holding but the wanted one has exactly one fate.
        let expected: BTreeSet<&String> = held.iter().filter(|id| want.as_ref().is_none_or(|w| &w.id != *id)).collect();
        prop_assert_eq!(all.len(), expected.len());
        prop_assert_eq!(all.iter().copied().collect::<BTreeSet<_>>(), expected);
        for id in &settled.release {
            prop_assert!(known, "nothing is revoked while the identity is unknown");
            for other in &others {
                match &other.wants {
                    Some(Some(wanted)) => prop_assert_ne!(wanted, id),
                    Some(None) => {}
                    None => prop_assert!(!other.held.contains(id)),
                }
            }
        }
    }
}
