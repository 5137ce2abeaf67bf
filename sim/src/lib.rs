//! Dev-only simulators for dbgrant: a Kubernetes API server (`kube`) and Azure (`azure`) that
//! real clients accept, used by the end-to-end tests, the sandbox and the benchmarks.
//! Nothing here is ever linked into the operator binary.

pub mod apply;
pub mod azure;
pub mod jwt;
pub mod kube;
pub mod operator;
pub mod sandbox;
pub mod tls;

use std::path::Path;

use anyhow::Context as _;

/// Write a file so that whoever polls for it never sees it half written (the simulators'
/// binaries announce readiness by writing their kubeconfig or state file).
///
/// # Errors
/// When the directory cannot be created or the file cannot be written.
pub fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, contents).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}

/// Log to stderr with an `EnvFilter`-style filter (the simulators' binaries and the sandbox).
pub fn init_logging(filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}
