//! The payment service: charges keyed by order id, so no order is ever charged twice whatever
//! the retries, and refunds that are safe to repeat.
//!
//! A refund for an order that was never charged leaves a `voided` row; a charge arriving after
//! it (a request that was slow on the wire) is then refused, so money cannot move for an order
//! the saga already gave up on.
//!
//! A charge names the card by its token (SPEC section 17): the number is resolved from the user
//! service, the card vault, only to decide the charge, and only the token and the last four
//! digits are stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use reqwest::Method;
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::user::Card;
use super::{Runtime, Service};
use crate::plumbing::client::{CallError, ServiceClient};
use crate::plumbing::db::Db;
use crate::plumbing::error::{ApiError, ApiPath, JsonBody};
use crate::plumbing::trace::TraceCtx;
use crate::plumbing::{ids, time::now_ms, time::rfc3339};

pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE payments (
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
    );",
    // Version 2: charges name the card by its token; older rows have none.
    "ALTER TABLE payments ADD COLUMN card_token TEXT;",
    // Version 3 (SPEC section 18): keyed by the order id itself (WITHOUT ROWID), which every
    // lookup uses, so no separate index repeats it; the payment id's uniqueness index goes too
    // (nothing looks a payment up by it, and it is a fresh ULID).
    "CREATE TABLE payments_v3 (
        order_id TEXT PRIMARY KEY,
        payment_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
        status TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'voided', 'refunded')),
        decline_code TEXT,
        captured_cents INTEGER NOT NULL DEFAULT 0,
        refunded_cents INTEGER NOT NULL DEFAULT 0,
        card_last4 TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        card_token TEXT
    ) WITHOUT ROWID;
    INSERT INTO payments_v3 SELECT order_id, payment_id, user_id, amount_cents, status, decline_code, captured_cents,
        refunded_cents, card_last4, created_at, updated_at, card_token FROM payments;
    DROP TABLE payments;
    ALTER TABLE payments_v3 RENAME TO payments;",
];

/// Card numbers with a scripted outcome (the well-known test cards); any other is charged.
const DECLINED: &str = "4000000000000002";
const INSUFFICIENT_FUNDS: &str = "4000000000009995";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    pub order_id: String,
    pub user_id: String,
    pub amount_cents: i64,
    /// The user's card as the user service issued it; resolved there, never a number.
    pub card_token: String,
}

/// What a charge does with a card, decided from its number at resolution time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Capture,
    Decline(&'static str),
}

impl Verdict {
    fn of(number: &str) -> Verdict {
        match number {
            DECLINED => Verdict::Decline("card_declined"),
            INSUFFICIENT_FUNDS => Verdict::Decline("insufficient_funds"),
            _ => Verdict::Capture,
        }
    }
}

/// A resolved card without its number: all a charge needs, and all this service keeps, even in
/// memory.
#[derive(Clone, Debug)]
struct Resolved {
    user_id: String,
    card_last4: String,
    verdict: Verdict,
}

/// How long a resolved card is trusted, as long as the order service trusts a validated user: a
/// burst of charges on one card costs one call to the vault.
const CARD_CACHE_TTL: Duration = Duration::from_secs(2);

/// Why a card token could not be resolved.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    /// The vault does not know it, or it is another user's: a business refusal.
    #[error("{0}")]
    Refused(String),
    /// The vault could not be asked; the charge may succeed when asked again.
    #[error("cannot resolve the card with the user service: {0}")]
    Unavailable(#[source] CallError),
}

#[derive(Clone)]
struct Payments {
    db: Db,
    /// Calls to the user service, with its breaker, to resolve card tokens.
    client: ServiceClient,
    /// Recently resolved cards by token (numbers are never cached, only verdicts).
    cards: Arc<Mutex<HashMap<String, (Resolved, Instant)>>>,
}

impl Payments {
    /// The card behind `token` as resolved within the last moments, if it was.
    fn cached(&self, token: &str) -> Option<Resolved> {
        let cards = self.cards.lock().unwrap_or_else(|p| p.into_inner());
        cards.get(token).filter(|(_, at)| at.elapsed() < CARD_CACHE_TTL).map(|(r, _)| r.clone())
    }

    async fn resolve(&self, token: &str, user_id: &str, trace: &TraceCtx) -> Result<Resolved, ResolveError> {
        let resolved = match self.cached(token) {
            Some(r) => r,
            None => {
                let path = format!("/v1/cards/{token}");
                let card: Card =
                    match self.client.call_idempotent::<(), _>("user", Method::GET, &path, None, Some(trace)).await {
                        Ok(card) => card,
                        Err(e) if e.is_transient() => return Err(ResolveError::Unavailable(e)),
                        Err(_) => {
                            return Err(ResolveError::Refused("the card token is not known to the card vault".into()))
                        }
                    };
                let resolved =
                    Resolved { user_id: card.user_id, card_last4: card.card_last4, verdict: Verdict::of(&card.number) };
                let mut cards = self.cards.lock().unwrap_or_else(|p| p.into_inner());
                if cards.len() > 10_000 {
                    cards.clear(); // bounded: a cache, not a copy of the vault
                }
                cards.insert(token.to_string(), (resolved.clone(), Instant::now()));
                resolved
            }
        };
        if resolved.user_id != user_id {
            return Err(ResolveError::Refused(format!("the card token does not belong to user `{user_id}`")));
        }
        Ok(resolved)
    }
}

