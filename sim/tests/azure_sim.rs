//! The Azure simulator held to Azure's behaviour, through plain HTTPS calls: Entra ID token
//! exchange for ServiceAccount tokens of the Kubernetes simulator (and its AADSTS errors),
//! Cosmos DB RBAC writes as long-running operations under the per-account lock, validation,
//! authorization, and the data plane honouring assignments.

use std::time::Duration;

use dbgrant_sim::azure::{
    AzureFault, AzureOperation as Op, AzureSim, AzureSimConfig, ControlPlaneRole, Verb,
};
use dbgrant_sim::kube::{KubeSim, KubeSimConfig};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);
const SUB: &str = "6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10";
const API: &str = "2025-10-15";

struct World {
    kube: KubeSim,
    azure: AzureSim,
    http: reqwest::Client,
}

fn tls(ca_pem: &str) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth()
}

async fn world(config: AzureSimConfig) -> World {
    let kube = timeout(LIMIT, KubeSim::start(KubeSimConfig::default()))
        .await
        .unwrap()
        .unwrap();
    let azure = timeout(
        LIMIT,
        AzureSim::start(AzureSimConfig {
            oidc_trusted_ca_pems: vec![kube.ca_pem()],
            ..config
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls(&azure.ca_pem()))
        .build()
        .unwrap();
    World { kube, azure, http }
}

impl World {
    async fn sa_token(&self, namespace: &str, name: &str) -> String {
        let client = self.kube.client().await.unwrap();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
        let _ = timeout(LIMIT, namespaces.create(&PostParams::default(), &ns))
            .await
            .unwrap();
        let accounts: Api<ServiceAccount> = Api::namespaced(client, namespace);
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        let _ = timeout(LIMIT, accounts.create(&PostParams::default(), &sa))
            .await
            .unwrap();
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["api://AzureADTokenExchange".into()],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        timeout(
            LIMIT,
            accounts.create_token_request(name, &PostParams::default(), &request),
        )
        .await
        .unwrap()
        .unwrap()
        .status
        .unwrap()
        .token
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let url = format!(
            "{}{}/oauth2/v2.0/token",
            self.azure.authority_host(),
            self.azure.tenant_id()
        );
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        let response = timeout(LIMIT, request.send()).await.unwrap().unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn exchange(&self, client_id: &str, assertion: &str, scope: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("scope", scope),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .await
    }

    async fn admin_token(&self) -> String {
        let admin = self.azure.admin();
        let scope = format!("{}.default", self.azure.arm_endpoint());
        let (status, body) = self
            .token(&[
                ("grant_type", "client_credentials"),
                ("client_id", &admin.client_id),
                ("client_secret", &admin.client_secret),
                ("scope", &scope),
            ])
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn arm(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = if path.contains("api-version=") {
            format!(
                "{}{}",
                self.azure.arm_endpoint(),
                path.trim_start_matches('/')
            )
        } else {
            let separator = if path.contains('?') { '&' } else { '?' };
            format!(
                "{}{}{separator}api-version={API}",
                self.azure.arm_endpoint(),
                path.trim_start_matches('/')
            )
        };
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
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

    async fn wait_operation(&self, headers: &reqwest::header::HeaderMap, token: &str) -> Value {
        let url = headers["azure-asyncoperation"]
            .to_str()
            .unwrap()
            .to_string();
        for _ in 0..100 {
            let body: Value = timeout(LIMIT, self.http.get(&url).bearer_auth(token).send())
                .await
                .unwrap()
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["status"] != "Dequeued" && body["status"] != "InProgress" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the operation never finished");
    }

    async fn data_plane(&self, endpoint: &str, path: &str, token: &str) -> u16 {
        let auth: String = url::form_urlencoded::byte_serialize(
            format!("type=aad&ver=1.0&sig={token}").as_bytes(),
        )
        .collect();
        let response = self
            .http
            .get(format!("{endpoint}{path}"))
            .header("authorization", auth)
            .header("x-ms-date", "Tue, 24 Nov 2026 10:00:00 GMT")
            .header("x-ms-version", "2018-12-31")
            .send();
        timeout(LIMIT, response)
            .await
            .unwrap()
            .unwrap()
            .status()
            .as_u16()
    }
}

fn fast() -> AzureSimConfig {
    AzureSimConfig {
        lro_duration: Duration::from_millis(100),
        ..AzureSimConfig::default()
    }
}

#[tokio::test]
async fn a_federated_service_account_token_is_exchanged_for_the_identitys_token() {
    let w = world(fast()).await;
    let identity = w.azure.create_identity(SUB, "rg", "app");
    w.azure
        .add_federated_credential(
            &identity.resource_id,
            "fic",
            &w.kube.issuer(),
            "system:serviceaccount:shop:app",
            &["api://AzureADTokenExchange"],
        )
        .unwrap();
    let token = w.sa_token("shop", "app").await;
    let (status, body) = w
        .exchange(
            &identity.client_id,
            &token,
            "https://cosmos.azure.com/.default",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let claims =
        dbgrant_sim::jwt::unverified_claims(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["oid"], identity.principal_id.as_str());
    assert_eq!(claims["tid"], w.azure.tenant_id().as_str());
    assert_eq!(claims["aud"], "https://cosmos.azure.com");

    // Another ServiceAccount's token does not match the federated credential.
    let other = w.sa_token("shop", "thief").await;
    let (status, body) = w
        .exchange(
            &identity.client_id,
            &other,
            "https://cosmos.azure.com/.default",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error_codes"], json!([70021]), "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS70021: No matching federated identity record")
    );
    // An unknown client id.
    let (status, body) = w
        .exchange(
            "3f2a1c9e-0000-4e8a-9c2f-5d6b8a1e0f47",
            &token,
            "https://cosmos.azure.com/.default",
        )
        .await;
    assert_eq!(
        (status, body["error_codes"].clone()),
        (400, json!([700016]))
    );
    // A forged assertion (signed by a key the issuer does not publish).
    let forged = dbgrant_sim::jwt::SigningKey::generate()
        .unwrap()
        .sign(&dbgrant_sim::jwt::unverified_claims(&token).unwrap())
        .unwrap();
    let (status, body) = w
        .exchange(
            &identity.client_id,
            &forged,
            "https://cosmos.azure.com/.default",
        )
        .await;
    assert_eq!(
        (status, body["error_codes"].clone()),
        (400, json!([700027])),
        "{body}"
    );
    // Signed by the issuer but expired, or addressed to another audience.
    let mut claims = dbgrant_sim::jwt::unverified_claims(&token).unwrap();
    let now = claims["iat"].as_i64().unwrap();
    claims["iat"] = json!(now - 7200);
    claims["nbf"] = json!(now - 7200);
    claims["exp"] = json!(now - 3600);
    let expired = w.kube.sign_token(&claims).unwrap();
    let (status, body) = w
        .exchange(
            &identity.client_id,
            &expired,
            "https://cosmos.azure.com/.default",
        )
        .await;
    assert_eq!(
        (status, body["error_codes"].clone()),
        (400, json!([700024])),
        "{body}"
    );
    let mut claims = dbgrant_sim::jwt::unverified_claims(&token).unwrap();
    claims["aud"] = json!(["https://kubernetes.default.svc"]);
    let misaddressed = w.kube.sign_token(&claims).unwrap();
    let (status, body) = w
        .exchange(
            &identity.client_id,
            &misaddressed,
            "https://cosmos.azure.com/.default",
        )
        .await;
    assert_eq!(
        (status, body["error_codes"].clone()),
        (400, json!([70021])),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("Assertion Audience: 'https://kubernetes.default.svc'"),
        "{body}"
    );
    // Not a JWT at all.
    let (status, body) = w
        .exchange(
            &identity.client_id,
            "not-a-jwt",
            "https://cosmos.azure.com/.default",
        )
        .await;
    assert_eq!(
        (status, body["error_codes"].clone()),
        (400, json!([50027])),
        "{body}"
    );
    // An unknown resource.
    let (status, body) = w
        .exchange(
            &identity.client_id,
            &token,
            "https://nowhere.example/.default",
        )
        .await;
    assert_eq!(
        (status, body["error_codes"].clone()),
        (400, json!([500011]))
    );
    // An Entra outage.
    w.azure.faults().set_entra_outage(true);
    let (status, _) = w
        .exchange(
            &identity.client_id,
            &token,
            "https://cosmos.azure.com/.default",
        )
        .await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn role_assignments_are_long_running_writes_and_grant_data_plane_access() {
    let w = world(fast()).await;
    let account = w.azure.create_cosmos_account(SUB, "rg", "acct");
    let identity = w.azure.create_identity(SUB, "rg", "app");
    w.azure
        .add_federated_credential(
            &identity.resource_id,
            "fic",
            &w.kube.issuer(),
            "system:serviceaccount:shop:app",
            &["api://AzureADTokenExchange"],
        )
        .unwrap();
    let admin = w.admin_token().await;
    let (status, _, body) = w
        .arm(reqwest::Method::GET, &account.resource_id, &admin, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["properties"]["documentEndpoint"],
        account.document_endpoint.as_str()
    );

    let sa = w.sa_token("shop", "app").await;
    let (_, token) = w
        .exchange(
            &identity.client_id,
            &sa,
            "https://cosmos.azure.com/.default",
        )
        .await;
    let data_token = token["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        w.data_plane(&account.document_endpoint, "dbs/orders", &data_token)
            .await,
        403,
        "no assignment yet"
    );

    let guid = uuid::Uuid::new_v4().to_string();
    let assignment = json!({"properties": {"roleDefinitionId": format!("{}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001", account.resource_id), "scope": format!("{}/dbs/orders", account.resource_id), "principalId": identity.principal_id}});
    let path = format!("{}/sqlRoleAssignments/{guid}", account.resource_id);
    let (status, headers, _) = w
        .arm(
            reqwest::Method::PUT,
            &path,
            &admin,
            Some(assignment.clone()),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        w.arm(reqwest::Method::GET, &path, &admin, None).await.0,
        404,
        "not visible until the operation completes"
    );
    assert_eq!(
        w.wait_operation(&headers, &admin).await["status"],
        "Succeeded"
    );
    let (status, _, body) = w.arm(reqwest::Method::GET, &path, &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["properties"]["principalId"],
        identity.principal_id.as_str()
    );

    assert_eq!(
        w.data_plane(&account.document_endpoint, "dbs/orders", &data_token)
            .await,
        200
    );
    assert_eq!(
        w.data_plane(
            &account.document_endpoint,
            "dbs/orders/colls/items",
            &data_token
        )
        .await,
        200,
        "a database assignment covers its containers"
    );
    assert_eq!(
        w.data_plane(&account.document_endpoint, "dbs/other", &data_token)
            .await,
        403
    );
    assert_eq!(
        w.data_plane(&account.document_endpoint, "", &data_token)
            .await,
        403,
        "not the whole account"
    );

    // The principal of an existing assignment cannot change.
    let mut changed = assignment.clone();
    changed["properties"]["principalId"] =
        json!(w.azure.create_identity(SUB, "rg", "other").principal_id);
    let (status, _, body) = w
        .arm(reqwest::Method::PUT, &path, &admin, Some(changed))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Updating SQL Role Assignment Principal ID is not permitted")
    );

    // Delete is long-running too; deleting a missing one is 204.
    let (status, headers, _) = w.arm(reqwest::Method::DELETE, &path, &admin, None).await;
    assert_eq!(status, 202);
    assert_eq!(
        w.wait_operation(&headers, &admin).await["status"],
        "Succeeded"
    );
    assert_eq!(
        w.arm(reqwest::Method::DELETE, &path, &admin, None).await.0,
        204
    );
    assert_eq!(
        w.data_plane(&account.document_endpoint, "dbs/orders", &data_token)
            .await,
        403
    );
}

#[tokio::test]
async fn concurrent_rbac_writes_on_one_account_get_412_but_one() {
    let w = world(AzureSimConfig {
        lro_duration: Duration::from_millis(500),
        ..AzureSimConfig::default()
    })
    .await;
    let account = w.azure.create_cosmos_account(SUB, "rg", "acct");
    let identity = w.azure.create_identity(SUB, "rg", "app");
    let admin = w.admin_token().await;
    let writes = (0..5).map(|i| {
        let body = json!({"properties": {"roleDefinitionId": format!("{}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001", account.resource_id), "scope": format!("{}/dbs/db{i}", account.resource_id), "principalId": identity.principal_id}});
        let path = format!("{}/sqlRoleAssignments/{}", account.resource_id, uuid::Uuid::new_v4());
        let (w, admin) = (&w, &admin);
        async move { w.arm(reqwest::Method::PUT, &path, admin, Some(body)).await.0 }
    });
    let mut statuses = futures::future::join_all(writes).await;
    statuses.sort_unstable();
    assert_eq!(statuses, vec![202, 412, 412, 412, 412]);
}

#[tokio::test]
async fn bad_writes_get_azures_errors() {
    let w = world(fast()).await;
    let account = w.azure.create_cosmos_account(SUB, "rg", "acct");
    let admin = w.admin_token().await;
    let reader = format!(
        "{}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001",
        account.resource_id
    );
    let put = |principal: String, scope: String| json!({"properties": {"roleDefinitionId": reader, "scope": scope, "principalId": principal}});
    let path = format!(
        "{}/sqlRoleAssignments/{}",
        account.resource_id,
        uuid::Uuid::new_v4()
    );

    let (status, _, body) = w
        .arm(
            reqwest::Method::PUT,
            &path,
            &admin,
            Some(put(
                uuid::Uuid::new_v4().to_string(),
                account.resource_id.clone(),
            )),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("was not found in the AAD tenant"),
        "{body}"
    );

    let identity = w.azure.create_identity(SUB, "rg", "app");
    let (status, _, body) = w
        .arm(
            reqwest::Method::PUT,
            &path,
            &admin,
            Some(put(
                identity.principal_id.clone(),
                "/subscriptions/x/dbs/y".into(),
            )),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("scope"));

    let (status, _, _) = w
        .arm(
            reqwest::Method::PUT,
            &format!("{}/sqlRoleAssignments/not-a-guid", account.resource_id),
            &admin,
            Some(put(
                identity.principal_id.clone(),
                account.resource_id.clone(),
            )),
        )
        .await;
    assert_eq!(status, 400);

    // A caller without a control-plane role on the account is refused.
    let stranger = w.azure.create_service_principal("stranger");
    let scope = format!("{}.default", w.azure.arm_endpoint());
    let (_, body) = w
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", &stranger.client_id),
            ("client_secret", &stranger.client_secret),
            ("scope", &scope),
        ])
        .await;
    let stranger_token = body["access_token"].as_str().unwrap().to_string();
    let (status, _, body) = w
        .arm(
            reqwest::Method::PUT,
            &path,
            &stranger_token,
            Some(put(
                identity.principal_id.clone(),
                account.resource_id.clone(),
            )),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("AuthorizationFailed"))
    );
    w.azure.assign_control_plane_role(
        &stranger.principal_id,
        &account.resource_id,
        ControlPlaneRole::DocumentDbAccountContributor,
    );
    let (status, _, _) = w
        .arm(
            reqwest::Method::PUT,
            &path,
            &stranger_token,
            Some(put(
                identity.principal_id.clone(),
                account.resource_id.clone(),
            )),
        )
        .await;
    assert_eq!(status, 202);

    // No token, and an unsupported api-version.
    let response = timeout(
        LIMIT,
        w.http
            .get(format!(
                "{}{}?api-version={API}",
                w.azure.arm_endpoint(),
                account.resource_id.trim_start_matches('/')
            ))
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = timeout(
        LIMIT,
        w.http
            .get(format!(
                "{}{}?api-version=2019-01-01",
                w.azure.arm_endpoint(),
                account.resource_id.trim_start_matches('/')
            ))
            .bearer_auth(&admin)
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn throttling_and_failures_are_injected_and_counted() {
    let w = world(fast()).await;
    let account = w.azure.create_cosmos_account(SUB, "rg", "acct");
    let admin = w.admin_token().await;
    w.azure.faults().inject(AzureFault {
        operation: Some(Op::Accounts(Verb::Get).into()),
        status: Some(429),
        retry_after: Some(3),
        times: Some(1),
        ..AzureFault::default()
    });
    let (status, headers, body) = w
        .arm(reqwest::Method::GET, &account.resource_id, &admin, None)
        .await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "3");
    assert!(headers.contains_key("x-ms-ratelimit-remaining-subscription-writes"));
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(
        w.arm(reqwest::Method::GET, &account.resource_id, &admin, None)
            .await
            .0,
        200
    );
    assert_eq!(w.azure.counters().calls(Op::Accounts(Verb::Get)), 2);
    assert_eq!(
        w.azure.counters().with_status(Op::Accounts(Verb::Get), 429),
        1
    );

    // A failing long-running operation ends Failed with an error and releases the lock.
    w.azure.faults().fail_next_lros(1);
    let identity = w.azure.create_identity(SUB, "rg", "app");
    let body = json!({"properties": {"roleDefinitionId": format!("{}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002", account.resource_id), "scope": account.resource_id, "principalId": identity.principal_id}});
    let path = format!(
        "{}/sqlRoleAssignments/{}",
        account.resource_id,
        uuid::Uuid::new_v4()
    );
    let (status, headers, _) = w
        .arm(reqwest::Method::PUT, &path, &admin, Some(body.clone()))
        .await;
    assert_eq!(status, 202);
    let outcome = w.wait_operation(&headers, &admin).await;
    assert_eq!(outcome["status"], "Failed");
    assert!(outcome["error"]["code"].is_string());
    assert_eq!(
        w.arm(reqwest::Method::PUT, &path, &admin, Some(body))
            .await
            .0,
        202,
        "the lock was released"
    );

    // A new principal stays unknown to RBAC while it replicates.
    w.azure
        .faults()
        .set_principal_replication_delay(Duration::from_millis(600));
    let late = w.azure.create_identity(SUB, "rg", "late");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = json!({"properties": {"roleDefinitionId": format!("{}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001", account.resource_id), "scope": account.resource_id, "principalId": late.principal_id}});
    let (status, _, error) = w
        .arm(
            reqwest::Method::PUT,
            &format!(
                "{}/sqlRoleAssignments/{}",
                account.resource_id,
                uuid::Uuid::new_v4()
            ),
            &admin,
            Some(body),
        )
        .await;
    assert_eq!(status, 400, "{error}");
}

#[tokio::test]
async fn limits_stuck_operations_latency_and_the_data_planes_headers() {
    let w = world(AzureSimConfig {
        lro_duration: Duration::ZERO,
        ..AzureSimConfig::default()
    })
    .await;
    let account = w.azure.create_cosmos_account(SUB, "rg", "acct");
    let admin = w.admin_token().await;

    // 100 custom role definitions per account.
    let definition = |i: usize| json!({"properties": {"roleName": format!("r{i}"), "type": "CustomRole", "assignableScopes": [account.resource_id], "permissions": [{"dataActions": ["Microsoft.DocumentDB/databaseAccounts/readMetadata"]}]}});
    for i in 0..100 {
        let (status, headers, _) = w
            .arm(
                reqwest::Method::PUT,
                &format!(
                    "{}/sqlRoleDefinitions/{}",
                    account.resource_id,
                    uuid::Uuid::new_v4()
                ),
                &admin,
                Some(definition(i)),
            )
            .await;
        assert_eq!(status, 202, "definition {i}");
        w.wait_operation(&headers, &admin).await;
    }
    let (status, _, body) = w
        .arm(
            reqwest::Method::PUT,
            &format!(
                "{}/sqlRoleDefinitions/{}",
                account.resource_id,
                uuid::Uuid::new_v4()
            ),
            &admin,
            Some(definition(100)),
        )
        .await;
    assert_eq!(status, 400, "the 101st definition: {body}");

    // 20 federated credentials per identity.
    let identity = w.azure.create_identity(SUB, "rg", "app");
    let fic = |i: usize| json!({"properties": {"issuer": "https://issuer.example", "subject": format!("system:serviceaccount:ns:sa{i}"), "audiences": ["api://AzureADTokenExchange"]}});
    let fic_path = |i: usize| {
        format!(
            "{}/federatedIdentityCredentials/f{i}?api-version=2024-11-30",
            identity.resource_id
        )
    };
    for i in 0..20 {
        assert_eq!(
            w.arm(reqwest::Method::PUT, &fic_path(i), &admin, Some(fic(i)))
                .await
                .0,
            201
        );
    }
    assert_eq!(
        w.arm(reqwest::Method::PUT, &fic_path(20), &admin, Some(fic(20)))
            .await
            .0,
        400
    );

    // An operation that never finishes keeps the account's lock: every later write gets 412.
    w.azure.faults().set_lro_stuck(true);
    let assignment = |db: &str| json!({"properties": {"roleDefinitionId": format!("{}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001", account.resource_id), "scope": format!("{}/dbs/{db}", account.resource_id), "principalId": identity.principal_id}});
    let (status, headers, _) = w
        .arm(
            reqwest::Method::PUT,
            &format!(
                "{}/sqlRoleAssignments/{}",
                account.resource_id,
                uuid::Uuid::new_v4()
            ),
            &admin,
            Some(assignment("a")),
        )
        .await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = headers["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_string();
    let poll: Value = w
        .http
        .get(&url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(poll["status"], "Dequeued", "still running");
    assert_eq!(
        w.arm(
            reqwest::Method::PUT,
            &format!(
                "{}/sqlRoleAssignments/{}",
                account.resource_id,
                uuid::Uuid::new_v4()
            ),
            &admin,
            Some(assignment("b"))
        )
        .await
        .0,
        412
    );

    // Latency is injected where asked.
    w.azure.faults().inject(AzureFault {
        operation: Some(Op::Accounts(Verb::Get).into()),
        latency: Some(Duration::from_millis(400)),
        times: Some(1),
        ..AzureFault::default()
    });
    let started = std::time::Instant::now();
    assert_eq!(
        w.arm(reqwest::Method::GET, &account.resource_id, &admin, None)
            .await
            .0,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(400));

    // The data plane wants x-ms-date and x-ms-version like Cosmos DB.
    let response = w
        .http
        .get(&account.document_endpoint)
        .header("authorization", "type=aad&ver=1.0&sig=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn arm_throttles_each_principal_with_token_buckets() {
    use dbgrant_sim::azure::throttle::{Bucket, Throttling};
    let w = world(AzureSimConfig {
        throttling: Throttling {
            writes: Bucket {
                size: 3,
                refill_per_second: 1.0,
            },
            ..Throttling::default()
        },
        ..fast()
    })
    .await;
    let admin = w.admin_token().await;
    let identity = format!(
        "subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app?api-version=2024-11-30"
    );
    let put = || {
        w.arm(
            reqwest::Method::PUT,
            &identity,
            &admin,
            Some(json!({"location": "westeurope"})),
        )
    };
    let remaining = |headers: &reqwest::header::HeaderMap, kind: &str| {
        headers[format!("x-ms-ratelimit-remaining-subscription-{kind}").as_str()]
            .to_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    let mut left = Vec::new();
    for _ in 0..3 {
        let (status, headers, body) = put().await;
        assert!(status == 200 || status == 201, "{status}: {body}");
        left.push(remaining(&headers, "writes"));
    }
    assert_eq!(left, [2, 1, 0], "the bucket counts down");
    let (status, headers, body) = put().await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "SubscriptionRequestsThrottled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Number of 'write' requests for subscription"),
        "{body}"
    );
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(remaining(&headers, "writes"), 0);
    // Reads have their own bucket.
    let (status, headers, _) = w.arm(reqwest::Method::GET, &identity, &admin, None).await;
    assert_eq!(status, 200);
    assert!(remaining(&headers, "reads") > 200);
    // After Retry-After, a token is back.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(put().await.0, 200);
    assert!(
        w.azure
            .counters()
            .with_status(Op::Identities(Verb::Put), 429)
            >= 1
    );
}

#[tokio::test]
async fn a_dropped_connection_reaches_the_client_as_a_transport_error() {
    let w = world(fast()).await;
    let account = w.azure.create_cosmos_account(SUB, "rg", "acct");
    let admin = w.admin_token().await;
    w.azure.faults().inject(AzureFault {
        operation: Some(Op::Accounts(Verb::Get).into()),
        drop_connection: true,
        times: Some(1),
        ..AzureFault::default()
    });
    let url = format!(
        "{}{}?api-version={API}",
        w.azure.arm_endpoint(),
        account.resource_id.trim_start_matches('/')
    );
    let error = timeout(LIMIT, w.http.get(&url).bearer_auth(&admin).send())
        .await
        .unwrap()
        .expect_err("no answer at all, not even an error status");
    assert!(error.status().is_none(), "{error:?}");
    assert!(error.is_request() || error.is_connect(), "{error:?}");
    // The fault hit once; the next call is answered.
    let (status, _, _) = w
        .arm(reqwest::Method::GET, &account.resource_id, &admin, None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_account_holds_at_most_2000_role_assignments() {
    use dbgrant_sim::azure::throttle::{Bucket, Throttling};
    let plenty = Bucket {
        size: 100_000,
        refill_per_second: 1000.0,
    };
    let w = world(AzureSimConfig {
        lro_duration: Duration::ZERO,
        throttling: Throttling {
            reads: plenty,
            writes: plenty,
            deletes: plenty,
        },
        ..AzureSimConfig::default()
    })
    .await;
    let account = w.azure.create_cosmos_account(SUB, "rg", "acct");
    let identity = w.azure.create_identity(SUB, "rg", "app");
    let admin = w.admin_token().await;
    let assign = |i: usize| {
        let body = json!({"properties": {
            "roleDefinitionId": format!("{}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001", account.resource_id),
            "scope": format!("{}/dbs/db{i}", account.resource_id),
            "principalId": identity.principal_id,
        }});
        let path = format!(
            "{}/sqlRoleAssignments/{}",
            account.resource_id,
            uuid::Uuid::new_v4()
        );
        let w = &w;
        let admin = &admin;
        async move { w.arm(reqwest::Method::PUT, &path, admin, Some(body)).await }
    };
    for i in 0..2000 {
        let (status, headers, body) = assign(i).await;
        assert_eq!(status, 202, "assignment {i}: {body}");
        assert_eq!(
            w.wait_operation(&headers, &admin).await["status"],
            "Succeeded"
        );
    }
    let (status, _, body) = assign(2000).await;
    assert_eq!(status, 400, "the 2,001st assignment: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit of 2000"),
        "{body}"
    );
    assert_eq!(w.azure.role_assignments(&account.resource_id).len(), 2000);
}
