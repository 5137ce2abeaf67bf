//! RBAC in the Kubernetes simulator for ServiceAccount tokens: roles and bindings, resource
//! names, subresources, aggregated ClusterRoles, the real 403 message, and `kubectl auth can-i`.

use std::time::Duration;

use dbgrant_sim::kube::{KubeSim, KubeSimConfig};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

async fn setup() -> (KubeSim, kube::Client, String) {
    let sim = KubeSim::start(KubeSimConfig::default()).await.unwrap();
    let admin = sim.client().await.unwrap();
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "shop"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "allowed", "namespace": "shop"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other", "namespace": "shop"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader", "namespace": "shop"}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["allowed"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader", "namespace": "shop"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "aggregate"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate": "true"}}]}, "rules": []}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "piece", "labels": {"example.com/aggregate": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "aggregate"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "aggregate"},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts:shop"}]}),
    ];
    for object in objects {
        dbgrant_sim::apply::apply(&admin, &object, "default")
            .await
            .unwrap();
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "shop");
    let token = accounts
        .create_token_request("app", &PostParams::default(), &TokenRequest::default())
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    (sim, admin, token)
}

#[tokio::test]
async fn service_account_tokens_are_authorized_by_rbac() {
    let (sim, _admin, token) = timeout(LIMIT, setup()).await.unwrap();
    let client = sim.client_for_token(&token).await.unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    timeout(LIMIT, config_maps.list(&ListParams::default()))
        .await
        .unwrap()
        .expect("the Role allows listing configmaps");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shop");
    timeout(LIMIT, secrets.get("allowed"))
        .await
        .unwrap()
        .expect("resourceNames allows this one");
    let error = timeout(LIMIT, secrets.get("other"))
        .await
        .unwrap()
        .unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("{error:?}")
    };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "secrets \"other\" is forbidden: User \"system:serviceaccount:shop:app\" cannot get resource \"secrets\" in API group \"\" in the namespace \"shop\""
    );
    let error = timeout(LIMIT, secrets.list(&ListParams::default()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 403),
        "{error:?}"
    );

    // Aggregated ClusterRoles, bound to the namespace's ServiceAccount group.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    timeout(LIMIT, namespaces.list(&ListParams::default()))
        .await
        .unwrap()
        .expect("aggregated rule");
    // Other namespaces are out of reach.
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert!(
        timeout(LIMIT, elsewhere.list(&ListParams::default()))
            .await
            .unwrap()
            .is_err()
    );
    // The subresource rule allows minting tokens, not reading ServiceAccounts.
    let accounts: Api<ServiceAccount> = Api::namespaced(client, "shop");
    timeout(
        LIMIT,
        accounts.create_token_request("app", &PostParams::default(), &TokenRequest::default()),
    )
    .await
    .unwrap()
    .expect("serviceaccounts/token create");
    assert!(timeout(LIMIT, accounts.get("app")).await.unwrap().is_err());
    // A token the simulator did not issue is not a user at all.
    let forged = sim.client_for_token("not-a-token").await.unwrap();
    let error = timeout(
        LIMIT,
        Api::<ConfigMap>::namespaced(forged, "shop").list(&ListParams::default()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 401),
        "{error:?}"
    );
}

#[tokio::test]
async fn kubectl_auth_can_i_answers_from_rbac() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        dbgrant_sim::prerequisite_missing("this test needs kubectl on PATH");
        return;
    }
    let (sim, _admin, token) = timeout(LIMIT, setup()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("dbgrant-can-i-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kubeconfig"), sim.kubeconfig_for(&token, "app")).unwrap();
    let can_i = |args: &[&str]| {
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(["auth", "can-i"])
            .args(args)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true);
        async move {
            String::from_utf8_lossy(
                &timeout(LIMIT, command.output())
                    .await
                    .unwrap()
                    .unwrap()
                    .stdout,
            )
            .trim()
            .to_string()
        }
    };
    assert_eq!(can_i(&["list", "configmaps", "-n", "shop"]).await, "yes");
    assert_eq!(can_i(&["list", "secrets", "-n", "shop"]).await, "no");
    assert_eq!(
        can_i(&["get", "secrets/allowed", "-n", "shop"]).await,
        "yes"
    );
    assert_eq!(
        can_i(&[
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            "shop"
        ])
        .await,
        "yes"
    );
    // TYPE/NAME names an object: a ServiceAccount called "token", which the Role does not cover.
    assert_eq!(
        can_i(&["create", "serviceaccounts/token", "-n", "shop"]).await,
        "no"
    );
    assert_eq!(can_i(&["list", "configmaps", "-n", "default"]).await, "no");
    let _ = std::fs::remove_dir_all(dir);
}
