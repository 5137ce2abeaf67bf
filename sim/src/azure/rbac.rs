//! Cosmos DB SQL role definitions and assignments as the Cosmos DB resource provider serves
//! them: GUID ids, scope and principal validation, built-in roles, limits, the one-write-at-a-
//! time account lock (412), and writes that complete through long-running operations.

use std::time::Instant;

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;
use super::errors::ArmError;
use super::state::{Effect, Operation};

/// Built-in data-plane roles: (GUID, name, data actions).
pub const BUILT_IN: &[(&str, &str, &[&str])] = &[
    (
        "00000000-0000-0000-0000-000000000001",
        "Cosmos DB Built-in Data Reader",
        &[
            "Microsoft.DocumentDB/databaseAccounts/readMetadata",
            "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/executeQuery",
            "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/readChangeFeed",
            "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read",
        ],
    ),
    (
        "00000000-0000-0000-0000-000000000002",
        "Cosmos DB Built-in Data Contributor",
        &[
            "Microsoft.DocumentDB/databaseAccounts/readMetadata",
            "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/*",
            "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/*",
        ],
    ),
];

const DEFINITION_LIMIT: usize = 100;
const ASSIGNMENT_LIMIT: usize = 2_000;

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

fn built_in_body(account_id: &str, guid: &str, name: &str, actions: &[&str]) -> Value {
    json!({
        "id": format!("{account_id}/sqlRoleDefinitions/{guid}"),
        "name": guid,
        "type": "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions",
        "properties": {
            "roleName": name,
            "type": "BuiltInRole",
            "assignableScopes": [account_id],
            "permissions": [{"dataActions": actions, "notDataActions": []}],
        },
    })
}

