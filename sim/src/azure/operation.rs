//! The operations the Azure simulator serves, as one type: the router dispatches on it, faults
//! are aimed at it and counters are kept by it. A fault aimed at an operation that does not
//! exist therefore fails to compile (or, given as text, to parse) instead of never firing.

use std::fmt;
use std::str::FromStr;

use axum::http::Method;

/// What a call does to its resource, as far as faults and counters tell calls apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// Read a collection.
    List,
    /// Read one resource (also any method the simulator does not tell apart, as ARM's GET).
    Get,
    /// Create or replace.
    Put,
    /// Delete.
    Delete,
    /// POST.
    Post,
}

impl Verb {
    const ALL: [Verb; 5] = [Verb::List, Verb::Get, Verb::Put, Verb::Delete, Verb::Post];

    fn as_str(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Get => "get",
            Verb::Put => "put",
            Verb::Delete => "delete",
            Verb::Post => "post",
        }
    }
}

/// A kind of resource (or endpoint) the simulator serves; a fault may hit all of its calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Entra ID's token endpoint.
    Entra,
    /// The Cosmos DB data plane.
    DataPlane,
    /// ARM's long-running-operation status URL.
    OperationStatus,
    /// User-assigned managed identities.
    Identities,
    /// Federated identity credentials of an identity.
    FederatedCredentials,
    /// Cosmos DB accounts.
    Accounts,
    /// Cosmos DB SQL role definitions.
    SqlRoleDefinitions,
    /// Cosmos DB SQL role assignments.
    SqlRoleAssignments,
    /// Entra ID's published signing keys (what a database server checks tokens with).
    EntraKeys,
    /// Azure Database for PostgreSQL flexible servers.
    FlexibleServers,
    /// A flexible server's Microsoft Entra administrators.
    FlexibleServerAdministrators,
    /// T-SQL servers: Azure SQL logical servers, managed instances, Synapse workspaces.
    SqlServers,
    /// A T-SQL server's Microsoft Entra admin.
    SqlServerAdministrators,
    /// Anything else (answered 404).
    Unrouted,
}

impl Family {
    const ALL: [Family; 14] = [
        Family::Entra,
        Family::EntraKeys,
        Family::DataPlane,
        Family::OperationStatus,
        Family::Identities,
        Family::FederatedCredentials,
        Family::Accounts,
        Family::SqlRoleDefinitions,
        Family::SqlRoleAssignments,
        Family::FlexibleServers,
        Family::FlexibleServerAdministrators,
        Family::SqlServers,
        Family::SqlServerAdministrators,
        Family::Unrouted,
    ];

