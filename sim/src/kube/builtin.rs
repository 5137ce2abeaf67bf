//! The built-in resources the simulator serves: what dbgrant, kubectl and Helm touch.

use super::resources::ServedResource;

const ALL_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    status: bool,
    short_names: &[&str],
) -> ServedResource {
    ServedResource {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        short_names: short_names.iter().map(|s| (*s).to_string()).collect(),
        categories: Vec::new(),
        namespaced,
        verbs: ALL_VERBS.iter().map(|s| (*s).to_string()).collect(),
        status_subresource: status,
        schema: None,
        printer_columns: Vec::new(),
    }
}

/// Every built-in resource, in discovery order.
pub fn resources() -> Vec<ServedResource> {
    let mut all = vec![
        resource("", "v1", "Namespace", "namespaces", false, true, &["ns"]),
        resource(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            false,
            &["sa"],
        ),
        resource("", "v1", "Secret", "secrets", true, false, &[]),
        resource("", "v1", "ConfigMap", "configmaps", true, false, &["cm"]),
        resource("", "v1", "Event", "events", true, false, &["ev"]),
        resource("", "v1", "Pod", "pods", true, true, &["po"]),
        resource("", "v1", "Service", "services", true, true, &["svc"]),
        resource(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            true,
            &["deploy"],
        ),
        // Helm's readiness checks read a Deployment's ReplicaSets.
        resource(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            true,
            true,
            &["rs"],
        ),
        // What the dbgrant chart installs besides the above.
        resource(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            true,
            &["pdb"],
        ),
        resource(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            false,
            &["netpol"],
        ),
        resource(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            true,
            false,
            &["ev"],
        ),
        resource(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            false,
            &[],
        ),
        resource(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            false,
            &[],
        ),
        resource(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            false,
            &[],
        ),
        resource(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            false,
            &[],
        ),
        resource(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            false,
            &[],
        ),
        resource(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
            &["crd", "crds"],
        ),
    ];
    let mut review = resource(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
        false,
        &[],
    );
    review.verbs = vec!["create".into()];
    all.push(review);
    for r in &mut all {
        if matches!(r.plural.as_str(), "pods" | "services" | "deployments") {
            r.categories.push("all".into());
        }
    }
    all
}
