//! The notification service: records one notification per event id, however often the order
//! service's outbox relay delivers it, one at a time or in batches.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Runtime, Service};
use crate::plumbing::db::Db;
use crate::plumbing::error::{ApiError, ApiQuery, JsonBody};
use crate::plumbing::spans::SpanStore;
use crate::plumbing::trace::TraceCtx;
use crate::plumbing::{ids, time::now_ms, time::now_us, time::rfc3339};

/// The most notifications one batch may carry; the relay sends at most 64.
pub const MAX_BATCH: usize = 256;

pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE notifications (
        event_id TEXT PRIMARY KEY,
        notification_id TEXT NOT NULL UNIQUE,
        order_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX notifications_order ON notifications (order_id);",
    // Version 2 (SPEC section 18): keyed by the event id itself (WITHOUT ROWID), the one
    // lookup by id; the notification id's uniqueness index goes (nothing looks one up by it,
    // and it is a fresh ULID). Same columns in the same order.
    "CREATE TABLE notifications_v2 (
        event_id TEXT PRIMARY KEY,
        notification_id TEXT NOT NULL,
        order_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO notifications_v2 SELECT event_id, notification_id, order_id, user_id, kind, message, deliveries, created_at
        FROM notifications;
    DROP TABLE notifications;
    ALTER TABLE notifications_v2 RENAME TO notifications;
    CREATE INDEX notifications_order ON notifications (order_id);",
];

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRequest {
    /// The outbox event id: the deduplication key.
    pub event_id: String,
    pub order_id: String,
    pub user_id: String,
    /// `order_confirmed` or `order_failed`
    pub kind: String,
    pub message: String,
}

/// The body of `POST /v1/notifications/batch`: many deliveries in one request and one
/// transaction, answered in the same order.
#[derive(Debug, Serialize)]
pub struct NotifyBatch {
    pub notifications: Vec<BatchItem>,
}

/// One delivery of a batch: the single route's body, plus the trace of the order it concerns.
/// The batch belongs to no single trace, so each item carries its own.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// The outbox event id: the deduplication key.
    pub event_id: String,
    pub order_id: String,
    pub user_id: String,
    /// `order_confirmed` or `order_failed`
    pub kind: String,
    pub message: String,
    /// W3C `traceparent` of the sender's span for this delivery: the span recorded here for the
    /// item is its child. Without a valid one the item gets no span, as it belongs to no trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The order's `tracestate`, passed on unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// The answer to a batch: one entry per item, in request order.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchAnswer {
    pub delivered: Vec<Delivered>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Delivered {
    pub event_id: String,
    /// The notification the event made the first time it was delivered.
    pub notification_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Notification {
    pub notification_id: String,
    pub event_id: String,
    pub order_id: String,
    pub user_id: String,
    pub kind: String,
    pub message: String,
    /// How many times the event was delivered; only the first created the notification.
    pub deliveries: i64,
    pub created_at: String,
}

pub async fn build(rt: &Arc<Runtime>) -> anyhow::Result<Service> {
    let batch = Router::new()
        .route("/v1/notifications/batch", post(notify_batch))
        .with_state(Batching { db: rt.db.clone(), spans: rt.spans.clone() });
    let routes =
        Router::new().route("/v1/notifications", post(notify).get(list)).with_state(rt.db.clone()).merge(batch);
    Ok(Service::new(routes))
}

/// What the batch route needs beyond the database: it records a span per item itself.
#[derive(Clone)]
struct Batching {
    db: Db,
    spans: Arc<SpanStore>,
}

const COLUMNS: &str = "notification_id, event_id, order_id, user_id, kind, message, deliveries, created_at";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Notification> {
    Ok(Notification {
        notification_id: r.get(0)?,
        event_id: r.get(1)?,
        order_id: r.get(2)?,
        user_id: r.get(3)?,
        kind: r.get(4)?,
        message: r.get(5)?,
        deliveries: r.get(6)?,
        created_at: rfc3339(r.get(7)?),
    })
}

/// Visits each order id (its bytes) with how many notifications it got, in order id order: a
/// scan of the `notifications_order` index, the rows of one id counted here as they go by, which
/// takes well under half the time SQLite's `GROUP BY` does at a million notifications.
pub fn visit_counts_by_order(c: &rusqlite::Connection, mut visit: impl FnMut(&[u8], i64)) -> rusqlite::Result<()> {
    let mut stmt = c.prepare("SELECT order_id FROM notifications ORDER BY order_id")?;
    let mut rows = stmt.query([])?;
    // The id being counted, copied out of SQLite's row buffer into one reused buffer.
    let mut id = Vec::new();
    let mut count = 0;
    while let Some(r) = rows.next()? {
        let next = r.get_ref(0)?.as_bytes()?;
        if count > 0 && next == id.as_slice() {
            count += 1;
            continue;
        }
        if count > 0 {
            visit(&id, count);
        }
        id.clear();
        id.extend_from_slice(next);
        count = 1;
    }
    if count > 0 {
        visit(&id, count);
    }
    Ok(())
}

/// Why a delivery is refused, before anything is written.
fn invalid(event_id: &str, order_id: &str) -> Option<&'static str> {
    (event_id.is_empty() || event_id.len() > 64 || order_id.is_empty())
        .then_some("`event_id` (1 to 64 characters) and `order_id` are required")
}

