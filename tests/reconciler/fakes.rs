//! In-memory stand-ins for the operator's seams: the Kubernetes API (`FakeCluster`) and
//! ARM/Cosmos DB/Entra ID (`FakeCosmos`). They keep state as the real services would and count
//! every write, so a test can assert both the end state and what it cost.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use azure_core::credentials::Secret;
use dbgrant::api::{
    DatabaseAccessGrantStatus, DatabaseTarget, DatabaseTargetStatus, Reason, WorkloadKind,
};
use dbgrant::backend::cosmos::{
    BUILTIN_CONTRIBUTOR, BUILTIN_READER, CosmosAccess, RoleAssignment, RoleDefinition, Scope,
};
use dbgrant::backend::{BackendError, IdentityExchange, ResolvedIdentity, TokenScope};
use dbgrant::controller::cluster::Cluster;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ObjectReference, Secret as KubeSecret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One event as published.
#[derive(Clone, Debug)]
pub struct SeenEvent {
    pub object: String,
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// The Kubernetes API, as far as the reconcilers use it outside their caches.
#[derive(Default)]
pub struct FakeCluster {
    pub targets: Mutex<BTreeMap<String, DatabaseTarget>>,
    pub namespaces: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// (namespace, name) → metadata.
    pub service_accounts: Mutex<BTreeMap<(String, String), ObjectMeta>>,
    /// (namespace, name) → the status last written.
    pub grant_statuses: Mutex<BTreeMap<(String, String), DatabaseAccessGrantStatus>>,
    pub target_statuses: Mutex<BTreeMap<String, DatabaseTargetStatus>>,
    pub events: Mutex<Vec<SeenEvent>>,
    /// (namespace, name) → Secret, as the API server holds it (uid and resourceVersion set).
    pub secrets: Mutex<BTreeMap<(String, String), KubeSecret>>,
    /// Creates, replaces and deletes of Secrets.
    pub secret_writes: Mutex<usize>,
    /// The next Secret write fails with this HTTP status.
    pub secret_write_fault: Mutex<Option<u16>>,
    /// (namespace, kind, name, annotation value) of each workload restart.
    pub restarts: Mutex<Vec<(String, String, String, String)>>,
    next_version: Mutex<u64>,
    pub status_writes: Mutex<usize>,
    pub tokens_minted: Mutex<usize>,
    /// The API server refuses TokenRequests (the operator's RBAC lacks it).
    pub token_requests_forbidden: Mutex<bool>,
}

fn api_error(code: u16, reason: &str) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure(&format!("injected {code}"), reason)
            .with_code(code)
            .boxed(),
    )
}

impl FakeCluster {
    /// A Secret someone else made (no dbgrant label, no owner).
    pub fn foreign_secret(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let secret = KubeSecret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_string()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..KubeSecret::default()
        };
        self.store_secret(secret);
    }

    fn store_secret(&self, mut secret: KubeSecret) {
        let mut version = lock(&self.next_version);
        *version += 1;
        secret.metadata.resource_version = Some(version.to_string());
        if secret.metadata.uid.is_none() {
            secret.metadata.uid = Some(format!("secret-uid-{version}"));
        }
        let key = (
            secret.metadata.namespace.clone().unwrap_or_default(),
            secret.metadata.name.clone().unwrap_or_default(),
        );
        lock(&self.secrets).insert(key, secret);
    }

    pub fn secret_now(&self, namespace: &str, name: &str) -> Option<KubeSecret> {
        lock(&self.secrets)
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn write_fault(&self) -> Result<(), kube::Error> {
        *lock(&self.secret_writes) += 1;
        match lock(&self.secret_write_fault).take() {
            Some(code) => Err(api_error(code, "InternalError")),
            None => Ok(()),
        }
    }

    pub fn events_with(&self, reason: &str) -> Vec<SeenEvent> {
        lock(&self.events)
            .iter()
            .filter(|e| e.reason == reason)
            .cloned()
            .collect()
    }
}

#[async_trait::async_trait]
impl Cluster for FakeCluster {
    async fn target(&self, name: &str) -> Result<Option<DatabaseTarget>, kube::Error> {
        Ok(lock(&self.targets).get(name).cloned())
    }

