//! Dev-only simulators for dbgrant: a Kubernetes API server (`kube`) and Azure (`azure`) that
//! real clients accept, used by the end-to-end tests, the sandbox and the benchmarks.
//! Nothing here is ever linked into the operator binary, and nothing here links the operator:
//! running it against the simulators is `dbgrant-harness`'s job.

pub mod apply;
pub mod azure;
pub mod jwt;
pub mod kube;
pub mod postgres;
pub mod process;
pub mod sql;
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

/// Wait for SIGTERM or Ctrl-C: how the simulators' binaries are told to stop (scripts kill them
/// with SIGTERM; a person at a terminal presses Ctrl-C).
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    // Without SIGTERM handling (not Unix, or the handler could not be installed) Ctrl-C still works.
    let _ = tokio::signal::ctrl_c().await;
}

/// A test's prerequisite (kubectl, helm-sdkpy, the Azure contract examples) is missing. With
/// `CI=true` this fails the test: on CI a skip would pass unnoticed and the test would silently
/// stop running. Elsewhere it says why on stderr and the caller skips, so a bare clone still
/// runs everything else.
///
/// # Panics
/// On CI, always.
pub fn prerequisite_missing(why: &str) {
    let on_ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    assert!(
        !on_ci,
        "{why} (CI=true: a missing prerequisite fails instead of skipping)"
    );
    eprintln!("SKIPPED: {why}");
}
