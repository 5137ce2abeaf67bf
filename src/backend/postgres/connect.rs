//! Connections to PostgreSQL: TLS with the server's name verified (libpq's `verify-full`) on
//! rustls with ring, the operator's Entra token as the password (fetched for every new
//! connection, so none outlives its token's use), bounded timeouts, and a small pool per
//! (server, database, user).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::credentials::Secret;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::admins::{FlexibleServers, NoArm};
use crate::api::Reason;
use crate::backend::BackendError;
use crate::backend::operator_token::{NoToken, OperatorToken};

/// How long connecting (TCP, TLS, sign-in) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one statement may take.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per (server, database, user).
const POOL_SIZE: usize = 2;
/// A pooled connection older than this is closed rather than reused.
const MAX_AGE: Duration = Duration::from_secs(600);

type Key = (String, u16, String, String);

/// The operator's PostgreSQL connections, shared by every PostgreSQL target, and its way to
/// read flexible servers' Entra administrators in ARM (the preflight's first half).
pub struct PostgresClients {
    token: Arc<dyn OperatorToken>,
    servers: Arc<dyn FlexibleServers>,
    tls: MakeRustlsConnect,
    idle: Mutex<HashMap<Key, Vec<(Instant, tokio_postgres::Client)>>>,
}

impl PostgresClients {
    /// Clients signing in with `token`, trusting what `tls` trusts (its verifier checks the
    /// certificate chain and the server's name).
    pub fn new(token: Arc<dyn OperatorToken>, tls: rustls::ClientConfig) -> Self {
        Self {
            token,
            servers: Arc::new(NoArm),
            tls: MakeRustlsConnect::new(tls),
            idle: Mutex::default(),
        }
    }

    /// The same clients, reading flexible servers' administrators through `servers`.
    #[must_use]
    pub fn with_servers(mut self, servers: Arc<dyn FlexibleServers>) -> Self {
        self.servers = servers;
        self
    }

    /// Where flexible servers' administrators are read.
    pub fn servers(&self) -> &dyn FlexibleServers {
        self.servers.as_ref()
    }

    /// The operator's own object and tenant ids, read from its PostgreSQL token (the identity
    /// the server's administrators must list).
    ///
    /// # Errors
    /// When no token can be had, or it is not a JWT with `oid` and `tid`.
    pub async fn operator_identity(&self) -> Result<(String, String), BackendError> {
        let token = self.token.token().await?;
        let claims = crate::azure::entra::read_claims(token.secret()).map_err(|why| {
            BackendError::new(
                Reason::AzureUnavailable,
                format!("reading the operator's object id from its PostgreSQL token: {why}"),
            )
        })?;
        Ok((claims.oid, claims.tid))
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
            Ok(tls) => Self::new(Arc::new(NoToken("PostgreSQL")), tls),
            // ring's defaults always include a protocol version.
            Err(_) => unreachable!("ring supports the default protocol versions"),
        }
    }

    /// A session as the operator (`user`) on `database`: an idle pooled connection, or a new
    /// one signed in with a fresh token.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn session(
        self: &Arc<Self>,
        host: &str,
        port: u16,
        user: &str,
        database: &str,
    ) -> Result<Session, BackendError> {
        let key = (
            host.to_ascii_lowercase(),
            port,
            user.to_string(),
            database.to_string(),
        );
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let list = idle.entry(key.clone()).or_default();
            list.retain(|(at, c)| !c.is_closed() && at.elapsed() < MAX_AGE);
            list.pop()
        };
        let (born, client) = match reused {
            Some(found) => found,
            None => {
                let token = self.token.token().await?;
                (
                    Instant::now(),
                    self.connect(host, port, user, database, &token).await?,
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

    /// A new connection signed in as `user` with `password` (an Entra token), TLS required
    /// and the server's certificate verified for `host`.
    ///
    /// # Errors
    /// `TargetNotPrepared` when the server refuses the sign-in or the database does not
    /// exist; `AzureUnavailable` when it cannot be reached in time.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        user: &str,
        database: &str,
        password: &Secret,
    ) -> Result<tokio_postgres::Client, BackendError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(host)
            .port(port)
            .user(user)
            .password(password.secret())
            .dbname(database)
            .ssl_mode(SslMode::Require)
            .application_name("dbgrant")
            .connect_timeout(CONNECT_TIMEOUT);
        let what = format!("signing in to {host}:{port}/{database} as {user}");
        let connecting = config.connect(self.tls.clone());
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                BackendError::new(
                    Reason::AzureUnavailable,
                    format!("{what}: no answer within {CONNECT_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| super::sql::classify(&what, &e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }
}

/// A pooled connection; given back when dropped unless it was closed or [`discard`]ed.
///
/// [`discard`]: Session::discard
pub struct Session {
    client: Option<tokio_postgres::Client>,
    born: Instant,
    key: Key,
    pool: std::sync::Weak<PostgresClients>,
}

impl Session {
    /// The connection.
    pub fn client(&self) -> &tokio_postgres::Client {
        // Only `Drop` and `discard` take it, and both consume the session.
        self.client
            .as_ref()
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
        if client.is_closed() {
            return;
        }
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(self.key.clone()).or_default();
        if list.len() < POOL_SIZE {
            list.push((self.born, client));
        }
    }
}
