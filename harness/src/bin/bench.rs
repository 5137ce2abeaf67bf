//! `bench`: the operator's throughput and footprint at scale. kube-sim and azure-sim run as
//! processes with the ARM latency, long-running-operation duration, throttling and token
//! lifetime asked for; `dbgrant run` runs as a third process pointed at them through the same
//! variables a cluster would use. The driver makes M Cosmos DB accounts (one DatabaseTarget
//! each), K federated identities and ServiceAccounts, then N grants, and measures time to
//! Ready against the latency floor, Azure and Kubernetes calls per grant and at steady state,
//! and a restart. `scripts/bench` builds and runs it; every wait is bounded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Parser;
use dbgrant::api::{DatabaseAccessGrant, DatabaseTarget};
use dbgrant::azure::arm::Arm;
use dbgrant::azure::{AzureConfig, AzureCosmos, OperatorCredential};
use dbgrant_harness::sandbox::EXCHANGE_AUDIENCE;
use dbgrant_sim::azure::{AzureCounters, AzureOperation as Op, Verb};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Measure the operator at scale against the simulators run as processes.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Grants to create (default 1,000; 10,000 with --large).
    #[arg(long)]
    grants: Option<usize>,
    /// The large run: 10,000 grants unless --grants says otherwise.
    #[arg(long)]
    large: bool,
    /// Cosmos DB accounts (one DatabaseTarget each); grants are spread over them evenly.
    #[arg(long, default_value_t = 10)]
    accounts: usize,
    /// Managed identities (one federated ServiceAccount each); grants are spread over them.
    #[arg(long, default_value_t = 10)]
    identities: usize,
    /// Write the figures here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Milliseconds azure-sim adds to every ARM request.
    #[arg(long, default_value_t = 20)]
    arm_latency_ms: u64,
    /// Milliseconds each RBAC write's long-running operation takes.
    #[arg(long, default_value_t = 300)]
    lro_ms: u64,
    /// Lifetime of Entra ID tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime_secs: u64,
    /// ARM's read bucket, `SIZE:REFILL_PER_SECOND` (ARM's published default).
    #[arg(long, default_value = "250:25")]
    throttle_reads: String,
    /// ARM's write bucket.
    #[arg(long, default_value = "200:10")]
    throttle_writes: String,
    /// ARM's delete bucket.
    #[arg(long, default_value = "200:10")]
    throttle_deletes: String,
    /// The operator's resync interval in seconds (the steady-state window is one of these).
    #[arg(long, default_value_t = 20)]
    resync_interval_secs: u64,
    /// The operator's reconciles at once per controller.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Every this many grants asks for a token Secret (0: none).
    #[arg(long, default_value_t = 10)]
    token_secret_every: usize,
    /// Where `dbgrant`, `kube-sim` and `azure-sim` are (release builds).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The operator's log filter (its log is kept, with the simulators', when a phase fails
    /// or with --keep-logs).
    #[arg(long, default_value = "warn")]
    operator_log: String,
    /// Keep the processes' logs (their directory is printed) even when the run succeeds.
    #[arg(long)]
    keep_logs: bool,
    /// Give up on any one phase after this many seconds.
    #[arg(long, default_value_t = 1200)]
    phase_timeout_secs: u64,
}

const SUBSCRIPTION: &str = "6b1d3a52-0b3e-4c1f-9d7a-0000000be4c0";
const NAMESPACE: &str = "bench";
const ACCOUNT_API_VERSION: &str = "2025-10-15";
const IDENTITY_API_VERSION: &str = "2024-11-30";
/// Creates in flight at once: enough to outrun the operator, few enough for kube-sim.
const CREATE_PARALLELISM: usize = 32;

