//! `DatabaseTarget`: one database endpoint and the guard rails on who may use it.
//!
//! Cluster-scoped and owned by the platform team. App teams reference a target by name from a
//! `DatabaseAccessGrant`; the target decides which namespaces may do so and which roles they
//! may get.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The built-in roles every backend offers: read-only data access, and read-write data access.
pub const BUILTIN_ROLES: [&str; 2] = ["reader", "contributor"];

/// A database endpoint that app teams may be granted access to, with the rules for who may.
// Clippy reads repeated `type_ = ..` inside separate printcolumn(..) groups as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbgrant.io",
    version = "v1alpha1",
    kind = "DatabaseTarget",
    plural = "databasetargets",
    singular = "databasetarget",
    shortname = "dbtarget",
    shortname = "dbtargets",
    category = "dbgrant-all",
    status = "DatabaseTargetStatus",
    derive = "PartialEq",
    doc = "A database endpoint (a Cosmos DB account first) that app teams may be granted keyless access to, with the guard rails on which namespaces may use it and which roles they may get. Cluster-scoped; owned by the platform team.",
    printcolumn(
        name = "Backend",
        type_ = "string",
        json_path = ".status.backend",
        description = "Kind of database behind this target"
    ),
    printcolumn(
        name = "Account",
        type_ = "string",
        json_path = ".status.account",
        description = "Database account (or server) name"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the target is usable"
    ),
    printcolumn(
        name = "Grants",
        type_ = "integer",
        json_path = ".status.grantCount",
        description = "Number of grants using this target",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("[has(self.cosmos), has(self.postgres), has(self.sql)].filter(b, b).size() == 1").message("exactly one backend block must be set; supported: cosmos, postgres, sql"))]
#[x_kube(validation = Rule::new("!has(self.allowedRoles) || self.allowedRoles.all(r, has(self.postgres) ? (has(self.postgres.roles) && r in self.postgres.roles) : (r == 'reader' || r == 'contributor' || (has(self.cosmos) && has(self.cosmos.roles) && r in self.cosmos.roles) || (has(self.sql) && has(self.sql.roles) && r in self.sql.roles)))").message("every entry of allowedRoles must be declared: 'reader', 'contributor' or a custom role under cosmos.roles or sql.roles; for postgres, a role under postgres.roles (reader and contributor included)").field_path(".allowedRoles"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTargetSpec {
    /// An Azure Cosmos DB account (NoSQL API). Exactly one backend block is set per target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosmos: Option<CosmosTarget>,

    /// An Azure Database for PostgreSQL flexible server (one database on it). Exactly one
    /// backend block is set per target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresTarget>,

    /// An Azure SQL Database, SQL Managed Instance or Synapse SQL pool (one database on it).
    /// Exactly one backend block is set per target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlTarget>,

    /// Which namespaces may create grants against this target, by namespace labels.
    /// Absent: no namespace may use the target. `{}`: every namespace may.
    /// Example: `matchLabels: {team: shop}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,

    /// Roles that grants may ask for: the built-ins `reader` (read data and metadata) and
    /// `contributor` (read and write data), plus custom roles declared by the backend block.
    /// Empty or absent: no role may be granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(r, r.size() <= 63 && r.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$'))").message("role names are lowercase letters, digits and '-', start with a letter, and are at most 63 characters"))]
    pub allowed_roles: Vec<String>,
}

