//! The sandbox: the Kubernetes and Azure simulators, the Azure resources the examples refer to
//! (Cosmos DB accounts, workload identities federated to their ServiceAccounts), the operator
//! installed from its chart as a user would (its own managed identity federated to the chart's
//! ServiceAccount and given its rights on the accounts), its pod run in-process exactly as the
//! Deployment says, and the examples applied.

mod identity;
mod install;
mod pod;
mod postgres;
mod sql;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use dbgrant::api::DatabaseAccessGrant;
use dbgrant::azure::{AzureConfig, OperatorCredential};
use kube::api::{Api, ListParams};
use serde_json::Value;

use dbgrant_sim::apply::{apply, read_manifests};
use dbgrant_sim::azure::{AzureSim, AzureSimConfig, ControlPlaneRole};
use dbgrant_sim::kube::{KubeSim, KubeSimConfig};

use crate::operator::{Operator, OperatorOptions};

pub use identity::{CreatedIdentity, create_identity};
pub use install::{
    Install, NAMESPACE, RELEASE, SERVICE_ACCOUNT, deploy_manifest, resolve as resolve_install,
};
pub use pod::{EXCHANGE_AUDIENCE, OperatorPod};
pub use postgres::SandboxPostgres;
pub use sql::SandboxSql;

/// How to run the sandbox.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Where the kubeconfig and the Azure simulator's state file go.
    pub state_dir: PathBuf,
    /// The manifests to apply (the repository's `deploy/examples`).
    pub examples_dir: PathBuf,
    /// How the operator runs (the chart's `operator.resyncInterval` and `concurrency`).
    pub operator: OperatorOptions,
    /// How the operator is installed.
    pub install: Install,
}

/// A running sandbox.
pub struct Sandbox {
    /// The Kubernetes simulator.
    pub kube: KubeSim,
    /// The Azure simulator.
    pub azure: AzureSim,
    /// The operator, running as its pod would.
    pub operator: Operator,
    /// The operator's pod: its name, ServiceAccount, settings and HTTP address.
    pub pod: OperatorPod,
    /// How the operator was installed, in one line.
    pub installed: String,
    /// Why Helm was not used, when it was not.
    pub install_note: Option<String>,
    /// An admin client of the Kubernetes simulator.
    pub client: kube::Client,
    /// Path of the kubeconfig written.
    pub kubeconfig: PathBuf,
    /// Path of the Azure state file written.
    pub azure_state: PathBuf,
    /// The example grants, by `namespace/name`: the ones the sandbox judges.
    pub examples: std::collections::BTreeSet<String>,
    /// The PostgreSQL serving the examples' PostgreSQL target, when there is one and it could
    /// be started.
    pub postgres: Option<SandboxPostgres>,
    /// What became of the examples' PostgreSQL target when it is not served as named (no
    /// PostgreSQL installed, or its port taken).
    pub postgres_note: Option<String>,
    /// The T-SQL stand-in serving the examples' SQL target, when there is one.
    pub sql: Option<SandboxSql>,
    /// What became of the examples' SQL target when it is not served as named (its port
    /// taken).
    pub sql_note: Option<String>,
    tokens: TokenRotation,
}

/// Refreshes the pod's projected tokens as the kubelet does; stops with the sandbox.
struct TokenRotation(tokio::task::JoinHandle<()>);

impl Drop for TokenRotation {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The first `DatabaseTarget` of `manifests` with a `spec.{block}` (`postgres`, `sql`): its
/// manifest (for pointing it elsewhere), its name, and a copy of that block.
fn first_target<'a>(
    manifests: &'a mut [Value],
    block: &str,
) -> Option<(&'a mut Value, String, Value)> {
    let manifest = manifests
        .iter_mut()
        .find(|m| m["kind"] == "DatabaseTarget" && m["spec"][block].is_object())?;
    let target = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let spec = manifest["spec"][block].clone();
    Some((manifest, target, spec))
}

