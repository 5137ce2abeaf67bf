//! End to end on Azure SQL Database: the real controllers, Kubernetes, Azure, and a T-SQL
//! server. The operator signs in with its own token as the server's Entra admin (checked in
//! ARM first: the target names the server's ARM id); the grant is verified by the workload
//! signing in with its own token.
//!
//! Two modes, as the world has:
//! - simulated (default): dbgrant-sim's T-SQL stand-in (a TDS 8 strict endpoint that signs in
//!   with azure-sim's Entra tokens and executes only the statements dbgrant sends; not SQL
//!   Server) in-process, the server's ARM side in azure-sim;
//! - real environment (`DBGRANT_E2E_KUBECONFIG` and the world's variables): the server through
//!   these variables only, as an Azure SQL Database would be (`scripts/e2e-real-mode` points
//!   them at `tsql-front`, the stand-in run as a process):
//!   - `DBGRANT_E2E_SQL_HOST`, `DBGRANT_E2E_SQL_PORT`: where clients connect (TDS 8 strict,
//!     the certificate verified against the host name; port 1433 by default);
//!   - `DBGRANT_E2E_SQL_CA_FILE`: optional, a CA bundle the operator must trust for it;
//!   - `DBGRANT_E2E_SQL_DATABASE`: a database the tests' principal (`AZURE_CLIENT_ID`) may
//!     manage users in: the server's Entra admin, or db_owner there;
//!   - `DBGRANT_E2E_SQL_SERVER_ID`: optional, the server's ARM id (the admin check).
//!
//!   The tests share the database and use only its fixed roles (db_datareader,
//!   db_datawriter), each with identities and a target of its own; what a test made (users of
//!   retained grants too) is removed at its end, through dbgrant's own statements.

mod support;

use std::sync::Arc;
use std::time::Duration;

use dbgrant::api::SqlTarget;
use dbgrant::azure::OperatorCredential;
use dbgrant::backend::sql::{SqlBackend, SqlClients, tsql};
use dbgrant::backend::{Access, Backend};
use dbgrant_sim::azure::ControlPlaneRole;
use dbgrant_sim::sql::{AUDIENCE, AUDIENCES, SqlServer, Value};
use serde_json::json;
use support::databases::{
    apply_target, env, operator_object_id, refused_grant_from_another_team, remove_target,
    trust_and_port, wait_verified,
};
use support::world::{World, WorldOptions};
use uuid::Uuid;

/// The database of the in-process stand-in.
const LOCAL_DATABASE: &str = "appdb";

/// Where the server is.
enum Server {
    /// dbgrant-sim's stand-in, in this process: its catalogue and logs are at hand.
    Local(SqlServer),
    /// Reached through the variables only: read with dbgrant's own statements, as the tests'
    /// principal.
    Remote(Arc<SqlClients>),
}

/// A T-SQL server's database with a DatabaseTarget on it.
struct Sql {
    server: Server,
    target: String,
    spec: serde_json::Value,
    host: String,
    port: u16,
    database: String,
}

impl Sql {
    /// The principal with `client_id`'s SID (its name), and its direct roles, read in the
    /// catalogue.
    async fn user(&self, client_id: &str) -> (Option<String>, Vec<String>) {
        let cid = uuid(client_id);
        let (name, mut roles) = match &self.server {
            Server::Local(server) => (
                server.user_by_sid(&self.database, &cid).map(|u| u.name),
                server.roles_of(&self.database, &cid),
            ),
            Server::Remote(clients) => {
                let mut session = clients
                    .session(&self.host, self.port, &self.database)
                    .await
                    .expect("the tests' principal signs in");
                let sets = clients
                    .run(
                        session.client(),
                        "reading a user",
                        &tsql::observe(&cid.to_string(), cid),
                    )
                    .await
                    .expect("the observation runs");
                let name = sets.first().into_iter().flatten().find_map(|row| {
                    (row.get::<i32, _>(3) == Some(1))
                        .then(|| row.get::<&str, _>(0).unwrap_or_default().to_string())
                });
                let roles = sets
                    .get(1)
                    .into_iter()
                    .flatten()
                    .filter_map(|row| row.get::<&str, _>(0).map(str::to_string))
                    .collect();
                (name, roles)
            }
        };
        roles.sort();
        (name, roles)
    }

