//! The API server's error responses: a `Status` object with the real reason and code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error the simulator answers with.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// Status reason, e.g. `NotFound`.
    pub reason: &'static str,
    /// Human message, worded as the real server words it.
    pub message: String,
    /// `details`, when the real server sends them.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 for a missing object.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        );
        e.details = Some(json!({"name": name, "group": group, "kind": plural}));
        e
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 when the name is taken.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        );
        e.details = Some(json!({"name": name, "group": group, "kind": plural}));
        e
    }

    /// 409 for a stale resourceVersion.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, plural)
            ),
        )
    }

    /// 409 for a server-side apply conflict with another manager.
    pub fn apply_conflict(manager: &str, fields: &[String]) -> Self {
        let list: Vec<String> = fields
            .iter()
            .map(|f| format!("- conflict with \"{manager}\": {f}"))
            .collect();
        Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}:\n{}",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" },
                list.join("\n")
            ),
        )
    }

    /// 400 for a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 without credentials.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 from authorization.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 405 for a verb a resource does not support.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410 for a resourceVersion older than the server keeps.
    pub fn gone(rv: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {rv}"))
    }

    /// 422 from validation, with its causes.
    pub fn invalid(status: Value) -> Self {
        let message = status["message"].as_str().unwrap_or("invalid").to_string();
        Self {
            code: 422,
            reason: "Invalid",
            message,
            details: status.get("details").cloned(),
        }
    }

    /// 422 for query parameters the API server's ListOptions validation refuses.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(
            422,
            "Invalid",
            format!(
                "ListOptions.meta.k8s.io \"\" is invalid: {}",
                message.into()
            ),
        )
    }

    /// 415 for a body in a format the server cannot decode.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 500 for an injected or internal failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// An injected failure with any status code.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            _ => "InternalError",
        };
        Self::new(code, reason, format!("injected failure ({code})"))
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, axum::Json(self.status())).into_response();
        if self.code == 429 {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// `plural.group` as the server names resources in messages (`plural` for the core group).
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}
