//! The PostgreSQL backend against a real PostgreSQL: Debian's server from dbgrant-sim's
//! stand-in, reached only through its token-checking TLS front, the operator signing in with
//! its own token from azure-sim. Everything is checked in the real catalogue (`pg_roles`,
//! `pg_auth_members`, `has_table_privilege`), and the workload signs in with its own token.

use std::collections::BTreeMap;
use std::sync::Arc;

use azure_core::credentials::Secret;
use dbgrant::api::{PostgresRole, PostgresTarget, Reason, SchemaPrivileges, TablePrivilege};
use dbgrant::azure::postgres::AzureFlexibleServers;
use dbgrant::azure::{AzureConfig, AzureCosmos, OperatorCredential};
use dbgrant::backend::OperatorToken;
use dbgrant::backend::postgres::admins::InMemoryFlexibleServers;
use dbgrant::backend::postgres::{FlexibleServers, PostgresBackend, PostgresClients};
use dbgrant::backend::{Access, Backend, BackendError, Holding};
use dbgrant_sim::azure::{AzureSim, AzureSimConfig, ControlPlaneRole, ServicePrincipal};
use dbgrant_sim::postgres::{AUDIENCE, Front, RealPostgres};

/// The role name the operator's identity has on the server (its Entra admin role).
const OPERATOR_ROLE: &str = "dbgrant";
const DATABASE: &str = "appdb";

/// A client-credentials token from azure-sim for the PostgreSQL audience.
async fn entra_token(azure: &AzureSim, app: &ServicePrincipal) -> String {
    let http = dbgrant_sim::tls::https_client(&azure.ca_pem()).unwrap();
    let url = format!(
        "{}{}/oauth2/v2.0/token",
        azure.authority_host(),
        azure.tenant_id()
    );
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &app.client_id)
        .append_pair("client_secret", &app.client_secret)
        .append_pair("grant_type", "client_credentials")
        .append_pair("scope", &format!("{AUDIENCE}/.default"))
        .finish();
    let reply: serde_json::Value = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["access_token"].as_str().expect("a token").to_string()
}

/// The operator's token, fetched from azure-sim for every new connection as in production.
struct SimToken {
    http: reqwest::Client,
    url: String,
    form: String,
}

