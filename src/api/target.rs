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
#[x_kube(validation = Rule::new("[has(self.cosmos)].filter(b, b).size() == 1").message("exactly one backend block must be set; supported: cosmos"))]
#[x_kube(validation = Rule::new("!has(self.allowedRoles) || self.allowedRoles.all(r, r == 'reader' || r == 'contributor' || (has(self.cosmos) && has(self.cosmos.roles) && r in self.cosmos.roles))").message("every entry of allowedRoles must be 'reader', 'contributor' or a custom role declared under cosmos.roles").field_path(".allowedRoles"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTargetSpec {
    /// An Azure Cosmos DB account (NoSQL API). Exactly one backend block is set per target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosmos: Option<CosmosTarget>,

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
        self.cosmos.as_ref().map(|_| "cosmos")
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
