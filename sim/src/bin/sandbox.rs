//! `sandbox`: the simulated Kubernetes API and Azure with the operator running against them and
//! the examples applied; prints each grant's way to Ready and keeps serving for kubectl.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dbgrant_sim::operator::OperatorOptions;
use dbgrant_sim::sandbox::{Sandbox, SandboxOptions, default_examples_dir, summary};

/// Run dbgrant against simulated Kubernetes and Azure.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory for the kubeconfig and the Azure simulator's state file.
    #[arg(long, default_value = "target/sandbox")]
    state_dir: PathBuf,
    /// Manifests to apply (default: the repository's deploy/examples).
    #[arg(long)]
    examples: Option<PathBuf>,
    /// How long the grants may take to become Ready.
    #[arg(long, default_value = "60", value_parser = dbgrant::settings::parse_duration)]
    timeout: Duration,
    /// Exit once every grant is Ready (for scripts and CI) instead of serving until Ctrl-C.
    #[arg(long)]
    exit_when_ready: bool,
    /// Log filter for the operator and the simulators.
    #[arg(long, env = "DBGRANT_LOG", default_value = "warn")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dbgrant_sim::init_logging(&args.log);
    let options = SandboxOptions {
        state_dir: args.state_dir.clone(),
        examples_dir: args.examples.clone().unwrap_or_else(default_examples_dir),
        operator: OperatorOptions {
            resync_interval: Duration::from_secs(30),
            ..OperatorOptions::default()
        },
    };
    println!("starting the Kubernetes and Azure simulators and the operator...");
    let sandbox = Sandbox::start(options).await?;
    println!("kubeconfig:  {}", sandbox.kubeconfig.display());
    println!("Azure state: {}", sandbox.azure_state.display());
    println!("waiting for every grant to become Ready:");
    let started = std::time::Instant::now();
    let grants = sandbox
        .wait_until_ready(args.timeout, |key, grant| {
            println!(
                "  {:>6.1}s  {key:<28} {}",
                started.elapsed().as_secs_f64(),
                summary(grant)
            );
        })
        .await?;
    println!(
        "all {} grants Ready in {:.1}s:",
        grants.len(),
        started.elapsed().as_secs_f64()
    );
    for (key, grant) in &grants {
        let status = grant.status.clone().unwrap_or_default();
        println!(
            "  {key:<28} principal {}  scope {}",
            status.principal_id.unwrap_or_default(),
            status.scope.unwrap_or_default()
        );
    }
    if args.exit_when_ready {
        // The operator stops before the simulators it talks to, so it logs no errors on the way out.
        return sandbox.operator.stop().await;
    }
    println!(
        "\nTry: kubectl --kubeconfig {} get dbgrants -A",
        sandbox.kubeconfig.display()
    );
    println!("Ctrl-C stops the sandbox.");
    tokio::signal::ctrl_c().await?;
    sandbox.operator.stop().await
}
