//! `azure-sim`: the Azure simulator (Entra ID, ARM, Cosmos DB RBAC and data plane) as a
//! process. Writes a JSON state file with everything a client needs once serving; runs until
//! killed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use dbgrant_sim::azure::throttle::{Bucket, Throttling};
use dbgrant_sim::azure::{AzureSim, AzureSimConfig};
use dbgrant_sim::process::serve_until_stopped;
use serde_json::json;

/// Serve a simulated Azure (Entra ID token endpoint, ARM, Cosmos DB) on 127.0.0.1 over HTTPS.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Where to write the state file (authority host, ARM endpoint, CA, tenant, admin
    /// credentials) once serving.
    #[arg(long)]
    state: PathBuf,
    /// The OIDC issuer whose ServiceAccount tokens identities will be federated with (for
    /// example kube-sim's); recorded in the state file for clients.
    #[arg(long)]
    oidc_issuer: Option<String>,
    /// A PEM file of CAs to trust when fetching issuers' discovery documents and keys
    /// (kube-sim's CA is in its kubeconfig). Repeatable.
    #[arg(long)]
    oidc_ca: Vec<PathBuf>,
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value = "0")]
    port: u16,
    /// Milliseconds added to every ARM request (not Entra ID, not the data plane).
    #[arg(long, default_value = "0")]
    arm_latency_ms: u64,
    /// Milliseconds an RBAC write's long-running operation takes (holding the account's lock).
    #[arg(long, default_value = "300")]
    lro_ms: u64,
    /// Lifetime of the Entra ID access tokens issued, in seconds.
    #[arg(long, default_value = "3600")]
    token_lifetime_secs: u64,
    /// ARM's read bucket per subscription and principal: `SIZE:REFILL_PER_SECOND`.
    #[arg(long, default_value = "250:25", value_parser = parse_bucket)]
    throttle_reads: Bucket,
    /// ARM's write bucket (PUT, PATCH, POST): `SIZE:REFILL_PER_SECOND`.
    #[arg(long, default_value = "200:10", value_parser = parse_bucket)]
    throttle_writes: Bucket,
    /// ARM's delete bucket: `SIZE:REFILL_PER_SECOND`.
    #[arg(long, default_value = "200:10", value_parser = parse_bucket)]
    throttle_deletes: Bucket,
    /// Log filter.
    #[arg(long, env = "AZURE_SIM_LOG", default_value = "warn")]
    log: String,
}

fn parse_bucket(text: &str) -> Result<Bucket, String> {
    let (size, refill) = text
        .split_once(':')
        .ok_or_else(|| format!("'{text}' is not SIZE:REFILL_PER_SECOND"))?;
    Ok(Bucket {
        size: size
            .parse()
            .map_err(|e| format!("bucket size '{size}': {e}"))?,
        refill_per_second: refill
            .parse()
            .map_err(|e| format!("refill rate '{refill}': {e}"))?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dbgrant_sim::init_logging(&args.log);
    let mut oidc_trusted_ca_pems = Vec::new();
    for path in &args.oidc_ca {
        oidc_trusted_ca_pems.push(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
    }
    let sim = AzureSim::start(AzureSimConfig {
        port: args.port,
        oidc_trusted_ca_pems,
        access_token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        lro_duration: Duration::from_millis(args.lro_ms),
        throttling: Throttling {
            reads: args.throttle_reads,
            writes: args.throttle_writes,
            deletes: args.throttle_deletes,
        },
        arm_latency: Duration::from_millis(args.arm_latency_ms),
    })
    .await?;
    let mut state = serde_json::to_value(sim.state())?;
    if let Some(issuer) = &args.oidc_issuer {
        state["oidcIssuer"] = json!(issuer);
    }
    serve_until_stopped(
        &format!("azure-sim serving {}", sim.arm_endpoint()),
        "state",
        &args.state,
        &serde_json::to_string_pretty(&state)?,
    )
    .await?;
    sim.shutdown().await;
    Ok(())
}
