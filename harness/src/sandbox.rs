//! The sandbox: the Kubernetes and Azure simulators, the Azure resources the examples refer to
//! (Cosmos DB accounts, workload identities federated to their ServiceAccounts, the operator's
//! own app and its rights), the examples applied, and the real operator running in-process.

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

/// The audience Azure workload identity federates ServiceAccount tokens with.
pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// How to run the sandbox.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Where the kubeconfig and the Azure simulator's state file go.
    pub state_dir: PathBuf,
    /// The manifests to apply (the repository's `deploy/examples`).
    pub examples_dir: PathBuf,
    /// How the operator runs.
    pub operator: OperatorOptions,
}

/// A running sandbox.
pub struct Sandbox {
    /// The Kubernetes simulator.
    pub kube: KubeSim,
    /// The Azure simulator.
    pub azure: AzureSim,
    /// The operator.
    pub operator: Operator,
    /// An admin client of the Kubernetes simulator.
    pub client: kube::Client,
    /// Path of the kubeconfig written.
    pub kubeconfig: PathBuf,
    /// Path of the Azure state file written.
    pub azure_state: PathBuf,
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

/// A simulated Azure configuration for the operator: the simulator's endpoints and CA, and
/// timing short enough for interactive use.
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
    /// Start everything and apply the examples.
    ///
    /// # Errors
    /// When a simulator cannot start, a manifest cannot be read or applied, or the operator
    /// cannot be configured.
    pub async fn start(options: SandboxOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.state_dir)
            .with_context(|| format!("creating {}", options.state_dir.display()))?;
        let kube = KubeSim::start(KubeSimConfig::default()).await?;
        let azure = AzureSim::start(AzureSimConfig {
            oidc_trusted_ca_pems: vec![kube.ca_pem()],
            ..AzureSimConfig::default()
        })
        .await?;
        let kubeconfig = options.state_dir.join("kubeconfig");
        dbgrant_sim::write_atomically(&kubeconfig, &kube.kubeconfig_yaml())?;
        let azure_state = options.state_dir.join("azure.json");
        dbgrant_sim::write_atomically(
            &azure_state,
            &serde_json::to_string_pretty(&azure.state())?,
        )?;

        let client = kube.client().await?;
        for crd in dbgrant::api::crds() {
            apply(&client, &serde_json::to_value(&crd)?, "default").await?;
        }
        let manifests = read_manifests(&options.examples_dir)?;
        let operator_app = azure.create_service_principal("dbgrant-operator");
        let issuer = kube.issuer();
        provision(&azure, &manifests, &operator_app.principal_id, &issuer)?;
        for manifest in &manifests {
            apply(&client, manifest, "default").await?;
        }
        let config =
            operator_azure_config(&azure, &operator_app.client_id, &operator_app.client_secret)?;
        let operator = Operator::start(&kubeconfig, config, &options.operator).await?;
        Ok(Self {
            kube,
            azure,
            operator,
            client,
            kubeconfig,
            azure_state,
        })
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

    /// Wait until every grant is Ready, calling `progress` with each grant whose conditions
    /// changed. Returns the grants.
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
            if all_ready(&grants) {
                return Ok(grants);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "not Ready within {limit:?}: {}",
                    not_ready(&grants).join("; ")
                );
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

/// Create what the manifests refer to in Azure: each target's account (with the operator's
/// right to manage its RBAC) and, for each ServiceAccount naming a client id, a managed
/// identity with that client id federated to it.
fn provision(
    azure: &AzureSim,
    manifests: &[Value],
    operator_principal: &str,
    issuer: &str,
) -> anyhow::Result<()> {
    let mut subscription = None;
    for manifest in manifests.iter().filter(|m| m["kind"] == "DatabaseTarget") {
        let Some(id) = manifest["spec"]["cosmos"]["accountResourceId"].as_str() else {
            continue;
        };
        let (sub, rg, name) =
            arm_parts(id).with_context(|| format!("'{id}' is not an account id"))?;
        let account = azure.create_cosmos_account(&sub, &rg, &name);
        azure.assign_control_plane_role(
            operator_principal,
            &account.resource_id,
            ControlPlaneRole::DocumentDbAccountContributor,
        );
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
    Ok(())
}

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
    let Some(status) = &grant.status else {
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
