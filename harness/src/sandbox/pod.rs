//! The operator's pod, as the cluster would run it from the installed Deployment: its
//! environment from the pod template (field references resolved), a projected token of its
//! ServiceAccount for the API server (so kube-sim checks each call against the chart's RBAC),
//! and what the Azure workload identity webhook injects for a pod labelled
//! `azure.workload.identity/use: "true"`. The process itself is `dbgrant run` in-process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _};
use dbgrant::settings::RunArgs;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, ServiceAccount};
use kube::api::{Api, PostParams};

/// The audience Azure workload identity federates ServiceAccount tokens with.
pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
const USE_LABEL: &str = "azure.workload.identity/use";
const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// The kubelet's lifetime for a projected ServiceAccount token.
const KUBE_TOKEN_SECONDS: i64 = 3607;
/// The webhook's lifetime for the projected Azure token.
const AZURE_TOKEN_SECONDS: i64 = 3600;

/// What the workload identity webhook is configured with (its own defaults for the cluster).
#[derive(Clone, Debug)]
pub struct Webhook {
    /// Tenant for ServiceAccounts without a tenant-id annotation.
    pub tenant_id: String,
    /// `AZURE_AUTHORITY_HOST` it injects.
    pub authority_host: String,
}

/// The operator's pod: where its files are and what `dbgrant run` is started with.
#[derive(Clone, Debug)]
pub struct OperatorPod {
    /// The pod's name, as its ReplicaSet would name it.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The ServiceAccount it runs as.
    pub service_account: String,
    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub http_addr: SocketAddr,
    /// The settings `dbgrant run` parsed from the pod's arguments and environment.
    pub args: RunArgs,
    /// The pod's environment, resolved (for the sandbox to show).
    pub env: BTreeMap<String, String>,
    kube_token: PathBuf,
    azure_token: Option<PathBuf>,
}

impl OperatorPod {
    /// Schedule the pod of Deployment `namespace/name`: read its template and ServiceAccount,
    /// write its projected tokens under `state_dir/pods/NAME/`, and resolve its settings.
    ///
    /// # Errors
    /// When the Deployment or its ServiceAccount does not exist, the template uses something
    /// the sandbox cannot provide, or the settings do not parse (a crashing container).
    pub async fn schedule(
        admin: &kube::Client,
        kube_url: &str,
        kube_ca_pem: &str,
        deployment: (&str, &str),
        state_dir: &Path,
        webhook: &Webhook,
    ) -> anyhow::Result<Self> {
        let (namespace, deployment_name) = deployment;
        let found = Api::<Deployment>::namespaced(admin.clone(), namespace)
            .get(deployment_name)
            .await
            .with_context(|| format!("reading Deployment {namespace}/{deployment_name}"))?;
        let template = found
            .spec
            .map(|s| s.template)
            .context("the Deployment has no spec")?;
        let labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
        let spec = template.spec.context("the pod template has no spec")?;
        let service_account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let account = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
            .get_opt(&service_account)
            .await?
            .with_context(|| {
                format!(
                    "error looking up service account {namespace}/{service_account}: \
                     serviceaccount \"{service_account}\" not found (no pod is created)"
                )
            })?;
        let [container] = spec.containers.as_slice() else {
            anyhow::bail!("the operator's pod should have one container");
        };
        let name = format!("{deployment_name}-{}", pod_suffix());
        let dir = state_dir.join("pods").join(&name);

        // What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount; the
        // operator reads it through a kubeconfig since in-cluster discovery wants fixed paths.
        let sa_dir = dir.join("serviceaccount");
        let kube_token = sa_dir.join("token");
        dbgrant_sim::write_atomically(&sa_dir.join("ca.crt"), kube_ca_pem)?;
        dbgrant_sim::write_atomically(&sa_dir.join("namespace"), namespace)?;
        let kubeconfig = dir.join("kubeconfig");
        dbgrant_sim::write_atomically(
            &kubeconfig,
            &in_cluster_kubeconfig(kube_url, &sa_dir, namespace, &service_account),
        )?;

        let mut env = resolve_env(container, &name, namespace, &service_account)?;
        let annotations = account.metadata.annotations.unwrap_or_default();
        let mut azure_token = None;
        if labels.get(USE_LABEL).is_some_and(|v| v == "true") {
            // The webhook leaves variables the container sets alone.
            let token_file = dir.join("azure/tokens/azure-identity-token");
            let mut inject = vec![
                (
                    "AZURE_TENANT_ID",
                    annotations
                        .get(TENANT_ID_ANNOTATION)
                        .cloned()
                        .unwrap_or_else(|| webhook.tenant_id.clone()),
                ),
                ("AZURE_AUTHORITY_HOST", webhook.authority_host.clone()),
                (
                    "AZURE_FEDERATED_TOKEN_FILE",
                    token_file.display().to_string(),
                ),
            ];
            if let Some(client_id) = annotations.get(CLIENT_ID_ANNOTATION) {
                inject.push(("AZURE_CLIENT_ID", client_id.clone()));
            }
            for (key, value) in inject {
                env.entry(key.to_string()).or_insert(value);
            }
            azure_token = Some(token_file);
        }

        let http_addr = free_local_port()?;
        let args = run_args(&container.args.clone().unwrap_or_default(), &env, |argv| {
            argv.extend([
                "--kubeconfig".to_string(),
                kubeconfig.display().to_string(),
                // The pod's own network namespace gives it port 8080 to itself; on the host
                // that port may be taken, so the sandbox picks a free one.
                "--http-addr".to_string(),
                http_addr.to_string(),
            ]);
        })?;
        let pod = Self {
            name,
            namespace: namespace.to_string(),
            service_account,
            http_addr,
            args,
            env,
            kube_token,
            azure_token,
        };
        pod.refresh_tokens(admin).await?;
        Ok(pod)
    }

