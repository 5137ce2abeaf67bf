//! `list`: a collection with label and field selectors, `limit`/`continue` paging, as JSON or
//! as a Table.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Call, json_response};
use crate::kube::errors::ApiError;
use crate::kube::objects::{self, key, present};
use crate::kube::select::Selector;
use crate::kube::table;

pub(super) fn list(call: &Call<'_>) -> Result<Response, ApiError> {
    let (served, query) = (&call.served, &call.query);
    let labels = Selector::labels(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = Selector::fields(query.get("fieldSelector").map(String::as_str).unwrap_or(""))?;
    let (items, rv) = {
        let inner = call.shared.store.lock();
        (inner.list(&key(served), call.ns.as_deref()), inner.rv)
    };
    let mut items: Vec<Value> = items
        .into_iter()
        .filter(|o| labels.matches_labels(o) && fields.matches_fields(o))
        .map(|o| present(served, o))
        .collect();
    // limit/continue: the continue token is the offset into the (stable, name-ordered) list.
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let total = items.len();
    items = items.into_iter().skip(offset).take(limit).collect();
    let next = offset.saturating_add(items.len());
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if next < total {
        metadata["continue"] = json!(next.to_string());
        metadata["remainingItemCount"] = json!(total - next);
    }
    if call.table {
        let mut rendered = table::render(served, &items, &rv.to_string());
        if rendered.is_object() {
            rendered["metadata"] = metadata;
        }
        return Ok(json_response(StatusCode::OK, &rendered));
    }
    let api_version = objects::api_version(served);
    Ok(json_response(
        StatusCode::OK,
        &json!({"apiVersion": api_version, "kind": format!("{}List", served.kind), "metadata": metadata, "items": items}),
    ))
}