#[async_trait::async_trait]
impl OperatorToken for SimToken {
    async fn token(&self) -> Result<Secret, BackendError> {
        let reply: serde_json::Value = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(self.form.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| BackendError::new(Reason::AzureUnavailable, e.to_string()))?
            .json()
            .await
            .map_err(|e| BackendError::new(Reason::AzureUnavailable, e.to_string()))?;
        Ok(Secret::new(
            reply["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ))
    }
}

/// The operator's PostgreSQL clients: its own token from azure-sim, TLS trusting the front.
fn operator_clients(
    azure: &AzureSim,
    operator: &ServicePrincipal,
    front: &Front,
) -> PostgresClients {
    let token = SimToken {
        http: dbgrant_sim::tls::https_client(&azure.ca_pem()).unwrap(),
        url: format!(
            "{}{}/oauth2/v2.0/token",
            azure.authority_host(),
            azure.tenant_id()
        ),
        form: url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &operator.client_id)
            .append_pair("client_secret", &operator.client_secret)
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", &format!("{AUDIENCE}/.default"))
            .finish(),
    };
    let tls = dbgrant_sim::tls::client_config(&front.ca_pem).unwrap();
    PostgresClients::new(Arc::new(token), tls)
}

struct Fixture {
    pg: RealPostgres,
    azure: AzureSim,
    front: Front,
    clients: Arc<PostgresClients>,
    operator: ServicePrincipal,
}

impl Fixture {
    /// A server with the platform's setup done, the operator's identity mapped to
    /// `OPERATOR_ROLE` (an Entra admin when `admin`), and its clients going through the front.
    /// `None` (skipped, or failed with `CI=true`) without PostgreSQL.
    async fn start(admin: bool) -> Option<Self> {
        if RealPostgres::binaries().is_none() {
            dbgrant_sim::prerequisite_missing(
                "PostgreSQL (the postgresql Debian package) is not installed",
            );
            return None;
        }
        let pg = tokio::task::spawn_blocking(RealPostgres::start)
            .await
            .unwrap()
            .unwrap();
        let azure = AzureSim::start(AzureSimConfig::default()).await.unwrap();
        let operator = azure.create_service_principal("dbgrant-operator");
        if admin {
            pg.create_entra_admin(OPERATOR_ROLE, &operator.principal_id)
                .unwrap();
        } else {
            pg.psql(
                "postgres",
                &format!(
                    "SELECT pgaadauth_create_principal_with_oid('{OPERATOR_ROLE}', '{}', 'service', false, false)",
                    operator.principal_id
                ),
            )
            .unwrap();
        }
        pg.psql("postgres", &format!("CREATE DATABASE {DATABASE}"))
            .unwrap();
        // The platform's part: roles it owns, the privileges they carry, and what the
        // operator needs to hand them out (ADMIN OPTION, GRANT OPTION on table privileges).
        pg.psql(
            DATABASE,
            "CREATE SCHEMA sales; CREATE TABLE sales.items (id int); INSERT INTO sales.items VALUES (1); \
             CREATE ROLE app_reader NOLOGIN; GRANT USAGE ON SCHEMA sales TO app_reader; \
             GRANT SELECT ON ALL TABLES IN SCHEMA sales TO app_reader; \
             CREATE ROLE app_writer NOLOGIN; GRANT USAGE ON SCHEMA sales TO app_writer; \
             GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA sales TO app_writer; \
             GRANT app_reader, app_writer TO dbgrant WITH ADMIN OPTION; \
             GRANT USAGE ON SCHEMA sales TO dbgrant WITH GRANT OPTION; \
             GRANT SELECT ON ALL TABLES IN SCHEMA sales TO dbgrant WITH GRANT OPTION;",
        )
        .unwrap();
        let check = pg.token_check({
            let verify = azure.verifier_for(AUDIENCE);
            move |t| verify(t)
        });
        let front = pg.front(check).await.unwrap();
        let clients = Arc::new(operator_clients(&azure, &operator, &front));
        Some(Self {
            pg,
            azure,
            front,
            clients,
            operator,
        })
    }

    fn target(&self, roles: &[(&str, PostgresRole)]) -> PostgresTarget {
        PostgresTarget {
            // The front's certificate names localhost: TLS is verified, never skipped.
            server: "localhost".into(),
            port: self.front.port,
            server_resource_id: None,
            admin_role: OPERATOR_ROLE.into(),
            database: Some(DATABASE.into()),
            roles: roles
                .iter()
                .map(|(n, r)| (n.to_string(), r.clone()))
                .collect::<BTreeMap<_, _>>(),
            verify_access: true,
        }
    }

    fn backend(&self, roles: &[(&str, PostgresRole)]) -> PostgresBackend {
        PostgresBackend::new("pg-test", self.target(roles), self.clients.clone())
    }

    /// One value from the catalogue, read as the superuser.
    fn read(&self, database: &str, sql: &str) -> String {
        self.pg.psql(database, sql).unwrap().trim().to_string()
    }

    fn role_exists(&self, role: &str) -> bool {
        self.read(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = {}",
                dbgrant_sim::postgres::literal(role)
            ),
        ) == "1"
    }

    fn is_member(&self, member: &str, of: &str) -> bool {
        self.read(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                 JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = {} AND g.rolname = {}",
                dbgrant_sim::postgres::literal(member),
                dbgrant_sim::postgres::literal(of)
            ),
        ) == "1"
    }

    fn can(&self, role: &str, privilege: &str) -> bool {
        self.read(
            DATABASE,
            &format!(
                "SELECT has_table_privilege({}, 'sales.items', '{privilege}')",
                dbgrant_sim::postgres::literal(role)
            ),
        ) == "t"
    }

    /// A workload identity and its own token for PostgreSQL.
    async fn workload(&self, name: &str) -> (ServicePrincipal, Secret) {
        let app = self.azure.create_service_principal(name);
        let token = entra_token(&self.azure, &app).await;
        (app, Secret::new(token))
    }
}

fn members(of: &[&str]) -> PostgresRole {
    PostgresRole {
        member_of: of.iter().map(|s| s.to_string()).collect(),
        schemas: Vec::new(),
    }
}

