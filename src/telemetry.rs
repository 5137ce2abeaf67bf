//! Logs and metrics.
//!
//! Metric labels come from closed sets (controller, result, reason), never from object names or
//! error text, so a large fleet cannot blow up the series count.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Install the global tracing subscriber. Fails on a malformed filter.
pub fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter '{filter}': {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

/// Labels of one reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `grant` or `target`.
    pub controller: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of one failure: which controller, which reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `grant` or `target`.
    pub controller: &'static str,
    /// The condition reason the error maps to.
    pub reason: &'static str,
}

/// The operator's metrics. Cheap to clone; every clone feeds the same registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    reconciles: Family<ReconcileLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    drift_restored: Counter,
}

/// A label naming the controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// `grant` or `target`.
    pub controller: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every dbgrant metric registered under the `dbgrant` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dbgrant");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, by controller and result",
            reconciles.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconciles, by controller and condition reason",
            failures.clone(),
        );
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile, by controller",
            duration.clone(),
        );
        let drift_restored = Counter::default();
        registry.register(
            "drift_restored",
            "Role assignments found missing in Azure and restored",
            drift_restored.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            reconciles,
            failures,
            duration,
            drift_restored,
        }
    }

    /// Start timing a reconcile; the returned guard records the duration when dropped.
    #[must_use = "the reconcile is timed until the guard is dropped"]
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self
                .duration
                .get_or_create(&ControllerLabel { controller })
                .clone(),
            start: Instant::now(),
        }
    }

    /// Count one finished reconcile.
    pub fn reconcile_finished(&self, controller: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
    }

    /// Count one failure under its condition reason.
    pub fn reconcile_failed(&self, controller: &'static str, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { controller, reason })
            .inc();
    }

    /// Count one role assignment restored after drift.
    pub fn drift_restored(&self) {
        self.drift_restored.inc();
    }

    /// Render every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing into a String cannot fail; an error here would be a bug in the encoder.
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_failures_show_up_in_the_exposition() {
        let metrics = Metrics::new();
        {
            let _timer = metrics.reconcile_started("grant");
            metrics.reconcile_finished("grant", false);
            metrics.reconcile_failed("grant", "PolicyDenied");
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"dbgrant_reconciles_total{controller="grant",result="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"dbgrant_reconcile_failures_total{controller="grant",reason="PolicyDenied"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"dbgrant_reconcile_duration_seconds_count{controller="grant"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
