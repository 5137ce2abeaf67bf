//! The Kubernetes API simulator: storage, verbs, watches, RBAC, TokenRequest and CRD serving
//! that real kubectl, Helm and kube-rs accept.

pub mod openapi;
pub mod resources;
pub mod schema;
pub mod table;
