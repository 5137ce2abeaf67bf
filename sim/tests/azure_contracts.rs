//! Microsoft's own REST examples (`x-ms-examples` from azure-rest-api-specs, kept outside the
//! repository in `../shared/azure-contracts/examples`, or `$DBGRANT_AZURE_CONTRACTS/examples`)
//! replayed against the Azure simulator: each request is sent as the example gives it
//! (placeholders replaced by GUIDs where Azure demands them), and the status code and the
//! body's shape must match one of the example's responses.

use std::path::PathBuf;
use std::time::Duration;

use dbgrant_sim::azure::{AzureSim, AzureSimConfig};
use serde_json::{Value, json};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

fn contracts() -> Option<PathBuf> {
    let dir = std::env::var_os("DBGRANT_AZURE_CONTRACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/azure-contracts")
        });
    let examples = dir.join("examples");
    if examples.is_dir() {
        Some(examples)
    } else {
        dbgrant_sim::prerequisite_missing(&format!(
            "Azure contract examples not found at {} (set DBGRANT_AZURE_CONTRACTS)",
            examples.display()
        ));
        None
    }
}

/// Whether `actual` has every key of `expected` with a value of the same JSON type, recursively
/// (arrays: the first element's shape). Returns the first difference.
fn same_shape(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let child = a
                    .get(key)
                    .ok_or_else(|| format!("{path}.{key} is missing"))?;
                // Tags are whatever the creator set; only their type is part of the contract.
                let value = if key == "tags" { &json!({}) } else { value };
                same_shape(value, child, &format!("{path}.{key}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => match (e.first(), a.first()) {
            (Some(e), Some(a)) => same_shape(e, a, &format!("{path}[0]")),
            (Some(_), None) => Err(format!("{path} is empty")),
            _ => Ok(()),
        },
        (e, a) if std::mem::discriminant(e) == std::mem::discriminant(a) => Ok(()),
        (e, a) => Err(format!("{path}: expected {e}, got {a}")),
    }
}

struct Replay {
    sim: AzureSim,
    http: reqwest::Client,
    token: String,
    subscription: String,
    assignment: String,
    definition: String,
    principal: String,
}

impl Replay {
    /// The example's text with placeholders made real.
    fn load(&self, path: &PathBuf) -> Value {
        let text = std::fs::read_to_string(path).unwrap();
        let text = text
            .replace("mySubscriptionId", &self.subscription)
            .replace("\"subid\"", &format!("\"{}\"", self.subscription))
            .replace(
                "/subscriptions/subid/",
                &format!("/subscriptions/{}/", self.subscription),
            )
            .replace("myRoleAssignmentId", &self.assignment)
            .replace("myRoleDefinitionId", &self.definition)
            .replace("myPrincipalId", &self.principal);
        serde_json::from_str(&text).unwrap()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        version: &str,
        body: Option<&Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = format!(
            "{}{}?api-version={version}",
            self.sim.arm_endpoint(),
            path.trim_start_matches('/')
        );
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = timeout(LIMIT, request.send()).await.unwrap().unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn settle(&self, headers: &reqwest::header::HeaderMap) {
        let Some(url) = headers.get("azure-asyncoperation") else {
            return;
        };
        for _ in 0..200 {
            let body: Value = self
                .http
                .get(url.to_str().unwrap())
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["status"] == "Succeeded" {
                return;
            }
            assert_ne!(body["status"], "Failed", "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the operation did not finish");
    }
}

fn operation(file: &str, p: &Value) -> (reqwest::Method, String, Option<&'static str>) {
    let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
    let account = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.DocumentDB/databaseAccounts/{}",
        s("subscriptionId"),
        s("resourceGroupName"),
        s("accountName")
    );
    let identity = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
        s("subscriptionId"),
        s("resourceGroupName"),
        s("resourceName")
    );
    let stem = file.trim_end_matches(".json");
    let (collection, id, body) = if stem.contains("SqlRoleAssignment") {
        (
            "sqlRoleAssignments",
            s("roleAssignmentId"),
            Some("createUpdateSqlRoleAssignmentParameters"),
        )
    } else if stem.contains("SqlRoleDefinition") {
        (
            "sqlRoleDefinitions",
            s("roleDefinitionId"),
            Some("createUpdateSqlRoleDefinitionParameters"),
        )
    } else if stem.starts_with("FederatedIdentityCredential") {
        let path = format!(
            "{identity}/federatedIdentityCredentials/{}",
            s("federatedIdentityCredentialResourceName")
        );
        return if stem.ends_with("Create") {
            (reqwest::Method::PUT, path, Some("parameters"))
        } else {
            (reqwest::Method::GET, path, None)
        };
    } else {
        return (reqwest::Method::GET, identity, None);
    };
    let item = format!("{account}/{collection}/{id}");
    if stem.ends_with("CreateUpdate") {
        (reqwest::Method::PUT, item, body)
    } else if stem.ends_with("Delete") {
        (reqwest::Method::DELETE, item, None)
    } else if stem.ends_with("List") {
        (
            reqwest::Method::GET,
            format!("{account}/{collection}"),
            None,
        )
    } else {
        (reqwest::Method::GET, item, None)
    }
}

