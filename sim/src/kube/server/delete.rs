//! `delete` (one object, with preconditions and propagation) and `deletecollection`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Call, is_protobuf, json_response, parse_json};
use crate::kube::errors::ApiError;
use crate::kube::objects::{self, key, present};
use crate::kube::select::Selector;

pub(super) fn delete(call: &Call<'_>) -> Result<Response, ApiError> {
    let (served, name, ns) = (&call.served, call.name(), call.namespace());
    let options: Value = if call.body.is_empty() {
        json!({})
    } else if is_protobuf(call.headers) {
        crate::kube::protobuf::delete_options(&call.body).ok_or_else(|| {
            ApiError::bad_request("the protobuf DeleteOptions could not be decoded")
        })?
    } else {
        parse_json(&call.body)?
    };
    let propagation = call
        .query
        .get("propagationPolicy")
        .cloned()
        .or_else(|| options["propagationPolicy"].as_str().map(str::to_string));
    let orphan =
        propagation.as_deref() == Some("Orphan") || options["orphanDependents"] == json!(true);
    let mut inner = call.shared.store.lock();
    if let Some(uid) = options["preconditions"]["uid"].as_str()
        && inner
            .get(&key(served), ns, name)
            .is_some_and(|o| o["metadata"]["uid"].as_str() != Some(uid))
    {
        return Err(ApiError::conflict(&served.group, &served.plural, name));
    }
    let deleted = objects::delete(&mut inner, served, ns, name, orphan)?;
    Ok(json_response(StatusCode::OK, &present(served, deleted)))
}

pub(super) fn delete_collection(call: &Call<'_>) -> Result<Response, ApiError> {
    let served = &call.served;
    let labels = Selector::labels(
        call.query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or(""),
    )?;
    let mut inner = call.shared.store.lock();
    let items: Vec<Value> = inner
        .list(&key(served), call.ns.as_deref())
        .into_iter()
        .filter(|o| labels.matches_labels(o))
        .collect();
    for item in &items {
        let item_ns = item["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let item_name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
        let _ = objects::delete(&mut inner, served, &item_ns, &item_name, false);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
    ))
}
