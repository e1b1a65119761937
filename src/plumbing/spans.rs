//! Spans of the traces that pass through this process, in a bounded in-memory store that
//! `shop inspect` reads through the admin endpoint `GET /admin/spans`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::plumbing::trace::TraceCtx;

/// How many spans a process keeps; the oldest go first.
const CAPACITY: usize = 8_192;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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
}

pub struct SpanStore {
    pub service: String,
    pub instance: String,
    spans: Mutex<VecDeque<Span>>,
}

impl SpanStore {
    pub fn new(service: &str, instance: &str) -> SpanStore {
        SpanStore {
            service: service.into(),
            instance: instance.into(),
            spans: Mutex::new(VecDeque::with_capacity(1024)),
        }
    }

    /// Records a finished span of `ctx` (its `span_id` is the span's own id).
    pub fn record(&self, ctx: &TraceCtx, parent: Option<&str>, name: String, start_us: i64, status: String) {
        let span = Span {
            trace_id: ctx.trace_id.clone(),
            span_id: ctx.span_id.clone(),
            parent_id: parent.map(str::to_string),
            service: self.service.clone(),
            instance: self.instance.clone(),
            name,
            start_us,
            duration_us: (crate::plumbing::time::now_us() - start_us).max(0),
            status,
        };
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        if spans.len() == CAPACITY {
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
}
