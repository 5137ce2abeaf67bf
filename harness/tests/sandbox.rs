//! The README's main command: the sandbox brings every example grant to Ready within a minute.

use std::time::Duration;

use dbgrant_harness::operator::OperatorOptions;
use dbgrant_harness::sandbox::{Sandbox, SandboxOptions, default_examples_dir, is_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_grant_becomes_ready_within_a_minute() {
    let state_dir =
        std::env::temp_dir().join(format!("dbgrant-sandbox-{}", uuid::Uuid::new_v4().simple()));
    let options = SandboxOptions {
        state_dir: state_dir.clone(),
        examples_dir: default_examples_dir(),
        operator: OperatorOptions::default(),
    };
    let sandbox = tokio::time::timeout(Duration::from_secs(30), Sandbox::start(options))
        .await
        .expect("starts in time")
        .expect("starts");
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
    assert_eq!(grants.len(), examples, "one grant per example");
    assert!(grants.values().all(is_ready));
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
    // Each example's assignment exists in Azure with the scope its grant reports.
    let account = grants
        .values()
        .next()
        .unwrap()
        .status
        .as_ref()
        .unwrap()
        .scope
        .clone()
        .unwrap();
    let account = account.split("/dbs/").next().unwrap().to_string();
    let assignments = sandbox.azure.role_assignments(&account);
    for grant in grants.values() {
        let scope = grant.status.as_ref().unwrap().scope.clone().unwrap();
        assert!(
            assignments.iter().any(|a| a.scope == scope),
            "no assignment at {scope}: {assignments:?}"
        );
    }
    sandbox.operator.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(state_dir);
}
