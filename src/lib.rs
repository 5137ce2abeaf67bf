//! dbgrant: a Kubernetes operator that gives workloads keyless database access on Azure.
//!
//! `api` holds the custom resource types (no I/O); `controller` the reconcilers; `error` the one
//! error type whose variants become condition reasons; `http` the probe and metrics endpoints;
//! `telemetry` logging and metrics; `settings` every flag the binary takes; `leader` leader
//! election; `run` wires them.

pub mod api;
pub mod azure;
pub mod backend;
pub mod controller;
pub mod error;
pub mod http;
pub mod leader;
mod run;
pub mod settings;
pub mod telemetry;
pub mod token;

pub use run::{azure_access, backends_for, run, shutdown_signal};
