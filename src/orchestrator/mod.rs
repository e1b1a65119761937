//! Starting and supervising service processes.
//!
//! - [`launcher`]: spawn one `shop serve` child (or any command) in its own process group,
//!   learn its address, wait until it is healthy, stop it
//! - [`supervisor`]: start a stack in dependency order, health-check, restart per policy,
//!   answer the control API; [`daemon`] runs one, [`control`] talks to one
//! - [`chaos`]: faults the supervisor applies (kill, pause) or pushes to services (latency,
//!   errors, partitions), remembered until they expire
//! - [`state_dir`]: where a running stack keeps its record, secret, logs and databases
//! - [`ports`]: fixed-port checks, naming the process that holds a taken port
//! - [`stackfile`]: read and validate `stack.yaml` into a typed [`stackfile::Stack`], reporting
//!   every problem at once as `file:line:col: message`

pub mod chaos;
pub mod control;
pub mod daemon;
pub mod launcher;
pub mod ports;
pub mod stackfile;
pub mod state_dir;
pub mod supervisor;
