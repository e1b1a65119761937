//! Queries over the JSON log lines the services write (`plumbing::logging`): by time, level,
//! regex, trace and order, as `shop logs` offers them; and the one readable rendering of a line.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use regex::Regex;

/// The levels the services log at, least severe first, so `--level warn` means "warn and above".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// `warn`, `WARN`, `warning`: as users and tracing spell them.
    pub fn parse(s: &str) -> Result<Level, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(Level::Trace),
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" | "warning" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            _ => Err(format!("`{s}` is not a log level; use trace, debug, info, warn or error")),
        }
    }
}

/// `--since 5m` (that long ago) or `--since 2026-01-01T10:00:00Z` (an RFC 3339 time, with any
/// offset such as `+01:00`; UTC when the zone is left out).
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let t = s.trim();
    if let Ok(d) = humantime::parse_duration(t) {
        return Ok(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    parse_rfc3339(t)
        .ok_or_else(|| format!("`{s}` is neither a duration nor a time; write e.g. 10m, 1h30m or 2026-01-01T10:00:00Z"))
}

/// RFC 3339 in full: `t` and `z` in either case (section 5.6) and a numeric offset, which
/// humantime leaves out (it reads UTC only). `-00:00`, "offset unknown", is read as UTC.
fn parse_rfc3339(t: &str) -> Option<SystemTime> {
    let t = t.to_ascii_uppercase();
    let (local, offset_s) = match t.len().checked_sub(6).and_then(|i| t.get(i..).map(|zone| (i, zone))) {
        Some((i, zone)) if matches!(zone.as_bytes(), [b'+' | b'-', _, _, b':', _, _]) && i > 10 => {
            let hours: u64 = zone.get(1..3)?.parse().ok()?;
            let minutes: u64 = zone.get(4..6)?.parse().ok()?;
            if hours > 23 || minutes > 59 || !zone[1..3].bytes().chain(zone[4..6].bytes()).all(|b| b.is_ascii_digit()) {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            (&t[..i], if zone.starts_with('+') { secs as i64 } else { -(secs as i64) })
        }
        _ => (t.as_str(), 0),
    };
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    // The local time at `+01:00` is an hour ahead of UTC: the instant is an hour earlier.
    let shift = Duration::from_secs(offset_s.unsigned_abs());
    if offset_s >= 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

/// What to keep. Every condition set must hold; an empty query keeps every line.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Matched against the line as `shop logs` shows it (message and fields).
    pub grep: Option<Regex>,
    pub level: Option<Level>,
    pub trace: Option<String>,
    pub order: Option<String>,
    /// Trace ids seen on the order's lines: the other services' lines about the order carry
    /// only the trace id, so they are found through it.
    order_traces: BTreeSet<String>,
}

impl LogQuery {
    pub fn new(
        since: Option<SystemTime>,
        until: Option<SystemTime>,
        grep: Option<Regex>,
        level: Option<Level>,
        trace: Option<String>,
        order: Option<String>,
    ) -> LogQuery {
        LogQuery { since, until, grep, level, trace, order, order_traces: BTreeSet::new() }
    }

    /// Whether any condition is set; a query without one passes plain-text lines too.
    pub fn is_empty(&self) -> bool {
        self.since.is_none()
            && self.until.is_none()
            && self.grep.is_none()
            && self.level.is_none()
            && self.trace.is_none()
            && self.order.is_none()
    }

    /// Notes the trace ids of the order's lines; call it on every line before [`matches`](Self::matches)
    /// so lines written before the one naming the order are found too.
    pub fn learn(&mut self, line: &str) {
        let Some(order) = &self.order else { return };
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) else { return };
        if field(&map, "order_id") == Some(order.as_str()) {
            if let Some(trace) = field(&map, "trace_id") {
                self.order_traces.insert(trace.to_string());
            }
        }
    }

    pub fn matches(&self, line: &str) -> bool {
        self.matches_after(line, "")
    }

    /// [`matches`](Self::matches) for a line written after one stamped `before` (RFC 3339, or
    /// empty): a line that is not JSON (a panic message, a program's own output) has no time,
    /// level or ids of its own. It is taken to be of the time of the line before it; it has no
    /// level, so `--level` keeps it (a panic must not hide behind its missing level); and no
    /// trace or order can claim it.
    pub fn matches_after(&self, line: &str, before: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) else {
            if self.trace.is_some() || self.order.is_some() || !self.in_time(before) {
                return false;
            }
            return self.grep.as_ref().is_none_or(|r| r.is_match(line));
        };
        if !self.in_time(field(&map, "timestamp").unwrap_or_default()) {
            return false;
        }
        if let Some(min) = self.level {
            let level = field(&map, "level").and_then(|l| Level::parse(l).ok()).unwrap_or(Level::Info);
            if level < min {
                return false;
            }
        }
        if let Some(trace) = &self.trace {
            if field(&map, "trace_id") != Some(trace.as_str()) {
                return false;
            }
        }
        if let Some(order) = &self.order {
            let own = field(&map, "order_id") == Some(order.as_str());
            let via_trace = field(&map, "trace_id").is_some_and(|t| self.order_traces.contains(t));
            if !own && !via_trace {
                return false;
            }
        }
        if let Some(re) = &self.grep {
            if !re.is_match(&readable_map(&map, false)) {
                return false;
            }
        }
        true
    }
}

