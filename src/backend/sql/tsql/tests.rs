//! The batches: names only ever travel as parameters, every quoted name is checked for NULL,
//! and every error number of the design's table has its reason.

use proptest::prelude::*;

use super::super::plan::{Creation, Dialect, Record, Step};
use super::*;

const CID: &str = "2ff8edf0-dccb-4148-a649-2c1154e1e129";

fn cid() -> Uuid {
    Uuid::parse_str(CID).expect("guid")
}

fn every_step(user: &str, role: &str, schema: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for creation in [
        Creation::Sid,
        Creation::ObjectId(cid()),
        Creation::ExternalProvider,
    ] {
        steps.push(Step::CreateUser {
            user: user.into(),
            client_id: cid(),
            creation,
            record: Record::default(),
        });
    }
    for dialect in [Dialect::AlterRole, Dialect::SpAddRoleMember] {
        steps.push(Step::AddMember {
            role: role.into(),
            user: user.into(),
            dialect,
        });
        steps.push(Step::DropMember {
            role: role.into(),
            user: user.into(),
            dialect,
        });
    }
    for permission in SqlPermission::ALL {
        steps.push(Step::Grant {
            schema: schema.into(),
            permission,
            user: user.into(),
        });
        steps.push(Step::Revoke {
            schema: schema.into(),
            permission,
            user: user.into(),
        });
    }
    steps.push(Step::WriteRecord {
        user: user.into(),
        record: Record::default(),
    });
    steps.push(Step::ForgetUser { user: user.into() });
    steps.push(Step::DropUser {
        user: user.into(),
        client_id: cid(),
    });
    steps
}

#[test]
fn the_sid_form_renders_the_sid_on_the_server_from_a_typed_guid() {
    let batch = render(&Step::CreateUser {
        user: CID.into(),
        client_id: cid(),
        creation: Creation::Sid,
        record: Record::default(),
    });
    assert!(batch.text.contains(
        "N' WITH SID = ' + CONVERT(nvarchar(34), CONVERT(varbinary(16), @P2), 1) + N', TYPE = E;'"
    ));
    assert!(batch.text.contains("IF @u IS NULL THROW 50001"));
    assert!(
        !batch.text.contains("50002"),
        "the SID form needs no read-back"
    );
    assert_eq!(batch.params[1], Param::Guid(cid()));
}

#[test]
fn name_resolving_forms_check_the_sid_before_committing() {
    for creation in [Creation::ObjectId(cid()), Creation::ExternalProvider] {
        let batch = render(&Step::CreateUser {
            user: "orders-api".into(),
            client_id: cid(),
            creation,
            record: Record::default(),
        });
        let verify = batch.text.find("THROW 50002").expect("verifies");
        assert!(verify < batch.text.find("COMMIT").expect("commits"));
    }
}

#[test]
fn dedicated_pools_use_sp_addrolemember_and_others_alter_role() {
    let add = |dialect| {
        render(&Step::AddMember {
            role: "db_datareader".into(),
            user: "u".into(),
            dialect,
        })
        .text
    };
    assert!(
        add(Dialect::SpAddRoleMember)
            .contains("EXEC sp_addrolemember @rolename = @P1, @membername = @P2;")
    );
    assert!(!add(Dialect::SpAddRoleMember).contains("ALTER ROLE"));
    assert!(add(Dialect::AlterRole).contains("N'ALTER ROLE ' + @r + N' ADD MEMBER ' + @u"));
    assert!(!add(Dialect::AlterRole).contains("sp_addrolemember"));
}

#[test]
fn grants_never_replace_a_deny_and_revokes_never_lift_one() {
    let grant = render(&Step::Grant {
        schema: "s".into(),
        permission: SqlPermission::Select,
        user: "u".into(),
    })
    .text;
    assert!(grant.contains("IF NOT EXISTS") && grant.contains("p.state IN ('G', 'W', 'D')"));
    let revoke = render(&Step::Revoke {
        schema: "s".into(),
        permission: SqlPermission::Select,
        user: "u".into(),
    })
    .text;
    assert!(revoke.contains("IF EXISTS") && revoke.contains("p.state IN ('G')"));
}

