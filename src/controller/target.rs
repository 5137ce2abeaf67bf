//! Reconciler of `DatabaseTarget`: checks the store exists and the operator may manage it,
//! keeps what the target owns there (custom role definitions) in place, counts the grants
//! using it, and repairs drift: one list of the store's access per resync (never one call per
//! grant), restoring what an allowed grant asks for and holds that went missing out of band.
//!
//! Its finalizer ends access with the target: grants naming a target being deleted release
//! what they hold (or hand it over, with `deletionPolicy: Retain`), and the target goes once no
//! grant of it records access on its store and its custom roles are deleted. A custom role
//! still assigned only to access nobody records (retained, or made by hand) stays in Azure for
//! it, and does not hold the target.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::report::{self, AccessChange};
use super::target_checks::Pass;
use super::{Context, grant};
use crate::api::{ConditionType, DatabaseTarget, DeletionPolicy, Reason, Status, set_condition};
use crate::backend::{Backend, BackendError, Holding, same_store};
use crate::error::{Error, Result};

const CONTROLLER: &str = "target";

/// Finalizer that ends access with the target and deletes its custom roles.
pub const FINALIZER: &str = "dbgrant.io/delete-custom-roles";

/// Reconcile one target: check and converge while it exists, clean up once it is being deleted.
pub async fn reconcile(target: Arc<DatabaseTarget>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let api = Api::<DatabaseTarget>::all(ctx.client.clone());
    let action = finalizer(&api, FINALIZER, target, |event| async {
        match event {
            Finalizer::Apply(target) => apply(target, &ctx).await,
            Finalizer::Cleanup(target) => cleanup(target, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.metrics.reconcile_finished(CONTROLLER, true);
    Ok(action)
}

/// One pass over a target that exists (the controller calls it through `reconcile`).
pub async fn apply(target: Arc<DatabaseTarget>, ctx: &Context) -> Result<Action> {
    let name = target.name_any();
    let key = ObjectRef::from_obj(target.as_ref()).erase();
    let old_status = target.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let before = report::ready_of(&status.conditions);

    let using = ctx
        .grants
        .state()
        .iter()
        .filter(|g| g.spec.target == name)
        .count();
    status.grant_count = Some(i32::try_from(using).unwrap_or(i32::MAX));

    let generation = target.metadata.generation;
    let ready_now = grant::target_readiness(&target) == Some(true) && status.endpoint.is_some();
    let mut pass = ctx
        .target_checks
        .pass(&name, generation, ready_now, ctx.resync_interval);
    let outcome = match ctx.backends.for_target(&name, &target.spec) {
        Err(error) => Err(error),
        Ok(backend) => {
            status.backend = Some(backend.kind().to_string());
            status.account = Some(backend.display_name());
            if pass == Pass::Drift && backend.keeps_definitions() {
                // Its custom roles are kept in place on every resync, not only its access.
                pass = Pass::Full;
            }
            match pass {
                Pass::CountOnly(_) => Ok(()),
                Pass::Full | Pass::Drift => {
                    let Some(_guard) = ctx.account_locks.try_lock(&backend.store()) else {
                        // A grant is writing on this store right now; converge on the next pass.
                        return Ok(Action::requeue(std::time::Duration::from_secs(2)));
                    };
                    let prepared = match pass {
                        Pass::Full => backend.prepare().await.map(|endpoint| {
                            status.endpoint = Some(endpoint);
                        }),
                        _ => Ok(()),
                    };
                    match prepared {
                        Ok(()) => repair_drift(&name, backend.as_ref(), ctx).await,
                        Err(error) => Err(error),
                    }
                }
            }
        }
    };

    let (ready, reason, message, action) = match &outcome {
        Ok(()) => {
            ctx.backoff.reset(&key);
            ctx.target_checks.done(&name, generation, pass);
            let wait = match pass {
                Pass::CountOnly(wait) => wait,
                Pass::Full | Pass::Drift => ctx.resync_interval,
            };
            (
                Status::True,
                Reason::Ready,
                format!("store reachable and manageable; used by {using} grant(s)"),
                Action::requeue(wait),
            )
        }
        Err(error) => {
            ctx.target_checks.forget(&name);
            ctx.metrics
                .reconcile_failed(CONTROLLER, error.reason.as_str());
            let action = if error.reason.needs_user_action() {
                Action::await_change()
            } else {
                Action::requeue(ctx.backoff.next_delay(&key, error.retry_after))
            };
            (Status::False, error.reason, error.message.clone(), action)
        }
    };
    status.observed_generation = target.metadata.generation;
    set_condition(
        &mut status.conditions,
        ConditionType::Ready,
        ready,
        reason.as_str(),
        &message,
        target.metadata.generation,
        Time(Timestamp::now()),
    );
    if status != old_status {
        ctx.cluster.target_status(&name, &status).await?;
    }
    report::event_on_transition(
        ctx.cluster.as_ref(),
        target.object_ref(&()),
        before,
        &status.conditions,
    )
    .await;
    Ok(action)
}

/// Restore what allowed grants of this target ask for and hold but the store no longer has.
/// Only the ledger says what that is, never a status: whoever can write a grant's status
/// cannot steer what the operator writes.
async fn repair_drift(
    name: &str,
    backend: &dyn Backend,
    ctx: &Context,
) -> Result<(), BackendError> {
    let store = backend.store();
    // This target's live grants by key: one pass over the cache, not one per holding.
    let grants: std::collections::HashMap<_, _> = ctx
        .grants
        .state()
        .into_iter()
        .filter(|g| g.spec.target == name && g.metadata.deletion_timestamp.is_none())
        .map(|g| (ObjectRef::from_obj(g.as_ref()).erase(), g))
        .collect();
    let expected: Vec<(Arc<crate::api::DatabaseAccessGrant>, Holding)> = ctx
        .ledger
        .wanted_where(|id| {
            ctx.backends
                .store_of(id)
                .is_some_and(|s| same_store(&s, &store))
        })
        .into_iter()
        .filter_map(|(key, holding)| Some((grants.get(&key)?.clone(), holding)))
        .collect();
    if expected.is_empty() {
        return Ok(());
    }
    let present: HashSet<String> = backend
        .list_owned()
        .await?
        .into_iter()
        .map(|h| h.id)
        .collect();
    let mut restored = HashSet::new();
    for (grant, holding) in expected {
        if present.contains(&holding.id) || !restored.insert(holding.id.clone()) {
            continue;
        }
        // One grant's failure (its principal deleted, say) is that grant's, not the target's:
        // said on the grant, and the store's other access is still repaired.
        if let Err(error) = backend.grant(&holding).await {
            if error.reason.is_store_wide() {
                return Err(error);
            }
            ctx.cluster
                .event(
                    grant.object_ref(&()),
                    true,
                    "AccessRestoreFailed",
                    format!("restoring access {} failed: {error}", holding.id),
                )
                .await;
            continue;
        }
        ctx.metrics.drift_restored();
        report::audit(
            ctx.cluster.as_ref(),
            grant.object_ref(&()),
            AccessChange::Restored,
            &holding,
            Some(&grant.spec.role),
        )
        .await;
    }
    Ok(())
}

/// One pass over a target being deleted (the controller calls it through `reconcile`).
pub async fn cleanup(target: Arc<DatabaseTarget>, ctx: &Context) -> Result<Action> {
    let key = ObjectRef::from_obj(target.as_ref()).erase();
    let name = target.name_any();
    let result = match ctx.backends.for_target(&name, &target.spec) {
        Ok(backend) => end_access(&name, backend.as_ref(), ctx).await,
        Err(_) => Ok(()),
    };
    ctx.target_checks.forget(&name);
    let Err(error) = result else {
        ctx.backoff.reset(&key);
        return Ok(Action::await_change());
    };
    let message =
        format!("deleting the target has not finished; the finalizer stays until it has: {error}");
    let mut status = target.status.clone().unwrap_or_default();
    report::cleanup_failed(
        ctx.cluster.as_ref(),
        target.object_ref(&()),
        &mut status.conditions,
        target.metadata.generation,
        &message,
    )
    .await;
    ctx.cluster.target_status(&name, &status).await?;
    Err(Error::Cleanup(error))
}

/// Wait until no grant of this target records access on its store (each releases it, or hands
/// it over with Retain, when it sees the target going), then delete the target's own roles.
async fn end_access(name: &str, backend: &dyn Backend, ctx: &Context) -> Result<(), BackendError> {
    grant::seed_ledger(ctx);
    let store = backend.store();
    let grants = ctx.grants.state();
    let on_store: Vec<(super::ledger::GrantKey, String)> = ctx
        .ledger
        .recorded()
        .into_iter()
        .filter(|(_, id)| {
            ctx.backends
                .store_of(id)
                .is_some_and(|s| same_store(&s, &store))
        })
        .collect();
    let waiting = grants
        .iter()
        .filter(|g| g.spec.target == name && g.spec.deletion_policy == DeletionPolicy::Delete)
        .filter(|g| {
            let key = ObjectRef::from_obj(g.as_ref()).erase();
            on_store.iter().any(|(k, _)| *k == key)
        })
        .count();
    if waiting > 0 {
        let mut error = BackendError::new(
            Reason::CleanupFailed,
            format!("waiting for {waiting} grant(s) to release their access"),
        );
        error.retry_after = Some(std::time::Duration::from_secs(2));
        return Err(error);
    }
    let recorded: Vec<Holding> = on_store
        .iter()
        .map(|(_, id)| report::holding_from_id(id))
        .collect();
    let _guard = ctx
        .account_locks
        .lock_or_busy(&store, std::time::Duration::from_secs(30))
        .await?;
    let blocking = backend.remove_target_owned(&recorded).await?;
    if blocking.is_empty() {
        Ok(())
    } else {
        Err(BackendError::new(
            Reason::CleanupFailed,
            format!(
                "custom roles still assigned: {}; each is deleted once the grants using it are gone",
                blocking.join(", ")
            ),
        ))
    }
}

/// Decide when to retry a failed reconcile.
pub fn error_policy(
    target: Arc<DatabaseTarget>,
    error: &crate::error::Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.reconcile_finished(CONTROLLER, false);
    if error.is_stale_cache() {
        tracing::debug!(target = %target.name_any(), error = %crate::error::chain(error), "target changed meanwhile; looking again");
        return Action::requeue(super::STALE_CACHE_RETRY);
    }
    ctx.metrics.reconcile_failed(CONTROLLER, error.reason());
    tracing::warn!(target = %target.name_any(), error = %crate::error::chain(error), "target reconcile failed");
    if let Some(soon) = error.busy_retry() {
        return Action::requeue(soon);
    }
    if error.is_transient() {
        let at_least = match error {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::CleanupFailed(Error::Cleanup(e)) => e.retry_after,
                _ => None,
            },
            _ => None,
        };
        Action::requeue(
            ctx.backoff
                .next_delay(&ObjectRef::from_obj(target.as_ref()).erase(), at_least),
        )
    } else {
        Action::await_change()
    }
}
