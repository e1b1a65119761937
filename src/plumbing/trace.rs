//! W3C Trace Context level 1: the gateway starts a trace per request and every hop passes it on
//! in `traceparent` (and the caller's `tracestate`, unchanged).
//!
//! The parser follows the specification exactly: a header it must reject starts a new trace,
//! never an error, so a caller with a broken tracer is still served.

use axum::http::HeaderMap;
use rand::Rng;

/// The trace an operation belongs to and the span that is its parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceCtx {
    /// 32 lower-case hex digits, shared by every span of the trace.
    pub trace_id: String,
    /// 16 hex digits: the caller's span, the parent of whatever this hop records.
    pub span_id: String,
    /// The caller's sampled flag (bit 0 of `trace-flags`), kept for every hop; a trace started
    /// here is sampled.
    pub sampled: bool,
    /// The caller's `tracestate`, passed on unchanged: it belongs to the vendors that wrote it.
    pub tracestate: Option<String>,
}

impl TraceCtx {
    /// A fresh trace with a fresh root span.
    pub fn new_root() -> TraceCtx {
        TraceCtx { trace_id: random_id(16), span_id: random_id(8), sampled: true, tracestate: None }
    }

    /// A fresh trace that is not sampled: the stack's own bookkeeping (registrations,
    /// heartbeats, a batch of deliveries that belongs to no one order), kept in memory like any
    /// trace but never exported, so a collector shows the orders and not one trace per
    /// heartbeat.
    pub fn bookkeeping() -> TraceCtx {
        TraceCtx { sampled: false, ..TraceCtx::new_root() }
    }

    /// A new span in the known trace `trace_id` (work resumed from a stored trace id).
    pub fn resume(trace_id: &str) -> TraceCtx {
        TraceCtx { trace_id: trace_id.to_string(), ..TraceCtx::new_root() }
    }

    /// A child span in the same trace, with the same flags and `tracestate`.
    pub fn child(&self) -> TraceCtx {
        TraceCtx { span_id: random_id(8), ..self.clone() }
    }

    /// Reads `traceparent` and `tracestate`; `None` when there is no valid `traceparent`.
    ///
    /// Two `traceparent` headers are as invalid as a malformed one; several `tracestate`
    /// headers are one list, joined with commas as HTTP says.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceCtx> {
        let mut parents = headers.get_all("traceparent").iter();
        let (value, None) = (parents.next()?, parents.next()) else { return None };
        let states: Vec<&str> = headers.get_all("tracestate").iter().filter_map(|v| v.to_str().ok()).collect();
        let tracestate = (!states.is_empty()).then(|| states.join(","));
        TraceCtx::from_traceparent(value.to_str().ok()?, tracestate)
    }

    /// The context of a `traceparent` value and `tracestate` carried outside headers (an item of
    /// a batched request, which belongs to no single trace); `None` when the value is invalid.
    pub fn from_traceparent(value: &str, tracestate: Option<String>) -> Option<TraceCtx> {
        let (trace_id, span_id, flags) = parse_traceparent(value)?;
        Some(TraceCtx { trace_id, span_id, sampled: flags & 1 == 1, tracestate })
    }

    /// The `traceparent` value for a call made under this span (always version 00).
    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, if self.sampled { "01" } else { "00" })
    }
}

/// A trace id a user typed (`shop inspect trace`, `shop logs --trace`): 32 hex digits, not all
/// zero, as W3C Trace Context writes it. Upper case is taken too, since ids get copied from
/// other tools, and returned in the lower case every service records.
pub fn parse_trace_id(s: &str) -> Result<String, String> {
    let id = s.trim().to_ascii_lowercase();
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0') {
        Ok(id)
    } else {
        Err(format!("`{s}` is not a trace id; write its 32 hex digits, as `shop inspect order` shows them"))
    }
}

