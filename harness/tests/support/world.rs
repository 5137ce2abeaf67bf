//! The end-to-end test world: a Kubernetes API server, Azure, and the real operator, with one
//! namespace, one DatabaseTarget and fresh identities per test.
//!
//! By default everything is simulated (`dbgrant_sim`). Set these to run the same tests against
//! a real cluster and subscription instead (fault-injection tests then skip, saying so):
//! - `DBGRANT_E2E_KUBECONFIG`: kubeconfig of a cluster where the CRDs may be applied;
//! - `DBGRANT_E2E_OIDC_ISSUER`: that cluster's ServiceAccount issuer URL (AKS: the OIDC issuer);
//! - `DBGRANT_E2E_COSMOS_ACCOUNT_ID`: ARM id of a Cosmos DB account the tests may assign on;
//! - `DBGRANT_E2E_IDENTITY_GROUP`: `/subscriptions/{s}/resourceGroups/{rg}` for test identities;
//! - `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`: a principal with Managed
//!   Identity Contributor on that group and DocumentDB Account Contributor on the account; the
//!   tests and the in-process operator both use it;
//! - optionally the operator's cloud variables (`AZURE_CLOUD`, `AZURE_AUTHORITY_HOST`,
//!   `DBGRANT_ARM_ENDPOINT`, `DBGRANT_AZURE_EXTRA_CA_FILE`) and `DBGRANT_E2E_TIMEOUT_SECONDS`
//!   (how long each wait may take; 600 by default, for RBAC propagation).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use dbgrant::api::{DatabaseAccessGrant, DatabaseTarget, Reason};
use dbgrant::azure::{AzureArgs, AzureConfig, AzureCosmos};
use dbgrant::backend::cosmos::{CosmosAccess, RoleAssignment, RoleDefinition};
use dbgrant_harness::operator::{Operator, OperatorOptions};
use dbgrant_harness::sandbox::{EXCHANGE_AUDIENCE, operator_azure_config};
use dbgrant_sim::azure::{AzureSim, AzureSimConfig, ControlPlaneRole};

/// The operator's own namespace in every world (the chart's is its release namespace).
pub const OPERATOR_NAMESPACE: &str = "dbgrant-system";
use dbgrant_sim::kube::{KubeSim, KubeSimConfig};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

/// The simulators, when the world is simulated.
pub struct Sims {
    /// Kubernetes.
    pub kube: KubeSim,
    /// Azure.
    pub azure: AzureSim,
}

/// Per-test settings.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// The operator's resync (drift check) interval.
    pub resync_interval: Duration,
    /// The target's allowed roles.
    pub allowed_roles: Vec<&'static str>,
    /// How long simulated RBAC writes take.
    pub lro_duration: Duration,
    /// Lifetime of the access tokens the simulated Entra ID issues.
    pub access_token_lifetime: Duration,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(30),
            allowed_roles: vec!["reader", "contributor"],
            lro_duration: Duration::from_millis(100),
            access_token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// A managed identity made for a test.
#[derive(Clone, Debug)]
pub struct Identity {
    /// ARM id.
    pub resource_id: String,
    /// Client id.
    pub client_id: String,
    /// Principal id.
    pub principal_id: String,
}

/// One test's world.
pub struct World {
    name: String,
    /// Admin client of the cluster.
    pub client: kube::Client,
    kubeconfig: PathBuf,
    dir: PathBuf,
    account_id: String,
    issuer: String,
    identity_group: String,
    admin: AzureCosmos,
    operator_config: AzureConfig,
    operator_options: OperatorOptions,
    operator: Mutex<Option<Operator>>,
    /// Managed identities this test created (deleted at the end against a real subscription).
    identities: Mutex<Vec<String>>,
    /// Against a real cluster, held for the whole test: every test's operator watches the whole
    /// cluster, so two at once would reconcile each other's grants.
    _exclusive: Option<std::fs::File>,
    sims: Option<Sims>,
    limit: Duration,
}

/// Stable api-version of Microsoft.ManagedIdentity.
const IDENTITY_API_VERSION: &str = "2024-11-30";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

