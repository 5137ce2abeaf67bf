//! Helpers shared by the integration tests; each test binary uses only some of them.
#![allow(dead_code)]

pub mod real_server;
pub mod schema;
