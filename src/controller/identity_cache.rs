//! Identities already resolved, kept while their access token is young.
//!
//! Resolving costs a TokenRequest and an Entra ID exchange. Without this, every pass of every
//! grant paid both: each resync, and each two-second look at a Cosmos account busy with another
//! write, so a few hundred grants queued on one account would hammer Entra ID into throttling.
//! An entry is only ever the result of exchanging a token minted for that very ServiceAccount
//! (namespace, name and uid are in the key, with the client id and tenant it claims), so the
//! cache cannot lend one team's identity to another. Failures are never kept: a missing
//! federated credential is looked for again on the next pass.
//!
//! Entries go stale once 45% of the token's remaining life has passed. Token Secrets do not
//! read their tokens from here: they have their own schedule and broker (`token`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::backend::ResolvedIdentity;

/// What a resolved identity was resolved from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKey {
    /// Namespace of the ServiceAccount.
    pub namespace: String,
    /// Name of the ServiceAccount.
    pub service_account: String,
    /// uid of the ServiceAccount: one deleted and recreated under the same name starts afresh.
    pub uid: Option<String>,
    /// Client id the ServiceAccount claims.
    pub client_id: String,
    /// Tenant the token was exchanged in.
    pub tenant_id: String,
    /// The audience the token was issued for.
    pub scope: crate::backend::TokenScope,
}

struct Entry {
    identity: ResolvedIdentity,
    fresh_until: Timestamp,
}

/// Resolved identities by what they were resolved from, and a lock per key held while one
/// pass resolves it.
#[derive(Default)]
pub struct IdentityCache(
    Mutex<HashMap<IdentityKey, Entry>>,
    Mutex<HashMap<IdentityKey, Arc<tokio::sync::Mutex<()>>>>,
);

impl IdentityCache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IdentityKey, Entry>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The identity resolved for `key`, while it is still fresh at `now`.
    pub fn get(&self, key: &IdentityKey, now: Timestamp) -> Option<ResolvedIdentity> {
        self.map()
            .get(key)
            .filter(|entry| now < entry.fresh_until)
            .map(|entry| entry.identity.clone())
    }

    /// Held while one pass resolves `key`: the grants of one ServiceAccount reconciled at once
    /// (after a start, say) wait for one exchange and find its result here, instead of each
    /// making their own.
    pub async fn resolving(&self, key: &IdentityKey) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .1
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Locks nobody holds or waits for go.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(key.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Keep an identity just resolved at `now`, dropping every entry gone stale.
    pub fn insert(&self, key: IdentityKey, identity: ResolvedIdentity, now: Timestamp) {
        let remaining = identity
            .expires_at
            .duration_since(now)
            .as_secs_f64()
            .max(0.0);
        let keep = Duration::from_secs_f64(remaining * 0.45);
        let fresh_until = now.checked_add(keep).unwrap_or(now);
        let mut map = self.map();
        map.retain(|_, entry| now < entry.fresh_until);
        if now < fresh_until {
            map.insert(
                key,
                Entry {
                    identity,
                    fresh_until,
                },
            );
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use azure_core::credentials::Secret;

    use super::*;

    fn key(namespace: &str, uid: &str, client_id: &str) -> IdentityKey {
        IdentityKey {
            namespace: namespace.into(),
            service_account: "app".into(),
            uid: Some(uid.into()),
            client_id: client_id.into(),
            tenant_id: "t".into(),
            scope: crate::backend::TokenScope::CosmosDb,
        }
    }

    fn identity(principal: &str, expires_at: Timestamp) -> ResolvedIdentity {
        ResolvedIdentity {
            principal_id: principal.into(),
            tenant_id: "t".into(),
            access_token: Secret::new("header.payload.sig"),
            expires_at,
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("time")
    }

    #[test]
    fn an_identity_is_reused_only_for_the_same_service_account_and_claim() {
        let cache = IdentityCache::default();
        cache.insert(
            key("a", "uid-1", "c1"),
            identity("p1", at(4_600)),
            at(1_000),
        );
        let hit = cache.get(&key("a", "uid-1", "c1"), at(1_010));
        assert_eq!(hit.map(|i| i.principal_id).as_deref(), Some("p1"));
        for other in [
            key("b", "uid-1", "c1"),
            key("a", "uid-2", "c1"),
            key("a", "uid-1", "c2"),
        ] {
            assert!(cache.get(&other, at(1_010)).is_none(), "{other:?}");
        }
    }

    #[test]
    fn an_identity_goes_stale_before_its_token_is_due_for_refresh() {
        let cache = IdentityCache::default();
        // An hour of life: kept for 45% of it, 27 minutes.
        cache.insert(key("a", "u", "c"), identity("p", at(4_600)), at(1_000));
        assert!(cache.get(&key("a", "u", "c"), at(1_000 + 1_619)).is_some());
        assert!(cache.get(&key("a", "u", "c"), at(1_000 + 1_620)).is_none());
    }

    #[test]
    fn stale_entries_are_dropped_and_expired_tokens_never_kept() {
        let cache = IdentityCache::default();
        cache.insert(key("a", "u", "c"), identity("p", at(1_100)), at(1_000));
        cache.insert(key("b", "u", "c"), identity("p", at(900)), at(1_000));
        assert_eq!(cache.len(), 1, "an expired token is not kept");
        cache.insert(key("c", "u", "c"), identity("p", at(9_000)), at(1_050));
        assert_eq!(
            cache.len(),
            1,
            "the first went stale at 1045 and was dropped"
        );
        assert!(cache.get(&key("c", "u", "c"), at(1_050)).is_some());
    }
}
