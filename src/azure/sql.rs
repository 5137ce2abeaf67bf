//! T-SQL servers through ARM: the one read the operator makes, the server's Microsoft Entra
//! admin, for the SQL backend's preflight. Logical servers and managed instances list theirs
//! under `administrators` (Microsoft.Sql, api-version 2023-08-01); a Synapse workspace has one
//! `administrators/activeDirectory` (Microsoft.Synapse, 2021-06-01).

use serde::Deserialize;

use super::admins::{Administrator, naming_the_permission};
use super::arm::Arm;
use crate::api::Reason;
use crate::backend::BackendError;
use crate::backend::sql::admins::{EntraAdmin, ServerAdmin, ServerKind, SqlServers, server_parts};

/// The Microsoft.Sql api-version used for servers and managed instances.
pub const SQL_API_VERSION: &str = "2023-08-01";
/// The Microsoft.Synapse api-version used for workspaces.
pub const SYNAPSE_API_VERSION: &str = "2021-06-01";

/// The properties of an administrator resource, as all three kinds return it.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AdministratorProperties {
    administrator_type: Option<String>,
    login: Option<String>,
    sid: Option<String>,
    tenant_id: Option<String>,
    #[serde(rename = "azureADOnlyAuthentication")]
    azure_ad_only_authentication: Option<bool>,
}

impl AdministratorProperties {
    /// The Entra admin it describes; `None` for another type of administrator.
    fn entra(self) -> Option<EntraAdmin> {
        let entra = self
            .administrator_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("ActiveDirectory"));
        (entra && self.sid.is_some()).then(|| EntraAdmin {
            login: self.login.unwrap_or_default(),
            sid: self.sid.unwrap_or_default(),
            tenant_id: self.tenant_id.unwrap_or_default(),
            azure_ad_only: self.azure_ad_only_authentication,
        })
    }
}

/// T-SQL servers read through the operator's authenticated ARM client.
pub struct AzureSqlServers {
    arm: Arm,
}

impl AzureSqlServers {
    /// Read through `arm`.
    pub fn new(arm: Arm) -> Self {
        Self { arm }
    }

    async fn synapse(&self, server_id: &str, what: &str) -> Result<ServerAdmin, BackendError> {
        let url = self.arm.url(
            &format!("{server_id}/administrators/activeDirectory"),
            SYNAPSE_API_VERSION,
        )?;
        if let Some(found) = self
            .arm
            .get_optional::<Administrator<AdministratorProperties>>(
                "synapse_administrator_get",
                what,
                url,
            )
            .await?
        {
            return Ok(found
                .properties
                .entra()
                .map_or(ServerAdmin::NotSet, ServerAdmin::Set));
        }
        // A workspace without an admin and a missing workspace both answer 404 there.
        let url = self.arm.url(server_id, SYNAPSE_API_VERSION)?;
        let workspace = self
            .arm
            .get_optional::<serde_json::Value>("synapse_workspace_get", what, url)
            .await?;
        Ok(match workspace {
            Some(_) => ServerAdmin::NotSet,
            None => ServerAdmin::ServerNotFound,
        })
    }
}

#[async_trait::async_trait]
impl SqlServers for AzureSqlServers {
    async fn entra_admin(&self, server_id: &str) -> Result<ServerAdmin, BackendError> {
        let Some((kind, _, _)) = server_parts(server_id) else {
            return Err(BackendError::new(
                Reason::InvalidSpec,
                format!(
                    "'{server_id}' is not the resource id of a SQL server, managed instance or Synapse workspace"
                ),
            ));
        };
        let server_id = server_id.trim_end_matches('/');
        let what = format!("reading the Microsoft Entra admin of {server_id}");
        let read = match kind {
            ServerKind::SynapseWorkspace => self.synapse(server_id, &what).await,
            ServerKind::Server | ServerKind::ManagedInstance => {
                let url = self
                    .arm
                    .url(&format!("{server_id}/administrators"), SQL_API_VERSION)?;
                match self
                    .arm
                    .list::<Administrator<AdministratorProperties>>(
                        "sql_administrators_list",
                        &what,
                        url,
                    )
                    .await
                {
                    Ok(listed) => Ok(listed
                        .into_iter()
                        .find_map(|a| a.properties.entra())
                        .map_or(ServerAdmin::NotSet, ServerAdmin::Set)),
                    Err(error) if error.is_not_found() => Ok(ServerAdmin::ServerNotFound),
                    Err(error) => Err(error),
                }
            }
        };
        let action = match kind {
            ServerKind::Server => "Microsoft.Sql/servers/administrators/read",
            ServerKind::ManagedInstance => "Microsoft.Sql/managedInstances/administrators/read",
            ServerKind::SynapseWorkspace => "Microsoft.Synapse/workspaces/administrators/read",
        };
        read.map_err(|error| {
            naming_the_permission(
                error,
                &format!(
                    "{action} on the {} (Reader does), or remove spec.sql.serverResourceId to skip this check",
                    kind.noun()
                ),
            )
        })
    }
}
