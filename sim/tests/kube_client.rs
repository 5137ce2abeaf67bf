//! kube-rs against the Kubernetes simulator: CRDs become served and validated, server-side
//! apply and status patches, finalizers on delete, garbage collection, TokenRequest tokens
//! that verify against the published JWKS, and watches that resume or re-list.

use std::time::Duration;

use dbgrant_sim::kube::{Fault, KubeSim, KubeSimConfig};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

async fn sim_with_crds() -> (KubeSim, kube::Client) {
    let sim = timeout(LIMIT, KubeSim::start(KubeSimConfig::default()))
        .await
        .unwrap()
        .unwrap();
    let client = sim.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in dbgrant_crds() {
        timeout(LIMIT, crds.create(&PostParams::default(), &crd))
            .await
            .unwrap()
            .unwrap();
    }
    let shop = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    let namespaces: Api<Namespace> = Api::all(client.clone());
    timeout(
        LIMIT,
        namespaces.create(
            &PostParams::default(),
            &serde_json::from_value(shop).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    (sim, client)
}

fn dbgrant_crds() -> Vec<CustomResourceDefinition> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| serde_saphyr::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect()
}

fn grants(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("dbgrant.io", "v1alpha1", "DatabaseAccessGrant");
    let mut resource = ApiResource::from_gvk(&gvk);
    resource.plural = "databaseaccessgrants".into();
    Api::namespaced_with(client.clone(), "shop", &resource)
}

fn grant(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant", "metadata": {"name": name, "namespace": "shop"}, "spec": spec})
}

#[tokio::test]
async fn crds_are_served_validated_and_defaulted() {
    let (_sim, client) = sim_with_crds().await;
    let discovered = timeout(
        LIMIT,
        kube::discovery::pinned_kind(
            &client,
            &GroupVersionKind::gvk("dbgrant.io", "v1alpha1", "DatabaseAccessGrant"),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(discovered.0.plural, "databaseaccessgrants");

    let api = grants(&client);
    let valid = grant(
        "g",
        json!({"serviceAccountName": "app", "target": "t", "role": "reader"}),
    );
    let created = timeout(
        LIMIT,
        api.patch("g", &PatchParams::apply("test"), &Patch::Apply(&valid)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        created.data["spec"]["deletionPolicy"], "Delete",
        "schema defaults are applied"
    );
    assert_eq!(created.metadata.generation, Some(1));

    let invalid = grant(
        "bad",
        json!({"serviceAccountName": "app", "target": "t", "role": "reader", "container": "items"}),
    );
    let error = timeout(
        LIMIT,
        api.patch("bad", &PatchParams::apply("test"), &Patch::Apply(&invalid)),
    )
    .await
    .unwrap()
    .unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error:?}")
    };
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("spec"),
        "the message names the field: {}",
        status.message
    );

    let unknown_policy = grant(
        "bad2",
        json!({"serviceAccountName": "app", "target": "t", "role": "reader", "deletionPolicy": "Maybe"}),
    );
    let error = timeout(
        LIMIT,
        api.patch(
            "bad2",
            &PatchParams::apply("test"),
            &Patch::Apply(&unknown_policy),
        ),
    )
    .await
    .unwrap()
    .unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!()
    };
    assert!(
        status
            .message
            .contains("spec.deletionPolicy: Unsupported value"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn status_is_a_subresource_and_generation_tracks_spec_only() {
    let (_sim, client) = sim_with_crds().await;
    let api = grants(&client);
    let object = grant(
        "g",
        json!({"serviceAccountName": "app", "target": "t", "role": "reader"}),
    );
    timeout(
        LIMIT,
        api.patch("g", &PatchParams::apply("test"), &Patch::Apply(&object)),
    )
    .await
    .unwrap()
    .unwrap();

    let status = json!({"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant", "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "Granted", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let patched = timeout(
        LIMIT,
        api.patch_status(
            "g",
            &PatchParams::apply("operator").force(),
            &Patch::Apply(&status),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(patched.data["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "a status write is not a spec change"
    );

    // Status sent to the main resource is ignored; a spec change bumps the generation.
    let mut changed = object.clone();
    changed["spec"]["role"] = json!("contributor");
    changed["status"] = json!({"observedGeneration": 99});
    let updated = timeout(
        LIMIT,
        api.patch("g", &PatchParams::apply("test"), &Patch::Apply(&changed)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert_eq!(updated.data["status"]["observedGeneration"], 1);
}

#[tokio::test]
async fn finalizers_hold_deletion_and_owners_take_dependents_along() {
    let (_sim, client) = sim_with_crds().await;
    let api = grants(&client);
    let mut object = grant(
        "g",
        json!({"serviceAccountName": "app", "target": "t", "role": "reader"}),
    );
    object["metadata"]["finalizers"] = json!(["dbgrant.io/revoke-access"]);
    let created = timeout(
        LIMIT,
        api.patch("g", &PatchParams::apply("test"), &Patch::Apply(&object)),
    )
    .await
    .unwrap()
    .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    let owned = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child", "ownerReferences": [{"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant", "name": "g", "uid": created.metadata.uid}]}});
    timeout(
        LIMIT,
        config_maps.create(
            &PostParams::default(),
            &serde_json::from_value(owned).unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();

    timeout(LIMIT, api.delete("g", &DeleteParams::default()))
        .await
        .unwrap()
        .unwrap();
    let held = timeout(LIMIT, api.get("g")).await.unwrap().unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "a finalizer holds the object"
    );
    assert!(
        timeout(LIMIT, config_maps.get_opt("child"))
            .await
            .unwrap()
            .unwrap()
            .is_some()
    );

    let release = json!([{"op": "test", "path": "/metadata/finalizers", "value": ["dbgrant.io/revoke-access"]}, {"op": "remove", "path": "/metadata/finalizers"}]);
    let patch: json_patch::Patch = serde_json::from_value(release).unwrap();
    timeout(
        LIMIT,
        api.patch("g", &PatchParams::default(), &Patch::<()>::Json(patch)),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        timeout(LIMIT, api.get_opt("g"))
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "gone once the last finalizer goes"
    );
    assert!(
        timeout(LIMIT, config_maps.get_opt("child"))
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "dependents are collected"
    );
}

#[tokio::test]
async fn token_requests_issue_jwts_that_verify_against_the_published_jwks() {
    let (sim, client) = sim_with_crds().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "shop");
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}});
    timeout(
        LIMIT,
        accounts.create(&PostParams::default(), &serde_json::from_value(sa).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();

    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["api://AzureADTokenExchange".into()],
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let response = timeout(
        LIMIT,
        accounts.create_token_request("app", &PostParams::default(), &request),
    )
    .await
    .unwrap()
    .unwrap();
    let token = response.status.unwrap().token;

    // Fetch discovery and the JWKS over HTTPS trusting only the simulator's CA, as Entra would.
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(ring_tls(&sim.ca_pem()))
        .build()
        .unwrap();
    let discovery: serde_json::Value = timeout(LIMIT, async {
        http.get(format!("{}/.well-known/openid-configuration", sim.issuer()))
            .send()
            .await?
            .json()
            .await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(discovery["issuer"], sim.issuer());
    let jwks: jsonwebtoken::jwk::JwkSet = timeout(LIMIT, async {
        http.get(discovery["jwks_uri"].as_str().unwrap())
            .send()
            .await?
            .json()
            .await
    })
    .await
    .unwrap()
    .unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the token's key is published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["api://AzureADTokenExchange"]);
    validation.set_issuer(&[sim.issuer()]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "system:serviceaccount:shop:app");
    assert_eq!(claims["kubernetes.io"]["namespace"], "shop");

    // Too short a lifetime is refused, like the real server.
    let short = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(60),
            ..request.spec.clone()
        },
        ..TokenRequest::default()
    };
    let error = timeout(
        LIMIT,
        accounts.create_token_request("app", &PostParams::default(), &short),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 422),
        "{error:?}"
    );
    // And a missing ServiceAccount is a 404.
    let error = timeout(
        LIMIT,
        accounts.create_token_request("ghost", &PostParams::default(), &request),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 404),
        "{error:?}"
    );
}

fn ring_tls(ca_pem: &str) -> rustls::ClientConfig {
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

#[tokio::test]
async fn watchers_resume_after_dropped_watches_and_relist_after_410() {
    let (sim, client) = sim_with_crds().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    let mut stream = watcher(config_maps.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let make = |name: &str| {
        serde_json::from_value::<ConfigMap>(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
        )
        .unwrap()
    };

    timeout(
        LIMIT,
        config_maps.create(&PostParams::default(), &make("one")),
    )
    .await
    .unwrap()
    .unwrap();
    let seen = timeout(LIMIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.metadata.name.as_deref(), Some("one"));

    sim.faults().drop_watches();
    timeout(
        LIMIT,
        config_maps.create(&PostParams::default(), &make("two")),
    )
    .await
    .unwrap()
    .unwrap();
    let seen = timeout(LIMIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        seen.metadata.name.as_deref(),
        Some("two"),
        "resumed after a dropped watch"
    );
    let lists_before = sim.counters().get("list", "configmaps");

    sim.faults().expire_watches();
    timeout(
        LIMIT,
        config_maps.create(&PostParams::default(), &make("three")),
    )
    .await
    .unwrap()
    .unwrap();
    // The watcher reports the 410 (as kube-rs does) and lists again: it sees "three".
    let mut names = Vec::new();
    let mut gone = false;
    while !names.contains(&"three".to_string()) {
        match timeout(LIMIT, stream.next()).await.unwrap().unwrap() {
            Ok(seen) => names.push(seen.metadata.name.unwrap()),
            Err(watcher::Error::WatchError(status)) if status.code == 410 => gone = true,
            Err(other) => panic!("unexpected watcher error: {other:?}"),
        }
    }
    assert!(gone, "the resumed watch was told 410 Gone");
    assert!(
        sim.counters().get("list", "configmaps") > lists_before,
        "re-listed after 410: {:?}",
        sim.counters()
    );
}

#[tokio::test]
async fn injected_faults_answer_with_their_status_and_are_counted() {
    let (sim, client) = sim_with_crds().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    sim.faults().inject(Fault {
        verb: Some("get".into()),
        resource: Some("configmaps".into()),
        status: Some(500),
        times: Some(1),
        ..Fault::default()
    });
    let error = timeout(LIMIT, config_maps.get("x"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 500),
        "{error:?}"
    );
    let error = timeout(LIMIT, config_maps.get("x"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 404),
        "the fault hit once: {error:?}"
    );
    assert_eq!(sim.counters().get("get", "configmaps"), 2);
}
