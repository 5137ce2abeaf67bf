//! A STAND-IN for an Azure SQL Database server: a TDS endpoint that signs clients in with
//! Entra access tokens and executes **only the statements dbgrant's T-SQL backend sends**,
//! against a catalogue per database. It is not SQL Server and runs no T-SQL: no SQL Server
//! can be installed here (see the SQL design note), so this holds dbgrant's client to the
//! wire protocol, the sign-in rules and the error numbers of the real one.
//!
//! - `wire`, `tokens`: TDS packets, what clients send, and the tokens the server answers
//!   with (TDS 8 strict: TLS first, ALPN `tds/8.0`);
//! - `server`: the connection: PRELOGIN, LOGIN7 with a FEDAUTH token checked against
//!   azure-sim's keys (audience `https://database.windows.net/`), then SQL batches and
//!   `sp_executesql` RPCs;
//! - `statements`: the exact statement texts known, and their parameters;
//! - `catalogue`, `exec`: principals, roles, permissions, and what each statement does.
//!
//! An unknown statement is refused with Msg 102 saying the stand-in does not know it, so a
//! test fails instead of reading an empty answer.

mod catalogue;
mod exec;
mod server;
pub mod statements;
pub mod tokens;
pub mod wire;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use catalogue::{DBO, Database, Permission, Principal, PrincipalType};
pub use exec::SqlError;
pub use statements::{Shape, recognise};
pub use wire::Value;

/// Checks a presented Entra token (signature, audience, expiry) and returns its claims.
pub type TokenCheck = crate::postgres::TokenCheck;

/// The audience of Azure SQL tokens as Entra issues them (the resource's app id URI).
pub const AUDIENCE: &str = "https://database.windows.net/";

/// The audiences a token for Azure SQL may carry: the app id URI, and the same without its
/// slash (a `.default` scope's resource as some clients spell it).
pub const AUDIENCES: [&str; 2] = [
    "https://database.windows.net/",
    "https://database.windows.net",
];

/// The server's Microsoft Entra admin (set through ARM on the real server): a principal
/// whose SID is its client id (applications, managed identities) or object id (users,
/// groups). It enters every database as dbo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntraAdmin {
    pub login: String,
    pub sid: Uuid,
}

/// One statement the stand-in ran (or refused).
#[derive(Clone, Debug)]
pub struct Executed {
    pub database: String,
    /// The signed-in identity: the token's `appid` (or `oid`).
    pub identity: String,
    /// The statement, when recognised; `None` for a refused text (see `text`).
    pub shape: Option<Shape>,
    pub text: String,
    pub params: Vec<Value>,
    /// The error number it ended with, if any.
    pub error: Option<u32>,
}

/// A sign-in attempt.
#[derive(Clone, Debug)]
pub struct SignIn {
    pub database: String,
    /// The token's `appid` (or `oid`), when the token was valid.
    pub identity: Option<String>,
    pub error: Option<u32>,
}

#[derive(Default)]
struct Faults {
    /// Errors the next statements end with instead of running.
    next_errors: VecDeque<u32>,
    /// Accept connections but never answer (a server that hangs).
    silent: bool,
    /// Sign in, then never answer a statement.
    silent_statements: bool,
    /// Sign-ins answered with a redirect there (Azure's "Redirect" connection policy).
    redirects: VecDeque<(String, u16)>,
}

#[derive(Default)]
struct State {
    databases: Vec<Database>,
    admin: Option<EntraAdmin>,
    log: Vec<Executed>,
    sign_ins: Vec<SignIn>,
    faults: Faults,
}

impl State {
    fn database(&mut self, name: &str) -> Option<&mut Database> {
        self.databases
            .iter_mut()
            .find(|d| d.name.eq_ignore_ascii_case(name))
    }
}

