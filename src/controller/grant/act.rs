//! Carrying out a grant's decisions: every write to a database's access happens here, each
//! recorded in the grant's status before it is made and audited once made. The token Secret
//! is not: it lives in `token.rs`, independent of access.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::{Resource, ResourceExt};

use super::super::Context;
use super::super::decide::{Next, Settlement, next_for, sooner};
use super::super::grant_status::Step;
use super::super::ledger::GrantKey;
use super::super::report::{self, AccessChange};
use super::{Pass, granted_in_status};
use crate::api::{DatabaseAccessGrant, DatabaseAccessGrantStatus, Reason, Status};
use crate::backend::{Backend, BackendError, Holding, ResolvedIdentity};
use crate::error::Result;

/// How long one grant may wait for a store busy with another write of ours (about one
/// long-running operation; longer, and it looks again instead).
const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Write what the grant holds before a write that may create more, so a crash, a timeout or a
/// later failure in the pass can never leave access in a database that no record names. Only
/// `held` changes in this write: the conditions stay as they were until the pass reports.
async fn record(
    grant: &DatabaseAccessGrant,
    key: &GrantKey,
    ctx: &Context,
    status: &mut DatabaseAccessGrantStatus,
    held: BTreeSet<String>,
) -> Result<()> {
    let list: Vec<String> = held.iter().cloned().collect();
    let mut recorded = grant.status.clone().unwrap_or_default();
    if list != recorded.held {
        recorded.held = list.clone();
        let namespace = grant.namespace().unwrap_or_default();
        ctx.cluster
            .grant_status(&namespace, &grant.name_any(), &recorded)
            .await?;
        ctx.ledger.set_held(key, held);
    }
    status.held = list;
    Ok(())
}

/// Grant, release and verify as decided; fill `pass` and `status` in. `false` when the store
/// was busy before anything was written.
#[allow(clippy::too_many_arguments)]
pub(super) async fn carry_out(
    grant: &DatabaseAccessGrant,
    key: &GrantKey,
    ctx: &Context,
    held: &BTreeSet<String>,
    want: Option<(Holding, Arc<dyn Backend>)>,
    identity: Option<&ResolvedIdentity>,
    settlement: &Settlement,
    pass: &mut Pass,
    status: &mut DatabaseAccessGrantStatus,
) -> Result<bool> {
    let mut holding_now: BTreeSet<String> = held
        .iter()
        .filter(|id| !settlement.handed_on.contains(id))
        .cloned()
        .collect();
    let generation = grant.metadata.generation;

    // --- the access asked for ---
    let mut granted = None;
    if let Some((holding, backend)) = &want {
        let known = ctx.ledger.granted(key, &holding.id, generation)
            || (held.contains(&holding.id) && granted_in_status(grant, &holding.id));
        if known {
            granted = Some(Ok(()));
        } else {
            let Some(guard) = ctx
                .account_locks
                .acquire(&backend.store(), STORE_WAIT)
                .await
            else {
                return Ok(false);
            };
            holding_now.insert(holding.id.clone());
            record(grant, key, ctx, status, holding_now.clone()).await?;
            let result = backend.grant(holding).await;
            drop(guard);
            if result.is_ok() {
                report::audit(
                    ctx.cluster.as_ref(),
                    grant.object_ref(&()),
                    AccessChange::Granted,
                    holding,
                    Some(&grant.spec.role),
                )
                .await;
            }
            granted = Some(result);
        }
        holding_now.insert(holding.id.clone());
    }
    match (&want, &granted) {
        (Some((holding, backend)), Some(Ok(()))) => {
            ctx.ledger
                .set_granted(key, Some((holding.id.clone(), generation)));
            status.role_assignment_id = Some(holding.id.clone());
            status.scope = Some(holding.scope.clone());
            pass.outcome.access = Some(Step::ok(
                Reason::Granted,
                format!(
                    "role {} granted: {}",
                    grant.spec.role,
                    backend.describe_holding(holding)
                ),
            ));
        }
        (Some(_), Some(Err(error))) => {
            pass.outcome.access = Some(Step::failed(error.reason, error.message.clone()));
            pass.next = next_for(error);
        }
        _ => {
            ctx.ledger.set_granted(key, None);
            status.role_assignment_id = None;
            status.scope = None;
            status.token_expires_at = None;
        }
    }

    // --- what nobody asks for any more (after the new access is in place: no gap) ---
    let put_failed = matches!(granted, Some(Err(_)));
    if !put_failed {
        for id in &settlement.release {
            match revoke(grant, ctx, id).await {
                Ok(()) => {
                    holding_now.remove(id);
                }
                Err(error) => {
                    let message = format!("removing access {id} failed, retrying: {error}");
                    match (&pass.blocked, &want) {
                        (Some(step), _) => {
                            pass.blocked = Some(Step::failed(
                                step.reason,
                                format!("{}; {message}", step.message),
                            ));
                        }
                        (None, Some(_)) => {
                            pass.outcome.access = Some(Step::failed(Reason::Replacing, message));
                        }
                        (None, None) => {
                            if let Some(step) = pass.outcome.identity.as_mut() {
                                step.message = format!("{}; {message}", step.message);
                            }
                        }
                    }
                    pass.next = sooner(pass.next.clone(), next_for(&error));
                }
            }
        }
    }
    if !settlement.pending.is_empty() {
        pass.next = sooner(pass.next.clone(), Next::Backoff(None));
    }
    status.held = holding_now.iter().cloned().collect();
    ctx.ledger.set_held(key, holding_now);

    // --- verification and the token, once the access is in place ---
    let (Some((_, backend)), Some(Ok(())), Some(identity)) = (&want, &granted, identity) else {
        return Ok(true);
    };
    if pass
        .outcome
        .access
        .as_ref()
        .is_some_and(|s| s.status != Status::True)
    {
        return Ok(true);
    }
    // The token Secret is kept apart from access and its probe (`token.rs`).
    verify(grant, ctx, backend.as_ref(), identity, pass).await;
    Ok(true)
}

