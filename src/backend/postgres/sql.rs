//! The catalogue reads and statements behind a plan. Values are bound parameters;
//! identifiers are quoted by the server (`format('%I')`), never by string building here.

use std::collections::BTreeSet;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::connect::STATEMENT_TIMEOUT;
use super::plan::{Grantable, NameOwner, Observed, Record, Step};
use crate::api::{Reason, TablePrivilege};
use crate::backend::BackendError;

/// Sort a PostgreSQL failure into the reason users see.
pub fn classify(what: &str, error: &tokio_postgres::Error) -> BackendError {
    let detail = match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    };
    let reason = match error.code() {
        Some(c) if *c == SqlState::DEPENDENT_OBJECTS_STILL_EXIST => Reason::CleanupFailed,
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *c == SqlState::INSUFFICIENT_PRIVILEGE
                || *c == SqlState::INVALID_CATALOG_NAME
                || *c == SqlState::UNDEFINED_OBJECT
                || *c == SqlState::INVALID_SCHEMA_NAME
                || *c == SqlState::UNDEFINED_FUNCTION =>
        {
            Reason::TargetNotPrepared
        }
        Some(c) if *c == SqlState::DUPLICATE_OBJECT => Reason::RoleConflict,
        _ => Reason::AzureUnavailable,
    };
    BackendError::new(reason, format!("{what}: {detail}"))
}

/// Run `query` with a deadline.
async fn timed<T>(
    what: &str,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(STATEMENT_TIMEOUT, fut)
        .await
        .map_err(|_| {
            BackendError::new(
                Reason::AzureUnavailable,
                format!("{what}: no answer within {STATEMENT_TIMEOUT:?}"),
            )
        })?
        .map_err(|e| classify(what, &e))
}

/// Build a statement on the server: `format(template, args...)` quotes each `%I` argument as
/// an identifier and each `%L` as a literal, whatever characters they hold.
async fn formatted(client: &Client, template: &str, args: &[&str]) -> Result<String, BackendError> {
    // format()'s arguments are VARIADIC "any": without a cast the server cannot type them.
    let placeholders: Vec<String> = (2..=args.len() + 1)
        .map(|i| format!("${i}::text"))
        .collect();
    let query = format!("SELECT format($1::text, {})", placeholders.join(", "));
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&template];
    for arg in args {
        params.push(arg);
    }
    let row = timed("quoting identifiers", client.query_one(&query, &params)).await?;
    Ok(row.get(0))
}

/// Build with [`formatted`] and run it.
async fn execute(
    client: &Client,
    what: &str,
    template: &str,
    args: &[&str],
) -> Result<(), BackendError> {
    let statement = formatted(client, template, args).await?;
    timed(what, client.batch_execute(&statement)).await
}

/// Who is who on the server (run in the `postgres` database, where pgaadauth lives): the
/// Entra role mapped to `object_id`, who holds `name`, and dbgrant's record on the login.
pub async fn observe_principal(
    client: &Client,
    object_id: &str,
    name: &str,
) -> Result<Observed, BackendError> {
    // pgaadauth_list_principals' columns are renamed by position: how Azure spells the first
    // one (rolname or rolename) is not something to depend on.
    let rows = timed(
        "listing Entra principals",
        client.query(
            "SELECT p.rolname::text, p.objectid::text FROM pgaadauth_list_principals(false) \
             AS p(rolname, principaltype, objectid, tenantid, ismfa, isadmin) \
             WHERE lower(p.objectid::text) = lower($1) OR p.rolname::text = $2",
            &[&object_id, &name],
        ),
    )
    .await?;
    let mut observed = Observed::default();
    for row in &rows {
        let (rolname, oid): (String, String) = (row.get(0), row.get(1));
        if oid.eq_ignore_ascii_case(object_id) {
            observed.login = Some(rolname.clone());
        }
        if rolname == name {
            observed.name_owner = Some(NameOwner::Entra(oid.to_ascii_lowercase()));
        }
    }
    if observed.name_owner.is_none() {
        let exists = timed(
            "looking up the role name",
            client.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name]),
        )
        .await?;
        if exists.is_some() {
            observed.name_owner = Some(NameOwner::NotEntra);
        }
    }
    if let Some(login) = &observed.login {
        observed.record = read_record(client, login).await?;
    }
    Ok(observed)
}