/// The figures, under the names the JSON uses.
#[derive(Default)]
struct Figures(BTreeMap<&'static str, Value>);

/// The physical floor of the burst and what sets it: the largest of
/// - each account's grants one after the other (one RBAC write at a time per account), accounts
///   in parallel: the busiest account's grants times one PUT plus its long-running operation;
/// - the subscription's ARM write bucket: one PUT per grant, the burst beyond the bucket's size
///   at its refill rate, then the last operation;
/// - its read bucket: at least one status poll per grant (the operation's outcome can be known
///   no other way), likewise.
fn floor_seconds(args: &Args, grants: usize) -> anyhow::Result<(f64, &'static str)> {
    #[allow(clippy::cast_precision_loss)]
    let (grants_f, per_account) = (grants as f64, grants.div_ceil(args.accounts) as f64);
    #[allow(clippy::cast_precision_loss)]
    let one_write = (args.arm_latency_ms + args.lro_ms) as f64 / 1000.0;
    let bucket = |spec: &str| -> anyhow::Result<(f64, f64)> {
        let (size, refill) = spec
            .split_once(':')
            .with_context(|| format!("throttle bucket {spec:?} is not SIZE:REFILL"))?;
        Ok((size.trim().parse()?, refill.trim().parse()?))
    };
    let beyond = |(size, refill): (f64, f64)| {
        if refill > 0.0 {
            (grants_f - size).max(0.0) / refill
        } else {
            0.0
        }
    };
    let candidates = [
        (per_account * one_write, "serialisation per account"),
        (
            beyond(bucket(&args.throttle_writes)?) + one_write,
            "ARM write bucket",
        ),
        (
            beyond(bucket(&args.throttle_reads)?) + one_write,
            "ARM read bucket",
        ),
    ];
    Ok(candidates
        .into_iter()
        .fold((0.0, ""), |best, c| if c.0 > best.0 { c } else { best }))
}

impl Figures {
    fn set(&mut self, name: &'static str, value: impl Into<Value>) {
        self.0.insert(name, value.into());
    }
}

/// A child process killed when dropped, with its log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(command: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = command
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            // Its own process group, so a kill reaches what a wrapper (a profiler) started too.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        Ok(Self {
            child,
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the process has exited")
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("{} exited ({status}):\n{tail}", self.log.display());
        }
        Ok(())
    }

    async fn kill(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

async fn wait_for_file(path: &Path, process: &mut Proc) -> anyhow::Result<()> {
    for _ in 0..600 {
        if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return Ok(());
        }
        process.check_running()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{} did not appear within 60 s", path.display())
}

/// Poll `check` every `every` until it yields, failing after `limit`.
async fn until<T, F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    check: F,
) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if started.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(every).await;
    }
}

fn ready(conditions: &[Condition], generation: Option<i64>) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True" && c.observed_generation == generation)
}

/// The simulators' counters, read over HTTP.
struct Counters {
    azure: AzureCounters,
    kube: BTreeMap<String, u64>,
}

impl Counters {
    fn kube(&self, verb: &str, resource: &str) -> u64 {
        self.kube
            .get(&format!("{verb} {resource}"))
            .copied()
            .unwrap_or(0)
    }

    /// Writes that change access or roles (PUT and DELETE of assignments and definitions).
    fn access_writes(&self) -> u64 {
        [
            Op::SqlRoleAssignments(Verb::Put),
            Op::SqlRoleAssignments(Verb::Delete),
            Op::SqlRoleDefinitions(Verb::Put),
            Op::SqlRoleDefinitions(Verb::Delete),
        ]
        .into_iter()
        .map(|op| self.azure.calls(op))
        .sum()
    }

    /// ARM reads: every GET and LIST except Entra ID and the data plane.
    fn arm_reads(&self) -> u64 {
        use dbgrant_sim::azure::Family;
        let families = [
            Family::OperationStatus,
            Family::Identities,
            Family::FederatedCredentials,
            Family::Accounts,
            Family::SqlRoleDefinitions,
            Family::SqlRoleAssignments,
        ];
        let mut total = 0;
        for family in families {
            for verb in [Verb::Get, Verb::List] {
                let op = match family {
                    Family::OperationStatus => Op::OperationStatus(verb),
                    Family::Identities => Op::Identities(verb),
                    Family::FederatedCredentials => Op::FederatedCredentials(verb),
                    Family::Accounts => Op::Accounts(verb),
                    Family::SqlRoleDefinitions => Op::SqlRoleDefinitions(verb),
                    _ => Op::SqlRoleAssignments(verb),
                };
                total += self.azure.calls(op);
            }
        }
        total
    }

