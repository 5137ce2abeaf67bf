//! Command line and environment: every setting the binary takes, parsed once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// dbgrant: keyless database access on Azure for Kubernetes workloads.
#[derive(Parser, Debug)]
#[command(
    name = "dbgrant",
    version,
    about,
    long_about = None,
    after_help = "Every flag of `dbgrant run` can also be set through the environment variable shown in `dbgrant run --help` (DBGRANT_HTTP_ADDR, DBGRANT_LOG_FORMAT, DBGRANT_LOG, DBGRANT_CONCURRENCY, DBGRANT_RESYNC_INTERVAL, DBGRANT_LEADER_ELECTION, DBGRANT_LEASE_NAME, DBGRANT_LEASE_DURATION, POD_NAMESPACE, POD_NAME; Azure: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE or AZURE_CLIENT_SECRET, AZURE_CLOUD, AZURE_AUTHORITY_HOST, DBGRANT_ARM_ENDPOINT, DBGRANT_AZURE_EXTRA_CA_FILE); the Kubernetes connection follows KUBECONFIG, ~/.kube/config, then the in-cluster ServiceAccount."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The binary's subcommands.
#[derive(Subcommand, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing would only complicate its users"
)]
pub enum Command {
    /// Run the operator: both controllers plus the /livez, /readyz and /metrics endpoints.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD with --out-dir).
    Crd(CrdArgs),
}

/// Settings of `dbgrant run`. Each flag can also be given as the environment variable named.
#[derive(Parser, Debug, Clone)]
pub struct RunArgs {
    /// Address of the HTTP server for /livez, /readyz and /metrics.
    #[arg(long, env = "DBGRANT_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Log format: `json` for clusters (one object per line), `text` for humans.
    #[arg(long, env = "DBGRANT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `info,dbgrant=debug`.
    #[arg(long, env = "DBGRANT_LOG", default_value = "info")]
    pub log_filter: String,

    /// Maximum number of objects reconciled at once, per controller (0: unbounded).
    #[arg(long, env = "DBGRANT_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// How often every object is reconciled again even without a change, as a safety net
    /// against missed events (for example `10m`, `1h`).
    #[arg(long, env = "DBGRANT_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// Entra ID tenant of the workloads' managed identities, used when a ServiceAccount has
    /// no `azure.workload.identity/tenant-id` annotation. Also the operator's own tenant.
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub azure_tenant_id: Option<String>,

    /// The operator's Azure cloud, endpoints and credential.
    #[command(flatten)]
    pub azure: crate::azure::AzureArgs,

    /// Elect a leader among replicas through a Lease: only the leader reconciles, the others
    /// stand by to take over. Needs the Lease's namespace (`POD_NAMESPACE`).
    #[arg(long, env = "DBGRANT_LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "DBGRANT_LEASE_NAME", default_value = "dbgrant-leader")]
    pub lease_name: String,

    /// The operator's own namespace (downward API): the leader-election Lease and the key of
    /// the identity seals on token Secrets live there. Without it a restart proves each
    /// ServiceAccount's identity by exchange again.
    #[arg(long, visible_alias = "namespace", env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long the leader's Lease lasts without renewal: the longest a standby waits to take
    /// over (whole seconds, at least 2).
    #[arg(long, env = "DBGRANT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// This replica's identity in the Lease. Default: the pod name (`POD_NAME`), else the host
    /// name plus a random suffix.
    #[arg(long, env = "POD_NAME")]
    pub leader_identity: Option<String>,

    /// Path of a kubeconfig to use (development). Default: `KUBECONFIG`, then
    /// `~/.kube/config`, then the in-cluster ServiceAccount.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// Settings of `dbgrant crd`.
#[derive(Parser, Debug, Clone)]
pub struct CrdArgs {
    /// Write `<name>.yaml` files into this directory instead of printing to stdout.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// How logs are written.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Parse durations such as `90s`, `10m`, `1h`, `1h30m` or `2h 30m`; a bare number means
/// seconds. jiff's "friendly" duration format (already in the tree through k8s-openapi) does
/// the parsing.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    let parsed = match input.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => input
            .parse::<k8s_openapi::jiff::SignedDuration>()
            .map_err(|e| format!("invalid duration '{input}' (use e.g. 90s, 10m, 1h30m): {e}"))
            .and_then(|d| {
                Duration::try_from(d).map_err(|_| format!("duration '{input}' is negative"))
            })?,
    };
    if parsed.is_zero() {
        return Err(format!("duration '{input}' must be greater than zero"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_combinations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("10m5").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_duration("2h 30m"), Ok(Duration::from_secs(9000)));
        assert!(parse_duration("-5m").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_fall_back_to_documented_defaults() {
        let cli = Cli::try_parse_from(["dbgrant", "run"]).expect("defaults parse");
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.concurrency, 16);
        assert_eq!(args.resync_interval, Duration::from_secs(600));
        assert_eq!(args.log_format, LogFormat::Json);
        assert!(
            !args.leader_election,
            "off unless asked: a single binary needs no Lease"
        );
        assert_eq!(args.lease_name, "dbgrant-leader");
        assert_eq!(args.lease_duration, Duration::from_secs(15));
    }

    #[test]
    fn leader_election_takes_a_bare_flag_or_a_boolean() {
        let parse = |argv: &[&str]| {
            let Command::Run(args) = Cli::try_parse_from(argv).expect("parses").command else {
                panic!("expected run");
            };
            args.leader_election
        };
        assert!(parse(&["dbgrant", "run", "--leader-election"]));
        assert!(parse(&["dbgrant", "run", "--leader-election=true"]));
        assert!(!parse(&["dbgrant", "run", "--leader-election=false"]));
    }
}
