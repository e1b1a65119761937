//! The inventory service: the catalog, stock, and reservations keyed by order id.
//!
//! Stock moves between three columns (available, reserved, sold) inside one transaction, so
//! `initial = available + reserved + sold` holds after every statement. Every reservation call
//! is idempotent by order id, and a release that arrives before its reservation leaves a
//! tombstone so the late reservation is refused instead of holding stock forever.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::{Runtime, Service};
use crate::fixtures;
use crate::plumbing::db::Db;
use crate::plumbing::error::{ApiError, ApiPath, ApiQuery, JsonBody};
use crate::plumbing::{ids, time::now_ms};

pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE products (
        product_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
        initial INTEGER NOT NULL,
        available INTEGER NOT NULL CHECK (available >= 0),
        reserved INTEGER NOT NULL CHECK (reserved >= 0),
        sold INTEGER NOT NULL CHECK (sold >= 0)
    );
    CREATE TABLE reservations (
        order_id TEXT PRIMARY KEY,
        reservation_id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('held', 'committed', 'released', 'expired')),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX reservations_held ON reservations (status, expires_at);
    CREATE TABLE reservation_items (
        order_id TEXT NOT NULL REFERENCES reservations (order_id),
        product_id TEXT NOT NULL REFERENCES products (product_id),
        quantity INTEGER NOT NULL CHECK (quantity > 0),
        PRIMARY KEY (order_id, product_id)
    );",
    // Version 2 (SPEC section 18): reservations and their lines keyed by the order id itself
    // (WITHOUT ROWID), so no index repeats it; the index of held reservations holds only those
    // (the others are never looked up by status); the reservation id's uniqueness index goes
    // (nothing looks a reservation up by it, and it is a fresh ULID). The new lines reference
    // `reservations_v2`, which the rename turns into `reservations`.
    "CREATE TABLE reservations_v2 (
        order_id TEXT PRIMARY KEY,
        reservation_id TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('held', 'committed', 'released', 'expired')),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO reservations_v2 SELECT order_id, reservation_id, status, created_at, expires_at, updated_at FROM reservations;
    CREATE TABLE reservation_items_v2 (
        order_id TEXT NOT NULL REFERENCES reservations_v2 (order_id),
        product_id TEXT NOT NULL REFERENCES products (product_id),
        quantity INTEGER NOT NULL CHECK (quantity > 0),
        PRIMARY KEY (order_id, product_id)
    ) WITHOUT ROWID;
    INSERT INTO reservation_items_v2 SELECT order_id, product_id, quantity FROM reservation_items;
    DROP TABLE reservation_items;
    DROP TABLE reservations;
    ALTER TABLE reservations_v2 RENAME TO reservations;
    ALTER TABLE reservation_items_v2 RENAME TO reservation_items;
    CREATE INDEX reservations_held ON reservations (expires_at) WHERE status = 'held';",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Product {
    pub product_id: String,
    pub name: String,
    pub price_cents: i64,
    pub available: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stock {
    pub product_id: String,
    pub initial: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Line {
    pub product_id: String,
    pub quantity: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    pub order_id: String,
    pub items: Vec<Line>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: String,
    pub order_id: String,
    pub status: String,
}

#[derive(Clone)]
struct Inventory {
    db: Db,
    ttl: Duration,
}

pub async fn build(rt: &Arc<Runtime>) -> anyhow::Result<Service> {
    if let Some(path) = &rt.args.fixtures {
        let products = fixtures::load_products(path)?;
        rt.db
            .tx(move |tx| {
                for p in &products {
                    // OR IGNORE: fixtures load once; a restart never resets stock.
                    tx.execute(
                        "INSERT OR IGNORE INTO products (product_id, name, price_cents, initial, available, reserved, sold)
                         VALUES (?1, ?2, ?3, ?4, ?4, 0, 0)",
                        rusqlite::params![p.id, p.name, p.price_cents, p.stock],
                    )?;
                }
                Ok(())
            })
            .await
            .with_context(|| format!("loading fixtures from `{}`", path.display()))?;
    }
    let inv = Inventory { db: rt.db.clone(), ttl: rt.args.tuning.reservation_ttl };
    let sweeper = expiry_loop(inv.clone());
    let extra = super::db_gauges(
        rt.db.clone(),
        reservation_totals,
        [
            ("shop_inventory_stock_reserved", "Units held by reservations."),
            ("shop_inventory_reservations_held", "Reservations neither committed nor released."),
        ],
    );
    let routes = Router::new()
        .route("/v1/products", get(products))
        .route("/v1/stock", get(stock))
        .route("/v1/reservations", post(reserve))
        .route("/v1/reservations/{order_id}", get(get_reservation))
        .route("/v1/reservations/{order_id}/commit", post(commit))
        .route("/v1/reservations/{order_id}/release", post(release))
        .with_state(inv);
    Ok(Service { extra_metrics: Some(extra), ..Service::new(routes) }.with_loop("reservation sweeper", sweeper))
}

#[derive(Deserialize)]
struct ProductQuery {
    /// Comma-separated product ids; all products when absent.
    ids: Option<String>,
}

async fn products(
    State(inv): State<Inventory>,
    ApiQuery(q): ApiQuery<ProductQuery>,
) -> Result<Json<Vec<Product>>, ApiError> {
    let list = inv
        .db
        .call(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT product_id, name, price_cents, available FROM products ORDER BY product_id")?;
            let all = stmt.query_map([], |r| {
                Ok(Product { product_id: r.get(0)?, name: r.get(1)?, price_cents: r.get(2)?, available: r.get(3)? })
            })?;
            all.collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(Json(match q.ids {
        Some(ids) => {
            let wanted: Vec<&str> = ids.split(',').collect();
            list.into_iter().filter(|p| wanted.contains(&p.product_id.as_str())).collect()
        }
        None => list,
    }))
}

async fn stock(State(inv): State<Inventory>) -> Result<Json<Vec<Stock>>, ApiError> {
    Ok(Json(inv.db.call(read_stock).await?))
}

pub fn read_stock(c: &mut rusqlite::Connection) -> rusqlite::Result<Vec<Stock>> {
    let mut stmt =
        c.prepare("SELECT product_id, initial, available, reserved, sold FROM products ORDER BY product_id")?;
    let rows = stmt.query_map([], |r| {
        Ok(Stock {
            product_id: r.get(0)?,
            initial: r.get(1)?,
            available: r.get(2)?,
            reserved: r.get(3)?,
            sold: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Units reserved over all products, and the reservations holding them.
fn reservation_totals(c: &rusqlite::Connection) -> rusqlite::Result<[i64; 2]> {
    c.query_row(
        "SELECT coalesce(sum(reserved), 0), (SELECT count(*) FROM reservations WHERE status = 'held') FROM products",
        [],
        |r| Ok([r.get(0)?, r.get(1)?]),
    )
}

/// How many reservations hold stock now (neither committed, released nor expired).
pub fn held_reservations(c: &rusqlite::Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT count(*) FROM reservations WHERE status = 'held'", [], |r| r.get(0))
}

/// A business refusal, decided inside a transaction and turned into a 409 outside it.
struct Refusal(&'static str, String);

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        ApiError::conflict(r.0, r.1)
    }
}

async fn reserve(
    State(inv): State<Inventory>,
    JsonBody(req): JsonBody<ReserveRequest>,
) -> Result<Json<Reservation>, ApiError> {
    if req.order_id.is_empty() || req.items.is_empty() || req.items.iter().any(|l| l.quantity <= 0) {
        return Err(ApiError::bad_request("a reservation needs an order_id and items with positive quantities"));
    }
    // Lines for the same product are summed: all-or-nothing is about the total per product.
    let mut wanted: BTreeMap<String, i64> = BTreeMap::new();
    for line in &req.items {
        *wanted.entry(line.product_id.clone()).or_default() += line.quantity;
    }
    let ttl = inv.ttl.as_millis() as i64;
    let order_id = req.order_id;
    let outcome = inv
        .db
        .tx(move |tx| {
            if let Some(existing) = find(tx, &order_id)? {
                return Ok(match existing.status.as_str() {
                    "held" | "committed" => Ok(existing),
                    _ => Err(Refusal(
                        "reservation_released",
                        format!("the reservation for order `{order_id}` was already released"),
                    )),
                });
            }
            let mut unknown = Vec::new();
            let mut short = Vec::new();
            for (product, qty) in &wanted {
                let available: Option<i64> = tx
                    .prepare_cached("SELECT available FROM products WHERE product_id = ?1")?
                    .query_row([product], |r| r.get(0))
                    .optional()?;
                match available {
                    None => unknown.push(product.clone()),
                    Some(a) if a < *qty => short.push(format!("{product} (wanted {qty}, available {a})")),
                    Some(_) => {}
                }
            }
            if !unknown.is_empty() {
                return Ok(Err(Refusal("unknown_product", format!("unknown product: {}", unknown.join(", ")))));
            }
            if !short.is_empty() {
                return Ok(Err(Refusal("out_of_stock", format!("out of stock: {}", short.join(", ")))));
            }
            let now = now_ms();
            let reservation_id = ids::new("res");
            tx.prepare_cached(
                "INSERT INTO reservations (order_id, reservation_id, status, created_at, expires_at, updated_at)
                 VALUES (?1, ?2, 'held', ?3, ?4, ?3)",
            )?
            .execute(rusqlite::params![order_id, reservation_id, now, now + ttl])?;
            for (product, qty) in &wanted {
                tx.prepare_cached(
                    "UPDATE products SET available = available - ?2, reserved = reserved + ?2 WHERE product_id = ?1",
                )?
                .execute(rusqlite::params![product, qty])?;
                tx.prepare_cached(
                    "INSERT INTO reservation_items (order_id, product_id, quantity) VALUES (?1, ?2, ?3)",
                )?
                .execute(rusqlite::params![order_id, product, qty])?;
            }
            Ok(Ok(Reservation { reservation_id, order_id, status: "held".into() }))
        })
        .await?;
    Ok(Json(outcome?))
}

fn find(tx: &rusqlite::Connection, order_id: &str) -> rusqlite::Result<Option<Reservation>> {
    tx.prepare_cached("SELECT reservation_id, order_id, status FROM reservations WHERE order_id = ?1")?
        .query_row([order_id], |r| {
            Ok(Reservation { reservation_id: r.get(0)?, order_id: r.get(1)?, status: r.get(2)? })
        })
        .optional()
}

/// Moves every line of a reservation from column `from` to column `to` of products.
///
/// The lines are read, then each product is updated by its key: one `UPDATE … WHERE product_id
/// IN (SELECT …)` reads the same, but SQLite builds a temporary table for the `IN` list on every
/// call, which showed in the inventory database thread's profile.
fn move_stock(tx: &rusqlite::Connection, order_id: &str, from: &str, to: &str) -> rusqlite::Result<()> {
    let lines: Vec<(String, i64)> = tx
        .prepare_cached("SELECT product_id, quantity FROM reservation_items WHERE order_id = ?1")?
        .query_map([order_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // Column names come from the fixed set in this module, never from a request.
    let sql = format!("UPDATE products SET {from} = {from} - ?2, {to} = {to} + ?2 WHERE product_id = ?1");
    let mut update = tx.prepare_cached(&sql)?;
    for (product, quantity) in lines {
        update.execute(rusqlite::params![product, quantity])?;
    }
    Ok(())
}

fn set_status(tx: &rusqlite::Connection, order_id: &str, status: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE reservations SET status = ?2, updated_at = ?3 WHERE order_id = ?1")?
        .execute(rusqlite::params![order_id, status, now_ms()])?;
    Ok(())
}

async fn get_reservation(
    State(inv): State<Inventory>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Json<Reservation>, ApiError> {
    let key = order_id.clone();
    inv.db
        .tx(move |tx| find(tx, &key))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no reservation for order `{order_id}`")))
}

async fn commit(
    State(inv): State<Inventory>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Json<Reservation>, ApiError> {
    let outcome = inv
        .db
        .tx(move |tx| {
            let Some(mut r) = find(tx, &order_id)? else {
                return Ok(Err(ApiError::not_found(format!("no reservation for order `{order_id}`"))));
            };
            match r.status.as_str() {
                "committed" => {}
                "held" => {
                    move_stock(tx, &order_id, "reserved", "sold")?;
                    set_status(tx, &order_id, "committed")?;
                    r.status = "committed".into();
                }
                _ => {
                    return Ok(Err(ApiError::conflict(
                        "reservation_expired",
                        format!(
                            "the reservation for order `{order_id}` is {}; it can no longer be committed",
                            r.status
                        ),
                    )))
                }
            }
            Ok(Ok(r))
        })
        .await?;
    Ok(Json(outcome?))
}

async fn release(
    State(inv): State<Inventory>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Json<Reservation>, ApiError> {
    let r = inv
        .db
        .tx(move |tx| {
            let Some(mut r) = find(tx, &order_id)? else {
                // Nothing reserved yet: leave a tombstone so a reservation arriving late is refused.
                let r = Reservation {
                    reservation_id: ids::new("res"),
                    order_id: order_id.clone(),
                    status: "released".into(),
                };
                let now = now_ms();
                tx.execute(
                    "INSERT INTO reservations (order_id, reservation_id, status, created_at, expires_at, updated_at)
                     VALUES (?1, ?2, 'released', ?3, ?3, ?3)",
                    rusqlite::params![r.order_id, r.reservation_id, now],
                )?;
                return Ok(r);
            };
            match r.status.as_str() {
                "held" => move_stock(tx, &order_id, "reserved", "available")?,
                // Compensating a committed reservation puts the sold units back on the shelf.
                "committed" => move_stock(tx, &order_id, "sold", "available")?,
                _ => return Ok(r),
            }
            set_status(tx, &order_id, "released")?;
            r.status = "released".into();
            Ok(r)
        })
        .await?;
    Ok(Json(r))
}

/// Releases held reservations past their expiry: the safety net for a saga that never returns.
async fn expiry_loop(inv: Inventory) {
    let mut tick = tokio::time::interval((inv.ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1)));
    loop {
        tick.tick().await;
        let expired = inv
            .db
            .tx(|tx| {
                let due: Vec<String> = tx
                    .prepare_cached("SELECT order_id FROM reservations WHERE status = 'held' AND expires_at < ?1")?
                    .query_map([now_ms()], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for order_id in &due {
                    move_stock(tx, order_id, "reserved", "available")?;
                    set_status(tx, order_id, "expired")?;
                }
                Ok(due)
            })
            .await;
        match expired {
            Ok(list) if !list.is_empty() => tracing::warn!(orders = ?list, "reservations expired; stock returned"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "reservation expiry failed"),
        }
    }
}
