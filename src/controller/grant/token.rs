//! The grant's token Secret, kept apart from access: once the identity is resolved the token
//! is refreshed on its own schedule whatever the role assignment or its probe say, so a
//! failing ARM never lets a workload's token expire.
//!
//! Each pass reads the Secret first. A Secret dbgrant did not make for this grant is never
//! adopted, written or deleted. The schedule lives in the Secret's annotations, so a restart
//! with nothing due costs no exchange and no write; tokens come through the broker, one
//! exchange per (identity, scope) per refresh window.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use super::super::Context;
use super::super::decide::{Next, next_for, sooner};
use super::super::grant_status::Step;
use super::super::identity_cache::IdentityKey;
use super::Pass;
use crate::api::{DatabaseAccessGrant, DatabaseAccessGrantStatus, Reason, Status, TokenSecretSpec};
use crate::backend::{BackendError, ResolvedIdentity, TokenScope};
use crate::token::{self, Issued, Ownership, RefreshPolicy, Standing, Why};

/// A token just obtained from an exchange.
pub(super) fn issued_now(identity: &ResolvedIdentity) -> Issued {
    Issued {
        token: identity.access_token.clone(),
        issued_at: Timestamp::now(),
        expires_at: identity.expires_at,
        refresh_in: None,
    }
}

/// The scope the Secret's token is for: the spec's, else the backend's data plane.
fn scope_of(spec: &TokenSecretSpec, backend: Option<&TokenScope>) -> TokenScope {
    match (&spec.scope, backend) {
        (Some(scope), _) => TokenScope::Explicit(scope.clone()),
        (None, Some(scope)) => scope.clone(),
        (None, None) => TokenScope::CosmosDb,
    }
}

/// The scope as written in the Secret. The cloud picks the exact audience of the named
/// scopes; the token's own `aud` claim says which it picked.
fn scope_text(scope: &TokenScope, issued: Option<&Issued>) -> String {
    if let TokenScope::Explicit(scope) = scope {
        return scope.clone();
    }
    if let Some(aud) = issued.and_then(|i| audience(i.token.secret())) {
        return format!("{}/.default", aud.trim_end_matches('/'));
    }
    match scope {
        TokenScope::CosmosDb => "https://cosmos.azure.com/.default".into(),
        TokenScope::AzureSql => "https://database.windows.net/.default".into(),
        TokenScope::PostgreSql => "https://ossrdbms-aad.database.windows.net/.default".into(),
        TokenScope::Explicit(scope) => scope.clone(),
    }
}

/// The `aud` claim of a JWT, when it is a URL (errors never carry the token).
fn audience(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let aud = claims.get("aud")?.as_str()?;
    aud.starts_with("https://").then(|| aud.to_string())
}

fn api_failure(what: &str, error: &kube::Error) -> BackendError {
    BackendError::new(Reason::KubernetesApiError, format!("{what}: {error}"))
}

/// Delete the token Secret dbgrant made for this grant under `name`, if it is still ours.
async fn delete_ours(
    grant: &DatabaseAccessGrant,
    namespace: &str,
    name: &str,
    ctx: &Context,
) -> Result<(), BackendError> {
    let uid = grant.uid().unwrap_or_default();
    let found = ctx
        .cluster
        .secret(namespace, name)
        .await
        .map_err(|e| api_failure(&format!("reading Secret {name}"), &e))?;
    let Some(found) = found else {
        return Ok(());
    };
    if token::ownership(Some(&found), &uid) != Ownership::Ours {
        // Someone else's now (or never ours): left alone, and forgotten.
        return Ok(());
    }
    let secret_uid = found.metadata.uid.clone().unwrap_or_default();
    ctx.cluster
        .delete_secret(namespace, name, &secret_uid)
        .await
        .map_err(|e| api_failure(&format!("deleting Secret {name}"), &e))?;
    tracing::info!(grant = %grant.name_any(), namespace, secret = name, "token Secret deleted");
    Ok(())
}

/// On the grant's deletion: delete its token Secret now rather than wait for garbage
/// collection (and also with `deletionPolicy: Retain`: the token is not access).
pub(super) async fn remove_on_deletion(grant: &DatabaseAccessGrant, ctx: &Context) {
    let namespace = grant.namespace().unwrap_or_default();
    let names = grant
        .spec
        .token_secret
        .iter()
        .map(|s| s.name.clone())
        .chain(
            grant
                .status
                .as_ref()
                .and_then(|s| s.token_secret_name.clone()),
        )
        .collect::<std::collections::BTreeSet<_>>();
    for name in names {
        if let Err(error) = delete_ours(grant, &namespace, &name, ctx).await {
            // Garbage collection deletes it anyway: the grant is its controller owner.
            tracing::warn!(grant = %grant.name_any(), secret = %name, error = %error, "token Secret not deleted; garbage collection will");
        }
    }
}

