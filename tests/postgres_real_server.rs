//! Opt-in: the PostgreSQL backend against a real Azure Database for PostgreSQL flexible server.
//! Without the variables below it prints "skipped: no real server configured" and passes, so
//! it is never mistaken for coverage. With them it prepares, grants, verifies the workload's
//! own sign-in, and revokes (dropping the login role it made), as the operator would.
//!
//! - `DBGRANT_PG_SERVER`: host name, e.g. `shop-test.postgres.database.azure.com`
//!   (`DBGRANT_PG_PORT`, default 5432);
//! - `DBGRANT_PG_DATABASE`: the database grants apply in;
//! - `DBGRANT_PG_ADMIN_ROLE`: the role name of the operator's Entra admin on the server;
//! - `DBGRANT_PG_MEMBER_OF`: a platform role (NOLOGIN) the operator holds WITH ADMIN OPTION;
//! - `DBGRANT_PG_WORKLOAD_CLIENT_ID`, `DBGRANT_PG_WORKLOAD_CLIENT_SECRET`: an app registration
//!   standing in for a workload (no login role on the server yet);
//! - the operator's own Azure variables, as `dbgrant run` reads them: `AZURE_TENANT_ID`,
//!   `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, optionally `AZURE_CLOUD` and the rest.

use std::collections::BTreeMap;

mod support;

use base64::Engine as _;
use dbgrant::api::{PostgresRole, PostgresTarget};
use dbgrant::backend::postgres::PostgresBackend;
use dbgrant::backend::{Access, TokenScope};
use support::real_server::{env, grant_verify_revoke, operator, skip, workload_token};

#[tokio::test(flavor = "multi_thread")]
async fn a_real_flexible_server_grants_verifies_and_revokes() {
    let (
        Some(server),
        Some(database),
        Some(admin_role),
        Some(member_of),
        Some(client_id),
        Some(client_secret),
        Some(tenant),
    ) = (
        env("DBGRANT_PG_SERVER"),
        env("DBGRANT_PG_DATABASE"),
        env("DBGRANT_PG_ADMIN_ROLE"),
        env("DBGRANT_PG_MEMBER_OF"),
        env("DBGRANT_PG_WORKLOAD_CLIENT_ID"),
        env("DBGRANT_PG_WORKLOAD_CLIENT_SECRET"),
        env("AZURE_TENANT_ID"),
    )
    else {
        skip("see tests/postgres_real_server.rs");
        return;
    };
    let port = env("DBGRANT_PG_PORT").map_or(5432, |p| p.parse().expect("DBGRANT_PG_PORT"));
    let (config, backends) = operator(&tenant).await;
    let target = PostgresTarget {
        server,
        port,
        server_resource_id: None,
        admin_role,
        database: Some(database),
        roles: BTreeMap::from([(
            "reader".to_string(),
            PostgresRole {
                member_of: vec![member_of],
                schemas: Vec::new(),
            },
        )]),
        verify_access: true,
    };
    let backend = PostgresBackend::new("real", target, backends.postgres.clone());

    // The workload's own token for PostgreSQL, and its object id from it.
    let token = workload_token(
        &config,
        &tenant,
        &client_id,
        client_secret,
        &TokenScope::PostgreSql,
    )
    .await;
    let payload = token.secret().split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let access = Access {
        principal_id: claims["oid"].as_str().expect("an oid").to_string(),
        role: "reader".into(),
        database: None,
        container: None,
        client_id: None,
    };

    let endpoint = grant_verify_revoke(&backend, &access, &token, "is a member").await;
    println!("real server {endpoint}: granted, verified, revoked");
}
