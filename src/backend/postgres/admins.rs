//! The ARM half of a PostgreSQL target's preflight: when the target names its flexible
//! server's ARM id, the operator's own principal must be one of the server's Microsoft Entra
//! administrators, under the role name it signs in as (`adminRole`). Checked before any
//! sign-in, so a missing admin is reported with the command that adds it rather than as a
//! refused password.
//!
//! [`FlexibleServers`] is the seam (the real client is `crate::azure::postgres`); [`decide`]
//! is the pure decision.

use crate::api::Reason;
use crate::backend::BackendError;
use crate::backend::entra_admin::{
    InMemoryServers, parse_server_id, same_tenant, server_not_found,
};

/// One Microsoft Entra administrator of a flexible server, as ARM lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntraAdministrator {
    /// Object id of the principal.
    pub object_id: String,
    /// The PostgreSQL role name it signs in as (`properties.principalName`).
    pub principal_name: String,
    /// `User`, `Group`, `ServicePrincipal` or `Unknown`.
    pub principal_type: String,
    /// Its tenant; empty when ARM does not say.
    pub tenant_id: String,
}

/// What ARM says of a server's administrators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Administrators {
    /// ARM has no such server (404).
    ServerNotFound,
    /// The server's administrators.
    Listed(Vec<EntraAdministrator>),
}

/// Reads a flexible server's Microsoft Entra administrators through ARM.
#[async_trait::async_trait]
pub trait FlexibleServers: Send + Sync {
    /// The administrators of server `server_id` (a full ARM id).
    ///
    /// # Errors
    /// As ARM calls fail (forbidden, throttled, unreachable), or `InvalidSpec` for an id that
    /// is not a flexible server's.
    async fn administrators(&self, server_id: &str) -> Result<Administrators, BackendError>;
}

pub use crate::backend::entra_admin::NoArm;

#[async_trait::async_trait]
impl FlexibleServers for NoArm {
    async fn administrators(&self, server_id: &str) -> Result<Administrators, BackendError> {
        Err(NoArm::refusal("Entra administrators", server_id))
    }
}

/// Flexible servers kept in memory, for tests of the layers above ARM: servers absent from
/// it are 404s.
pub type InMemoryFlexibleServers = InMemoryServers<Vec<EntraAdministrator>>;

#[async_trait::async_trait]
impl FlexibleServers for InMemoryFlexibleServers {
    async fn administrators(&self, server_id: &str) -> Result<Administrators, BackendError> {
        Ok(self
            .read(server_id)
            .map_or(Administrators::ServerNotFound, Administrators::Listed))
    }
}

/// Resource group and name of a flexible server's ARM id, when it is one.
pub fn server_parts(server_id: &str) -> Option<(&str, &str)> {
    parse_server_id(server_id)
        .filter(|id| id.is("Microsoft.DBforPostgreSQL", "flexibleServers"))
        .map(|id| (id.group, id.name))
}

