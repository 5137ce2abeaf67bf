//! The operator's own Azure credential (for ARM), from azure_identity: workload identity in a
//! cluster, a client secret for the sandbox. Both use our transport (so the extra CA applies)
//! and the configured authority host.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::policies::Policy;
use azure_core::http::{ClientOptions, RetryOptions, Transport, Url};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use super::pipeline::CountingPolicy;
use crate::telemetry::Metrics;

/// How the operator authenticates to Azure Resource Manager.
#[derive(Clone)]
pub enum OperatorCredential {
    /// An app registration's client secret (sandbox, CI).
    ClientSecret {
        /// Application (client) id.
        client_id: String,
        /// The secret (never shown: Debug leaves it out).
        client_secret: String,
    },
    /// Azure workload identity: the projected ServiceAccount token in `token_file` is
    /// exchanged for the identity `client_id` (re-read as the kubelet rotates it).
    WorkloadIdentity {
        /// Client id of the operator's managed identity.
        client_id: String,
        /// Path of the projected token (`AZURE_FEDERATED_TOKEN_FILE`).
        token_file: PathBuf,
    },
}

impl std::fmt::Debug for OperatorCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientSecret { client_id, .. } => f
                .debug_struct("ClientSecret")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            Self::WorkloadIdentity {
                client_id,
                token_file,
            } => f
                .debug_struct("WorkloadIdentity")
                .field("client_id", client_id)
                .field("token_file", token_file)
                .finish(),
        }
    }
}

/// Build the azure_identity credential for `credential` in `tenant`.
pub fn build(
    credential: &OperatorCredential,
    tenant: &str,
    authority_host: &Url,
    transport: Transport,
    metrics: Option<Metrics>,
) -> anyhow::Result<Arc<dyn TokenCredential>> {
    // azure_identity joins `/{tenant}/oauth2/v2.0/token` as an absolute path, which would drop a
    // path prefix of the authority host: refuse that rather than call the wrong URL.
    anyhow::ensure!(
        authority_host.path() == "/" || authority_host.path().is_empty(),
        "the authority host {authority_host} has a path; the operator's credential needs a bare host"
    );
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = authority_host.as_str().trim_end_matches('/').to_string();
    let client_options = ClientOptions {
        transport: Some(transport),
        // The ARM call that needed the token is retried by our own bounded loop; retrying here
        // too would multiply the attempts and hide an unreachable Entra ID for minutes.
        retry: RetryOptions::none(),
        per_try_policies: metrics
            .map(|m| Arc::new(CountingPolicy::new("operator_token", m)) as Arc<dyn Policy>)
            .into_iter()
            .collect(),
        cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
        ..ClientOptions::default()
    };
    Ok(match credential {
        OperatorCredential::ClientSecret {
            client_id,
            client_secret,
        } => ClientSecretCredential::new(
            tenant,
            client_id.clone(),
            Secret::new(client_secret.clone()),
            Some(ClientSecretCredentialOptions { client_options }),
        )
        .context("configuring the client secret credential")?,
        OperatorCredential::WorkloadIdentity {
            client_id,
            token_file,
        } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions { client_options },
            client_id: Some(client_id.clone()),
            tenant_id: Some(tenant.to_string()),
            token_file_path: Some(token_file.clone()),
        }))
        .context("configuring the workload identity credential")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let credential = OperatorCredential::ClientSecret {
            client_id: "app".into(),
            client_secret: "hunter2-very-secret".into(),
        };
        let shown = format!("{credential:?}");
        assert!(shown.contains("app"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn an_authority_with_a_path_is_refused() {
        let transport = super::super::pipeline::transport(None).expect("transport");
        let credential = OperatorCredential::ClientSecret {
            client_id: "app".into(),
            client_secret: "s".into(),
        };
        let authority = Url::parse("https://login.example/prefix/").expect("url");
        let err = build(&credential, "t", &authority, transport, None).expect_err("path");
        assert!(err.to_string().contains("has a path"), "{err:#}");
    }
}
