//! Entra ID's token endpoint: `client_credentials` with a client secret, or with a client
//! assertion (workload identity federation) verified against the issuer's OIDC discovery and
//! JWKS and matched against the identity's federated credentials. Errors carry Entra's real
//! AADSTS codes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::Shared;
use super::errors::entra_error;
use crate::jwt::{now_secs, unverified_claims, unverified_kid};

/// The Cosmos DB data-plane audience.
pub const COSMOS_AUDIENCE: &str = "https://cosmos.azure.com";

/// The issuers' signing keys, fetched over HTTPS and cached.
pub struct OidcCache {
    http: reqwest::Client,
    keys: Mutex<HashMap<String, Arc<JwkSet>>>,
}

impl OidcCache {
    /// A cache fetching with a client that trusts `trusted_ca_pems`.
    ///
    /// # Errors
    /// When a CA certificate does not parse.
    pub fn new(trusted_ca_pems: &[String]) -> anyhow::Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for pem in trusted_ca_pems {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(cert?)?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            keys: Mutex::default(),
        })
    }

    async fn fetch(&self, issuer: &str) -> Result<Arc<JwkSet>, String> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Value = self
            .http
            .get(&discovery_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if discovery["issuer"].as_str() != Some(issuer) {
            return Err(format!(
                "the discovery document names issuer {} instead",
                discovery["issuer"]
            ));
        }
        let jwks_uri = discovery["jwks_uri"].as_str().ok_or("no jwks_uri")?;
        let jwks: JwkSet = self
            .http
            .get(jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let jwks = Arc::new(jwks);
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(issuer.to_string(), jwks.clone());
        Ok(jwks)
    }

    /// The key `kid` of `issuer`, refetching once when it is not cached; `Ok(None)` when the
    /// issuer does not publish it, `Err` when the issuer cannot be read.
    async fn key(&self, issuer: &str, kid: &str) -> Result<Option<DecodingKey>, String> {
        let cached = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(issuer)
            .cloned();
        let set = match cached {
            Some(set) if set.find(kid).is_some() => set,
            _ => self.fetch(issuer).await?,
        };
        let Some(jwk) = set.find(kid) else {
            return Ok(None);
        };
        DecodingKey::from_jwk(jwk)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// The audience a `scope` asks for, if this tenant knows the resource.
fn audience(shared: &Shared, scope: &str) -> Option<String> {
    let resource = scope.strip_suffix("/.default")?.trim_end_matches('/');
    let own_arm = shared.base_url.trim_end_matches('/');
    if resource == own_arm
        || resource == "https://management.azure.com"
        || resource == "https://management.core.windows.net"
    {
        Some(super::ARM_AUDIENCE.to_string())
    } else if resource == COSMOS_AUDIENCE {
        Some(COSMOS_AUDIENCE.to_string())
    } else if resource == crate::postgres::AUDIENCE {
        Some(crate::postgres::AUDIENCE.to_string())
    } else if resource == crate::sql::AUDIENCE.trim_end_matches('/') {
        // Entra names Azure SQL's resource by its app id URI, slash included, whether the
        // scope was `https://database.windows.net/.default` or `...net//.default`.
        Some(crate::sql::AUDIENCE.to_string())
    } else {
        None
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub async fn token(shared: &Shared, tenant: &str, form: &HashMap<String, String>) -> Response {
    if let Some(client_id) = form.get("client_id") {
        shared.faults.count_token_request(client_id);
    }
    if shared.faults.lock().entra_down {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
        )
            .into_response();
    }
    if !tenant.eq_ignore_ascii_case(&shared.tenant_id) {
        return entra_error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let Some(client_id) = form.get("client_id") else {
        return entra_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let scope = form.get("scope").map(String::as_str).unwrap_or_default();
    let Some(aud) = audience(shared, scope) else {
        if !scope.ends_with("/.default") {
            return entra_error(
                400,
                "invalid_scope",
                70011,
                &format!(
                    "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                ),
            );
        }
        return entra_error(
            400,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {} was not found in the tenant named {}.",
                scope.trim_end_matches("/.default"),
                shared.tenant_id
            ),
        );
    };
    let principal = if let Some(secret) = form.get("client_secret") {
        let app = shared.state().apps.get(client_id).cloned();
        match app {
            None => return unknown_client(shared, client_id),
            Some(app) if &app.secret != secret => {
                return entra_error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                );
            }
            Some(app) => app.principal_id,
        }
    } else if let Some(assertion) = form.get("client_assertion") {
        match federated(shared, client_id, assertion).await {
            Ok(principal) => {
                shared.faults.record_federated_exchange();
                principal
            }
            Err(response) => return response,
        }
    } else {
        return entra_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };
    let lifetime = shared.access_token_lifetime.as_secs() as i64;
    let now = now_secs();
    let claims = json!({
        "aud": aud,
        "iss": format!("https://sts.windows.net/{}/", shared.tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "oid": principal,
        "sub": principal,
        "tid": shared.tenant_id,
        "appid": client_id,
        "azp": client_id,
        "ver": "1.0",
    });
    match shared.key.sign(&claims) {
        Ok(token) => axum::Json(json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token})).into_response(),
        Err(_) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "signing failed").into_response(),
    }
}

fn unknown_client(shared: &Shared, client_id: &str) -> Response {
    entra_error(
        400,
        "unauthorized_client",
        700016,
        &format!(
            "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
            shared.tenant_id
        ),
    )
}

/// Verify a workload's assertion and match it to a federated credential of the identity.
async fn federated(shared: &Shared, client_id: &str, assertion: &str) -> Result<String, Response> {
    let Some(identity) = shared.state().identity_by_client(client_id).cloned() else {
        return Err(unknown_client(shared, client_id));
    };
    let invalid = |code: u32, message: &str| entra_error(400, "invalid_client", code, message);
    let claims = unverified_claims(assertion)
        .ok_or_else(|| invalid(50027, "JWT token is invalid or malformed."))?;
    let issuer = claims["iss"].as_str().unwrap_or_default().to_string();
    let kid = unverified_kid(assertion).unwrap_or_default();
    // Only issuers some credential names are looked up, as Entra does.
    if !identity.fics.values().any(|f| f.issuer == issuer) {
        return Err(not_federated(&claims));
    }
    let key = shared.oidc.key(&issuer, &kid).await.map_err(|e| {
        entra_error(
            400,
            "invalid_request",
            90061,
            &format!("Request to External OIDC endpoint failed: {e}"),
        )
    })?;
    // Entra's answer for a signature by a key the issuer does not publish.
    let key = key.ok_or_else(|| {
        invalid(
            700027,
            &format!(
                "Client assertion failed signature validation. (Reason - The key was not found., Thumbprint of key used by client: '{kid}')"
            ),
        )
    })?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_issuer(&[&issuer]);
    let verified = match jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
            return Err(invalid(
                700024,
                "Client assertion is not within its valid time range.",
            ));
        }
        Err(_) => {
            return Err(invalid(
                700027,
                "Client assertion failed signature validation.",
            ));
        }
    };
    let subject = verified["sub"].as_str().unwrap_or_default();
    let audiences: Vec<String> = match &verified["aud"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let matched = identity.fics.values().any(|f| {
        f.issuer == issuer
            && f.subject == subject
            && f.audiences.iter().any(|a| audiences.contains(a))
    });
    if matched {
        Ok(identity.principal_id)
    } else {
        Err(not_federated(&verified))
    }
}

fn not_federated(claims: &Value) -> Response {
    let aud = match &claims["aud"] {
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.as_str().unwrap_or_default().to_string(),
    };
    entra_error(
        400,
        "invalid_request",
        70021,
        &format!(
            "No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{aud}'.",
            claims["iss"].as_str().unwrap_or_default(),
            claims["sub"].as_str().unwrap_or_default()
        ),
    )
}