/// Keep the grant's token Secret as its spec asks: remove one no longer asked for, refresh
/// the one asked for when due. Fills `pass.outcome.token` and the token fields of `status`.
pub(super) async fn project(
    grant: &DatabaseAccessGrant,
    namespace: &str,
    ctx: &Context,
    identity: Option<&(ResolvedIdentity, IdentityKey)>,
    backend_scope: Option<&TokenScope>,
    pass: &mut Pass,
    status: &mut DatabaseAccessGrantStatus,
) {
    let spec = grant.spec.token_secret.as_ref();

    // --- a Secret made under a name no longer asked for goes ---
    if let Some(old) = status.token_secret_name.clone()
        && spec.is_none_or(|s| s.name != old)
    {
        match delete_ours(grant, namespace, &old, ctx).await {
            Ok(()) => {
                status.token_secret_name = None;
                status.token_expires_at = None;
            }
            Err(error) => {
                pass.outcome.token = Some(Step::failed(
                    error.reason,
                    format!("removing the token Secret no longer asked for: {error}"),
                ));
                pass.next = sooner(pass.next.clone(), Next::Backoff(None));
                return;
            }
        }
    }
    let Some(spec) = spec else {
        status.token_expires_at = None;
        pass.outcome.token = Some(Step::ok(Reason::NotRequested, "no token Secret requested"));
        return;
    };
    let Some((resolved, identity_key)) = identity else {
        // Waiting for the identity; whatever token the Secret holds stays until it expires.
        return;
    };
    let outcome = refresh(
        grant,
        namespace,
        ctx,
        spec,
        resolved,
        identity_key,
        backend_scope,
        status,
    )
    .await;
    let (step, next) = match outcome {
        Ok((step, next)) => (step, next),
        Err((step, next)) => (step, next),
    };
    if step.status != Status::True || step.reason == Reason::RefreshDelayed {
        ctx.metrics.reconcile_failed("grant", step.reason.as_str());
    }
    // The token keeps its own time: its next refresh, or after a failed one its own backoff,
    // not the one access's failures (a failing ARM) have grown.
    let retries = kube::runtime::reflector::ObjectRef::<Secret>::new(&spec.name)
        .within(namespace)
        .erase();
    pass.token_wait = match &next {
        Next::Resync(Some(wait)) if step.status == Status::True => {
            ctx.backoff.reset(&retries);
            Some(*wait)
        }
        Next::Backoff(at_least) => Some(ctx.backoff.next_delay(&retries, *at_least)),
        _ => None,
    };
    pass.outcome.token = Some(step);
    pass.next = sooner(pass.next.clone(), next);
}

type Reported = Result<(Step, Next), (Step, Next)>;