    fn status_writes(&self) -> u64 {
        ["patch", "update"]
            .iter()
            .flat_map(|verb| {
                ["databaseaccessgrants/status", "databasetargets/status"]
                    .map(|resource| self.kube(verb, resource))
            })
            .sum()
    }

    fn secret_writes(&self) -> u64 {
        ["create", "update", "patch", "delete"]
            .iter()
            .map(|verb| self.kube(verb, "secrets"))
            .sum()
    }
}

struct Env {
    work: PathBuf,
    kubeconfig: PathBuf,
    client: kube::Client,
    arm: Arm,
    operator_env: Vec<(&'static str, String)>,
    args: Args,
    grants: usize,
}

impl Env {
    async fn counters(&self) -> anyhow::Result<Counters> {
        let request = http::Request::get(dbgrant_sim::kube::COUNTERS_PATH).body(Vec::new())?;
        let kube: BTreeMap<String, u64> = self.client.request(request).await?;
        let url = self
            .arm
            .url(dbgrant_sim::azure::COUNTERS_PATH, "none")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let azure: Value = self
            .arm
            .get("sim_counters", "reading azure-sim's counters", url)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Counters {
            azure: AzureCounters::from_json(&azure),
            kube,
        })
    }

    fn start_operator(&self, n: u32) -> anyhow::Result<Proc> {
        let binary = self.args.bin_dir.join("dbgrant");
        // A profiler wrapping the operator (e.g. `heaptrack`), for finding where figures go.
        let mut command = match std::env::var("DBGRANT_BENCH_WRAPPER") {
            Ok(wrapper) if !wrapper.trim().is_empty() => {
                let mut words = wrapper.split_whitespace();
                let mut command = Command::new(words.next().unwrap_or_default());
                command.args(words).arg(&binary);
                command
            }
            _ => Command::new(&binary),
        };
        command
            .args([
                "run",
                "--kubeconfig",
                &self.kubeconfig.display().to_string(),
                "--http-addr",
                "127.0.0.1:0",
                "--resync-interval",
                &format!("{}s", self.args.resync_interval_secs),
                "--concurrency",
                &self.args.concurrency.to_string(),
                "--log-format",
                "text",
                "--log-filter",
                &self.args.operator_log,
            ])
            .envs(self.operator_env.iter().map(|(k, v)| (*k, v.as_str())));
        Proc::spawn(&mut command, &self.work.join(format!("operator-{n}.log")))
    }

    fn phase_limit(&self) -> Duration {
        Duration::from_secs(self.args.phase_timeout_secs)
    }