/// dbgrant-sim's SQL stand-in keeps its own copies of these batches (it cannot depend on
/// dbgrant): every batch dbgrant can send must be one it knows, with parameters of the types
/// it expects, or the transport and end-to-end tests would test another text.
#[test]
fn every_batch_dbgrant_can_send_is_one_the_sql_stand_in_knows() {
    use dbgrant_sim::sql::statements::{Kind, Shape, recognise};
    let mut batches: Vec<Batch> = every_step("u", "r", "s").iter().map(render).collect();
    batches.extend([
        observe("u", cid()),
        recorded_users(),
        preflight(),
        preflight_names(Some("r"), None),
        preflight_names(None, Some("s")),
        workload_membership("r"),
    ]);
    let mut seen = std::collections::BTreeSet::new();
    for batch in &batches {
        let shape = recognise(&batch.text)
            .unwrap_or_else(|| panic!("the stand-in does not know this batch:\n{}", batch.text));
        let kinds: Vec<Kind> = batch
            .params
            .iter()
            .map(|p| match p {
                Param::Text(_) => Kind::Text,
                Param::Guid(_) => Kind::Guid,
            })
            .collect();
        assert_eq!(kinds, shape.params(), "parameters of {shape:?}");
        seen.insert(format!("{shape:?}"));
    }
    // And the other way: the stand-in knows nothing dbgrant does not send.
    let known: std::collections::BTreeSet<String> =
        Shape::all().iter().map(|s| format!("{s:?}")).collect();
    assert_eq!(seen, known);
}

/// Regression: the SID predicate was once prefixed with the alias (`p.SUBSTRING(sid, ...)`),
/// which T-SQL reads as a user-defined function in schema `p`: every observation failed.
#[test]
fn aliases_qualify_columns_never_the_substring_function() {
    let mut batches: Vec<Batch> = every_step("u", "r", "s").iter().map(render).collect();
    batches.extend([observe("u", cid()), recorded_users()]);
    for batch in batches {
        for alias in ["p", "u", "r", "m", "s", "ep"] {
            assert!(
                !batch.text.contains(&format!("{alias}.SUBSTRING(")),
                "{}",
                batch.text
            );
        }
    }
    assert!(
        observe("u", cid()).text.contains(
            "WHERE SUBSTRING(p.sid, 1, 16) = CONVERT(varbinary(16), @P2) OR p.name = @P1;"
        )
    );
}

#[test]
fn every_error_number_in_the_design_has_its_reason() {
    let table = [
        (18456, Reason::TargetNotPrepared),
        (4060, Reason::TargetNotPrepared),
        (33130, Reason::TargetNotPrepared),
        (33131, Reason::TargetNotPrepared),
        (33134, Reason::TargetNotPrepared),
        (37353, Reason::TargetNotPrepared),
        (37545, Reason::TargetNotPrepared),
        (33159, Reason::TargetNotPrepared),
        (15023, Reason::RoleConflict),
        (15151, Reason::TargetNotPrepared),
        (15138, Reason::CleanupFailed),
        (15247, Reason::TargetNotPrepared),
        (40615, Reason::AzureForbidden),
        (50001, Reason::InvalidSpec),
        (50002, Reason::RoleConflict),
        (40613, Reason::AzureUnavailable),
        (1, Reason::AzureUnavailable),
    ];
    for (number, reason) in table {
        let (got, message) = classify(number);
        assert_eq!(got, reason, "{number}");
        assert!(!message.is_empty());
    }
}

proptest! {
    /// Hostile names (brackets, quotes, 129 characters, NUL, Unicode) never reach the text:
    /// every batch is the same as for a plain name, the name travels only as a parameter.
    #[test]
    fn hostile_names_never_enter_the_batch_text(
        name in prop_oneof![
            "\\PC{0,140}",
            "[\\]\\['\";\\-\\x00 ]{1,20}",
            Just("a".repeat(129)),
            Just("x]; DROP TABLE t; --".to_string()),
            Just("名前\u{0}'']]".to_string()),
        ]
    ) {
        let plain = every_step("plain", "plainrole", "plainschema");
        let hostile = every_step(&name, &name, &name);
        for (p, h) in plain.iter().zip(&hostile) {
            let (p, h) = (render(p), render(h));
            prop_assert_eq!(&p.text, &h.text);
            prop_assert!(h.params.iter().any(|x| *x == Param::Text(name.clone())));
            // Every identifier is quoted server-side and checked, or passed to a sysname
            // procedure argument after a length check.
            let quoted = h.text.contains("QUOTENAME(@P1)");
            let checked = h.text.contains("IS NULL THROW 50001") || h.text.contains("LEN(@P1) > 128");
            let no_ddl = !h.text.contains("EXEC (@ddl)");
            prop_assert!((quoted && checked) || no_ddl || h.text.contains("sp_addrolemember") || h.text.contains("sp_droprolemember"));
        }
    }
}
