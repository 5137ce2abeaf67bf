//! One client connection: TDS 8 strict (the TLS handshake before any TDS byte), PRELOGIN,
//! LOGIN7 signed in by an Entra token, then SQL batches and `sp_executesql` calls until the
//! client leaves.

use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail, ensure};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::exec::{Caller, ResultSet, SqlError, execute};
use super::statements::{Kind, check_declarations, recognise};
use super::tokens::{DONE_ERROR, DONE_MORE, Tokens};
use super::wire::{
    self, ATTENTION, ENCRYPT_NOT_SUP, LOGIN7, Login, PRELOGIN, REPLY, RPC, SP_EXECUTESQL,
    SQL_BATCH, TRANSACTION_MANAGER, Value,
};
use super::{Executed, SignIn, State, TokenCheck};

pub(super) struct Shared {
    pub state: Arc<Mutex<State>>,
    pub check: TokenCheck,
    pub tls: tokio_rustls::TlsAcceptor,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) async fn accept(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let tcp = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                result = serve(shared, tcp) => if let Err(error) = result {
                    tracing::debug!(%error, "SQL stand-in connection ended");
                },
            }
        });
    }
}

async fn serve(shared: Arc<Shared>, tcp: TcpStream) -> anyhow::Result<()> {
    if shared.state().faults.silent {
        // A server that accepted the connection and hangs: the client's timeouts must act.
        std::future::pending::<()>().await;
    }
    let mut first = [0u8; 1];
    tcp.peek(&mut first).await?;
    // 0x16 is a TLS handshake record: TDS 8 strict. 0x12 would be a clear-text PRELOGIN
    // (TDS 7.x), which an Entra-only Azure SQL endpoint in strict mode does not take.
    if first[0] != 0x16 {
        bail!("not a TLS handshake (the stand-in speaks TDS 8 strict only)");
    }
    let tls = shared.tls.accept(tcp).await.context("TLS handshake")?;
    session(&shared, tls).await
}

