//! What the simulator serves: one entry per resource (built-in or from a CRD), shared by
//! discovery, OpenAPI and Table rendering.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, JSONSchemaProps,
};

/// One served resource of one group version.
#[derive(Clone, Debug, Default)]
pub struct ServedResource {
    /// API group; `""` for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Secret`.
    pub kind: String,
    /// Plural resource name, e.g. `secrets`.
    pub plural: String,
    /// Singular resource name, e.g. `secret`.
    pub singular: String,
    /// Short names, e.g. `dbgrant`.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Verbs allowed on the resource.
    pub verbs: Vec<String>,
    /// Whether a `status` subresource is served.
    pub status_subresource: bool,
    /// The openAPIV3Schema for custom resources; `None` for built-ins.
    pub schema: Option<JSONSchemaProps>,
    /// additionalPrinterColumns for custom resources; empty for built-ins.
    pub printer_columns: Vec<CustomResourceColumnDefinition>,
}
