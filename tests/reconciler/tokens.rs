//! Token Secrets in the reconciler tier: written only where dbgrant may, on their own schedule
//! (read back from the Secret, so restarts cost nothing), shared exchanges, failures reported
//! without dropping a good token, and no token anywhere but the Secret.

use std::io::Write;
use std::sync::{Arc, Mutex};

use dbgrant::backend::TokenScope;
use dbgrant::token;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::rig::Rig;
use super::{ALICE, ALICE_CLIENT};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn spec(token_secret: Value) -> Value {
    json!({"serviceAccountName": "api", "target": "db", "role": "reader", "tokenSecret": token_secret})
}

/// The shop (target, workload) with grant `reader` asking for Secret `orders-token`.
async fn shop_with_token(token_secret: Value) -> Rig {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos_target("db", "acct", "shop", &["reader", "contributor"]);
    rig.reconcile_target("db").await;
    rig.put_grant("shop", "reader", spec(token_secret));
    rig.settle().await;
    rig
}

fn text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

fn annotation(secret: &Secret, key: &str) -> String {
    secret.metadata.annotations.as_ref().unwrap()[key].clone()
}

/// Time passes until the Secret's refresh is due (its schedule says "now").
fn make_due(rig: &Rig, namespace: &str, name: &str) {
    let mut secrets = lock(&rig.cluster.secrets);
    let secret = secrets
        .get_mut(&(namespace.to_string(), name.to_string()))
        .expect("the Secret");
    secret.metadata.annotations.as_mut().unwrap().insert(
        token::REFRESH_AT_ANNOTATION.into(),
        Timestamp::now().to_string(),
    );
}

fn secret_writes(rig: &Rig) -> usize {
    *lock(&rig.cluster.secret_writes)
}

fn exchanges(rig: &Rig) -> usize {
    *lock(&rig.cosmos.exchanges)
}