/// The data actions of a role definition of an account, built-ins included.
pub fn data_actions(shared: &Shared, account_key: &str, guid: &str) -> Vec<String> {
    if let Some((_, _, actions)) = BUILT_IN
        .iter()
        .find(|(g, _, _)| g.eq_ignore_ascii_case(guid))
    {
        return actions.iter().map(|a| (*a).to_string()).collect();
    }
    let state = shared.state();
    let Some(definition) = state
        .accounts
        .get(account_key)
        .and_then(|a| a.definitions.get(&guid.to_ascii_lowercase()))
    else {
        return Vec::new();
    };
    definition["properties"]["permissions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["dataActions"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Serve one RBAC request on `account_id`'s `collection`.
///
/// # Errors
/// ARM errors as the Cosmos DB resource provider gives them.
pub fn handle(
    shared: &Shared,
    method: &Method,
    account_id: &str,
    collection: &'static str,
    guid: Option<&str>,
    version: &str,
    body: &[u8],
) -> Result<Response, ArmError> {
    let key = account_id.to_ascii_lowercase();
    let now = Instant::now();
    let mut state = shared.state();
    state.settle(now);
    let account = state
        .accounts
        .get(&key)
        .cloned()
        .ok_or_else(|| ArmError::new(404, "ResourceNotFound", format!("The Resource 'Microsoft.DocumentDB/databaseAccounts/{}' under resource group was not found.", account_id.rsplit('/').next().unwrap_or_default())))?;
    let canonical = account.resource_id.clone();
    let definitions = collection == "sqlRoleDefinitions";
    match (method.as_str(), guid) {
        ("GET", None) => {
            let mut value: Vec<Value> = Vec::new();
            if definitions {
                value.extend(
                    BUILT_IN
                        .iter()
                        .map(|(g, n, a)| built_in_body(&canonical, g, n, a)),
                );
                value.extend(account.definitions.values().cloned());
            } else {
                value.extend(account.assignments.values().cloned());
            }
            Ok(axum::Json(json!({"value": value})).into_response())
        }
        ("GET", Some(guid)) => {
            let found = if definitions {
                BUILT_IN
                    .iter()
                    .find(|(g, _, _)| g.eq_ignore_ascii_case(guid))
                    .map(|(g, n, a)| built_in_body(&canonical, g, n, a))
                    .or_else(|| account.definitions.get(&guid.to_ascii_lowercase()).cloned())
            } else {
                account.assignments.get(&guid.to_ascii_lowercase()).cloned()
            };
            let what = if definitions {
                "SQL Role Definition"
            } else {
                "SQL Role Assignment"
            };
            found.map(|b| axum::Json(b).into_response()).ok_or_else(|| ArmError::not_found(format!("Unable to find a {what} with ID [{guid}].\r\nActivityId: {}, Microsoft.Azure.Documents.Common/2.14.0", uuid::Uuid::new_v4())))
        }
        (_, None) => Err(ArmError::new(
            405,
            "MethodNotAllowed",
            "The method is not allowed.",
        )),
        ("PUT", Some(guid)) => {
            if !is_guid(guid) {
                return Err(ArmError::bad_request(format!(
                    "The request path {account_id}/{collection}/{guid} is invalid: the id must be a GUID."
                )));
            }
            let request: Value = serde_json::from_slice(body).map_err(|e| {
                ArmError::bad_request(format!(
                    "Failed to parse the incoming request payload. Exception: {e}"
                ))
            })?;
            let guid = guid.to_ascii_lowercase();
            let resource = if definitions {
                validate_definition(&account, &canonical, &guid, &request)?
            } else {
                validate_assignment(shared, &state, &account, &canonical, &guid, &request, now)?
            };
            drop(state);
            start(
                shared,
                &key,
                &account.location,
                Effect::Put {
                    account: key.clone(),
                    collection,
                    guid,
                    body: resource.clone(),
                },
                version,
                Some(resource),
            )
        }
        ("DELETE", Some(guid)) => {
            let guid = guid.to_ascii_lowercase();
            let exists = if definitions {
                account.definitions.contains_key(&guid)
            } else {
                account.assignments.contains_key(&guid)
            };
            if !exists {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            drop(state);
            start(
                shared,
                &key,
                &account.location,
                Effect::Delete {
                    account: key.clone(),
                    collection,
                    guid,
                },
                version,
                None,
            )
        }
        _ => Err(ArmError::new(
            405,
            "MethodNotAllowed",
            "The method is not allowed.",
        )),
    }
}

fn validate_definition(
    account: &super::state::Account,
    canonical: &str,
    guid: &str,
    request: &Value,
) -> Result<Value, ArmError> {
    if BUILT_IN
        .iter()
        .any(|(g, _, _)| g.eq_ignore_ascii_case(guid))
    {
        return Err(ArmError::bad_request(
            "Built-in role definitions cannot be modified.",
        ));
    }
    let props = &request["properties"];
    let name = props["roleName"]
        .as_str()
        .ok_or_else(|| ArmError::bad_request("The roleName property is required."))?;
    if !account.definitions.contains_key(guid) && account.definitions.len() >= DEFINITION_LIMIT {
        return Err(ArmError::bad_request(format!(
            "The number of role definitions for the account exceeds the limit of {DEFINITION_LIMIT}."
        )));
    }
    let scopes = props["assignableScopes"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![json!(canonical)]);
    for scope in &scopes {
        let scope = scope.as_str().unwrap_or_default();
        check_scope(canonical, scope)?;
    }
    Ok(json!({
        "id": format!("{canonical}/sqlRoleDefinitions/{guid}"),
        "name": guid,
        "type": "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions",
        "properties": {
            "roleName": name,
            "type": "CustomRole",
            "assignableScopes": scopes,
            "permissions": props["permissions"].as_array().cloned().unwrap_or_default(),
        },
    }))
}

fn check_scope(account_id: &str, scope: &str) -> Result<(), ArmError> {
    let lower = scope.to_ascii_lowercase();
    let account = account_id.to_ascii_lowercase();
    let rest = if lower == account {
        Some("")
    } else {
        lower.strip_prefix(&format!("{account}/"))
    };
    let valid = match rest {
        Some("") => true,
        Some(rest) => {
            let parts: Vec<&str> = rest.split('/').collect();
            matches!(parts.as_slice(), ["dbs", db] if !db.is_empty())
                || matches!(parts.as_slice(), ["dbs", db, "colls", c] if !db.is_empty() && !c.is_empty())
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ArmError::bad_request(format!(
            "Failed to parse the incoming request payload. Exception: System.FormatException: Could not parse property [scope] with value [{scope}]: the scope must be the account or a database or container under it."
        )))
    }
}

#[allow(clippy::too_many_arguments)]
fn validate_assignment(
    shared: &Shared,
    state: &super::state::State,
    account: &super::state::Account,
    canonical: &str,
    guid: &str,
    request: &Value,
    now: Instant,
) -> Result<Value, ArmError> {
    let props = &request["properties"];
    let definition_id = props["roleDefinitionId"]
        .as_str()
        .ok_or_else(|| ArmError::bad_request("The roleDefinitionId property is required."))?;
    let scope = props["scope"]
        .as_str()
        .ok_or_else(|| ArmError::bad_request("The scope property is required."))?;
    let principal = props["principalId"]
        .as_str()
        .ok_or_else(|| ArmError::bad_request("The principalId property is required."))?;
    let definition_guid = definition_id
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let known_definition = definition_id.to_ascii_lowercase().starts_with(&format!(
        "{}/sqlroledefinitions/",
        canonical.to_ascii_lowercase()
    )) && (BUILT_IN.iter().any(|(g, _, _)| *g == definition_guid)
        || account.definitions.contains_key(&definition_guid));
    if !known_definition {
        return Err(ArmError::bad_request(format!(
            "The specified role definition with ID '{}' does not exist.",
            definition_guid.replace('-', "")
        )));
    }
    check_scope(canonical, scope)?;
    if !state.principal_known(principal, now) {
        return Err(ArmError::bad_request(format!(
            "The provided principal ID [{principal}] was not found in the AAD tenant(s) [{}] which are associated with the customer's subscription.",
            shared.tenant_id
        )));
    }
    if let Some(existing) = account.assignments.get(guid)
        && !existing["properties"]["principalId"]
            .as_str()
            .unwrap_or_default()
            .eq_ignore_ascii_case(principal)
    {
        return Err(ArmError::bad_request(
            "Updating SQL Role Assignment Principal ID is not permitted. You may only update the associated Role Definition.",
        ));
    }
    if !account.assignments.contains_key(guid) && account.assignments.len() >= ASSIGNMENT_LIMIT {
        return Err(ArmError::bad_request(format!(
            "The number of role assignments for the account exceeds the limit of {ASSIGNMENT_LIMIT}."
        )));
    }
    Ok(json!({
        "id": format!("{canonical}/sqlRoleAssignments/{guid}"),
        "name": guid,
        "type": "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments",
        "properties": {"roleDefinitionId": definition_id, "scope": scope, "principalId": principal},
    }))
}

/// Take the account's lock and start a long-running operation; 412 when another RBAC write
/// holds the lock.
fn start(
    shared: &Shared,
    key: &str,
    location: &str,
    effect: Effect,
    version: &str,
    result: Option<Value>,
) -> Result<Response, ArmError> {
    let (duration, stuck, fail) = {
        let mut settings = shared.faults.lock();
        let fail = settings.lro_failures > 0;
        if fail {
            settings.lro_failures -= 1;
        }
        (settings.lro_duration, settings.lro_stuck, fail)
    };
    let now = Instant::now();
    let mut state = shared.state();
    state.settle(now);
    let account = state
        .accounts
        .get_mut(key)
        .ok_or_else(|| ArmError::not_found("account"))?;
    if account.busy.is_some() {
        return Err(ArmError::new(
            412,
            "PreconditionFailed",
            format!(
                "There is already an operation in progress which requires exclusive lock on this service {}. Please retry the operation after sometime.\r\nActivityId: {}, Microsoft.Azure.Documents.Common/2.14.0",
                account.name,
                uuid::Uuid::new_v4()
            ),
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    account.busy = Some(id.clone());
    if let (
        Effect::Put {
            collection: "sqlRoleAssignments",
            guid,
            ..
        },
        false,
    ) = (&effect, stuck)
    {
        let delay = shared.faults.lock().propagation_delay;
        shared
            .effective_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(guid.clone(), now + duration + delay);
    }
    let outcome = if fail {
        Err((
            "InternalServerError".to_string(),
            "The operation failed.".to_string(),
        ))
    } else {
        Ok(effect)
    };
    state.operations.insert(
        id.clone(),
        Operation {
            done_at: (!stuck).then_some(now + duration),
            outcome,
            finished: None,
            account: key.to_string(),
            location: location.to_string(),
            result,
        },
    );
    state.settle(now);
    let subscription = key.split('/').nth(2).unwrap_or_default();
    let url = format!(
        "{}subscriptions/{subscription}/providers/Microsoft.DocumentDB/locations/{location}/operationsStatus/{id}?api-version={version}",
        shared.base_url
    );
    let mut response = (StatusCode::ACCEPTED, "").into_response();
    if let Ok(value) = HeaderValue::from_str(&url) {
        response
            .headers_mut()
            .insert("azure-asyncoperation", value.clone());
        response.headers_mut().insert("location", value);
    }
    Ok(response)
}
