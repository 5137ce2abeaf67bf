//! Gathering a grant's identity: find its ServiceAccount, read the identity it claims, mint a
//! token for that very ServiceAccount and exchange it at Entra ID (or reuse a young result).

use k8s_openapi::jiff::Timestamp;

use super::super::Context;
use super::super::decide::{Next, next_for};
use super::super::grant_status::Step;
use super::super::identity::claimed_identity;
use super::super::identity_cache::IdentityKey;
use crate::api::{DatabaseAccessGrant, DatabaseAccessGrantStatus, Reason};
use crate::backend::{ResolvedIdentity, TokenScope};
use crate::error::Result;

/// The identity, or the reported step failure (inner `Err`); the outer `Err` is an unexpected
/// API failure.
pub(super) async fn resolve(
    grant: &DatabaseAccessGrant,
    namespace: &str,
    ctx: &Context,
    scope: &TokenScope,
    status: &mut DatabaseAccessGrantStatus,
) -> Result<std::result::Result<(ResolvedIdentity, IdentityKey), (Step, Next)>> {
    let sa_name = &grant.spec.service_account_name;
    let missing = || {
        Ok(Err((
            Step::failed(
                Reason::ServiceAccountNotFound,
                format!("ServiceAccount {sa_name} does not exist in namespace {namespace}"),
            ),
            Next::AwaitChange,
        )))
    };
    let Some(account) = ctx.cluster.service_account(namespace, sa_name).await? else {
        return missing();
    };
    let annotations = account.annotations.unwrap_or_default();
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
        uid: account.uid.clone(),
        client_id: claimed.client_id.clone(),
        tenant_id: claimed.tenant_id.clone(),
        scope: scope.clone(),
    };
    let cached = |status: &mut DatabaseAccessGrantStatus| {
        let identity = ctx.identities.get(&key, Timestamp::now())?;
        status.principal_id = Some(identity.principal_id.clone());
        status.tenant_id = Some(identity.tenant_id.clone());
        Some(identity)
    };
    if let Some(identity) = cached(status) {
        return Ok(Ok((identity, key)));
    }
    // One exchange per key at a time; who waited finds its result.
    let _resolving = ctx.identities.resolving(&key).await;
    if let Some(identity) = cached(status) {
        return Ok(Ok((identity, key)));
    }
    // After a restart: the grant's own token Secret may vouch for the identity (sealed).
    if let Some(identity) = super::token::sealed_identity(grant, namespace, ctx, &key).await {
        status.principal_id = Some(identity.principal_id.clone());
        status.tenant_id = Some(identity.tenant_id.clone());
        ctx.identities
            .insert(key.clone(), identity.clone(), Timestamp::now());
        return Ok(Ok((identity, key)));
    }
    let token = match ctx.cluster.mint_token(namespace, sa_name).await {
        Ok(token) => token,
        Err(kube::Error::Api(s)) if s.is_not_found() => return missing(),
        // Said on the grant, not only in the operator's log: a TokenRequest the API server
        // refuses (RBAC, admission) is what a user sees first after a short install.
        Err(error) => {
            return Ok(Err((
                Step::failed(
                    Reason::KubernetesApiError,
                    format!(
                        "creating a token for ServiceAccount {sa_name} failed ({}); the operator needs create on serviceaccounts/token",
                        crate::error::chain(&error)
                    ),
                ),
                Next::Backoff(None),
            )));
        }
    };
    match ctx
        .backends
        .entra
        .exchange(&claimed.tenant_id, &claimed.client_id, &token, scope)
        .await
    {
        Ok(identity) => {
            status.principal_id = Some(identity.principal_id.clone());
            status.tenant_id = Some(identity.tenant_id.clone());
            // The exchange also yielded a fresh token for this (identity, scope): a token
            // Secret for the same scope takes it instead of exchanging again.
            ctx.tokens.offer(&key, super::token::issued_now(&identity));
            ctx.identities
                .insert(key.clone(), identity.clone(), Timestamp::now());
            Ok(Ok((identity, key)))
        }
        Err(error) => {
            let next = next_for(&error);
            Ok(Err((Step::failed(error.reason, error.message), next)))
        }
    }
}
