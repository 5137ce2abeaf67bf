//! TDS contract tests: the real `SqlBackend` (tiberius inside dbgrant's own TDS 8 strict TLS
//! on rustls/ring, a real certificate chain) against dbgrant-sim's T-SQL stand-in, which
//! signs in with Entra tokens and executes only the statements dbgrant sends. Every effect
//! is checked in the stand-in's catalogue; every refusal by its SQL error number and reason.
//! The stand-in is not SQL Server: these hold the client to the wire, the sign-in rules and
//! the error mapping, not to T-SQL semantics.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::Secret;
use dbgrant::api::{Reason, SqlTarget};
use dbgrant::backend::sql::{SqlBackend, SqlClients};
use dbgrant::backend::{Access, Backend, BackendError, Holding, OperatorToken};
use dbgrant_sim::jwt::{SigningKey, now_secs};
use dbgrant_sim::sql::statements::Shape;
use dbgrant_sim::sql::{AUDIENCE, AUDIENCES, DBO, PrincipalType, SqlServer, Value};
use serde_json::json;
use uuid::Uuid;

const DATABASE: &str = "appdb";

/// A token issuer standing in for Entra: one key, one tenant.
struct Issuer {
    key: Arc<SigningKey>,
    tenant: Uuid,
}

impl Issuer {
    fn new() -> Self {
        Self {
            key: Arc::new(SigningKey::generate().unwrap()),
            tenant: Uuid::new_v4(),
        }
    }

    fn issuer(&self) -> String {
        format!("https://sts.windows.net/{}/", self.tenant)
    }

    /// An app-only token as Entra issues it for a service principal.
    fn token(&self, client_id: Uuid, audience: &str, lifetime: i64) -> String {
        let now = now_secs();
        self.key
            .sign(&json!({
                "aud": audience, "iss": self.issuer(), "iat": now, "nbf": now - 1,
                "exp": now + lifetime, "appid": client_id.to_string(),
                "oid": Uuid::new_v4().to_string(), "tid": self.tenant.to_string(), "ver": "1.0",
            }))
            .unwrap()
    }
}

/// The operator's token, fixed for the test.
struct Fixed(String);

#[async_trait::async_trait]
impl OperatorToken for Fixed {
    async fn token(&self) -> Result<Secret, BackendError> {
        Ok(Secret::new(self.0.clone()))
    }
}

struct Fixture {
    issuer: Issuer,
    server: SqlServer,
    operator: Uuid,
}

impl Fixture {
    /// A stand-in with database `appdb` (a role `app_reader`, a schema `sales`) whose Entra
    /// admin is the operator's identity.
    async fn start() -> Self {
        let issuer = Issuer::new();
        let key = issuer.key.clone();
        let iss = issuer.issuer();
        let server = SqlServer::start(Arc::new(move |token: &str| {
            Ok(key.verify(token, Some(&AUDIENCES), Some(&iss))?)
        }))
        .await
        .unwrap();
        server.create_database(DATABASE);
        server.with_database(DATABASE, |db| {
            db.add_principal("app_reader", PrincipalType::Role, None, None);
            db.add_schema("sales", DBO);
        });
        let operator = Uuid::new_v4();
        server.set_entra_admin("dbgrant-operator", operator);
        Self {
            issuer,
            server,
            operator,
        }
    }

    fn clients_with(&self, token: String, ca_pem: &str) -> Arc<SqlClients> {
        let tls = dbgrant_sim::tls::client_config(ca_pem).unwrap();
        Arc::new(
            SqlClients::new(Arc::new(Fixed(token)), tls)
                .with_timeouts(Duration::from_secs(2), Duration::from_secs(2)),
        )
    }