/// A Cosmos DB account (NoSQL API) whose data-plane RBAC dbgrant manages.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CosmosTarget {
    /// Full Azure Resource Manager id of the account, for example
    /// `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/shop/providers/Microsoft.DocumentDB/databaseAccounts/shop-prod`.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("self.matches('(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourcegroups/[^/]{1,90}/providers/microsoft[.]documentdb/databaseaccounts/[a-z0-9][-a-z0-9]{1,48}[a-z0-9]$')").message("must be the full ARM id of a Cosmos DB account: /subscriptions/<subscription GUID>/resourceGroups/<group>/providers/Microsoft.DocumentDB/databaseAccounts/<account>"))]
    pub account_resource_id: String,

    /// Data-plane endpoint of the account, for example `https://shop-prod.documents.azure.com:443/`.
    /// Default: read from the account in Azure. Set it for private endpoints or sovereign clouds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^https://[^/?#]+(/.*)?$')").message("must be an https:// URL"))]
    pub endpoint: Option<String>,

    /// Custom roles, by name, that grants may ask for when `allowedRoles` lists them. The
    /// operator creates one Cosmos DB SQL role definition per entry, owned by this target.
    /// Names must not be `reader` or `contributor`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(name, name.size() <= 63 && name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && name != 'reader' && name != 'contributor')").message("custom role names are lowercase letters, digits and '-', at most 63 characters, and must not be 'reader' or 'contributor'"))]
    pub roles: BTreeMap<String, CosmosRole>,

    /// Probe the data plane with each workload's token until access works, so a grant turns
    /// Ready only once RBAC has propagated. Default `true`. Set `false` when the operator cannot
    /// reach the account (for example a private endpoint in another network).
    #[serde(default = "default_true")]
    pub verify_access: bool,
}

fn default_true() -> bool {
    true
}

/// A custom Cosmos DB data-plane role.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CosmosRole {
    /// Data actions the role allows, for example
    /// `Microsoft.DocumentDB/databaseAccounts/readMetadata` or
    /// `Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read`.
    /// Wildcards (`*`) are allowed where Cosmos DB allows them.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.all(a, a.size() <= 256 && a.startsWith('Microsoft.DocumentDB/databaseAccounts/'))").message("every data action must start with 'Microsoft.DocumentDB/databaseAccounts/' and be at most 256 characters"))]
    pub data_actions: Vec<String>,
}

/// An Azure Database for PostgreSQL flexible server whose Entra-mapped login roles dbgrant
/// manages in one database.
///
/// The operator signs in as `adminRole` with its own Entra token and must be one of the
/// server's Entra admins (a member of `azure_pg_admin` with CREATEROLE) holding ADMIN OPTION
/// on every role named under `roles[*].memberOf`; otherwise the target reports
/// `TargetNotPrepared` with the statement that fixes it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresTarget {
    /// Host name of the server, for example `shop-prod.postgres.database.azure.com`. TLS is
    /// always verified against it.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$')").message("must be a host name (letters, digits, '-' and '.')"))]
    pub server: String,

    /// TCP port of the server. Default 5432.
    #[serde(default = "default_postgres_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,

    /// Full Azure Resource Manager id of the flexible server, for example
    /// `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/shop/providers/Microsoft.DBforPostgreSQL/flexibleServers/shop-prod`.
    /// Optional: when set, the operator checks in Azure that it is one of the server's Entra
    /// administrators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.matches('(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourcegroups/[^/]{1,90}/providers/microsoft[.]dbforpostgresql/flexibleservers/[a-z0-9][-a-z0-9]{1,61}[a-z0-9]$')").message("must be the full ARM id of a PostgreSQL flexible server: /subscriptions/<subscription GUID>/resourceGroups/<group>/providers/Microsoft.DBforPostgreSQL/flexibleServers/<server>"))]
    pub server_resource_id: Option<String>,

    /// The PostgreSQL role the operator's Entra identity signs in as: the name its Entra
    /// admin role was created under on the server, for example `dbgrant-operator`.
    #[x_kube(validation = Rule::new("self.size() >= 1 && bytes(self).size() <= 63").message("a PostgreSQL identifier: 1 to 63 bytes (longer names are truncated by PostgreSQL)"))]
    pub admin_role: String,

    /// Database grants apply in when a grant names none. Not `postgres`, `template0`,
    /// `template1`, `azure_maintenance` or `azure_sys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() >= 1 && bytes(self).size() <= 63 && !(self in ['postgres', 'template0', 'template1', 'azure_maintenance', 'azure_sys'])").message("a database name of 1 to 63 bytes, not postgres, template0, template1, azure_maintenance or azure_sys"))]
    pub database: Option<String>,

    /// What each role grants may ask for means in the database, by name: `reader`,
    /// `contributor` and custom roles alike (PostgreSQL has no built-in meaning for them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(name, name.size() <= 63 && name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$'))").message("role names are lowercase letters, digits and '-', and at most 63 characters"))]
    pub roles: BTreeMap<String, PostgresRole>,

    /// Sign in with each workload's token and check its privileges before a grant is Ready.
    /// Default `true`. Set `false` when the operator cannot reach the server as the workload.
    #[serde(default = "default_true")]
    pub verify_access: bool,
}

