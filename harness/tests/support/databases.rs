//! What the end-to-end tests of the database backends (PostgreSQL, SQL) share: their
//! variables, the operator's object id as the simulated Entra ID issues it, a grant refused by
//! the target's namespace policy, and removing a target with its grants from a shared server.

use std::time::Duration;

use dbgrant::api::{DatabaseAccessGrant, DatabaseTarget, Reason};
use dbgrant::azure::{AzureConfig, OperatorCredential};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

use super::world::{Identity, World, is_ready, ready_reason};

/// The variable `name`, when set and not empty.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The simulated operator's object id: its own token for `scope`, read by azure-sim's check
/// for `audience`.
pub async fn operator_object_id(
    world: &World,
    config: &AzureConfig,
    scope: &str,
    audience: &str,
) -> String {
    let azure = &world.sims().expect("simulated").azure;
    let OperatorCredential::ClientSecret {
        client_id,
        client_secret,
    } = &config.credential
    else {
        panic!("the simulated operator signs in with a client secret");
    };
    let http = dbgrant_sim::tls::https_client(&azure.ca_pem()).unwrap();
    // Only the scope needs escaping: ids and secrets are hex and dashes.
    let scope = scope.replace(':', "%3A").replace('/', "%2F");
    let reply: serde_json::Value = http
        .post(format!(
            "{}{}/oauth2/v2.0/token",
            azure.authority_host(),
            azure.tenant_id()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret={client_secret}&scope={scope}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = reply["access_token"].as_str().expect("a token");
    let claims = azure.verifier_for(audience)(token).unwrap();
    claims["oid"].as_str().expect("an oid").to_string()
}

/// A grant of `role` on `target` from a namespace of another team, with a working identity
/// of its own: waits for it to be refused (PolicyDenied, holding nothing), then for the same
/// grant from the world's team (`allowed`, service account `app`) to go Ready, so the refusal
/// was the policy's. Returns the refused identity and the allowed one.
pub async fn refused_grant_from_another_team(
    world: &World,
    target: &str,
    role: &str,
) -> (Identity, Identity) {
    let outside = format!("{}-outside", world.team());
    dbgrant_sim::apply::apply(
        &world.client,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": outside, "labels": {"dbgrant.io/team": "someone-else"}}}),
        "default",
    )
    .await
    .unwrap();
    let identity = world.identity("outsider").await;
    world.federate_in(&identity, &outside, "app").await;
    world
        .service_account_in(&outside, "app", Some(&identity.client_id))
        .await;
    let grants: Api<DatabaseAccessGrant> = Api::namespaced(world.client.clone(), &outside);
    dbgrant_sim::apply::apply(
        &world.client,
        &json!({"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant", "metadata": {"name": "sneaky", "namespace": outside}, "spec": {"serviceAccountName": "app", "target": target, "role": role}}),
        &outside,
    )
    .await
    .unwrap();
    let denied = world
        .eventually("PolicyDenied", Duration::from_secs(20), || {
            let grants = grants.clone();
            async move {
                let grant = grants.get_opt("sneaky").await.ok().flatten()?;
                (ready_reason(&grant).as_deref() == Some(Reason::PolicyDenied.as_str())
                    && !is_ready(&grant))
                .then_some(grant)
            }
        })
        .await;
    assert!(
        denied.status.as_ref().is_none_or(|s| s.held.is_empty()),
        "nothing held: {:?}",
        denied.status
    );
    let app = world.workload("app").await;
    world
        .grant_raw(
            "allowed",
            json!({"serviceAccountName": "app", "target": target, "role": role}),
        )
        .await;
    world.wait_ready("allowed").await;
    (identity, app)
}

/// Delete `target`'s grants and `target` itself, and wait until they are gone (their
/// finalizers run while the operator does): what a test on a shared server leaves behind.
/// `what` names them in the wait.
pub async fn remove_target(world: &World, target: &str, what: &str) {
    let grants: Api<DatabaseAccessGrant> = Api::all(world.client.clone());
    for grant in grants.list(&ListParams::default()).await.unwrap().items {
        if grant.spec.target == target {
            let api: Api<DatabaseAccessGrant> =
                Api::namespaced(world.client.clone(), &grant.namespace().unwrap_or_default());
            let _ = api
                .delete(&grant.name_any(), &DeleteParams::default())
                .await;
        }
    }
    let targets: Api<DatabaseTarget> = Api::all(world.client.clone());
    let _ = targets.delete(target, &DeleteParams::default()).await;
    world
        .eventually(what, Duration::from_secs(60), || {
            let (grants, targets) = (grants.clone(), targets.clone());
            async move {
                let left = grants.list(&ListParams::default()).await.ok()?;
                let gone = !left.items.iter().any(|g| g.spec.target == target)
                    && targets.get_opt(target).await.ok()?.is_none();
                gone.then_some(())
            }
        })
        .await;
}

/// In real-environment mode, the server's settings under `prefix` (`DBGRANT_E2E_SQL`): the
/// operator restarted trusting `{prefix}_CA_FILE` when it is set, and the port
/// `{prefix}_PORT` (`default_port` when unset).
pub async fn trust_and_port(world: &mut World, prefix: &str, default_port: u16) -> u16 {
    if let Some(file) = env(&format!("{prefix}_CA_FILE")) {
        let pem = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {prefix}_CA_FILE {file}: {e}"));
        world.restart_operator_trusting(&pem).await;
    }
    env(&format!("{prefix}_PORT")).map_or(default_port, |p| {
        p.parse()
            .unwrap_or_else(|_| panic!("{prefix}_PORT is a port number"))
    })
}

/// Apply a DatabaseTarget `name` with this backend `block` (`postgres`, `sql`), open to the
/// world's team for `allowed_roles`.
pub async fn apply_target(
    world: &World,
    name: &str,
    block: &str,
    spec: &serde_json::Value,
    allowed_roles: &[&str],
) {
    let manifest = json!({
        "apiVersion": "dbgrant.io/v1alpha1",
        "kind": "DatabaseTarget",
        "metadata": {"name": name},
        "spec": {
            block: spec,
            "allowedNamespaces": {"matchLabels": {"dbgrant.io/team": world.team()}},
            "allowedRoles": allowed_roles,
        },
    });
    dbgrant_sim::apply::apply(&world.client, &manifest, "default")
        .await
        .unwrap();
}

/// Wait for grant `name` to be Ready and verified by the workload signing in with its own
/// token.
pub async fn wait_verified(world: &World, name: &str) -> DatabaseAccessGrant {
    let grant = world.wait_ready(name).await;
    assert_eq!(
        super::world::condition(&grant, "AccessVerified"),
        Some(("True".into(), "Verified".into())),
        "verified by the workload signing in with its own token"
    );
    grant
}
