//! The identity seal: proof, kept on a token Secret, that dbgrant itself resolved the identity
//! the Secret's token belongs to.
//!
//! After a restart the identity cache is empty, and proving a ServiceAccount's identity again
//! costs a TokenRequest and an Entra ID exchange per ServiceAccount even when no token is due.
//! The token Secret already holds a token for that identity, but a tenant can write its own
//! Secrets: an object id read from one could name anybody. So when dbgrant writes the Secret
//! after an exchange it also writes an HMAC, keyed by a key only the operator's namespace
//! holds, over everything the exchange proved (the grant, the ServiceAccount by uid, the
//! client id and tenant it claims, the scope, the object id Entra returned, and a digest of
//! the token itself). A restarted operator trusts the Secret's identity only when that HMAC
//! verifies; anything changed, by anyone, costs one ordinary exchange, never a wrong identity.

use base64::Engine as _;
use ring::hmac;
use sha2::{Digest, Sha256};

/// Annotation holding the seal.
pub const SEAL_ANNOTATION: &str = "dbgrant.io/identity-seal";
/// Annotation holding the object id the seal vouches for (the identity's principal).
pub const PRINCIPAL_ANNOTATION: &str = "dbgrant.io/principal-id";
/// Name of the Secret, in the operator's namespace, that holds the key.
pub const KEY_SECRET_NAME: &str = "dbgrant-identity-seal";
/// Data key of the key in that Secret.
pub const KEY_DATA: &str = "key";
/// Key length in bytes (HMAC-SHA256's block-sized key is more than it needs; 32 is its output).
pub const KEY_LEN: usize = 32;

/// What a seal vouches for: an exchange made for this ServiceAccount returned this principal
/// and this token.
#[derive(Clone, Debug)]
pub struct Sealed<'a> {
    /// uid of the grant whose Secret carries the seal.
    pub grant_uid: &'a str,
    /// Namespace of the grant and its ServiceAccount.
    pub namespace: &'a str,
    /// The ServiceAccount's name.
    pub service_account: &'a str,
    /// Its uid (one recreated under the same name proves nothing of the old one).
    pub service_account_uid: &'a str,
    /// The client id it claims.
    pub client_id: &'a str,
    /// The tenant of the exchange.
    pub tenant_id: &'a str,
    /// The scope the token is for, as the Secret's inputs name it.
    pub scope: String,
    /// The object id Entra ID returned.
    pub principal_id: &'a str,
    /// When the token expires (unix seconds): the proof is as old as the token.
    pub expires_on: i64,
    /// The token itself (only its SHA-256 enters the seal).
    pub token: &'a str,
}

impl Sealed<'_> {
    /// The bytes the HMAC covers: each field length-prefixed, so no two field lists share them.
    fn message(&self) -> Vec<u8> {
        let digest = Sha256::digest(self.token.as_bytes());
        let mut message = b"dbgrant-identity-seal/v1".to_vec();
        for field in [
            self.grant_uid.as_bytes(),
            self.namespace.as_bytes(),
            self.service_account.as_bytes(),
            self.service_account_uid.as_bytes(),
            self.client_id.as_bytes(),
            self.tenant_id.as_bytes(),
            self.scope.as_bytes(),
            self.principal_id.as_bytes(),
            &self.expires_on.to_be_bytes(),
            &digest[..],
        ] {
            message.extend_from_slice(&(field.len() as u64).to_be_bytes());
            message.extend_from_slice(field);
        }
        message
    }
}

/// The operator's sealing key. Its Debug shows nothing of the key.
pub struct SealKey(hmac::Key);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// A key from stored bytes; `None` when they are too short to be one of ours.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= KEY_LEN).then(|| Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// Fresh random key bytes, to be stored and then read back with [`Self::from_bytes`].
    ///
    /// # Errors
    /// When the system's random source fails.
    pub fn generate() -> Result<Vec<u8>, ring::error::Unspecified> {
        let mut bytes = vec![0u8; KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
        Ok(bytes)
    }

    /// The seal of `what` (base64url, no padding).
    pub fn seal(&self, what: &Sealed<'_>) -> String {
        let tag = hmac::sign(&self.0, &what.message());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `seal` is this key's seal of `what` (compared in constant time).
    pub fn verify(&self, what: &Sealed<'_>, seal: &str) -> bool {
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(seal) else {
            return false;
        };
        hmac::verify(&self.0, &what.message(), &tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> Sealed<'static> {
        Sealed {
            grant_uid: "g-uid",
            namespace: "shop",
            service_account: "api",
            service_account_uid: "sa-uid",
            client_id: "client",
            tenant_id: "tenant",
            scope: "CosmosDb".into(),
            principal_id: "oid-1",
            expires_on: 4_600,
            token: "header.payload.signature",
        }
    }

    fn key(byte: u8) -> SealKey {
        SealKey::from_bytes(&[byte; KEY_LEN]).unwrap()
    }

    #[test]
    fn a_seal_verifies_for_exactly_what_it_sealed() {
        let key = key(7);
        let seal = key.seal(&sealed());
        assert!(key.verify(&sealed(), &seal));
        let changes: [fn(&mut Sealed<'static>); 10] = [
            |s| s.grant_uid = "other",
            |s| s.namespace = "other",
            |s| s.service_account = "other",
            |s| s.service_account_uid = "other",
            |s| s.client_id = "other",
            |s| s.tenant_id = "other",
            |s| s.scope = "AzureSql".into(),
            |s| s.principal_id = "oid-2",
            |s| s.expires_on = 4_601,
            |s| s.token = "header.payload.other",
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut other = sealed();
            change(&mut other);
            assert!(!key.verify(&other, &seal), "field {i} changed");
        }
    }

    #[test]
    fn fields_cannot_be_shifted_between_each_other() {
        let key = key(7);
        let a = Sealed {
            namespace: "sho",
            service_account: "papi",
            ..sealed()
        };
        let b = Sealed {
            namespace: "shop",
            service_account: "api",
            ..sealed()
        };
        assert!(!key.verify(&b, &key.seal(&a)));
    }

    #[test]
    fn another_key_or_a_garbled_seal_proves_nothing() {
        let seal = key(7).seal(&sealed());
        assert!(!key(8).verify(&sealed(), &seal));
        for garbled in ["", "!!", "AAAA", &seal[1..], &format!("{seal}A")] {
            assert!(!key(7).verify(&sealed(), garbled), "{garbled:?}");
        }
    }

    #[test]
    fn short_keys_are_refused_and_generated_keys_differ() {
        assert!(SealKey::from_bytes(&[1; KEY_LEN - 1]).is_none());
        let (a, b) = (SealKey::generate().unwrap(), SealKey::generate().unwrap());
        assert_eq!(a.len(), KEY_LEN);
        assert_ne!(a, b);
        assert_eq!(format!("{:?}", key(7)), "SealKey(..)");
    }
}
