//! Writes to stored objects with the API server's bookkeeping: names, uids, timestamps,
//! generation, the status subresource split, finalizers, namespace termination, garbage
//! collection of dependents, and CRDs becoming served resources.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::errors::ApiError;
use super::resources::ServedResource;
use super::schema;
use super::store::{Inner, ResKey};
use super::time;

/// How a write is made.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// `fieldValidation=Strict`: unknown fields fail the request.
    pub strict: bool,
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
}

/// The storage key of a resource.
pub fn key(resource: &ServedResource) -> ResKey {
    if super::events::is_events_v1(resource) {
        return (String::new(), "events".into());
    }
    (resource.group.clone(), resource.plural.clone())
}

/// `group/version` as `apiVersion` spells it.
pub fn api_version(resource: &ServedResource) -> String {
    if resource.group.is_empty() {
        resource.version.clone()
    } else {
        format!("{}/{}", resource.group, resource.version)
    }
}

/// The object as a client of `resource`'s version sees it.
pub fn present(resource: &ServedResource, mut object: Value) -> Value {
    if super::events::is_events_v1(resource) {
        return super::events::to_events_v1(object);
    }
    object["apiVersion"] = json!(api_version(resource));
    object["kind"] = json!(resource.kind);
    object
}

/// The form an object is stored in: its own, except `events.k8s.io` Events, which share
/// storage with core Events (see `events.rs`).
fn stored_form(resource: &ServedResource, object: Value) -> Value {
    if super::events::is_events_v1(resource) {
        super::events::to_core(object)
    } else {
        present(resource, object)
    }
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn finalizers(object: &Value) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
}

/// Validate the object against its schema (custom resources) and the server's own rules.
fn admit(
    resource: &ServedResource,
    object: &mut Value,
    old: Option<&Value>,
    strict: bool,
) -> Result<Vec<String>, ApiError> {
    let name = name_of(object).to_string();
    let mut errors = Vec::new();
    if !is_dns_subdomain(&name) {
        errors.push(schema::FieldError {
            reason: "FieldValueInvalid".into(),
            field: "metadata.name".into(),
            message: format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        });
    }
    let mut warnings = Vec::new();
    if let Some(schema_props) = &resource.schema {
        let outcome = schema::validate(schema_props, object, old);
        errors.extend(outcome.errors);
        if strict && !outcome.unknown_fields.is_empty() {
            let list: Vec<String> = outcome
                .unknown_fields
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "{} in body",
                list.join(", ")
            )));
        }
        warnings.extend(
            outcome
                .unknown_fields
                .iter()
                .map(|f| format!("unknown field \"{f}\"")),
        );
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(ApiError::invalid(schema::invalid_status(
            &resource.group,
            &resource.kind,
            &name,
            &errors,
        )))
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Create an object. Returns it as stored, with validation warnings.
///
/// # Errors
/// 404 for a missing namespace, 409 for a taken name, 422 for an invalid object.
pub fn create(
    inner: &mut Inner,
    resource: &ServedResource,
    namespace: Option<&str>,
    object: Value,
    options: WriteOptions,
) -> Result<(Value, Vec<String>), ApiError> {
    let WriteOptions { strict, dry_run } = options;
    if !object.is_object() {
        return Err(ApiError::bad_request("the body is not an object"));
    }
    let mut object = stored_form(resource, object);
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    let meta = &mut object["metadata"];
    if meta["name"].as_str().is_none_or(str::is_empty)
        && let Some(prefix) = meta["generateName"].as_str()
    {
        let suffix: String = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .take(5)
            .collect();
        meta["name"] = json!(format!("{prefix}{suffix}"));
    }
    let ns = if resource.namespaced {
        let ns = namespace
            .or(meta["namespace"].as_str())
            .unwrap_or("default")
            .to_string();
        meta["namespace"] = json!(ns);
        ns
    } else {
        if let Some(map) = meta.as_object_mut() {
            map.remove("namespace");
        }
        String::new()
    };
    if resource.namespaced
        && inner
            .get(&("".into(), "namespaces".into()), "", &ns)
            .is_none()
    {
        return Err(ApiError::not_found("", "namespaces", &ns));
    }
    let warnings = admit(resource, &mut object, None, strict)?;
    let name = name_of(&object).to_string();
    let key = key(resource);
    if inner.get(&key, &ns, &name).is_some() {
        return Err(ApiError::already_exists(
            &resource.group,
            &resource.plural,
            &name,
        ));
    }
    let meta = &mut object["metadata"];
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(time::now());
    meta["generation"] = json!(1);
    if let Some(map) = meta.as_object_mut() {
        map.remove("deletionTimestamp");
        map.remove("resourceVersion");
    }
    built_in_defaults(resource, &mut object);
    let object = stored_form(resource, object);
    if dry_run {
        return Ok((present(resource, object), warnings));
    }
    let stored = inner.put(&key, &ns, &name, object);
    if resource.plural == "customresourcedefinitions" {
        register_crd(inner, &stored);
    }
    super::namespaces::on_created(inner, resource, &stored);
    let stored = inner.get(&key, &ns, &name).cloned().unwrap_or(stored);
    Ok((present(resource, stored), warnings))
}

