//! The Kubernetes seam: every read the reconcilers make outside their caches and every write
//! they make, behind one trait, so the reconciler tests run against an in-memory cluster.

use std::collections::BTreeMap;

use azure_core::credentials::Secret;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};

use super::report;
use crate::api::{
    DatabaseAccessGrant, DatabaseAccessGrantStatus, DatabaseTarget, DatabaseTargetStatus,
};
use crate::backend::ResolvedIdentity;
use crate::error::Result;

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
    async fn mint_token(&self, namespace: &str, name: &str) -> Result<Secret, kube::Error>;

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

    /// Create or update the grant's token Secret.
    async fn token_secret(
        &self,
        grant: &DatabaseAccessGrant,
        name: &str,
        identity: &ResolvedIdentity,
    ) -> Result<()>;

    /// Publish an event on an object. Never fails: events are a courtesy, status the record.
    async fn event(&self, object: ObjectReference, warning: bool, reason: &str, note: String);
}

/// The real cluster.
pub struct KubeCluster {
    client: Client,
    recorder: Recorder,
}

impl KubeCluster {
    /// Reach the cluster through `client`; events name `instance` as their reporter.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "dbgrant".into(),
                instance,
            },
        );
        Self { client, recorder }
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

    async fn mint_token(&self, namespace: &str, name: &str) -> Result<Secret, kube::Error> {
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

    async fn token_secret(
        &self,
        grant: &DatabaseAccessGrant,
        name: &str,
        identity: &ResolvedIdentity,
    ) -> Result<()> {
        crate::token::write_token_secret(&self.client, grant, name, identity).await
    }

    async fn event(&self, object: ObjectReference, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(report::truncate(&note, 1000)),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }
}
