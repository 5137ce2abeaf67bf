//! The Azure settings of `dbgrant run` (flags and environment variables) and the resolved
//! [`AzureConfig`] the client is built from.

use std::path::PathBuf;

use anyhow::Context as _;
use azure_core::credentials::Secret;
use azure_core::http::Url;

use super::cloud::Cloud;
use super::credential::OperatorCredential;
use super::pipeline::Timing;

/// Everything the Azure client needs, resolved and validated.
#[derive(Clone, Debug)]
pub struct AzureConfig {
    /// The cloud (decides token audiences).
    pub cloud: Cloud,
    /// Entra ID authority host, e.g. `https://login.microsoftonline.com/`.
    pub authority_host: Url,
    /// ARM endpoint, e.g. `https://management.azure.com/`.
    pub arm_endpoint: Url,
    /// PEM certificates trusted in addition to the system roots.
    pub extra_ca_pem: Option<String>,
    /// The operator's tenant.
    pub tenant_id: String,
    /// The operator's own credential for ARM.
    pub credential: OperatorCredential,
    /// Retry and polling timing.
    pub timing: Timing,
}

impl AzureConfig {
    /// A configuration for a named cloud's endpoints with default timing.
    pub fn for_cloud(
        cloud: Cloud,
        tenant_id: impl Into<String>,
        credential: OperatorCredential,
    ) -> anyhow::Result<Self> {
        let (Some(authority), Some(arm)) = (cloud.authority_host(), cloud.arm_endpoint()) else {
            anyhow::bail!("a custom cloud needs an authority host and an ARM endpoint");
        };
        Ok(Self {
            cloud,
            authority_host: Url::parse(authority)?,
            arm_endpoint: Url::parse(arm)?,
            extra_ca_pem: None,
            tenant_id: tenant_id.into(),
            credential,
            timing: Timing::default(),
        })
    }
}

impl AzureConfig {
    /// A configuration for a custom cloud (private endpoints, the simulator): everything at the
    /// given URLs, `ca_pem` trusted in addition to the system roots, default timing.
    pub fn custom(
        authority_host: Url,
        arm_endpoint: Url,
        ca_pem: Option<String>,
        tenant_id: impl Into<String>,
        credential: OperatorCredential,
    ) -> Self {
        Self {
            cloud: Cloud::Custom,
            authority_host,
            arm_endpoint,
            extra_ca_pem: ca_pem,
            tenant_id: tenant_id.into(),
            credential,
            timing: Timing::default(),
        }
    }
}

/// Azure flags of `dbgrant run`. The operator's tenant is `--azure-tenant-id`/`AZURE_TENANT_ID`.
#[derive(clap::Args, Clone)]
pub struct AzureArgs {
    /// Azure cloud: AzurePublicCloud, AzureChinaCloud, AzureUSGovernment, or Custom (then
    /// --azure-authority-host and --azure-arm-endpoint are required).
    #[arg(long, env = "AZURE_CLOUD", value_enum, default_value_t = Cloud::AzurePublicCloud)]
    pub azure_cloud: Cloud,

    /// Entra ID authority host; overrides the cloud's (the workload identity webhook sets it).
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    pub azure_authority_host: Option<Url>,

    /// Azure Resource Manager endpoint; overrides the cloud's.
    #[arg(long, env = "DBGRANT_ARM_ENDPOINT")]
    pub azure_arm_endpoint: Option<Url>,

    /// PEM file of extra CA certificates to trust for Azure (private clouds, TLS-inspecting
    /// proxies, the simulator), in addition to the system roots.
    #[arg(long, env = "DBGRANT_AZURE_EXTRA_CA_FILE")]
    pub azure_extra_ca_file: Option<PathBuf>,

    /// Client id of the operator's own identity (set by the workload identity webhook).
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,

    /// Client secret of the operator's app registration (sandbox and CI only; prefer
    /// workload identity).
    #[arg(long, env = "AZURE_CLIENT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub azure_client_secret: Option<Secret>,

    /// Projected ServiceAccount token of the operator (set by the workload identity webhook).
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE")]
    pub azure_federated_token_file: Option<PathBuf>,
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value.to_string()))
}

impl std::fmt::Debug for AzureArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureArgs")
            .field("azure_cloud", &self.azure_cloud)
            .field("azure_authority_host", &self.azure_authority_host)
            .field("azure_arm_endpoint", &self.azure_arm_endpoint)
            .field("azure_extra_ca_file", &self.azure_extra_ca_file)
            .field("azure_client_id", &self.azure_client_id)
            .field(
                "azure_client_secret",
                &self.azure_client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "azure_federated_token_file",
                &self.azure_federated_token_file,
            )
            .finish()
    }
}

