//! Behaviour of the Azure client against a scripted HTTPS server: retries and Retry-After,
//! long-running operations, error bodies, the Entra exchange and its AADSTS reasons, the
//! data-plane probe, TLS trust, and that no token ever leaks into errors or Debug output.

mod azure_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use azure_core::credentials::Secret;
use azure_server::{
    ARM_TOKEN, Answer, CLIENT_SECRET, OPERATOR_CLIENT_ID, TENANT, TestAzure, jwt, within,
};
use dbgrant::api::Reason;
use dbgrant::azure::{AzureCosmos, OperatorCredential};
use dbgrant::backend::cosmos::{CosmosAccess, RoleAssignment, Scope};
use dbgrant::backend::{IdentityExchange, TokenScope};
use dbgrant::telemetry::Metrics;
use dbgrant_sim::tls::TlsMaterial;
use serde_json::json;

const ACCOUNT: &str = "/subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/demo/providers/Microsoft.DocumentDB/databaseAccounts/demo";
const GUID: &str = "0d5b1a77-6c1f-5b0e-9a53-2f0a1c9e8d11";
const SA_TOKEN: &str = "sa-assertion-7c6b5a4f3e2d1c0b";

fn assignment() -> RoleAssignment {
    RoleAssignment {
        guid: GUID.into(),
        role_definition_id: format!(
            "{ACCOUNT}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001"
        ),
        scope: format!("{ACCOUNT}/dbs/orders"),
        principal_id: "5e1f0c3a-8a4b-4f7d-9d2e-0b6a7c8d9e10".into(),
    }
}

fn empty_list() -> Answer {
    Answer::json(200, json!({"value": []}))
}

/// A handler answering from `answers` in order (the last one repeats).
fn sequence(answers: Vec<Answer>) -> impl Fn(&azure_server::Seen) -> Answer + Send + Sync {
    let next = AtomicUsize::new(0);
    move |_| {
        let i = next.fetch_add(1, Ordering::SeqCst);
        answers[i.min(answers.len() - 1)].clone()
    }
}

