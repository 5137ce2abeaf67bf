//! The sandbox's PostgreSQL: for a `DatabaseTarget` with a `postgres` block among the examples,
//! a real PostgreSQL (dbgrant-sim's stand-in for a flexible server) behind its token-checking
//! TLS front on the port the target names, set up as a platform team would set up a flexible
//! server for dbgrant: the operator's identity an Entra administrator under `adminRole` (in
//! the database and in ARM, as `az postgres flexible-server microsoft-entra-admin create`
//! does both), the target's database with demo data, and ADMIN OPTION on the roles it grants.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use dbgrant_sim::azure::{AzureSim, ControlPlaneRole};
use dbgrant_sim::postgres::{AUDIENCE, Front, RealPostgres, literal};

/// The platform's demo setup in the target's database: a table and two roles over it.
const DEMO: &str = "
CREATE SCHEMA orders;
CREATE TABLE orders.items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO orders.items VALUES (1, 'espresso'), (2, 'flat white');
CREATE ROLE app_reader NOLOGIN;
GRANT USAGE ON SCHEMA orders TO app_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA orders TO app_reader;
CREATE ROLE app_writer NOLOGIN;
GRANT USAGE ON SCHEMA orders TO app_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA orders TO app_writer;
";

/// A running PostgreSQL for the examples' PostgreSQL target.
pub struct SandboxPostgres {
    /// The server (stopped and removed when dropped).
    pub server: RealPostgres,
    /// Its front, where clients connect.
    pub front: Front,
    /// The target it serves.
    pub target: String,
    /// The database grants apply in.
    pub database: String,
    /// The front's CA, written for clients (`sslrootcert`).
    pub ca_file: PathBuf,
    /// Set when the port the target names was taken and the manifest was pointed elsewhere.
    pub moved_from: Option<u16>,
}

