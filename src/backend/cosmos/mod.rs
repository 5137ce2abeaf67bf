//! Cosmos DB (NoSQL API) data-plane RBAC: scopes, role definition ids and deterministic
//! role-assignment ids.
//!
//! Everything here is pure so retries, restarts and several replicas always compute the same
//! ids: the assignment id is a UUIDv5 over (principal, role definition, scope), which makes a
//! PUT idempotent and lets grants that want the same access share one assignment.

mod backend;

use azure_core::credentials::Secret;
use uuid::Uuid;

pub use backend::CosmosBackend;

use super::BackendError;
use crate::api::{CosmosTarget, DatabaseAccessGrantSpec};

/// UUIDv5 namespace of every id dbgrant derives. Changing it would orphan existing assignments.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d62_6772_616e_7400_8a1e_4c0b_9f3d_2e17);

/// GUID of the built-in "Cosmos DB Built-in Data Reader" role definition.
pub const BUILTIN_READER: &str = "00000000-0000-0000-0000-000000000001";
/// GUID of the built-in "Cosmos DB Built-in Data Contributor" role definition.
pub const BUILTIN_CONTRIBUTOR: &str = "00000000-0000-0000-0000-000000000002";

/// Where in an account a grant's access applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The whole account.
    Account,
    /// One database.
    Database(String),
    /// One container of one database.
    Container {
        /// The database holding the container.
        database: String,
        /// The container.
        container: String,
    },
}

impl Scope {
    /// The scope a grant asks for.
    pub fn of(spec: &DatabaseAccessGrantSpec) -> Self {
        match (&spec.database, &spec.container) {
            (Some(database), Some(container)) => Self::Container {
                database: database.clone(),
                container: container.clone(),
            },
            (Some(database), None) => Self::Database(database.clone()),
            // A container without a database is refused by the CRD's CEL rule; treat it as
            // the account so a hand-made object cannot widen into something unexpected.
            (None, _) => Self::Account,
        }
    }

    /// The fully qualified data-plane resource path Cosmos DB expects in `properties.scope`.
    pub fn resource_path(&self, account_id: &str) -> String {
        let account_id = account_id.trim_end_matches('/');
        match self {
            Self::Account => account_id.to_string(),
            Self::Database(db) => format!("{account_id}/dbs/{db}"),
            Self::Container {
                database,
                container,
            } => format!("{account_id}/dbs/{database}/colls/{container}"),
        }
    }

    /// The data-plane path of the scope relative to the account endpoint (`""`, `dbs/{db}` or
    /// `dbs/{db}/colls/{coll}`): what the access probe reads.
    pub fn data_plane_path(&self) -> String {
        match self {
            Self::Account => String::new(),
            Self::Database(db) => format!("dbs/{db}"),
            Self::Container {
                database,
                container,
            } => format!("dbs/{database}/colls/{container}"),
        }
    }
}

/// The GUID of the role definition behind `role` on `target`: a built-in, or the deterministic
/// id of a custom role the target declares. `None` when the target declares no such role.
pub fn role_definition_guid(
    target_name: &str,
    target: &CosmosTarget,
    role: &str,
) -> Option<String> {
    match role {
        "reader" => Some(BUILTIN_READER.to_string()),
        "contributor" => Some(BUILTIN_CONTRIBUTOR.to_string()),
        custom if target.roles.contains_key(custom) => {
            Some(custom_role_guid(target_name, target, custom))
        }
        _ => None,
    }
}

/// Deterministic GUID of a custom role definition: one per (account, target, role name). The
/// target is part of it because a custom role is its target's own: two targets on one account
/// declaring a role of the same name must not write over each other's definition.
pub fn custom_role_guid(target_name: &str, target: &CosmosTarget, role: &str) -> String {
    let name = format!(
        "sqlRoleDefinition|{}|{target_name}|{role}",
        target.account_resource_id.to_ascii_lowercase()
    );
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string()
}

/// Display name of a custom role definition owned by target `target_name` (unique per
/// account, as Cosmos DB requires).
pub fn owned_role_name(target_name: &str, role: &str) -> String {
    format!("dbgrant/{target_name}/{role}")
}