/// The pieces of an ARM id `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}`.
fn arm_parts(id: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [
            "subscriptions",
            sub,
            "resourceGroups",
            rg,
            "providers",
            _,
            _,
            name,
        ] => Some(((*sub).into(), (*rg).into(), (*name).into())),
        _ => None,
    }
}

/// A simulated Azure configuration for an in-process operator with a client secret (the
/// end-to-end tests): the simulator's endpoints and CA, and timing short enough for tests.
///
/// # Errors
/// When the simulator's URLs do not parse.
pub fn operator_azure_config(
    azure: &AzureSim,
    client_id: &str,
    client_secret: &str,
) -> anyhow::Result<AzureConfig> {
    let mut config = AzureConfig::custom(
        azure.authority_host().parse()?,
        azure.arm_endpoint().parse()?,
        Some(azure.ca_pem()),
        azure.tenant_id(),
        OperatorCredential::ClientSecret {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        },
    );
    config.timing.lro_poll = Duration::from_millis(200);
    config.timing.retry_base = Duration::from_millis(100);
    Ok(config)
}

impl Sandbox {
    /// Start everything: the simulators, the Azure resources, the operator installed from its
    /// chart and running as its pod, then the examples.
    ///
    /// # Errors
    /// When a simulator cannot start, the install fails, a manifest cannot be read or applied,
    /// or the operator's pod cannot start (as its container would exit).
    pub async fn start(options: SandboxOptions) -> anyhow::Result<Self> {
        let state_dir = &options.state_dir;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let (install, install_note) = install::resolve(&options.install)?;
        let kube = KubeSim::start(KubeSimConfig::default()).await?;
        let azure = AzureSim::start(AzureSimConfig {
            oidc_trusted_ca_pems: vec![kube.ca_pem()],
            ..AzureSimConfig::default()
        })
        .await?;
        let kubeconfig = state_dir.join("kubeconfig");
        dbgrant_sim::write_atomically(&kubeconfig, &kube.kubeconfig_yaml())?;
        let client = kube.client().await?;
        let issuer = kube.issuer();

        let mut manifests = read_manifests(&options.examples_dir)?;
        let (subscription, group) = provision(&azure, &manifests, &issuer)?;
        let (operator_identity, operator_principal) =
            operator_identity(&azure, &manifests, &issuer, &subscription)?;
        let (postgres, postgres_note) = match postgres::start(
            &azure,
            &mut manifests,
            state_dir,
            &operator_principal,
        )
        .await
        {
            Ok(Some(pg)) => {
                let note = pg.moved_from.map(|port| {
                    format!(
                        "port {port} was taken: PostgreSQL target {} is served on {} instead",
                        pg.target, pg.front.port
                    )
                });
                (Some(pg), note)
            }
            Ok(None) => (None, None),
            // Cosmos DB needs no PostgreSQL: its examples go on without the others.
            Err(error) => {
                let dropped = postgres::without_postgres(&mut manifests);
                let note = format!(
                    "no PostgreSQL ({error:#}): the PostgreSQL target and its grants ({}) are not applied; the Cosmos DB examples go on",
                    dropped.join(", ")
                );
                (None, Some(note))
            }
        };
        let sql = sql::start(
            &azure,
            &mut manifests,
            state_dir,
            &operator_identity,
            &operator_principal,
        )
        .await
        .context("starting the T-SQL stand-in")?;
        let sql_note = sql.as_ref().and_then(|s| {
            s.moved_from.map(|port| {
                format!(
                    "port {port} was taken: SQL target {} is served on {} instead",
                    s.target, s.server.port
                )
            })
        });
        let mut state = serde_json::to_value(azure.state())?;
        // What `sandbox identity create` needs beyond the simulator's own state.
        state["oidcIssuer"] = Value::from(issuer.clone());
        state["identityResourceGroup"] = Value::from(format!(
            "/subscriptions/{subscription}/resourceGroups/{group}"
        ));
        let azure_state = state_dir.join("azure.json");
        dbgrant_sim::write_atomically(&azure_state, &serde_json::to_string_pretty(&state)?)?;
        let azure_ca = state_dir.join("azure-ca.pem");
        dbgrant_sim::write_atomically(&azure_ca, &azure.ca_pem())?;
        // What the operator trusts beyond public roots: the simulated cloud's CA, and the
        // PostgreSQL front's (as a private cloud's servers would need).
        let trusted_ca = state_dir.join("trusted-ca.pem");
        let mut bundle = azure.ca_pem();
        if let Some(pg) = &postgres {
            bundle = format!("{bundle}\n{}", pg.front.ca_pem);
        }
        if let Some(sql) = &sql {
            bundle = format!("{bundle}\n{}", sql.server.ca_pem);
        }
        dbgrant_sim::write_atomically(&trusted_ca, &bundle)?;

        let settings = install::InstallSettings {
            client_id: operator_identity.clone(),
            tenant_id: azure.tenant_id(),
            authority_host: azure.authority_host(),
            arm_endpoint: azure.arm_endpoint(),
            extra_ca_file: std::path::absolute(&trusted_ca)?,
            resync_interval: format!("{}s", options.operator.resync_interval.as_secs().max(1)),
            concurrency: options.operator.concurrency,
        };
        let installed =
            install::install(&client, &kubeconfig, state_dir, &install, &settings).await?;

        let webhook = pod::Webhook {
            tenant_id: azure.tenant_id(),
            authority_host: azure.authority_host(),
        };
        let pod = OperatorPod::schedule(
            &client,
            &kube.url(),
            &kube.ca_pem(),
            (NAMESPACE, RELEASE),
            &std::path::absolute(state_dir)?,
            &webhook,
        )
        .await
        .context("starting the operator's pod")?;
        let operator = Operator::start_run(pod.args.clone())
            .await
            .with_context(|| format!("the operator's container in pod {} exited", pod.name))?;
        let tokens = TokenRotation(tokio::spawn({
            let (pod, client) = (pod.clone(), client.clone());
            async move {
                loop {
                    tokio::time::sleep(TOKEN_REFRESH).await;
                    if let Err(error) = pod.refresh_tokens(&client).await {
                        eprintln!("refreshing the operator pod's tokens failed: {error:#}");
                    }
                }
            }
        }));

        for manifest in &manifests {
            apply(&client, manifest, "default").await?;
        }
        let examples = manifests
            .iter()
            .filter(|m| m["kind"] == "DatabaseAccessGrant")
            .map(|m| {
                format!(
                    "{}/{}",
                    m["metadata"]["namespace"].as_str().unwrap_or("default"),
                    m["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect();
        Ok(Self {
            kube,
            azure,
            operator,
            pod,
            installed: installed.description,
            install_note,
            client,
            kubeconfig,
            azure_state,
            examples,
            postgres,
            postgres_note,
            sql,
            sql_note,
            tokens,
        })
    }

    /// Start the operator's container again (after it exited), as the kubelet restarts it.
    /// The exited one is dropped.
    ///
    /// # Errors
    /// When it cannot start.
    pub async fn restart_operator(&mut self) -> anyhow::Result<()> {
        self.pod.refresh_tokens(&self.client).await?;
        self.operator = Operator::start_run(self.pod.args.clone()).await?;
        Ok(())
    }

    /// Stop the operator, then everything else.
    ///
    /// # Errors
    /// When the operator failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        drop(self.tokens);
        self.operator.stop().await
    }

    /// Every grant, by `namespace/name`.
    ///
    /// # Errors
    /// When the grants cannot be listed.
    pub async fn grants(&self) -> anyhow::Result<BTreeMap<String, DatabaseAccessGrant>> {
        let api: Api<DatabaseAccessGrant> = Api::all(self.client.clone());
        let list = api.list(&ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .map(|g| {
                (
                    format!(
                        "{}/{}",
                        g.metadata.namespace.clone().unwrap_or_default(),
                        g.metadata.name.clone().unwrap_or_default()
                    ),
                    g,
                )
            })
            .collect())
    }

    /// The example grants among `grants`.
    pub fn example_grants(
        &self,
        grants: &BTreeMap<String, DatabaseAccessGrant>,
    ) -> BTreeMap<String, DatabaseAccessGrant> {
        grants
            .iter()
            .filter(|(key, _)| self.examples.contains(*key))
            .map(|(key, grant)| (key.clone(), grant.clone()))
            .collect()
    }

    /// The example grants not among `grants` (deleted since).
    pub fn missing_examples(&self, grants: &BTreeMap<String, DatabaseAccessGrant>) -> Vec<String> {
        self.examples
            .iter()
            .filter(|key| !grants.contains_key(*key))
            .cloned()
            .collect()
    }

    /// Wait until every example grant is Ready, calling `progress` with each grant whose
    /// conditions changed. Returns the example grants.
    ///
    /// # Errors
    /// When `limit` passes first (the error lists what is not Ready, and why) or the API fails.
    pub async fn wait_until_ready(
        &self,
        limit: Duration,
        mut progress: impl FnMut(&str, &DatabaseAccessGrant),
    ) -> anyhow::Result<BTreeMap<String, DatabaseAccessGrant>> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut watch = GrantWatch::default();
        loop {
            let grants = self.grants().await?;
            for key in watch.changed(&grants) {
                progress(&key, &grants[&key]);
            }
            let examples = self.example_grants(&grants);
            let missing = self.missing_examples(&grants);
            if missing.is_empty() && all_ready(&examples) {
                return Ok(examples);
            }
            if tokio::time::Instant::now() >= deadline {
                let mut waiting = not_ready(&examples);
                waiting.extend(missing.iter().map(|key| format!("{key}: not found")));
                anyhow::bail!("not Ready within {limit:?}: {}", waiting.join("; "));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// How often the grants are looked at: quick enough to show each step on its way to Ready.
pub const POLL: Duration = Duration::from_millis(250);

/// Which grants' conditions changed since the last look (by their one-line summary).
#[derive(Debug, Default)]
pub struct GrantWatch {
    last: BTreeMap<String, String>,
}

impl GrantWatch {
    /// The keys of the grants seen before that are gone now (deleted).
    pub fn deleted(&self, grants: &BTreeMap<String, DatabaseAccessGrant>) -> Vec<String> {
        self.last
            .keys()
            .filter(|key| !grants.contains_key(*key))
            .cloned()
            .collect()
    }

    /// The keys of the grants that are new or whose conditions changed since the last call;
    /// deleted grants are forgotten, so one created again under that name shows up again.
    pub fn changed(&mut self, grants: &BTreeMap<String, DatabaseAccessGrant>) -> Vec<String> {
        self.last.retain(|key, _| grants.contains_key(key));
        let mut changed = Vec::new();
        for (key, grant) in grants {
            let summary = summary(grant);
            if self.last.get(key) != Some(&summary) {
                self.last.insert(key.clone(), summary);
                changed.push(key.clone());
            }
        }
        changed
    }
}

/// Whether there are grants and every one is Ready.
pub fn all_ready(grants: &BTreeMap<String, DatabaseAccessGrant>) -> bool {
    !grants.is_empty() && grants.values().all(is_ready)
}

/// One line per grant that is not Ready: its conditions and the Ready condition's message,
/// which says why (the operator writes the cause there).
pub fn not_ready(grants: &BTreeMap<String, DatabaseAccessGrant>) -> Vec<String> {
    grants
        .iter()
        .filter(|(_, g)| !is_ready(g))
        .map(|(key, grant)| match condition(grant, "Ready") {
            Some(ready) if !ready.message.is_empty() => {
                format!("{key}: {} ({})", summary(grant), ready.message)
            }
            _ => format!("{key}: {}", summary(grant)),
        })
        .collect()
}

/// The Cosmos DB accounts the manifests' targets name.
fn target_accounts(manifests: &[Value]) -> impl Iterator<Item = &str> {
    manifests
        .iter()
        .filter(|m| m["kind"] == "DatabaseTarget")
        .filter_map(|m| m["spec"]["cosmos"]["accountResourceId"].as_str())
}

/// Create what the manifests refer to in Azure: each target's account and, for each
/// ServiceAccount naming a client id, a managed identity with that client id federated to it.
/// Returns the subscription and resource group used (the first account's).
fn provision(
    azure: &AzureSim,
    manifests: &[Value],
    issuer: &str,
) -> anyhow::Result<(String, String)> {
    let mut subscription = None;
    for id in target_accounts(manifests) {
        let (sub, rg, name) =
            arm_parts(id).with_context(|| format!("'{id}' is not an account id"))?;
        azure.create_cosmos_account(&sub, &rg, &name);
        subscription.get_or_insert((sub, rg));
    }
    let (sub, rg) = subscription.unwrap_or_else(|| {
        (
            "00000000-0000-0000-0000-000000000000".into(),
            "dbgrant-sandbox".into(),
        )
    });
    for manifest in manifests.iter().filter(|m| m["kind"] == "ServiceAccount") {
        let Some(client_id) =
            manifest["metadata"]["annotations"]["azure.workload.identity/client-id"].as_str()
        else {
            continue;
        };
        let namespace = manifest["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        let identity = azure.create_identity_with_client_id(
            &sub,
            &rg,
            &format!("{namespace}-{name}"),
            Some(client_id),
        );
        azure.add_federated_credential(
            &identity.resource_id,
            &format!("kubernetes-{namespace}-{name}"),
            issuer,
            &format!("system:serviceaccount:{namespace}:{name}"),
            &[EXCHANGE_AUDIENCE],
        )?;
    }
    Ok((sub, rg))
}

/// The operator's own managed identity, as the README has users set it up: federated to the
/// chart's ServiceAccount and allowed to manage each target account's SQL RBAC. Its client id
/// and principal id.
fn operator_identity(
    azure: &AzureSim,
    manifests: &[Value],
    issuer: &str,
    subscription: &str,
) -> anyhow::Result<(String, String)> {
    let identity = azure.create_identity(subscription, "dbgrant-system", "dbgrant-operator");
    azure.add_federated_credential(
        &identity.resource_id,
        "kubernetes-dbgrant",
        issuer,
        &format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"),
        &[EXCHANGE_AUDIENCE],
    )?;
    for account in target_accounts(manifests) {
        azure.assign_control_plane_role(
            &identity.principal_id,
            account,
            ControlPlaneRole::DocumentDbAccountContributor,
        );
    }
    Ok((identity.client_id, identity.principal_id))
}

/// How often the pod's projected tokens are renewed: well inside their hour.
const TOKEN_REFRESH: Duration = Duration::from_secs(600);

/// Whether a grant's Ready condition is True.
pub fn is_ready(grant: &DatabaseAccessGrant) -> bool {
    condition(grant, "Ready").is_some_and(|c| c.status == "True")
}

fn condition<'a>(
    grant: &'a DatabaseAccessGrant,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    grant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
}

/// One line per grant: each condition's status, with the reason when not True.
pub fn summary(grant: &DatabaseAccessGrant) -> String {
    let Some(status) = grant.status.as_ref().filter(|s| !s.conditions.is_empty()) else {
        return "waiting for the operator".into();
    };
    status
        .conditions
        .iter()
        .map(|c| {
            if c.status == "True" {
                format!("{}=True", c.type_)
            } else {
                format!("{}={}({})", c.type_, c.status, c.reason)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The repository's examples, found from this crate's location.
pub fn default_examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}