    /// Write fresh projected tokens, as the kubelet does before they expire.
    ///
    /// # Errors
    /// When a TokenRequest fails or a file cannot be written.
    pub async fn refresh_tokens(&self, admin: &kube::Client) -> anyhow::Result<()> {
        let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), &self.namespace);
        let mut files = vec![(self.kube_token.clone(), Vec::new(), KUBE_TOKEN_SECONDS)];
        if let Some(file) = &self.azure_token {
            files.push((
                file.clone(),
                vec![EXCHANGE_AUDIENCE.to_string()],
                AZURE_TOKEN_SECONDS,
            ));
        }
        for (file, audiences, seconds) in files {
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences,
                    expiration_seconds: Some(seconds),
                    bound_object_ref: None,
                },
                ..TokenRequest::default()
            };
            let token = accounts
                .create_token_request(&self.service_account, &PostParams::default(), &request)
                .await
                .with_context(|| format!("a token for {}", self.service_account))?
                .status
                .context("a TokenRequest without status")?
                .token;
            dbgrant_sim::write_atomically(&file, &token)?;
        }
        Ok(())
    }
}

/// A ReplicaSet-like pod name suffix: `<10>-<5>` of Kubernetes' safe alphabet.
fn pod_suffix() -> String {
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4();
    let chars: String = bytes
        .as_bytes()
        .iter()
        .take(15)
        .map(|b| char::from(SAFE[usize::from(*b) % SAFE.len()]))
        .collect();
    format!("{}-{}", &chars[..10], &chars[10..])
}

fn free_local_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

fn in_cluster_kubeconfig(url: &str, sa_dir: &Path, namespace: &str, account: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: in-cluster\n  cluster:\n    server: {url}\n    \
         certificate-authority: {ca}\nusers:\n- name: system:serviceaccount:{namespace}:{account}\n  user:\n    \
         tokenFile: {token}\ncontexts:\n- name: in-cluster\n  context:\n    cluster: in-cluster\n    \
         user: system:serviceaccount:{namespace}:{account}\n    namespace: {namespace}\n\
         current-context: in-cluster\n",
        ca = sa_dir.join("ca.crt").display(),
        token = sa_dir.join("token").display(),
    )
}

