//! End to end on PostgreSQL: the real controllers, Kubernetes, Azure, and a PostgreSQL server
//! reached only through a token-checking TLS front. The operator signs in with its own Entra
//! token as one of the server's Entra admins (checked in ARM first: the target names the
//! server's ARM id); the grant is verified by the workload signing in with its own token.
//!
//! Two modes, as the world has:
//! - simulated (default): dbgrant-sim's stand-in (a real PostgreSQL and its front) in-process,
//!   the flexible server's ARM side in azure-sim;
//! - real environment (`DBGRANT_E2E_KUBECONFIG` and the world's variables): the server through
//!   these variables only, as a flexible server would be (`scripts/e2e-real-mode` points them
//!   at `pg-front`, a real PostgreSQL and its front run as processes):
//!   - `DBGRANT_E2E_POSTGRES_HOST`, `DBGRANT_E2E_POSTGRES_PORT`: where clients connect (TLS,
//!     verified against the host name);
//!   - `DBGRANT_E2E_POSTGRES_CA_FILE`: optional, a CA bundle the operator must trust for it;
//!   - `DBGRANT_E2E_POSTGRES_ADMIN_ROLE`: the role the tests' principal (`AZURE_CLIENT_ID`) is
//!     an Entra administrator of the server under;
//!   - `DBGRANT_E2E_POSTGRES_ADMIN_DSN`: a libpq connection string (keyword=value) psql uses to
//!     set up each test's database and roles and to read the catalogue (the password, if any,
//!     from `PGPASSWORD`);
//!   - `DBGRANT_E2E_POSTGRES_SERVER_ID`: optional, the server's ARM id (the admin check).
//!
//!   Each test makes its own database and roles (named after the test) and drops them, and the
//!   login roles it left, at the end.

mod support;

use std::time::Duration;

use dbgrant::api::{DatabaseTarget, Reason};
use dbgrant_sim::azure::ControlPlaneRole;
use dbgrant_sim::postgres::{AUDIENCE, Front, RealPostgres, literal};
use kube::api::Api;
use serde_json::json;
use support::databases::{
    apply_target, env, operator_object_id, refused_grant_from_another_team, remove_target,
    trust_and_port, wait_verified,
};
use support::world::{World, WorldOptions};

/// The role name of the operator's Entra admin role on the simulated server.
const OPERATOR_ROLE: &str = "dbgrant";

/// Where the server is and how the tests reach its catalogue.
enum Server {
    /// dbgrant-sim's stand-in, in this process.
    Local { pg: RealPostgres, _front: Front },
    /// Reached through the variables only; psql with this connection string.
    Remote { admin_dsn: String },
}

/// A PostgreSQL server with this test's database and the platform's roles in it, and a
/// DatabaseTarget on them.
struct Postgres {
    server: Server,
    /// The operator's object id, when the test knows it (simulated).
    operator: Option<String>,
    /// The target's `postgres` block.
    spec: serde_json::Value,
    target: String,
    database: String,
    reader: String,
    writer: String,
}

impl Postgres {
    /// Run `sql` in `database` as the platform's admin; psql's unaligned output.
    fn psql(&self, database: &str, sql: &str) -> String {
        match &self.server {
            Server::Local { pg, .. } => pg.psql(database, sql).unwrap().trim().to_string(),
            Server::Remote { admin_dsn } => {
                // A later keyword wins in a libpq connection string; the tests' names need
                // no quoting there.
                let dsn = format!("{admin_dsn} dbname={database}");
                let out = std::process::Command::new("psql")
                    .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", &dsn, "-c", sql])
                    .output()
                    .expect("psql runs");
                assert!(
                    out.status.success(),
                    "psql: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
        }
    }

    fn login_exists(&self, principal_id: &str) -> bool {
        self.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = {}",
                literal(&principal_id.to_ascii_lowercase())
            ),
        ) == "1"
    }

