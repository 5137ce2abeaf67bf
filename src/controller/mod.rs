//! The reconcilers and their wiring: one `Controller` per custom resource, sharing one
//! `Context`, both stopping gracefully when the shutdown token fires.

pub mod backoff;
pub mod caches;
pub mod cluster;
pub mod decide;
pub mod event_sink;
pub mod grant;
pub mod grant_status;
pub mod identity;
pub mod identity_cache;
pub mod ledger;
pub mod locks;
pub mod policy;
pub mod report;
pub mod seal_key;
pub mod target;
pub mod target_checks;

pub use grant::FINALIZER;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::ListParams;
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::api::{DatabaseAccessGrant, DatabaseTarget};
use crate::backend::{Backend, Backends};
use crate::telemetry::Metrics;
use backoff::Backoff;
use locks::AccountLocks;

/// How soon to retry after losing a race with the watch cache (its event is on the way).
const STALE_CACHE_RETRY: Duration = Duration::from_millis(500);

/// What every reconcile can use. Each field is shared by both controllers; each piece of
/// state has one writer, named on its field. All of it assumes one active replica (leader
/// election makes it so): two replicas each holding a ledger would not see each other.
pub struct Context {
    /// Client for the Kubernetes API (only the finalizer helper uses it directly).
    pub client: Client,
    /// Every other Kubernetes read and write, behind its seam.
    pub cluster: Arc<dyn cluster::Cluster>,
    /// The databases, behind the backend seam.
    pub backends: Backends,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Per-object retry delays, reset on success.
    pub backoff: Backoff<ObjectRef<DynamicObject>>,
    /// One access write at a time per store (Cosmos DB account). Taken by both reconcilers.
    pub account_locks: AccountLocks,
    /// Identities resolved recently, so passes do not each pay an Entra ID exchange. Written
    /// by the grant reconciler.
    pub identities: identity_cache::IdentityCache,
    /// Tokens for token Secrets, one exchange per (identity, scope) per refresh window.
    /// Written by the grant reconciler.
    pub tokens: crate::token::broker::Broker<identity_cache::IdentityKey>,
    /// What each grant holds and asks for. Written by the grant reconciler only.
    pub ledger: ledger::Ledger,
    /// Every grant, as last seen (for shared-assignment checks and drift repair).
    pub grants: Store<DatabaseAccessGrant>,
    /// Every target, as last seen.
    pub targets: Store<DatabaseTarget>,
    /// Whether `targets` has listed every target once.
    pub targets_synced: tokio::sync::watch::Receiver<bool>,
    /// Tenant used when a ServiceAccount names none.
    pub default_tenant: Option<String>,
    /// When each target's store was last checked. Written by the target reconciler.
    pub target_checks: target_checks::TargetChecks,
    /// The key of the identity seals on token Secrets (`token::seal`).
    pub seal: seal_key::SealKeySource,
    /// Requeue interval after a successful reconcile (also the drift-check period).
    pub resync_interval: Duration,
}

impl Context {
    /// The backend of the target that declares the store a holding id belongs to, if any
    /// target does (a target being deleted still declares its store until its finalizer goes).
    pub fn backend_for_holding(&self, id: &str) -> Option<Arc<dyn Backend>> {
        let store = self.backends.store_of(id)?;
        self.targets.state().iter().find_map(|target| {
            let backend = self
                .backends
                .for_target(&target.name_any(), &target.spec)
                .ok()?;
            crate::backend::same_store(&backend.store(), &store).then_some(backend)
        })
    }
}

/// Settings the controllers take.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Reconciles at once, per controller (0: unbounded).
    pub concurrency: u16,
    /// Requeue interval after a successful reconcile.
    pub resync_interval: Duration,
    /// Tenant used when a ServiceAccount names none.
    pub default_tenant: Option<String>,
    /// Name of this instance in events (the pod name in a cluster).
    pub instance: Option<String>,
    /// The operator's own namespace (`POD_NAMESPACE`), where the identity seal's key lives;
    /// `None` turns sealing off.
    pub namespace: Option<String>,
}

