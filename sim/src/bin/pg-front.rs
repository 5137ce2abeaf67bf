//! `pg-front`: a stand-in for an Azure Database for PostgreSQL flexible server as processes: a
//! real PostgreSQL (Debian's, from a temporary `initdb`, on a Unix socket only, with the
//! pgaadauth stand-ins) and the token-checking TLS front, which checks passwords as Entra
//! tokens against the keys an Entra ID publishes (azure-sim's `{tenant}/discovery/v2.0/keys`).
//! Writes a JSON state file once serving; stops PostgreSQL and removes its files when killed.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use dbgrant_sim::jwt::JwksVerifier;
use dbgrant_sim::postgres::{AUDIENCE, RealPostgres};
use dbgrant_sim::process::{AuthorityArgs, serve_until_stopped};
use serde_json::json;

/// Serve PostgreSQL behind a token-checking TLS front on 127.0.0.1.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Where to write the state file (front port and CA, the superuser's libpq connection
    /// string on the Unix socket) once serving.
    #[arg(long)]
    state: PathBuf,
    #[command(flatten)]
    authority: AuthorityArgs,
    /// Port of the front on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value = "0")]
    port: u16,
    /// Log filter.
    #[arg(long, env = "PG_FRONT_LOG", default_value = "warn")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dbgrant_sim::init_logging(&args.log);
    let jwks = args.authority.keys().await?;
    // v1 access tokens, as Entra ID issues them for the ossrdbms-aad resource.
    let verifier = JwksVerifier::new(&jwks, AUDIENCE, &args.authority.v1_issuer())?;
    let server = tokio::task::spawn_blocking(RealPostgres::start)
        .await?
        .context("starting PostgreSQL")?;
    let check = server.token_check(move |token| verifier.verify(token));
    let front = server.front_on(check, args.port).await?;
    let state = json!({
        "host": "localhost",
        "port": front.port,
        "caPem": front.ca_pem,
        "adminDsn": format!(
            "host={} port={} user=postgres dbname=postgres",
            server.socket_dir().display(),
            server.port()
        ),
    });
    serve_until_stopped(
        &format!("pg-front serving localhost:{}", front.port),
        "state",
        &args.state,
        &serde_json::to_string_pretty(&state)?,
    )
    .await?;
    drop(front);
    // Dropping the server stops PostgreSQL and removes its directory.
    tokio::task::spawn_blocking(move || drop(server)).await?;
    Ok(())
}