fn default_postgres_port() -> u16 {
    5432
}

/// What one role means on a PostgreSQL database: membership in platform-owned roles
/// (preferred: the platform decides their privileges), privileges on the tables of schemas,
/// or both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.memberOf) + size(self.schemas) >= 1").message("a role must name at least one role in memberOf or one schema"))]
pub struct PostgresRole {
    /// Platform-owned roles (usually NOLOGIN) the workload's login role becomes a member of,
    /// for example `app_reader`. The operator needs ADMIN OPTION on each.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(r, r.size() >= 1 && bytes(r).size() <= 63 && !r.startsWith('pg_') && !(r in ['azure_pg_admin', 'azuresu', 'azure_superuser', 'postgres', 'public', 'replication']))").message("role names are 1 to 63 bytes and not reserved (pg_*, azure_pg_admin, azuresu, azure_superuser, postgres, public, replication)"))]
    pub member_of: Vec<String>,

    /// Privileges on every table of a schema (with USAGE on the schema).
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub schemas: Vec<SchemaPrivileges>,
}

/// Table privileges on the tables of one schema.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SchemaPrivileges {
    /// The schema, for example `sales`. Not `pg_catalog`, `information_schema` or `pg_toast`.
    #[x_kube(validation = Rule::new("self.size() >= 1 && bytes(self).size() <= 63 && !self.startsWith('pg_') && self != 'information_schema'").message("a schema name of 1 to 63 bytes, not pg_* or information_schema"))]
    pub schema: String,

    /// Privileges on every table of the schema.
    #[schemars(length(min = 1, max = 4))]
    pub privileges: Vec<TablePrivilege>,
}

/// A privilege on tables. Nothing database- or server-wide, and never WITH GRANT OPTION.
#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
pub enum TablePrivilege {
    /// Read rows.
    #[serde(rename = "SELECT")]
    Select,
    /// Add rows.
    #[serde(rename = "INSERT")]
    Insert,
    /// Change rows.
    #[serde(rename = "UPDATE")]
    Update,
    /// Remove rows.
    #[serde(rename = "DELETE")]
    Delete,
}

impl TablePrivilege {
    /// The SQL keyword.
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// A T-SQL database (Azure SQL Database, SQL Managed Instance, Synapse SQL) whose contained
/// Entra users dbgrant manages in one database.
///
/// The operator signs in with its own Entra token and must be the server's Entra admin (or in
/// a group that is), or hold a contained user in `db_owner` of the database; otherwise the
/// target reports `TargetNotPrepared` with the statement that fixes it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqlTarget {
    /// Which T-SQL service the server is; it decides the statement dialect (a Synapse
    /// dedicated pool has no `ALTER ROLE ... ADD MEMBER`) and the default `userCreation`.
    pub kind: SqlKind,

    /// Host name of the server, for example `shop-prod.database.windows.net`. TLS (TDS 8,
    /// strict) is always verified against it, so it must be a name, not an IP address.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$') && !self.matches('^[0-9.]+$')").message("must be a host name (letters, digits, '-' and '.'), not an IP address: the server's certificate is checked against it"))]
    pub server: String,

    /// TCP port of the server. Default 1433 (a Managed Instance's public endpoint is 3342).
    #[serde(default = "default_sql_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,

