//! The workload identity exchange at Entra ID: a ServiceAccount token (the client assertion)
//! for the managed identity's Cosmos DB data-plane token, and the `oid`/`tid` claims read from
//! that token.
//!
//! Written directly rather than through azure_identity's `ClientAssertionCredential` because
//! the operator needs the AADSTS codes (each maps to its own reason) and the token's claims,
//! and the authority host may carry a path (private clouds, the simulator).

use azure_core::credentials::Secret;
use azure_core::http::{Method, Url};
use base64::Engine as _;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::cloud::with_trailing_slash;
use super::error::entra_failure;
use super::pipeline::{Call, Http};
use crate::api::Reason;
use crate::backend::{BackendError, ResolvedIdentity};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The token endpoint of `tenant` under `authority`.
pub fn token_url(authority: &Url, tenant: &str) -> Result<Url, BackendError> {
    // The tenant comes from a ServiceAccount annotation: only a GUID or a domain name may reach
    // the URL path, so it cannot point the request at another endpoint.
    let valid = !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !tenant.starts_with('.');
    if !valid {
        return Err(BackendError::new(
            Reason::UnknownClientId,
            format!("tenant '{tenant}' is not a tenant id or domain name"),
        ));
    }
    with_trailing_slash(authority.clone())
        .join(&format!("{tenant}/oauth2/v2.0/token"))
        .map_err(|e| {
            BackendError::new(
                Reason::AzureUnavailable,
                format!("building the token URL: {e}"),
            )
        })
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// Exchange `assertion` for a token of `client_id` in `tenant` with `scope`, and read who it
/// was issued to.
pub async fn exchange(
    http: &Http,
    authority: &Url,
    tenant: &str,
    client_id: &str,
    assertion: &Secret,
    scope: &str,
) -> Result<ResolvedIdentity, BackendError> {
    let url = token_url(authority, tenant)?;
    let what = format!("exchanging the ServiceAccount token for client id {client_id}");
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("scope", scope)
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_assertion_type", ASSERTION_TYPE)
        .append_pair("client_assertion", assertion.secret())
        .finish();
    let reply = http
        .send(&Call {
            operation: "token_exchange",
            what: &what,
            method: Method::Post,
            url,
            headers: Vec::new(),
            body: Some(("application/x-www-form-urlencoded", form.into_bytes())),
        })
        .await?;
    if !reply.is_success() {
        let mut error = entra_failure(&what, reply.status, &reply.body);
        error.retry_after = reply.retry_after();
        return Err(error);
    }
    let response: TokenResponse = serde_json::from_slice(&reply.body).map_err(|_| {
        BackendError::new(
            Reason::AzureUnavailable,
            format!("{what}: Entra ID answered without an access token"),
        )
    })?;
    let claims = read_claims(&response.access_token).map_err(|why| {
        BackendError::new(
            Reason::AzureUnavailable,
            format!("{what}: cannot read the issued token: {why}"),
        )
    })?;
    let lifetime = response
        .expires_in
        .as_ref()
        .and_then(seconds)
        .unwrap_or(3600);
    Ok(ResolvedIdentity {
        principal_id: claims.oid,
        tenant_id: claims.tid,
        access_token: Secret::new(response.access_token),
        expires_at: Timestamp::now()
            .checked_add(SignedDuration::from_secs(lifetime))
            .unwrap_or(Timestamp::MAX),
    })
}

/// `expires_in` is a number on the v2 endpoint and a string on some others.
fn seconds(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The claims the operator needs from an Entra access token.
#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Claims {
    /// Object id of the principal the token was issued to.
    pub oid: String,
    /// Tenant that issued it.
    pub tid: String,
}

/// Read `oid` and `tid` from a JWT's payload. The signature is not checked: the token came
/// straight from Entra ID over TLS. Errors never include the token.
pub fn read_claims(token: &str) -> Result<Claims, &'static str> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err("it is not a JWT");
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "its payload is not base64url")?;
    serde_json::from_slice(&bytes).map_err(|_| "its payload has no string oid and tid claims")
}

/// The client (application) id an app-only token was issued to: `appid` (v1 tokens) or
/// `azp` (v2). `None` when the token is not a JWT or names neither.
pub fn read_app_id(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct App {
        appid: Option<String>,
        azp: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let app: App = serde_json::from_slice(&bytes).ok()?;
    app.appid.or(app.azp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(payload))
    }

    #[test]
    fn the_app_id_is_appid_or_azp() {
        assert_eq!(
            read_app_id(&jwt(r#"{"oid":"o","tid":"t","appid":"a-1"}"#)).as_deref(),
            Some("a-1")
        );
        assert_eq!(
            read_app_id(&jwt(r#"{"oid":"o","tid":"t","azp":"a-2"}"#)).as_deref(),
            Some("a-2")
        );
        assert_eq!(read_app_id(&jwt(r#"{"oid":"o","tid":"t"}"#)), None);
        assert_eq!(read_app_id("not a jwt"), None);
    }

    #[test]
    fn oid_and_tid_are_read_from_the_payload() {
        let token = jwt(r#"{"oid":"o-1","tid":"t-1","aud":"https://cosmos.azure.com"}"#);
        assert_eq!(
            read_claims(&token),
            Ok(Claims {
                oid: "o-1".into(),
                tid: "t-1".into()
            })
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        assert_eq!(read_claims("opaque-secret"), Err("it is not a JWT"));
        assert_eq!(read_claims("a.!!!.c"), Err("its payload is not base64url"));
        assert!(read_claims(&jwt(r#"{"tid":"t"}"#)).is_err());
    }

    #[test]
    fn token_urls_keep_the_authority_path_and_refuse_odd_tenants() {
        let authority = Url::parse("https://127.0.0.1:9/entra").expect("url");
        assert_eq!(
            token_url(&authority, "contoso.onmicrosoft.com")
                .expect("valid")
                .as_str(),
            "https://127.0.0.1:9/entra/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        for bad in ["", "../x", "a/b", "t?x=1", ".."] {
            assert_eq!(
                token_url(&authority, bad).map_err(|e| e.reason),
                Err(Reason::UnknownClientId),
                "{bad}"
            );
        }
    }

    #[test]
    fn lifetimes_accept_numbers_and_strings() {
        assert_eq!(seconds(&serde_json::json!(3599)), Some(3599));
        assert_eq!(seconds(&serde_json::json!("85770")), Some(85770));
        assert_eq!(seconds(&serde_json::json!(null)), None);
    }
}