/// The PostgreSQL targets among `manifests`, by name.
pub fn targets(manifests: &[Value]) -> Vec<String> {
    manifests
        .iter()
        .filter(|m| m["kind"] == "DatabaseTarget" && m["spec"]["postgres"].is_object())
        .filter_map(|m| m["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Drop the PostgreSQL targets and the grants naming them from `manifests` (when there is no
/// PostgreSQL to serve them); returns the grants dropped, as `namespace/name`.
pub fn without_postgres(manifests: &mut Vec<Value>) -> Vec<String> {
    let names = targets(manifests);
    let mut dropped = Vec::new();
    manifests.retain(|m| {
        let is_target = m["kind"] == "DatabaseTarget" && m["spec"]["postgres"].is_object();
        let is_grant = m["kind"] == "DatabaseAccessGrant"
            && m["spec"]["target"]
                .as_str()
                .is_some_and(|t| names.iter().any(|n| n == t));
        if is_grant {
            dropped.push(format!(
                "{}/{}",
                m["metadata"]["namespace"].as_str().unwrap_or("default"),
                m["metadata"]["name"].as_str().unwrap_or_default()
            ));
        }
        !(is_target || is_grant)
    });
    dropped
}

/// Start PostgreSQL for the first PostgreSQL target of `manifests`, if there is one: set up as
/// above for the operator (`operator_principal`), with the front's CA written to
/// `state_dir/postgres-ca.pem`. When the port the target names is taken, the front listens on
/// a free one and the manifest is changed to name it.
///
/// # Errors
/// When PostgreSQL is not installed or does not start, or the setup fails.
pub async fn start(
    azure: &AzureSim,
    manifests: &mut [Value],
    state_dir: &Path,
    operator_principal: &str,
) -> anyhow::Result<Option<SandboxPostgres>> {
    let Some((manifest, target, spec)) = super::first_target(manifests, "postgres") else {
        return Ok(None);
    };
    let admin_role = spec["adminRole"]
        .as_str()
        .context("the PostgreSQL target names no adminRole")?
        .to_string();
    let database = spec["database"]
        .as_str()
        .context("the PostgreSQL target names no database")?
        .to_string();
    let port = spec["port"].as_u64().unwrap_or(5432);
    let port = u16::try_from(port).context("the PostgreSQL target's port")?;

    if RealPostgres::binaries().is_none() {
        anyhow::bail!("PostgreSQL is not installed (the postgresql Debian package)");
    }
    let server = tokio::task::spawn_blocking(RealPostgres::start)
        .await?
        .context("starting PostgreSQL")?;
    server.create_entra_admin(&admin_role, operator_principal)?;
    server.psql(
        "postgres",
        &format!("CREATE DATABASE {}", quoted(&database)),
    )?;
    server.psql(&database, DEMO)?;
    // ADMIN OPTION on every role the target grants (PostgreSQL 16 on requires it; dbgrant's
    // preflight checks it on any version), made if the demo has no such role.
    let mut setup = String::new();
    let roles = spec["roles"].as_object().cloned().unwrap_or_default();
    for role in roles.values() {
        for member_of in role["memberOf"].as_array().into_iter().flatten() {
            let Some(name) = member_of.as_str() else {
                continue;
            };
            setup.push_str(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {lit}) THEN CREATE ROLE {q} NOLOGIN; END IF; END $$;\n\
                 GRANT {q} TO {admin} WITH ADMIN OPTION;\n",
                lit = literal(name),
                q = quoted(name),
                admin = quoted(&admin_role),
            ));
        }
    }
    if !setup.is_empty() {
        server.psql(&database, &setup)?;
    }

    let check = server.token_check({
        let verify = azure.verifier_for(AUDIENCE);
        move |t| verify(t)
    });
    let (front, moved_from) = match server.front_on(check.clone(), port).await {
        Ok(front) => (front, None),
        // Another sandbox (or anything else) has the port: serve on a free one instead.
        Err(_) => {
            let front = server.front(check).await?;
            manifest["spec"]["postgres"]["port"] = Value::from(front.port);
            (front, Some(port))
        }
    };
    let ca_file = state_dir.join("postgres-ca.pem");
    dbgrant_sim::write_atomically(&ca_file, &front.ca_pem)?;

    // The flexible server's ARM side, when the target names it: the operator one of its
    // Entra administrators, and allowed to read them.
    if let Some(server_id) = spec["serverResourceId"].as_str() {
        let (subscription, group, name) = super::arm_parts(server_id)
            .with_context(|| format!("'{server_id}' is not a flexible server id"))?;
        let id = azure.create_postgres_server(&subscription, &group, &name);
        azure.add_postgres_administrator(
            &id,
            operator_principal,
            &admin_role,
            "ServicePrincipal",
        )?;
        azure.assign_control_plane_role(operator_principal, &id, ControlPlaneRole::Reader);
    }
    Ok(Some(SandboxPostgres {
        server,
        front,
        target,
        database,
        ca_file,
        moved_from,
    }))
}

/// A quoted identifier for the superuser's own setup statements.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn without_postgres_drops_its_targets_and_their_grants_only() {
        let mut manifests = vec![
            json!({"kind": "DatabaseTarget", "metadata": {"name": "cosmos-demo"}, "spec": {"cosmos": {}}}),
            json!({"kind": "DatabaseTarget", "metadata": {"name": "pg"}, "spec": {"postgres": {}}}),
            json!({"kind": "DatabaseAccessGrant", "metadata": {"name": "a", "namespace": "shop"}, "spec": {"target": "cosmos-demo"}}),
            json!({"kind": "DatabaseAccessGrant", "metadata": {"name": "b", "namespace": "shop"}, "spec": {"target": "pg"}}),
        ];
        assert_eq!(targets(&manifests), vec!["pg".to_string()]);
        assert_eq!(without_postgres(&mut manifests), vec!["shop/b".to_string()]);
        let left: Vec<&str> = manifests
            .iter()
            .map(|m| m["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(left, ["cosmos-demo", "a"]);
    }
}
