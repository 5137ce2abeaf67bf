//! RBAC authorization for ServiceAccount tokens, as the API server's RBAC authorizer does it:
//! RoleBindings and ClusterRoleBindings to ServiceAccounts or their groups, rules with verbs,
//! API groups, resources, subresources, resource names and non-resource URLs, `*` wildcards and
//! aggregated ClusterRoles. The admin bypasses it.

use serde_json::Value;

use super::select::Selector;
use super::store::Inner;
use super::tokens::User;

/// One request to authorize.
#[derive(Clone, Debug, Default)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group (`""` for core).
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: Option<String>,
    /// Namespace, if any.
    pub namespace: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
    /// For non-resource requests, the path.
    pub path: Option<String>,
}

fn groups_of(user: &User) -> Vec<String> {
    match user {
        User::Admin => vec!["system:masters".into(), "system:authenticated".into()],
        User::ServiceAccount { namespace, .. } => vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    }
}

fn subject_matches(subject: &Value, user: &User, binding_namespace: &str) -> bool {
    let User::ServiceAccount { namespace, name } = user else {
        return false;
    };
    match subject["kind"].as_str() {
        Some("ServiceAccount") => {
            subject["name"].as_str() == Some(name)
                && subject["namespace"].as_str().unwrap_or(binding_namespace) == namespace
        }
        Some("User") => subject["name"].as_str() == Some(&user.name()),
        Some("Group") => groups_of(user)
            .iter()
            .any(|g| subject["name"].as_str() == Some(g)),
        _ => false,
    }
}

fn matches(list: &Value, wanted: &str) -> bool {
    list.as_array()
        .is_some_and(|items| items.iter().any(|i| i == "*" || i.as_str() == Some(wanted)))
}

fn rule_allows(rule: &Value, attributes: &Attributes) -> bool {
    if !matches(&rule["verbs"], &attributes.verb) {
        return false;
    }
    if let Some(path) = &attributes.path {
        return rule["nonResourceURLs"].as_array().is_some_and(|urls| {
            urls.iter().filter_map(Value::as_str).any(|u| {
                u == "*"
                    || u == path
                    || u.strip_suffix('*')
                        .is_some_and(|prefix| path.starts_with(prefix))
            })
        });
    }
    let resource = match &attributes.subresource {
        Some(sub) => format!("{}/{sub}", attributes.resource),
        None => attributes.resource.clone(),
    };
    let resource_ok = rule["resources"].as_array().is_some_and(|items| {
        items.iter().filter_map(Value::as_str).any(|r| {
            r == "*"
                || r == resource
                || (attributes.subresource.is_some()
                    && r == format!(
                        "*/{}",
                        attributes.subresource.as_deref().unwrap_or_default()
                    ))
        })
    });
    let names_ok = match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => attributes
            .name
            .as_ref()
            .is_some_and(|n| names.iter().any(|x| x.as_str() == Some(n))),
        _ => true,
    };
    matches(&rule["apiGroups"], &attributes.group) && resource_ok && names_ok
}

/// The rules of a role, aggregated ClusterRoles included.
fn rules_of(inner: &Inner, kind: &str, name: &str, namespace: &str) -> Vec<Value> {
    let (key, ns) = if kind == "ClusterRole" {
        ("clusterroles", "")
    } else {
        ("roles", namespace)
    };
    let Some(role) = inner.get(&("rbac.authorization.k8s.io".into(), key.into()), ns, name) else {
        return Vec::new();
    };
    let mut rules: Vec<Value> = role["rules"].as_array().cloned().unwrap_or_default();
    if let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() {
        for selector in selectors {
            let labels: Vec<String> = selector["matchLabels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            let Ok(selector) = Selector::labels(&labels.join(",")) else {
                continue;
            };
            for other in inner.list(
                &("rbac.authorization.k8s.io".into(), "clusterroles".into()),
                None,
            ) {
                if other["metadata"]["name"].as_str() != Some(name)
                    && selector.matches_labels(&other)
                {
                    rules.extend(other["rules"].as_array().cloned().unwrap_or_default());
                }
            }
        }
    }
    rules
}

/// Whether `user` may do what `attributes` describe.
pub fn allowed(inner: &Inner, user: &User, attributes: &Attributes) -> bool {
    if *user == User::Admin {
        return true;
    }
    // Discovery, version and OpenAPI are open to every authenticated user (system:discovery).
    if let Some(path) = &attributes.path
        && (path == "/api"
            || path == "/apis"
            || path.starts_with("/api/")
            || path.starts_with("/apis/")
            || path == "/version"
            || path.starts_with("/openapi"))
    {
        return true;
    }
    // Asking about oneself is open to every authenticated user (system:basic-user).
    if attributes.verb == "create"
        && matches!(
            (attributes.group.as_str(), attributes.resource.as_str()),
            (
                "authorization.k8s.io",
                "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
            ) | ("authentication.k8s.io", "selfsubjectreviews")
        )
    {
        return true;
    }
    let rbac = |plural: &str| ("rbac.authorization.k8s.io".to_string(), plural.to_string());
    let cluster = inner
        .list(&rbac("clusterrolebindings"), None)
        .into_iter()
        .map(|b| (b, String::new()));
    let namespaced = attributes.namespace.iter().flat_map(|ns| {
        inner
            .list(&rbac("rolebindings"), Some(ns))
            .into_iter()
            .map(move |b| (b, ns.clone()))
    });
    cluster.chain(namespaced).any(|(binding, ns)| {
        let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
        if !subjects.iter().any(|s| subject_matches(s, user, &ns)) {
            return false;
        }
        let kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        rules_of(inner, kind, name, &ns)
            .iter()
            .any(|rule| rule_allows(rule, attributes))
    })
}

/// The API server's 403 message for a denied request.
pub fn denied_message(user: &User, attributes: &Attributes) -> String {
    let resource = match &attributes.subresource {
        Some(sub) => format!("{}/{sub}", attributes.resource),
        None => attributes.resource.clone(),
    };
    let qualified = if attributes.group.is_empty() {
        attributes.resource.clone()
    } else {
        format!("{}.{}", attributes.resource, attributes.group)
    };
    let object = match &attributes.name {
        Some(name) => format!("{qualified} \"{name}\""),
        None => qualified,
    };
    let scope = match &attributes.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    format!(
        "{object} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name(),
        attributes.verb,
        attributes.group
    )
}
