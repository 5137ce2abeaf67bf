//! What the simulators' binaries share as processes: the arguments naming the Entra authority
//! whose keys the database fronts check tokens with, and announcing readiness (a file that
//! appears whole) before serving until told to stop.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The Entra authority whose tokens a database front accepts.
#[derive(clap::Args, Debug)]
pub struct AuthorityArgs {
    /// The Entra authority host issuing the tokens (azure-sim's), ending in '/'.
    #[arg(long)]
    pub authority: String,
    /// The tenant whose tokens are accepted.
    #[arg(long)]
    pub tenant: String,
    /// A PEM file of the CA to trust when fetching the authority's keys.
    #[arg(long)]
    pub authority_ca: PathBuf,
}

impl AuthorityArgs {
    /// The keys the authority publishes for the tenant (`{tenant}/discovery/v2.0/keys`).
    ///
    /// # Errors
    /// When the CA file cannot be read or the keys cannot be fetched.
    pub async fn keys(&self) -> anyhow::Result<serde_json::Value> {
        let ca = std::fs::read_to_string(&self.authority_ca)
            .with_context(|| format!("reading {}", self.authority_ca.display()))?;
        let keys_url = format!("{}{}/discovery/v2.0/keys", self.authority, self.tenant);
        Ok(crate::tls::https_client(&ca)?
            .get(&keys_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("fetching {keys_url}"))?
            .json()
            .await?)
    }

    /// The issuer of the tenant's v1 access tokens, the version Entra ID issues for the
    /// database resources.
    pub fn v1_issuer(&self) -> String {
        format!("https://sts.windows.net/{}/", self.tenant)
    }
}

/// Announce readiness and serve until SIGTERM or Ctrl-C: write `contents` to `file` (whole,
/// for whoever polls for it), say `{serving} ({file_kind} {file})` on stderr, then wait.
///
/// # Errors
/// When the file cannot be written.
pub async fn serve_until_stopped(
    serving: &str,
    file_kind: &str,
    file: &Path,
    contents: &str,
) -> anyhow::Result<()> {
    crate::write_atomically(file, contents)?;
    eprintln!("{serving} ({file_kind} {})", file.display());
    crate::stop_requested().await;
    Ok(())
}
