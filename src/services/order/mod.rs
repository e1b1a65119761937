//! The order service: accepts orders, runs their sagas (see [`saga`]), relays notifications from
//! the outbox (see [`relay`]), and answers reads from its event log.
//!
//! # Layout
//! - [`events`]: the event log's vocabulary, the state folded from it, the steps shown to users
//! - [`store`]: the SQLite schema and every query
//! - [`saga`]: the executor
//! - [`relay`]: outbox delivery

pub mod events;
pub mod relay;
pub mod saga;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use self::events::{Event, Item, Status};
use self::saga::Saga;
use self::store::{event_views, EventView, OrderView, Placed, Store};
use super::inventory::Product;
use super::{Runtime, Service};
use crate::plumbing::client::ServiceClient;
use crate::plumbing::error::{ApiError, ApiPath, ApiQuery, JsonBody};
use crate::plumbing::trace::TraceCtx;
use crate::plumbing::{ids, metrics};

pub use store::MIGRATIONS;

/// The currency of every price in the catalog.
pub const CURRENCY: &str = "USD";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceRequest {
    pub user_id: String,
    pub items: Vec<RequestedItem>,
    pub idempotency_key: String,
    /// A digest of the client's request body: the same key with another body is refused.
    pub request_hash: String,
    /// How long to wait for a terminal state before answering with the order still PENDING.
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedItem {
    pub product_id: String,
    pub quantity: i64,
}

/// The most units of one product an order may ask for (SPEC section 5).
pub const MAX_QUANTITY: i64 = 1000;

impl RequestedItem {
    /// Refuses a quantity outside `1..=MAX_QUANTITY`; the error is the message for a 400. The
    /// gateway checks it for the client, the order service again for any other caller.
    pub fn check_quantity(&self) -> Result<(), String> {
        if (1..=MAX_QUANTITY).contains(&self.quantity) {
            Ok(())
        } else {
            Err(format!("quantity of `{}` must be 1 to {MAX_QUANTITY}, got {}", self.product_id, self.quantity))
        }
    }
}

/// Checks every line's quantity (a 400: the request is malformed), then each product's sum
/// over its lines, which are merged into one: two lines of 600 are one line of 1,200, past the
/// limit as surely as one line is. That is a 422 (`quantity_too_large`): each line is valid as
/// written, and only their sum is not, which no schema of a line can say.
pub fn check_quantities(items: &[RequestedItem]) -> Result<(), ApiError> {
    for item in items {
        item.check_quantity().map_err(ApiError::bad_request)?;
    }
    match merge_lines(items).into_iter().find(|(_, quantity)| *quantity > MAX_QUANTITY) {
        Some((product_id, quantity)) => Err(ApiError::unprocessable(
            "quantity_too_large",
            format!(
                "the lines for `{product_id}` add up to a quantity of {quantity}; at most {MAX_QUANTITY} per product"
            ),
        )),
        None => Ok(()),
    }
}

/// `POST /v1/orders` answers the order and whether this call created it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Placement {
    pub created: bool,
    pub order: OrderView,
}

#[derive(Clone)]
struct Orders {
    saga: Arc<Saga>,
    client: ServiceClient,
    /// Prices by product id, filled from inventory; prices never come from the client.
    catalog: Arc<RwLock<HashMap<String, i64>>>,
}

