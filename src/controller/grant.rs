//! Reconciler of `DatabaseAccessGrant`: gather (target, namespace, ServiceAccount), check the
//! guard rails, resolve the identity through a token minted for the grant's own
//! ServiceAccount, ensure the role assignment, verify access on the data plane, keep the token
//! Secret fresh, and report every step as conditions and events. Cleanup revokes the
//! assignment unless it is retained or still used by another grant.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::grant_status::{Outcome, Step, write_conditions};
use super::identity::{claimed_identity, mint_exchange_token};
use super::identity_cache::IdentityKey;
use super::{Context, policy, report};
use crate::api::{
    DatabaseAccessGrant, DatabaseAccessGrantStatus, DatabaseTarget, DeletionPolicy, Reason, Status,
};
use crate::backend::cosmos::{self, RoleAssignment, Scope};
use crate::backend::{BackendError, ResolvedIdentity};
use crate::error::{Error, Result};

const CONTROLLER: &str = "grant";
/// Finalizer that guards revocation.
pub const FINALIZER: &str = "dbgrant.io/revoke-access";

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
    if error.is_transient() {
        Action::requeue(
            ctx.backoff
                .next_delay(&ObjectRef::from_obj(grant.as_ref()).erase(), None),
        )
    } else {
        Action::await_change()
    }
}

/// When to look at the grant again.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Nothing will change until the user (or a watched object) does.
    AwaitChange,
    /// A transient failure: back off, at least as long as the server asked.
    Backoff(Option<Duration>),
    /// All good: the regular resync (or sooner, to refresh the token Secret).
    Resync(Option<Duration>),
    /// Another write on the same account is in flight: look again shortly.
    Soon,
}

/// What one pass found: the steps for the conditions and the status fields to record.
struct Pass {
    outcome: Outcome,
    blocked: Option<Step>,
    next: Next,
}

impl Pass {
    fn blocked(reason: Reason, message: impl Into<String>, next: Next) -> Self {
        Self {
            outcome: Outcome::default(),
            blocked: Some(Step::failed(reason, message)),
            next,
        }
    }
}

/// How soon a grant whose identity is set up wrongly in Azure looks again: the fix (a
/// federated credential, a corrected identity) happens where no watch can see it.
const AZURE_SETUP_RECHECK: Duration = Duration::from_secs(30);

fn next_for(error: &BackendError) -> Next {
    if error.reason.fixed_in_azure() {
        // Slowly, with the usual doubling above the floor (one token exchange per look).
        Next::Backoff(Some(
            error
                .retry_after
                .unwrap_or_default()
                .max(AZURE_SETUP_RECHECK),
        ))
    } else if error.reason.needs_user_action() {
        Next::AwaitChange
    } else {
        Next::Backoff(error.retry_after)
    }
}

