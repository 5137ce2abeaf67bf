//! `sandbox`: the simulated Kubernetes API and Azure (and PostgreSQL for a PostgreSQL target
//! among the examples), the operator installed from its chart
//! and running as its pod would (the chart's ServiceAccount and RBAC, workload identity), the
//! examples applied; prints each grant's way to Ready (or why it is not) and keeps serving for
//! kubectl until Ctrl-C. `sandbox identity create` makes a managed identity for a
//! ServiceAccount of your own in a running sandbox.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use dbgrant::api::DatabaseAccessGrant;
use dbgrant_harness::operator::OperatorOptions;
use dbgrant_harness::sandbox::{
    GrantWatch, Install, POLL, Sandbox, SandboxOptions, all_ready, create_identity,
    default_examples_dir, deploy_manifest, not_ready, summary,
};

/// Run dbgrant against simulated Kubernetes and Azure.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory for the kubeconfig and the Azure simulator's state file.
    #[arg(long, global = true, default_value = "target/sandbox")]
    state_dir: PathBuf,
    /// Manifests to apply (default: the repository's deploy/examples).
    #[arg(long)]
    examples: Option<PathBuf>,
    /// How to install the operator: `helm` (charts/dbgrant through helm-sdkpy), `manifest`
    /// (deploy/dbgrant.yaml), or `auto`: Helm when a Python with helm-sdkpy is found
    /// (DBGRANT_PYTHON, target/helm-venv, python3), else the manifest.
    #[arg(long, value_enum, default_value_t = InstallArg::Auto)]
    install: InstallArg,
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum InstallArg {
    Auto,
    Helm,
    Manifest,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Managed identities in a running sandbox's Azure (through its --state-dir/azure.json).
    #[command(subcommand)]
    Identity(IdentityCommand),
}

#[derive(Subcommand, Debug)]
enum IdentityCommand {
    /// Create a managed identity federated to a ServiceAccount and print its client id, for
    /// the ServiceAccount's azure.workload.identity/client-id annotation.
    Create {
        /// The identity's name.
        name: String,
        /// The ServiceAccount it is for, as NAMESPACE/NAME.
        #[arg(long, value_name = "NAMESPACE/NAME")]
        service_account: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Identity(IdentityCommand::Create {
        name,
        service_account,
    })) = &args.command
    {
        return identity_create(&args, name, service_account).await;
    }
    dbgrant_sim::init_logging(&args.log);
    let install = match args.install {
        InstallArg::Auto => Install::Auto,
        InstallArg::Manifest => Install::Manifest {
            path: deploy_manifest(),
        },
        InstallArg::Helm => match dbgrant_harness::sandbox::resolve_install(&Install::Auto)? {
            (helm @ Install::Helm { .. }, _) => helm,
            (_, why) => anyhow::bail!(
                "--install helm: {}",
                why.unwrap_or_else(|| "no Python with helm-sdkpy".into())
            ),
        },
    };
    let options = SandboxOptions {
        state_dir: args.state_dir.clone(),
        examples_dir: args.examples.clone().unwrap_or_else(default_examples_dir),
        operator: OperatorOptions {
            resync_interval: Duration::from_secs(30),
            ..OperatorOptions::default()
        },
        install,
    };
    println!("starting the Kubernetes and Azure simulators and installing the operator...");
    let mut sandbox = Sandbox::start(options).await?;
    if let Some(note) = &sandbox.install_note {
        println!("note: {note}");
    }
    println!("installed:   {}", sandbox.installed);
    println!(
        "operator:    pod {}/{} as ServiceAccount {} (only the chart's RBAC), Azure through \
         workload identity; http://{}/metrics",
        sandbox.pod.namespace, sandbox.pod.name, sandbox.pod.service_account, sandbox.pod.http_addr
    );
    println!("kubeconfig:  {}", sandbox.kubeconfig.display());
    println!("Azure state: {}", sandbox.azure_state.display());
    if let Some(note) = &sandbox.postgres_note {
        println!("note: {note}");
    }
    if let Some(pg) = &sandbox.postgres {
        println!(
            "postgres:    localhost:{} for target {} (database {}), TLS with CA {}",
            pg.front.port,
            pg.target,
            pg.database,
            pg.ca_file.display()
        );
    }
    if let Some(note) = &sandbox.sql_note {
        println!("note: {note}");
    }
    if let Some(sql) = &sandbox.sql {
        println!(
            "sql:         localhost:{} for target {} (database {}; the T-SQL stand-in, TDS 8 strict), CA {}",
            sql.server.port,
            sql.target,
            sql.database,
            sql.ca_file.display()
        );
    }
    if !args.exit_when_ready {
        println!(
            "Try: kubectl --kubeconfig {} get dbgrants -A   (Ctrl-C stops the sandbox)",
            sandbox.kubeconfig.display()
        );
    }
    println!("waiting for every grant to become Ready:");
    let result = tokio::select! {
        result = serve(&mut sandbox, &args) => result,
        // Ctrl-C or SIGTERM at any point, even before every grant is Ready, stops everything
        // cleanly (PostgreSQL too, which would outlive a process killed without its drop).
        () = dbgrant_sim::stop_requested() => Ok(()),
    };
    // The operator stops before the simulators it talks to, so it logs no errors on the way out.
    let stopped = sandbox.stop().await;
    result.and(stopped)
}

