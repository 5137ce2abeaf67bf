//! Logs and metrics.
//!
//! Metric labels come from closed sets (controller, result, reason), never from error text, so
//! a large fleet cannot blow up the series count. The one exception is the token-expiry gauge,
//! one series per grant with a token Secret (namespace and grant name only: never a token).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::api::DatabaseAccessGrant;
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

/// Labels of one Azure HTTP request: the logical operation and how it ended (closed sets).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AzureRequestLabels {
    /// `account_get`, `role_assignment_put`, `lro_poll`, `token_exchange`, …
    pub operation: &'static str,
    /// `success`, `throttled`, `client_error`, `server_error`, `transport_error` or `timeout`.
    pub result: &'static str,
}

/// Azure requests, process-wide: the Azure client is built before the controllers' registry
/// exists, so every `Metrics` exports this one family.
static AZURE_REQUESTS: std::sync::LazyLock<Family<AzureRequestLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

/// The operator's metrics. Cheap to clone; every clone feeds the same registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    reconciles: Family<ReconcileLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    drift_restored: Counter,
    token_refreshes: Family<TokenRefreshLabels, Counter>,
}

/// Labels of the token-refresh counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenRefreshLabels {
    /// `exchanged` (a new token from Entra ID), `shared` (one another grant's refresh had just
    /// obtained), `failed`.
    pub result: &'static str,
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
        registry.register(
            "azure_requests",
            "HTTP requests to Azure, by operation and result",
            AZURE_REQUESTS.clone(),
        );
        let token_refreshes = Family::<TokenRefreshLabels, Counter>::default();
        registry.register(
            "token_refreshes",
            "Token Secret refreshes, by result",
            token_refreshes.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            reconciles,
            failures,
            duration,
            drift_restored,
            token_refreshes,
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

    /// Count one token Secret refresh by result.
    pub fn token_refresh(&self, result: &'static str) {
        self.token_refreshes
            .get_or_create(&TokenRefreshLabels { result })
            .inc();
    }

    /// Count one HTTP request to Azure.
    pub fn azure_request(&self, operation: &'static str, result: &'static str) {
        AZURE_REQUESTS
            .get_or_create(&AzureRequestLabels { operation, result })
            .inc();
    }

    /// Export the number of grants per Ready state and reason, read from `store` at scrape time
    /// (so the figure can never drift from what the controller sees).
    pub fn register_grant_states(&self, store: Store<DatabaseAccessGrant>) {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register_collector(Box::new(GrantStates { store }));
    }

    /// Export each token Secret's seconds to expiry, from the grants' `status.tokenExpiresAt`
    /// at scrape time (a gauge set per pass would stand still between passes).
    pub fn register_token_expiry(&self, store: Store<DatabaseAccessGrant>) {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register_collector(Box::new(TokenExpiry { store }));
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

/// Labels of the grants-by-state gauge: the Ready status and its reason (closed sets).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrantStateLabels {
    ready: String,
    reason: String,
}

/// Counts grants by Ready state on each scrape.
struct GrantStates {
    store: Store<DatabaseAccessGrant>,
}

impl std::fmt::Debug for GrantStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantStates").finish_non_exhaustive()
    }
}

impl Collector for GrantStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<GrantStateLabels, Gauge>::default();
        for grant in self.store.state() {
            let ready = grant
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            let labels = match ready {
                Some(c) => GrantStateLabels {
                    ready: c.status.clone(),
                    reason: c.reason.clone(),
                },
                None => GrantStateLabels {
                    ready: "Unknown".to_string(),
                    reason: "NotReconciled".to_string(),
                },
            };
            family.get_or_create(&labels).inc();
        }
        let metric = encoder.encode_descriptor(
            "grants",
            "Grants by Ready status and reason",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

/// Labels of the token-expiry gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenExpiryLabels {
    namespace: String,
    grant: String,
}

/// Seconds until each token Secret's token expires, on each scrape.
struct TokenExpiry {
    store: Store<DatabaseAccessGrant>,
}

impl std::fmt::Debug for TokenExpiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExpiry").finish_non_exhaustive()
    }
}

impl Collector for TokenExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family =
            Family::<TokenExpiryLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let now = k8s_openapi::jiff::Timestamp::now();
        for grant in self.store.state() {
            let Some(expires) = grant
                .status
                .as_ref()
                .and_then(|s| s.token_expires_at.as_ref())
            else {
                continue;
            };
            let labels = TokenExpiryLabels {
                namespace: grant.metadata.namespace.clone().unwrap_or_default(),
                grant: grant.metadata.name.clone().unwrap_or_default(),
            };
            family
                .get_or_create(&labels)
                .set(expires.0.duration_since(now).as_secs_f64());
        }
        let metric = encoder.encode_descriptor(
            "token_expiry_seconds",
            "Seconds until the token in each grant's token Secret expires",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
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

    #[test]
    fn grants_are_counted_by_ready_state_at_scrape_time() {
        use kube::runtime::{reflector, watcher};

        let (reader, mut writer) = reflector::store::<DatabaseAccessGrant>();
        let grant = |name: &str, ready: Option<(&str, &str)>| {
            let mut value = serde_json::json!({
                "apiVersion": "dbgrant.io/v1alpha1",
                "kind": "DatabaseAccessGrant",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"serviceAccountName": "api", "target": "t", "role": "reader"},
            });
            if let Some((status, reason)) = ready {
                value["status"] = serde_json::json!({"conditions": [{
                    "type": "Ready", "status": status, "reason": reason, "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"
                }]});
            }
            serde_json::from_value::<DatabaseAccessGrant>(value).expect("valid grant")
        };
        for g in [
            grant("a", Some(("True", "Ready"))),
            grant("b", Some(("True", "Ready"))),
            grant("c", Some(("False", "PolicyDenied"))),
            grant("d", None),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(g));
        }
        let metrics = Metrics::new();
        metrics.register_grant_states(reader);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"
dbgrant_grants{ready="True",reason="Ready"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"grants{ready="False",reason="PolicyDenied"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"grants{ready="Unknown",reason="NotReconciled"} 1"#),
            "{text}"
        );
    }
}
