//! Guard rails: may this grant use this target? Pure, so the reconciler and any future
//! admission check give the same answer, and every denial carries a message a user can act on.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};

use crate::api::DatabaseTargetSpec;

/// Why a target refuses a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The target lists no `allowedNamespaces`, so no namespace may use it.
    NoNamespacesAllowed,
    /// The grant's namespace is not selected by `allowedNamespaces`.
    NamespaceNotAllowed {
        /// The grant's namespace.
        namespace: String,
        /// The selector, as `kubectl` would print it.
        selector: String,
    },
    /// The target's `allowedNamespaces` cannot be evaluated (an invalid operator).
    InvalidSelector(String),
    /// The role is not listed in the target's `allowedRoles`.
    RoleNotAllowed {
        /// The role asked for.
        role: String,
        /// The roles the target allows.
        allowed: Vec<String>,
    },
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoNamespacesAllowed => write!(
                f,
                "the target allows no namespace (spec.allowedNamespaces is not set); ask the platform team to add this namespace"
            ),
            Self::NamespaceNotAllowed {
                namespace,
                selector,
            } => write!(
                f,
                "namespace {namespace} is not selected by the target's allowedNamespaces ({selector})"
            ),
            Self::InvalidSelector(error) => {
                write!(f, "the target's allowedNamespaces is invalid: {error}")
            }
            Self::RoleNotAllowed { role, allowed } if allowed.is_empty() => {
                write!(f, "role {role} is not allowed: the target allows no roles")
            }
            Self::RoleNotAllowed { role, allowed } => write!(
                f,
                "role {role} is not allowed by the target; allowed roles: {}",
                allowed.join(", ")
            ),
        }
    }
}

/// Decide whether a grant in `namespace` (with `namespace_labels`) may get `role` on `target`.
///
/// Namespace first, then role: a namespace that may not use the target learns nothing about
/// which roles it offers.
pub fn check(
    target: &DatabaseTargetSpec,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    role: &str,
) -> Result<(), Denial> {
    let Some(selector) = &target.allowed_namespaces else {
        return Err(Denial::NoNamespacesAllowed);
    };
    let parsed = Selector::try_from(selector.clone())
        .map_err(|error| Denial::InvalidSelector(error.to_string()))?;
    if !parsed.matches(namespace_labels) {
        let printed = parsed.to_string();
        return Err(Denial::NamespaceNotAllowed {
            namespace: namespace.to_string(),
            selector: if printed.is_empty() {
                "everything".to_string()
            } else {
                printed
            },
        });
    }
    if !target.allows_role(role) {
        return Err(Denial::RoleNotAllowed {
            role: role.to_string(),
            allowed: target.allowed_roles.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    use super::*;

    fn target(selector: Option<LabelSelector>, roles: &[&str]) -> DatabaseTargetSpec {
        DatabaseTargetSpec {
            cosmos: None,
            postgres: None,
            sql: None,
            allowed_namespaces: selector,
            allowed_roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(pairs)),
            match_expressions: None,
        }
    }

    #[test]
    fn an_absent_selector_allows_no_namespace() {
        let t = target(None, &["reader"]);
        assert_eq!(
            check(&t, "shop", &labels(&[("team", "shop")]), "reader"),
            Err(Denial::NoNamespacesAllowed)
        );
    }

    #[test]
    fn an_empty_selector_allows_every_namespace() {
        let t = target(Some(LabelSelector::default()), &["reader"]);
        assert_eq!(check(&t, "anything", &BTreeMap::new(), "reader"), Ok(()));
    }

    #[test]
    fn match_labels_select_namespaces_by_their_labels() {
        let t = target(Some(match_labels(&[("team", "shop")])), &["reader"]);
        assert_eq!(
            check(&t, "shop", &labels(&[("team", "shop")]), "reader"),
            Ok(())
        );
        let denied = check(&t, "billing", &labels(&[("team", "billing")]), "reader");
        assert_eq!(
            denied,
            Err(Denial::NamespaceNotAllowed {
                namespace: "billing".into(),
                selector: "team=shop".into()
            })
        );
        assert!(
            denied
                .unwrap_err()
                .to_string()
                .contains("namespace billing is not selected")
        );
    }

    #[test]
    fn match_expressions_are_honoured_and_invalid_operators_are_reported() {
        let expr = |op: &str, values: Option<Vec<&str>>| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: op.into(),
                values: values.map(|v| v.into_iter().map(Into::into).collect()),
            }]),
        };
        let t = target(Some(expr("In", Some(vec!["prod", "staging"]))), &["reader"]);
        assert_eq!(
            check(&t, "a", &labels(&[("env", "prod")]), "reader"),
            Ok(())
        );
        assert!(check(&t, "a", &labels(&[("env", "dev")]), "reader").is_err());

        let t = target(Some(expr("NotIn", Some(vec!["prod"]))), &["reader"]);
        assert_eq!(check(&t, "a", &BTreeMap::new(), "reader"), Ok(()));

        let t = target(Some(expr("Sometimes", None)), &["reader"]);
        assert!(matches!(
            check(&t, "a", &BTreeMap::new(), "reader"),
            Err(Denial::InvalidSelector(_))
        ));
    }

    #[test]
    fn roles_must_be_listed_and_the_namespace_is_checked_first() {
        let t = target(Some(match_labels(&[("team", "shop")])), &["reader"]);
        let denied = check(&t, "shop", &labels(&[("team", "shop")]), "contributor");
        assert_eq!(
            denied,
            Err(Denial::RoleNotAllowed {
                role: "contributor".into(),
                allowed: vec!["reader".into()]
            })
        );
        assert!(
            denied
                .unwrap_err()
                .to_string()
                .contains("allowed roles: reader")
        );
        assert!(matches!(
            check(&t, "other", &BTreeMap::new(), "contributor"),
            Err(Denial::NamespaceNotAllowed { .. })
        ));
        let none = target(Some(LabelSelector::default()), &[]);
        assert!(
            check(&none, "a", &BTreeMap::new(), "reader")
                .unwrap_err()
                .to_string()
                .contains("allows no roles")
        );
    }
}
