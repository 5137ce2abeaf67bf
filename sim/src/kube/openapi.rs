//! OpenAPI v3 documents, what kubectl 1.32 reads: the index at `/openapi/v3`, and per group
//! version the paths (whose PATCH operations advertise `fieldValidation`, so kubectl validates
//! on the server instead of downloading schemas) and the schemas `kubectl explain` shows.
//! `/openapi/v2` is a minimal document (no definitions), in JSON or in the protobuf form older
//! clients ask for: kubectl 1.32 and Helm 4 validate through v3, and clients that still read
//! v2 then validate nothing themselves and leave it to the server (`fieldValidation`).

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::resources::ServedResource;

/// `GET /openapi/v3`: the index of group-version documents.
pub fn v3_index(resources: &[ServedResource]) -> Value {
    let mut paths = Map::new();
    let mut seen = Vec::new();
    for r in resources {
        let key = (r.group.clone(), r.version.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let prefix = if r.group.is_empty() {
            format!("api/{}", r.version)
        } else {
            format!("apis/{}/{}", r.group, r.version)
        };
        let document = v3_group_version(resources, &r.group, &r.version).unwrap_or(Value::Null);
        // kubectl caches each document by this hash, so it must change when the document does.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        document.to_string().hash(&mut hasher);
        paths.insert(prefix.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{prefix}?hash={:016X}", hasher.finish())}));
    }
    json!({"paths": paths})
}

fn schema_name(r: &ServedResource) -> String {
    let group = if r.group.is_empty() {
        "core".to_string()
    } else {
        r.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{}.{}", r.version, r.kind)
}

fn gvk(r: &ServedResource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn operation(r: &ServedResource, action: &str, verb_params: &[&str]) -> Value {
    let mut parameters: Vec<Value> = verb_params.iter().map(|name| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})).collect();
    parameters.push(
        json!({"name": "pretty", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
    );
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", schema_name(r))}}}}},
    })
}

/// `GET /openapi/v3/{api|apis/group}/{version}`: one group version's document; `None` when
/// nothing is served there. `group` is `""` for the core group.
pub fn v3_group_version(resources: &[ServedResource], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ServedResource> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    for r in served {
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(
            collection.clone(),
            json!({"get": operation(r, "list", &[]), "post": operation(r, "post", &write)}),
        );
        let mut item = json!({
            "get": operation(r, "get", &[]),
            "put": operation(r, "put", &write),
            "patch": operation(r, "patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
            "delete": operation(r, "delete", &["dryRun"]),
        });
        item["patch"]["requestBody"] = json!({"content": {"application/apply-patch+yaml": {}, "application/json-patch+json": {}, "application/merge-patch+json": {}, "application/strategic-merge-patch+json": {}}});
        paths.insert(format!("{collection}/{{name}}"), item);
        if r.status_subresource {
            paths.insert(format!("{collection}/{{name}}/status"), json!({"get": operation(r, "get", &[]), "put": operation(r, "put", &write), "patch": operation(r, "patch", &["dryRun", "fieldManager", "fieldValidation", "force"])}));
        }
        let mut schema = match &r.schema {
            Some(props) => {
                serde_json::to_value(props).unwrap_or_else(|_| json!({"type": "object"}))
            }
            None => {
                json!({"type": "object", "description": format!("{} is a built-in resource.", r.kind), "x-kubernetes-preserve-unknown-fields": true})
            }
        };
        if let Some(properties) = schema["properties"].as_object_mut() {
            properties
                .entry("metadata")
                .or_insert_with(|| json!({"type": "object"}));
            properties.insert("metadata".into(), json!({"type": "object", "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
            properties.entry("apiVersion").or_insert_with(|| json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            properties.entry("kind").or_insert_with(|| json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        }
        schema["x-kubernetes-group-version-kind"] = json!([gvk(r)]);
        schemas.insert(schema_name(r), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The media type of the protobuf v2 document (gnostic `openapi_v2.Document`).
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const V2_TITLE: &str = "Kubernetes";
const V2_VERSION: &str = "v1.33.0";

/// `GET /openapi/v2` as JSON.
pub fn v2_json() -> Value {
    json!({"swagger": "2.0", "info": {"title": V2_TITLE, "version": V2_VERSION}, "paths": {}, "definitions": {}})
}

/// `GET /openapi/v2` as protobuf: `swagger` (field 1) and `info` (field 2: title, version).
pub fn v2_protobuf() -> Vec<u8> {
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        // Every field here is far shorter than 128 bytes: a one-byte length.
        let mut out = vec![
            (number << 3) | 2,
            u8::try_from(bytes.len()).unwrap_or(u8::MAX),
        ];
        out.extend_from_slice(bytes);
        out
    }
    let mut info = field(1, V2_TITLE.as_bytes());
    info.extend(field(2, V2_VERSION.as_bytes()));
    let mut document = field(1, b"2.0");
    document.extend(field(2, &info));
    document
}
