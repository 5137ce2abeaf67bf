//! `create`: a new object, or a ServiceAccount's `token` subresource (TokenRequest).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{Call, is_protobuf, json_response, parse_body, parse_json, with_warnings};
use crate::kube::errors::ApiError;
use crate::kube::objects::{self, key};

pub(super) fn create(call: &Call<'_>) -> Result<Response, ApiError> {
    if call.subresource() == Some("token") {
        return token_request(call);
    }
    let served = &call.served;
    let object = parse_body(call.headers, &call.body, served)?;
    let (created, warnings) = objects::create(
        &mut call.shared.store.lock(),
        served,
        call.ns.as_deref(),
        object,
        call.options,
    )?;
    Ok(with_warnings(
        json_response(StatusCode::CREATED, &created),
        &warnings,
    ))
}

/// A token for the ServiceAccount, from the issuer that signs them all.
fn token_request(call: &Call<'_>) -> Result<Response, ApiError> {
    let name = call.name();
    let request: Value = if is_protobuf(call.headers) {
        crate::kube::protobuf::token_request(&call.body).ok_or_else(|| {
            ApiError::bad_request("the protobuf TokenRequest could not be decoded")
        })?
    } else {
        parse_json(&call.body)?
    };
    let sa = call
        .shared
        .store
        .lock()
        .get(&key(&call.served), call.namespace(), name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let response = call.shared.issuer.token_request(&sa, &request)?;
    Ok(json_response(StatusCode::CREATED, &response))
}