    async fn namespace_labels(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, kube::Error> {
        Ok(lock(&self.namespaces).get(name).cloned())
    }

    async fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ObjectMeta>, kube::Error> {
        Ok(lock(&self.service_accounts)
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    async fn mint_token(&self, namespace: &str, name: &str) -> Result<Secret, kube::Error> {
        if *lock(&self.token_requests_forbidden) {
            return Err(kube::Error::Api(
                kube::core::Status::failure(
                    "serviceaccounts \"api\" is forbidden: cannot create resource \"serviceaccounts/token\"",
                    "Forbidden",
                )
                .with_code(403)
                .boxed(),
            ));
        }
        *lock(&self.tokens_minted) += 1;
        // The fake Entra ID reads the ServiceAccount back out of the token, as the real one
        // reads the subject claim.
        Ok(Secret::new(format!("sa-token:{namespace}:{name}")))
    }

    async fn grant_status(
        &self,
        namespace: &str,
        name: &str,
        status: &DatabaseAccessGrantStatus,
    ) -> Result<(), kube::Error> {
        *lock(&self.status_writes) += 1;
        // Stored as the API server stores it: through JSON (times in whole seconds).
        let stored = serde_json::from_value(serde_json::to_value(status).expect("serialisable"))
            .expect("deserialisable");
        lock(&self.grant_statuses).insert((namespace.to_string(), name.to_string()), stored);
        Ok(())
    }

    async fn target_status(
        &self,
        name: &str,
        status: &DatabaseTargetStatus,
    ) -> Result<(), kube::Error> {
        lock(&self.target_statuses).insert(name.to_string(), status.clone());
        if let Some(target) = lock(&self.targets).get_mut(name) {
            target.status = Some(status.clone());
        }
        Ok(())
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<KubeSecret>, kube::Error> {
        Ok(self.secret_now(namespace, name))
    }

    async fn create_secret(&self, secret: &KubeSecret) -> Result<(), kube::Error> {
        let (ns, name) = (
            secret.metadata.namespace.clone().unwrap_or_default(),
            secret.metadata.name.clone().unwrap_or_default(),
        );
        // The operator's own seal key is not a token Secret: the counts and faults the tests
        // set are for those.
        if ns != super::rig::OPERATOR_NAMESPACE {
            self.write_fault()?;
        }
        if self.secret_now(&ns, &name).is_some() {
            return Err(api_error(409, "AlreadyExists"));
        }
        let mut secret = secret.clone();
        secret.metadata.uid = None;
        self.store_secret(secret);
        Ok(())
    }

    async fn replace_secret(&self, secret: &KubeSecret) -> Result<(), kube::Error> {
        self.write_fault()?;
        let (ns, name) = (
            secret.metadata.namespace.clone().unwrap_or_default(),
            secret.metadata.name.clone().unwrap_or_default(),
        );
        let Some(current) = self.secret_now(&ns, &name) else {
            return Err(api_error(404, "NotFound"));
        };
        if current.metadata.resource_version != secret.metadata.resource_version
            || current.type_ != secret.type_
        {
            return Err(api_error(409, "Conflict"));
        }
        let mut secret = secret.clone();
        secret.metadata.uid = current.metadata.uid.clone();
        self.store_secret(secret);
        Ok(())
    }

    async fn delete_secret(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), kube::Error> {
        self.write_fault()?;
        let key = (namespace.to_string(), name.to_string());
        let mut secrets = lock(&self.secrets);
        match secrets.get(&key) {
            None => Ok(()),
            Some(s) if s.metadata.uid.as_deref() != Some(uid) => Err(api_error(409, "Conflict")),
            Some(_) => {
                secrets.remove(&key);
                Ok(())
            }
        }
    }

    async fn restart_workload(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
        _annotation: &str,
        value: &str,
    ) -> Result<(), kube::Error> {
        lock(&self.restarts).push((
            namespace.to_string(),
            format!("{kind:?}"),
            name.to_string(),
            value.to_string(),
        ));
        Ok(())
    }

    async fn event(&self, object: ObjectReference, warning: bool, reason: &str, note: String) {
        lock(&self.events).push(SeenEvent {
            object: format!(
                "{}/{}",
                object.namespace.unwrap_or_default(),
                object.name.unwrap_or_default()
            ),
            warning,
            reason: reason.to_string(),
            note,
        });
    }
}

/// One Cosmos DB account.
#[derive(Clone, Debug, Default)]
pub struct Account {
    pub definitions: Vec<RoleDefinition>,
    pub assignments: Vec<RoleAssignment>,
}

/// A failure to inject into the next call of one kind.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The PUT creates the assignment, then the answer is lost (a long operation that timed
    /// out on our side).
    PutLostAfterCreate,
    /// The PUT is accepted and keeps running in Azure (its caller died): the assignment
    /// appears only when `finish_writes` is called, and until then every other write on the
    /// account gets 412, as Cosmos DB's account lock answers.
    PutStillRunning,
    /// The call fails with this error and changes nothing.
    Fail(BackendError),
}

/// ARM, the Cosmos DB data plane and Entra ID.
#[derive(Default)]
pub struct FakeCosmos {
    pub accounts: Mutex<BTreeMap<String, Account>>,
    /// "namespace:serviceaccount" → (client id, principal id) that Entra ID federates.
    pub federated: Mutex<HashMap<String, (String, String)>>,
    pub put_fault: Mutex<Option<Fault>>,
    pub delete_fault: Mutex<Option<Fault>>,
    pub exchanges: Mutex<usize>,
    /// Writes still running in Azure: (account, assignment).
    pub running: Mutex<Vec<(String, RoleAssignment)>>,
    /// Entra ID answers 503 to every exchange.
    pub entra_down: Mutex<bool>,
    /// The scope of each exchange, in order.
    pub exchange_scopes: Mutex<Vec<TokenScope>>,
    /// Tokens issued start with this (default `data-token:`), for canary tests.
    pub token_prefix: Mutex<Option<String>>,
    pub writes: Mutex<Vec<String>>,
    /// ARM reads (account GETs and lists), as a subscription's read bucket counts them.
    pub arm_reads: Mutex<usize>,
}

impl FakeCosmos {
    pub fn add_account(&self, id: &str) {
        let builtin = |guid: &str, name: &str| RoleDefinition {
            guid: guid.to_string(),
            role_name: name.to_string(),
            data_actions: vec![],
            assignable_scopes: vec![id.to_string()],
            built_in: true,
        };
        lock(&self.accounts).insert(
            id.to_ascii_lowercase(),
            Account {
                definitions: vec![
                    builtin(BUILTIN_READER, "Cosmos DB Built-in Data Reader"),
                    builtin(BUILTIN_CONTRIBUTOR, "Cosmos DB Built-in Data Contributor"),
                ],
                assignments: vec![],
            },
        );
    }

    pub fn federate(&self, namespace: &str, sa: &str, client_id: &str, principal_id: &str) {
        lock(&self.federated).insert(
            format!("{namespace}:{sa}"),
            (client_id.to_string(), principal_id.to_string()),
        );
    }

    pub fn assignments(&self, account: &str) -> Vec<RoleAssignment> {
        lock(&self.accounts)
            .get(&account.to_ascii_lowercase())
            .map(|a| a.assignments.clone())
            .unwrap_or_default()
    }

    pub fn definitions(&self, account: &str) -> Vec<RoleDefinition> {
        lock(&self.accounts)
            .get(&account.to_ascii_lowercase())
            .map(|a| a.definitions.clone())
            .unwrap_or_default()
    }

    /// Add an assignment as someone else would (any GUID).
    pub fn add_assignment(&self, account: &str, assignment: RoleAssignment) {
        if let Some(a) = lock(&self.accounts).get_mut(&account.to_ascii_lowercase()) {
            a.assignments.push(assignment);
        }
    }

    pub fn remove_assignment(&self, account: &str, guid: &str) {
        if let Some(a) = lock(&self.accounts).get_mut(&account.to_ascii_lowercase()) {
            a.assignments.retain(|x| !x.guid.eq_ignore_ascii_case(guid));
        }
    }

    /// Azure finishes the writes still running.
    pub fn finish_writes(&self) {
        let running = std::mem::take(&mut *lock(&self.running));
        for (account, assignment) in running {
            self.add_assignment(&account, assignment);
        }
    }

    fn busy(&self) -> Option<BackendError> {
        (!lock(&self.running).is_empty()).then(|| {
            BackendError::new(Reason::AccountBusy, "HTTP 412: an operation is in progress")
        })
    }

    pub fn write_count(&self) -> usize {
        lock(&self.writes).len()
    }

    fn account<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Account) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let mut accounts = lock(&self.accounts);
        match accounts.get_mut(&id.to_ascii_lowercase()) {
            Some(account) => f(account),
            None => {
                let mut error =
                    BackendError::new(Reason::TargetNotReady, format!("account {id} not found"));
                error.http_status = Some(404);
                Err(error)
            }
        }
    }
}

#[async_trait::async_trait]
impl IdentityExchange for FakeCosmos {
    async fn exchange(
        &self,
        tenant_id: &str,
        client_id: &str,
        service_account_token: &Secret,
        scope: &TokenScope,
    ) -> Result<ResolvedIdentity, BackendError> {
        let serial = {
            let mut n = lock(&self.exchanges);
            *n += 1;
            *n
        };
        lock(&self.exchange_scopes).push(scope.clone());
        if *lock(&self.entra_down) {
            return Err(BackendError::new(
                Reason::AzureUnavailable,
                "Entra ID answered 503",
            ));
        }
        let subject = service_account_token
            .secret()
            .strip_prefix("sa-token:")
            .unwrap_or_default()
            .to_string();
        let federated = lock(&self.federated).get(&subject).cloned();
        match federated {
            Some((client, principal)) if client == client_id => Ok(ResolvedIdentity {
                principal_id: principal,
                tenant_id: tenant_id.to_string(),
                // A new token each exchange, as Entra ID issues.
                access_token: Secret::new(format!(
                    "{prefix}{client}.{serial}",
                    prefix = lock(&self.token_prefix)
                        .clone()
                        .unwrap_or_else(|| "data-token:".to_string()),
                )),
                expires_at: Timestamp::now()
                    .checked_add(SignedDuration::from_secs(3600))
                    .expect("in range"),
            }),
            _ => Err(BackendError::new(
                Reason::IdentityNotFederated,
                format!("AADSTS70021: no federated credential of {client_id} matches {subject}"),
            )),
        }
    }
}

#[async_trait::async_trait]
impl CosmosAccess for FakeCosmos {
    async fn account_endpoint(&self, account_id: &str) -> Result<String, BackendError> {
        *lock(&self.arm_reads) += 1;
        self.account(account_id, |_| {
            Ok("https://account.documents.example/".to_string())
        })
    }

