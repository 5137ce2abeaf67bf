//! The simulators as processes: `kube-sim --kubeconfig` and `azure-sim --state` start, announce
//! readiness by writing their files, serve what those files describe, and federate with each
//! other — a ServiceAccount token from the kube-sim process is exchanged at the azure-sim
//! process for the identity's token.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// Start a binary and wait until it has written `file`.
async fn spawn(binary: &str, args: &[&std::ffi::OsStr], file: &Path) -> Child {
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    timeout(LIMIT, async {
        while !file.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{binary} never wrote {}", file.display()));
    child
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbgrant-bins-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn https(ca_pem: &str) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

async fn token(http: &reqwest::Client, state: &Value, form: &[(&str, &str)]) -> Value {
    let url = format!(
        "{}{}/oauth2/v2.0/token",
        state["authorityHost"].as_str().unwrap(),
        state["tenantId"].as_str().unwrap()
    );
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[tokio::test]
async fn the_simulator_binaries_serve_what_their_files_describe() {
    let dir = scratch();
    let kubeconfig = dir.join("kubeconfig");
    let mut kube_sim = spawn(
        env!("CARGO_BIN_EXE_kube-sim"),
        &["--kubeconfig".as_ref(), kubeconfig.as_os_str()],
        &kubeconfig,
    )
    .await;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = timeout(LIMIT, namespaces.list(&ListParams::default()))
        .await
        .unwrap()
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");

    // azure-sim trusts kube-sim's CA (from the kubeconfig) to read its OIDC documents.
    let kubeconfig_yaml: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    let kube_ca = base64::engine::general_purpose::STANDARD
        .decode(
            kubeconfig_yaml["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    std::fs::write(dir.join("kube-ca.pem"), kube_ca).unwrap();
    let issuer = kubeconfig_yaml["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string();
    let state_path = dir.join("azure.json");
    let mut azure_sim = spawn(
        env!("CARGO_BIN_EXE_azure-sim"),
        &[
            "--state".as_ref(),
            state_path.as_os_str(),
            "--oidc-issuer".as_ref(),
            issuer.as_ref(),
            "--oidc-ca".as_ref(),
            dir.join("kube-ca.pem").as_os_str(),
        ],
        &state_path,
    )
    .await;
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert_eq!(state["oidcIssuer"], issuer.as_str());
    let http = https(state["caPem"].as_str().unwrap());
    let arm = state["armEndpoint"].as_str().unwrap().to_string();

    // The administrator registers an identity federated to a ServiceAccount, through ARM.
    let admin = token(
        &http,
        &state,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", state["admin"]["clientId"].as_str().unwrap()),
            (
                "client_secret",
                state["admin"]["clientSecret"].as_str().unwrap(),
            ),
            ("scope", &format!("{arm}.default")),
        ],
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let identity_id = "subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app";
    let identity: Value = http
        .put(format!("{arm}{identity_id}?api-version=2024-11-30"))
        .bearer_auth(&admin)
        .json(&json!({"location": "westeurope"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = identity["properties"]["clientId"].as_str().unwrap();
    let response = http
        .put(format!(
            "{arm}{identity_id}/federatedIdentityCredentials/shop-app?api-version=2024-11-30"
        ))
        .bearer_auth(&admin)
        .json(&json!({"properties": {
            "issuer": issuer,
            "subject": "system:serviceaccount:shop:app",
            "audiences": ["api://AzureADTokenExchange"],
        }}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    // A ServiceAccount token minted by the kube-sim process buys the identity's token.
    dbgrant_sim::apply::apply(
        &client,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        "test",
    )
    .await
    .unwrap();
    dbgrant_sim::apply::apply(
        &client,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "shop"}}),
        "test",
    )
    .await
    .unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["api://AzureADTokenExchange".into()],
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let assertion = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client, "shop")
        .create_token_request("app", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let exchanged = token(
        &http,
        &state,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("scope", "https://cosmos.azure.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ],
    )
    .await;
    let claims =
        dbgrant_sim::jwt::unverified_claims(exchanged["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["oid"], identity["properties"]["principalId"]);

    // Both stop on SIGTERM, as a supervisor would stop them.
    for child in [&mut kube_sim, &mut azure_sim] {
        let pid = child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = timeout(LIMIT, child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{status}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
