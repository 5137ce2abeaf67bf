//! HTTP dispatch: authentication, discovery, OIDC, and the verbs on every served resource.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::errors::ApiError;
use super::faults::Faults;
use super::objects;
use super::paths::{self, Route, Target};
use super::resources::ServedResource;
use super::store::Store;
use super::tokens::{Issuer, User};
use super::{discovery, openapi, rbac};

mod create;
mod delete;
mod get;
mod list;
mod patch;
mod update;
mod watch;

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
    /// Authorization decisions for ServiceAccounts.
    pub audit: super::audit::Audit,
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
    // Not a Kubernetes API: the request counters, for a benchmark driving the simulator as a
    // process (admin only, like everything that is not discovery).
    if path == super::COUNTERS_PATH && *method == Method::GET {
        if user != User::Admin {
            return Err(ApiError::forbidden("only the admin reads the counters"));
        }
        return Ok(json_response(
            StatusCode::OK,
            &shared.faults.counters_json(),
        ));
    }
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
    if let Some(sub) = &target.subresource {
        shared.faults.count_subresource(verb, &target.plural, sub);
    }
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
    let allowed = rbac::allowed(&shared.store.lock(), user, &attributes);
    if let User::ServiceAccount { namespace, name } = user {
        shared.audit.record(super::audit::Authorization {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            attributes: attributes.clone(),
            allowed,
        });
    }
    if !allowed {
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
    let call = Call {
        shared,
        served,
        target,
        ns,
        query,
        headers,
        body,
        options,
        table,
    };
    // One handler per verb, each in its own module.
    match verb {
        "get" => get::get(&call),
        "list" => list::list(&call),
        "watch" => watch::watch(call),
        "create" => create::create(&call),
        "update" => update::update(&call),
        "patch" => patch::patch(&call),
        "delete" => delete::delete(&call),
        "deletecollection" => delete::delete_collection(&call),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// A request on a served resource that passed authentication, faults, RBAC and the
/// subresource check: what each verb's handler works from.
struct Call<'a> {
    shared: &'a Shared,
    served: ServedResource,
    target: &'a Target,
    /// The namespace, for namespaced resources only.
    ns: Option<String>,
    query: HashMap<String, String>,
    headers: &'a HeaderMap,
    body: Bytes,
    options: objects::WriteOptions,
    /// The client asked for a Table (`kubectl get`).
    table: bool,
}

impl Call<'_> {
    /// The object's name (empty on collections).
    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or_default()
    }

    /// The namespace, empty for cluster-scoped resources (the store's key).
    fn namespace(&self) -> &str {
        self.ns.as_deref().unwrap_or("")
    }

    fn subresource(&self) -> Option<&str> {
        self.target.subresource.as_deref()
    }
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
