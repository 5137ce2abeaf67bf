//! The ARM wire shapes of Cosmos DB accounts and SQL role definitions and assignments, and
//! their conversion to and from the backend's types. Unknown fields are ignored and missing
//! optional ones default, so a newer api-version's additions never break decoding.

use serde::Deserialize;
use serde_json::json;

use crate::backend::cosmos::{RoleAssignment, RoleDefinition};

fn last_segment(id: &str) -> String {
    id.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A Cosmos DB account (only what the operator reads).
#[derive(Deserialize)]
pub struct Account {
    #[serde(default)]
    /// Its properties.
    pub properties: AccountProperties,
}

/// Properties of an account.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AccountProperties {
    #[serde(default)]
    /// The data-plane endpoint (`https://{name}.documents.azure.com:443/`).
    pub document_endpoint: Option<String>,
}

/// An ARM resource with typed properties.
#[derive(Deserialize)]
pub struct Resource<P> {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    /// Its properties.
    pub properties: P,
}

/// Properties of a SQL role definition.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionProperties {
    #[serde(default)]
    role_name: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    assignable_scopes: Vec<String>,
    #[serde(default)]
    permissions: Vec<Permission>,
}

/// One permission block of a role definition.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    #[serde(default)]
    data_actions: Vec<String>,
}

/// Properties of a SQL role assignment.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentProperties {
    #[serde(default)]
    role_definition_id: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    principal_id: String,
}

fn guid_of<P>(resource: &Resource<P>) -> String {
    if resource.name.is_empty() {
        last_segment(&resource.id)
    } else {
        resource.name.clone()
    }
}

impl From<Resource<DefinitionProperties>> for RoleDefinition {
    fn from(r: Resource<DefinitionProperties>) -> Self {
        let guid = guid_of(&r);
        let p = r.properties;
        RoleDefinition {
            guid,
            role_name: p.role_name,
            data_actions: p
                .permissions
                .into_iter()
                .flat_map(|perm| perm.data_actions)
                .collect(),
            assignable_scopes: p.assignable_scopes,
            built_in: p.kind.eq_ignore_ascii_case("BuiltInRole"),
        }
    }
}

impl From<Resource<AssignmentProperties>> for RoleAssignment {
    fn from(r: Resource<AssignmentProperties>) -> Self {
        let guid = guid_of(&r);
        let p = r.properties;
        RoleAssignment {
            guid,
            role_definition_id: p.role_definition_id,
            scope: p.scope,
            principal_id: p.principal_id,
        }
    }
}

/// The request body of a custom role definition.
pub fn role_definition_body(definition: &RoleDefinition) -> serde_json::Value {
    json!({
        "properties": {
            "roleName": definition.role_name,
            "type": "CustomRole",
            "assignableScopes": definition.assignable_scopes,
            "permissions": [{
                "dataActions": definition.data_actions,
                "notDataActions": [],
            }],
        }
    })
}

/// The request body of a role assignment.
pub fn role_assignment_body(assignment: &RoleAssignment) -> serde_json::Value {
    json!({
        "properties": {
            "roleDefinitionId": assignment.role_definition_id,
            "scope": assignment.scope,
            "principalId": assignment.principal_id,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str =
        "/subscriptions/s-1/resourceGroups/rg/providers/Microsoft.DocumentDB/databaseAccounts/acct";

    #[test]
    fn definitions_flatten_permissions_and_know_built_ins() {
        let body = serde_json::json!({
            "id": format!("{ACCOUNT}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001"),
            "name": "00000000-0000-0000-0000-000000000001",
            "properties": {"roleName": "Reader", "type": "BuiltInRole", "assignableScopes": [ACCOUNT],
                "permissions": [{"dataActions": ["a"]}, {"dataActions": ["b"], "notDataActions": []}]}
        });
        let parsed: Resource<DefinitionProperties> =
            serde_json::from_value(body).expect("definition");
        let definition = RoleDefinition::from(parsed);
        assert!(definition.built_in);
        assert_eq!(definition.data_actions, vec!["a", "b"]);
        assert_eq!(definition.guid, "00000000-0000-0000-0000-000000000001");
    }
}