/// Run both controllers until `shutdown` fires. `ready` is set once both caches have synced.
///
/// # Errors
/// Fails at once, with an install hint, when the CRDs are not installed or the operator may
/// not list them.
pub async fn run(
    client: Client,
    backends: Backends,
    settings: ControllerSettings,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grants = Api::<DatabaseAccessGrant>::all(client.clone());
    let targets = Api::<DatabaseTarget>::all(client.clone());
    ensure_installed(&grants, "databaseaccessgrants.dbgrant.io").await?;
    ensure_installed(&targets, "databasetargets.dbgrant.io").await?;

    let config = controller::Config::default().concurrency(settings.concurrency);
    let watch = || watcher::Config::default().any_semantic();

    // Grants: one pruned cache, which also drives their controller (at thousands of grants a
    // second, full copy in the controller was most of the operator's memory). Nothing of ours
    // waits on a store's readiness but the controller's runner (see `caches`).
    let (grant_cache, grant_objects) = caches::Cache::driving(grants.clone(), watch());
    let grant_controller = Controller::for_stream(grant_objects, grant_cache.store.clone());
    let grants_synced = grant_controller.store();
    let target_controller = Controller::new(targets.clone(), watch());
    let targets_synced = target_controller.store();
    let target_cache = caches::Cache::spawn(targets.clone(), watch(), shutdown.clone());
    let grant_store = grant_cache.store.clone();

    // Grants react to their target, their namespace's labels and their ServiceAccount.
    let by_target = grant_store.clone();
    let by_namespace = grant_store.clone();
    let by_account = grant_store.clone();
    let grant_controller = grant_controller
        .watches(targets, watch(), move |target: DatabaseTarget| {
            let name = target.name_any();
            refs(&by_target, move |g| g.spec.target == name)
        })
        .watches(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watch(),
            move |ns| {
                let name = ns.name_any();
                refs(&by_namespace, move |g| {
                    g.namespace().as_deref() == Some(name.as_str())
                })
            },
        )
        .watches(
            Api::<PartialObjectMeta<ServiceAccount>>::all(client.clone()),
            watch(),
            move |sa| {
                let (name, namespace) = (sa.name_any(), sa.namespace());
                refs(&by_account, move |g| {
                    g.spec.service_account_name == name && g.namespace() == namespace
                })
            },
        )
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone().cancelled_owned());
    // Targets react to grants appearing or going (their grant count).
    let target_controller = target_controller
        .watches(grants, watch(), |grant: DatabaseAccessGrant| {
            std::iter::once(ObjectRef::new(&grant.spec.target))
        })
        .with_config(config)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned());

    metrics.register_grant_states(grant_store.clone());
    metrics.register_token_expiry(grant_store.clone());
    let ctx = Arc::new(Context {
        cluster: Arc::new(cluster::KubeCluster::new(
            client.clone(),
            settings.instance.clone(),
        )),
        client,
        backends,
        metrics,
        backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
        account_locks: AccountLocks::new(AccountLocks::waiters_for(settings.concurrency)),
        identities: identity_cache::IdentityCache::default(),
        tokens: crate::token::broker::Broker::default(),
        ledger: ledger::Ledger::default(),
        grants: grant_store.clone(),
        targets: target_cache.store.clone(),
        targets_synced: target_cache.synced.clone(),
        default_tenant: settings.default_tenant,
        target_checks: target_checks::TargetChecks::default(),
        seal: seal_key::SealKeySource::new(settings.namespace),
        resync_interval: settings.resync_interval,
    });

    tokio::spawn(async move {
        if grant_cache.wait_synced().await && target_cache.wait_synced().await {
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
    futures::join!(
        drain("grant", grants_done, grants_synced, shutdown.clone()),
        drain("target", targets_done, targets_synced, shutdown),
    );
    tracing::info!("controllers stopped");
    Ok(())
}

/// Run a controller to its end. kube-runtime holds a controller's reconciles until its cache
/// has synced, and a graceful shutdown also stops the watch that would sync it, so a shutdown
/// arriving before the first sync would wait forever. Such a controller has reconciled nothing
/// yet, so it is simply dropped; one that has synced drains its in-flight reconciles.
async fn drain<K>(
    controller: &'static str,
    done: impl Future<Output = ()>,
    store: Store<K>,
    shutdown: CancellationToken,
) where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let unsynced_at_shutdown = async {
        shutdown.cancelled().await;
        if store.wait_until_ready().now_or_never().is_none() {
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = done => {}
        () = unsynced_at_shutdown => {
            tracing::debug!(controller, "stopped before its cache synced; nothing to drain");
        }
    }
}

/// References to the grants in `store` that `select` picks.
fn refs(
    store: &Store<DatabaseAccessGrant>,
    select: impl Fn(&DatabaseAccessGrant) -> bool,
) -> Vec<ObjectRef<DatabaseAccessGrant>> {
    store
        .state()
        .iter()
        .filter(|g| select(g))
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
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
    result: Result<(ObjectRef<K>, Action), controller::Error<E, watcher::Error>>,
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
        Err(error) => {
            tracing::debug!(controller, error = %crate::error::chain(&error), "reconcile failed")
        }
    }
}
