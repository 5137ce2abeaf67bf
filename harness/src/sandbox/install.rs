//! Installing the operator into the sandbox's cluster as a user would: `helm install` of
//! `charts/dbgrant` (real Helm, through helm-sdkpy) when a Python with helm-sdkpy is at hand,
//! otherwise `kubectl apply -f deploy/dbgrant.yaml` (the chart's default render, kept equal to
//! it by `tests/chart.rs`) with the settings a user would edit in before applying.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use serde_json::{Value, json};

use dbgrant_sim::apply::{apply, parse_documents};

/// The release and namespace the sandbox installs into (those of `deploy/dbgrant.yaml`).
pub const RELEASE: &str = "dbgrant";
/// The operator's namespace.
pub const NAMESPACE: &str = "dbgrant";
/// The chart's ServiceAccount (and Deployment) name for release `dbgrant`.
pub const SERVICE_ACCOUNT: &str = "dbgrant";

/// How to install the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Install {
    /// Helm when a Python with helm-sdkpy is found (`DBGRANT_PYTHON`, the venv `scripts/test`
    /// makes in `target/helm-venv`, or `python3`), else the manifest.
    Auto,
    /// `helm install` with this Python's helm-sdkpy.
    Helm {
        /// A Python that can `import helm_sdkpy`.
        python: String,
    },
    /// Server-side apply a rendered manifest (`deploy/dbgrant.yaml`, or a variant of it).
    Manifest {
        /// The manifest file.
        path: PathBuf,
    },
}

/// What the operator's install is given: the values a user passes to `helm install`.
#[derive(Clone, Debug)]
pub struct InstallSettings {
    /// Client id of the operator's managed identity.
    pub client_id: String,
    /// The Entra ID tenant.
    pub tenant_id: String,
    /// Entra ID authority host of the (simulated) cloud.
    pub authority_host: String,
    /// ARM endpoint of the (simulated) cloud.
    pub arm_endpoint: String,
    /// A PEM file with the simulated cloud's CA.
    pub extra_ca_file: PathBuf,
    /// `operator.resyncInterval`, e.g. `30s`.
    pub resync_interval: String,
    /// `operator.concurrency`.
    pub concurrency: u16,
}

impl InstallSettings {
    /// The chart values for these settings.
    pub fn values(&self) -> Value {
        json!({
            "azure": {
                "clientId": self.client_id,
                "tenantId": self.tenant_id,
                "cloud": "Custom",
                "authorityHost": self.authority_host,
                "armEndpoint": self.arm_endpoint,
            },
            "operator": {
                "logFormat": "text",
                "resyncInterval": self.resync_interval,
                "concurrency": self.concurrency,
                // A private cloud's CA: in a cluster this file would come from a mounted
                // ConfigMap; the in-process pod shares the host's file system.
                "extraEnv": [{
                    "name": "DBGRANT_AZURE_EXTRA_CA_FILE",
                    "value": self.extra_ca_file.display().to_string(),
                }],
            },
        })
    }
}

/// How the operator was installed, for the sandbox to say.
#[derive(Clone, Debug)]
pub struct Installed {
    /// One line: what was installed and how.
    pub description: String,
}

/// The repository root, found from this crate's location.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// The chart.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/dbgrant")
}

/// `deploy/dbgrant.yaml`.
pub fn deploy_manifest() -> PathBuf {
    repo_root().join("deploy/dbgrant.yaml")
}

/// Whether `python` can import helm-sdkpy.
fn has_helm_sdkpy(python: &str) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import helm_sdkpy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Resolve `Auto`: the first Python with helm-sdkpy, or the manifest (with why).
///
/// # Errors
/// When `DBGRANT_PYTHON` names a Python without helm-sdkpy: it was asked for explicitly.
pub fn resolve(install: &Install) -> anyhow::Result<(Install, Option<String>)> {
    if *install != Install::Auto {
        return Ok((install.clone(), None));
    }
    if let Ok(python) = std::env::var("DBGRANT_PYTHON") {
        anyhow::ensure!(
            has_helm_sdkpy(&python),
            "DBGRANT_PYTHON={python} cannot import helm_sdkpy (unset it to fall back to \
             deploy/dbgrant.yaml)"
        );
        return Ok((Install::Helm { python }, None));
    }
    let venv = repo_root().join("target/helm-venv/bin/python");
    for python in [venv.display().to_string(), "python3".to_string()] {
        if has_helm_sdkpy(&python) {
            return Ok((Install::Helm { python }, None));
        }
    }
    Ok((
        Install::Manifest {
            path: deploy_manifest(),
        },
        Some(
            "no Python with helm-sdkpy (DBGRANT_PYTHON, target/helm-venv or python3), so \
             deploy/dbgrant.yaml is applied instead of `helm install`"
                .into(),
        ),
    ))
}

