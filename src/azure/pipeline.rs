//! HTTP for every Azure call: a reqwest client on rustls+ring trusting the system roots plus an
//! optional extra CA bundle, wrapped in azure_core's pipeline, and the one retry loop (bounded
//! attempts, honouring `Retry-After`) every operation goes through.
//!
//! azure_core's own retry policy is turned off: it cannot tell the caller how long Azure asked
//! to wait when it gives up, and the operator must hand a long `Retry-After` back to the
//! controller's backoff rather than block a worker on it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use azure_core::http::headers::HeaderName;
use azure_core::http::policies::Policy;
use azure_core::http::{
    ClientOptions, Context, Method, Pipeline, PipelineSendOptions, Request, RetryOptions,
    Transport, Url,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::error::parse_retry_after;
use crate::api::Reason;
use crate::backend::BackendError;
use crate::telemetry::Metrics;

/// How long and how often the client waits and retries. Tests shorten these.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Attempts per request, the first included, for 429, 5xx and transport failures.
    pub max_attempts: u32,
    /// First delay between attempts when Azure gave no `Retry-After`; doubled each time.
    pub retry_base: Duration,
    /// The longest `Retry-After` waited for in place; a longer one is handed back to the
    /// controller (as `BackendError::retry_after`) so workers are not blocked.
    pub max_inline_wait: Duration,
    /// Time limit of one HTTP attempt.
    pub request_timeout: Duration,
    /// How long a long-running operation is polled before the call gives up (the operation
    /// continues in Azure; the next reconcile's idempotent PUT or DELETE picks it up).
    pub lro_deadline: Duration,
    /// Poll interval of a long-running operation when Azure sends no `Retry-After`.
    pub lro_poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            retry_base: Duration::from_millis(500),
            max_inline_wait: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            lro_deadline: Duration::from_secs(120),
            lro_poll: Duration::from_secs(2),
        }
    }
}