    async fn roles_of(&self, client_id: &str) -> Vec<String> {
        self.user(client_id).await.1
    }

    async fn has_user(&self, client_id: &str) -> bool {
        self.user(client_id).await.0.is_some()
    }

    /// The in-process stand-in, when the server is one.
    fn local(&self) -> Option<&SqlServer> {
        match &self.server {
            Server::Local(server) => Some(server),
            Server::Remote(_) => None,
        }
    }

    /// Statements the stand-in did not know (there must be none: it knows dbgrant's).
    fn refused(&self) -> Vec<String> {
        self.local()
            .map(|server| {
                server
                    .statements()
                    .into_iter()
                    .filter(|s| s.shape.is_none())
                    .map(|s| s.text)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Against a shared server, leave nothing behind: the target's grants and the target
    /// (their finalizers run while the operator does), then the users of `retained` grants
    /// (client id, role), revoked with dbgrant's own statements. In-process, dropping the
    /// stand-in does.
    async fn finish(self, world: World, retained: &[(&str, &str)]) {
        if let Server::Remote(clients) = &self.server {
            remove_target(&world, &self.target, "the SQL grants and target gone").await;
            let spec: SqlTarget = serde_json::from_value(self.spec.clone()).unwrap();
            let backend = SqlBackend::new(&self.target, spec, clients.clone());
            for (client_id, role) in retained {
                let access = Access {
                    principal_id: Uuid::new_v4().to_string(),
                    role: (*role).to_string(),
                    database: None,
                    container: None,
                    client_id: Some((*client_id).to_string()),
                };
                let holding = backend.holding_for(&access).unwrap();
                if let Err(error) = backend.revoke(&holding.id).await {
                    eprintln!("{}: user {client_id} left behind: {error}", self.target);
                }
            }
        }
        world.finish().await;
    }
}

fn uuid(id: &str) -> Uuid {
    Uuid::parse_str(id).expect("a GUID")
}

/// Whether this run can have a SQL world; says why not.
fn can_run(test: &str) -> bool {
    if env("DBGRANT_E2E_KUBECONFIG").is_some() && env("DBGRANT_E2E_SQL_HOST").is_none() {
        // Not a missing tool: a real environment without a SQL server to use.
        eprintln!(
            "{test}: skipped in real-environment mode: set DBGRANT_E2E_SQL_HOST and DBGRANT_E2E_SQL_DATABASE (README: End-to-end tests against a real cluster and subscription)"
        );
        return false;
    }
    true
}

/// The server (started here, or the one the variables name), the operator trusting its TLS
/// and its Entra admin (in ARM as well, when the target names the server's ARM id), and a
/// DatabaseTarget on its database allowing `allowed_roles`.
async fn sql(world: &mut World, allowed_roles: &[&str]) -> Sql {
    let (server, host, port, database, server_id) = if env("DBGRANT_E2E_KUBECONFIG").is_some() {
        let need = |n: &str| env(n).unwrap_or_else(|| panic!("{n} must be set"));
        let port = trust_and_port(world, "DBGRANT_E2E_SQL", 1433).await;
        // The tests' principal reads the catalogue as the operator signs in: same settings.
        let clients = dbgrant::backends_for(world.operator_config().clone(), None)
            .await
            .unwrap()
            .sql;
        (
            Server::Remote(clients),
            need("DBGRANT_E2E_SQL_HOST"),
            port,
            need("DBGRANT_E2E_SQL_DATABASE"),
            env("DBGRANT_E2E_SQL_SERVER_ID"),
        )
    } else {
        let verify = world
            .sims()
            .expect("simulated")
            .azure
            .verifier_for_any(&AUDIENCES);
        let server = SqlServer::start(verify).await.unwrap();
        server.create_database(LOCAL_DATABASE);
        let config = world.restart_operator_trusting(&server.ca_pem).await;
        let OperatorCredential::ClientSecret { client_id, .. } = &config.credential else {
            panic!("the simulated operator signs in with a client secret");
        };
        // The engine knows an application admin by its client id, ARM by its object id.
        server.set_entra_admin("dbgrant-operator", uuid(client_id));
        let object_id = operator_object_id(
            world,
            &config,
            "https://database.windows.net/.default",
            AUDIENCE,
        )
        .await;
        let azure = &world.sims().expect("simulated").azure;
        let server_id = azure.create_sql_server(
            &Uuid::new_v4().to_string(),
            "e2e",
            "Microsoft.Sql/servers",
            &format!("{}-sql", world.team()),
        );
        azure
            .set_sql_admin(&server_id, "dbgrant-operator", &object_id)
            .unwrap();
        azure.assign_control_plane_role(&object_id, &server_id, ControlPlaneRole::Reader);
        let port = server.port;
        (
            Server::Local(server),
            // The stand-in's certificate names localhost: verified TLS, as against Azure.
            "localhost".to_string(),
            port,
            LOCAL_DATABASE.to_string(),
            Some(server_id),
        )
    };
    let target = format!("{}-sql", world.target_name());
    let mut spec = json!({
        "kind": "AzureSqlDatabase",
        "server": host,
        "port": port,
        "database": database,
        // Fixed roles only: a shared database has them without any setup.
        "roles": {
            "analyst": {"memberOf": ["db_datareader"]},
            "editor": {"memberOf": ["db_datawriter"]},
        },
    });
    if let Some(id) = server_id {
        spec["serverResourceId"] = json!(id);
    }
    apply_target(world, &target, "sql", &spec, allowed_roles).await;
    Sql {
        server,
        target,
        spec,
        host,
        port,
        database,
    }
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
    wait_verified(&world, "orders").await;
    if let Some(server) = sql.local() {
        // The workload itself signed in (its token's appid is its client id) and was let in.
        assert!(
            server.sign_ins().iter().any(
                |s| s.identity.as_deref() == Some(app.client_id.as_str()) && s.error.is_none()
            ),
            "{:?}",
            server.sign_ins()
        );
        let user = server
            .user_by_sid(&sql.database, &uuid(&app.client_id))
            .expect("a contained user with the client id's SID");
        assert_eq!(user.kind, dbgrant_sim::sql::PrincipalType::EntraUser);
    }
    assert!(
        sql.has_user(&app.client_id).await,
        "a contained user with the client id's SID"
    );
    assert_eq!(sql.roles_of(&app.client_id).await, ["db_datareader"]);

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
                let (sql, client_id) = (&sql, app.client_id.clone());
                async move { (sql.roles_of(&client_id).await == ["db_datawriter"]).then_some(()) }
            },
        )
        .await;

    // Delete (the default policy): the user goes with the last grant.
    world.delete_grant("orders").await;
    assert!(!sql.has_user(&app.client_id).await, "the user was dropped");

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
    assert!(sql.has_user(&keeper.client_id).await);
    assert_eq!(sql.roles_of(&keeper.client_id).await, ["db_datareader"]);
    assert!(sql.refused().is_empty(), "{:?}", sql.refused());
    sql.finish(world, &[(keeper.client_id.as_str(), "analyst")])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_from_a_namespace_the_sql_target_refuses_never_reaches_the_server() {
    if !can_run("sql_e2e") {
        return;
    }
    let mut world = World::start("sql-refused", WorldOptions::default()).await;
    let sql = sql(&mut world, &["analyst"]).await;
    // The team's own grant on the same target goes through, so the refusal was the policy's.
    let (identity, app) = refused_grant_from_another_team(&world, &sql.target, "analyst").await;
    assert_eq!(sql.roles_of(&app.client_id).await, ["db_datareader"]);
    if let Some(server) = sql.local() {
        // The stand-in never saw the refused grant's identity: no statement named it, no
        // sign-in was by it.
        let outsider = uuid(&identity.client_id);
        let named = |v: &Value| match v {
            Value::Guid(g) => *g == outsider,
            Value::Text(t) => t.contains(&identity.client_id),
            _ => false,
        };
        assert!(
            !server
                .statements()
                .iter()
                .any(|s| s.params.iter().any(named)),
            "a statement named the refused identity"
        );
        assert!(
            !server
                .sign_ins()
                .iter()
                .any(|s| s.identity.as_deref() == Some(identity.client_id.as_str()))
        );
    }
    assert!(!sql.has_user(&identity.client_id).await);
    assert!(sql.refused().is_empty(), "{:?}", sql.refused());
    sql.finish(world, &[]).await;
}
