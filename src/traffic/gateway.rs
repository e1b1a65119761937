//! The one client of the gateway's order API (SPEC section 5) that `shop order`, `shop load`,
//! `shop smoke` and drills share: place an order, get one, list them, with the bearer token,
//! the `Prefer: wait` header and an idempotency key, and what an answer means.
//!
//! Headers are built once ([`Token`], [`Wait`], [`OrderBody`]) so that the load generator's
//! hot path only formats its idempotency key; an answer is kept as status, headers and raw
//! body ([`Reply`]) so each caller decodes only what it needs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// The longest `Prefer: wait` worth sending: the gateway caps its own budget there too, and it
/// keeps `wait + slack` timeouts far from overflowing.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Why a header could not be built from what the user gave.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("the token of `{user}` is not a valid header value; fix the user fixtures")]
    Token { user: String },
}

/// A user's `Authorization: Bearer …` header, marked sensitive so no debug output shows it.
#[derive(Clone, Debug)]
pub struct Token(HeaderValue);

impl Token {
    /// The bearer header for `token`; `user` names it in the error.
    pub fn bearer(user: &str, token: &str) -> Result<Token, HeaderError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| HeaderError::Token { user: user.to_string() })?;
        value.set_sensitive(true);
        Ok(Token(value))
    }
}

/// `Prefer: wait=SECONDS`: how long the gateway may hold an order before answering 202.
#[derive(Clone, Debug)]
pub struct Wait {
    header: HeaderValue,
    duration: Duration,
}

impl Wait {
    pub fn new(wait: Duration) -> Wait {
        let duration = wait.min(MAX_WAIT);
        // Always a valid header value: ASCII text and a decimal number.
        let header = HeaderValue::from_str(&format!("wait={}", duration.as_secs_f64()))
            .unwrap_or_else(|_| HeaderValue::from_static("wait=10"));
        Wait { header, duration }
    }

    /// The wait, capped at an hour.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

/// The JSON body of `POST /orders`, serialized once.
#[derive(Clone, Debug)]
pub struct OrderBody(String);

impl OrderBody {
    /// Lines of (product id, quantity).
    pub fn new(items: &[(String, i64)]) -> OrderBody {
        let items: Vec<Value> =
            items.iter().map(|(sku, qty)| serde_json::json!({"product_id": sku, "quantity": qty})).collect();
        OrderBody(serde_json::json!({ "items": items }).to_string())
    }
}

/// `sku-1:2` → (`sku-1`, 2); a bare `sku-1` is quantity 1. An order line as flags and drill
/// files write it.
pub fn parse_item(s: &str) -> Result<(String, i64), String> {
    let (sku, qty) = match s.rsplit_once(':') {
        Some((sku, q)) => {
            (sku, q.parse::<i64>().map_err(|_| format!("`{s}`: the quantity after `:` must be a whole number"))?)
        }
        None => (s, 1),
    };
    if sku.is_empty() {
        return Err(format!("`{s}`: give a product id, e.g. sku-1:2"));
    }
    Ok((sku.to_string(), qty))
}

/// One `POST /orders`.
pub struct Place<'a> {
    pub token: &'a Token,
    pub body: &'a OrderBody,
    pub wait: &'a Wait,
    /// The same key and items give the same order.
    pub idempotency_key: Option<&'a str>,
    /// The whole request, answer included; past it the request fails as a timeout.
    pub timeout: Duration,
}

/// A gateway answer: status, headers and the body as sent.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON; `null` when it is empty or not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A refusal in one line: `503 unavailable: the order service is unavailable; …`.
    pub fn refusal(&self) -> String {
        let body = self.json();
        match body["error"]["code"].as_str() {
            Some(code) => {
                format!("{} {code}: {}", self.status.as_u16(), body["error"]["message"].as_str().unwrap_or(""))
            }
            None => self.status.to_string(),
        }
    }

    /// The `Location` header (a 202's way to follow the order).
    pub fn location(&self) -> Option<String> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    /// What a `POST /orders` answer means for the order.
    pub fn outcome(&self) -> Outcome {
        classify(self.status, &self.body)
    }
}

/// What one order came to, as the answer to placing it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    /// A business failure, by its code (`card_declined`, `user_inactive`, …).
    Failed(String),
    /// Accepted; the saga carries on.
    Pending,
    /// No usable answer: `http_503`, `invalid_response`, `transport`.
    Error(String),
}

/// The parts of the gateway's order JSON that decide the outcome.
#[derive(Deserialize)]
struct OrderReply {
    status: OrderStatus,
    failure: Option<FailureReply>,
}

#[derive(Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum OrderStatus {
    Pending,
    Confirmed,
    Failed,
}

#[derive(Deserialize)]
struct FailureReply {
    code: String,
}

