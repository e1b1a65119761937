//! The notification service: records one notification per event id, however often the order
//! service's outbox relay delivers it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::{Runtime, Service};
use crate::plumbing::db::Db;
use crate::plumbing::error::{ApiError, ApiQuery, JsonBody};
use crate::plumbing::{ids, time::now_ms, time::rfc3339};

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
    let routes = Router::new().route("/v1/notifications", post(notify).get(list)).with_state(rt.db.clone());
    Ok(Service::new(routes))
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

async fn notify(
    State(db): State<Db>,
    JsonBody(req): JsonBody<NotifyRequest>,
) -> Result<(StatusCode, Json<Notification>), ApiError> {
    if req.event_id.is_empty() || req.event_id.len() > 64 || req.order_id.is_empty() {
        return Err(ApiError::bad_request("`event_id` (1 to 64 characters) and `order_id` are required"));
    }
    let (created, n) = db
        .tx(move |tx| {
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO notifications (event_id, notification_id, order_id, user_id, kind, message, deliveries, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7) ON CONFLICT(event_id) DO UPDATE SET deliveries = deliveries + 1",
                )?
                .execute(rusqlite::params![req.event_id, ids::new("ntf"), req.order_id, req.user_id, req.kind, req.message, now_ms()])?;
            let n = tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM notifications WHERE event_id = ?1"))?
                .query_row([&req.event_id], row)
                .optional()?
                .expect("row written in this transaction");
            Ok((inserted == 1 && n.deliveries == 1, n))
        })
        .await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(n)))
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
