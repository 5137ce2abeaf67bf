//! The README's main command: the sandbox installs the operator from its chart, runs it as the
//! chart's ServiceAccount under the chart's RBAC, and brings every example grant to Ready
//! within a minute (the PostgreSQL one too, and psql signs in with its token Secret; the Azure
//! SQL one, and mssql-python signs in with its token Secret); `sandbox identity create` lets a user's own grant go Ready too; an operator
//! whose RBAC is short fails there as it would in a cluster.

use std::path::PathBuf;
use std::time::Duration;

use dbgrant::api::DatabaseAccessGrant;
use dbgrant_harness::operator::OperatorOptions;
use dbgrant_harness::sandbox::{
    Install, NAMESPACE, SERVICE_ACCOUNT, Sandbox, SandboxOptions, SandboxPostgres, SandboxSql,
    default_examples_dir, deploy_manifest, is_ready,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::Api;
use serde_json::json;

/// A state directory of its own, removed when the test ends.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> Self {
        Self(
            std::env::temp_dir().join(format!("dbgrant-sandbox-{}", uuid::Uuid::new_v4().simple())),
        )
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(state_dir: &StateDir, install: Install) -> Sandbox {
    let options = SandboxOptions {
        state_dir: state_dir.0.clone(),
        examples_dir: default_examples_dir(),
        operator: OperatorOptions::default(),
        install,
    };
    tokio::time::timeout(Duration::from_secs(30), Sandbox::start(options))
        .await
        .expect("starts in time")
        .expect("starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_grant_becomes_ready_within_a_minute() {
    let state_dir = StateDir::new();
    let sandbox = start(&state_dir, Install::Auto).await;
    eprintln!("installed: {}", sandbox.installed);
    let grants = sandbox
        .wait_until_ready(Duration::from_secs(60), |_, _| {})
        .await
        .expect("every grant Ready");

    let examples = std::fs::read_dir(default_examples_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("kind: DatabaseAccessGrant"))
        })
        .count();
    let postgres_grants = grants
        .values()
        .filter(|g| g.spec.target == "postgres-demo")
        .count();
    if sandbox.postgres.is_some() {
        assert_eq!(grants.len(), examples, "one grant per example");
        assert_eq!(postgres_grants, 1, "the PostgreSQL example is among them");
    } else {
        // Without PostgreSQL the sandbox says so and serves the Cosmos DB examples.
        dbgrant_sim::prerequisite_missing(&format!(
            "the sandbox's PostgreSQL example: {}",
            sandbox.postgres_note.clone().unwrap_or_default()
        ));
        assert_eq!(grants.len(), examples - 1, "every Cosmos DB example");
        assert_eq!(postgres_grants, 0);
    }
    assert!(grants.values().all(is_ready));
    // The SQL example is served by the T-SQL stand-in whatever else is installed.
    let sql = sandbox
        .sql
        .as_ref()
        .expect("the sandbox serves its SQL target");
    assert_eq!(sql.target, "sql-demo");
    assert_eq!(
        grants
            .values()
            .filter(|g| g.spec.target == "sql-demo")
            .count(),
        1,
        "the SQL example is among them"
    );
    // The operator ran as the chart's pod: its ServiceAccount, under the chart's ClusterRole,
    // with Azure through workload identity (no client secret anywhere in its settings).
    assert_eq!(sandbox.pod.namespace, NAMESPACE);
    assert_eq!(sandbox.pod.service_account, SERVICE_ACCOUNT);
    assert!(
        sandbox.pod.name.starts_with("dbgrant-"),
        "{}",
        sandbox.pod.name
    );
    assert!(
        sandbox.pod.args.leader_election,
        "the chart's leader election"
    );
    assert!(sandbox.pod.env.contains_key("AZURE_FEDERATED_TOKEN_FILE"));
    assert!(
        !format!("{:?}", sandbox.pod.args).contains("secret: Some"),
        "{:?}",
        sandbox.pod.args
    );
    Api::<ClusterRole>::all(sandbox.client.clone())
        .get("dbgrant")
        .await
        .expect("the chart's ClusterRole");
    // What the sandbox says it wrote is there and usable.
    assert!(
        std::fs::read_to_string(&sandbox.kubeconfig)
            .unwrap()
            .contains("certificate-authority-data")
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sandbox.azure_state).unwrap()).unwrap();
    assert!(
        state["caPem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    // Each Cosmos DB example's assignment exists in Azure with the scope its grant reports.
    let cosmos: Vec<_> = grants
        .values()
        .filter(|g| g.spec.target == "cosmos-demo")
        .collect();
    let account = cosmos
        .first()
        .unwrap()
        .status
        .as_ref()
        .unwrap()
        .scope
        .clone()
        .unwrap();
    let account = account.split("/dbs/").next().unwrap().to_string();
    let assignments = sandbox.azure.role_assignments(&account);
    for grant in &cosmos {
        let scope = grant.status.as_ref().unwrap().scope.clone().unwrap();
        assert!(
            assignments.iter().any(|a| a.scope == scope),
            "no assignment at {scope}: {assignments:?}"
        );
    }
    if let Some(pg) = &sandbox.postgres {
        readme_psql_connects_as_the_workload(&sandbox, pg).await;
    }
    readme_mssql_python_connects_as_the_workload(&sandbox, sql).await;
    sandbox.stop().await.unwrap();
}

/// A key of a token Secret of the shop namespace, once written (Ready does not wait for it).
async fn secret_value(sandbox: &Sandbox, secret: &str, key: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(sandbox.client.clone(), "shop");
    for _ in 0..100 {
        if let Some(found) = secrets.get_opt(secret).await.unwrap()
            && let Some(value) = found.data.as_ref().and_then(|d| d.get(key))
        {
            return String::from_utf8(value.0.clone()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Secret {secret} has no {key} key");
}

/// The README's Azure SQL snippet, word for word: Microsoft's mssql-python signs in with the
/// token Secret's `token` (an Entra access token; no password) over TDS 8 strict and asks who
/// it is there. The stand-in answers only the statements dbgrant sends, so the snippet asks
/// with the operator's rights check (a plain batch; the driver sends parameterised statements
/// with sp_prepexec, which the stand-in does not take).
const README_MSSQL_SNIPPET: &str = r#"
import os, struct, mssql_python

token = os.environ["SQL_TOKEN"].encode("utf-16-le")
connection = mssql_python.connect(
    f"Server=tcp:localhost,{os.environ.get('SQL_PORT', '11433')};Database=shop;"
    "Encrypt=strict;HostNameInCertificate=localhost",
    attrs_before={1256: struct.pack("<I", len(token)) + token},  # SQL_COPT_SS_ACCESS_TOKEN
    autocommit=True,
)
cursor = connection.cursor()
cursor.execute(
    "SET NOCOUNT ON;\nSELECT CONVERT(int, ISNULL(IS_ROLEMEMBER(N'db_owner'), 0)) AS is_owner, "
    "CONVERT(int, ISNULL(HAS_PERMS_BY_NAME(DB_NAME(), N'DATABASE', N'ALTER ANY USER'), 0)) AS alter_any_user, "
    "CONVERT(nvarchar(256), SUSER_SNAME()) AS login_name, CONVERT(nvarchar(256), DB_NAME()) AS database_name;"
)
print(*cursor.fetchone())
"#;

/// The README's Azure SQL walkthrough, with Microsoft's driver (mssql-python, from
/// `DBGRANT_PYTHON`; said and skipped without it, failed with `CI=true`).
async fn readme_mssql_python_connects_as_the_workload(sandbox: &Sandbox, sql: &SandboxSql) {
    let python = std::env::var("DBGRANT_PYTHON").unwrap_or_else(|_| "python3".into());
    let usable = std::process::Command::new(&python)
        .args([
            "-c",
            "import ctypes, mssql_python; ctypes.CDLL('libltdl.so.7')",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        dbgrant_sim::prerequisite_missing(&format!(
            "the sandbox's mssql-python walkthrough: {python} cannot import mssql_python (scripts/test installs it into its venv)"
        ));
        return;
    }
    let token = secret_value(sandbox, "orders-sql-token", "token").await;
    let scope = secret_value(sandbox, "orders-sql-token", "scope").await;
    assert_eq!(scope, "https://database.windows.net/.default");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python)
            .args(["-c", README_MSSQL_SNIPPET])
            .env("SQL_TOKEN", &token)
            .env("SQL_PORT", sql.server.port.to_string())
            .env("SSL_CERT_FILE", &sql.ca_file)
            .output(),
    )
    .await
    .expect("the driver answers in time")
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Signed in as the workload's own user (named after its client id), not db_owner.
    let grant = Api::<DatabaseAccessGrant>::namespaced(sandbox.client.clone(), "shop")
        .get("orders-sql-reader")
        .await
        .unwrap();
    let client_id = grant.status.unwrap().client_id.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("0 0 {client_id} shop")
    );
    assert!(
        sql.server
            .sign_ins()
            .iter()
            .any(|s| s.identity.as_deref() == Some(client_id.as_str()) && s.error.is_none()),
        "{:?}",
        sql.server.sign_ins()
    );
}

/// The README's PostgreSQL walkthrough: the real `psql`, with the token Secret's `password` as
/// PGPASSWORD, signs in through the front as the workload's login role, reads and cannot write.
async fn readme_psql_connects_as_the_workload(sandbox: &Sandbox, pg: &SandboxPostgres) {
    let grant = Api::<DatabaseAccessGrant>::namespaced(sandbox.client.clone(), "shop")
        .get("orders-pg-reader")
        .await
        .unwrap();
    let user = grant.status.unwrap().principal_id.unwrap();
    // The Secret is written once the token is; Ready does not wait for it.
    let secrets: Api<Secret> = Api::namespaced(sandbox.client.clone(), "shop");
    let mut password = None;
    for _ in 0..100 {
        if let Some(secret) = secrets.get_opt("orders-pg-token").await.unwrap()
            && let Some(value) = secret.data.as_ref().and_then(|d| d.get("password"))
        {
            password = Some(String::from_utf8(value.0.clone()).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let password = password.expect("the token Secret has a password key");
    let psql = |sql: &str| {
        std::process::Command::new("psql")
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(format!(
                "host=localhost port={} dbname={} user={user} sslmode=verify-full sslrootcert={}",
                pg.front.port,
                pg.database,
                pg.ca_file.display()
            ))
            .env("PGPASSWORD", &password)
            .output()
            .expect("psql runs")
    };
    let read =
        psql("SELECT current_user || ' ' || count(*) FROM orders.items GROUP BY current_user");
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        format!("{user} 2")
    );
    let write = psql("INSERT INTO orders.items VALUES (3, 'cortado')");
    assert!(!write.status.success(), "a reader cannot insert");
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("permission denied for table items"),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
}

/// The README's "try your own grant": `sandbox identity create` (the real binary, against the
/// running sandbox's files) prints a client id; a ServiceAccount annotated with it gets a grant
/// Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_create_lets_your_own_grant_become_ready() {
    let state_dir = StateDir::new();
    let sandbox = start(&state_dir, Install::Auto).await;
    sandbox
        .wait_until_ready(Duration::from_secs(60), |_, _| {})
        .await
        .expect("the examples Ready");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["--state-dir"])
        .arg(&state_dir.0)
        .args([
            "identity",
            "create",
            "my-app",
            "--service-account",
            "shop/my-app",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("system:serviceaccount:shop:my-app"),
        "{stdout}"
    );
    let client_id = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("client id "))
        .unwrap_or_else(|| panic!("no client id in {stdout}"))
        .to_string();
    assert!(
        stdout.contains(&format!("azure.workload.identity/client-id={client_id}")),
        "{stdout}"
    );

    for object in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "my-app", "namespace": "shop",
                            "annotations": {"azure.workload.identity/client-id": client_id}}}),
        json!({"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant",
               "metadata": {"name": "my-app-reader", "namespace": "shop"},
               "spec": {"serviceAccountName": "my-app", "target": "cosmos-demo", "role": "reader"}}),
    ] {
        dbgrant_sim::apply::apply(&sandbox.client, &object, "default")
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let grants = sandbox.grants().await.unwrap();
        let grant = &grants["shop/my-app-reader"];
        if is_ready(grant) {
            let principal = grant.status.as_ref().unwrap().principal_id.clone();
            assert!(principal.is_some_and(|p| !p.is_empty()));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "your grant is not Ready: {}",
            dbgrant_harness::sandbox::summary(grant)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sandbox.stop().await.unwrap();
}

/// Installed with a ClusterRole missing `create` on `serviceaccounts/token`, the operator runs
/// but cannot prove workloads' identities (kube-sim refuses its TokenRequests, as a cluster
/// would): no example gets Ready. Granting the missing right, as an admin would with kubectl,
/// lets them go Ready: the RBAC was the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_with_short_rbac_fails_as_in_a_cluster() {
    let state_dir = StateDir::new();
    let full = std::fs::read_to_string(deploy_manifest()).unwrap();
    let rule = "  - apiGroups: [\"\"]\n    resources: [\"serviceaccounts/token\"]\n    verbs: [\"create\"]\n";
    assert!(full.contains(rule), "deploy/dbgrant.yaml grants {rule}");
    std::fs::create_dir_all(&state_dir.0).unwrap();
    let short = state_dir.0.join("dbgrant-short.yaml");
    std::fs::write(&short, full.replace(rule, "")).unwrap();
    let sandbox = start(&state_dir, Install::Manifest { path: short }).await;
    let error = sandbox
        .wait_until_ready(Duration::from_secs(15), |_, _| {})
        .await
        .expect_err("not Ready without the TokenRequest right");
    let message = format!("{error:#}");
    for grant in ["orders-reader", "orders-writer", "orders-metadata"] {
        assert!(message.contains(&format!("shop/{grant}")), "{message}");
    }

    for object in [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "dbgrant-token-requests"},
               "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "dbgrant-token-requests"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "dbgrant-token-requests"},
               "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]}),
    ] {
        dbgrant_sim::apply::apply(&sandbox.client, &object, "default")
            .await
            .unwrap();
    }
    sandbox
        .wait_until_ready(Duration::from_secs(60), |_, _| {})
        .await
        .expect("Ready once the right is granted");
    sandbox.stop().await.unwrap();
}
