//! TLS material and an HTTPS server for the simulators.
//!
//! Real clients insist on HTTPS (kubectl with a kubeconfig CA, azure_identity with an `https`
//! authority host), so every simulator serves TLS from a CA generated at start-up. The CA
//! certificate is what a client is told to trust; its key never leaves the process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A CA and a server certificate for `localhost`, `127.0.0.1` and `::1`, signed by it.
pub struct TlsMaterial {
    /// PEM of the CA certificate: what clients put in their trust store.
    pub ca_pem: String,
    server_config: Arc<rustls::ServerConfig>,
}

impl TlsMaterial {
    /// Generate a fresh CA (named after `who`) and a loopback server certificate.
    pub fn generate(who: &str) -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{who} CA"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut leaf = CertificateParams::new(vec!["localhost".to_string()])?;
        leaf.distinguished_name
            .push(DnType::CommonName, format!("{who} server"));
        leaf.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        leaf.subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &ca)?;

        let chain = vec![
            CertificateDer::from(leaf_cert.der().to_vec()),
            ca.der().clone(),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("building the TLS server config")?;
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem: ca.pem(),
            server_config: Arc::new(server_config),
        })
    }

    /// The server config without ALPN (for protocols other than HTTP, such as PostgreSQL's).
    pub fn server_config_without_alpn(&self) -> Arc<rustls::ServerConfig> {
        let mut config = (*self.server_config).clone();
        config.alpn_protocols.clear();
        Arc::new(config)
    }

    /// The server config offering only `protocol` by ALPN (TDS 8 strict's `tds/8.0`): a client
    /// offering other protocols only is refused in the handshake, one offering none is served.
    pub fn server_config_with_alpn(&self, protocol: &[u8]) -> Arc<rustls::ServerConfig> {
        let mut config = (*self.server_config).clone();
        config.alpn_protocols = vec![protocol.to_vec()];
        Arc::new(config)
    }

    /// A rustls client config trusting only this CA (for in-process Rust clients).
    pub fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        client_config(&self.ca_pem)
    }
}

/// A rustls client config (on ring) trusting only the CAs in `ca_pem`, a simulator's.
///
/// # Errors
/// When the PEM holds no valid certificate.
pub fn client_config(ca_pem: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem)? {
        roots.add(cert)?;
    }
    anyhow::ensure!(!roots.is_empty(), "no CA certificate in the PEM");
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// An HTTP client that trusts only the CAs in `ca_pem` (a simulator's) and follows no redirects,
/// as Azure's clients do not: for tests and tools talking to the simulators directly.
///
/// # Errors
/// When the PEM holds no valid certificate or the client cannot be built.
pub fn https_client(ca_pem: &str) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(ca_pem)?)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")
}

fn rustls_pemfile_certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing CA PEM")
}

/// Bind `127.0.0.1:port` (0 picks a free port) for a simulator.
pub async fn bind_loopback(port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))
}

/// Serve `router` over HTTPS (HTTP/1.1 and HTTP/2) on `listener` until `shutdown` fires.
///
/// Each connection runs on its own task; upgrades are allowed so long-lived streams work.
/// A failed handshake only ends that connection.
/// Put this in a response's extensions to cut the connection instead of answering (fault
/// injection: what a client sees when a load balancer or the network drops it).
#[derive(Clone, Copy, Debug)]
pub struct DropConnection;

#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose (fault injection)")]
struct ConnectionDropped;

pub async fn serve_https(
    listener: TcpListener,
    tls: &TlsMaterial,
    router: axum::Router,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config.clone());
    loop {
        let (stream, _peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(tls_stream) = acceptor.accept(stream).await else {
                return;
            };
            // A response marked `DropConnection` is turned into a service error: hyper then
            // closes the connection (HTTP/1) or resets the stream (HTTP/2) without answering.
            let service = hyper::service::service_fn(move |request| {
                let mut router = router.clone();
                async move {
                    let Ok(response) = tower_service::Service::call(&mut router, request).await;
                    if response.extensions().get::<DropConnection>().is_some() {
                        return Err(ConnectionDropped);
                    }
                    Ok(response)
                }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls_stream), service);
            tokio::select! {
                _ = conn => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}
