//! Table tests of the plan: each row a sentence, the whole step list asserted.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const OID: &str = "0f6c7a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6";
const OTHER: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const DB: &str = "appdb";

fn member(role: &str) -> Grantable {
    Grantable::Member(role.into())
}

fn set(items: &[Grantable]) -> BTreeSet<Grantable> {
    items.iter().cloned().collect()
}

fn desired(role: &str, grantables: &[Grantable]) -> Desired {
    Desired {
        object_id: OID.into(),
        login: OID.into(),
        database: DB.into(),
        role: role.into(),
        grantables: set(grantables),
    }
}

fn record(created: bool, entries: &[(&str, &[Grantable])]) -> Record {
    let mut grants = BTreeMap::new();
    for (role, g) in entries {
        grants
            .entry(DB.to_string())
            .or_insert_with(BTreeMap::new)
            .insert(role.to_string(), set(g));
    }
    Record { created, grants }
}

fn existing(login: &str, record: Option<Record>, present: &[Grantable]) -> Observed {
    Observed {
        login: Some(login.into()),
        name_owner: Some(NameOwner::Entra(OID.into())),
        record,
        present: set(present),
    }
}

#[test]
fn a_fresh_principal_is_created_with_its_record_then_granted() {
    let steps = plan_grant(
        &desired("reader", &[member("app_reader")]),
        &Observed::default(),
    );
    let empty = Record {
        created: true,
        grants: BTreeMap::new(),
    };
    assert_eq!(
        steps,
        Ok(vec![
            Step::CreatePrincipal {
                login: OID.into(),
                object_id: OID.into(),
                record: empty,
            },
            Step::WriteRecord {
                login: OID.into(),
                record: record(true, &[("reader", &[member("app_reader")])]),
            },
            Step::Grant {
                login: OID.into(),
                grantable: member("app_reader"),
            },
        ])
    );
}

#[test]
fn a_role_mapped_to_the_object_id_under_another_name_is_adopted_not_created_or_renamed() {
    let observed = Observed {
        login: Some("orders-api".into()),
        name_owner: None,
        record: None,
        present: set(&[]),
    };
    let steps = plan_grant(&desired("reader", &[member("app_reader")]), &observed).unwrap();
    assert_eq!(
        steps,
        vec![
            Step::WriteRecord {
                login: "orders-api".into(),
                record: record(false, &[("reader", &[member("app_reader")])]),
            },
            Step::Grant {
                login: "orders-api".into(),
                grantable: member("app_reader"),
            },
        ],
        "adopted, so the record says dbgrant did not create it and will never drop it"
    );
}

#[test]
fn a_name_taken_by_another_object_id_or_a_non_entra_role_is_a_conflict() {
    for owner in [NameOwner::Entra(OTHER.into()), NameOwner::NotEntra] {
        let observed = Observed {
            name_owner: Some(owner.clone()),
            ..Observed::default()
        };
        let conflict = plan_grant(&desired("reader", &[member("app_reader")]), &observed)
            .expect_err("never reused");
        assert!(matches!(conflict, Conflict::NameTaken { .. }));
        assert!(
            conflict.to_string().contains("never takes over"),
            "{conflict}"
        );
    }
}

#[test]
fn an_applied_plan_plans_nothing() {
    let observed = existing(
        OID,
        Some(record(true, &[("reader", &[member("app_reader")])])),
        &[member("app_reader")],
    );
    assert_eq!(
        plan_grant(&desired("reader", &[member("app_reader")]), &observed),
        Ok(vec![])
    );
}

#[test]
fn a_membership_is_added_when_the_role_grows_and_revoked_when_it_shrinks() {
    let observed = existing(
        OID,
        Some(record(true, &[("reader", &[member("a"), member("b")])])),
        &[member("a"), member("b")],
    );
    let steps = plan_grant(&desired("reader", &[member("a"), member("c")]), &observed).unwrap();
    assert_eq!(
        steps,
        vec![
            Step::WriteRecord {
                login: OID.into(),
                record: record(
                    true,
                    &[("reader", &[member("a"), member("b"), member("c")])]
                ),
            },
            Step::Grant {
                login: OID.into(),
                grantable: member("c"),
            },
            Step::Revoke {
                login: OID.into(),
                grantable: member("b"),
            },
            Step::WriteRecord {
                login: OID.into(),
                record: record(true, &[("reader", &[member("a"), member("c")])]),
            },
        ]
    );
}

#[test]
fn a_membership_nobody_recorded_is_left_alone() {
    let observed = existing(
        OID,
        Some(record(true, &[("reader", &[member("a")])])),
        &[member("a"), member("made_by_hand")],
    );
    assert_eq!(
        plan_grant(&desired("reader", &[member("a")]), &observed),
        Ok(vec![])
    );
    let steps = plan_revoke(DB, "reader", &observed);
    assert!(
        !steps.iter().any(
            |s| matches!(s, Step::Revoke { grantable, .. } if *grantable == member("made_by_hand"))
        ),
        "{steps:?}"
    );
}

#[test]
fn a_membership_shared_with_another_recorded_role_stays_when_one_lets_go() {
    let shared = record(
        true,
        &[
            ("reader", &[member("app_reader")]),
            ("contributor", &[member("app_reader"), member("app_writer")]),
        ],
    );
    let observed = existing(
        OID,
        Some(shared),
        &[member("app_reader"), member("app_writer")],
    );
    let steps = plan_revoke(DB, "reader", &observed);
    assert_eq!(
        steps,
        vec![Step::WriteRecord {
            login: OID.into(),
            record: record(
                true,
                &[("contributor", &[member("app_reader"), member("app_writer")])]
            ),
        }],
        "contributor still gives app_reader; the login stays for it"
    );
}

