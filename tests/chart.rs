//! The Helm chart (`charts/dbgrant`) and the plain manifests rendered from it (`deploy/`):
//! real Helm (helm-sdkpy, Helm's own Go library, driven by `tests/chart/helm.py`) lints,
//! renders, installs and upgrades it into the Kubernetes simulator; every rendered Deployment
//! must meet the restricted Pod Security Standard; the values schema must refuse wrong values.
//!
//! The Python with helm-sdkpy comes from `DBGRANT_PYTHON` (`scripts/test` sets it up). Without
//! it the Helm tests say so and skip, except on CI (`CI=true`), where a missing prerequisite
//! fails them.
//!
//! Regenerate `deploy/dbgrant.yaml` after changing the chart:
//! `DBGRANT_BLESS=1 cargo test --test chart deploy_manifests`.

use std::path::PathBuf;
use std::time::Duration;

use dbgrant_sim::kube::{KubeSim, KubeSimConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::Api;
use serde_json::{Value, json};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(150);
/// Release and namespace of the plain manifests in `deploy/`.
const DEPLOY_RELEASE: &str = "dbgrant";
const DEPLOY_NAMESPACE: &str = "dbgrant";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/dbgrant")
}

/// The Python that has helm-sdkpy; `None` (with a message) when there is none, which fails on
/// CI instead.
fn python() -> Option<String> {
    let (python, named) = match std::env::var("DBGRANT_PYTHON") {
        Ok(python) => (python, true),
        Err(_) => ("python3".to_string(), false),
    };
    let ok = std::process::Command::new(&python)
        .args(["-c", "import helm_sdkpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(!named, "DBGRANT_PYTHON={python} cannot import helm_sdkpy");
    dbgrant_sim::prerequisite_missing(
        "the chart's Helm test: no DBGRANT_PYTHON and python3 has no helm_sdkpy \
         (scripts/test installs it)",
    );
    None
}

/// Helm pointed at a simulator of its own.
struct Helm {
    python: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
    sim: KubeSim,
}

impl Drop for Helm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Helm {
    async fn start(python: String) -> Self {
        let sim = KubeSim::start(KubeSimConfig::default()).await.unwrap();
        let dir =
            std::env::temp_dir().join(format!("dbgrant-chart-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, sim.kubeconfig_yaml()).unwrap();
        Self {
            python,
            kubeconfig,
            dir,
            sim,
        }
    }

    /// Run one action of the driver in `namespace`: its JSON answer, or Helm's error text.
    async fn try_run(&self, namespace: &str, args: &[&str]) -> Result<Value, String> {
        let mut command = tokio::process::Command::new(&self.python);
        command
            .arg(repo().join("tests/chart/helm.py"))
            .arg(&self.kubeconfig)
            .arg(namespace)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HELM_CACHE_HOME", self.dir.join("cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("config"))
            .env("HELM_DATA_HOME", self.dir.join("data"))
            .kill_on_drop(true);
        let output = timeout(LIMIT, command.output())
            .await
            .expect("helm timed out")
            .expect("python runs");
        if output.status.success() {
            Ok(serde_json::from_slice(&output.stdout).expect("helm.py prints JSON"))
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    async fn run(&self, namespace: &str, args: &[&str]) -> Value {
        self.try_run(namespace, args)
            .await
            .unwrap_or_else(|error| panic!("helm {args:?} failed:\n{error}"))
    }

    async fn install(&self, release: &str, namespace: &str, values: &Value) -> Value {
        let chart = chart().display().to_string();
        let values = values.to_string();
        self.run(namespace, &["install", release, &chart, &values])
            .await
    }
}

/// The objects of a release's manifest.
fn manifest_objects(release: &Value) -> Vec<Value> {
    let manifest = release["manifest"]
        .as_str()
        .expect("the release has a manifest");
    yaml_documents(manifest)
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("valid YAML")
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

// --- the restricted Pod Security Standard -------------------------------------------------

/// Volume types the restricted profile allows.
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Sysctls the baseline profile (and so the restricted one) allows.
const SAFE_SYSCTLS: [&str; 5] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
];

/// Why `pod` fails the restricted Pod Security Standard (baseline included), plus our own
/// rule of a read-only root filesystem; empty when it passes.
fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut violations = Vec::new();
    let mut fail = |why: String| violations.push(why);
    for (field, on) in [
        ("hostNetwork", pod.host_network),
        ("hostPID", pod.host_pid),
        ("hostIPC", pod.host_ipc),
    ] {
        if on == Some(true) {
            fail(format!("spec.{field} is true"));
        }
    }
    for volume in pod.volumes.iter().flatten() {
        let value = serde_json::to_value(volume).expect("volume serializes");
        let types: Vec<&String> = value
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .filter(|k| *k != "name")
            .collect();
        for kind in types {
            if !RESTRICTED_VOLUMES.contains(&kind.as_str()) {
                fail(format!("volume {} is of type {kind}", volume.name));
            }
        }
    }
    let pod_context = pod.security_context.clone().unwrap_or_default();
    for sysctl in pod_context.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            fail(format!("sysctl {} is not a safe one", sysctl.name));
        }
    }
    if pod_context.run_as_user == Some(0) {
        fail("spec.securityContext.runAsUser is 0".into());
    }
    let pod_seccomp = pod_context
        .seccomp_profile
        .as_ref()
        .map(|p| p.type_.clone());
    if pod_seccomp.as_deref() == Some("Unconfined") {
        fail("spec.securityContext.seccompProfile is Unconfined".into());
    }
    let ephemeral: Vec<Container> = pod
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|e| {
            serde_json::from_value(serde_json::to_value(e).expect("serializes"))
                .expect("an ephemeral container reads as a container")
        })
        .collect();
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .chain(ephemeral.iter());
    for container in containers {
        let name = &container.name;
        let context = container.security_context.clone().unwrap_or_default();
        if context.privileged == Some(true) {
            fail(format!("container {name} is privileged"));
        }
        if context.allow_privilege_escalation != Some(false) {
            fail(format!(
                "container {name} does not set allowPrivilegeEscalation: false"
            ));
        }
        let capabilities = context.capabilities.clone().unwrap_or_default();
        if !capabilities.drop.iter().flatten().any(|c| c == "ALL") {
            fail(format!("container {name} does not drop ALL capabilities"));
        }
        for added in capabilities.add.iter().flatten() {
            if added != "NET_BIND_SERVICE" {
                fail(format!("container {name} adds capability {added}"));
            }
        }
        let non_root = context.run_as_non_root.or(pod_context.run_as_non_root);
        if non_root != Some(true) {
            fail(format!("container {name} does not set runAsNonRoot: true"));
        }
        if context.run_as_user == Some(0) {
            fail(format!("container {name} runs as user 0"));
        }
        let seccomp = context
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.clone())
            .or(pod_seccomp.clone());
        if !matches!(seccomp.as_deref(), Some("RuntimeDefault" | "Localhost")) {
            fail(format!(
                "container {name} has no RuntimeDefault or Localhost seccomp profile"
            ));
        }
        if context
            .proc_mount
            .as_deref()
            .is_some_and(|m| m != "Default")
        {
            fail(format!("container {name} sets a procMount"));
        }
        for port in container.ports.iter().flatten() {
            if port.host_port.is_some_and(|p| p != 0) {
                fail(format!(
                    "container {name} uses hostPort {:?}",
                    port.host_port
                ));
            }
        }
        if context.read_only_root_filesystem != Some(true) {
            fail(format!("container {name} has a writable root filesystem"));
        }
    }
    violations
}

