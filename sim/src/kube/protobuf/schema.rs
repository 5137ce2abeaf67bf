//! The protobuf shapes of the built-in objects the simulator serves: for each message, its
//! fields' numbers, JSON names and types (the numbers of Kubernetes' `generated.proto`). One
//! table drives decoding of every kind, so a new kind needs rows, not code. Fields absent from
//! a table are skipped, as an older API server skips fields it does not know.

/// A field's type.
#[derive(Clone, Copy, Debug)]
pub enum Ty {
    /// UTF-8 string.
    Str,
    /// Varint boolean.
    Bool,
    /// Varint integer (int32 or int64, two's complement).
    Int,
    /// A nested message, by name.
    Msg(&'static str),
    /// An embedded message whose fields JSON lifts into the parent (Go's inline structs).
    Inline(&'static str),
    /// `map<string, string>`.
    StrMap,
    /// `map<string, bytes>`.
    BytesMap,
    /// `map<string, Quantity>`: quantities are strings in JSON.
    QuantityMap,
    /// `resource.Quantity`: its string form.
    Quantity,
    /// `intstr.IntOrString`: a number or a string in JSON.
    IntOrString,
    /// `metav1.Time` or `MicroTime`: RFC 3339 in JSON.
    Time,
}

/// One field: number, JSON name, type, and whether it repeats (a JSON array).
pub type Field = (u64, &'static str, Ty, bool);

use Ty::{Bool, BytesMap, Inline, Int, IntOrString, Msg, Quantity, QuantityMap, Str, StrMap, Time};

const ONE: bool = false;
const MANY: bool = true;

/// The message of a served built-in kind; `None` for kinds sent only as JSON.
pub fn kind_message(group: &str, kind: &str) -> Option<&'static str> {
    Some(match (group, kind) {
        ("", "Namespace") => "Namespace",
        ("", "ServiceAccount") => "ServiceAccount",
        ("", "Secret") => "Secret",
        ("", "ConfigMap") => "ConfigMap",
        ("", "Pod") => "Pod",
        ("", "Service") => "Service",
        ("", "Event") => "CoreEvent",
        ("apps", "Deployment") => "Deployment",
        ("apps", "ReplicaSet") => "ReplicaSet",
        ("coordination.k8s.io", "Lease") => "Lease",
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => "ClusterRole",
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => "RoleBinding",
        ("policy", "PodDisruptionBudget") => "PodDisruptionBudget",
        ("networking.k8s.io", "NetworkPolicy") => "NetworkPolicy",
        _ => return None,
    })
}

/// The fields of `message`.
pub fn fields(message: &str) -> &'static [Field] {
    match message {
        "ObjectMeta" => &[
            (1, "name", Str, ONE),
            (2, "generateName", Str, ONE),
            (3, "namespace", Str, ONE),
            (5, "uid", Str, ONE),
            (6, "resourceVersion", Str, ONE),
            (7, "generation", Int, ONE),
            (11, "labels", StrMap, ONE),
            (12, "annotations", StrMap, ONE),
            (13, "ownerReferences", Msg("OwnerReference"), MANY),
            (14, "finalizers", Str, MANY),
        ],
        "OwnerReference" => &[
            (5, "apiVersion", Str, ONE),
            (1, "kind", Str, ONE),
            (3, "name", Str, ONE),
            (4, "uid", Str, ONE),
            (6, "controller", Bool, ONE),
            (7, "blockOwnerDeletion", Bool, ONE),
        ],
        "LabelSelector" => &[
            (1, "matchLabels", StrMap, ONE),
            (2, "matchExpressions", Msg("LabelSelectorRequirement"), MANY),
        ],
        "LabelSelectorRequirement" => &[
            (1, "key", Str, ONE),
            (2, "operator", Str, ONE),
            (3, "values", Str, MANY),
        ],
        "ObjectReference" => &[
            (1, "kind", Str, ONE),
            (2, "namespace", Str, ONE),
            (3, "name", Str, ONE),
            (4, "uid", Str, ONE),
            (5, "apiVersion", Str, ONE),
            (6, "resourceVersion", Str, ONE),
            (7, "fieldPath", Str, ONE),
        ],
        "LocalObjectReference" => &[(1, "name", Str, ONE)],
        // --- core/v1 ---
        "Namespace" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "spec", Msg("NamespaceSpec"), ONE),
        ],
        "NamespaceSpec" => &[(1, "finalizers", Str, MANY)],
        "ServiceAccount" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "secrets", Msg("ObjectReference"), MANY),
            (3, "imagePullSecrets", Msg("LocalObjectReference"), MANY),
            (4, "automountServiceAccountToken", Bool, ONE),
        ],
        "Secret" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "data", BytesMap, ONE),
            (3, "type", Str, ONE),
            (4, "stringData", StrMap, ONE),
            (5, "immutable", Bool, ONE),
        ],
        "ConfigMap" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "data", StrMap, ONE),
            (3, "binaryData", BytesMap, ONE),
            (4, "immutable", Bool, ONE),
        ],
        "CoreEvent" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "involvedObject", Msg("ObjectReference"), ONE),
            (3, "reason", Str, ONE),
            (4, "message", Str, ONE),
            (6, "firstTimestamp", Time, ONE),
            (7, "lastTimestamp", Time, ONE),
            (8, "count", Int, ONE),
            (9, "type", Str, ONE),
            (12, "action", Str, ONE),
            (13, "related", Msg("ObjectReference"), ONE),
            (14, "reportingComponent", Str, ONE),
            (15, "reportingInstance", Str, ONE),
        ],
        "Pod" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "spec", Msg("PodSpec"), ONE),
        ],
        "PodTemplateSpec" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "spec", Msg("PodSpec"), ONE),
        ],
        "PodSpec" => &[
            (1, "volumes", Msg("Volume"), MANY),
            (20, "initContainers", Msg("Container"), MANY),
            (2, "containers", Msg("Container"), MANY),
            (3, "restartPolicy", Str, ONE),
            (4, "terminationGracePeriodSeconds", Int, ONE),
            (5, "activeDeadlineSeconds", Int, ONE),
            (6, "dnsPolicy", Str, ONE),
            (7, "nodeSelector", StrMap, ONE),
            (8, "serviceAccountName", Str, ONE),
            (9, "serviceAccount", Str, ONE),
            (21, "automountServiceAccountToken", Bool, ONE),
            (10, "nodeName", Str, ONE),
            (11, "hostNetwork", Bool, ONE),
            (12, "hostPID", Bool, ONE),
            (13, "hostIPC", Bool, ONE),
            (14, "securityContext", Msg("PodSecurityContext"), ONE),
            (15, "imagePullSecrets", Msg("LocalObjectReference"), MANY),
            (16, "hostname", Str, ONE),
            (17, "subdomain", Str, ONE),
            (19, "schedulerName", Str, ONE),
            (22, "tolerations", Msg("Toleration"), MANY),
            (24, "priorityClassName", Str, ONE),
            (25, "priority", Int, ONE),
            (29, "runtimeClassName", Str, ONE),
            (30, "enableServiceLinks", Bool, ONE),
        ],
        "Container" => &[
            (1, "name", Str, ONE),
            (2, "image", Str, ONE),
            (3, "command", Str, MANY),
            (4, "args", Str, MANY),
            (5, "workingDir", Str, ONE),
            (6, "ports", Msg("ContainerPort"), MANY),
            (7, "env", Msg("EnvVar"), MANY),
            (8, "resources", Msg("ResourceRequirements"), ONE),
            (9, "volumeMounts", Msg("VolumeMount"), MANY),
            (10, "livenessProbe", Msg("Probe"), ONE),
            (11, "readinessProbe", Msg("Probe"), ONE),
            (22, "startupProbe", Msg("Probe"), ONE),
            (13, "terminationMessagePath", Str, ONE),
            (20, "terminationMessagePolicy", Str, ONE),
            (14, "imagePullPolicy", Str, ONE),
            (15, "securityContext", Msg("SecurityContext"), ONE),
            (16, "stdin", Bool, ONE),
            (17, "stdinOnce", Bool, ONE),
            (18, "tty", Bool, ONE),
            (24, "restartPolicy", Str, ONE),
        ],
        "ContainerPort" => &[
            (1, "name", Str, ONE),
            (2, "hostPort", Int, ONE),
            (3, "containerPort", Int, ONE),
            (4, "protocol", Str, ONE),
            (5, "hostIP", Str, ONE),
        ],
        "EnvVar" => &[
            (1, "name", Str, ONE),
            (2, "value", Str, ONE),
            (3, "valueFrom", Msg("EnvVarSource"), ONE),
        ],
        "EnvVarSource" => &[
            (1, "fieldRef", Msg("ObjectFieldSelector"), ONE),
            (3, "configMapKeyRef", Msg("KeySelector"), ONE),
            (4, "secretKeyRef", Msg("KeySelector"), ONE),
        ],
        "ObjectFieldSelector" => &[(1, "apiVersion", Str, ONE), (2, "fieldPath", Str, ONE)],
        // ConfigMapKeySelector and SecretKeySelector share their shape.
        "KeySelector" => &[
            (1, "", Inline("LocalObjectReference"), ONE),
            (2, "key", Str, ONE),
            (3, "optional", Bool, ONE),
        ],
        "ResourceRequirements" => &[
            (1, "limits", QuantityMap, ONE),
            (2, "requests", QuantityMap, ONE),
        ],
        "VolumeMount" => &[
            (1, "name", Str, ONE),
            (2, "readOnly", Bool, ONE),
            (3, "mountPath", Str, ONE),
            (4, "subPath", Str, ONE),
        ],
        "Volume" => &[(1, "name", Str, ONE), (2, "", Inline("VolumeSource"), ONE)],
        "VolumeSource" => &[
            (6, "secret", Msg("SecretVolumeSource"), ONE),
            (2, "emptyDir", Msg("EmptyDirVolumeSource"), ONE),
            (19, "configMap", Msg("ConfigMapVolumeSource"), ONE),
        ],
        "SecretVolumeSource" => &[(1, "secretName", Str, ONE), (4, "optional", Bool, ONE)],
        "ConfigMapVolumeSource" => &[
            (1, "", Inline("LocalObjectReference"), ONE),
            (4, "optional", Bool, ONE),
        ],
        "EmptyDirVolumeSource" => &[(1, "medium", Str, ONE), (2, "sizeLimit", Quantity, ONE)],
        "Probe" => &[
            (1, "handler", Msg("ProbeHandler"), ONE),
            (2, "initialDelaySeconds", Int, ONE),
            (3, "timeoutSeconds", Int, ONE),
            (4, "periodSeconds", Int, ONE),
            (5, "successThreshold", Int, ONE),
            (6, "failureThreshold", Int, ONE),
        ],
        "ProbeHandler" => &[
            (1, "exec", Msg("ExecAction"), ONE),
            (2, "httpGet", Msg("HTTPGetAction"), ONE),
            (3, "tcpSocket", Msg("TCPSocketAction"), ONE),
        ],
        "ExecAction" => &[(1, "command", Str, MANY)],
        "HTTPGetAction" => &[
            (1, "path", Str, ONE),
            (2, "port", IntOrString, ONE),
            (3, "host", Str, ONE),
            (4, "scheme", Str, ONE),
        ],
        "TCPSocketAction" => &[(1, "port", IntOrString, ONE), (2, "host", Str, ONE)],
        "SecurityContext" => &[
            (1, "capabilities", Msg("Capabilities"), ONE),
            (2, "privileged", Bool, ONE),
            (4, "runAsUser", Int, ONE),
            (8, "runAsGroup", Int, ONE),
            (5, "runAsNonRoot", Bool, ONE),
            (6, "readOnlyRootFilesystem", Bool, ONE),
            (7, "allowPrivilegeEscalation", Bool, ONE),
            (9, "procMount", Str, ONE),
            (11, "seccompProfile", Msg("SeccompProfile"), ONE),
        ],
        "PodSecurityContext" => &[
            (2, "runAsUser", Int, ONE),
            (6, "runAsGroup", Int, ONE),
            (3, "runAsNonRoot", Bool, ONE),
            (4, "supplementalGroups", Int, MANY),
            (5, "fsGroup", Int, ONE),
            (10, "seccompProfile", Msg("SeccompProfile"), ONE),
        ],
        "Capabilities" => &[(1, "add", Str, MANY), (2, "drop", Str, MANY)],
        "SeccompProfile" => &[(1, "type", Str, ONE), (2, "localhostProfile", Str, ONE)],
        "Toleration" => &[
            (1, "key", Str, ONE),
            (2, "operator", Str, ONE),
            (3, "value", Str, ONE),
            (4, "effect", Str, ONE),
            (5, "tolerationSeconds", Int, ONE),
        ],
        "Service" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "spec", Msg("ServiceSpec"), ONE),
        ],
        "ServiceSpec" => &[
            (1, "ports", Msg("ServicePort"), MANY),
            (2, "selector", StrMap, ONE),
            (3, "clusterIP", Str, ONE),
            (18, "clusterIPs", Str, MANY),
            (4, "type", Str, ONE),
            (5, "externalIPs", Str, MANY),
            (7, "sessionAffinity", Str, ONE),
            (10, "externalName", Str, ONE),
        ],
        "ServicePort" => &[
            (1, "name", Str, ONE),
            (2, "protocol", Str, ONE),
            (6, "appProtocol", Str, ONE),
            (3, "port", Int, ONE),
            (4, "targetPort", IntOrString, ONE),
            (5, "nodePort", Int, ONE),
        ],
        // --- apps/v1 ---
        "Deployment" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "spec", Msg("DeploymentSpec"), ONE),
        ],
        "DeploymentSpec" => &[
            (1, "replicas", Int, ONE),
            (2, "selector", Msg("LabelSelector"), ONE),
            (3, "template", Msg("PodTemplateSpec"), ONE),
            (4, "strategy", Msg("DeploymentStrategy"), ONE),
            (5, "minReadySeconds", Int, ONE),
            (6, "revisionHistoryLimit", Int, ONE),
            (7, "paused", Bool, ONE),
            (9, "progressDeadlineSeconds", Int, ONE),
        ],
        "DeploymentStrategy" => &[
            (1, "type", Str, ONE),
            (2, "rollingUpdate", Msg("RollingUpdateDeployment"), ONE),
        ],
        "RollingUpdateDeployment" => &[
            (1, "maxUnavailable", IntOrString, ONE),
            (2, "maxSurge", IntOrString, ONE),
        ],
        "ReplicaSet" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "spec", Msg("ReplicaSetSpec"), ONE),
        ],
        "ReplicaSetSpec" => &[
            (1, "replicas", Int, ONE),
            (2, "selector", Msg("LabelSelector"), ONE),
            (3, "template", Msg("PodTemplateSpec"), ONE),
            (4, "minReadySeconds", Int, ONE),
        ],
        // --- coordination, rbac, policy, networking ---
        "Lease" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "spec", Msg("LeaseSpec"), ONE),
        ],
        "LeaseSpec" => &[
            (1, "holderIdentity", Str, ONE),
            (2, "leaseDurationSeconds", Int, ONE),
            (3, "acquireTime", Time, ONE),
            (4, "renewTime", Time, ONE),
            (5, "leaseTransitions", Int, ONE),
        ],
        // Role has ClusterRole's fields but the aggregation rule.
        "ClusterRole" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "rules", Msg("PolicyRule"), MANY),
            (3, "aggregationRule", Msg("AggregationRule"), ONE),
        ],
        "PolicyRule" => &[
            (1, "verbs", Str, MANY),
            (2, "apiGroups", Str, MANY),
            (3, "resources", Str, MANY),
            (4, "resourceNames", Str, MANY),
            (5, "nonResourceURLs", Str, MANY),
        ],
        "AggregationRule" => &[(1, "clusterRoleSelectors", Msg("LabelSelector"), MANY)],
        // RoleBinding and ClusterRoleBinding share their shape.
        "RoleBinding" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "subjects", Msg("Subject"), MANY),
            (3, "roleRef", Msg("RoleRef"), ONE),
        ],
        "Subject" => &[
            (1, "kind", Str, ONE),
            (2, "apiGroup", Str, ONE),
            (3, "name", Str, ONE),
            (4, "namespace", Str, ONE),
        ],
        "RoleRef" => &[
            (1, "apiGroup", Str, ONE),
            (2, "kind", Str, ONE),
            (3, "name", Str, ONE),
        ],
        "PodDisruptionBudget" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "spec", Msg("PodDisruptionBudgetSpec"), ONE),
        ],
        "PodDisruptionBudgetSpec" => &[
            (1, "minAvailable", IntOrString, ONE),
            (2, "selector", Msg("LabelSelector"), ONE),
            (3, "maxUnavailable", IntOrString, ONE),
            (4, "unhealthyPodEvictionPolicy", Str, ONE),
        ],
        "NetworkPolicy" => &[
            (1, "metadata", Msg("ObjectMeta"), ONE),
            (2, "spec", Msg("NetworkPolicySpec"), ONE),
        ],
        "NetworkPolicySpec" => &[
            (1, "podSelector", Msg("LabelSelector"), ONE),
            (4, "policyTypes", Str, MANY),
        ],
        _ => &[],
    }
}
