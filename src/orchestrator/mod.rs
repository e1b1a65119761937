//! Starting and supervising service processes.
//!
//! - [`launcher`]: spawn one `shop serve` child (or any command) in its own process group,
//!   learn its address, wait until it is healthy, stop it
//! - [`supervisor`]: start a stack in dependency order, health-check, restart per policy,
//!   apply chaos, answer the control API; [`daemon`] runs one, [`control`] talks to one
//! - [`protocol`]: the control API's requests and responses, shared by both sides
//! - [`proxy`]: the TCP proxy and its toxics behind `shop chaos net` and wire partitions
//! - [`env`]: the environment a service runs with, from its stack file entry (used by the
//!   supervisor and by `shop export`)
//! - [`state_dir`]: where a running stack keeps its record, secret, logs and databases
//! - [`ports`]: fixed-port checks, naming the process that holds a taken port
//! - [`stackfile`]: read and validate `stack.yaml` into a typed [`stackfile::Stack`], reporting
//!   every problem at once as `file:line:col: message`

pub mod control;
pub mod daemon;
pub mod env;
pub mod launcher;
pub mod ports;
pub mod protocol;
pub mod proxy;
pub mod stackfile;
pub mod state_dir;
pub mod supervisor;
