//! A small typed Azure Resource Manager client: GET, LIST (following `nextLink`), and PUT and
//! DELETE through ARM's long-running-operation protocol (`Azure-AsyncOperation` or `Location`
//! polling until Succeeded/Failed/Canceled, any other status — `InProgress`, Cosmos DB's
//! `Dequeued`, … — meaning "still running"), with a deadline.
//!
//! Polling and paging URLs come from Azure's responses; they are only followed on the ARM
//! endpoint's host or its subdomains (regional hosts such as `westus.management.azure.com`), so
//! a forged header cannot send the operator's token elsewhere.

use std::time::Instant;

use azure_core::http::{Method, Url};
use serde::de::DeserializeOwned;

use super::error::{ArmError, arm_failure};
use super::pipeline::{Call, Http, Reply};
use crate::api::Reason;
use crate::backend::BackendError;

/// The Cosmos DB resource provider api-version used for accounts and SQL RBAC.
pub const COSMOS_API_VERSION: &str = "2025-10-15";

/// Most pages followed in one LIST, so a server that loops its `nextLink` cannot hang a call.
const MAX_PAGES: usize = 200;

/// An ARM client on an authenticated pipeline.
#[derive(Clone)]
pub struct Arm {
    http: Http,
    endpoint: Url,
    /// How long each kind of long-running operation takes, learnt (shared by clones).
    lro_times: std::sync::Arc<super::lro_timing::LroTimes>,
}

#[derive(serde::Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(default, rename = "nextLink")]
    next_link: Option<String>,
}

/// What a long-running operation does, for its fallback polling of the resource itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lro {
    Put,
    Delete,
}

enum PollMode {
    AsyncOperation,
    Location,
    Resource,
}

impl Arm {
    /// A client for the ARM endpoint `endpoint` (a path prefix is kept).
    pub fn new(http: Http, endpoint: Url) -> Self {
        Self {
            http,
            endpoint: super::cloud::with_trailing_slash(endpoint),
            lro_times: std::sync::Arc::default(),
        }
    }

    /// The URL of resource `path` (an ARM id, starting with `/`) at `api_version`.
    pub fn url(&self, path: &str, api_version: &str) -> Result<Url, BackendError> {
        let relative = path.trim_start_matches('/');
        let mut url = self.endpoint.join(relative).map_err(|e| {
            BackendError::new(
                Reason::InvalidSpec,
                format!("'{path}' is not a valid ARM path: {e}"),
            )
        })?;
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    /// GET one resource and decode it.
    pub async fn get<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        what: &str,
        url: Url,
    ) -> Result<T, BackendError> {
        let reply = self.call(operation, what, Method::Get, url, None).await?;
        if !reply.is_success() {
            return Err(failure(what, &reply));
        }
        decode(what, &reply.body)
    }

