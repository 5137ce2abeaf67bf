//! The reconciler tier: both reconcilers, wired as in production, against in-memory fakes of
//! Kubernetes and Azure, on tokio's paused clock. One test per branch and per guarantee; none
//! sleeps on the wall clock.
//!
//! The guarantees: access exists only while an allowed grant asks for it (whatever changes,
//! and however many grants change at once); every access dbgrant makes is recorded before it
//! is made; dbgrant never acts on ids it did not write or on access it did not make; a
//! target's custom roles are its own; deleting a target ends its grants' access.

mod fakes;
mod rig;
mod tokens;

use dbgrant::backend::cosmos::{BUILTIN_CONTRIBUTOR, BUILTIN_READER, RoleAssignment};
use fakes::Fault;
use rig::{Rig, account_id};
use serde_json::json;

const ALICE_CLIENT: &str = "11111111-1111-1111-1111-111111111111";
const ALICE: &str = "aaaaaaaa-0000-0000-0000-000000000001";
const BOB_CLIENT: &str = "22222222-2222-2222-2222-222222222222";
const BOB: &str = "bbbbbbbb-0000-0000-0000-000000000002";

/// A shop namespace with one workload, a target allowing it, and its reader grant.
async fn shop() -> Rig {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos_target("db", "acct", "shop", &["reader", "contributor"]);
    rig.reconcile_target("db").await;
    rig.put_grant(
        "shop",
        "reader",
        json!({"serviceAccountName": "api", "target": "db", "role": "reader"}),
    );
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("True".into(), "Ready".into()))
    );
    rig
}

fn reader_access() -> Vec<(String, String, String)> {
    vec![(ALICE.into(), BUILTIN_READER.into(), String::new())]
}

#[tokio::test(start_paused = true)]
async fn a_grant_goes_ready_with_one_recorded_assignment() {
    let rig = shop().await;
    assert_eq!(rig.access_on("acct"), reader_access());
    let status = rig.grant("shop", "reader").status.unwrap();
    assert_eq!(status.held.len(), 1, "the assignment is recorded");
    assert_eq!(
        status.role_assignment_id.as_deref(),
        Some(status.held[0].as_str())
    );
    let audit = rig.cluster.events_with("AccessGranted");
    assert_eq!(audit.len(), 1, "audited once");
    assert_eq!(audit[0].object, "shop/reader");
    assert!(!audit[0].warning);
    assert!(
        audit[0].note.contains(ALICE) && audit[0].note.contains(&status.held[0]),
        "names the principal and the assignment: {}",
        audit[0].note
    );
    assert!(!audit[0].note.contains("data-token"), "never a token");
}

#[tokio::test(start_paused = true)]
async fn retargeting_a_grant_to_a_missing_target_revokes_its_access() {
    let rig = shop().await;
    let mut spec = rig.grant_spec("shop", "reader");
    spec["target"] = json!("no-such-target");
    rig.put_grant("shop", "reader", spec);
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("False".into(), "TargetNotFound".into()))
    );
    assert!(
        rig.access_on("acct").is_empty(),
        "the old access is revoked"
    );
    assert!(rig.grant("shop", "reader").status.unwrap().held.is_empty());
    assert_eq!(rig.cluster.events_with("AccessRevoked").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn tightening_allowed_roles_revokes_even_while_the_target_is_not_ready() {
    let rig = shop().await;
    // The account disappears: the target goes not Ready...
    rig.cosmos
        .accounts
        .lock()
        .unwrap()
        .remove(&account_id("acct").to_ascii_lowercase());
    // Noticed on the target's next resync.
    tokio::time::advance(rig.ctx.resync_interval).await;
    rig.reconcile_target("db").await;
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("False".into(), "TargetNotReady".into()))
    );
    // ...and comes back while the platform team removes the role.
    rig.cosmos.add_account(&account_id("acct"));
    rig.cosmos
        .add_assignment(&account_id("acct"), rig_assignment(&rig));
    let mut spec = rig.target_spec("db");
    spec["allowedRoles"] = json!(["contributor"]);
    rig.put_target("db", spec);
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("False".into(), "PolicyDenied".into()))
    );
    assert!(rig.access_on("acct").is_empty());
}