/// `version-traceid-parentid-flags` by the rules of W3C Trace Context level 1, section 3.2:
/// lower-case hex only, exact lengths, non-zero ids, version `ff` invalid, nothing after the
/// flags in version 00; a higher version is read by its version-00 prefix, and may carry more
/// fields only after a `-`.
fn parse_traceparent(value: &str) -> Option<(String, String, u8)> {
    // Optional whitespace around a header value is not part of it (RFC 9110).
    let value = value.trim_matches([' ', '\t']);
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let lower_hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let version = &bytes[0..2];
    if !lower_hex(version) || version == b"ff" {
        return None;
    }
    match (version, bytes.len()) {
        (b"00", 55) => {}
        (b"00", _) => return None,
        (_, 55) => {}
        (_, _) if bytes[55] == b'-' => {}
        _ => return None,
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (&bytes[3..35], &bytes[36..52], &bytes[53..55]);
    if !lower_hex(trace) || !lower_hex(span) || !lower_hex(flags) {
        return None;
    }
    if trace.iter().all(|b| *b == b'0') || span.iter().all(|b| *b == b'0') {
        return None;
    }
    let flags = u8::from_str_radix(&value[53..55], 16).ok()?;
    Some((value[3..35].to_string(), value[36..52].to_string(), flags))
}

/// `bytes` random bytes as lower-case hex; never all zeros, which the specification forbids.
fn random_id(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    loop {
        let buf: Vec<u8> = (0..bytes).map(|_| rng.gen()).collect();
        if buf.iter().any(|b| *b != 0) {
            return hex::encode(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str], state: &[&str]) -> Option<TraceCtx> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("traceparent", v.parse().unwrap());
        }
        for v in state {
            headers.append("tracestate", v.parse().unwrap());
        }
        TraceCtx::from_headers(&headers)
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn traceparent_is_parsed_exactly_as_w3c_trace_context_level_1_says() {
        // (header, valid?, sampled?) — the cases of the specification and its test suite.
        let cases: &[(&str, bool, bool)] = &[
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", true, true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-08", true, false),
            (" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t", true, true),
            // Uppercase hex anywhere.
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", false, false),
            ("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false),
            // Wrong lengths.
            ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", false, false),
            ("0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false),
            // All-zero ids.
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, false),
            // Non-hex flags, version or ids; wrong separators.
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-.1", false, false),
            ("0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01", false, false),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01", false, false),
            // Version 00 allows nothing after the flags.
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be", false, false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", false, false),
            // Version ff is invalid.
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false),
            // A higher version is read by the version-00 prefix; more fields follow a `-`.
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, true),
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be", true, true),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-xyz", true, false),
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what-the-future-will-be", false, false),
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", false, false),
            ("", false, false),
            ("garbage", false, false),
        ];
        for (value, valid, sampled) in cases {
            let got = parse(&[value], &[]);
            assert_eq!(got.is_some(), *valid, "{value:?}");
            if let Some(ctx) = got {
                assert_eq!((ctx.trace_id.as_str(), ctx.span_id.as_str()), (TRACE, SPAN), "{value:?}");
                assert_eq!(ctx.sampled, *sampled, "{value:?}");
            }
        }
    }

    #[test]
    fn two_traceparent_headers_start_a_new_trace() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(parse(&[v], &[]).is_some());
        assert_eq!(parse(&[v, v], &[]), None);
    }

    #[test]
    fn the_sampled_flag_and_tracestate_reach_every_child_unchanged() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let ctx = parse(&[v], &["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]).unwrap();
        assert_eq!(ctx.tracestate.as_deref(), Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
        let child = ctx.child().child();
        assert_eq!((child.sampled, child.tracestate.clone()), (false, ctx.tracestate.clone()));
        assert_ne!(child.span_id, ctx.span_id);
        assert_eq!(child.header_value(), format!("00-{TRACE}-{}-00", child.span_id));
        // tracestate without a valid traceparent is dropped with it.
        assert_eq!(parse(&["00-xyz-abc-01"], &["rojo=1"]), None);
    }

    #[test]
    fn traceparent_round_trips() {
        let ctx = TraceCtx::new_root();
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", ctx.header_value().parse().unwrap());
        assert_eq!(TraceCtx::from_headers(&headers), Some(ctx));
    }
}