async fn apply(grant: Arc<DatabaseAccessGrant>, ctx: &Context) -> Result<Action> {
    let namespace = grant
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = grant.name_any();
    let key = ObjectRef::from_obj(grant.as_ref()).erase();
    let old_status = grant.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    if let Some(assignment) = ctx.recorded.get(&key) {
        status.role_assignment_id = assignment;
    }
    let before = report::ready_of(&status.conditions);

    let pass = evaluate(&grant, &key, &namespace, ctx, &mut status).await?;
    if matches!(pass.next, Next::Soon) {
        // Nothing was decided; leave the status alone and come back when the account is free.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }

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
        let api = Api::<DatabaseAccessGrant>::namespaced(ctx.client.clone(), &namespace);
        report::apply_status(&api, &name, &status).await?;
    }
    let granted_for = pass
        .outcome
        .access
        .as_ref()
        .filter(|step| step.status == Status::True)
        .and(grant.metadata.generation);
    ctx.recorded
        .set(&key, status.role_assignment_id.clone(), granted_for);
    report::event_on_transition(
        &ctx.recorder,
        grant.as_ref(),
        before,
        &status.conditions,
        "Reconcile",
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
    Ok(match pass.next {
        Next::AwaitChange => Action::await_change(),
        Next::Backoff(at_least) => Action::requeue(ctx.backoff.next_delay(&key, at_least)),
        Next::Resync(sooner) => {
            ctx.backoff.reset(&key);
            Action::requeue(sooner.map_or(ctx.resync_interval, |s| s.min(ctx.resync_interval)))
        }
        Next::Soon => Action::requeue(Duration::from_secs(2)),
    })
}

/// Run the steps in order, stopping at the first that cannot succeed now.
async fn evaluate(
    grant: &DatabaseAccessGrant,
    key: &ObjectRef<DynamicObject>,
    namespace: &str,
    ctx: &Context,
    status: &mut DatabaseAccessGrantStatus,
) -> Result<Pass> {
    // --- the target and its guard rails ---
    // Read the target live, not from the target controller's cache: a grant is woken by its
    // own watch on targets, which can run ahead of that cache, and a stale "not Ready" or
    // stale guard rail would leave the grant waiting for a change that already happened.
    let Some(target) = Api::<DatabaseTarget>::all(ctx.client.clone())
        .get_opt(&grant.spec.target)
        .await?
    else {
        return Ok(Pass::blocked(
            Reason::TargetNotFound,
            format!("DatabaseTarget {} does not exist", grant.spec.target),
            Next::AwaitChange,
        ));
    };
    let Some(cosmos_target) = target.spec.cosmos.clone() else {
        return Ok(Pass::blocked(
            Reason::InvalidSpec,
            format!(
                "DatabaseTarget {} has no supported backend",
                grant.spec.target
            ),
            Next::AwaitChange,
        ));
    };
    let namespaces = Api::<Namespace>::all(ctx.client.clone());
    let labels = namespaces
        .get_metadata_opt(namespace)
        .await?
        .map(|ns| ns.metadata.labels.unwrap_or_default())
        .unwrap_or_default();
    if let Err(denial) = policy::check(&target.spec, namespace, &labels, &grant.spec.role) {
        // Access granted earlier must not outlive the policy that allowed it.
        if let Some(existing) = status.role_assignment_id.clone() {
            match revoke_unless_shared(grant, &existing, ctx).await {
                Ok(()) => {
                    clear_access(status);
                    // At once, not when the status is written: a drift check reading the
                    // (lagging) cache must not restore what was just revoked.
                    ctx.recorded.set(key, None, None);
                }
                Err(error) => {
                    return Ok(Pass::blocked(
                        Reason::PolicyDenied,
                        format!("{denial}; revoking the access granted earlier failed: {error}"),
                        next_for(&error),
                    ));
                }
            }
        }
        return Ok(Pass::blocked(
            Reason::PolicyDenied,
            denial.to_string(),
            Next::AwaitChange,
        ));
    }
    match target_readiness(&target) {
        Some(true) => {}
        Some(false) => {
            return Ok(Pass::blocked(
                Reason::TargetNotReady,
                format!(
                    "DatabaseTarget {} is not Ready; see its conditions",
                    grant.spec.target
                ),
                Next::AwaitChange,
            ));
        }
        // Not a failure (no Warning event on a fresh install): the target's own check has not
        // finished, and its status change will bring the grant back here.
        None => {
            return Ok(Pass {
                outcome: Outcome::default(),
                blocked: Some(Step {
                    status: Status::Unknown,
                    reason: Reason::TargetNotReady,
                    message: format!(
                        "waiting for DatabaseTarget {} to be checked",
                        grant.spec.target
                    ),
                }),
                next: Next::AwaitChange,
            });
        }
    }
    let Some(role_guid) = cosmos::role_definition_guid(&cosmos_target, &grant.spec.role) else {
        return Ok(Pass::blocked(
            Reason::InvalidSpec,
            format!(
                "role {} is not declared by DatabaseTarget {}",
                grant.spec.role, grant.spec.target
            ),
            Next::AwaitChange,
        ));
    };

    // --- identity: a token minted for this grant's own ServiceAccount, exchanged at Entra ---
    let mut outcome = Outcome::default();
    let identity = match resolve_identity(grant, namespace, ctx, status).await? {
        Ok(identity) => identity,
        Err((step, next)) => {
            outcome.identity = Some(step);
            return Ok(Pass {
                outcome,
                blocked: None,
                next,
            });
        }
    };
    outcome.identity = Some(Step::ok(
        Reason::Resolved,
        format!(
            "managed identity {} has principal id {}",
            status.client_id.as_deref().unwrap_or(""),
            identity.principal_id
        ),
    ));

    // --- the role assignment ---
    let account_id = cosmos_target.account_resource_id.as_str();
    let scope = Scope::of(&grant.spec);
    let scope_path = scope.resource_path(account_id);
    let role_definition_id = cosmos::role_definition_id(account_id, &role_guid);
    let assignment = RoleAssignment {
        guid: cosmos::role_assignment_guid(
            &identity.principal_id,
            &role_definition_id,
            &scope_path,
        ),
        role_definition_id,
        scope: scope_path.clone(),
        principal_id: identity.principal_id.clone(),
    };
    let desired_id = cosmos::role_assignment_id(account_id, &assignment.guid);
    let previous = status
        .role_assignment_id
        .clone()
        .filter(|id| !id.eq_ignore_ascii_case(&desired_id));
    let recorded = (status
        .role_assignment_id
        .as_deref()
        .is_some_and(|id| id.eq_ignore_ascii_case(&desired_id))
        && status.observed_generation == grant.metadata.generation
        && granted_before(status))
        || ctx
            .recorded
            .granted(key, &desired_id, grant.metadata.generation);
    if !recorded {
        let Some(guard) = ctx.account_locks.try_lock(account_id) else {
            return Ok(Pass {
                outcome,
                blocked: None,
                next: Next::Soon,
            });
        };
        let put = ctx
            .cosmos
            .put_role_assignment(account_id, &assignment)
            .await;
        // Released before revoking the old assignment, which takes the same lock.
        drop(guard);
        if let Err(error) = put {
            outcome.access = Some(Step::failed(error.reason, error.message.clone()));
            return Ok(Pass {
                outcome,
                blocked: None,
                next: next_for(&error),
            });
        }
        if let Some(old) = &previous {
            // The new assignment is in place; only now does the old one go.
            if let Err(error) = revoke_unless_shared(grant, old, ctx).await {
                outcome.access = Some(Step::failed(
                    Reason::Replacing,
                    format!(
                        "created assignment {desired_id}; removing the previous assignment {old} failed, retrying: {error}"
                    ),
                ));
                return Ok(Pass {
                    outcome,
                    blocked: None,
                    next: Next::Backoff(error.retry_after),
                });
            }
            // Recorded at once, so a drift check reading the cache does not restore the old.
            ctx.recorded
                .set(key, Some(desired_id.clone()), grant.metadata.generation);
        }
    }
    status.role_assignment_id = Some(desired_id.clone());
    status.scope = Some(scope_path);
    outcome.access = Some(Step::ok(
        Reason::Granted,
        match &previous {
            Some(old) => format!(
                "role {} granted by assignment {desired_id}, which replaced {old}",
                grant.spec.role
            ),
            None => format!(
                "role {} granted by assignment {desired_id}",
                grant.spec.role
            ),
        },
    ));

    // --- verification on the data plane ---
    if cosmos_target.verify_access {
        let endpoint = target
            .status
            .as_ref()
            .and_then(|s| s.endpoint.clone())
            .or_else(|| cosmos_target.endpoint.clone());
        let Some(endpoint) = endpoint else {
            outcome.verified = Some(Step::failed(
                Reason::TargetNotReady,
                "the target reports no data-plane endpoint yet",
            ));
            return Ok(Pass {
                outcome,
                blocked: None,
                next: Next::AwaitChange,
            });
        };
        match ctx
            .cosmos
            .probe(&endpoint, &scope, &identity.access_token)
            .await
        {
            Ok(true) => {
                outcome.verified = Some(Step::ok(
                    Reason::Verified,
                    format!("read {} with the workload's identity", probe_path(&scope)),
                ));
            }
            Ok(false) => {
                outcome.verified = Some(Step {
                    status: Status::Unknown,
                    reason: Reason::PropagationPending,
                    message: format!(
                        "the data plane still refuses {} to the workload's identity; Cosmos DB RBAC can take a few minutes to propagate",
                        probe_path(&scope)
                    ),
                });
                return Ok(Pass {
                    outcome,
                    blocked: None,
                    next: Next::Backoff(None),
                });
            }
            Err(error) => {
                outcome.verified = Some(Step::failed(error.reason, error.message.clone()));
                return Ok(Pass {
                    outcome,
                    blocked: None,
                    next: next_for(&error),
                });
            }
        }
    } else {
        outcome.verified = Some(Step::ok(
            Reason::VerificationDisabled,
            "the target turned the access probe off",
        ));
    }

    // --- the token Secret ---
    let refresh = match &grant.spec.token_secret {
        None => {
            status.token_expires_at = None;
            outcome.token = Some(Step::ok(Reason::NotRequested, "no token Secret requested"));
            None
        }
        Some(secret) => {
            crate::token::write_token_secret(&ctx.client, grant, &secret.name, &identity).await?;
            status.token_expires_at = Some(Time(identity.expires_at));
            outcome.token = Some(Step::ok(
                Reason::Ready,
                format!(
                    "Secret {} holds a token valid until {}",
                    secret.name, identity.expires_at
                ),
            ));
            Some(crate::token::refresh_after(
                identity.expires_at,
                Timestamp::now(),
            ))
        }
    };
    Ok(Pass {
        outcome,
        blocked: None,
        next: Next::Resync(refresh),
    })
}

fn probe_path(scope: &Scope) -> String {
    match scope {
        Scope::Account => "the account".to_string(),
        _ => scope.data_plane_path(),
    }
}

/// Whether AccessGranted was already True (so a recorded assignment needs no new PUT).
fn granted_before(status: &DatabaseAccessGrantStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "AccessGranted" && c.status == "True")
}

