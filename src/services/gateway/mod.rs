//! The API gateway: the only public API. It authenticates bearer tokens (by hash, through the
//! user service), rate-limits per token, validates requests, starts a trace per request, and
//! forwards to the order and inventory services.

mod openapi;

pub use self::openapi::document as openapi_document;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::order::events::Status;
use super::order::store::OrderView;
use super::order::{PlaceRequest, RequestedItem};
use super::user::User;
use super::{Runtime, Service};
use crate::fixtures::token_hash;
use crate::plumbing::client::{encode_component, CallError, ServiceClient};
use crate::plumbing::db::Db;
use crate::plumbing::error::{ApiError, ApiPath, ApiQuery, JsonBody};
use crate::plumbing::time::now_ms;
use crate::plumbing::trace::TraceCtx;

pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE accepted_orders (
        order_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        returned_at INTEGER NOT NULL
    );",
    // Version 2 (SPEC section 18): keyed by the order id itself (WITHOUT ROWID), so the id is
    // stored once instead of in the table and again in its index.
    "CREATE TABLE accepted_orders_v2 (
        order_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        returned_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO accepted_orders_v2 SELECT order_id, user_id, returned_at FROM accepted_orders;
    DROP TABLE accepted_orders;
    ALTER TABLE accepted_orders_v2 RENAME TO accepted_orders;",
];

/// Limits of SPEC section 5.
const MAX_ITEMS: usize = 100;
const MAX_ID_LEN: usize = 64;
const MAX_KEY_LEN: usize = 255;
/// How long `POST /orders` waits for a terminal state unless `Prefer: wait=N` says otherwise.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a resolved token is trusted before asking the user service again.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Gateway {
    client: ServiceClient,
    db: Db,
    tokens: Arc<Mutex<HashMap<String, (User, Instant)>>>,
    limiter: Arc<Mutex<HashMap<String, Bucket>>>,
    rate_per_second: f64,
    burst: f64,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub async fn build(rt: &Arc<Runtime>) -> anyhow::Result<Service> {
    let gw = Gateway {
        client: rt.client.clone(),
        db: rt.db.clone(),
        tokens: Arc::default(),
        limiter: Arc::default(),
        rate_per_second: rt.args.tuning.rate_per_second.max(1) as f64,
        burst: rt.args.tuning.rate_burst.max(1) as f64,
    };
    // The document names the address this gateway listens on, so a client generated from it (or
    // Schemathesis) calls this gateway and not the default port.
    let document = Arc::new(openapi::document(&public_url(rt.address)));
    let routes = Router::new()
        .route("/orders", get(list_orders).post(place_order))
        .route("/orders/{id}", get(get_order))
        .route("/products", get(products))
        .route("/openapi.json", get(move || async move { Json(document.as_ref().clone()) }))
        .with_state(gw);
    Ok(Service { ready: Some(super::ready_with_deps(rt, &["order", "user", "inventory"])), ..Service::new(routes) })
}

/// `http://ADDRESS` for the bound address; a wildcard bind is reached on loopback.
fn public_url(address: std::net::SocketAddr) -> String {
    let ip = if address.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { address.ip() };
    format!("http://{}", std::net::SocketAddr::new(ip, address.port()))
}

/// The order service's answer to a placement, with the order kept as raw JSON.
#[derive(Deserialize)]
struct RawPlacement {
    created: bool,
    order: Box<serde_json::value::RawValue>,
}

/// The fields of an order the gateway acts on.
#[derive(Deserialize)]
struct OrderHead {
    id: String,
    user_id: String,
    status: Status,
}

/// The public request body of `POST /orders`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    pub items: Vec<RequestedItem>,
}

impl Gateway {
    /// The caller, from `Authorization: Bearer TOKEN`; rate-limited per token.
    async fn caller(&self, headers: &HeaderMap, trace: &TraceCtx) -> Result<User, ApiError> {
        let token = bearer_token(headers)?;
        let hash = token_hash(token);
        self.rate_limit(&hash)?;
        let cached = {
            let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            tokens.get(&hash).filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL).map(|(u, _)| u.clone())
        };
        if let Some(user) = cached {
            return Ok(user);
        }
        let path = format!("/v1/tokens/{hash}");
        let user: User = match self.client.call_idempotent::<(), _>("user", Method::GET, &path, None, Some(trace)).await
        {
            Ok(u) => u,
            Err(e) if e.status() == Some(404) => {
                return Err(ApiError {
                    challenge: Some(r#"Bearer error="invalid_token""#),
                    ..ApiError::unauthorized("unknown token")
                })
            }
            Err(e) => return Err(unavailable("user", &e)),
        };
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(hash, (user.clone(), Instant::now()));
        Ok(user)
    }

