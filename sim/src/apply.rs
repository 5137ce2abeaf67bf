//! Apply YAML manifests the way `kubectl apply --server-side` does: each document resolved to
//! its resource through discovery, then server-side applied under one field manager.

use std::path::Path;

use anyhow::Context as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use kube::{Client, ResourceExt};
use serde_json::Value;

/// The field manager the sandbox and tests apply with.
pub const FIELD_MANAGER: &str = "dbgrant-sandbox";

/// Every YAML document of every `.yaml`/`.yml` file in `dir`, in file-name order.
///
/// # Errors
/// When the directory or a file cannot be read or parsed.
pub fn read_manifests(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        documents
            .extend(parse_documents(&text).with_context(|| format!("parsing {}", file.display()))?);
    }
    Ok(documents)
}

/// The non-empty YAML documents of `text`.
///
/// # Errors
/// When `text` is not YAML.
pub fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text)?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// Server-side apply one object (any kind the server serves) and return it as stored.
/// Namespaced objects without a namespace go to `default_namespace`.
///
/// # Errors
/// When the kind is not served or the server refuses the object.
pub async fn apply(
    client: &Client,
    object: &Value,
    default_namespace: &str,
) -> anyhow::Result<DynamicObject> {
    let object: DynamicObject = serde_json::from_value(object.clone())
        .context("the manifest is not a Kubernetes object")?;
    let types = object
        .types
        .clone()
        .context("the manifest has no apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types)?;
    let (resource, capabilities) = pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("discovering {}", types.kind))?;
    let name = object.name_any();
    let api: Api<DynamicObject> = if capabilities.scope == Scope::Namespaced {
        let namespace = object
            .namespace()
            .unwrap_or_else(|| default_namespace.to_string());
        Api::namespaced_with(client.clone(), &namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("applying {} {name}", types.kind))
}