impl World {
    /// Build the world for test `name`: simulated unless `DBGRANT_E2E_KUBECONFIG` is set.
    pub async fn start(name: &str, options: WorldOptions) -> World {
        // The operator's logs (errors only unless RUST_LOG says more), shown with a failure.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let unique = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let dir = std::env::temp_dir().join(format!("dbgrant-e2e-{unique}"));
        std::fs::create_dir_all(&dir).unwrap();
        let operator_options = OperatorOptions {
            resync_interval: options.resync_interval,
            concurrency: 8,
            namespace: Some(OPERATOR_NAMESPACE.into()),
        };
        let world = match env("DBGRANT_E2E_KUBECONFIG") {
            Some(kubeconfig) => {
                Self::real(&unique, dir, PathBuf::from(kubeconfig), operator_options).await
            }
            None => Self::simulated(&unique, dir, &options, operator_options).await,
        };
        world.setup(&options).await;
        world.start_operator().await;
        world
    }

    async fn simulated(
        name: &str,
        dir: PathBuf,
        options: &WorldOptions,
        operator_options: OperatorOptions,
    ) -> World {
        let kube = KubeSim::start(KubeSimConfig::default()).await.unwrap();
        let azure = AzureSim::start(AzureSimConfig {
            oidc_trusted_ca_pems: vec![kube.ca_pem()],
            lro_duration: options.lro_duration,
            access_token_lifetime: options.access_token_lifetime,
            ..AzureSimConfig::default()
        })
        .await
        .unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kube.kubeconfig_yaml()).unwrap();
        let subscription = uuid::Uuid::new_v4().to_string();
        let account = azure.create_cosmos_account(&subscription, "e2e", &format!("acct-{name}"));
        let operator_app = azure.create_service_principal("dbgrant-operator");
        azure.assign_control_plane_role(
            &operator_app.principal_id,
            &account.resource_id,
            ControlPlaneRole::DocumentDbAccountContributor,
        );
        let admin = azure.admin();
        let mut operator_config =
            operator_azure_config(&azure, &operator_app.client_id, &operator_app.client_secret)
                .unwrap();
        operator_config.timing.lro_poll = Duration::from_millis(100);
        let admin_config =
            operator_azure_config(&azure, &admin.client_id, &admin.client_secret).unwrap();
        World {
            name: name.to_string(),
            client: kube.client().await.unwrap(),
            kubeconfig,
            dir,
            account_id: account.resource_id,
            issuer: kube.issuer(),
            identity_group: format!("/subscriptions/{subscription}/resourceGroups/e2e"),
            admin: AzureCosmos::new(admin_config, None).await.unwrap(),
            operator_config,
            operator_options,
            operator: Mutex::new(None),
            identities: Mutex::new(Vec::new()),
            _exclusive: None,
            sims: Some(Sims { kube, azure }),
            limit: Duration::from_secs(30),
        }
    }

    async fn real(
        name: &str,
        dir: PathBuf,
        kubeconfig: PathBuf,
        operator_options: OperatorOptions,
    ) -> World {
        let need = |n: &str| {
            env(n).unwrap_or_else(|| panic!("{n} must be set when DBGRANT_E2E_KUBECONFIG is"))
        };
        // The operator's own variables (AZURE_CLOUD, AZURE_AUTHORITY_HOST, DBGRANT_ARM_ENDPOINT,
        // DBGRANT_AZURE_EXTRA_CA_FILE, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET), read by its own
        // parser, so sovereign and private clouds work here as they do in `dbgrant run`.
        #[derive(clap::Parser)]
        struct FromEnv {
            #[command(flatten)]
            azure: AzureArgs,
        }
        let exclusive = real_environment_lock().await;
        let tenant = need("AZURE_TENANT_ID");
        let config = <FromEnv as clap::Parser>::try_parse_from(["e2e"])
            .expect("the Azure variables parse")
            .azure
            .to_config(Some(&tenant))
            .expect("the Azure variables name a cloud, a client id and a client secret");
        let yaml = std::fs::read_to_string(&kubeconfig).unwrap();
        let kube_config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::from_yaml(&yaml).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        World {
            name: name.to_string(),
            client: kube::Client::try_from(kube_config).unwrap(),
            kubeconfig,
            dir,
            account_id: need("DBGRANT_E2E_COSMOS_ACCOUNT_ID"),
            issuer: need("DBGRANT_E2E_OIDC_ISSUER"),
            identity_group: need("DBGRANT_E2E_IDENTITY_GROUP"),
            admin: AzureCosmos::new(config.clone(), None).await.unwrap(),
            operator_config: config,
            operator_options,
            operator: Mutex::new(None),
            identities: Mutex::new(Vec::new()),
            _exclusive: Some(exclusive),
            sims: None,
            // Real RBAC takes minutes to propagate.
            limit: Duration::from_secs(env("DBGRANT_E2E_TIMEOUT_SECONDS").map_or(600, |s| {
                s.parse()
                    .expect("DBGRANT_E2E_TIMEOUT_SECONDS is a number of seconds")
            })),
        }
    }

    /// CRDs, the test's namespace (labelled for its target) and the target.
    async fn setup(&self, options: &WorldOptions) {
        for crd in dbgrant::api::crds() {
            dbgrant_sim::apply::apply(
                &self.client,
                &serde_json::to_value(&crd).unwrap(),
                "default",
            )
            .await
            .unwrap();
        }
        self.namespace_with_team(&self.name, &self.name).await;
        // The operator's own namespace, as its install would have made it.
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}});
        dbgrant_sim::apply::apply(&self.client, &ns, "default")
            .await
            .unwrap();
        let target = json!({
            "apiVersion": "dbgrant.io/v1alpha1",
            "kind": "DatabaseTarget",
            "metadata": {"name": self.name},
            "spec": {
                "cosmos": {"accountResourceId": self.account_id},
                "allowedNamespaces": {"matchLabels": {"dbgrant.io/team": self.name}},
                "allowedRoles": options.allowed_roles,
            },
        });
        dbgrant_sim::apply::apply(&self.client, &target, "default")
            .await
            .unwrap();
    }

    async fn namespace_with_team(&self, namespace: &str, team: &str) {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": {"dbgrant.io/team": team}}});
        dbgrant_sim::apply::apply(&self.client, &ns, "default")
            .await
            .unwrap();
    }

    /// The simulators, or `None` (with a note on stderr) against a real environment.
    pub fn sims(&self) -> Option<&Sims> {
        if self.sims.is_none() {
            eprintln!(
                "{}: fault injection needs the simulators; skipped against a real environment",
                self.name
            );
        }
        self.sims.as_ref()
    }

    /// The test's namespace and team label.
    pub fn team(&self) -> &str {
        &self.name
    }

    /// The account the target points at.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The test's DatabaseTarget (named after the test, like its namespace).
    pub fn target_name(&self) -> &str {
        &self.name
    }

    /// The account's role definitions, read through ARM.
    pub async fn role_definitions(&self) -> Vec<RoleDefinition> {
        within(
            self.limit,
            "listing role definitions",
            self.admin.list_role_definitions(&self.account_id),
        )
        .await
        .unwrap()
    }

    /// Start (or restart) the operator.
    pub async fn start_operator(&self) {
        let operator = Operator::start(
            &self.kubeconfig,
            self.operator_config.clone(),
            &self.operator_options,
        )
        .await
        .unwrap();
        *self.operator.lock().unwrap() = Some(operator);
    }

    /// Restart the operator trusting `ca_pem` as well (a database server's CA, added to its
    /// extra CA bundle as a deployment would), and return its Azure settings.
    pub async fn restart_operator_trusting(&mut self, ca_pem: &str) -> AzureConfig {
        let bundle = match &self.operator_config.extra_ca_pem {
            Some(pem) => format!("{pem}\n{ca_pem}"),
            None => ca_pem.to_string(),
        };
        self.operator_config.extra_ca_pem = Some(bundle);
        self.kill_operator().await;
        self.start_operator().await;
        self.operator_config.clone()
    }

    /// The operator's Azure settings (its principal, cloud and trusted CAs): against a real
    /// environment, the tests' own principal too.
    pub fn operator_config(&self) -> &AzureConfig {
        &self.operator_config
    }

    /// Whether the operator is running (started and not stopped on its own, as after a panic
    /// that ended it).
    pub fn operator_running(&self) -> bool {
        self.operator
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|operator| !operator.is_finished())
    }

    /// Kill the operator mid-flight.
    pub async fn kill_operator(&self) {
        let operator = self.operator.lock().unwrap().take();
        if let Some(operator) = operator {
            operator.kill().await;
        }
    }

    /// A managed identity.
    pub async fn identity(&self, name: &str) -> Identity {
        let id = format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}-{name}",
            self.identity_group, self.name
        );
        self.identities.lock().unwrap().push(id.clone());
        let arm = self.admin.arm();
        let url = arm.url(&id, IDENTITY_API_VERSION).unwrap();
        arm.put(
            "identity_put",
            "creating an identity",
            url.clone(),
            &json!({"location": "westeurope"}),
        )
        .await
        .unwrap();
        let body: Value = arm
            .get("identity_get", "reading an identity", url)
            .await
            .unwrap();
        Identity {
            resource_id: id,
            client_id: body["properties"]["clientId"].as_str().unwrap().to_string(),
            principal_id: body["properties"]["principalId"]
                .as_str()
                .unwrap()
                .to_string(),
        }
    }

    /// Federate `identity` to ServiceAccount `sa` of the test's namespace.
    pub async fn federate(&self, identity: &Identity, sa: &str) {
        self.federate_in(identity, &self.name.clone(), sa).await;
    }

    /// Federate `identity` to ServiceAccount `sa` of `namespace`.
    pub async fn federate_in(&self, identity: &Identity, namespace: &str, sa: &str) {
        let id = format!(
            "{}/federatedIdentityCredentials/{namespace}-{sa}",
            identity.resource_id
        );
        let arm = self.admin.arm();
        let body = json!({"properties": {"issuer": self.issuer, "subject": format!("system:serviceaccount:{namespace}:{sa}"), "audiences": [EXCHANGE_AUDIENCE]}});
        arm.put(
            "fic_put",
            "federating an identity",
            arm.url(&id, IDENTITY_API_VERSION).unwrap(),
            &body,
        )
        .await
        .unwrap();
    }

    /// A ServiceAccount in the test's namespace, annotated with `client_id` if given.
    pub async fn service_account(&self, name: &str, client_id: Option<&str>) {
        self.service_account_in(&self.name.clone(), name, client_id)
            .await;
    }

    /// A ServiceAccount in `namespace`.
    pub async fn service_account_in(&self, namespace: &str, name: &str, client_id: Option<&str>) {
        let mut sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}});
        if let Some(client_id) = client_id {
            sa["metadata"]["annotations"] = json!({"azure.workload.identity/client-id": client_id});
        }
        dbgrant_sim::apply::apply(&self.client, &sa, namespace)
            .await
            .unwrap();
    }

    /// Point ServiceAccount `name` at another identity.
    pub async fn annotate_service_account(&self, name: &str, client_id: &str) {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.name);
        let patch =
            json!({"metadata": {"annotations": {"azure.workload.identity/client-id": client_id}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// The usual workload: an identity federated to a ServiceAccount that names it.
    pub async fn workload(&self, sa: &str) -> Identity {
        let identity = self.identity(sa).await;
        self.federate(&identity, sa).await;
        self.service_account(sa, Some(&identity.client_id)).await;
        identity
    }

    /// A second namespace the target also allows.
    pub async fn other_namespace(&self, suffix: &str) -> String {
        let namespace = format!("{}-{suffix}", self.name);
        self.namespace_with_team(&namespace, &self.name).await;
        namespace
    }

    /// Relabel the test's namespace (the target selects `dbgrant.io/team=<team()>`).
    pub async fn set_namespace_label(&self, team: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let patch = json!({"metadata": {"labels": {"dbgrant.io/team": team}}});
        api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    pub fn grants(&self) -> Api<DatabaseAccessGrant> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Apply a grant on the test's target (`spec.target` is filled in).
    pub async fn grant(&self, name: &str, mut spec: Value) {
        spec["target"] = json!(self.name);
        self.grant_raw(name, spec).await;
    }

    /// Apply a grant with exactly this spec.
    pub async fn grant_raw(&self, name: &str, spec: Value) {
        let grant = json!({"apiVersion": "dbgrant.io/v1alpha1", "kind": "DatabaseAccessGrant", "metadata": {"name": name, "namespace": self.name}, "spec": spec});
        self.grants()
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&grant),
            )
            .await
            .unwrap();
    }

    /// Wait until `done` holds for grant `name`.
    pub async fn wait_grant(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&DatabaseAccessGrant) -> bool,
    ) -> DatabaseAccessGrant {
        let api = self.grants();
        let mut last = None;
        let found = tokio::time::timeout(self.limit, async {
            loop {
                if let Ok(Some(grant)) = api.get_opt(name).await {
                    if done(&grant) {
                        return grant;
                    }
                    last = Some(grant);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "grant {name}: {what} not reached within {:?}; last status: {:?}",
                self.limit,
                last.and_then(|g| g.status)
            )
        })
    }

    /// Wait until grant `name` is Ready for its current generation.
    pub async fn wait_ready(&self, name: &str) -> DatabaseAccessGrant {
        self.wait_grant(name, "Ready", is_ready).await
    }

    /// Wait until grant `name` is not Ready with `reason`.
    pub async fn wait_reason(&self, name: &str, reason: Reason) -> DatabaseAccessGrant {
        self.wait_grant(name, reason.as_str(), |g| {
            ready_reason(g).as_deref() == Some(reason.as_str()) && !is_ready(g)
        })
        .await
    }

    /// Wait until an event with `reason` was recorded about grant `name`.
    pub async fn wait_event(&self, name: &str, reason: &str) {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.name);
        let found = tokio::time::timeout(self.limit, async {
            loop {
                if let Ok(events) = api.list(&ListParams::default()).await
                    && events.items.iter().any(|e| {
                        e.reason.as_deref() == Some(reason)
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    })
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {reason} event about {name} within {:?}", self.limit));
    }

    /// `kubectl wait --for=condition=Ready` on grant `name`, with the real kubectl.
    pub async fn kubectl_wait_ready(&self, name: &str) {
        let cache = self.dir.join("kubectl-cache");
        let timeout = format!("--timeout={}s", self.limit.as_secs());
        let output = tokio::process::Command::new("kubectl")
            .args([
                "--kubeconfig",
                &self.kubeconfig.display().to_string(),
                "--cache-dir",
                &cache.display().to_string(),
                "-n",
                &self.name,
                "wait",
                "--for=condition=Ready",
                &format!("databaseaccessgrant/{name}"),
                &timeout,
            ])
            .kill_on_drop(true)
            .output();
        let output = within(self.limit + Duration::from_secs(10), "kubectl wait", output)
            .await
            .expect("kubectl runs");
        assert!(
            output.status.success(),
            "kubectl wait failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("condition met"),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    /// Run the real kubectl in the test's namespace and return its standard output; a
    /// failure fails the test.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        let cache = self.dir.join("kubectl-cache");
        let output = tokio::process::Command::new("kubectl")
            .args([
                "--kubeconfig",
                &self.kubeconfig.display().to_string(),
                "--cache-dir",
                &cache.display().to_string(),
                "-n",
                &self.name,
            ])
            .args(args)
            .kill_on_drop(true)
            .output();
        let output = within(self.limit, "kubectl", output)
            .await
            .expect("kubectl runs");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Delete grant `name` and wait until it is gone (its finalizer ran).
    pub async fn delete_grant(&self, name: &str) {
        self.grants()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        self.wait_grant_gone(name, self.limit).await;
    }

    /// Wait (at most `limit`) until grant `name` is gone: its finalizer ran.
    pub async fn wait_grant_gone(&self, name: &str, limit: Duration) {
        let api = self.grants();
        let gone = tokio::time::timeout(limit, async {
            while api.get_opt(name).await.ok().flatten().is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        gone.unwrap_or_else(|_| panic!("grant {name} still there after {limit:?}"));
    }

    /// The account's assignments for `principal`, read through ARM.
    pub async fn assignments_of(&self, principal: &str) -> Vec<RoleAssignment> {
        let all = within(
            self.limit,
            "listing assignments",
            self.admin.list_role_assignments(&self.account_id),
        )
        .await
        .unwrap();
        all.into_iter()
            .filter(|a| a.principal_id.eq_ignore_ascii_case(principal))
            .collect()
    }

    /// Write an assignment as someone other than the operator would, through ARM.
    pub async fn put_assignment_out_of_band(
        &self,
        assignment: &RoleAssignment,
    ) -> Result<(), dbgrant::backend::BackendError> {
        within(
            self.limit,
            "writing an assignment",
            self.admin.put_role_assignment(&self.account_id, assignment),
        )
        .await
    }

    /// Delete an assignment behind the operator's back, through ARM, retrying while another
    /// RBAC write holds the account's lock (412), as anyone scripting against Cosmos DB must.
    pub async fn delete_assignment_out_of_band(&self, guid: &str) {
        let delete = async {
            loop {
                match self
                    .admin
                    .delete_role_assignment(&self.account_id, guid)
                    .await
                {
                    Err(error) if error.reason == Reason::AccountBusy => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    result => return result,
                }
            }
        };
        within(self.limit, "deleting an assignment", delete)
            .await
            .unwrap();
    }

    /// Poll `check` until it yields a value.
    pub async fn eventually<T, F, Fut>(&self, what: &str, limit: Duration, check: F) -> T
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let limit = if self.sims.is_some() {
            limit
        } else {
            self.limit
        };
        let found = tokio::time::timeout(limit, async {
            loop {
                if let Some(value) = check().await {
                    return value;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
    }

    /// Stop the operator; against a real environment first delete what the test made, while
    /// the operator still runs to revoke assignments and remove custom roles.
    pub async fn finish(self) {
        if self.sims.is_none() {
            self.tear_down().await;
        }
        let operator = self.operator.lock().unwrap().take();
        if let Some(operator) = operator {
            let _ = within(
                Duration::from_secs(30),
                "stopping the operator",
                operator.stop(),
            )
            .await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait for the machine-wide lock that runs real-environment tests one at a time (nextest
/// runs each test in its own process, so an in-process mutex would not do).
async fn real_environment_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("dbgrant-e2e-real-environment.lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        file.lock()
            .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
        file
    })
    .await
    .unwrap()
}

impl World {
    /// Delete the test's grants (in every namespace), its target, namespaces and identities,
    /// waiting for each finalizer. Failures are printed, not fatal: the test has its verdict.
    async fn tear_down(&self) {
        let grants: Api<DatabaseAccessGrant> = Api::all(self.client.clone());
        let mine = |g: &DatabaseAccessGrant| g.spec.target == self.name;
        if let Ok(list) = grants.list(&ListParams::default()).await {
            for grant in list.items.iter().filter(|g| mine(g)) {
                let api: Api<DatabaseAccessGrant> = Api::namespaced(
                    self.client.clone(),
                    grant.metadata.namespace.as_deref().unwrap_or_default(),
                );
                let _ = api
                    .delete(&grant.name_any(), &DeleteParams::default())
                    .await;
            }
        }
        let grants_gone = tokio::time::timeout(self.limit, async {
            while grants
                .list(&ListParams::default())
                .await
                .map_or(true, |l| l.items.iter().any(mine))
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        if grants_gone.await.is_err() {
            eprintln!(
                "{}: grants still deleting after {:?}",
                self.name, self.limit
            );
        }
        let targets: Api<DatabaseTarget> = Api::all(self.client.clone());
        let _ = targets.delete(&self.name, &DeleteParams::default()).await;
        let target_gone = tokio::time::timeout(self.limit, async {
            while !matches!(targets.get_opt(&self.name).await, Ok(None)) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        if target_gone.await.is_err() {
            eprintln!(
                "{}: target still deleting after {:?}",
                self.name, self.limit
            );
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if let Ok(list) = namespaces.list(&ListParams::default()).await {
            let prefix = format!("{}-", self.name);
            for ns in list.items {
                let name = ns.name_any();
                if name == self.name || name.starts_with(&prefix) {
                    let _ = namespaces.delete(&name, &DeleteParams::default()).await;
                }
            }
        }
        let identities = std::mem::take(&mut *self.identities.lock().unwrap());
        let arm = self.admin.arm();
        for id in identities {
            if let Ok(url) = arm.url(&id, IDENTITY_API_VERSION)
                && let Err(error) = arm
                    .delete("identity_delete", "deleting a test identity", url)
                    .await
            {
                eprintln!("{}: identity {id} left behind: {error}", self.name);
            }
        }
    }
}

/// Whether a grant is Ready for its current generation.
pub fn is_ready(grant: &DatabaseAccessGrant) -> bool {
    let Some(status) = &grant.status else {
        return false;
    };
    status.observed_generation == grant.metadata.generation
        && status.conditions.iter().any(|c| {
            c.type_ == "Ready"
                && c.status == "True"
                && c.observed_generation == grant.metadata.generation
        })
}

/// The Ready condition's reason.
pub fn ready_reason(grant: &DatabaseAccessGrant) -> Option<String> {
    grant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}

/// `(status, reason)` of the grant's condition `type_`.
pub fn condition(grant: &DatabaseAccessGrant, type_: &str) -> Option<(String, String)> {
    grant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}
