//! Integration tests: the real `shop` binary, real services on port 0, real SQLite files in a
//! temp dir per test, HTTP over loopback.

mod api;
mod bench;
mod chaos;
mod cli;
mod commands;
mod dns;
mod drills;
mod drive;
mod export;
mod health;
mod hooks;
mod hostile;
mod invariants;
mod load;
mod logs;
mod notify;
mod props;
mod registry;
mod safety;
mod saga;
mod smoke;
mod stack;
mod support;
mod telemetry;
mod tools;
mod top;
mod wire;