async fn identity_create(args: &Args, name: &str, service_account: &str) -> anyhow::Result<()> {
    let Some((namespace, account)) = service_account
        .split_once('/')
        .filter(|(n, a)| !n.is_empty() && !a.is_empty())
    else {
        anyhow::bail!("--service-account takes NAMESPACE/NAME, not '{service_account}'");
    };
    let created =
        create_identity(&args.state_dir.join("azure.json"), name, namespace, account).await?;
    println!("managed identity {}", created.resource_id);
    println!(
        "  federated to {} (issuer {})",
        created.subject, created.issuer
    );
    println!("  client id {}", created.client_id);
    println!("Annotate the ServiceAccount with it (creating it if needed), then grant it access:");
    println!(
        "  kubectl --kubeconfig {kc} create serviceaccount {account} -n {namespace}\n  \
         kubectl --kubeconfig {kc} annotate serviceaccount {account} -n {namespace} \
         azure.workload.identity/client-id={}",
        created.client_id,
        kc = args.state_dir.join("kubeconfig").display()
    );
    Ok(())
}

/// Print each grant's way to Ready. The verdict is on the examples only: once they are all
/// Ready (or the timeout passed, with each one's reason), the sandbox keeps serving and prints
/// every later change to any grant without judging it, until Ctrl-C (or returns at the verdict
/// with `--exit-when-ready`, failing if an example is not Ready). An operator that exits is
/// reported and restarted with growing delays, as the kubelet would.
async fn serve(sandbox: &mut Sandbox, args: &Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let deadline = started + args.timeout;
    let mut watch = GrantWatch::default();
    let mut verdict = false;
    let mut restarts = 0u32;
    let mut restart_at: Option<std::time::Instant> = None;
    loop {
        if restart_at.is_none() && sandbox.operator.is_finished() {
            let why = match sandbox.operator.exited().await {
                Ok(()) => "it stopped".to_string(),
                Err(error) => format!("{error:#}"),
            };
            let delay = crash_loop_delay(restarts);
            println!(
                "the operator's container in pod {} exited: {why}\n  restarting it in {delay:?} \
                 (CrashLoopBackOff, restart {})",
                sandbox.pod.name,
                restarts + 1
            );
            restart_at = Some(std::time::Instant::now() + delay);
        }
        if restart_at.is_some_and(|at| std::time::Instant::now() >= at) {
            restarts += 1;
            match sandbox.restart_operator().await {
                Ok(()) => {
                    println!("the operator's container started again");
                    restart_at = None;
                }
                Err(error) => {
                    let delay = crash_loop_delay(restarts);
                    println!(
                        "the operator's container exited at once: {error:#}\n  restarting it in \
                         {delay:?}"
                    );
                    restart_at = Some(std::time::Instant::now() + delay);
                }
            }
        }
        let grants = match sandbox.grants().await {
            Ok(grants) => grants,
            Err(error) if !args.exit_when_ready => {
                eprintln!("listing the grants failed (retrying): {error:#}");
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        for key in watch.deleted(&grants) {
            println!(
                "  {:>6.1}s  {key:<28} deleted",
                started.elapsed().as_secs_f64()
            );
        }
        for key in watch.changed(&grants) {
            println!(
                "  {:>6.1}s  {key:<28} {}",
                started.elapsed().as_secs_f64(),
                summary(&grants[&key])
            );
        }
        if !verdict {
            let examples = sandbox.example_grants(&grants);
            let missing = sandbox.missing_examples(&grants);
            if missing.is_empty() && all_ready(&examples) {
                print_ready(&examples, started);
                if args.exit_when_ready {
                    return Ok(());
                }
                verdict = true;
            } else if std::time::Instant::now() >= deadline {
                let mut waiting = not_ready(&examples);
                waiting.extend(missing.iter().map(|key| format!("{key}: not found")));
                if args.exit_when_ready {
                    anyhow::bail!(
                        "not Ready within {:?}: {}",
                        args.timeout,
                        waiting.join("; ")
                    );
                }
                println!("not every example grant is Ready after {:?}:", args.timeout);
                for line in waiting {
                    println!("  {line}");
                }
                verdict = true;
            }
            if verdict {
                println!(
                    "still serving; every change to a grant (yours too) is printed as it happens"
                );
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The kubelet's restart delays: 10 s doubling up to 5 minutes.
fn crash_loop_delay(restarts: u32) -> Duration {
    Duration::from_secs(10)
        .saturating_mul(1 << restarts.min(5))
        .min(Duration::from_secs(300))
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
