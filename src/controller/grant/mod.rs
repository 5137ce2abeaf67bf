//! Reconciler of `DatabaseAccessGrant`, in four phases:
//! - **gather**: the target (live), the namespace's labels, the grant's records in the ledger;
//!   then the identity, through a token minted for the grant's own ServiceAccount;
//! - **decide** (`controller::decide`, pure): the guard rails' verdict, what the grant asks
//!   for, and which of the access it holds must go because nobody asks for it any more;
//! - **act** (`act.rs`): record before writing, grant, revoke, probe, project the token;
//! - **report**: status, events (every access change is audited), metrics, when to look again.
//!
//! Revocation never depends on the grant being valid: a grant whose target vanished, whose
//! policy now refuses it or whose identity changed still releases what it held.

mod act;
mod identity;
mod token;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::decide::{self, Gate, Next, TargetView};
use super::grant_status::{Outcome, Step, write_conditions};
use super::identity_cache::IdentityKey;
use super::ledger::GrantKey;
use super::{Context, report};
use crate::api::{
    DatabaseAccessGrant, DatabaseAccessGrantStatus, DatabaseTarget, DeletionPolicy, Reason, Status,
};
use crate::backend::{Access, Backend, BackendError, Holding, ResolvedIdentity, TokenScope};
use crate::error::{Error, Result};

const CONTROLLER: &str = "grant";
/// Finalizer that guards revocation.
pub const FINALIZER: &str = "dbgrant.io/revoke-access";

/// How often the ledger is seeded from, and pruned to, the whole grant cache.
const SEED_EVERY: Duration = Duration::from_secs(1);

/// How soon to look again when the store is busy with another write of ours.
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// [`BUSY_RETRY`] spread by up to half of it either way: grants turned away from a busy store
/// together must not all come back at the same moment, or the store idles between the waves.
fn busy_retry() -> Duration {
    use std::hash::BuildHasher as _;
    // A fresh RandomState is randomly keyed: a cheap random number, no dependency.
    let random = std::collections::hash_map::RandomState::new().hash_one(0u8);
    #[allow(clippy::cast_precision_loss)]
    let share = (random % 1_000) as f64 / 1_000.0;
    BUSY_RETRY.mul_f64(0.5 + share)
}

