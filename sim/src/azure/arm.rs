//! Azure Resource Manager: authentication of callers, api-version checks, managed identities
//! and federated credentials, Cosmos DB accounts, and the long-running-operation status URL.
//! Cosmos DB RBAC itself is in `rbac`.

use std::collections::HashMap;
use std::time::Instant;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::errors::ArmError;
use super::operation::AzureOperation as Op;
use super::state::{Fic, Identity};
use super::{ARM_AUDIENCE, Shared, rbac};

const MSI_VERSIONS: &[&str] = &[
    "2018-11-30",
    "2023-01-31",
    "2023-07-31-preview",
    "2024-11-30",
    "2025-01-31-preview",
];
/// Cosmos DB stable api-versions carrying SQL RBAC, newest first.
pub const COSMOS_VERSIONS: &[&str] = &[
    "2025-10-15",
    "2025-04-15",
    "2024-11-15",
    "2024-08-15",
    "2024-05-15",
    "2023-11-15",
    "2023-09-15",
    "2023-04-15",
    "2023-03-15",
    "2022-11-15",
    "2022-08-15",
    "2022-05-15",
    "2021-10-15",
    "2021-06-15",
    "2021-04-15",
];
/// Microsoft.DBforPostgreSQL flexible server api-versions, newest first.
pub const POSTGRES_VERSIONS: &[&str] = &[
    "2025-08-01",
    "2024-08-01",
    "2023-12-01-preview",
    "2022-12-01",
];
/// Microsoft.Sql api-versions (servers, managed instances and their administrators), newest
/// first.
pub const SQL_VERSIONS: &[&str] = &[
    "2024-05-01-preview",
    "2023-08-01",
    "2023-05-01-preview",
    "2021-11-01",
];
/// Microsoft.Synapse api-versions (workspaces and their SQL administrator).
pub const SYNAPSE_VERSIONS: &[&str] = &["2021-06-01"];
const FIC_LIMIT: usize = 20;

/// The caller's principal id, from an ARM bearer token this tenant issued.
///
/// # Errors
/// 401 as ARM answers it.
pub fn caller(shared: &Shared, authorization: Option<&str>) -> Result<String, ArmError> {
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ArmError::new(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        })?;
    let claims = shared
        .key
        .verify(token, Some(&[ARM_AUDIENCE]), None)
        .map_err(|e| {
            ArmError::new(
                401,
                if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) {
                    "ExpiredAuthenticationToken"
                } else {
                    "InvalidAuthenticationToken"
                },
                format!("The access token is invalid: {e}."),
            )
        })?;
    claims["oid"].as_str().map(str::to_string).ok_or_else(|| {
        ArmError::new(
            401,
            "InvalidAuthenticationToken",
            "The access token has no oid claim.",
        )
    })
}