pub async fn build(rt: &Arc<Runtime>) -> anyhow::Result<Service> {
    let store = Store { db: rt.db.clone(), owner: rt.instance.clone() };
    store.checkpoint().await.context("checkpointing the order database at start-up")?;
    let saga = Arc::new(Saga::new(
        store.clone(),
        rt.client.clone(),
        rt.spans.clone(),
        rt.args.tuning.saga_timeout,
        rt.args.tuning.crash_after.clone(),
    ));
    let orders = Orders { saga: saga.clone(), client: rt.client.clone(), catalog: Arc::default() };

    let relay = relay::run(store.clone(), rt.client.clone(), rt.spans.clone(), saga.relay_wake.clone());
    let resumer = resume_loop(saga.clone());

    let extra: crate::plumbing::http::ExtraMetrics = {
        let saga = saga.clone();
        Arc::new(move || {
            let saga = saga.clone();
            Box::pin(async move {
                let mut out = String::new();
                metrics::gauge(
                    &mut out,
                    "shop_order_sagas_in_flight",
                    "Sagas running in this process.",
                    "",
                    saga.in_flight() as f64,
                );
                if let Ok((by_status, backlog)) = saga.store.figures().await {
                    out.push_str("# HELP shop_order_orders Orders by status.\n# TYPE shop_order_orders gauge\n");
                    for (status, n) in by_status {
                        out.push_str(&format!("shop_order_orders{{status=\"{status}\"}} {n}\n"));
                    }
                    metrics::gauge(
                        &mut out,
                        "shop_order_outbox_backlog",
                        "Notifications not yet delivered.",
                        "",
                        backlog as f64,
                    );
                }
                out
            })
        })
    };
    let routes = Router::new()
        .route("/v1/orders", post(place).get(list))
        .route("/v1/orders/{id}", get(get_order))
        .with_state(orders);
    Ok(Service {
        ready: Some(super::ready_with_deps(rt, &["user", "inventory", "payment"])),
        extra_metrics: Some(extra),
        ..Service::new(routes)
    }
    .with_loop("outbox relay", relay)
    .with_loop("saga resumer", resumer))
}