    fn rate_limit(&self, key: &str) -> Result<(), ApiError> {
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let bucket = match limiter.get_mut(key) {
            Some(b) => b,
            None => limiter.entry(key.to_string()).or_insert(Bucket { tokens: self.burst, last: now }),
        };
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * self.rate_per_second).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / self.rate_per_second).ceil().max(1.0) as u64;
            Err(ApiError {
                retry_after: Some(wait),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests for this token; slow down",
                )
            })
        }
    }
}

/// The token of `Authorization: Bearer TOKEN`. The scheme is matched in any case (RFC 9110
/// section 11.1); a request with two `Authorization` headers is refused rather than served as
/// whichever came first.
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || ApiError {
        challenge: Some("Bearer"),
        ..ApiError::unauthorized("missing bearer token; send `Authorization: Bearer TOKEN`")
    };
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or_else(missing)?;
    if values.next().is_some() {
        return Err(ApiError::bad_request("more than one `Authorization` header; send one"));
    }
    let (scheme, token) = value.to_str().ok().and_then(|v| v.trim().split_once([' ', '\t'])).ok_or_else(missing)?;
    let token = token.trim_matches([' ', '\t']);
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// The 503 of an order the order service may or may not have placed: an attempt can have
/// reached it before its answer was lost (a reset, a timeout), so the client is told how to ask
/// again without placing a second order: by the same key, which the answer names in its
/// `Idempotency-Key` header when the gateway made it.
fn outcome_unknown(e: &CallError, key: &str, key_given: bool) -> Response {
    tracing::warn!(dependency = "order", error = %e, "order service unavailable; the order's outcome is unknown");
    let again = if key_given {
        "the same Idempotency-Key".to_string()
    } else {
        format!("`Idempotency-Key: {key}` (this answer's header)")
    };
    let message = format!(
        "the order service is unavailable and this order may or may not have been placed; try again shortly \
         with {again}, which gives the order if it was placed instead of placing another"
    );
    let mut response = ApiError::unavailable(message, 1).into_response();
    if let Ok(value) = key.parse() {
        response.headers_mut().insert("idempotency-key", value);
    }
    response
}

fn unavailable(service: &str, e: &CallError) -> ApiError {
    tracing::warn!(dependency = service, error = %e, "dependency unavailable");
    ApiError::unavailable(format!("the {service} service is unavailable; try again shortly"), 1)
}

/// An order request body as the gateway reads it: JSON into [`OrderBody`], then the limits of
/// SPEC section 5. Every refusal is a 400 with a message.
pub fn parse_order(bytes: &[u8]) -> Result<OrderBody, ApiError> {
    let body: OrderBody = crate::plumbing::error::parse_json(bytes)?;
    validate(&body)?;
    Ok(body)
}

fn validate(body: &OrderBody) -> Result<(), ApiError> {
    if body.items.is_empty() {
        return Err(ApiError::bad_request("`items` must not be empty"));
    }
    if body.items.len() > MAX_ITEMS {
        return Err(ApiError::bad_request(format!("at most {MAX_ITEMS} items per order, got {}", body.items.len())));
    }
    for item in &body.items {
        // Characters, not bytes: the OpenAPI document's `maxLength` counts characters (JSON
        // Schema), so 64 of `é` are as valid as 64 of `e`.
        if item.product_id.is_empty() || item.product_id.chars().count() > MAX_ID_LEN {
            return Err(ApiError::bad_request(format!("`product_id` must be 1 to {MAX_ID_LEN} characters")));
        }
    }
    crate::services::order::check_quantities(&body.items)
}

