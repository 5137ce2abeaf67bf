//! Leader election through a `coordination.k8s.io` Lease (kube-lease-manager), so that of
//! several replicas exactly one reconciles and writes to Azure.
//!
//! Expected flow:
//! 1. every replica starts as a standby and tries to take the Lease;
//! 2. the one holding it runs the controllers under a child of the shutdown token and renews
//!    the Lease `grace` seconds before it expires;
//! 3. when the leader learns it lost the Lease (another holder, or a renewal that failed), its
//!    controllers are dropped at once, in-flight reconciles included, as a killed pod's would
//!    be: finishing them could race the next leader;
//! 4. a standby takes the Lease once it has expired, so within the lease duration of the last
//!    renewal;
//! 5. on shutdown the leader drains its reconciles, then releases the Lease.
//!
//! Caveat: a leader whose renewal request hangs (rather than fails) notices only when the
//! request times out; the lease duration should stay well above the client's timeouts being
//! hit in practice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio_util::sync::CancellationToken;

/// Where this replica stands, as `/readyz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leader election is off: this replica always reconciles.
    Alone,
    /// Waiting for the Lease; not reconciling.
    Standby,
    /// Holding the Lease and reconciling.
    Leader,
}

/// This replica's role, shared with the HTTP server.
#[derive(Clone, Debug)]
pub struct Leadership(Arc<AtomicU8>);

impl Leadership {
    /// A replica that does not take part in an election.
    pub fn alone() -> Self {
        Self(Arc::new(AtomicU8::new(Role::Alone as u8)))
    }

    /// A replica that starts as a standby.
    pub fn standby() -> Self {
        Self(Arc::new(AtomicU8::new(Role::Standby as u8)))
    }

    /// The current role.
    pub fn role(&self) -> Role {
        match self.0.load(Ordering::Acquire) {
            x if x == Role::Leader as u8 => Role::Leader,
            x if x == Role::Standby as u8 => Role::Standby,
            _ => Role::Alone,
        }
    }

    pub(crate) fn set(&self, role: Role) {
        self.0.store(role as u8, Ordering::Release);
    }
}

/// Which Lease to hold, and as whom.
#[derive(Clone, Debug)]
pub struct ElectionSettings {
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace (the operator's own, from `POD_NAMESPACE`).
    pub namespace: String,
    /// This replica's identity in the Lease (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
}

impl ElectionSettings {
    fn duration_secs(&self) -> u64 {
        self.lease_duration.as_secs().max(2)
    }

    /// Renew a third of the duration before expiry: two renewal chances before losing it.
    fn grace_secs(&self) -> u64 {
        (self.duration_secs() / 3).max(1)
    }

    async fn manager(&self, client: &kube::Client) -> kube_lease_manager::Result<LeaseManager> {
        LeaseManagerBuilder::new(client.clone(), &self.lease_name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(self.duration_secs())
            .with_grace(self.grace_secs())
            .with_field_manager(format!("dbgrant-leader/{}", self.identity))
            .build()
            .await
    }
}

/// How long to wait before trying again after the Lease API failed.
const RETRY: Duration = Duration::from_secs(1);

/// How leadership ended.
enum Outcome {
    /// The controllers returned (shutdown, or a failure such as missing CRDs).
    Ended(anyhow::Result<()>),
    /// The Lease was lost; `broken` when the manager failed and must be rebuilt.
    Lost { broken: bool },
}

/// Run `lead` only while holding the Lease, until `shutdown` fires or `lead` returns.
///
/// `lead` gets a token that is a child of `shutdown`; it is called again each time this
/// replica becomes leader after losing the Lease.
///
/// # Errors
/// `lead`'s error, when the controllers fail.
pub async fn run_elected<F, Fut>(
    client: kube::Client,
    settings: ElectionSettings,
    leadership: Leadership,
    shutdown: CancellationToken,
    mut lead: F,
) -> anyhow::Result<()>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let identity = settings.identity.as_str();
    tracing::info!(
        lease = %settings.lease_name,
        namespace = %settings.namespace,
        identity,
        duration_secs = settings.duration_secs(),
        "leader election: standing by"
    );
    let mut manager: Option<LeaseManager> = None;
    loop {
        leadership.set(Role::Standby);
        let current = match manager.take() {
            Some(current) => current,
            None => {
                let built = tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    built = settings.manager(&client) => built,
                };
                match built {
                    Ok(built) => built,
                    Err(error) => {
                        tracing::warn!(%error, "leader election: cannot read or create the Lease");
                        if sleep_or_shutdown(&shutdown, RETRY).await {
                            return Ok(());
                        }
                        continue;
                    }
                }
            }
        };
        // Standby until the Lease is ours.
        let acquired = tokio::select! {
            () = shutdown.cancelled() => {
                release(&current).await;
                return Ok(());
            }
            acquired = current.changed() => acquired,
        };
        match acquired {
            Ok(true) => {}
            Ok(false) => {
                manager = Some(current);
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "leader election failed; retrying");
                if sleep_or_shutdown(&shutdown, RETRY).await {
                    return Ok(());
                }
                continue;
            }
        }

        tracing::info!(identity, "leader election: leading");
        leadership.set(Role::Leader);
        let term = shutdown.child_token();
        let outcome = {
            let work = lead(term.clone());
            tokio::pin!(work);
            // The manager renews the Lease while its `changed()` is polled; it answers only
            // when this replica stops being the holder (or the Lease API fails).
            tokio::select! {
                result = &mut work => Outcome::Ended(result),
                lost = current.changed() => Outcome::Lost { broken: lost.is_err() },
            }
            // Leaving this block drops `work`: on a loss, every reconcile stops here.
        };
        term.cancel();
        leadership.set(Role::Standby);
        match outcome {
            Outcome::Ended(result) => {
                release(&current).await;
                return result;
            }
            Outcome::Lost { broken } => {
                tracing::warn!(
                    identity,
                    "leader election: lost the Lease; reconciling stopped"
                );
                // A failed manager believes it still leads; a new one starts from the Lease.
                if !broken {
                    manager = Some(current);
                } else if sleep_or_shutdown(&shutdown, RETRY).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Give the Lease back so a standby need not wait for it to expire; failing is harmless.
async fn release(manager: &LeaseManager) {
    if let Err(error) = manager.release().await {
        tracing::debug!(%error, "leader election: releasing the Lease failed; it will expire");
    }
}

/// Sleep, or return `true` at once when shutdown fires first.
async fn sleep_or_shutdown(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_the_shared_cell() {
        let leadership = Leadership::standby();
        assert_eq!(leadership.role(), Role::Standby);
        leadership.set(Role::Leader);
        assert_eq!(leadership.clone().role(), Role::Leader);
        assert_eq!(Leadership::alone().role(), Role::Alone);
    }

    #[test]
    fn renewal_comes_a_third_before_expiry_and_never_below_a_second() {
        let settings = |secs| ElectionSettings {
            lease_name: "l".into(),
            namespace: "n".into(),
            identity: "i".into(),
            lease_duration: Duration::from_secs(secs),
        };
        assert_eq!(settings(15).grace_secs(), 5);
        assert_eq!(settings(2).grace_secs(), 1);
        assert_eq!(settings(1).duration_secs(), 2);
    }
}
