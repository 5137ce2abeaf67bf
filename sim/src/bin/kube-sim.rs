//! `kube-sim`: the Kubernetes API simulator as a process, for kubectl, Helm and anything else
//! that only needs a kubeconfig. Runs until killed.

use std::path::PathBuf;

use clap::Parser;
use dbgrant_sim::kube::{KubeSim, KubeSimConfig};
use dbgrant_sim::process::serve_until_stopped;

/// Serve a simulated Kubernetes API on 127.0.0.1 over HTTPS.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Where to write the kubeconfig (admin credentials and the generated CA) once serving.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value = "0")]
    port: u16,
    /// Log filter.
    #[arg(long, env = "KUBE_SIM_LOG", default_value = "warn")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dbgrant_sim::init_logging(&args.log);
    let sim = KubeSim::start(KubeSimConfig { port: args.port }).await?;
    serve_until_stopped(
        &format!("kube-sim serving {}", sim.url()),
        "kubeconfig",
        &args.kubeconfig,
        &sim.kubeconfig_yaml(),
    )
    .await?;
    sim.shutdown().await;
    Ok(())
}