/// Visits every order id the gateway ever returned to a client (invariant 5 of SPEC section 7),
/// its bytes borrowed from SQLite's row buffer (not checked as UTF-8: the invariants compare
/// them as bytes), in order id order (the table's own key: no sort).
pub fn visit_accepted_order_ids(c: &rusqlite::Connection, mut visit: impl FnMut(&[u8])) -> rusqlite::Result<()> {
    let mut stmt = c.prepare("SELECT order_id FROM accepted_orders ORDER BY order_id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        visit(r.get_ref(0)?.as_bytes()?);
    }
    Ok(())
}

/// `Prefer: wait=SECONDS` (RFC 7240), bounded. Preference names are matched in any case, with
/// optional spaces around `=` and an optional quoted value; parameters after `;` are ignored.
/// A wait that is no number of seconds (`wait=abc`, `wait=-1`) is a preference the gateway
/// cannot comply with, which RFC 7240 section 2 says to ignore, not to refuse.
fn wait_budget(headers: &HeaderMap) -> Duration {
    for prefer in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
        for pref in prefer.split(',') {
            let pref = pref.split(';').next().unwrap_or_default();
            let Some((name, value)) = pref.split_once('=') else { continue };
            if !name.trim().eq_ignore_ascii_case("wait") {
                continue;
            }
            let value = value.trim();
            let v = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            match v.parse::<f64>() {
                // Bounded before the conversion: `wait=1e300` is finite but past what a Duration holds.
                Ok(secs) if secs >= 0.0 && secs.is_finite() => {
                    return Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64()))
                }
                _ => continue,
            }
        }
    }
    DEFAULT_WAIT
}

/// `Idempotency-Key`: 1 to 255 printable ASCII characters, as the OpenAPI document's pattern
/// says. An empty one is refused rather than treated as absent: the client meant to send a key.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::bad_request("more than one `Idempotency-Key` header; send one"));
    }
    let key = value.to_str().map_err(|_| ApiError::bad_request("`Idempotency-Key` must be printable ASCII"))?;
    // HTTP strips the spaces around a header value; inside, only printable ASCII and spaces.
    let key = key.trim_matches([' ', '\t']);
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::bad_request(format!("`Idempotency-Key` must be 1 to {MAX_KEY_LEN} characters")));
    }
    if !key.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(ApiError::bad_request("`Idempotency-Key` must be printable ASCII"));
    }
    Ok(Some(key.to_string()))
}

