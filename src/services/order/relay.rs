//! The outbox relay: delivers queued notifications to the notification service, with retries
//! and backoff, until each is acknowledged. The notification service deduplicates by event id,
//! so a delivery repeated after a lost acknowledgement is harmless.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use tokio::sync::Notify;

use super::store::{OutboxRow, Store};
use crate::plumbing::client::{backoff, ServiceClient};
use crate::plumbing::spans::SpanStore;
use crate::plumbing::time::now_ms;
use crate::plumbing::trace::TraceCtx;

#[derive(Deserialize)]
struct Delivered {
    notification_id: String,
}

/// Runs forever: wakes when a notification is queued, and at least every 200 ms for retries.
pub async fn run(store: Store, client: ServiceClient, spans: Arc<SpanStore>, wake: Arc<Notify>) {
    loop {
        let due = match store.due_outbox(64).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                Vec::new()
            }
        };
        let full = due.len() == 64;
        let mut batch = tokio::task::JoinSet::new();
        for row in due {
            let (store, client, spans) = (store.clone(), client.clone(), spans.clone());
            batch.spawn(async move { deliver(&store, &client, &spans, row).await });
        }
        while batch.join_next().await.is_some() {}
        if !full {
            let _ = tokio::time::timeout(Duration::from_millis(200), wake.notified()).await;
            // Let the notifications queued in the next moments join this batch: one query and
            // one group commit for many deliveries under load, a few ms of delay when idle.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn deliver(store: &Store, client: &ServiceClient, spans: &SpanStore, row: OutboxRow) {
    let mut payload: serde_json::Value = serde_json::from_str(&row.payload).unwrap_or_default();
    // The delivery joins the order's trace, under the saga that queued it; neither id is part
    // of the notification itself.
    let mut take =
        |key: &str| payload.as_object_mut().and_then(|m| m.remove(key)).and_then(|v| v.as_str().map(str::to_string));
    let parent = take("parent_span_id");
    let (flags, tracestate) = (take("trace_flags"), take("tracestate"));
    let trace = take("trace_id").map(|trace_id| TraceCtx {
        sampled: flags.as_deref() != Some("00"),
        tracestate,
        ..TraceCtx::resume(&trace_id)
    });
    let start = crate::plumbing::time::now_us();
    let result = client
        .call::<_, Delivered>("notification", Method::POST, "/v1/notifications", Some(&payload), trace.as_ref())
        .await;
    if let Some(trace) = &trace {
        let status = if result.is_ok() { "ok".to_string() } else { "retry".to_string() };
        spans.record(trace, parent.as_deref(), format!("relay {}", row.event_id), start, status);
    }
    let outcome = match result {
        Ok(d) => {
            let done = store.delivered(&row, d.notification_id).await;
            if done.is_ok() {
                crate::plumbing::test_hooks::crash_after("NotificationDelivered", &row.order_id);
            }
            done
        }
        Err(e) => {
            let wait = backoff(row.attempts.min(20) as u32, Duration::from_millis(100), Duration::from_secs(5));
            tracing::warn!(event_id = %row.event_id, order_id = %row.order_id, attempt = row.attempts + 1, error = %e, "notification delivery failed; will retry");
            store.delivery_failed(&row, now_ms() + wait.as_millis() as i64, e.to_string()).await
        }
    };
    if let Err(e) = outcome {
        tracing::error!(event_id = %row.event_id, error = %e, "cannot record a delivery outcome");
    }
}
