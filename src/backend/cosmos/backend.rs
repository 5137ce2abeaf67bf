//! Cosmos DB behind the backend-neutral seam: a target's account, its custom role
//! definitions, and the SQL role assignments dbgrant makes on it.

use std::collections::HashSet;
use std::sync::Arc;

use azure_core::credentials::Secret;

use super::{
    CosmosAccess, RoleAssignment, RoleDefinition, Scope, custom_role_guid, made_by_dbgrant,
    owned_role_name, parse_assignment_id, role_assignment_guid, role_assignment_id,
    role_definition_guid, role_definition_id,
};
use crate::api::{CosmosTarget, Reason};
use crate::backend::{Access, Backend, BackendError, Holding, TokenScope};

/// One target's Cosmos DB account.
pub struct CosmosBackend {
    name: String,
    target: CosmosTarget,
    access: Arc<dyn CosmosAccess>,
}

impl CosmosBackend {
    /// The backend of target `name`, whose cosmos block is `target`.
    pub fn new(name: &str, target: CosmosTarget, access: Arc<dyn CosmosAccess>) -> Self {
        Self {
            name: name.to_string(),
            target,
            access,
        }
    }

    fn account(&self) -> &str {
        self.target.account_resource_id.trim_end_matches('/')
    }

    fn scope_of(access: &Access) -> Scope {
        match (&access.database, &access.container) {
            (Some(database), Some(container)) => Scope::Container {
                database: database.clone(),
                container: container.clone(),
            },
            (Some(database), None) => Scope::Database(database.clone()),
            // A container without a database is refused by the CRD's CEL rule; a hand-made
            // object cannot widen into something unexpected through it.
            (None, _) => Scope::Account,
        }
    }

    /// The holding an assignment is. Only the id is lower-cased (ARM ids are case-insensitive,
    /// and the ledger compares ids); the scope keeps its case, as database and container names
    /// are case-sensitive on the data plane.
    fn holding(&self, assignment: &RoleAssignment) -> Holding {
        Holding {
            id: role_assignment_id(self.account(), &assignment.guid).to_ascii_lowercase(),
            principal_id: assignment.principal_id.clone(),
            role_id: assignment.role_definition_id.clone(),
            scope: assignment.scope.trim_end_matches('/').to_string(),
        }
    }

