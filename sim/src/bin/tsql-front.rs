//! `tsql-front`: the T-SQL stand-in for an Azure SQL Database server as a process: a TDS 8
//! strict endpoint on 127.0.0.1 that signs clients in with Entra tokens checked against the
//! keys an Entra ID publishes (azure-sim's `{tenant}/discovery/v2.0/keys`), with the databases
//! and the Entra admin a platform team would have set up. Writes a JSON state file (host,
//! port, CA) once serving; stops on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use dbgrant_sim::jwt::JwksVerifier;
use dbgrant_sim::sql::{AUDIENCES, SqlServer};
use serde_json::json;
use uuid::Uuid;

/// Serve the T-SQL stand-in on 127.0.0.1.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Where to write the state file (host, port, CA) once serving.
    #[arg(long)]
    state: PathBuf,
    /// The Entra authority host issuing the tokens (azure-sim's), ending in '/'.
    #[arg(long)]
    authority: String,
    /// The tenant whose tokens are accepted.
    #[arg(long)]
    tenant: String,
    /// A PEM file of the CA to trust when fetching the authority's keys.
    #[arg(long)]
    authority_ca: PathBuf,
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value = "0")]
    port: u16,
    /// A database to create (repeat for several).
    #[arg(long = "database", required = true)]
    databases: Vec<String>,
    /// The server's Microsoft Entra admin: its login name.
    #[arg(long, requires = "admin_sid")]
    admin_login: Option<String>,
    /// The Entra admin's SID as a GUID: an application's client id, a user's object id.
    #[arg(long)]
    admin_sid: Option<Uuid>,
    /// Log filter.
    #[arg(long, env = "TSQL_FRONT_LOG", default_value = "warn")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dbgrant_sim::init_logging(&args.log);
    let ca = std::fs::read_to_string(&args.authority_ca)
        .with_context(|| format!("reading {}", args.authority_ca.display()))?;
    let keys_url = format!("{}{}/discovery/v2.0/keys", args.authority, args.tenant);
    let jwks: serde_json::Value = dbgrant_sim::tls::https_client(&ca)?
        .get(&keys_url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("fetching {keys_url}"))?
        .json()
        .await?;
    // v1 access tokens, as Entra ID issues them for the Azure SQL resource.
    let issuer = format!("https://sts.windows.net/{}/", args.tenant);
    let verifier = JwksVerifier::for_any(&jwks, &AUDIENCES, &issuer)?;
    let server = SqlServer::start_on(
        Arc::new(move |token: &str| verifier.verify(token)),
        args.port,
    )
    .await
    .context("starting the T-SQL stand-in")?;
    for database in &args.databases {
        server.create_database(database);
    }
    if let (Some(login), Some(sid)) = (&args.admin_login, args.admin_sid) {
        server.set_entra_admin(login, sid);
    }
    let state = json!({
        "host": "localhost",
        "port": server.port,
        "caPem": server.ca_pem,
        "databases": args.databases,
    });
    dbgrant_sim::write_atomically(&args.state, &serde_json::to_string_pretty(&state)?)?;
    eprintln!(
        "tsql-front serving localhost:{} (state {})",
        server.port,
        args.state.display()
    );
    dbgrant_sim::stop_requested().await;
    drop(server);
    Ok(())
}
