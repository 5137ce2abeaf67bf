//! Reconciler of `DatabaseAccessGrant`. For now it only observes; the Cosmos DB issue fills in
//! identity resolution, role assignments, verification and cleanup.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::{Context, requeue_after_error};
use crate::api::DatabaseAccessGrant;
use crate::error::{Error, Result};

const CONTROLLER: &str = "grant";

/// Reconcile one grant.
pub async fn reconcile(grant: Arc<DatabaseAccessGrant>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let namespace = grant
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    tracing::info!(
        grant = %grant.name_any(),
        %namespace,
        target = %grant.spec.target,
        role = %grant.spec.role,
        "observed grant"
    );
    ctx.metrics.reconcile_finished(CONTROLLER, true);
    Ok(Action::requeue(ctx.resync_interval))
}

/// Decide when to retry a failed reconcile.
pub fn error_policy(_grant: Arc<DatabaseAccessGrant>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_finished(CONTROLLER, false);
    requeue_after_error(CONTROLLER, error, &ctx)
}
