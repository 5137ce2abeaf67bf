//! `patch`: server-side apply, JSON patch, merge patch and (built-ins only) strategic merge
//! patch, applied to the object as this API shows it.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Call, json_response, parse_json, with_warnings};
use crate::kube::errors::ApiError;
use crate::kube::objects::{self, key, present};
use crate::kube::{patch, time};

pub(super) fn patch(call: &Call<'_>) -> Result<Response, ApiError> {
    let name = call
        .target
        .name
        .as_deref()
        .ok_or_else(ApiError::method_not_allowed)?;
    let content_type = call
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    patch_object(call, name, &content_type)
}

fn patch_object(call: &Call<'_>, name: &str, content_type: &str) -> Result<Response, ApiError> {
    let (shared, served, ns, sub) = (
        call.shared,
        &call.served,
        call.namespace(),
        call.subresource(),
    );
    let (query, body, options) = (&call.query, &call.body, call.options);
    let mut inner = shared.store.lock();
    // Patches apply to the object as this API shows it (Events differ between their two APIs).
    let existing = inner
        .get(&key(served), ns, name)
        .cloned()
        .map(|o| present(served, o));
    if content_type.starts_with("application/apply-patch") {
        let manager = query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("PATCH: fieldManager is required for apply requests")
            })?;
        let force = query.get("force").is_some_and(|f| f == "true");
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        let mut applied: Value = serde_json::from_str(text)
            .or_else(|_| serde_saphyr::from_str(text))
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        // Beside a status subresource the main resource ignores status: an apply there
        // neither writes, owns nor conflicts on it.
        if served.status_subresource
            && sub.is_none()
            && let Some(map) = applied.as_object_mut()
        {
            map.remove("status");
        }
        if let Some(rv) = applied["metadata"]["resourceVersion"].as_str()
            && existing
                .as_ref()
                .is_some_and(|e| e["metadata"]["resourceVersion"].as_str() != Some(rv))
        {
            return Err(ApiError::conflict(&served.group, &served.plural, name));
        }
        let api_version = objects::api_version(served);
        let merged = patch::apply(
            existing.as_ref(),
            &applied,
            manager,
            force,
            sub,
            &api_version,
            &time::now(),
        )?;
        let created = existing.is_none();
        let (result, warnings) = match existing {
            None if sub.is_none() => {
                let mut merged = merged;
                merged["metadata"]["name"] = json!(name);
                objects::create(
                    &mut inner,
                    served,
                    (!ns.is_empty()).then_some(ns),
                    merged,
                    options,
                )?
            }
            None => return Err(ApiError::not_found(&served.group, &served.plural, name)),
            Some(_) => objects::update(&mut inner, served, ns, name, merged, sub, options)?,
        };
        let code = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok(with_warnings(json_response(code, &result), &warnings));
    }
    let mut object =
        existing.ok_or_else(|| ApiError::not_found(&served.group, &served.plural, name))?;
    let patch_body: Value = parse_json(body)?;
    if content_type.starts_with("application/json-patch+json") {
        patch::json_patch(&mut object, &patch_body)?;
    } else if content_type.starts_with("application/merge-patch+json") {
        patch::merge(&mut object, &patch_body);
    } else if content_type.starts_with("application/strategic-merge-patch+json") {
        if served.schema.is_some() {
            return Err(ApiError {
                code: 415,
                reason: "UnsupportedMediaType",
                message: "strategic merge patch is not supported for custom resources".into(),
                details: None,
            });
        }
        patch::strategic(&mut object, &patch_body);
    } else {
        return Err(ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {content_type}"
            ),
            details: None,
        });
    }
    // A patch never carries a stale-version check unless it sets resourceVersion itself.
    if patch_body["metadata"]["resourceVersion"].is_null()
        && let Some(meta) = object["metadata"].as_object_mut()
    {
        meta.remove("resourceVersion");
    }
    let (result, warnings) = objects::update(&mut inner, served, ns, name, object, sub, options)?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &result),
        &warnings,
    ))
}
