//! The PostgreSQL backend against a real PostgreSQL: Debian's server from dbgrant-sim's
//! stand-in, reached only through its token-checking TLS front, the operator signing in with
//! its own token from azure-sim. Everything is checked in the real catalogue (`pg_roles`,
//! `pg_auth_members`, `has_table_privilege`), and the workload signs in with its own token.

use std::collections::BTreeMap;
use std::sync::Arc;

use azure_core::credentials::Secret;
use dbgrant::api::{PostgresRole, PostgresTarget, Reason, SchemaPrivileges, TablePrivilege};
use dbgrant::backend::OperatorToken;
use dbgrant::backend::postgres::{PostgresBackend, PostgresClients};
use dbgrant::backend::{Access, Backend, BackendError, Holding};
use dbgrant_sim::azure::{AzureSim, AzureSimConfig, ServicePrincipal};
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

struct Fixture {
    pg: RealPostgres,
    azure: AzureSim,
    front: Front,
    clients: Arc<PostgresClients>,
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
        let clients = Arc::new(PostgresClients::new(Arc::new(token), tls));
        Some(Self {
            pg,
            azure,
            front,
            clients,
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