    /// Seconds from now until every grant is Ready for its generation.
    async fn wait_all_ready(&self, operator: &mut Proc) -> anyhow::Result<()> {
        let api: Api<DatabaseAccessGrant> = Api::namespaced(self.client.clone(), NAMESPACE);
        let every = Duration::from_millis(if self.grants > 2000 { 2000 } else { 500 });
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            operator.check_running()?;
            let list = api.list(&ListParams::default()).await?;
            let done = list
                .items
                .iter()
                .filter(|g| {
                    g.status.as_ref().is_some_and(|s| {
                        ready(&s.conditions, g.metadata.generation)
                            && s.observed_generation == g.metadata.generation
                    })
                })
                .count();
            if done >= self.grants {
                return Ok(());
            }
            if last_report.elapsed() > Duration::from_secs(15) {
                eprintln!(
                    "  {done}/{} Ready after {:.0} s",
                    self.grants,
                    started.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
            if started.elapsed() > self.phase_limit() {
                bail!(
                    "only {done}/{} grants Ready within {:?}",
                    self.grants,
                    self.phase_limit()
                );
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// Peak resident set (VmHWM) in MiB and CPU seconds (utime + stime) of a process.
fn footprint(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/PID/status")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3, state.
    let after = &stat[stat.rfind(')').context("/proc/PID/stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Ok((hwm_kib / 1024.0, ticks / hz))
}

fn ratio(numerator: u64, denominator: usize) -> f64 {
    if denominator == 0 {
        return 0.0;
    }
    // Counts here stay far below 2^52.
    #[allow(clippy::cast_precision_loss)]
    let value = numerator as f64 / denominator as f64;
    (value * 1000.0).round() / 1000.0
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let grants = args
        .grants
        .unwrap_or(if args.large { 10_000 } else { 1_000 });
    anyhow::ensure!(
        args.accounts > 0 && args.identities > 0 && grants > 0,
        "--grants, --accounts and --identities must be positive"
    );
    let work = std::env::temp_dir().join(format!("dbgrant-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let keep_logs = args.keep_logs;
    let result = run(args, grants, &work).await;
    match &result {
        Ok(()) if keep_logs => eprintln!("bench: logs kept in {}", work.display()),
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&work);
        }
        Err(_) => eprintln!("bench: logs kept in {}", work.display()),
    }
    result
}

#[allow(clippy::too_many_lines, reason = "one benchmark, read top to bottom")]
async fn run(args: Args, grants: usize, work: &Path) -> anyhow::Result<()> {
    let kubeconfig = work.join("kubeconfig");
    let mut kube_sim = Proc::spawn(
        Command::new(args.bin_dir.join("kube-sim"))
            .args(["--kubeconfig", &kubeconfig.display().to_string()]),
        &work.join("kube-sim.log"),
    )?;
    wait_for_file(&kubeconfig, &mut kube_sim).await?;
    let config = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let ca_data = config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .context("kube-sim's kubeconfig names its CA")?;
    let kube_ca = work.join("kube-ca.pem");
    std::fs::write(
        &kube_ca,
        base64::engine::general_purpose::STANDARD.decode(ca_data)?,
    )?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(config, &Default::default()).await?,
    )?;
    let discovery: Value = client
        .request(http::Request::get("/.well-known/openid-configuration").body(Vec::new())?)
        .await?;
    let issuer = discovery["issuer"]
        .as_str()
        .context("kube-sim's issuer")?
        .to_string();

    let state_file = work.join("azure.json");
    let mut azure_sim = Proc::spawn(
        Command::new(args.bin_dir.join("azure-sim")).args([
            "--state",
            &state_file.display().to_string(),
            "--oidc-issuer",
            &issuer,
            "--oidc-ca",
            &kube_ca.display().to_string(),
            "--arm-latency-ms",
            &args.arm_latency_ms.to_string(),
            "--lro-ms",
            &args.lro_ms.to_string(),
            "--token-lifetime-secs",
            &args.token_lifetime_secs.to_string(),
            "--throttle-reads",
            &args.throttle_reads,
            "--throttle-writes",
            &args.throttle_writes,
            "--throttle-deletes",
            &args.throttle_deletes,
        ]),
        &work.join("azure-sim.log"),
    )?;
    wait_for_file(&state_file, &mut azure_sim).await?;
    let state: Value = serde_json::from_str(&std::fs::read_to_string(&state_file)?)?;
    let text = |pointer: &str| -> anyhow::Result<String> {
        state
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("{pointer} in azure-sim's state"))
    };
    let (authority, arm_endpoint, ca_pem, tenant) = (
        text("/authorityHost")?,
        text("/armEndpoint")?,
        text("/caPem")?,
        text("/tenantId")?,
    );
    let (admin_id, admin_secret) = (text("/admin/clientId")?, text("/admin/clientSecret")?);
    let azure_ca = work.join("azure-ca.pem");
    std::fs::write(&azure_ca, &ca_pem)?;
    let admin = AzureCosmos::new(
        AzureConfig::custom(
            authority.parse()?,
            arm_endpoint.parse()?,
            Some(ca_pem),
            tenant.clone(),
            OperatorCredential::ClientSecret {
                client_id: admin_id.clone(),
                client_secret: admin_secret.clone(),
            },
        ),
        None,
    )
    .await?;
    // The operator signs in as the simulator's administrator, as scripts/e2e-real-mode does;
    // its ARM throttling bucket is then shared with the setup below, which is done by then.
    let operator_env = vec![
        ("AZURE_CLOUD", "Custom".to_string()),
        ("AZURE_AUTHORITY_HOST", authority),
        ("DBGRANT_ARM_ENDPOINT", arm_endpoint),
        (
            "DBGRANT_AZURE_EXTRA_CA_FILE",
            azure_ca.display().to_string(),
        ),
        ("AZURE_TENANT_ID", tenant),
        ("AZURE_CLIENT_ID", admin_id),
        ("AZURE_CLIENT_SECRET", admin_secret),
    ];
    let env = Env {
        work: work.to_path_buf(),
        kubeconfig,
        client: client.clone(),
        arm: admin.arm().clone(),
        operator_env,
        args,
        grants,
    };
    let args = &env.args;
    let setup_started = Instant::now();
    eprintln!(
        "bench: {grants} grants over {} accounts and {} identities; ARM latency {} ms, LRO {} ms",
        args.accounts, args.identities, args.arm_latency_ms, args.lro_ms
    );

    // Azure: accounts, identities and their federation, through ARM as the administrator.
    let group = format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/bench");
    let accounts: Vec<String> = (0..args.accounts)
        .map(|i| format!("{group}/providers/Microsoft.DocumentDB/databaseAccounts/bench-{i}"))
        .collect();
    let arm = &env.arm;
    let fail = |e: dbgrant::backend::BackendError| anyhow::anyhow!("{e}");
    for account in &accounts {
        let body = json!({"location": "westeurope", "kind": "GlobalDocumentDB", "properties": {"databaseAccountOfferType": "Standard", "locations": [{"locationName": "westeurope"}]}});
        let url = arm.url(account, ACCOUNT_API_VERSION).map_err(fail)?;
        arm.put("account_put", "creating an account", url, &body)
            .await
            .map_err(fail)?;
    }
    let mut client_ids = Vec::new();
    for k in 0..args.identities {
        let id =
            format!("{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-{k}");
        let url = arm.url(&id, IDENTITY_API_VERSION).map_err(fail)?;
        arm.put(
            "identity_put",
            "creating an identity",
            url.clone(),
            &json!({"location": "westeurope"}),
        )
        .await
        .map_err(fail)?;
        let body: Value = arm
            .get("identity_get", "reading an identity", url)
            .await
            .map_err(fail)?;
        client_ids.push(
            body["properties"]["clientId"]
                .as_str()
                .context("identity's clientId")?
                .to_string(),
        );
        let fic = format!("{id}/federatedIdentityCredentials/sa-{k}");
        let body = json!({"properties": {"issuer": issuer, "subject": format!("system:serviceaccount:{NAMESPACE}:sa-{k}"), "audiences": [EXCHANGE_AUDIENCE]}});
        arm.put(
            "fic_put",
            "federating an identity",
            arm.url(&fic, IDENTITY_API_VERSION).map_err(fail)?,
            &body,
        )
        .await
        .map_err(fail)?;
    }

    // Kubernetes: CRDs, the namespace, ServiceAccounts and one target per account.
    for crd in dbgrant::api::crds() {
        dbgrant_sim::apply::apply(&client, &serde_json::to_value(&crd)?, "default").await?;
    }
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {"dbgrant.io/team": "bench"}}});
    dbgrant_sim::apply::apply(&client, &namespace, "default").await?;
    for (k, client_id) in client_ids.iter().enumerate() {
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": format!("sa-{k}"), "namespace": NAMESPACE, "annotations": {"azure.workload.identity/client-id": client_id}}});
        dbgrant_sim::apply::apply(&client, &sa, NAMESPACE).await?;
    }
    for (i, account) in accounts.iter().enumerate() {
        let target = json!({"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseTarget", "metadata": {"name": format!("bench-{i}")}, "spec": {"cosmos": {"accountResourceId": account}, "allowedNamespaces": {"matchLabels": {"dbgrant.io/team": "bench"}}, "allowedRoles": ["reader"]}});
        dbgrant_sim::apply::apply(&client, &target, "default").await?;
    }

    let mut operator = env.start_operator(1)?;
    let operator_started = Instant::now();
    let targets: Api<DatabaseTarget> = Api::all(client.clone());
    until(
        "every target Ready",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            let list = targets.list(&ListParams::default()).await?;
            Ok((list.items.len() == args.accounts
                && list.items.iter().all(|t| {
                    t.status
                        .as_ref()
                        .is_some_and(|s| ready(&s.conditions, t.metadata.generation))
                }))
            .then_some(()))
        },
    )
    .await?;
    eprintln!(
        "bench: set up in {:.1} s; creating grants",
        setup_started.elapsed().as_secs_f64()
    );

    // --- the burst: N grants, each its own assignment (its own database scope) ---
    let before = env.counters().await?;
    let created = Instant::now();
    let api: Api<DatabaseAccessGrant> = Api::namespaced(client.clone(), NAMESPACE);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(CREATE_PARALLELISM));
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..grants {
        let mut spec = json!({
            "serviceAccountName": format!("sa-{}", (i / args.accounts) % args.identities),
            "target": format!("bench-{}", i % args.accounts),
            "role": "reader",
            "database": format!("db-{i}"),
        });
        if args.token_secret_every > 0 && i % args.token_secret_every == 0 {
            spec["tokenSecret"] = json!({"name": format!("token-{i}")});
        }
        let grant: DatabaseAccessGrant = serde_json::from_value(json!({
            "apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant",
            "metadata": {"name": format!("g-{i}"), "namespace": NAMESPACE}, "spec": spec,
        }))?;
        let api = api.clone();
        let permit = semaphore.clone().acquire_owned().await?;
        creates.spawn(async move {
            let result = api.create(&PostParams::default(), &grant).await;
            drop(permit);
            result
        });
    }
    while let Some(result) = creates.join_next().await {
        result??;
    }
    env.wait_all_ready(&mut operator).await?;
    let ready_seconds = created.elapsed().as_secs_f64();
    let after = env.counters().await?;
    eprintln!(
        "bench: all {grants} Ready in {ready_seconds:.1} s; measuring one resync at steady state"
    );

