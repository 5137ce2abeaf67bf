//! The Kubernetes seam: every read the reconcilers make outside their caches and every write
//! they make, behind one trait, so the reconciler tests run against an in-memory cluster.

use std::collections::BTreeMap;

use azure_core::credentials::Secret as Token;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};

use super::report;
use crate::api::{
    DatabaseAccessGrant, DatabaseAccessGrantStatus, DatabaseTarget, DatabaseTargetStatus,
    WorkloadKind,
};

/// What the reconcilers need from the Kubernetes API.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync {
    /// The target, read live (a grant is woken by its own watch on targets, which can run
    /// ahead of the target controller's cache).
    async fn target(&self, name: &str) -> Result<Option<DatabaseTarget>, kube::Error>;

    /// The labels of a namespace, or `None` when it does not exist.
    async fn namespace_labels(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, kube::Error>;

    /// The metadata of a ServiceAccount, or `None` when it does not exist.
    async fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ObjectMeta>, kube::Error>;

    /// A short-lived token for the ServiceAccount, for the token exchange (TokenRequest).
    async fn mint_token(&self, namespace: &str, name: &str) -> Result<Token, kube::Error>;

    /// Replace a grant's status.
    async fn grant_status(
        &self,
        namespace: &str,
        name: &str,
        status: &DatabaseAccessGrantStatus,
    ) -> Result<(), kube::Error>;

    /// Replace a target's status.
    async fn target_status(
        &self,
        name: &str,
        status: &DatabaseTargetStatus,
    ) -> Result<(), kube::Error>;

    /// A Secret, read live (dbgrant keeps no cache of Secrets), or `None`.
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error>;

    /// Create a Secret; a 409 when one of that name appeared meanwhile.
    async fn create_secret(&self, secret: &Secret) -> Result<(), kube::Error>;

    /// Replace a Secret as read: `metadata.resourceVersion` makes it a 409 when the Secret
    /// changed since (someone else's write is never overwritten blindly).
    async fn replace_secret(&self, secret: &Secret) -> Result<(), kube::Error>;

    /// Delete a Secret, only if it is still the object with `uid` (a Secret recreated by
    /// someone else under the name is left alone). Gone already is success.
    async fn delete_secret(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), kube::Error>;

    /// Restart a workload's pods as `kubectl rollout restart` does: set `annotation` to
    /// `value` on its pod template (the same value twice restarts nothing).
    async fn restart_workload(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
        annotation: &str,
        value: &str,
    ) -> Result<(), kube::Error>;

    /// Publish an event on an object. Never fails: events are a courtesy, status the record.
    async fn event(&self, object: ObjectReference, warning: bool, reason: &str, note: String);
}

/// The real cluster.
pub struct KubeCluster {
    client: Client,
    events: super::event_sink::EventSink,
}

impl KubeCluster {
    /// Reach the cluster through `client`; events name `instance` as their reporter.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let events = super::event_sink::EventSink::new(client.clone(), "dbgrant", instance);
        Self { client, events }
    }
}

#[async_trait::async_trait]
impl Cluster for KubeCluster {
    async fn target(&self, name: &str) -> Result<Option<DatabaseTarget>, kube::Error> {
        Api::<DatabaseTarget>::all(self.client.clone())
            .get_opt(name)
            .await
    }

    async fn namespace_labels(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, kube::Error> {
        Ok(Api::<Namespace>::all(self.client.clone())
            .get_metadata_opt(name)
            .await?
            .map(|ns| ns.metadata.labels.unwrap_or_default()))
    }

    async fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ObjectMeta>, kube::Error> {
        Ok(
            Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
                .get_metadata_opt(name)
                .await?
                .map(|sa| sa.metadata),
        )
    }

    async fn mint_token(&self, namespace: &str, name: &str) -> Result<Token, kube::Error> {
        super::identity::mint_exchange_token(&self.client, namespace, name).await
    }

    async fn grant_status(
        &self,
        namespace: &str,
        name: &str,
        status: &DatabaseAccessGrantStatus,
    ) -> Result<(), kube::Error> {
        let api = Api::<DatabaseAccessGrant>::namespaced(self.client.clone(), namespace);
        report::apply_status(&api, name, status).await
    }

    async fn target_status(
        &self,
        name: &str,
        status: &DatabaseTargetStatus,
    ) -> Result<(), kube::Error> {
        let api = Api::<DatabaseTarget>::all(self.client.clone());
        report::apply_status(&api, name, status).await
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
    }

    async fn create_secret(&self, secret: &Secret) -> Result<(), kube::Error> {
        let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), secret)
            .await
            .map(|_| ())
    }

    async fn replace_secret(&self, secret: &Secret) -> Result<(), kube::Error> {
        let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .replace(name, &PostParams::default(), secret)
            .await
            .map(|_| ())
    }

    async fn delete_secret(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), kube::Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match Api::<Secret>::namespaced(self.client.clone(), namespace)
            .delete(name, &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn restart_workload(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
        annotation: &str,
        value: &str,
    ) -> Result<(), kube::Error> {
        let patch = serde_json::json!({
            "spec": {"template": {"metadata": {"annotations": {annotation: value}}}}
        });
        let params = PatchParams::default();
        match kind {
            WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(self.client.clone(), namespace)
                    .patch(name, &params, &Patch::Merge(&patch))
                    .await?;
            }
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(self.client.clone(), namespace)
                    .patch(name, &params, &Patch::Merge(&patch))
                    .await?;
            }
        }
        Ok(())
    }

    async fn event(&self, object: ObjectReference, warning: bool, reason: &str, note: String) {
        let note = report::truncate(&note, 1000);
        if let Err(error) = self.events.publish(&object, warning, reason, &note).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }
}
