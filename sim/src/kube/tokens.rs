//! ServiceAccount tokens: TokenRequest, the OIDC discovery document and JWKS that let Entra
//! ID (or the Azure simulator) verify them, and authentication of requests carrying them.

use serde_json::{Value, json};

use super::errors::ApiError;
use crate::jwt::{SigningKey, now_secs};

/// The audience the API server accepts for requests (its own).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc";

/// The shortest token TokenRequest issues, in seconds.
pub const MIN_EXPIRATION: i64 = 600;

/// The issuer of ServiceAccount tokens.
pub struct Issuer {
    /// The `iss` claim and the OIDC issuer URL.
    pub url: String,
    key: SigningKey,
}

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum User {
    /// The admin token from the kubeconfig: every request is allowed.
    Admin,
    /// A ServiceAccount, authenticated by a token this server issued.
    ServiceAccount {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl User {
    /// The user name RBAC and messages use.
    pub fn name(&self) -> String {
        match self {
            Self::Admin => "kubernetes-admin".into(),
            Self::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }
}

impl Issuer {
    /// A new issuer at `url` with a fresh key.
    ///
    /// # Errors
    /// When key generation fails.
    pub fn new(url: String) -> anyhow::Result<Self> {
        Ok(Self {
            url,
            key: SigningKey::generate()?,
        })
    }

    /// `/.well-known/openid-configuration`.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.url,
            "jwks_uri": format!("{}/openid/v1/jwks", self.url),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    /// Sign arbitrary claims with the issuer's key (tests of verifiers: expired or
    /// wrongly addressed tokens the API server itself would never mint).
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        self.key.sign(claims)
    }

    /// `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        self.key.jwks()
    }

    /// Answer a TokenRequest for the ServiceAccount object `sa`.
    ///
    /// # Errors
    /// 400 for an expiration under the minimum or a malformed request.
    pub fn token_request(&self, sa: &Value, request: &Value) -> Result<Value, ApiError> {
        let namespace = sa["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = sa["metadata"]["name"].as_str().unwrap_or_default();
        let spec = &request["spec"];
        let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
        if expiration < MIN_EXPIRATION {
            return Err(ApiError::invalid(json!({
                "message": format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
                "details": {"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest",
                    "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: ... may not specify a duration less than 10 minutes", "field": "spec.expirationSeconds"}]},
            })));
        }
        let audiences: Vec<String> = match spec["audiences"].as_array() {
            Some(list) if !list.is_empty() => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => vec![API_AUDIENCE.to_string()],
        };
        let now = now_secs();
        let exp = now + expiration;
        let claims = json!({
            "iss": self.url,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "aud": audiences,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]},
            },
        });
        let token = self
            .key
            .sign(&claims)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut response = request.clone();
        response["apiVersion"] = json!("authentication.k8s.io/v1");
        response["kind"] = json!("TokenRequest");
        response["metadata"]["name"] = json!(name);
        response["metadata"]["namespace"] = json!(namespace);
        response["spec"]["audiences"] = json!(audiences);
        response["spec"]["expirationSeconds"] = json!(expiration);
        response["status"] = json!({
            "token": token,
            "expirationTimestamp": super::time::rfc3339(exp),
        });
        Ok(response)
    }

    /// The ServiceAccount a bearer token belongs to, when this server issued it for itself.
    pub fn authenticate(&self, token: &str) -> Option<User> {
        let claims = self
            .key
            .verify(token, Some(&[API_AUDIENCE]), Some(&self.url))
            .ok()?;
        let sub = claims["sub"].as_str()?;
        let rest = sub.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        Some(User::ServiceAccount {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}
