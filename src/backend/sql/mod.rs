//! T-SQL databases (Azure SQL Database, SQL Managed Instance, Synapse SQL): a contained Entra
//! user per workload identity, keyed by the SID made from its **client id**, and the role
//! memberships and schema permissions a target's roles mean in one database.
//!
//! - `plan`: desired against observed, a pure function giving ordered idempotent steps;
//! - `tsql`: the one observation batch, each step's fixed batch text and parameters (names
//!   quoted by the server with `QUOTENAME`), and SQL error numbers sorted into reasons;
//! - `connect`: TDS 8 strict TLS on rustls/ring, the operator's Entra token, redirects,
//!   timeouts, a small pool per server and database;
//! - `admins`: the preflight's ARM half (is the operator the server's Entra admin?);
//! - `backend`: the [`Backend`](super::Backend) seam over them.
//!
//! A holding is one (workload client id, role, database). Its id is deterministic and names
//! its store (server and database): `mssql://host:port/db#role=reader&cid=<client id>`, the
//! database percent-encoded so the id can be lower-cased without losing the name's case.

pub mod admins;
mod backend;
pub mod connect;
pub mod plan;
pub mod tsql;

pub use backend::SqlBackend;
pub use connect::SqlClients;

use super::ids::{decode, encode};
use uuid::Uuid;

/// The longest identifier (sysname) T-SQL keeps, in UTF-16 units; `QUOTENAME` returns NULL
/// past it.
pub const MAX_IDENTIFIER_UNITS: usize = 128;

/// Why a name cannot be a T-SQL identifier dbgrant will use.
pub fn identifier_problem(name: &str) -> Option<String> {
    let units = name.encode_utf16().count();
    if name.is_empty() {
        return Some("is empty".into());
    }
    if units > MAX_IDENTIFIER_UNITS {
        return Some(format!(
            "is {units} UTF-16 units long; T-SQL names hold at most {MAX_IDENTIFIER_UNITS}"
        ));
    }
    if name.chars().any(char::is_control) {
        return Some("contains a control character (NUL, newline, ...)".into());
    }
    None
}

/// `QUOTENAME(name)` as the server computes it: brackets, `]` doubled, `None` where the
/// server would return NULL. The batches quote on the server; this mirror is for messages
/// (statements an admin should run) and for tests that hold the two to the same rules.
pub fn quote_ident(name: &str) -> Option<String> {
    if name.encode_utf16().count() > MAX_IDENTIFIER_UNITS || name.contains('\0') {
        return None;
    }
    Some(format!("[{}]", name.replace(']', "]]")))
}

/// The SID of a service principal's contained user: its client id in SQL Server's
/// `uniqueidentifier` byte order (first three fields little-endian).
pub fn sid_of(client_id: &Uuid) -> [u8; 16] {
    client_id.to_bytes_le()
}

/// `0x...` as `CONVERT(varchar(34), sid, 1)` renders it, upper-case hex.
pub fn sid_literal(client_id: &Uuid) -> String {
    let hex: String = sid_of(client_id)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect();
    format!("0x{hex}")
}

/// A client id as dbgrant accepts it: a hyphenated GUID, not nil (braces, whitespace and
/// other spellings are refused rather than guessed at).
pub fn parse_client_id(client_id: &str) -> Option<Uuid> {
    if client_id.len() != 36 {
        return None;
    }
    Uuid::try_parse(client_id).ok().filter(|u| !u.is_nil())
}

/// The contained user's name dbgrant creates (SID form): the client id, lower-case. It is
/// unique, short, and names the identity the workload runs as.
pub fn user_name(client_id: &Uuid) -> String {
    client_id.hyphenated().to_string()
}

/// `mssql://host:port/db`, lower-cased (the database percent-encoded first).
pub fn store_id(host: &str, port: u16, database: &str) -> String {
    format!(
        "mssql://{}:{port}/{}",
        host.to_ascii_lowercase(),
        encode(database)
    )
}

/// The holding id of `role` for the identity with `client_id` in the store.
pub fn holding_id(store: &str, role: &str, client_id: &Uuid) -> String {
    format!(
        "{store}#role={}&cid={}",
        role.to_ascii_lowercase(),
        client_id.hyphenated()
    )
}

/// A parsed holding id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldingId {
    /// Its store (`mssql://host:port/db`).
    pub store: String,
    /// The database, decoded.
    pub database: String,
    /// dbgrant role name.
    pub role: String,
    /// The workload identity's client id.
    pub client_id: Uuid,
}

/// The parts of a T-SQL holding id, when `id` is one dbgrant made (anything else: `None`).
pub fn parse_holding_id(id: &str) -> Option<HoldingId> {
    let id = id.to_ascii_lowercase();
    let rest = id.strip_prefix("mssql://")?;
    let (location, fragment) = rest.split_once('#')?;
    let (authority, database) = location.split_once('/')?;
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let database = decode(database)?;
    let (role, cid) = fragment.strip_prefix("role=")?.split_once("&cid=")?;
    let role_ok = !role.is_empty()
        && role.len() <= 63
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let client_id = parse_client_id(cid)?;
    if !host_ok || !role_ok || identifier_problem(&database).is_some() {
        return None;
    }
    let store = store_id(host, port, &database);
    // Only the canonical spelling is an id dbgrant made: it certifies itself.
    (holding_id(&store, role, &client_id) == id).then(|| HoldingId {
        store,
        database,
        role: role.to_string(),
        client_id,
    })
}