/// dbgrant's record on role `login`, if its comment holds one.
pub async fn read_record(client: &Client, login: &str) -> Result<Option<Record>, BackendError> {
    let row = timed(
        "reading dbgrant's record on the role",
        client.query_opt(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            &[&login],
        ),
    )
    .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .and_then(|c| Record::from_comment(&c)))
}

/// Every login role carrying a dbgrant record, with its Entra object id.
pub async fn recorded_logins(
    client: &Client,
) -> Result<Vec<(String, String, Record)>, BackendError> {
    let rows = timed(
        "listing dbgrant's login roles",
        client.query(
            "SELECT p.rolname::text, p.objectid::text, shobj_description(r.oid, 'pg_authid') \
             FROM pgaadauth_list_principals(false) \
             AS p(rolname, principaltype, objectid, tenantid, ismfa, isadmin) JOIN pg_roles r ON r.rolname = p.rolname",
            &[],
        ),
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let comment: Option<String> = row.get(2);
            let record = Record::from_comment(&comment?)?;
            Some((
                row.get(0),
                row.get::<_, String>(1).to_ascii_lowercase(),
                record,
            ))
        })
        .collect())
}

/// How a privilege is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Granted to the role itself (what dbgrant gives and must find to know it gave it).
    Directly,
    /// Usable by the role, also through a role it is a member of (what the workload can do).
    Effectively,
}

