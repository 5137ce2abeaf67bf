//! Writing what the reconcilers found back to the cluster: status (server-side apply, one
//! field manager) and events (only when the Ready reason changes, so resyncs stay quiet).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{ConditionType, Reason, Status, set_condition};

/// Field manager of every write dbgrant makes.
pub const FIELD_MANAGER: &str = "dbgrant";

/// Replace the status of `name` with `status`, owning every field in it.
///
/// # Errors
/// The API server's error (the object is gone, RBAC, ...).
pub async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// The Ready condition's (status, reason), if any.
pub fn ready_of(conditions: &[Condition]) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_str())
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Publish an event when Ready's status or reason changed from `before` to `after`.
/// Failures to publish are logged, never fatal: events are a courtesy, status is the record.
pub async fn event_on_transition<K>(
    recorder: &Recorder,
    object: &K,
    before: Option<(String, String)>,
    after: &[Condition],
    action: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let Some(ready) = after
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_str())
    else {
        return;
    };
    if before.as_ref() == Some(&(ready.status.clone(), ready.reason.clone())) {
        return;
    }
    let type_ = if ready.status == "False" {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let event = Event {
        type_,
        reason: ready.reason.clone(),
        note: Some(truncate(&ready.message, 1000)),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, reason = %ready.reason, "could not publish event");
    }
}

/// Publish one event (for things that are not a Ready transition, such as drift).
pub async fn event<K>(recorder: &Recorder, object: &K, warning: bool, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(truncate(&note, 1000)),
        action: reason.to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not publish event");
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Say why a deletion is held by its finalizer: a Warning event, and `Ready=False
/// CleanupFailed` with the same message in `status` (`conditions` picks them out of it).
///
/// # Errors
/// The API server's error writing the status.
pub async fn cleanup_failed<K, S>(
    recorder: &Recorder,
    api: &Api<K>,
    object: &K,
    mut status: S,
    conditions: impl FnOnce(&mut S) -> &mut Vec<Condition>,
    message: &str,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let reason = Reason::CleanupFailed.as_str();
    event(recorder, object, true, reason, message.to_string()).await;
    set_condition(
        conditions(&mut status),
        ConditionType::Ready,
        Status::False,
        reason,
        message,
        object.meta().generation,
        Time(Timestamp::now()),
    );
    apply_status(api, &object.name_any(), &status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let text = "é".repeat(600);
        let cut = truncate(&text, 1000);
        assert!(cut.len() <= 1003);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", 1000), "short");
    }
}
