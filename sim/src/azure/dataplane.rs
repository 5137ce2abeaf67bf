//! A minimal Cosmos DB data plane: reading account, database or container metadata with an
//! Entra token (`Authorization: type=aad&ver=1.0&sig=<token>`), allowed when an assignment of
//! the token's principal at that scope or above grants `readMetadata`.

use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use super::entra::COSMOS_AUDIENCE;
use super::rbac::data_actions;

const READ_METADATA: &str = "Microsoft.DocumentDB/databaseAccounts/readMetadata";

fn cosmos_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

fn grants(action: &str, wanted: &str) -> bool {
    action == wanted
        || action
            .strip_suffix('*')
            .is_some_and(|prefix| wanted.starts_with(prefix))
}

/// `GET /cosmos/{account}/{path}`.
pub fn read(shared: &Shared, account_name: &str, path: &str, headers: &HeaderMap) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (Some(_date), Some(_version)) = (header("x-ms-date"), header("x-ms-version")) else {
        return cosmos_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Required Header authorization, x-ms-date or x-ms-version is missing.".into(),
        );
    };
    let Some(raw) = header("authorization") else {
        return cosmos_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Required Header authorization is missing.".into(),
        );
    };
    // Clients URL-encode the whole value (`type%3Daad%26ver%3D1.0%26sig%3D...`); accept both.
    let decoded = percent_encoding::percent_decode_str(&raw)
        .decode_utf8_lossy()
        .to_string();
    let token = decoded
        .split('&')
        .find_map(|part| part.strip_prefix("sig="))
        .unwrap_or_default()
        .to_string();
    if !decoded.contains("type=aad") || token.is_empty() {
        return cosmos_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "The input authorization token can't serve the request.".into(),
        );
    }
    let verified = shared.key.verify(&token, Some(&[COSMOS_AUDIENCE]), None);
    let Ok(claims) = verified else {
        return cosmos_error(StatusCode::UNAUTHORIZED, "Unauthorized", "The input authorization token can't serve the request. The wrong key is being used or the token is expired.".into());
    };
    let principal = claims["oid"].as_str().unwrap_or_default().to_string();
    let now = Instant::now();
    let (account_key, account_id, assignments) = {
        let mut state = shared.state();
        state.settle(now);
        let Some((key, account)) = state
            .accounts
            .iter()
            .find(|(_, a)| a.name.eq_ignore_ascii_case(account_name))
        else {
            return cosmos_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("Account {account_name} does not exist."),
            );
        };
        (
            key.clone(),
            account.resource_id.clone(),
            account.assignments.clone(),
        )
    };
    let path = path.trim_matches('/');
    let resource = if path.is_empty() {
        account_id.to_ascii_lowercase()
    } else {
        format!(
            "{}/{}",
            account_id.to_ascii_lowercase(),
            path.to_ascii_lowercase()
        )
    };
    let effective_after = shared
        .effective_at
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let allowed = assignments.iter().any(|(guid, a)| {
        let props = &a["properties"];
        let scope = props["scope"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let covers = resource == scope || resource.starts_with(&format!("{scope}/"));
        let effective = effective_after.get(guid).is_none_or(|t| *t <= now);
        let role = props["roleDefinitionId"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        props["principalId"]
            .as_str()
            .is_some_and(|p| p.eq_ignore_ascii_case(&principal))
            && covers
            && effective
            && data_actions(shared, &account_key, &role)
                .iter()
                .any(|action| grants(action, READ_METADATA))
    });
    if !allowed {
        return cosmos_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Request is blocked because principal [{principal}] does not have required RBAC permissions to perform action [{READ_METADATA}] on resource [{}]. Learn more: https://aka.ms/cosmos-native-rbac.",
                if path.is_empty() { "/" } else { path }
            ),
        );
    }
    let id = path
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(account_name);
    axum::Json(json!({"id": id, "_rid": uuid::Uuid::new_v4().simple().to_string(), "_self": format!("{path}/")})).into_response()
}
