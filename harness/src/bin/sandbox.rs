//! `sandbox`: the simulated Kubernetes API and Azure with the operator running against them and
//! the examples applied; prints each grant's way to Ready (or why it is not) and keeps serving
//! for kubectl until Ctrl-C.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dbgrant::api::DatabaseAccessGrant;
use dbgrant_harness::operator::OperatorOptions;
use dbgrant_harness::sandbox::{
    GrantWatch, POLL, Sandbox, SandboxOptions, all_ready, default_examples_dir, not_ready, summary,
};

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
    /// How long the grants may take to become Ready: then the sandbox says which are not and
    /// why (and, with --exit-when-ready, fails).
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
    if !args.exit_when_ready {
        println!(
            "Try: kubectl --kubeconfig {} get dbgrants -A   (Ctrl-C stops the sandbox)",
            sandbox.kubeconfig.display()
        );
    }
    println!("waiting for every grant to become Ready:");
    let result = tokio::select! {
        result = serve(&sandbox, &args) => result,
        // Ctrl-C at any point, even before every grant is Ready, stops everything cleanly.
        signal = tokio::signal::ctrl_c() => signal.map_err(Into::into),
    };
    // The operator stops before the simulators it talks to, so it logs no errors on the way out.
    let stopped = sandbox.operator.stop().await;
    result.and(stopped)
}

/// Print each grant's way to Ready, then keep watching (grants applied later, drift repaired)
/// until Ctrl-C, or return once all are Ready with `--exit-when-ready`. Missing the deadline
/// fails only with `--exit-when-ready`; otherwise it reports what is stuck and why, and the
/// sandbox keeps serving so the cause can be looked at (and fixed) with kubectl.
async fn serve(sandbox: &Sandbox, args: &Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let deadline = started + args.timeout;
    let mut watch = GrantWatch::default();
    let mut reported_ready = false;
    let mut reported_late = false;
    loop {
        let grants = match sandbox.grants().await {
            Ok(grants) => grants,
            Err(error) if !args.exit_when_ready => {
                eprintln!("listing the grants failed (retrying): {error:#}");
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        for key in watch.changed(&grants) {
            println!(
                "  {:>6.1}s  {key:<28} {}",
                started.elapsed().as_secs_f64(),
                summary(&grants[&key])
            );
        }
        let ready = all_ready(&grants);
        if ready && !reported_ready {
            print_ready(&grants, started);
            if args.exit_when_ready {
                return Ok(());
            }
            println!("still serving; changes to grants are printed as they happen");
        }
        reported_ready = ready;
        if !ready && !reported_late && std::time::Instant::now() >= deadline {
            let waiting = not_ready(&grants);
            if args.exit_when_ready {
                anyhow::bail!(
                    "not Ready within {:?}: {}",
                    args.timeout,
                    waiting.join("; ")
                );
            }
            println!("not every grant is Ready after {:?}:", args.timeout);
            for line in waiting {
                println!("  {line}");
            }
            println!("still serving; their progress is printed as it happens");
            reported_late = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_ready(grants: &BTreeMap<String, DatabaseAccessGrant>, started: std::time::Instant) {
    println!(
        "all {} grants Ready in {:.1}s:",
        grants.len(),
        started.elapsed().as_secs_f64()
    );
    for (key, grant) in grants {
        let status = grant.status.clone().unwrap_or_default();
        println!(
            "  {key:<28} principal {}  scope {}",
            status.principal_id.unwrap_or_default(),
            status.scope.unwrap_or_default()
        );
    }
}
