//! The outbox relay: delivers queued notifications to the notification service, with retries
//! and backoff, until each is acknowledged. The notification service deduplicates by event id,
//! so a delivery repeated after a lost acknowledgement is harmless, and so is a whole batch
//! repeated after a lost answer.
//!
//! The due rows go in one batch request (one HTTP exchange and one transaction on each side
//! instead of one per row); a batch the service refuses (an older service without the batch
//! route, or one bad row) is delivered row by row, so one row cannot hold the others back.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use tokio::sync::Notify;

use super::store::{OutboxRow, Store};
use crate::plumbing::client::{backoff, CallError, ServiceClient};
use crate::plumbing::spans::SpanStore;
use crate::plumbing::time::{now_ms, now_us};
use crate::plumbing::trace::TraceCtx;
use crate::services::notification::{BatchAnswer, BatchItem, NotifyBatch, NotifyRequest};

/// How many due rows one pass reads and delivers.
const BATCH_ROWS: usize = 64;
/// The most payload bytes one batch request carries, well under the services' 64 KiB body
/// limit (each item also gains a `traceparent` and some JSON around it).
const BATCH_BYTES: usize = 40 * 1024;

#[derive(Deserialize)]
struct DeliveredOne {
    notification_id: String,
}

/// An outbox payload: the notification, and where its delivery goes in the order's trace.
#[derive(Deserialize)]
struct Queued {
    event_id: String,
    order_id: String,
    user_id: String,
    kind: String,
    message: String,
    trace_id: Option<String>,
    /// The saga's span, the parent of the delivery's span.
    parent_span_id: Option<String>,
    trace_flags: Option<String>,
    tracestate: Option<String>,
}

/// A due row ready to send: its notification and its delivery span.
struct Delivery {
    row: OutboxRow,
    queued: Queued,
    /// The delivery's own span (`relay evt_…`) in the order's trace, when the payload names one.
    trace: Option<TraceCtx>,
}

impl Delivery {
    fn new(row: OutboxRow) -> Result<Delivery, (OutboxRow, serde_json::Error)> {
        let mut queued: Queued = match serde_json::from_str(&row.payload) {
            Ok(q) => q,
            Err(e) => return Err((row, e)),
        };
        // The delivery joins the order's trace, under the saga that queued it; neither id is
        // part of the notification itself.
        let trace = queued.trace_id.as_deref().map(|trace_id| TraceCtx {
            sampled: queued.trace_flags.as_deref() != Some("00"),
            tracestate: queued.tracestate.take(),
            ..TraceCtx::resume(trace_id)
        });
        Ok(Delivery { row, queued, trace })
    }

    /// The single route's request with the delivery's trace context, as a batch carries it.
    fn item(&self) -> BatchItem {
        let NotifyRequest { event_id, order_id, user_id, kind, message } = self.request();
        BatchItem {
            event_id,
            order_id,
            user_id,
            kind,
            message,
            traceparent: self.trace.as_ref().map(TraceCtx::header_value),
            tracestate: self.trace.as_ref().and_then(|t| t.tracestate.clone()),
        }
    }

    fn request(&self) -> NotifyRequest {
        let q = &self.queued;
        NotifyRequest {
            event_id: q.event_id.clone(),
            order_id: q.order_id.clone(),
            user_id: q.user_id.clone(),
            kind: q.kind.clone(),
            message: q.message.clone(),
        }
    }

    /// Records the delivery's span, a child of the saga's.
    fn record(&self, spans: &SpanStore, start: i64, ok: bool) {
        if let Some(trace) = &self.trace {
            let status = if ok { "ok" } else { "retry" };
            spans.record(
                trace,
                self.queued.parent_span_id.as_deref(),
                format!("relay {}", self.row.event_id),
                start,
                status.into(),
            );
        }
    }
}

