//! Real kubectl (the machine's, 1.32) against the Kubernetes simulator, with nothing but a
//! kubeconfig and a per-test cache directory: CRDs, apply, wait, get with printer columns,
//! explain, status patches, deletion held by a finalizer, validation errors, and tokens.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use dbgrant_sim::kube::{KubeSim, KubeSimConfig};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

struct Kubectl {
    sim: KubeSim,
    dir: PathBuf,
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

impl Kubectl {
    async fn start() -> Option<Self> {
        if std::process::Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output()
            .is_err()
        {
            dbgrant_sim::prerequisite_missing("the kubectl tests need kubectl on PATH");
            return None;
        }
        let sim = KubeSim::start(KubeSimConfig::default()).await.unwrap();
        let dir =
            std::env::temp_dir().join(format!("dbgrant-kubectl-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kubeconfig"), sim.kubeconfig_yaml()).unwrap();
        Some(Self { sim, dir })
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        timeout(LIMIT, self.command(args).output())
            .await
            .expect("kubectl finished in time")
            .expect("kubectl runs")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    async fn grants(&self) -> Api<DynamicObject> {
        let mut resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "dbgrant.io",
            "v1alpha1",
            "DatabaseAccessGrant",
        ));
        resource.plural = "databaseaccessgrants".into();
        Api::namespaced_with(self.sim.client().await.unwrap(), "shop", &resource)
    }

    async fn with_crds_and_examples(&self) {
        self.ok(&["apply", "-f", &repo("crds").display().to_string()])
            .await;
        self.ok(&[
            "wait",
            "--for=condition=Established",
            "crd/databaseaccessgrants.dbgrant.io",
            "crd/databasetargets.dbgrant.io",
            "--timeout=30s",
        ])
        .await;
        for example in [
            "00-namespace-shop.yaml",
            "01-serviceaccount-orders-api.yaml",
            "20-grant-orders-reader.yaml",
        ] {
            self.ok(&[
                "apply",
                "-f",
                &repo("deploy/examples").join(example).display().to_string(),
            ])
            .await;
        }
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_explain_and_validation_work_as_on_a_real_cluster() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    k.with_crds_and_examples().await;
    // Server-side apply too.
    k.ok(&[
        "apply",
        "--server-side",
        "-f",
        &repo("deploy/examples/10-target-cosmos-demo.yaml")
            .display()
            .to_string(),
    ])
    .await;

    let table = k.ok(&["get", "dbgrants", "-n", "shop"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TARGET",
            "ROLE",
            "READY",
            "REASON",
            "TOKEN-EXPIRES",
            "AGE"
        ],
        "{table}"
    );
    assert!(
        table.contains("orders-reader") && table.contains("cosmos-demo"),
        "{table}"
    );

    let explained = k
        .ok(&["explain", "databaseaccessgrant.spec.serviceAccountName"])
        .await;
    assert!(
        explained.contains("ServiceAccount"),
        "explain shows the field's description: {explained}"
    );

    let bad = k.dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: dbgrant.io/v1alpha1\nkind: DatabaseAccessGrant\nmetadata: {name: bad, namespace: shop}\nspec: {serviceAccountName: a, target: t, role: reader, container: c}\n").unwrap();
    let output = k.run(&["apply", "-f", &bad.display().to_string()]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("spec.container"),
        "the field path is in the message: {stderr}"
    );
    std::fs::write(&bad, "apiVersion: dbgrant.io/v1alpha1\nkind: DatabaseAccessGrant\nmetadata: {name: bad, namespace: shop}\nspec: {serviceAccountName: a, target: t, role: reader, deletionPolicy: Maybe}\n").unwrap();
    let output = k.run(&["apply", "-f", &bad.display().to_string()]).await;
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("spec.deletionPolicy: Unsupported value"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_once_ready_and_delete_waits_for_the_finalizer() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    k.with_crds_and_examples().await;

    let mut waiting = k
        .command(&[
            "wait",
            "--for=condition=Ready",
            "dbgrant/orders-reader",
            "-n",
            "shop",
            "--timeout=50s",
        ])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "wait returned before the condition was set"
    );
    let status = r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Ready","message":"set by the test","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    k.ok(&[
        "patch",
        "dbgrant",
        "orders-reader",
        "-n",
        "shop",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])
    .await;
    let done = timeout(LIMIT, waiting.wait()).await.unwrap().unwrap();
    assert!(done.success(), "kubectl wait saw the condition");

    let grants = k.grants().await;
    let finalizer = json!({"metadata": {"finalizers": ["dbgrant.io/revoke-access"]}});
    grants
        .patch(
            "orders-reader",
            &PatchParams::default(),
            &Patch::Merge(&finalizer),
        )
        .await
        .unwrap();
    let mut deleting = k
        .command(&[
            "delete",
            "dbgrant",
            "orders-reader",
            "-n",
            "shop",
            "--timeout=50s",
        ])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        deleting.try_wait().unwrap().is_none(),
        "delete returned while a finalizer holds the object"
    );
    let release = json!({"metadata": {"finalizers": null}});
    grants
        .patch(
            "orders-reader",
            &PatchParams::default(),
            &Patch::Merge(&release),
        )
        .await
        .unwrap();
    let done = timeout(LIMIT, deleting.wait()).await.unwrap().unwrap();
    assert!(done.success());
    assert!(grants.get_opt("orders-reader").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_token_returns_a_jwt_for_the_audience_that_verifies_against_the_jwks() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    k.with_crds_and_examples().await;
    let token = k
        .ok(&[
            "create",
            "token",
            "orders-api",
            "-n",
            "shop",
            "--audience",
            "api://AzureADTokenExchange",
        ])
        .await;
    let token = token.trim();

    let claims = dbgrant_sim::jwt::unverified_claims(token).expect("a JWT");
    assert_eq!(claims["sub"], "system:serviceaccount:shop:orders-api");
    assert_eq!(claims["aud"], json!(["api://AzureADTokenExchange"]));
    // Verify it with the keys the issuer publishes, fetched through kubectl itself.
    let jwks = k.ok(&["get", "--raw", "/openid/v1/jwks"]).await;
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks).unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["api://AzureADTokenExchange"]);
    validation.set_issuer(&[k.sim.issuer()]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .expect("the token verifies");
}