    fn backend_with(&self, clients: Arc<SqlClients>) -> SqlBackend {
        let target: SqlTarget = serde_json::from_value(json!({
            "kind": "AzureSqlDatabase",
            // The stand-in's certificate names localhost: verified TLS, as against Azure.
            "server": "localhost",
            "port": self.server.port,
            "database": DATABASE,
            "roles": {
                "analyst": {"memberOf": ["app_reader"], "schemas": [{"schema": "sales", "permissions": ["SELECT", "EXECUTE"]}]},
                "broken": {"memberOf": ["no_such_role"]},
            },
        }))
        .unwrap();
        SqlBackend::new("sql-target", target, clients)
    }

    /// The backend as the operator (the server's Entra admin).
    fn backend(&self) -> SqlBackend {
        let token = self.issuer.token(self.operator, AUDIENCE, 600);
        self.backend_with(self.clients_with(token, &self.server.ca_pem))
    }

    /// The stand-in's statements that were not recognised (there must be none).
    fn refused(&self) -> Vec<String> {
        self.server
            .statements()
            .into_iter()
            .filter(|s| s.shape.is_none())
            .map(|s| s.text)
            .collect()
    }
}

fn access(role: &str, client_id: Uuid) -> Access {
    Access {
        principal_id: Uuid::new_v4().to_string(),
        role: role.into(),
        database: None,
        container: None,
        client_id: Some(client_id.to_string()),
    }
}

async fn grant(backend: &SqlBackend, role: &str, client_id: Uuid) -> Result<Holding, BackendError> {
    let holding = backend.holding_for(&access(role, client_id))?;
    backend.grant(&holding).await?;
    Ok(holding)
}

#[tokio::test]
async fn a_grant_creates_the_user_by_sid_and_the_workload_signs_in_with_its_own_token() {
    let f = Fixture::start().await;
    let backend = f.backend();
    let store = backend.prepare().await.expect("the admin may prepare");
    assert!(store.ends_with("/appdb"), "{store}");
    let app = Uuid::new_v4();
    let holding = grant(&backend, "reader", app).await.expect("granted");

    let user = f
        .server
        .user_by_sid(DATABASE, &app)
        .expect("a user with the client id's SID");
    assert_eq!(user.name, app.to_string());
    assert_eq!(user.kind, PrincipalType::EntraUser);
    assert_eq!(
        user.sid.as_deref(),
        Some(&app.to_bytes_le()[..]),
        "SID = client id, uniqueidentifier order"
    );
    // The grant's status names what was made: the user, its SID, the database and server.
    let said = backend.describe_holding(&holding);
    let sid_hex: String = app
        .to_bytes_le()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    for part in [user.name.as_str(), &format!("0x{sid_hex}"), DATABASE] {
        assert!(said.contains(part), "{said:?} names {part}");
    }
    assert!(
        user.record
            .as_deref()
            .is_some_and(|r| r.contains("\"reader\"")),
        "{:?}",
        user.record
    );
    assert_eq!(f.server.roles_of(DATABASE, &app), ["db_datareader"]);

    // Sent as sp_executesql with typed parameters: the name as text, the client id as a GUID.
    let create = f
        .server
        .statements()
        .into_iter()
        .find(|s| matches!(s.shape, Some(Shape::CreateUser(_))))
        .expect("a CREATE USER");
    assert_eq!(create.params[0], Value::Text(app.to_string()));
    assert_eq!(create.params[1], Value::Guid(app));
    assert_eq!(
        create.identity,
        f.operator.to_string(),
        "run as the operator"
    );

    // Verified by the workload's own token; a stranger's is refused at sign-in.
    let own = Secret::new(f.issuer.token(app, AUDIENCE, 600));
    assert!(
        backend
            .probe("", &access("reader", app), &own)
            .await
            .unwrap()
    );
    let stranger = Secret::new(f.issuer.token(Uuid::new_v4(), AUDIENCE, 600));
    assert!(
        !backend
            .probe("", &access("reader", app), &stranger)
            .await
            .unwrap()
    );
    assert_eq!(
        f.server.sign_ins().last().and_then(|s| s.error),
        Some(18456)
    );

    assert_eq!(backend.list_owned().await.unwrap(), vec![holding.clone()]);
    // Granting again changes nothing (every step is guarded).
    let before = f.server.statements().len();
    backend.grant(&holding).await.unwrap();
    let again: Vec<_> = f.server.statements()[before..]
        .iter()
        .map(|s| s.shape)
        .collect();
    assert_eq!(again, [Some(Shape::Observe)], "only the observation ran");

    assert!(backend.revoke(&holding.id).await.unwrap());
    assert!(
        f.server.user_by_sid(DATABASE, &app).is_none(),
        "the last role gone, the user dropped"
    );
    assert!(
        !backend
            .probe("", &access("reader", app), &own)
            .await
            .unwrap()
    );
    assert!(f.refused().is_empty(), "{:?}", f.refused());
}