/// The store a holding id belongs to, when it is a T-SQL holding id.
pub fn store_of(id: &str) -> Option<String> {
    parse_holding_id(id).map(|h| h.store)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CID: &str = "2ff8edf0-dccb-4148-a649-2c1154e1e129";

    #[test]
    fn the_sid_is_the_client_id_in_uniqueidentifier_byte_order() {
        // The known vector: the first three fields flip, the last eight bytes stay.
        let cid = Uuid::parse_str(CID).expect("guid");
        assert_eq!(sid_literal(&cid), "0xF0EDF82FCBDC4841A6492C1154E1E129");
    }

    #[test]
    fn client_ids_are_strict_guids() {
        assert!(parse_client_id(CID).is_some());
        assert!(parse_client_id(&CID.to_uppercase()).is_some());
        for bad in [
            "",
            "00000000-0000-0000-0000-000000000000",
            "{2ff8edf0-dccb-4148-a649-2c1154e1e129}",
            " 2ff8edf0-dccb-4148-a649-2c1154e1e129",
            "2ff8edf0dccb4148a6492c1154e1e129",
            "urn:uuid:2ff8edf0-dccb-4148-a649-2c1154e1e129",
        ] {
            assert_eq!(parse_client_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn holding_ids_name_their_store_and_round_trip() {
        let cid = Uuid::parse_str(CID).expect("guid");
        let store = store_id("Shop.Database.Windows.Net", 1433, "Orders");
        assert_eq!(store, "mssql://shop.database.windows.net:1433/%4frders");
        let id = holding_id(&store, "reader", &cid);
        let parsed = parse_holding_id(&id.to_uppercase()).expect("parses");
        assert_eq!(parsed.database, "Orders");
        assert_eq!(parsed.client_id, cid);
        assert_eq!(store_of(&id), Some(store));
    }

    #[test]
    fn other_ids_are_not_sql_holdings() {
        for id in [
            "postgres://h:5432/db#role=reader&oid=2ff8edf0-dccb-4148-a649-2c1154e1e129",
            "mssql://h:1433/db#role=reader&cid=not-a-guid",
            "mssql://h:0/db#role=reader&cid=2ff8edf0-dccb-4148-a649-2c1154e1e129",
            "mssql://h:1433/db#role=Reader!&cid=2ff8edf0-dccb-4148-a649-2c1154e1e129",
            "mssql://h:1433/d%00b#role=reader&cid=2ff8edf0-dccb-4148-a649-2c1154e1e129",
            "mssql://h:1433/db#role=reader&cid=00000000-0000-0000-0000-000000000000",
            "mssql://h:1433/db#role=reader&cid=2ff8edf0-dccb-4148-a649-2c1154e1e129&x=1",
        ] {
            assert_eq!(parse_holding_id(id), None, "{id}");
        }
    }

    #[test]
    fn quote_ident_mirrors_quotename() {
        assert_eq!(quote_ident("abc[]def").as_deref(), Some("[abc[]]def]"));
        assert_eq!(quote_ident(&"a".repeat(128)).map(|q| q.len()), Some(130));
        assert_eq!(quote_ident(&"a".repeat(129)), None);
        // 64 astral characters are 128 UTF-16 units; 65 are too many.
        assert!(quote_ident(&"😀".repeat(64)).is_some());
        assert!(quote_ident(&"😀".repeat(65)).is_none());
        assert_eq!(quote_ident("a\0b"), None);
    }

    proptest! {
        #[test]
        fn quoted_names_are_one_bracketed_identifier(name in "\\PC{0,140}|[\\]\\[\"'\\x00]{0,10}") {
            match quote_ident(&name) {
                None => prop_assert!(name.encode_utf16().count() > 128 || name.contains('\0')),
                Some(q) => {
                    prop_assert!(q.starts_with('[') && q.ends_with(']'));
                    let inner = &q[1..q.len() - 1];
                    // Every `]` inside is doubled, so none can close the identifier early.
                    prop_assert!(!inner.replace("]]", "").contains(']'));
                    prop_assert_eq!(inner.replace("]]", "]"), name);
                }
            }
        }

        #[test]
        fn any_valid_database_name_round_trips_through_the_holding_id(
            database in "\\PC{1,20}",
            quote in prop::sample::select(vec!["", "]", "'", "%", "#", "/", "&cid="]),
        ) {
            let database = format!("{quote}{database}{quote}");
            prop_assume!(identifier_problem(&database).is_none());
            let cid = Uuid::parse_str(CID).expect("guid");
            let id = holding_id(&store_id("h.example", 1433, &database), "reader", &cid);
            let parsed = parse_holding_id(&id).expect("parses");
            prop_assert_eq!(parsed.database, database);
        }

        #[test]
        fn arbitrary_ids_never_panic_the_parser(id in "mssql://\\PC{0,80}") {
            let _ = parse_holding_id(&id);
        }
    }
}