impl AzureArgs {
    /// Resolve the flags into a configuration. `tenant` is the operator's tenant.
    ///
    /// # Errors
    /// When the tenant, the client id or a credential is missing, a custom cloud lacks an
    /// endpoint, or the extra CA file cannot be read.
    pub fn to_config(&self, tenant: Option<&str>) -> anyhow::Result<AzureConfig> {
        let tenant_id = tenant
            .filter(|t| !t.is_empty())
            .context("the operator's tenant is not set (--azure-tenant-id or AZURE_TENANT_ID)")?
            .to_string();
        let authority_host = match (
            &self.azure_authority_host,
            self.azure_cloud.authority_host(),
        ) {
            (Some(url), _) => url.clone(),
            (None, Some(known)) => Url::parse(known)?,
            (None, None) => anyhow::bail!(
                "AZURE_CLOUD=Custom needs --azure-authority-host (AZURE_AUTHORITY_HOST)"
            ),
        };
        let arm_endpoint = match (&self.azure_arm_endpoint, self.azure_cloud.arm_endpoint()) {
            (Some(url), _) => url.clone(),
            (None, Some(known)) => Url::parse(known)?,
            (None, None) => anyhow::bail!(
                "AZURE_CLOUD=Custom needs --azure-arm-endpoint (DBGRANT_ARM_ENDPOINT)"
            ),
        };
        for (name, url) in [
            ("authority host", &authority_host),
            ("ARM endpoint", &arm_endpoint),
        ] {
            anyhow::ensure!(url.scheme() == "https", "the {name} {url} must use https");
        }
        let client_id = self
            .azure_client_id
            .clone()
            .filter(|c| !c.is_empty())
            .context(
                "the operator's client id is not set (--azure-client-id or AZURE_CLIENT_ID)",
            )?;
        let credential = match (&self.azure_client_secret, &self.azure_federated_token_file) {
            (Some(secret), _) => OperatorCredential::ClientSecret {
                client_id,
                client_secret: secret.secret().to_string(),
            },
            (None, Some(file)) => OperatorCredential::WorkloadIdentity {
                client_id,
                token_file: file.clone(),
            },
            (None, None) => anyhow::bail!(
                "no credential for the operator: set AZURE_FEDERATED_TOKEN_FILE (workload identity) or AZURE_CLIENT_SECRET"
            ),
        };
        let extra_ca_pem = match &self.azure_extra_ca_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the extra CA file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(AzureConfig {
            cloud: self.azure_cloud,
            authority_host,
            arm_endpoint,
            extra_ca_pem,
            tenant_id,
            credential,
            timing: Timing::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        azure: AzureArgs,
    }

    fn parse(args: &[&str]) -> AzureArgs {
        let mut argv = vec!["probe"];
        argv.extend_from_slice(args);
        Probe::try_parse_from(argv).expect("parses").azure
    }

    #[test]
    fn named_clouds_fill_in_their_endpoints() {
        let args = parse(&[
            "--azure-cloud",
            "AzureChinaCloud",
            "--azure-client-id",
            "c",
            "--azure-federated-token-file",
            "/var/run/token",
        ]);
        let config = args.to_config(Some("t")).expect("valid");
        assert_eq!(
            config.authority_host.as_str(),
            "https://login.chinacloudapi.cn/"
        );
        assert_eq!(
            config.arm_endpoint.as_str(),
            "https://management.chinacloudapi.cn/"
        );
        assert!(matches!(
            config.credential,
            OperatorCredential::WorkloadIdentity { .. }
        ));
    }

    #[test]
    fn custom_clouds_need_both_endpoints_and_a_credential() {
        let args = parse(&["--azure-cloud", "Custom", "--azure-client-id", "c"]);
        let err = args.to_config(Some("t")).expect_err("no endpoints");
        assert!(
            err.to_string().contains("--azure-authority-host"),
            "{err:#}"
        );
        let args = parse(&[
            "--azure-cloud",
            "Custom",
            "--azure-client-id",
            "c",
            "--azure-authority-host",
            "https://127.0.0.1:1/",
            "--azure-arm-endpoint",
            "https://127.0.0.1:2/",
        ]);
        let err = args.to_config(Some("t")).expect_err("no credential");
        assert!(err.to_string().contains("AZURE_CLIENT_SECRET"), "{err:#}");
        assert!(args.to_config(None).is_err());
    }

    #[test]
    fn the_client_secret_is_never_shown() {
        let args = parse(&[
            "--azure-client-id",
            "c",
            "--azure-client-secret",
            "hunter2-very-secret",
        ]);
        assert!(!format!("{args:?}").contains("hunter2"));
        let config = args.to_config(Some("t")).expect("valid");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
