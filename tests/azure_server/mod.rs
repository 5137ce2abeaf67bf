//! A scripted HTTPS stand-in for Azure (Entra ID, ARM and the Cosmos DB data plane) on
//! 127.0.0.1, for the Azure client's tests: it records every request and answers what the
//! test's handler says. The operator's own token request (client secret) is answered here.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use azure_core::http::Url;
use dbgrant::azure::{AzureConfig, AzureCosmos, Cloud, OperatorCredential, Timing};
use dbgrant_sim::tls::{TlsMaterial, bind_loopback, serve_https};
use tokio_util::sync::CancellationToken;

/// The operator's ARM access token the server hands out.
pub const ARM_TOKEN: &str = "arm-token-0f1e2d3c4b5a";
/// The tenant the tests use.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The operator's own client id.
pub const OPERATOR_CLIENT_ID: &str = "operator-app";
/// The operator's client secret.
pub const CLIENT_SECRET: &str = "operator-client-secret-9a8b7c";

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn is_operator_token_request(&self) -> bool {
        self.path.ends_with("/oauth2/v2.0/token")
            && self.form().get("client_id").map(String::as_str) == Some(OPERATOR_CLIENT_ID)
    }
}

/// What to answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// A running server.
pub struct TestAzure {
    pub base: Url,
    pub tls: Arc<TlsMaterial>,
    seen: Arc<Mutex<Vec<Seen>>>,
    shutdown: CancellationToken,
}

impl Drop for TestAzure {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestAzure {
    /// Start a server answering with `handler` (after the operator's token requests).
    pub async fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        let tls = Arc::new(TlsMaterial::generate("test-azure").expect("TLS material"));
        within(Self::start_with(tls, handler)).await
    }

    /// Start a server with given TLS material.
    pub async fn start_with(
        tls: Arc<TlsMaterial>,
        handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let handler: Handler = Arc::new(handler);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let router = axum::Router::new().fallback(move |request: Request<Body>| {
            let handler = handler.clone();
            let log = log.clone();
            async move { respond(request, handler, log).await }
        });
        let listener = within(bind_loopback(0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server_tls = tls.clone();
        tokio::spawn(async move { serve_https(listener, &server_tls, router, stop).await });
        Self {
            base: Url::parse(&format!("https://127.0.0.1:{port}/")).expect("url"),
            tls,
            seen,
            shutdown,
        }
    }

    /// Every request except the operator's own token requests.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("log")
            .iter()
            .filter(|s| !s.is_operator_token_request())
            .cloned()
            .collect()
    }

    /// Every request, the operator's token requests included.
    pub fn all_requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }

    /// A config pointing everything at this server, trusting its CA, with fast timing.
    pub fn config(&self) -> AzureConfig {
        let mut config = AzureConfig::custom(
            self.base.clone(),
            self.base.clone(),
            Some(self.tls.ca_pem.clone()),
            TENANT,
            OperatorCredential::ClientSecret {
                client_id: OPERATOR_CLIENT_ID.to_string(),
                client_secret: CLIENT_SECRET.to_string(),
            },
        );
        assert_eq!(config.cloud, Cloud::Custom);
        config.timing = fast_timing();
        config
    }

    /// The client for [`Self::config`].
    pub async fn client(&self) -> AzureCosmos {
        within(AzureCosmos::new(self.config(), None))
            .await
            .expect("client")
    }

    /// `url` moved onto this server (same path and query).
    pub fn rehost(&self, url: &str) -> String {
        let mut parsed = Url::parse(url).expect("url");
        parsed.set_host(Some("127.0.0.1")).expect("host");
        parsed.set_port(self.base.port()).expect("port");
        parsed.to_string()
    }
}

/// Short delays so retry and polling tests take milliseconds.
pub fn fast_timing() -> Timing {
    Timing {
        max_attempts: 3,
        retry_base: Duration::from_millis(10),
        max_inline_wait: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        lro_deadline: Duration::from_secs(5),
        lro_poll: Duration::from_millis(10),
    }
}

async fn respond(
    request: Request<Body>,
    handler: Handler,
    log: Arc<Mutex<Vec<Seen>>>,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body,
    };
    let answer = if seen.is_operator_token_request() {
        Answer::json(
            200,
            serde_json::json!({"token_type": "Bearer", "expires_in": 3599, "access_token": ARM_TOKEN}),
        )
    } else {
        handler(&seen)
    };
    log.lock().expect("log").push(seen);
    let mut builder = axum::response::Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Body::from(answer.body))
        .expect("valid response")
}

/// Run `test` with a time limit, so a hung call fails instead of blocking the suite.
pub async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("the test finished in time")
}

/// A JWT with the given claims (unsigned; the client does not check signatures).
pub fn jwt(claims: serde_json::Value) -> String {
    use base64::Engine as _;
    let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.c2lnbmF0dXJl",
        enc(r#"{"alg":"RS256","typ":"JWT"}"#),
        enc(&claims.to_string())
    )
}
