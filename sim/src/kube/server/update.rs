//! `update`: replace an object (or its `status`).

use axum::http::StatusCode;
use axum::response::Response;

use super::{Call, json_response, parse_body, with_warnings};
use crate::kube::errors::ApiError;
use crate::kube::objects;

pub(super) fn update(call: &Call<'_>) -> Result<Response, ApiError> {
    let object = parse_body(call.headers, &call.body, &call.served)?;
    let (updated, warnings) = objects::update(
        &mut call.shared.store.lock(),
        &call.served,
        call.namespace(),
        call.name(),
        object,
        call.subresource(),
        call.options,
    )?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &updated),
        &warnings,
    ))
}
