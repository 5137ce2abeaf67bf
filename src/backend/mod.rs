//! One module per database kind: how a grant's role and scope map onto that backend's access
//! model (pure), and the seam through which the reconcilers reach it (`CosmosAccess`), so the
//! controllers never see HTTP and tests can swap the implementation.

pub mod cosmos;
pub mod entra_admin;
mod ids;
pub mod operator_token;
pub mod postgres;
pub mod sql;

pub use operator_token::{CredentialToken, OperatorToken};

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::Secret;
use k8s_openapi::jiff::Timestamp;

use crate::api::Reason;

/// A failure reported by a backend, already classified into the reason users will see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// The condition reason.
    pub reason: Reason,
    /// What happened, for humans; never contains a token.
    pub message: String,
    /// How long the remote side asked us to wait, if it did (HTTP 429 Retry-After), never
    /// more than [`MAX_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
    /// The HTTP status the remote side answered with, when it answered.
    pub http_status: Option<u16>,
    /// The remote side's own error code (Azure's `error.code`, an AADSTS number, a SQLSTATE).
    pub code: Option<String>,
    /// The remote side's request id, for a support case (Azure's `x-ms-request-id`).
    pub request_id: Option<String>,
}

/// The longest wait a remote side may ask for: a hostile or broken `Retry-After` (say
/// `18446744073709551615`) must neither overflow a deadline nor park a grant for years.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `wait`, bounded by [`MAX_RETRY_AFTER`].
pub fn bounded_retry_after(wait: Duration) -> Duration {
    wait.min(MAX_RETRY_AFTER)
}

impl BackendError {
    /// A failure with no server-requested delay.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry_after: None,
            http_status: None,
            code: None,
            request_id: None,
        }
    }

    /// The same failure, naming the remote side's request id (in the message too, so users
    /// can quote it to support).
    pub fn with_request_id(mut self, request_id: Option<&str>) -> Self {
        if let Some(id) = request_id.filter(|id| !id.is_empty()) {
            self.message = format!("{} (request id {id})", self.message);
            self.request_id = Some(id.to_string());
        }
        self
    }

    /// Whether the remote side said the thing does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.http_status == Some(404)
    }
}

/// An identity resolved by exchanging a ServiceAccount token at Entra ID.
#[derive(Clone, Debug)]
pub struct ResolvedIdentity {
    /// Object id of the identity's service principal (the token's `oid`).
    pub principal_id: String,
    /// Tenant the token was issued in (the token's `tid`).
    pub tenant_id: String,
    /// The identity's data-plane access token (redacted in Debug).
    pub access_token: Secret,
    /// When `access_token` expires.
    pub expires_at: Timestamp,
}

/// Access one grant asks for, in backend-neutral terms: principal P may have role R at scope S.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Object id of the workload identity's service principal.
    pub principal_id: String,
    /// The role's name on the target (`reader`, `contributor` or a custom role).
    pub role: String,
    /// Database within the target, if the grant names one.
    pub database: Option<String>,
    /// Container (Cosmos DB) within `database`, if the grant names one.
    pub container: Option<String>,
    /// Client (application) id of the workload identity, when known: the T-SQL backends key
    /// contained users by it (their SID), not by the object id.
    pub client_id: Option<String>,
}

impl Access {
    /// The same access, naming the identity's client id.
    pub fn for_client(mut self, client_id: Option<&str>) -> Self {
        self.client_id = client_id.map(str::to_string);
        self
    }
}

/// One piece of access dbgrant made in a database (a Cosmos DB role assignment today; a
/// contained user or login role for the SQL backends). Its `id` is deterministic in
/// (principal, role, scope), so grants asking for the same access share one holding, and it
/// names the store it lives in, so whoever finds the id knows which target may act on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Holding {
    /// Full, backend-specific id (for Cosmos DB the ARM id of the assignment), lower-cased.
    pub id: String,
    // The parts keep their case: a database's names can be case-sensitive.
    /// Object id of the principal it gives access to.
    pub principal_id: String,
    /// Backend-specific id of the role it gives.
    pub role_id: String,
    /// Backend-specific scope it applies at.
    pub scope: String,
}