fn classify(status: StatusCode, body: &[u8]) -> Outcome {
    match status {
        StatusCode::ACCEPTED => Outcome::Pending,
        StatusCode::OK | StatusCode::CREATED => match serde_json::from_slice::<OrderReply>(body) {
            Ok(OrderReply { status: OrderStatus::Confirmed, .. }) => Outcome::Confirmed,
            Ok(OrderReply { status: OrderStatus::Pending, .. }) => Outcome::Pending,
            Ok(OrderReply { status: OrderStatus::Failed, failure }) => {
                Outcome::Failed(failure.map_or_else(|| "unknown".to_string(), |f| f.code))
            }
            Err(_) => Outcome::Error("invalid_response".to_string()),
        },
        // An inactive user is refused at the door, but that is a business outcome (SPEC exit
        // code 3), not a transport or server error.
        StatusCode::FORBIDDEN if error_code(body).as_deref() == Some("user_inactive") => {
            Outcome::Failed("user_inactive".to_string())
        }
        other => Outcome::Error(format!("http_{}", other.as_u16())),
    }
}

fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["error"]["code"].as_str().map(str::to_string)
}

/// A client of one gateway; cheap to clone (the connection pool is shared).
#[derive(Clone, Debug)]
pub struct Gateway {
    http: reqwest::Client,
    /// `http://host:port`, no trailing slash.
    base: String,
    /// `{base}/orders`, built once for the load generator's hot path.
    orders: String,
}

impl Gateway {
    pub fn new(base: &str) -> Gateway {
        Gateway::with_client(crate::plumbing::client::http_client(), base)
    }

    fn with_client(http: reqwest::Client, base: &str) -> Gateway {
        let base = base.trim_end_matches('/').to_string();
        Gateway { http, orders: format!("{base}/orders"), base }
    }

    /// `http://host:port` of the gateway.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /orders`; `Err` when no complete answer came (refused, timed out, cut off).
    pub async fn place(&self, order: &Place<'_>) -> Result<Reply, reqwest::Error> {
        let mut request = self
            .http
            .post(&self.orders)
            .timeout(order.timeout)
            .header(AUTHORIZATION, order.token.0.clone())
            .header("prefer", order.wait.header.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(order.body.0.clone());
        if let Some(key) = order.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        reply(request).await
    }

    /// `GET /orders/{id}` as the user of `token`.
    pub async fn order(&self, token: &Token, id: &str, timeout: Duration) -> Result<Reply, reqwest::Error> {
        self.get(&format!("/orders/{id}"), Some(token), timeout).await
    }

    /// `GET /orders?limit=…[&status=…]`: the user's orders, newest first.
    pub async fn orders(
        &self,
        token: &Token,
        limit: u32,
        status: Option<&str>,
        timeout: Duration,
    ) -> Result<Reply, reqwest::Error> {
        let mut path = format!("/orders?limit={limit}");
        if let Some(s) = status {
            path.push_str(&format!("&status={s}"));
        }
        self.get(&path, Some(token), timeout).await
    }

    /// `GET {path}` (`/products`, or a `Location` an answer gave), as `token`'s user if given.
    pub async fn get(&self, path: &str, token: Option<&Token>, timeout: Duration) -> Result<Reply, reqwest::Error> {
        let mut request = self.http.get(format!("{}{path}", self.base)).timeout(timeout);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, token.0.clone());
        }
        reply(request).await
    }
}

/// How long a gateway that refused a connection is passed over: about the supervisor's restart
/// of it, and longer than a burst of orders all failing over one by one.
const PASSED_OVER_FOR: Duration = Duration::from_secs(1);

/// The gateways a load balances over, as a load balancer in front of them would: each order
/// goes to the next one in turn, and an order whose connection a gateway refuses (the request
/// was never sent, so nothing is placed twice) goes to the next one instead, which is then
/// passed over for a moment. SPEC section 4: clients balance over healthy instances. Anything
/// after the connection (a reset, a timeout, a 503) is the answer: a load balancer cannot
/// know whether an order was placed either. Cheap to clone; [`Gateways::set`] swaps the
/// members while a load runs.
#[derive(Clone, Debug)]
pub struct Gateways {
    inner: Arc<Members>,
}

#[derive(Debug)]
struct Members {
    http: reqwest::Client,
    list: std::sync::RwLock<Arc<Vec<Member>>>,
    next: AtomicUsize,
    epoch: Instant,
}

#[derive(Debug)]
struct Member {
    gateway: Gateway,
    /// Passed over until this many milliseconds after `epoch`.
    passed_over_until_ms: AtomicU64,
}

