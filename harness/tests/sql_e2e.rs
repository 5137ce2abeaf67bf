//! End to end on Azure SQL Database: the real controllers, kube-sim, azure-sim, and
//! dbgrant-sim's T-SQL stand-in (a TDS 8 strict endpoint that signs in with azure-sim's
//! Entra tokens and executes only the statements dbgrant sends; not SQL Server). The
//! operator signs in with its own token as the server's Entra admin; the grant is verified by
//! the workload signing in with its own token. Simulated worlds only: the stand-in runs here.

mod support;

use std::time::Duration;

use dbgrant::api::{DatabaseAccessGrant, Reason};
use dbgrant::azure::OperatorCredential;
use dbgrant_sim::sql::{AUDIENCES, PrincipalType, SqlServer, Value};
use kube::api::Api;
use serde_json::json;
use support::world::{World, WorldOptions, is_ready, ready_reason};
use uuid::Uuid;

const DATABASE: &str = "appdb";

/// The stand-in with the platform's roles, and a DatabaseTarget on it.
struct Sql {
    server: SqlServer,
    target: String,
}

impl Sql {
    fn roles_of(&self, client_id: &str) -> Vec<String> {
        let mut roles = self.server.roles_of(DATABASE, &uuid(client_id));
        roles.sort();
        roles
    }

    fn has_user(&self, client_id: &str) -> bool {
        self.server
            .user_by_sid(DATABASE, &uuid(client_id))
            .is_some()
    }

    /// Statements the stand-in did not know (there must be none: it knows dbgrant's).
    fn refused(&self) -> Vec<String> {
        let statements = self.server.statements();
        statements
            .into_iter()
            .filter(|s| s.shape.is_none())
            .map(|s| s.text)
            .collect()
    }
}

fn uuid(id: &str) -> Uuid {
    Uuid::parse_str(id).expect("a GUID")
}

/// Whether this run can have a SQL world; says why not.
fn can_run(test: &str) -> bool {
    if std::env::var("DBGRANT_E2E_KUBECONFIG").is_ok_and(|v| !v.is_empty()) {
        eprintln!(
            "{test}: skipped in real-environment mode: the SQL end-to-end tests need the local T-SQL stand-in and azure-sim's token check"
        );
        return false;
    }
    true
}

