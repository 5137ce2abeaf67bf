//! Timestamps in the API server's format (RFC 3339, seconds, UTC).

use k8s_openapi::jiff::Timestamp;

/// Now, as the server writes timestamps.
pub fn now() -> String {
    rfc3339(Timestamp::now().as_second())
}

/// A Unix time in seconds, as the server writes timestamps.
pub fn rfc3339(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