impl LogQuery {
    /// Whether a line stamped `timestamp` (RFC 3339; empty: unknown) is within `--since` and
    /// `--until`; with either set, an unknown time is not.
    fn in_time(&self, timestamp: &str) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Ok(at) = humantime::parse_rfc3339_weak(timestamp) else { return false };
        !(self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at > u))
    }
}

fn field<'a>(map: &'a serde_json::Map<String, serde_json::Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(|v| v.as_str())
}

/// A JSON log line as `LEVEL message key=value …`; anything else as it is.
pub fn readable(line: &str, timestamps: bool) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => readable_map(&map, timestamps),
        _ => line.to_string(),
    }
}

fn readable_map(map: &serde_json::Map<String, serde_json::Value>, timestamps: bool) -> String {
    let mut out = String::new();
    if timestamps {
        if let Some(t) = field(map, "timestamp") {
            out.push_str(t);
            out.push(' ');
        }
    }
    let level = field(map, "level").unwrap_or("INFO");
    out.push_str(&format!("{level:<5} "));
    out.push_str(field(map, "message").unwrap_or(""));
    for (k, v) in map {
        if matches!(
            k.as_str(),
            "timestamp" | "level" | "message" | "target" | "service" | "filename" | "line_number" | "threadId"
        ) {
            continue;
        }
        match v {
            serde_json::Value::String(s) => out.push_str(&format!(" {k}={s}")),
            other => out.push_str(&format!(" {k}={other}")),
        }
    }
    out
}

/// Lines are ordered by their timestamp text: RFC 3339 in UTC with a fixed precision sorts as
/// time does.
pub fn timestamp_of(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["timestamp"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts: &str, level: &str, msg: &str, extra: &str) -> String {
        format!(
            r#"{{"timestamp":"{ts}","level":"{level}","service":"order","instance":"order","message":"{msg}"{extra}}}"#
        )
    }

    #[test]
    fn json_lines_render_as_level_message_and_fields() {
        let l = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"WARN","message":"retrying","order_id":"ord_1","attempt":2,"target":"shop"}"#;
        assert_eq!(readable(l, false), "WARN  retrying attempt=2 order_id=ord_1");
        assert_eq!(readable(l, true), "2026-01-01T00:00:00Z WARN  retrying attempt=2 order_id=ord_1");
        assert_eq!(readable("plain text", false), "plain text");
    }

    #[test]
    fn conditions_combine_and_an_order_finds_its_trace() {
        let a = line("2026-01-01T10:00:00Z", "INFO", "placed", r#","order_id":"ord_1","trace_id":"t1""#);
        let b = line("2026-01-01T10:00:01Z", "WARN", "charge retry", r#","trace_id":"t1""#);
        let c = line("2026-01-01T10:00:02Z", "ERROR", "other", r#","trace_id":"t2""#);
        let mut q = LogQuery::new(None, None, None, None, None, Some("ord_1".into()));
        for l in [&a, &b, &c] {
            q.learn(l);
        }
        assert_eq!([&a, &b, &c].map(|l| q.matches(l)), [true, true, false]);
        let since = humantime::parse_rfc3339_weak("2026-01-01T10:00:01Z").ok();
        let q = LogQuery::new(since, None, None, Some(Level::Warn), None, None);
        assert_eq!([&a, &b, &c].map(|l| q.matches(l)), [false, true, true]);
        let q = LogQuery::new(None, None, Regex::new("retry").ok(), None, Some("t1".into()), None);
        assert_eq!([&a, &b, &c].map(|l| q.matches(l)), [false, true, false]);
        assert!(!q.matches("not json"));
    }

    #[test]
    fn times_are_durations_ago_or_rfc3339() {
        let now = humantime::parse_rfc3339("2026-01-01T10:00:00Z").unwrap();
        assert_eq!(parse_time("10m", now).unwrap(), humantime::parse_rfc3339("2026-01-01T09:50:00Z").unwrap());
        assert_eq!(
            parse_time("2026-01-01T09:00:00Z", now).unwrap(),
            humantime::parse_rfc3339("2026-01-01T09:00:00Z").unwrap()
        );
        assert!(parse_time("yesterday-ish", now).unwrap_err().contains("neither a duration nor a time"));
        // Any offset, `t` and `z` in either case (RFC 3339 section 5.6).
        let nine = humantime::parse_rfc3339("2026-01-01T09:00:00Z").unwrap();
        for t in [
            "2026-01-01T10:00:00+01:00",
            "2026-01-01T04:00:00-05:00",
            "2026-01-01T09:00:00-00:00",
            "2026-01-01t09:00:00z",
            "2026-01-01T09:00:00.000+00:00",
            "2026-01-01T14:30:00+05:30",
        ] {
            assert_eq!(parse_time(t, now).unwrap(), nine, "{t}");
        }
        for t in ["2026-01-01T09:00:00+24:00", "2026-01-01T09:00:00+01:60", "2026-01-01T09:00:00+1:000"] {
            assert!(parse_time(t, now).is_err(), "{t}");
        }
        assert!(Level::parse("loud").is_err());
        assert_eq!(Level::parse("WARNING"), Ok(Level::Warn));
    }
}
