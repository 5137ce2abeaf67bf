//! Events are one resource served by two APIs, as in the API server: `events.k8s.io/v1` (what
//! kube-rs's recorder writes) and core `v1` (what `kubectl describe` and `kubectl get events`
//! read). They are stored in the core form and converted field by field on the way in and out.

use serde_json::{Map, Value};

use super::resources::ServedResource;

/// Whether this is the `events.k8s.io` resource.
pub fn is_events_v1(resource: &ServedResource) -> bool {
    resource.group == "events.k8s.io" && resource.plural == "events"
}

/// `(events.k8s.io/v1 field, core v1 field)`; the rest (metadata, reason, type, action,
/// related, eventTime, series, reportingInstance) have the same name in both.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(object: Value, forward: bool) -> Value {
    let Value::Object(fields) = object else {
        return object;
    };
    let mut out = Map::new();
    for (key, value) in fields {
        let renamed = RENAMED.iter().find_map(|(v1, core)| {
            let (from, to) = if forward { (v1, core) } else { (core, v1) };
            (key == *from).then_some(*to)
        });
        out.insert(renamed.map_or(key, str::to_string), value);
    }
    Value::Object(out)
}

/// An `events.k8s.io/v1` Event in its stored (core v1) form.
pub fn to_core(object: Value) -> Value {
    let mut core = rename(object, true);
    core["apiVersion"] = Value::from("v1");
    core["kind"] = Value::from("Event");
    core
}

/// A stored (core v1) Event as `events.k8s.io/v1` shows it.
pub fn to_events_v1(object: Value) -> Value {
    let mut event = rename(object, false);
    event["apiVersion"] = Value::from("events.k8s.io/v1");
    event["kind"] = Value::from("Event");
    event
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_convert_between_the_two_apis_without_loss() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "g.1", "namespace": "shop"},
            "eventTime": "2026-11-25T04:00:00.000000Z",
            "regarding": {"kind": "DatabaseAccessGrant", "name": "g", "namespace": "shop", "uid": "u"},
            "note": "access is granted", "reason": "Ready", "type": "Normal", "action": "Reconcile",
            "reportingController": "dbgrant.io/operator", "reportingInstance": "dbgrant-0",
        });
        let core = to_core(v1.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["uid"], "u");
        assert_eq!(core["message"], "access is granted");
        assert_eq!(core["reportingComponent"], "dbgrant.io/operator");
        assert!(core.get("regarding").is_none());
        assert_eq!(to_events_v1(core), v1);
    }
}