/// The assignment the shop's reader grant made, rebuilt from its record.
fn rig_assignment(rig: &Rig) -> RoleAssignment {
    let id = rig.grant("shop", "reader").status.unwrap().held[0].clone();
    let guid = id.rsplit('/').next().unwrap().to_string();
    RoleAssignment {
        guid,
        role_definition_id: format!("{}/sqlRoleDefinitions/{BUILTIN_READER}", account_id("acct")),
        scope: account_id("acct"),
        principal_id: ALICE.into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_policy_change_while_the_target_is_not_ready_still_revokes() {
    let rig = shop().await;
    // The target fails its check (Azure refuses), and stays failing.
    rig.cosmos
        .accounts
        .lock()
        .unwrap()
        .get_mut(&account_id("acct").to_ascii_lowercase())
        .unwrap();
    let mut spec = rig.target_spec("db");
    spec["allowedNamespaces"] = json!({"matchLabels": {"team": "billing"}});
    rig.put_target("db", spec);
    // The grant reconciles before the target's new generation was checked.
    rig.reconcile("shop", "reader").await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("False".into(), "PolicyDenied".into()))
    );
    assert!(rig.access_on("acct").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_role_the_target_no_longer_declares_is_revoked() {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos.add_account(&account_id("acct"));
    rig.put_target(
        "db",
        json!({
            "cosmos": {"accountResourceId": account_id("acct"), "roles": {"meta": {"dataActions": ["Microsoft.DocumentDB/databaseAccounts/readMetadata"]}}},
            "allowedNamespaces": {"matchLabels": {"team": "shop"}},
            "allowedRoles": ["meta"],
        }),
    );
    rig.reconcile_target("db").await;
    rig.put_grant(
        "shop",
        "meta",
        json!({"serviceAccountName": "api", "target": "db", "role": "meta"}),
    );
    rig.settle().await;
    assert_eq!(rig.access_on("acct").len(), 1);
    // A hand-edited target (the CRD's rule normally refuses this) drops the role but still
    // allows it.
    rig.put_target(
        "db",
        json!({
            "cosmos": {"accountResourceId": account_id("acct")},
            "allowedNamespaces": {"matchLabels": {"team": "shop"}},
            "allowedRoles": ["meta"],
        }),
    );
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "meta"),
        Some(("False".into(), "InvalidSpec".into()))
    );
    assert!(rig.access_on("acct").is_empty());
    // Nobody holds the dropped custom role now: its definition goes too.
    assert!(
        rig.cosmos
            .definitions(&account_id("acct"))
            .iter()
            .all(|d| d.built_in)
    );
}

#[tokio::test(start_paused = true)]
async fn a_namespace_label_change_revokes() {
    let rig = shop().await;
    rig.namespace("shop", &[("team", "elsewhere")]);
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("False".into(), "PolicyDenied".into()))
    );
    assert!(rig.access_on("acct").is_empty());
}

/// Two grants in two namespaces sharing one assignment (same identity, role and scope).
async fn two_sharers() -> Rig {
    let rig = Rig::new();
    for ns in ["shop", "shop-canary"] {
        rig.namespace(ns, &[("team", "shop")]);
        rig.workload(ns, "api", ALICE_CLIENT, ALICE);
    }
    rig.cosmos_target("db", "acct", "shop", &["reader"]);
    rig.reconcile_target("db").await;
    for ns in ["shop", "shop-canary"] {
        rig.put_grant(
            ns,
            "reader",
            json!({"serviceAccountName": "api", "target": "db", "role": "reader"}),
        );
    }
    rig.settle().await;
    assert_eq!(
        rig.access_on("acct"),
        reader_access(),
        "one shared assignment"
    );
    rig
}

