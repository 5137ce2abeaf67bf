//! End to end: the real controllers against a Kubernetes API server and Azure — the
//! simulators by default, a real cluster and subscription when `DBGRANT_E2E_*` is set (see
//! `tests/support/world.rs`). Each test builds its own namespace, target and identities.

mod support;

use std::time::Duration;

use dbgrant::api::{DatabaseTarget, Reason};
use dbgrant::backend::cosmos::{RoleAssignment, RoleDefinition};
use dbgrant_sim::azure::{AzureFault, AzureOperation as Op, Verb};
use dbgrant_sim::kube::faults::Fault;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::world::{World, WorldOptions, is_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_go_ready_with_the_assignment_their_scope_asks_for() {
    let world = World::start("scopes", WorldOptions::default()).await;
    let app = world.workload("app").await;
    world
        .grant(
            "whole",
            json!({"serviceAccountName": "app", "role": "reader"}),
        )
        .await;
    world
        .grant(
            "db",
            json!({"serviceAccountName": "app", "role": "reader", "database": "orders"}),
        )
        .await;
    world
        .grant(
            "coll",
            json!({"serviceAccountName": "app", "role": "contributor", "database": "orders", "container": "items"}),
        )
        .await;
    for name in ["whole", "db", "coll"] {
        let grant = world.wait_ready(name).await;
        let status = grant.status.expect("status");
        assert_eq!(
            status.principal_id.as_deref(),
            Some(app.principal_id.as_str())
        );
    }
    // kubectl sees the same thing users do.
    world.kubectl_wait_ready("coll").await;

    let account = world.account_id();
    let mine = world.assignments_of(&app.principal_id).await;
    let scopes: Vec<_> = mine.iter().map(|a| a.scope.clone()).collect();
    assert_eq!(
        mine.len(),
        3,
        "one assignment per distinct scope: {scopes:?}"
    );
    assert!(scopes.contains(&account.to_string()));
    assert!(scopes.contains(&format!("{account}/dbs/orders")));
    assert!(scopes.contains(&format!("{account}/dbs/orders/colls/items")));
    let coll = mine
        .iter()
        .find(|a| a.scope.ends_with("/colls/items"))
        .unwrap();
    assert!(
        coll.role_definition_id
            .ends_with(dbgrant::backend::cosmos::BUILTIN_CONTRIBUTOR)
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_revokes_with_delete_and_keeps_the_assignment_with_retain() {
    let world = World::start("deletion", WorldOptions::default()).await;
    let app = world.workload("app").await;
    world
        .grant(
            "gone",
            json!({"serviceAccountName": "app", "role": "reader", "database": "a"}),
        )
        .await;
    world
        .grant(
            "kept",
            json!({"serviceAccountName": "app", "role": "reader", "database": "b", "deletionPolicy": "Retain"}),
        )
        .await;
    world.wait_ready("gone").await;
    world.wait_ready("kept").await;
    assert_eq!(world.assignments_of(&app.principal_id).await.len(), 2);

    world.delete_grant("gone").await;
    world.delete_grant("kept").await;
    let left = world.assignments_of(&app.principal_id).await;
    assert_eq!(
        left.len(),
        1,
        "only the retained assignment is left: {left:?}"
    );
    assert!(left[0].scope.ends_with("/dbs/b"));
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_while_azure_fails_keeps_the_finalizer_says_why_and_finishes_later() {
    let world = World::start("stuck-delete", WorldOptions::default()).await;
    let Some(sims) = world.sims() else {
        return world.finish().await;
    };
    let app = world.workload("app").await;
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "reader"}))
        .await;
    world.wait_ready("g").await;
    // Azure refuses every revoke until the fault is cleared.
    sims.azure.faults().inject(AzureFault {
        operation: Some(Op::SqlRoleAssignments(Verb::Delete).into()),
        status: Some(503),
        ..AzureFault::default()
    });
    world
        .grants()
        .delete("g", &DeleteParams::default())
        .await
        .unwrap();
    // (It may first meet the operator's own lock on the account, busy with a drift check.)
    let names_azure = |g: &dbgrant::api::DatabaseAccessGrant| {
        g.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Ready"
                    && c.reason == Reason::CleanupFailed.as_str()
                    && c.message.contains("ServiceUnavailable")
            })
        })
    };
    let stuck = world
        .wait_grant("g", "CleanupFailed naming Azure's answer", names_azure)
        .await;
    assert!(
        stuck.metadata.deletion_timestamp.is_some()
            && stuck
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty()),
        "the grant stays, held by its finalizer: {:?}",
        stuck.metadata
    );
    world.wait_event("g", Reason::CleanupFailed.as_str()).await;
    assert_eq!(
        world.assignments_of(&app.principal_id).await.len(),
        1,
        "nothing is forgotten while revoking fails"
    );

    sims.azure.faults().clear();
    world.wait_grant_gone("g", Duration::from_secs(60)).await;
    assert!(
        world.assignments_of(&app.principal_id).await.is_empty(),
        "revoked once Azure answers again"
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_sharing_an_assignment_keep_it_until_the_last_one_goes() {
    let world = World::start("shared", WorldOptions::default()).await;
    let app = world.workload("app").await;
    let spec = json!({"serviceAccountName": "app", "role": "reader", "database": "orders"});
    world.grant("first", spec.clone()).await;
    world.grant("second", spec).await;
    let first = world.wait_ready("first").await.status.unwrap();
    let second = world.wait_ready("second").await.status.unwrap();
    assert_eq!(first.role_assignment_id, second.role_assignment_id);
    assert_eq!(world.assignments_of(&app.principal_id).await.len(), 1);

    world.delete_grant("first").await;
    assert_eq!(
        world.assignments_of(&app.principal_id).await.len(),
        1,
        "deleting one grant must not revoke the other's access"
    );
    world.delete_grant("second").await;
    assert!(world.assignments_of(&app.principal_id).await.is_empty());
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_principal_or_scope_replaces_the_assignment_without_leaking_the_old_one() {
    let world = World::start("replace", WorldOptions::default()).await;
    let old = world.workload("app").await;
    world
        .grant(
            "g",
            json!({"serviceAccountName": "app", "role": "reader", "database": "one"}),
        )
        .await;
    world.wait_ready("g").await;

    // Scope change.
    world
        .grant(
            "g",
            json!({"serviceAccountName": "app", "role": "reader", "database": "two"}),
        )
        .await;
    world
        .wait_grant("g", "the new scope", |g| {
            g.status
                .as_ref()
                .and_then(|s| s.scope.as_deref())
                .is_some_and(|s| s.ends_with("/dbs/two"))
                && is_ready(g)
        })
        .await;
    let mine = world.assignments_of(&old.principal_id).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert!(mine[0].scope.ends_with("/dbs/two"));

    // Principal change: the ServiceAccount now names another identity.
    let new = world.identity("app-v2").await;
    world.federate(&new, "app").await;
    world.annotate_service_account("app", &new.client_id).await;
    world
        .wait_grant("g", "the new principal", |g| {
            g.status.as_ref().and_then(|s| s.principal_id.as_deref())
                == Some(new.principal_id.as_str())
                && is_ready(g)
        })
        .await;
    assert!(
        world.assignments_of(&old.principal_id).await.is_empty(),
        "the old principal's assignment is removed"
    );
    assert_eq!(world.assignments_of(&new.principal_id).await.len(), 1);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_deleted_out_of_band_is_restored_within_one_resync() {
    let options = WorldOptions {
        resync_interval: Duration::from_secs(3),
        ..WorldOptions::default()
    };
    let world = World::start("drift", options).await;
    let app = world.workload("app").await;
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "reader"}))
        .await;
    world.wait_ready("g").await;
    let before = world.assignments_of(&app.principal_id).await;
    assert_eq!(before.len(), 1);

    world.delete_assignment_out_of_band(&before[0].guid).await;
    assert!(world.assignments_of(&app.principal_id).await.is_empty());
    let restored = world
        .eventually(
            "the assignment is restored",
            Duration::from_secs(30),
            || async {
                let now = world.assignments_of(&app.principal_id).await;
                (now.len() == 1).then_some(now)
            },
        )
        .await;
    assert_eq!(
        restored[0].guid, before[0].guid,
        "restored under the same deterministic id"
    );
    world.wait_event("g", "AccessRestored").await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_shows_its_own_reason() {
    let options = WorldOptions {
        allowed_roles: vec!["reader"],
        ..WorldOptions::default()
    };
    let world = World::start("reasons", options).await;
    world.workload("app").await;

    // Unknown target.
    world
        .grant_raw(
            "no-target",
            json!({"serviceAccountName": "app", "target": "nope", "role": "reader"}),
        )
        .await;
    // A role the target does not allow.
    world
        .grant(
            "bad-role",
            json!({"serviceAccountName": "app", "role": "contributor"}),
        )
        .await;
    // A ServiceAccount without the workload identity annotation.
    world.service_account("bare", None).await;
    world
        .grant(
            "no-annotation",
            json!({"serviceAccountName": "bare", "role": "reader"}),
        )
        .await;
    // An identity with no federated credential for this ServiceAccount.
    let lonely = world.identity("lonely").await;
    world
        .service_account("lonely", Some(&lonely.client_id))
        .await;
    world
        .grant(
            "not-federated",
            json!({"serviceAccountName": "lonely", "role": "reader"}),
        )
        .await;
    // A ServiceAccount that does not exist here.
    world
        .grant(
            "no-sa",
            json!({"serviceAccountName": "ghost", "role": "reader"}),
        )
        .await;

    for (name, reason) in [
        ("no-target", Reason::TargetNotFound),
        ("bad-role", Reason::PolicyDenied),
        ("no-annotation", Reason::IdentityAnnotationMissing),
        ("not-federated", Reason::IdentityNotFederated),
        ("no-sa", Reason::ServiceAccountNotFound),
    ] {
        world.wait_reason(name, reason).await;
        world.wait_event(name, reason.as_str()).await;
    }

    // The fix for a missing federated credential is made in Azure, where no watch sees it:
    // the grant looks again by itself and goes Ready, with nothing touched in Kubernetes.
    world.federate(&lonely, "lonely").await;
    world
        .eventually(
            "the grant notices the new federated credential",
            Duration::from_secs(120),
            || async {
                let grant = world.grants().get("not-federated").await.ok()?;
                is_ready(&grant).then_some(())
            },
        )
        .await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_rails_refuse_other_namespaces_and_revoke_when_policy_changes() {
    let world = World::start("policy", WorldOptions::default()).await;
    let app = world.workload("app").await;
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "reader"}))
        .await;
    world.wait_ready("g").await;
    assert_eq!(world.assignments_of(&app.principal_id).await.len(), 1);

    // The platform team stops selecting this namespace: access already granted goes away.
    world.set_namespace_label("elsewhere").await;
    world.wait_reason("g", Reason::PolicyDenied).await;
    world
        .eventually(
            "the assignment is revoked",
            Duration::from_secs(30),
            || async {
                world
                    .assignments_of(&app.principal_id)
                    .await
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
    world.wait_event("g", "PolicyDenied").await;

    // And selecting it again restores it.
    world.set_namespace_label(world.team()).await;
    world.wait_ready("g").await;
    assert_eq!(world.assignments_of(&app.principal_id).await.len(), 1);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grant_can_borrow_another_namespaces_identity() {
    let world = World::start("borrow", WorldOptions::default()).await;
    // The victim's workload lives in a second namespace the target also allows.
    let other = world.other_namespace("victim").await;
    let victim = world.identity("victim").await;
    world.federate_in(&victim, &other, "victim").await;
    world
        .service_account_in(&other, "victim", Some(&victim.client_id))
        .await;

    // The grant only names a ServiceAccount, so it can only mean one in its own namespace.
    world
        .grant(
            "by-name",
            json!({"serviceAccountName": "victim", "role": "reader"}),
        )
        .await;
    world
        .wait_reason("by-name", Reason::ServiceAccountNotFound)
        .await;

    // Copying the victim's client id onto our own ServiceAccount does not help either: the
    // identity is federated only to the victim's ServiceAccount.
    world
        .service_account("thief", Some(&victim.client_id))
        .await;
    world
        .grant(
            "by-client-id",
            json!({"serviceAccountName": "thief", "role": "reader"}),
        )
        .await;
    world
        .wait_reason("by-client-id", Reason::IdentityNotFederated)
        .await;
    assert!(world.assignments_of(&victim.principal_id).await.is_empty());
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_during_a_long_operation_leaves_no_duplicate_and_no_leak() {
    let options = WorldOptions {
        lro_duration: Duration::from_secs(2),
        ..WorldOptions::default()
    };
    let world = World::start("crash", options).await;
    let Some(sims) = world.sims() else {
        return world.finish().await;
    };
    let app = world.workload("app").await;
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "reader"}))
        .await;
    // Kill the operator while Azure is still running its PUT.
    world
        .eventually("the PUT is in flight", Duration::from_secs(20), || async {
            (sims
                .azure
                .counters()
                .with_status(Op::SqlRoleAssignments(Verb::Put), 202)
                > 0)
            .then_some(())
        })
        .await;
    world.kill_operator().await;
    world.start_operator().await;
    let ready = world.wait_ready("g").await;
    let mine = world.assignments_of(&app.principal_id).await;
    assert_eq!(
        mine.len(),
        1,
        "exactly one assignment after the restart: {mine:?}"
    );
    assert!(
        ready
            .status
            .unwrap()
            .role_assignment_id
            .unwrap()
            .ends_with(&mine[0].guid)
    );

    world.delete_grant("g").await;
    assert!(
        world.assignments_of(&app.principal_id).await.is_empty(),
        "nothing leaks"
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grants_on_one_account_converge_despite_412() {
    let options = WorldOptions {
        lro_duration: Duration::from_millis(400),
        ..WorldOptions::default()
    };
    let world = World::start("busy", options).await;
    let Some(sims) = world.sims() else {
        return world.finish().await;
    };
    let app = world.workload("app").await;
    // Another writer holds the account's RBAC lock part of the time, as a second operator or
    // a person in the portal would.
    let outsider = world.identity("outsider").await;
    for i in 0..6 {
        world
            .grant(&format!("g{i}"), json!({"serviceAccountName": "app", "role": "reader", "database": format!("db{i}")}))
            .await;
    }
    let outside_writes = async {
        for i in 0..4 {
            let assignment = RoleAssignment {
                guid: uuid::Uuid::new_v4().to_string(),
                role_definition_id: format!(
                    "{}/sqlRoleDefinitions/{}",
                    world.account_id(),
                    dbgrant::backend::cosmos::BUILTIN_READER
                ),
                scope: format!("{}/dbs/outside{i}", world.account_id()),
                principal_id: outsider.principal_id.clone(),
            };
            let _ = world.put_assignment_out_of_band(&assignment).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    outside_writes.await;
    for i in 0..6 {
        world.wait_ready(&format!("g{i}")).await;
    }
    assert_eq!(world.assignments_of(&app.principal_id).await.len(), 6);
    assert!(
        sims.azure
            .counters()
            .with_status(Op::SqlRoleAssignments(Verb::Put), 412)
            > 0,
        "the lock was contended: {:?}",
        sims.azure.counters()
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried_honouring_retry_after() {
    let world = World::start("storm", WorldOptions::default()).await;
    let Some(sims) = world.sims() else {
        return world.finish().await;
    };
    let app = world.workload("app").await;
    let faults = sims.azure.faults();
    faults.inject(AzureFault {
        operation: Some(Op::SqlRoleAssignments(Verb::Put).into()),
        status: Some(429),
        retry_after: Some(1),
        times: Some(3),
        ..AzureFault::default()
    });
    faults.inject(AzureFault {
        operation: Some(Op::EntraToken.into()),
        status: Some(503),
        times: Some(2),
        ..AzureFault::default()
    });
    faults.inject(AzureFault {
        operation: Some(Op::Accounts(Verb::Get).into()),
        status: Some(500),
        times: Some(2),
        ..AzureFault::default()
    });
    let started = std::time::Instant::now();
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "reader"}))
        .await;
    world.wait_ready("g").await;
    let counters = sims.azure.counters();
    assert_eq!(
        counters.with_status(Op::SqlRoleAssignments(Verb::Put), 429),
        3,
        "{counters:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "three Retry-After: 1 waits were honoured"
    );
    assert_eq!(world.assignments_of(&app.principal_id).await.len(), 1);
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_identity_still_replicating_is_retried_until_azure_knows_it() {
    let world = World::start("replica", WorldOptions::default()).await;
    let Some(sims) = world.sims() else {
        return world.finish().await;
    };
    sims.azure
        .faults()
        .set_principal_replication_delay(Duration::from_secs(3));
    world.workload("app").await;
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "reader"}))
        .await;
    world.wait_reason("g", Reason::PrincipalNotFound).await;
    world.wait_ready("g").await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_after_the_first_reuse_the_identity_and_write_nothing() {
    let options = WorldOptions {
        resync_interval: Duration::from_secs(1),
        ..WorldOptions::default()
    };
    let world = World::start("reuse", options).await;
    let Some(sims) = world.sims() else {
        return world.finish().await;
    };
    world.workload("app").await;
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "reader"}))
        .await;
    world.wait_ready("g").await;
    let before = sims.kube.counters();
    let exchanges = sims.azure.counters().calls(Op::EntraToken);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = sims.kube.counters();
    assert!(
        after.get("get", "serviceaccounts") >= before.get("get", "serviceaccounts") + 2,
        "the grant was looked at again on each resync: {after:?}"
    );
    assert_eq!(
        after.get("create", "serviceaccounts"),
        before.get("create", "serviceaccounts"),
        "no new ServiceAccount token was minted"
    );
    assert_eq!(
        sims.azure.counters().calls(Op::EntraToken),
        exchanges,
        "no new exchange at Entra ID"
    );
    assert_eq!(
        sims.azure
            .counters()
            .calls(Op::SqlRoleAssignments(Verb::Put)),
        1,
        "one PUT made the assignment; later passes write nothing"
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_target_ends_its_grants_access_and_takes_its_custom_roles() {
    let world = World::start("roles", WorldOptions::default()).await;
    let targets: Api<DatabaseTarget> = Api::all(world.client.clone());
    let target = world.target_name().to_string();
    let role = json!({"spec": {
        "cosmos": {"roles": {"auditor": {"dataActions": [
            "Microsoft.DocumentDB/databaseAccounts/readMetadata"
        ]}}},
        "allowedRoles": ["reader", "auditor"],
    }});
    targets
        .patch(&target, &PatchParams::default(), &Patch::Merge(&role))
        .await
        .unwrap();
    let app = world.workload("app").await;
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "auditor"}))
        .await;
    world.wait_ready("g").await;
    let owned = format!("dbgrant/{target}/auditor");
    let is_owned = |d: &RoleDefinition| d.role_name == owned;
    assert!(world.role_definitions().await.iter().any(is_owned));

    // Deleting the target ends its grants' access first; then its role and the target go.
    targets
        .delete(&target, &DeleteParams::default())
        .await
        .unwrap();
    world.wait_reason("g", Reason::TargetNotFound).await;
    world
        .eventually("the target is gone", Duration::from_secs(30), || async {
            targets.get_opt(&target).await.ok()?.is_none().then_some(())
        })
        .await;
    assert!(
        !world.role_definitions().await.iter().any(is_owned),
        "the custom role went with its target"
    );
    assert!(world.assignments_of(&app.principal_id).await.is_empty());
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_stopped_before_its_caches_sync_stops_at_once() {
    let world = World::start("early-stop", WorldOptions::default()).await;
    let Some(sims) = world.sims() else {
        return world.finish().await;
    };
    world.kill_operator().await;
    // The restarted operator's start-up check lists grants at once; the list that would fill
    // its cache takes a minute, so the stop below comes before that cache has synced.
    let list_grants = |latency, times| Fault {
        verb: Some("list".into()),
        resource: Some("databaseaccessgrants".into()),
        latency: Some(latency),
        times,
        ..Fault::default()
    };
    let faults = sims.kube.faults();
    faults.inject(list_grants(Duration::from_millis(1), Some(1)));
    faults.inject(list_grants(Duration::from_secs(60), None));
    world.start_operator().await;
    world
        .eventually(
            "the operator's cache list is pending",
            Duration::from_secs(10),
            || async {
                (sims.kube.counters().get("list", "databaseaccessgrants") >= 2).then_some(())
            },
        )
        .await;
    // Stopping waits for nothing that cannot finish (`finish` gives it 30 s, then fails).
    world.finish().await;
}
