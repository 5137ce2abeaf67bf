//! `sandbox identity create`: a managed identity federated to a ServiceAccount of the user's
//! choosing, made in a running sandbox's Azure simulator through ARM, as `az identity create`
//! and `az identity federated-credential create` would, with the administrator and endpoints
//! the sandbox wrote to `azure.json`.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::pod::EXCHANGE_AUDIENCE;

/// The managed identities' API version.
const MSI_API: &str = "2023-01-31";

/// A managed identity made for a ServiceAccount.
#[derive(Clone, Debug)]
pub struct CreatedIdentity {
    /// Its ARM id.
    pub resource_id: String,
    /// Client id: what the ServiceAccount's `azure.workload.identity/client-id` names.
    pub client_id: String,
    /// Principal (object) id.
    pub principal_id: String,
    /// The federated credential's subject, `system:serviceaccount:NS:NAME`.
    pub subject: String,
    /// The federated credential's issuer (the sandbox cluster's).
    pub issuer: String,
}

/// Create (or update) identity `name` in the sandbox's resource group and federate it to
/// `namespace/service_account`, using the sandbox's `azure.json`.
///
/// # Errors
/// When the file is missing (no sandbox ran with this state directory) or Azure refuses.
pub async fn create_identity(
    azure_json: &Path,
    name: &str,
    namespace: &str,
    service_account: &str,
) -> anyhow::Result<CreatedIdentity> {
    let text = std::fs::read_to_string(azure_json).with_context(|| {
        format!(
            "reading {} (is the sandbox running with this --state-dir?)",
            azure_json.display()
        )
    })?;
    let state: Value = serde_json::from_str(&text)?;
    let field = |key: &str| {
        state[key]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{} has no {key}", azure_json.display()))
    };
    let (authority, arm, ca, tenant) = (
        field("authorityHost")?,
        field("armEndpoint")?,
        field("caPem")?,
        field("tenantId")?,
    );
    let group = field("identityResourceGroup")?;
    let issuer = field("oidcIssuer")?;
    let http = dbgrant_sim::tls::https_client(&ca)?;

    let token: Value = http
        .post(format!(
            "{}/{tenant}/oauth2/v2.0/token",
            authority.trim_end_matches('/')
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            (
                "client_id",
                state["admin"]["clientId"].as_str().unwrap_or_default(),
            ),
            (
                "client_secret",
                state["admin"]["clientSecret"].as_str().unwrap_or_default(),
            ),
            (
                "scope",
                &format!(
                    "{}/.default",
                    dbgrant_sim::azure::ARM_AUDIENCE.trim_end_matches('/')
                ),
            ),
        ]))
        .send()
        .await
        .context("reaching the sandbox's Entra ID (is the sandbox running?)")?
        .json()
        .await?;
    let bearer = token["access_token"]
        .as_str()
        .with_context(|| format!("no ARM token for the sandbox's administrator: {token}"))?;

    let resource_id = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
        group.trim_end_matches('/')
    );
    let url = |path: &str| {
        format!(
            "{}{}?api-version={MSI_API}",
            arm.trim_end_matches('/'),
            path
        )
    };
    let identity = put(
        &http,
        bearer,
        &url(&resource_id),
        &json!({"location": "westeurope"}),
    )
    .await
    .context("creating the managed identity")?;
    let subject = format!("system:serviceaccount:{namespace}:{service_account}");
    put(
        &http,
        bearer,
        &url(&format!(
            "{resource_id}/federatedIdentityCredentials/kubernetes-{namespace}-{service_account}"
        )),
        &json!({"properties": {
            "issuer": issuer,
            "subject": subject,
            "audiences": [EXCHANGE_AUDIENCE],
        }}),
    )
    .await
    .context("federating the identity to the ServiceAccount")?;
    let properties = &identity["properties"];
    Ok(CreatedIdentity {
        resource_id: identity["id"].as_str().unwrap_or(&resource_id).to_string(),
        client_id: properties["clientId"]
            .as_str()
            .context("the identity has no client id")?
            .to_string(),
        principal_id: properties["principalId"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        subject,
        issuer,
    })
}

async fn put(
    http: &reqwest::Client,
    bearer: &str,
    url: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let response = http.put(url).bearer_auth(bearer).json(body).send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "ARM answered {status}: {body}");
    Ok(body)
}

/// An `application/x-www-form-urlencoded` body (reqwest's `form` feature is not in the tree).
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}
