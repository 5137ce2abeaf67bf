//! End to end on PostgreSQL: the real controllers, kube-sim, azure-sim, and a real PostgreSQL
//! (dbgrant-sim's stand-in) reached only through its token-checking TLS front. The operator
//! signs in with its own Entra token as the server's Entra admin; the grant is verified by the
//! workload signing in with its own token. Simulated worlds only: the stand-in runs here.

mod support;

use std::time::Duration;

use dbgrant::api::{DatabaseAccessGrant, Reason};
use dbgrant::azure::OperatorCredential;
use dbgrant_sim::postgres::{AUDIENCE, Front, RealPostgres, literal};
use kube::api::Api;
use serde_json::json;
use support::world::{World, WorldOptions, is_ready, ready_reason};

/// The role name of the operator's Entra admin role on the server.
const OPERATOR_ROLE: &str = "dbgrant";
const DATABASE: &str = "appdb";

/// A PostgreSQL stand-in with the platform's setup, a DatabaseTarget on it, and the world's
/// operator restarted to trust the front and made an Entra admin of the server.
struct Postgres {
    pg: RealPostgres,
    _front: Front,
    target: String,
}

impl Postgres {
    fn read(&self, database: &str, sql: &str) -> String {
        self.pg.psql(database, sql).unwrap().trim().to_string()
    }

    fn login_exists(&self, principal_id: &str) -> bool {
        self.read(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = {}",
                literal(&principal_id.to_ascii_lowercase())
            ),
        ) == "1"
    }

    fn is_member(&self, principal_id: &str, of: &str) -> bool {
        self.read(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                 JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = {} AND g.rolname = {}",
                literal(&principal_id.to_ascii_lowercase()),
                literal(of)
            ),
        ) == "1"
    }

    /// Entra principals the stand-in knows for `principal_id` (any role name).
    fn principals_of(&self, principal_id: &str) -> String {
        self.read(
            "postgres",
            &format!(
                "SELECT count(*) FROM pgaadauth_list_principals(false) WHERE lower(objectid) = {}",
                literal(&principal_id.to_ascii_lowercase())
            ),
        )
    }
}

/// Whether this run can have a PostgreSQL world; says why not.
fn can_run(test: &str) -> bool {
    if std::env::var("DBGRANT_E2E_KUBECONFIG").is_ok_and(|v| !v.is_empty()) {
        eprintln!(
            "{test}: skipped in real-environment mode: the PostgreSQL end-to-end tests need the local PostgreSQL stand-in and azure-sim's token check (a real flexible server is tested by tests/postgres_real_server.rs)"
        );
        return false;
    }
    if RealPostgres::binaries().is_none() {
        dbgrant_sim::prerequisite_missing(
            "PostgreSQL (the postgresql Debian package) is not installed",
        );
        return false;
    }
    true
}

/// The operator's object id: its own token for PostgreSQL, read by azure-sim's check.
async fn operator_object_id(world: &World, config: &dbgrant::azure::AzureConfig) -> String {
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
    let scope = format!("{AUDIENCE}/.default")
        .replace(':', "%3A")
        .replace('/', "%2F");
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
    let claims = azure.verifier_for(AUDIENCE)(token).unwrap();
    claims["oid"].as_str().expect("an oid").to_string()
}

async fn postgres(world: &mut World, allowed_roles: &[&str]) -> Postgres {
    let pg = tokio::task::spawn_blocking(RealPostgres::start)
        .await
        .unwrap()
        .unwrap();
    let verify = world
        .sims()
        .expect("simulated")
        .azure
        .verifier_for(AUDIENCE);
    let front = pg.front(pg.token_check(move |t| verify(t))).await.unwrap();
    let config = world.restart_operator_trusting(&front.ca_pem).await;
    let operator = operator_object_id(world, &config).await;
    pg.create_entra_admin(OPERATOR_ROLE, &operator).unwrap();
    pg.psql("postgres", &format!("CREATE DATABASE {DATABASE}"))
        .unwrap();
    pg.psql(
        DATABASE,
        "CREATE SCHEMA sales; CREATE TABLE sales.items (id int); \
         CREATE ROLE app_reader NOLOGIN; GRANT USAGE ON SCHEMA sales TO app_reader; \
         GRANT SELECT ON ALL TABLES IN SCHEMA sales TO app_reader; \
         CREATE ROLE app_writer NOLOGIN; GRANT USAGE ON SCHEMA sales TO app_writer; \
         GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA sales TO app_writer; \
         GRANT app_reader, app_writer TO dbgrant WITH ADMIN OPTION;",
    )
    .unwrap();
    let target = format!("{}-pg", world.target_name());
    let manifest = json!({
        "apiVersion": "dbgrant.io/v1alpha1",
        "kind": "DatabaseTarget",
        "metadata": {"name": target},
        "spec": {
            "postgres": {
                // The front's certificate names localhost: verified TLS, as against Azure.
                "server": "localhost",
                "port": front.port,
                "adminRole": OPERATOR_ROLE,
                "database": DATABASE,
                "roles": {
                    "reader": {"memberOf": ["app_reader"]},
                    "contributor": {"memberOf": ["app_writer"]},
                },
            },
            "allowedNamespaces": {"matchLabels": {"dbgrant.io/team": world.team()}},
            "allowedRoles": allowed_roles,
        },
    });
    dbgrant_sim::apply::apply(&world.client, &manifest, "default")
        .await
        .unwrap();
    Postgres {
        pg,
        _front: front,
        target,
    }
}