/// What a signed-in connection is.
struct Session {
    database: String,
    identity: String,
    /// Signed in as the server's Entra admin: dbo in every database.
    admin: bool,
    login: String,
    packet_size: usize,
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut s: S,
) -> anyhow::Result<()> {
    let prelogin = wire::read_message(&mut s).await?.context("no PRELOGIN")?;
    ensure!(
        prelogin.kind == PRELOGIN,
        "expected PRELOGIN, got packet type {}",
        prelogin.kind
    );
    let asked = wire::parse_prelogin(&prelogin.body)?;
    // Inside the strict tunnel a client may say encryption is "not supported" (it is the
    // tunnel's); echo that. Otherwise say it is on: the tunnel is the encryption.
    let encryption = if asked.encryption == Some(ENCRYPT_NOT_SUP) {
        ENCRYPT_NOT_SUP
    } else {
        0x01
    };
    let reply = wire::prelogin_reply(encryption, asked.fed_auth_required);
    wire::write_message(&mut s, REPLY, &reply, 4096).await?;

    let login = wire::read_message(&mut s).await?.context("no LOGIN7")?;
    ensure!(
        login.kind == LOGIN7,
        "expected LOGIN7, got packet type {}",
        login.kind
    );
    let login = wire::parse_login(&login.body)?;
    let packet_size = match login.packet_size {
        0 => 4096,
        n => n.clamp(512, 32_767),
    };
    let mut tokens = Tokens::default();
    let session = match sign_in(shared, &login) {
        Err(errors) => {
            for e in &errors {
                tokens.error(e.number, e.state, e.class, &e.message);
            }
            tokens.done(DONE_ERROR);
            wire::write_message(&mut s, REPLY, &tokens.0, 4096).await?;
            return Ok(());
        }
        Ok(session) => session,
    };
    tokens.signed_in(&session.database, packet_size);
    tokens.fed_auth_ack();
    let redirect = shared.state().faults.redirects.pop_front();
    if let Some((host, port)) = redirect {
        // The client is to sign in again over there; this connection ends.
        tokens.routing(&host, port);
        tokens.done(0);
        wire::write_message(&mut s, REPLY, &tokens.0, packet_size as usize).await?;
        return Ok(());
    }
    tokens.done(0);
    let session = Session {
        packet_size: packet_size as usize,
        ..session
    };
    wire::write_message(&mut s, REPLY, &tokens.0, session.packet_size).await?;

    // (descriptor, whether a statement ran inside it) of the client's open transaction.
    let mut in_transaction: Option<(u64, bool)> = None;
    loop {
        let Some(message) = wire::read_message(&mut s).await? else {
            return Ok(());
        };
        let mut tokens = Tokens::default();
        match message.kind {
            SQL_BATCH => {
                if let Some((_, dirty)) = in_transaction.as_mut() {
                    *dirty = true;
                }
                let text = wire::parse_batch(&message.body)?;
                let outcome = run(shared, &session, text, None).await;
                match outcome {
                    Ok(sets) => {
                        for set in sets {
                            result_set(&mut tokens, &set);
                            tokens.done(DONE_MORE);
                        }
                        tokens.done(0);
                    }
                    Err(e) => {
                        tokens.error(e.number, e.state, e.class, &e.message);
                        tokens.done(DONE_ERROR);
                    }
                }
            }
            RPC => {
                if let Some((_, dirty)) = in_transaction.as_mut() {
                    *dirty = true;
                }
                let outcome = match wire::parse_rpc(&message.body) {
                    Ok(rpc) => rpc_call(shared, &session, rpc).await,
                    Err(e) => Err(SqlError::new(
                        8_009,
                        format!("The incoming RPC request is malformed: {e}"),
                    )),
                };
                match outcome {
                    Ok(sets) => {
                        for set in sets {
                            result_set(&mut tokens, &set);
                            tokens.done_in_proc(DONE_MORE);
                        }
                        tokens.done_proc(0, 0);
                    }
                    Err(e) => {
                        tokens.error(e.number, e.state, e.class, &e.message);
                        tokens.done_proc(0, DONE_ERROR);
                    }
                }
            }
            // Transaction manager requests (a client not in autocommit, or one closing):
            // acknowledged, but the stand-in applies each statement at once and cannot undo
            // one, so rolling back a transaction that changed something is refused.
            TRANSACTION_MANAGER => match wire::parse_transaction_request(&message.body) {
                Ok(request) => transaction(&mut tokens, &mut in_transaction, request),
                Err(e) => {
                    tokens.error(3_900, 1, 16, &format!("Malformed transaction request: {e}"));
                    tokens.done(DONE_ERROR);
                }
            },
            // Attention: the client gave up on a request; acknowledge it (DONE_ATTN).
            ATTENTION => tokens.done(0x20),
            other => bail!("packet type {other} is not one the stand-in takes after sign-in"),
        }
        wire::write_message(&mut s, REPLY, &tokens.0, session.packet_size).await?;
    }
}

fn transaction(
    tokens: &mut Tokens,
    open: &mut Option<(u64, bool)>,
    request: wire::TransactionRequest,
) {
    use wire::TransactionRequest::{Begin, Commit, Other, Rollback};
    match (request, *open) {
        (Begin, None) => {
            let descriptor = u64::from(rand::random::<u32>()) + 1;
            *open = Some((descriptor, false));
            tokens.transaction_began(descriptor);
            tokens.done(0);
        }
        (Commit, Some((descriptor, _))) | (Rollback, Some((descriptor, false))) => {
            *open = None;
            tokens.transaction_ended(descriptor, matches!(request, Commit));
            tokens.done(0);
        }
        (Rollback, Some((_, true))) => {
            tokens.error(
                40_014,
                1,
                16,
                "The dbgrant SQL stand-in cannot roll back: it applied this transaction's statements as they ran (use autocommit).",
            );
            tokens.done(DONE_ERROR);
        }
        (Begin, Some(_)) | (Commit | Rollback, None) | (Other(_), _) => {
            tokens.error(
                3_902,
                1,
                16,
                "The dbgrant SQL stand-in takes BEGIN, then COMMIT or ROLLBACK, one transaction at a time.",
            );
            tokens.done(DONE_ERROR);
        }
    }
}