#[tokio::test]
async fn custom_roles_give_memberships_and_schema_permissions_and_take_back_only_theirs() {
    let f = Fixture::start().await;
    let backend = f.backend();
    let app = Uuid::new_v4();
    let reader = grant(&backend, "reader", app).await.unwrap();
    let analyst = grant(&backend, "analyst", app).await.unwrap();
    let mut roles = f.server.roles_of(DATABASE, &app);
    roles.sort();
    assert_eq!(roles, ["app_reader", "db_datareader"]);
    let perms = |f: &Fixture| {
        f.server.with_database(DATABASE, |db| {
            let id = db.by_sid(&app).map(|p| p.id);
            let mut rows: Vec<(String, char)> = db
                .permissions
                .iter()
                .filter(|p| Some(p.grantee) == id && p.schema == "sales")
                .map(|p| (p.permission.clone(), p.state))
                .collect();
            rows.sort();
            rows
        })
    };
    assert_eq!(perms(&f), [("EXECUTE".into(), 'G'), ("SELECT".into(), 'G')]);

    // Revoking one role leaves the other's membership and the user.
    assert!(backend.revoke(&analyst.id).await.unwrap());
    assert_eq!(f.server.roles_of(DATABASE, &app), ["db_datareader"]);
    assert!(perms(&f).is_empty());
    assert!(f.server.user_by_sid(DATABASE, &app).is_some());

    // An admin's DENY is never granted over, and never lifted by a revoke.
    f.server.with_database(DATABASE, |db| {
        let id = db.by_sid(&app).map(|p| p.id).unwrap();
        db.permissions.push(dbgrant_sim::sql::Permission {
            schema: "sales".into(),
            grantee: id,
            permission: "SELECT".into(),
            state: 'D',
        });
    });
    let analyst = grant(&backend, "analyst", app).await.unwrap();
    assert_eq!(perms(&f), [("EXECUTE".into(), 'G'), ("SELECT".into(), 'D')]);
    backend.revoke(&analyst.id).await.unwrap();
    backend.revoke(&reader.id).await.unwrap();
    assert!(f.server.user_by_sid(DATABASE, &app).is_none());
    assert!(f.refused().is_empty(), "{:?}", f.refused());
}

#[tokio::test]
async fn only_the_servers_ca_is_trusted() {
    let f = Fixture::start().await;
    let other = dbgrant_sim::tls::TlsMaterial::generate("someone else").unwrap();
    let token = f.issuer.token(f.operator, AUDIENCE, 600);
    let backend = f.backend_with(f.clients_with(token, &other.ca_pem));
    let error = backend.prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::AzureUnavailable);
    assert!(error.message.contains("TLS"), "{}", error.message);
    assert!(
        f.server.sign_ins().is_empty(),
        "no TDS byte before TLS was verified"
    );
}