async fn place_order(
    State(gw): State<Gateway>,
    Extension(trace): Extension<TraceCtx>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The caller is known before the body is read: an anonymous client cannot make the gateway
    // wait for (and hold) a body it will refuse anyway.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let user = gw.caller(headers, &trace).await?;
    // A bad key is refused before anything is placed.
    let key = idempotency_key(headers)?;
    if !user.active {
        return Err(ApiError::forbidden(
            "user_inactive",
            format!("user `{}` is not active and cannot place orders", user.user_id),
        ));
    }
    let wait = wait_budget(headers);
    let request = axum::extract::Request::from_parts(parts, body);
    let JsonBody(body) = <JsonBody<OrderBody> as axum::extract::FromRequest<()>>::from_request(request, &()).await?;
    validate(&body)?;
    let canonical = serde_json::to_string(&body.items).map_err(ApiError::internal)?;
    let request_hash = token_hash(&canonical);
    // Without a client key, the gateway makes one, so its own retries to the order service can
    // never create a second order.
    let key_given = key.is_some();
    let key = key.unwrap_or_else(|| crate::plumbing::ids::new("gw"));
    let request = PlaceRequest {
        user_id: user.user_id,
        items: body.items,
        idempotency_key: key,
        request_hash,
        wait_ms: wait.as_millis() as u64,
    };
    let client = gw.client.with_timeout(wait + gw.client.timeout());
    // The retries share one budget, so the client hears within its wait and three call
    // timeouts (with the key to ask again if the answer was lost), not after four whole
    // attempts: a first attempt that timed out still leaves room for a second.
    let budget = wait + 3 * gw.client.timeout();
    let call =
        client.call_idempotent::<_, RawPlacement>("order", Method::POST, "/v1/orders", Some(&request), Some(&trace));
    let call = async {
        tokio::time::timeout(budget, call)
            .await
            .unwrap_or_else(|_| Err(CallError::Timeout { service: "order".into(), timeout: budget }))
    };
    let (placed, drained) = tokio::select! {
        placed = call => (placed, false),
        // Stopping: this gateway will not wait out the budget, but the client must still learn
        // its order's id, or it would retry and pay twice. The same key again, without waiting,
        // gives the order as it stands.
        () = crate::plumbing::http::draining() => {
            let now = PlaceRequest { wait_ms: 0, ..request.clone() };
            (client.call_idempotent("order", Method::POST, "/v1/orders", Some(&now), Some(&trace)).await, true)
        }
    };
    let placed = match placed {
        Ok(placed) => placed,
        Err(CallError::Status { status, code, message, .. }) if (400..500).contains(&status) => {
            return Err(ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), code, message));
        }
        Err(e) => return Ok(outcome_unknown(&e, &request.idempotency_key, key_given)),
    };
    // The order goes back to the client as the order service wrote it: only the few fields the
    // gateway needs are decoded, the rest is never parsed and encoded again.
    let order: OrderHead = serde_json::from_str(placed.order.get()).map_err(ApiError::internal)?;
    // From here on every log line of this request names the order.
    tracing::Span::current().record("order_id", order.id.as_str());
    let (id, uid) = (order.id.clone(), order.user_id.clone());
    gw.db
        .tx(move |c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO accepted_orders (order_id, user_id, returned_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(rusqlite::params![id, uid, now_ms()])
        })
        .await?;
    // A key the gateway made is this request's alone: an order found under it is this
    // request's, placed by an attempt whose answer was lost, not an earlier request's.
    let status = match (placed.created || drained || !key_given, order.status) {
        (false, _) => StatusCode::OK,
        (true, Status::Pending) => StatusCode::ACCEPTED,
        (true, _) => StatusCode::CREATED,
    };
    let mut response =
        (status, [(header::CONTENT_TYPE, "application/json")], placed.order.get().to_owned()).into_response();
    if status != StatusCode::CREATED {
        if let Ok(location) = format!("/orders/{}", order.id).parse() {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    if let Ok(tp) = trace.header_value().parse() {
        response.headers_mut().insert("traceparent", tp);
    }
    response.extensions_mut().insert(crate::plumbing::http::OrderId(order.id));
    Ok(response)
}

async fn get_order(
    State(gw): State<Gateway>,
    Extension(trace): Extension<TraceCtx>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrderView>, ApiError> {
    let user = gw.caller(&headers, &trace).await?;
    // Characters, as the document's `maxLength` counts them (see `validate`).
    if id.chars().count() > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!("an order id is at most {MAX_ID_LEN} characters")));
    }
    let not_found = || ApiError::not_found(format!("no order `{id}`"));
    let order: OrderView = match gw
        .client
        .call_idempotent::<(), _>(
            "order",
            Method::GET,
            &format!("/v1/orders/{}", encode_component(&id)),
            None,
            Some(&trace),
        )
        .await
    {
        Ok(o) => o,
        Err(e) if e.status() == Some(404) => return Err(not_found()),
        Err(e) => return Err(unavailable("order", &e)),
    };
    // Someone else's order is answered exactly like a missing one, so ids cannot be probed.
    if order.user_id != user.user_id {
        return Err(not_found());
    }
    Ok(Json(order))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
}

async fn list_orders(
    State(gw): State<Gateway>,
    Extension(trace): Extension<TraceCtx>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<OrderView>>, ApiError> {
    let user = gw.caller(&headers, &trace).await?;
    // `status=` and `limit=` with no value are mistakes, not "no filter": the document says a
    // value is an enum member or a number, and an empty string is neither.
    if q.status.as_deref() == Some("") {
        return Err(ApiError::bad_request("`status` must be PENDING, CONFIRMED or FAILED, not empty"));
    }
    let status = Status::parse_filter(q.status.as_deref()).map_err(ApiError::bad_request)?;
    let limit: u32 = match q.limit.as_deref() {
        None => 20,
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("`limit` must be 1 to 100, got `{l}`")))?,
    };
    let mut path = format!("/v1/orders?user_id={}&limit={limit}", encode_component(&user.user_id));
    if let Some(s) = status {
        path.push_str(&format!("&status={}", s.as_str()));
    }
    let orders: Vec<OrderView> = gw
        .client
        .call_idempotent::<(), _>("order", Method::GET, &path, None, Some(&trace))
        .await
        .map_err(|e| unavailable("order", &e))?;
    Ok(Json(orders))
}

