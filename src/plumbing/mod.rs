//! Plumbing every service shares: HTTP bootstrap, errors, SQLite, discovery, the inter-service client, metrics, ids, trace context and OTLP export.

pub mod admin;
pub mod background;
pub mod breaker;
pub mod client;
pub mod config;
pub mod db;
pub mod discovery;
pub mod error;
pub mod faults;
pub mod http;
pub mod ids;
pub mod log_query;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod spans;
pub mod test_hooks;
pub mod time;
pub mod trace;
pub mod yaml;
