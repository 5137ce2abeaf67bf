//! Turning the outcome of a grant's reconcile into its status conditions. Pure: the
//! reconciler decides what happened, this decides what the user reads.
//!
//! Steps run in order (identity → access → verification → token). The first step that is not
//! `True` explains `Ready`; steps after it are `Unknown` with reason `Waiting`, so a user never
//! sees a stale `True` beneath a failure. The token is the exception: it is refreshed once the
//! identity is resolved, whatever access says, so `TokenProjected` reports its own state.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{ConditionType, Reason, Status, set_condition};

/// What one step of the reconcile found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Condition status for this step.
    pub status: Status,
    /// Why.
    pub reason: Reason,
    /// What a human should know; never a token or other secret.
    pub message: String,
}

impl Step {
    /// The step succeeded.
    pub fn ok(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            status: Status::True,
            reason,
            message: message.into(),
        }
    }

    /// The step failed.
    pub fn failed(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            status: Status::False,
            reason,
            message: message.into(),
        }
    }

    fn waiting() -> Self {
        Self {
            status: Status::Unknown,
            reason: Reason::Waiting,
            message: "an earlier step has not succeeded yet".to_string(),
        }
    }
}

/// The ordered steps of a grant, as far as the reconcile got. `None`: not reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// IdentityResolved.
    pub identity: Option<Step>,
    /// AccessGranted.
    pub access: Option<Step>,
    /// AccessVerified.
    pub verified: Option<Step>,
    /// TokenProjected.
    pub token: Option<Step>,
}

impl Outcome {
    /// A failure before any step (target missing, policy, invalid spec): every step waits and
    /// `Ready` carries the failure.
    pub fn blocked(step: Step) -> (Self, Option<Step>) {
        (Self::default(), Some(step))
    }

    fn ordered(&self) -> [(ConditionType, Option<&Step>); 4] {
        [
            (ConditionType::IdentityResolved, self.identity.as_ref()),
            (ConditionType::AccessGranted, self.access.as_ref()),
            (ConditionType::AccessVerified, self.verified.as_ref()),
            (ConditionType::TokenProjected, self.token.as_ref()),
        ]
    }
}

/// Write the conditions for `outcome` (and a failure that blocked every step, if any) into
/// `conditions`. Returns whether anything other than timestamps changed.
pub fn write_conditions(
    conditions: &mut Vec<Condition>,
    outcome: &Outcome,
    blocked_by: Option<&Step>,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    let mut changed = false;
    let mut first_not_true: Option<Step> = blocked_by.cloned();
    let waiting = Step::waiting();
    let identity_ok = outcome
        .identity
        .as_ref()
        .is_some_and(|s| s.status == Status::True);
    for (type_, step) in outcome.ordered() {
        let step = match (step, &first_not_true) {
            (Some(step), None) => step,
            // The token is kept fresh once the identity is known, whatever access and its
            // probe say: its condition reports that on its own.
            (Some(step), Some(_)) if type_ == ConditionType::TokenProjected && identity_ok => {
                changed |= set_condition(
                    conditions,
                    type_,
                    step.status,
                    step.reason.as_str(),
                    &step.message,
                    generation,
                    now.clone(),
                );
                continue;
            }
            _ => &waiting,
        };
        if step.status != Status::True && first_not_true.is_none() {
            first_not_true = Some(step.clone());
        }
        changed |= set_condition(
            conditions,
            type_,
            step.status,
            step.reason.as_str(),
            &step.message,
            generation,
            now.clone(),
        );
    }
    let ready = match first_not_true {
        None => Step::ok(Reason::Ready, "access is granted and verified"),
        Some(step) => Step {
            status: if step.status == Status::Unknown {
                Status::Unknown
            } else {
                Status::False
            },
            ..step
        },
    };
    changed |= set_condition(
        conditions,
        ConditionType::Ready,
        ready.status,
        ready.reason.as_str(),
        &ready.message,
        generation,
        now.clone(),
    );
    changed
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn now() -> Time {
        Time(Timestamp::from_second(1_000).expect("time"))
    }

    fn get<'a>(conds: &'a [Condition], type_: &str) -> &'a Condition {
        conds.iter().find(|c| c.type_ == type_).expect(type_)
    }

    fn all_ok() -> Outcome {
        Outcome {
            identity: Some(Step::ok(Reason::Resolved, "principal p")),
            access: Some(Step::ok(Reason::Granted, "assignment a")),
            verified: Some(Step::ok(Reason::Verified, "read dbs/orders")),
            token: Some(Step::ok(Reason::NotRequested, "no token Secret requested")),
        }
    }

    #[test]
    fn every_step_true_makes_the_grant_ready() {
        let mut conds = Vec::new();
        assert!(write_conditions(
            &mut conds,
            &all_ok(),
            None,
            Some(2),
            &now()
        ));
        assert_eq!(conds.len(), 5);
        let ready = get(&conds, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Ready")
        );
        assert!(conds.iter().all(|c| c.observed_generation == Some(2)));
        assert!(!write_conditions(
            &mut conds,
            &all_ok(),
            None,
            Some(2),
            &now()
        ));
    }

    #[test]
    fn the_first_failing_step_explains_ready_and_later_steps_wait() {
        let mut outcome = all_ok();
        outcome.access = Some(Step::failed(
            Reason::AzureForbidden,
            "operator lacks a role",
        ));
        let mut conds = Vec::new();
        write_conditions(&mut conds, &outcome, None, Some(1), &now());
        let ready = get(&conds, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "AzureForbidden")
        );
        assert_eq!(ready.message, "operator lacks a role");
        assert_eq!(get(&conds, "IdentityResolved").status, "True");
        let verified = get(&conds, "AccessVerified");
        assert_eq!(
            (verified.status.as_str(), verified.reason.as_str()),
            ("Unknown", "Waiting")
        );
    }

    #[test]
    fn a_blocking_failure_marks_every_step_waiting() {
        let mut conds = Vec::new();
        let (outcome, blocked) =
            Outcome::blocked(Step::failed(Reason::PolicyDenied, "namespace x"));
        write_conditions(&mut conds, &outcome, blocked.as_ref(), Some(1), &now());
        assert_eq!(get(&conds, "Ready").reason, "PolicyDenied");
        for type_ in [
            "IdentityResolved",
            "AccessGranted",
            "AccessVerified",
            "TokenProjected",
        ] {
            assert_eq!(get(&conds, type_).status, "Unknown", "{type_}");
        }
    }

    #[test]
    fn a_pending_step_keeps_ready_unknown_rather_than_false() {
        let mut outcome = all_ok();
        outcome.verified = Some(Step {
            status: Status::Unknown,
            reason: Reason::PropagationPending,
            message: "data plane still refuses; retrying".into(),
        });
        let mut conds = Vec::new();
        write_conditions(&mut conds, &outcome, None, Some(1), &now());
        let ready = get(&conds, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("Unknown", "PropagationPending")
        );
    }
}