/// Whether `assignment` is one dbgrant made: its GUID is the deterministic one of its own
/// principal, role definition and scope. Nobody else names assignments in our UUIDv5
/// namespace, so this needs no record of its own.
pub fn made_by_dbgrant(assignment: &RoleAssignment) -> bool {
    role_assignment_guid(
        &assignment.principal_id,
        &assignment.role_definition_id,
        &assignment.scope,
    )
    .eq_ignore_ascii_case(&assignment.guid)
}

/// The account id and GUID of a role-assignment id, when it is one.
pub fn parse_assignment_id(id: &str) -> Option<(&str, &str)> {
    // ARM ids are case-insensitive; the ledger keeps them lower-cased.
    const SEGMENT: &str = "/sqlroleassignments/";
    let at = id.to_ascii_lowercase().rfind(SEGMENT)?;
    let (account, guid) = (&id[..at], &id[at + SEGMENT.len()..]);
    let account_ok = account
        .to_ascii_lowercase()
        .contains("/providers/microsoft.documentdb/databaseaccounts/");
    (account_ok && Uuid::parse_str(guid).is_ok()).then_some((account, guid))
}

/// Full ARM id of a role definition of the account.
pub fn role_definition_id(account_id: &str, guid: &str) -> String {
    format!(
        "{}/sqlRoleDefinitions/{guid}",
        account_id.trim_end_matches('/')
    )
}

/// Deterministic GUID of the role assignment for (principal, role definition, scope).
///
/// ARM ids are case-insensitive, so the inputs are lower-cased first: the same access written
/// with different casing still maps to one assignment.
pub fn role_assignment_guid(principal_id: &str, role_definition_id: &str, scope: &str) -> String {
    let name = format!(
        "sqlRoleAssignment|{}|{}|{}",
        principal_id.to_ascii_lowercase(),
        role_definition_id.to_ascii_lowercase(),
        scope.trim_end_matches('/').to_ascii_lowercase()
    );
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string()
}

/// Full ARM id of a role assignment of the account.
pub fn role_assignment_id(account_id: &str, guid: &str) -> String {
    format!(
        "{}/sqlRoleAssignments/{guid}",
        account_id.trim_end_matches('/')
    )
}

/// A SQL role assignment as dbgrant manages it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignment {
    /// The assignment's GUID (the last segment of its ARM id).
    pub guid: String,
    /// Full ARM id of the role definition.
    pub role_definition_id: String,
    /// Fully qualified data-plane scope.
    pub scope: String,
    /// Object id of the principal.
    pub principal_id: String,
}

/// A custom SQL role definition as dbgrant manages it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleDefinition {
    /// The definition's GUID.
    pub guid: String,
    /// Display name, unique per account.
    pub role_name: String,
    /// Data actions it allows.
    pub data_actions: Vec<String>,
    /// Scopes it may be assigned at (the account).
    pub assignable_scopes: Vec<String>,
    /// `true` for Cosmos DB's built-in definitions.
    pub built_in: bool,
}

/// Everything the reconcilers need from Azure for Cosmos DB grants. The one implementation
/// that talks HTTP lives in `azure/`; each method is one logical Azure operation.
#[async_trait::async_trait]
pub trait CosmosAccess: Send + Sync {
    /// The account's data-plane endpoint. Fails when the account does not exist or the
    /// operator may not read it.
    async fn account_endpoint(&self, account_id: &str) -> Result<String, BackendError>;

    /// Every role definition of the account, built-ins included.
    async fn list_role_definitions(
        &self,
        account_id: &str,
    ) -> Result<Vec<RoleDefinition>, BackendError>;

    /// Create or update a custom role definition (idempotent by its GUID).
    async fn put_role_definition(
        &self,
        account_id: &str,
        definition: &RoleDefinition,
    ) -> Result<(), BackendError>;

    /// Delete a custom role definition; a missing one is not an error.
    async fn delete_role_definition(
        &self,
        account_id: &str,
        guid: &str,
    ) -> Result<(), BackendError>;

    /// Every role assignment of the account (one call, however many grants).
    async fn list_role_assignments(
        &self,
        account_id: &str,
    ) -> Result<Vec<RoleAssignment>, BackendError>;

