//! `get`: one object, as JSON or as a Table row.

use axum::http::StatusCode;
use axum::response::Response;

use super::{Call, json_response};
use crate::kube::errors::ApiError;
use crate::kube::objects::{key, present};
use crate::kube::table;

pub(super) fn get(call: &Call<'_>) -> Result<Response, ApiError> {
    let served = &call.served;
    let name = call.name();
    let object = call
        .shared
        .store
        .lock()
        .get(&key(served), call.namespace(), name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&served.group, &served.plural, name))?;
    let object = present(served, object);
    if call.table {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        return Ok(json_response(
            StatusCode::OK,
            &table::render(served, &[object], &rv),
        ));
    }
    Ok(json_response(StatusCode::OK, &object))
}
