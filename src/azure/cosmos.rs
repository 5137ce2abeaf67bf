//! `AzureCosmos`: the real [`CosmosAccess`] — Cosmos DB accounts and SQL RBAC through ARM
//! (api-version 2025-10-15), the workload identity exchange at Entra ID, and the data-plane
//! access probe. One method per logical Azure operation; each makes its calls in one place.

use std::sync::Arc;

use azure_core::credentials::Secret;
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{Method, Url};
use k8s_openapi::jiff::Timestamp;

use super::arm::{Arm, COSMOS_API_VERSION};
use super::config::AzureConfig;
use super::error::arm_failure;
use super::models::{
    Account, AssignmentProperties, DefinitionProperties, Resource, role_assignment_body,
    role_definition_body,
};
use super::pipeline::{self, Call, Http};
use super::{credential, entra};
use crate::api::Reason;
use crate::backend::cosmos::{CosmosAccess, RoleAssignment, RoleDefinition, Scope};
use crate::backend::{BackendError, ResolvedIdentity};
use crate::backend::{IdentityExchange, TokenScope};
use crate::telemetry::Metrics;

/// The operator's Azure client for Cosmos DB.
pub struct AzureCosmos {
    arm: Arm,
    /// Unauthenticated pipeline: Entra token exchange and the data-plane probe carry their own
    /// credentials.
    plain: Http,
    authority_host: Url,
    /// The cloud, which decides each token scope.
    cloud: super::Cloud,
}

impl std::fmt::Debug for AzureCosmos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureCosmos")
            .field("authority_host", &self.authority_host.as_str())
            .finish_non_exhaustive()
    }
}

impl AzureCosmos {
    /// Build the client: TLS (system roots plus the extra CA), the operator's credential, and
    /// the pipelines. No network call is made here.
    ///
    /// # Errors
    /// When the extra CA bundle is unusable or the credential cannot be configured.
    pub async fn new(config: AzureConfig, metrics: Option<Metrics>) -> anyhow::Result<Self> {
        let transport = pipeline::transport(config.extra_ca_pem.as_deref())?;
        let token = credential::build(
            &config.credential,
            &config.tenant_id,
            &config.authority_host,
            transport.clone(),
            metrics.clone(),
        )?;
        let arm_scope = config.cloud.arm_scope(&config.arm_endpoint);
        let bearer: Arc<dyn Policy> =
            Arc::new(BearerTokenAuthorizationPolicy::new(token, [arm_scope]));
        let arm_http = Http::new(
            pipeline::pipeline(transport.clone(), vec![bearer]),
            config.timing.clone(),
            metrics.clone(),
        );
        let plain = Http::new(
            pipeline::pipeline(transport, Vec::new()),
            config.timing,
            metrics,
        );
        Ok(Self {
            arm: Arm::new(arm_http, config.arm_endpoint),
            plain,
            authority_host: config.authority_host,
            cloud: config.cloud,
        })
    }
}

impl AzureCosmos {
    /// The authenticated ARM client underneath, for the few ARM calls outside Cosmos DB RBAC
    /// that tests and tooling make (creating identities for end-to-end runs, say).
    pub fn arm(&self) -> &Arm {
        &self.arm
    }
}

/// A validated Cosmos DB account id, normalised without a trailing slash.
fn account_path(account_id: &str) -> Result<&str, BackendError> {
    let trimmed = account_id.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').collect();
    let shape_ok = segments.len() == 9
        && segments[0].is_empty()
        && segments[1].eq_ignore_ascii_case("subscriptions")
        && segments[3].eq_ignore_ascii_case("resourceGroups")
        && segments[5].eq_ignore_ascii_case("providers")
        && segments[6].eq_ignore_ascii_case("Microsoft.DocumentDB")
        && segments[7].eq_ignore_ascii_case("databaseAccounts");
    let chars_ok = segments[1..].iter().all(|s| {
        !s.is_empty()
            && *s != "."
            && *s != ".."
            // Resource group names may hold Unicode letters; the URL encodes them.
            && s.chars().all(|c| c.is_alphanumeric() || "-_.()".contains(c))
    });
    if shape_ok && chars_ok {
        Ok(trimmed)
    } else {
        Err(BackendError::new(
            Reason::InvalidSpec,
            format!("'{account_id}' is not a Cosmos DB account resource id"),
        ))
    }
}

/// The id of a role definition or assignment (a GUID in practice). It becomes a path segment,
/// so only characters that cannot change the path are accepted; Azure checks the GUID itself.
fn guid_segment(guid: &str) -> Result<&str, BackendError> {
    let safe = !guid.is_empty()
        && guid.len() <= 64
        && guid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if safe {
        Ok(guid)
    } else {
        Err(BackendError::new(
            Reason::InvalidSpec,
            format!("'{guid}' is not a role definition or assignment id"),
        ))
    }
}