fn check_version(
    query: &HashMap<String, String>,
    supported: &[&str],
    provider: &str,
) -> Result<String, ArmError> {
    let Some(version) = query.get("api-version") else {
        return Err(ArmError::new(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    if !supported.contains(&version.as_str()) {
        return Err(ArmError::new(
            400,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for location 'westeurope' and API version '{version}' for type '{provider}'. The supported api-versions are '{}'.",
                supported.join(", ")
            ),
        ));
    }
    Ok(version.clone())
}

fn forbidden(caller: &str, action: &str, scope: &str) -> ArmError {
    ArmError::new(
        403,
        "AuthorizationFailed",
        format!(
            "The client '{caller}' with object id '{caller}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
        ),
    )
}

/// Serve an ARM request below `/subscriptions/`: authenticate, throttle as ARM does (the
/// remaining tokens in a header on every answer), route `operation` (which `path` is).
pub async fn handle(
    shared: &Shared,
    operation: Op,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    authorization: Option<&str>,
    body: &[u8],
) -> Response {
    let caller = match caller(shared, authorization) {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    let subscription = path.trim_matches('/').split('/').nth(1).unwrap_or_default();
    let kind = super::throttle::Kind::of(method);
    let (remaining, mut response) = match shared.throttle.take(subscription, &caller, kind) {
        Err(throttled) => {
            let mut error = ArmError::new(429, "SubscriptionRequestsThrottled", throttled.message);
            error.retry_after = Some(throttled.retry_after);
            (0, error.into_response())
        }
        Ok(remaining) => (
            remaining,
            match route(shared, &caller, operation, method, path, query, body).await {
                Ok(response) => response,
                Err(error) => error.into_response(),
            },
        ),
    };
    response
        .headers_mut()
        .insert(kind.header(), axum::http::HeaderValue::from(remaining));
    response
}

/// Serve an operation whose path has the shape ARM gives it; any other is 404, as ARM answers.
async fn route(
    shared: &Shared,
    caller: &str,
    operation: Op,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ArmError> {
    let caller = caller.to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match (operation, l.as_slice()) {
        (
            Op::Identities(_),
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.managedidentity",
                "userassignedidentities",
                _,
            ],
        ) => {
            check_version(query, MSI_VERSIONS, "userAssignedIdentities")?;
            let id = segments.join("/");
            let id = format!("/{id}");
            authorize(
                shared,
                &caller,
                "Microsoft.ManagedIdentity/userAssignedIdentities/write",
                &id,
            )?;
            identity(shared, method, &id, segments[7], body)
        }
        (
            Op::FederatedCredentials(_),
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.managedidentity",
                "userassignedidentities",
                _,
                "federatedidentitycredentials",
                rest @ ..,
            ],
        ) => {
            check_version(
                query,
                MSI_VERSIONS,
                "userAssignedIdentities/federatedIdentityCredentials",
            )?;
            let identity_id = format!("/{}", segments[..8].join("/"));
            authorize(
                shared,
                &caller,
                "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
                &identity_id,
            )?;
            let name = rest.first().map(|_| segments[9]);
            fic(shared, method, &identity_id, name, body)
        }
        (
            Op::Accounts(_),
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.documentdb",
                "databaseaccounts",
                _,
            ],
        ) => {
            check_version(query, COSMOS_VERSIONS, "databaseAccounts")?;
            let id = format!("/{}", segments.join("/"));
            authorize(
                shared,
                &caller,
                "Microsoft.DocumentDB/databaseAccounts/read",
                &id,
            )?;
            account(shared, method, &id, segments[7], body)
        }
        (
            Op::SqlRoleDefinitions(_) | Op::SqlRoleAssignments(_),
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.documentdb",
                "databaseaccounts",
                _,
                collection @ ("sqlroledefinitions" | "sqlroleassignments"),
                rest @ ..,
            ],
        ) if operation.family().as_str().eq_ignore_ascii_case(collection) => {
            let version = check_version(query, COSMOS_VERSIONS, "databaseAccounts")?;
            let account_id = format!("/{}", segments[..8].join("/"));
            let collection = operation.family().as_str();
            let action = if *method == Method::GET {
                "read"
            } else {
                "write"
            };
            authorize(
                shared,
                &caller,
                &format!("Microsoft.DocumentDB/databaseAccounts/{collection}/{action}"),
                &account_id,
            )?;
            let guid = rest.first().map(|_| segments[9]);
            rbac::handle(
                shared,
                method,
                &account_id,
                collection,
                guid,
                &version,
                body,
            )
        }
        (
            Op::FlexibleServers(_),
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.dbforpostgresql",
                "flexibleservers",
                _,
            ],
        ) => {
            check_version(query, POSTGRES_VERSIONS, "flexibleServers")?;
            let id = format!("/{}", segments.join("/"));
            authorize(
                shared,
                &caller,
                "Microsoft.DBforPostgreSQL/flexibleServers/read",
                &id,
            )?;
            postgres_server(shared, method, &id, segments[7], body)
        }
        (
            Op::FlexibleServerAdministrators(_),
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.dbforpostgresql",
                "flexibleservers",
                _,
                "administrators",
                rest @ ..,
            ],
        ) if rest.len() <= 1 => {
            check_version(query, POSTGRES_VERSIONS, "flexibleServers/administrators")?;
            let server_id = format!("/{}", segments[..8].join("/"));
            authorize(
                shared,
                &caller,
                "Microsoft.DBforPostgreSQL/flexibleServers/administrators/read",
                &server_id,
            )?;
            let object_id = rest.first().map(|_| segments[9]);
            postgres_administrators(shared, method, &server_id, object_id, body)
        }
        (
            Op::SqlServers(_),
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                provider @ ("microsoft.sql" | "microsoft.synapse"),
                kind @ ("servers" | "managedinstances" | "workspaces"),
                _,
            ],
        ) if sql_kind(provider, kind).is_some() => {
            let (resource_type, versions) = sql_kind(provider, kind).unwrap_or_default();
            check_version(query, versions, resource_type)?;
            let id = format!("/{}", segments.join("/"));
            authorize(shared, &caller, &format!("{resource_type}/read"), &id)?;
            sql_server(shared, method, &id, resource_type, segments[7], body)
        }
        (
            Op::SqlServerAdministrators(_),
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                provider @ ("microsoft.sql" | "microsoft.synapse"),
                kind @ ("servers" | "managedinstances" | "workspaces"),
                _,
                "administrators",
                rest @ ..,
            ],
        ) if rest.len() <= 1 && sql_kind(provider, kind).is_some() => {
            let (resource_type, versions) = sql_kind(provider, kind).unwrap_or_default();
            check_version(query, versions, &format!("{resource_type}/administrators"))?;
            let server_id = format!("/{}", segments[..8].join("/"));
            authorize(
                shared,
                &caller,
                &format!("{resource_type}/administrators/read"),
                &server_id,
            )?;
            let name = rest.first().map(|_| segments[9]);
            sql_administrator(shared, method, &server_id, name, body)
        }
        (
            Op::OperationStatus(_),
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.documentdb",
                "locations",
                _,
                "operationsstatus",
                _,
            ],
        ) => operation_status(shared, segments[7]),
        _ => Err(ArmError::new(
            404,
            "InvalidResourceType",
            format!("The resource type could not be found in the namespace for path '{path}'."),
        )),
    }
}