    fn is_member(&self, principal_id: &str, of: &str) -> bool {
        self.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                 JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = {} AND g.rolname = {}",
                literal(&principal_id.to_ascii_lowercase()),
                literal(of)
            ),
        ) == "1"
    }

    /// Entra principals the server knows for `principal_id` (any role name).
    fn principals_of(&self, principal_id: &str) -> String {
        self.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pgaadauth_list_principals(false) WHERE lower(objectid) = {}",
                literal(&principal_id.to_ascii_lowercase())
            ),
        )
    }

    /// Against a shared server, leave nothing behind: the target's grants and the target
    /// (their finalizers run while the operator does), this test's database and roles, and
    /// the login roles of `principals` (retained ones). In-process, dropping the server does.
    async fn finish(self, world: World, principals: &[&str]) {
        if let Server::Remote { .. } = &self.server {
            remove_target(
                &world,
                &self.target,
                "the PostgreSQL grants and target gone",
            )
            .await;
        }
        // The operator stops first: its pooled sessions would hold the database open.
        world.finish().await;
        if let Server::Remote { .. } = &self.server {
            self.psql(
                "postgres",
                &format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quoted(&self.database)
                ),
            );
            for role in principals
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .chain([self.reader.clone(), self.writer.clone()])
            {
                self.psql(
                    "postgres",
                    &format!("DROP ROLE IF EXISTS {}", quoted(&role)),
                );
            }
        }
    }
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether this run can have a PostgreSQL world; says why not.
fn can_run(test: &str) -> bool {
    if env("DBGRANT_E2E_KUBECONFIG").is_some() {
        if env("DBGRANT_E2E_POSTGRES_HOST").is_none() {
            // Not a missing tool: a real environment without a PostgreSQL server to use.
            eprintln!(
                "{test}: skipped in real-environment mode: set DBGRANT_E2E_POSTGRES_HOST, _PORT, _ADMIN_ROLE and _ADMIN_DSN (README: End-to-end tests against a real cluster and subscription)"
            );
            return false;
        }
        return true;
    }
    if RealPostgres::binaries().is_none() {
        dbgrant_sim::prerequisite_missing(
            "PostgreSQL (the postgresql Debian package) is not installed",
        );
        return false;
    }
    true
}