#[tokio::test]
async fn refused_sign_ins_are_18456_and_an_unknown_database_4060() {
    let f = Fixture::start().await;
    let refused = |token: String| {
        let backend = f.backend_with(f.clients_with(token, &f.server.ca_pem));
        async move { backend.prepare().await.unwrap_err() }
    };
    let stranger = refused(f.issuer.token(Uuid::new_v4(), AUDIENCE, 600)).await;
    let expired = refused(f.issuer.token(f.operator, AUDIENCE, -60)).await;
    let wrong_audience = refused(
        f.issuer
            .token(f.operator, "https://management.azure.com/", 600),
    )
    .await;
    let forged = refused(Issuer::new().token(f.operator, AUDIENCE, 600)).await;
    for error in [&stranger, &expired, &wrong_audience, &forged] {
        assert_eq!(error.reason, Reason::TargetNotPrepared, "{}", error.message);
        assert_eq!(error.code.as_deref(), Some("18456"), "{}", error.message);
        assert!(error.message.contains("Login failed"), "{}", error.message);
    }
    // The token without the slash is as good (the `.default` scope's resource).
    let token = f.issuer.token(f.operator, AUDIENCES[1], 600);
    f.backend_with(f.clients_with(token, &f.server.ca_pem))
        .prepare()
        .await
        .expect("both audience spellings sign in");

    let token = f.issuer.token(f.operator, AUDIENCE, 600);
    let target = json!({"kind": "AzureSqlDatabase", "server": "localhost",
        "port": f.server.port, "database": "nodb"});
    let backend = SqlBackend::new(
        "t",
        serde_json::from_value(target).unwrap(),
        f.clients_with(token, &f.server.ca_pem),
    );
    let error = backend.prepare().await.unwrap_err();
    assert_eq!(error.code.as_deref(), Some("4060"), "{}", error.message);
    assert_eq!(error.reason, Reason::TargetNotPrepared);
}

#[tokio::test]
async fn an_operator_without_rights_is_told_what_to_run() {
    let f = Fixture::start().await;
    // Not the admin: a contained user without db_owner.
    let operator = Uuid::new_v4();
    f.server.with_database(DATABASE, |db| {
        db.add_principal(
            "dbgrant-operator",
            PrincipalType::EntraUser,
            Some(operator.to_bytes_le().to_vec()),
            None,
        );
    });
    let token = f.issuer.token(operator, AUDIENCE, 600);
    let backend = f.backend_with(f.clients_with(token, &f.server.ca_pem));
    let error = backend.prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared);
    assert!(
        error.message.contains("no ALTER ANY USER"),
        "{}",
        error.message
    );
    assert!(
        error
            .message
            .contains("database role no_such_role does not exist"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("CREATE USER [dbgrant-operator] FROM EXTERNAL PROVIDER; ALTER ROLE db_owner ADD MEMBER [dbgrant-operator]"),
        "{}",
        error.message
    );
    // Creating a user anyway is the engine's 15247.
    let error = grant(&backend, "reader", Uuid::new_v4()).await.unwrap_err();
    assert_eq!(error.code.as_deref(), Some("15247"), "{}", error.message);
    assert!(f.refused().is_empty(), "{:?}", f.refused());
}