/// Which of `wanted` role `login` has in the connected database. Memberships are always the
/// direct ones (`pg_auth_members`); privileges as `held` says: a privilege reaching the role
/// only through a membership is not one dbgrant gave, and revoking that membership would
/// take it away.
pub async fn observe_grants(
    client: &Client,
    login: &str,
    wanted: &BTreeSet<Grantable>,
    held: Held,
) -> Result<BTreeSet<Grantable>, BackendError> {
    let mut present = BTreeSet::new();
    let members = timed(
        "reading role memberships",
        client.query(
            "SELECT g.rolname::text FROM pg_auth_members m \
             JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member \
             WHERE r.rolname = $1",
            &[&login],
        ),
    )
    .await?;
    for row in &members {
        present.insert(Grantable::Member(row.get(0)));
    }
    let (schema_query, tables_query) = match held {
        Held::Directly => (
            "SELECT coalesce((SELECT EXISTS (SELECT 1 FROM aclexplode(n.nspacl) a \
             JOIN pg_roles r ON r.oid = a.grantee WHERE r.rolname = $1 \
             AND a.privilege_type = 'USAGE') FROM pg_namespace n WHERE n.nspname = $2), false)",
            // Every table of the schema must carry the grant to the role itself (a table
            // created since is missing it, and the grant is made again).
            "SELECT coalesce(bool_and(EXISTS (SELECT 1 FROM aclexplode(c.relacl) a \
             JOIN pg_roles r ON r.oid = a.grantee WHERE r.rolname = $1 \
             AND a.privilege_type = $3::text)), true) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        ),
        Held::Effectively => (
            "SELECT coalesce((SELECT has_schema_privilege($1, n.oid, 'USAGE') \
             FROM pg_namespace n WHERE n.nspname = $2), false)",
            "SELECT coalesce(bool_and(has_table_privilege($1, c.oid, $3::text)), true) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        ),
    };
    for grantable in wanted {
        let held = match grantable {
            Grantable::Member(_) => continue,
            Grantable::SchemaUsage(schema) => timed(
                "reading schema privileges",
                client.query_one(schema_query, &[&login, schema]),
            )
            .await?
            .get::<_, bool>(0),
            Grantable::Tables { schema, privilege } => timed(
                "reading table privileges",
                client.query_one(tables_query, &[&login, schema, &privilege.as_sql()]),
            )
            .await?
            .get::<_, bool>(0),
        };
        if held {
            present.insert(grantable.clone());
        }
    }
    Ok(present)
}

/// Run one step. Principal steps go to the `postgres` database's session (`server`), grants
/// to the target database's (`database`).
///
/// # Errors
/// As [`classify`]; a `DROP ROLE` refused with SQLSTATE 2BP01 says how to clear the way.
pub async fn run_step(server: &Client, database: &Client, step: &Step) -> Result<(), BackendError> {
    match step {
        Step::CreatePrincipal {
            login,
            object_id,
            record,
        } => {
            timed("beginning", server.batch_execute("BEGIN")).await?;
            let created = async {
                timed(
                    "creating the Entra login role",
                    server.query_one(
                        "SELECT pgaadauth_create_principal_with_oid($1, $2, 'service', false, false)",
                        &[login, object_id],
                    ),
                )
                .await?;
                write_record(server, login, record).await
            }
            .await;
            match created {
                Ok(()) => timed("committing", server.batch_execute("COMMIT")).await,
                Err(error) => {
                    let _ = server.batch_execute("ROLLBACK").await;
                    Err(error)
                }
            }
        }
        Step::WriteRecord { login, record } => write_record(server, login, record).await,
        Step::Grant { login, grantable } => {
            let (template, args) = grant_sql(grantable, login, true);
            execute(database, "granting", &template, &args).await
        }
        Step::Revoke { login, grantable } => {
            let (template, args) = grant_sql(grantable, login, false);
            execute(database, "revoking", &template, &args).await
        }
        Step::DropRole { login } => {
            match execute(
                server,
                "dropping the login role",
                "DROP ROLE IF EXISTS %I",
                &[login],
            )
            .await
            {
                Err(mut error) if error.reason == Reason::CleanupFailed => {
                    error.message = format!(
                        "{}; the role still owns objects or holds privileges dbgrant did not give. In each database where it does, run REASSIGN OWNED BY \"{login}\" TO <owner>; DROP OWNED BY \"{login}\"; then dbgrant drops the role",
                        error.message
                    );
                    Err(error)
                }
                other => other,
            }
        }
    }
}

async fn write_record(client: &Client, login: &str, record: &Record) -> Result<(), BackendError> {
    execute(
        client,
        "recording the grant on the role",
        "COMMENT ON ROLE %I IS %L",
        &[login, &record.to_comment()],
    )
    .await
}

fn grant_sql<'a>(grantable: &'a Grantable, login: &'a str, give: bool) -> (String, Vec<&'a str>) {
    let (verb, direction) = if give {
        ("GRANT", "TO")
    } else {
        ("REVOKE", "FROM")
    };
    match grantable {
        Grantable::Member(role) => (format!("{verb} %I {direction} %I"), vec![role, login]),
        Grantable::SchemaUsage(schema) => (
            format!("{verb} USAGE ON SCHEMA %I {direction} %I"),
            vec![schema, login],
        ),
        Grantable::Tables { schema, privilege } => (
            // The privilege is one of four keywords from an enum, never user text.
            format!(
                "{verb} {} ON ALL TABLES IN SCHEMA %I {direction} %I",
                privilege_keyword(*privilege)
            ),
            vec![schema, login],
        ),
    }
}

fn privilege_keyword(privilege: TablePrivilege) -> &'static str {
    privilege.as_sql()
}