/// A token is used as a path segment toward the vault: only the characters tokens are made of.
fn token_is_well_formed(token: &str) -> bool {
    (1..=64).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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
        .with_state(Payments { db: rt.db.clone(), client: rt.client.clone(), cards: Arc::default() });
    // Charges resolve the card token with the user service (the card vault, SPEC section 17).
    Ok(Service {
        ready: Some(super::ready_with_deps(rt, &["user"])),
        extra_metrics: Some(extra),
        ..Service::new(routes)
    })
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

/// Visits every payment row's order id, captured and refunded amounts (the id's bytes borrowed
/// from SQLite's row buffer, not checked as UTF-8: the invariants read them all and compare
/// bytes), in order id order (the table's own key: no sort).
pub fn visit_settlements(c: &rusqlite::Connection, mut visit: impl FnMut(&[u8], i64, i64)) -> rusqlite::Result<()> {
    let mut stmt = c.prepare("SELECT order_id, captured_cents, refunded_cents FROM payments ORDER BY order_id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        visit(r.get_ref(0)?.as_bytes()?, r.get_ref(1)?.as_i64()?, r.get_ref(2)?.as_i64()?);
    }
    Ok(())
}

fn find(tx: &rusqlite::Connection, order_id: &str) -> rusqlite::Result<Option<Payment>> {
    tx.prepare_cached(&format!("SELECT {COLUMNS} FROM payments WHERE order_id = ?1"))?
        .query_row([order_id], row)
        .optional()
}

async fn charge(
    State(p): State<Payments>,
    Extension(trace): Extension<TraceCtx>,
    JsonBody(req): JsonBody<ChargeRequest>,
) -> Result<Json<Payment>, ApiError> {
    if req.order_id.is_empty() || req.order_id.len() > 64 {
        return Err(ApiError::bad_request("`order_id` must be 1 to 64 characters"));
    }
    if req.amount_cents <= 0 {
        return Err(ApiError::bad_request(format!("`amount_cents` must be positive, got {}", req.amount_cents)));
    }
    if !token_is_well_formed(&req.card_token) {
        return Err(ApiError::bad_request("`card_token` must be 1 to 64 letters, digits, `_` or `-`"));
    }
    // A repeated charge returns the first outcome without asking the vault again. With the card
    // in the cache no vault call is at stake, and the transaction below finds a repeat itself:
    // the common first charge then costs one trip to the database thread, not two.
    if p.cached(&req.card_token).is_none() {
        let key = req.order_id.clone();
        if let Some(existing) = p.db.read(move |c| find(c, &key)).await? {
            return Ok(Json(existing));
        }
    }
    let card = match p.resolve(&req.card_token, &req.user_id, &trace).await {
        Ok(card) => card,
        Err(ResolveError::Refused(message)) => return Err(ApiError::unprocessable("unknown_card", message)),
        Err(e @ ResolveError::Unavailable(_)) => {
            tracing::warn!(order_id = %req.order_id, error = %e, "charge postponed");
            return Err(ApiError::unavailable(e.to_string(), 1));
        }
    };
    let payment = p
        .db
        .tx(move |tx| {
            // The order id is the idempotency key: a charge that raced this one keeps its outcome.
            if let Some(existing) = find(tx, &req.order_id)? {
                return Ok(existing);
            }
            let (status, code, captured) = match card.verdict {
                Verdict::Decline(code) => ("declined", Some(code), 0),
                Verdict::Capture => ("captured", None, req.amount_cents),
            };
            let now = now_ms();
            tx.prepare_cached(
                "INSERT INTO payments (order_id, payment_id, user_id, amount_cents, status, decline_code, captured_cents, refunded_cents, card_last4, card_token, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, ?10)",
            )?
            .execute(rusqlite::params![
                req.order_id,
                ids::new("pay"),
                req.user_id,
                req.amount_cents,
                status,
                code,
                captured,
                card.card_last4,
                req.card_token,
                now
            ])?;
            // The row was inserted in this transaction just above, so it is found.
            Ok(find(tx, &req.order_id)?.expect("row inserted in this transaction"))
        })
        .await?;
    Ok(Json(payment))
}

async fn by_order(
    State(Payments { db, .. }): State<Payments>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Json<Payment>, ApiError> {
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
    State(Payments { db, .. }): State<Payments>,
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

async fn list(State(Payments { db, .. }): State<Payments>) -> Result<Json<Vec<Payment>>, ApiError> {
    let all = db
        .call(|c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM payments ORDER BY payment_id DESC LIMIT 1000"))?;
            let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>();
            rows
        })
        .await?;
    Ok(Json(all))
}
