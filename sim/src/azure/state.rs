//! The simulated tenant and subscription: applications, managed identities with federated
//! credentials, Cosmos DB accounts with their role definitions and assignments, control-plane
//! role assignments, and long-running operations in flight.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde_json::Value;

/// An app registration with a client secret (the admin, the operator).
#[derive(Clone, Debug)]
pub struct App {
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub secret: String,
    /// Object id of its service principal.
    pub principal_id: String,
}

/// A federated identity credential.
#[derive(Clone, Debug)]
pub struct Fic {
    /// Issuer URL, matched exactly.
    pub issuer: String,
    /// Subject, matched exactly.
    pub subject: String,
    /// Audiences.
    pub audiences: Vec<String>,
}

/// A user-assigned managed identity.
#[derive(Clone, Debug)]
pub struct Identity {
    /// ARM id.
    pub resource_id: String,
    /// Name.
    pub name: String,
    /// Location.
    pub location: String,
    /// Client id.
    pub client_id: String,
    /// Principal (object) id.
    pub principal_id: String,
    /// Federated credentials by name.
    pub fics: BTreeMap<String, Fic>,
}

/// A Cosmos DB account.
#[derive(Clone, Debug)]
pub struct Account {
    /// ARM id as created.
    pub resource_id: String,
    /// Name.
    pub name: String,
    /// Location.
    pub location: String,
    /// Data-plane endpoint.
    pub endpoint: String,
    /// Custom role definitions by GUID (ARM resource bodies).
    pub definitions: BTreeMap<String, Value>,
    /// Role assignments by GUID (ARM resource bodies).
    pub assignments: BTreeMap<String, Value>,
    /// The RBAC write in flight, if any: Cosmos DB allows one at a time per account.
    pub busy: Option<String>,
}

/// An Azure Database for PostgreSQL flexible server (its ARM side only: the database itself
/// is `crate::postgres`'s stand-in, reached on its own).
#[derive(Clone, Debug)]
pub struct PostgresServer {
    /// ARM id as created.
    pub resource_id: String,
    /// Name.
    pub name: String,
    /// Location.
    pub location: String,
    /// Host name clients connect to.
    pub fqdn: String,
    /// Microsoft Entra administrators by lower-cased object id: (principal type, principal
    /// name, tenant id).
    pub administrators: BTreeMap<String, (String, String, String)>,
}

/// A T-SQL server's ARM side: an Azure SQL logical server, a managed instance or a Synapse
/// workspace (the database engine is `crate::sql`'s stand-in, reached on its own).
#[derive(Clone, Debug)]
pub struct SqlServer {
    /// ARM id as created.
    pub resource_id: String,
    /// Its resource type (`Microsoft.Sql/servers`, ...).
    pub resource_type: String,
    /// Name.
    pub name: String,
    /// Location.
    pub location: String,
    /// Its Microsoft Entra admin, if set.
    pub admin: Option<SqlAdmin>,
}

/// A T-SQL server's Microsoft Entra admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlAdmin {
    /// Login name.
    pub login: String,
    /// Its id (object id, or an application's client id).
    pub sid: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Whether only Entra sign-ins are accepted.
    pub azure_ad_only: bool,
}

/// What a long-running operation does when it completes.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Store (or replace) a resource.
    Put {
        /// Account key.
        account: String,
        /// `sqlRoleDefinitions` or `sqlRoleAssignments`.
        collection: &'static str,
        /// GUID.
        guid: String,
        /// The resource body.
        body: Value,
    },
    /// Remove a resource.
    Delete {
        /// Account key.
        account: String,
        /// `sqlRoleDefinitions` or `sqlRoleAssignments`.
        collection: &'static str,
        /// GUID.
        guid: String,
    },
}