#[allow(clippy::too_many_arguments)]
async fn refresh(
    grant: &DatabaseAccessGrant,
    namespace: &str,
    ctx: &Context,
    spec: &TokenSecretSpec,
    resolved: &ResolvedIdentity,
    identity_key: &IdentityKey,
    backend_scope: Option<&TokenScope>,
    status: &mut DatabaseAccessGrantStatus,
) -> Reported {
    let name = &spec.name;
    let uid = grant.uid().unwrap_or_default();
    let existing = ctx.cluster.secret(namespace, name).await.map_err(|e| {
        let error = api_failure(&format!("reading Secret {name}"), &e);
        (
            Step::failed(error.reason, error.message),
            Next::Backoff(None),
        )
    })?;
    match token::ownership(existing.as_ref(), &uid) {
        Ownership::Absent | Ownership::Ours => {}
        Ownership::Foreign => {
            status.token_expires_at = None;
            return Err((
                Step::failed(
                    Reason::SecretConflict,
                    format!(
                        "Secret {name} exists and was not created by dbgrant; it is left untouched. Delete it, or set spec.tokenSecret.name to a name no Secret uses"
                    ),
                ),
                // No watch on Secrets: look again at the usual pace.
                Next::Resync(None),
            ));
        }
        Ownership::OtherGrant(owner) => {
            status.token_expires_at = None;
            let owner = owner.unwrap_or_else(|| "another grant".into());
            return Err((
                Step::failed(
                    Reason::SecretConflict,
                    format!(
                        "Secret {name} is the token Secret of grant {owner}; set spec.tokenSecret.name to another name"
                    ),
                ),
                Next::Resync(None),
            ));
        }
    }

    let scope = scope_of(spec, backend_scope);
    let policy = RefreshPolicy::of(spec);
    let inputs_hash = inputs_of(spec, identity_key, &scope).hash();
    let schedule = existing.as_ref().and_then(token::schedule_of);
    let now = Timestamp::now();
    let why = match token::due(schedule.as_ref(), &inputs_hash, now) {
        Ok(wait) => {
            let schedule = schedule.as_ref().map(|s| (s.expires_at, s.refresh_at));
            let (expires_at, refresh_at) = schedule.unwrap_or((now, now));
            status.token_expires_at = Some(as_stored(expires_at));
            status.token_secret_name = Some(name.clone());
            return Ok((
                Step::ok(
                    Reason::Ready,
                    format!(
                        "Secret {name} holds a token valid until {expires_at}; refreshed from {refresh_at}"
                    ),
                ),
                Next::Resync(Some(wait)),
            ));
        }
        Err(why) => why,
    };

    // --- a token: shared with the grants of the same identity and scope ---
    let key = IdentityKey {
        scope: scope.clone(),
        ..identity_key.clone()
    };
    let newer_than = match why {
        Why::Due => schedule.as_ref().map(|s| s.issued_at),
        Why::Missing | Why::InputsChanged => None,
    };
    let exchanged = std::sync::atomic::AtomicBool::new(false);
    let issued = ctx
        .tokens
        .token(&key, newer_than, Timestamp::now, || async {
            exchanged.store(true, std::sync::atomic::Ordering::Relaxed);
            exchange(ctx, namespace, &grant.spec.service_account_name, &key).await
        })
        .await;
    let issued = match issued {
        Ok(issued) => issued,
        Err(error) => {
            ctx.metrics.token_refresh("failed");
            return Err(failed_refresh(
                name,
                &error,
                schedule.as_ref(),
                why,
                now,
                status,
            ));
        }
    };
    ctx.metrics.token_refresh(if exchanged.into_inner() {
        "exchanged"
    } else {
        "shared"
    });

    // --- the Secret ---
    let fingerprint = token::fingerprint(&issued.token);
    let refresh_at = token::refresh_at(
        issued.issued_at,
        issued.expires_at,
        issued.refresh_in,
        policy,
        &format!("{uid}/{fingerprint}"),
    );
    let Some(owner) = grant.controller_owner_ref(&()) else {
        return Err((
            Step::failed(Reason::InvalidSpec, "the grant has no uid yet"),
            Next::Backoff(None),
        ));
    };
    let scope_written = scope_text(&scope, Some(&issued));
    let seal = match ctx.seal.get(ctx.cluster.as_ref()).await {
        Some(seal_key) => sealed(grant, namespace, &key, &resolved.principal_id, &issued)
            .map(|what| seal_key.seal(&what)),
        None => None,
    };
    let mut secret = token::build(&token::Build {
        name,
        namespace,
        owner,
        issued: &issued,
        scope: &scope_written,
        tenant_id: &resolved.tenant_id,
        formats: &spec.formats,
        refresh_at,
        inputs_hash: &inputs_hash,
        sealed: seal.map(|seal| (resolved.principal_id.as_str(), seal)),
    });
    if let Err(error) = write(ctx, existing.as_ref(), &mut secret).await {
        let error = api_failure(&format!("writing Secret {name}"), &error);
        return Err(failed_refresh(
            name,
            &error,
            schedule.as_ref(),
            why,
            now,
            status,
        ));
    }
    tracing::info!(
        grant = %grant.name_any(),
        namespace,
        secret = %name,
        fingerprint = %fingerprint,
        expires_at = %issued.expires_at,
        refresh_at = %refresh_at,
        why = ?why,
        "token Secret written"
    );
    status.token_expires_at = Some(as_stored(issued.expires_at));
    status.token_secret_name = Some(name.clone());
    let mut message = format!(
        "Secret {name} holds a token valid until {}; refreshed from {refresh_at}",
        issued.expires_at
    );
    if why == Why::Due
        && !spec.rollout_restart.is_empty()
        && let Some(failure) = restart(ctx, namespace, spec, &fingerprint).await
    {
        message = format!("{message}; {failure}");
    }
    let wait = refresh_at.duration_since(Timestamp::now()).unsigned_abs();
    Ok((
        Step::ok(Reason::Ready, message),
        Next::Resync(Some(wait.max(Duration::from_secs(1)))),
    ))
}