/// Replace an object (PUT, or the result of a patch). `subresource` is `Some("status")` for
/// status writes.
///
/// # Errors
/// 404, 409 on a stale resourceVersion, 422 for an invalid object.
pub fn update(
    inner: &mut Inner,
    resource: &ServedResource,
    ns: &str,
    name: &str,
    mut object: Value,
    subresource: Option<&str>,
    options: WriteOptions,
) -> Result<(Value, Vec<String>), ApiError> {
    let WriteOptions { strict, dry_run } = options;
    let key = key(resource);
    let old = inner
        .get(&key, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, name))?;
    if !object.is_object() {
        return Err(ApiError::bad_request("the body is not an object"));
    }
    object = stored_form(resource, object);
    if let Some(rv) = object["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict(&resource.group, &resource.plural, name));
    }
    if object["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n != name)
    {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    // The status subresource splits writes: status through /status, the rest through the
    // main resource.
    if resource.status_subresource {
        if subresource == Some("status") {
            let status = object.get("status").cloned();
            // An apply to /status records who owns which status field, or a later apply
            // could never remove a field its manager stopped sending.
            let managed = object["metadata"].get("managedFields").cloned();
            object = old.clone();
            match status {
                Some(status) => object["status"] = status,
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            if let Some(managed) = managed {
                object["metadata"]["managedFields"] = managed;
            }
        } else {
            match old.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
    }
    // Server-owned metadata is kept.
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
    ] {
        match old["metadata"].get(field) {
            Some(value) => object["metadata"][field] = value.clone(),
            None => {
                if let Some(map) = object["metadata"].as_object_mut() {
                    map.remove(field);
                }
            }
        }
    }
    if object["metadata"].get("managedFields").is_none()
        && let Some(managed) = old["metadata"].get("managedFields")
    {
        object["metadata"]["managedFields"] = managed.clone();
    }
    object["metadata"]["name"] = json!(name);
    let warnings = admit(resource, &mut object, Some(&old), strict)?;
    if spec_of(&object) != spec_of(&old) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = json!(generation);
    }
    built_in_defaults(resource, &mut object);
    super::patch::prune_managed_fields(&mut object);
    let object = stored_form(resource, object);
    if dry_run {
        return Ok((present(resource, object), warnings));
    }
    // Nothing changed: the real server does not bump the resourceVersion either.
    if without_rv(&object) == without_rv(&old) {
        return Ok((present(resource, old), warnings));
    }
    if old["metadata"].get("deletionTimestamp").is_some() && !finalizers(&object) {
        let removed = inner.remove(&key, ns, name).unwrap_or(object);
        settle(inner);
        return Ok((present(resource, removed), warnings));
    }
    let stored = inner.put(&key, ns, name, object);
    if resource.plural == "customresourcedefinitions" {
        register_crd(inner, &stored);
    }
    let stored = inner.get(&key, ns, name).cloned().unwrap_or(stored);
    Ok((present(resource, stored), warnings))
}

fn without_rv(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    object
}

fn spec_of(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    object
}

/// Delete an object: with finalizers it only gets a deletionTimestamp; without, it goes, and
/// so do its dependents (background propagation) unless `orphan`.
///
/// # Errors
/// 404 when it does not exist.
pub fn delete(
    inner: &mut Inner,
    resource: &ServedResource,
    ns: &str,
    name: &str,
    orphan: bool,
) -> Result<Value, ApiError> {
    let result = delete_one(inner, resource, ns, name, orphan)?;
    settle(inner);
    Ok(result)
}

fn delete_one(
    inner: &mut Inner,
    resource: &ServedResource,
    ns: &str,
    name: &str,
    orphan: bool,
) -> Result<Value, ApiError> {
    let key = key(resource);
    let mut object = inner
        .get(&key, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, name))?;
    let result = if finalizers(&object) || resource.plural == "namespaces" {
        if object["metadata"].get("deletionTimestamp").is_none() {
            object["metadata"]["deletionTimestamp"] = json!(time::now());
            object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if resource.plural == "namespaces" {
                object["status"]["phase"] = json!("Terminating");
            }
            inner.put(&key, ns, name, object)
        } else {
            object
        }
    } else {
        let removed = inner.remove(&key, ns, name).unwrap_or(object);
        if orphan {
            orphan_dependents(inner, &removed);
        }
        if resource.plural == "customresourcedefinitions" {
            unregister_crd(inner, &removed);
        }
        removed
    };
    Ok(result)
}