fn authorize(shared: &Shared, caller: &str, action: &str, scope: &str) -> Result<(), ArmError> {
    if shared.state().may_write(caller, scope) {
        Ok(())
    } else {
        Err(forbidden(caller, action, scope))
    }
}

fn identity_body(identity: &Identity, tenant: &str) -> Value {
    json!({
        "id": identity.resource_id,
        "name": identity.name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": identity.location,
        "tags": {},
        "properties": {"tenantId": tenant, "principalId": identity.principal_id, "clientId": identity.client_id, "isolationScope": "None"},
    })
}

fn identity(
    shared: &Shared,
    method: &Method,
    id: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ArmError> {
    let key = id.to_ascii_lowercase();
    if *method == Method::PUT {
        let request: Value = serde_json::from_slice(body).map_err(|e| {
            ArmError::bad_request(format!(
                "The request content was invalid and could not be deserialized: {e}"
            ))
        })?;
        let location = request["location"]
            .as_str()
            .unwrap_or("westeurope")
            .to_string();
        let existed = shared.state().identities.contains_key(&key);
        if !existed {
            shared.create_identity_at(id, name, &location, None);
        }
        let state = shared.state();
        let identity = state
            .identities
            .get(&key)
            .ok_or_else(|| ArmError::not_found("identity"))?;
        let code = if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        return Ok((code, axum::Json(identity_body(identity, &shared.tenant_id))).into_response());
    }
    if *method != Method::GET {
        return Err(ArmError::new(
            405,
            "MethodNotAllowed",
            "The method is not allowed.",
        ));
    }
    let state = shared.state();
    let identity = state
        .identities
        .get(&key)
        .ok_or_else(|| ArmError::new(404, "ResourceNotFound", format!("The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/{name}' under resource group was not found.")))?;
    Ok(axum::Json(identity_body(identity, &shared.tenant_id)).into_response())
}

fn fic_body(identity_id: &str, name: &str, fic: &Fic) -> Value {
    json!({
        "id": format!("{identity_id}/federatedIdentityCredentials/{name}"),
        "name": name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": {"issuer": fic.issuer, "subject": fic.subject, "audiences": fic.audiences},
    })
}

fn fic(
    shared: &Shared,
    method: &Method,
    identity_id: &str,
    name: Option<&str>,
    body: &[u8],
) -> Result<Response, ArmError> {
    let mut state = shared.state();
    let identity = state
        .identities
        .get_mut(&identity_id.to_ascii_lowercase())
        .ok_or_else(|| {
            ArmError::new(
                404,
                "ResourceNotFound",
                format!("The Resource '{identity_id}' was not found."),
            )
        })?;
    let canonical_id = identity.resource_id.clone();
    match (method.as_str(), name) {
        ("GET", None) => {
            let value: Vec<Value> = identity
                .fics
                .iter()
                .map(|(n, f)| fic_body(&canonical_id, n, f))
                .collect();
            Ok(axum::Json(json!({"value": value})).into_response())
        }
        ("GET", Some(name)) => {
            let fic = identity.fics.get(name).ok_or_else(|| {
                ArmError::not_found(format!(
                    "Federated identity credential '{name}' was not found."
                ))
            })?;
            Ok(axum::Json(fic_body(&canonical_id, name, fic)).into_response())
        }
        ("PUT", Some(name)) => {
            let request: Value = serde_json::from_slice(body).map_err(|e| {
                ArmError::bad_request(format!("The request content was invalid: {e}"))
            })?;
            let props = &request["properties"];
            let (Some(issuer), Some(subject)) =
                (props["issuer"].as_str(), props["subject"].as_str())
            else {
                return Err(ArmError::bad_request("Issuer and subject are required."));
            };
            let audiences: Vec<String> = props["audiences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            if audiences.len() != 1 {
                return Err(ArmError::bad_request("Exactly one audience is required."));
            }
            if !issuer.starts_with("https://") {
                return Err(ArmError::bad_request(
                    "Issuer must be a valid URL using the https scheme.",
                ));
            }
            let existed = identity.fics.contains_key(name);
            if !existed && identity.fics.len() >= FIC_LIMIT {
                return Err(ArmError::bad_request(format!(
                    "Too many Federated Identity Credentials are written to Managed Identity '{canonical_id}'. The limit is {FIC_LIMIT}."
                )));
            }
            let fic = Fic {
                issuer: issuer.into(),
                subject: subject.into(),
                audiences,
            };
            let body = fic_body(&canonical_id, name, &fic);
            identity.fics.insert(name.to_string(), fic);
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((code, axum::Json(body)).into_response())
        }
        ("DELETE", Some(name)) => {
            let code = if identity.fics.remove(name).is_some() {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            };
            Ok(code.into_response())
        }
        _ => Err(ArmError::new(
            405,
            "MethodNotAllowed",
            "The method is not allowed.",
        )),
    }
}

/// An account's ARM representation.
pub fn account_body(account: &super::state::Account) -> Value {
    json!({
        "id": account.resource_id,
        "name": account.name,
        "location": account.location,
        "type": "Microsoft.DocumentDB/databaseAccounts",
        "kind": "GlobalDocumentDB",
        "tags": {},
        "properties": {
            "provisioningState": "Succeeded",
            "documentEndpoint": account.endpoint,
            "databaseAccountOfferType": "Standard",
            "disableLocalAuth": true,
            "publicNetworkAccess": "Enabled",
        },
    })
}

fn account(
    shared: &Shared,
    method: &Method,
    id: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ArmError> {
    if *method == Method::PUT {
        let request: Value = serde_json::from_slice(body).unwrap_or_default();
        let location = request["location"].as_str().unwrap_or("westeurope");
        shared.create_account_at(id, name, location);
    } else if *method != Method::GET {
        return Err(ArmError::new(
            405,
            "MethodNotAllowed",
            "The method is not allowed.",
        ));
    }
    let state = shared.state();
    let account = state
        .accounts
        .get(&id.to_ascii_lowercase())
        .ok_or_else(|| ArmError::new(404, "ResourceNotFound", format!("The Resource 'Microsoft.DocumentDB/databaseAccounts/{name}' under resource group was not found.")))?;
    Ok(axum::Json(account_body(account)).into_response())
}

fn operation_status(shared: &Shared, id: &str) -> Result<Response, ArmError> {
    let mut state = shared.state();
    state.settle(Instant::now());
    let op = state
        .operations
        .get(id)
        .ok_or_else(|| ArmError::not_found(format!("Operation '{id}' was not found.")))?;
    let body = match (op.finished, &op.outcome) {
        (None, _) => json!({"status": "Dequeued"}),
        (Some(_), Ok(_)) => json!({"status": "Succeeded"}),
        (Some(_), Err((code, message))) => {
            json!({"status": "Failed", "error": {"code": code, "message": message}})
        }
    };
    Ok(axum::Json(body).into_response())
}

fn postgres_server_body(server: &super::state::PostgresServer, tenant: &str) -> Value {
    json!({
        "id": server.resource_id,
        "name": server.name,
        "type": "Microsoft.DBforPostgreSQL/flexibleServers",
        "location": server.location,
        "tags": {},
        "properties": {
            "state": "Ready",
            "version": "15",
            "fullyQualifiedDomainName": server.fqdn,
            "authConfig": {"activeDirectoryAuth": "Enabled", "passwordAuth": "Disabled", "tenantId": tenant},
        },
    })
}

fn postgres_not_found(id: &str) -> ArmError {
    let name = id.rsplit('/').next().unwrap_or_default();
    ArmError::new(
        404,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.DBforPostgreSQL/flexibleServers/{name}' under resource group was not found."
        ),
    )
}

/// A flexible server: created (at once; Azure takes minutes) or read.
fn postgres_server(
    shared: &Shared,
    method: &Method,
    id: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ArmError> {
    let created = if *method == Method::PUT {
        let request: Value = serde_json::from_slice(body).unwrap_or_default();
        let location = request["location"].as_str().unwrap_or("westeurope");
        !shared.create_postgres_server_at(id, name, location)
    } else if *method == Method::GET {
        false
    } else {
        return Err(ArmError::new(
            405,
            "MethodNotAllowed",
            "The method is not allowed.",
        ));
    };
    let state = shared.state();
    let server = state
        .postgres_servers
        .get(&id.to_ascii_lowercase())
        .ok_or_else(|| postgres_not_found(id))?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        code,
        axum::Json(postgres_server_body(server, &shared.tenant_id)),
    )
        .into_response())
}

