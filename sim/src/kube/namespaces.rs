//! What the controller-manager does for every new namespace: give it a `default`
//! ServiceAccount, which pods and `kubectl create token default` expect to exist.

use serde_json::{Value, json};

use super::resources::ServedResource;
use super::store::Inner;
use super::time;

/// After `object` of `resource` was created: a namespace gets its `default` ServiceAccount.
pub fn on_created(inner: &mut Inner, resource: &ServedResource, object: &Value) {
    if !resource.group.is_empty() || resource.plural != "namespaces" {
        return;
    }
    let Some(namespace) = object["metadata"]["name"].as_str() else {
        return;
    };
    let key = (String::new(), "serviceaccounts".to_string());
    if inner.get(&key, namespace, "default").is_some() {
        return;
    }
    let account = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "default",
            "namespace": namespace,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": time::now(),
        },
    });
    inner.put(&key, namespace, "default", account);
}
