//! The Kubernetes API simulator: storage, verbs, watches, TokenRequest with OIDC discovery,
//! and CRD serving, over HTTPS with its own CA, for clients that expect a real API server.

pub mod audit;
mod builtin;
mod discovery;
pub mod errors;
pub mod events;
pub mod faults;
mod namespaces;
mod objects;
pub mod openapi;
pub mod patch;
pub mod paths;
pub mod protobuf;
pub mod rbac;
pub mod resources;
pub mod schema;
pub mod select;
mod server;
pub mod store;
pub mod table;
pub mod time;
pub mod tokens;
mod watch;

use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use tokio_util::sync::CancellationToken;

pub use faults::{Counters, Fault, Faults};

use crate::tls::{TlsMaterial, bind_loopback, serve_https};
use store::Store;

/// Where the simulator serves its request counters as JSON (admin only).
pub const COUNTERS_PATH: &str = "/_sim/counters";

/// How to start the simulator.
#[derive(Clone, Debug, Default)]
pub struct KubeSimConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
}

/// A running simulator; stops when dropped or shut down.
pub struct KubeSim {
    url: String,
    ca_pem: String,
    admin_token: String,
    shared: Arc<server::Shared>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl KubeSim {
    /// Start a simulator with the default namespaces.
    ///
    /// # Errors
    /// When the port cannot be bound or key material cannot be generated.
    pub async fn start(config: KubeSimConfig) -> anyhow::Result<Self> {
        let tls = TlsMaterial::generate("kube-sim")?;
        let listener = bind_loopback(config.port).await?;
        let address = listener.local_addr().context("local address")?.to_string();
        let url = format!("https://{address}");
        let store = Arc::new(Store::new(builtin::resources()));
        {
            let mut inner = store.lock();
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                let resource = inner
                    .resource("", "v1", "namespaces")
                    .context("namespaces are served")?;
                objects::create(
                    &mut inner,
                    &resource,
                    None,
                    namespace,
                    objects::WriteOptions::default(),
                )
                .map_err(|e| anyhow::anyhow!(e.message))?;
            }
        }
        let expire_store = store.clone();
        let faults = Faults::new(Arc::new(move || expire_store.lock().compact()));
        let admin_token = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(server::Shared {
            store,
            issuer: tokens::Issuer::new(url.clone())?,
            admin_token: admin_token.clone(),
            faults,
            address,
            audit: audit::Audit::default(),
        });
        let shutdown = CancellationToken::new();
        let router = server::router(shared.clone());
        let stop = shutdown.clone();
        let ca_pem = tls.ca_pem.clone();
        let task = tokio::spawn(async move { serve_https(listener, &tls, router, stop).await });
        Ok(Self {
            url,
            ca_pem,
            admin_token,
            shared,
            shutdown,
            task,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The ServiceAccount token issuer; its OIDC discovery document is served anonymously at
    /// `{issuer}/.well-known/openid-configuration`.
    pub fn issuer(&self) -> String {
        self.shared.issuer.url.clone()
    }

    /// Claims signed with the ServiceAccount issuer's key, for tests of token verifiers.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign_token(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        self.shared.issuer.sign(claims)
    }

    /// The CA certificate (PEM) the server's certificate chains to.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> String {
        self.admin_token.clone()
    }

    /// A kubeconfig for the admin.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_for(&self.admin_token, "admin")
    }

    /// The authorization decisions made for ServiceAccounts so far.
    pub fn authorizations(&self) -> Vec<audit::Authorization> {
        self.shared.audit.authorizations()
    }

    /// A kubeconfig for a bearer token (a ServiceAccount's, say).
    pub fn kubeconfig_for(&self, token: &str, user: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dbgrant-sim\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: dbgrant-sim\n  context:\n    cluster: dbgrant-sim\n    user: {user}\n    namespace: default\ncurrent-context: dbgrant-sim\n",
            url = self.url
        )
    }

    /// A kube client as the admin.
    ///
    /// # Errors
    /// When the client cannot be configured.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        self.client_for_token(&self.admin_token).await
    }

    /// A kube client authenticating with `token`.
    ///
    /// # Errors
    /// When the client cannot be configured.
    pub async fn client_for_token(&self, token: &str) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_for(token, "user"))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Fault injection and counters.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Requests served so far, by verb and resource.
    pub fn counters(&self) -> Counters {
        self.shared.faults.counters()
    }

    /// Stop serving.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
