//! `DatabaseAccessGrant`: an app team's request for database access for one workload.
//!
//! Namespaced. "The workload running as ServiceAccount S may have role R on database D
//! (container C) of target T", optionally "and keep a fresh access token for it in Secret X".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Database access for the workload that runs as one ServiceAccount of this namespace.
// Clippy reads repeated `type_ = ..` inside separate printcolumn(..) groups as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbgrant.io",
    version = "v1alpha1",
    kind = "DatabaseAccessGrant",
    plural = "databaseaccessgrants",
    singular = "databaseaccessgrant",
    shortname = "dbgrant",
    shortname = "dbgrants",
    category = "dbgrant-all",
    namespaced,
    status = "DatabaseAccessGrantStatus",
    derive = "PartialEq",
    doc = "Keyless database access for the workload that runs as one ServiceAccount of this namespace: which role, on which database (and container) of which DatabaseTarget, and optionally a Secret kept filled with a fresh access token.",
    selectable = ".spec.target",
    selectable = ".spec.serviceAccountName",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.target",
        description = "DatabaseTarget the grant is for"
    ),
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".spec.role",
        description = "Role granted"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether access is granted and verified"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the grant is (not) ready"
    ),
    printcolumn(
        name = "Token-Expires",
        type_ = "string",
        json_path = ".status.tokenExpiresAt",
        description = "When the access token in the token Secret expires"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.container) || has(self.database)").message("container requires database: a container is always inside a database").field_path(".container"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseAccessGrantSpec {
    /// Name of the ServiceAccount, in this namespace, that the workload runs as. Its managed
    /// identity (annotation `azure.workload.identity/client-id`) receives the access.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("must be a ServiceAccount name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub service_account_name: String,

    /// Name of the DatabaseTarget (cluster-scoped) to get access to.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("must be a DatabaseTarget name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub target: String,

    /// Role to grant: `reader`, `contributor`, or a custom role declared by the target. The
    /// target's `allowedRoles` must list it.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("must be a role name: lowercase letters, digits and '-', starting with a letter"))]
    pub role: String,

    /// Database to scope the access to. Absent: the whole account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("['/', '\\\\', '#', '?'].all(c, !self.contains(c)) && !self.endsWith(' ')").message("a database name must not contain '/', '\\', '#' or '?' and must not end with a space"))]
    pub database: Option<String>,

    /// Container to scope the access to, inside `database` (which it requires). Absent: the
    /// whole database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("['/', '\\\\', '#', '?'].all(c, !self.contains(c)) && !self.endsWith(' ')").message("a container name must not contain '/', '\\', '#' or '?' and must not end with a space"))]
    pub container: Option<String>,

    /// Keep a fresh access token for the workload's identity in a Secret of this namespace.
    /// Absent: no token Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<TokenSecretSpec>,

    /// What happens to the access in Azure when this grant is deleted: `Delete` (default)
    /// revokes it; `Retain` leaves the role assignment in place.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Where to keep the workload's access token, in which shapes, and how to keep it fresh.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.refreshBefore) && has(self.refreshAtPercent))").message("set refreshBefore or refreshAtPercent, not both"))]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretSpec {
    /// Name of the Secret, in this namespace, that the operator creates and keeps fresh. A
    /// Secret of that name that dbgrant did not create for this grant is never touched.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("must be a Secret name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,

    /// Entra ID scope the token is issued for. Absent: the target's database audience
    /// (`https://cosmos.azure.com/.default` for Cosmos DB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^(https://|api://)[^?#\\s]+/[.]default$')").message("must be an Entra ID scope of the form https://<resource>/.default or api://<app>/.default"))]
    pub scope: Option<String>,

    /// Extra shapes of the token to write next to the standard keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    #[x_kube(validation = Rule::new("self.all(f, self.exists_one(g, g == f))").message("each format may be listed once"))]
    pub formats: Vec<TokenFormat>,

    /// Refresh this long before the token expires, as a duration (`30m`, `1h`); at least
    /// `10m`. Absent (and no `refreshAtPercent`): at half the token's lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && duration(self) >= duration('10m')").message("must be a duration of hours, minutes and seconds (e.g. 30m, 1h30m) of at least 10m"))]
    pub refresh_before: Option<String>,

    /// Refresh once this percentage of the token's lifetime has passed (10 to 90). Never
    /// later than 10 minutes before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 90))]
    pub refresh_at_percent: Option<u8>,

    /// Workloads of this namespace to restart (as `kubectl rollout restart` does) after each
    /// refresh, for programs that read the token only at start. At most once per token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rollout_restart: Vec<WorkloadRef>,
}

/// An extra shape of the access token in the Secret.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum TokenFormat {
    /// Key `authorization`: the Cosmos DB `Authorization` header value
    /// (`type=aad&ver=1.0&sig=<token>`, URL-encoded as Cosmos DB expects it).
    CosmosAuthorizationHeader,
    /// Key `password`: the token as the password of a PostgreSQL (Entra) login.
    PostgresPassword,
    /// Keys `accessToken` and `token.json`, shaped as `az account get-access-token` prints.
    AzureCli,
}

/// A Deployment or StatefulSet of the grant's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// `Deployment` or `StatefulSet`.
    pub kind: WorkloadKind,
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("must be a workload name: lowercase letters, digits, '-' and '.'"))]
    pub name: String,
}

/// Kinds of workload a refresh may restart.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
}

/// What deleting a grant does to the access in Azure.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Revoke the role assignment (unless another grant still needs the same one).
    #[default]
    Delete,
    /// Leave the role assignment in Azure.
    Retain,
}

/// Observed state of a `DatabaseAccessGrant`, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseAccessGrantStatus {
    /// Latest observations: `Ready` (the summary), `IdentityResolved`, `AccessGranted`,
    /// `AccessVerified` and `TokenProjected`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Object (principal) id of the workload's managed identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,

    /// Client id of the workload's managed identity, from the ServiceAccount annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,

    /// Entra ID tenant of the managed identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,

    /// The Azure scope the role is assigned at (account, database or container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,

    /// Full ARM id of the role assignment that carries the access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_assignment_id: Option<String>,

    /// Every piece of database access this grant made or shares (role-assignment ids), recorded
    /// before each write so a crash or restart cannot lose one. The operator revokes only
    /// what it also finds in Azure as made by dbgrant and that no allowed grant still asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub held: Vec<String>,

    /// When the access token in the token Secret expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<Time>,

    /// Name of the token Secret dbgrant made for this grant, so it can be deleted when
    /// `tokenSecret` is removed or renamed (only if it is still dbgrant's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,
}