/// The data-plane `Authorization` header for an Entra token, URL-encoded as Cosmos DB expects.
fn data_plane_authorization(token: &Secret) -> String {
    let raw = format!("type=aad&ver=1.0&sig={}", token.secret());
    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

/// `x-ms-date`: the current time in RFC 1123 form, always GMT.
fn rfc1123_now() -> String {
    Timestamp::now()
        .strftime("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

impl AzureCosmos {
    /// One role definition of the account; `None` when it does not exist.
    ///
    /// # Errors
    /// As the trait's calls (forbidden, throttled, unreachable, …).
    pub async fn get_role_definition(
        &self,
        account_id: &str,
        guid: &str,
    ) -> Result<Option<RoleDefinition>, BackendError> {
        let guid = guid_segment(guid)?;
        let url = self.child_url(account_id, &format!("sqlRoleDefinitions/{guid}"))?;
        let what = format!("reading SQL role definition {guid}");
        let found: Option<Resource<DefinitionProperties>> = self
            .arm
            .get_optional("role_definition_get", &what, url)
            .await?;
        Ok(found.map(RoleDefinition::from))
    }

    /// One role assignment of the account; `None` when it does not exist.
    ///
    /// # Errors
    /// As the trait's calls (forbidden, throttled, unreachable, …).
    pub async fn get_role_assignment(
        &self,
        account_id: &str,
        guid: &str,
    ) -> Result<Option<RoleAssignment>, BackendError> {
        let guid = guid_segment(guid)?;
        let url = self.child_url(account_id, &format!("sqlRoleAssignments/{guid}"))?;
        let what = format!("reading SQL role assignment {guid}");
        let found: Option<Resource<AssignmentProperties>> = self
            .arm
            .get_optional("role_assignment_get", &what, url)
            .await?;
        Ok(found.map(RoleAssignment::from))
    }

    fn child_url(&self, account_id: &str, child: &str) -> Result<Url, BackendError> {
        let account = account_path(account_id)?;
        self.arm
            .url(&format!("{account}/{child}"), COSMOS_API_VERSION)
    }
}

#[async_trait::async_trait]
impl IdentityExchange for AzureCosmos {
    async fn exchange(
        &self,
        tenant_id: &str,
        client_id: &str,
        service_account_token: &Secret,
        scope: &TokenScope,
    ) -> Result<ResolvedIdentity, BackendError> {
        entra::exchange(
            &self.plain,
            &self.authority_host,
            tenant_id,
            client_id,
            service_account_token,
            &self.cloud.scope(scope),
        )
        .await
    }
}

#[async_trait::async_trait]
impl CosmosAccess for AzureCosmos {
    async fn account_endpoint(&self, account_id: &str) -> Result<String, BackendError> {
        let account = account_path(account_id)?;
        let url = self.arm.url(account, COSMOS_API_VERSION)?;
        let what = format!("reading Cosmos DB account {account}");
        let found: Account = self
            .arm
            .get("account_get", &what, url)
            .await
            .map_err(|mut e| {
                if e.reason == Reason::TargetNotReady {
                    e.message =
                        format!("Cosmos DB account {account} was not found ({})", e.message);
                }
                e
            })?;
        found.properties.document_endpoint.ok_or_else(|| {
            BackendError::new(
                Reason::TargetNotReady,
                format!("{what}: the account has no documentEndpoint yet"),
            )
        })
    }

    async fn list_role_definitions(
        &self,
        account_id: &str,
    ) -> Result<Vec<RoleDefinition>, BackendError> {
        let url = self.child_url(account_id, "sqlRoleDefinitions")?;
        let what = format!("listing the SQL role definitions of {account_id}");
        let items: Vec<Resource<DefinitionProperties>> =
            self.arm.list("role_definitions_list", &what, url).await?;
        Ok(items.into_iter().map(RoleDefinition::from).collect())
    }

    async fn put_role_definition(
        &self,
        account_id: &str,
        definition: &RoleDefinition,
    ) -> Result<(), BackendError> {
        let guid = guid_segment(&definition.guid)?;
        let url = self.child_url(account_id, &format!("sqlRoleDefinitions/{guid}"))?;
        let what = format!(
            "writing SQL role definition {guid} ({})",
            definition.role_name
        );
        self.arm
            .put(
                "role_definition_put",
                &what,
                url,
                &role_definition_body(definition),
            )
            .await
    }

    async fn delete_role_definition(
        &self,
        account_id: &str,
        guid: &str,
    ) -> Result<(), BackendError> {
        let guid = guid_segment(guid)?;
        let url = self.child_url(account_id, &format!("sqlRoleDefinitions/{guid}"))?;
        let what = format!("deleting SQL role definition {guid}");
        self.arm.delete("role_definition_delete", &what, url).await
    }

    async fn list_role_assignments(
        &self,
        account_id: &str,
    ) -> Result<Vec<RoleAssignment>, BackendError> {
        let url = self.child_url(account_id, "sqlRoleAssignments")?;
        let what = format!("listing the SQL role assignments of {account_id}");
        let items: Vec<Resource<AssignmentProperties>> =
            self.arm.list("role_assignments_list", &what, url).await?;
        Ok(items.into_iter().map(RoleAssignment::from).collect())
    }

    async fn put_role_assignment(
        &self,
        account_id: &str,
        assignment: &RoleAssignment,
    ) -> Result<(), BackendError> {
        let guid = guid_segment(&assignment.guid)?;
        let url = self.child_url(account_id, &format!("sqlRoleAssignments/{guid}"))?;
        let what = format!(
            "writing SQL role assignment {guid} for principal {}",
            assignment.principal_id
        );
        self.arm
            .put(
                "role_assignment_put",
                &what,
                url,
                &role_assignment_body(assignment),
            )
            .await
    }

    async fn delete_role_assignment(
        &self,
        account_id: &str,
        guid: &str,
    ) -> Result<(), BackendError> {
        let guid = guid_segment(guid)?;
        let url = self.child_url(account_id, &format!("sqlRoleAssignments/{guid}"))?;
        let what = format!("deleting SQL role assignment {guid}");
        self.arm.delete("role_assignment_delete", &what, url).await
    }

    async fn probe(
        &self,
        endpoint: &str,
        scope: &Scope,
        access_token: &Secret,
    ) -> Result<bool, BackendError> {
        let base = Url::parse(endpoint)
            .ok()
            .filter(|u| u.scheme() == "https")
            .ok_or_else(|| {
                BackendError::new(
                    Reason::TargetNotReady,
                    format!("the account endpoint '{endpoint}' is not an https URL"),
                )
            })?;
        let path = scope.data_plane_path();
        let url = super::cloud::with_trailing_slash(base)
            .join(&path)
            .map_err(|e| {
                BackendError::new(Reason::InvalidSpec, format!("probing '{path}': {e}"))
            })?;
        let what = format!("reading /{path} on the data plane");
        let reply = self
            .plain
            .send(&Call {
                operation: "data_plane_probe",
                what: &what,
                method: Method::Get,
                url,
                headers: vec![
                    ("authorization", data_plane_authorization(access_token)),
                    ("x-ms-date", rfc1123_now()),
                    ("x-ms-version", "2018-12-31".to_string()),
                ],
                body: None,
            })
            .await?;
        match reply.status {
            200..=299 => Ok(true),
            401 | 403 => Ok(false),
            404 => Err(BackendError::new(
                Reason::InvalidSpec,
                format!("{what}: the database or container does not exist"),
            )),
            status => Err(arm_failure(
                &what,
                Some(status),
                &reply.body,
                reply.retry_after(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str =
        "/subscriptions/s-1/resourceGroups/rg/providers/Microsoft.DocumentDB/databaseAccounts/acct";

    #[test]
    fn account_ids_are_validated() {
        assert_eq!(account_path(&format!("{ACCOUNT}/")), Ok(ACCOUNT));
        let unicode = ACCOUNT.replace("/rg/", "/grün(1)/");
        assert_eq!(account_path(&unicode), Ok(unicode.as_str()));
        for bad in [
            "/subscriptions/s/resourceGroups/rg",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DocumentDB/databaseAccounts/a?x=1",
            "/subscriptions/s/resourceGroups/../providers/Microsoft.DocumentDB/databaseAccounts/a",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/servers/a",
        ] {
            assert_eq!(
                account_path(bad).map_err(|e| e.reason),
                Err(Reason::InvalidSpec),
                "{bad}"
            );
        }
        assert!(guid_segment("../x").is_err());
        assert!(guid_segment("a/b").is_err());
        assert_eq!(
            guid_segment("6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10"),
            Ok("6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10")
        );
    }

    #[test]
    fn data_plane_authorization_is_url_encoded() {
        let header = data_plane_authorization(&Secret::new("a.b+c"));
        assert_eq!(header, "type%3Daad%26ver%3D1.0%26sig%3Da.b%2Bc");
    }

    #[test]
    fn x_ms_date_is_rfc1123_gmt() {
        let date = rfc1123_now();
        assert!(date.ends_with(" GMT"), "{date}");
        assert!(
            k8s_openapi::jiff::fmt::rfc2822::parse(&date.replace("GMT", "+0000")).is_ok(),
            "{date}"
        );
    }
}