/// Every Deployment among `objects` meets the restricted profile; how many there were.
fn assert_deployments_restricted(objects: &[Value], what: &str) -> usize {
    let deployments = of_kind(objects, "Deployment");
    for object in &deployments {
        let deployment: Deployment =
            serde_json::from_value((*object).clone()).expect("a valid Deployment");
        let pod = deployment
            .spec
            .and_then(|s| s.template.spec)
            .expect("a pod template");
        let violations = restricted_violations(&pod);
        assert!(
            violations.is_empty(),
            "{what}: Deployment {} breaks the restricted Pod Security Standard: {violations:#?}",
            object["metadata"]["name"]
        );
    }
    deployments.len()
}

#[test]
fn the_restricted_check_catches_what_the_standard_forbids() {
    let compliant: PodSpec = serde_json::from_value(json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "c",
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]},
            },
        }],
    }))
    .unwrap();
    assert_eq!(restricted_violations(&compliant), Vec::<String>::new());

    let bad: PodSpec = serde_json::from_value(json!({
        "hostNetwork": true,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [{
            "name": "c",
            "ports": [{"containerPort": 80, "hostPort": 80}],
            "securityContext": {
                "privileged": true,
                "runAsUser": 0,
                "capabilities": {"add": ["SYS_ADMIN"]},
                "seccompProfile": {"type": "Unconfined"},
            },
        }],
        "initContainers": [{"name": "init"}],
    }))
    .unwrap();
    let violations = restricted_violations(&bad).join("\n");
    for expected in [
        "hostNetwork",
        "volume root is of type hostPath",
        "container c is privileged",
        "container c does not set allowPrivilegeEscalation: false",
        "container c does not drop ALL capabilities",
        "container c adds capability SYS_ADMIN",
        "container c does not set runAsNonRoot: true",
        "container c runs as user 0",
        "container c has no RuntimeDefault or Localhost seccomp profile",
        "container c uses hostPort",
        "container c has a writable root filesystem",
        "container init does not set runAsNonRoot: true",
    ] {
        assert!(violations.contains(expected), "{expected}: {violations}");
    }
}

