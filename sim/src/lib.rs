//! Dev-only simulators for dbgrant: a Kubernetes API server (`kube`) and Azure (`azure`) that
//! real clients accept, used by the end-to-end tests, the sandbox and the benchmarks.
//! Nothing here is ever linked into the operator binary.

pub mod apply;
pub mod azure;
pub mod jwt;
pub mod kube;
pub mod operator;
pub mod sandbox;
pub mod tls;