fn orphan_dependents(inner: &mut Inner, owner: &Value) {
    let uid = owner["metadata"]["uid"].clone();
    for (key, mut object) in inner.all_objects() {
        let Some(refs) = object["metadata"]["ownerReferences"].as_array().cloned() else {
            continue;
        };
        if refs.iter().any(|r| r["uid"] == uid) {
            let kept: Vec<Value> = refs.into_iter().filter(|r| r["uid"] != uid).collect();
            object["metadata"]["ownerReferences"] = json!(kept);
            let (ns, name) = (
                object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                name_of(&object).to_string(),
            );
            inner.put(&key, &ns, &name, object);
        }
    }
}

/// Run the control loops the real control plane runs after a change, until nothing moves:
/// garbage collection of objects whose owners are all gone, and namespace termination.
pub fn settle(inner: &mut Inner) {
    for _ in 0..64 {
        let objects = inner.all_objects();
        let uids: HashSet<String> = objects
            .iter()
            .filter_map(|(_, o)| o["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        let terminating: HashSet<String> = objects
            .iter()
            .filter(|(k, o)| {
                k.1 == "namespaces" && o["metadata"].get("deletionTimestamp").is_some()
            })
            .map(|(_, o)| name_of(o).to_string())
            .collect();
        let mut changed = false;
        for (key, object) in &objects {
            let ns = object["metadata"]["namespace"].as_str().unwrap_or("");
            let orphaned = object["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| {
                    !refs.is_empty()
                        && refs
                            .iter()
                            .all(|r| r["uid"].as_str().is_none_or(|u| !uids.contains(u)))
                });
            let in_dying_namespace = !ns.is_empty() && terminating.contains(ns);
            if (orphaned || in_dying_namespace)
                && object["metadata"].get("deletionTimestamp").is_none()
            {
                let Some(resource) = inner
                    .resources
                    .iter()
                    .find(|r| r.group == key.0 && r.plural == key.1)
                    .cloned()
                else {
                    inner.remove(key, ns, name_of(object));
                    changed = true;
                    continue;
                };
                let _ = delete_one(inner, &resource, ns, name_of(object), false);
                changed = true;
            }
        }
        // A terminating namespace goes once it is empty.
        for ns in &terminating {
            let empty = !inner
                .all_objects()
                .iter()
                .any(|(_, o)| o["metadata"]["namespace"].as_str() == Some(ns));
            if empty {
                inner.remove(&("".into(), "namespaces".into()), "", ns);
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

fn built_in_defaults(resource: &ServedResource, object: &mut Value) {
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("", "secrets") if object.get("type").is_none() => object["type"] = json!("Opaque"),
        ("", "namespaces") if object["metadata"].get("deletionTimestamp").is_none() => {
            object["status"] = json!({"phase": "Active"});
        }
        ("apps", "deployments") => {
            // As if the pods started at once: the rollout is complete.
            let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
            object["status"] = json!({
                "observedGeneration": object["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            });
        }
        _ => {}
    }
}

/// Serve the versions a CRD declares and mark it Established.
fn register_crd(inner: &mut Inner, crd: &Value) {
    let Ok(parsed) = serde_json::from_value::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(crd.clone()) else {
        return;
    };
    let spec = &parsed.spec;
    inner
        .resources
        .retain(|r| !(r.group == spec.group && r.plural == spec.names.plural));
    for version in spec.versions.iter().filter(|v| v.served) {
        inner.resources.push(ServedResource {
            group: spec.group.clone(),
            version: version.name.clone(),
            kind: spec.names.kind.clone(),
            plural: spec.names.plural.clone(),
            singular: spec
                .names
                .singular
                .clone()
                .unwrap_or_else(|| spec.names.kind.to_lowercase()),
            short_names: spec.names.short_names.clone().unwrap_or_default(),
            categories: spec.names.categories.clone().unwrap_or_default(),
            namespaced: spec.scope == "Namespaced",
            verbs: [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
            .iter()
            .map(|s| (*s).to_string())
            .collect(),
            status_subresource: version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            schema: version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.clone()),
            printer_columns: version
                .additional_printer_columns
                .clone()
                .unwrap_or_default(),
        });
    }
    let mut stored = crd.clone();
    let now = time::now();
    stored["status"] = json!({
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": spec.versions.iter().filter(|v| v.storage).map(|v| v.name.clone()).collect::<Vec<_>>(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    });
    if stored["status"] != crd["status"] {
        let name = name_of(&stored).to_string();
        inner.put(
            &(
                "apiextensions.k8s.io".into(),
                "customresourcedefinitions".into(),
            ),
            "",
            &name,
            stored,
        );
    }
}

fn unregister_crd(inner: &mut Inner, crd: &Value) {
    let group = crd["spec"]["group"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let plural = crd["spec"]["names"]["plural"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = (group.clone(), plural.clone());
    for object in inner.list(&key, None) {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        inner.remove(&key, &ns, name_of(&object));
    }
    inner
        .resources
        .retain(|r| !(r.group == group && r.plural == plural));
}
