//! Azure's own credentials (azure_identity's `ClientSecretCredential` and
//! `ClientAssertionCredential`, the latter with a ServiceAccount token from the Kubernetes
//! simulator) get tokens from the Azure simulator through its CA, and a wrong subject gets
//! AADSTS70021.

use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientMethodOptions, ClientOptions, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions,
};
use dbgrant_sim::azure::{AzureSim, AzureSimConfig};
use dbgrant_sim::kube::{KubeSim, KubeSimConfig};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

fn options(azure: &AzureSim) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = azure.authority_host().trim_end_matches('/').to_string();
    ClientOptions {
        // Azure's SDK on reqwest, trusting the simulator's CA only.
        transport: Some(Transport::new(Arc::new(
            dbgrant_sim::tls::https_client(&azure.ca_pem()).unwrap(),
        ))),
        cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
        ..ClientOptions::default()
    }
}

#[derive(Debug)]
struct ServiceAccountToken(String);

#[async_trait::async_trait]
impl ClientAssertion for ServiceAccountToken {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        Ok(self.0.clone())
    }
}

async fn sa_token(kube: &KubeSim, name: &str) -> String {
    let client = kube.client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap(),
        )
        .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client, "shop");
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["api://AzureADTokenExchange".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

#[tokio::test]
async fn azure_identity_credentials_get_tokens_from_the_simulator() {
    let kube = timeout(LIMIT, KubeSim::start(KubeSimConfig::default()))
        .await
        .unwrap()
        .unwrap();
    let azure = timeout(
        LIMIT,
        AzureSim::start(AzureSimConfig {
            oidc_trusted_ca_pems: vec![kube.ca_pem()],
            ..AzureSimConfig::default()
        }),
    )
    .await
    .unwrap()
    .unwrap();

    let admin = azure.admin();
    let secret = ClientSecretCredential::new(
        &azure.tenant_id(),
        admin.client_id.clone(),
        Secret::new(admin.client_secret.clone()),
        Some(ClientSecretCredentialOptions {
            client_options: options(&azure),
        }),
    )
    .unwrap();
    let scope = format!("{}.default", azure.arm_endpoint());
    let token = timeout(LIMIT, secret.get_token(&[scope.as_str()], None))
        .await
        .unwrap()
        .unwrap();
    let claims = dbgrant_sim::jwt::unverified_claims(token.token.secret()).unwrap();
    assert_eq!(claims["oid"], admin.principal_id.as_str());

    let identity = azure.create_identity("sub", "rg", "app");
    azure
        .add_federated_credential(
            &identity.resource_id,
            "fic",
            &kube.issuer(),
            "system:serviceaccount:shop:app",
            &["api://AzureADTokenExchange"],
        )
        .unwrap();
    let good = ServiceAccountToken(sa_token(&kube, "app").await);
    let assertion = ClientAssertionCredential::new(
        azure.tenant_id(),
        identity.client_id.clone(),
        good,
        Some(ClientAssertionCredentialOptions {
            client_options: options(&azure),
        }),
    )
    .unwrap();
    let token = timeout(
        LIMIT,
        assertion.get_token(&["https://cosmos.azure.com/.default"], None),
    )
    .await
    .unwrap()
    .unwrap();
    let claims = dbgrant_sim::jwt::unverified_claims(token.token.secret()).unwrap();
    assert_eq!(claims["oid"], identity.principal_id.as_str());
    assert_eq!(claims["aud"], "https://cosmos.azure.com");

    let wrong = ServiceAccountToken(sa_token(&kube, "someone-else").await);
    let assertion = ClientAssertionCredential::new(
        azure.tenant_id(),
        identity.client_id.clone(),
        wrong,
        Some(ClientAssertionCredentialOptions {
            client_options: options(&azure),
        }),
    )
    .unwrap();
    let error = timeout(
        LIMIT,
        assertion.get_token(&["https://cosmos.azure.com/.default"], None),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(format!("{error:?}").contains("AADSTS70021"), "{error:?}");
}