    /// Full Azure Resource Manager id of the logical server, managed instance or Synapse
    /// workspace, for example
    /// `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/shop/providers/Microsoft.Sql/servers/shop-prod`.
    /// Optional: when set, the operator reads the server's Microsoft Entra admin in Azure before
    /// signing in (it needs `.../administrators/read` on the server, which Reader has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.matches('(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/resourcegroups/[^/]{1,90}/providers/(microsoft[.]sql/(servers|managedinstances)|microsoft[.]synapse/workspaces)/[a-z0-9][-a-z0-9]{0,61}[a-z0-9]$')").message("must be the full ARM id of a SQL server, managed instance or Synapse workspace: /subscriptions/<subscription GUID>/resourceGroups/<group>/providers/Microsoft.Sql/servers/<server> (or .../Microsoft.Sql/managedInstances/<name>, .../Microsoft.Synapse/workspaces/<name>)"))]
    pub server_resource_id: Option<String>,

    /// Database grants apply in when a grant names none. Not `master`, `tempdb`, `model` or
    /// `msdb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() >= 1 && self.size() <= 128 && !self.contains('\\u0000') && !(self.lowerAscii() in ['master', 'tempdb', 'model', 'msdb'])").message("a database name of 1 to 128 characters, not master, tempdb, model or msdb"))]
    pub database: Option<String>,

    /// How a workload's contained user is created. Default by kind: `Sid` on Azure SQL
    /// Database (no Microsoft Graph lookup, no server identity needed), `ObjectId` on a
    /// Managed Instance and `ExternalProvider` on Synapse (the only documented forms there;
    /// both need the server's identity to read Microsoft Graph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_creation: Option<SqlUserCreation>,

    /// Custom roles, by name, that grants may ask for when `allowedRoles` lists them: database
    /// roles the user joins and/or permissions on schemas. `reader` (db_datareader) and
    /// `contributor` (db_datareader + db_datawriter) are built in and cannot be redefined.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(name, name.size() <= 63 && name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && name != 'reader' && name != 'contributor')").message("custom role names are lowercase letters, digits and '-', at most 63 characters, and must not be 'reader' or 'contributor'"))]
    pub roles: BTreeMap<String, SqlRole>,

    /// Sign in with each workload's token and check its role memberships before a grant is
    /// Ready. Default `true`. Set `false` when the operator cannot reach the server as the
    /// workload.
    #[serde(default = "default_true")]
    pub verify_access: bool,
}

fn default_sql_port() -> u16 {
    1433
}

/// The T-SQL service behind a target.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SqlKind {
    /// Azure SQL Database (a logical server's database).
    AzureSqlDatabase,
    /// Azure SQL Managed Instance.
    SqlManagedInstance,
    /// A Synapse dedicated SQL pool (`sp_addrolemember`, no `ALTER ROLE ... ADD MEMBER`).
    SynapseDedicated,
    /// A Synapse serverless SQL pool (`ALTER ROLE`, no `sp_addrolemember`).
    SynapseServerless,
}

/// The `CREATE USER` form for a workload's contained user.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SqlUserCreation {
    /// `CREATE USER [n] WITH SID = <client id>, TYPE = E`: no Graph lookup.
    Sid,
    /// `CREATE USER [n] FROM EXTERNAL PROVIDER WITH OBJECT_ID = '<object id>'`.
    ObjectId,
    /// `CREATE USER [n] FROM EXTERNAL PROVIDER` (the name must be the Entra display name).
    ExternalProvider,
}

impl SqlTarget {
    /// The `CREATE USER` form in effect: the spec's, or the kind's default.
    pub fn user_creation(&self) -> SqlUserCreation {
        self.user_creation.unwrap_or(match self.kind {
            SqlKind::AzureSqlDatabase => SqlUserCreation::Sid,
            SqlKind::SqlManagedInstance => SqlUserCreation::ObjectId,
            SqlKind::SynapseDedicated | SqlKind::SynapseServerless => {
                SqlUserCreation::ExternalProvider
            }
        })
    }
}

