//! Request paths and query parameters, parsed into what the handlers need.

use std::collections::HashMap;

/// A resource path: `/api/v1/namespaces/{ns}/{plural}/{name}/{subresource}` and its shapes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// API group; `""` for the core group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace in the path, if any.
    pub namespace: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource (`status`, `token`, ...), if any.
    pub subresource: Option<String>,
}

/// What a path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    GroupVersion(String, String),
    /// A resource or object.
    Resource(Target),
}

/// Parse a request path.
pub fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", group] => return Some(Route::Group((*group).to_string())),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let mut target = Target {
        group: group.to_string(),
        version: version.to_string(),
        ..Target::default()
    };
    let owned = |s: &&str| (*s).to_string();
    match rest {
        [] => return Some(Route::GroupVersion(group.to_string(), version.to_string())),
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            target.namespace = Some((*ns).to_string());
            target.plural = (*plural).to_string();
            target.name = tail.first().map(owned);
            target.subresource = tail.get(1).map(owned);
            if tail.len() > 2 {
                return None;
            }
        }
        [plural, tail @ ..] => {
            target.plural = (*plural).to_string();
            target.name = tail.first().map(owned);
            target.subresource = tail.get(1).map(owned);
            if tail.len() > 2 {
                return None;
            }
        }
    }
    Some(Route::Resource(target))
}

/// Query parameters, last value wins.
pub fn query(raw: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_resources_objects_and_subresources() {
        let Some(Route::Resource(t)) = route("/api/v1/namespaces/shop/serviceaccounts/app/token")
        else {
            panic!()
        };
        assert_eq!(
            (
                t.group.as_str(),
                t.plural.as_str(),
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            (
                "",
                "serviceaccounts",
                Some("shop"),
                Some("app"),
                Some("token")
            )
        );
        let Some(Route::Resource(t)) = route("/api/v1/namespaces/shop") else {
            panic!()
        };
        assert_eq!(
            (t.plural.as_str(), t.name.as_deref(), t.namespace),
            ("namespaces", Some("shop"), None)
        );
        let Some(Route::Resource(t)) = route("/apis/dbgrant.io/v1alpha1/databaseaccessgrants")
        else {
            panic!()
        };
        assert_eq!(
            (t.group.as_str(), t.namespace, t.name),
            ("dbgrant.io", None, None)
        );
        assert_eq!(
            route("/apis/dbgrant.io/v1alpha1"),
            Some(Route::GroupVersion("dbgrant.io".into(), "v1alpha1".into()))
        );
        assert_eq!(route("/nope"), None);
    }
}