async fn sql(world: &mut World, allowed_roles: &[&str]) -> Sql {
    let verify = world
        .sims()
        .expect("simulated")
        .azure
        .verifier_for_any(&AUDIENCES);
    let server = SqlServer::start(verify).await.unwrap();
    server.create_database(DATABASE);
    server.with_database(DATABASE, |db| {
        let reader = db.add_principal("app_reader", PrincipalType::Role, None, None);
        let writer = db.add_principal("app_writer", PrincipalType::Role, None, None);
        // The platform's roles carry the fixed ones (nested membership).
        db.members.insert((16390, reader));
        db.members.insert((16391, writer));
    });
    let config = world.restart_operator_trusting(&server.ca_pem).await;
    let OperatorCredential::ClientSecret { client_id, .. } = &config.credential else {
        panic!("the simulated operator signs in with a client secret");
    };
    // An application's Entra admin SID is its client id.
    server.set_entra_admin("dbgrant-operator", uuid(client_id));
    let target = format!("{}-sql", world.target_name());
    let manifest = json!({
        "apiVersion": "dbgrant.io/v1alpha1",
        "kind": "DatabaseTarget",
        "metadata": {"name": target},
        "spec": {
            "sql": {
                "kind": "AzureSqlDatabase",
                // The stand-in's certificate names localhost: verified TLS, as against Azure.
                "server": "localhost",
                "port": server.port,
                "database": DATABASE,
                "roles": {
                    "analyst": {"memberOf": ["app_reader"]},
                    "editor": {"memberOf": ["app_writer"]},
                },
            },
            "allowedNamespaces": {"matchLabels": {"dbgrant.io/team": world.team()}},
            "allowedRoles": allowed_roles,
        },
    });
    dbgrant_sim::apply::apply(&world.client, &manifest, "default")
        .await
        .unwrap();
    Sql { server, target }
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
async fn a_sql_grant_goes_ready_verified_follows_its_role_and_is_dropped_or_retained() {
    if !can_run("sql_e2e") {
        return;
    }
    let mut world = World::start("sql-life", WorldOptions::default()).await;
    let sql = sql(&mut world, &["analyst", "editor"]).await;
    let app = world.workload("app").await;
    world
        .grant_raw(
            "orders",
            json!({"serviceAccountName": "app", "target": sql.target, "role": "analyst"}),
        )
        .await;
    let grant = world.wait_ready("orders").await;
    assert_eq!(
        condition(&grant, "AccessVerified"),
        Some(("True".into(), "Verified".into())),
        "verified by the workload signing in with its own token"
    );
    // The workload itself signed in (its token's appid is its client id) and was let in.
    assert!(
        sql.server
            .sign_ins()
            .iter()
            .any(|s| s.identity.as_deref() == Some(app.client_id.as_str()) && s.error.is_none()),
        "{:?}",
        sql.server.sign_ins()
    );
    let user = sql
        .server
        .user_by_sid(DATABASE, &uuid(&app.client_id))
        .expect("a contained user with the client id's SID");
    assert_eq!(user.kind, PrincipalType::EntraUser);
    assert_eq!(sql.roles_of(&app.client_id), ["app_reader"]);

    // A new role: the new membership is given and the old one revoked.
    world
        .grant_raw(
            "orders",
            json!({"serviceAccountName": "app", "target": sql.target, "role": "editor"}),
        )
        .await;
    world.wait_ready("orders").await;
    world
        .eventually(
            "the old membership revoked",
            Duration::from_secs(20),
            || {
                let done = sql.roles_of(&app.client_id) == ["app_writer"];
                async move { done.then_some(()) }
            },
        )
        .await;

    // Delete (the default policy): the user goes with the last grant.
    world.delete_grant("orders").await;
    assert!(!sql.has_user(&app.client_id), "the user was dropped");

    // Retain: the user and its membership stay.
    let keeper = world.workload("keeper").await;
    world
        .grant_raw(
            "kept",
            json!({"serviceAccountName": "keeper", "target": sql.target, "role": "analyst", "deletionPolicy": "Retain"}),
        )
        .await;
    world.wait_ready("kept").await;
    world.delete_grant("kept").await;
    assert!(sql.has_user(&keeper.client_id));
    assert_eq!(sql.roles_of(&keeper.client_id), ["app_reader"]);
    assert!(sql.refused().is_empty(), "{:?}", sql.refused());
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_from_a_namespace_the_sql_target_refuses_never_reaches_the_server() {
    if !can_run("sql_e2e") {
        return;
    }
    let mut world = World::start("sql-refused", WorldOptions::default()).await;
    let sql = sql(&mut world, &["analyst"]).await;
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
        &json!({"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant", "metadata": {"name": "sneaky", "namespace": outside}, "spec": {"serviceAccountName": "app", "target": sql.target, "role": "analyst"}}),
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
            json!({"serviceAccountName": "app", "target": sql.target, "role": "analyst"}),
        )
        .await;
    world.wait_ready("allowed").await;
    assert_eq!(sql.roles_of(&app.client_id), ["app_reader"]);
    // The stand-in never saw the refused grant's identity: no statement named it, no
    // sign-in was by it, no user has its SID.
    let outsider = uuid(&identity.client_id);
    let named = |v: &Value| match v {
        Value::Guid(g) => *g == outsider,
        Value::Text(t) => t.contains(&identity.client_id),
        _ => false,
    };
    assert!(
        !sql.server
            .statements()
            .iter()
            .any(|s| s.params.iter().any(named)),
        "a statement named the refused identity"
    );
    assert!(
        !sql.server
            .sign_ins()
            .iter()
            .any(|s| s.identity.as_deref() == Some(identity.client_id.as_str()))
    );
    assert!(!sql.has_user(&identity.client_id));
    assert!(sql.refused().is_empty(), "{:?}", sql.refused());
    world.finish().await;
}