#[tokio::test]
async fn a_429_is_retried_after_the_time_azure_asked_for() {
    let server = TestAzure::start(sequence(vec![
        Answer::json(
            429,
            json!({"error": {"code": "TooManyRequests", "message": "slow down"}}),
        )
        .with_header("retry-after", "1"),
        empty_list(),
    ]))
    .await;
    let client = server.client().await;
    let started = Instant::now();
    let listed = within(client.list_role_assignments(ACCOUNT)).await;
    assert_eq!(listed, Ok(Vec::new()));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_long_retry_after_is_handed_back_instead_of_blocking() {
    let server = TestAzure::start(sequence(vec![
        Answer::json(
            429,
            json!({"error": {"code": "TooManyRequests", "message": "slow down"}}),
        )
        .with_header("retry-after", "120"),
    ]))
    .await;
    let client = server.client().await;
    let err = within(client.list_role_assignments(ACCOUNT))
        .await
        .expect_err("throttled");
    assert_eq!(err.reason, Reason::AzureThrottled);
    assert_eq!(err.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let server = TestAzure::start(sequence(vec![Answer::json(
        503,
        json!({"error": {"code": "ServiceUnavailable", "message": "try later"}}),
    )]))
    .await;
    let client = server.client().await;
    let err = within(client.list_role_assignments(ACCOUNT))
        .await
        .expect_err("unavailable");
    assert_eq!(err.reason, Reason::AzureUnavailable);
    assert!(
        err.message.contains("ServiceUnavailable"),
        "{}",
        err.message
    );
    assert_eq!(
        server.requests().len(),
        3,
        "max_attempts of the test timing"
    );
}

#[tokio::test]
async fn async_operation_polling_treats_dequeued_as_running_until_succeeded() {
    let statuses = Arc::new(AtomicUsize::new(0));
    let polls = statuses.clone();
    let server = TestAzure::start(move |seen| {
        if seen.method == "PUT" {
            let here = seen.header("host").unwrap_or_default();
            return Answer::json(202, json!({"status": "Dequeued"}))
                .with_header(
                    "azure-asyncoperation",
                    &format!("https://{here}/subscriptions/s/providers/Microsoft.DocumentDB/locations/westus/operationsStatus/op1?api-version=2025-10-15"),
                )
                .with_header("retry-after", "0");
        }
        let status = ["InProgress", "Dequeued", "Succeeded"][polls.fetch_add(1, Ordering::SeqCst).min(2)];
        Answer::json(200, json!({"status": status}))
    })
    .await;
    let client = server.client().await;
    within(client.put_role_assignment(ACCOUNT, &assignment()))
        .await
        .expect("operation succeeded");
    assert_eq!(statuses.load(Ordering::SeqCst), 3);
    let requests = server.requests();
    assert!(requests[1].path.ends_with("/operationsStatus/op1"));
}

#[tokio::test]
async fn a_failed_operation_reports_its_error() {
    let server = TestAzure::start(|seen| {
        if seen.method == "PUT" {
            let here = seen.header("host").unwrap_or_default();
            return Answer::empty(202).with_header(
                "azure-asyncoperation",
                &format!("https://{here}/operationsStatus/op2"),
            );
        }
        Answer::json(
            200,
            json!({"status": "Failed", "error": {"code": "BadRequest", "message": "The provided principal ID [5e1f] was not found in the AAD tenant(s) [t] which are associated with the customer's subscription."}}),
        )
    })
    .await;
    let client = server.client().await;
    let err = within(client.put_role_assignment(ACCOUNT, &assignment()))
        .await
        .expect_err("failed");
    assert_eq!(err.reason, Reason::PrincipalNotFound);
    assert!(
        err.message.contains("was not found in the AAD tenant"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn location_only_operations_poll_until_the_final_status() {
    let server = TestAzure::start({
        let polls = AtomicUsize::new(0);
        move |seen| {
            if seen.method == "DELETE" {
                let here = seen.header("host").unwrap_or_default();
                return Answer::empty(202).with_header(
                    "location",
                    &format!("https://{here}{}/operationResults/op3", seen.path),
                );
            }
            match polls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Answer::empty(202),
                _ => Answer::empty(204),
            }
        }
    })
    .await;
    let client = server.client().await;
    within(client.delete_role_assignment(ACCOUNT, GUID))
        .await
        .expect("deleted");
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(requests[3].path.ends_with("/operationResults/op3"));
}

#[tokio::test]
async fn an_operation_running_past_the_deadline_is_reported_not_awaited() {
    let server = TestAzure::start(|seen| {
        if seen.method == "PUT" {
            let here = seen.header("host").unwrap_or_default();
            return Answer::empty(202)
                .with_header("azure-asyncoperation", &format!("https://{here}/op4"));
        }
        Answer::json(200, json!({"status": "InProgress"}))
    })
    .await;
    let mut config = server.config();
    config.timing.lro_deadline = Duration::from_millis(200);
    let client = within(AzureCosmos::new(config, None))
        .await
        .expect("client");
    let err = within(client.put_role_assignment(ACCOUNT, &assignment()))
        .await
        .expect_err("deadline");
    assert_eq!(err.reason, Reason::AzureUnavailable);
    assert!(err.message.contains("still running"), "{}", err.message);
}

#[tokio::test]
async fn polling_urls_on_other_hosts_are_not_followed() {
    let server = TestAzure::start(|_| {
        Answer::empty(202).with_header(
            "azure-asyncoperation",
            "https://attacker.example/operationsStatus/op5",
        )
    })
    .await;
    let client = server.client().await;
    let err = within(client.delete_role_assignment(ACCOUNT, GUID))
        .await
        .expect_err("refused");
    assert!(err.message.contains("not followed"), "{}", err.message);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn lists_follow_next_link_across_pages() {
    let server = TestAzure::start(|seen| {
        let here = seen.header("host").unwrap_or_default();
        let item = |name: &str| {
            json!({"id": format!("{ACCOUNT}/sqlRoleAssignments/{name}"), "name": name,
                   "properties": {"roleDefinitionId": "r", "scope": "s", "principalId": "p"}})
        };
        if seen.query.contains_key("$skipToken") {
            Answer::json(200, json!({"value": [item("b")]}))
        } else {
            Answer::json(
                200,
                json!({"value": [item("a")], "nextLink": format!("https://{here}{}?api-version=2025-10-15&$skipToken=2", seen.path)}),
            )
        }
    })
    .await;
    let client = server.client().await;
    let all = within(client.list_role_assignments(ACCOUNT))
        .await
        .expect("listed");
    let guids: Vec<&str> = all.iter().map(|a| a.guid.as_str()).collect();
    assert_eq!(guids, ["a", "b"]);
}

#[tokio::test]
async fn wrapped_and_flat_error_bodies_map_to_reasons() {
    let server = TestAzure::start(|seen| match seen.method.as_str() {
        "PUT" => Answer::json(
            403,
            json!({"error": {"code": "AuthorizationFailed", "message": "The client 'x' does not have authorization to perform action 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/write'"}}),
        )
        .with_header("x-ms-request-id", "5d2c8e1a-0c1b-4f7e-9a55-3e8f2b7c9d10"),
        "DELETE" => Answer::json(
            412,
            json!({"code": "PreconditionFailed", "message": "There is already an operation in progress which requires exclusive lock on this service."}),
        ),
        _ => Answer::json(
            404,
            json!({"code": "ResourceNotFound", "message": "The Resource 'Microsoft.DocumentDB/databaseAccounts/demo' under resource group 'demo' was not found."}),
        ),
    })
    .await;
    let client = server.client().await;
    let forbidden = within(client.put_role_assignment(ACCOUNT, &assignment()))
        .await
        .expect_err("403");
    assert_eq!(forbidden.reason, Reason::AzureForbidden);
    assert!(
        forbidden.message.contains("AuthorizationFailed"),
        "{}",
        forbidden.message
    );
    // Typed: the status, Azure's code and its request id, which the message quotes too.
    assert_eq!(forbidden.http_status, Some(403));
    assert_eq!(forbidden.code.as_deref(), Some("AuthorizationFailed"));
    assert_eq!(
        forbidden.request_id.as_deref(),
        Some("5d2c8e1a-0c1b-4f7e-9a55-3e8f2b7c9d10")
    );
    assert!(forbidden.message.contains("request id 5d2c8e1a"));
    let busy = within(client.delete_role_assignment(ACCOUNT, GUID))
        .await
        .expect_err("412");
    assert_eq!(busy.reason, Reason::AccountBusy);
    let missing = within(client.account_endpoint(ACCOUNT))
        .await
        .expect_err("404");
    assert_eq!(missing.reason, Reason::TargetNotReady);
    assert!(
        missing.is_not_found(),
        "a gone account is told by its status"
    );
    assert!(
        missing.message.contains("ResourceNotFound"),
        "{}",
        missing.message
    );
    for error in [&forbidden, &busy, &missing] {
        assert!(!error.message.contains(ARM_TOKEN), "{error:?}");
    }
}

#[tokio::test]
async fn the_account_endpoint_is_its_document_endpoint() {
    let server = TestAzure::start(|_| {
        Answer::json(
            200,
            json!({"id": ACCOUNT, "name": "demo", "properties": {"documentEndpoint": "https://demo.documents.azure.com:443/", "provisioningState": "Succeeded"}}),
        )
    })
    .await;
    let client = server.client().await;
    let endpoint = within(client.account_endpoint(ACCOUNT)).await;
    assert_eq!(
        endpoint.as_deref(),
        Ok("https://demo.documents.azure.com:443/")
    );
    let seen = &server.requests()[0];
    assert_eq!(seen.path, ACCOUNT);
    assert_eq!(
        seen.query.get("api-version").map(String::as_str),
        Some("2025-10-15")
    );
}

#[tokio::test]
async fn the_exchange_sends_the_assertion_and_reads_oid_and_tid() {
    let access = jwt(json!({"oid": "obj-1", "tid": TENANT, "aud": "https://cosmos.azure.com"}));
    let token = access.clone();
    let server = TestAzure::start(move |_| {
        Answer::json(
            200,
            json!({"token_type": "Bearer", "expires_in": 3599, "access_token": token}),
        )
    })
    .await;
    let client = server.client().await;
    let before = k8s_openapi::jiff::Timestamp::now();
    let identity = within(client.exchange(
        TENANT,
        "client-1",
        &Secret::new(SA_TOKEN),
        &TokenScope::CosmosDb,
    ))
    .await
    .expect("resolved");
    assert_eq!(identity.principal_id, "obj-1");
    assert_eq!(identity.tenant_id, TENANT);
    assert_eq!(identity.access_token.secret(), access);
    let lifetime = identity.expires_at.duration_since(before).as_secs();
    assert!((3590..=3600).contains(&lifetime), "{lifetime}");
    let seen = &server.requests()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, format!("/{TENANT}/oauth2/v2.0/token"));
    let form = seen.form();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "client-1");
    assert_eq!(form["scope"], "https://cosmos.azure.com/.default");
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(form["client_assertion"], SA_TOKEN);
    assert!(
        !format!("{identity:?}").contains(&access),
        "Debug hides the token"
    );
}

#[tokio::test]
async fn each_aadsts_code_becomes_its_reason() {
    let cases = [
        (400, "invalid_request", 70021, Reason::IdentityNotFederated),
        (400, "invalid_request", 700213, Reason::IdentityNotFederated),
        (400, "unauthorized_client", 700016, Reason::UnknownClientId),
        (400, "invalid_request", 90002, Reason::UnknownClientId),
        (400, "invalid_request", 90061, Reason::AzureUnavailable),
        (400, "invalid_resource", 500011, Reason::AzureUnavailable),
        (401, "invalid_client", 700027, Reason::IdentityNotFederated),
    ];
    for (status, error, code, reason) in cases {
        let server = TestAzure::start(move |_| {
            Answer::json(
                status,
                json!({"error": error, "error_description": format!("AADSTS{code}: refused. Assertion Subject: 'system:serviceaccount:shop:api'.\r\nTrace ID: 1\r\nCorrelation ID: 2"), "error_codes": [code]}),
            )
        })
        .await;
        let client = server.client().await;
        let err = within(client.exchange(
            TENANT,
            "client-1",
            &Secret::new(SA_TOKEN),
            &TokenScope::CosmosDb,
        ))
        .await
        .expect_err("refused");
        assert_eq!(err.reason, reason, "AADSTS{code}");
        assert!(
            err.message.contains(&format!("AADSTS{code}")),
            "{}",
            err.message
        );
        assert!(!err.message.contains("Trace ID"), "{}", err.message);
        assert!(!err.message.contains(SA_TOKEN), "{}", err.message);
        assert!(!format!("{err:?}").contains(SA_TOKEN));
    }
}

#[tokio::test]
async fn the_probe_reads_the_scope_with_the_aad_header() {
    let server = TestAzure::start(|seen| match seen.path.as_str() {
        "/cosmos/demo/dbs/orders" => Answer::json(200, json!({"id": "orders"})),
        "/cosmos/demo/dbs/denied" => Answer::json(
            403,
            json!({"code": "Forbidden", "message": "Request is blocked because principal [p] does not have the required RBAC permissions"}),
        ),
        _ => Answer::json(404, json!({"code": "NotFound", "message": "Resource Not Found"})),
    })
    .await;
    let client = server.client().await;
    let endpoint = format!("{}cosmos/demo/", server.base);
    let token = Secret::new("data-plane-token.abc+def");
    let allowed = within(client.probe(&endpoint, &Scope::Database("orders".into()), &token)).await;
    assert_eq!(allowed, Ok(true));
    let denied = within(client.probe(&endpoint, &Scope::Database("denied".into()), &token)).await;
    assert_eq!(denied, Ok(false));
    let missing = within(client.probe(&endpoint, &Scope::Database("gone".into()), &token))
        .await
        .expect_err("404 is an error");
    assert!(
        !missing.message.contains("data-plane-token"),
        "{}",
        missing.message
    );
    let seen = &server.requests()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.header("authorization"),
        Some("type%3Daad%26ver%3D1.0%26sig%3Ddata-plane-token.abc%2Bdef")
    );
    assert_eq!(seen.header("x-ms-version"), Some("2018-12-31"));
    let date = seen.header("x-ms-date").expect("x-ms-date");
    assert!(date.ends_with(" GMT"), "{date}");
}

#[tokio::test]
async fn a_server_signed_by_an_unknown_ca_is_refused_clearly() {
    let server = TestAzure::start(|_| empty_list()).await;
    let mut config = server.config();
    // Trust some other CA, not the server's.
    let stranger = TlsMaterial::generate("stranger").expect("tls");
    config.extra_ca_pem = Some(stranger.ca_pem.clone());
    let client = within(AzureCosmos::new(config, None))
        .await
        .expect("client");
    let err = within(client.list_role_assignments(ACCOUNT))
        .await
        .expect_err("untrusted");
    assert_eq!(err.reason, Reason::AzureUnavailable);
    eprintln!("unknown CA: {}", err.message);
    let text = err.message.to_ascii_lowercase();
    assert!(
        text.contains("certificate") || text.contains("unknownissuer"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("DBGRANT_AZURE_EXTRA_CA_FILE"),
        "{}",
        err.message
    );
    assert!(server.all_requests().is_empty(), "no request got through");
}

#[tokio::test]
async fn the_operator_token_is_requested_with_its_secret_and_never_shown() {
    let server = TestAzure::start(|_| {
        Answer::json(
            403,
            json!({"error": {"code": "AuthorizationFailed", "message": "no"}}),
        )
    })
    .await;
    let metrics = Metrics::new();
    let client = within(AzureCosmos::new(server.config(), Some(metrics.clone())))
        .await
        .expect("client");
    let err = within(client.list_role_definitions(ACCOUNT))
        .await
        .expect_err("forbidden");
    let token_request = server
        .all_requests()
        .into_iter()
        .find(|s| s.path.ends_with("/oauth2/v2.0/token"))
        .expect("the operator asked for an ARM token");
    assert_eq!(token_request.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(
        token_request.form()["scope"],
        format!("{}.default", server.base)
    );
    for shown in [
        err.message.clone(),
        format!("{err:?}"),
        format!("{client:?}"),
        format!("{:?}", server.config()),
    ] {
        assert!(!shown.contains(ARM_TOKEN), "{shown}");
        assert!(!shown.contains(CLIENT_SECRET), "{shown}");
    }
    let exposition = metrics.encode();
    assert!(
        exposition.contains(
            r#"azure_requests_total{operation="role_definitions_list",result="client_error"}"#
        ),
        "{exposition}"
    );
    assert!(
        exposition.contains(r#"azure_requests_total{operation="operator_token",result="success"}"#),
        "{exposition}"
    );
}

#[tokio::test]
async fn in_a_cluster_the_operator_exchanges_its_projected_token() {
    let server = TestAzure::start(|_| empty_list()).await;
    let token_file = std::env::temp_dir().join(format!(
        "dbgrant-azure-test-{}-{}",
        std::process::id(),
        server.base.port().unwrap_or_default()
    ));
    std::fs::write(&token_file, "operator-projected-sa-token").expect("token file");
    let mut config = server.config();
    config.credential = OperatorCredential::WorkloadIdentity {
        client_id: OPERATOR_CLIENT_ID.to_string(),
        token_file: token_file.clone(),
    };
    let client = within(AzureCosmos::new(config, None))
        .await
        .expect("client");
    let listed = within(client.list_role_assignments(ACCOUNT)).await;
    let _ = std::fs::remove_file(&token_file);
    assert_eq!(listed, Ok(Vec::new()));
    let form = server.all_requests()[0].form();
    assert_eq!(form["client_assertion"], "operator-projected-sa-token");
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some(format!("Bearer {ARM_TOKEN}").as_str())
    );
}

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_or_secret_reaches_the_logs_even_at_trace_level() {
    let sink = Captured::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so this covers the client and the server tasks.
    let _guard = tracing::subscriber::set_default(subscriber);

    let access = jwt(json!({"oid": "obj-1", "tid": TENANT}));
    let token = access.clone();
    let server = TestAzure::start(move |seen| {
        if seen.path.ends_with("/oauth2/v2.0/token") {
            Answer::json(200, json!({"expires_in": 3599, "access_token": token}))
        } else if seen.path.starts_with("/cosmos/") {
            Answer::json(403, json!({"code": "Forbidden", "message": "blocked"}))
        } else {
            Answer::json(
                429,
                json!({"error": {"code": "TooManyRequests", "message": "x"}}),
            )
            .with_header("retry-after", "0")
        }
    })
    .await;
    let client = server.client().await;
    let identity = within(client.exchange(
        TENANT,
        "client-1",
        &Secret::new(SA_TOKEN),
        &TokenScope::CosmosDb,
    ))
    .await
    .expect("resolved");
    let endpoint = format!("{}cosmos/demo/", server.base);
    let probed = within(client.probe(&endpoint, &Scope::Account, &identity.access_token)).await;
    assert_eq!(probed, Ok(false));
    let throttled = within(client.list_role_assignments(ACCOUNT)).await;
    assert_eq!(throttled.map_err(|e| e.reason), Err(Reason::AzureThrottled));

    let logs = String::from_utf8_lossy(&sink.0.lock().expect("logs")).to_string();
    assert!(logs.contains("oauth2"), "debug logs were captured: {logs}");
    for secret in [SA_TOKEN, access.as_str(), ARM_TOKEN, CLIENT_SECRET] {
        assert!(!logs.contains(secret), "a secret reached the logs:\n{logs}");
    }
}

#[tokio::test]
async fn dbgrant_run_settings_build_a_working_client() {
    use clap::Parser as _;
    use dbgrant::settings::{Cli, Command};

    let server = TestAzure::start(|_| empty_list()).await;
    let ca_file = std::env::temp_dir().join(format!(
        "dbgrant-azure-test-ca-{}-{}.pem",
        std::process::id(),
        server.base.port().unwrap_or_default()
    ));
    std::fs::write(&ca_file, &server.tls.ca_pem).expect("CA file");
    let base = server.base.to_string();
    let cli = Cli::try_parse_from([
        "dbgrant",
        "run",
        "--azure-tenant-id",
        TENANT,
        "--azure-cloud",
        "Custom",
        "--azure-authority-host",
        &base,
        "--azure-arm-endpoint",
        &base,
        "--azure-extra-ca-file",
        &ca_file.to_string_lossy(),
        "--azure-client-id",
        OPERATOR_CLIENT_ID,
        "--azure-client-secret",
        CLIENT_SECRET,
    ])
    .expect("flags parse");
    let Command::Run(args) = cli.command else {
        panic!("expected run");
    };
    assert!(!format!("{args:?}").contains(CLIENT_SECRET), "{args:?}");
    let cosmos = within(dbgrant::azure_access(&args)).await;
    let _ = std::fs::remove_file(&ca_file);
    let cosmos = cosmos.expect("client built from the settings");
    let listed = within(cosmos.cosmos.list_role_assignments(ACCOUNT)).await;
    assert_eq!(listed, Ok(Vec::new()));
    assert_eq!(server.requests().len(), 1);
}
