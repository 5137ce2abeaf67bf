//! The `dbgrant.io/v1alpha1` API: the custom resources platform and app teams write.
//!
//! Types only: no I/O lives here. Validation that the API server can do itself (OpenAPI schema
//! and CEL rules, with messages a human understands) is declared on the types, so bad input is
//! refused by `kubectl apply` before the operator ever sees it.

mod conditions;
mod grant;
mod reason;
mod target;

pub use conditions::{ConditionType, Status, set_condition};
pub use grant::{
    DatabaseAccessGrant, DatabaseAccessGrantSpec, DatabaseAccessGrantStatus, DeletionPolicy,
    TokenFormat, TokenSecretSpec, WorkloadKind, WorkloadRef,
};
pub use reason::Reason;
pub use target::{
    BUILTIN_ROLES, CosmosRole, CosmosTarget, DatabaseTarget, DatabaseTargetSpec,
    DatabaseTargetStatus, PostgresRole, PostgresTarget, SchemaPrivileges, SqlKind, SqlPermission,
    SqlRole, SqlSchemaPermissions, SqlTarget, SqlUserCreation, TablePrivilege,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every dbgrant resource.
pub const GROUP: &str = "dbgrant.io";

/// Every CustomResourceDefinition this crate serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![DatabaseTarget::crd(), DatabaseAccessGrant::crd()]
}

/// The CRDs as one multi-document YAML stream, exactly what `dbgrant crd` prints.
pub fn crds_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}

/// File name under `crds/` for one CRD: `<plural>.<group>.yaml`, as `kubectl` users expect.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}