/// What one custom role means in a T-SQL database: membership in database roles the platform
/// owns, permissions on schemas, or both. dbgrant never creates or alters the roles.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.memberOf) + size(self.schemas) >= 1").message("a role must name at least one database role in memberOf or one schema"))]
pub struct SqlRole {
    /// Database roles the workload's user joins, for example `app_reader` or `db_ddladmin`.
    /// Not roles that escalate (`db_owner`, `db_securityadmin`, `db_accessadmin`,
    /// `db_backupoperator`, `loginmanager`, `dbmanager`), nor `public` or `##...##` roles.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(r, r.size() >= 1 && r.size() <= 128 && !r.contains('\\u0000') && !r.startsWith('##') && !(r.lowerAscii() in ['db_owner', 'db_securityadmin', 'db_accessadmin', 'db_backupoperator', 'loginmanager', 'dbmanager', 'public']))").message("database role names are 1 to 128 characters, not '##...##', public, or a role that escalates (db_owner, db_securityadmin, db_accessadmin, db_backupoperator, loginmanager, dbmanager)"))]
    pub member_of: Vec<String>,

    /// Permissions on whole schemas.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub schemas: Vec<SqlSchemaPermissions>,
}

/// Permissions on one schema of a T-SQL database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqlSchemaPermissions {
    /// The schema, for example `sales`. Not `sys`, `INFORMATION_SCHEMA` or `guest`.
    #[x_kube(validation = Rule::new("self.size() >= 1 && self.size() <= 128 && !self.contains('\\u0000') && !(self.lowerAscii() in ['sys', 'information_schema', 'guest'])").message("a schema name of 1 to 128 characters, not sys, INFORMATION_SCHEMA or guest"))]
    pub schema: String,

    /// Permissions on the schema. Never WITH GRANT OPTION.
    #[schemars(length(min = 1, max = 6))]
    pub permissions: Vec<SqlPermission>,
}

/// A permission on a schema: data access only, nothing that administers.
#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
pub enum SqlPermission {
    /// Read rows.
    #[serde(rename = "SELECT")]
    Select,
    /// Add rows.
    #[serde(rename = "INSERT")]
    Insert,
    /// Change rows.
    #[serde(rename = "UPDATE")]
    Update,
    /// Remove rows.
    #[serde(rename = "DELETE")]
    Delete,
    /// Run procedures and functions.
    #[serde(rename = "EXECUTE")]
    Execute,
    /// Read object definitions.
    #[serde(rename = "VIEW DEFINITION")]
    ViewDefinition,
}

impl SqlPermission {
    /// The T-SQL keyword, as `sys.database_permissions.permission_name` spells it.
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Execute => "EXECUTE",
            Self::ViewDefinition => "VIEW DEFINITION",
        }
    }

    /// Every permission, for parsing what the catalogue reports.
    pub const ALL: [SqlPermission; 6] = [
        Self::Select,
        Self::Insert,
        Self::Update,
        Self::Delete,
        Self::Execute,
        Self::ViewDefinition,
    ];
}

/// Observed state of a `DatabaseTarget`, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTargetStatus {
    /// Latest observations of the target's state. `Ready` is `True` when the account exists
    /// and the operator may manage its data-plane role assignments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Kind of database behind the target, for example `cosmos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,

    /// Short name of the database account or server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,

    /// The data-plane endpoint in use: `spec.cosmos.endpoint`, or the one Azure reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Number of grants that currently reference this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_count: Option<i32>,
}

impl DatabaseTargetSpec {
    /// Whether `role` may be granted through this target: listed in `allowedRoles`.
    pub fn allows_role(&self, role: &str) -> bool {
        self.allowed_roles.iter().any(|r| r == role)
    }

    /// Short name of the backend block that is set.
    pub fn backend_kind(&self) -> Option<&'static str> {
        match (&self.cosmos, &self.postgres, &self.sql) {
            (Some(_), _, _) => Some("cosmos"),
            (None, Some(_), _) => Some("postgres"),
            (None, None, Some(_)) => Some("sql"),
            (None, None, None) => None,
        }
    }
}

impl CosmosTarget {
    /// The account name: the last segment of the ARM id.
    pub fn account_name(&self) -> &str {
        self.account_resource_id
            .rsplit('/')
            .next()
            .unwrap_or(&self.account_resource_id)
    }
}