    async fn list_role_definitions(
        &self,
        account_id: &str,
    ) -> Result<Vec<RoleDefinition>, BackendError> {
        *lock(&self.arm_reads) += 1;
        self.account(account_id, |a| Ok(a.definitions.clone()))
    }

    async fn put_role_definition(
        &self,
        account_id: &str,
        definition: &RoleDefinition,
    ) -> Result<(), BackendError> {
        lock(&self.writes).push(format!("PUT definition {}", definition.guid));
        self.account(account_id, |a| {
            if a.definitions.iter().any(|d| {
                d.role_name == definition.role_name
                    && !d.guid.eq_ignore_ascii_case(&definition.guid)
            }) {
                return Err(BackendError::new(
                    Reason::InvalidSpec,
                    "a role definition of that name exists",
                ));
            }
            a.definitions
                .retain(|d| !d.guid.eq_ignore_ascii_case(&definition.guid));
            a.definitions.push(definition.clone());
            Ok(())
        })
    }

    async fn delete_role_definition(
        &self,
        account_id: &str,
        guid: &str,
    ) -> Result<(), BackendError> {
        lock(&self.writes).push(format!("DELETE definition {guid}"));
        self.account(account_id, |a| {
            a.definitions.retain(|d| !d.guid.eq_ignore_ascii_case(guid));
            Ok(())
        })
    }

