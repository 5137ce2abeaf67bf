//! What the opt-in real-server tests share: reading their variables (and skipping without
//! them), the operator's backends from its own Azure variables, a workload's token, and the
//! grant, verify and revoke round as the operator makes it.

use azure_core::credentials::Secret;
use dbgrant::azure::{AzureArgs, AzureConfig, OperatorCredential, credential, pipeline};
use dbgrant::backend::{Access, Backend, Backends, TokenScope};

/// The variable `name`, when set and not empty.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Say the test is skipped: on stdout as the docs quote it, on stderr with `hint` (where the
/// variables are described).
pub fn skip(hint: &str) {
    println!("skipped: no real server configured");
    eprintln!("skipped: no real server configured ({hint})");
}

#[derive(clap::Parser)]
struct FromEnv {
    #[command(flatten)]
    azure: AzureArgs,
}

/// The operator's configuration and backends, from its own Azure variables as `dbgrant run`
/// reads them.
///
/// # Panics
/// When the variables are incomplete or the backends cannot be built.
pub async fn operator(tenant: &str) -> (AzureConfig, Backends) {
    let config = <FromEnv as clap::Parser>::try_parse_from(["real"])
        .expect("the Azure variables parse")
        .azure
        .to_config(Some(tenant))
        .expect("the operator's Azure variables are complete");
    let backends = dbgrant::backends_for(config.clone(), None).await.unwrap();
    (config, backends)
}

/// The token of the app registration standing in for a workload, for `scope`.
///
/// # Panics
/// When Entra ID refuses it.
pub async fn workload_token(
    config: &AzureConfig,
    tenant: &str,
    client_id: &str,
    client_secret: String,
    scope: &TokenScope,
) -> Secret {
    let workload = credential::build(
        &OperatorCredential::ClientSecret {
            client_id: client_id.to_string(),
            client_secret,
        },
        tenant,
        &config.authority_host,
        pipeline::transport(config.extra_ca_pem.as_deref()).unwrap(),
        None,
    )
    .unwrap();
    let scope = config.cloud.scope(scope);
    workload.get_token(&[&scope], None).await.unwrap().token
}

/// Prepare, grant `access`, check the workload signs in with `token` (`granted` says what it
/// then is), and revoke. Returns the endpoint.
///
/// # Panics
/// When a step fails.
pub async fn grant_verify_revoke(
    backend: &dyn Backend,
    access: &Access,
    token: &Secret,
    granted: &str,
) -> String {
    let endpoint = backend.prepare().await.unwrap();
    let holding = backend.holding_for(access).unwrap();
    backend.grant(&holding).await.unwrap();
    assert!(backend.list_owned().await.unwrap().contains(&holding));
    assert!(
        backend.probe(&endpoint, access, token).await.unwrap(),
        "the workload signs in with its own token and {granted}"
    );
    assert!(backend.revoke(&holding.id).await.unwrap());
    assert!(!backend.list_owned().await.unwrap().contains(&holding));
    endpoint
}
