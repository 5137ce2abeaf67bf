//! Contract tests of the Azure client against Microsoft's published x-ms-examples for Cosmos DB
//! SQL RBAC (api-version 2025-10-15): for each example the client's request must match the
//! example's parameters (method, path, api-version, body) and the example's responses must
//! parse into the right typed values.
//!
//! The examples live outside the repository: `$DBGRANT_AZURE_CONTRACTS/examples` or
//! `../shared/azure-contracts/examples` next to the checkout. When absent, the test says so and
//! passes.

mod azure_server;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use azure_server::{ARM_TOKEN, Answer, Seen, TestAzure, within};
use dbgrant::backend::cosmos::{CosmosAccess, RoleAssignment, RoleDefinition};
use serde_json::Value;

fn examples_dir() -> Option<PathBuf> {
    let root = std::env::var_os("DBGRANT_AZURE_CONTRACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/azure-contracts")
        });
    let dir = root.join("examples");
    if dir.is_dir() {
        Some(dir)
    } else {
        dbgrant_sim::prerequisite_missing(&format!(
            "Azure contract examples not found at {} (set DBGRANT_AZURE_CONTRACTS)",
            dir.display()
        ));
        None
    }
}

fn example(name: &str) -> Option<Value> {
    let path = examples_dir()?.join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Some(serde_json::from_str(&text).expect("example is JSON"))
}

fn param<'a>(example: &'a Value, name: &str) -> &'a str {
    example["parameters"][name]
        .as_str()
        .unwrap_or_else(|| panic!("example has parameter {name}"))
}

fn account_id(example: &Value) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.DocumentDB/databaseAccounts/{}",
        param(example, "subscriptionId"),
        param(example, "resourceGroupName"),
        param(example, "accountName")
    )
}

/// The request is the example's: method, path, api-version, and the operator's bearer token.
fn assert_request(seen: &Seen, example: &Value, method: &str, path: &str) {
    assert_eq!(seen.method, method, "{seen:?}");
    assert_eq!(seen.path, path, "{seen:?}");
    assert_eq!(
        seen.query.get("api-version").map(String::as_str),
        Some(param(example, "api-version")),
        "{seen:?}"
    );
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {ARM_TOKEN}").as_str())
    );
}

fn response(example: &Value, status: &str) -> Answer {
    let body = &example["responses"][status]["body"];
    let status: u16 = status.parse().expect("status");
    let mut answer = if body.is_null() {
        Answer::empty(status)
    } else {
        Answer::json(status, body.clone())
    };
    if let Some(headers) = example["responses"][status.to_string()]["headers"].as_object() {
        for (name, value) in headers {
            answer = answer.with_header(name, value.as_str().unwrap_or_default());
        }
    }
    answer
}

fn assignment_of(value: &Value) -> RoleAssignment {
    RoleAssignment {
        guid: value["name"].as_str().expect("name").to_string(),
        role_definition_id: value["properties"]["roleDefinitionId"]
            .as_str()
            .expect("roleDefinitionId")
            .to_string(),
        scope: value["properties"]["scope"]
            .as_str()
            .expect("scope")
            .to_string(),
        principal_id: value["properties"]["principalId"]
            .as_str()
            .expect("principalId")
            .to_string(),
    }
}

fn definition_of(value: &Value) -> RoleDefinition {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("string").to_string())
            .collect()
    };
    let props = &value["properties"];
    RoleDefinition {
        guid: value["name"].as_str().expect("name").to_string(),
        role_name: props["roleName"].as_str().expect("roleName").to_string(),
        data_actions: props["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .flat_map(|p| strings(&p["dataActions"]))
            .collect(),
        assignable_scopes: strings(&props["assignableScopes"]),
        built_in: props["type"] == "BuiltInRole",
    }
}

