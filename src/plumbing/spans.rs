//! Spans of the traces that pass through this process, in a bounded in-memory store that
//! `shop inspect` reads through the admin endpoint `GET /admin/spans`, and, when a collector is
//! configured, exported over OTLP as well (see [`crate::plumbing::otlp`]).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::plumbing::otlp::{Exporter, Finished};
use crate::plumbing::trace::TraceCtx;

/// How many spans a process keeps; the oldest go first.
pub const CAPACITY: usize = 8_192;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: Option<String>,
    pub service: String,
    pub instance: String,
    /// `POST /orders` for a request served, `→ payment POST /v1/payments` for a call made,
    /// `saga ord_…` for work inside the process.
    pub name: String,
    pub start_us: i64,
    pub duration_us: i64,
    /// The HTTP status, or `error: …` for a call that got no answer, or `ok`.
    pub status: String,
    /// For a call made, the `host:port` it went to (`server.address` and `server.port` in OTLP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

pub struct SpanStore {
    pub service: String,
    pub instance: String,
    spans: Mutex<VecDeque<Span>>,
    /// [`CAPACITY`], unless a test asks for fewer.
    capacity: usize,
    /// The OTLP exporter, when a collector is configured; it never blocks `record`.
    exporter: Option<Exporter>,
}

impl SpanStore {
    pub fn new(service: &str, instance: &str) -> SpanStore {
        SpanStore {
            service: service.into(),
            instance: instance.into(),
            spans: Mutex::new(VecDeque::with_capacity(1024)),
            capacity: crate::plumbing::test_hooks::span_capacity(CAPACITY),
            exporter: None,
        }
    }

    /// The same store, also handing every sampled span to `exporter`.
    pub fn with_exporter(self, exporter: Option<Exporter>) -> SpanStore {
        SpanStore { exporter, ..self }
    }

    pub fn exporter(&self) -> Option<&Exporter> {
        self.exporter.as_ref()
    }

    /// Records a finished span of `ctx` (its `span_id` is the span's own id). The order it
    /// concerns is read from the name (`saga ord_…`, `→ order GET /v1/orders/ord_…`).
    pub fn record(&self, ctx: &TraceCtx, parent: Option<&str>, name: String, start_us: i64, status: String) {
        let order_id = order_in(&name);
        self.keep(ctx, self.span(ctx, parent, name, start_us, status), order_id);
    }

    /// [`record`](Self::record) for a call made to `address` (`host:port`).
    pub fn record_call(
        &self,
        ctx: &TraceCtx,
        parent: Option<&str>,
        name: String,
        start_us: i64,
        status: String,
        address: &str,
    ) {
        let order_id = order_in(&name);
        let span = Span { address: Some(address.to_string()), ..self.span(ctx, parent, name, start_us, status) };
        self.keep(ctx, span, order_id);
    }

    /// [`record`](Self::record) for a span known to concern `order_id`.
    pub fn record_for_order(
        &self,
        ctx: &TraceCtx,
        parent: Option<&str>,
        name: String,
        start_us: i64,
        status: String,
        order_id: Option<String>,
    ) {
        self.keep(ctx, self.span(ctx, parent, name, start_us, status), order_id);
    }

    /// The span of `ctx` that ends now.
    fn span(&self, ctx: &TraceCtx, parent: Option<&str>, name: String, start_us: i64, status: String) -> Span {
        Span {
            trace_id: ctx.trace_id.clone(),
            span_id: ctx.span_id.clone(),
            parent_id: parent.map(str::to_string),
            service: self.service.clone(),
            instance: self.instance.clone(),
            name,
            start_us,
            duration_us: (crate::plumbing::time::now_us() - start_us).max(0),
            status,
            address: None,
        }
    }

    /// Hands `span` to the exporter when it is sampled, and keeps it.
    fn keep(&self, ctx: &TraceCtx, span: Span, order_id: Option<String>) {
        if let Some(exporter) = self.exporter.as_ref().filter(|_| ctx.sampled) {
            exporter.offer(Finished { span: span.clone(), tracestate: ctx.tracestate.clone(), order_id });
        }
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        while spans.len() >= self.capacity {
            spans.pop_front();
        }
        spans.push_back(span);
    }

    pub fn by_trace(&self, trace_id: &str) -> Vec<Span> {
        let spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        spans.iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }

    pub fn recent(&self, limit: usize) -> Vec<Span> {
        let spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        spans.iter().rev().take(limit).cloned().collect()
    }
}

/// The first order id (`ord_` and letters or digits) in `text`, if any.
pub fn order_in(text: &str) -> Option<String> {
    let start = text.find("ord_")?;
    let id: String = text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    (id.len() > 4).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_found_by_trace_and_the_store_stays_bounded() {
        let store = SpanStore::new("order", "order-1");
        let root = TraceCtx::new_root();
        for i in 0..CAPACITY + 10 {
            let ctx = if i == CAPACITY + 9 { root.clone() } else { TraceCtx::new_root() };
            store.record(&ctx, None, format!("s{i}"), 0, "ok".into());
        }
        assert_eq!(store.spans.lock().unwrap().len(), CAPACITY);
        let found = store.by_trace(&root.trace_id);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].instance, "order-1");
    }

    #[test]
    fn order_ids_are_found_in_span_names_and_paths() {
        assert_eq!(order_in("saga ord_01ABC (resumed)").as_deref(), Some("ord_01ABC"));
        assert_eq!(order_in("→ order GET /v1/orders/ord_9?x=1").as_deref(), Some("ord_9"));
        assert_eq!(order_in("POST /orders"), None);
        assert_eq!(order_in("ord_"), None);
    }
}
