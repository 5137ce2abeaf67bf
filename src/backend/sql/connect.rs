//! Connections to T-SQL servers: TDS 8 strict (the TLS handshake, ALPN `tds/8.0`, before any
//! TDS byte) on rustls with ring, the server's certificate and name verified; the operator's
//! Entra token in LOGIN7 (checked at sign-in only, so pooled connections are young); one
//! redirect followed (Azure's "Redirect" connection policy); bounded timeouts; a small pool
//! per (server, database), and one write lock per database.
//!
//! tiberius is built without TLS features (its rustls feature links aws-lc-rs): the stream it
//! gets is already encrypted, and it is told encryption is "not supported" so it adds none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::credentials::Secret;
use tiberius::{AuthMethod, Client, Config, EncryptionLevel, Row};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::admins::{NoArm, SqlServers};
use super::tsql::{Batch, Param};
use crate::api::Reason;
use crate::backend::BackendError;
use crate::backend::operator_token::{NoToken, OperatorToken};

/// How long connecting (TCP, TLS, sign-in, one redirect) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one batch may take.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per (server, database).
const POOL_SIZE: usize = 2;
/// A pooled connection older than this is closed rather than reused (tokens are checked at
/// sign-in only: a connection must not outlive the right it was opened with by much).
const MAX_AGE: Duration = Duration::from_secs(300);

/// A signed-in TDS connection.
pub type SqlClient = Client<Compat<TlsStream<TcpStream>>>;

type Key = (String, u16, String);

/// The operator's T-SQL connections, shared by every SQL target, and its way to read
/// servers' Entra admins in ARM (the preflight's first half).
pub struct SqlClients {
    token: Arc<dyn OperatorToken>,
    servers: Arc<dyn SqlServers>,
    tls: TlsConnector,
    connect_timeout: Duration,
    statement_timeout: Duration,
    idle: Mutex<HashMap<Key, Vec<(Instant, SqlClient)>>>,
    writes: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl SqlClients {
    /// Clients signing in with `token`, trusting what `tls` trusts (its verifier checks the
    /// certificate chain and the server's name; `tds/8.0` is added to its ALPN list).
    pub fn new(token: Arc<dyn OperatorToken>, mut tls: rustls::ClientConfig) -> Self {
        tls.alpn_protocols = vec![b"tds/8.0".to_vec()];
        Self {
            token,
            servers: Arc::new(NoArm),
            tls: TlsConnector::from(Arc::new(tls)),
            connect_timeout: CONNECT_TIMEOUT,
            statement_timeout: STATEMENT_TIMEOUT,
            idle: Mutex::default(),
            writes: Mutex::default(),
        }
    }

    /// The same clients, reading servers' Entra admins through `servers`.
    #[must_use]
    pub fn with_servers(mut self, servers: Arc<dyn SqlServers>) -> Self {
        self.servers = servers;
        self
    }

    /// Where servers' Entra admins are read.
    pub fn servers(&self) -> &dyn SqlServers {
        self.servers.as_ref()
    }

    /// The operator's own object, client and tenant ids, read from its Azure SQL token (the
    /// identity a server's Entra admin must be).
    ///
    /// # Errors
    /// When no token can be had, or it is not a JWT with `oid` and `tid`.
    pub async fn operator_identity(&self) -> Result<(String, String, String), BackendError> {
        let token = self.token.token().await?;
        let claims = crate::azure::entra::read_claims(token.secret()).map_err(|why| {
            BackendError::new(
                Reason::AzureUnavailable,
                format!("reading the operator's object id from its Azure SQL token: {why}"),
            )
        })?;
        let client_id = crate::azure::entra::read_app_id(token.secret()).unwrap_or_default();
        Ok((claims.oid, client_id, claims.tid))
    }

    /// The same clients with other bounds on connecting and on one batch (tests of a server
    /// that never answers need not wait the production bounds out).
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, statement: Duration) -> Self {
        self.connect_timeout = connect;
        self.statement_timeout = statement;
        self
    }

    /// Run `batch` on `client` within this pool's statement bound, returning every result
    /// set.
    ///
    /// # Errors
    /// As [`run_within`].
    pub async fn run(
        &self,
        client: &mut SqlClient,
        what: &str,
        batch: &Batch,
    ) -> Result<Vec<Vec<Row>>, BackendError> {
        run_within(client, what, batch, self.statement_timeout).await
    }