/// Runs forever: wakes when a notification is queued, and at least every 200 ms for retries.
pub async fn run(store: Store, client: ServiceClient, spans: Arc<SpanStore>, wake: Arc<Notify>) {
    loop {
        let due = match store.due_outbox(BATCH_ROWS).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                Vec::new()
            }
        };
        let full = due.len() == BATCH_ROWS;
        let mut deliveries = Vec::with_capacity(due.len());
        for row in due {
            match Delivery::new(row) {
                Ok(d) => deliveries.push(d),
                Err((row, e)) => unreadable(&store, &row, e).await,
            }
        }
        for batch in split(deliveries) {
            deliver_batch(&store, &client, &spans, batch).await;
        }
        if !full {
            let _ = tokio::time::timeout(Duration::from_millis(200), wake.notified()).await;
            // Let the notifications queued in the next moments join this batch: one query and
            // one group commit for many deliveries under load, a few ms of delay when idle.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The deliveries in batches of at most [`BATCH_BYTES`] of payload (always at least one each).
fn split(deliveries: Vec<Delivery>) -> Vec<Vec<Delivery>> {
    let mut batches: Vec<Vec<Delivery>> = Vec::new();
    let mut bytes = 0;
    for d in deliveries {
        let size = d.row.payload.len();
        match batches.last_mut() {
            Some(last) if bytes + size <= BATCH_BYTES => last.push(d),
            _ => {
                bytes = 0;
                batches.push(vec![d]);
            }
        }
        bytes += size;
    }
    batches
}

async fn deliver_batch(store: &Store, client: &ServiceClient, spans: &Arc<SpanStore>, batch: Vec<Delivery>) {
    let body = NotifyBatch { notifications: batch.iter().map(Delivery::item).collect() };
    let start = now_us();
    // The request serves many orders, each item carrying its own trace: the batch itself is
    // bookkeeping, kept in memory but not exported as a trace of its own.
    let trace = TraceCtx::bookkeeping();
    let result = client
        .call::<_, BatchAnswer>("notification", Method::POST, "/v1/notifications/batch", Some(&body), Some(&trace))
        .await
        .and_then(|answer| matching(&batch, answer));
    match result {
        Ok(ids) => {
            for d in &batch {
                d.record(spans, start, true);
            }
            let delivered: Vec<(OutboxRow, String)> = batch.into_iter().map(|d| d.row).zip(ids).collect();
            match store.delivered_batch(&delivered).await {
                Ok(()) => {
                    for (row, _) in &delivered {
                        crate::plumbing::test_hooks::crash_after("NotificationDelivered", &row.order_id);
                    }
                }
                Err(e) => tracing::error!(rows = delivered.len(), error = %e, "cannot record a batch of deliveries"),
            }
        }
        // Refused, not failed: an older service without the batch route, or a row it will not
        // take. Row by row, the others still get through.
        Err(e) if e.status().is_some_and(|s| (400..500).contains(&s) && s != 429) => {
            tracing::warn!(rows = batch.len(), error = %e, "batch delivery refused; delivering row by row");
            let mut each = tokio::task::JoinSet::new();
            for d in batch {
                let (store, client, spans) = (store.clone(), client.clone(), spans.clone());
                each.spawn(async move { deliver_one(&store, &client, &spans, d).await });
            }
            while each.join_next().await.is_some() {}
        }
        Err(e) => {
            for d in &batch {
                d.record(spans, start, false);
                failed(store, d, &e).await;
            }
        }
    }
}

/// The notification ids of an answer, checked to be one per item in the order sent.
fn matching(batch: &[Delivery], answer: BatchAnswer) -> Result<Vec<String>, CallError> {
    let in_order = answer.delivered.len() == batch.len()
        && answer.delivered.iter().zip(batch).all(|(a, d)| a.event_id == d.row.event_id);
    if !in_order {
        return Err(CallError::Decode {
            service: "notification".into(),
            message: format!("a batch of {} got {} answers, or out of order", batch.len(), answer.delivered.len()),
        });
    }
    Ok(answer.delivered.into_iter().map(|a| a.notification_id).collect())
}

/// The single-row delivery, for a batch the service refused.
async fn deliver_one(store: &Store, client: &ServiceClient, spans: &SpanStore, d: Delivery) {
    let start = now_us();
    let result = client
        .call::<_, DeliveredOne>(
            "notification",
            Method::POST,
            "/v1/notifications",
            Some(&d.request()),
            d.trace.as_ref(),
        )
        .await;
    d.record(spans, start, result.is_ok());
    match result {
        Ok(one) => match store.delivered_batch(&[(d.row.clone(), one.notification_id)]).await {
            Ok(()) => crate::plumbing::test_hooks::crash_after("NotificationDelivered", &d.row.order_id),
            Err(e) => tracing::error!(event_id = %d.row.event_id, error = %e, "cannot record a delivery outcome"),
        },
        Err(e) => failed(store, &d, &e).await,
    }
}

/// Logs a failed delivery in its order's trace (the delivery's own span), then backs off.
async fn failed(store: &Store, d: &Delivery, e: &CallError) {
    let row = &d.row;
    let (trace_id, span_id) = d.trace.as_ref().map(|t| (t.trace_id.as_str(), t.span_id.as_str())).unzip();
    tracing::warn!(
        event_id = %row.event_id,
        order_id = %row.order_id,
        trace_id,
        span_id,
        attempt = row.attempts + 1,
        error = %e,
        "notification delivery failed; will retry"
    );
    retry_later(store, row, e.to_string()).await;
}

/// A payload that cannot be read is kept and retried with backoff, loudly: it is a bug, and
/// dropping it would lose the order's notification.
async fn unreadable(store: &Store, row: &OutboxRow, e: serde_json::Error) {
    tracing::error!(event_id = %row.event_id, order_id = %row.order_id, error = %e, "unreadable outbox payload; will retry");
    retry_later(store, row, format!("unreadable payload: {e}")).await;
}

/// Schedules the row's next attempt, backing off with its attempts.
async fn retry_later(store: &Store, row: &OutboxRow, error: String) {
    let wait = backoff(row.attempts.min(20) as u32, Duration::from_millis(100), Duration::from_secs(5));
    if let Err(e) = store.delivery_failed(row, now_ms() + wait.as_millis() as i64, error).await {
        tracing::error!(event_id = %row.event_id, error = %e, "cannot record a delivery outcome");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(event_id: &str, message_bytes: usize) -> Delivery {
        let payload = serde_json::json!({
            "event_id": event_id, "order_id": "ord_1", "user_id": "alice", "kind": "order_confirmed",
            "message": "m".repeat(message_bytes),
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "parent_span_id": "00f067aa0ba902b7",
            "trace_flags": "00", "tracestate": "rojo=1",
        });
        let row = OutboxRow {
            event_id: event_id.into(),
            order_id: "ord_1".into(),
            payload: payload.to_string(),
            attempts: 0,
        };
        Delivery::new(row).map_err(|(_, e)| e).unwrap()
    }

    #[test]
    fn batches_stay_under_the_byte_budget_and_keep_the_row_order() {
        let small: Vec<Delivery> = (0..64).map(|i| delivery(&format!("evt_{i}"), 100)).collect();
        let batches = split(small);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 64);

        let big: Vec<Delivery> = (0..5).map(|i| delivery(&format!("evt_{i}"), BATCH_BYTES / 2)).collect();
        let batches = split(big);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1, 1, 1]);
        let huge = split(vec![delivery("evt_h", BATCH_BYTES * 2), delivery("evt_s", 10)]);
        assert_eq!(huge.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1], "an oversized row still goes, alone");
        assert_eq!(huge[1][0].row.event_id, "evt_s");
    }

    #[test]
    fn an_item_carries_the_relay_span_and_the_orders_sampling_and_tracestate() {
        let d = delivery("evt_1", 10);
        let item = d.item();
        let trace = d.trace.as_ref().unwrap();
        assert_eq!(item.traceparent, Some(format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-00", trace.span_id)));
        assert_ne!(trace.span_id, "00f067aa0ba902b7", "the relay's own span, a child of the saga's");
        assert_eq!(item.tracestate.as_deref(), Some("rojo=1"));
        let json = serde_json::to_value(&item).unwrap();
        assert!(json.get("parent_span_id").is_none() && json.get("trace_id").is_none(), "{json}");
    }

    #[test]
    fn an_answer_must_match_the_batch_one_for_one_in_order() {
        let batch = vec![delivery("evt_a", 1), delivery("evt_b", 1)];
        let answer = |ids: &[&str]| BatchAnswer {
            delivered: ids
                .iter()
                .map(|e| crate::services::notification::Delivered {
                    event_id: e.to_string(),
                    notification_id: format!("ntf_{e}"),
                })
                .collect(),
        };
        assert_eq!(matching(&batch, answer(&["evt_a", "evt_b"])).unwrap(), ["ntf_evt_a", "ntf_evt_b"]);
        assert!(matching(&batch, answer(&["evt_b", "evt_a"])).is_err());
        assert!(matching(&batch, answer(&["evt_a"])).is_err());
    }
}