// --- files kept in sync ---------------------------------------------------------------------

#[test]
fn the_chart_crds_are_the_checked_in_crds() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo().join("crds")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let in_chart = chart().join("crds").join(&name);
        let chart_bytes = std::fs::read(&in_chart)
            .unwrap_or_else(|_| panic!("{} is missing from the chart", in_chart.display()));
        assert!(
            chart_bytes == std::fs::read(&path).unwrap(),
            "{} differs from {}: cp crds/*.yaml charts/dbgrant/crds/",
            in_chart.display(),
            path.display()
        );
        names.push(name);
    }
    let in_chart = std::fs::read_dir(chart().join("crds")).unwrap().count();
    assert_eq!(in_chart, names.len(), "the chart has CRDs crds/ has not");
}

#[test]
fn the_chart_readme_documents_every_value() {
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .unwrap();
    let mut missing = Vec::new();
    let mut visit = |path: String| {
        if !readme.contains(&format!("`{path}`")) {
            missing.push(path);
        }
    };
    for (name, property) in schema["properties"].as_object().unwrap() {
        if name == "global" {
            continue;
        }
        match property["properties"].as_object() {
            Some(children) => children.keys().for_each(|c| visit(format!("{name}.{c}"))),
            None => visit(name.clone()),
        }
    }
    assert!(
        missing.is_empty(),
        "values missing from the chart README: {missing:?}"
    );
}

/// `deploy/dbgrant.yaml` as the chart renders it with default values.
fn deploy_manifest(release: &Value) -> String {
    let mut out = String::from(
        "# dbgrant for `kubectl apply -f deploy/dbgrant.yaml`: the CRDs, the namespace and the\n\
         # operator, rendered from charts/dbgrant with its default values (release dbgrant in\n\
         # namespace dbgrant). Generated; do not edit. Regenerate after changing the chart:\n\
         #   DBGRANT_BLESS=1 cargo test --test chart deploy_manifests\n\
         # Set the operator's managed identity before applying: the ServiceAccount's\n\
         # azure.workload.identity/client-id annotation, and AZURE_TENANT_ID if needed.\n",
    );
    let mut crds: Vec<PathBuf> = std::fs::read_dir(chart().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    crds.sort();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&std::fs::read_to_string(crd).unwrap());
    }
    out.push_str(&format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {DEPLOY_NAMESPACE}\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted\n"
    ));
    let manifest = release["manifest"].as_str().expect("a manifest");
    out.push_str(manifest.trim_start_matches('\n'));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

// --- real Helm ---------------------------------------------------------------------------

#[tokio::test]
async fn the_chart_lints_without_errors() {
    let Some(python) = python() else { return };
    let helm = Helm::start(python).await;
    let chart = chart().display().to_string();
    let lint = helm.run("dbgrant", &["lint", &chart]).await;
    let messages = lint["messages"].as_array().unwrap();
    let bad: Vec<&Value> = messages
        .iter()
        .filter(|m| matches!(m["severity"].as_str(), Some("error" | "warning")))
        .collect();
    assert!(bad.is_empty(), "helm lint: {lint}");
    assert_eq!(lint["errors"], json!([]), "helm lint: {lint}");
}