impl Gateways {
    /// Starts with the gateway at `base` (`http://host:port`); [`Gateways::set`] adds the others.
    pub fn new(base: &str) -> Gateways {
        let http = crate::plumbing::client::http_client();
        let members = vec![Member::new(Gateway::with_client(http.clone(), base))];
        Gateways {
            inner: Arc::new(Members {
                http,
                list: std::sync::RwLock::new(Arc::new(members)),
                next: AtomicUsize::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// The gateways now: those still in `bases` keep their state, the new ones join. An empty
    /// list changes nothing (a moment with no healthy gateway is no reason to forget them).
    pub fn set(&self, bases: &[String]) {
        if bases.is_empty() {
            return;
        }
        let old = self.members();
        let mut members = Vec::with_capacity(bases.len());
        for base in bases {
            let base = base.trim_end_matches('/');
            match old.iter().find(|m| m.gateway.base == base) {
                Some(m) => members.push(Member {
                    gateway: m.gateway.clone(),
                    passed_over_until_ms: AtomicU64::new(m.passed_over_until_ms.load(Ordering::Relaxed)),
                }),
                None => members.push(Member::new(Gateway::with_client(self.inner.http.clone(), base))),
            }
        }
        *self.inner.list.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(members);
    }

    /// Keeps the members as `list` finds them, asking it every `every` for as long as any
    /// clone of these gateways is in use (a load's replicas restarted on new ports).
    pub fn follow<F, Fut>(&self, every: Duration, list: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Vec<String>> + Send,
    {
        let members = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let bases = list().await;
                let Some(inner) = members.upgrade() else { break };
                Gateways { inner }.set(&bases);
            }
        });
    }

    /// The gateways' addresses, for messages: `http://a` or `http://a, http://b`.
    pub fn describe(&self) -> String {
        self.members().iter().map(|m| m.gateway.base()).collect::<Vec<_>>().join(", ")
    }

    fn members(&self) -> Arc<Vec<Member>> {
        self.inner.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    /// `POST /orders` to the next gateway in turn, past those that refuse the connection; the
    /// last refusal when every one refuses.
    pub async fn place(&self, order: &Place<'_>) -> Result<Reply, reqwest::Error> {
        let members = self.members();
        let first = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        // Each gateway once: those not passed over first, in turn from this order's; then the
        // others, so that a gateway back from a restart is found while every one is passed over.
        let mut tries: Vec<&Member> = (0..members.len()).map(|i| &members[(first + i) % members.len()]).collect();
        tries.sort_by_cached_key(|m| m.passed_over_until_ms.load(Ordering::Relaxed) > now);
        let mut refused = None;
        for member in tries {
            match member.gateway.place(order).await {
                Err(e) if e.is_connect() => {
                    let until = self.now_ms() + PASSED_OVER_FOR.as_millis() as u64;
                    member.passed_over_until_ms.store(until, Ordering::Relaxed);
                    refused = Some(e);
                }
                answer => {
                    member.passed_over_until_ms.store(0, Ordering::Relaxed);
                    return answer;
                }
            }
        }
        // `new` gives one member and `set` never empties the list, so one was tried.
        Err(refused.unwrap_or_else(|| unreachable!("a load balances over at least one gateway")))
    }
}

impl Member {
    fn new(gateway: Gateway) -> Member {
        Member { gateway, passed_over_until_ms: AtomicU64::new(0) }
    }
}

async fn reply(request: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let mut response = request.send().await?;
    let status = response.status();
    // Taken, not copied: the hot path allocates nothing for headers it does not read.
    let headers = std::mem::take(response.headers_mut());
    // Usually no copy: the buffer is handed over when nothing else holds it.
    let body: Vec<u8> = response.bytes().await?.into();
    Ok(Reply { status, headers, body })
}

pub use crate::plumbing::client::root_cause;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_parse_with_and_without_a_quantity() {
        assert_eq!(parse_item("sku-1:3").unwrap(), ("sku-1".to_string(), 3));
        assert_eq!(parse_item("sku-1").unwrap(), ("sku-1".to_string(), 1));
        assert!(parse_item("sku-1:x").is_err());
        assert!(parse_item(":2").is_err());
    }

    #[test]
    fn answers_are_classified_by_status_and_body() {
        let body = |s: &str| s.as_bytes().to_vec();
        assert_eq!(
            classify(StatusCode::CREATED, &body(r#"{"status":"CONFIRMED","failure":null}"#)),
            Outcome::Confirmed
        );
        assert_eq!(classify(StatusCode::OK, &body(r#"{"status":"PENDING"}"#)), Outcome::Pending);
        assert_eq!(classify(StatusCode::ACCEPTED, b""), Outcome::Pending);
        assert_eq!(
            classify(
                StatusCode::CREATED,
                &body(r#"{"status":"FAILED","failure":{"step":"payment","code":"card_declined"}}"#)
            ),
            Outcome::Failed("card_declined".into())
        );
        assert_eq!(
            classify(StatusCode::FORBIDDEN, &body(r#"{"error":{"code":"user_inactive"}}"#)),
            Outcome::Failed("user_inactive".into())
        );
        assert_eq!(classify(StatusCode::SERVICE_UNAVAILABLE, b"{}"), Outcome::Error("http_503".into()));
        assert_eq!(classify(StatusCode::CREATED, b"not json"), Outcome::Error("invalid_response".into()));
    }

    #[test]
    fn headers_are_built_once_and_tokens_stay_out_of_debug_output() {
        let token = Token::bearer("alice", "secret").unwrap();
        assert!(!format!("{token:?}").contains("secret"));
        assert!(Token::bearer("bob", "bad\ntoken").is_err());
        assert_eq!(Wait::new(Duration::from_millis(1500)).header, "wait=1.5");
        assert_eq!(Wait::new(Duration::from_secs(10_000)).duration(), MAX_WAIT);
        let body = OrderBody::new(&[("sku-1".into(), 2)]);
        assert_eq!(body.0, r#"{"items":[{"product_id":"sku-1","quantity":2}]}"#);
    }
}