/// The serialisation and ownership unit of a backend: one Cosmos DB account, one SQL
/// database. Writes on one store are serialised; holdings are only ever acted on through a
/// target that declares their store.
pub fn same_store(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Everything a target needs from its database, behind one backend-neutral seam. The
/// controllers dispatch once on the target's backend block (`for_target`) and then only talk
/// to this trait: a new database kind is a module under `backend/` implementing it.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Short name of the backend kind (`cosmos`), as shown in the target's status.
    fn kind(&self) -> &'static str;

    /// The store this target declares (lower-cased), the unit of write serialisation.
    fn store(&self) -> String;

    /// The short name users know the store by (account or server), for `kubectl get`.
    fn display_name(&self) -> String;

    /// The store a holding id belongs to, when it is an id this backend kind makes.
    fn store_of(&self, holding_id: &str) -> Option<String>;

    /// The holding that gives `access`, or why the target cannot give it (pure).
    ///
    /// # Errors
    /// `InvalidSpec` when the target does not declare the role.
    fn holding_for(&self, access: &Access) -> Result<Holding, BackendError>;

    /// Check the store exists and may be managed, and converge what the target itself owns
    /// (custom role definitions). Returns the data-plane endpoint.
    async fn prepare(&self) -> Result<String, BackendError>;

    /// Every holding dbgrant made in the store: those whose id is the deterministic id of
    /// their own principal, role and scope. Anything else was made by someone else.
    async fn list_owned(&self) -> Result<Vec<Holding>, BackendError>;

    /// Create the holding (idempotent by its id).
    async fn grant(&self, holding: &Holding) -> Result<(), BackendError>;

    /// Remove the holding with this id if it exists and dbgrant made it; `Ok(false)` when
    /// there was nothing of dbgrant's to remove.
    async fn revoke(&self, holding_id: &str) -> Result<bool, BackendError>;

    /// Whether the workload's own token can use the access on the data plane.
    async fn probe(
        &self,
        endpoint: &str,
        access: &Access,
        access_token: &Secret,
    ) -> Result<bool, BackendError>;

    /// The audience of the workload tokens this backend's data plane accepts.
    fn token_scope(&self) -> TokenScope;

    /// Whether access should be probed before a grant is called Ready.
    fn verifies_access(&self) -> bool;

    /// Delete what the target itself owns (custom roles), once no holding uses it. Returns
    /// the names of what is kept because something still uses it.
    async fn remove_target_owned(&self, in_use_by: &[Holding])
    -> Result<Vec<String>, BackendError>;

    /// The data-plane path a probe reads, for messages.
    fn describe_scope(&self, access: &Access) -> String;

    /// What a holding made in the database, in words for the grant's status (the SQL backends
    /// name the user or login role they made; Cosmos DB its role assignment).
    fn describe_holding(&self, holding: &Holding) -> String {
        format!("assignment {}", holding.id)
    }

    /// Whether the target owns definitions in the store (custom roles) that `prepare` keeps in
    /// place: such a target is checked in full on each resync, not only its access.
    fn keeps_definitions(&self) -> bool {
        false
    }
}

/// The audience of a workload's access token: each backend asks for its own, and the cloud
/// decides the exact scope string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TokenScope {
    /// Cosmos DB's data plane.
    CosmosDb,
    /// Azure SQL Database, SQL Managed Instance and Synapse SQL.
    AzureSql,
    /// Azure Database for PostgreSQL.
    PostgreSql,
    /// A scope given as is (`https://…/.default`).
    Explicit(String),
}

/// The Entra ID token exchange: the one way the operator learns who a workload is.
#[async_trait::async_trait]
pub trait IdentityExchange: Send + Sync {
    /// Exchange a token minted for the workload's ServiceAccount for an access token of
    /// `client_id` for `scope`, and read the principal id from it.
    async fn exchange(
        &self,
        tenant_id: &str,
        client_id: &str,
        service_account_token: &Secret,
        scope: &TokenScope,
    ) -> Result<ResolvedIdentity, BackendError>;
}

/// The clients backends are built from (one per external API, each a seam of its own).
#[derive(Clone)]
pub struct Backends {
    /// ARM and the Cosmos DB data plane.
    pub cosmos: Arc<dyn cosmos::CosmosAccess>,
    /// Entra ID's token exchange.
    pub entra: Arc<dyn IdentityExchange>,
    /// The operator's PostgreSQL connections (unconfigured until set: every call says so).
    pub postgres: Arc<postgres::PostgresClients>,
    /// The operator's T-SQL connections (unconfigured until set: every call says so).
    pub sql: Arc<sql::SqlClients>,
}

impl Backends {
    /// Every seam served by one client that speaks to all of them (the real Azure client, or
    /// a test's fake).
    pub fn from_one<C>(client: Arc<C>) -> Self
    where
        C: cosmos::CosmosAccess + IdentityExchange + 'static,
    {
        Self {
            cosmos: client.clone(),
            entra: client,
            postgres: Arc::new(postgres::PostgresClients::unconfigured()),
            sql: Arc::new(sql::SqlClients::unconfigured()),
        }
    }

    /// The store a holding id belongs to, whichever backend kind made it.
    pub fn store_of(&self, id: &str) -> Option<String> {
        cosmos::parse_assignment_id(id)
            .map(|(account, _)| account.to_ascii_lowercase())
            .or_else(|| postgres::store_of(id))
            .or_else(|| sql::store_of(id))
    }

    /// The backend behind `target`'s backend block: the one dispatch on the kind of database.
    ///
    /// # Errors
    /// `InvalidSpec` when no supported backend block is set.
    pub fn for_target(
        &self,
        name: &str,
        spec: &crate::api::DatabaseTargetSpec,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        match (&spec.cosmos, &spec.postgres) {
            (None, None) if let Some(target) = &spec.sql => Ok(Arc::new(sql::SqlBackend::new(
                name,
                target.clone(),
                self.sql.clone(),
            ))),
            (Some(cosmos), _) => Ok(Arc::new(cosmos::CosmosBackend::new(
                name,
                cosmos.clone(),
                self.cosmos.clone(),
            ))),
            (None, Some(pg)) => Ok(Arc::new(postgres::PostgresBackend::new(
                name,
                pg.clone(),
                self.postgres.clone(),
            ))),
            (None, None) => Err(BackendError::new(
                Reason::InvalidSpec,
                "no supported backend block is set",
            )),
        }
    }
}