#[tokio::test]
async fn the_values_schema_refuses_a_wrong_value_with_a_clear_message() {
    let Some(python) = python() else { return };
    let helm = Helm::start(python).await;
    let chart = chart().display().to_string();
    for (values, expected) in [
        (json!({"replicas": "two"}), "replicas"),
        (json!({"replica": 2}), "replica"),
        (json!({"operator": {"logFormat": "xml"}}), "logFormat"),
        (json!({"azure": {"clientId": "not-a-guid"}}), "clientId"),
    ] {
        let error = helm
            .try_run("dbgrant", &["install", "bad", &chart, &values.to_string()])
            .await
            .expect_err(&format!("{values} was accepted"));
        assert!(
            error.contains("values don't meet the specifications of the schema")
                && error.contains(expected),
            "{values}: {error}"
        );
    }
    // Nothing was installed.
    let deployments: Api<Deployment> = Api::namespaced(helm.sim.client().await.unwrap(), "dbgrant");
    assert!(deployments.get_opt("bad-dbgrant").await.unwrap().is_none());
}

#[tokio::test]
async fn the_chart_installs_and_upgrades_and_renders_restricted_pods() {
    let Some(python) = python() else { return };
    let helm = Helm::start(python).await;
    let client = helm.sim.client().await.unwrap();

    let installed = helm
        .install(DEPLOY_RELEASE, DEPLOY_NAMESPACE, &json!({}))
        .await;
    assert_eq!(installed["info"]["status"], "deployed", "{installed}");
    let objects = manifest_objects(&installed);
    assert_eq!(assert_deployments_restricted(&objects, "default values"), 1);
    assert!(
        of_kind(&objects, "PodDisruptionBudget").is_empty(),
        "one replica, no PDB"
    );
    // What was installed is what was rendered.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), DEPLOY_NAMESPACE);
    let deployment = deployments.get("dbgrant").await.unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let pod = spec.template.spec.unwrap();
    assert_eq!(restricted_violations(&pod), Vec::<String>::new());
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["azure.workload.identity/use"], "true");
    let env: Vec<String> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    for name in [
        "DBGRANT_HTTP_ADDR",
        "DBGRANT_LEADER_ELECTION",
        "POD_NAMESPACE",
        "POD_NAME",
    ] {
        assert!(
            env.contains(&name.to_string()),
            "{name} missing from {env:?}"
        );
    }
    assert!(
        Api::<Role>::namespaced(client.clone(), DEPLOY_NAMESPACE)
            .get("dbgrant-leader-election")
            .await
            .is_ok()
    );
    let rules = Api::<ClusterRole>::all(client.clone())
        .get("dbgrant")
        .await
        .unwrap()
        .rules
        .unwrap();
    // No wildcard anywhere; delete only on Secrets (the token Secrets dbgrant made, each
    // deleted with a uid precondition), never on anything else.
    assert!(
        rules.iter().all(|r| !r.verbs.iter().any(|v| v == "*")),
        "no wildcard: {rules:?}"
    );
    assert!(
        rules.iter().all(|r| !r.verbs.iter().any(|v| v == "delete")
            || r.resources.as_deref() == Some(&["secrets".to_string()][..])),
        "delete only on Secrets: {rules:?}"
    );

    // Upgrade: a second replica (and so a PDB), the workload identity, a NetworkPolicy and a
    // ServiceMonitor (its CRD installed first, as the Prometheus Operator would).
    dbgrant_sim::apply::apply(&client, &service_monitor_crd(), "default")
        .await
        .unwrap();
    let client_id = "3f2a1c9e-7b4d-4e8a-9c2f-5d6b8a1e0f47";
    let chart = chart().display().to_string();
    let values = json!({
        "replicas": 2,
        "azure": {"clientId": client_id, "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"},
        "operator": {"logLevel": "debug"},
        "networkPolicy": {"enabled": true},
        "serviceMonitor": {"enabled": true},
    });
    let upgraded = helm
        .run(
            DEPLOY_NAMESPACE,
            &["upgrade", DEPLOY_RELEASE, &chart, &values.to_string()],
        )
        .await;
    assert_eq!(upgraded["info"]["status"], "deployed", "{upgraded}");
    assert_eq!(upgraded["version"], 2, "{upgraded}");
    let objects = manifest_objects(&upgraded);
    assert_eq!(assert_deployments_restricted(&objects, "upgraded"), 1);
    for kind in ["PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"] {
        assert_eq!(of_kind(&objects, kind).len(), 1, "{kind} not rendered");
    }
    let deployment = deployments.get("dbgrant").await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));
    Api::<PodDisruptionBudget>::namespaced(client.clone(), DEPLOY_NAMESPACE)
        .get("dbgrant")
        .await
        .unwrap();
    let account = Api::<ServiceAccount>::namespaced(client.clone(), DEPLOY_NAMESPACE)
        .get("dbgrant")
        .await
        .unwrap();
    assert_eq!(
        account.metadata.annotations.unwrap()["azure.workload.identity/client-id"],
        client_id
    );
}

