//! The ARM half of a T-SQL target's preflight: when the target names its server's ARM id (a
//! logical server, a managed instance or a Synapse workspace), ARM is asked who the server's
//! Microsoft Entra admin is before any sign-in. The operator may act when it is that admin,
//! **or** when the T-SQL half finds it holds the rights itself (db_owner, ALTER ANY USER): an
//! admin that is a group the operator belongs to, or a contained user an admin made for it,
//! is only visible from inside the database. So ARM alone refuses only a server that does not
//! exist; otherwise its answer decides which fixes the refusal names.
//!
//! [`SqlServers`] is the seam (the real client is `crate::azure::sql`); [`decide`] is the pure
//! decision.

use crate::backend::BackendError;
use crate::backend::entra_admin::{
    InMemoryServers, parse_server_id, same_tenant, server_not_found,
};

/// The server's Microsoft Entra admin, as ARM shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntraAdmin {
    /// The admin's login name (`properties.login`).
    pub login: String,
    /// Its id (`properties.sid`): documented as the object id; applications set by their
    /// client id show that instead, so both are compared.
    pub sid: String,
    /// Its tenant; empty when ARM does not say.
    pub tenant_id: String,
    /// Whether only Entra sign-ins are accepted, when ARM says.
    pub azure_ad_only: Option<bool>,
}

/// What ARM says of a server's Entra admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAdmin {
    /// ARM has no such server (404).
    ServerNotFound,
    /// The server exists with no Entra admin.
    NotSet,
    /// The server's Entra admin.
    Set(EntraAdmin),
}

/// Reads a T-SQL server's Microsoft Entra admin through ARM.
#[async_trait::async_trait]
pub trait SqlServers: Send + Sync {
    /// The Entra admin of `server_id` (a full ARM id of a server, managed instance or
    /// Synapse workspace).
    ///
    /// # Errors
    /// As ARM calls fail (forbidden, throttled, unreachable), or `InvalidSpec` for an id of
    /// another kind of resource.
    async fn entra_admin(&self, server_id: &str) -> Result<ServerAdmin, BackendError>;
}

pub use crate::backend::entra_admin::NoArm;

#[async_trait::async_trait]
impl SqlServers for NoArm {
    async fn entra_admin(&self, server_id: &str) -> Result<ServerAdmin, BackendError> {
        Err(NoArm::refusal("Entra admin", server_id))
    }
}

/// Servers kept in memory, for tests of the layers above ARM: servers absent from it are
/// 404s, and `None` is a server without an Entra admin.
pub type InMemorySqlServers = InMemoryServers<Option<EntraAdmin>>;

#[async_trait::async_trait]
impl SqlServers for InMemorySqlServers {
    async fn entra_admin(&self, server_id: &str) -> Result<ServerAdmin, BackendError> {
        Ok(match self.read(server_id) {
            None => ServerAdmin::ServerNotFound,
            Some(None) => ServerAdmin::NotSet,
            Some(Some(admin)) => ServerAdmin::Set(admin),
        })
    }
}

/// The kinds of resource a T-SQL target's `serverResourceId` may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// `Microsoft.Sql/servers` (Azure SQL Database's logical server).
    Server,
    /// `Microsoft.Sql/managedInstances`.
    ManagedInstance,
    /// `Microsoft.Synapse/workspaces`.
    SynapseWorkspace,
}

impl ServerKind {
    /// How messages name it.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Server => "SQL server",
            Self::ManagedInstance => "managed instance",
            Self::SynapseWorkspace => "Synapse workspace",
        }
    }

    /// The `az` command that makes `object_id` the Entra admin (run by someone who may).
    pub fn add_admin_command(self, group: &str, name: &str, object_id: &str) -> String {
        let (command, server_flag) = match self {
            Self::Server => ("az sql server ad-admin create", "--server-name"),
            Self::ManagedInstance => ("az sql mi ad-admin create", "--managed-instance"),
            Self::SynapseWorkspace => ("az synapse sql ad-admin create", "--workspace-name"),
        };
        format!(
            "{command} --resource-group {group} {server_flag} {name} --display-name dbgrant-operator --object-id {object_id}"
        )
    }
}