fn condition(grant: &DatabaseAccessGrant, type_: &str) -> Option<(String, String)> {
    grant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_grant_goes_ready_verified_follows_its_role_and_is_dropped_or_retained() {
    if !can_run("postgres_e2e") {
        return;
    }
    let mut world = World::start("pg-life", WorldOptions::default()).await;
    let pg = postgres(&mut world, &["reader", "contributor"]).await;
    let app = world.workload("app").await;
    // `World::grant` names the world's Cosmos DB target; this one is on PostgreSQL.
    world
        .grant_raw(
            "orders",
            json!({"serviceAccountName": "app", "target": pg.target, "role": "reader"}),
        )
        .await;
    let grant = world.wait_ready("orders").await;
    assert_eq!(
        condition(&grant, "AccessVerified"),
        Some(("True".into(), "Verified".into())),
        "verified by the workload signing in with its own token"
    );
    assert!(pg.login_exists(&app.principal_id));
    assert!(pg.is_member(&app.principal_id, "app_reader"));
    assert!(!pg.is_member(&app.principal_id, "app_writer"));

    // A new role: the new membership is given and the old one revoked.
    world
        .grant_raw(
            "orders",
            json!({"serviceAccountName": "app", "target": pg.target, "role": "contributor"}),
        )
        .await;
    world.wait_ready("orders").await;
    world
        .eventually(
            "the old membership revoked",
            Duration::from_secs(20),
            || {
                let done = pg.is_member(&app.principal_id, "app_writer")
                    && !pg.is_member(&app.principal_id, "app_reader");
                async move { done.then_some(()) }
            },
        )
        .await;

    // Delete (the default policy): the login role goes with the last grant.
    world.delete_grant("orders").await;
    assert!(
        !pg.login_exists(&app.principal_id),
        "the login role was dropped"
    );

    // Retain: the login and its membership stay.
    let keeper = world.workload("keeper").await;
    world
        .grant_raw(
            "kept",
            json!({"serviceAccountName": "keeper", "target": pg.target, "role": "reader", "deletionPolicy": "Retain"}),
        )
        .await;
    world.wait_ready("kept").await;
    world.delete_grant("kept").await;
    assert!(pg.login_exists(&keeper.principal_id));
    assert!(pg.is_member(&keeper.principal_id, "app_reader"));
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_from_a_namespace_the_postgres_target_refuses_never_reaches_the_server() {
    if !can_run("postgres_e2e") {
        return;
    }
    let mut world = World::start("pg-refused", WorldOptions::default()).await;
    let pg = postgres(&mut world, &["reader"]).await;
    // A namespace of another team, with a working identity of its own.
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
        &json!({"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant", "metadata": {"name": "sneaky", "namespace": outside}, "spec": {"serviceAccountName": "app", "target": pg.target, "role": "reader"}}),
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
    // An allowed grant on the same target goes through, so the refusal was the policy's.
    let app = world.workload("app").await;
    world
        .grant_raw(
            "allowed",
            json!({"serviceAccountName": "app", "target": pg.target, "role": "reader"}),
        )
        .await;
    world.wait_ready("allowed").await;
    assert!(pg.is_member(&app.principal_id, "app_reader"));
    assert_eq!(
        pg.principals_of(&identity.principal_id),
        "0",
        "no login role was ever made for the refused grant's identity"
    );
    assert!(!pg.login_exists(&identity.principal_id));
    world.finish().await;
}