    /// Create the assignment (idempotent by its deterministic GUID).
    async fn put_role_assignment(
        &self,
        account_id: &str,
        assignment: &RoleAssignment,
    ) -> Result<(), BackendError>;

    /// Delete an assignment; a missing one is not an error.
    async fn delete_role_assignment(
        &self,
        account_id: &str,
        guid: &str,
    ) -> Result<(), BackendError>;

    /// Read the metadata of the scope itself (account, database or container) on the data plane
    /// with the workload's token — the narrowest read the assignment must allow:
    /// `Ok(true)` when allowed, `Ok(false)` when refused (401/403).
    async fn probe(
        &self,
        endpoint: &str,
        scope: &Scope,
        access_token: &Secret,
    ) -> Result<bool, BackendError>;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{CosmosRole, DeletionPolicy};

    const ACCOUNT: &str = "/subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/demo/providers/Microsoft.DocumentDB/databaseAccounts/demo";

    fn target() -> CosmosTarget {
        CosmosTarget {
            account_resource_id: ACCOUNT.to_string(),
            endpoint: None,
            verify_access: true,
            roles: BTreeMap::from([(
                "metadata-reader".to_string(),
                CosmosRole {
                    data_actions: vec!["Microsoft.DocumentDB/databaseAccounts/readMetadata".into()],
                },
            )]),
        }
    }

    fn grant(database: Option<&str>, container: Option<&str>) -> DatabaseAccessGrantSpec {
        DatabaseAccessGrantSpec {
            service_account_name: "api".into(),
            target: "t".into(),
            role: "reader".into(),
            database: database.map(Into::into),
            container: container.map(Into::into),
            token_secret: None,
            deletion_policy: DeletionPolicy::Delete,
        }
    }

    #[test]
    fn scopes_are_fully_qualified_paths_at_each_level() {
        assert_eq!(
            Scope::of(&grant(None, None)).resource_path(ACCOUNT),
            ACCOUNT
        );
        assert_eq!(
            Scope::of(&grant(Some("orders"), None)).resource_path(ACCOUNT),
            format!("{ACCOUNT}/dbs/orders")
        );
        assert_eq!(
            Scope::of(&grant(Some("orders"), Some("items"))).resource_path(&format!("{ACCOUNT}/")),
            format!("{ACCOUNT}/dbs/orders/colls/items")
        );
        assert_eq!(Scope::of(&grant(None, Some("items"))), Scope::Account);
    }

    #[test]
    fn built_in_and_declared_custom_roles_resolve_and_unknown_roles_do_not() {
        let t = target();
        assert_eq!(
            role_definition_guid("t", &t, "reader").as_deref(),
            Some(BUILTIN_READER)
        );
        assert_eq!(
            role_definition_guid("t", &t, "contributor").as_deref(),
            Some(BUILTIN_CONTRIBUTOR)
        );
        let custom = role_definition_guid("t", &t, "metadata-reader").expect("declared");
        assert_eq!(custom, custom_role_guid("t", &t, "metadata-reader"));
        assert_ne!(
            custom,
            custom_role_guid("other", &t, "metadata-reader"),
            "a custom role is its target's own"
        );
        assert!(Uuid::parse_str(&custom).is_ok());
        assert_eq!(role_definition_guid("t", &t, "writer"), None);
    }

    #[test]
    fn assignment_ids_are_stable_case_insensitive_and_distinct_per_input() {
        let role = role_definition_id(ACCOUNT, BUILTIN_READER);
        let a = role_assignment_guid("AAAA-1", &role, ACCOUNT);
        assert_eq!(
            a,
            role_assignment_guid("aaaa-1", &role.to_uppercase(), &format!("{ACCOUNT}/"))
        );
        assert_ne!(a, role_assignment_guid("aaaa-2", &role, ACCOUNT));
        assert_ne!(
            a,
            role_assignment_guid(
                "aaaa-1",
                &role_definition_id(ACCOUNT, BUILTIN_CONTRIBUTOR),
                ACCOUNT
            )
        );
        assert_ne!(
            a,
            role_assignment_guid("aaaa-1", &role, &format!("{ACCOUNT}/dbs/x"))
        );
        assert_eq!(Uuid::parse_str(&a).map(|u| u.get_version_num()), Ok(5));
    }
}