/// What the Secret's token is built from, besides the token.
fn inputs_of(
    spec: &TokenSecretSpec,
    identity_key: &IdentityKey,
    scope: &TokenScope,
) -> token::Inputs {
    token::Inputs {
        client_id: identity_key.client_id.clone(),
        tenant_id: identity_key.tenant_id.clone(),
        scope: format!("{scope:?}"),
        formats: spec.formats.clone(),
        policy: RefreshPolicy::of(spec),
    }
}

/// What an identity seal on the grant's Secret vouches for; `None` for a ServiceAccount
/// without a uid (nothing to bind the proof to).
fn sealed<'a>(
    grant: &'a DatabaseAccessGrant,
    namespace: &'a str,
    key: &'a IdentityKey,
    principal_id: &'a str,
    issued: &'a Issued,
) -> Option<token::seal::Sealed<'a>> {
    Some(token::seal::Sealed {
        grant_uid: grant.meta().uid.as_deref()?,
        namespace,
        service_account: &key.service_account,
        service_account_uid: key.uid.as_deref()?,
        client_id: &key.client_id,
        tenant_id: &key.tenant_id,
        scope: format!("{:?}", key.scope),
        principal_id,
        expires_on: issued.expires_at.as_second(),
        token: issued.token.secret(),
    })
}

/// The identity the grant's own token Secret vouches for, when that Secret is dbgrant's, its
/// token is for `key.scope` and not due, and its identity seal verifies: after a restart this
/// spares the TokenRequest and the exchange a proof would otherwise cost. Anything else
/// (no seal, a seal that does not verify, a Secret a tenant edited) is `None`: an exchange.
pub(super) async fn sealed_identity(
    grant: &DatabaseAccessGrant,
    namespace: &str,
    ctx: &Context,
    key: &IdentityKey,
) -> Option<ResolvedIdentity> {
    let spec = grant.spec.token_secret.as_ref()?;
    if scope_of(spec, Some(&key.scope)) != key.scope {
        return None;
    }
    let secret = ctx.cluster.secret(namespace, &spec.name).await.ok()??;
    if token::ownership(Some(&secret), grant.meta().uid.as_deref()?) != Ownership::Ours {
        return None;
    }
    let schedule = token::schedule_of(&secret)?;
    let inputs_hash = inputs_of(spec, key, &key.scope).hash();
    token::due(Some(&schedule), &inputs_hash, Timestamp::now()).ok()?;
    let annotations = secret.metadata.annotations.as_ref()?;
    let principal_id = annotations.get(token::seal::PRINCIPAL_ANNOTATION)?;
    let seal = annotations.get(token::seal::SEAL_ANNOTATION)?;
    let token = std::str::from_utf8(&secret.data.as_ref()?.get(token::TOKEN_KEY)?.0).ok()?;
    // Only now the key: a Secret with nothing to verify never makes one.
    let seal_key = ctx.seal.get(ctx.cluster.as_ref()).await?;
    let issued = Issued {
        token: azure_core::credentials::Secret::new(token.to_string()),
        issued_at: schedule.issued_at,
        expires_at: schedule.expires_at,
        refresh_in: None,
    };
    let what = sealed(grant, namespace, key, principal_id, &issued)?;
    if !seal_key.verify(&what, seal) {
        tracing::warn!(grant = %grant.name_any(), namespace, secret = %spec.name, "the token Secret's identity seal does not verify; proving the identity by exchange");
        return None;
    }
    Some(ResolvedIdentity {
        principal_id: principal_id.clone(),
        tenant_id: key.tenant_id.clone(),
        access_token: issued.token,
        expires_at: schedule.expires_at,
    })
}

/// Mint a token for the grant's own ServiceAccount and exchange it for `key.scope`.
async fn exchange(
    ctx: &Context,
    namespace: &str,
    service_account: &str,
    key: &IdentityKey,
) -> Result<Issued, BackendError> {
    let assertion = ctx
        .cluster
        .mint_token(namespace, service_account)
        .await
        .map_err(|e| api_failure(&format!("TokenRequest for {service_account}"), &e))?;
    let identity = ctx
        .backends
        .entra
        .exchange(&key.tenant_id, &key.client_id, &assertion, &key.scope)
        .await?;
    Ok(issued_now(&identity))
}

