//! Azure Database for PostgreSQL flexible server: Entra-mapped login roles, matched by object
//! id, and the memberships and schema privileges a target's roles mean in one database.
//!
//! - `plan`: desired against observed, a pure function giving ordered idempotent steps;
//! - `sql`: the catalogue reads and the statements, identifiers quoted by the server;
//! - `connect`: TLS (verify-full, ring), the operator's Entra token per connection, a small
//!   pool per server and database;
//! - `admins`: the ARM half of the preflight (the operator among the server's Entra
//!   administrators, when the target names the server's ARM id);
//! - `backend`: the [`Backend`](super::Backend) seam over them.
//!
//! A holding is one (principal, role, database). Its id is deterministic and names its store
//! (server and database): `postgres://host:port/db#role=reader&oid=<object id>`, the database
//! percent-encoded so the id can be lower-cased without losing the name's case.

pub mod admins;
mod backend;
pub mod connect;
pub mod plan;
pub mod sql;

pub use admins::{Administrators, EntraAdministrator, FlexibleServers};
pub use backend::PostgresBackend;
pub use connect::PostgresClients;

use super::ids::{decode, encode};
use uuid::Uuid;

/// The longest identifier PostgreSQL keeps; longer ones are silently truncated.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Why a name cannot be a PostgreSQL identifier dbgrant will use.
pub fn identifier_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Some(format!(
            "is {} bytes long; PostgreSQL would silently truncate it to {MAX_IDENTIFIER_BYTES}",
            name.len()
        ));
    }
    if name.contains('\0') {
        return Some("contains a NUL character".into());
    }
    None
}

/// The login role name dbgrant creates for a principal: its object id, which is unique,
/// at most 36 bytes, and readable by the workload from its own token (`oid`).
pub fn login_name(object_id: &str) -> String {
    object_id.to_ascii_lowercase()
}

/// `postgres://host:port/db`, lower-cased (the database percent-encoded first).
pub fn store_id(host: &str, port: u16, database: &str) -> String {
    format!(
        "postgres://{}:{port}/{}",
        host.to_ascii_lowercase(),
        encode(database)
    )
}

/// The holding id of `role` for `object_id` in the store.
pub fn holding_id(store: &str, role: &str, object_id: &str) -> String {
    format!(
        "{store}#role={}&oid={}",
        role.to_ascii_lowercase(),
        object_id.to_ascii_lowercase()
    )
}

/// A parsed holding id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldingId {
    /// Its store (`postgres://host:port/db`).
    pub store: String,
    /// The database, decoded.
    pub database: String,
    /// dbgrant role name.
    pub role: String,
    /// Entra object id.
    pub object_id: String,
}

/// The parts of a PostgreSQL holding id, when `id` is one (anything else: `None`).
pub fn parse_holding_id(id: &str) -> Option<HoldingId> {
    let id = id.to_ascii_lowercase();
    let rest = id.strip_prefix("postgres://")?;
    let (location, fragment) = rest.split_once('#')?;
    let (authority, database) = location.split_once('/')?;
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let database = decode(database)?;
    let (role, oid) = fragment.strip_prefix("role=")?.split_once("&oid=")?;
    let role_ok = !role.is_empty()
        && role.len() <= 63
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let oid = Uuid::parse_str(oid).ok()?.hyphenated().to_string();
    if !host_ok || !role_ok || identifier_problem(&database).is_some() || port == 0 {
        return None;
    }
    let store = store_id(host, port, &database);
    // Only the canonical spelling is an id dbgrant made.
    (holding_id(&store, role, &oid) == id).then(|| HoldingId {
        store,
        database,
        role: role.to_string(),
        object_id: oid,
    })
}

/// The store a holding id belongs to, when it is a PostgreSQL holding id.
pub fn store_of(id: &str) -> Option<String> {
    parse_holding_id(id).map(|h| h.store)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const OID: &str = "0f6c7a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6";

    #[test]
    fn holding_ids_name_their_store_and_round_trip() {
        let store = store_id("Shop.Postgres.Database.Azure.com", 5432, "Orders");
        assert_eq!(
            store,
            "postgres://shop.postgres.database.azure.com:5432/%4frders"
        );
        let id = holding_id(&store, "reader", &OID.to_uppercase());
        let parsed = parse_holding_id(&id).expect("parses");
        assert_eq!(parsed.database, "Orders");
        assert_eq!(parsed.object_id, OID);
        assert_eq!(parsed.role, "reader");
        assert_eq!(store_of(&id.to_uppercase()), Some(store));
    }

    #[test]
    fn other_ids_are_not_postgres_holdings() {
        for id in [
            "/subscriptions/x/resourceGroups/y/providers/Microsoft.DocumentDB/databaseAccounts/a/sqlRoleAssignments/1",
            "postgres://h:5432/db#role=reader&oid=not-a-guid",
            "postgres://h:0/db#role=reader&oid=0f6c7a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6",
            "postgres://h:5432/db#role=Reader!&oid=0f6c7a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6",
            "postgres://h:5432/d%00b#role=reader&oid=0f6c7a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6",
            "postgres://h:5432/db#role=reader&oid=0f6c7a3e-1b2d-4c5e-8f90-a1b2c3d4e5f6&x=1",
        ] {
            assert_eq!(parse_holding_id(id), None, "{id}");
        }
    }

    #[test]
    fn identifiers_over_63_bytes_or_with_nul_are_refused() {
        assert!(identifier_problem(&"a".repeat(63)).is_none());
        assert!(identifier_problem(&"a".repeat(64)).is_some());
        // 32 two-byte characters: 32 characters, 64 bytes.
        assert!(identifier_problem(&"é".repeat(32)).is_some());
        assert!(identifier_problem("a\0b").is_some());
        assert!(identifier_problem("").is_some());
        assert!(identifier_problem("we\"ird ' name").is_none());
    }

    proptest! {
        #[test]
        fn any_valid_database_name_round_trips_through_the_holding_id(
            database in "\\PC{1,20}",
            quote in prop::sample::select(vec!["", "\"", "'", "%", "#", "/", "&oid="]),
        ) {
            let database = format!("{quote}{database}{quote}");
            prop_assume!(identifier_problem(&database).is_none());
            let id = holding_id(&store_id("h.example", 5432, &database), "reader", OID);
            let parsed = parse_holding_id(&id).expect("parses");
            prop_assert_eq!(parsed.database, database);
            prop_assert_eq!(parsed.object_id, OID);
        }

        #[test]
        fn identifier_checks_never_panic_and_bound_bytes(name in "\\PC{0,80}") {
            let problem = identifier_problem(&name);
            prop_assert_eq!(
                problem.is_none(),
                !name.is_empty() && name.len() <= 63 && !name.contains('\0')
            );
        }

        #[test]
        fn arbitrary_ids_never_panic_the_parser(id in "postgres://\\PC{0,80}") {
            let _ = parse_holding_id(&id);
        }
    }
}
