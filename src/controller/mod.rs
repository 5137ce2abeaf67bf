//! The reconcilers and their wiring: one `Controller` per custom resource, sharing one
//! `Context`, both stopping gracefully when the shutdown token fires.

pub mod backoff;
mod grant;
pub mod grant_status;
pub mod identity;
pub mod policy;
mod target;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::api::{DatabaseAccessGrant, DatabaseTarget};
use crate::error::Error;
use crate::telemetry::Metrics;

/// What every reconcile can use.
pub struct Context {
    /// Client for the Kubernetes API.
    pub client: Client,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Requeue interval after a successful reconcile (safety net against missed events).
    pub resync_interval: Duration,
}

/// Settings the controllers take.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Reconciles at once, per controller (0: unbounded).
    pub concurrency: u16,
    /// Requeue interval after a successful reconcile.
    pub resync_interval: Duration,
}

/// Run both controllers until `shutdown` fires. `ready` is set once both caches have synced.
///
/// # Errors
/// Fails at once, with an install hint, when the CRDs are not installed or the operator may
/// not list them.
pub async fn run(
    client: Client,
    settings: ControllerSettings,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grants = Api::<DatabaseAccessGrant>::all(client.clone());
    let targets = Api::<DatabaseTarget>::all(client.clone());
    ensure_installed(&grants, "databaseaccessgrants.dbgrant.io").await?;
    ensure_installed(&targets, "databasetargets.dbgrant.io").await?;

    let ctx = Arc::new(Context {
        client,
        metrics,
        resync_interval: settings.resync_interval,
    });
    let config = controller::Config::default().concurrency(settings.concurrency);

    let grant_controller = Controller::new(grants, watcher::Config::default().any_semantic())
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone().cancelled_owned());
    let target_controller = Controller::new(targets, watcher::Config::default().any_semantic())
        .with_config(config)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned());

    let grant_store = grant_controller.store();
    let target_store = target_controller.store();
    tokio::spawn(async move {
        if grant_store.wait_until_ready().await.is_ok()
            && target_store.wait_until_ready().await.is_ok()
        {
            ready.store(true, Ordering::Release);
            tracing::info!("caches synced; ready");
        }
    });

    let grants_done = grant_controller
        .run(grant::reconcile, grant::error_policy, ctx.clone())
        .for_each(|result| async move { log_outcome("grant", result) });
    let targets_done = target_controller
        .run(target::reconcile, target::error_policy, ctx)
        .for_each(|result| async move { log_outcome("target", result) });
    futures::join!(grants_done, targets_done);
    tracing::info!("controllers stopped");
    Ok(())
}

/// Refuse to start when a CRD is missing or unreadable, naming the fix.
async fn ensure_installed<K>(api: &Api<K>, crd: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(anyhow::anyhow!(
            "CustomResourceDefinition {crd} is not installed: apply crds/ (kubectl apply -f crds/) or install the Helm chart"
        )),
        Err(error) => Err(anyhow::Error::new(error).context(format!(
            "cannot list {crd}: check the operator's RBAC and connection to the API server"
        ))),
    }
}

fn log_outcome<K, E>(
    controller: &'static str,
    result: Result<
        (kube::runtime::reflector::ObjectRef<K>, Action),
        controller::Error<E, watcher::Error>,
    >,
) where
    K: kube::Resource,
    K::DynamicType: Eq + std::hash::Hash + Clone + std::fmt::Debug,
    E: std::error::Error + 'static,
{
    match result {
        Ok((object, _)) => tracing::debug!(controller, %object, "reconciled"),
        Err(controller::Error::ObjectNotFound(object)) => {
            tracing::debug!(controller, %object, "object gone before its reconcile")
        }
        Err(error) => tracing::warn!(controller, error = %error, "reconcile failed"),
    }
}

/// Shared error policy: count the failure, then retry transient errors and wait for a change
/// on permanent ones.
fn requeue_after_error(controller: &'static str, error: &Error, ctx: &Context) -> Action {
    ctx.metrics.reconcile_failed(controller, error.reason());
    if error.is_transient() {
        Action::requeue(Duration::from_secs(15))
    } else {
        Action::await_change()
    }
}