/// Create the Secret, or replace ours as read (conflict-checked). A Secret of the old
/// `Opaque` type (an earlier dbgrant) cannot change type in place: deleted, then created.
async fn write(
    ctx: &Context,
    existing: Option<&Secret>,
    secret: &mut Secret,
) -> Result<(), kube::Error> {
    let Some(existing) = existing else {
        return ctx.cluster.create_secret(secret).await;
    };
    if existing.type_ != secret.type_ {
        let namespace = existing.metadata.namespace.as_deref().unwrap_or_default();
        let name = existing.metadata.name.as_deref().unwrap_or_default();
        let uid = existing.metadata.uid.as_deref().unwrap_or_default();
        ctx.cluster.delete_secret(namespace, name, uid).await?;
        return ctx.cluster.create_secret(secret).await;
    }
    secret.metadata.resource_version = existing.metadata.resource_version.clone();
    secret.metadata.uid = existing.metadata.uid.clone();
    ctx.cluster.replace_secret(secret).await
}

/// Report a refresh that failed: while the Secret still holds a token with some life left,
/// `TokenProjected` stays True (`RefreshDelayed`) and the current token is kept; near expiry
/// it turns False. Transient failures are retried with backoff (honouring Retry-After); a
/// configuration error waits for a change (or looks slowly, when it is fixed in Azure).
/// A time as the API server keeps it in a status (whole seconds): a status compared with
/// the one read back must not differ in its fractions alone, or every pass would write it.
fn as_stored(at: Timestamp) -> Time {
    Time(Timestamp::from_second(at.as_second()).unwrap_or(at))
}

fn failed_refresh(
    name: &str,
    error: &BackendError,
    schedule: Option<&token::Schedule>,
    why: Why,
    now: Timestamp,
    status: &mut DatabaseAccessGrantStatus,
) -> (Step, Next) {
    let next = next_for(error);
    let current = schedule.filter(|s| why == Why::Due && s.expires_at > now);
    match current {
        Some(s) => {
            status.token_expires_at = Some(as_stored(s.expires_at));
            status.token_secret_name = Some(name.to_string());
            let message = format!(
                "refreshing the token failed ({}); Secret {name} keeps its token, valid until {}; retrying",
                error.message, s.expires_at
            );
            // Transient or not, retry within the token's remaining life.
            let next = match next {
                Next::AwaitChange => Next::Backoff(None),
                other => other,
            };
            match token::standing(s.expires_at, now) {
                Standing::Delayed => (
                    Step {
                        status: Status::True,
                        reason: Reason::RefreshDelayed,
                        message,
                    },
                    next,
                ),
                Standing::Failing => (Step::failed(error.reason, message), next),
            }
        }
        None => (
            Step::failed(
                error.reason,
                format!(
                    "writing a token into Secret {name} failed: {}",
                    error.message
                ),
            ),
            next,
        ),
    }
}

/// Restart the workloads the spec names, once per token: the pod template's annotation is
/// the token's fingerprint, so repeating it (a retry, a second pass) restarts nothing.
async fn restart(
    ctx: &Context,
    namespace: &str,
    spec: &TokenSecretSpec,
    fingerprint: &str,
) -> Option<String> {
    let mut failures = Vec::new();
    for workload in &spec.rollout_restart {
        if let Err(error) = ctx
            .cluster
            .restart_workload(
                namespace,
                workload.kind,
                &workload.name,
                token::RESTARTED_FOR_ANNOTATION,
                fingerprint,
            )
            .await
        {
            failures.push(format!(
                "restarting {:?} {} failed: {error}",
                workload.kind, workload.name
            ));
        }
    }
    (!failures.is_empty()).then(|| failures.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_written_comes_from_the_spec_the_token_or_the_backend() {
        let issued = |token: &str| Issued {
            token: azure_core::credentials::Secret::new(token.to_string()),
            issued_at: Timestamp::UNIX_EPOCH,
            expires_at: Timestamp::UNIX_EPOCH,
            refresh_in: None,
        };
        // {"aud":"https://cosmos.azure.us"}
        let jwt = "e30.eyJhdWQiOiJodHRwczovL2Nvc21vcy5henVyZS51cyJ9.sig";
        assert_eq!(
            scope_text(&TokenScope::CosmosDb, Some(&issued(jwt))),
            "https://cosmos.azure.us/.default"
        );
        assert_eq!(
            scope_text(&TokenScope::PostgreSql, Some(&issued("not-a-jwt"))),
            "https://ossrdbms-aad.database.windows.net/.default"
        );
        assert_eq!(
            scope_text(&TokenScope::AzureSql, None),
            "https://database.windows.net/.default"
        );
        assert_eq!(
            scope_text(&TokenScope::Explicit("api://x/.default".into()), None),
            "api://x/.default"
        );
    }
}
