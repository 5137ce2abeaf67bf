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
use dbgrant_sim::process::{AuthorityArgs, serve_until_stopped};
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
    #[command(flatten)]
    authority: AuthorityArgs,
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
    let jwks = args.authority.keys().await?;
    // v1 access tokens, as Entra ID issues them for the Azure SQL resource.
    let verifier = JwksVerifier::for_any(&jwks, &AUDIENCES, &args.authority.v1_issuer())?;
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
    serve_until_stopped(
        &format!("tsql-front serving localhost:{}", server.port),
        "state",
        &args.state,
        &serde_json::to_string_pretty(&state)?,
    )
    .await?;
    drop(server);
    Ok(())
}