fn administrator_body(server_id: &str, object_id: &str, admin: &(String, String, String)) -> Value {
    let (principal_type, principal_name, tenant_id) = admin;
    json!({
        "id": format!("{server_id}/administrators/{object_id}"),
        "name": object_id,
        "type": "Microsoft.DBforPostgreSQL/flexibleServers/administrators",
        "properties": {
            "principalType": principal_type,
            "principalName": principal_name,
            "objectId": object_id,
            "tenantId": tenant_id,
        },
    })
}

/// A flexible server's Microsoft Entra administrators: list, read, add (at once, where Azure
/// answers 202 and finishes later) and remove.
fn postgres_administrators(
    shared: &Shared,
    method: &Method,
    server_id: &str,
    object_id: Option<&str>,
    body: &[u8],
) -> Result<Response, ArmError> {
    let tenant = shared.tenant_id.clone();
    let mut state = shared.state();
    let server = state
        .postgres_servers
        .get_mut(&server_id.to_ascii_lowercase())
        .ok_or_else(|| postgres_not_found(server_id))?;
    let canonical = server.resource_id.clone();
    match (method.as_str(), object_id) {
        ("GET", None) => {
            let value: Vec<Value> = server
                .administrators
                .iter()
                .map(|(oid, admin)| administrator_body(&canonical, oid, admin))
                .collect();
            Ok(axum::Json(json!({"value": value})).into_response())
        }
        ("GET", Some(oid)) => {
            let admin = server
                .administrators
                .get(&oid.to_ascii_lowercase())
                .ok_or_else(|| {
                    ArmError::new(
                        404,
                        "ResourceNotFound",
                        format!("The Microsoft Entra administrator '{oid}' was not found."),
                    )
                })?;
            Ok(axum::Json(administrator_body(
                &canonical,
                &oid.to_ascii_lowercase(),
                admin,
            ))
            .into_response())
        }
        ("PUT", Some(oid)) => {
            let request: Value = serde_json::from_slice(body).map_err(|e| {
                ArmError::bad_request(format!("The request content was invalid: {e}"))
            })?;
            let props = &request["properties"];
            let principal_type = props["principalType"].as_str().unwrap_or("Unknown");
            if !["User", "Group", "ServicePrincipal", "Unknown"].contains(&principal_type) {
                return Err(ArmError::bad_request(format!(
                    "'{principal_type}' is not a principal type: User, Group, ServicePrincipal or Unknown."
                )));
            }
            let Some(principal_name) = props["principalName"].as_str().filter(|n| !n.is_empty())
            else {
                return Err(ArmError::bad_request("principalName is required."));
            };
            let admin = (
                principal_type.to_string(),
                principal_name.to_string(),
                props["tenantId"].as_str().unwrap_or(&tenant).to_string(),
            );
            let oid = oid.to_ascii_lowercase();
            let body = administrator_body(&canonical, &oid, &admin);
            let existed = server.administrators.insert(oid, admin).is_some();
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((code, axum::Json(body)).into_response())
        }
        ("DELETE", Some(oid)) => {
            let code = if server
                .administrators
                .remove(&oid.to_ascii_lowercase())
                .is_some()
            {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            };
            Ok(code.into_response())
        }
        _ => Err(ArmError::new(
            405,
            "MethodNotAllowed",
            "The method is not allowed.",
        )),
    }
}

