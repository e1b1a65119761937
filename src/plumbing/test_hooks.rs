//! Test hooks: environment variables that make a process misbehave on purpose so the test suite
//! can reach states a healthy stack never shows (a crash mid-saga, a late answer, a short header
//! deadline, a panicking dashboard).
//!
//! They are inert unless `SHOP_TEST_HOOKS=1` is set as well: a hook left exported in a shell
//! would otherwise be inherited through `shop up` and crash a user's order service. When a hook
//! is set, every process says so on stderr at start-up, whether it obeys it or ignores it.

use std::time::Duration;

use crate::plumbing::config::Tuning;

/// The opt-in: hooks act only when this variable is exactly `1`.
pub const OPT_IN: &str = "SHOP_TEST_HOOKS";

/// Every hook, by the environment variable that sets it.
pub const HOOKS: [&str; 6] = [
    "SHOP_CRASH_AFTER",
    "SHOP_FAULT_DELAY",
    "SHOP_FAULT_DELAY_REQUESTS",
    "SHOP_HEADER_TIMEOUT",
    "SHOP_TOP_PANIC",
    "SHOP_SPAN_CAPACITY",
];

/// The header deadline of SPEC and of `--header-timeout`'s default, restored when the hook that
/// shortens it is not allowed.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the opt-in is set.
pub fn enabled() -> bool {
    std::env::var_os(OPT_IN).is_some_and(|v| v == "1")
}

/// Whether hook `name` is set in the environment and allowed to act.
pub fn active(name: &str) -> bool {
    enabled() && std::env::var_os(name).is_some()
}

/// The hooks set in the environment, in [`HOOKS`] order.
fn present() -> Vec<&'static str> {
    HOOKS.iter().copied().filter(|h| std::env::var_os(h).is_some()).collect()
}

/// The warning a process prints at start-up when any hook is set, `None` when none is.
pub fn warning() -> Option<String> {
    let set = present();
    if set.is_empty() {
        return None;
    }
    let names = set.join(", ");
    Some(if enabled() {
        format!("warning: test hooks active ({names}); this process misbehaves on purpose, for tests only")
    } else {
        format!("warning: test hooks ignored ({names}): they act only with {OPT_IN}=1; unset them")
    })
}

/// Prints [`warning`] on stderr, once per process start.
pub fn warn_at_start() {
    if let Some(line) = warning() {
        eprintln!("{line}");
    }
}

/// The header deadline for a listener that takes no flags (the supervisor's control API):
/// `SHOP_HEADER_TIMEOUT` when hooks are allowed and it parses, else the default.
pub fn header_timeout() -> Duration {
    if !active("SHOP_HEADER_TIMEOUT") {
        return DEFAULT_HEADER_TIMEOUT;
    }
    std::env::var("SHOP_HEADER_TIMEOUT")
        .ok()
        .and_then(|v| crate::plumbing::time::parse_duration(&v).ok())
        .unwrap_or(DEFAULT_HEADER_TIMEOUT)
}

/// `SHOP_SPAN_CAPACITY=N`: how many spans the process keeps, when allowed, so that a test
/// sees the oldest go after a few orders instead of thousands.
pub fn span_capacity(default: usize) -> usize {
    if !active("SHOP_SPAN_CAPACITY") {
        return default;
    }
    std::env::var("SHOP_SPAN_CAPACITY").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

/// `SHOP_CRASH_AFTER=EVENT` for the events written outside the saga (the outbox relay's
/// `NotificationDelivered`): exits as a crash would once `event` is persisted, when allowed.
pub fn crash_after(event: &str, order_id: &str) {
    if active("SHOP_CRASH_AFTER") && std::env::var("SHOP_CRASH_AFTER").is_ok_and(|v| v == event) {
        tracing::warn!(order_id, point = event, "SHOP_CRASH_AFTER reached; exiting as a crash would");
        std::process::exit(70);
    }
}

/// Drops the hooks from a service's tuning unless the opt-in is set, whatever set them (the
/// environment or the hidden flags of the same names).
pub fn gate(tuning: &mut Tuning) {
    if enabled() {
        return;
    }
    tuning.crash_after = None;
    tuning.fault_delay = None;
    tuning.fault_delay_requests = None;
    tuning.header_timeout = DEFAULT_HEADER_TIMEOUT;
}