/// The server (started here, or the one the variables name), the operator trusting its TLS
/// and made (or found) one of its Entra admins, this test's database and roles, and a
/// DatabaseTarget on them allowing `allowed_roles`.
async fn postgres(world: &mut World, allowed_roles: &[&str]) -> Postgres {
    // Unique per test (a shared server holds every test's), and never `pg_`: reserved.
    let prefix = format!("app_{}", world.team().replace('-', "_"));
    let database = format!("{prefix}_db");
    let (reader, writer) = (format!("{prefix}_reader"), format!("{prefix}_writer"));
    let (server, host, port, admin_role, server_id, operator) = if env("DBGRANT_E2E_KUBECONFIG")
        .is_some()
    {
        let need = |n: &str| env(n).unwrap_or_else(|| panic!("{n} must be set"));
        let port = trust_and_port(world, "DBGRANT_E2E_POSTGRES", 5432).await;
        (
            Server::Remote {
                admin_dsn: need("DBGRANT_E2E_POSTGRES_ADMIN_DSN"),
            },
            need("DBGRANT_E2E_POSTGRES_HOST"),
            port,
            need("DBGRANT_E2E_POSTGRES_ADMIN_ROLE"),
            env("DBGRANT_E2E_POSTGRES_SERVER_ID"),
            None,
        )
    } else {
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
        let operator =
            operator_object_id(world, &config, &format!("{AUDIENCE}/.default"), AUDIENCE).await;
        pg.create_entra_admin(OPERATOR_ROLE, &operator).unwrap();
        // The flexible server's ARM side: the operator one of its Entra admins, allowed to
        // read them (the target's serverResourceId check).
        let azure = &world.sims().expect("simulated").azure;
        let server_id = azure.create_postgres_server(
            &uuid::Uuid::new_v4().to_string(),
            "e2e",
            &world.team().replace('_', "-"),
        );
        azure
            .add_postgres_administrator(&server_id, &operator, OPERATOR_ROLE, "ServicePrincipal")
            .unwrap();
        azure.assign_control_plane_role(&operator, &server_id, ControlPlaneRole::Reader);
        let port = front.port;
        (
            Server::Local { pg, _front: front },
            // The front's certificate names localhost: verified TLS, as against Azure.
            "localhost".to_string(),
            port,
            OPERATOR_ROLE.to_string(),
            Some(server_id),
            Some(operator),
        )
    };
    let target = format!("{}-pg", world.target_name());
    let mut pg = Postgres {
        server,
        operator,
        spec: serde_json::Value::Null,
        target: target.clone(),
        database: database.clone(),
        reader: reader.clone(),
        writer: writer.clone(),
    };
    pg.psql(
        "postgres",
        &format!("CREATE DATABASE {}", quoted(&database)),
    );
    pg.psql(
        &database,
        &format!(
            "CREATE SCHEMA sales; CREATE TABLE sales.items (id int); \
             CREATE ROLE {r} NOLOGIN; GRANT USAGE ON SCHEMA sales TO {r}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA sales TO {r}; \
             CREATE ROLE {w} NOLOGIN; GRANT USAGE ON SCHEMA sales TO {w}; \
             GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA sales TO {w}; \
             GRANT {r}, {w} TO {a} WITH ADMIN OPTION;",
            r = quoted(&reader),
            w = quoted(&writer),
            a = quoted(&admin_role),
        ),
    );
    let mut spec = json!({
        "server": host,
        "port": port,
        "adminRole": admin_role,
        "database": database,
        "roles": {
            "reader": {"memberOf": [reader]},
            "contributor": {"memberOf": [writer]},
        },
    });
    if let Some(server_id) = server_id {
        spec["serverResourceId"] = json!(server_id);
    }
    apply_target(world, &target, "postgres", &spec, allowed_roles).await;
    pg.spec = spec;
    pg
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
    wait_verified(&world, "orders").await;
    assert!(pg.login_exists(&app.principal_id));
    assert!(pg.is_member(&app.principal_id, &pg.reader));
    assert!(!pg.is_member(&app.principal_id, &pg.writer));

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
                let done = pg.is_member(&app.principal_id, &pg.writer)
                    && !pg.is_member(&app.principal_id, &pg.reader);
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
    assert!(pg.is_member(&keeper.principal_id, &pg.reader));
    pg.finish(world, &[&keeper.principal_id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_from_a_namespace_the_postgres_target_refuses_never_reaches_the_server() {
    if !can_run("postgres_e2e") {
        return;
    }
    let mut world = World::start("pg-refused", WorldOptions::default()).await;
    let pg = postgres(&mut world, &["reader"]).await;
    // The team's own grant on the same target goes through, so the refusal was the policy's.
    let (identity, app) = refused_grant_from_another_team(&world, &pg.target, "reader").await;
    assert!(pg.is_member(&app.principal_id, &pg.reader));
    assert_eq!(
        pg.principals_of(&identity.principal_id),
        "0",
        "no login role was ever made for the refused grant's identity"
    );
    assert!(!pg.login_exists(&identity.principal_id));
    pg.finish(world, &[]).await;
}

/// The target's Ready condition: (status, reason, message).
async fn target_ready(world: &World, name: &str) -> Option<(String, String, String)> {
    let targets: Api<DatabaseTarget> = Api::all(world.client.clone());
    let target = targets.get_opt(name).await.ok()??;
    target
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status, c.reason, c.message))
}

/// The target's Ready condition once its status is `status` (`what` names the wait).
async fn target_ready_becomes(
    world: &World,
    name: &str,
    status: &str,
    what: &str,
    limit: Duration,
) -> (String, String, String) {
    world
        .eventually(what, limit, || async move {
            target_ready(world, name)
                .await
                .filter(|(now, _, _)| now == status)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_whose_server_lacks_the_operator_as_entra_admin_says_how_to_add_it() {
    if !can_run("postgres_e2e") {
        return;
    }
    let mut world = World::start("pg-admin", WorldOptions::default()).await;
    let pg = postgres(&mut world, &["reader"]).await;
    let Some(sims) = world.sims() else {
        // A real subscription's server cannot be made to lack its admin by the test.
        pg.finish(world, &[]).await;
        return;
    };
    // A second server in ARM the operator may read, where nobody made it an administrator.
    let azure = &sims.azure;
    let server = azure.create_postgres_server(&uuid::Uuid::new_v4().to_string(), "e2e", "bare-pg");
    let operator = pg
        .operator
        .clone()
        .expect("simulated: the operator's object id is known");
    azure.assign_control_plane_role(&operator, &server, ControlPlaneRole::Reader);
    let mut spec = pg.spec.clone();
    spec["serverResourceId"] = json!(server);
    let name = format!("{}-bare", pg.target);
    apply_target(&world, &name, "postgres", &spec, &["reader"]).await;
    let (_, reason, message) = target_ready_becomes(
        &world,
        &name,
        "False",
        "the bare server's target not prepared",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(reason, Reason::TargetNotPrepared.as_str(), "{message}");
    assert!(
        message.contains("az postgres flexible-server microsoft-entra-admin create --resource-group e2e --server-name bare-pg --display-name dbgrant"),
        "{message}"
    );
    assert!(
        message.contains(&format!("--object-id {operator}")),
        "{message}"
    );
    // The platform runs the command (its ARM half here): the target goes Ready.
    azure
        .add_postgres_administrator(&server, &operator, OPERATOR_ROLE, "ServicePrincipal")
        .unwrap();
    target_ready_becomes(
        &world,
        &name,
        "True",
        "the bare server's target Ready",
        Duration::from_secs(30),
    )
    .await;
    pg.finish(world, &[]).await;
}