/// The resource type and api-versions of a T-SQL server kind (lower-case path segments).
fn sql_kind(provider: &str, kind: &str) -> Option<(&'static str, &'static [&'static str])> {
    match (provider, kind) {
        ("microsoft.sql", "servers") => Some(("Microsoft.Sql/servers", SQL_VERSIONS)),
        ("microsoft.sql", "managedinstances") => {
            Some(("Microsoft.Sql/managedInstances", SQL_VERSIONS))
        }
        ("microsoft.synapse", "workspaces") => {
            Some(("Microsoft.Synapse/workspaces", SYNAPSE_VERSIONS))
        }
        _ => None,
    }
}

fn sql_not_found(resource_type: &str, id: &str) -> ArmError {
    let name = id.rsplit('/').next().unwrap_or_default();
    ArmError::new(
        404,
        "ResourceNotFound",
        format!("The Resource '{resource_type}/{name}' under resource group was not found."),
    )
}

fn sql_server_body(server: &super::state::SqlServer) -> Value {
    let host = match server.resource_type.as_str() {
        "Microsoft.Synapse/workspaces" => format!("{}.sql.azuresynapse.net", server.name),
        "Microsoft.Sql/managedInstances" => {
            format!("{}.0123456789ab.database.windows.net", server.name)
        }
        _ => format!("{}.database.windows.net", server.name),
    };
    json!({
        "id": server.resource_id,
        "name": server.name,
        "type": server.resource_type,
        "location": server.location,
        "properties": {
            "state": "Ready",
            "fullyQualifiedDomainName": host,
            "minimalTlsVersion": "1.2",
        },
    })
}

/// A T-SQL server: created (at once; Azure takes minutes) or read.
fn sql_server(
    shared: &Shared,
    method: &Method,
    id: &str,
    resource_type: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ArmError> {
    let created = match method.as_str() {
        "PUT" => {
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            let location = request["location"].as_str().unwrap_or("westeurope");
            !shared.create_sql_server_at(id, resource_type, name, location)
        }
        "GET" => false,
        _ => {
            return Err(ArmError::new(
                405,
                "MethodNotAllowed",
                "The method is not allowed.",
            ));
        }
    };
    let state = shared.state();
    let server = state
        .sql_servers
        .get(&id.to_ascii_lowercase())
        .ok_or_else(|| sql_not_found(resource_type, id))?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, axum::Json(sql_server_body(server))).into_response())
}