/// Stores one delivery, idempotently: the first delivery of an event id creates its
/// notification, a repeat only counts itself. Answers the notification's id and whether this
/// delivery created it.
///
/// An upsert (`ON CONFLICT … DO UPDATE … RETURNING`) would do it in one statement, but SQLite
/// builds a temporary table for every `RETURNING`; here only a repeat (rare: a relay retrying)
/// reads anything back.
fn deliver(
    tx: &rusqlite::Connection,
    event_id: &str,
    order_id: &str,
    user_id: &str,
    kind: &str,
    message: &str,
    now: i64,
) -> rusqlite::Result<(String, bool)> {
    let id = ids::new("ntf");
    let inserted = tx
        .prepare_cached(
            "INSERT INTO notifications (event_id, notification_id, order_id, user_id, kind, message, deliveries, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7) ON CONFLICT(event_id) DO NOTHING",
        )?
        .execute(rusqlite::params![event_id, id, order_id, user_id, kind, message, now])?;
    if inserted == 1 {
        return Ok((id, true));
    }
    let first = tx
        .prepare_cached(
            "UPDATE notifications SET deliveries = deliveries + 1 WHERE event_id = ?1 RETURNING notification_id",
        )?
        .query_row([event_id], |r| r.get(0))?;
    Ok((first, false))
}

async fn notify(
    State(db): State<Db>,
    JsonBody(req): JsonBody<NotifyRequest>,
) -> Result<(StatusCode, Json<Notification>), ApiError> {
    if let Some(why) = invalid(&req.event_id, &req.order_id) {
        return Err(ApiError::bad_request(why));
    }
    let (created, n) = db
        .tx(move |tx| {
            let (_, created) =
                deliver(tx, &req.event_id, &req.order_id, &req.user_id, &req.kind, &req.message, now_ms())?;
            let n = tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM notifications WHERE event_id = ?1"))?
                .query_row([&req.event_id], row)?;
            Ok((created, n))
        })
        .await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(n)))
}

/// The batch as sent: each item is parsed on its own so that a refusal can name its index.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    notifications: Vec<Box<RawValue>>,
}

/// Stores every item of a batch in one transaction, deduplicated by event id as the single
/// route is, and records for each item a span in its order's trace (the request itself carries
/// no trace: it serves many orders). A bad item refuses the whole batch, before anything is
/// written.
async fn notify_batch(
    State(Batching { db, spans }): State<Batching>,
    JsonBody(batch): JsonBody<RawBatch>,
) -> Result<Json<BatchAnswer>, ApiError> {
    let start = now_us();
    if batch.notifications.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most {MAX_BATCH} notifications, this one {}; send the rest in another",
            batch.notifications.len()
        )));
    }
    let items = batch
        .notifications
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let item: BatchItem = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::bad_request(format!("`notifications[{i}]` is invalid: {e}")))?;
            match invalid(&item.event_id, &item.order_id) {
                Some(why) => Err(ApiError::bad_request(format!("`notifications[{i}]`: {why}"))),
                None => Ok(item),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (items, stored) = db
        .tx(move |tx| {
            let now = now_ms();
            let stored = items
                .iter()
                .map(|i| deliver(tx, &i.event_id, &i.order_id, &i.user_id, &i.kind, &i.message, now))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((items, stored))
        })
        .await?;
    let delivered = items
        .into_iter()
        .zip(stored)
        .map(|(item, (notification_id, created))| {
            if let Some(parent) =
                item.traceparent.as_deref().and_then(|t| TraceCtx::from_traceparent(t, item.tracestate))
            {
                // The status the single route would have answered for this delivery.
                let status = if created { "201" } else { "200" };
                spans.record_for_order(
                    &parent.child(),
                    Some(&parent.span_id),
                    "POST /v1/notifications/batch".into(),
                    start,
                    status.into(),
                    Some(item.order_id),
                );
            }
            Delivered { event_id: item.event_id, notification_id }
        })
        .collect();
    Ok(Json(BatchAnswer { delivered }))
}

#[derive(Deserialize)]
struct ListQuery {
    order_id: Option<String>,
    user_id: Option<String>,
    limit: Option<u32>,
}

async fn list(State(db): State<Db>, ApiQuery(q): ApiQuery<ListQuery>) -> Result<Json<Vec<Notification>>, ApiError> {
    let limit = q.limit.unwrap_or(100).min(10_000);
    let all = db
        .call(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM notifications WHERE (?1 IS NULL OR order_id = ?1) AND (?2 IS NULL OR user_id = ?2)
                 ORDER BY notification_id DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(rusqlite::params![q.order_id, q.user_id, limit], row)?.collect::<Result<Vec<_>, _>>();
            rows
        })
        .await?;
    Ok(Json(all))
}
