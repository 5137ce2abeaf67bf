//! Reconciler of `DatabaseTarget`. For now it only observes; the Cosmos DB issue adds the
//! account check, custom role definitions and the grant count.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::{Context, requeue_after_error};
use crate::api::DatabaseTarget;
use crate::error::{Error, Result};

const CONTROLLER: &str = "target";

/// Reconcile one target.
pub async fn reconcile(target: Arc<DatabaseTarget>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    tracing::info!(
        target = %target.name_any(),
        backend = target.spec.backend_kind().unwrap_or("none"),
        "observed target"
    );
    ctx.metrics.reconcile_finished(CONTROLLER, true);
    Ok(Action::requeue(ctx.resync_interval))
}

/// Decide when to retry a failed reconcile.
pub fn error_policy(_target: Arc<DatabaseTarget>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_finished(CONTROLLER, false);
    requeue_after_error(CONTROLLER, error, &ctx)
}
