//! shop: a local microservices lab in one binary.
//!
//! # Layout
//! - [`cli`]: the command line; one module per command
//! - [`error`]: `Failure` and the exit codes, used by every layer
//! - [`orchestrator`]: starting and supervising service processes
//! - [`services`]: the seven services, one module each
//! - [`plumbing`]: what the services share (HTTP bootstrap, SQLite, discovery, client, metrics)
//! - [`invariants`]: the business invariants of SPEC section 7, checked across databases
//! - [`fixtures`]: seed users and products
//! - [`top`]: `shop top`, the live dashboard: sampling, snapshots, rendering

pub mod cli;
pub mod error;
pub mod fixtures;
pub mod invariants;
pub mod orchestrator;
pub mod plumbing;
pub mod services;
pub mod top;
