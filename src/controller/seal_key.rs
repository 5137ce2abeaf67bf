//! Where the identity seal's key comes from (`token::seal`): a Secret in the operator's own
//! namespace, made by the first replica that needs it and read by every later one, so seals
//! written before a restart still verify after it.
//!
//! Without the operator's namespace (a local `dbgrant run` without `POD_NAMESPACE`) nothing is
//! sealed, and a restart proves each ServiceAccount's identity with an exchange, as before. A
//! Secret of that name dbgrant did not make is never overwritten: sealing stays off.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::cluster::Cluster;
use crate::token::seal::{KEY_DATA, KEY_SECRET_NAME, SealKey};
use crate::token::{MANAGED_BY, MANAGED_BY_LABEL};

/// The sealing key, loaded once (a failed load is tried again on the next need).
pub struct SealKeySource {
    namespace: Option<String>,
    key: tokio::sync::OnceCell<Option<Arc<SealKey>>>,
}

impl SealKeySource {
    /// A source keeping its key in `namespace` (`None`: sealing off).
    pub fn new(namespace: Option<String>) -> Self {
        Self {
            namespace,
            key: tokio::sync::OnceCell::new(),
        }
    }

    /// The key, made on first use if no replica has made it yet; `None` when sealing is off.
    pub async fn get(&self, cluster: &dyn Cluster) -> Option<Arc<SealKey>> {
        let namespace = self.namespace.as_deref()?;
        let loaded = self
            .key
            .get_or_try_init(|| async {
                let key = load_or_make(cluster, namespace).await?;
                Ok::<_, kube::Error>(key.map(Arc::new))
            })
            .await;
        match loaded {
            Ok(key) => key.clone(),
            Err(error) => {
                tracing::warn!(namespace, secret = KEY_SECRET_NAME, error = %crate::error::chain(&error), "identity seal key not loaded; identities are proven by exchange meanwhile");
                None
            }
        }
    }
}

async fn load_or_make(
    cluster: &dyn Cluster,
    namespace: &str,
) -> Result<Option<SealKey>, kube::Error> {
    // Two tries: another replica may create it between our read and our create.
    for _ in 0..2 {
        if let Some(secret) = cluster.secret(namespace, KEY_SECRET_NAME).await? {
            return Ok(key_of(&secret, namespace));
        }
        let Ok(bytes) = SealKey::generate() else {
            tracing::warn!("the system's random source failed; identity sealing is off");
            return Ok(None);
        };
        match cluster.create_secret(&key_secret(namespace, bytes)).await {
            Ok(()) => {
                tracing::info!(
                    namespace,
                    secret = KEY_SECRET_NAME,
                    "identity seal key created"
                );
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(cluster
        .secret(namespace, KEY_SECRET_NAME)
        .await?
        .and_then(|secret| key_of(&secret, namespace)))
}

fn key_of(secret: &Secret, namespace: &str) -> Option<SealKey> {
    let ours = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY);
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_DATA))
        .and_then(|bytes| SealKey::from_bytes(&bytes.0));
    if !ours || key.is_none() {
        tracing::warn!(
            namespace,
            secret = KEY_SECRET_NAME,
            "a Secret of this name exists but holds no key dbgrant made; identity sealing is off (delete it to let dbgrant make one)"
        );
        return None;
    }
    key
}

fn key_secret(namespace: &str, bytes: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(KEY_SECRET_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                "dbgrant.io/purpose".to_string(),
                "key of the identity seals on token Secrets; deleting it costs one Entra ID exchange per ServiceAccount".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(KEY_DATA.to_string(), ByteString(bytes))])),
        ..Default::default()
    }
}
