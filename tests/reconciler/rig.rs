//! A reconciler test rig: both reconcilers wired to the in-memory fakes through the real
//! `Context`, with helpers that play the API server's part (status written back into the
//! cached objects, deletion) so each test reads as a story.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbgrant::api::{DatabaseAccessGrant, DatabaseTarget};
use dbgrant::backend::Backends;
use dbgrant::controller::backoff::Backoff;
use dbgrant::controller::{Context, grant, identity_cache, ledger, locks, seal_key, target};
use dbgrant::telemetry::Metrics;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::fakes::{FakeCluster, FakeCosmos};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The operator's own namespace (where the identity seal's key is kept).
pub const OPERATOR_NAMESPACE: &str = "dbgrant-system";

pub fn account_id(name: &str) -> String {
    format!(
        "/subscriptions/6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10/resourceGroups/rg/providers/Microsoft.DocumentDB/databaseAccounts/{name}"
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A Kubernetes client that reaches nothing: the reconcilers' passes must not use it.
fn offline_client() -> kube::Client {
    let service = tower::service_fn(|_request: http::Request<kube::client::Body>| async {
        Err::<http::Response<kube::client::Body>, _>(std::io::Error::other(
            "the reconciler tests have no API server",
        ))
    });
    kube::Client::new(service, "default")
}

pub struct Rig {
    pub cluster: Arc<FakeCluster>,
    pub cosmos: Arc<FakeCosmos>,
    pub ctx: Arc<Context>,
    grants: Mutex<Writer<DatabaseAccessGrant>>,
    targets: Mutex<Writer<DatabaseTarget>>,
    /// The API server's copy of every grant, (namespace, name) → object.
    objects: Mutex<BTreeMap<(String, String), DatabaseAccessGrant>>,
    uid: Mutex<u64>,
}

impl Rig {
    pub fn new() -> Self {
        Self::with(
            Arc::new(FakeCluster::default()),
            Arc::new(FakeCosmos::default()),
        )
    }

    fn with(cluster: Arc<FakeCluster>, cosmos: Arc<FakeCosmos>) -> Self {
        let (grant_store, mut grant_writer) =
            kube::runtime::reflector::store::<DatabaseAccessGrant>();
        let (target_store, mut target_writer) = kube::runtime::reflector::store::<DatabaseTarget>();
        // Listed once, as the controllers' caches are before any reconcile.
        grant_writer.apply_watcher_event(&watcher::Event::InitDone);
        target_writer.apply_watcher_event(&watcher::Event::InitDone);
        let ctx = Arc::new(Context {
            client: offline_client(),
            cluster: cluster.clone(),
            backends: Backends::from_one(cosmos.clone()),
            metrics: Metrics::new(),
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
            account_locks: locks::AccountLocks::default(),
            identities: identity_cache::IdentityCache::default(),
            tokens: dbgrant::token::broker::Broker::default(),
            ledger: ledger::Ledger::default(),
            grants: grant_store,
            targets: target_store,
            targets_synced: tokio::sync::watch::channel(true).1,
            default_tenant: Some(TENANT.to_string()),
            target_checks: Default::default(),
            seal: seal_key::SealKeySource::new(Some(OPERATOR_NAMESPACE.to_string())),
            resync_interval: Duration::from_secs(300),
        });
        Self {
            cluster,
            cosmos,
            ctx,
            grants: Mutex::new(grant_writer),
            targets: Mutex::new(target_writer),
            objects: Mutex::new(BTreeMap::new()),
            uid: Mutex::new(0),
        }
    }

    /// The operator restarted: a fresh process (empty ledger, caches listed anew) against the
    /// same cluster and Azure.
    pub fn restart(self) -> Self {
        let objects = lock(&self.objects).clone();
        let uid = *lock(&self.uid);
        let rig = Self::with(self.cluster.clone(), self.cosmos.clone());
        *lock(&rig.objects) = objects;
        *lock(&rig.uid) = uid;
        rig.sync();
        rig
    }

    fn next_uid(&self) -> String {
        let mut uid = lock(&self.uid);
        *uid += 1;
        format!("00000000-0000-0000-0000-{:012}", *uid)
    }

    /// Push the API server's state into the caches (as the watches would).
    fn sync(&self) {
        let statuses = lock(&self.cluster.grant_statuses).clone();
        let mut objects = lock(&self.objects);
        let mut writer = lock(&self.grants);
        for (key, grant) in objects.iter_mut() {
            if let Some(status) = statuses.get(key) {
                grant.status = Some(status.clone());
            }
            writer.apply_watcher_event(&watcher::Event::Apply(grant.clone()));
        }
        let mut targets = lock(&self.targets);
        for target in lock(&self.cluster.targets).values() {
            targets.apply_watcher_event(&watcher::Event::Apply(target.clone()));
        }
    }

    pub fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        lock(&self.cluster.namespaces).insert(
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    /// A ServiceAccount annotated with `client_id`, federated in Entra ID to `principal_id`.
    pub fn workload(&self, namespace: &str, sa: &str, client_id: &str, principal_id: &str) {
        let meta = ObjectMeta {
            name: Some(sa.to_string()),
            namespace: Some(namespace.to_string()),
            uid: Some(self.next_uid()),
            annotations: Some(BTreeMap::from([(
                "azure.workload.identity/client-id".to_string(),
                client_id.to_string(),
            )])),
            ..ObjectMeta::default()
        };
        lock(&self.cluster.service_accounts).insert((namespace.to_string(), sa.to_string()), meta);
        self.cosmos.federate(namespace, sa, client_id, principal_id);
    }

    /// Point the workload's ServiceAccount at another managed identity.
    pub fn reannotate(&self, namespace: &str, sa: &str, client_id: &str, principal_id: &str) {
        if let Some(meta) =
            lock(&self.cluster.service_accounts).get_mut(&(namespace.to_string(), sa.to_string()))
        {
            meta.annotations = Some(BTreeMap::from([(
                "azure.workload.identity/client-id".to_string(),
                client_id.to_string(),
            )]));
        }
        self.cosmos.federate(namespace, sa, client_id, principal_id);
    }

    /// Create or replace a target from its spec (JSON), bumping its generation.
    pub fn put_target(&self, name: &str, spec: Value) {
        let mut targets = lock(&self.cluster.targets);
        let (generation, status, uid) = match targets.get(name) {
            Some(t) => (
                t.metadata.generation.unwrap_or(1) + 1,
                t.status.clone(),
                t.metadata.uid.clone(),
            ),
            None => (1, None, Some(self.next_uid())),
        };
        let mut target: DatabaseTarget = serde_json::from_value(json!({
            "apiVersion": "dbgrant.io/v1alpha1",
            "kind": "DatabaseTarget",
            "metadata": {"name": name, "generation": generation, "finalizers": [target::FINALIZER]},
            "spec": spec,
        }))
        .expect("a valid target");
        target.metadata.uid = uid;
        target.status = status;
        targets.insert(name.to_string(), target);
        drop(targets);
        self.sync();
    }

    /// A cosmos target on `account` allowing namespaces labelled `team=<team>` and `roles`.
    pub fn cosmos_target(&self, name: &str, account: &str, team: &str, roles: &[&str]) {
        self.cosmos.add_account(&account_id(account));
        self.put_target(
            name,
            json!({
                "cosmos": {"accountResourceId": account_id(account)},
                "allowedNamespaces": {"matchLabels": {"team": team}},
                "allowedRoles": roles,
            }),
        );
    }

    pub fn target_spec(&self, name: &str) -> Value {
        let targets = lock(&self.cluster.targets);
        serde_json::to_value(&targets[name].spec).expect("serialisable")
    }

    pub fn target(&self, name: &str) -> Option<DatabaseTarget> {
        lock(&self.cluster.targets).get(name).cloned()
    }

    /// Create or replace a grant from its spec (JSON), bumping its generation.
    pub fn put_grant(&self, namespace: &str, name: &str, spec: Value) {
        let key = (namespace.to_string(), name.to_string());
        let mut objects = lock(&self.objects);
        let (generation, uid) = match objects.get(&key) {
            Some(g) => (
                g.metadata.generation.unwrap_or(1) + 1,
                g.metadata.uid.clone(),
            ),
            None => (1, Some(self.next_uid())),
        };
        let mut grant: DatabaseAccessGrant = serde_json::from_value(json!({
            "apiVersion": "dbgrant.io/v1alpha1",
            "kind": "DatabaseAccessGrant",
            "metadata": {"name": name, "namespace": namespace, "generation": generation, "finalizers": [grant::FINALIZER]},
            "spec": spec,
        }))
        .expect("a valid grant");
        grant.metadata.uid = uid;
        grant.status = lock(&self.cluster.grant_statuses).get(&key).cloned();
        objects.insert(key, grant);
        drop(objects);
        self.sync();
    }

    pub fn grant(&self, namespace: &str, name: &str) -> DatabaseAccessGrant {
        self.sync();
        lock(&self.objects)[&(namespace.to_string(), name.to_string())].clone()
    }

    pub fn grant_spec(&self, namespace: &str, name: &str) -> Value {
        serde_json::to_value(&self.grant(namespace, name).spec).expect("serialisable")
    }

    /// Overwrite a grant's status as someone who may write `databaseaccessgrants/status` could.
    pub fn tamper_status(
        &self,
        namespace: &str,
        name: &str,
        edit: impl FnOnce(&mut dbgrant::api::DatabaseAccessGrantStatus),
    ) {
        let key = (namespace.to_string(), name.to_string());
        let mut statuses = lock(&self.cluster.grant_statuses);
        let status = statuses.entry(key).or_default();
        edit(status);
        drop(statuses);
        self.sync();
    }

    /// One reconcile pass over a grant, as the controller would run it.
    pub async fn reconcile(&self, namespace: &str, name: &str) {
        let grant = Arc::new(self.grant(namespace, name));
        let result = if grant.metadata.deletion_timestamp.is_some() {
            grant::cleanup(grant, &self.ctx).await.map(|_| true)
        } else {
            grant::apply(grant, &self.ctx).await.map(|_| false)
        };
        match result {
            // The finalizer is removed and the object goes.
            Ok(true) => {
                let key = (namespace.to_string(), name.to_string());
                if let Some(grant) = lock(&self.objects).remove(&key) {
                    lock(&self.grants).apply_watcher_event(&watcher::Event::Delete(grant));
                }
                lock(&self.cluster.grant_statuses).remove(&key);
            }
            Ok(false) => {}
            Err(error) => eprintln!(
                "grant {namespace}/{name}: {}",
                dbgrant::error::chain(&error)
            ),
        }
        self.sync();
    }

    /// Passes over every grant until nothing changes in Azure or the statuses (or 10 rounds).
    pub async fn settle(&self) {
        for _ in 0..10 {
            let before = (
                self.cosmos.write_count(),
                *lock(&self.cluster.status_writes),
            );
            let names: Vec<(String, String)> = lock(&self.objects).keys().cloned().collect();
            for (ns, name) in names {
                self.reconcile(&ns, &name).await;
            }
            let targets: Vec<String> = lock(&self.cluster.targets).keys().cloned().collect();
            for target in targets {
                self.reconcile_target(&target).await;
            }
            if (
                self.cosmos.write_count(),
                *lock(&self.cluster.status_writes),
            ) == before
            {
                return;
            }
        }
    }

    /// Ask the API server to delete a grant: its finalizer keeps it until a pass lets it go.
    pub fn delete_grant(&self, namespace: &str, name: &str) {
        if let Some(grant) = lock(&self.objects).get_mut(&(namespace.to_string(), name.to_string()))
        {
            grant.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        }
        self.sync();
    }

    pub fn grant_exists(&self, namespace: &str, name: &str) -> bool {
        lock(&self.objects).contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// One reconcile pass over a target.
    pub async fn reconcile_target(&self, name: &str) {
        let Some(target) = self.target(name) else {
            return;
        };
        let target = Arc::new(target);
        let result = if target.metadata.deletion_timestamp.is_some() {
            target::cleanup(target, &self.ctx).await.map(|_| true)
        } else {
            target::apply(target, &self.ctx).await.map(|_| false)
        };
        match result {
            Ok(true) => {
                if let Some(target) = lock(&self.cluster.targets).remove(name) {
                    lock(&self.targets).apply_watcher_event(&watcher::Event::Delete(target));
                }
            }
            Ok(false) => {}
            Err(error) => eprintln!("target {name}: {}", dbgrant::error::chain(&error)),
        }
        self.sync();
    }

    pub fn delete_target(&self, name: &str) {
        if let Some(target) = lock(&self.cluster.targets).get_mut(name) {
            target.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        }
        self.sync();
    }

    /// The grant's condition `type_` as (status, reason).
    pub fn condition(&self, namespace: &str, name: &str, type_: &str) -> Option<(String, String)> {
        let grant = self.grant(namespace, name);
        grant
            .status?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    }

    pub fn ready(&self, namespace: &str, name: &str) -> Option<(String, String)> {
        self.condition(namespace, name, "Ready")
    }

    /// The principals holding access on `account`, as (principal, role-definition guid, scope
    /// suffix after the account id).
    pub fn access_on(&self, account: &str) -> Vec<(String, String, String)> {
        let account_id = account_id(account);
        let mut access: Vec<_> = self
            .cosmos
            .assignments(&account_id)
            .into_iter()
            .map(|a| {
                let role = a
                    .role_definition_id
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let scope = a.scope[account_id.len().min(a.scope.len())..].to_string();
                (a.principal_id, role, scope)
            })
            .collect();
        access.sort();
        access
    }
}