/// Install the operator.
///
/// # Errors
/// When Helm fails or the manifest cannot be read or applied.
pub async fn install(
    client: &kube::Client,
    kubeconfig: &Path,
    state_dir: &Path,
    install: &Install,
    settings: &InstallSettings,
) -> anyhow::Result<Installed> {
    let values = settings.values();
    dbgrant_sim::write_atomically(
        &state_dir.join("values.json"),
        &serde_json::to_string_pretty(&values)?,
    )?;
    match install {
        Install::Auto => anyhow::bail!("resolve the installer first"),
        Install::Helm { python } => helm_install(python, kubeconfig, state_dir, &values).await,
        Install::Manifest { path } => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut objects =
                parse_documents(&text).with_context(|| format!("parsing {}", path.display()))?;
            customize(&mut objects, settings);
            for object in &objects {
                apply(client, object, NAMESPACE).await?;
            }
            Ok(Installed {
                description: format!(
                    "applied {} (the chart rendered with default values) with the operator's \
                     identity and cloud set",
                    path.display()
                ),
            })
        }
    }
}

async fn helm_install(
    python: &str,
    kubeconfig: &Path,
    state_dir: &Path,
    values: &Value,
) -> anyhow::Result<Installed> {
    let helm_home = state_dir.join("helm");
    let output = tokio::process::Command::new(python)
        .arg("-c")
        .arg(include_str!("helm_install.py"))
        .arg(kubeconfig)
        .arg(NAMESPACE)
        .arg(RELEASE)
        .arg(chart_dir())
        .arg(values.to_string())
        // Helm's caches stay in the sandbox's directory, and only this cluster is touched.
        .env_remove("KUBECONFIG")
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_DATA_HOME", helm_home.join("data"))
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {python}"))?;
    anyhow::ensure!(
        output.status.success(),
        "helm install of {} failed: {}",
        chart_dir().display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let release: Value =
        serde_json::from_slice(&output.stdout).context("reading what helm install printed")?;
    Ok(Installed {
        description: format!(
            "helm install {RELEASE} charts/dbgrant -n {NAMESPACE} (helm-sdkpy, {python}): \
             revision {}, {}; values in {}",
            release["version"],
            release["status"].as_str().unwrap_or("?"),
            state_dir.join("values.json").display()
        ),
    })
}

/// What a `kubectl apply` user edits into `deploy/dbgrant.yaml` first, the same settings the
/// chart's values give: the ServiceAccount's workload-identity annotations and the operator
/// container's environment.
fn customize(objects: &mut [Value], settings: &InstallSettings) {
    for object in objects.iter_mut() {
        let in_namespace = object["metadata"]["namespace"] == NAMESPACE;
        match object["kind"].as_str() {
            Some("ServiceAccount") if in_namespace => {
                let annotations = &mut object["metadata"]["annotations"];
                annotations["azure.workload.identity/client-id"] = json!(settings.client_id);
                annotations["azure.workload.identity/tenant-id"] = json!(settings.tenant_id);
            }
            Some("Deployment") if in_namespace => {
                let Some(containers) =
                    object["spec"]["template"]["spec"]["containers"].as_array_mut()
                else {
                    continue;
                };
                for container in containers {
                    let mut env = container["env"].as_array().cloned().unwrap_or_default();
                    for (name, value) in [
                        ("AZURE_CLOUD", "Custom".to_string()),
                        ("AZURE_TENANT_ID", settings.tenant_id.clone()),
                        ("AZURE_AUTHORITY_HOST", settings.authority_host.clone()),
                        ("DBGRANT_ARM_ENDPOINT", settings.arm_endpoint.clone()),
                        ("DBGRANT_LOG_FORMAT", "text".into()),
                        ("DBGRANT_RESYNC_INTERVAL", settings.resync_interval.clone()),
                        ("DBGRANT_CONCURRENCY", settings.concurrency.to_string()),
                        (
                            "DBGRANT_AZURE_EXTRA_CA_FILE",
                            settings.extra_ca_file.display().to_string(),
                        ),
                    ] {
                        let entry = json!({"name": name, "value": value});
                        match env.iter_mut().find(|e| e["name"] == name) {
                            Some(existing) => *existing = entry,
                            None => env.push(entry),
                        }
                    }
                    container["env"] = Value::Array(env);
                }
            }
            _ => {}
        }
    }
}