#[tokio::test(start_paused = true)]
async fn the_token_secret_is_typed_owned_labelled_and_scheduled() {
    let rig = shop_with_token(
        json!({"name": "orders-token", "formats": ["CosmosAuthorizationHeader", "AzureCli"]}),
    )
    .await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("True".into(), "Ready".into()))
    );
    let secret = rig
        .cluster
        .secret_now("shop", "orders-token")
        .expect("written");
    assert_eq!(secret.type_.as_deref(), Some(token::SECRET_TYPE));
    let grant = rig.grant("shop", "reader");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(Some(&owner.uid), grant.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
    assert!(text(&secret, token::TOKEN_KEY).starts_with("data-token:"));
    assert_eq!(
        text(&secret, token::SCOPE_KEY),
        "https://cosmos.azure.com/.default"
    );
    assert!(text(&secret, token::AUTHORIZATION_KEY).starts_with("type%3Daad%26ver%3D1.0%26sig%3D"));
    assert!(
        secret
            .data
            .as_ref()
            .unwrap()
            .contains_key(token::TOKEN_JSON_KEY)
    );
    let expires: Timestamp = text(&secret, token::EXPIRES_AT_KEY).parse().unwrap();
    let refresh: Timestamp = annotation(&secret, token::REFRESH_AT_ANNOTATION)
        .parse()
        .unwrap();
    let issued: Timestamp = annotation(&secret, token::ISSUED_AT_ANNOTATION)
        .parse()
        .unwrap();
    let life = expires.duration_since(issued).as_secs();
    let after = refresh.duration_since(issued).as_secs();
    assert!(
        after <= life / 2 && after >= life * 45 / 100,
        "{after} of {life}"
    );
    let status = grant.status.unwrap();
    // The status keeps whole seconds, as the API server does.
    assert_eq!(
        status.token_expires_at.map(|t| t.0.as_second()),
        Some(expires.as_second())
    );
    assert_eq!(status.token_secret_name.as_deref(), Some("orders-token"));
    assert_eq!(
        rig.condition("shop", "reader", "TokenProjected"),
        Some(("True".into(), "Ready".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_foreign_secret_is_never_adopted_written_or_deleted() {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos_target("db", "acct", "shop", &["reader"]);
    rig.reconcile_target("db").await;
    rig.cluster
        .foreign_secret("shop", "orders-token", &[("password", "hunter2")]);
    let before = rig.cluster.secret_now("shop", "orders-token").unwrap();
    rig.put_grant("shop", "reader", spec(json!({"name": "orders-token"})));
    rig.settle().await;
    assert_eq!(
        rig.condition("shop", "reader", "TokenProjected"),
        Some(("False".into(), "SecretConflict".into()))
    );
    let message = rig
        .grant("shop", "reader")
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "TokenProjected")
        .unwrap()
        .message;
    assert!(
        message.contains("spec.tokenSecret.name"),
        "says how to fix it: {message}"
    );
    assert_eq!(
        rig.access_on("acct").len(),
        1,
        "access is granted all the same"
    );
    rig.delete_grant("shop", "reader");
    rig.settle().await;
    assert!(!rig.grant_exists("shop", "reader"));
    assert_eq!(rig.cluster.secret_now("shop", "orders-token"), Some(before));
    assert_eq!(secret_writes(&rig), 0);
}

#[tokio::test(start_paused = true)]
async fn another_grants_token_secret_is_a_conflict_too() {
    let rig = shop_with_token(json!({"name": "orders-token"})).await;
    let before = rig.cluster.secret_now("shop", "orders-token").unwrap();
    rig.put_grant("shop", "second", spec(json!({"name": "orders-token"})));
    rig.settle().await;
    assert_eq!(
        rig.condition("shop", "second", "TokenProjected"),
        Some(("False".into(), "SecretConflict".into()))
    );
    assert_eq!(rig.cluster.secret_now("shop", "orders-token"), Some(before));
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_nothing_due_exchanges_no_token_and_writes_no_secret() {
    let rig = shop_with_token(json!({"name": "orders-token"})).await;
    let (writes, exchanged) = (secret_writes(&rig), exchanges(&rig));
    assert_eq!(writes, 1);
    assert_eq!(
        exchanged, 1,
        "the identity's exchange also served the Secret"
    );
    let secret = rig.cluster.secret_now("shop", "orders-token").unwrap();
    assert_eq!(
        annotation(&secret, token::seal::PRINCIPAL_ANNOTATION),
        ALICE
    );
    let rig = rig.restart();
    rig.settle().await;
    assert_eq!(secret_writes(&rig), writes, "no Secret write");
    // The Secret's sealed identity stands in for the proof an exchange would make.
    assert_eq!(exchanges(&rig), exchanged, "no exchange");
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("True".into(), "Ready".into()))
    );
    assert_eq!(
        rig.condition("shop", "reader", "TokenProjected"),
        Some(("True".into(), "Ready".into()))
    );
}

/// Edit the Secret as a tenant with write access to its namespace could.
fn tamper(rig: &Rig, edit: impl FnOnce(&mut Secret)) {
    let mut secrets = lock(&rig.cluster.secrets);
    let secret = secrets
        .get_mut(&("shop".to_string(), "orders-token".to_string()))
        .expect("the Secret");
    edit(secret);
}

#[tokio::test(start_paused = true)]
async fn an_identity_read_from_an_edited_secret_is_never_believed() {
    // A tenant can write its own Secrets: a principal, token or seal changed there must not
    // become the identity dbgrant grants to. Each edit costs one exchange instead.
    type Edit = fn(&mut Secret);
    let edits: [(&str, Edit); 4] = [
        ("principal", |s| {
            s.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(token::seal::PRINCIPAL_ANNOTATION.into(), super::BOB.into());
        }),
        ("token", |s| {
            s.data.as_mut().unwrap().insert(
                token::TOKEN_KEY.into(),
                k8s_openapi::ByteString(b"data-token:forged".to_vec()),
            );
        }),
        ("expiry", |s| {
            let later = "2099-01-01T00:00:00Z".to_string();
            let annotations = s.metadata.annotations.as_mut().unwrap();
            annotations.insert(token::EXPIRES_AT_ANNOTATION.into(), later.clone());
            annotations.insert(token::REFRESH_AT_ANNOTATION.into(), later);
        }),
        ("seal", |s| {
            s.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(token::seal::SEAL_ANNOTATION.into(), "AAAA".into());
        }),
    ];
    for (what, edit) in edits {
        let rig = shop_with_token(json!({"name": "orders-token"})).await;
        let exchanged = exchanges(&rig);
        tamper(&rig, edit);
        let rig = rig.restart();
        rig.settle().await;
        assert_eq!(exchanges(&rig), exchanged + 1, "{what}: proven by exchange");
        let status = rig.grant("shop", "reader").status.unwrap();
        assert_eq!(status.principal_id.as_deref(), Some(ALICE), "{what}");
        let access = rig.access_on("acct");
        assert!(
            !access.is_empty() && access.iter().all(|(principal, _, _)| principal == ALICE),
            "{what}: {access:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_seal_proves_nothing_for_a_recreated_service_account_or_another_key() {
    // The ServiceAccount deleted and made again (a new uid) under the same name and claim.
    let rig = shop_with_token(json!({"name": "orders-token"})).await;
    let exchanged = exchanges(&rig);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    let rig = rig.restart();
    rig.settle().await;
    assert_eq!(
        exchanges(&rig),
        exchanged + 1,
        "a new ServiceAccount is proven anew"
    );

    // The key replaced (its Secret deleted): old seals prove nothing, and a new key is made.
    let rig = shop_with_token(json!({"name": "orders-token"})).await;
    let exchanged = exchanges(&rig);
    let key = (
        super::rig::OPERATOR_NAMESPACE.to_string(),
        token::seal::KEY_SECRET_NAME.to_string(),
    );
    let old_key = lock(&rig.cluster.secrets)
        .remove(&key)
        .expect("the key Secret");
    let rig = rig.restart();
    rig.settle().await;
    assert_eq!(exchanges(&rig), exchanged + 1, "sealed under another key");
    let new_key = lock(&rig.cluster.secrets)
        .get(&key)
        .cloned()
        .expect("a new key");
    assert_ne!(new_key.data, old_key.data);
}

#[tokio::test(start_paused = true)]
async fn a_due_token_is_refreshed_even_while_the_target_fails() {
    let rig = shop_with_token(json!({"name": "orders-token"})).await;
    let first = rig.cluster.secret_now("shop", "orders-token").unwrap();
    // ARM loses the account: the target is not Ready and access cannot change...
    rig.cosmos.accounts.lock().unwrap().clear();
    // (noticed on the target's next resync)
    tokio::time::advance(rig.ctx.resync_interval).await;
    rig.reconcile_target("db").await;
    rig.settle().await;
    assert_eq!(
        rig.ready("shop", "reader"),
        Some(("False".into(), "TargetNotReady".into()))
    );
    // ...and the token still comes due and is refreshed.
    make_due(&rig, "shop", "orders-token");
    rig.settle().await;
    let second = rig.cluster.secret_now("shop", "orders-token").unwrap();
    assert_ne!(
        annotation(&first, token::FINGERPRINT_ANNOTATION),
        annotation(&second, token::FINGERPRINT_ANNOTATION)
    );
    assert_eq!(
        rig.condition("shop", "reader", "TokenProjected"),
        Some(("True".into(), "Ready".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn an_entra_outage_keeps_the_current_token_and_reports_refresh_delayed() {
    let rig = shop_with_token(json!({"name": "orders-token"})).await;
    make_due(&rig, "shop", "orders-token");
    let before = rig.cluster.secret_now("shop", "orders-token").unwrap();
    *lock(&rig.cosmos.entra_down) = true;
    rig.settle().await;
    assert_eq!(
        rig.condition("shop", "reader", "TokenProjected"),
        Some(("True".into(), "RefreshDelayed".into()))
    );
    assert_eq!(rig.cluster.secret_now("shop", "orders-token"), Some(before));
    *lock(&rig.cosmos.entra_down) = false;
    rig.settle().await;
    assert_eq!(
        rig.condition("shop", "reader", "TokenProjected"),
        Some(("True".into(), "Ready".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn grants_sharing_an_identity_and_scope_share_one_exchange_per_window() {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos_target("db", "acct", "shop", &["reader"]);
    rig.reconcile_target("db").await;
    for i in 0..100 {
        rig.put_grant(
            "shop",
            &format!("g{i}"),
            spec(json!({"name": format!("token-{i}")})),
        );
    }
    rig.settle().await;
    let in_shop = |rig: &Rig| {
        lock(&rig.cluster.secrets)
            .keys()
            .filter(|(ns, _)| ns == "shop")
            .count()
    };
    assert_eq!(in_shop(&rig), 100);
    assert_eq!(exchanges(&rig), 1);
    for i in 0..100 {
        make_due(&rig, "shop", &format!("token-{i}"));
    }
    rig.settle().await;
    assert_eq!(exchanges(&rig), 2, "one exchange for the next window");
    let fingerprints: std::collections::BTreeSet<String> = lock(&rig.cluster.secrets)
        .iter()
        .filter(|((ns, _), _)| ns == "shop")
        .map(|(_, s)| s)
        .map(|s| annotation(s, token::FINGERPRINT_ANNOTATION))
        .collect();
    assert_eq!(
        fingerprints.len(),
        1,
        "every Secret holds the one new token"
    );
}

#[tokio::test(start_paused = true)]
async fn an_explicit_scope_gets_its_own_exchange() {
    let rig =
        shop_with_token(json!({"name": "orders-token", "scope": "api://billing/.default"})).await;
    let scopes = lock(&rig.cosmos.exchange_scopes).clone();
    assert!(
        scopes.contains(&TokenScope::Explicit("api://billing/.default".into())),
        "{scopes:?}"
    );
    let secret = rig.cluster.secret_now("shop", "orders-token").unwrap();
    assert_eq!(text(&secret, token::SCOPE_KEY), "api://billing/.default");
}

#[tokio::test(start_paused = true)]
async fn renaming_or_removing_the_token_secret_deletes_the_one_dbgrant_made() {
    let rig = shop_with_token(json!({"name": "orders-token"})).await;
    rig.put_grant("shop", "reader", spec(json!({"name": "renamed"})));
    rig.settle().await;
    assert!(rig.cluster.secret_now("shop", "orders-token").is_none());
    assert!(rig.cluster.secret_now("shop", "renamed").is_some());
    rig.put_grant(
        "shop",
        "reader",
        json!({"serviceAccountName": "api", "target": "db", "role": "reader"}),
    );
    rig.settle().await;
    assert!(rig.cluster.secret_now("shop", "renamed").is_none());
    assert_eq!(
        rig.condition("shop", "reader", "TokenProjected"),
        Some(("True".into(), "NotRequested".into()))
    );
    assert!(
        rig.grant("shop", "reader")
            .status
            .unwrap()
            .token_expires_at
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn deleting_the_grant_deletes_its_token_secret() {
    let rig = shop_with_token(json!({"name": "orders-token"})).await;
    rig.delete_grant("shop", "reader");
    rig.settle().await;
    assert!(!rig.grant_exists("shop", "reader"));
    assert!(rig.cluster.secret_now("shop", "orders-token").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_secret_write_reaches_the_status() {
    let rig = Rig::new();
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos_target("db", "acct", "shop", &["reader"]);
    rig.reconcile_target("db").await;
    *lock(&rig.cluster.secret_write_fault) = Some(500);
    rig.put_grant("shop", "reader", spec(json!({"name": "orders-token"})));
    rig.reconcile("shop", "reader").await;
    assert_eq!(
        rig.condition("shop", "reader", "TokenProjected"),
        Some(("False".into(), "KubernetesApiError".into()))
    );
    rig.settle().await;
    assert_eq!(
        rig.condition("shop", "reader", "TokenProjected"),
        Some(("True".into(), "Ready".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn workloads_restart_once_per_refreshed_token_and_never_for_a_restart() {
    let rig = shop_with_token(
        json!({"name": "orders-token", "rolloutRestart": [{"kind": "Deployment", "name": "api"}]}),
    )
    .await;
    assert!(
        lock(&rig.cluster.restarts).is_empty(),
        "not for the first token"
    );
    make_due(&rig, "shop", "orders-token");
    rig.settle().await;
    rig.settle().await;
    let restarts = lock(&rig.cluster.restarts).clone();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    let secret = rig.cluster.secret_now("shop", "orders-token").unwrap();
    assert_eq!(
        restarts[0].3,
        annotation(&secret, token::FINGERPRINT_ANNOTATION)
    );
    let rig = rig.restart();
    rig.settle().await;
    assert_eq!(
        lock(&rig.cluster.restarts).len(),
        1,
        "an operator restart restarts nothing"
    );
}

/// Collects everything written through tracing.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn no_token_appears_in_logs_events_status_or_metrics() {
    const CANARY: &str = "canary-7f3c9e1d2b";
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let rig = Rig::new();
    *lock(&rig.cosmos.token_prefix) = Some(format!("{CANARY}."));
    rig.namespace("shop", &[("team", "shop")]);
    rig.workload("shop", "api", ALICE_CLIENT, ALICE);
    rig.cosmos_target("db", "acct", "shop", &["reader"]);
    rig.reconcile_target("db").await;
    rig.put_grant("shop", "reader", spec(json!({"name": "orders-token", "formats": ["CosmosAuthorizationHeader", "PostgresPassword", "AzureCli"], "rolloutRestart": [{"kind": "Deployment", "name": "api"}]})));
    rig.settle().await;
    make_due(&rig, "shop", "orders-token");
    *lock(&rig.cosmos.entra_down) = true;
    rig.settle().await;
    *lock(&rig.cosmos.entra_down) = false;
    rig.settle().await;
    *lock(&rig.cluster.secret_write_fault) = Some(500);
    make_due(&rig, "shop", "orders-token");
    rig.settle().await;
    rig.put_grant("shop", "reader", spec(json!({"name": "other"})));
    rig.settle().await;
    let secret = rig.cluster.secret_now("shop", "other").expect("written");
    assert!(
        text(&secret, token::TOKEN_KEY).starts_with(CANARY),
        "the canary is the token"
    );
    let status = serde_json::to_string(&rig.grant("shop", "reader").status).unwrap();
    let events = format!("{:?}", lock(&rig.cluster.events));
    let metrics = rig.ctx.metrics.encode();
    rig.delete_grant("shop", "reader");
    rig.settle().await;

    let logs = String::from_utf8(lock(&captured.0).clone()).unwrap();
    assert!(
        logs.contains("token Secret written"),
        "the logs were captured"
    );
    for (what, text) in [
        ("logs", &logs),
        ("status", &status),
        ("events", &events),
        ("metrics", &metrics),
    ] {
        assert!(!text.contains(CANARY), "the token leaked into {what}");
    }
}