/// A rustls (ring) client config trusting the system roots plus every certificate in
/// `extra_ca_pem`.
pub fn tls_config(extra_ca_pem: Option<&str>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: one bad file in /etc/ssl must not stop the
    // operator, and a missing root shows up as a clear TLS error on the first call.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = extra_ca_pem {
        let extra = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parsing the extra CA bundle (PEM)")?;
        anyhow::ensure!(
            !extra.is_empty(),
            "the extra CA bundle contains no PEM certificate"
        );
        for cert in extra {
            roots
                .add(cert)
                .context("adding a certificate of the extra CA bundle")?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("configuring TLS")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The transport shared by every pipeline: one connection pool, our TLS config.
pub fn transport(extra_ca_pem: Option<&str>) -> anyhow::Result<Transport> {
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(extra_ca_pem)?)
        .connect_timeout(Duration::from_secs(10))
        // Azure APIs do not redirect; following one could carry a token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")?;
    Ok(Transport::new(Arc::new(client)))
}

/// An azure_core pipeline on `transport`, without azure_core's retries, with `per_try` policies
/// (the bearer-token policy for ARM).
pub fn pipeline(transport: Transport, per_try: Vec<Arc<dyn Policy>>) -> Pipeline {
    let options = ClientOptions {
        transport: Some(transport),
        retry: RetryOptions::none(),
        ..ClientOptions::default()
    };
    Pipeline::new(
        Some("dbgrant"),
        Some(env!("CARGO_PKG_VERSION")),
        options,
        Vec::new(),
        per_try,
        None,
    )
}

/// One request to send: `headers` may hold secrets (they are never logged or echoed).
pub struct Call<'a> {
    /// Closed-set operation name for metrics and messages (`arm_get`, `entra_token`, …).
    pub operation: &'static str,
    /// What is being done, for error messages (`GET account X`).
    pub what: &'a str,
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: Url,
    /// Extra headers (name lower-case).
    pub headers: Vec<(&'static str, String)>,
    /// Body and its content type.
    pub body: Option<(&'static str, Vec<u8>)>,
}

/// A buffered response.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    headers: azure_core::http::headers::Headers,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A response header (`name` lower-case).
    pub fn header(&self, name: &'static str) -> Option<&str> {
        self.headers
            .get_optional_str(&HeaderName::from_static(name))
    }

    /// Whether ARM said the subscription's bucket for `method` is empty
    /// (`x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}: 0`).
    pub fn bucket_empty(&self, method: Method) -> bool {
        let header = match super::throttle_gate::Bucket::of(method) {
            super::throttle_gate::Bucket::Reads => "x-ms-ratelimit-remaining-subscription-reads",
            super::throttle_gate::Bucket::Writes => "x-ms-ratelimit-remaining-subscription-writes",
            super::throttle_gate::Bucket::Deletes => {
                "x-ms-ratelimit-remaining-subscription-deletes"
            }
        };
        self.header(header)
            .and_then(|v| v.trim().parse::<u64>().ok())
            == Some(0)
    }

    /// `Retry-After` (or `x-ms-retry-after-ms`), if Azure sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        if let Some(ms) = self
            .header("x-ms-retry-after-ms")
            .or_else(|| self.header("retry-after-ms"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(crate::backend::bounded_retry_after(Duration::from_millis(
                ms,
            )));
        }
        self.header("retry-after").and_then(parse_retry_after)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A pipeline plus the retry loop and the request counter.
#[derive(Clone)]
pub struct Http {
    pipeline: Pipeline,
    /// Timing settings.
    pub timing: Timing,
    metrics: Option<Metrics>,
    /// Holds requests back from a bucket ARM said is empty (shared by clones).
    gate: std::sync::Arc<super::throttle_gate::ThrottleGate>,
}

impl Http {
    /// Wrap `pipeline`.
    pub fn new(pipeline: Pipeline, timing: Timing, metrics: Option<Metrics>) -> Self {
        Self {
            pipeline,
            timing,
            metrics,
            gate: std::sync::Arc::default(),
        }
    }

    /// Send `call`, retrying 429, 5xx and transport failures up to `max_attempts` times,
    /// waiting what Azure asked for. Returns the last response whatever its status (the caller
    /// maps failures); an error only when no response came back.
    pub async fn send(&self, call: &Call<'_>) -> Result<Reply, BackendError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(wait) = self.gate.wait_for(call.method, &call.url) {
                // Azure said this bucket is empty until then: sending now would only be refused.
                if wait > self.timing.max_inline_wait {
                    return Err(BackendError {
                        retry_after: Some(wait),
                        ..BackendError::new(
                            Reason::AzureThrottled,
                            format!(
                                "{}: Azure is throttling this subscription's requests; retrying",
                                call.what
                            ),
                        )
                    });
                }
                tokio::time::sleep(wait).await;
            }
            let outcome = tokio::time::timeout(self.timing.request_timeout, self.once(call)).await;
            let failure = match outcome {
                Ok(Ok(reply)) => {
                    self.count(call.operation, result_label(reply.status));
                    if reply.status != 429 && reply.bucket_empty(call.method) {
                        // The next request of this kind would be refused: let the bucket
                        // refill first (ARM's refill at least one token a second).
                        self.gate
                            .refused(call.method, &call.url, Duration::from_secs(1));
                    }
                    let retryable = reply.status == 429 || matches!(reply.status, 500 | 502..=504);
                    if !retryable || attempt >= self.timing.max_attempts {
                        return Ok(reply);
                    }
                    let wait = reply.retry_after().unwrap_or_else(|| self.backoff(attempt));
                    if reply.status == 429 {
                        self.gate.refused(call.method, &call.url, wait);
                    }
                    if wait > self.timing.max_inline_wait {
                        return Ok(reply);
                    }
                    tracing::debug!(
                        operation = call.operation,
                        status = reply.status,
                        ?wait,
                        attempt,
                        "Azure asked to retry"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(Err(error)) => {
                    self.count(call.operation, "transport_error");
                    error
                }
                Err(_elapsed) => {
                    self.count(call.operation, "timeout");
                    BackendError::new(
                        Reason::AzureUnavailable,
                        format!(
                            "{}: no answer within {}s",
                            call.what,
                            self.timing.request_timeout.as_secs()
                        ),
                    )
                }
            };
            if failure.reason != Reason::AzureUnavailable || attempt >= self.timing.max_attempts {
                return Err(failure);
            }
            let wait = self.backoff(attempt);
            tracing::debug!(operation = call.operation, %failure, ?wait, attempt, "retrying after a transport failure");
            tokio::time::sleep(wait).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.timing
            .retry_base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
    }

    fn count(&self, operation: &'static str, result: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.azure_request(operation, result);
        }
    }

    async fn once(&self, call: &Call<'_>) -> Result<Reply, BackendError> {
        let mut request = Request::new(call.url.clone(), call.method);
        request.insert_header(HeaderName::from_static("accept"), "application/json");
        for (name, value) in &call.headers {
            request.insert_header(HeaderName::from_static(name), value.clone());
        }
        if let Some((content_type, body)) = &call.body {
            request.insert_header(HeaderName::from_static("content-type"), *content_type);
            request.set_body(body.clone());
        }
        let options = PipelineSendOptions {
            skip_checks: true,
            ..PipelineSendOptions::default()
        };
        let response = self
            .pipeline
            .send(&Context::new(), &mut request, Some(options))
            .await
            .map_err(|error| transport_failure(call.what, &error))?;
        let (status, headers, body) = response.deconstruct();
        Ok(Reply {
            status: u16::from(status),
            headers,
            body: body.as_ref().to_vec(),
        })
    }
}

/// A pipeline policy counting each attempt in `azure_requests_total`, for pipelines whose
/// calls do not go through [`Http::send`] (azure_identity's token requests).
pub struct CountingPolicy {
    operation: &'static str,
    metrics: Metrics,
}

impl std::fmt::Debug for CountingPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingPolicy")
            .field("operation", &self.operation)
            .finish_non_exhaustive()
    }
}

impl CountingPolicy {
    /// Count attempts under `operation`.
    pub fn new(operation: &'static str, metrics: Metrics) -> Self {
        Self { operation, metrics }
    }
}

#[async_trait::async_trait]
impl Policy for CountingPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        let response = next[0].send(ctx, request, &next[1..]).await;
        let result = match &response {
            Ok(response) => result_label(u16::from(response.status())),
            Err(_) => "transport_error",
        };
        self.metrics.azure_request(self.operation, result);
        response
    }
}

