//! The grant reconciler's decisions, apart from any I/O: may the grant have access at all
//! (the gate), which of the access it holds it must release, and when to look again. Every
//! function here is pure and table-tested; the reconciler gathers their inputs and carries out
//! their answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::grant_status::Step;
use super::policy;
use crate::api::{DatabaseAccessGrantSpec, DatabaseTargetSpec, Reason, Status};
use crate::backend::{BackendError, Holding};

/// When to look at the grant again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing will change until the user (or a watched object) does.
    AwaitChange,
    /// A transient failure: back off, at least as long as the server asked.
    Backoff(Option<Duration>),
    /// All good: the regular resync (or sooner, to refresh the token Secret).
    Resync(Option<Duration>),
    /// Another write on the same store is in flight: look again shortly.
    Soon,
}

/// The target a grant names, as gathered.
#[derive(Clone, Debug)]
pub enum TargetView<'a> {
    /// No DatabaseTarget of that name.
    Missing,
    /// The target is being deleted: it grants nothing any more.
    Deleting,
    /// The target, and whether it is Ready as of its current spec (`None`: not checked yet).
    Present {
        /// Its spec (guard rails and backend block).
        spec: &'a DatabaseTargetSpec,
        /// Its readiness.
        ready: Option<bool>,
    },
}

/// What the guard rails say about a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The grant may not have access now: everything it holds that nobody else asks for goes.
    Refused(Step, Next),
    /// The grant is allowed but the target cannot be used yet: what it holds stays, nothing
    /// new is written.
    Paused(Step, Next),
    /// Go on: resolve the identity and hold the access.
    Open,
}

/// Apply the guard rails in order: the target exists and stays, the namespace and role are
/// allowed (checked even while the target is not Ready, so tightening a policy always
/// revokes), the role is declared, and the target is Ready.
pub fn gate(
    spec: &DatabaseAccessGrantSpec,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    target: &TargetView<'_>,
    role_declared: Result<(), BackendError>,
) -> Gate {
    let name = &spec.target;
    let (target_spec, ready) = match target {
        TargetView::Missing => {
            return Gate::Refused(
                Step::failed(
                    Reason::TargetNotFound,
                    format!("DatabaseTarget {name} does not exist"),
                ),
                Next::AwaitChange,
            );
        }
        TargetView::Deleting => {
            return Gate::Refused(
                Step::failed(
                    Reason::TargetNotFound,
                    format!("DatabaseTarget {name} is being deleted"),
                ),
                Next::AwaitChange,
            );
        }
        TargetView::Present { spec, ready } => (*spec, *ready),
    };
    if let Err(denial) = policy::check(target_spec, namespace, namespace_labels, &spec.role) {
        return Gate::Refused(
            Step::failed(Reason::PolicyDenied, denial.to_string()),
            Next::AwaitChange,
        );
    }
    if let Err(error) = role_declared {
        return Gate::Refused(Step::failed(error.reason, error.message), Next::AwaitChange);
    }
    match ready {
        Some(true) => Gate::Open,
        Some(false) => Gate::Paused(
            Step::failed(
                Reason::TargetNotReady,
                format!("DatabaseTarget {name} is not Ready; see its conditions"),
            ),
            Next::AwaitChange,
        ),
        // Not a failure (no Warning on a fresh install): the target's own check has not
        // finished, and its status change brings the grant back.
        None => Gate::Paused(
            Step {
                status: Status::Unknown,
                reason: Reason::TargetNotReady,
                message: format!("waiting for DatabaseTarget {name} to be checked"),
            },
            Next::AwaitChange,
        ),
    }
}

/// Another grant, as the ledger knows it when a grant decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Other {
    /// What its last decision asked for: `None` when it has not decided in this process.
    pub wants: Option<Option<String>>,
    /// What it records holding.
    pub held: BTreeSet<String>,
}

/// What becomes of the holdings a grant records, besides the one it asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Nobody asks for these any more: revoke them.
    pub release: Vec<String>,
    /// Another grant asks for and records these: drop our record, leave the access.
    pub handed_on: Vec<String>,
    /// Not decidable yet (our identity is unknown, or a sharer has not decided or not yet
    /// recorded it): keep the record and look again.
    pub pending: Vec<String>,
}

