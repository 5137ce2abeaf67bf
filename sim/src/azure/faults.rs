//! Fault injection and call counters for the Azure simulator: injected statuses (429 with
//! Retry-After, 5xx), latency, dropped connections, slow, stuck or failing long-running
//! operations, principals that replicate late, RBAC that propagates late, and Entra outages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::operation::{AzureOperation, OperationFilter};

/// A fault for the calls `operation` matches (one operation such as
/// `AzureOperation::SqlRoleAssignments(Verb::Put)`, or a whole `Family`); `None` matches every
/// call.
#[derive(Clone, Debug, Default)]
pub struct AzureFault {
    /// Which calls it hits.
    pub operation: Option<OperationFilter>,
    /// Answer with this status (429, 500, 503, ...).
    pub status: Option<u16>,
    /// `Retry-After` seconds on the injected answer.
    pub retry_after: Option<u64>,
    /// Wait this long first.
    pub latency: Option<Duration>,
    /// Close the connection without answering.
    pub drop_connection: bool,
    /// How many calls it hits; `None` until cleared.
    pub times: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct Settings {
    pub rules: Vec<AzureFault>,
    pub lro_duration: Duration,
    pub lro_stuck: bool,
    pub lro_failures: u32,
    pub entra_down: bool,
    pub principal_delay: Duration,
    pub propagation_delay: Duration,
    pub counters: BTreeMap<(AzureOperation, Option<u16>), u64>,
    /// Token requests by `client_id`, so a test tells a workload's exchanges from the
    /// operator's own ARM token.
    pub token_requests: BTreeMap<String, u64>,
    pub federated_exchanges: u64,
}

/// A cheap handle on the simulator's faults and counters.
#[derive(Clone)]
pub struct AzureFaults(pub(crate) Arc<Mutex<Settings>>);

/// Calls by operation, and by operation and result (HTTP status), plus the workload token
/// exchanges (Entra calls with a federated assertion) apart from the operator's own tokens.
#[derive(Clone, Debug, Default)]
pub struct AzureCounters(BTreeMap<(AzureOperation, Option<u16>), u64>, u64);

impl AzureCounters {
    /// Calls of an operation, whatever the result.
    pub fn calls(&self, operation: AzureOperation) -> u64 {
        self.0.get(&(operation, None)).copied().unwrap_or(0)
    }

    /// Calls of an operation answered with a given HTTP status.
    pub fn with_status(&self, operation: AzureOperation, status: u16) -> u64 {
        self.0.get(&(operation, Some(status))).copied().unwrap_or(0)
    }

    /// Tokens issued for a federated assertion (workload identity exchanges).
    pub fn federated_exchanges(&self) -> u64 {
        self.1
    }

    /// As JSON: `{"calls": {"sqlRoleAssignments.put": n}, "statuses": {"sqlRoleAssignments.put
    /// 200": n}, "federatedExchanges": n}`, as the simulator serves them.
    pub fn to_json(&self) -> serde_json::Value {
        let mut calls = serde_json::Map::new();
        let mut statuses = serde_json::Map::new();
        for ((operation, status), count) in &self.0 {
            match status {
                None => calls.insert(operation.to_string(), (*count).into()),
                Some(status) => statuses.insert(format!("{operation} {status}"), (*count).into()),
            };
        }
        serde_json::json!({"calls": calls, "statuses": statuses, "federatedExchanges": self.1})
    }

