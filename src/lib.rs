//! shop: a local microservices lab in one binary.
//!
//! # Layout
//! - [`cli`]: the command line; one module per command
//! - [`error`]: `Failure` and the exit codes, used by every layer
//! - [`orchestrator`]: starting and supervising service processes
//! - [`services`]: the seven services, one module each
//! - [`plumbing`]: what the services share (HTTP bootstrap, SQLite, discovery, client, metrics, the positioned YAML reader)
//! - [`traffic`]: the gateway client and the load engine behind `shop load`, `order` and `smoke`
//! - [`drill`]: drill files, the drill runner and its report (`shop chaos drill`)
//! - [`invariants`]: the business invariants of SPEC section 7, checked across databases
//! - [`fixtures`]: seed users and products
//! - [`top`]: `shop top`, the live dashboard: sampling, snapshots, rendering

pub mod cli;
pub mod drill;
pub mod error;
pub mod fixtures;
pub mod invariants;
pub mod orchestrator;
pub mod plumbing;
pub mod services;
pub mod top;
pub mod traffic;
