//! Table tests of the plan: each row a sentence, the whole step list asserted.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const CID: &str = "2ff8edf0-dccb-4148-a649-2c1154e1e129";
const OTHER: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

fn cid() -> Uuid {
    Uuid::parse_str(CID).expect("guid")
}

fn member(role: &str) -> Grantable {
    Grantable::Member(role.into())
}

fn select_on(schema: &str) -> Grantable {
    Grantable::Schema {
        schema: schema.into(),
        permission: SqlPermission::Select,
    }
}

fn set(items: &[Grantable]) -> BTreeSet<Grantable> {
    items.iter().cloned().collect()
}

fn desired(role: &str, grantables: &[Grantable], dialect: Dialect) -> Desired {
    Desired {
        client_id: cid(),
        object_id: Some("oid".into()),
        user: CID.into(),
        role: role.into(),
        grantables: set(grantables),
        creation: Creation::Sid,
        dialect,
    }
}

fn record(created: bool, roles: &[(&str, &[Grantable])]) -> Record {
    Record {
        created,
        object_id: Some("oid".into()),
        roles: roles
            .iter()
            .map(|(r, g)| (r.to_string(), set(g)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn ours(name: &str, record: Option<Record>, members: &[&str]) -> Observed {
    Observed {
        by_sid: Some(Principal {
            name: name.into(),
            sid: Some(cid()),
            record,
        }),
        by_name: None,
        members: members.iter().map(|m| m.to_string()).collect(),
        permissions: BTreeMap::new(),
    }
}

fn add(role: &str) -> Step {
    Step::AddMember {
        role: role.into(),
        user: CID.into(),
        dialect: Dialect::AlterRole,
    }
}

#[test]
fn a_fresh_identity_gets_a_user_by_sid_with_its_record_then_its_roles() {
    let want = desired(
        "contributor",
        &[member("db_datareader"), member("db_datawriter")],
        Dialect::AlterRole,
    );
    let plan = plan_grant(&want, &Observed::default()).expect("plan");
    assert_eq!(
        plan.steps,
        vec![
            Step::CreateUser {
                user: CID.into(),
                client_id: cid(),
                creation: Creation::Sid,
                record: record(
                    true,
                    &[(
                        "contributor",
                        &[member("db_datareader"), member("db_datawriter")]
                    )]
                ),
            },
            add("db_datareader"),
            add("db_datawriter"),
        ]
    );
}

#[test]
fn a_user_with_the_sid_under_another_name_is_adopted_as_is() {
    let want = desired("reader", &[member("db_datareader")], Dialect::AlterRole);
    let plan = plan_grant(&want, &ours("orders-api", None, &[])).expect("plan");
    assert_eq!(
        plan.steps,
        vec![
            Step::WriteRecord {
                user: "orders-api".into(),
                record: record(false, &[("reader", &[member("db_datareader")])]),
            },
            Step::AddMember {
                role: "db_datareader".into(),
                user: "orders-api".into(),
                dialect: Dialect::AlterRole,
            },
        ]
    );
}

#[test]
fn a_converged_user_needs_nothing() {
    let want = desired("reader", &[member("db_datareader")], Dialect::AlterRole);
    let observed = ours(
        CID,
        Some(record(true, &[("reader", &[member("db_datareader")])])),
        &["db_datareader"],
    );
    assert_eq!(plan_grant(&want, &observed).expect("plan"), Plan::default());
}

#[test]
fn a_name_taken_by_another_sid_is_a_conflict_never_an_overwrite() {
    let want = desired("reader", &[member("db_datareader")], Dialect::AlterRole);
    let observed = Observed {
        by_name: Some(Principal {
            name: CID.into(),
            sid: Some(Uuid::parse_str(OTHER).expect("guid")),
            record: None,
        }),
        ..Observed::default()
    };
    let conflict = plan_grant(&want, &observed).expect_err("conflict");
    assert!(matches!(conflict, Conflict::NameTaken { .. }), "{conflict}");
    assert!(conflict.to_string().contains(OTHER));
}

#[test]
fn dbgrants_own_user_with_a_stale_sid_is_reported_with_the_fix() {
    let want = desired("reader", &[member("db_datareader")], Dialect::AlterRole);
    let observed = Observed {
        by_name: Some(Principal {
            name: CID.into(),
            sid: Some(Uuid::parse_str(OTHER).expect("guid")),
            record: Some(record(true, &[("reader", &[member("db_datareader")])])),
        }),
        ..Observed::default()
    };
    let conflict = plan_grant(&want, &observed).expect_err("conflict");
    assert!(matches!(conflict, Conflict::StaleSid { .. }));
    assert!(conflict.to_string().contains(&format!("DROP USER [{CID}]")));
}

#[test]
fn a_role_added_is_given_and_one_dropped_from_the_role_is_revoked() {
    // The target's custom role changed from db_datareader to app_reader.
    let want = desired("analyst", &[member("app_reader")], Dialect::AlterRole);
    let observed = ours(
        CID,
        Some(record(true, &[("analyst", &[member("db_datareader")])])),
        &["db_datareader"],
    );
    let plan = plan_grant(&want, &observed).expect("plan");
    assert_eq!(
        plan.steps,
        vec![
            Step::WriteRecord {
                user: CID.into(),
                record: record(
                    true,
                    &[("analyst", &[member("app_reader"), member("db_datareader")])]
                ),
            },
            add("app_reader"),
            Step::DropMember {
                role: "db_datareader".into(),
                user: CID.into(),
                dialect: Dialect::AlterRole,
            },
            Step::WriteRecord {
                user: CID.into(),
                record: record(true, &[("analyst", &[member("app_reader")])]),
            },
        ]
    );
}

#[test]
fn memberships_a_human_added_are_left_alone() {
    let want = desired("reader", &[member("db_datareader")], Dialect::AlterRole);
    let observed = ours(
        CID,
        Some(record(true, &[("reader", &[member("db_datareader")])])),
        &["db_datareader", "db_owner"],
    );
    assert!(plan_grant(&want, &observed).expect("plan").steps.is_empty());
}

#[test]
fn a_deny_row_is_neither_granted_over_nor_revoked_but_reported() {
    let want = desired("analyst", &[select_on("sales")], Dialect::AlterRole);
    let mut observed = ours(
        CID,
        Some(record(
            true,
            &[("analyst", &[select_on("sales"), select_on("hr")])],
        )),
        &[],
    );
    observed
        .permissions
        .insert(("sales".into(), SqlPermission::Select), PermState::Deny);
    observed
        .permissions
        .insert(("hr".into(), SqlPermission::Select), PermState::Deny);
    let plan = plan_grant(&want, &observed).expect("plan");
    assert_eq!(
        plan.denied,
        vec![("sales".to_string(), SqlPermission::Select)]
    );
    // hr left the role: recorded, but denied now: no REVOKE (it would lift the DENY).
    assert_eq!(
        plan.steps,
        vec![Step::WriteRecord {
            user: CID.into(),
            record: record(true, &[("analyst", &[select_on("sales")])]),
        }]
    );
}

#[test]
fn schema_permissions_are_granted_and_revoked_on_shrink() {
    let want = desired("analyst", &[select_on("sales")], Dialect::AlterRole);
    let mut observed = ours(
        CID,
        Some(record(
            true,
            &[("analyst", &[select_on("sales"), select_on("hr")])],
        )),
        &[],
    );
    observed
        .permissions
        .insert(("hr".into(), SqlPermission::Select), PermState::Grant);
    let plan = plan_grant(&want, &observed).expect("plan");
    assert_eq!(
        plan.steps,
        vec![
            Step::Grant {
                schema: "sales".into(),
                permission: SqlPermission::Select,
                user: CID.into(),
            },
            Step::Revoke {
                schema: "hr".into(),
                permission: SqlPermission::Select,
                user: CID.into(),
            },
            Step::WriteRecord {
                user: CID.into(),
                record: record(true, &[("analyst", &[select_on("sales")])]),
            },
        ]
    );
}

#[test]
fn a_grantable_another_recorded_role_still_gives_is_kept() {
    let want = desired("writer", &[member("db_datawriter")], Dialect::AlterRole);
    let observed = ours(
        CID,
        Some(record(
            true,
            &[
                ("reader", &[member("db_datareader")]),
                (
                    "writer",
                    &[member("db_datareader"), member("db_datawriter")],
                ),
            ],
        )),
        &["db_datareader", "db_datawriter"],
    );
    let plan = plan_grant(&want, &observed).expect("plan");
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::DropMember { .. })),
        "{plan:?}"
    );
}

#[test]
fn the_shared_user_is_dropped_only_by_the_last_role() {
    let both = record(
        true,
        &[
            ("reader", &[member("db_datareader")]),
            ("writer", &[member("db_datawriter")]),
        ],
    );
    let observed = ours(CID, Some(both), &["db_datareader", "db_datawriter"]);
    let first = plan_revoke(
        cid(),
        "reader",
        Dialect::AlterRole,
        DeletionPolicy::Delete,
        &observed,
    );
    assert_eq!(
        first.steps,
        vec![
            Step::DropMember {
                role: "db_datareader".into(),
                user: CID.into(),
                dialect: Dialect::AlterRole,
            },
            Step::WriteRecord {
                user: CID.into(),
                record: record(true, &[("writer", &[member("db_datawriter")])]),
            },
        ]
    );
    let last = ours(
        CID,
        Some(record(true, &[("writer", &[member("db_datawriter")])])),
        &["db_datawriter"],
    );
    let second = plan_revoke(
        cid(),
        "writer",
        Dialect::AlterRole,
        DeletionPolicy::Delete,
        &last,
    );
    assert_eq!(
        second.steps.last(),
        Some(&Step::DropUser {
            user: CID.into(),
            client_id: cid(),
        })
    );
}

#[test]
fn deletion_with_retain_touches_nothing() {
    let observed = ours(
        CID,
        Some(record(true, &[("reader", &[member("db_datareader")])])),
        &["db_datareader"],
    );
    assert_eq!(
        plan_revoke(
            cid(),
            "reader",
            Dialect::AlterRole,
            DeletionPolicy::Retain,
            &observed
        ),
        Plan::default()
    );
}

#[test]
fn deletion_of_an_adopted_user_removes_only_dbgrants_part() {
    let observed = ours(
        "orders-api",
        Some(record(false, &[("reader", &[member("db_datareader")])])),
        &["db_datareader", "app_admin"],
    );
    let plan = plan_revoke(
        cid(),
        "reader",
        Dialect::AlterRole,
        DeletionPolicy::Delete,
        &observed,
    );
    assert_eq!(
        plan.steps,
        vec![
            Step::DropMember {
                role: "db_datareader".into(),
                user: "orders-api".into(),
                dialect: Dialect::AlterRole,
            },
            Step::ForgetUser {
                user: "orders-api".into()
            },
        ]
    );
}

#[test]
fn deletion_of_a_user_dbgrant_never_recorded_touches_nothing() {
    let observed = ours("orders-api", None, &["db_datareader"]);
    assert!(
        plan_revoke(
            cid(),
            "reader",
            Dialect::AlterRole,
            DeletionPolicy::Delete,
            &observed
        )
        .steps
        .is_empty()
    );
    assert!(
        plan_revoke(
            cid(),
            "reader",
            Dialect::AlterRole,
            DeletionPolicy::Delete,
            &Observed::default()
        )
        .steps
        .is_empty()
    );
}

#[test]
fn synapse_dedicated_and_serverless_differ_only_in_the_membership_dialect() {
    for dialect in [Dialect::AlterRole, Dialect::SpAddRoleMember] {
        let plan = plan_grant(
            &desired("reader", &[member("db_datareader")], dialect),
            &Observed::default(),
        )
        .expect("plan");
        assert_eq!(
            plan.steps.last(),
            Some(&Step::AddMember {
                role: "db_datareader".into(),
                user: CID.into(),
                dialect,
            })
        );
    }
}

#[test]
fn an_oversized_record_is_refused_before_any_step() {
    let roles: Vec<Grantable> = (0..40)
        .map(|i| member(&format!("{}{i}", "r".repeat(100))))
        .collect();
    let conflict = plan_grant(
        &desired("big", &roles, Dialect::AlterRole),
        &Observed::default(),
    )
    .expect_err("too big");
    assert!(matches!(conflict, Conflict::RecordTooLarge { .. }));
}

#[test]
fn records_round_trip_and_foreign_values_are_not_records() {
    let r = record(
        true,
        &[("reader", &[member("db_datareader"), select_on("sa]les")])],
    );
    assert_eq!(Record::from_json(&r.to_json()), Some(r));
    assert_eq!(Record::from_json("set by a human"), None);
}
