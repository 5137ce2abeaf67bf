//! The commands a newcomer types, with the real kubectl against the Kubernetes simulator:
//! `kubectl create namespace|serviceaccount|role|rolebinding|clusterrole|deployment|secret`.
//! kubectl sends these built-in objects as protobuf, so each one exercises the simulator's
//! protobuf decoding, and a new namespace gets its `default` ServiceAccount as in a cluster.

use std::time::Duration;

use dbgrant_sim::kube::{KubeSim, KubeSimConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::Api;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn kubectl_create_makes_built_in_objects_from_protobuf() {
    if std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_err()
    {
        dbgrant_sim::prerequisite_missing("the kubectl create test needs kubectl on PATH");
        return;
    }
    let sim = KubeSim::start(KubeSimConfig::default()).await.unwrap();
    let client = sim.client().await.unwrap();
    let dir = std::env::temp_dir().join(format!("dbgrant-create-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kubeconfig"), sim.kubeconfig_yaml()).unwrap();
    let kubectl = |args: &'static [&'static str]| {
        let dir = dir.clone();
        async move {
            let output = timeout(
                LIMIT,
                tokio::process::Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(dir.join("kubeconfig"))
                    .arg("--cache-dir")
                    .arg(dir.join("cache"))
                    .args(args)
                    .env_remove("KUBECONFIG")
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .expect("kubectl finished in time")
            .expect("kubectl runs");
            assert!(
                output.status.success(),
                "kubectl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    };

    kubectl(&["create", "namespace", "shop"]).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "shop");
    accounts
        .get("default")
        .await
        .expect("the namespace's default ServiceAccount");

    kubectl(&["create", "serviceaccount", "orders-api", "-n", "shop"]).await;
    accounts.get("orders-api").await.unwrap();

    kubectl(&[
        "create",
        "role",
        "reader",
        "-n",
        "shop",
        "--verb=get,list",
        "--resource=secrets",
        "--resource-name=orders",
    ])
    .await;
    let role = Api::<Role>::namespaced(client.clone(), "shop")
        .get("reader")
        .await
        .unwrap();
    let rule = &role.rules.unwrap()[0];
    assert_eq!(rule.verbs, ["get", "list"]);
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["secrets".to_string()][..])
    );
    assert_eq!(
        rule.resource_names.as_deref(),
        Some(&["orders".to_string()][..])
    );

    kubectl(&[
        "create",
        "rolebinding",
        "orders-reader",
        "-n",
        "shop",
        "--role=reader",
        "--serviceaccount=shop:orders-api",
    ])
    .await;
    let binding = Api::<RoleBinding>::namespaced(client.clone(), "shop")
        .get("orders-reader")
        .await
        .unwrap();
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, "reader");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "orders-api", Some("shop"))
    );

    kubectl(&[
        "create",
        "clusterrole",
        "lease-viewer",
        "--verb=get,list,watch",
        "--resource=leases.coordination.k8s.io",
    ])
    .await;
    let cluster_role = Api::<ClusterRole>::all(client.clone())
        .get("lease-viewer")
        .await
        .unwrap();
    let rule = &cluster_role.rules.unwrap()[0];
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&["coordination.k8s.io".to_string()][..])
    );

    kubectl(&[
        "create",
        "deployment",
        "web",
        "-n",
        "shop",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=8080",
    ])
    .await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), "shop")
        .get("web")
        .await
        .unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.selector.match_labels.unwrap()["app"],
        "web",
        "the selector kubectl generated"
    );
    let container = &spec.template.spec.unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("nginx:1.27"));
    assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8080);

    kubectl(&[
        "create",
        "secret",
        "generic",
        "orders",
        "-n",
        "shop",
        "--from-literal=user=alice",
    ])
    .await;
    let secret = Api::<Secret>::namespaced(client.clone(), "shop")
        .get("orders")
        .await
        .unwrap();
    assert_eq!(secret.data.unwrap()["user"].0, b"alice");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));

    let _ = std::fs::remove_dir_all(&dir);
}
