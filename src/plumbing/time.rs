//! Wall-clock helpers: timestamps are stored as unix milliseconds and shown as RFC 3339.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch, the unit every database column uses.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Microseconds since the unix epoch, for span start times.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// `2026-11-27T03:31:39.123Z` for a stored millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// `1.5s`, `200ms`: durations as users write them in stack.yaml and flags.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 500ms, 2s, 1m"))
}

/// A duration that paces a loop or bounds a wait, where zero would spin or give up at once (the
/// same rule stack.yaml applies to these settings).
pub fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("`{s}` must be more than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_render_as_rfc3339_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn durations_parse_in_the_units_users_write() {
        assert_eq!(super::parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(super::parse_duration("1m").unwrap().as_secs(), 60);
        assert!(super::parse_duration("soon").is_err());
    }
}
