//! W3C trace context: the gateway starts a trace per request and every hop passes it on in `traceparent`.

use axum::http::HeaderMap;
use rand::Rng;

/// The trace an operation belongs to and the span that is its parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceCtx {
    /// 32 lower-case hex digits, shared by every span of the trace.
    pub trace_id: String,
    /// 16 hex digits: the caller's span, the parent of whatever this hop records.
    pub span_id: String,
}

impl TraceCtx {
    /// A fresh trace with a fresh root span.
    pub fn new_root() -> TraceCtx {
        TraceCtx { trace_id: random_hex(16), span_id: random_hex(8) }
    }

    /// A child span in the same trace.
    pub fn child(&self) -> TraceCtx {
        TraceCtx { trace_id: self.trace_id.clone(), span_id: random_hex(8) }
    }

    /// Reads `traceparent` (`00-TRACE-SPAN-FLAGS`); anything malformed is ignored, as the spec asks.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceCtx> {
        let value = headers.get("traceparent")?.to_str().ok()?;
        let mut parts = value.split('-');
        let (version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if version != "00" || !hex(trace, 32) || !hex(span, 16) || trace.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(TraceCtx { trace_id: trace.to_ascii_lowercase(), span_id: span.to_ascii_lowercase() })
    }

    pub fn header_value(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    let buf: Vec<u8> = (0..bytes).map(|_| rng.gen()).collect();
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let ctx = TraceCtx::new_root();
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", ctx.header_value().parse().unwrap());
        assert_eq!(TraceCtx::from_headers(&headers), Some(ctx));
        headers.insert("traceparent", "00-xyz-abc-01".parse().unwrap());
        assert_eq!(TraceCtx::from_headers(&headers), None);
    }
}
