//! `dbgrant run`: connect, serve HTTP, run the controllers, stop gracefully on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::backend::Backends;
use crate::controller::{self, ControllerSettings};
use crate::http::{self, HttpState};
use crate::leader::{self, ElectionSettings, Leadership};
use crate::settings::RunArgs;
use crate::telemetry::Metrics;

/// Run the operator until `shutdown` fires; then drain in-flight reconciles and return. With
/// `--leader-election`, the controllers run only while this replica holds the Lease.
///
/// # Errors
/// Fails when the Kubernetes client cannot be configured, the HTTP address cannot be bound,
/// leader election lacks its namespace, or the CRDs are not installed.
pub async fn run(
    args: RunArgs,
    backends: Backends,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = kube_client(&args).await?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let election = election_settings(&args)?;
    let leadership = match election {
        Some(_) => Leadership::standby(),
        None => Leadership::alone(),
    };

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding the HTTP server to {}", args.http_addr))?;
    tracing::info!(addr = %args.http_addr, "serving /livez, /readyz and /metrics");
    let app = http::router(HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        leadership: leadership.clone(),
    });
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .await
    });

    let settings = ControllerSettings {
        concurrency: args.concurrency,
        resync_interval: args.resync_interval,
        default_tenant: args.azure_tenant_id.clone(),
        // The pod name (`POD_NAME`, read by the flag) names this replica in events too.
        instance: args.leader_identity.clone(),
        namespace: args.lease_namespace.clone(),
    };
    let result = match election {
        None => controller::run(client, backends, settings, metrics, ready, shutdown.clone()).await,
        Some(election) => {
            let lead = |term| {
                // A new term syncs its caches afresh.
                ready.store(false, std::sync::atomic::Ordering::Release);
                controller::run(
                    client.clone(),
                    backends.clone(),
                    settings.clone(),
                    metrics.clone(),
                    ready.clone(),
                    term,
                )
            };
            leader::run_elected(client.clone(), election, leadership, shutdown.clone(), lead).await
        }
    };
    // Whatever ended the controllers, stop serving too.
    shutdown.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "HTTP server failed"),
        Err(error) => tracing::warn!(%error, "HTTP server task failed"),
    }
    result
}

/// Leader election's settings, or `None` when it is off.
fn election_settings(args: &RunArgs) -> anyhow::Result<Option<ElectionSettings>> {
    if !args.leader_election {
        return Ok(None);
    }
    let namespace = args.lease_namespace.clone().context(
        "--leader-election needs the Lease's namespace: set POD_NAMESPACE (the chart does) or --lease-namespace",
    )?;
    let identity = args.leader_identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "dbgrant".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}", &suffix[..8])
    });
    Ok(Some(ElectionSettings {
        lease_name: args.lease_name.clone(),
        namespace,
        identity,
        lease_duration: args.lease_duration,
    }))
}

async fn kube_client(args: &RunArgs) -> anyhow::Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .context("using the kubeconfig")?
        }
        None => kube::Config::infer()
            .await
            .context("finding Kubernetes credentials (KUBECONFIG, ~/.kube/config or in-cluster)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// A token cancelled on the first SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// The operator's way into Azure, from its settings.
///
/// # Errors
/// Fails when the Azure settings are incomplete or inconsistent.
pub async fn azure_access(args: &RunArgs) -> anyhow::Result<Backends> {
    let config = args
        .azure
        .to_config(args.azure_tenant_id.as_deref())
        .context("Azure settings")?;
    tracing::info!(
        cloud = ?config.cloud,
        authority = %config.authority_host,
        arm = %config.arm_endpoint,
        credential = ?config.credential,
        "Azure client configured"
    );
    // Metrics' Azure family is process-wide, so this handle feeds the served registry.
    backends_for(config, Some(Metrics::new())).await
}

/// Every backend's client from one Azure configuration: ARM, Cosmos DB and Entra ID through
/// the Azure client, PostgreSQL with the same credential and trust. Also how the end-to-end
/// harness builds its in-process operator, so both are wired alike.
///
/// # Errors
/// Fails when a client cannot be built (an unreadable extra CA bundle, say).
pub async fn backends_for(
    config: crate::azure::AzureConfig,
    metrics: Option<Metrics>,
) -> anyhow::Result<Backends> {
    let postgres =
        postgres_clients(&config, metrics.clone()).context("building the PostgreSQL client")?;
    let config_for_sql = (config.clone(), metrics.clone());
    let cosmos = crate::azure::AzureCosmos::new(config, metrics)
        .await
        .context("building the Azure client")?;
    let servers = crate::azure::postgres::AzureFlexibleServers::new(cosmos.arm().clone());
    let sql_servers = crate::azure::sql::AzureSqlServers::new(cosmos.arm().clone());
    let mut backends = Backends::from_one(Arc::new(cosmos));
    backends.postgres = Arc::new(postgres.with_servers(Arc::new(servers)));
    backends.sql = Arc::new(sql_clients(&config_for_sql)?.with_servers(Arc::new(sql_servers)));
    Ok(backends)
}

/// The operator's T-SQL connections: its own Entra credential for the cloud's Azure SQL
/// scope, and TLS (TDS 8 strict) trusting what the Azure client trusts.
fn sql_clients(
    (config, metrics): &(crate::azure::AzureConfig, Option<Metrics>),
) -> anyhow::Result<crate::backend::sql::SqlClients> {
    let (token, tls) = database_sign_in(
        config,
        metrics.clone(),
        crate::backend::TokenScope::AzureSql,
        "Azure SQL",
    )?;
    Ok(crate::backend::sql::SqlClients::new(token, tls))
}

/// The operator's PostgreSQL connections: its own Entra credential for the cloud's
/// PostgreSQL scope, and TLS trusting what the Azure client trusts.
fn postgres_clients(
    config: &crate::azure::AzureConfig,
    metrics: Option<Metrics>,
) -> anyhow::Result<crate::backend::postgres::PostgresClients> {
    let (token, tls) = database_sign_in(
        config,
        metrics,
        crate::backend::TokenScope::PostgreSql,
        "PostgreSQL",
    )?;
    Ok(crate::backend::postgres::PostgresClients::new(token, tls))
}

/// What a SQL backend signs in with: the operator's own credential for the database's scope
/// in this cloud, and TLS trusting what the Azure client trusts.
fn database_sign_in(
    config: &crate::azure::AzureConfig,
    metrics: Option<Metrics>,
    scope: crate::backend::TokenScope,
    service: &'static str,
) -> anyhow::Result<(Arc<dyn crate::backend::OperatorToken>, rustls::ClientConfig)> {
    use crate::azure::{credential, pipeline};
    let transport = pipeline::transport(config.extra_ca_pem.as_deref())?;
    let credential = credential::build(
        &config.credential,
        &config.tenant_id,
        &config.authority_host,
        transport,
        metrics,
    )?;
    let token =
        crate::backend::CredentialToken::new(credential, config.cloud.scope(&scope), service);
    let tls = pipeline::tls_config(config.extra_ca_pem.as_deref())?;
    Ok((Arc::new(token), tls))
}