fn result_set(tokens: &mut Tokens, set: &ResultSet) {
    tokens.columns(&set.columns);
    for row in &set.rows {
        tokens.row(&set.columns, row);
    }
}

fn login_failed() -> SqlError {
    SqlError {
        number: 18456,
        state: 1,
        class: 14,
        message: "Login failed for user '<token-identified principal>'.".into(),
    }
}

/// Check the token and find who it is in the requested database.
fn sign_in(shared: &Shared, login: &Login) -> Result<Session, Vec<SqlError>> {
    let database = login.database.clone();
    let record = |identity: Option<String>, error: Option<u32>| {
        shared.state().sign_ins.push(SignIn {
            database: database.clone(),
            identity,
            error,
        });
    };
    let Some(token) = &login.token else {
        record(None, Some(18456));
        // Entra-only authentication: SQL logins are refused.
        let mut e = login_failed();
        e.message = format!(
            "Login failed for user '{}'. Reason: Azure Active Directory only authentication is enabled. Please contact your system administrator.",
            login.user_name
        );
        return Err(vec![e]);
    };
    let claims = match (shared.check)(token) {
        Ok(claims) => claims,
        Err(error) => {
            tracing::debug!(%error, "SQL stand-in refused a token");
            record(None, Some(18456));
            return Err(vec![login_failed()]);
        }
    };
    let claim = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    // Service principals are known by their application (client) id, users by object id.
    let Some(identity) = claim("appid")
        .or_else(|| claim("azp"))
        .or_else(|| claim("oid"))
    else {
        record(None, Some(18456));
        return Err(vec![login_failed()]);
    };
    let ids: Vec<Uuid> = [Some(identity.clone()), claim("oid")]
        .into_iter()
        .flatten()
        .filter_map(|id| Uuid::parse_str(&id).ok())
        .collect();
    let mut state = shared.state();
    let admin = state.admin.clone().filter(|a| ids.contains(&a.sid));
    let outcome = match state.database(&database) {
        None => Err(vec![
            SqlError {
                number: 4060,
                state: 1,
                class: 11,
                message: format!(
                    "Cannot open database \"{database}\" requested by the login. The login failed."
                ),
            },
            login_failed(),
        ]),
        Some(_) if admin.is_some() => Ok(admin.map(|a| a.login).unwrap_or_default()),
        Some(db) => ids
            .first()
            .and_then(|id| db.by_sid(id))
            .map(|p| p.name.clone())
            .ok_or_else(|| vec![login_failed()]),
    };
    state.sign_ins.push(SignIn {
        database: database.clone(),
        identity: Some(identity.clone()),
        error: outcome
            .as_ref()
            .err()
            .and_then(|e| e.first())
            .map(|e| e.number),
    });
    let login_name = outcome?;
    Ok(Session {
        admin: state.admin.as_ref().is_some_and(|a| ids.contains(&a.sid)),
        database,
        identity,
        login: login_name,
        packet_size: 4096,
    })
}

async fn rpc_call(
    shared: &Shared,
    session: &Session,
    rpc: wire::Rpc,
) -> Result<Vec<ResultSet>, SqlError> {
    let is_executesql =
        rpc.proc_id == Some(SP_EXECUTESQL) || rpc.proc_name.eq_ignore_ascii_case("sp_executesql");
    if !is_executesql {
        let name = if rpc.proc_name.is_empty() {
            format!("procedure id {}", rpc.proc_id.unwrap_or_default())
        } else {
            rpc.proc_name.clone()
        };
        return Err(SqlError::new(
            2812,
            format!(
                "Could not find stored procedure '{name}'. (The dbgrant SQL stand-in takes sp_executesql only.)"
            ),
        ));
    }
    let mut params = rpc.params.into_iter();
    let Some(Value::Text(text)) = params.next().map(|p| p.value) else {
        return Err(SqlError::new(
            214,
            "Procedure expects parameter '@statement' of type 'ntext/nchar/nvarchar'.",
        ));
    };
    let declared = match params.next().map(|p| p.value) {
        Some(Value::Text(d)) => d,
        _ => String::new(),
    };
    let values: Vec<(String, Value)> = params.map(|p| (p.name, p.value)).collect();
    run(shared, session, text, Some((declared, values))).await
}