    /// The name used in text (`sqlRoleAssignments`), the prefix of its operations' names.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Entra => "entra",
            Family::DataPlane => "dataplane",
            Family::OperationStatus => "operations",
            Family::Identities => "identities",
            Family::FederatedCredentials => "fics",
            Family::Accounts => "accounts",
            Family::SqlRoleDefinitions => "sqlRoleDefinitions",
            Family::SqlRoleAssignments => "sqlRoleAssignments",
            Family::EntraKeys => "entraKeys",
            Family::FlexibleServers => "flexibleServers",
            Family::FlexibleServerAdministrators => "flexibleServerAdministrators",
            Family::SqlServers => "sqlServers",
            Family::SqlServerAdministrators => "sqlServerAdministrators",
            Family::Unrouted => "other",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One operation: written `family.verb` in text (`sqlRoleAssignments.put`, `entra.token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AzureOperation {
    /// A token request to Entra ID.
    EntraToken,
    /// A read on the Cosmos DB data plane.
    DataPlaneRead,
    /// A poll of a long-running operation's status.
    OperationStatus(Verb),
    /// A call on a managed identity.
    Identities(Verb),
    /// A call on federated identity credentials.
    FederatedCredentials(Verb),
    /// A call on a Cosmos DB account.
    Accounts(Verb),
    /// A call on Cosmos DB SQL role definitions.
    SqlRoleDefinitions(Verb),
    /// A call on Cosmos DB SQL role assignments.
    SqlRoleAssignments(Verb),
    /// A read of Entra ID's signing keys (JWKS).
    EntraKeys,
    /// A call on a PostgreSQL flexible server.
    FlexibleServers(Verb),
    /// A call on a flexible server's Microsoft Entra administrators.
    FlexibleServerAdministrators(Verb),
    /// A call on a T-SQL server (logical server, managed instance, Synapse workspace).
    SqlServers(Verb),
    /// A call on a T-SQL server's Microsoft Entra admin.
    SqlServerAdministrators(Verb),
    /// A call the simulator has no route for.
    Unrouted(Verb),
}

impl AzureOperation {
    /// Which operation a request is: what the router serves it as, what faults match and what
    /// is counted. Paths are matched case-insensitively, as ARM does.
    pub fn of(method: &Method, path: &str) -> Self {
        let lower = path.to_ascii_lowercase();
        let verb = match *method {
            Method::PUT => Verb::Put,
            Method::DELETE => Verb::Delete,
            Method::POST => Verb::Post,
            _ => Verb::Get,
        };
        if lower.ends_with("/oauth2/v2.0/token") {
            return Self::EntraToken;
        }
        if lower.ends_with("/discovery/v2.0/keys") {
            return Self::EntraKeys;
        }
        if lower.starts_with("/cosmos/") {
            return Self::DataPlaneRead;
        }
        // T-SQL servers share the `administrators` segment with flexible servers: the
        // provider tells them apart.
        if lower.contains("/providers/microsoft.sql/")
            || lower.contains("/providers/microsoft.synapse/workspaces/")
        {
            return if lower.contains("/administrators") {
                let collection = lower.trim_end_matches('/').ends_with("/administrators");
                Self::SqlServerAdministrators(if collection && verb == Verb::Get {
                    Verb::List
                } else {
                    verb
                })
            } else {
                Self::SqlServers(verb)
            };
        }
        // Most specific first: a role assignment's path also names its account.
        let families: [(&str, Family); 8] = [
            ("/operationsstatus/", Family::OperationStatus),
            ("/sqlroleassignments", Family::SqlRoleAssignments),
            ("/sqlroledefinitions", Family::SqlRoleDefinitions),
            (
                "/federatedidentitycredentials",
                Family::FederatedCredentials,
            ),
            ("/userassignedidentities/", Family::Identities),
            ("/databaseaccounts/", Family::Accounts),
            ("/administrators", Family::FlexibleServerAdministrators),
            ("/flexibleservers/", Family::FlexibleServers),
        ];
        for (needle, family) in families {
            if lower.contains(needle) {
                // GET on a collection (ending at its name) lists it.
                let collection = matches!(
                    family,
                    Family::SqlRoleAssignments
                        | Family::SqlRoleDefinitions
                        | Family::FederatedCredentials
                        | Family::FlexibleServerAdministrators
                ) && lower.trim_end_matches('/').ends_with(needle);
                let verb = if collection && verb == Verb::Get {
                    Verb::List
                } else {
                    verb
                };
                return Self::with(family, verb);
            }
        }
        Self::Unrouted(verb)
    }

    /// The operation of `family` with `verb` (Entra's token endpoint and the data plane have one
    /// operation each, whatever the verb).
    fn with(family: Family, verb: Verb) -> Self {
        match family {
            Family::Entra => Self::EntraToken,
            Family::EntraKeys => Self::EntraKeys,
            Family::DataPlane => Self::DataPlaneRead,
            Family::OperationStatus => Self::OperationStatus(verb),
            Family::Identities => Self::Identities(verb),
            Family::FederatedCredentials => Self::FederatedCredentials(verb),
            Family::Accounts => Self::Accounts(verb),
            Family::SqlRoleDefinitions => Self::SqlRoleDefinitions(verb),
            Family::SqlRoleAssignments => Self::SqlRoleAssignments(verb),
            Family::FlexibleServers => Self::FlexibleServers(verb),
            Family::FlexibleServerAdministrators => Self::FlexibleServerAdministrators(verb),
            Family::SqlServers => Self::SqlServers(verb),
            Family::SqlServerAdministrators => Self::SqlServerAdministrators(verb),
            Family::Unrouted => Self::Unrouted(verb),
        }
    }

    /// The family it belongs to.
    pub fn family(self) -> Family {
        match self {
            Self::EntraToken => Family::Entra,
            Self::DataPlaneRead => Family::DataPlane,
            Self::OperationStatus(_) => Family::OperationStatus,
            Self::Identities(_) => Family::Identities,
            Self::FederatedCredentials(_) => Family::FederatedCredentials,
            Self::Accounts(_) => Family::Accounts,
            Self::SqlRoleDefinitions(_) => Family::SqlRoleDefinitions,
            Self::SqlRoleAssignments(_) => Family::SqlRoleAssignments,
            Self::EntraKeys => Family::EntraKeys,
            Self::FlexibleServers(_) => Family::FlexibleServers,
            Self::FlexibleServerAdministrators(_) => Family::FlexibleServerAdministrators,
            Self::SqlServers(_) => Family::SqlServers,
            Self::SqlServerAdministrators(_) => Family::SqlServerAdministrators,
            Self::Unrouted(_) => Family::Unrouted,
        }
    }

    /// Every operation, for parsing and for listing the valid names in a parse error.
    pub fn all() -> impl Iterator<Item = AzureOperation> {
        let mut all: Vec<AzureOperation> = Family::ALL
            .into_iter()
            .flat_map(|family| {
                Verb::ALL
                    .into_iter()
                    .map(move |verb| Self::with(family, verb))
            })
            .collect();
        all.dedup();
        all.into_iter()
    }
}

impl fmt::Display for AzureOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EntraToken => f.write_str("entra.token"),
            Self::DataPlaneRead => f.write_str("dataplane.get"),
            Self::EntraKeys => f.write_str("entraKeys.get"),
            Self::OperationStatus(verb)
            | Self::Identities(verb)
            | Self::FederatedCredentials(verb)
            | Self::Accounts(verb)
            | Self::SqlRoleDefinitions(verb)
            | Self::SqlRoleAssignments(verb)
            | Self::FlexibleServers(verb)
            | Self::FlexibleServerAdministrators(verb)
            | Self::SqlServers(verb)
            | Self::SqlServerAdministrators(verb)
            | Self::Unrouted(verb) => write!(f, "{}.{}", self.family(), verb.as_str()),
        }
    }
}

/// Text that names no operation (or family of operations).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Azure simulator operation '{given}'; known: {known}")]
pub struct UnknownOperation {
    given: String,
    known: String,
}

impl UnknownOperation {
    fn new(given: &str) -> Self {
        let families = Family::ALL.iter().map(|f| f.as_str().to_string());
        let operations = AzureOperation::all().map(|o| o.to_string());
        Self {
            given: given.to_string(),
            known: families.chain(operations).collect::<Vec<_>>().join(", "),
        }
    }
}

impl FromStr for AzureOperation {
    type Err = UnknownOperation;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::all()
            .find(|o| o.to_string() == text)
            .ok_or_else(|| UnknownOperation::new(text))
    }
}

/// Which calls a fault hits: one operation, or every operation of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationFilter {
    /// Exactly this operation.
    Only(AzureOperation),
    /// Every operation of this family.
    Family(Family),
}

impl OperationFilter {
    /// Whether a call of `operation` is hit.
    pub fn matches(self, operation: AzureOperation) -> bool {
        match self {
            Self::Only(only) => only == operation,
            Self::Family(family) => family == operation.family(),
        }
    }
}

impl From<AzureOperation> for OperationFilter {
    fn from(operation: AzureOperation) -> Self {
        Self::Only(operation)
    }
}

impl From<Family> for OperationFilter {
    fn from(family: Family) -> Self {
        Self::Family(family)
    }
}

impl FromStr for OperationFilter {
    type Err = UnknownOperation;

    /// `sqlRoleAssignments` (the family) or `sqlRoleAssignments.put` (one operation).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(family) = Family::ALL.into_iter().find(|f| f.as_str() == text) {
            return Ok(Self::Family(family));
        }
        text.parse().map(Self::Only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_misspellings_are_errors() {
        for operation in AzureOperation::all() {
            assert_eq!(operation.to_string().parse(), Ok(operation));
        }
        assert_eq!(
            "sqlRoleAssignments.put".parse(),
            Ok(AzureOperation::SqlRoleAssignments(Verb::Put))
        );
        assert_eq!(
            "sqlRoleAssignments".parse(),
            Ok(OperationFilter::Family(Family::SqlRoleAssignments))
        );
        let error = "sqlRoleAssignment.put"
            .parse::<OperationFilter>()
            .unwrap_err();
        assert!(
            error.to_string().contains("sqlRoleAssignments.put"),
            "{error}"
        );
        assert!("entra.tokens".parse::<AzureOperation>().is_err());
    }

    #[test]
    fn requests_are_classified_as_before() {
        let account =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DocumentDB/databaseAccounts/a";
        let cases = [
            (
                Method::POST,
                "/t/oauth2/v2.0/token".to_string(),
                "entra.token",
            ),
            (Method::GET, "/cosmos/a/dbs".to_string(), "dataplane.get"),
            (Method::GET, account.to_string(), "accounts.get"),
            (Method::PUT, account.to_string(), "accounts.put"),
            (
                Method::GET,
                format!("{account}/sqlRoleAssignments"),
                "sqlRoleAssignments.list",
            ),
            (
                Method::GET,
                format!("{account}/sqlRoleAssignments/"),
                "sqlRoleAssignments.list",
            ),
            (
                Method::GET,
                format!("{account}/sqlRoleAssignments/g"),
                "sqlRoleAssignments.get",
            ),
            (
                Method::DELETE,
                format!("{account}/sqlRoleDefinitions/g"),
                "sqlRoleDefinitions.delete",
            ),
            (
                Method::GET,
                "/subscriptions/s/providers/Microsoft.DocumentDB/locations/w/operationsStatus/o"
                    .to_string(),
                "operations.get",
            ),
            (Method::GET, "/nowhere".to_string(), "other.get"),
            (
                Method::GET,
                "/t/discovery/v2.0/keys".to_string(),
                "entraKeys.get",
            ),
            (
                Method::PUT,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg".to_string(),
                "flexibleServers.put",
            ),
            (
                Method::GET,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg/administrators".to_string(),
                "flexibleServerAdministrators.list",
            ),
            (
                Method::PUT,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg/administrators/o".to_string(),
                "flexibleServerAdministrators.put",
            ),
            (
                Method::PUT,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/servers/sql".to_string(),
                "sqlServers.put",
            ),
            (
                Method::GET,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/servers/sql/administrators".to_string(),
                "sqlServerAdministrators.list",
            ),
            (
                Method::PUT,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi/administrators/ActiveDirectory".to_string(),
                "sqlServerAdministrators.put",
            ),
            (
                Method::GET,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Synapse/workspaces/ws/administrators/activeDirectory".to_string(),
                "sqlServerAdministrators.get",
            ),
        ];
        for (method, path, name) in cases {
            assert_eq!(
                AzureOperation::of(&method, &path).to_string(),
                name,
                "{path}"
            );
        }
    }
}
