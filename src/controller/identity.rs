//! The Kubernetes half of identity resolution: which managed identity a ServiceAccount claims
//! (its workload identity annotations), and a token minted for that very ServiceAccount.
//!
//! The token is what makes borrowing impossible: Entra ID only exchanges it for the identity
//! whose federated credential names this ServiceAccount as subject, so naming another team's
//! client id in an annotation gets nothing.

use std::collections::BTreeMap;

use azure_core::credentials::Secret;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client};
use uuid::Uuid;

/// Annotation holding the managed identity's client id (Azure Workload Identity).
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// Annotation holding the identity's tenant id, when it differs from the operator's default.
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// Audience Entra ID expects on federated ServiceAccount tokens.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Lifetime asked for the ServiceAccount token; the API server's minimum is ten minutes and the
/// token is used at once.
const TOKEN_SECONDS: i64 = 600;

/// The identity a ServiceAccount claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedIdentity {
    /// Client (application) id of the user-assigned managed identity.
    pub client_id: String,
    /// Entra ID tenant to exchange the token in.
    pub tenant_id: String,
}

/// Why a ServiceAccount's annotations name no usable identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// No client id annotation.
    #[error(
        "ServiceAccount {0} has no {CLIENT_ID_ANNOTATION} annotation; add the client id of its managed identity"
    )]
    MissingClientId(String),
    /// The client id annotation is not a GUID.
    #[error("ServiceAccount {name} has {CLIENT_ID_ANNOTATION}={value:?}, which is not a GUID")]
    InvalidClientId {
        /// The ServiceAccount.
        name: String,
        /// The annotation's value.
        value: String,
    },
    /// No tenant annotation and no operator default tenant.
    #[error(
        "ServiceAccount {0} has no {TENANT_ID_ANNOTATION} annotation and the operator has no default tenant (--azure-tenant-id)"
    )]
    MissingTenant(String),
    /// The tenant annotation is not a GUID.
    #[error("ServiceAccount {name} has {TENANT_ID_ANNOTATION}={value:?}, which is not a GUID")]
    InvalidTenant {
        /// The ServiceAccount.
        name: String,
        /// The annotation's value.
        value: String,
    },
}

/// Read the identity a ServiceAccount claims from its annotations. The tenant falls back to
/// `default_tenant` (the operator's own) as Azure Workload Identity's webhook does.
pub fn claimed_identity(
    name: &str,
    annotations: &BTreeMap<String, String>,
    default_tenant: Option<&str>,
) -> Result<ClaimedIdentity, AnnotationError> {
    let client_id = annotations
        .get(CLIENT_ID_ANNOTATION)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AnnotationError::MissingClientId(name.to_string()))?;
    let client_id = canonical_guid(client_id).ok_or_else(|| AnnotationError::InvalidClientId {
        name: name.to_string(),
        value: client_id.to_string(),
    })?;
    let tenant = match annotations.get(TENANT_ID_ANNOTATION).map(|v| v.trim()) {
        Some(value) if !value.is_empty() => {
            canonical_guid(value).ok_or_else(|| AnnotationError::InvalidTenant {
                name: name.to_string(),
                value: value.to_string(),
            })?
        }
        _ => default_tenant
            .map(str::to_string)
            .ok_or_else(|| AnnotationError::MissingTenant(name.to_string()))?,
    };
    Ok(ClaimedIdentity {
        client_id,
        tenant_id: tenant,
    })
}

fn canonical_guid(value: &str) -> Option<String> {
    Uuid::parse_str(value)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// Mint a short-lived token for ServiceAccount `name` of `namespace` with the token-exchange
/// audience, through the TokenRequest API.
///
/// # Errors
/// The API server's error: 404 when the ServiceAccount is gone, 403 when the operator may not
/// create tokens for it.
pub async fn mint_exchange_token(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Secret, kube::Error> {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.to_string()],
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let response = api
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    let token = response.status.map(|s| s.token).unwrap_or_default();
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "3f2a1c9e-7b4d-4e8a-9c2f-5d6b8a1e0f47";
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_client_id_annotation_names_the_identity_and_the_tenant_falls_back() {
        let found = claimed_identity(
            "api",
            &annotations(&[(CLIENT_ID_ANNOTATION, CLIENT)]),
            Some(TENANT),
        );
        assert_eq!(
            found,
            Ok(ClaimedIdentity {
                client_id: CLIENT.into(),
                tenant_id: TENANT.into()
            })
        );
        let upper = claimed_identity(
            "api",
            &annotations(&[
                (CLIENT_ID_ANNOTATION, &CLIENT.to_uppercase()),
                (TENANT_ID_ANNOTATION, TENANT),
            ]),
            None,
        )
        .expect("valid");
        assert_eq!(
            upper.client_id, CLIENT,
            "GUIDs are normalised to lower case"
        );
    }

    #[test]
    fn missing_or_malformed_annotations_are_explained() {
        assert!(matches!(
            claimed_identity("api", &BTreeMap::new(), Some(TENANT)),
            Err(AnnotationError::MissingClientId(_))
        ));
        let bad = claimed_identity(
            "api",
            &annotations(&[(CLIENT_ID_ANNOTATION, "my-app")]),
            Some(TENANT),
        );
        assert!(matches!(bad, Err(AnnotationError::InvalidClientId { .. })));
        assert!(bad.unwrap_err().to_string().contains("not a GUID"));
        assert!(matches!(
            claimed_identity("api", &annotations(&[(CLIENT_ID_ANNOTATION, CLIENT)]), None),
            Err(AnnotationError::MissingTenant(_))
        ));
        assert!(matches!(
            claimed_identity(
                "api",
                &annotations(&[
                    (CLIENT_ID_ANNOTATION, CLIENT),
                    (TENANT_ID_ANNOTATION, "contoso")
                ]),
                Some(TENANT)
            ),
            Err(AnnotationError::InvalidTenant { .. })
        ));
    }
}