    /// GET one resource; `None` when it does not exist (404).
    pub async fn get_optional<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        what: &str,
        url: Url,
    ) -> Result<Option<T>, BackendError> {
        let reply = self.call(operation, what, Method::Get, url, None).await?;
        match reply.status {
            404 => Ok(None),
            _ if reply.is_success() => decode(what, &reply.body).map(Some),
            _ => Err(failure(what, &reply)),
        }
    }

    /// GET a collection, following `nextLink` until it is absent.
    pub async fn list<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        what: &str,
        url: Url,
    ) -> Result<Vec<T>, BackendError> {
        let mut items = Vec::new();
        let mut next = Some(url);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(BackendError::new(
                    Reason::AzureUnavailable,
                    format!("{what}: more than {MAX_PAGES} pages; giving up"),
                ));
            }
            let reply = self.call(operation, what, Method::Get, url, None).await?;
            if !reply.is_success() {
                return Err(failure(what, &reply));
            }
            let page: Page<T> = decode(what, &reply.body)?;
            items.extend(page.value);
            next = match page.next_link.filter(|l| !l.is_empty()) {
                Some(link) => Some(self.followable(what, &link)?),
                None => None,
            };
        }
        Ok(items)
    }

    /// PUT a resource and wait for the operation to finish.
    pub async fn put(
        &self,
        operation: &'static str,
        what: &str,
        url: Url,
        body: &serde_json::Value,
    ) -> Result<(), BackendError> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            BackendError::new(Reason::InvalidSpec, format!("{what}: encoding: {e}"))
        })?;
        let reply = self
            .call(operation, what, Method::Put, url.clone(), Some(bytes))
            .await?;
        self.finish(operation, what, Lro::Put, url, reply).await
    }

    /// DELETE a resource and wait for the operation to finish; a missing one is not an error.
    pub async fn delete(
        &self,
        operation: &'static str,
        what: &str,
        url: Url,
    ) -> Result<(), BackendError> {
        let reply = self
            .call(operation, what, Method::Delete, url.clone(), None)
            .await?;
        self.finish(operation, what, Lro::Delete, url, reply).await
    }

    async fn call(
        &self,
        operation: &'static str,
        what: &str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, BackendError> {
        self.http
            .send(&Call {
                operation,
                what,
                method,
                url,
                headers: Vec::new(),
                body: body.map(|b| ("application/json", b)),
            })
            .await
    }

    /// Interpret the first response of a PUT or DELETE, polling when it was accepted.
    async fn finish(
        &self,
        operation: &'static str,
        what: &str,
        lro: Lro,
        resource: Url,
        reply: Reply,
    ) -> Result<(), BackendError> {
        let async_url = reply.header("azure-asyncoperation").map(str::to_string);
        let location = reply.header("location").map(str::to_string);
        match reply.status {
            404 | 204 if lro == Lro::Delete => return Ok(()),
            200 | 204 => return Ok(()),
            201 if async_url.is_none() => return Ok(()),
            201 | 202 => {}
            _ => return Err(failure(what, &reply)),
        }
        let (mode, url) = match (async_url, location) {
            (Some(url), _) => (PollMode::AsyncOperation, self.followable(what, &url)?),
            (None, Some(url)) => (PollMode::Location, self.followable(what, &url)?),
            // Cosmos DB's PUT may answer a bare 202: watch the resource itself appear or vanish.
            (None, None) => (PollMode::Resource, resource),
        };
        let started = Instant::now();
        let estimate = self.lro_times.estimate(operation);
        let mut polls = 0;
        let mut wait = self.poll_wait(&reply, estimate, polls);
        let mut last_running = None;
        loop {
            // Elapsed plus wait, never `Instant + Duration`: that panics on overflow, and the
            // wait comes from Azure's headers.
            if started.elapsed().saturating_add(wait) > self.http.timing.lro_deadline {
                return Err(BackendError {
                    reason: Reason::AzureUnavailable,
                    message: format!(
                        "{what}: still running in Azure after {}s; checked again on the next attempt",
                        self.http.timing.lro_deadline.as_secs()
                    ),
                    retry_after: Some(wait),
                    http_status: None,
                    code: None,
                    request_id: None,
                });
            }
            tokio::time::sleep(wait).await;
            let sent_at = started.elapsed();
            let reply = self
                .call("lro_poll", what, Method::Get, url.clone(), None)
                .await?;
            polls += 1;
            wait = self.poll_wait(&reply, estimate, polls);
            let done = match mode {
                PollMode::AsyncOperation => {
                    if !reply.is_success() {
                        return Err(failure(&format!("{what} (reading its status)"), &reply));
                    }
                    operation_status(what, &reply.body)?
                }
                PollMode::Location => match reply.status {
                    202 => false,
                    // The finished resource, or (some RPs) a status body on the Location URL.
                    200 | 201 => match status_of(&reply.body) {
                        Some(_) => operation_status(what, &reply.body)?,
                        None => true,
                    },
                    204 => true,
                    404 if lro == Lro::Delete => true,
                    _ => return Err(failure(what, &reply)),
                },
                PollMode::Resource => match (lro, reply.status) {
                    (Lro::Put, 200) | (Lro::Delete, 404) => true,
                    (Lro::Put, 404) | (Lro::Delete, 200) => false,
                    _ => return Err(failure(what, &reply)),
                },
            };
            if done {
                if reply.retry_after().is_none() {
                    self.lro_times.learn(
                        operation,
                        last_running,
                        sent_at,
                        self.http.timing.lro_poll,
                    );
                }
                return Ok(());
            }
            last_running = Some(sent_at);
        }
    }

    /// How long to wait before the next status poll: Azure's Retry-After when it sends one;
    /// otherwise as learnt for this kind of operation (`lro_timing`), since the account's next
    /// write waits for this one.
    fn poll_wait(
        &self,
        reply: &Reply,
        estimate: Option<std::time::Duration>,
        polls: u32,
    ) -> std::time::Duration {
        reply.retry_after().unwrap_or_else(|| {
            super::lro_timing::wait_before(estimate, polls, self.http.timing.lro_poll)
        })
    }

    /// Parse a URL Azure handed us and check it stays on the ARM host (or a subdomain).
    fn followable(&self, what: &str, link: &str) -> Result<Url, BackendError> {
        let refuse = |why: &str| {
            BackendError::new(
                Reason::AzureUnavailable,
                format!("{what}: Azure returned a polling or paging URL {why}; not followed"),
            )
        };
        let url = Url::parse(link).map_err(|_| refuse("that does not parse"))?;
        let (Some(host), Some(ours)) = (url.host_str(), self.endpoint.host_str()) else {
            return Err(refuse("without a host"));
        };
        let same_host = host.eq_ignore_ascii_case(ours)
            || host
                .to_ascii_lowercase()
                .ends_with(&format!(".{}", ours.to_ascii_lowercase()));
        if !same_host || url.scheme() != self.endpoint.scheme() {
            return Err(refuse(&format!("on another host ({host})")));
        }
        Ok(url)
    }
}

