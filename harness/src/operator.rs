//! The real operator (`dbgrant::run`), started in-process against a kubeconfig and an Azure
//! configuration, for the sandbox and the end-to-end tests. "Killing" it aborts its task
//! mid-flight, as a crashed pod would stop, so restart tests exercise real recovery.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use dbgrant::azure::AzureConfig;
use dbgrant::settings::{Cli, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How to run the operator.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// Requeue interval after success, which is also the drift-check period.
    pub resync_interval: Duration,
    /// Reconciles at once per controller.
    pub concurrency: u16,
    /// The operator's own namespace (`POD_NAMESPACE` in a pod), where it keeps its identity
    /// seal key; it must exist. `None`: no sealing, as with a local `dbgrant run`.
    pub namespace: Option<String>,
}

impl Default for OperatorOptions {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(60),
            concurrency: 8,
            namespace: None,
        }
    }
}

/// A running in-process operator.
pub struct Operator {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Operator {
    /// Start the operator's controllers against the cluster of `kubeconfig` and Azure as
    /// `azure` describes, exactly as `dbgrant run` wires them.
    ///
    /// # Errors
    /// When the settings do not parse or the Azure client cannot be built.
    pub async fn start(
        kubeconfig: &Path,
        azure: AzureConfig,
        options: &OperatorOptions,
    ) -> anyhow::Result<Self> {
        let resync = format!("{}s", options.resync_interval.as_secs().max(1));
        let concurrency = options.concurrency.to_string();
        let tenant = azure.tenant_id.clone();
        let mut argv = vec![
            "dbgrant".to_string(),
            "run".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
            "--resync-interval".into(),
            resync,
            "--concurrency".into(),
            concurrency,
            "--azure-tenant-id".into(),
            tenant,
        ];
        if let Some(namespace) = &options.namespace {
            argv.extend(["--namespace".into(), namespace.clone()]);
        }
        let cli = Cli::try_parse_from(argv).context("building the operator's settings")?;
        let Command::Run(args) = cli.command else {
            anyhow::bail!("the operator's settings did not parse as `run`");
        };
        // Every backend's client, PostgreSQL's included, built as `dbgrant run` builds them.
        let backends = dbgrant::backends_for(azure, None)
            .await
            .context("building the operator's Azure clients")?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(dbgrant::run(args, backends, shutdown.clone()));
        Ok(Self { shutdown, task })
    }

    /// Start `dbgrant run` with settings already parsed (the sandbox's pod), its Azure access
    /// built as the binary builds it.
    ///
    /// # Errors
    /// When the Azure settings are incomplete, as the binary would exit.
    pub async fn start_run(args: dbgrant::settings::RunArgs) -> anyhow::Result<Self> {
        let backends = dbgrant::azure_access(&args).await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(dbgrant::run(args, backends, shutdown.clone()));
        Ok(Self { shutdown, task })
    }

    /// How the operator ended, once [`Self::is_finished`] says it has (awaits it otherwise).
    /// Reports it once: later calls, and `stop`, see a clean exit.
    ///
    /// # Errors
    /// When the operator failed or panicked.
    pub async fn exited(&mut self) -> anyhow::Result<()> {
        // A finished JoinHandle must not be polled again, so a finished stand-in replaces it.
        let task = std::mem::replace(&mut self.task, tokio::spawn(async { Ok(()) }));
        match task.await {
            Ok(result) => result,
            Err(error) => Err(anyhow::anyhow!("the operator task ended: {error}")),
        }
    }

    /// Whether the operator stopped on its own (it should not).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stop it the hard way: in-flight reconciles are cut off, like a killed pod.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Stop it gracefully and report how it ended.
    ///
    /// # Errors
    /// When the operator failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(error) if error.is_cancelled() => Ok(()),
            Err(error) => Err(anyhow::anyhow!("the operator task panicked: {error}")),
        }
    }
}