    fn owned_definitions<'a>(&self, all: &'a [RoleDefinition]) -> Vec<&'a RoleDefinition> {
        let prefix = owned_role_name(&self.name, "");
        all.iter()
            .filter(|d| !d.built_in && d.role_name.starts_with(&prefix))
            .collect()
    }

    /// Put the target's custom role definitions in place and remove those dropped from its
    /// spec once nothing is assigned them (until then they are kept: deleting them would cut
    /// off whoever holds them).
    async fn converge_role_definitions(&self) -> Result<(), BackendError> {
        let account = self.account();
        let existing = self.access.list_role_definitions(account).await?;
        let mut wanted = HashSet::new();
        for (role, spec) in &self.target.roles {
            let definition = RoleDefinition {
                guid: custom_role_guid(&self.name, &self.target, role),
                role_name: owned_role_name(&self.name, role),
                data_actions: spec.data_actions.clone(),
                assignable_scopes: vec![account.to_string()],
                built_in: false,
            };
            wanted.insert(definition.guid.to_ascii_lowercase());
            let same = existing.iter().any(|d| {
                d.guid.eq_ignore_ascii_case(&definition.guid)
                    && d.role_name == definition.role_name
                    && d.data_actions == definition.data_actions
            });
            if !same {
                self.access
                    .put_role_definition(account, &definition)
                    .await?;
            }
        }
        let stale: Vec<&RoleDefinition> = self
            .owned_definitions(&existing)
            .into_iter()
            .filter(|d| !wanted.contains(&d.guid.to_ascii_lowercase()))
            .collect();
        if !stale.is_empty() {
            let assignments = self.access.list_role_assignments(account).await?;
            for definition in stale {
                if users(account, definition, &assignments).is_empty() {
                    self.access
                        .delete_role_definition(account, &definition.guid)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// The assignments that use `definition`.
fn users<'a>(
    account: &str,
    definition: &RoleDefinition,
    assignments: &'a [RoleAssignment],
) -> Vec<&'a RoleAssignment> {
    let id = role_definition_id(account, &definition.guid);
    assignments
        .iter()
        .filter(|a| a.role_definition_id.eq_ignore_ascii_case(&id))
        .collect()
}

#[async_trait::async_trait]
impl Backend for CosmosBackend {
    fn kind(&self) -> &'static str {
        "cosmos"
    }

    fn store(&self) -> String {
        self.account().to_ascii_lowercase()
    }

    fn display_name(&self) -> String {
        self.target.account_name().to_string()
    }

    fn store_of(&self, holding_id: &str) -> Option<String> {
        parse_assignment_id(holding_id).map(|(account, _)| account.to_ascii_lowercase())
    }

    fn holding_for(&self, access: &Access) -> Result<Holding, BackendError> {
        let Some(role_guid) = role_definition_guid(&self.name, &self.target, &access.role) else {
            return Err(BackendError::new(
                Reason::InvalidSpec,
                format!(
                    "role {} is not declared by DatabaseTarget {}",
                    access.role, self.name
                ),
            ));
        };
        let account = self.account();
        let role_definition_id = role_definition_id(account, &role_guid);
        let scope = Self::scope_of(access).resource_path(account);
        let assignment = RoleAssignment {
            guid: role_assignment_guid(&access.principal_id, &role_definition_id, &scope),
            role_definition_id,
            scope,
            principal_id: access.principal_id.clone(),
        };
        Ok(self.holding(&assignment))
    }

    async fn prepare(&self) -> Result<String, BackendError> {
        let reported = self.access.account_endpoint(self.account()).await?;
        self.converge_role_definitions().await?;
        Ok(self.target.endpoint.clone().unwrap_or(reported))
    }

    async fn list_owned(&self) -> Result<Vec<Holding>, BackendError> {
        let assignments = self.access.list_role_assignments(self.account()).await?;
        Ok(assignments
            .iter()
            .filter(|a| made_by_dbgrant(a))
            .map(|a| self.holding(a))
            .collect())
    }

    async fn grant(&self, holding: &Holding) -> Result<(), BackendError> {
        let Some((_, guid)) = parse_assignment_id(&holding.id) else {
            return Err(BackendError::new(
                Reason::InvalidSpec,
                format!("{} is not a Cosmos DB role assignment id", holding.id),
            ));
        };
        let assignment = RoleAssignment {
            guid: guid.to_string(),
            role_definition_id: holding.role_id.clone(),
            scope: holding.scope.clone(),
            principal_id: holding.principal_id.clone(),
        };
        self.access
            .put_role_assignment(self.account(), &assignment)
            .await
    }

    async fn revoke(&self, holding_id: &str) -> Result<bool, BackendError> {
        let Some((account, guid)) = parse_assignment_id(holding_id) else {
            return Ok(false);
        };
        if !account.eq_ignore_ascii_case(self.account()) {
            return Ok(false);
        }
        // Look before deleting: only an assignment dbgrant made is ever removed, whatever id a
        // record names.
        let assignments = self.access.list_role_assignments(self.account()).await?;
        match assignments
            .iter()
            .find(|a| a.guid.eq_ignore_ascii_case(guid))
        {
            Some(found) if made_by_dbgrant(found) => {
                self.access
                    .delete_role_assignment(self.account(), guid)
                    .await?;
                Ok(true)
            }
            // Someone else's, under an id a record names: never touched.
            Some(_) => Ok(false),
            // Not there yet, perhaps: a write recorded by an earlier pass (or process) may still
            // be running in Azure and land after this look. Deleting the absent id is harmless,
            // and Cosmos DB answers it 412 (retried) until such a write has finished, so the
            // record goes only once nothing can appear under it any more.
            None => {
                self.access
                    .delete_role_assignment(self.account(), guid)
                    .await?;
                Ok(false)
            }
        }
    }

    async fn probe(
        &self,
        endpoint: &str,
        access: &Access,
        access_token: &Secret,
    ) -> Result<bool, BackendError> {
        self.access
            .probe(endpoint, &Self::scope_of(access), access_token)
            .await
    }

    fn token_scope(&self) -> TokenScope {
        TokenScope::CosmosDb
    }

    fn keeps_definitions(&self) -> bool {
        !self.target.roles.is_empty()
    }

    fn verifies_access(&self) -> bool {
        self.target.verify_access
    }

    async fn remove_target_owned(
        &self,
        in_use_by: &[Holding],
    ) -> Result<Vec<String>, BackendError> {
        let account = self.account();
        let definitions = match self.access.list_role_definitions(account).await {
            Ok(definitions) => definitions,
            // The account (or its group or subscription) is gone, its definitions with it.
            Err(error) if error.is_not_found() => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let owned = self.owned_definitions(&definitions);
        if owned.is_empty() {
            return Ok(Vec::new());
        }
        let assignments = self.access.list_role_assignments(account).await?;
        let mut blocking = Vec::new();
        for definition in owned {
            let users = users(account, definition, &assignments);
            if users.is_empty() {
                self.access
                    .delete_role_definition(account, &definition.guid)
                    .await?;
                continue;
            }
            let recorded = users
                .iter()
                .filter(|a| {
                    let id = role_assignment_id(account, &a.guid);
                    in_use_by.iter().any(|h| h.id.eq_ignore_ascii_case(&id))
                })
                .count();
            if recorded > 0 {
                blocking.push(format!(
                    "{} ({recorded} assignment(s))",
                    definition.role_name
                ));
            } else {
                // Only assignments nobody records hold it (retained on deletion, or made by
                // hand): the definition stays for them, and the target may go.
                tracing::info!(
                    role = %definition.role_name,
                    assignments = users.len(),
                    "custom role kept for assignments dbgrant no longer manages"
                );
            }
        }
        Ok(blocking)
    }

    fn describe_scope(&self, access: &Access) -> String {
        match Self::scope_of(access) {
            Scope::Account => "the account".to_string(),
            scope => scope.data_plane_path(),
        }
    }
}