/// Decide the fate of each holding in `held` other than `want`. A holding is revoked only
/// when no other grant asks for it or might (one not decided since the operator started
/// counts as asking for what it records).
pub fn settle(
    held: &BTreeSet<String>,
    want: Option<&Holding>,
    identity_known: bool,
    others: &[Other],
) -> Settlement {
    let mut settlement = Settlement::default();
    for id in held {
        if want.is_some_and(|w| &w.id == id) {
            continue;
        }
        if !identity_known {
            settlement.pending.push(id.clone());
            continue;
        }
        let asked = |o: &&Other| match &o.wants {
            Some(Some(wanted)) => wanted == id,
            Some(None) => false,
            None => o.held.contains(id),
        };
        match others.iter().find(asked) {
            None => settlement.release.push(id.clone()),
            Some(other) if other.wants.is_some() && other.held.contains(id) => {
                settlement.handed_on.push(id.clone());
            }
            Some(_) => settlement.pending.push(id.clone()),
        }
    }
    settlement
}

/// How soon a grant whose identity is set up wrongly in Azure looks again: the fix (a
/// federated credential, a corrected identity) happens where no watch can see it.
pub const AZURE_SETUP_RECHECK: Duration = Duration::from_secs(30);

/// When to look again after a backend failure.
pub fn next_for(error: &BackendError) -> Next {
    if error.reason == Reason::AccountBusy {
        // Contention, not a failure: look again shortly, never with a growing backoff (the
        // write that holds the account ends within one operation).
        Next::Soon
    } else if error.reason.fixed_in_azure() {
        // Slowly, with the usual doubling above the floor (one token exchange per look).
        Next::Backoff(Some(
            error
                .retry_after
                .unwrap_or_default()
                .max(AZURE_SETUP_RECHECK),
        ))
    } else if error.reason.needs_user_action() {
        Next::AwaitChange
    } else {
        Next::Backoff(error.retry_after)
    }
}

/// Whether an identity failure means the ServiceAccount maps to no identity we can prove (the
/// grant then asks for nothing, and what it held goes), rather than a passing failure (what
/// it holds stays until the identity is known again).
pub fn identity_gone(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::ServiceAccountNotFound
            | Reason::IdentityAnnotationMissing
            | Reason::IdentityNotFederated
            | Reason::UnknownClientId
    )
}