async fn products(
    State(gw): State<Gateway>,
    Extension(trace): Extension<TraceCtx>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list: serde_json::Value = gw
        .client
        .call_idempotent::<(), _>("inventory", Method::GET, "/v1/products", None, Some(&trace))
        .await
        .map_err(|e| unavailable("inventory", &e))?;
    Ok(Json(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, q: i64) -> RequestedItem {
        RequestedItem { product_id: id.into(), quantity: q }
    }

    #[test]
    fn order_bodies_are_validated_as_the_spec_lists() {
        assert!(validate(&OrderBody { items: vec![] }).is_err());
        assert!(validate(&OrderBody { items: vec![item("a", 0)] }).is_err());
        assert!(validate(&OrderBody { items: vec![item("a", 1001)] }).is_err());
        assert!(validate(&OrderBody { items: vec![item(&"x".repeat(65), 1)] }).is_err());
        assert!(validate(&OrderBody { items: (0..101).map(|i| item(&format!("p{i}"), 1)).collect() }).is_err());
        // Lines for one product are merged by the order service, not refused.
        assert!(validate(&OrderBody { items: vec![item("a", 1), item("a", 2)] }).is_ok());
        assert!(validate(&OrderBody { items: vec![item("a", 1000), item(&"x".repeat(64), 1)] }).is_ok());
        // 64 characters of two bytes each are within the limit; 65 are not.
        assert!(validate(&OrderBody { items: vec![item(&"é".repeat(64), 1)] }).is_ok());
        assert!(validate(&OrderBody { items: vec![item(&"é".repeat(65), 1)] }).is_err());
    }

    #[test]
    fn prefer_wait_is_parsed_and_bounded() {
        let mut h = HeaderMap::new();
        assert_eq!(wait_budget(&h), DEFAULT_WAIT);
        h.insert("prefer", "respond-async, wait=0".parse().unwrap());
        assert_eq!(wait_budget(&h), Duration::ZERO);
        h.insert("prefer", "wait=9999".parse().unwrap());
        assert_eq!(wait_budget(&h), MAX_WAIT);
        h.insert("prefer", "wait=1e300".parse().unwrap());
        assert_eq!(wait_budget(&h), MAX_WAIT);
        // A wait it cannot comply with is ignored, not refused (RFC 7240 section 2).
        for prefer in ["wait=soon", "wait=-1", "wait=NaN"] {
            h.insert("prefer", prefer.parse().unwrap());
            assert_eq!(wait_budget(&h), DEFAULT_WAIT, "{prefer}");
        }
        h.insert("prefer", "wait=soon, wait=3".parse().unwrap());
        assert_eq!(wait_budget(&h), Duration::from_secs(3));
        // RFC 7240: any case, spaces around `=`, a quoted value, parameters after `;`.
        for prefer in ["WAIT=2", "Wait = 2", "wait=\"2\"", "respond-async, wait=2; foo=bar", "wait=2;x"] {
            h.insert("prefer", prefer.parse().unwrap());
            assert_eq!(wait_budget(&h), Duration::from_secs(2), "{prefer}");
        }
        h.insert("prefer", "handling=lenient".parse().unwrap());
        assert_eq!(wait_budget(&h), DEFAULT_WAIT);
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case_and_only_once() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h).unwrap_err().challenge, Some("Bearer"));
        for value in ["Bearer tok", "bearer tok", "BEARER  tok ", "Bearer\ttok"] {
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer_token(&h).unwrap(), "tok", "{value}");
        }
        for value in ["Basic dG9r", "Bearer", "Bearer  ", "Bearertok"] {
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer_token(&h).unwrap_err().status, StatusCode::UNAUTHORIZED, "{value}");
        }
        h.insert(header::AUTHORIZATION, "Bearer a".parse().unwrap());
        h.append(header::AUTHORIZATION, "Bearer b".parse().unwrap());
        assert_eq!(bearer_token(&h).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
