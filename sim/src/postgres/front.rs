//! The token-checking front: PostgreSQL's wire protocol up to authentication, then a plain
//! pass-through to the real server as the authenticated role.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::tls::TlsMaterial;

/// Checks a presented Entra token (signature, audience, expiry) and returns its claims.
pub type TokenCheck = Arc<dyn Fn(&str) -> anyhow::Result<serde_json::Value> + Send + Sync>;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const PROTOCOL_3: u32 = 196_608;

/// A running front; stops when dropped.
pub struct Front {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// PEM of the CA its certificate (for `localhost` and `127.0.0.1`) is signed by.
    pub ca_pem: String,
    stop: CancellationToken,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Shared {
    socket: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    check: TokenCheck,
    tls: tokio_rustls::TlsAcceptor,
}

impl Front {
    pub(super) async fn start(
        socket: PathBuf,
        socket_dir: PathBuf,
        port: u16,
        check: TokenCheck,
        listen_port: u16,
    ) -> anyhow::Result<Self> {
        let tls = TlsMaterial::generate("postgres-sim")?;
        let listener = TcpListener::bind(("127.0.0.1", listen_port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{listen_port}"))?;
        let shared = Arc::new(Shared {
            socket,
            socket_dir,
            port,
            check,
            tls: tokio_rustls::TlsAcceptor::from(tls.server_config_without_alpn()),
        });
        let stop = CancellationToken::new();
        let front = Self {
            port: listener.local_addr()?.port(),
            ca_pem: tls.ca_pem.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            if let Err(error) = serve(shared, stream).await {
                                tracing::debug!(%error, "postgres front connection ended");
                            }
                        });
                    }
                }
            }
        });
        Ok(front)
    }
}

async fn serve(shared: Arc<Shared>, mut tcp: TcpStream) -> anyhow::Result<()> {
    // Before TLS: an SSLRequest (answered 'S'), a GSSENCRequest (answered 'N', then the
    // client tries again), or a plain startup, which is refused: TLS is required, as Azure's.
    loop {
        let (code, _) = read_startup(&mut tcp).await?;
        match code {
            SSL_REQUEST => {
                tcp.write_all(b"S").await?;
                let tls = shared.tls.accept(tcp).await.context("TLS handshake")?;
                return authenticate(shared, tls).await;
            }
            GSSENC_REQUEST => tcp.write_all(b"N").await?,
            _ => {
                error(&mut tcp, "28000", "no pg_hba.conf entry: SSL is required").await?;
                return Ok(());
            }
        }
    }
}

async fn read_startup<S: AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<(u32, Vec<u8>)> {
    let len = stream.read_u32().await? as usize;
    anyhow::ensure!((8..=10_000).contains(&len), "bad startup length {len}");
    let code = stream.read_u32().await?;
    let mut body = vec![0; len - 8];
    stream.read_exact(&mut body).await?;
    Ok((code, body))
}

async fn authenticate<S>(shared: Arc<Shared>, mut client: S) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (code, body) = read_startup(&mut client).await?;
    anyhow::ensure!(code == PROTOCOL_3, "unsupported protocol {code}");
    let params: Vec<(String, String)> = body
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .chunks(2)
        .filter(|pair| pair.len() == 2 && !pair[0].is_empty())
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    // AuthenticationCleartextPassword.
    client.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
    let tag = client.read_u8().await?;
    let len = client.read_u32().await? as usize;
    anyhow::ensure!(
        tag == b'p' && (4..=65_536).contains(&len),
        "expected a password"
    );
    let mut password = vec![0; len - 4];
    client.read_exact(&mut password).await?;
    let token =
        String::from_utf8_lossy(password.strip_suffix(&[0]).unwrap_or(&password)).into_owned();
    if !accepted(&shared, &user, &token).await {
        let message = format!("password authentication failed for user \"{user}\"");
        return error(&mut client, "28P01", &message).await;
    }
    // Signed in: the real server (trust on its socket) takes over as that role.
    let mut server = UnixStream::connect(&shared.socket).await?;
    let mut startup = Vec::new();
    startup.extend_from_slice(&PROTOCOL_3.to_be_bytes());
    for (key, value) in &params {
        startup.extend_from_slice(key.as_bytes());
        startup.push(0);
        startup.extend_from_slice(value.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut message = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&startup);
    server.write_all(&message).await?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    Ok(())
}

/// Whether `token` is a valid Entra token whose `oid` the stand-in maps to role `user`.
async fn accepted(shared: &Shared, user: &str, token: &str) -> bool {
    let Ok(claims) = (shared.check)(token) else {
        return false;
    };
    let Some(oid) = claims.get("oid").and_then(|v| v.as_str()) else {
        return false;
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&shared.socket_dir)
        .port(shared.port)
        .user("postgres")
        .dbname("postgres");
    let Ok((db, connection)) = config.connect(tokio_postgres::NoTls).await else {
        return false;
    };
    tokio::spawn(connection);
    let mapped = db
        .query_opt(
            "SELECT objectid FROM public.dbgrant_sim_pgaadauth p JOIN pg_roles r ON r.rolname = p.rolname \
             WHERE p.rolname = $1 AND r.rolcanlogin",
            &[&user],
        )
        .await;
    matches!(mapped, Ok(Some(row)) if row.get::<_, String>(0).eq_ignore_ascii_case(oid))
}

/// PostgreSQL's ErrorResponse (severity FATAL), then the connection ends.
async fn error<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: &str,
    message: &str,
) -> anyhow::Result<()> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}