fn tables(schema: &str, privileges: &[TablePrivilege]) -> PostgresRole {
    PostgresRole {
        member_of: Vec::new(),
        schemas: vec![SchemaPrivileges {
            schema: schema.into(),
            privileges: privileges.to_vec(),
        }],
    }
}

fn access(principal: &str, role: &str) -> Access {
    Access {
        principal_id: principal.to_string(),
        role: role.into(),
        database: None,
        container: None,
        client_id: None,
    }
}

fn holding(backend: &PostgresBackend, principal: &str, role: &str) -> Holding {
    backend.holding_for(&access(principal, role)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_creates_the_entra_login_by_object_id_and_a_read_only_workload_cannot_insert() {
    let Some(fx) = Fixture::start(true).await else {
        return;
    };
    let backend = fx.backend(&[
        ("reader", members(&["app_reader"])),
        ("contributor", members(&["app_writer"])),
    ]);
    let endpoint = backend.prepare().await.unwrap();
    let (app, token) = fx.workload("orders-api").await;
    let login = app.principal_id.to_ascii_lowercase();
    let reader = holding(&backend, &app.principal_id, "reader");

    backend.grant(&reader).await.unwrap();
    assert!(fx.role_exists(&login));
    // The grant's status names what was made: the login role and the object id it maps.
    let said = backend.describe_holding(&reader);
    assert!(
        said.contains(&format!("login role {login}")) && said.contains(&app.principal_id),
        "{said}"
    );
    assert_eq!(
        fx.read(
            "postgres",
            &format!(
                "SELECT objectid FROM pgaadauth_list_principals(false) WHERE rolname = '{login}'"
            )
        ),
        app.principal_id,
        "mapped to the workload's object id"
    );
    assert!(fx.is_member(&login, "app_reader"));
    assert!(!fx.is_member(&login, "app_writer"));
    assert!(fx.can(&login, "SELECT") && !fx.can(&login, "INSERT"));
    assert_eq!(backend.list_owned().await.unwrap(), vec![reader.clone()]);
    // Granting again changes nothing.
    backend.grant(&reader).await.unwrap();
    assert_eq!(backend.list_owned().await.unwrap(), vec![reader.clone()]);

    assert!(
        backend
            .probe(&endpoint, &access(&app.principal_id, "reader"), &token)
            .await
            .unwrap(),
        "the workload signs in with its own token and has its role"
    );
    assert!(
        !backend
            .probe(&endpoint, &access(&app.principal_id, "contributor"), &token)
            .await
            .unwrap(),
        "it does not have a role it was not granted"
    );

    // The workload itself, through the front with its own token, as its code would.
    let workload = fx
        .clients
        .connect("localhost", fx.front.port, &login, DATABASE, &token)
        .await
        .unwrap();
    let row = workload
        .query_one("SELECT count(*) FROM sales.items", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    let refused = workload
        .batch_execute("INSERT INTO sales.items VALUES (2)")
        .await
        .expect_err("a read-only grant cannot insert");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused}"
    );
    // Another identity's token does not sign in as this login.
    let (_, foreign) = fx.workload("someone-else").await;
    let Err(error) = fx
        .clients
        .connect("localhost", fx.front.port, &login, DATABASE, &foreign)
        .await
    else {
        panic!("a foreign token is refused");
    };
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");

    // The last grant's revoke drops the role dbgrant created.
    assert!(backend.revoke(&reader.id).await.unwrap());
    assert!(!fx.role_exists(&login));
    assert!(backend.list_owned().await.unwrap().is_empty());
    assert!(!backend.revoke(&reader.id).await.unwrap(), "nothing left");
}

#[tokio::test(flavor = "multi_thread")]
async fn table_privileges_are_granted_and_a_role_shrink_revokes_what_it_no_longer_means() {
    let Some(fx) = Fixture::start(true).await else {
        return;
    };
    let wide = fx.backend(&[
        ("reader", members(&["app_reader", "app_writer"])),
        ("tables", tables("sales", &[TablePrivilege::Select])),
    ]);
    wide.prepare().await.unwrap();
    let (app, token) = fx.workload("orders-api").await;
    let login = app.principal_id.to_ascii_lowercase();
    wide.grant(&holding(&wide, &app.principal_id, "reader"))
        .await
        .unwrap();
    wide.grant(&holding(&wide, &app.principal_id, "tables"))
        .await
        .unwrap();
    assert!(fx.is_member(&login, "app_reader") && fx.is_member(&login, "app_writer"));
    assert_eq!(
        fx.read(
            DATABASE,
            &format!(
                "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = '{login}' \
                 AND table_schema = 'sales' AND privilege_type = 'SELECT'"
            )
        ),
        "1",
        "SELECT given directly on the schema's table"
    );
    assert!(
        wide.probe("", &access(&app.principal_id, "tables"), &token)
            .await
            .unwrap()
    );

    // The platform narrows reader: the next prepare brings every recorded holding to it.
    let narrow = fx.backend(&[
        ("reader", members(&["app_reader"])),
        ("tables", tables("sales", &[TablePrivilege::Select])),
    ]);
    narrow.prepare().await.unwrap();
    assert!(fx.is_member(&login, "app_reader"));
    assert!(
        !fx.is_member(&login, "app_writer"),
        "the shrink revoked the dropped membership"
    );
    assert!(fx.can(&login, "SELECT") && !fx.can(&login, "INSERT"));

    // Revoking one role keeps what the other still gives, and the login.
    let tables_holding = holding(&narrow, &app.principal_id, "tables");
    assert!(narrow.revoke(&tables_holding.id).await.unwrap());
    assert!(fx.role_exists(&login));
    assert!(fx.is_member(&login, "app_reader"));
    assert_eq!(
        fx.read(
            DATABASE,
            &format!(
                "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = '{login}'"
            )
        ),
        "0"
    );
    assert!(
        narrow
            .revoke(&holding(&narrow, &app.principal_id, "reader").id)
            .await
            .unwrap()
    );
    assert!(!fx.role_exists(&login));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_held_by_another_object_id_or_a_non_entra_role_is_a_conflict() {
    let Some(fx) = Fixture::start(true).await else {
        return;
    };
    let backend = fx.backend(&[("reader", members(&["app_reader"]))]);
    backend.prepare().await.unwrap();
    let (app, _) = fx.workload("orders-api").await;
    let login = app.principal_id.to_ascii_lowercase();
    let other = uuid::Uuid::new_v4().to_string();
    fx.pg
        .psql(
            "postgres",
            &format!(
                "SELECT pgaadauth_create_principal_with_oid('{login}', '{other}', 'service', false, false)"
            ),
        )
        .unwrap();
    let error = backend
        .grant(&holding(&backend, &app.principal_id, "reader"))
        .await
        .unwrap_err();
    assert_eq!(error.reason, Reason::RoleConflict, "{error}");
    assert!(error.message.contains(&other), "{error}");
    assert!(
        !fx.is_member(&login, "app_reader"),
        "nothing given to the other principal's role"
    );

    let (second, _) = fx.workload("billing-api").await;
    let name = second.principal_id.to_ascii_lowercase();
    fx.pg
        .psql("postgres", &format!("CREATE ROLE \"{name}\" LOGIN"))
        .unwrap();
    let error = backend
        .grant(&holding(&backend, &second.principal_id, "reader"))
        .await
        .unwrap_err();
    assert_eq!(error.reason, Reason::RoleConflict, "{error}");
    assert!(error.message.contains("not an Entra role"), "{error}");
    // Revoking what dbgrant never made touches nothing.
    assert!(
        !backend
            .revoke(&holding(&backend, &second.principal_id, "reader").id)
            .await
            .unwrap()
    );
    assert!(fx.role_exists(&name) && fx.role_exists(&login));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_owned_by_the_login_blocks_the_drop_with_the_fix_then_a_retry_drops_it() {
    let Some(fx) = Fixture::start(true).await else {
        return;
    };
    let backend = fx.backend(&[("reader", members(&["app_reader"]))]);
    backend.prepare().await.unwrap();
    let (app, _) = fx.workload("orders-api").await;
    let login = app.principal_id.to_ascii_lowercase();
    let reader = holding(&backend, &app.principal_id, "reader");
    backend.grant(&reader).await.unwrap();
    fx.pg
        .psql(
            DATABASE,
            &format!("CREATE TABLE public.scratch (id int); ALTER TABLE public.scratch OWNER TO \"{login}\""),
        )
        .unwrap();

    let error = backend.revoke(&reader.id).await.unwrap_err();
    assert_eq!(error.reason, Reason::CleanupFailed, "{error}");
    assert!(error.message.contains("2BP01"), "{error}");
    assert!(
        error
            .message
            .contains(&format!("REASSIGN OWNED BY \"{login}\"")),
        "{error}"
    );
    assert!(fx.role_exists(&login));
    assert!(
        !fx.is_member(&login, "app_reader"),
        "the membership went before the drop was tried"
    );

    fx.pg.psql(DATABASE, "DROP TABLE public.scratch").unwrap();
    backend.revoke(&reader.id).await.unwrap();
    assert!(!fx.role_exists(&login), "the retry dropped the role");
}

#[tokio::test(flavor = "multi_thread")]
async fn prepare_names_the_fix_when_the_operator_is_not_an_entra_admin() {
    let Some(fx) = Fixture::start(false).await else {
        return;
    };
    let backend = fx.backend(&[("reader", members(&["app_reader"]))]);
    let error = backend.prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    assert!(
        error
            .message
            .contains("Microsoft Entra administrator of the flexible server"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prepare_names_the_grant_statement_when_admin_option_or_a_role_is_missing() {
    let Some(fx) = Fixture::start(true).await else {
        return;
    };
    fx.pg
        .psql(
            "postgres",
            "CREATE ROLE app_auditor NOLOGIN; REVOKE app_writer FROM dbgrant",
        )
        .unwrap();
    let backend = fx.backend(&[
        ("reader", members(&["app_reader"])),
        ("contributor", members(&["app_writer"])),
        ("auditor", members(&["app_auditor"])),
        ("ghost", members(&["app_ghost"])),
    ]);
    let error = backend.prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    for fix in [
        "GRANT \"app_writer\" TO \"dbgrant\" WITH ADMIN OPTION",
        "GRANT \"app_auditor\" TO \"dbgrant\" WITH ADMIN OPTION",
        "CREATE ROLE \"app_ghost\" NOLOGIN",
    ] {
        assert!(error.message.contains(fix), "{fix} missing from: {error}");
    }
    assert!(!error.message.contains("app_reader"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prepare_names_the_grant_option_the_operator_lacks_on_table_privileges() {
    let Some(fx) = Fixture::start(true).await else {
        return;
    };
    let backend = fx.backend(&[(
        "writer",
        tables("sales", &[TablePrivilege::Select, TablePrivilege::Insert]),
    )]);
    let error = backend.prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    assert!(
        error.message.contains(
            "GRANT INSERT ON ALL TABLES IN SCHEMA \"sales\" TO \"dbgrant\" WITH GRANT OPTION"
        ),
        "{error}"
    );
    assert!(!error.message.contains("GRANT SELECT"), "{error}");
}

/// A backend on `server_id`'s flexible server, reading its administrators through `servers`.
fn backend_on_server(
    fx: &Fixture,
    server_id: &str,
    servers: Arc<dyn FlexibleServers>,
) -> PostgresBackend {
    let mut target = fx.target(&[("reader", members(&["app_reader"]))]);
    target.server_resource_id = Some(server_id.to_string());
    let clients = operator_clients(&fx.azure, &fx.operator, &fx.front).with_servers(servers);
    PostgresBackend::new("pg-test", target, Arc::new(clients))
}

#[tokio::test(flavor = "multi_thread")]
async fn prepare_checks_in_arm_that_the_operator_is_an_entra_administrator_of_the_server() {
    let Some(fx) = Fixture::start(true).await else {
        return;
    };
    let subscription = uuid::Uuid::new_v4().to_string();
    let server = fx
        .azure
        .create_postgres_server(&subscription, "shop", "shop-pg");
    fx.azure.assign_control_plane_role(
        &fx.operator.principal_id,
        &server,
        ControlPlaneRole::Reader,
    );
    // The operator's real ARM client (azure_core pipeline, its own credential) on azure-sim.
    let config = AzureConfig::custom(
        fx.azure.authority_host().parse().unwrap(),
        fx.azure.arm_endpoint().parse().unwrap(),
        Some(fx.azure.ca_pem()),
        fx.azure.tenant_id(),
        OperatorCredential::ClientSecret {
            client_id: fx.operator.client_id.clone(),
            client_secret: fx.operator.client_secret.clone(),
        },
    );
    let arm = AzureCosmos::new(config, None).await.unwrap().arm().clone();
    let servers: Arc<dyn FlexibleServers> = Arc::new(AzureFlexibleServers::new(arm));
    let backend = backend_on_server(&fx, &server, servers.clone());
    let oid = &fx.operator.principal_id;

    // The server has no Entra administrator yet: the fix is the command that adds one.
    let error = backend.prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    assert!(
        error.message.contains(&format!(
            "az postgres flexible-server microsoft-entra-admin create --resource-group shop --server-name shop-pg --display-name {OPERATOR_ROLE} --object-id {oid} --type ServicePrincipal"
        )),
        "{error}"
    );

    // An administrator under another name than adminRole could not sign in as it.
    fx.azure
        .add_postgres_administrator(&server, oid, "dbgrant-operator", "ServicePrincipal")
        .unwrap();
    let error = backend.prepare().await.unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    assert!(
        error
            .message
            .contains("set spec.postgres.adminRole to dbgrant-operator"),
        "{error}"
    );

    // Under adminRole: the check passes and the SQL half runs as before.
    fx.azure
        .add_postgres_administrator(&server, oid, OPERATOR_ROLE, "ServicePrincipal")
        .unwrap();
    backend.prepare().await.unwrap();

    // A server ARM does not know is reported as such.
    let missing = server.replace("shop-pg", "shop-gone");
    fx.azure.assign_control_plane_role(
        &fx.operator.principal_id,
        &missing,
        ControlPlaneRole::Reader,
    );
    let error = backend_on_server(&fx, &missing, servers.clone())
        .prepare()
        .await
        .unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    assert!(error.message.contains("does not exist"), "{error}");

    // A server the operator may not read: Azure's 403, naming the right it lacks.
    let elsewhere =
        fx.azure
            .create_postgres_server(&uuid::Uuid::new_v4().to_string(), "other", "other-pg");
    let error = backend_on_server(&fx, &elsewhere, servers)
        .prepare()
        .await
        .unwrap_err();
    assert_eq!(error.reason, Reason::AzureForbidden, "{error}");
    assert!(
        error
            .message
            .contains("Microsoft.DBforPostgreSQL/flexibleServers/administrators/read"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_arm_check_comes_before_any_sign_in_so_its_fix_is_the_one_reported() {
    // The operator is not an Entra admin in the database either: a sign-in first would report
    // the SQL half's message instead of the command that fixes both.
    let Some(fx) = Fixture::start(false).await else {
        return;
    };
    let server = "/subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/shop/providers/Microsoft.DBforPostgreSQL/flexibleServers/shop-pg";
    let servers = Arc::new(InMemoryFlexibleServers::default());
    servers.set(server, Vec::new());
    let error = backend_on_server(&fx, server, servers.clone())
        .prepare()
        .await
        .unwrap_err();
    assert_eq!(error.reason, Reason::TargetNotPrepared, "{error}");
    assert!(
        error.message.contains("microsoft-entra-admin create"),
        "{error}"
    );
    assert!(!error.message.contains("azure_pg_admin"), "{error}");
    assert_eq!(servers.calls(), 1);

    // Without serverResourceId there is no ARM read, and the SQL half reports.
    let plain = fx.backend(&[("reader", members(&["app_reader"]))]);
    let error = plain.prepare().await.unwrap_err();
    assert!(error.message.contains("azure_pg_admin"), "{error}");
    assert_eq!(servers.calls(), 1);
}

/// The Python with psycopg (3): `DBGRANT_PYTHON` (which `scripts/test` sets to its venv, where
/// it installs psycopg) or `python3`. `None`, saying why, when neither has it (fails on CI).
fn python_with_psycopg() -> Option<String> {
    let python = std::env::var("DBGRANT_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import psycopg"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        dbgrant_sim::prerequisite_missing(&format!(
            "the psycopg test: {python} cannot import psycopg (scripts/test installs psycopg[binary] into its venv)"
        ));
        return None;
    }
    Some(python)
}

/// Signs in through the front with psycopg, each password from an environment variable (never
/// on a command line), and prints what happened as JSON.
const PSYCOPG_CLIENT: &str = r#"
import json, os, sys
import psycopg

host, port, dbname, user, ca = sys.argv[1:6]

def connect(password):
    return psycopg.connect(host=host, port=port, dbname=dbname, user=user, password=password,
                           sslmode="verify-full", sslrootcert=ca, connect_timeout=10)

out = {"version": psycopg.__version__}
with connect(os.environ["PG_TOKEN_GOOD"]) as conn:
    out["user"] = conn.execute("SELECT current_user").fetchone()[0]
    out["rows"] = conn.execute("SELECT count(*) FROM sales.items").fetchone()[0]
    try:
        conn.execute("INSERT INTO sales.items VALUES (2)")
        out["insert"] = "inserted"
    except psycopg.Error as error:
        out["insert"] = {"class": type(error).__name__, "sqlstate": error.sqlstate}
for case in ("WRONG", "EXPIRED", "FOREIGN"):
    try:
        connect(os.environ["PG_TOKEN_" + case]).close()
        out[case] = "connected"
    except psycopg.OperationalError as error:
        out[case] = {"sqlstate": error.sqlstate, "message": str(error)}
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn psycopg_signs_in_with_the_workloads_token_and_is_refused_as_postgresql_refuses() {
    let Some(fx) = Fixture::start(true).await else {
        return;
    };
    let Some(python) = python_with_psycopg() else {
        return;
    };
    let backend = fx.backend(&[("reader", members(&["app_reader"]))]);
    backend.prepare().await.unwrap();
    let (app, token) = fx.workload("orders-api").await;
    backend
        .grant(&holding(&backend, &app.principal_id, "reader"))
        .await
        .unwrap();
    let login = app.principal_id.to_ascii_lowercase();
    let (_, foreign) = fx.workload("someone-else").await;
    let now = dbgrant_sim::jwt::now_secs();
    let expired = fx
        .azure
        .sign_token(&serde_json::json!({
            "aud": AUDIENCE,
            "iss": format!("https://sts.windows.net/{}/", fx.azure.tenant_id()),
            "oid": app.principal_id,
            "tid": fx.azure.tenant_id(),
            "iat": now - 7200,
            "nbf": now - 7200,
            "exp": now - 60,
        }))
        .unwrap();
    let dir = tempdir();
    let ca = dir.join("front-ca.pem");
    std::fs::write(&ca, &fx.front.ca_pem).unwrap();
    let output = tokio::process::Command::new(&python)
        .args(["-c", PSYCOPG_CLIENT, "localhost"])
        .arg(fx.front.port.to_string())
        .args([DATABASE, &login])
        .arg(&ca)
        .env("PG_TOKEN_GOOD", token.secret())
        .env("PG_TOKEN_WRONG", "not-a-token")
        .env("PG_TOKEN_EXPIRED", &expired)
        .env("PG_TOKEN_FOREIGN", foreign.secret())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "psycopg client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(out["version"].as_str().unwrap().starts_with('3'), "{out}");
    assert_eq!(out["user"], login.as_str(), "signed in as the login role");
    assert_eq!(out["rows"], 1);
    assert_eq!(
        out["insert"],
        serde_json::json!({"class": "InsufficientPrivilege", "sqlstate": "42501"}),
        "PostgreSQL's own refusal of a read-only grant's INSERT"
    );
    // libpq reports a refused sign-in by PostgreSQL's FATAL message (it keeps no SQLSTATE for
    // connection failures, so psycopg's is None): the front's 28P01 as every server words it.
    for case in ["WRONG", "EXPIRED", "FOREIGN"] {
        let refused = &out[case];
        assert!(refused.is_object(), "{case}: {refused}");
        let message = refused["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "FATAL:  password authentication failed for user \"{login}\""
            )),
            "{case}: {message}"
        );
        assert!(!message.contains(token.secret()), "{case}: a token leaked");
    }
    // The same refusal as a Rust client sees it carries the SQLSTATE itself.
    let Err(error) = fx
        .clients
        .connect(
            "localhost",
            fx.front.port,
            &login,
            DATABASE,
            &Secret::new(expired),
        )
        .await
    else {
        panic!("an expired token is refused");
    };
    assert!(error.message.contains("SQLSTATE 28P01"), "{error}");
}

fn tempdir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("dbgrant-psycopg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
