//! RS256 signing keys shared by the simulated token issuers (the Kubernetes API server's
//! ServiceAccount issuer and Entra ID): generate a key, sign claims, publish the JWKS, and
//! verify tokens signed by the same key.

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

/// One RSA key with its key id, as an issuer publishes it.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A fresh 2048-bit key (the size real issuers use).
    ///
    /// # Errors
    /// When key generation fails.
    pub fn generate() -> anyhow::Result<Self> {
        let private =
            RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).context("generating RSA key")?;
        let der = private.to_pkcs1_der().context("encoding RSA key")?;
        let n = URL_SAFE_NO_PAD.encode(private.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(private.e().to_bytes_be());
        let kid = uuid::Uuid::new_v4().simple().to_string();
        let decoding = DecodingKey::from_rsa_components(&n, &e).context("public key")?;
        Ok(Self {
            jwk: json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": e}),
            kid,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            decoding,
        })
    }

    /// Sign `claims` as a JWT with this key's `kid`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).context("signing token")
    }

    /// The JWKS document publishing this key.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk.clone()]})
    }

    /// Verify a token this key signed: signature, `exp`/`nbf`, and (when given) `aud` and `iss`.
    /// Returns the claims.
    ///
    /// # Errors
    /// When the token is malformed, forged, expired or for another audience or issuer.
    pub fn verify(
        &self,
        token: &str,
        audiences: Option<&[&str]>,
        issuer: Option<&str>,
    ) -> Result<Value, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        validation.required_spec_claims.insert("exp".to_string());
        match audiences {
            Some(audiences) => validation.set_audience(audiences),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
        }
        jsonwebtoken::decode::<Value>(token, &self.decoding, &validation).map(|data| data.claims)
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The claims of a JWT without verifying it (to find its issuer before fetching keys).
pub fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `kid` of a JWT's header, unverified.
pub fn unverified_kid(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

/// Checks one issuer's tokens for one audience with the keys it publishes (its JWKS), as a
/// service trusting Entra ID does: signature, `exp`/`nbf`, `aud` and `iss`.
pub struct JwksVerifier {
    keys: std::collections::HashMap<String, DecodingKey>,
    audiences: Vec<String>,
    issuer: String,
}

impl JwksVerifier {
    /// A verifier from a JWKS document (RSA keys with a `kid`).
    ///
    /// # Errors
    /// When the document holds no usable RSA key.
    pub fn new(jwks: &Value, audience: &str, issuer: &str) -> anyhow::Result<Self> {
        Self::for_any(jwks, &[audience], issuer)
    }

    /// A verifier accepting any of `audiences` (Azure SQL's resource, with or without its
    /// trailing slash).
    ///
    /// # Errors
    /// When the document holds no usable RSA key.
    pub fn for_any(jwks: &Value, audiences: &[&str], issuer: &str) -> anyhow::Result<Self> {
        let mut keys = std::collections::HashMap::new();
        for key in jwks["keys"].as_array().into_iter().flatten() {
            let (Some(kid), Some(n), Some(e)) =
                (key["kid"].as_str(), key["n"].as_str(), key["e"].as_str())
            else {
                continue;
            };
            keys.insert(
                kid.to_string(),
                DecodingKey::from_rsa_components(n, e).context("an RSA key of the JWKS")?,
            );
        }
        anyhow::ensure!(!keys.is_empty(), "the JWKS holds no RSA key with a kid");
        Ok(Self {
            keys,
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            issuer: issuer.to_string(),
        })
    }

    /// The claims of `token`, if one of the keys signed it for the audience and issuer and it
    /// has not expired.
    ///
    /// # Errors
    /// When it is malformed, signed by an unknown key, expired, or for another audience or issuer.
    pub fn verify(&self, token: &str) -> anyhow::Result<Value> {
        let kid = unverified_kid(token).context("the token names no key (kid)")?;
        let key = self
            .keys
            .get(&kid)
            .context("the token's key is not published")?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        validation.required_spec_claims.insert("exp".to_string());
        validation.set_audience(&self.audiences);
        validation.set_issuer(&[self.issuer.as_str()]);
        Ok(jsonwebtoken::decode::<Value>(token, key, &validation)?.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_verify_and_tampered_or_foreign_ones_do_not() {
        let key = SigningKey::generate().unwrap();
        let now = now_secs();
        let claims = json!({"iss": "https://issuer", "aud": ["a"], "sub": "s", "exp": now + 60, "nbf": now - 1});
        let token = key.sign(&claims).unwrap();
        let verified = key
            .verify(&token, Some(&["a"]), Some("https://issuer"))
            .unwrap();
        assert_eq!(verified["sub"], "s");
        assert!(
            key.verify(&token, Some(&["b"]), None).is_err(),
            "wrong audience"
        );
        assert!(
            key.verify(&token, None, Some("https://other")).is_err(),
            "wrong issuer"
        );
        let other = SigningKey::generate().unwrap();
        assert!(
            other.verify(&token, None, None).is_err(),
            "another key's signature"
        );
        let expired = key.sign(&json!({"exp": now - 5})).unwrap();
        assert!(key.verify(&expired, None, None).is_err(), "expired");
        assert_eq!(unverified_claims(&token).unwrap()["iss"], "https://issuer");
        assert_eq!(
            key.jwks()["keys"][0]["kid"].as_str(),
            unverified_kid(&token).as_deref()
        );
    }

    #[test]
    fn a_jwks_verifier_accepts_only_its_keys_audience_issuer_and_unexpired_tokens() {
        let key = SigningKey::generate().unwrap();
        let now = now_secs();
        let verifier = JwksVerifier::new(&key.jwks(), "aud", "https://iss/").unwrap();
        let good = json!({"iss": "https://iss/", "aud": "aud", "oid": "o", "exp": now + 60});
        let claims = verifier.verify(&key.sign(&good).unwrap()).unwrap();
        assert_eq!(claims["oid"], "o");
        let mut other_audience = good.clone();
        other_audience["aud"] = json!("other");
        assert!(
            verifier
                .verify(&key.sign(&other_audience).unwrap())
                .is_err()
        );
        let mut other_issuer = good.clone();
        other_issuer["iss"] = json!("https://elsewhere/");
        assert!(verifier.verify(&key.sign(&other_issuer).unwrap()).is_err());
        let mut expired = good.clone();
        expired["exp"] = json!(now - 5);
        assert!(verifier.verify(&key.sign(&expired).unwrap()).is_err());
        let stranger = SigningKey::generate().unwrap();
        assert!(verifier.verify(&stranger.sign(&good).unwrap()).is_err());
        assert!(JwksVerifier::new(&json!({"keys": []}), "aud", "https://iss/").is_err());
    }
}
