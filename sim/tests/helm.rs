//! Real Helm against the Kubernetes simulator: helm-sdkpy wraps Helm's own Go library, so the
//! requests are exactly Helm's (protobuf release Secrets, streaming-list watches for `--wait`,
//! CRDs from `crds/`). A fixture chart with a CRD, a Deployment, a ServiceAccount and RBAC is
//! installed, listed, upgraded and uninstalled.
//!
//! The Python with helm-sdkpy comes from `DBGRANT_PYTHON` (scripts/test sets it up); without it
//! the test says so and skips, so a clone without Python still passes the rest (with `CI=true`
//! it fails instead).

use std::path::{Path, PathBuf};
use std::time::Duration;

use dbgrant_sim::kube::{KubeSim, KubeSimConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use serde_json::Value;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(120);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/helm")
}

/// The Python that has helm-sdkpy, or `None` (with a message) when there is none.
fn python() -> Option<String> {
    let (python, required) = match std::env::var("DBGRANT_PYTHON") {
        Ok(python) => (python, true),
        Err(_) => ("python3".to_string(), false),
    };
    let ok = std::process::Command::new(&python)
        .args(["-c", "import helm_sdkpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    match (ok, required) {
        (true, _) => Some(python),
        (false, true) => panic!("DBGRANT_PYTHON={python} cannot import helm_sdkpy"),
        (false, false) => {
            dbgrant_sim::prerequisite_missing(
                "the Helm tests need helm-sdkpy: no DBGRANT_PYTHON and python3 has no helm_sdkpy \
                 (scripts/test installs it)",
            );
            None
        }
    }
}

struct Helm {
    python: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Drop for Helm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Helm {
    /// A simulator of its own and Helm pointed at it.
    async fn start(python: String) -> (KubeSim, kube::Client, Self) {
        let sim = KubeSim::start(KubeSimConfig::default()).await.unwrap();
        let client = sim.client().await.unwrap();
        let dir =
            std::env::temp_dir().join(format!("dbgrant-helm-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, sim.kubeconfig_yaml()).unwrap();
        let helm = Self {
            python,
            kubeconfig,
            dir,
        };
        (sim, client, helm)
    }

    /// Run one Helm action; its JSON result, or a panic with Helm's error.
    async fn run(&self, args: &[&str]) -> Value {
        let mut command = tokio::process::Command::new(&self.python);
        command
            .arg(fixtures().join("helm.py"))
            .arg(&self.kubeconfig)
            .arg("shop")
            .args(args)
            .env_remove("KUBECONFIG")
            // Helm keeps caches and its registry config under these.
            .env("HELM_CACHE_HOME", self.dir.join("cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("config"))
            .env("HELM_DATA_HOME", self.dir.join("data"))
            .kill_on_drop(true);
        let output = timeout(LIMIT, command.output())
            .await
            .expect("helm timed out")
            .expect("python runs");
        assert!(
            output.status.success(),
            "helm {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("helm.py prints JSON")
    }
}

#[tokio::test]
async fn helm_installs_lists_upgrades_and_uninstalls_a_chart() {
    let Some(python) = python() else { return };
    let (_sim, client, helm) = Helm::start(python).await;
    let chart = fixtures().join("widgets");
    let chart = chart.to_str().unwrap();

    // Install (into a namespace Helm creates), waiting for the Deployment's rollout.
    let installed = helm
        .run(&["install", "demo", chart, r#"{"replicas": 2}"#])
        .await;
    assert_eq!(installed["info"]["status"], "deployed", "{installed}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("widgets.test.dbgrant.io").await.unwrap();
    assert!(
        crd.status
            .unwrap()
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let deployment = deployments.get("demo").await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));
    Api::<ServiceAccount>::namespaced(client.clone(), "shop")
        .get("demo")
        .await
        .unwrap();
    Api::<ClusterRole>::all(client.clone())
        .get("demo-widgets")
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), "shop")
        .get("demo-leases")
        .await
        .unwrap();
    // Helm's release record: a Secret it wrote as protobuf, readable as JSON.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shop");
    let release = secrets.get("sh.helm.release.v1.demo.v1").await.unwrap();
    assert_eq!(release.type_.as_deref(), Some("helm.sh/release.v1"));
    let labels = release.metadata.labels.unwrap();
    assert_eq!(labels["owner"], "helm");
    assert!(release.data.unwrap().contains_key("release"));

    let listed = helm.run(&["list"]).await;
    let releases = listed.as_array().unwrap();
    assert_eq!(releases.len(), 1, "{listed}");
    assert_eq!(releases[0]["name"], "demo");
    assert_eq!(releases[0]["info"]["status"], "deployed");

    // Upgrade with new values: the objects change and the first revision is superseded.
    let upgraded = helm
        .run(&[
            "upgrade",
            "demo",
            chart,
            r#"{"replicas": 3, "logLevel": "debug"}"#,
        ])
        .await;
    assert_eq!(upgraded["info"]["status"], "deployed", "{upgraded}");
    assert_eq!(upgraded["version"], 2, "{upgraded}");
    let deployment = deployments.get("demo").await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(3));
    let config = Api::<ConfigMap>::namespaced(client.clone(), "shop")
        .get("demo-config")
        .await
        .unwrap();
    assert_eq!(config.data.unwrap()["logLevel"], "debug");
    let history = helm.run(&["history", "demo"]).await;
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["info"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["superseded", "deployed"], "{history}");

    // Uninstall removes the release's objects and records; CRDs stay, as Helm keeps them.
    let uninstalled = helm.run(&["uninstall", "demo"]).await;
    assert_eq!(
        uninstalled["release"]["info"]["status"], "uninstalled",
        "{uninstalled}"
    );
    assert!(deployments.get_opt("demo").await.unwrap().is_none());
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt("demo-widgets")
            .await
            .unwrap()
            .is_none()
    );
    let left = secrets
        .list(&ListParams::default().labels("owner=helm"))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "release records left behind");
    assert!(
        crds.get_opt("widgets.test.dbgrant.io")
            .await
            .unwrap()
            .is_some()
    );
    // helm-sdkpy prints no releases as null.
    let listed = helm.run(&["list"]).await;
    assert!(
        listed.is_null() || listed.as_array().is_some_and(Vec::is_empty),
        "{listed}"
    );
}

#[tokio::test]
async fn helm_installs_and_upgrades_with_server_side_apply() {
    let Some(python) = python() else { return };
    let (_sim, client, helm) = Helm::start(python).await;
    let chart = fixtures().join("widgets");
    let chart = chart.to_str().unwrap();

    let installed = helm
        .run(&["install-ssa", "demo", chart, r#"{"replicas": 2}"#])
        .await;
    assert_eq!(installed["info"]["status"], "deployed", "{installed}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let deployment = deployments.get("demo").await.unwrap();
    // Applied, not created: Helm's field manager owns the fields it sent.
    let applied = deployment
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.operation.as_deref() == Some("Apply"))
        .expect("an Apply entry in managedFields");
    assert!(
        applied
            .fields_v1
            .map(|f| f.0.to_string())
            .unwrap_or_default()
            .contains("f:replicas")
    );

    // The upgrade applies again (the same method the release was installed with).
    let upgraded = helm
        .run(&["upgrade", "demo", chart, r#"{"replicas": 3}"#])
        .await;
    assert_eq!(upgraded["version"], 2, "{upgraded}");
    let deployment = deployments.get("demo").await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(3));

    helm.run(&["uninstall", "demo"]).await;
    assert!(deployments.get_opt("demo").await.unwrap().is_none());
}