fn result_label(status: u16) -> &'static str {
    match status {
        200..=299 => "success",
        429 => "throttled",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

/// Map a failure to get any response: the operator's own credential refused by Entra ID, or
/// the network/TLS. The message walks the error chain so a TLS failure names its cause
/// (`invalid peer certificate: UnknownIssuer`).
fn transport_failure(what: &str, error: &azure_core::Error) -> BackendError {
    let mut chain = error_chain(error);
    if chain.contains("UnknownIssuer") {
        chain.push_str(
            " (if this endpoint uses a private CA, trust it with --azure-extra-ca-file / DBGRANT_AZURE_EXTRA_CA_FILE)",
        );
    }
    if matches!(error.kind(), azure_core::error::ErrorKind::Credential) {
        let refused = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<azure_core::Error>())
            .and_then(azure_core::Error::http_status)
            .map(u16::from)
            .is_some_and(|s| (400..500).contains(&s) && s != 429);
        let reason = if refused {
            Reason::AzureForbidden
        } else {
            Reason::AzureUnavailable
        };
        return BackendError::new(
            reason,
            format!("{what}: the operator's own Azure credential failed: {chain}"),
        );
    }
    BackendError::new(Reason::AzureUnavailable, format!("{what}: {chain}"))
}

/// Every distinct message of an error's source chain, first lines only.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default().trim().to_string();
        if !line.is_empty() && !parts.iter().any(|p| p.contains(&line)) {
            parts.push(line);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extra_bundle_without_certificates_is_refused() {
        let err = tls_config(Some("not a pem")).expect_err("must fail");
        assert!(err.to_string().contains("no PEM certificate"), "{err:#}");
        assert!(tls_config(None).is_ok());
    }

    #[test]
    fn an_empty_bucket_is_read_from_the_header_of_the_requests_kind() {
        let reply = |name: &'static str, value: &str| {
            let mut headers = azure_core::http::headers::Headers::new();
            headers.insert(HeaderName::from_static(name), value.to_string());
            Reply {
                status: 200,
                headers,
                body: Vec::new(),
            }
        };
        let writes = "x-ms-ratelimit-remaining-subscription-writes";
        assert!(reply(writes, "0").bucket_empty(Method::Put));
        assert!(
            !reply(writes, "0").bucket_empty(Method::Get),
            "another bucket"
        );
        assert!(!reply(writes, "3").bucket_empty(Method::Put));
        assert!(!reply(writes, "none").bucket_empty(Method::Put));
        let deletes = "x-ms-ratelimit-remaining-subscription-deletes";
        assert!(reply(deletes, "0").bucket_empty(Method::Delete));
        let reads = "x-ms-ratelimit-remaining-subscription-reads";
        assert!(reply(reads, " 0 ").bucket_empty(Method::Get));
    }

    #[test]
    fn backoff_doubles_from_the_base() {
        let http = Http::new(
            pipeline(transport(None).expect("transport"), Vec::new()),
            Timing {
                retry_base: Duration::from_millis(100),
                ..Timing::default()
            },
            None,
        );
        assert_eq!(http.backoff(1), Duration::from_millis(100));
        assert_eq!(http.backoff(3), Duration::from_millis(400));
    }
}
