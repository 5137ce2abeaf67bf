//! Opt-in: the T-SQL backend against real servers — an Azure SQL Database, a SQL Managed
//! Instance, a Synapse SQL pool — each when its variables are set. Without them a test prints
//! "skipped: no real server configured" and passes, so it is never mistaken for coverage. With
//! them it prepares (the ARM admin check too, when the server id is given), grants `reader`
//! (db_datareader) to a workload, verifies the workload's own sign-in, and revokes (dropping
//! the contained user it made), as the operator would. It also settles the design's open
//! questions for that kind: whether the SID form and TDS 8 strict work there.
//!
//! Per kind, `PREFIX` being `DBGRANT_SQL_DB` (Azure SQL Database), `DBGRANT_SQL_MI` (Managed
//! Instance) or `DBGRANT_SQL_SYNAPSE` (a Synapse pool):
//! - `PREFIX_SERVER`: host name, e.g. `shop-test.database.windows.net` (`PREFIX_PORT`,
//!   default 1433; a Managed Instance's public endpoint is 3342);
//! - `PREFIX_DATABASE`: the database grants apply in;
//! - `PREFIX_SERVER_ID`: optional, the server's ARM id (the operator needs Reader on it);
//! - `DBGRANT_SQL_SYNAPSE_KIND`: `SynapseDedicated` (default) or `SynapseServerless`.
//!
//! Shared: `DBGRANT_SQL_WORKLOAD_CLIENT_ID`, `DBGRANT_SQL_WORKLOAD_CLIENT_SECRET` (an app
//! registration standing in for a workload, with no user in the database yet), and the
//! operator's own Azure variables as `dbgrant run` reads them (`AZURE_TENANT_ID`,
//! `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, optionally `AZURE_CLOUD` and the rest); the
//! operator must be the server's Entra admin or db_owner in the database.

mod support;

use dbgrant::api::SqlTarget;
use dbgrant::backend::sql::SqlBackend;
use dbgrant::backend::{Access, Backend, TokenScope};
use serde_json::json;
use support::real_server::{env, grant_verify_revoke, operator, skip, workload_token};

/// Prepare, grant, verify and revoke on the server `prefix`'s variables name, as `kind`.
async fn grants_verifies_and_revokes(prefix: &str, kind: &str) {
    let var = |name: &str| env(&format!("{prefix}_{name}"));
    let (Some(server), Some(database), Some(client_id), Some(client_secret), Some(tenant)) = (
        var("SERVER"),
        var("DATABASE"),
        env("DBGRANT_SQL_WORKLOAD_CLIENT_ID"),
        env("DBGRANT_SQL_WORKLOAD_CLIENT_SECRET"),
        env("AZURE_TENANT_ID"),
    ) else {
        skip(&format!(
            "{prefix}_SERVER and the rest; see tests/sql_real_server.rs"
        ));
        return;
    };
    let port: u16 = var("PORT").map_or(1433, |p| p.parse().expect("a port number"));
    let (config, backends) = operator(&tenant).await;
    let mut spec = json!({
        "kind": kind,
        "server": server,
        "port": port,
        "database": database,
        // The form to settle on every kind: the SID form needs no Graph lookup.
        "userCreation": "Sid",
    });
    if let Some(id) = var("SERVER_ID") {
        spec["serverResourceId"] = json!(id);
    }
    let target: SqlTarget = serde_json::from_value(spec).expect("a SQL target");
    let backend = SqlBackend::new("real", target, backends.sql.clone());

    // The workload's own token for Azure SQL.
    let token = workload_token(
        &config,
        &tenant,
        &client_id,
        client_secret,
        &TokenScope::AzureSql,
    )
    .await;
    let claims = dbgrant::azure::entra::read_claims(token.secret()).expect("a JWT");
    let access = Access {
        principal_id: claims.oid,
        role: "reader".into(),
        database: None,
        container: None,
        client_id: Some(client_id),
    };

    let endpoint = grant_verify_revoke(&backend, &access, &token, "is in db_datareader").await;
    assert!(
        !backend.probe(&endpoint, &access, &token).await.unwrap(),
        "the user is gone: the workload's sign-in is refused"
    );
    println!("real {kind} {endpoint}: granted, verified, revoked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_azure_sql_database_grants_verifies_and_revokes() {
    grants_verifies_and_revokes("DBGRANT_SQL_DB", "AzureSqlDatabase").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_managed_instance_grants_verifies_and_revokes() {
    grants_verifies_and_revokes("DBGRANT_SQL_MI", "SqlManagedInstance").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_synapse_pool_grants_verifies_and_revokes() {
    let kind = env("DBGRANT_SQL_SYNAPSE_KIND").unwrap_or_else(|| "SynapseDedicated".into());
    assert!(
        ["SynapseDedicated", "SynapseServerless"].contains(&kind.as_str()),
        "DBGRANT_SQL_SYNAPSE_KIND is SynapseDedicated or SynapseServerless, not {kind}"
    );
    grants_verifies_and_revokes("DBGRANT_SQL_SYNAPSE", &kind).await;
}
