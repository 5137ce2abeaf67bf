//! HTTP dispatch: authentication, discovery, OIDC, and the verbs on every served resource.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::errors::ApiError;
use super::faults::Faults;
use super::objects::{self, key, present};
use super::paths::{self, Route, Target};
use super::resources::ServedResource;
use super::select::Selector;
use super::store::Store;
use super::tokens::{Issuer, User};
use super::{discovery, openapi, patch, rbac, table, time, watch};

/// Everything the handlers share.
pub struct Shared {
    /// Storage.
    pub store: Arc<Store>,
    /// The ServiceAccount token issuer.
    pub issuer: Issuer,
    /// The admin bearer token.
    pub admin_token: String,
    /// Faults and counters.
    pub faults: Faults,
    /// `127.0.0.1:port`.
    pub address: String,
}

/// The simulator's router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = match dispatch(&shared, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    // One line per request, like the API server's httplog, for debugging real clients.
    tracing::debug!(%method, %uri, status = response.status().as_u16(), "request");
    response
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (code, axum::Json(value)).into_response()
}

async fn dispatch(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = uri.path();
    match path {
        "/.well-known/openid-configuration" => {
            return Ok(json_response(StatusCode::OK, &shared.issuer.discovery()));
        }
        "/openid/v1/jwks" => return Ok(json_response(StatusCode::OK, &shared.issuer.jwks())),
        "/healthz" | "/livez" | "/readyz" => return Ok("ok".into_response()),
        "/version" => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-dbgrant-sim", "gitCommit": "0000000", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
            ));
        }
        _ => {}
    }
    let user = authenticate(shared, headers)?;
    if let Some(rest) = path.strip_prefix("/openapi/") {
        let resources = shared.store.lock().resources.clone();
        let accept = headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if rest.trim_end_matches('/') == "v2"
            && accept.contains("application/com.github.proto-openapi.spec.v2")
        {
            let mut response = openapi::v2_protobuf().into_response();
            response.headers_mut().insert(
                "content-type",
                HeaderValue::from_static(openapi::V2_PROTOBUF),
            );
            return Ok(response);
        }
        let document = match rest.trim_end_matches('/') {
            "v2" => openapi::v2_json(),
            "v3" => openapi::v3_index(&resources),
            other => {
                let parts: Vec<&str> = other.split('/').collect();
                match parts.as_slice() {
                    ["v3", "api", version] => {
                        openapi::v3_group_version(&resources, "", version).unwrap_or(Value::Null)
                    }
                    ["v3", "apis", group, version] => {
                        openapi::v3_group_version(&resources, group, version).unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                }
            }
        };
        return if document.is_null() {
            Err(ApiError::no_route())
        } else {
            Ok(json_response(StatusCode::OK, &document))
        };
    }
    let route = paths::route(path).ok_or_else(ApiError::no_route)?;
    let resources = shared.store.lock().resources.clone();
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if matches!(route, Route::CoreVersions | Route::Groups) && discovery::wants_aggregated(accept) {
        let document = discovery::aggregated(&resources, matches!(route, Route::CoreVersions));
        let mut response = json_response(StatusCode::OK, &document);
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static(discovery::AGGREGATED),
        );
        response
            .headers_mut()
            .insert("vary", HeaderValue::from_static("Accept"));
        return Ok(response);
    }
    let document = match route {
        Route::CoreVersions => discovery::core_versions(&shared.address),
        Route::Groups => discovery::group_list(&resources),
        Route::Group(group) => {
            discovery::group(&resources, &group).ok_or_else(ApiError::no_route)?
        }
        Route::GroupVersion(group, version) => {
            discovery::resource_list(&resources, &group, &version).ok_or_else(ApiError::no_route)?
        }
        Route::Resource(target) => {
            return resource(shared, &user, method, &target, uri.query(), headers, body).await;
        }
    };
    Ok(json_response(StatusCode::OK, &document))
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<User, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    if token == shared.admin_token {
        return Ok(User::Admin);
    }
    shared
        .issuer
        .authenticate(token)
        .ok_or_else(ApiError::unauthorized)
}

fn verb_of(method: &Method, target: &Target, query: &HashMap<String, String>) -> &'static str {
    match *method {
        Method::GET if target.name.is_some() => "get",
        Method::GET if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) => {
            "watch"
        }
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if target.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