/// Kind, resource group and name of a server's ARM id, when it is one.
pub fn server_parts(server_id: &str) -> Option<(ServerKind, &str, &str)> {
    let id = parse_server_id(server_id)?;
    let kind = if id.is("Microsoft.Sql", "servers") {
        ServerKind::Server
    } else if id.is("Microsoft.Sql", "managedInstances") {
        ServerKind::ManagedInstance
    } else if id.is("Microsoft.Synapse", "workspaces") {
        ServerKind::SynapseWorkspace
    } else {
        return None;
    };
    Some((kind, id.group, id.name))
}

/// What ARM's answer means for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The operator is the server's Entra admin: dbo in every database.
    Admin,
    /// It is not (or not visibly): it may still hold the rights in the database. `why` says
    /// what ARM showed; `fix` is the command that makes it the admin.
    NotAdmin { why: String, fix: String },
}

/// What ARM's answer about `server_id` means for the operator (`operator_object_id` and
/// `operator_client_id` of `operator_tenant_id`).
///
/// # Errors
/// `TargetNotPrepared` when the server does not exist.
pub fn decide(
    server_id: &str,
    operator_object_id: &str,
    operator_client_id: &str,
    operator_tenant_id: &str,
    seen: &ServerAdmin,
) -> Result<Verdict, BackendError> {
    let (kind, group, name) =
        server_parts(server_id).unwrap_or((ServerKind::Server, "<resource group>", server_id));
    let fix = kind.add_admin_command(group, name, operator_object_id);
    let noun = kind.noun();
    let why = match seen {
        ServerAdmin::ServerNotFound => {
            return Err(server_not_found(
                noun,
                server_id,
                "spec.sql.serverResourceId",
            ));
        }
        ServerAdmin::NotSet => format!("{noun} {name} has no Microsoft Entra admin"),
        ServerAdmin::Set(admin) => {
            let mine = [operator_object_id, operator_client_id]
                .iter()
                .any(|id| !id.is_empty() && admin.sid.eq_ignore_ascii_case(id));
            match (mine, same_tenant(&admin.tenant_id, operator_tenant_id)) {
                (true, true) => return Ok(Verdict::Admin),
                (true, false) => format!(
                    "{noun} {name}'s Microsoft Entra admin has the operator's id but is of tenant {}, not the operator's {operator_tenant_id}",
                    admin.tenant_id
                ),
                (false, _) => format!(
                    "the Microsoft Entra admin of {noun} {name} is {} ({}), not the operator's identity (object id {operator_object_id})",
                    admin.login, admin.sid
                ),
            }
        }
    };
    Ok(Verdict::NotAdmin { why, fix })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Reason;

    const SERVER: &str = "/subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/shop/providers/Microsoft.Sql/servers/shop-sql";
    const OPERATOR: &str = "0f6c7a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6";
    const CLIENT: &str = "9a8b7c6d-1111-2222-3333-444455556666";
    const TENANT: &str = "e1cda79e-17df-4173-935d-d4b1a3079db0";

    fn admin(sid: &str, tenant: &str) -> ServerAdmin {
        ServerAdmin::Set(EntraAdmin {
            login: "some-admin".into(),
            sid: sid.into(),
            tenant_id: tenant.into(),
            azure_ad_only: Some(true),
        })
    }

    /// What the decision must come to: admin, not admin (with words the reason must hold), or
    /// refused (with words the message must hold).
    enum Expected {
        Admin,
        NotAdmin(Vec<&'static str>),
        Refused(Vec<&'static str>),
    }

    #[test]
    fn the_decision_table() {
        let other = "11111111-2222-3333-4444-555555555555";
        let mi = SERVER.replace("servers/shop-sql", "managedInstances/shop-mi");
        let ws = SERVER.replace(
            "Microsoft.Sql/servers/shop-sql",
            "Microsoft.Synapse/workspaces/shop-ws",
        );
        let cases: Vec<(&str, &str, ServerAdmin, Expected)> = vec![
            (
                "admin by object id",
                SERVER,
                admin(OPERATOR, TENANT),
                Expected::Admin,
            ),
            (
                "admin by client id",
                SERVER,
                admin(CLIENT, TENANT),
                Expected::Admin,
            ),
            (
                "object id in another case",
                SERVER,
                admin(&OPERATOR.to_uppercase(), TENANT),
                Expected::Admin,
            ),
            (
                "ARM names no tenant",
                SERVER,
                admin(OPERATOR, ""),
                Expected::Admin,
            ),
            (
                "server missing",
                SERVER,
                ServerAdmin::ServerNotFound,
                Expected::Refused(vec![
                    "SQL server",
                    "does not exist",
                    "404",
                    "spec.sql.serverResourceId",
                ]),
            ),
            (
                "no admin at all",
                SERVER,
                ServerAdmin::NotSet,
                Expected::NotAdmin(vec!["has no Microsoft Entra admin"]),
            ),
            (
                "someone else is admin",
                SERVER,
                admin(other, TENANT),
                Expected::NotAdmin(vec!["is some-admin (11111111-2222-3333-4444-555555555555)"]),
            ),
            (
                "admin of another tenant",
                SERVER,
                admin(OPERATOR, other),
                Expected::NotAdmin(vec!["of tenant 11111111"]),
            ),
            (
                "managed instance without admin",
                &mi,
                ServerAdmin::NotSet,
                Expected::NotAdmin(vec!["managed instance shop-mi"]),
            ),
            (
                "synapse workspace missing",
                &ws,
                ServerAdmin::ServerNotFound,
                Expected::Refused(vec!["Synapse workspace"]),
            ),
        ];
        for (case, server, seen, expected) in cases {
            let got = decide(server, OPERATOR, CLIENT, TENANT, &seen);
            match (got, expected) {
                (Ok(Verdict::Admin), Expected::Admin) => {}
                (Ok(Verdict::NotAdmin { why, fix }), Expected::NotAdmin(words)) => {
                    for word in words {
                        assert!(why.contains(word), "{case}: {why}");
                    }
                    assert!(
                        fix.contains(&format!("--object-id {OPERATOR}")),
                        "{case}: {fix}"
                    );
                }
                (Err(error), Expected::Refused(words)) => {
                    assert_eq!(error.reason, Reason::TargetNotPrepared, "{case}");
                    for word in words {
                        assert!(error.message.contains(word), "{case}: {}", error.message);
                    }
                }
                (got, _) => panic!("{case}: got {got:?}"),
            }
        }
    }

    #[test]
    fn the_fix_is_the_az_command_of_the_servers_kind() {
        assert_eq!(
            ServerKind::Server.add_admin_command("shop", "shop-sql", OPERATOR),
            format!(
                "az sql server ad-admin create --resource-group shop --server-name shop-sql --display-name dbgrant-operator --object-id {OPERATOR}"
            )
        );
        assert!(
            ServerKind::ManagedInstance
                .add_admin_command("g", "mi", OPERATOR)
                .starts_with("az sql mi ad-admin create --resource-group g --managed-instance mi ")
        );
        assert!(
            ServerKind::SynapseWorkspace
                .add_admin_command("g", "ws", OPERATOR)
                .starts_with(
                    "az synapse sql ad-admin create --resource-group g --workspace-name ws "
                )
        );
    }

    #[test]
    fn only_the_three_kinds_of_server_are_taken() {
        // The shape and safety of ids are the shared parser's (entra_admin's tests).
        assert_eq!(
            server_parts(SERVER),
            Some((ServerKind::Server, "shop", "shop-sql"))
        );
        assert_eq!(
            server_parts(&SERVER.replace("servers", "managedInstances")),
            Some((ServerKind::ManagedInstance, "shop", "shop-sql"))
        );
        assert_eq!(
            server_parts(&SERVER.replace("Microsoft.Sql/servers", "microsoft.synapse/Workspaces")),
            Some((ServerKind::SynapseWorkspace, "shop", "shop-sql"))
        );
        for bad in [
            "/subscriptions/s/resourceGroups/shop/providers/Microsoft.DBforPostgreSQL/flexibleServers/a",
            "/subscriptions/s/resourceGroups/shop/providers/Microsoft.Synapse/servers/a",
            "/subscriptions/s/resourceGroups/shop/providers/Microsoft.Sql/servers/a/databases",
            "/subscriptions/s/resourceGroups/shop/providers/Microsoft.Synapse/workspaces/a/sqlPools/p",
        ] {
            assert_eq!(server_parts(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_in_memory_servers_tell_missing_from_adminless() {
        let servers = InMemorySqlServers::default();
        servers.set(SERVER, None);
        assert_eq!(
            servers.entra_admin(&SERVER.to_uppercase()).await,
            Ok(ServerAdmin::NotSet)
        );
        assert_eq!(
            servers.entra_admin("/subscriptions/x").await,
            Ok(ServerAdmin::ServerNotFound)
        );
        assert_eq!(servers.calls(), 2);
    }
}
