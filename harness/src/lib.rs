//! Dev-only: the real dbgrant operator run in-process against the simulators of `dbgrant-sim`,
//! for the sandbox (`cargo run -p dbgrant-harness --bin sandbox`) and the end-to-end tests.
//! Kept apart from `dbgrant-sim` so the simulators build and run without the operator.

pub mod operator;
pub mod sandbox;
