//! `watch`: a stream of events, with streaming lists (`sendInitialEvents`) validated as the API
//! server does.

use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::Response;

use super::Call;
use crate::kube::errors::ApiError;
use crate::kube::select::Selector;
use crate::kube::watch as stream;

pub(super) fn watch(call: Call<'_>) -> Result<Response, ApiError> {
    let query = &call.query;
    let send_initial_events = query.get("sendInitialEvents").is_some_and(|b| b == "true");
    // The API server's validation of streaming lists.
    if send_initial_events
        && query.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
    {
        return Err(ApiError::invalid_params(
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if send_initial_events && query.get("allowWatchBookmarks").map(String::as_str) != Some("true") {
        return Err(ApiError::invalid_params(
            "allowWatchBookmarks: Forbidden: sendInitialEvents requires allowWatchBookmarks=true",
        ));
    }
    let request = stream::WatchRequest {
        send_initial_events,
        labels: Selector::labels(query.get("labelSelector").map(String::as_str).unwrap_or(""))?,
        fields: Selector::fields(query.get("fieldSelector").map(String::as_str).unwrap_or(""))?,
        resource_version: query.get("resourceVersion").and_then(|rv| rv.parse().ok()),
        bookmarks: query
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true"),
        timeout: Duration::from_secs(
            query
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1800),
        ),
        resource: call.served,
        namespace: call.ns,
    };
    let body = stream::watch(&call.shared.store, &call.shared.faults, request);
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    Ok(response)
}
