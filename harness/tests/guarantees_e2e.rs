//! End to end, the three ways access used to outlive what allowed it (each failed before the
//! grant reconciler was rebuilt around its ledger): a grant retargeted away from its target,
//! sharers refused at once, and an assignment made but not acknowledged before a deletion.
//! Simulators by default, a real cluster and subscription with `DBGRANT_E2E_*` set.

mod support;

use std::time::Duration;

use dbgrant::api::{DatabaseAccessGrant, DatabaseTarget, Reason};
use dbgrant_sim::azure::{AzureOperation as Op, Verb};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::world::{World, WorldOptions, is_ready};

async fn revoked(world: &World, principal: &str) {
    world
        .eventually(
            "the assignment is revoked",
            Duration::from_secs(30),
            || async {
                world
                    .assignments_of(principal)
                    .await
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_retargeted_to_a_missing_target_loses_its_access() {
    let world = World::start("retarget", WorldOptions::default()).await;
    let app = world.workload("app").await;
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "reader"}))
        .await;
    world.wait_ready("g").await;
    assert_eq!(world.assignments_of(&app.principal_id).await.len(), 1);

    world
        .grant_raw(
            "g",
            json!({"serviceAccountName": "app", "role": "reader", "target": "no-such-target"}),
        )
        .await;
    world.wait_reason("g", Reason::TargetNotFound).await;
    revoked(&world, &app.principal_id).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharers_refused_at_once_leave_no_assignment_behind() {
    let world = World::start("sharers", WorldOptions::default()).await;
    let app = world.workload("app").await;
    let other = world.other_namespace("b").await;
    world.federate_in(&app, &other, "app").await;
    world
        .service_account_in(&other, "app", Some(&app.client_id))
        .await;
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "reader"}))
        .await;
    let theirs: Api<DatabaseAccessGrant> = Api::namespaced(world.client.clone(), &other);
    let grant = json!({
        "apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant",
        "metadata": {"name": "g", "namespace": other},
        "spec": {"serviceAccountName": "app", "role": "reader", "target": world.target_name()},
    });
    theirs
        .patch(
            "g",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&grant),
        )
        .await
        .unwrap();
    world.wait_ready("g").await;
    world
        .eventually(
            "the second grant is Ready",
            Duration::from_secs(30),
            || async { theirs.get("g").await.ok().filter(is_ready).map(|_| ()) },
        )
        .await;
    assert_eq!(
        world.assignments_of(&app.principal_id).await.len(),
        1,
        "one assignment, shared"
    );

    // The platform team stops selecting both namespaces in one edit.
    let targets: Api<DatabaseTarget> = Api::all(world.client.clone());
    let patch =
        json!({"spec": {"allowedNamespaces": {"matchLabels": {"dbgrant.io/team": "nobody"}}}});
    targets
        .patch(
            world.target_name(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    world.wait_reason("g", Reason::PolicyDenied).await;
    revoked(&world, &app.principal_id).await;
    theirs.delete("g", &DeleteParams::default()).await.unwrap();
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_made_during_a_crash_is_revoked_when_the_grant_goes_meanwhile() {
    let options = WorldOptions {
        lro_duration: Duration::from_secs(2),
        ..WorldOptions::default()
    };
    let world = World::start("unacked", options).await;
    let app = world.workload("app").await;
    world
        .grant("g", json!({"serviceAccountName": "app", "role": "reader"}))
        .await;
    // The record is written before the PUT: once it shows, the write is on its way. With the
    // simulators in-process, wait until Azure has accepted the PUT (its operation runs two
    // seconds), so the operator dies mid-write; against real Azure the record is the signal.
    world
        .wait_grant("g", "the access recorded", |g| {
            g.status.as_ref().is_some_and(|s| !s.held.is_empty())
        })
        .await;
    if let Some(sims) = world.sims() {
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
    }
    world.kill_operator().await;
    if world.sims().is_some() {
        world
            .eventually(
                "Azure made the assignment",
                Duration::from_secs(30),
                || async {
                    (!world.assignments_of(&app.principal_id).await.is_empty()).then_some(())
                },
            )
            .await;
    } else {
        // The operator here is a task in this process, not a pod: a request its HTTP client
        // had already handed to a connection can still reach Azure after the "kill". A pod
        // that dies sends nothing more, and its replacement starts seconds later; give such a
        // straggler that long to land (or not) before going on.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline
            && world.assignments_of(&app.principal_id).await.is_empty()
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // The grant is deleted while the operator is down.
    world
        .grants()
        .delete("g", &DeleteParams::default())
        .await
        .unwrap();
    world.start_operator().await;
    world.wait_grant_gone("g", Duration::from_secs(30)).await;
    assert!(
        world.assignments_of(&app.principal_id).await.is_empty(),
        "the assignment made during the crash does not leak"
    );
    world.finish().await;
}
