//! Reconciler of `DatabaseTarget`: checks the account exists and the operator may manage it,
//! keeps the target's custom role definitions in place, counts the grants using it, and
//! repairs drift: one list of the account's role assignments per resync (never one call per
//! grant), restoring any assignment a Ready grant relies on that went missing out of band.
//! A finalizer deletes the target's custom role definitions with it, each once no assignment
//! uses it any more (Cosmos DB allows 100 per account; leaked ones would use that up).

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::{Context, report};
use crate::api::{
    ConditionType, CosmosTarget, DatabaseAccessGrant, DatabaseTarget, Reason, Status, set_condition,
};
use crate::backend::BackendError;
use crate::backend::cosmos::{self, RoleAssignment, RoleDefinition};
use crate::error::{Error, Result};

const CONTROLLER: &str = "target";

/// Finalizer that deletes the target's custom role definitions with it.
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

async fn apply(target: Arc<DatabaseTarget>, ctx: &Context) -> Result<Action> {
    let name = target.name_any();
    let key = ObjectRef::from_obj(target.as_ref()).erase();
    let old_status = target.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let before = report::ready_of(&status.conditions);

    let using: Vec<Arc<DatabaseAccessGrant>> = ctx
        .grants
        .state()
        .into_iter()
        .filter(|g| g.spec.target == name)
        .collect();
    status.grant_count = Some(i32::try_from(using.len()).unwrap_or(i32::MAX));
    status.backend = target.spec.backend_kind().map(str::to_string);

    let outcome = match &target.spec.cosmos {
        None => Err(BackendError::new(
            Reason::InvalidSpec,
            "no supported backend block is set",
        )),
        Some(cosmos_target) => {
            status.account = Some(cosmos_target.account_name().to_string());
            check_cosmos(&name, cosmos_target, &using, ctx)
                .await
                .map(|endpoint| {
                    status.endpoint = Some(endpoint);
                })
        }
    };

    let (ready, reason, message, action) = match &outcome {
        Ok(()) => {
            ctx.backoff.reset(&key);
            (
                Status::True,
                Reason::Ready,
                format!(
                    "account reachable and manageable; used by {} grant(s)",
                    using.len()
                ),
                Action::requeue(ctx.resync_interval),
            )
        }
        Err(error) => {
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
        let api = Api::<DatabaseTarget>::all(ctx.client.clone());
        report::apply_status(&api, &name, &status).await?;
    }
    report::event_on_transition(
        &ctx.recorder,
        target.as_ref(),
        before,
        &status.conditions,
        "Check",
    )
    .await;
    Ok(action)
}

async fn cleanup(target: Arc<DatabaseTarget>, ctx: &Context) -> Result<Action> {
    let key = ObjectRef::from_obj(target.as_ref()).erase();
    let name = target.name_any();
    let result = match &target.spec.cosmos {
        Some(cosmos_target) => delete_custom_roles(&name, cosmos_target, ctx).await,
        None => Ok(()),
    };
    let Err(error) = result else {
        ctx.backoff.reset(&key);
        return Ok(Action::await_change());
    };
    let message = format!(
        "deleting the target's custom roles has not finished; the finalizer stays until it has: {error}"
    );
    let api = Api::<DatabaseTarget>::all(ctx.client.clone());
    let status = target.status.clone().unwrap_or_default();
    report::cleanup_failed(
        &ctx.recorder,
        &api,
        target.as_ref(),
        status,
        |s| &mut s.conditions,
        &message,
    )
    .await?;
    Err(Error::Cleanup(error))
}

/// Delete every custom role definition the target owns that no assignment uses. Those still
/// assigned stay (deleting them would cut off whoever holds them) and are named in the error;
/// the grants' own deletions revoke their assignments and wake this reconciler again.
async fn delete_custom_roles(
    name: &str,
    target: &CosmosTarget,
    ctx: &Context,
) -> Result<(), BackendError> {
    let account_id = target.account_resource_id.as_str();
    let definitions = match ctx.cosmos.list_role_definitions(account_id).await {
        Ok(definitions) => definitions,
        // The account (or its resource group or subscription) is gone, its definitions with it.
        Err(error) if error.reason == Reason::TargetNotReady => return Ok(()),
        Err(error) => return Err(error),
    };
    let prefix = owned_role_name(name, "");
    let owned: Vec<&RoleDefinition> = definitions
        .iter()
        .filter(|d| !d.built_in && d.role_name.starts_with(&prefix))
        .collect();
    if owned.is_empty() {
        return Ok(());
    }
    let _guard = ctx.account_locks.lock_or_busy(account_id)?;
    let in_use = delete_unassigned(account_id, &owned, ctx).await?;
    if in_use.is_empty() {
        Ok(())
    } else {
        Err(BackendError::new(
            Reason::CleanupFailed,
            format!(
                "custom roles still assigned: {}; each is deleted once the grants using it are gone",
                in_use.join(", ")
            ),
        ))
    }
}

/// Delete those of `definitions` that no assignment on the account uses; describe the others.
/// The caller holds the account's lock.
async fn delete_unassigned(
    account_id: &str,
    definitions: &[&RoleDefinition],
    ctx: &Context,
) -> Result<Vec<String>, BackendError> {
    let assignments = ctx.cosmos.list_role_assignments(account_id).await?;
    let mut in_use = Vec::new();
    for definition in definitions {
        let id = cosmos::role_definition_id(account_id, &definition.guid);
        let users = assignments
            .iter()
            .filter(|a| a.role_definition_id.eq_ignore_ascii_case(&id))
            .count();
        if users == 0 {
            ctx.cosmos
                .delete_role_definition(account_id, &definition.guid)
                .await?;
        } else {
            in_use.push(format!("{} ({users} assignment(s))", definition.role_name));
        }
    }
    Ok(in_use)
}

/// Check the account, converge custom roles, repair drift. Returns the data-plane endpoint.
async fn check_cosmos(
    name: &str,
    target: &CosmosTarget,
    using: &[Arc<DatabaseAccessGrant>],
    ctx: &Context,
) -> Result<String, BackendError> {
    let account_id = target.account_resource_id.as_str();
    let reported = ctx.cosmos.account_endpoint(account_id).await?;
    let endpoint = target.endpoint.clone().unwrap_or(reported);

    let Some(_guard) = ctx.account_locks.try_lock(account_id) else {
        // A grant is writing on this account right now; converge on the next pass.
        return Ok(endpoint);
    };
    converge_role_definitions(name, target, ctx).await?;
    repair_drift(target, using, ctx).await?;
    Ok(endpoint)
}

/// Role name of a custom role definition owned by target `target`.
fn owned_role_name(target: &str, role: &str) -> String {
    format!("dbgrant/{target}/{role}")
}

async fn converge_role_definitions(
    name: &str,
    target: &CosmosTarget,
    ctx: &Context,
) -> Result<(), BackendError> {
    let account_id = target.account_resource_id.as_str();
    let existing = ctx.cosmos.list_role_definitions(account_id).await?;
    let mut wanted = HashSet::new();
    for (role, spec) in &target.roles {
        let definition = RoleDefinition {
            guid: cosmos::custom_role_guid(target, role),
            role_name: owned_role_name(name, role),
            data_actions: spec.data_actions.clone(),
            assignable_scopes: vec![account_id.to_string()],
            built_in: false,
        };
        wanted.insert(definition.guid.clone());
        let current = existing
            .iter()
            .find(|d| d.guid.eq_ignore_ascii_case(&definition.guid));
        let same = current.is_some_and(|d| {
            d.role_name == definition.role_name && d.data_actions == definition.data_actions
        });
        if !same {
            ctx.cosmos
                .put_role_definition(account_id, &definition)
                .await?;
        }
    }
    let prefix = owned_role_name(name, "");
    let stale: Vec<&RoleDefinition> = existing
        .iter()
        .filter(|d| !d.built_in && d.role_name.starts_with(&prefix))
        .filter(|d| !wanted.contains(&d.guid.to_ascii_lowercase()))
        .collect();
    if !stale.is_empty() {
        // A role dropped from the spec goes once nobody holds it; until then it is kept.
        let in_use = delete_unassigned(account_id, &stale, ctx).await?;
        if !in_use.is_empty() {
            tracing::info!(target = name, roles = %in_use.join(", "), "custom roles removed from the spec are still assigned; kept for now");
        }
    }
    Ok(())
}

/// Restore assignments that Ready grants rely on but Azure no longer has.
async fn repair_drift(
    target: &CosmosTarget,
    using: &[Arc<DatabaseAccessGrant>],
    ctx: &Context,
) -> Result<(), BackendError> {
    let account_id = target.account_resource_id.as_str();
    let expected: Vec<(&Arc<DatabaseAccessGrant>, RoleAssignment)> = using
        .iter()
        .filter(|g| g.metadata.deletion_timestamp.is_none())
        .filter_map(|g| expected_assignment(g, target).map(|a| (g, a)))
        .filter(|(g, a)| still_recorded(g, a, account_id, ctx))
        .collect();
    if expected.is_empty() {
        return Ok(());
    }
    let present: HashSet<String> = ctx
        .cosmos
        .list_role_assignments(account_id)
        .await?
        .into_iter()
        .map(|a| a.guid.to_ascii_lowercase())
        .collect();
    let mut restored = HashSet::new();
    for (grant, assignment) in expected {
        if present.contains(&assignment.guid.to_ascii_lowercase()) {
            continue;
        }
        if restored.insert(assignment.guid.clone()) {
            ctx.cosmos
                .put_role_assignment(account_id, &assignment)
                .await?;
            ctx.metrics.drift_restored();
        }
        report::event(
            &ctx.recorder,
            grant.as_ref(),
            true,
            "DriftRestored",
            format!(
                "role assignment {} was missing in Azure and has been restored",
                assignment.guid
            ),
        )
        .await;
    }
    Ok(())
}

/// Whether the grant reconciler still stands by `assignment`. The cache this check reads can lag
/// it: an assignment it has just replaced or revoked must not be restored.
fn still_recorded(
    grant: &DatabaseAccessGrant,
    assignment: &RoleAssignment,
    account_id: &str,
    ctx: &Context,
) -> bool {
    match ctx.recorded.get(&ObjectRef::from_obj(grant).erase()) {
        Some(recorded) => recorded.is_some_and(|id| {
            id.eq_ignore_ascii_case(&cosmos::role_assignment_id(account_id, &assignment.guid))
        }),
        None => true,
    }
}

/// The assignment a Ready grant recorded, rebuilt from its status and spec.
fn expected_assignment(
    grant: &DatabaseAccessGrant,
    target: &CosmosTarget,
) -> Option<RoleAssignment> {
    let status = grant.status.as_ref()?;
    let granted = status
        .conditions
        .iter()
        .any(|c| c.type_ == "AccessGranted" && c.status == "True");
    if !granted {
        return None;
    }
    let recorded = status.role_assignment_id.as_deref()?;
    let (_, guid) = recorded.rsplit_once("/sqlRoleAssignments/")?;
    let role_guid = cosmos::role_definition_guid(target, &grant.spec.role)?;
    let role_definition_id = cosmos::role_definition_id(&target.account_resource_id, &role_guid);
    let principal_id = status.principal_id.clone()?;
    let scope = status.scope.clone()?;
    // Only restore what the deterministic id says this grant owns; anything else is stale.
    let expected_guid = cosmos::role_assignment_guid(&principal_id, &role_definition_id, &scope);
    if !expected_guid.eq_ignore_ascii_case(guid) {
        return None;
    }
    Some(RoleAssignment {
        guid: expected_guid,
        role_definition_id,
        scope,
        principal_id,
    })
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
    if error.is_transient() {
        Action::requeue(
            ctx.backoff
                .next_delay(&ObjectRef::from_obj(target.as_ref()).erase(), None),
        )
    } else {
        Action::await_change()
    }
}
