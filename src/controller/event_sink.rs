//! Publishing Kubernetes events (`events.k8s.io/v1`), with repeats folded into a series as
//! kube's `Recorder` does, but remembering each recent event in a few dozen bytes.
//!
//! kube's `Recorder` keeps every event it published in the last six minutes whole (about a
//! kilobyte and a half each, in one hash table), and scans all of them on every publish: a
//! burst of 10,000 new grants (an audit event and a Ready event each) made that table the
//! largest thing in the operator's memory and the scans quadratic. Here a recent event is a
//! hash of what makes it the same event (type, reason, the object it regards, as kube keys
//! it), its name and count; expired entries are dropped at most every few seconds.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// How long a published event can still grow a series (kube's own window).
const SERIES_WINDOW: Duration = Duration::from_secs(360);
/// How often expired entries are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

struct Seen {
    name: String,
    count: i32,
    last: Timestamp,
}

#[derive(Default)]
struct Recent {
    seen: HashMap<u64, Seen>,
    pruned: Option<Timestamp>,
}

/// Publishes events as one reporting controller and instance.
pub struct EventSink {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<Recent>,
}

/// What makes two events the same event (kube's key: the note may differ).
fn key_of(regarding: &ObjectReference, warning: bool, reason: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        warning,
        reason,
        &regarding.api_version,
        &regarding.kind,
        &regarding.namespace,
        &regarding.name,
        &regarding.uid,
        &regarding.resource_version,
        &regarding.field_path,
    )
        .hash(&mut hasher);
    hasher.finish()
}

impl EventSink {
    /// A sink for `controller`; `instance` names this replica (the controller's name if none).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            recent: Mutex::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The series entry to grow for this event, if it was published within the window.
    fn repeat_of(&self, key: u64, now: Timestamp) -> Option<(String, i32)> {
        let mut recent = self.recent();
        let window = k8s_openapi::jiff::SignedDuration::try_from(SERIES_WINDOW).unwrap_or_default();
        let due = recent.pruned.is_none_or(|at| {
            now.duration_since(at)
                >= k8s_openapi::jiff::SignedDuration::try_from(PRUNE_EVERY).unwrap_or_default()
        });
        if due {
            recent
                .seen
                .retain(|_, s| now.duration_since(s.last) < window);
            recent.pruned = Some(now);
        }
        recent
            .seen
            .get(&key)
            .filter(|s| now.duration_since(s.last) < window)
            .map(|s| (s.name.clone(), s.count))
    }

    /// Publish an event about `regarding`: a new one, or the next of its series.
    ///
    /// # Errors
    /// When the API server refuses the event.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = key_of(regarding, warning, reason);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let (name, count) = match self.repeat_of(key, now) {
            Some((name, count)) => {
                let series = serde_json::json!({
                    "series": {"count": count + 1, "lastObservedTime": MicroTime(now)},
                });
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                    .await?;
                (name, count + 1)
            }
            None => {
                let name = format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                );
                let event = Event {
                    action: Some(reason.to_string()),
                    reason: Some(reason.to_string()),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding.clone()),
                    note: Some(note.to_string()),
                    metadata: ObjectMeta {
                        namespace: Some(namespace.to_string()),
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
                    ..Event::default()
                };
                events.create(&PostParams::default(), &event).await?;
                (name, 1)
            }
        };
        self.recent().seen.insert(
            key,
            Seen {
                name,
                count,
                last: now,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, resource_version: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("dbgrant.io/v1alpha1".into()),
            kind: Some("DatabaseAccessGrant".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            uid: Some("u".into()),
            resource_version: Some(resource_version.into()),
            field_path: None,
        }
    }

    /// A client answering every request with 201 and its own body, recording (method, path,
    /// body) of each.
    type Requests = std::sync::Arc<Mutex<Vec<(String, String, String)>>>;

    fn recording_client() -> (Client, Requests) {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let log = log.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes).to_string();
                log.lock().unwrap().push((
                    parts.method.to_string(),
                    parts.uri.path().to_string(),
                    text.clone(),
                ));
                let reply = if parts.method == http::Method::PATCH {
                    r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"x"},"eventTime":null}"#.to_string()
                } else {
                    text
                };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(201)
                        .body(kube::client::Body::from(reply.into_bytes()))
                        .unwrap(),
                )
            }
        });
        (Client::new(service, "default"), seen)
    }

    #[tokio::test]
    async fn a_repeat_grows_the_series_of_the_first_and_another_object_starts_its_own() {
        let (client, seen) = recording_client();
        let sink = EventSink::new(client, "dbgrant", Some("pod-1".into()));
        let g = reference("g", "1");
        sink.publish(&g, false, "Ready", "ready").await.unwrap();
        sink.publish(&g, false, "Ready", "ready again")
            .await
            .unwrap();
        sink.publish(&reference("h", "1"), true, "Failed", "no")
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        let methods: Vec<&str> = seen.iter().map(|(m, _, _)| m.as_str()).collect();
        assert_eq!(methods, ["POST", "PATCH", "POST"]);
        assert_eq!(seen[0].1, "/apis/events.k8s.io/v1/namespaces/shop/events");
        let first: serde_json::Value = serde_json::from_str(&seen[0].2).unwrap();
        assert_eq!(first["reason"], "Ready");
        assert_eq!(first["note"], "ready");
        assert_eq!(first["type"], "Normal");
        assert_eq!(first["reportingController"], "dbgrant");
        assert_eq!(first["reportingInstance"], "pod-1");
        assert_eq!(first["regarding"]["name"], "g");
        let name = first["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            seen[1].1,
            format!("/apis/events.k8s.io/v1/namespaces/shop/events/{name}")
        );
        let patch: serde_json::Value = serde_json::from_str(&seen[1].2).unwrap();
        assert_eq!(patch["series"]["count"], 2);
        let third: serde_json::Value = serde_json::from_str(&seen[2].2).unwrap();
        assert_eq!(third["type"], "Warning");
    }

    #[test]
    fn the_same_event_is_the_same_type_reason_and_object_whatever_its_note() {
        let a = key_of(&reference("g", "1"), false, "AccessGranted");
        assert_eq!(a, key_of(&reference("g", "1"), false, "AccessGranted"));
        for other in [
            key_of(&reference("g", "1"), true, "AccessGranted"),
            key_of(&reference("g", "1"), false, "AccessRevoked"),
            key_of(&reference("h", "1"), false, "AccessGranted"),
            key_of(&reference("g", "2"), false, "AccessGranted"),
        ] {
            assert_ne!(a, other);
        }
    }
}
