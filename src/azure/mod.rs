//! The operator's Azure client: the one real [`CosmosAccess`](crate::backend::cosmos::CosmosAccess)
//! implementation ([`AzureCosmos`]), built on azure_core's pipeline with a rustls (ring)
//! transport.
//!
//! - `cloud`: public, China, US Government and custom endpoints and audiences;
//! - `config`: the `dbgrant run` flags and the resolved [`AzureConfig`];
//! - `pipeline`: TLS (system roots plus an extra CA), the pipeline, the retry loop;
//! - `admins`: the Entra administrator resource the PostgreSQL and SQL reads share;
//! - `arm`: typed ARM calls, paging and the long-running-operation protocol;
//! - `error`: Azure and Entra error bodies mapped to condition reasons;
//! - `entra`: the workload identity exchange and token claims;
//! - `credential`: the operator's own ARM credential (azure_identity);
//! - `models`: the ARM wire shapes of accounts, role definitions and assignments;
//! - `cosmos`: Cosmos DB accounts, SQL RBAC and the data-plane probe;
//! - `postgres`: PostgreSQL flexible servers' Entra administrators (the preflight's ARM read);
//! - `sql`: T-SQL servers' Entra admin (the SQL preflight's ARM read).

mod admins;
pub mod arm;
pub mod cloud;
pub mod config;
pub mod cosmos;
pub mod credential;
pub mod entra;
pub mod error;
pub mod lro_timing;
pub mod models;
pub mod pipeline;
pub mod postgres;
pub mod sql;
pub mod throttle_gate;

pub use cloud::Cloud;
pub use config::{AzureArgs, AzureConfig};
pub use cosmos::AzureCosmos;
pub use credential::OperatorCredential;
pub use pipeline::Timing;