/// Whether the target is Ready as of its current spec; `None` while the operator has not yet
/// checked this generation of it.
fn target_readiness(target: &DatabaseTarget) -> Option<bool> {
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

fn clear_access(status: &mut DatabaseAccessGrantStatus) {
    status.role_assignment_id = None;
    status.scope = None;
    status.token_expires_at = None;
}

/// Find the ServiceAccount, read the identity it claims, mint a token for it and exchange it.
/// The inner `Err` is a reported step failure; the outer one an unexpected API failure.
async fn resolve_identity(
    grant: &DatabaseAccessGrant,
    namespace: &str,
    ctx: &Context,
    status: &mut DatabaseAccessGrantStatus,
) -> Result<std::result::Result<ResolvedIdentity, (Step, Next)>> {
    let sa_name = &grant.spec.service_account_name;
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace);
    let Some(account) = accounts.get_metadata_opt(sa_name).await? else {
        return Ok(Err((
            Step::failed(
                Reason::ServiceAccountNotFound,
                format!("ServiceAccount {sa_name} does not exist in namespace {namespace}"),
            ),
            Next::AwaitChange,
        )));
    };
    let annotations = account.metadata.annotations.unwrap_or_default();
    let claimed = match claimed_identity(sa_name, &annotations, ctx.default_tenant.as_deref()) {
        Ok(claimed) => claimed,
        Err(error) => {
            return Ok(Err((
                Step::failed(Reason::IdentityAnnotationMissing, error.to_string()),
                Next::AwaitChange,
            )));
        }
    };
    status.client_id = Some(claimed.client_id.clone());
    status.tenant_id = Some(claimed.tenant_id.clone());
    let key = IdentityKey {
        namespace: namespace.to_string(),
        service_account: sa_name.clone(),
        uid: account.metadata.uid.clone(),
        client_id: claimed.client_id.clone(),
        tenant_id: claimed.tenant_id.clone(),
    };
    if let Some(identity) = ctx.identities.get(&key, Timestamp::now()) {
        status.principal_id = Some(identity.principal_id.clone());
        status.tenant_id = Some(identity.tenant_id.clone());
        return Ok(Ok(identity));
    }
    let token = match mint_exchange_token(&ctx.client, namespace, sa_name).await {
        Ok(token) => token,
        Err(kube::Error::Api(s)) if s.is_not_found() => {
            return Ok(Err((
                Step::failed(
                    Reason::ServiceAccountNotFound,
                    format!("ServiceAccount {sa_name} does not exist in namespace {namespace}"),
                ),
                Next::AwaitChange,
            )));
        }
        Err(error) => return Err(Error::Kube(error)),
    };
    match ctx
        .cosmos
        .resolve_identity(&claimed.tenant_id, &claimed.client_id, &token)
        .await
    {
        Ok(identity) => {
            status.principal_id = Some(identity.principal_id.clone());
            status.tenant_id = Some(identity.tenant_id.clone());
            ctx.identities
                .insert(key, identity.clone(), Timestamp::now());
            Ok(Ok(identity))
        }
        Err(error) => {
            let next = next_for(&error);
            Ok(Err((Step::failed(error.reason, error.message), next)))
        }
    }
}