/// Resumes every PENDING saga this instance may run: at start-up, then every two seconds for
/// sagas whose runner died (another replica's, or one that hit a database error).
async fn resume_loop(saga: Arc<Saga>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut first = true;
    loop {
        tick.tick().await;
        match saga.store.resumable().await {
            Ok(ids) => {
                if first && !ids.is_empty() {
                    tracing::info!(count = ids.len(), "resuming unfinished sagas");
                }
                for id in ids {
                    saga.start(&id, None, None);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot scan for unfinished sagas"),
        }
        first = false;
    }
}

impl Orders {
    /// Unit prices for `ids`; unknown products get no price (the reservation refuses them).
    async fn prices(&self, ids: &[&str], trace: &TraceCtx) -> Result<HashMap<String, i64>, ApiError> {
        let missing = {
            let cat = self.catalog.read().unwrap_or_else(|p| p.into_inner());
            ids.iter().any(|id| !cat.contains_key(*id))
        };
        if missing {
            let products: Vec<Product> = self
                .client
                .call_idempotent::<(), _>("inventory", Method::GET, "/v1/products", None, Some(trace))
                .await
                .map_err(|e| ApiError::unavailable(format!("cannot read the catalog: {e}"), 1))?;
            let mut cat = self.catalog.write().unwrap_or_else(|p| p.into_inner());
            for p in products {
                cat.insert(p.product_id, p.price_cents);
            }
        }
        let cat = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        Ok(ids.iter().filter_map(|id| cat.get(*id).map(|p| (id.to_string(), *p))).collect())
    }

    /// The order after waiting up to `budget` for it to end.
    async fn settled_view(&self, order_id: &str, budget: Duration) -> Result<OrderView, ApiError> {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let done = tokio::select! {
                done = self.saga.wait(order_id, remaining) => done,
                // Stopping: the order as it stands goes back now (PENDING: the gateway answers
                // 202 with its Location), rather than no answer when the drain ends.
                () = crate::plumbing::http::draining() => None,
            };
            if let Some(done) = done {
                return Ok(done.as_ref().clone());
            }
            let view = self
                .saga
                .store
                .view(order_id)
                .await?
                .map(|v| v.0)
                .ok_or_else(|| ApiError::not_found("order vanished"))?;
            // Another replica may be running it: poll the database until the budget is spent.
            if view.status != Status::Pending
                || tokio::time::Instant::now() >= deadline
                || crate::plumbing::http::is_draining()
            {
                return Ok(view);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The order's lines, one per product in first-seen order: a second line for a product adds
/// to the first, as a cart would. Each line was checked against the quantity limit already,
/// so the sums stay far from overflow (at most `MAX_ITEMS × MAX_QUANTITY`).
fn merge_lines(items: &[RequestedItem]) -> Vec<(String, i64)> {
    let mut lines: Vec<(String, i64)> = Vec::with_capacity(items.len());
    for item in items {
        match lines.iter_mut().find(|(id, _)| *id == item.product_id) {
            Some((_, quantity)) => *quantity += item.quantity,
            None => lines.push((item.product_id.clone(), item.quantity)),
        }
    }
    lines
}

async fn place(
    State(o): State<Orders>,
    Extension(trace): Extension<TraceCtx>,
    JsonBody(req): JsonBody<PlaceRequest>,
) -> Result<(StatusCode, Json<Placement>), ApiError> {
    if req.items.is_empty() || req.idempotency_key.is_empty() || req.user_id.is_empty() {
        return Err(ApiError::bad_request("an order needs a user_id, an idempotency_key and at least one item"));
    }
    check_quantities(&req.items)?;
    let budget = Duration::from_millis(req.wait_ms.min(120_000));
    let ids: Vec<&str> = req.items.iter().map(|i| i.product_id.as_str()).collect();
    let prices = o.prices(&ids, &trace).await?;
    let items: Vec<Item> = merge_lines(&req.items)
        .into_iter()
        .map(|(product_id, quantity)| Item {
            unit_price_cents: prices.get(&product_id).copied().unwrap_or(0),
            product_id,
            quantity,
        })
        .collect();
    let total_cents = events::total_cents(&items).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "amount_too_large",
            format!("the order's total would exceed {} cents; order fewer units", events::MAX_TOTAL_CENTS),
        )
    })?;
    let event = Event::OrderPlaced {
        user_id: req.user_id.clone(),
        items,
        total_cents,
        currency: CURRENCY.into(),
        trace_id: trace.trace_id.clone(),
    };
    let order_id = ids::new("ord");
    tracing::Span::current().record("order_id", order_id.as_str());
    // A user validated moments ago is validated again from memory, and the first step's intent
    // goes into the same commit as the order itself.
    let more = match o.saga.cached_user(&req.user_id) {
        Some(user) if user.active => {
            let validated = Event::UserValidated { card_token: Some(user.card_token), card_last4: user.card_last4 };
            vec![validated, Event::StockReservationRequested {}]
        }
        _ => Vec::new(),
    };
    let placed = o.saga.store.place(
        order_id.clone(),
        req.idempotency_key,
        req.request_hash,
        &trace,
        event.clone(),
        more.clone(),
    );
    match placed.await? {
        Placed::New(state) => {
            for e in std::iter::once(&event).chain(more.iter()) {
                o.saga.crash_point(&order_id, e);
            }
            tracing::debug!(%order_id, user_id = %req.user_id, total_cents, trace_id = %trace.trace_id, "order placed");
            o.saga.start(&order_id, Some(*state), Some(trace.clone()));
            let order = o.settled_view(&order_id, budget).await?;
            Ok((StatusCode::CREATED, Json(Placement { created: true, order })))
        }
        Placed::Existing { order_id, same_request: true } => {
            let order = o.settled_view(&order_id, budget).await?;
            Ok((StatusCode::OK, Json(Placement { created: false, order })))
        }
        Placed::Existing { order_id, same_request: false } => Err(ApiError::unprocessable(
            "idempotency_key_reused",
            format!(
                "this Idempotency-Key was already used for order `{order_id}` with a different body; use a new key"
            ),
        )),
    }
}

#[derive(Deserialize)]
struct GetQuery {
    /// Include the raw event log.
    #[serde(default)]
    events: bool,
}

#[derive(Serialize)]
struct OrderWithEvents {
    #[serde(flatten)]
    order: OrderView,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<EventView>>,
}

async fn get_order(
    State(o): State<Orders>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (order, events) =
        o.saga.store.view(&id).await?.ok_or_else(|| ApiError::not_found(format!("no order `{id}`")))?;
    let body = OrderWithEvents { order, events: q.events.then(|| event_views(&events)) };
    serde_json::to_value(body).map(Json).map_err(ApiError::internal)
}

#[derive(Deserialize)]
struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

async fn list(State(o): State<Orders>, ApiQuery(q): ApiQuery<ListQuery>) -> Result<Json<Vec<OrderView>>, ApiError> {
    let status = Status::parse_filter(q.status.as_deref()).map_err(ApiError::bad_request)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(o.saga.store.list(q.user_id, status, limit).await?))
}
