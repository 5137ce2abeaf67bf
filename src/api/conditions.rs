//! Condition vocabulary and the one helper that writes conditions.
//!
//! Conditions follow the Kubernetes `metav1.Condition` convention: one entry per type,
//! `lastTransitionTime` moves only when the status flips, and every entry records the
//! generation it was computed from (so `kubectl wait` ignores stale ones).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types dbgrant reports. Each is documented with when it is `True`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// Summary: `True` when every other condition of the object is `True` for its current generation.
    Ready,
    /// Grant: the ServiceAccount's managed identity was resolved to a principal id.
    IdentityResolved,
    /// Grant: the role assignment exists in Azure with the desired principal, role and scope.
    AccessGranted,
    /// Grant: a data-plane call with the workload's identity succeeded.
    AccessVerified,
    /// Grant: the token Secret holds a fresh access token.
    TokenProjected,
}

impl ConditionType {
    /// The wire name, as it appears in `status.conditions[].type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::IdentityResolved => "IdentityResolved",
            Self::AccessGranted => "AccessGranted",
            Self::AccessVerified => "AccessVerified",
            Self::TokenProjected => "TokenProjected",
        }
    }
}

/// The three values of a condition's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet, typically because an earlier step has not succeeded.
    Unknown,
}

impl Status {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// Insert or update the condition of `type_`, keeping `lastTransitionTime` unless the status
/// flips. `now` is passed in so callers (and tests) control the clock.
///
/// Returns whether anything other than timestamps changed, so callers can skip no-op patches.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: impl Into<Status>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Time,
) -> bool {
    let status = status.into().as_str();
    let new = Condition {
        type_: type_.as_str().to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: now,
    };
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            let changed = old.status != new.status
                || old.reason != new.reason
                || old.message != new.message
                || old.observed_generation != new.observed_generation;
            let last_transition_time = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *old = Condition {
                last_transition_time,
                ..new
            };
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn a_new_condition_is_added_with_the_given_time() {
        let mut conds = Vec::new();
        assert!(set_condition(
            &mut conds,
            ConditionType::Ready,
            false,
            "Pending",
            "waiting",
            Some(1),
            at(10)
        ));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].type_, "Ready");
        assert_eq!(conds[0].status, "False");
        assert_eq!(conds[0].last_transition_time, at(10));
        assert_eq!(conds[0].observed_generation, Some(1));
    }

    #[test]
    fn transition_time_is_kept_while_status_stays_and_moves_when_it_flips() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            ConditionType::Ready,
            false,
            "A",
            "a",
            Some(1),
            at(10),
        );
        let changed = set_condition(
            &mut conds,
            ConditionType::Ready,
            false,
            "B",
            "b",
            Some(1),
            at(20),
        );
        assert!(changed, "reason changed");
        assert_eq!(conds[0].last_transition_time, at(10));
        assert_eq!(conds[0].reason, "B");

        set_condition(
            &mut conds,
            ConditionType::Ready,
            true,
            "Ready",
            "ok",
            Some(2),
            at(30),
        );
        assert_eq!(conds[0].last_transition_time, at(30));
        assert_eq!(conds[0].observed_generation, Some(2));
    }

    #[test]
    fn rewriting_the_same_condition_reports_no_change() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            ConditionType::AccessGranted,
            true,
            "Granted",
            "m",
            Some(3),
            at(1),
        );
        let changed = set_condition(
            &mut conds,
            ConditionType::AccessGranted,
            true,
            "Granted",
            "m",
            Some(3),
            at(99),
        );
        assert!(!changed);
        assert_eq!(conds[0].last_transition_time, at(1));
    }

    #[test]
    fn conditions_of_other_types_are_left_alone() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            ConditionType::IdentityResolved,
            true,
            "Resolved",
            "",
            Some(1),
            at(1),
        );
        set_condition(
            &mut conds,
            ConditionType::Ready,
            false,
            "Pending",
            "",
            Some(1),
            at(2),
        );
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[0].type_, "IdentityResolved");
        assert_eq!(conds[0].status, "True");
    }
}