    /// Read back what [`AzureCounters::to_json`] wrote (operations the simulator does not name
    /// are skipped).
    pub fn from_json(value: &serde_json::Value) -> Self {
        let mut map = BTreeMap::new();
        let entries = |key: &str| value[key].as_object().cloned().unwrap_or_default();
        for (name, count) in entries("calls") {
            if let Ok(operation) = name.parse::<AzureOperation>() {
                map.insert((operation, None), count.as_u64().unwrap_or(0));
            }
        }
        for (name, count) in entries("statuses") {
            if let Some((operation, status)) = name.split_once(' ')
                && let (Ok(operation), Ok(status)) = (operation.parse(), status.parse())
            {
                map.insert((operation, Some(status)), count.as_u64().unwrap_or(0));
            }
        }
        Self(map, value["federatedExchanges"].as_u64().unwrap_or(0))
    }
}

impl AzureFaults {
    pub(crate) fn new(lro_duration: Duration) -> Self {
        Self(Arc::new(Mutex::new(Settings {
            rules: Vec::new(),
            lro_duration,
            lro_stuck: false,
            lro_failures: 0,
            entra_down: false,
            principal_delay: Duration::ZERO,
            propagation_delay: Duration::ZERO,
            counters: BTreeMap::new(),
            token_requests: BTreeMap::new(),
            federated_exchanges: 0,
        })))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Settings> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add a fault.
    pub fn inject(&self, fault: AzureFault) {
        self.lock().rules.push(fault);
    }

    /// Remove every injected fault and reset every delay to none.
    pub fn clear(&self) {
        let mut settings = self.lock();
        settings.rules.clear();
        settings.lro_stuck = false;
        settings.lro_failures = 0;
        settings.entra_down = false;
        settings.principal_delay = Duration::ZERO;
        settings.propagation_delay = Duration::ZERO;
    }

    /// How long RBAC writes take to complete (and hold the account's lock).
    pub fn set_lro_duration(&self, duration: Duration) {
        self.lock().lro_duration = duration;
    }

    /// Long-running operations started from now on never finish (and keep the lock).
    pub fn set_lro_stuck(&self, stuck: bool) {
        self.lock().lro_stuck = stuck;
    }

    /// The next `count` long-running operations end `Failed`.
    pub fn fail_next_lros(&self, count: u32) {
        self.lock().lro_failures = count;
    }

    /// Entra ID answers 503 to every token request.
    pub fn set_entra_outage(&self, down: bool) {
        self.lock().entra_down = down;
    }

    /// Identities created from now on stay unknown to RBAC for this long.
    pub fn set_principal_replication_delay(&self, delay: Duration) {
        self.lock().principal_delay = delay;
    }

    /// Assignments completed from now on take this long to reach the data plane.
    pub fn set_propagation_delay(&self, delay: Duration) {
        self.lock().propagation_delay = delay;
    }

    /// Calls so far.
    pub fn counters(&self) -> AzureCounters {
        let settings = self.lock();
        AzureCounters(settings.counters.clone(), settings.federated_exchanges)
    }

    /// Count a token issued for a federated assertion.
    pub(crate) fn record_federated_exchange(&self) {
        self.lock().federated_exchanges += 1;
    }

    /// Token requests made for `client_id` so far (during an outage too).
    pub fn token_requests(&self, client_id: &str) -> u64 {
        self.lock()
            .token_requests
            .get(client_id)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn count_token_request(&self, client_id: &str) {
        *self
            .lock()
            .token_requests
            .entry(client_id.to_string())
            .or_default() += 1;
    }

    /// Count a call and return the fault it hits, if any.
    pub(crate) fn hit(&self, operation: AzureOperation) -> Option<AzureFault> {
        let mut settings = self.lock();
        *settings.counters.entry((operation, None)).or_default() += 1;
        let index = settings
            .rules
            .iter()
            .position(|f| f.operation.is_none_or(|filter| filter.matches(operation)))?;
        let fault = settings.rules[index].clone();
        if let Some(times) = &mut settings.rules[index].times {
            *times = times.saturating_sub(1);
            if *times == 0 {
                settings.rules.remove(index);
            }
        }
        Some(fault)
    }

    /// Count a call's result.
    pub(crate) fn record(&self, operation: AzureOperation, status: u16) {
        *self
            .lock()
            .counters
            .entry((operation, Some(status)))
            .or_default() += 1;
    }
}