fn sql_administrator_body(
    server: &super::state::SqlServer,
    admin: &super::state::SqlAdmin,
) -> Value {
    // Synapse names its one administrator `activeDirectory`; Microsoft.Sql `ActiveDirectory`.
    let name = if server.resource_type.starts_with("Microsoft.Synapse") {
        "activeDirectory"
    } else {
        "ActiveDirectory"
    };
    json!({
        "id": format!("{}/administrators/{name}", server.resource_id),
        "name": name,
        "type": format!("{}/administrators", server.resource_type),
        "properties": {
            "administratorType": "ActiveDirectory",
            "login": admin.login,
            "sid": admin.sid,
            "tenantId": admin.tenant_id,
            "azureADOnlyAuthentication": admin.azure_ad_only,
        },
    })
}

/// A T-SQL server's Microsoft Entra admin (one per server, named `ActiveDirectory`): list,
/// read, set (at once, where Azure answers 202 and finishes later) and remove.
fn sql_administrator(
    shared: &Shared,
    method: &Method,
    server_id: &str,
    name: Option<&str>,
    body: &[u8],
) -> Result<Response, ArmError> {
    let tenant = shared.tenant_id.clone();
    let mut state = shared.state();
    let server = state
        .sql_servers
        .get_mut(&server_id.to_ascii_lowercase())
        .ok_or_else(|| sql_not_found("Microsoft.Sql/servers", server_id))?;
    if let Some(name) = name
        && !name.eq_ignore_ascii_case("activedirectory")
    {
        return Err(ArmError::bad_request(format!(
            "'{name}' is not an administrator name: the only one is ActiveDirectory."
        )));
    }
    let missing = || {
        ArmError::new(
            404,
            "ResourceNotFound",
            "The requested resource of type 'administrators' with name 'ActiveDirectory' was not found.",
        )
    };
    match (method.as_str(), name) {
        ("GET", None) => {
            let value: Vec<Value> = server
                .admin
                .iter()
                .map(|admin| sql_administrator_body(server, admin))
                .collect();
            Ok(axum::Json(json!({"value": value})).into_response())
        }
        ("GET", Some(_)) => {
            let admin = server.admin.as_ref().ok_or_else(missing)?;
            Ok(axum::Json(sql_administrator_body(server, admin)).into_response())
        }
        ("PUT", Some(_)) => {
            let request: Value = serde_json::from_slice(body).map_err(|e| {
                ArmError::bad_request(format!("The request content was invalid: {e}"))
            })?;
            let props = &request["properties"];
            if props["administratorType"].as_str() != Some("ActiveDirectory") {
                return Err(ArmError::bad_request(
                    "administratorType is required and must be ActiveDirectory.",
                ));
            }
            let Some(login) = props["login"].as_str().filter(|l| !l.is_empty()) else {
                return Err(ArmError::bad_request("login is required."));
            };
            let Some(sid) = props["sid"]
                .as_str()
                .filter(|s| uuid::Uuid::parse_str(s).is_ok())
            else {
                return Err(ArmError::bad_request("sid is required and must be a GUID."));
            };
            let admin = super::state::SqlAdmin {
                login: login.to_string(),
                sid: sid.to_ascii_lowercase(),
                tenant_id: props["tenantId"].as_str().unwrap_or(&tenant).to_string(),
                azure_ad_only: props["azureADOnlyAuthentication"]
                    .as_bool()
                    .unwrap_or(false),
            };
            let body = sql_administrator_body(server, &admin);
            let existed = server.admin.replace(admin).is_some();
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((code, axum::Json(body)).into_response())
        }
        ("DELETE", Some(_)) => {
            let code = if server.admin.take().is_some() {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            };
            Ok(code.into_response())
        }
        _ => Err(ArmError::new(
            405,
            "MethodNotAllowed",
            "The method is not allowed.",
        )),
    }
}
