//! The payment service: charges keyed by order id, so no order is ever charged twice whatever
//! the retries, and refunds that are safe to repeat.
//!
//! A refund for an order that was never charged leaves a `voided` row; a charge arriving after
//! it (a request that was slow on the wire) is then refused, so money cannot move for an order
//! the saga already gave up on.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::{Runtime, Service};
use crate::plumbing::db::Db;
use crate::plumbing::error::{ApiError, ApiPath, JsonBody};
use crate::plumbing::{ids, time::now_ms, time::rfc3339};

pub const MIGRATIONS: &[&str] = &["CREATE TABLE payments (
        order_id TEXT PRIMARY KEY,
        payment_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
        status TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'voided', 'refunded')),
        decline_code TEXT,
        captured_cents INTEGER NOT NULL DEFAULT 0,
        refunded_cents INTEGER NOT NULL DEFAULT 0,
        card_last4 TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );"];

/// Card numbers with a scripted outcome (the well-known test cards); any other is charged.
const DECLINED: &str = "4000000000000002";
const INSUFFICIENT_FUNDS: &str = "4000000000009995";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    pub order_id: String,
    pub user_id: String,
    pub amount_cents: i64,
    pub card: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: String,
    pub order_id: String,
    pub user_id: String,
    pub amount_cents: i64,
    /// captured, declined, voided (refunded before any charge) or refunded
    pub status: String,
    pub decline_code: Option<String>,
    pub captured_cents: i64,
    pub refunded_cents: i64,
    pub created_at: String,
}

pub async fn build(rt: &Arc<Runtime>) -> anyhow::Result<Service> {
    let extra = super::db_gauges(
        rt.db.clone(),
        money_totals,
        [
            ("shop_payment_captured_cents_total", "Money captured, in cents."),
            ("shop_payment_refunded_cents_total", "Money refunded, in cents."),
        ],
    );
    let routes = Router::new()
        .route("/v1/payments", post(charge).get(list))
        .route("/v1/payments/by-order/{order_id}", get(by_order))
        .route("/v1/payments/by-order/{order_id}/refund", post(refund))
        .with_state(rt.db.clone());
    Ok(Service { extra_metrics: Some(extra), ..Service::new(routes) })
}

const COLUMNS: &str =
    "payment_id, order_id, user_id, amount_cents, status, decline_code, captured_cents, refunded_cents, created_at";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Payment> {
    Ok(Payment {
        payment_id: r.get(0)?,
        order_id: r.get(1)?,
        user_id: r.get(2)?,
        amount_cents: r.get(3)?,
        status: r.get(4)?,
        decline_code: r.get(5)?,
        captured_cents: r.get(6)?,
        refunded_cents: r.get(7)?,
        created_at: rfc3339(r.get(8)?),
    })
}

/// Money captured and refunded over all payments, in cents.
fn money_totals(c: &rusqlite::Connection) -> rusqlite::Result<[i64; 2]> {
    c.query_row("SELECT coalesce(sum(captured_cents), 0), coalesce(sum(refunded_cents), 0) FROM payments", [], |r| {
        Ok([r.get(0)?, r.get(1)?])
    })
}

/// Visits every payment row's order id, captured and refunded amounts (the id borrowed from
/// SQLite's row buffer: the invariants read them all).
pub fn visit_settlements(c: &rusqlite::Connection, mut visit: impl FnMut(&str, i64, i64)) -> rusqlite::Result<()> {
    let mut stmt = c.prepare("SELECT order_id, captured_cents, refunded_cents FROM payments")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        visit(r.get_ref(0)?.as_str()?, r.get(1)?, r.get(2)?);
    }
    Ok(())
}

fn find(tx: &rusqlite::Connection, order_id: &str) -> rusqlite::Result<Option<Payment>> {
    tx.prepare_cached(&format!("SELECT {COLUMNS} FROM payments WHERE order_id = ?1"))?
        .query_row([order_id], row)
        .optional()
}

async fn charge(State(db): State<Db>, JsonBody(req): JsonBody<ChargeRequest>) -> Result<Json<Payment>, ApiError> {
    if req.order_id.is_empty() || req.order_id.len() > 64 {
        return Err(ApiError::bad_request("`order_id` must be 1 to 64 characters"));
    }
    if req.amount_cents <= 0 {
        return Err(ApiError::bad_request(format!("`amount_cents` must be positive, got {}", req.amount_cents)));
    }
    let payment = db
        .tx(move |tx| {
            // The order id is the idempotency key: a repeated charge returns the first outcome.
            if let Some(existing) = find(tx, &req.order_id)? {
                return Ok(existing);
            }
            let (status, code, captured) = match req.card.as_str() {
                DECLINED => ("declined", Some("card_declined"), 0),
                INSUFFICIENT_FUNDS => ("declined", Some("insufficient_funds"), 0),
                _ => ("captured", None, req.amount_cents),
            };
            let now = now_ms();
            let last4: String = req.card.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            tx.prepare_cached(
                "INSERT INTO payments (order_id, payment_id, user_id, amount_cents, status, decline_code, captured_cents, refunded_cents, card_last4, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?9)",
            )?
            .execute(rusqlite::params![req.order_id, ids::new("pay"), req.user_id, req.amount_cents, status, code, captured, last4, now])?;
            Ok(find(tx, &req.order_id)?.expect("row inserted in this transaction"))
        })
        .await?;
    Ok(Json(payment))
}

async fn by_order(State(db): State<Db>, ApiPath(order_id): ApiPath<String>) -> Result<Json<Payment>, ApiError> {
    let key = order_id.clone();
    db.tx(move |tx| find(tx, &key))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no payment for order `{order_id}`")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    #[serde(default)]
    user_id: Option<String>,
}

async fn refund(
    State(db): State<Db>,
    ApiPath(order_id): ApiPath<String>,
    JsonBody(req): JsonBody<RefundRequest>,
) -> Result<Json<Payment>, ApiError> {
    let payment = db
        .tx(move |tx| {
            let now = now_ms();
            match find(tx, &order_id)? {
                None => {
                    // Never charged: void the order so a charge still on its way is refused.
                    tx.execute(
                        "INSERT INTO payments (order_id, payment_id, user_id, amount_cents, status, card_last4, created_at, updated_at)
                         VALUES (?1, ?2, ?3, 0, 'voided', '', ?4, ?4)",
                        rusqlite::params![order_id, ids::new("pay"), req.user_id.unwrap_or_default(), now],
                    )?;
                }
                Some(p) if p.status == "captured" => {
                    tx.execute(
                        "UPDATE payments SET status = 'refunded', refunded_cents = captured_cents, updated_at = ?2 WHERE order_id = ?1",
                        rusqlite::params![order_id, now],
                    )?;
                }
                // declined, voided, refunded: nothing is owed.
                Some(_) => {}
            }
            Ok(find(tx, &order_id)?.expect("row exists in this transaction"))
        })
        .await?;
    Ok(Json(payment))
}

async fn list(State(db): State<Db>) -> Result<Json<Vec<Payment>>, ApiError> {
    let all = db
        .call(|c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM payments ORDER BY payment_id DESC LIMIT 1000"))?;
            let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>();
            rows
        })
        .await?;
    Ok(Json(all))
}