    let mut figures = Figures::default();
    figures.set("grants", grants);
    figures.set("accounts", args.accounts);
    figures.set("identities", args.identities);
    figures.set("ready_seconds", round3(ready_seconds));
    let (floor, bound) = floor_seconds(args, grants)?;
    figures.set("floor_seconds", round3(floor));
    figures.set("floor_bound", bound);
    figures.set("ratio_to_floor", round3(ready_seconds / floor));
    let delta = |op: Op| after.azure.calls(op) - before.azure.calls(op);
    let delta_status = |op: Op, status: u16| {
        after.azure.with_status(op, status) - before.azure.with_status(op, status)
    };
    // Writes ARM accepted: a PUT it refused with 429 wrote nothing (counted apart).
    let refused = delta_status(Op::SqlRoleAssignments(Verb::Put), 429);
    figures.set(
        "arm_writes_per_grant",
        ratio(delta(Op::SqlRoleAssignments(Verb::Put)) - refused, grants),
    );
    figures.set("arm_writes_refused_429", refused);
    figures.set(
        "arm_polls_per_grant",
        ratio(delta(Op::OperationStatus(Verb::Get)), grants),
    );
    // The identity cache keeps an exchange for 45% of the token's lifetime: count the windows
    // the burst spanned so a long burst is not charged for legitimate re-exchanges.
    let window = args.token_lifetime_secs as f64 * 0.45;
    let windows = (ready_seconds / window).ceil().max(1.0);
    let exchanges = (after.azure.federated_exchanges() - before.azure.federated_exchanges()) as f64;
    figures.set(
        "entra_exchanges_per_identity_window",
        round3(exchanges / args.identities as f64 / windows),
    );
    let burst_secret_writes = after.secret_writes() - before.secret_writes();
    let burst_status_writes = after.status_writes() - before.status_writes();