#[tokio::test]
async fn discovery_is_aggregated_when_kubectl_asks_for_it() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    k.ok(&["apply", "-f", &repo("crds").display().to_string()])
        .await;
    // A fresh cache: discovery must come from the server.
    let output = k
        .run(&["api-resources", "--cache-dir", "/dev/null/none", "-v=6"])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    for expected in [
        "databaseaccessgrants",
        "dbgrant,dbgrants",
        "leases",
        "deployments",
    ] {
        assert!(stdout.contains(expected), "{expected} missing:\n{stdout}");
    }
    // Two documents (`/api` and `/apis`) describe everything: no per-group requests.
    let gets: Vec<&str> = log.lines().filter(|l| l.contains("verb=\"GET\"")).collect();
    assert!(
        gets.iter().any(|l| l.contains("/apis?")),
        "no /apis request:\n{log}"
    );
    assert!(
        !gets
            .iter()
            .any(|l| l.contains("/apis/dbgrant.io/v1alpha1") || l.contains("/api/v1?")),
        "kubectl fell back to per-group discovery:\n{log}"
    );
}

#[tokio::test]
async fn openapi_v2_is_served_in_the_protobuf_form_kubectl_decodes() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    // The v2 explainer downloads /openapi/v2 as protobuf. The document is minimal (no
    // definitions), so kubectl decodes it and then finds no schema: a decoding failure
    // would say "proto: ..." or "failed to download" instead.
    let output = k
        .run(&["explain", "configmap", "--output=plaintext-openapiv2"])
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("couldn't find resource for \"/v1, Kind=ConfigMap\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains("proto") && !stderr.contains("download"),
        "{stderr}"
    );
}

#[tokio::test]
async fn describe_and_get_events_show_what_the_kube_rs_recorder_published() {
    use kube::Resource as _;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let Some(k) = Kubectl::start().await else {
        return;
    };
    k.with_crds_and_examples().await;
    let grant = k.grants().await.get("orders-reader").await.unwrap();
    // kube-rs writes events.k8s.io/v1 Events (a second identical one becomes a series patch);
    // kubectl reads core v1 Events with involvedObject field selectors.
    let recorder = Recorder::new(
        k.sim.client().await.unwrap(),
        Reporter {
            controller: "dbgrant-test".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Warning,
        reason: "AzureThrottled".into(),
        note: Some("Azure answered 429; retrying after 7s".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = grant.object_ref(&ApiResource::erase::<DynamicObject>(
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "dbgrant.io",
            "v1alpha1",
            "DatabaseAccessGrant",
        )),
    ));
    for _ in 0..2 {
        recorder.publish(&event, &reference).await.unwrap();
    }
    let described = k
        .ok(&["describe", "dbgrant", "orders-reader", "-n", "shop"])
        .await;
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events.contains("AzureThrottled")
            && events.contains("Azure answered 429; retrying after 7s"),
        "{described}"
    );
    assert!(events.contains("(x2 over"), "the series count: {described}");
    assert!(events.contains("dbgrant-test"), "From: {described}");

    let listed = k.ok(&["get", "events", "-n", "shop"]).await;
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert!(
        listed.contains("databaseaccessgrant/orders-reader"),
        "{listed}"
    );
}