#[tokio::test]
async fn server_errors_map_to_their_reasons() {
    let f = Fixture::start().await;
    let backend = f.backend();
    // A role the database does not have: ALTER ROLE fails with 15151.
    let error = grant(&backend, "broken", Uuid::new_v4()).await.unwrap_err();
    assert_eq!(
        (error.reason, error.code.as_deref()),
        (Reason::TargetNotPrepared, Some("15151"))
    );
    // A name someone else's principal holds: never taken over, nothing created.
    let app = Uuid::new_v4();
    f.server.with_database(DATABASE, |db| {
        db.add_principal(
            &app.to_string(),
            PrincipalType::EntraUser,
            Some(Uuid::new_v4().to_bytes_le().to_vec()),
            None,
        );
    });
    let before = f.server.statements().len();
    let error = grant(&backend, "reader", app).await.unwrap_err();
    assert_eq!(error.reason, Reason::RoleConflict, "{}", error.message);
    assert!(
        f.server.statements()[before..]
            .iter()
            .all(|s| s.shape == Some(Shape::Observe))
    );
    // A user that owns a schema cannot be dropped: 15138, and the grant stays to retry.
    let owner = Uuid::new_v4();
    let holding = grant(&backend, "reader", owner).await.unwrap();
    f.server.with_database(DATABASE, |db| {
        let id = db.by_sid(&owner).map(|p| p.id).unwrap();
        db.add_schema("owned", id);
    });
    let error = backend.revoke(&holding.id).await.unwrap_err();
    assert_eq!(
        (error.reason, error.code.as_deref()),
        (Reason::CleanupFailed, Some("15138"))
    );

    // The rest of the design's table, as the server's ERROR token: number → reason.
    for (number, reason) in [
        (15023, Reason::RoleConflict),
        (33134, Reason::TargetNotPrepared),
        (33130, Reason::TargetNotPrepared),
        (33131, Reason::TargetNotPrepared),
        (37353, Reason::TargetNotPrepared),
        (37545, Reason::TargetNotPrepared),
        (33159, Reason::TargetNotPrepared),
        (15247, Reason::TargetNotPrepared),
        (229, Reason::TargetNotPrepared),
        (297, Reason::TargetNotPrepared),
        (40615, Reason::AzureForbidden),
        (40613, Reason::AzureUnavailable),
        (1205, Reason::AzureUnavailable),
    ] {
        f.server.fail_next(number);
        let error = grant(&backend, "reader", Uuid::new_v4()).await.unwrap_err();
        assert_eq!(error.code, Some(number.to_string()), "{}", error.message);
        assert_eq!(error.reason, reason, "{number}: {}", error.message);
    }
    assert!(f.refused().is_empty(), "{:?}", f.refused());
}

#[tokio::test]
async fn a_server_that_never_answers_gives_a_bounded_timeout() {
    let f = Fixture::start().await;
    let backend = f.backend();
    f.server.set_silent(true);
    let started = std::time::Instant::now();
    let error = backend.prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::AzureUnavailable);
    assert!(
        error.message.contains("no answer within 2s"),
        "{}",
        error.message
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    f.server.set_silent(false);
    f.server.set_silent_statements(true);
    let error = f.backend().prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::AzureUnavailable);
    assert!(
        error.message.contains("no answer within 2s"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn one_redirect_is_followed_and_a_second_refused() {
    let f = Fixture::start().await;
    let backend = f.backend();
    // Azure's gateway sends the client to the node serving the database (here: back to the
    // stand-in itself, where the next sign-in is answered normally).
    f.server.redirect_next("localhost", f.server.port);
    backend.prepare().await.expect("one redirect is followed");
    assert_eq!(
        f.server.sign_ins().len(),
        2,
        "signed in at the gateway, then at the node"
    );

    f.server.redirect_next("localhost", f.server.port);
    f.server.redirect_next("localhost", f.server.port);
    let error = f.backend().prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::AzureUnavailable);
    assert!(
        error.message.contains("redirected twice"),
        "{}",
        error.message
    );
}

/// A backend on `server_id`, reading its Entra admin through `servers`, as the fixture's
/// operator (whose token names no admin: a contained user, or nobody, in the stand-in).
fn backend_on_server(
    f: &Fixture,
    operator: Uuid,
    server_id: &str,
    servers: Arc<dyn dbgrant::backend::sql::admins::SqlServers>,
) -> SqlBackend {
    let token = f.issuer.token(operator, AUDIENCE, 600);
    let tls = dbgrant_sim::tls::client_config(&f.server.ca_pem).unwrap();
    let clients = SqlClients::new(Arc::new(Fixed(token)), tls)
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(2))
        .with_servers(servers);
    let target: SqlTarget = serde_json::from_value(json!({
        "kind": "AzureSqlDatabase", "server": "localhost", "port": f.server.port,
        "database": DATABASE, "serverResourceId": server_id,
    }))
    .unwrap();
    SqlBackend::new("sql-target", target, Arc::new(clients))
}