/// A long-running operation.
#[derive(Clone, Debug)]
pub struct Operation {
    /// When it completes; `None` never (a stuck operation).
    pub done_at: Option<Instant>,
    /// `Err((code, message))` for an operation that fails.
    pub outcome: Result<Effect, (String, String)>,
    /// Final status once completed.
    pub finished: Option<&'static str>,
    /// The account whose lock it holds.
    pub account: String,
    /// Location, for the status URL.
    pub location: String,
    /// The response a Location poll gives after success (the resource, or nothing).
    pub result: Option<Value>,
}

/// Everything the simulator knows.
#[derive(Default)]
pub struct State {
    /// App registrations by client id.
    pub apps: HashMap<String, App>,
    /// Managed identities by lower-cased ARM id.
    pub identities: HashMap<String, Identity>,
    /// Cosmos DB accounts by lower-cased ARM id.
    pub accounts: HashMap<String, Account>,
    /// PostgreSQL flexible servers by lower-cased ARM id.
    pub postgres_servers: HashMap<String, PostgresServer>,
    /// T-SQL servers (logical servers, managed instances, Synapse workspaces) by lower-cased
    /// ARM id.
    pub sql_servers: HashMap<String, SqlServer>,
    /// Control-plane role assignments: (principal id, lower-cased scope).
    pub control_plane: Vec<(String, String)>,
    /// Principals not visible to RBAC before this instant (replication delay).
    pub hidden_until: HashMap<String, Instant>,
    /// Long-running operations by id.
    pub operations: HashMap<String, Operation>,
}

impl State {
    /// The identity with this client id.
    pub fn identity_by_client(&self, client_id: &str) -> Option<&Identity> {
        self.identities
            .values()
            .find(|i| i.client_id.eq_ignore_ascii_case(client_id))
    }

    /// Whether a principal exists in the tenant and is visible to RBAC now.
    pub fn principal_known(&self, principal_id: &str, now: Instant) -> bool {
        let exists = self
            .identities
            .values()
            .any(|i| i.principal_id.eq_ignore_ascii_case(principal_id))
            || self
                .apps
                .values()
                .any(|a| a.principal_id.eq_ignore_ascii_case(principal_id));
        exists
            && self
                .hidden_until
                .get(&principal_id.to_ascii_lowercase())
                .is_none_or(|t| *t <= now)
    }

    /// Whether `principal_id` holds a control-plane role covering `resource_id`.
    pub fn may_write(&self, principal_id: &str, resource_id: &str) -> bool {
        let resource = resource_id.to_ascii_lowercase();
        self.control_plane.iter().any(|(p, scope)| {
            p.eq_ignore_ascii_case(principal_id)
                && (scope == "/"
                    || resource == *scope
                    || resource.starts_with(&format!("{scope}/")))
        })
    }

    /// Complete every operation whose time has come: apply its effect, release the lock.
    pub fn settle(&mut self, now: Instant) {
        let due: Vec<String> = self
            .operations
            .iter()
            .filter(|(_, op)| op.finished.is_none() && op.done_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(op) = self.operations.get(&id).cloned() else {
                continue;
            };
            let status = match &op.outcome {
                Ok(effect) => {
                    self.apply(effect);
                    "Succeeded"
                }
                Err(_) => "Failed",
            };
            if let Some(account) = self.accounts.get_mut(&op.account)
                && account.busy.as_deref() == Some(id.as_str())
            {
                account.busy = None;
            }
            if let Some(op) = self.operations.get_mut(&id) {
                op.finished = Some(status);
            }
        }
    }

    fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::Put {
                account,
                collection,
                guid,
                body,
            } => {
                if let Some(account) = self.accounts.get_mut(account) {
                    let map = if *collection == "sqlRoleDefinitions" {
                        &mut account.definitions
                    } else {
                        &mut account.assignments
                    };
                    map.insert(guid.clone(), body.clone());
                }
            }
            Effect::Delete {
                account,
                collection,
                guid,
            } => {
                if let Some(account) = self.accounts.get_mut(account) {
                    let map = if *collection == "sqlRoleDefinitions" {
                        &mut account.definitions
                    } else {
                        &mut account.assignments
                    };
                    map.remove(guid);
                }
            }
        }
    }
}