async fn resource(
    shared: &Shared,
    user: &User,
    method: &Method,
    target: &Target,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = paths::query(raw_query);
    let verb = verb_of(method, target, &query);
    if let Some(fault) = shared.faults.hit(verb, &target.plural) {
        if let Some(latency) = fault.latency {
            tokio::time::sleep(latency).await;
        }
        if let Some(code) = fault.status {
            return Err(ApiError::injected(code));
        }
    }
    let served = shared
        .store
        .lock()
        .resource(&target.group, &target.version, &target.plural)
        .ok_or_else(ApiError::no_route)?;
    if !served.namespaced && target.namespace.is_some() {
        return Err(ApiError::no_route());
    }
    let ns = if served.namespaced {
        target.namespace.clone()
    } else {
        None
    };
    let attributes = rbac::Attributes {
        verb: verb.to_string(),
        group: served.group.clone(),
        resource: served.plural.clone(),
        subresource: target.subresource.clone(),
        namespace: ns.clone(),
        name: target.name.clone(),
        path: None,
    };
    if !rbac::allowed(&shared.store.lock(), user, &attributes) {
        let mut error = ApiError::forbidden(rbac::denied_message(user, &attributes));
        error.details = Some(
            json!({"name": target.name.clone().unwrap_or_default(), "group": served.group, "kind": served.plural}),
        );
        return Err(error);
    }
    if served.plural == "selfsubjectaccessreviews" && verb == "create" {
        return access_review(shared, user, headers, &body);
    }
    let options = objects::WriteOptions {
        strict: query.get("fieldValidation").map(String::as_str) == Some("Strict"),
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
    };
    let table = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    let sub = target.subresource.as_deref();
    if let Some(sub) = sub
        && !(sub == "status" && served.status_subresource
            || sub == "token" && served.plural == "serviceaccounts")
    {
        return Err(ApiError::no_route());
    }
    match verb {
        "get" => {
            let name = target.name.as_deref().unwrap_or_default();
            let object = shared
                .store
                .lock()
                .get(&key(&served), ns.as_deref().unwrap_or(""), name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(&served.group, &served.plural, name))?;
            let object = present(&served, object);
            if table {
                let rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                return Ok(json_response(
                    StatusCode::OK,
                    &table::render(&served, &[object], &rv),
                ));
            }
            Ok(json_response(StatusCode::OK, &object))
        }
        "list" => list(shared, &served, ns.as_deref(), &query, table),
        "watch" => {
            let send_initial_events = query.get("sendInitialEvents").is_some_and(|b| b == "true");
            // The API server's validation of streaming lists.
            if send_initial_events
                && query.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
            {
                return Err(ApiError::invalid_params(
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if send_initial_events
                && query.get("allowWatchBookmarks").map(String::as_str) != Some("true")
            {
                return Err(ApiError::invalid_params(
                    "allowWatchBookmarks: Forbidden: sendInitialEvents requires allowWatchBookmarks=true",
                ));
            }
            let request = watch::WatchRequest {
                send_initial_events,
                resource: served,
                namespace: ns,
                labels: Selector::labels(
                    query.get("labelSelector").map(String::as_str).unwrap_or(""),
                )?,
                fields: Selector::fields(
                    query.get("fieldSelector").map(String::as_str).unwrap_or(""),
                )?,
                resource_version: query.get("resourceVersion").and_then(|rv| rv.parse().ok()),
                bookmarks: query
                    .get("allowWatchBookmarks")
                    .is_some_and(|b| b == "true"),
                timeout: Duration::from_secs(
                    query
                        .get("timeoutSeconds")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(1800),
                ),
            };
            let body = watch::watch(&shared.store, &shared.faults, request);
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            Ok(response)
        }
        "create" if sub == Some("token") => {
            let name = target.name.as_deref().unwrap_or_default();
            let protobuf = is_protobuf(headers);
            let request: Value = if protobuf {
                super::protobuf::token_request(&body).ok_or_else(|| {
                    ApiError::bad_request("the protobuf TokenRequest could not be decoded")
                })?
            } else {
                parse_json(&body)?
            };
            let sa = shared
                .store
                .lock()
                .get(&key(&served), ns.as_deref().unwrap_or(""), name)
                .cloned()
                .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
            let response = shared.issuer.token_request(&sa, &request)?;
            Ok(json_response(StatusCode::CREATED, &response))
        }
        "create" => {
            let object = parse_body(headers, &body, &served)?;
            let (created, warnings) = objects::create(
                &mut shared.store.lock(),
                &served,
                ns.as_deref(),
                object,
                options,
            )?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &created),
                &warnings,
            ))
        }
        "update" => {
            let name = target.name.as_deref().unwrap_or_default();
            let object = parse_body(headers, &body, &served)?;
            let (updated, warnings) = objects::update(
                &mut shared.store.lock(),
                &served,
                ns.as_deref().unwrap_or(""),
                name,
                object,
                sub,
                options,
            )?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &updated),
                &warnings,
            ))
        }
        "patch" => {
            let name = target
                .name
                .as_deref()
                .ok_or_else(ApiError::method_not_allowed)?;
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            patch_object(
                shared,
                &served,
                ns.as_deref().unwrap_or(""),
                name,
                sub,
                &content_type,
                &query,
                body,
                options,
            )
        }
        "delete" => {
            let name = target.name.as_deref().unwrap_or_default();
            let protobuf = is_protobuf(headers);
            let options: Value = if body.is_empty() {
                json!({})
            } else if protobuf {
                super::protobuf::delete_options(&body).ok_or_else(|| {
                    ApiError::bad_request("the protobuf DeleteOptions could not be decoded")
                })?
            } else {
                parse_json(&body)?
            };
            let propagation = query
                .get("propagationPolicy")
                .cloned()
                .or_else(|| options["propagationPolicy"].as_str().map(str::to_string));
            let orphan = propagation.as_deref() == Some("Orphan")
                || options["orphanDependents"] == json!(true);
            let mut inner = shared.store.lock();
            if let Some(uid) = options["preconditions"]["uid"].as_str()
                && inner
                    .get(&key(&served), ns.as_deref().unwrap_or(""), name)
                    .is_some_and(|o| o["metadata"]["uid"].as_str() != Some(uid))
            {
                return Err(ApiError::conflict(&served.group, &served.plural, name));
            }
            let deleted = objects::delete(
                &mut inner,
                &served,
                ns.as_deref().unwrap_or(""),
                name,
                orphan,
            )?;
            Ok(json_response(StatusCode::OK, &present(&served, deleted)))
        }
        "deletecollection" => {
            let labels =
                Selector::labels(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
            let mut inner = shared.store.lock();
            let items: Vec<Value> = inner
                .list(&key(&served), ns.as_deref())
                .into_iter()
                .filter(|o| labels.matches_labels(o))
                .collect();
            for item in &items {
                let item_ns = item["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let item_name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
                let _ = objects::delete(&mut inner, &served, &item_ns, &item_name, false);
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn list(
    shared: &Shared,
    served: &ServedResource,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    table: bool,
) -> Result<Response, ApiError> {
    let labels = Selector::labels(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = Selector::fields(query.get("fieldSelector").map(String::as_str).unwrap_or(""))?;
    let (items, rv) = {
        let inner = shared.store.lock();
        (inner.list(&key(served), ns), inner.rv)
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
    if table {
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

#[allow(clippy::too_many_arguments)]
fn patch_object(
    shared: &Shared,
    served: &ServedResource,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    content_type: &str,
    query: &HashMap<String, String>,
    body: Bytes,
    options: objects::WriteOptions,
) -> Result<Response, ApiError> {
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
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        let applied: Value = serde_json::from_str(text)
            .or_else(|_| serde_saphyr::from_str(text))
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
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
    let patch_body: Value = parse_json(&body)?;
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

/// `kubectl auth can-i`: evaluate a SelfSubjectAccessReview for the requesting user.
fn access_review(
    shared: &Shared,
    user: &User,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let protobuf = is_protobuf(headers);
    let mut review = if protobuf {
        super::protobuf::self_subject_access_review(body)
            .ok_or_else(|| ApiError::bad_request("the protobuf review could not be decoded"))?
    } else {
        parse_json(body)?
    };
    let spec = &review["spec"];
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let attributes = if spec["nonResourceAttributes"].is_object() {
        let a = &spec["nonResourceAttributes"];
        rbac::Attributes {
            verb: text(&a["verb"]).unwrap_or_default(),
            path: text(&a["path"]),
            ..rbac::Attributes::default()
        }
    } else {
        let a = &spec["resourceAttributes"];
        rbac::Attributes {
            verb: text(&a["verb"]).unwrap_or_default(),
            group: text(&a["group"]).unwrap_or_default(),
            resource: text(&a["resource"]).unwrap_or_default(),
            subresource: text(&a["subresource"]),
            namespace: text(&a["namespace"]),
            name: text(&a["name"]),
            path: None,
        }
    };
    let allowed = rbac::allowed(&shared.store.lock(), user, &attributes);
    review["status"] =
        json!({"allowed": allowed, "reason": if allowed { "allowed by RBAC" } else { "" }});
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    Ok(json_response(StatusCode::CREATED, &review))
}

/// Whether the body is Kubernetes protobuf (the `k8s\0` envelope), as client-go sends
/// built-in types.
fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/vnd.kubernetes.protobuf"))
}

/// A create or update body, JSON or (for the built-ins clients send that way) protobuf.
fn parse_body(
    headers: &HeaderMap,
    body: &Bytes,
    served: &ServedResource,
) -> Result<Value, ApiError> {
    let protobuf = is_protobuf(headers);
    if !protobuf {
        return parse_json(body);
    }
    super::protobuf::object(body, &served.group, &served.kind).ok_or_else(|| {
        ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
        )
    })
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        if let Ok(value) =
            HeaderValue::from_str(&format!("299 - \"{}\"", warning.replace('"', "'")))
        {
            response.headers_mut().append("warning", value);
        }
    }
    response
}
