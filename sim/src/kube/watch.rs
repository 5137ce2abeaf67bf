//! Watches: one JSON event per line, resumed from a resourceVersion out of the change
//! history, with bookmarks, timeouts, `410 Gone` as an in-stream `ERROR` event, and an end on
//! demand (fault injection).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::errors::ApiError;
use super::faults::Faults;
use super::objects::{key, present};
use super::resources::ServedResource;
use super::select::Selector;
use super::store::{Change, Store};

/// What a watch filters on.
pub struct WatchRequest {
    /// The resource.
    pub resource: ServedResource,
    /// Only this namespace, if set.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: Selector,
    /// Field selector.
    pub fields: Selector,
    /// Start after this version; `None` (or 0) starts with the current objects as `ADDED`.
    pub resource_version: Option<u64>,
    /// Send `BOOKMARK` events.
    pub bookmarks: bool,
    /// Streaming list (`sendInitialEvents=true`): the current objects as `ADDED` whatever the
    /// version, then a bookmark annotated `k8s.io/initial-events-end` so the client knows its
    /// cache is complete.
    pub send_initial_events: bool,
    /// End the watch after this long.
    pub timeout: Duration,
}

const BOOKMARK_EVERY: Duration = Duration::from_secs(2);

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Start a watch; the body streams until the timeout, a fault, or the client goes away.
pub fn watch(store: &Arc<Store>, faults: &Faults, request: WatchRequest) -> Body {
    let key = key(&request.resource);
    let (initial, mut last_rv, receiver) = {
        let inner = store.lock();
        let receiver = store.subscribe();
        let current = inner.rv;
        let start = if request.send_initial_events {
            None
        } else {
            request.resource_version.filter(|rv| *rv > 0)
        };
        match start {
            None => {
                let objects: Vec<Value> = inner.list(&key, request.namespace.as_deref());
                let lines: Vec<Bytes> = objects
                    .iter()
                    .filter(|o| {
                        request.labels.matches_labels(o) && request.fields.matches_fields(o)
                    })
                    .map(|o| line("ADDED", &present(&request.resource, o.clone())))
                    .collect();
                let mut lines: Vec<Bytes> = lines;
                if request.send_initial_events {
                    let mut end = bookmark(&request.resource, current);
                    end["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                    lines.push(line("BOOKMARK", &end));
                }
                (lines, current, receiver)
            }
            Some(rv) => match inner.changes_since(&key, rv) {
                Some(changes) => {
                    let lines = changes
                        .iter()
                        .filter(|c| matches(&request, c))
                        .map(|c| line(c.kind, &present(&request.resource, c.object.clone())))
                        .collect();
                    (lines, current.max(rv), receiver)
                }
                None => {
                    let status = ApiError::gone(rv).status();
                    return Body::from(line("ERROR", &status));
                }
            },
        }
    };
    let mut epoch = faults.watch_epoch();
    epoch.mark_unchanged();
    let resource = request.resource.clone();
    let stream = async_stream(move |tx| async move {
        for item in initial {
            if tx.send(item).await.is_err() {
                return;
            }
        }
        let mut receiver = receiver;
        let deadline = tokio::time::sleep(request.timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                // An ended watch must not deliver anything after the end was asked for.
                biased;
                _ = epoch.changed() => return,
                _ = &mut deadline => return,
                _ = ticker.tick(), if request.bookmarks => {
                    if tx.send(line("BOOKMARK", &bookmark(&resource, last_rv))).await.is_err() {
                        return;
                    }
                }
                change = receiver.recv() => match change {
                    Ok(change) => {
                        if change.rv <= last_rv || change.key != key {
                            continue;
                        }
                        last_rv = change.rv;
                        if matches(&request, &change) {
                            let object = present(&resource, change.object.clone());
                            if tx.send(line(change.kind, &object)).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Fell behind or the server is going away: end, the client resumes.
                    Err(RecvError::Lagged(_) | RecvError::Closed) => return,
                },
            }
        }
    });
    Body::from_stream(stream)
}

/// A bookmark carries only the kind and a resourceVersion, as the API server sends it.
fn bookmark(resource: &ServedResource, rv: u64) -> Value {
    json!({"kind": resource.kind, "apiVersion": super::objects::api_version(resource), "metadata": {"resourceVersion": rv.to_string()}})
}

fn matches(request: &WatchRequest, change: &Change) -> bool {
    let object = &change.object;
    request
        .namespace
        .as_deref()
        .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
        && request.labels.matches_labels(object)
        && request.fields.matches_fields(object)
}

/// A stream fed by a task through a small channel (so a slow client applies backpressure).
fn async_stream<F, Fut>(producer: F) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(producer(tx));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}
