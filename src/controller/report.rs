//! Writing what the reconcilers found back to the cluster: status (server-side apply, one
//! field manager) and events (only when the Ready reason changes, so resyncs stay quiet).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::cluster::Cluster;
use crate::api::{ConditionType, Reason, Status, set_condition};
use crate::backend::Holding;

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
pub async fn event_on_transition(
    cluster: &dyn Cluster,
    object: ObjectReference,
    before: Option<(String, String)>,
    after: &[Condition],
) {
    let Some(ready) = after
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_str())
    else {
        return;
    };
    if before.as_ref() == Some(&(ready.status.clone(), ready.reason.clone())) {
        return;
    }
    cluster
        .event(
            object,
            ready.status == "False",
            &ready.reason,
            ready.message.clone(),
        )
        .await;
}

/// `text`, cut to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
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
/// CleanupFailed` with the same message in `conditions` (the caller writes the status).
pub async fn cleanup_failed(
    cluster: &dyn Cluster,
    object: ObjectReference,
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    message: &str,
) {
    let reason = Reason::CleanupFailed.as_str();
    cluster
        .event(object, true, reason, message.to_string())
        .await;
    set_condition(
        conditions,
        ConditionType::Ready,
        Status::False,
        reason,
        message,
        generation,
        Time(Timestamp::now()),
    );
}

/// A write to a database's access, for the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessChange {
    /// Access created (or confirmed after a lost record).
    Granted,
    /// Access removed.
    Revoked,
    /// Access left in place on deletion (`deletionPolicy: Retain`); dbgrant stops managing it.
    Retained,
    /// Access missing in the database was restored.
    Restored,
}

impl AccessChange {
    fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "AccessGranted",
            Self::Revoked => "AccessRevoked",
            Self::Retained => "AccessRetained",
            Self::Restored => "AccessRestored",
        }
    }
}

/// Record a write to a database's access: one Event on the grant and one structured log line
/// naming who asked (namespace/grant), the identity, the role and scope and the holding id.
/// Never a token: nothing here has one.
pub async fn audit(
    cluster: &dyn Cluster,
    grant: ObjectReference,
    change: AccessChange,
    holding: &Holding,
    role: Option<&str>,
) {
    let who = format!(
        "{}/{}",
        grant.namespace.as_deref().unwrap_or_default(),
        grant.name.as_deref().unwrap_or_default()
    );
    tracing::info!(
        target: "dbgrant::audit",
        change = change.as_str(),
        grant = %who,
        principal = %holding.principal_id,
        role = role.unwrap_or(&holding.role_id),
        role_id = %holding.role_id,
        scope = %holding.scope,
        holding = %holding.id,
        "access changed"
    );
    let verb = match change {
        AccessChange::Granted => "granted",
        AccessChange::Revoked => "revoked",
        AccessChange::Retained => "retained (no longer managed by dbgrant)",
        AccessChange::Restored => "restored after it went missing",
    };
    // A holding known only by its id (a recorded one being revoked) says just that.
    let role = role.unwrap_or(&holding.role_id);
    let mut parts = Vec::new();
    if !holding.principal_id.is_empty() {
        parts.push(format!("principal {}", holding.principal_id));
    }
    if !role.is_empty() {
        parts.push(format!("role {role}"));
    }
    if !holding.scope.is_empty() {
        parts.push(format!("at {}", holding.scope));
    }
    parts.push(format!("({})", holding.id));
    let note = format!("{verb}: {}", parts.join(" "));
    cluster.event(grant, false, change.as_str(), note).await;
}

/// The parts of a holding id alone (when only the id is recorded), for the audit trail.
pub fn holding_from_id(id: &str) -> Holding {
    Holding {
        id: id.to_string(),
        principal_id: String::new(),
        role_id: String::new(),
        scope: String::new(),
    }
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