/// What keeps the operator (`admin_role`, signed in) from granting `member_of` roles and the
/// `table_privileges` (schema, privilege) in the connected database, each with the statement
/// that fixes it.
pub async fn preflight(
    server: &Client,
    database: &Client,
    admin_role: &str,
    member_of: &BTreeSet<String>,
    table_privileges: &BTreeSet<(String, TablePrivilege)>,
) -> Result<Vec<String>, BackendError> {
    let mut problems = Vec::new();
    let row = timed(
        "checking the operator's role",
        server.query_one(
            "SELECT r.rolcreaterole, EXISTS (SELECT 1 FROM pg_auth_members m \
             JOIN pg_roles a ON a.oid = m.roleid WHERE a.rolname = 'azure_pg_admin' \
             AND m.member = r.oid) FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        ),
    )
    .await?;
    let (createrole, admin): (bool, bool) = (row.get(0), row.get(1));
    if !createrole || !admin {
        problems.push(format!(
            "role {admin_role} is not an Entra admin of the server (member of azure_pg_admin with CREATEROLE): add the operator's identity as a Microsoft Entra administrator of the flexible server, under the name {admin_role}"
        ));
    }
    let roles: Vec<&str> = member_of.iter().map(String::as_str).collect();
    let rows = timed(
        "checking ADMIN OPTION on the target's roles",
        server.query(
            "SELECT g.rolname::text, EXISTS (SELECT 1 FROM pg_auth_members m \
             WHERE m.roleid = g.oid AND m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
             AND m.admin_option) FROM pg_roles g WHERE g.rolname = ANY($1)",
            &[&roles],
        ),
    )
    .await?;
    for role in member_of {
        match rows.iter().find(|r| r.get::<_, String>(0) == *role) {
            None => problems.push(format!(
                "role {role} does not exist: create it (CREATE ROLE \"{role}\" NOLOGIN) and grant it its privileges"
            )),
            Some(row) if !row.get::<_, bool>(1) => problems.push(format!(
                "the operator cannot grant role {role}: run GRANT \"{role}\" TO \"{admin_role}\" WITH ADMIN OPTION"
            )),
            Some(_) => {}
        }
    }
    let schemas: BTreeSet<&str> = table_privileges.iter().map(|(s, _)| s.as_str()).collect();
    let wanted: Vec<&str> = schemas.iter().copied().collect();
    let found = timed(
        "checking the schemas",
        database.query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1)",
            &[&wanted],
        ),
    )
    .await?;
    for schema in &schemas {
        if !found.iter().any(|r| r.get::<_, String>(0) == *schema) {
            problems.push(format!(
                "schema {schema} does not exist in the database: create it or fix the target's roles"
            ));
            continue;
        }
        // The operator is not a superuser: without GRANT OPTION (or ownership) PostgreSQL
        // turns its GRANT into a warning and grants nothing.
        let usage = timed(
            "checking GRANT OPTION on the schema",
            database.query_one(
                "SELECT has_schema_privilege(current_user, n.oid, 'USAGE WITH GRANT OPTION') \
                 FROM pg_namespace n WHERE n.nspname = $1",
                &[schema],
            ),
        )
        .await?;
        if !usage.get::<_, bool>(0) {
            problems.push(format!(
                "the operator cannot grant USAGE on schema {schema}: as its owner, run GRANT USAGE ON SCHEMA \"{schema}\" TO \"{admin_role}\" WITH GRANT OPTION"
            ));
        }
    }
    for (schema, privilege) in table_privileges {
        if !found.iter().any(|r| r.get::<_, String>(0) == *schema) {
            continue;
        }
        let keyword = privilege.as_sql();
        let row = timed(
            "checking GRANT OPTION on the schema's tables",
            database.query_one(
                "SELECT coalesce(bool_and(has_table_privilege(current_user, c.oid, $2::text || ' WITH GRANT OPTION')), true) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                &[schema, &keyword],
            ),
        )
        .await?;
        if !row.get::<_, bool>(0) {
            problems.push(format!(
                "the operator cannot grant {keyword} on the tables of schema {schema}: as their owner, run GRANT {keyword} ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{admin_role}\" WITH GRANT OPTION"
            ));
        }
    }
    Ok(problems)
}

/// Whether the signed-in workload (`current_user`) has every one of `grantables`.
pub async fn has_all(
    client: &Client,
    grantables: &BTreeSet<Grantable>,
) -> Result<bool, BackendError> {
    let row = timed(
        "reading the workload's own role",
        client.query_one("SELECT current_user::text", &[]),
    )
    .await?;
    let me: String = row.get(0);
    let present = observe_grants(client, &me, grantables, Held::Effectively).await?;
    // Membership may also come through another role: ask the server for each.
    for grantable in grantables {
        let held = match grantable {
            Grantable::Member(role) => timed(
                "checking membership",
                client.query_one(
                    "SELECT coalesce((SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = $1), false)",
                    &[role],
                ),
            )
            .await?
            .get::<_, bool>(0),
            other => present.contains(other),
        };
        if !held {
            return Ok(false);
        }
    }
    Ok(true)
}