/// Probe the data plane with the workload's own token.
async fn verify(
    grant: &DatabaseAccessGrant,
    ctx: &Context,
    backend: &dyn Backend,
    identity: &ResolvedIdentity,
    pass: &mut Pass,
) {
    if !backend.verifies_access() {
        pass.outcome.verified = Some(Step::ok(
            Reason::VerificationDisabled,
            "the target turned the access probe off",
        ));
        return;
    }
    let target = ctx
        .targets
        .state()
        .into_iter()
        .find(|t| t.name_any() == grant.spec.target);
    let endpoint = target.and_then(|t| t.status.as_ref().and_then(|s| s.endpoint.clone()));
    let Some(endpoint) = endpoint else {
        pass.outcome.verified = Some(Step::failed(
            Reason::TargetNotReady,
            "the target reports no data-plane endpoint yet",
        ));
        pass.next = Next::AwaitChange;
        return;
    };
    let access = super::access(grant, &identity.principal_id);
    let path = backend.describe_scope(&access);
    match backend
        .probe(&endpoint, &access, &identity.access_token)
        .await
    {
        Ok(true) => {
            pass.outcome.verified = Some(Step::ok(
                Reason::Verified,
                format!("read {path} with the workload's identity"),
            ));
        }
        Ok(false) => {
            pass.outcome.verified = Some(Step {
                status: Status::Unknown,
                reason: Reason::PropagationPending,
                message: format!(
                    "the data plane still refuses {path} to the workload's identity; RBAC can take a few minutes to propagate"
                ),
            });
            pass.next = Next::Backoff(None);
        }
        Err(error) => {
            pass.outcome.verified = Some(Step::failed(error.reason, error.message.clone()));
            pass.next = next_for(&error);
        }
    }
}

/// Revoke one recorded holding through the target that declares its store, and audit it.
/// A holding on a store no target declares is not acted on (dbgrant never works outside the
/// stores its targets declare); its record is dropped with a warning.
pub(super) async fn revoke(
    grant: &DatabaseAccessGrant,
    ctx: &Context,
    id: &str,
) -> Result<(), BackendError> {
    let Some(backend) = ctx.backend_for_holding(id) else {
        tracing::warn!(grant = %grant.name_any(), holding = id, "no DatabaseTarget declares the store of this access any more; record dropped");
        return Ok(());
    };
    let _guard = ctx
        .account_locks
        .lock_or_busy(&backend.store(), STORE_WAIT)
        .await?;
    if backend.revoke(id).await? {
        report::audit(
            ctx.cluster.as_ref(),
            grant.object_ref(&()),
            AccessChange::Revoked,
            &report::holding_from_id(id),
            None,
        )
        .await;
    }
    Ok(())
}