/// Delete the assignment `assignment_id` unless another live grant records the same one.
async fn revoke_unless_shared(
    grant: &DatabaseAccessGrant,
    assignment_id: &str,
    ctx: &Context,
) -> std::result::Result<(), BackendError> {
    let me = ObjectRef::from_obj(grant);
    let shared = ctx.grants.state().iter().any(|other| {
        ObjectRef::from_obj(other.as_ref()) != me
            && other.metadata.deletion_timestamp.is_none()
            && other
                .status
                .as_ref()
                .and_then(|s| s.role_assignment_id.as_deref())
                .is_some_and(|id| id.eq_ignore_ascii_case(assignment_id))
    });
    if shared {
        tracing::info!(
            assignment = assignment_id,
            "assignment still used by another grant; kept"
        );
        return Ok(());
    }
    let Some((account_id, guid)) = assignment_id.rsplit_once("/sqlRoleAssignments/") else {
        return Err(BackendError::new(
            Reason::InvalidSpec,
            format!("recorded assignment id {assignment_id} is malformed"),
        ));
    };
    let _guard = ctx.account_locks.lock_or_busy(account_id)?;
    ctx.cosmos.delete_role_assignment(account_id, guid).await
}

async fn cleanup(grant: Arc<DatabaseAccessGrant>, ctx: &Context) -> Result<Action> {
    let key = ObjectRef::from_obj(grant.as_ref()).erase();
    let recorded = ctx.recorded.get(&key).unwrap_or_else(|| {
        grant
            .status
            .as_ref()
            .and_then(|s| s.role_assignment_id.clone())
    });
    let result = match (grant.spec.deletion_policy, recorded) {
        (DeletionPolicy::Retain, Some(id)) => {
            tracing::info!(grant = %grant.name_any(), assignment = %id, "deletionPolicy Retain: assignment kept");
            Ok(())
        }
        (_, None) => Ok(()),
        (DeletionPolicy::Delete, Some(id)) => revoke_unless_shared(&grant, &id, ctx).await,
    };
    match result {
        Ok(()) => {
            ctx.backoff.reset(&key);
            ctx.recorded.forget(&key);
            Ok(Action::await_change())
        }
        Err(error) => {
            let message =
                format!("revoking access failed; the finalizer stays until it succeeds: {error}");
            let namespace = grant.namespace().unwrap_or_default();
            let api = Api::<DatabaseAccessGrant>::namespaced(ctx.client.clone(), &namespace);
            let status = grant.status.clone().unwrap_or_default();
            report::cleanup_failed(
                &ctx.recorder,
                &api,
                grant.as_ref(),
                status,
                |s| &mut s.conditions,
                &message,
            )
            .await?;
            Err(Error::Cleanup(error))
        }
    }
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

    #[test]
    fn failures_fixed_in_azure_are_looked_at_again_slowly_others_wait_or_back_off() {
        let not_federated = BackendError::new(Reason::IdentityNotFederated, "AADSTS70021");
        assert_eq!(
            next_for(&not_federated),
            Next::Backoff(Some(AZURE_SETUP_RECHECK))
        );
        let unknown = BackendError::new(Reason::UnknownClientId, "AADSTS700016");
        assert_eq!(next_for(&unknown), Next::Backoff(Some(AZURE_SETUP_RECHECK)));
        // A spec problem waits for the spec (or the watched object) to change.
        let missing = BackendError::new(Reason::ServiceAccountNotFound, "no such ServiceAccount");
        assert_eq!(next_for(&missing), Next::AwaitChange);
        // A transient one backs off, honouring Retry-After.
        let mut throttled = BackendError::new(Reason::AzureThrottled, "429");
        throttled.retry_after = Some(Duration::from_secs(7));
        assert_eq!(
            next_for(&throttled),
            Next::Backoff(Some(Duration::from_secs(7)))
        );
    }
}
