//! What the PostgreSQL and T-SQL preflights share in their ARM half (is the operator a
//! server's Microsoft Entra admin?): reading a server's ARM id, the refusals that do not
//! depend on the backend, the tenant comparison, and the in-memory servers tests stand in for
//! ARM with. Each backend keeps its own resource types, decision and fix commands.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::api::Reason;
use crate::backend::BackendError;

/// A server's ARM id,
/// `/subscriptions/{subscription}/resourceGroups/{group}/providers/{provider}/{type}/{name}`,
/// taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerId<'a> {
    /// The resource provider, as written (`Microsoft.Sql`).
    pub provider: &'a str,
    /// The resource type, as written (`servers`).
    pub resource_type: &'a str,
    /// The resource group.
    pub group: &'a str,
    /// The server's name.
    pub name: &'a str,
}

impl ServerId<'_> {
    /// Whether it is of `provider`/`resource_type` (ARM compares them without case).
    pub fn is(&self, provider: &str, resource_type: &str) -> bool {
        self.provider.eq_ignore_ascii_case(provider)
            && self.resource_type.eq_ignore_ascii_case(resource_type)
    }
}

/// `server_id` taken apart, when it is the id of a top-level resource (a trailing `/` is
/// allowed).
pub fn parse_server_id(server_id: &str) -> Option<ServerId<'_>> {
    let segments: Vec<&str> = server_id.trim_end_matches('/').split('/').collect();
    let shape = segments.len() == 9
        && segments[0].is_empty()
        && segments[1].eq_ignore_ascii_case("subscriptions")
        && segments[3].eq_ignore_ascii_case("resourceGroups")
        && segments[5].eq_ignore_ascii_case("providers");
    // The id becomes a URL path: nothing that could walk out of it or add a query.
    let safe = segments[1..].iter().all(|s| {
        !s.is_empty()
            && *s != "."
            && *s != ".."
            && s.chars()
                .all(|c| c.is_alphanumeric() || "-_.()".contains(c))
    });
    (shape && safe).then(|| ServerId {
        provider: segments[6],
        resource_type: segments[7],
        group: segments[4],
        name: segments[8],
    })
}

/// The refusal for a server ARM does not know: `noun` names its kind, `field` is the spec
/// field that named it.
pub fn server_not_found(noun: &str, server_id: &str, field: &str) -> BackendError {
    BackendError::new(
        Reason::TargetNotPrepared,
        format!(
            "{noun} {server_id} does not exist (Azure Resource Manager answered 404): fix {field}, or remove it to skip this check"
        ),
    )
}

/// Whether an administrator of `listed_tenant` is of the operator's tenant; ARM may leave
/// the tenant out, and then it is the server's own, which the operator signs in to.
pub fn same_tenant(listed_tenant: &str, operator_tenant_id: &str) -> bool {
    listed_tenant.is_empty() || listed_tenant.eq_ignore_ascii_case(operator_tenant_id)
}

/// No ARM client (an operator built without one): a target naming a server says so. Each
/// backend's seam is implemented for it.
pub struct NoArm;

impl NoArm {
    /// The refusal: `what` names what could not be checked (`Entra admin`).
    pub fn refusal(what: &str, server_id: &str) -> BackendError {
        BackendError::new(
            Reason::TargetNotPrepared,
            format!(
                "this operator was started without an Azure Resource Manager client, so it cannot check the {what} of {server_id}"
            ),
        )
    }
}

/// Servers kept in memory, each with what ARM would say of its admins (`T`), for tests of
/// the layers above ARM: ids compare without case, and servers absent from it are 404s.
pub struct InMemoryServers<T> {
    servers: Mutex<HashMap<String, T>>,
    calls: AtomicUsize,
}

// Not derived: that would ask `T: Default`.
impl<T> Default for InMemoryServers<T> {
    fn default() -> Self {
        Self {
            servers: Mutex::default(),
            calls: AtomicUsize::new(0),
        }
    }
}

impl<T: Clone> InMemoryServers<T> {
    /// Make `server_id` exist with these admins.
    pub fn set(&self, server_id: &str, admins: T) {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server_id.to_ascii_lowercase(), admins);
    }

    /// How many times admins were read.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// One read: the admins of `server_id`, `None` when it does not exist.
    pub fn read(&self, server_id: &str) -> Option<T> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.get(&server_id.to_ascii_lowercase()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "/subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/shop/providers/Microsoft.Sql/servers/shop-sql";

    #[test]
    fn server_ids_are_parsed_strictly() {
        let parsed = ServerId {
            provider: "Microsoft.Sql",
            resource_type: "servers",
            group: "shop",
            name: "shop-sql",
        };
        assert_eq!(parse_server_id(SERVER), Some(parsed));
        assert_eq!(parse_server_id(&format!("{SERVER}/")), Some(parsed));
        assert!(parsed.is("microsoft.sql", "Servers"));
        assert!(!parsed.is("Microsoft.Sql", "managedInstances"));
        for bad in [
            "",
            "/subscriptions/x",
            "subscriptions/s/resourceGroups/shop/providers/Microsoft.Sql/servers/a",
            "/subscriptions/s/resourceGroups/shop/providers/Microsoft.Sql/servers/a/databases",
            "/subscriptions/s/resourceGroups/../providers/Microsoft.Sql/servers/a",
            "/subscriptions/s/resourceGroups/./providers/Microsoft.Sql/servers/a",
            "/subscriptions/s/resourceGroups//providers/Microsoft.Sql/servers/a",
            "/subscriptions/s/resourceGroups/shop/providers/Microsoft.Sql/servers/a?x=1",
            "/subscriptions/s/groups/shop/providers/Microsoft.Sql/servers/a",
        ] {
            assert_eq!(parse_server_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_tenant_left_out_is_the_operators() {
        let tenant = "e1cda79e-17df-4173-935d-d4b1a3079db0";
        assert!(same_tenant("", tenant));
        assert!(same_tenant(&tenant.to_uppercase(), tenant));
        assert!(!same_tenant("11111111-2222-3333-4444-555555555555", tenant));
    }

    #[test]
    fn the_refusals_name_the_server_and_the_fix() {
        let missing = server_not_found("SQL server", SERVER, "spec.sql.serverResourceId");
        assert_eq!(missing.reason, Reason::TargetNotPrepared);
        assert!(
            missing
                .message
                .starts_with(&format!("SQL server {SERVER} does not exist"))
        );
        assert!(missing.message.contains("404"));
        assert!(missing.message.contains("fix spec.sql.serverResourceId"));
        let no_arm = NoArm::refusal("Entra admin", SERVER);
        assert_eq!(no_arm.reason, Reason::TargetNotPrepared);
        assert!(
            no_arm
                .message
                .ends_with(&format!("Entra admin of {SERVER}"))
        );
    }

    #[test]
    fn the_in_memory_servers_answer_404_for_unknown_ids_and_count_reads() {
        let servers = InMemoryServers::<Vec<&str>>::default();
        servers.set(SERVER, vec!["dbgrant"]);
        assert_eq!(servers.read(&SERVER.to_uppercase()), Some(vec!["dbgrant"]));
        assert_eq!(servers.read("/subscriptions/x"), None);
        assert_eq!(servers.calls(), 2);
    }
}