/// Enough of the Prometheus Operator's ServiceMonitor CRD for Helm to create one.
fn service_monitor_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "kind": "ServiceMonitor",
                "plural": "servicemonitors",
                "singular": "servicemonitor",
                "listKind": "ServiceMonitorList",
            },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                }},
            }],
        },
    })
}

/// Named so the documented regenerate command (`--test chart deploy_manifests`) finds it:
/// renders the default install and keeps `deploy/dbgrant.yaml` in sync.
#[tokio::test]
async fn deploy_manifests_are_the_chart_rendered_with_default_values() {
    let Some(python) = python() else { return };
    let helm = Helm::start(python).await;
    let installed = helm
        .install(DEPLOY_RELEASE, DEPLOY_NAMESPACE, &json!({}))
        .await;
    let rendered = deploy_manifest(&installed);
    let path = repo().join("deploy/dbgrant.yaml");
    if std::env::var("DBGRANT_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &rendered).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "deploy/dbgrant.yaml is out of date with the chart; regenerate it with \
         DBGRANT_BLESS=1 cargo test --test chart deploy_manifests"
    );
    assert_eq!(
        assert_deployments_restricted(&yaml_documents(&on_disk), "deploy/dbgrant.yaml"),
        1
    );
}

/// The operator, running as the chart's ServiceAccount with only the chart's RBAC (kube-sim
/// enforces RBAC), elects itself, grants access with a token Secret, publishes events and
/// revokes on deletion: the narrow rules are enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_exactly_the_rbac_the_chart_grants() {
    use clap::Parser as _;
    use dbgrant::azure::{AzureConfig, AzureCosmos, OperatorCredential};
    use dbgrant::settings::{Cli, Command};
    use dbgrant_sim::azure::{AzureSim, AzureSimConfig, ControlPlaneRole};
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{DeleteParams, PostParams};

    let Some(python) = python() else { return };
    let helm = Helm::start(python).await;
    let admin = helm.sim.client().await.unwrap();
    helm.install(DEPLOY_RELEASE, DEPLOY_NAMESPACE, &json!({}))
        .await;

    // The operator's own credentials: a token for the chart's ServiceAccount.
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), DEPLOY_NAMESPACE)
        .create_token_request("dbgrant", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let kubeconfig = helm.dir.join("operator-kubeconfig");
    std::fs::write(&kubeconfig, helm.sim.kubeconfig_for(&token, "dbgrant")).unwrap();

    let azure = AzureSim::start(AzureSimConfig {
        oidc_trusted_ca_pems: vec![helm.sim.ca_pem()],
        lro_duration: Duration::from_millis(50),
        ..AzureSimConfig::default()
    })
    .await
    .unwrap();
    let subscription = uuid::Uuid::new_v4().to_string();
    let account = azure.create_cosmos_account(&subscription, "rg", "chart-rbac");
    let operator = azure.create_service_principal("dbgrant-operator");
    azure.assign_control_plane_role(
        &operator.principal_id,
        &account.resource_id,
        ControlPlaneRole::DocumentDbAccountContributor,
    );
    let identity = azure.create_identity(&subscription, "rg", "orders-api");
    azure
        .add_federated_credential(
            &identity.resource_id,
            "shop-orders-api",
            &helm.sim.issuer(),
            "system:serviceaccount:shop:orders-api",
            &["api://AzureADTokenExchange"],
        )
        .unwrap();
    let mut config = AzureConfig::custom(
        azure.authority_host().parse().unwrap(),
        azure.arm_endpoint().parse().unwrap(),
        Some(azure.ca_pem()),
        azure.tenant_id(),
        OperatorCredential::ClientSecret {
            client_id: operator.client_id.clone(),
            client_secret: operator.client_secret.clone(),
        },
    );
    config.timing.lro_poll = Duration::from_millis(50);
    config.timing.retry_base = Duration::from_millis(50);

    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "shop", "labels": {"dbgrant.io/team": "shop"}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "orders-api", "namespace": "shop",
                            "annotations": {"azure.workload.identity/client-id": identity.client_id}}}),
        json!({"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseTarget",
               "metadata": {"name": "cosmos"},
               "spec": {"cosmos": {"accountResourceId": account.resource_id,
                                   "roles": {"meta": {"dataActions": ["Microsoft.DocumentDB/databaseAccounts/readMetadata"]}}},
                        "allowedNamespaces": {"matchLabels": {"dbgrant.io/team": "shop"}},
                        "allowedRoles": ["reader", "meta"]}}),
        json!({"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant",
               "metadata": {"name": "orders", "namespace": "shop"},
               "spec": {"serviceAccountName": "orders-api", "target": "cosmos", "role": "reader",
                        "tokenSecret": {"name": "orders-token"}}}),
    ] {
        dbgrant_sim::apply::apply(&admin, &object, "default")
            .await
            .unwrap();
    }

    let cli = Cli::try_parse_from([
        "dbgrant",
        "run",
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--http-addr",
        "127.0.0.1:0",
        "--azure-tenant-id",
        &config.tenant_id,
        "--leader-election",
        "--lease-namespace",
        DEPLOY_NAMESPACE,
        "--lease-name",
        "dbgrant-leader",
        "--leader-identity",
        "dbgrant-0",
    ])
    .unwrap();
    let Command::Run(args) = cli.command else {
        panic!("expected run")
    };
    let cosmos = AzureCosmos::new(config, None).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(dbgrant::run(
        args,
        dbgrant::backend::Backends::from_one(std::sync::Arc::new(cosmos)),
        shutdown.clone(),
    ));

    let grants: Api<dbgrant::api::DatabaseAccessGrant> = Api::namespaced(admin.clone(), "shop");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            !task.is_finished(),
            "the operator stopped: {:?}",
            task.await
        );
        let grant = serde_json::to_value(grants.get("orders").await.unwrap()).unwrap();
        let ready = grant["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned();
        if ready.as_ref().is_some_and(|c| c["status"] == "True") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the grant is not Ready under the chart's RBAC: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Api::<Secret>::namespaced(admin.clone(), "shop")
        .get("orders-token")
        .await
        .expect("the token Secret");
    assert_eq!(azure.role_assignments(&account.resource_id).len(), 1);

    // Deletion: revoke, then the finalizer goes (a patch the chart allows).
    grants
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while grants.get_opt("orders").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the grant was not released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(azure.role_assignments(&account.resource_id).is_empty());
    shutdown.cancel();
    task.await.unwrap().unwrap();

    // Enough, and not too much: nothing the operator asked was denied, and every verb on every
    // resource the chart grants was used (so removing it would fail that call), except the
    // few this scenario cannot reach, each with its reason.
    let asked: Vec<_> = helm
        .sim
        .authorizations()
        .into_iter()
        .filter(|a| a.user == "system:serviceaccount:dbgrant:dbgrant")
        .collect();
    let denied: Vec<_> = asked.iter().filter(|a| !a.allowed).collect();
    assert!(
        denied.is_empty(),
        "denied under the chart's RBAC: {denied:?}"
    );
    let not_reached = [
        // Secrets are replaced only when a token is refreshed; this scenario's token lives an
        // hour (the token tests refresh against the fake cluster and end to end).
        ("secrets", "update"),
        // kube's event recorder patches an event only when the same one repeats.
        ("events", "patch"),
        // Setting blockOwnerDeletion on the token Secret's owner reference needs update on
        // the owner's finalizers in a real API server (OwnerReferencesPermissionEnforcement);
        // the simulator does not run that admission plugin.
        ("databaseaccessgrants/finalizers", "update"),
    ];
    let mut rules = Api::<ClusterRole>::all(admin.clone())
        .get("dbgrant")
        .await
        .unwrap()
        .rules
        .unwrap_or_default();
    rules.extend(
        Api::<Role>::namespaced(admin.clone(), DEPLOY_NAMESPACE)
            .get("dbgrant-leader-election")
            .await
            .unwrap()
            .rules
            .unwrap_or_default(),
    );
    for rule in &rules {
        for resource in rule.resources.iter().flatten() {
            for verb in &rule.verbs {
                if not_reached.contains(&(resource.as_str(), verb.as_str())) {
                    continue;
                }
                let used = asked.iter().any(|a| {
                    let asked_resource = match &a.attributes.subresource {
                        Some(sub) => format!("{}/{sub}", a.attributes.resource),
                        None => a.attributes.resource.clone(),
                    };
                    &asked_resource == resource
                        && &a.attributes.verb == verb
                        && rule
                            .api_groups
                            .iter()
                            .flatten()
                            .any(|g| *g == a.attributes.group)
                });
                assert!(
                    used,
                    "the chart grants {verb} on {resource} but the operator never used it: drop the rule or say why it stays"
                );
            }
        }
    }
}