#[tokio::test]
async fn role_assignment_create_update_sends_the_example_body_for_200_and_202() {
    let Some(ex) = example("CosmosDBSqlRoleAssignmentCreateUpdate.json") else {
        return;
    };
    let account = account_id(&ex);
    let id = param(&ex, "roleAssignmentId").to_string();
    let path = format!("{account}/sqlRoleAssignments/{id}");
    let wanted = ex["parameters"]["createUpdateSqlRoleAssignmentParameters"].clone();
    let assignment = RoleAssignment {
        guid: id.clone(),
        role_definition_id: wanted["properties"]["roleDefinitionId"]
            .as_str()
            .expect("id")
            .into(),
        scope: wanted["properties"]["scope"]
            .as_str()
            .expect("scope")
            .into(),
        principal_id: wanted["properties"]["principalId"]
            .as_str()
            .expect("principal")
            .into(),
    };
    for first in ["200", "202"] {
        let answered = Arc::new(AtomicUsize::new(0));
        let (ex2, counter) = (ex.clone(), answered.clone());
        let server = TestAzure::start(move |seen| {
            match (seen.method.as_str(), counter.fetch_add(1, Ordering::SeqCst)) {
                ("PUT", _) => response(&ex2, first),
                // A bare 202 (as in the example): the client watches the resource appear.
                ("GET", _) => response(&ex2, "200"),
                _ => Answer::empty(500),
            }
        })
        .await;
        let client = server.client().await;
        within(client.put_role_assignment(&account, &assignment))
            .await
            .expect("PUT succeeds");
        let requests = server.requests();
        assert_request(&requests[0], &ex, "PUT", &path);
        assert_eq!(requests[0].json(), wanted, "body as in the example");
        let expected_requests = if first == "202" { 2 } else { 1 };
        assert_eq!(requests.len(), expected_requests, "{first}: {requests:?}");
    }
}