#[tokio::test]
async fn the_arm_check_comes_before_any_sign_in_and_its_fix_is_named() {
    use dbgrant::backend::sql::admins::InMemorySqlServers;
    let f = Fixture::start().await;
    let server = "/subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/shop/providers/Microsoft.Sql/servers/shop-sql";
    let servers = Arc::new(InMemorySqlServers::default());
    // Neither the server's Entra admin nor a user in the database: the sign-in is refused,
    // and the refusal names the command that makes the operator the admin.
    servers.set(server, None);
    let stranger = Uuid::new_v4();
    let error = backend_on_server(&f, stranger, server, servers.clone())
        .prepare()
        .await
        .unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    assert_eq!(error.code.as_deref(), Some("18456"), "{error}");
    assert!(
        error
            .message
            .contains("SQL server shop-sql has no Microsoft Entra admin"),
        "{error}"
    );
    assert!(
        error.message.contains(
            "az sql server ad-admin create --resource-group shop --server-name shop-sql --display-name dbgrant-operator --object-id "
        ),
        "{error}"
    );
    assert_eq!(servers.calls(), 1);

    // A server ARM does not know: reported before any sign-in.
    let sign_ins = f.server.sign_ins().len();
    let missing = server.replace("shop-sql", "shop-gone");
    let error = backend_on_server(&f, stranger, &missing, servers.clone())
        .prepare()
        .await
        .unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    assert!(error.message.contains("does not exist"), "{error}");
    assert_eq!(f.server.sign_ins().len(), sign_ins, "no sign-in was tried");

    // Not the admin, but a contained user in db_owner: the T-SQL rights suffice.
    f.server.with_database(DATABASE, |db| {
        let id = db.add_principal(
            "dbgrant-operator",
            PrincipalType::EntraUser,
            Some(stranger.to_bytes_le().to_vec()),
            None,
        );
        db.members.insert((16384, id));
    });
    backend_on_server(&f, stranger, server, servers.clone())
        .prepare()
        .await
        .expect("db_owner in the database is enough without being the Entra admin");

    // A managed instance's fix is its own command.
    let mi = server.replace("servers/shop-sql", "managedInstances/shop-mi");
    servers.set(&mi, None);
    let other = Uuid::new_v4();
    let error = backend_on_server(&f, other, &mi, servers)
        .prepare()
        .await
        .unwrap_err();
    assert!(
        error
            .message
            .contains("az sql mi ad-admin create --resource-group shop --managed-instance shop-mi"),
        "{error}"
    );
}

/// The operator's Azure SQL clients as `dbgrant run` builds them (its credential, the ARM
/// client reading servers' admins, TLS trusting azure-sim's and the stand-in's CAs), for
/// `operator` of `azure`.
async fn run_wired_clients(
    azure: &dbgrant_sim::azure::AzureSim,
    operator: &dbgrant_sim::azure::ServicePrincipal,
    sql_ca: &str,
) -> Arc<SqlClients> {
    let config = dbgrant::azure::AzureConfig::custom(
        azure.authority_host().parse().unwrap(),
        azure.arm_endpoint().parse().unwrap(),
        Some(format!("{}\n{sql_ca}", azure.ca_pem())),
        azure.tenant_id(),
        dbgrant::azure::OperatorCredential::ClientSecret {
            client_id: operator.client_id.clone(),
            client_secret: operator.client_secret.clone(),
        },
    );
    dbgrant::backends_for(config, None).await.unwrap().sql
}