    /// Clients that cannot connect (no credential): every call says so.
    pub fn unconfigured() -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        match tls {
            Ok(tls) => Self::new(Arc::new(NoToken("Azure SQL")), tls),
            Err(_) => unreachable!("ring supports the default protocol versions"),
        }
    }

    /// The lock serialising writes to one database.
    pub fn write_lock(&self, host: &str, port: u16, database: &str) -> Arc<tokio::sync::Mutex<()>> {
        let key = (host.to_ascii_lowercase(), port, database.to_string());
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.entry(key).or_default().clone()
    }

    /// A pooled connection as the operator, or a new one signed in with a fresh token.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn session(
        self: &Arc<Self>,
        host: &str,
        port: u16,
        database: &str,
    ) -> Result<Session, BackendError> {
        let key = (host.to_ascii_lowercase(), port, database.to_string());
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let list = idle.entry(key.clone()).or_default();
            list.retain(|(at, _)| at.elapsed() < MAX_AGE);
            list.pop()
        };
        let (born, client) = match reused {
            Some(found) => found,
            None => {
                let token = self.token.token().await?;
                (
                    Instant::now(),
                    self.connect(host, port, database, &token).await?,
                )
            }
        };
        Ok(Session {
            client: Some(client),
            born,
            key,
            pool: Arc::downgrade(self),
        })
    }

    /// A new connection signed in with `token` (the operator's, or a workload's for a probe),
    /// following at most one redirect.
    ///
    /// # Errors
    /// `TargetNotPrepared` when the server refuses the sign-in; `AzureUnavailable` when it
    /// cannot be reached in time or TLS fails.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        database: &str,
        token: &Secret,
    ) -> Result<SqlClient, BackendError> {
        let what = format!("signing in to {host}:{port}/{database}");
        let attempt = async {
            match self.connect_once(host, port, database, token).await {
                Err(Redirect::To(next_host, next_port)) => {
                    tracing::debug!(%host, %next_host, next_port, "following the server's redirect");
                    match self
                        .connect_once(&next_host, next_port, database, token)
                        .await
                    {
                        Err(Redirect::To(..)) => Err(BackendError::new(
                            Reason::AzureUnavailable,
                            format!("{what}: redirected twice; refusing to follow further"),
                        )),
                        Err(Redirect::Failed(e)) => Err(e),
                        Ok(client) => Ok(client),
                    }
                }
                Err(Redirect::Failed(e)) => Err(e),
                Ok(client) => Ok(client),
            }
        };
        let limit = self.connect_timeout;
        tokio::time::timeout(limit, attempt).await.map_err(|_| {
            BackendError::new(
                Reason::AzureUnavailable,
                format!("{what}: no answer within {limit:?}"),
            )
        })?
    }

    async fn connect_once(
        &self,
        host: &str,
        port: u16,
        database: &str,
        token: &Secret,
    ) -> Result<SqlClient, Redirect> {
        let what = format!("signing in to {host}:{port}/{database}");
        let unavailable = |e: String| {
            Redirect::Failed(BackendError::new(
                Reason::AzureUnavailable,
                format!("{what}: {e}"),
            ))
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| unavailable(format!("{host} is not a valid TLS server name: {e}")))?;
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|e| unavailable(e.to_string()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| unavailable(format!("TLS (TDS 8 strict): {e}")))?;
        let mut config = Config::new();
        config.host(host);
        config.port(port);
        config.database(database);
        config.application_name("dbgrant");
        config.authentication(AuthMethod::aad_token(token.secret()));
        // The stream is already TLS (strict): tiberius must not negotiate any of its own.
        config.encryption(EncryptionLevel::NotSupported);
        match Client::connect(config, tls.compat_write()).await {
            Ok(client) => Ok(client),
            Err(tiberius::error::Error::Routing { host, port }) => Err(Redirect::To(host, port)),
            Err(e) => Err(Redirect::Failed(classify(&what, &e))),
        }
    }
}

enum Redirect {
    To(String, u16),
    Failed(BackendError),
}

/// Sort a tiberius failure into the reason users see.
pub fn classify(what: &str, error: &tiberius::error::Error) -> BackendError {
    match error {
        tiberius::error::Error::Server(token) => {
            let (reason, hint) = super::tsql::classify(token.code());
            let mut e = BackendError::new(
                reason,
                format!(
                    "{what}: {hint} (SQL error {}: {})",
                    token.code(),
                    token.message()
                ),
            );
            e.code = Some(token.code().to_string());
            e
        }
        other => BackendError::new(Reason::AzureUnavailable, format!("{what}: {other}")),
    }
}

/// Run `batch`, returning every result set.
///
/// # Errors
/// The server's error, classified; `AzureUnavailable` after `limit`.
pub async fn run_within(
    client: &mut SqlClient,
    what: &str,
    batch: &Batch,
    limit: Duration,
) -> Result<Vec<Vec<Row>>, BackendError> {
    let params: Vec<&dyn tiberius::ToSql> = batch
        .params
        .iter()
        .map(|p| match p {
            Param::Text(s) => s as &dyn tiberius::ToSql,
            Param::Guid(g) => g as &dyn tiberius::ToSql,
        })
        .collect();
    let running = async {
        client
            .query(batch.text.as_str(), &params)
            .await?
            .into_results()
            .await
    };
    tokio::time::timeout(limit, running)
        .await
        .map_err(|_| {
            BackendError::new(
                Reason::AzureUnavailable,
                format!("{what}: no answer within {limit:?}"),
            )
        })?
        .map_err(|e| classify(what, &e))
}

/// A pooled connection; given back when dropped unless [`discard`](Session::discard)ed.
pub struct Session {
    client: Option<SqlClient>,
    born: Instant,
    key: Key,
    pool: std::sync::Weak<SqlClients>,
}

impl Session {
    /// The connection.
    pub fn client(&mut self) -> &mut SqlClient {
        self.client
            .as_mut()
            .unwrap_or_else(|| unreachable!("a live session holds its client"))
    }

    /// Close instead of pooling (after an error that may have left a transaction open).
    pub fn discard(mut self) {
        self.client = None;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let (Some(client), Some(pool)) = (self.client.take(), self.pool.upgrade()) else {
            return;
        };
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(self.key.clone()).or_default();
        if list.len() < POOL_SIZE {
            list.push((self.born, client));
        }
    }
}
