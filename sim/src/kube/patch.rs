//! Patches as the API server applies them: JSON merge patch, JSON patch (with `test`),
//! strategic merge (as a merge patch whose lists of named items merge by name), and
//! server-side apply with per-manager field ownership in `metadata.managedFields`.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::errors::ApiError;

/// A field path, e.g. `["spec", "role"]`.
type Path = Vec<String>;

/// Apply a JSON merge patch (RFC 7386).
pub fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Apply a strategic merge patch: a merge patch, except that lists of objects with a `name`
/// (containers, env, ports, volumes) merge item by item and `$patch: delete` removes one.
pub fn strategic(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (key, value) in p {
                if value.is_null() {
                    t.remove(key);
                } else if let (Some(Value::Array(existing)), Value::Array(items)) =
                    (t.get_mut(key), value)
                    && items.iter().all(|i| i.get("name").is_some())
                    && existing.iter().all(|i| i.get("name").is_some())
                {
                    for item in items {
                        let position = existing.iter().position(|e| e["name"] == item["name"]);
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (position, delete) {
                            (Some(i), true) => {
                                existing.remove(i);
                            }
                            (Some(i), false) => strategic(&mut existing[i], item),
                            (None, false) => existing.push(item.clone()),
                            (None, true) => {}
                        }
                    }
                } else {
                    let slot = t.entry(key.clone()).or_insert(Value::Null);
                    if value.is_object() && slot.is_object() {
                        strategic(slot, value);
                    } else {
                        *slot = value.clone();
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Apply a JSON patch (RFC 6902); a failed `test` is a 422 like the real server's.
///
/// # Errors
/// When the patch is malformed or an operation fails.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    // The API server's JSON patch treats a missing path as null for `test` (kube-rs's
    // finalizer helper relies on it when adding the first finalizer).
    let patch = match patch.as_array() {
        Some(ops) => Value::Array(
            ops.iter()
                .filter(|op| {
                    !(op["op"] == "test"
                        && op["value"].is_null()
                        && op["path"]
                            .as_str()
                            .is_some_and(|p| target.pointer(p).is_none()))
                })
                .cloned()
                .collect(),
        ),
        None => patch.clone(),
    };
    let patch: json_patch::Patch = serde_json::from_value(patch)
        .map_err(|e| ApiError::bad_request(format!("the patch is not a JSON patch: {e}")))?;
    json_patch::patch(target, &patch).map_err(|e| {
        ApiError::invalid(json!({
            "message": format!("the server rejected our request due to an error in our request: {e}"),
        }))
    })
}

/// Server-side apply `applied` by `manager` onto `existing` (or create it). `subresource` is
/// `Some("status")` for the status subresource, whose ownership is kept apart.
///
/// # Errors
/// 409 when another manager owns a field with a different value and `force` is false.
pub fn apply(
    existing: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
) -> Result<Value, ApiError> {
    let mut result = existing.cloned().unwrap_or_else(|| json!({"metadata": {}}));
    let mut entries: Vec<Value> = result["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let is_mine = |e: &Value| {
        e["manager"] == manager
            && e["operation"] == "Apply"
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let previous: BTreeSet<Path> = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| paths_of(&e["fieldsV1"]))
        .unwrap_or_default();
    let mut wanted = BTreeSet::new();
    leaf_paths(applied, &mut Vec::new(), &mut wanted);

    // Conflicts: fields another manager owns that this apply would change.
    if let Some(existing) = existing {
        let mut conflicts = Vec::new();
        for entry in entries.iter().filter(|e| !is_mine(e)) {
            let theirs = paths_of(&entry["fieldsV1"]);
            for path in wanted.iter().filter(|p| theirs.contains(*p)) {
                if lookup(existing, path) != lookup(applied, path) {
                    conflicts.push((
                        entry["manager"].as_str().unwrap_or("").to_string(),
                        format!(".{}", path.join(".")),
                    ));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let manager = conflicts[0].0.clone();
            let fields: Vec<String> = conflicts.into_iter().map(|(_, f)| f).collect();
            return Err(ApiError::apply_conflict(&manager, &fields));
        }
    }

    // Forced or free: other managers lose the fields this apply now owns.
    let mut others_own = BTreeSet::new();
    for entry in entries.iter_mut().filter(|e| !is_mine(e)) {
        let mut theirs = paths_of(&entry["fieldsV1"]);
        theirs.retain(|p| !wanted.contains(p));
        entry["fieldsV1"] = fields_of(&theirs);
        others_own.extend(theirs);
    }
    entries.retain(|e| is_mine(e) || e["fieldsV1"].as_object().is_some_and(|m| !m.is_empty()));

    // Fields this manager applied before and no longer does are removed unless shared. The
    // field set tracks the maps that hold them too: a map nobody applies or owns anything in
    // any more goes whole (dropping `tokenSecret: {name}` drops `tokenSecret`, not only
    // `name`, as the API server does).
    let within = |paths: &BTreeSet<Path>, prefix: &[String]| {
        paths
            .iter()
            .any(|p| p.len() >= prefix.len() && p[..prefix.len()] == *prefix)
    };
    for path in previous.difference(&wanted) {
        if others_own.contains(path) {
            continue;
        }
        let unheld = (1..path.len())
            .map(|len| &path[..len])
            .find(|prefix| !within(&wanted, prefix) && !within(&others_own, prefix));
        remove(&mut result, unheld.unwrap_or(path));
    }
    deep_merge(&mut result, applied);

    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_of(&wanted),
    });
    let mut entry = entry;
    if let Some(sub) = subresource {
        entry["subresource"] = Value::String(sub.to_string());
    }
    match entries.iter().position(is_mine) {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    result["metadata"]["managedFields"] = Value::Array(entries);
    Ok(result)
}

/// After any write, nobody owns a field the object no longer has (the API server drops removed
/// fields from every manager's set), so a later apply of that field by someone else is not a
/// conflict. Entries left owning nothing go away.
pub fn prune_managed_fields(object: &mut Value) {
    let Some(entries) = object["metadata"]["managedFields"].as_array() else {
        return;
    };
    let mut kept = Vec::with_capacity(entries.len());
    for entry in entries {
        let owned = paths_of(&entry["fieldsV1"]);
        let present: BTreeSet<Path> = owned
            .iter()
            .filter(|p| lookup(object, p).is_some())
            .cloned()
            .collect();
        if present.len() == owned.len() {
            kept.push(entry.clone());
        } else if !present.is_empty() {
            let mut entry = entry.clone();
            entry["fieldsV1"] = fields_of(&present);
            kept.push(entry);
        }
    }
    object["metadata"]["managedFields"] = Value::Array(kept);
}

/// Metadata the server owns; applying it is not ownership.
fn is_server_field(path: &[String]) -> bool {
    match path {
        [top] => top == "apiVersion" || top == "kind",
        [meta, field] if meta == "metadata" => matches!(
            field.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "managedFields"
                | "deletionTimestamp"
        ),
        _ => false,
    }
}

fn leaf_paths(value: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    if let Value::Object(map) = value
        && (!map.is_empty() || prefix.is_empty())
    {
        for (key, child) in map {
            prefix.push(key.clone());
            if !is_server_field(prefix) {
                if child.as_object().is_some_and(|m| !m.is_empty()) {
                    leaf_paths(child, prefix, out);
                } else {
                    out.insert(prefix.clone());
                }
            }
            prefix.pop();
        }
    }
}

fn paths_of(fields: &Value) -> BTreeSet<Path> {
    fn walk(fields: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(map) = fields.as_object() else {
            return;
        };
        for (key, child) in map {
            let Some(name) = key.strip_prefix("f:") else {
                continue;
            };
            prefix.push(name.to_string());
            if child
                .as_object()
                .is_some_and(|m| m.keys().any(|k| k.starts_with("f:")))
            {
                walk(child, prefix, out);
            } else {
                out.insert(prefix.clone());
            }
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

fn fields_of(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for segment in path {
            let entry = node
                .entry(format!("f:{segment}"))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else { break };
            node = next;
        }
    }
    Value::Object(root)
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, segment| v.get(segment))
}

fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = value;
    for segment in parents {
        match node.get_mut(segment) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Value::Object(map) = node {
        map.remove(last);
    }
}

fn deep_merge(target: &mut Value, source: &Value) {
    match (target, source) {
        (Value::Object(t), Value::Object(s)) => {
            for (key, value) in s {
                match t.get_mut(key) {
                    Some(slot)
                        if slot.is_object() && value.as_object().is_some_and(|m| !m.is_empty()) =>
                    {
                        deep_merge(slot, value)
                    }
                    _ => {
                        t.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, source) => *target = source.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn apply_owns_fields_removes_dropped_ones_and_detects_conflicts() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let created = apply(None, &first, "one", false, None, "v1", NOW).unwrap();
        assert_eq!(created["data"], json!({"a": "1", "b": "2"}));

        // The same manager drops `b`: it goes.
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let updated = apply(Some(&created), &second, "one", false, None, "v1", NOW).unwrap();
        assert_eq!(updated["data"], json!({"a": "1"}));

        // Another manager changing `a` conflicts unless forced; adding `z` does not.
        let other = json!({"metadata": {"name": "c"}, "data": {"a": "9"}});
        let error = apply(Some(&updated), &other, "two", false, None, "v1", NOW).unwrap_err();
        assert_eq!(error.code, 409);
        assert!(
            error.message.contains("conflict with \"one\": .data.a"),
            "{}",
            error.message
        );
        let forced = apply(Some(&updated), &other, "two", true, None, "v1", NOW).unwrap();
        assert_eq!(forced["data"]["a"], "9");
        let added = apply(
            Some(&updated),
            &json!({"data": {"z": "0"}}),
            "two",
            false,
            None,
            "v1",
            NOW,
        )
        .unwrap();
        assert_eq!(added["data"], json!({"a": "1", "z": "0"}));
    }

    #[test]
    fn an_apply_that_drops_a_map_removes_the_map_not_only_its_fields() {
        let first = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "g"},
            "spec": {"role": "reader", "tokenSecret": {"name": "tok"}}});
        let second = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "g"},
            "spec": {"role": "reader"}});
        let applied = apply(None, &first, "kubectl", false, None, "v1", "t").unwrap();
        let again = apply(Some(&applied), &second, "kubectl", false, None, "v1", "t").unwrap();
        assert_eq!(again["spec"], json!({"role": "reader"}));
        // A map another manager still owns something in stays, with that field.
        let mut shared = applied.clone();
        shared["spec"]["tokenSecret"]["formats"] = json!(["AzureCli"]);
        shared["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .push(
                json!({"manager": "other", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:tokenSecret": {"f:formats": {}}}}}),
            );
        let kept = apply(Some(&shared), &second, "kubectl", false, None, "v1", "t").unwrap();
        assert_eq!(
            kept["spec"]["tokenSecret"],
            json!({"formats": ["AzureCli"]})
        );
    }

    #[test]
    fn a_field_removed_by_another_write_is_no_longer_owned() {
        let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "one", "leaseDurationSeconds": 3}});
        let mut held = apply(None, &lease, "one", false, None, "v1", NOW).unwrap();
        // A non-apply write (a strategic merge patch with nulls) clears the holder.
        strategic(&mut held, &json!({"spec": {"holderIdentity": null}}));
        prune_managed_fields(&mut held);
        let owned = paths_of(&held["metadata"]["managedFields"][0]["fieldsV1"]);
        assert!(!owned.contains(&vec!["spec".to_string(), "holderIdentity".to_string()]));
        assert!(owned.contains(&vec![
            "spec".to_string(),
            "leaseDurationSeconds".to_string()
        ]));
        // So another manager may take it without forcing.
        let taken = json!({"spec": {"holderIdentity": "two"}});
        let result = apply(Some(&held), &taken, "two", false, None, "v1", NOW).unwrap();
        assert_eq!(result["spec"]["holderIdentity"], "two");
        // Without the pruning it would have been a conflict with "one".
        let stale = apply(None, &lease, "one", false, None, "v1", NOW).unwrap();
        let mut cleared = stale.clone();
        strategic(&mut cleared, &json!({"spec": {"holderIdentity": null}}));
        assert_eq!(
            apply(Some(&cleared), &taken, "two", false, None, "v1", NOW)
                .unwrap_err()
                .code,
            409
        );
    }

    #[test]
    fn strategic_merge_merges_named_lists_and_deletes_on_request() {
        let mut target =
            json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]});
        strategic(
            &mut target,
            &json!({"containers": [{"name": "a", "image": "2"}, {"name": "b", "$patch": "delete"}, {"name": "c", "image": "3"}]}),
        );
        assert_eq!(
            target,
            json!({"containers": [{"name": "a", "image": "2"}, {"name": "c", "image": "3"}]})
        );
    }

    #[test]
    fn json_patch_honours_test() {
        let mut target = json!({"metadata": {"finalizers": ["x"]}});
        json_patch(&mut target, &json!([{"op": "test", "path": "/metadata/finalizers", "value": ["x"]}, {"op": "remove", "path": "/metadata/finalizers/0"}])).unwrap();
        assert_eq!(target["metadata"]["finalizers"], json!([]));
        let error = json_patch(
            &mut target,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": ["x"]}]),
        )
        .unwrap_err();
        assert_eq!(error.code, 422);
        // A missing path tests equal to null, as on the real server.
        let mut fresh = json!({"metadata": {}});
        json_patch(&mut fresh, &json!([{"op": "test", "path": "/metadata/finalizers", "value": null}, {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}])).unwrap();
        assert_eq!(fresh["metadata"]["finalizers"], json!(["x"]));
    }
}