#[tokio::test(flavor = "multi_thread")]
async fn prepare_reads_the_servers_entra_admin_in_arm_through_the_real_client() {
    use dbgrant_sim::azure::{AzureSim, AzureSimConfig, ControlPlaneRole};
    let azure = AzureSim::start(AzureSimConfig::default()).await.unwrap();
    let server = SqlServer::start(azure.verifier_for_any(&AUDIENCES))
        .await
        .unwrap();
    server.create_database(DATABASE);
    let operator = azure.create_service_principal("dbgrant-operator");
    let clients = run_wired_clients(&azure, &operator, &server.ca_pem).await;
    let subscription = Uuid::new_v4().to_string();
    let server_id =
        azure.create_sql_server(&subscription, "shop", "Microsoft.Sql/servers", "shop-sql");
    azure.assign_control_plane_role(&operator.principal_id, &server_id, ControlPlaneRole::Reader);
    let backend = |id: &str| {
        let target: SqlTarget = serde_json::from_value(json!({
            "kind": "AzureSqlDatabase", "server": "localhost", "port": server.port,
            "database": DATABASE, "serverResourceId": id,
        }))
        .unwrap();
        SqlBackend::new("sql-target", target, clients.clone())
    };

    // No admin in ARM nor in the engine: the command names the operator's object id.
    let error = backend(&server_id).prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    assert!(
        error.message.contains(&format!(
            "az sql server ad-admin create --resource-group shop --server-name shop-sql --display-name dbgrant-operator --object-id {}",
            operator.principal_id
        )),
        "{error}"
    );

    // Someone else is the admin in ARM: named, with the same fix.
    azure
        .set_sql_admin(&server_id, "alice@contoso.com", &Uuid::new_v4().to_string())
        .unwrap();
    let error = backend(&server_id).prepare().await.unwrap_err();
    assert!(error.message.contains("is alice@contoso.com"), "{error}");

    // The operator made the admin, as `az sql server ad-admin create` does on both sides:
    // ARM names its object id, the engine knows it by its client id.
    azure
        .set_sql_admin(&server_id, "dbgrant-operator", &operator.principal_id)
        .unwrap();
    server.set_entra_admin(
        "dbgrant-operator",
        Uuid::parse_str(&operator.client_id).unwrap(),
    );
    backend(&server_id)
        .prepare()
        .await
        .expect("the admin may prepare");

    // A server ARM does not know.
    let gone = server_id.replace("shop-sql", "shop-gone");
    azure.assign_control_plane_role(&operator.principal_id, &gone, ControlPlaneRole::Reader);
    let sign_ins = server.sign_ins().len();
    let error = backend(&gone).prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    assert!(
        error.message.contains("SQL server") && error.message.contains("does not exist"),
        "{error}"
    );
    assert_eq!(server.sign_ins().len(), sign_ins, "no sign-in was tried");

    // A server the operator may not read: ARM's 403, naming the right it lacks.
    let elsewhere = azure.create_sql_server(
        &Uuid::new_v4().to_string(),
        "other",
        "Microsoft.Sql/servers",
        "other-sql",
    );
    let error = backend(&elsewhere).prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::AzureForbidden, "{error}");
    assert!(
        error
            .message
            .contains("Microsoft.Sql/servers/administrators/read"),
        "{error}"
    );

    // A managed instance and a Synapse workspace are read the same way (the workspace's one
    // administrator, and its absence told from a missing workspace).
    for (kind, name) in [
        ("Microsoft.Sql/managedInstances", "shop-mi"),
        ("Microsoft.Synapse/workspaces", "shop-ws"),
    ] {
        let id = azure.create_sql_server(&subscription, "shop", kind, name);
        azure.assign_control_plane_role(&operator.principal_id, &id, ControlPlaneRole::Reader);
        let servers = clients.servers();
        assert_eq!(
            servers.entra_admin(&id).await.unwrap(),
            dbgrant::backend::sql::admins::ServerAdmin::NotSet,
            "{kind}"
        );
        azure
            .set_sql_admin(&id, "dbgrant-operator", &operator.principal_id)
            .unwrap();
        let dbgrant::backend::sql::admins::ServerAdmin::Set(admin) =
            servers.entra_admin(&id).await.unwrap()
        else {
            panic!("{kind}: no admin read back");
        };
        assert_eq!(admin.sid, operator.principal_id, "{kind}");
        assert_eq!(admin.tenant_id, azure.tenant_id(), "{kind}");
        assert_eq!(admin.azure_ad_only, Some(true), "{kind}");
        let gone = id.replace(name, "gone");
        azure.assign_control_plane_role(&operator.principal_id, &gone, ControlPlaneRole::Reader);
        assert_eq!(
            servers.entra_admin(&gone).await.unwrap(),
            dbgrant::backend::sql::admins::ServerAdmin::ServerNotFound,
            "{kind}"
        );
    }
}
