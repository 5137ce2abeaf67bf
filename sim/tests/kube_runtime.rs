//! kube-rs's runtime against the Kubernetes simulator: a `Controller` over a CRD that owns
//! ConfigMaps (metadata-only watches of the owned kind, ownerReference mapping, garbage
//! collection) through kube's finalizer helper with server-side-apply status patches, and leader election with `kube-lease-manager` (Lease holderIdentity,
//! renewTime and leaseDurationSeconds, written with optimistic concurrency on resourceVersion).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher::Config;
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::timeout;

use dbgrant_sim::kube::{KubeSim, KubeSimConfig};

const LIMIT: Duration = Duration::from_secs(30);

/// A test kind: each Widget keeps a ConfigMap holding its size.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "test.dbgrant.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
struct WidgetSpec {
    size: i64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
struct WidgetStatus {
    config_map: Option<String>,
}

struct Context {
    client: kube::Client,
    reconciles: AtomicUsize,
    cleanups: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Error(Box<kube::runtime::finalizer::Error<kube::Error>>);

const FINALIZER: &str = "test.dbgrant.io/cleanup";

/// Through kube's finalizer helper: it adds the finalizer with a JSON patch (`test` on a
/// missing path first), and on deletion runs the cleanup before removing it.
async fn reconcile(widget: Arc<Widget>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let api: Api<Widget> = Api::namespaced(ctx.client.clone(), &widget.namespace().unwrap());
    finalizer(&api, FINALIZER, widget, |event| async {
        match event {
            Finalizer::Apply(widget) => apply(&widget, &ctx).await,
            Finalizer::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error(Box::new(e)))
}

async fn apply(widget: &Widget, ctx: &Context) -> Result<Action, kube::Error> {
    let ns = widget.namespace().unwrap();
    let name = format!("{}-size", widget.name_any());
    let owner = widget.controller_owner_ref(&()).unwrap();
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "data": {"size": widget.spec.size.to_string()},
    });
    let ssa = PatchParams::apply("widget-controller").force();
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &ssa, &Patch::Apply(&config_map))
        .await?;
    let status = json!({
        "apiVersion": "test.dbgrant.io/v1",
        "kind": "Widget",
        "status": {"config_map": name},
    });
    Api::<Widget>::namespaced(ctx.client.clone(), &ns)
        .patch_status(&widget.name_any(), &ssa, &Patch::Apply(&status))
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Widget>, _: &Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

async fn wait_for<F: Fn() -> Fut, Fut: Future<Output = bool>>(what: &str, check: F) {
    timeout(LIMIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn a_controller_owning_config_maps_reconciles_and_repairs_them() {
    let sim = KubeSim::start(KubeSimConfig::default()).await.unwrap();
    let client = sim.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .unwrap();
    timeout(
        LIMIT,
        await_condition(
            crds,
            "widgets.test.dbgrant.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();

    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Context {
        client: client.clone(),
        reconciles: AtomicUsize::new(0),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(widgets.clone(), Config::default())
        .owns(config_maps.clone(), Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let widget = Widget::new("gear", WidgetSpec { size: 3 });
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    wait_for("the owned ConfigMap", || async {
        config_maps.get_opt("gear-size").await.unwrap().is_some()
    })
    .await;
    let config_map = config_maps.get("gear-size").await.unwrap();
    let owner = &config_map.metadata.owner_references.as_ref().unwrap()[0];
    let stored = widgets.get("gear").await.unwrap();
    assert_eq!(owner.uid, stored.metadata.uid.clone().unwrap());
    assert_eq!(stored.finalizers(), [FINALIZER]);
    assert_eq!(owner.controller, Some(true));
    assert_eq!(config_map.data.unwrap()["size"], "3");
    wait_for("the status", || async {
        widgets.get("gear").await.unwrap().status.is_some()
    })
    .await;

    // Deleting the owned object out of band reaches the controller through `.owns()`.
    let before = ctx.reconciles.load(Ordering::SeqCst);
    config_maps
        .delete("gear-size", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the ConfigMap to come back", || async {
        config_maps.get_opt("gear-size").await.unwrap().is_some()
    })
    .await;
    assert!(ctx.reconciles.load(Ordering::SeqCst) > before);

    // A spec change reconciles again.
    widgets
        .patch(
            "gear",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}})),
        )
        .await
        .unwrap();
    wait_for("the new size", || async {
        config_maps
            .get_opt("gear-size")
            .await
            .unwrap()
            .and_then(|c| c.data)
            .is_some_and(|d| d["size"] == "5")
    })
    .await;

    // Deleting the owner runs the cleanup, lets the finalizer go, and garbage-collects what
    // it owns.
    widgets
        .delete("gear", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the finalizer to let go", || async {
        widgets.get_opt("gear").await.unwrap().is_none()
    })
    .await;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    wait_for("garbage collection", || async {
        config_maps.get_opt("gear-size").await.unwrap().is_none()
    })
    .await;
    controller.abort();
}

#[tokio::test]
async fn two_lease_managers_elect_one_leader_and_hand_over() {
    let sim = KubeSim::start(KubeSimConfig::default()).await.unwrap();
    let client = sim.client().await.unwrap();
    let manager = |identity: &str| {
        LeaseManagerBuilder::new(client.clone(), "dbgrant-leader")
            .with_namespace("default")
            .with_identity(identity)
            .with_duration(3)
            .with_grace(1)
            .build()
    };
    let (mut first, first_task) = manager("first").await.unwrap().watch().await;
    let (mut second, second_task) = manager("second").await.unwrap().watch().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");

    // Exactly one leads, and the Lease names it.
    timeout(LIMIT, async {
        while !(*first.borrow() || *second.borrow()) {
            tokio::select! {
                _ = first.changed() => {}
                _ = second.changed() => {}
            }
        }
    })
    .await
    .expect("nobody became leader");
    // Let both run a few renewals: leadership must stay with one.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (first_leads, second_leads) = (*first.borrow(), *second.borrow());
    assert!(first_leads ^ second_leads, "exactly one leader");
    let (leader, mut follower, leader_task, follower_task, leader_name, follower_name) =
        if first_leads {
            (first, second, first_task, second_task, "first", "second")
        } else {
            (second, first, second_task, first_task, "second", "first")
        };
    let lease = leases.get("dbgrant-leader").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(leader_name));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert!(spec.renew_time.is_some());

    // The leader stops (its receiver goes away): it releases the Lease and the other takes over.
    drop(leader);
    timeout(LIMIT, leader_task)
        .await
        .expect("the leader stops")
        .unwrap()
        .expect("and releases cleanly");
    timeout(LIMIT, async {
        while !*follower.borrow() {
            follower.changed().await.unwrap();
        }
    })
    .await
    .expect("the follower never took over");
    let lease = leases.get("dbgrant-leader").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(follower_name)
    );
    drop(follower);
    let _ = timeout(LIMIT, follower_task).await;
}
