//! `azure-sim`: the Azure simulator (Entra ID, ARM, Cosmos DB RBAC and data plane) as a
//! process. Writes a JSON state file with everything a client needs once serving; runs until
//! killed.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use dbgrant_sim::azure::{AzureSim, AzureSimConfig};
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
    /// Log filter.
    #[arg(long, env = "AZURE_SIM_LOG", default_value = "warn")]
    log: String,
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
        ..AzureSimConfig::default()
    })
    .await?;
    let mut state = serde_json::to_value(sim.state())?;
    if let Some(issuer) = &args.oidc_issuer {
        state["oidcIssuer"] = json!(issuer);
    }
    dbgrant_sim::write_atomically(&args.state, &serde_json::to_string_pretty(&state)?)?;
    eprintln!(
        "azure-sim serving {} (state {})",
        sim.arm_endpoint(),
        args.state.display()
    );
    dbgrant_sim::stop_requested().await;
    sim.shutdown().await;
    Ok(())
}
