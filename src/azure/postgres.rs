//! Azure Database for PostgreSQL flexible servers through ARM: the one read the operator makes,
//! the server's Microsoft Entra administrators (api-version 2024-08-01, the stable version
//! carrying them), for the PostgreSQL backend's preflight.

use serde::Deserialize;

use super::admins::{Administrator, naming_the_permission};
use super::arm::Arm;
use crate::api::Reason;
use crate::backend::BackendError;
use crate::backend::postgres::admins::{
    Administrators, EntraAdministrator, FlexibleServers, server_parts,
};

/// The Microsoft.DBforPostgreSQL api-version used for flexible servers.
pub const POSTGRES_API_VERSION: &str = "2024-08-01";

/// The properties of one entry of `GET .../flexibleServers/{name}/administrators`.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AdministratorProperties {
    principal_type: Option<String>,
    principal_name: Option<String>,
    object_id: Option<String>,
    tenant_id: Option<String>,
}

impl From<Administrator<AdministratorProperties>> for EntraAdministrator {
    fn from(a: Administrator<AdministratorProperties>) -> Self {
        let p = a.properties;
        Self {
            // The resource's name is the object id too; older versions may omit the property.
            object_id: p.object_id.unwrap_or(a.name),
            principal_name: p.principal_name.unwrap_or_default(),
            principal_type: p.principal_type.unwrap_or_default(),
            tenant_id: p.tenant_id.unwrap_or_default(),
        }
    }
}

/// Flexible servers read through the operator's authenticated ARM client.
pub struct AzureFlexibleServers {
    arm: Arm,
}

impl AzureFlexibleServers {
    /// Read through `arm`.
    pub fn new(arm: Arm) -> Self {
        Self { arm }
    }
}

#[async_trait::async_trait]
impl FlexibleServers for AzureFlexibleServers {
    async fn administrators(&self, server_id: &str) -> Result<Administrators, BackendError> {
        if server_parts(server_id).is_none() {
            return Err(BackendError::new(
                Reason::InvalidSpec,
                format!("'{server_id}' is not a PostgreSQL flexible server resource id"),
            ));
        }
        let path = format!("{}/administrators", server_id.trim_end_matches('/'));
        let url = self.arm.url(&path, POSTGRES_API_VERSION)?;
        let what = format!("listing the Microsoft Entra administrators of {server_id}");
        match self
            .arm
            .list::<Administrator<AdministratorProperties>>(
                "postgres_administrators_list",
                &what,
                url,
            )
            .await
        {
            Ok(listed) => Ok(Administrators::Listed(
                listed.into_iter().map(EntraAdministrator::from).collect(),
            )),
            Err(error) if error.is_not_found() => Ok(Administrators::ServerNotFound),
            Err(error) => Err(naming_the_permission(
                error,
                "Microsoft.DBforPostgreSQL/flexibleServers/administrators/read on the server (Reader does)",
            )),
        }
    }
}
