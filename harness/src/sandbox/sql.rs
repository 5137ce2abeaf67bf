//! The sandbox's Azure SQL Database: for a `DatabaseTarget` with a `sql` block among the
//! examples, dbgrant-sim's T-SQL stand-in (not SQL Server: it executes only the statements
//! dbgrant sends) on the port the target names, set up as a platform team would set up a
//! server for dbgrant: the operator's identity its Microsoft Entra admin (in the engine, by its
//! client id, and in ARM, as `az sql server ad-admin create` does), and the target's database
//! with the platform's roles.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use dbgrant_sim::azure::{AzureSim, ControlPlaneRole};
use dbgrant_sim::sql::{AUDIENCES, PrincipalType, SqlServer};

/// The fixed roles' principal ids in a fresh database (SQL Server's own numbering).
const DB_DATAREADER: i32 = 16390;
const DB_DATAWRITER: i32 = 16391;

/// The T-SQL stand-in serving the examples' SQL target.
pub struct SandboxSql {
    /// The stand-in (stops when dropped).
    pub server: SqlServer,
    /// The target it serves.
    pub target: String,
    /// The database grants apply in.
    pub database: String,
    /// Its CA, written for clients.
    pub ca_file: PathBuf,
    /// Set when the port the target names was taken and the manifest was pointed elsewhere.
    pub moved_from: Option<u16>,
}

/// Start the stand-in for the first SQL target of `manifests`, if there is one, with the
/// operator (`operator_client_id`, `operator_principal`) as the server's Entra admin and its
/// CA written to `state_dir/sql-ca.pem`. When the port the target names is taken, it listens
/// on a free one and the manifest is changed to name it.
///
/// # Errors
/// When the target names no database or its server id is not an ARM id, or the stand-in
/// cannot start.
pub async fn start(
    azure: &AzureSim,
    manifests: &mut [Value],
    state_dir: &Path,
    operator_client_id: &str,
    operator_principal: &str,
) -> anyhow::Result<Option<SandboxSql>> {
    let Some((manifest, target, spec)) = super::first_target(manifests, "sql") else {
        return Ok(None);
    };
    let database = spec["database"]
        .as_str()
        .context("the SQL target names no database")?
        .to_string();
    let port =
        u16::try_from(spec["port"].as_u64().unwrap_or(1433)).context("the SQL target's port")?;
    let check = azure.verifier_for_any(&AUDIENCES);
    let (server, moved_from) = match SqlServer::start_on(check.clone(), port).await {
        Ok(server) => (server, None),
        // Another sandbox (or anything else) has the port: serve on a free one instead.
        Err(_) => {
            let server = SqlServer::start(check).await?;
            manifest["spec"]["sql"]["port"] = Value::from(server.port);
            (server, Some(port))
        }
    };
    server.create_database(&database);
    // The platform's roles, carrying the fixed ones (nested), and any other role the target
    // names, so its preflight finds what it grants.
    let mut roles: Vec<String> = vec!["app_reader".into(), "app_writer".into()];
    for role in spec["roles"]
        .as_object()
        .into_iter()
        .flat_map(|r| r.values())
    {
        for name in role["memberOf"].as_array().into_iter().flatten() {
            if let Some(name) = name.as_str().filter(|n| !n.starts_with("db_")) {
                roles.push(name.to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    server.with_database(&database, |db| {
        for role in &roles {
            let id = db.add_principal(role, PrincipalType::Role, None, None);
            match role.as_str() {
                "app_reader" => {
                    db.members.insert((DB_DATAREADER, id));
                }
                "app_writer" => {
                    db.members.insert((DB_DATAWRITER, id));
                }
                _ => {}
            }
        }
    });
    let client_id = uuid::Uuid::parse_str(operator_client_id)
        .context("the operator's client id is not a GUID")?;
    // An application's Entra admin is known to the engine by its client id.
    server.set_entra_admin("dbgrant-operator", client_id);
    let ca_file = state_dir.join("sql-ca.pem");
    dbgrant_sim::write_atomically(&ca_file, &server.ca_pem)?;

    // The server's ARM side, when the target names it: the operator its Entra admin, and
    // allowed to read that.
    if let Some(server_id) = spec["serverResourceId"].as_str() {
        let (subscription, group, name) = super::arm_parts(server_id)
            .with_context(|| format!("'{server_id}' is not a SQL server id"))?;
        let id = azure.create_sql_server(&subscription, &group, "Microsoft.Sql/servers", &name);
        azure.set_sql_admin(&id, "dbgrant-operator", operator_principal)?;
        azure.assign_control_plane_role(operator_principal, &id, ControlPlaneRole::Reader);
    }
    Ok(Some(SandboxSql {
        server,
        target,
        database,
        ca_file,
        moved_from,
    }))
}