#[tokio::test(start_paused = true)]
async fn sharers_refused_at_once_do_not_leak_the_shared_assignment() {
    for first in ["shop", "shop-canary"] {
        let rig = two_sharers().await;
        let mut spec = rig.target_spec("db");
        spec["allowedNamespaces"] = json!({"matchLabels": {"team": "nobody"}});
        rig.put_target("db", spec);
        // Both refused before either has written anything: each sees the other's last answer.
        let second = if first == "shop" {
            "shop-canary"
        } else {
            "shop"
        };
        rig.reconcile(first, "reader").await;
        rig.reconcile(second, "reader").await;
        rig.settle().await;
        assert!(rig.access_on("acct").is_empty(), "revoked ({first} first)");
        for ns in ["shop", "shop-canary"] {
            assert!(rig.grant(ns, "reader").status.unwrap().held.is_empty());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_shared_assignment_stays_while_one_allowed_grant_asks_for_it() {
    let rig = two_sharers().await;
    rig.namespace("shop-canary", &[("team", "other")]);
    rig.settle().await;
    assert_eq!(rig.access_on("acct"), reader_access());
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("True".into(), "Ready".into()))
    );
    // And goes with the last one.
    rig.delete_grant("shop", "reader");
    rig.settle().await;
    assert!(!rig.grant_exists("shop", "reader"));
    assert!(rig.access_on("acct").is_empty());
}

#[tokio::test(start_paused = true)]
async fn sharers_deleted_together_revoke_the_shared_assignment() {
    let rig = two_sharers().await;
    rig.delete_grant("shop", "reader");
    rig.delete_grant("shop-canary", "reader");
    rig.settle().await;
    assert!(!rig.grant_exists("shop", "reader"));
    assert!(!rig.grant_exists("shop-canary", "reader"));
    assert!(rig.access_on("acct").is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_assignment_created_but_not_acknowledged_is_recorded_and_revoked_on_deletion() {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos_target("db", "acct", "shop", &["reader"]);
    rig.reconcile_target("db").await;
    rig.put_grant(
        "shop",
        "reader",
        json!({"serviceAccountName": "api", "target": "db", "role": "reader"}),
    );
    *rig.cosmos.put_fault.lock().unwrap() = Some(Fault::PutLostAfterCreate);
    rig.reconcile("shop", "reader").await;
    assert_eq!(rig.access_on("acct").len(), 1, "Azure made it");
    assert_eq!(
        rig.condition("shop", "reader", "AccessGranted"),
        Some(("False".into(), "AzureUnavailable".into()))
    );
    assert_eq!(
        rig.grant("shop", "reader").status.unwrap().held.len(),
        1,
        "recorded before the write"
    );
    // Deleted (and the operator restarted) before any good pass.
    rig.delete_grant("shop", "reader");
    let rig = rig.restart();
    rig.settle().await;
    assert!(!rig.grant_exists("shop", "reader"));
    assert!(rig.access_on("acct").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_replacement_whose_old_removal_fails_keeps_both_recorded_until_it_succeeds() {
    let rig = shop().await;
    let mut spec = rig.grant_spec("shop", "reader");
    spec["role"] = json!("contributor");
    rig.put_grant("shop", "reader", spec);
    *rig.cosmos.delete_fault.lock().unwrap() = Some(Fault::Fail(
        dbgrant::backend::BackendError::new(dbgrant::api::Reason::AccountBusy, "HTTP 412"),
    ));
    rig.reconcile("shop", "reader").await;
    assert_eq!(rig.access_on("acct").len(), 2);
    assert_eq!(rig.grant("shop", "reader").status.unwrap().held.len(), 2);
    assert_eq!(
        rig.condition("shop", "reader", "AccessGranted"),
        Some(("False".into(), "Replacing".into()))
    );
    // Deleted before the next good pass: both go.
    rig.delete_grant("shop", "reader");
    rig.settle().await;
    assert!(rig.access_on("acct").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_role_change_replaces_the_assignment_without_a_gap_or_a_leak() {
    let rig = shop().await;
    let mut spec = rig.grant_spec("shop", "reader");
    spec["role"] = json!("contributor");
    rig.put_grant("shop", "reader", spec);
    rig.settle().await;
    assert_eq!(
        rig.access_on("acct"),
        vec![(ALICE.into(), BUILTIN_CONTRIBUTOR.into(), String::new())]
    );
    let writes = rig.cosmos.writes.lock().unwrap().clone();
    let put = writes
        .iter()
        .rposition(|w| w.starts_with("PUT assignment"))
        .unwrap();
    let delete = writes
        .iter()
        .rposition(|w| w.starts_with("DELETE assignment"))
        .unwrap();
    assert!(
        put < delete,
        "the new access exists before the old goes: {writes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_identity_replaces_the_old_principals_access() {
    let rig = shop().await;
    rig.reannotate("shop", "api", BOB_CLIENT, BOB);
    rig.settle().await;
    assert_eq!(
        rig.access_on("acct"),
        vec![(BOB.into(), BUILTIN_READER.into(), String::new())]
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_service_account_ends_access() {
    let rig = shop().await;
    rig.cluster.service_accounts.lock().unwrap().clear();
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("False".into(), "ServiceAccountNotFound".into()))
    );
    assert!(rig.access_on("acct").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_forged_status_never_steers_a_revocation() {
    let rig = shop().await;
    // Someone else's access on the same account (not made by dbgrant).
    let foreign = RoleAssignment {
        guid: "99999999-9999-4999-8999-999999999999".into(),
        role_definition_id: format!("{}/sqlRoleDefinitions/{BUILTIN_READER}", account_id("acct")),
        scope: account_id("acct"),
        principal_id: BOB.into(),
    };
    rig.cosmos
        .add_assignment(&account_id("acct"), foreign.clone());
    // A second team's grant through the same account.
    rig.namespace("billing", &[("team", "shop")]);
    rig.workload("billing", "api", BOB_CLIENT, BOB);
    rig.put_grant(
        "billing",
        "writer",
        json!({"serviceAccountName": "api", "target": "db", "role": "contributor"}),
    );
    rig.settle().await;
    let billing = rig.grant("billing", "writer").status.unwrap().held[0].clone();
    // The shop team writes both ids into its own grant's status, then gets refused.
    let foreign_id =
        format!("{}/sqlRoleAssignments/{}", account_id("acct"), foreign.guid).to_ascii_lowercase();
    let rig = rig.restart();
    rig.tamper_status("shop", "reader", |s| {
        s.held.push(foreign_id.clone());
        s.held.push(billing.clone());
    });
    rig.namespace("shop", &[("team", "none")]);
    rig.settle().await;
    let left: Vec<String> = rig
        .access_on("acct")
        .into_iter()
        .map(|(p, r, _)| format!("{p}/{r}"))
        .collect();
    assert!(
        left.contains(&format!("{BOB}/{BUILTIN_READER}")),
        "foreign access untouched: {left:?}"
    );
    assert!(
        left.contains(&format!("{BOB}/{BUILTIN_CONTRIBUTOR}")),
        "another grant's access untouched: {left:?}"
    );
    assert!(
        !left.contains(&format!("{ALICE}/{BUILTIN_READER}")),
        "the refused grant's own access goes"
    );
}

#[tokio::test(start_paused = true)]
async fn drift_repair_restores_only_what_the_ledger_stands_by() {
    let rig = shop().await;
    let guid = rig_assignment(&rig).guid;
    rig.cosmos.remove_assignment(&account_id("acct"), &guid);
    // A target pass between resyncs reads nothing from Azure; the next resync repairs.
    rig.reconcile_target("db").await;
    assert!(rig.access_on("acct").is_empty(), "not looked at yet");
    tokio::time::advance(rig.ctx.resync_interval).await;
    rig.reconcile_target("db").await;
    assert_eq!(rig.access_on("acct"), reader_access(), "restored");
    assert_eq!(rig.cluster.events_with("AccessRestored").len(), 1);
    // A status claiming access the grant does not ask for restores nothing.
    rig.tamper_status("shop", "reader", |s| {
        s.principal_id = Some(BOB.into());
    });
    rig.cosmos.remove_assignment(&account_id("acct"), &guid);
    let rig = rig.restart();
    rig.reconcile_target("db").await;
    assert!(
        rig.access_on("acct").is_empty(),
        "nothing decided yet in this process"
    );
}

#[tokio::test(start_paused = true)]
async fn grant_changes_wake_the_target_without_reading_azure_until_its_resync() {
    let rig = shop().await;
    let reads = || *rig.cosmos.arm_reads.lock().unwrap();
    let before = reads();
    // A burst of grant changes wakes the target again and again: its grant count only.
    for i in 0..20 {
        rig.put_grant(
            "shop",
            &format!("extra-{i}"),
            json!({"serviceAccountName": "api", "target": "db", "role": "reader"}),
        );
        rig.reconcile_target("db").await;
    }
    assert_eq!(reads(), before, "no ARM read between resyncs");
    assert_eq!(
        rig.target("db").unwrap().status.unwrap().grant_count,
        Some(21)
    );
    // Its resync looks at its access once (one list), not at the account again.
    tokio::time::advance(rig.ctx.resync_interval).await;
    rig.reconcile_target("db").await;
    assert_eq!(reads(), before + 1, "one list per resync");
    // A changed spec is checked in full at once.
    let mut spec = rig.target_spec("db");
    spec["allowedRoles"] = json!(["reader"]);
    rig.put_target("db", spec);
    rig.reconcile_target("db").await;
    assert!(
        reads() >= before + 3,
        "account, definitions and access read"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_nothing_changed_writes_nothing() {
    let rig = shop().await;
    let (writes, statuses, tokens) = (
        rig.cosmos.write_count(),
        *rig.cluster.status_writes.lock().unwrap(),
        *rig.cluster.tokens_minted.lock().unwrap(),
    );
    let rig = rig.restart();
    rig.settle().await;
    assert_eq!(rig.cosmos.write_count(), writes, "no Azure write");
    assert_eq!(
        *rig.cluster.status_writes.lock().unwrap(),
        statuses,
        "no status write"
    );
    assert_eq!(
        *rig.cluster.tokens_minted.lock().unwrap(),
        tokens + 1,
        "one identity look-up"
    );
}

#[tokio::test(start_paused = true)]
async fn deleting_a_target_revokes_its_grants_access_except_retained_and_then_goes() {
    let rig = shop().await;
    rig.namespace("keep", &[("team", "shop")]);
    rig.workload("keep", "api", BOB_CLIENT, BOB);
    rig.put_grant(
        "keep",
        "kept",
        json!({"serviceAccountName": "api", "target": "db", "role": "contributor", "deletionPolicy": "Retain"}),
    );
    rig.settle().await;
    assert_eq!(rig.access_on("acct").len(), 2);
    rig.delete_target("db");
    rig.settle().await;
    assert!(rig.target("db").is_none(), "the target's finalizer let go");
    assert_eq!(
        rig.access_on("acct"),
        vec![(BOB.into(), BUILTIN_CONTRIBUTOR.into(), String::new())],
        "only the retained access stays"
    );
    assert_eq!(rig.cluster.events_with("AccessRetained").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retained_custom_role_assignment_does_not_block_the_targets_deletion() {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos.add_account(&account_id("acct"));
    rig.put_target(
        "db",
        json!({
            "cosmos": {"accountResourceId": account_id("acct"), "roles": {"meta": {"dataActions": ["Microsoft.DocumentDB/databaseAccounts/readMetadata"]}}},
            "allowedNamespaces": {"matchLabels": {"team": "shop"}},
            "allowedRoles": ["meta"],
        }),
    );
    rig.reconcile_target("db").await;
    rig.put_grant(
        "shop",
        "meta",
        json!({"serviceAccountName": "api", "target": "db", "role": "meta", "deletionPolicy": "Retain"}),
    );
    rig.settle().await;
    rig.delete_grant("shop", "meta");
    rig.settle().await;
    assert!(!rig.grant_exists("shop", "meta"));
    rig.delete_target("db");
    rig.settle().await;
    assert!(rig.target("db").is_none());
    assert_eq!(
        rig.access_on("acct").len(),
        1,
        "the retained assignment stays"
    );
    assert_eq!(
        rig.cosmos
            .definitions(&account_id("acct"))
            .iter()
            .filter(|d| !d.built_in)
            .count(),
        1,
        "and so does the custom role it uses"
    );
}

#[tokio::test(start_paused = true)]
async fn custom_roles_of_the_same_name_on_one_account_stay_each_targets_own() {
    let rig = Rig::new();
    rig.cosmos.add_account(&account_id("acct"));
    for (target, action) in [
        ("a", "readMetadata"),
        ("b", "sqlDatabases/containers/items/*"),
    ] {
        rig.put_target(
            target,
            json!({
                "cosmos": {"accountResourceId": account_id("acct"), "roles": {"app": {"dataActions": [format!("Microsoft.DocumentDB/databaseAccounts/{action}")]}}},
                "allowedNamespaces": {},
                "allowedRoles": ["app"],
            }),
        );
    }
    for _ in 0..3 {
        rig.reconcile_target("a").await;
        rig.reconcile_target("b").await;
    }
    let custom: Vec<_> = rig
        .cosmos
        .definitions(&account_id("acct"))
        .into_iter()
        .filter(|d| !d.built_in)
        .collect();
    assert_eq!(custom.len(), 2, "one definition per target");
    assert_ne!(custom[0].data_actions, custom[1].data_actions);
    let puts = rig
        .cosmos
        .writes
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.starts_with("PUT definition"))
        .count();
    assert_eq!(puts, 2, "no resync rewrites the other's definition");
}

#[tokio::test(start_paused = true)]
async fn deletion_with_retain_keeps_the_access_and_stops_managing_it() {
    let rig = shop().await;
    let mut spec = rig.grant_spec("shop", "reader");
    spec["deletionPolicy"] = json!("Retain");
    rig.put_grant("shop", "reader", spec);
    rig.settle().await;
    rig.delete_grant("shop", "reader");
    rig.settle().await;
    assert!(!rig.grant_exists("shop", "reader"));
    assert_eq!(rig.access_on("acct"), reader_access());
    // A later grant for the same access, then deleted with Delete, takes it (it is dbgrant's).
    rig.put_grant(
        "shop",
        "again",
        json!({"serviceAccountName": "api", "target": "db", "role": "reader"}),
    );
    rig.settle().await;
    rig.delete_grant("shop", "again");
    rig.settle().await;
    assert!(rig.access_on("acct").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_busy_store_defers_without_writing_a_status() {
    let rig = shop().await;
    let statuses = *rig.cluster.status_writes.lock().unwrap();
    let guard = rig.ctx.account_locks.try_lock(&account_id("acct")).unwrap();
    let mut spec = rig.grant_spec("shop", "reader");
    spec["role"] = json!("contributor");
    rig.put_grant("shop", "reader", spec);
    rig.reconcile("shop", "reader").await;
    assert_eq!(*rig.cluster.status_writes.lock().unwrap(), statuses);
    drop(guard);
    rig.settle().await;
    assert_eq!(
        rig.access_on("acct"),
        vec![(ALICE.into(), BUILTIN_CONTRIBUTOR.into(), String::new())]
    );
}

#[tokio::test(start_paused = true)]
async fn access_never_granted_is_not_restored_by_drift_repair_and_one_grants_failure_spares_the_target()
 {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos_target("db", "acct", "shop", &["reader"]);
    rig.reconcile_target("db").await;
    rig.put_grant(
        "shop",
        "reader",
        json!({"serviceAccountName": "api", "target": "db", "role": "reader"}),
    );
    // Azure does not know the principal yet: the grant's PUT fails.
    *rig.cosmos.put_fault.lock().unwrap() = Some(Fault::Fail(dbgrant::backend::BackendError::new(
        dbgrant::api::Reason::PrincipalNotFound,
        "principal not found",
    )));
    rig.reconcile("shop", "reader").await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("False".into(), "PrincipalNotFound".into()))
    );
    rig.reconcile_target("db").await;
    assert!(
        rig.access_on("acct").is_empty(),
        "drift repair left it to the grant"
    );
    assert!(rig.cluster.events_with("AccessRestored").is_empty());
    let ready = rig.target("db").unwrap().status.unwrap().conditions;
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
}

#[tokio::test(start_paused = true)]
async fn an_entra_outage_after_a_restart_keeps_access_that_is_still_allowed() {
    let rig = shop().await;
    let rig = rig.restart();
    *rig.cosmos.entra_down.lock().unwrap() = true;
    rig.settle().await;
    assert_eq!(
        rig.condition("shop", "reader", "IdentityResolved"),
        Some(("False".into(), "AzureUnavailable".into()))
    );
    assert_eq!(
        rig.access_on("acct"),
        reader_access(),
        "nothing revoked on a passing failure"
    );
    assert_eq!(
        rig.grant("shop", "reader").status.unwrap().held.len(),
        1,
        "still recorded"
    );
    *rig.cosmos.entra_down.lock().unwrap() = false;
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("True".into(), "Ready".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_a_sharer_that_has_not_decided_yet_keeps_the_shared_access() {
    let rig = two_sharers().await.restart();
    rig.namespace("shop-canary", &[("team", "other")]);
    // Only the refused grant has been looked at since the start.
    rig.reconcile("shop-canary", "reader").await;
    assert_eq!(
        rig.access_on("acct"),
        reader_access(),
        "the allowed sharer's access is not cut"
    );
    rig.settle().await;
    assert_eq!(rig.access_on("acct"), reader_access());
    assert!(
        rig.grant("shop-canary", "reader")
            .status
            .unwrap()
            .held
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_request_is_said_on_the_grant_and_revocations_name_what_went() {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos_target("db", "acct", "shop", &["reader"]);
    rig.reconcile_target("db").await;
    *rig.cluster.token_requests_forbidden.lock().unwrap() = true;
    rig.put_grant(
        "shop",
        "reader",
        json!({"serviceAccountName": "api", "target": "db", "role": "reader"}),
    );
    rig.reconcile("shop", "reader").await;
    assert_eq!(
        rig.condition("shop", "reader", "IdentityResolved"),
        Some(("False".into(), "KubernetesApiError".into()))
    );
    *rig.cluster.token_requests_forbidden.lock().unwrap() = false;
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("True".into(), "Ready".into()))
    );
    rig.delete_grant("shop", "reader");
    rig.settle().await;
    let revoked = rig.cluster.events_with("AccessRevoked");
    assert_eq!(revoked.len(), 1);
    assert!(
        !revoked[0].note.contains("  ") && revoked[0].note.contains("sqlroleassignments/"),
        "{}",
        revoked[0].note
    );
}

#[tokio::test(start_paused = true)]
async fn passes_that_change_nothing_write_nothing_also_with_a_token_secret() {
    let rig = shop().await;
    let mut spec = rig.grant_spec("shop", "reader");
    spec["tokenSecret"] = json!({"name": "reader-token"});
    rig.put_grant("shop", "reader", spec);
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("True".into(), "Ready".into()))
    );
    let (statuses, writes) = (
        *rig.cluster.status_writes.lock().unwrap(),
        rig.cosmos.write_count(),
    );
    for _ in 0..3 {
        rig.reconcile("shop", "reader").await;
    }
    assert_eq!(
        *rig.cluster.status_writes.lock().unwrap(),
        statuses,
        "no status write"
    );
    assert_eq!(rig.cosmos.write_count(), writes, "no Azure write");
}

#[tokio::test(start_paused = true)]
async fn a_write_still_running_in_azure_when_its_grant_goes_is_revoked_once_it_lands() {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos_target("db", "acct", "shop", &["reader"]);
    rig.reconcile_target("db").await;
    rig.put_grant(
        "shop",
        "reader",
        json!({"serviceAccountName": "api", "target": "db", "role": "reader"}),
    );
    *rig.cosmos.put_fault.lock().unwrap() = Some(Fault::PutStillRunning);
    rig.reconcile("shop", "reader").await;
    assert!(rig.access_on("acct").is_empty(), "not there yet");
    // The grant goes (and the operator restarts) while Azure still runs the write.
    rig.delete_grant("shop", "reader");
    let rig = rig.restart();
    rig.reconcile("shop", "reader").await;
    assert!(
        rig.grant_exists("shop", "reader"),
        "the record stays while something may still land under it"
    );
    rig.cosmos.finish_writes();
    assert_eq!(rig.access_on("acct").len(), 1, "the write landed");
    rig.settle().await;
    assert!(!rig.grant_exists("shop", "reader"));
    assert!(rig.access_on("acct").is_empty(), "and was revoked");
}