/// A running stand-in on 127.0.0.1; stops when dropped.
pub struct SqlServer {
    /// Its port.
    pub port: u16,
    /// PEM of the CA its certificate (for `localhost`, `127.0.0.1`) is signed by.
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Drop for SqlServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl SqlServer {
    /// Start a stand-in whose sign-ins are checked by `check` (azure-sim's
    /// `verifier_for_any(&AUDIENCES)`).
    ///
    /// # Errors
    /// When the port cannot be bound or TLS material cannot be made.
    pub async fn start(check: TokenCheck) -> anyhow::Result<Self> {
        Self::start_on(check, 0).await
    }

    /// Start a stand-in on `port` of 127.0.0.1 (0: a free one), as [`start`](Self::start).
    ///
    /// # Errors
    /// When the port cannot be bound (another process has it) or TLS material cannot be made.
    pub async fn start_on(check: TokenCheck, port: u16) -> anyhow::Result<Self> {
        let tls = crate::tls::TlsMaterial::generate("sql-sim")?;
        let listener = crate::tls::bind_loopback(port).await?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = CancellationToken::new();
        let server = Self {
            port: listener.local_addr()?.port(),
            ca_pem: tls.ca_pem.clone(),
            state: state.clone(),
            stop: stop.clone(),
        };
        let shared = Arc::new(server::Shared {
            state,
            check,
            tls: tokio_rustls::TlsAcceptor::from(tls.server_config_with_alpn(b"tds/8.0")),
        });
        tokio::spawn(server::accept(listener, shared, stop));
        Ok(server)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create database `name` (empty, as SQL Server makes one).
    pub fn create_database(&self, name: &str) {
        self.state().databases.push(Database::new(name));
    }

    /// Set the server's Entra admin.
    pub fn set_entra_admin(&self, login: &str, sid: Uuid) {
        self.state().admin = Some(EntraAdmin {
            login: login.to_string(),
            sid,
        });
    }

    /// Change database `name`'s catalogue directly (test setup, as an admin with a query
    /// window would), returning what `change` returns.
    ///
    /// # Panics
    /// When the database does not exist.
    pub fn with_database<T>(&self, name: &str, change: impl FnOnce(&mut Database) -> T) -> T {
        let mut state = self.state();
        let db = state
            .database(name)
            .unwrap_or_else(|| panic!("the stand-in has no database {name}"));
        change(db)
    }

    /// The contained user whose SID is `client_id`'s in database `name`, if any.
    pub fn user_by_sid(&self, database: &str, client_id: &Uuid) -> Option<Principal> {
        self.with_database(database, |db| db.by_sid(client_id).cloned())
    }

    /// The roles the user with `client_id`'s SID is directly in.
    pub fn roles_of(&self, database: &str, client_id: &Uuid) -> Vec<String> {
        self.with_database(database, |db| {
            db.by_sid(client_id)
                .map(|p| db.roles_of(p.id))
                .unwrap_or_default()
        })
    }

    /// Every statement run or refused so far.
    pub fn statements(&self) -> Vec<Executed> {
        self.state().log.clone()
    }

    /// Every sign-in attempt so far.
    pub fn sign_ins(&self) -> Vec<SignIn> {
        self.state().sign_ins.clone()
    }

    /// The next statement ends with error `number` (the engine's message for it) instead
    /// of running; several calls queue several errors.
    pub fn fail_next(&self, number: u32) {
        self.state().faults.next_errors.push_back(number);
    }

    /// Accept connections and never answer (or answer again, with `false`).
    pub fn set_silent(&self, silent: bool) {
        self.state().faults.silent = silent;
    }

    /// Answer the next successful sign-in with a redirect to `host:port`, as Azure SQL's
    /// gateway does under the "Redirect" connection policy; several calls queue several.
    pub fn redirect_next(&self, host: &str, port: u16) {
        self.state()
            .faults
            .redirects
            .push_back((host.to_string(), port));
    }

    /// Sign clients in, then never answer their statements.
    pub fn set_silent_statements(&self, silent: bool) {
        self.state().faults.silent_statements = silent;
    }
}
