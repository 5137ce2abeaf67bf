//! Token Secrets: a fresh data-plane access token for the workload's identity, kept in a Secret
//! of the grant's namespace for workloads that cannot do the token exchange themselves.
//!
//! The token is written only into the Secret's data: never into status, events, logs or
//! metrics. The Secret is owned by the grant, so deleting the grant deletes it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::DatabaseAccessGrant;
use crate::backend::ResolvedIdentity;
use crate::controller::report::FIELD_MANAGER;
use crate::error::{Error, Result};

/// Key of the access token in the Secret's data.
pub const TOKEN_KEY: &str = "token";
/// Key of the token's expiry (RFC 3339) in the Secret's data.
pub const EXPIRES_AT_KEY: &str = "expiresAt";

/// Create or update the grant's token Secret with `identity`'s access token.
///
/// # Errors
/// The API server's error, e.g. a Secret of that name owned by something else is not taken
/// over silently: server-side apply reports the conflict.
pub async fn write_token_secret(
    client: &Client,
    grant: &DatabaseAccessGrant,
    name: &str,
    identity: &ResolvedIdentity,
) -> Result<()> {
    let namespace = grant
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let owner = grant
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let secret = token_secret(name, &namespace, owner, identity);
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

fn token_secret(
    name: &str,
    namespace: &str,
    owner: OwnerReference,
    identity: &ResolvedIdentity,
) -> Secret {
    let data = BTreeMap::from([
        (
            TOKEN_KEY.to_string(),
            ByteString(identity.access_token.secret().as_bytes().to_vec()),
        ),
        (
            EXPIRES_AT_KEY.to_string(),
            ByteString(identity.expires_at.to_string().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            owner_references: Some(vec![owner]),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "dbgrant".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Default::default()
    }
}

/// When to refresh a token that expires at `expires_at`: at half its remaining life, so a
/// refresh that fails has another half to be retried in, and never sooner than 30 seconds.
pub fn refresh_after(expires_at: Timestamp, now: Timestamp) -> Duration {
    let remaining = expires_at.duration_since(now).as_secs_f64().max(0.0);
    Duration::from_secs_f64(remaining / 2.0).max(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use azure_core::credentials::Secret as Token;

    use super::*;

    #[test]
    fn tokens_are_refreshed_at_half_their_remaining_life() {
        let now = Timestamp::from_second(1_000).expect("time");
        let in_an_hour = Timestamp::from_second(4_600).expect("time");
        assert_eq!(refresh_after(in_an_hour, now), Duration::from_secs(1_800));
        assert_eq!(refresh_after(now, now), Duration::from_secs(30));
    }

    #[test]
    fn the_secret_holds_the_token_and_expiry_and_is_owned_by_the_grant() {
        let identity = ResolvedIdentity {
            principal_id: "p".into(),
            tenant_id: "t".into(),
            access_token: Token::new("header.payload.sig"),
            expires_at: Timestamp::from_second(4_600).expect("time"),
        };
        let owner = OwnerReference {
            api_version: "dbgrant.io/v1alpha1".into(),
            kind: "DatabaseAccessGrant".into(),
            name: "g".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let secret = token_secret("s", "shop", owner, &identity);
        let data = secret.data.expect("data");
        assert_eq!(data[TOKEN_KEY].0, b"header.payload.sig");
        assert_eq!(data[EXPIRES_AT_KEY].0, b"1970-01-01T01:16:40Z");
        assert_eq!(secret.metadata.owner_references.expect("owner")[0].uid, "u");
        assert!(
            !format!("{identity:?}").contains("header.payload.sig"),
            "Debug redacts the token"
        );
    }
}