/// Reconcile one grant: apply while it exists, clean up once it is being deleted.
pub async fn reconcile(grant: Arc<DatabaseAccessGrant>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let namespace = grant
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api = Api::<DatabaseAccessGrant>::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, grant, |event| async {
        match event {
            Finalizer::Apply(grant) => apply(grant, &ctx).await,
            Finalizer::Cleanup(grant) => cleanup(grant, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.metrics.reconcile_finished(CONTROLLER, true);
    Ok(action)
}

/// Decide when to retry a reconcile that failed outside the steps it reports itself.
pub fn error_policy(grant: Arc<DatabaseAccessGrant>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_finished(CONTROLLER, false);
    if error.is_stale_cache() {
        tracing::debug!(grant = %grant.name_any(), error = %crate::error::chain(error), "grant changed meanwhile; looking again");
        return Action::requeue(super::STALE_CACHE_RETRY);
    }
    ctx.metrics.reconcile_failed(CONTROLLER, error.reason());
    tracing::warn!(grant = %grant.name_any(), error = %crate::error::chain(error), "grant reconcile failed");
    if let Some(soon) = error.busy_retry() {
        return Action::requeue(soon);
    }
    if error.is_transient() {
        Action::requeue(
            ctx.backoff
                .next_delay(&ObjectRef::from_obj(grant.as_ref()).erase(), None),
        )
    } else {
        Action::await_change()
    }
}

fn key_of(grant: &DatabaseAccessGrant) -> GrantKey {
    ObjectRef::from_obj(grant).erase()
}

/// Wait for the target cache to have listed every target once: a pass deciding which target
/// declares a store must not conclude "none" from a cache still empty after a start.
async fn targets_listed(ctx: &Context) -> Result<()> {
    let mut synced = ctx.targets_synced.clone();
    synced
        .wait_for(|listed| *listed)
        .await
        .map(|_| ())
        .map_err(|_| Error::MissingObjectKey("a synced DatabaseTarget cache"))
}

/// Make sure the ledger knows every grant in the cache (after a start, each one's status
/// records what it holds until it has decided again), and forgets those gone.
pub(crate) fn seed_ledger(ctx: &Context) {
    // Once a second is enough: each pass seeds its own grant anyway, and a full pass over
    // thousands of grants on every pass was quadratic work.
    if !ctx.ledger.seed_due(SEED_EVERY) {
        return;
    }
    let grants = ctx.grants.state();
    let live: HashSet<GrantKey> = grants.iter().map(|g| key_of(g)).collect();
    for grant in &grants {
        let recorded = grant
            .status
            .as_ref()
            .map(|s| s.held.as_slice())
            .unwrap_or(&[]);
        ctx.ledger.held(&key_of(grant), recorded);
    }
    ctx.ledger.prune(&live);
}

/// Whether the target is Ready as of its current spec; `None` while the operator has not yet
/// checked this generation of it.
pub(crate) fn target_readiness(target: &DatabaseTarget) -> Option<bool> {
    let ready = target
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if target.metadata.generation.is_some()
        && ready.observed_generation != target.metadata.generation
    {
        return None;
    }
    Some(ready.status == "True")
}

/// Whether AccessGranted was True for the current generation (so a recorded holding needs no
/// new write after a restart).
fn granted_in_status(grant: &DatabaseAccessGrant, holding: &str) -> bool {
    let Some(status) = grant.status.as_ref() else {
        return false;
    };
    status.observed_generation == grant.metadata.generation
        && status
            .role_assignment_id
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(holding))
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "AccessGranted" && c.status == "True")
}

/// Where one pass got, for the report.
struct Pass {
    outcome: Outcome,
    blocked: Option<Step>,
    next: Next,
    /// When the token Secret needs the next pass (its refresh, or its own retry): access's
    /// backoff must not push a refresh past its time.
    token_wait: Option<Duration>,
}

/// One pass over a grant that exists (the controller calls it through `reconcile`).
pub async fn apply(grant: Arc<DatabaseAccessGrant>, ctx: &Context) -> Result<Action> {
    let namespace = grant
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = grant.name_any();
    let key = key_of(&grant);
    let old_status = grant.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let before = report::ready_of(&status.conditions);
    targets_listed(ctx).await?;
    seed_ledger(ctx);
    let held = ctx.ledger.held(&key, &old_status.held);
    status.held = held.iter().cloned().collect();

    let Some(pass) = evaluate(&grant, &key, &namespace, ctx, &held, &mut status).await? else {
        // The store is busy with another write of ours: nothing was decided; come back soon.
        return Ok(Action::requeue(busy_retry()));
    };

    let now = Time(Timestamp::now());
    status.observed_generation = grant.metadata.generation;
    write_conditions(
        &mut status.conditions,
        &pass.outcome,
        pass.blocked.as_ref(),
        grant.metadata.generation,
        &now,
    );
    if status != old_status {
        ctx.cluster.grant_status(&namespace, &name, &status).await?;
    }
    ctx.ledger
        .set_held(&key, status.held.iter().cloned().collect());
    report::event_on_transition(
        ctx.cluster.as_ref(),
        grant.object_ref(&()),
        before,
        &status.conditions,
    )
    .await;

    let failing = pass
        .blocked
        .iter()
        .chain(
            [
                &pass.outcome.identity,
                &pass.outcome.access,
                &pass.outcome.verified,
                &pass.outcome.token,
            ]
            .into_iter()
            .flatten(),
        )
        .find(|s| s.status != Status::True)
        .map(|s| s.reason);
    if let Some(reason) = failing {
        ctx.metrics.reconcile_failed(CONTROLLER, reason.as_str());
    }
    let token_wait = pass.token_wait;
    let capped = |delay: Duration, at_least: Option<Duration>| match token_wait {
        // Never sooner than Azure's Retry-After, though.
        Some(wait) => delay.min(wait.max(at_least.unwrap_or_default())),
        None => delay,
    };
    Ok(match pass.next {
        Next::AwaitChange => token_wait.map_or_else(Action::await_change, Action::requeue),
        Next::Backoff(at_least) => {
            Action::requeue(capped(ctx.backoff.next_delay(&key, at_least), at_least))
        }
        Next::Resync(sooner) => {
            ctx.backoff.reset(&key);
            let delay = sooner.map_or(ctx.resync_interval, |s| s.min(ctx.resync_interval));
            Action::requeue(capped(delay, None))
        }
        Next::Soon => Action::requeue(busy_retry()),
    })
}

/// Gather, decide and act for one pass. `None`: the store was busy and nothing was decided.
async fn evaluate(
    grant: &DatabaseAccessGrant,
    key: &GrantKey,
    namespace: &str,
    ctx: &Context,
    held: &BTreeSet<String>,
    status: &mut DatabaseAccessGrantStatus,
) -> Result<Option<Pass>> {
    // --- gather: the target and the namespace's labels ---
    let target = ctx.cluster.target(&grant.spec.target).await?;
    let labels = ctx
        .cluster
        .namespace_labels(namespace)
        .await?
        .unwrap_or_default();
    let live_target = target
        .as_ref()
        .filter(|t| t.metadata.deletion_timestamp.is_none());
    let backend: Option<Result<Arc<dyn Backend>, BackendError>> =
        live_target.map(|t| ctx.backends.for_target(&t.name_any(), &t.spec));
    let view = match (&target, live_target) {
        (None, _) => TargetView::Missing,
        (Some(_), None) => TargetView::Deleting,
        (Some(_), Some(t)) => TargetView::Present {
            spec: &t.spec,
            ready: target_readiness(t),
        },
    };
    let role_declared = match &backend {
        Some(Ok(backend)) => backend.holding_for(&access(grant, "")).map(|_| ()),
        Some(Err(error)) => Err(error.clone()),
        None => Ok(()),
    };

    // --- decide: the guard rails ---
    let mut pass = Pass {
        outcome: Outcome::default(),
        blocked: None,
        next: Next::Resync(None),
        token_wait: None,
    };
    let mut want: Option<(Holding, Arc<dyn Backend>)> = None;
    let mut identity = None;
    // The identity as the token Secret needs it: resolved, and what it was resolved from.
    let mut token_identity: Option<(ResolvedIdentity, IdentityKey)> = None;
    let backend_scope = match &backend {
        Some(Ok(backend)) => Some(backend.token_scope()),
        _ => None,
    };
    let identity_known = match decide::gate(&grant.spec, namespace, &labels, &view, role_declared) {
        Gate::Refused(step, next) => {
            pass.blocked = Some(step);
            pass.next = next;
            true
        }
        Gate::Paused(step, next) => {
            pass.blocked = Some(step);
            pass.next = next;
            // A target that is not Ready (ARM failing, say) stops access changes, not the
            // token: that needs only the identity.
            if let (Some(_), Some(scope)) = (&grant.spec.token_secret, &backend_scope)
                && let Ok((resolved, from)) =
                    identity::resolve(grant, namespace, ctx, scope, status).await?
            {
                pass.outcome.identity = Some(resolved_step(status, &resolved));
                token_identity = Some((resolved, from));
            }
            false
        }
        Gate::Open => {
            // --- gather: the identity, through the grant's own ServiceAccount, for the
            // audience the backend's data plane accepts ---
            let scope = backend_scope.clone().unwrap_or(TokenScope::CosmosDb);
            match identity::resolve(grant, namespace, ctx, &scope, status).await? {
                Ok((resolved, from)) => {
                    pass.outcome.identity = Some(resolved_step(status, &resolved));
                    token_identity = Some((resolved.clone(), from));
                    let Some(Ok(backend)) = backend else {
                        unreachable_gate();
                        return Ok(None);
                    };
                    let client_id = token_identity.as_ref().map(|(_, f)| f.client_id.as_str());
                    match backend
                        .holding_for(&access(grant, &resolved.principal_id).for_client(client_id))
                    {
                        Ok(holding) => want = Some((holding, backend)),
                        Err(error) => {
                            pass.blocked = Some(Step::failed(error.reason, error.message));
                            pass.next = Next::AwaitChange;
                        }
                    }
                    identity = Some(resolved);
                    true
                }
                Err((step, next)) => {
                    let gone = decide::identity_gone(step.reason);
                    pass.outcome.identity = Some(step);
                    pass.next = next;
                    gone
                }
            }
        }
    };

    // --- decide: what the grant keeps, hands on and releases ---
    let mut settlement = ctx.ledger.decide(
        key,
        held,
        want.as_ref().map(|(h, _)| h.clone()),
        identity_known,
    );
    if matches!(view, TargetView::Deleting) && grant.spec.deletion_policy == DeletionPolicy::Retain
    {
        // The target goes, and with `Retain` what it gave stays: handed over, no longer ours.
        for id in std::mem::take(&mut settlement.release) {
            report::audit(
                ctx.cluster.as_ref(),
                grant.object_ref(&()),
                report::AccessChange::Retained,
                &report::holding_from_id(&id),
                Some(&grant.spec.role),
            )
            .await;
            settlement.handed_on.push(id);
        }
    }

    // --- act ---
    let done = act::carry_out(
        grant,
        key,
        ctx,
        held,
        want,
        identity.as_ref(),
        &settlement,
        &mut pass,
        status,
    )
    .await?;
    token::project(
        grant,
        namespace,
        ctx,
        token_identity.as_ref(),
        backend_scope.as_ref(),
        &mut pass,
        status,
    )
    .await;
    Ok(done.then_some(pass))
}

fn resolved_step(status: &DatabaseAccessGrantStatus, resolved: &ResolvedIdentity) -> Step {
    Step::ok(
        Reason::Resolved,
        format!(
            "managed identity {} has principal id {}",
            status.client_id.as_deref().unwrap_or(""),
            resolved.principal_id
        ),
    )
}

/// The gate only opens on a target whose backend was built; kept as a log line rather than a
/// panic should that ever change.
fn unreachable_gate() {
    tracing::error!("the guard rails opened without a backend; skipping this pass");
}

/// The access a grant asks for, for principal `principal_id`.
fn access(grant: &DatabaseAccessGrant, principal_id: &str) -> Access {
    Access {
        principal_id: principal_id.to_string(),
        role: grant.spec.role.clone(),
        database: grant.spec.database.clone(),
        container: grant.spec.container.clone(),
        client_id: None,
    }
}

/// One pass over a grant being deleted (the controller calls it through `reconcile`).
pub async fn cleanup(grant: Arc<DatabaseAccessGrant>, ctx: &Context) -> Result<Action> {
    let key = key_of(&grant);
    token::remove_on_deletion(&grant, ctx).await;
    targets_listed(ctx).await?;
    seed_ledger(ctx);
    let recorded = grant
        .status
        .as_ref()
        .map(|s| s.held.as_slice())
        .unwrap_or(&[]);
    let held = ctx.ledger.held(&key, recorded);
    if grant.spec.deletion_policy == DeletionPolicy::Retain {
        for id in &held {
            report::audit(
                ctx.cluster.as_ref(),
                grant.object_ref(&()),
                report::AccessChange::Retained,
                &report::holding_from_id(id),
                Some(&grant.spec.role),
            )
            .await;
        }
        ctx.ledger.forget(&key);
        ctx.backoff.reset(&key);
        return Ok(Action::await_change());
    }
    let settlement = ctx.ledger.decide(&key, &held, None, true);
    let mut remaining: BTreeSet<String> = held
        .iter()
        .filter(|id| !settlement.handed_on.contains(id))
        .cloned()
        .collect();
    let mut failures = Vec::new();
    for id in &settlement.release {
        match act::revoke(&grant, ctx, id).await {
            Ok(()) => {
                remaining.remove(id);
            }
            Err(error) => failures.push(error),
        }
    }
    if failures.is_empty() && settlement.pending.is_empty() {
        ctx.ledger.forget(&key);
        ctx.backoff.reset(&key);
        return Ok(Action::await_change());
    }
    ctx.ledger.set_held(&key, remaining.clone());
    let error = failures.into_iter().next().unwrap_or_else(|| {
        let mut waiting = BackendError::new(
            Reason::CleanupFailed,
            format!(
                "waiting for other grants sharing {} to settle",
                settlement.pending.join(", ")
            ),
        );
        waiting.retry_after = Some(BUSY_RETRY);
        waiting
    });
    let message = format!("revoking access failed; the finalizer stays until it succeeds: {error}");
    let mut status = grant.status.clone().unwrap_or_default();
    status.held = remaining.into_iter().collect();
    report::cleanup_failed(
        ctx.cluster.as_ref(),
        grant.object_ref(&()),
        &mut status.conditions,
        grant.metadata.generation,
        &message,
    )
    .await;
    let namespace = grant.namespace().unwrap_or_default();
    ctx.cluster
        .grant_status(&namespace, &grant.name_any(), &status)
        .await?;
    Err(Error::Cleanup(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_with_ready(generation: i64, observed: i64, status: &str) -> DatabaseTarget {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "dbgrant.io/v1alpha1",
            "kind": "DatabaseTarget",
            "metadata": {"name": "t", "generation": generation},
            "spec": {"cosmos": {"accountResourceId": "/subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/rg/providers/Microsoft.DocumentDB/databaseAccounts/a"}},
            "status": {"conditions": [{
                "type": "Ready", "status": status, "reason": "Ready", "message": "",
                "lastTransitionTime": "2026-11-25T00:00:00Z", "observedGeneration": observed,
            }]},
        }))
        .unwrap()
    }

    #[test]
    fn a_target_is_ready_only_as_of_its_current_generation() {
        assert_eq!(
            target_readiness(&target_with_ready(2, 2, "True")),
            Some(true)
        );
        assert_eq!(
            target_readiness(&target_with_ready(2, 2, "False")),
            Some(false)
        );
        // Checked for an older spec: not known yet.
        assert_eq!(target_readiness(&target_with_ready(3, 2, "True")), None);
        let mut fresh = target_with_ready(1, 1, "True");
        fresh.status = None;
        assert_eq!(target_readiness(&fresh), None);
    }
}
