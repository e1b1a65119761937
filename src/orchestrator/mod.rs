//! Starting and supervising service processes.
//!
//! - [`launcher`]: spawn one `shop serve` child (or any command) in its own process group,
//!   learn its address, wait until it is healthy, stop it

pub mod launcher;