    // --- steady state: one resync interval with nothing changing ---
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steady_before = env.counters().await?;
    tokio::time::sleep(Duration::from_secs(args.resync_interval_secs)).await;
    operator.check_running()?;
    let steady_after = env.counters().await?;
    let probes =
        steady_after.azure.calls(Op::DataPlaneRead) - steady_before.azure.calls(Op::DataPlaneRead);
    figures.set(
        "steady_arm_writes",
        steady_after.access_writes() - steady_before.access_writes(),
    );
    figures.set(
        "steady_arm_reads_per_account",
        ratio(
            steady_after.arm_reads() - steady_before.arm_reads(),
            args.accounts,
        ),
    );
    figures.set(
        "noop_status_writes",
        steady_after.status_writes() - steady_before.status_writes(),
    );
    figures.set(
        "noop_secret_writes",
        steady_after.secret_writes() - steady_before.secret_writes(),
    );
    let (rss, cpu) = footprint(operator.pid()?)?;
    figures.set("operator_peak_rss_mib", round3(rss));
    figures.set("operator_cpu_seconds", round3(cpu));
    let operator_uptime = operator_started.elapsed().as_secs_f64();

    // --- restart: a crash (SIGKILL), a new process, every grant probed again ---
    operator.kill().await;
    let restart_before = env.counters().await?;
    let mut operator = env.start_operator(2)?;
    let restarted = Instant::now();
    let probes_needed = grants as u64;
    let reverified = async {
        loop {
            operator.check_running()?;
            let now = env.counters().await?;
            if now.azure.calls(Op::DataPlaneRead) - restart_before.azure.calls(Op::DataPlaneRead)
                >= probes_needed
            {
                return anyhow::Ok(now);
            }
            if restarted.elapsed() > env.phase_limit() {
                bail!("grants not re-verified within {:?}", env.phase_limit());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let restart_after = reverified.await?;
    figures.set("restart_seconds", round3(restarted.elapsed().as_secs_f64()));
    figures.set(
        "restart_azure_writes",
        restart_after.access_writes() - restart_before.access_writes(),
    );
    operator.kill().await;
    azure_sim.kill().await;
    kube_sim.kill().await;

    print_table(
        &figures,
        probes,
        burst_status_writes,
        burst_secret_writes,
        operator_uptime,
    );
    if let Some(path) = &args.json {
        let value: serde_json::Map<String, Value> = figures
            .0
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: figures written to {}", path.display());
    }
    Ok(())
}

/// The figures with their targets (see the README's performance section).
fn print_table(
    figures: &Figures,
    steady_probes: u64,
    burst_status_writes: u64,
    burst_secret_writes: u64,
    operator_uptime: f64,
) {
    let number = |name: &str| {
        figures
            .0
            .get(name)
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let large = number("grants") >= 10_000.0;
    let targets: [(&str, Option<(&str, bool)>); 20] = [
        ("grants", None),
        ("accounts", None),
        ("identities", None),
        ("ready_seconds", None),
        ("floor_seconds", None),
        ("floor_bound", None),
        (
            "ratio_to_floor",
            Some(("<= 1.15", number("ratio_to_floor") <= 1.15)),
        ),
        (
            "arm_writes_per_grant",
            Some(("= 1", number("arm_writes_per_grant") == 1.0)),
        ),
        ("arm_writes_refused_429", None),
        ("arm_polls_per_grant", None),
        (
            "steady_arm_writes",
            Some(("= 0", number("steady_arm_writes") == 0.0)),
        ),
        (
            "steady_arm_reads_per_account",
            Some(("<= 1", number("steady_arm_reads_per_account") <= 1.0)),
        ),
        (
            "entra_exchanges_per_identity_window",
            Some(("= 1", number("entra_exchanges_per_identity_window") <= 1.0)),
        ),
        (
            "noop_status_writes",
            Some(("= 0", number("noop_status_writes") == 0.0)),
        ),
        (
            "noop_secret_writes",
            Some(("= 0", number("noop_secret_writes") == 0.0)),
        ),
        (
            "operator_peak_rss_mib",
            large.then_some(("<= 64 at 10k", number("operator_peak_rss_mib") <= 64.0)),
        ),
        ("operator_cpu_seconds", None),
        ("restart_seconds", None),
        (
            "restart_azure_writes",
            Some(("= 0", number("restart_azure_writes") == 0.0)),
        ),
        ("", None),
    ];
    println!("figure                                        value  target");
    for (name, target) in targets.iter().filter(|(n, _)| !n.is_empty()) {
        // Text first: serde_json values ignore width.
        let value = figures
            .0
            .get(name)
            .map_or_else(String::new, Value::to_string);
        let (text, verdict) = match target {
            Some((text, met)) => (*text, if *met { "met" } else { "MISSED" }),
            None => ("", ""),
        };
        println!("{name:<38} {value:>12}  {text:<14} {verdict}");
    }
    println!(
        "(steady window: {steady_probes} access probes, i.e. reconciles; burst: {burst_status_writes} status writes, {burst_secret_writes} Secret writes; operator CPU over {operator_uptime:.0} s)"
    );
}