/// Whether what ARM says lets the operator (`operator_object_id` of `operator_tenant_id`)
/// sign in to `server_id` as `admin_role`; otherwise `TargetNotPrepared` naming the fix.
///
/// # Errors
/// `TargetNotPrepared` when the server does not exist, the operator is not among its
/// administrators, or is one under another name or tenant.
pub fn decide(
    server_id: &str,
    admin_role: &str,
    operator_object_id: &str,
    operator_tenant_id: &str,
    seen: &Administrators,
) -> Result<(), BackendError> {
    let (group, name) = server_parts(server_id).unwrap_or(("<resource group>", server_id));
    let listed = match seen {
        Administrators::ServerNotFound => {
            return Err(server_not_found(
                "flexible server",
                server_id,
                "spec.postgres.serverResourceId",
            ));
        }
        Administrators::Listed(listed) => listed,
    };
    let add = format!(
        "az postgres flexible-server microsoft-entra-admin create --resource-group {group} --server-name {name} --display-name {admin_role} --object-id {operator_object_id} --type ServicePrincipal"
    );
    let Some(mine) = listed
        .iter()
        .find(|a| a.object_id.eq_ignore_ascii_case(operator_object_id))
    else {
        let others: Vec<&str> = listed.iter().map(|a| a.principal_name.as_str()).collect();
        let others = if others.is_empty() {
            "it has none".to_string()
        } else {
            format!("it has {}", others.join(", "))
        };
        return Err(BackendError::new(
            Reason::TargetNotPrepared,
            format!(
                "the operator's identity (object id {operator_object_id}) is not a Microsoft Entra administrator of flexible server {name} ({others}): run {add}"
            ),
        ));
    };
    if !same_tenant(&mine.tenant_id, operator_tenant_id) {
        return Err(BackendError::new(
            Reason::TargetNotPrepared,
            format!(
                "flexible server {name} has the operator's object id {operator_object_id} as an administrator of tenant {}, not of the operator's tenant {operator_tenant_id}: run {add}",
                mine.tenant_id
            ),
        ));
    }
    // PostgreSQL role names are case-sensitive: the operator signs in as exactly this name.
    if mine.principal_name != admin_role {
        return Err(BackendError::new(
            Reason::TargetNotPrepared,
            format!(
                "the operator's identity is a Microsoft Entra administrator of flexible server {name} under the name {}, not {admin_role}: set spec.postgres.adminRole to {}",
                mine.principal_name, mine.principal_name
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "/subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/shop/providers/Microsoft.DBforPostgreSQL/flexibleServers/shop-prod";
    const OPERATOR: &str = "0f6c7a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6";
    const TENANT: &str = "e1cda79e-17df-4173-935d-d4b1a3079db0";

    fn admin(object_id: &str, name: &str, tenant: &str) -> EntraAdministrator {
        EntraAdministrator {
            object_id: object_id.into(),
            principal_name: name.into(),
            principal_type: "ServicePrincipal".into(),
            tenant_id: tenant.into(),
        }
    }

    /// Ok, or the words the refusal's message must hold.
    type Expected = Result<(), Vec<&'static str>>;

    #[test]
    fn the_decision_table() {
        let other = "11111111-2222-3333-4444-555555555555";
        // (case, what ARM says, Ok or the words the message must hold)
        let cases: Vec<(&str, Administrators, Expected)> = vec![
            (
                "admin under the role name",
                Administrators::Listed(vec![
                    admin(other, "alice@contoso.com", TENANT),
                    admin(OPERATOR, "dbgrant", TENANT),
                ]),
                Ok(()),
            ),
            (
                "object id in another case",
                Administrators::Listed(vec![admin(&OPERATOR.to_uppercase(), "dbgrant", TENANT)]),
                Ok(()),
            ),
            (
                "ARM names no tenant",
                Administrators::Listed(vec![admin(OPERATOR, "dbgrant", "")]),
                Ok(()),
            ),
            (
                "server missing",
                Administrators::ServerNotFound,
                Err(vec![
                    "does not exist",
                    "404",
                    "spec.postgres.serverResourceId",
                ]),
            ),
            (
                "no administrators at all",
                Administrators::Listed(vec![]),
                Err(vec![
                    "it has none",
                    "az postgres flexible-server microsoft-entra-admin create --resource-group shop --server-name shop-prod --display-name dbgrant --object-id 0f6c7a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6 --type ServicePrincipal",
                ]),
            ),
            (
                "others are administrators",
                Administrators::Listed(vec![admin(other, "alice@contoso.com", TENANT)]),
                Err(vec![
                    "it has alice@contoso.com",
                    "microsoft-entra-admin create",
                ]),
            ),
            (
                "administrator under another name",
                Administrators::Listed(vec![admin(OPERATOR, "dbgrant-operator", TENANT)]),
                Err(vec![
                    "under the name dbgrant-operator, not dbgrant",
                    "set spec.postgres.adminRole to dbgrant-operator",
                ]),
            ),
            (
                "role names are case-sensitive",
                Administrators::Listed(vec![admin(OPERATOR, "DBGrant", TENANT)]),
                Err(vec!["under the name DBGrant"]),
            ),
            (
                "administrator of another tenant",
                Administrators::Listed(vec![admin(OPERATOR, "dbgrant", other)]),
                Err(vec!["tenant 11111111", "microsoft-entra-admin create"]),
            ),
        ];
        for (case, seen, expected) in cases {
            let got = decide(SERVER, "dbgrant", OPERATOR, TENANT, &seen);
            match (got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(error), Err(words)) => {
                    assert_eq!(error.reason, Reason::TargetNotPrepared, "{case}");
                    for word in words {
                        assert!(error.message.contains(word), "{case}: {}", error.message);
                    }
                }
                (got, expected) => panic!("{case}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn only_flexible_server_ids_are_taken() {
        // The shape and safety of ids are the shared parser's (entra_admin's tests).
        assert_eq!(server_parts(SERVER), Some(("shop", "shop-prod")));
        assert_eq!(
            server_parts(&SERVER.replace("Microsoft.DBforPostgreSQL", "microsoft.dbforpostgresql")),
            Some(("shop", "shop-prod"))
        );
        for bad in [
            "/subscriptions/s/resourceGroups/shop/providers/Microsoft.DocumentDB/databaseAccounts/a",
            "/subscriptions/s/resourceGroups/shop/providers/Microsoft.DBforPostgreSQL/servers/a",
            "/subscriptions/s/resourceGroups/shop/providers/Microsoft.DBforPostgreSQL/flexibleServers/a/administrators",
        ] {
            assert_eq!(server_parts(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_in_memory_servers_list_what_was_set_and_404_the_rest() {
        let servers = InMemoryFlexibleServers::default();
        servers.set(SERVER, vec![admin(OPERATOR, "dbgrant", TENANT)]);
        assert!(matches!(
            servers.administrators(SERVER).await,
            Ok(Administrators::Listed(list)) if list.len() == 1
        ));
        assert_eq!(
            servers.administrators("/subscriptions/x").await,
            Ok(Administrators::ServerNotFound)
        );
    }
}