/// The `status` of an operation-status body, if it has one.
fn status_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Status {
        status: String,
    }
    serde_json::from_slice::<Status>(body)
        .ok()
        .map(|s| s.status)
}

/// `Ok(true)` when the operation succeeded, `Ok(false)` while it runs, an error when it failed
/// or was canceled.
fn operation_status(what: &str, body: &[u8]) -> Result<bool, BackendError> {
    let Some(status) = status_of(body) else {
        return Err(BackendError::new(
            Reason::AzureUnavailable,
            format!("{what}: the operation status has no 'status'"),
        ));
    };
    match status.to_ascii_lowercase().as_str() {
        "succeeded" => Ok(true),
        "failed" => Err(arm_failure(what, None, body, None)),
        "canceled" | "cancelled" => {
            let error = ArmError::parse(body).unwrap_or_default();
            Err(BackendError::new(
                Reason::AzureUnavailable,
                format!(
                    "{what}: the operation was canceled in Azure {}",
                    error.message
                )
                .trim_end()
                .to_string(),
            ))
        }
        // InProgress, Running, Dequeued, Accepted, … anything else means not finished.
        _ => Ok(false),
    }
}

fn failure(what: &str, reply: &Reply) -> BackendError {
    arm_failure(what, Some(reply.status), &reply.body, reply.retry_after())
        .with_request_id(reply.header("x-ms-request-id"))
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, BackendError> {
    serde_json::from_slice(body).map_err(|e| {
        BackendError::new(
            Reason::AzureUnavailable,
            format!("{what}: unexpected response body: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_statuses_are_terminal_only_when_documented() {
        assert_eq!(
            operation_status("x", br#"{"status":"Succeeded"}"#),
            Ok(true)
        );
        for running in ["InProgress", "Dequeued", "Running", "Accepted", "Enqueued"] {
            let body = format!(r#"{{"status":"{running}"}}"#);
            assert_eq!(
                operation_status("x", body.as_bytes()),
                Ok(false),
                "{running}"
            );
        }
        let failed = operation_status(
            "PUT a",
            br#"{"status":"Failed","error":{"code":"BadRequest","message":"The provided principal ID [p] was not found in the AAD tenant(s) [t]"}}"#,
        )
        .expect_err("failed");
        assert_eq!(failed.reason, Reason::PrincipalNotFound);
        assert!(failed.message.contains("BadRequest"), "{}", failed.message);
        let canceled = operation_status("x", br#"{"status":"Canceled"}"#).expect_err("canceled");
        assert_eq!(canceled.reason, Reason::AzureUnavailable);
        assert!(operation_status("x", b"{}").is_err());
    }
}
