//! Condition reasons: the closed vocabulary users see in `kubectl get` (REASON column),
//! `kubectl describe`, events and the `reason` label of metrics. Each says when it is set and
//! what to do about it. Names are stable API: add, never rename.

/// Why a condition has its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    // --- success ---
    /// Ready: every step succeeded for the current generation.
    Ready,
    /// IdentityResolved: the ServiceAccount's managed identity was exchanged for a token and
    /// its principal id read from it.
    Resolved,
    /// AccessGranted: the role assignment exists with the desired principal, role and scope.
    Granted,
    /// AccessVerified: a data-plane call with the workload's identity succeeded.
    Verified,
    /// AccessVerified: the target turned the access probe off; access is assumed.
    VerificationDisabled,
    /// TokenProjected: no token Secret was asked for.
    NotRequested,

    // --- waiting ---
    /// An earlier step has not succeeded yet, so this one was not attempted.
    Waiting,
    /// AccessVerified: the assignment exists but the data plane still refuses the identity;
    /// Cosmos DB RBAC can take minutes to propagate. Retried with backoff.
    PropagationPending,
    /// AccessGranted: the principal or scope changed; the new assignment is being created
    /// and the old one removed afterwards.
    Replacing,
    /// TokenProjected: refreshing the token failed (Entra ID unreachable or throttling); the
    /// Secret keeps its current, still valid token and the refresh is retried with backoff.
    RefreshDelayed,

    // --- the user (app team) must act ---
    /// The spec cannot be acted on (for example a role the target does not declare).
    InvalidSpec,
    /// The DatabaseTarget named by `spec.target` does not exist.
    TargetNotFound,
    /// The target exists but is not Ready; see its conditions.
    TargetNotReady,
    /// The target's guard rails refuse this namespace or role; the message says which.
    PolicyDenied,
    /// The ServiceAccount named by `spec.serviceAccountName` does not exist in the namespace.
    ServiceAccountNotFound,
    /// The database is not set up for dbgrant: the operator's role is not an Entra admin of
    /// the PostgreSQL server, or lacks ADMIN OPTION on a role the target declares. The
    /// message names the missing piece and the statement that fixes it.
    TargetNotPrepared,
    /// A database role that dbgrant would create or use already exists for someone else
    /// (a role of the same name mapped to another Entra object id, or not an Entra role at
    /// all). dbgrant never takes it over; rename or drop it.
    RoleConflict,
    /// The ServiceAccount lacks the `azure.workload.identity/client-id` annotation, or it is
    /// not a GUID.
    IdentityAnnotationMissing,
    /// Entra ID refused the exchange: the managed identity has no federated credential for
    /// this ServiceAccount (AADSTS70021).
    IdentityNotFederated,
    /// Entra ID does not know the client id in the annotation (AADSTS700016).
    UnknownClientId,
    /// TokenProjected: a Secret of the name in `spec.tokenSecret` exists and was not made by
    /// dbgrant for this grant; it is left untouched.
    SecretConflict,

    // --- Azure or the platform must recover ---
    /// Azure does not know the principal yet (a new identity still replicating). Retried with
    /// backoff.
    PrincipalNotFound,
    /// Azure throttled the operator (HTTP 429). Retried after the time Azure asked for.
    AzureThrottled,
    /// Azure refused the operator: it lacks a control-plane role on the account.
    AzureForbidden,
    /// Azure or Entra ID failed or could not be reached. Retried with backoff.
    AzureUnavailable,
    /// Another RBAC write on the same Cosmos DB account was in flight (HTTP 412). Retried.
    AccountBusy,
    /// A Kubernetes API call failed. Retried with backoff.
    KubernetesApiError,
    /// Cleaning up on deletion has not finished (a grant's access could not be revoked, or a
    /// target's custom role is still assigned); the finalizer stays until it succeeds.
    CleanupFailed,
}