/// Run one statement: recognise it, bind its parameters, apply a scripted fault or execute
/// it, and log it either way.
async fn run(
    shared: &Shared,
    session: &Session,
    text: String,
    call: Option<(String, Vec<(String, Value)>)>,
) -> Result<Vec<ResultSet>, SqlError> {
    if shared.state().faults.silent_statements {
        std::future::pending::<()>().await;
    }
    let shape = recognise(&text);
    let values: Vec<Value> = call
        .as_ref()
        .map(|(_, v)| v.iter().map(|(_, v)| v.clone()).collect())
        .unwrap_or_default();
    let outcome = bind(shape, &call).and_then(|shape| {
        let mut state = shared.state();
        if let Some(number) = state.faults.next_errors.pop_front() {
            return Err(SqlError::scripted(number));
        }
        let admin = session.admin;
        let login = session.login.clone();
        let identity = Uuid::parse_str(&session.identity).ok();
        let db = state
            .database(&session.database)
            .ok_or_else(|| SqlError::new(911, format!("Database '{}' does not exist.", session.database)))?;
        let principal = if admin {
            super::catalogue::DBO
        } else {
            identity
                .and_then(|id| db.by_sid(&id))
                .map(|p| p.id)
                .ok_or_else(|| SqlError::new(916, "The server principal is not able to access the database under the current security context."))?
        };
        execute(db, &Caller { principal, login }, shape, &values)
    });
    shared.state().log.push(Executed {
        database: session.database.clone(),
        identity: session.identity.clone(),
        shape,
        text,
        params: values,
        error: outcome.as_ref().err().map(|e| e.number),
    });
    outcome
}

/// The statement's shape with its parameters checked, or the engine's error.
fn bind(
    shape: Option<super::Shape>,
    call: &Option<(String, Vec<(String, Value)>)>,
) -> Result<super::Shape, SqlError> {
    let Some(shape) = shape else {
        return Err(SqlError {
            number: 102,
            state: 1,
            class: 15,
            message: "Incorrect syntax near the statement: the dbgrant SQL stand-in executes only the statements dbgrant's T-SQL backend sends, and this is not one of them.".into(),
        });
    };
    let expected = shape.params();
    let Some((declared, values)) = call else {
        return match expected.is_empty() {
            true => Ok(shape),
            false => Err(SqlError::new(
                137,
                "Must declare the scalar variable \"@P1\".",
            )),
        };
    };
    check_declarations(&shape, declared).map_err(|why| {
        SqlError::new(
            8_178,
            format!("The parameterized query does not declare what the statement takes: {why}."),
        )
    })?;
    if values.len() != expected.len() {
        return Err(SqlError::new(
            8_178,
            format!(
                "The parameterized query expects {} parameters, which were not supplied ({} given).",
                expected.len(),
                values.len()
            ),
        ));
    }
    for (i, ((name, value), kind)) in values.iter().zip(expected).enumerate() {
        let named_right = name.is_empty() || name.eq_ignore_ascii_case(&format!("@P{}", i + 1));
        let typed_right = matches!(
            (kind, value),
            (_, Value::Null) | (Kind::Text, Value::Text(_)) | (Kind::Guid, Value::Guid(_))
        );
        if !named_right || !typed_right {
            return Err(SqlError::new(
                8_114,
                format!("Error converting parameter {name} ({value:?}) to {kind:?}."),
            ));
        }
    }
    Ok(shape)
}