#[tokio::test]
async fn every_example_request_gets_an_example_response() {
    let Some(examples) = contracts() else { return };
    let sim = AzureSim::start(AzureSimConfig {
        lro_duration: Duration::from_millis(50),
        ..AzureSimConfig::default()
    })
    .await
    .unwrap();
    let http = dbgrant_sim::tls::https_client(&sim.ca_pem()).unwrap();
    let admin = sim.admin();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("client_id", admin.client_id.as_str()),
            ("client_secret", admin.client_secret.as_str()),
            ("scope", &format!("{}.default", sim.arm_endpoint())),
        ])
        .finish();
    let token: Value = http
        .post(format!(
            "{}{}/oauth2/v2.0/token",
            sim.authority_host(),
            sim.tenant_id()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subscription = uuid::Uuid::new_v4().to_string();
    let principal = sim
        .create_identity(&subscription, "myResourceGroupName", "workload")
        .principal_id;
    let replay = Replay {
        token: token["access_token"].as_str().unwrap().to_string(),
        http,
        subscription: subscription.clone(),
        assignment: uuid::Uuid::new_v4().to_string(),
        definition: uuid::Uuid::new_v4().to_string(),
        principal,
        sim,
    };
    replay
        .sim
        .create_cosmos_account(&subscription, "myResourceGroupName", "myAccountName");

    // Creates before reads, deletes last; definitions before the assignment that uses one.
    let order = [
        "IdentityGet",
        "FederatedIdentityCredentialCreate",
        "FederatedIdentityCredentialGet",
        "CosmosDBSqlRoleDefinitionCreateUpdate",
        "CosmosDBSqlRoleDefinitionGet",
        "CosmosDBSqlRoleDefinitionList",
        "CosmosDBSqlRoleAssignmentCreateUpdate",
        "CosmosDBSqlRoleAssignmentGet",
        "CosmosDBSqlRoleAssignmentList",
        "CosmosDBSqlRoleAssignmentDelete",
        "CosmosDBSqlRoleDefinitionDelete",
    ];
    let mut files: Vec<String> = std::fs::read_dir(&examples)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort_by_key(|f| {
        order
            .iter()
            .position(|o| f.trim_end_matches(".json") == *o)
            .unwrap_or(usize::MAX)
    });
    let mut replayed = 0;
    for file in &files {
        let example = replay.load(&examples.join(file));
        let parameters = &example["parameters"];
        let version = parameters["api-version"].as_str().unwrap();
        let (method, path, body_name) = operation(file, parameters);
        if file.starts_with("Identity") || file.starts_with("Federated") {
            // The identity the examples address must exist first, as it would in Azure.
            let identity = path
                .split("/federatedIdentityCredentials")
                .next()
                .unwrap()
                .to_string();
            let (status, _, _) = replay
                .send(
                    reqwest::Method::PUT,
                    &identity,
                    version,
                    Some(&json!({"location": "eastus"})),
                )
                .await;
            assert!(
                status == 200 || status == 201,
                "creating the identity: {status}"
            );
        }
        let body = body_name.map(|name| &parameters[name]);
        let (status, headers, mut actual) = replay.send(method.clone(), &path, version, body).await;
        let responses = example["responses"].as_object().unwrap();
        assert!(
            responses.contains_key(&status.to_string()),
            "{file}: {status} is not among the example's responses {:?}: {actual}",
            responses.keys().collect::<Vec<_>>()
        );
        if status == 202 {
            replay.settle(&headers).await;
            // After the operation a PUT's resource reads as the example's 200 body.
            if method == reqwest::Method::PUT {
                actual = replay
                    .send(reqwest::Method::GET, &path, version, None)
                    .await
                    .2;
            }
        }
        let expected = &responses
            .get("200")
            .or_else(|| responses.get("201"))
            .unwrap()["body"];
        if !expected.is_null() && method != reqwest::Method::DELETE {
            same_shape(expected, &actual, "body")
                .unwrap_or_else(|e| panic!("{file}: {e}\nactual: {actual}"));
            for key in ["type", "name"] {
                if expected[key].is_string() && !file.starts_with("Identity") {
                    assert_eq!(actual[key], expected[key], "{file}: {key}");
                }
            }
        }
        replayed += 1;
    }
    assert_eq!(replayed, files.len());
    assert!(replayed >= 11, "every example was replayed: {files:?}");
}