/// The sooner of two looks.
pub fn sooner(a: Next, b: Next) -> Next {
    use Next::{AwaitChange, Backoff, Resync, Soon};
    match (a, b) {
        (Soon, _) | (_, Soon) => Soon,
        (Backoff(x), Backoff(y)) => Backoff(match (x, y) {
            (Some(x), Some(y)) => Some(x.min(y)),
            _ => None,
        }),
        (Backoff(x), _) | (_, Backoff(x)) => Backoff(x),
        (Resync(x), Resync(y)) => Resync(match (x, y) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }),
        (Resync(x), AwaitChange) | (AwaitChange, Resync(x)) => Resync(x),
        (AwaitChange, AwaitChange) => AwaitChange,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;
    use crate::api::DeletionPolicy;

    fn grant(role: &str) -> DatabaseAccessGrantSpec {
        DatabaseAccessGrantSpec {
            service_account_name: "api".into(),
            target: "db".into(),
            role: role.into(),
            database: None,
            container: None,
            token_secret: None,
            deletion_policy: DeletionPolicy::Delete,
        }
    }

    fn target(team: Option<&str>, roles: &[&str]) -> DatabaseTargetSpec {
        DatabaseTargetSpec {
            cosmos: None,
            postgres: None,
            sql: None,
            allowed_namespaces: team.map(|t| LabelSelector {
                match_labels: Some(BTreeMap::from([("team".to_string(), t.to_string())])),
                match_expressions: None,
            }),
            allowed_roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn labels(team: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("team".to_string(), team.to_string())])
    }

    fn reason(gate: &Gate) -> Option<(Reason, Status)> {
        match gate {
            Gate::Refused(step, _) | Gate::Paused(step, _) => Some((step.reason, step.status)),
            Gate::Open => None,
        }
    }

    #[test]
    fn the_gate_checks_target_policy_role_and_readiness_in_that_order() {
        let allowed = target(Some("shop"), &["reader"]);
        let undeclared = Err(BackendError::new(Reason::InvalidSpec, "not declared"));
        let present = |ready| TargetView::Present {
            spec: &allowed,
            ready,
        };
        // (case, target, namespace team, role, role declared, expected verdict)
        type Case<'a> = (
            &'a str,
            TargetView<'a>,
            &'a str,
            &'a str,
            Result<(), BackendError>,
            &'a str,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "missing target",
                TargetView::Missing,
                "shop",
                "reader",
                Ok(()),
                "refused TargetNotFound",
            ),
            (
                "target being deleted",
                TargetView::Deleting,
                "shop",
                "reader",
                Ok(()),
                "refused TargetNotFound",
            ),
            (
                "namespace refused",
                present(Some(true)),
                "billing",
                "reader",
                Ok(()),
                "refused PolicyDenied",
            ),
            (
                "role refused",
                present(Some(true)),
                "shop",
                "contributor",
                Ok(()),
                "refused PolicyDenied",
            ),
            (
                "policy before readiness",
                present(Some(false)),
                "billing",
                "reader",
                Ok(()),
                "refused PolicyDenied",
            ),
            (
                "policy before first check",
                present(None),
                "billing",
                "reader",
                Ok(()),
                "refused PolicyDenied",
            ),
            (
                "role not declared",
                present(Some(false)),
                "shop",
                "reader",
                undeclared,
                "refused InvalidSpec",
            ),
            (
                "not ready",
                present(Some(false)),
                "shop",
                "reader",
                Ok(()),
                "paused TargetNotReady False",
            ),
            (
                "not checked yet",
                present(None),
                "shop",
                "reader",
                Ok(()),
                "paused TargetNotReady Unknown",
            ),
            (
                "all good",
                present(Some(true)),
                "shop",
                "reader",
                Ok(()),
                "open",
            ),
        ];
        for (case, view, team, role, declared, expected) in cases {
            let verdict = gate(&grant(role), "ns", &labels(team), &view, declared);
            let got = match &verdict {
                Gate::Refused(step, _) => format!("refused {}", step.reason.as_str()),
                Gate::Paused(step, _) => {
                    format!("paused {} {}", step.reason.as_str(), step.status.as_str())
                }
                Gate::Open => "open".to_string(),
            };
            assert_eq!(got, expected, "{case}");
            if let Some((_, status)) = reason(&verdict) {
                assert_ne!(status, Status::True, "{case}");
            }
        }
    }

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn holding(id: &str) -> Holding {
        Holding {
            id: id.into(),
            principal_id: "p".into(),
            role_id: "r".into(),
            scope: "s".into(),
        }
    }

    fn decided(wants: Option<&str>, held: &[&str]) -> Other {
        Other {
            wants: Some(wants.map(str::to_string)),
            held: ids(held),
        }
    }

    fn undecided(held: &[&str]) -> Other {
        Other {
            wants: None,
            held: ids(held),
        }
    }

    #[test]
    fn settling_revokes_only_what_nobody_asks_for_or_might() {
        let want = holding("new");
        // (case, held, want, identity known, others, release, handed on, pending)
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            Option<&'a Holding>,
            bool,
            Vec<Other>,
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "the wanted one is kept",
                &["new"],
                Some(&want),
                true,
                vec![],
                &[],
                &[],
                &[],
            ),
            (
                "replaced: the old goes",
                &["old", "new"],
                Some(&want),
                true,
                vec![],
                &["old"],
                &[],
                &[],
            ),
            (
                "refused: everything goes",
                &["old"],
                None,
                true,
                vec![],
                &["old"],
                &[],
                &[],
            ),
            (
                "identity unknown: nothing goes",
                &["old"],
                None,
                false,
                vec![],
                &[],
                &[],
                &["old"],
            ),
            (
                "another asks and records it",
                &["old"],
                None,
                true,
                vec![decided(Some("old"), &["old"])],
                &[],
                &["old"],
                &[],
            ),
            (
                "another asks, not yet recorded",
                &["old"],
                None,
                true,
                vec![decided(Some("old"), &[])],
                &[],
                &[],
                &["old"],
            ),
            (
                "another undecided records it",
                &["old"],
                None,
                true,
                vec![undecided(&["old"])],
                &[],
                &[],
                &["old"],
            ),
            (
                "another decided to let it go",
                &["old"],
                None,
                true,
                vec![decided(None, &["old"])],
                &["old"],
                &[],
                &[],
            ),
            (
                "another asks for something else",
                &["old"],
                None,
                true,
                vec![decided(Some("x"), &["x"])],
                &["old"],
                &[],
                &[],
            ),
        ];
        for (case, held, want, known, others, release, handed_on, pending) in cases {
            let got = settle(&ids(held), want, known, &others);
            let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            assert_eq!(got.release, strings(release), "{case}: release");
            assert_eq!(got.handed_on, strings(handed_on), "{case}: handed on");
            assert_eq!(got.pending, strings(pending), "{case}: pending");
        }
    }

    #[test]
    fn two_sharers_deciding_one_after_the_other_leave_nothing_behind() {
        // Both held "x"; both are refused. Whoever decides second sees the first's "nothing".
        let held = ids(&["x"]);
        let first = settle(&held, None, true, &[decided(Some("x"), &["x"])]);
        assert_eq!(first.handed_on, vec!["x".to_string()]);
        let second = settle(&held, None, true, &[decided(None, &[])]);
        assert_eq!(second.release, vec!["x".to_string()]);
    }

    #[test]
    fn failures_fixed_in_azure_are_looked_at_again_slowly_others_wait_or_back_off() {
        let not_federated = BackendError::new(Reason::IdentityNotFederated, "AADSTS70021");
        assert_eq!(
            next_for(&not_federated),
            Next::Backoff(Some(AZURE_SETUP_RECHECK))
        );
        let missing = BackendError::new(Reason::ServiceAccountNotFound, "no such ServiceAccount");
        assert_eq!(next_for(&missing), Next::AwaitChange);
        // Contention only: soon, never a growing backoff.
        let busy = BackendError::new(Reason::AccountBusy, "HTTP 412");
        assert_eq!(next_for(&busy), Next::Soon);
        let mut throttled = BackendError::new(Reason::AzureThrottled, "429");
        throttled.retry_after = Some(Duration::from_secs(7));
        assert_eq!(
            next_for(&throttled),
            Next::Backoff(Some(Duration::from_secs(7)))
        );
    }

    #[test]
    fn identity_failures_that_prove_no_identity_end_access_passing_ones_do_not() {
        for reason in [
            Reason::ServiceAccountNotFound,
            Reason::IdentityAnnotationMissing,
            Reason::IdentityNotFederated,
            Reason::UnknownClientId,
        ] {
            assert!(identity_gone(reason), "{reason:?}");
        }
        for reason in [
            Reason::AzureUnavailable,
            Reason::AzureThrottled,
            Reason::KubernetesApiError,
        ] {
            assert!(!identity_gone(reason), "{reason:?}");
        }
    }

    #[test]
    fn the_sooner_look_wins() {
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(
            sooner(Next::AwaitChange, Next::Resync(s(9))),
            Next::Resync(s(9))
        );
        assert_eq!(
            sooner(Next::Resync(s(9)), Next::Resync(s(3))),
            Next::Resync(s(3))
        );
        assert_eq!(
            sooner(Next::Resync(None), Next::Backoff(s(3))),
            Next::Backoff(s(3))
        );
        assert_eq!(sooner(Next::Backoff(s(3)), Next::Soon), Next::Soon);
        assert_eq!(
            sooner(Next::AwaitChange, Next::AwaitChange),
            Next::AwaitChange
        );
    }
}
