//! The one client of the gateway's order API (SPEC section 5) that `shop order`, `shop load`,
//! `shop smoke` and drills share: place an order, get one, list them, with the bearer token,
//! the `Prefer: wait` header and an idempotency key, and what an answer means.
//!
//! Headers are built once ([`Token`], [`Wait`], [`OrderBody`]) so that the load generator's
//! hot path only formats its idempotency key; an answer is kept as status, headers and raw
//! body ([`Reply`]) so each caller decodes only what it needs.

use std::time::Duration;

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
        let base = base.trim_end_matches('/').to_string();
        Gateway { http: crate::plumbing::client::http_client(), orders: format!("{base}/orders"), base }
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