    async fn list_role_assignments(
        &self,
        account_id: &str,
    ) -> Result<Vec<RoleAssignment>, BackendError> {
        *lock(&self.arm_reads) += 1;
        self.account(account_id, |a| Ok(a.assignments.clone()))
    }

    async fn put_role_assignment(
        &self,
        account_id: &str,
        assignment: &RoleAssignment,
    ) -> Result<(), BackendError> {
        lock(&self.writes).push(format!("PUT assignment {}", assignment.guid));
        let fault = lock(&self.put_fault).take();
        if let Some(Fault::Fail(error)) = fault {
            return Err(error);
        }
        if let Some(busy) = self.busy() {
            return Err(busy);
        }
        if let Some(Fault::PutStillRunning) = fault {
            lock(&self.running).push((account_id.to_string(), assignment.clone()));
            return Err(BackendError::new(
                Reason::AzureUnavailable,
                "still running in Azure after 60s",
            ));
        }
        self.account(account_id, |a| {
            let defined = a.definitions.iter().any(|d| {
                assignment
                    .role_definition_id
                    .to_ascii_lowercase()
                    .ends_with(&d.guid.to_ascii_lowercase())
            });
            if !defined {
                return Err(BackendError::new(
                    Reason::TargetNotReady,
                    "the role definition does not exist",
                ));
            }
            a.assignments
                .retain(|x| !x.guid.eq_ignore_ascii_case(&assignment.guid));
            a.assignments.push(assignment.clone());
            Ok(())
        })?;
        match fault {
            Some(Fault::PutLostAfterCreate) => Err(BackendError::new(
                Reason::AzureUnavailable,
                "still running in Azure after 60s",
            )),
            _ => Ok(()),
        }
    }

    async fn delete_role_assignment(
        &self,
        account_id: &str,
        guid: &str,
    ) -> Result<(), BackendError> {
        lock(&self.writes).push(format!("DELETE assignment {guid}"));
        if let Some(Fault::Fail(error)) = lock(&self.delete_fault).take() {
            return Err(error);
        }
        if let Some(busy) = self.busy() {
            return Err(busy);
        }
        self.account(account_id, |a| {
            a.assignments.retain(|x| !x.guid.eq_ignore_ascii_case(guid));
            Ok(())
        })
    }

    async fn probe(
        &self,
        _endpoint: &str,
        _scope: &Scope,
        _access_token: &Secret,
    ) -> Result<bool, BackendError> {
        Ok(true)
    }
}