#[tokio::test]
async fn role_assignment_get_and_list_parse_into_typed_assignments() {
    let (Some(get), Some(list)) = (
        example("CosmosDBSqlRoleAssignmentGet.json"),
        example("CosmosDBSqlRoleAssignmentList.json"),
    ) else {
        return;
    };
    let (g, l) = (get.clone(), list.clone());
    let server = TestAzure::start(move |seen| {
        if seen.path.ends_with("/sqlRoleAssignments") {
            response(&l, "200")
        } else {
            response(&g, "200")
        }
    })
    .await;
    let client = server.client().await;
    let id = param(&get, "roleAssignmentId");
    let one = within(client.get_role_assignment(&account_id(&get), id))
        .await
        .expect("GET")
        .expect("exists");
    assert_eq!(one, assignment_of(&get["responses"]["200"]["body"]));
    let all = within(client.list_role_assignments(&account_id(&list)))
        .await
        .expect("LIST");
    let expected: Vec<RoleAssignment> = list["responses"]["200"]["body"]["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(assignment_of)
        .collect();
    assert_eq!(all, expected);
    let requests = server.requests();
    assert_request(
        &requests[0],
        &get,
        "GET",
        &format!("{}/sqlRoleAssignments/{id}", account_id(&get)),
    );
    assert_request(
        &requests[1],
        &list,
        "GET",
        &format!("{}/sqlRoleAssignments", account_id(&list)),
    );
}

#[tokio::test]
async fn role_definition_create_update_get_and_list_follow_the_examples() {
    let (Some(put), Some(get), Some(list)) = (
        example("CosmosDBSqlRoleDefinitionCreateUpdate.json"),
        example("CosmosDBSqlRoleDefinitionGet.json"),
        example("CosmosDBSqlRoleDefinitionList.json"),
    ) else {
        return;
    };
    let (p, g, l) = (put.clone(), get.clone(), list.clone());
    let server = TestAzure::start(move |seen| match seen.method.as_str() {
        "PUT" => response(&p, "200"),
        _ if seen.path.ends_with("/sqlRoleDefinitions") => response(&l, "200"),
        _ => response(&g, "200"),
    })
    .await;
    let client = server.client().await;
    let account = account_id(&put);
    let wanted = put["parameters"]["createUpdateSqlRoleDefinitionParameters"].clone();
    let definition = RoleDefinition {
        guid: param(&put, "roleDefinitionId").to_string(),
        role_name: wanted["properties"]["roleName"]
            .as_str()
            .expect("name")
            .into(),
        data_actions: definition_of(
            &serde_json::json!({"name": "x", "properties": wanted["properties"]}),
        )
        .data_actions,
        assignable_scopes: definition_of(
            &serde_json::json!({"name": "x", "properties": wanted["properties"]}),
        )
        .assignable_scopes,
        built_in: false,
    };
    within(client.put_role_definition(&account, &definition))
        .await
        .expect("PUT");
    let one =
        within(client.get_role_definition(&account_id(&get), param(&get, "roleDefinitionId")))
            .await
            .expect("GET")
            .expect("exists");
    assert_eq!(one, definition_of(&get["responses"]["200"]["body"]));
    let all = within(client.list_role_definitions(&account_id(&list)))
        .await
        .expect("LIST");
    assert_eq!(
        all,
        vec![definition_of(&list["responses"]["200"]["body"]["value"][0])]
    );
    let requests = server.requests();
    assert_request(
        &requests[0],
        &put,
        "PUT",
        &format!("{account}/sqlRoleDefinitions/{}", definition.guid),
    );
    assert_eq!(requests[0].json(), wanted, "body as in the example");
}

async fn delete_follows_each_documented_response(file: &str, id_param: &str, child: &str) {
    let Some(ex) = example(file) else {
        return;
    };
    let account = account_id(&ex);
    let id = param(&ex, id_param).to_string();
    let path = format!("{account}/{child}/{id}");
    for status in ["200", "202", "204"] {
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = polls.clone();
        let ex2 = ex.clone();
        let server = TestAzure::start(move |seen| match seen.method.as_str() {
            "DELETE" => {
                let mut answer = response(&ex2, status);
                // The example's polling URLs name a regional Azure host; point them here.
                let here = seen.header("host").unwrap_or_default().to_string();
                for (_, value) in &mut answer.headers {
                    if let Some(rest) = value.strip_prefix("https://") {
                        let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
                        *value = format!("https://{here}{path}");
                    }
                }
                answer.with_header("retry-after", "0")
            }
            "GET" if seen.path.contains("/operationsStatus/") => {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = if n == 0 { "InProgress" } else { "Succeeded" };
                Answer::json(200, serde_json::json!({"status": status}))
            }
            _ => Answer::empty(500),
        })
        .await;
        let client = server.client().await;
        let deleted = if child == "sqlRoleAssignments" {
            within(client.delete_role_assignment(&account, &id)).await
        } else {
            within(client.delete_role_definition(&account, &id)).await
        };
        deleted.unwrap_or_else(|e| panic!("DELETE answered {status}: {e}"));
        let requests = server.requests();
        assert_request(&requests[0], &ex, "DELETE", &path);
        let expected_polls = if status == "202" { 2 } else { 0 };
        assert_eq!(polls.load(Ordering::SeqCst), expected_polls, "{status}");
        if status == "202" {
            assert_eq!(
                requests[1].header("authorization"),
                Some(format!("Bearer {ARM_TOKEN}").as_str()),
                "polls are authenticated"
            );
        }
    }
}

#[tokio::test]
async fn role_assignment_delete_handles_200_202_and_204() {
    within(delete_follows_each_documented_response(
        "CosmosDBSqlRoleAssignmentDelete.json",
        "roleAssignmentId",
        "sqlRoleAssignments",
    ))
    .await;
}

#[tokio::test]
async fn role_definition_delete_handles_200_202_and_204() {
    within(delete_follows_each_documented_response(
        "CosmosDBSqlRoleDefinitionDelete.json",
        "roleDefinitionId",
        "sqlRoleDefinitions",
    ))
    .await;
}

#[test]
fn every_example_is_covered_or_named_as_unused() {
    let Some(dir) = examples_dir() else {
        return;
    };
    // Managed identity APIs are not called by the operator (identities resolve through the
    // token exchange), so their examples have no client contract.
    let covered = [
        "CosmosDBSqlRoleAssignmentCreateUpdate.json",
        "CosmosDBSqlRoleAssignmentDelete.json",
        "CosmosDBSqlRoleAssignmentGet.json",
        "CosmosDBSqlRoleAssignmentList.json",
        "CosmosDBSqlRoleDefinitionCreateUpdate.json",
        "CosmosDBSqlRoleDefinitionDelete.json",
        "CosmosDBSqlRoleDefinitionGet.json",
        "CosmosDBSqlRoleDefinitionList.json",
    ];
    let unused = [
        "FederatedIdentityCredentialCreate.json",
        "FederatedIdentityCredentialGet.json",
        "IdentityGet.json",
    ];
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if unused.contains(&name.as_str()) {
            eprintln!("not a client contract (the operator never calls it): {name}");
            continue;
        }
        assert!(
            covered.contains(&name.as_str()),
            "example {name} has no contract test"
        );
    }
}