impl Reason {
    /// The wire name (CamelCase).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Resolved => "Resolved",
            Self::Granted => "Granted",
            Self::Verified => "Verified",
            Self::VerificationDisabled => "VerificationDisabled",
            Self::NotRequested => "NotRequested",
            Self::Waiting => "Waiting",
            Self::PropagationPending => "PropagationPending",
            Self::Replacing => "Replacing",
            Self::RefreshDelayed => "RefreshDelayed",
            Self::InvalidSpec => "InvalidSpec",
            Self::TargetNotFound => "TargetNotFound",
            Self::TargetNotReady => "TargetNotReady",
            Self::PolicyDenied => "PolicyDenied",
            Self::ServiceAccountNotFound => "ServiceAccountNotFound",
            Self::TargetNotPrepared => "TargetNotPrepared",
            Self::RoleConflict => "RoleConflict",
            Self::IdentityAnnotationMissing => "IdentityAnnotationMissing",
            Self::IdentityNotFederated => "IdentityNotFederated",
            Self::UnknownClientId => "UnknownClientId",
            Self::SecretConflict => "SecretConflict",
            Self::PrincipalNotFound => "PrincipalNotFound",
            Self::AzureThrottled => "AzureThrottled",
            Self::AzureForbidden => "AzureForbidden",
            Self::AzureUnavailable => "AzureUnavailable",
            Self::AccountBusy => "AccountBusy",
            Self::KubernetesApiError => "KubernetesApiError",
            Self::CleanupFailed => "CleanupFailed",
        }
    }

    /// Every reason, for exhaustive tests and documentation.
    pub const ALL: [Reason; 28] = [
        Self::Ready,
        Self::Resolved,
        Self::Granted,
        Self::Verified,
        Self::VerificationDisabled,
        Self::NotRequested,
        Self::Waiting,
        Self::PropagationPending,
        Self::Replacing,
        Self::RefreshDelayed,
        Self::InvalidSpec,
        Self::TargetNotFound,
        Self::TargetNotReady,
        Self::PolicyDenied,
        Self::ServiceAccountNotFound,
        Self::TargetNotPrepared,
        Self::RoleConflict,
        Self::IdentityAnnotationMissing,
        Self::IdentityNotFederated,
        Self::UnknownClientId,
        Self::SecretConflict,
        Self::PrincipalNotFound,
        Self::AzureThrottled,
        Self::AzureForbidden,
        Self::AzureUnavailable,
        Self::AccountBusy,
        Self::KubernetesApiError,
        Self::CleanupFailed,
    ];

    /// Whether the user must change something (spec, ServiceAccount, target, Azure setup)
    /// before retrying can help. Such failures wait for a change instead of hammering Azure.
    pub fn needs_user_action(self) -> bool {
        matches!(
            self,
            Self::InvalidSpec
                | Self::TargetNotFound
                | Self::PolicyDenied
                | Self::ServiceAccountNotFound
                | Self::IdentityAnnotationMissing
                | Self::IdentityNotFederated
                | Self::UnknownClientId
                | Self::SecretConflict
        )
    }
}

impl Reason {
    /// Failures whose fix is made in Azure (a federated credential added, an identity
    /// created), which no Kubernetes watch reports: worth a slow periodic look.
    pub fn fixed_in_azure(self) -> bool {
        matches!(self, Self::IdentityNotFederated | Self::UnknownClientId)
    }

    /// Failures of a whole store (account unreachable, operator not allowed, throttled),
    /// as opposed to one grant's (its principal unknown, say).
    pub fn is_store_wide(self) -> bool {
        matches!(
            self,
            Self::AzureThrottled
                | Self::AzureForbidden
                | Self::AzureUnavailable
                | Self::AccountBusy
                | Self::TargetNotReady
                | Self::TargetNotFound
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_reason_is_explained_in_the_readme() {
        let readme = include_str!("../../README.md");
        for reason in Reason::ALL {
            assert!(
                readme.contains(&format!("`{}`", reason.as_str())),
                "README.md does not explain reason {reason}"
            );
        }
    }

    #[test]
    fn reasons_are_unique_camel_case_words() {
        let mut seen = HashSet::new();
        for reason in Reason::ALL {
            let name = reason.as_str();
            assert!(seen.insert(name), "duplicate reason {name}");
            assert!(
                name.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{name}"
            );
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
            assert!(name.len() <= 128);
        }
    }
}