#[test]
fn the_last_grant_revokes_its_memberships_and_drops_the_role_it_created() {
    let observed = existing(
        OID,
        Some(record(true, &[("reader", &[member("app_reader")])])),
        &[member("app_reader")],
    );
    assert_eq!(
        plan_revoke(DB, "reader", &observed),
        vec![
            Step::Revoke {
                login: OID.into(),
                grantable: member("app_reader"),
            },
            Step::WriteRecord {
                login: OID.into(),
                record: Record {
                    created: true,
                    grants: BTreeMap::new()
                },
            },
            Step::DropRole { login: OID.into() },
        ]
    );
}

#[test]
fn an_adopted_role_is_never_dropped() {
    let observed = existing(
        "orders-api",
        Some(record(false, &[("reader", &[member("app_reader")])])),
        &[member("app_reader")],
    );
    let steps = plan_revoke(DB, "reader", &observed);
    assert!(
        !steps.iter().any(|s| matches!(s, Step::DropRole { .. })),
        "{steps:?}"
    );
    assert!(steps.iter().any(|s| matches!(s, Step::Revoke { .. })));
}

#[test]
fn delete_revokes_what_was_recorded_and_retain_leaves_nothing_to_revoke() {
    // Delete: the grant's entry is recorded, so it is revoked.
    let recorded = existing(
        OID,
        Some(record(true, &[("reader", &[member("app_reader")])])),
        &[member("app_reader")],
    );
    assert!(!plan_revoke(DB, "reader", &recorded).is_empty());
    // Retain hands the access over: the operator stops recording it, and a role nobody's
    // record names (made by hand, or retained) is never touched.
    let unrecorded = existing(OID, None, &[member("app_reader")]);
    assert_eq!(plan_revoke(DB, "reader", &unrecorded), vec![]);
    let absent = Observed::default();
    assert_eq!(plan_revoke(DB, "reader", &absent), vec![]);
}

#[test]
fn a_drop_that_failed_with_2bp01_is_retried_by_the_next_revoke() {
    // The entry went, DROP ROLE was refused (dependent objects): nothing is left but the drop.
    let observed = existing(
        OID,
        Some(Record {
            created: true,
            grants: BTreeMap::new(),
        }),
        &[],
    );
    assert_eq!(
        plan_revoke(DB, "reader", &observed),
        vec![Step::DropRole { login: OID.into() }]
    );
}

#[test]
fn records_round_trip_through_the_comment_and_foreign_comments_are_not_records() {
    let r = record(
        true,
        &[(
            "reader",
            &[
                member("we\"ird 'role"),
                Grantable::Tables {
                    schema: "sales".into(),
                    privilege: crate::api::TablePrivilege::Select,
                },
            ],
        )],
    );
    assert_eq!(Record::from_comment(&r.to_comment()), Some(r));
    assert_eq!(Record::from_comment("the billing team's role"), None);
    assert_eq!(Record::from_comment("dbgrant:{not json"), None);
}

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{1,20}",
        Just("\"; DROP ROLE azure_pg_admin; --".to_string()),
        Just("a".repeat(64)),
        Just("nul\0byte".to_string()),
        Just("rôle-ünïcødé-🚀".to_string()),
        Just("'".to_string()),
    ]
}

proptest! {
    #[test]
    fn re_planning_an_applied_grant_plans_nothing_for_any_names(
        roles in prop::collection::btree_set(hostile(), 0..4),
        login in hostile(),
    ) {
        let grantables: BTreeSet<Grantable> = roles.iter().cloned().map(Grantable::Member).collect();
        let want = Desired { login: login.clone(), grantables: grantables.clone(), ..desired("reader", &[]) };
        let mut observed = Observed::default();
        let mut applied_record = None;
        for step in plan_grant(&want, &observed).expect("fresh") {
            match step {
                Step::CreatePrincipal { login, record, .. } => {
                    observed.login = Some(login);
                    applied_record = Some(record);
                }
                Step::WriteRecord { record, .. } => applied_record = Some(record),
                Step::Grant { grantable, .. } => { observed.present.insert(grantable); }
                Step::Revoke { grantable, .. } => { observed.present.remove(&grantable); }
                Step::DropRole { .. } => prop_assert!(false, "a grant never drops"),
            }
        }
        observed.record = applied_record;
        prop_assert_eq!(observed.login.as_deref(), Some(login.as_str()));
        prop_assert_eq!(&observed.present, &grantables);
        prop_assert_eq!(plan_grant(&want, &observed), Ok(vec![]));
        // And the record survives the comment it is kept in, whatever the names.
        let record = observed.record.clone().expect("recorded");
        prop_assert_eq!(Record::from_comment(&record.to_comment()), Some(record));
    }

    #[test]
    fn revoking_touches_only_recorded_grantables(
        recorded in prop::collection::btree_set(hostile(), 0..4),
        by_hand in prop::collection::btree_set(hostile(), 0..4),
    ) {
        let recorded: BTreeSet<Grantable> = recorded.into_iter().map(Grantable::Member).collect();
        let by_hand: BTreeSet<Grantable> = by_hand.into_iter().map(Grantable::Member).collect();
        let observed = Observed {
            login: Some(OID.into()),
            name_owner: None,
            record: Some(Record { created: true, grants: BTreeMap::from([(DB.to_string(), BTreeMap::from([("reader".to_string(), recorded.clone())]))]) }),
            present: recorded.union(&by_hand).cloned().collect(),
        };
        for step in plan_revoke(DB, "reader", &observed) {
            if let Step::Revoke { grantable, .. } = step {
                prop_assert!(recorded.contains(&grantable));
            }
        }
    }
}