/// The container's environment with the downward API's field references resolved.
fn resolve_env(
    container: &Container,
    pod: &str,
    namespace: &str,
    account: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for EnvVar {
        name,
        value,
        value_from,
    } in container.env.iter().flatten()
    {
        let resolved = match (value, value_from) {
            (Some(value), _) => value.clone(),
            (None, None) => String::new(),
            (None, Some(from)) => {
                let path = from
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.as_str())
                    .with_context(|| {
                        format!("env {name}: only values and fieldRef are provided by the sandbox")
                    })?;
                match path {
                    "metadata.name" => pod.to_string(),
                    "metadata.namespace" => namespace.to_string(),
                    "spec.serviceAccountName" => account.to_string(),
                    "status.podIP" | "status.hostIP" => "127.0.0.1".to_string(),
                    other => anyhow::bail!("env {name}: fieldRef {other} is not provided"),
                }
            }
        };
        env.insert(name.clone(), resolved);
    }
    Ok(env)
}

/// Parse `dbgrant ARGS` with `env` as its whole environment: each variable becomes the flag
/// that reads it, and the sandbox's own environment is not consulted (a pod does not inherit
/// the host's). `extra` adds flags after them.
fn run_args(
    container_args: &[String],
    env: &BTreeMap<String, String>,
    extra: impl FnOnce(&mut Vec<String>),
) -> anyhow::Result<RunArgs> {
    anyhow::ensure!(
        container_args.first().map(String::as_str) == Some("run"),
        "the container's args {container_args:?} do not run the operator"
    );
    let flags: BTreeMap<String, String> = RunArgs::command()
        .get_arguments()
        .filter_map(|arg| {
            Some((
                arg.get_env()?.to_str()?.to_string(),
                arg.get_long()?.to_string(),
            ))
        })
        .collect();
    let mut argv = vec!["dbgrant".to_string()];
    argv.extend(container_args.iter().skip(1).cloned());
    for (name, value) in env {
        // The HTTP address is the sandbox's to choose (see `extra`).
        if name == "DBGRANT_HTTP_ADDR" {
            continue;
        }
        if let Some(long) = flags.get(name) {
            argv.push(format!("--{long}={value}"));
        }
    }
    extra(&mut argv);
    let matches = RunArgs::command()
        .mut_args(|arg| arg.env(None::<&str>))
        .try_get_matches_from(&argv)
        .context("the operator's container would exit: its settings do not parse")?;
    RunArgs::from_arg_matches(&matches).context("the operator's settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_becomes_the_flags_that_read_it() {
        let env: BTreeMap<String, String> = [
            ("DBGRANT_HTTP_ADDR", "0.0.0.0:8080"),
            ("DBGRANT_RESYNC_INTERVAL", "30s"),
            ("DBGRANT_LEADER_ELECTION", "true"),
            ("POD_NAMESPACE", "dbgrant"),
            ("AZURE_TENANT_ID", "t"),
            ("UNRELATED", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let args = run_args(&["run".into()], &env, |argv| {
            argv.extend(["--http-addr".into(), "127.0.0.1:1".into()]);
        })
        .unwrap();
        assert_eq!(args.resync_interval, std::time::Duration::from_secs(30));
        assert!(args.leader_election);
        assert_eq!(args.lease_namespace.as_deref(), Some("dbgrant"));
        assert_eq!(args.azure_tenant_id.as_deref(), Some("t"));
        assert_eq!(args.http_addr.to_string(), "127.0.0.1:1");
        assert!(run_args(&["crd".into()], &env, |_| {}).is_err());
    }

    #[test]
    fn pod_names_look_like_a_replica_sets() {
        let suffix = pod_suffix();
        let (hash, id) = suffix.split_once('-').unwrap();
        assert_eq!((hash.len(), id.len()), (10, 5));
    }
}
