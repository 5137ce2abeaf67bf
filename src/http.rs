//! The operator's HTTP endpoints: `/livez`, `/readyz` and `/metrics`.
//!
//! Liveness never depends on reconciles happening (an idle operator is healthy); readiness
//! means every controller's cache has synced. With leader election, `/readyz` says `leader` or
//! `standby`: a standby is ready too (200), since it serves metrics and is one Lease renewal
//! away from leading; only a leader whose caches have not synced yet is not ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::leader::{Leadership, Role};
use crate::telemetry::Metrics;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Every metric the operator exports.
    pub metrics: Metrics,
    /// Set once the controllers' caches have synced.
    pub ready: Arc<AtomicBool>,
    /// This replica's role in leader election.
    pub leadership: Leadership,
}

/// The router, as a value so tests can drive it without a socket.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let synced = state.ready.load(Ordering::Acquire);
    match (state.leadership.role(), synced) {
        (Role::Alone, true) => (StatusCode::OK, "ok"),
        (Role::Leader, true) => (StatusCode::OK, "leader"),
        (Role::Standby, _) => (StatusCode::OK, "standby"),
        (Role::Alone, false) => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet"),
        (Role::Leader, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "leader; caches not synced yet",
        ),
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn status_of(app: Router, path: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("router answers");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readiness_follows_the_cache_sync_flag_and_liveness_does_not() {
        let ready = Arc::new(AtomicBool::new(false));
        let metrics = Metrics::new();
        metrics.reconcile_finished("grant", true);
        let app = router(HttpState {
            metrics,
            ready: ready.clone(),
            leadership: Leadership::alone(),
        });
        assert_eq!(status_of(app.clone(), "/livez").await.0, StatusCode::OK);
        assert_eq!(
            status_of(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.store(true, Ordering::Release);
        assert_eq!(status_of(app.clone(), "/readyz").await.0, StatusCode::OK);
        let (status, body) = status_of(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains(r#"dbgrant_reconciles_total{controller="grant",result="ok"} 1"#),
            "{body}"
        );
    }

    #[tokio::test]
    async fn readiness_names_the_leader_and_keeps_a_standby_ready() {
        let ready = Arc::new(AtomicBool::new(false));
        let leadership = Leadership::standby();
        let app = router(HttpState {
            metrics: Metrics::new(),
            ready: ready.clone(),
            leadership: leadership.clone(),
        });
        assert_eq!(
            status_of(app.clone(), "/readyz").await,
            (StatusCode::OK, "standby".to_string())
        );
        leadership.set(Role::Leader);
        assert_eq!(
            status_of(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.store(true, Ordering::Release);
        assert_eq!(
            status_of(app, "/readyz").await,
            (StatusCode::OK, "leader".to_string())
        );
    }
}
