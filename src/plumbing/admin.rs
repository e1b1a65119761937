//! The admin API every service answers under `/admin/*` (spans, faults, breakers), from both
//! sides: the secret check the routes apply, and a typed client for the cli and the supervisor.
//!
//! The routes themselves live in [`crate::plumbing::http`]; their bodies are the types of
//! [`spans`](crate::plumbing::spans), [`faults`](crate::plumbing::faults) and
//! [`breaker`](crate::plumbing::breaker), so the client decodes exactly what the server encodes.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::plumbing::breaker::BreakerReport;
use crate::plumbing::faults::{FaultClass, FaultSet};
use crate::plumbing::spans::Span;

/// The header that carries the stack secret on admin and control calls.
pub const SECRET_HEADER: &str = "x-shop-secret";

/// How long an admin call may take: they answer from memory, so a slow one is a stuck process.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `headers` carry the stack secret. Without a secret (or with an empty one) nothing
/// matches: an admin endpoint is never open by accident.
pub fn secret_matches(secret: Option<&str>, headers: &axum::http::HeaderMap) -> bool {
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes());
    matches!((secret, given), (Some(want), Some(got)) if !want.is_empty() && same_bytes(want.as_bytes(), got))
}

/// Compares in time that depends only on the lengths, so answers' timing tells a caller
/// nothing about how much of a guessed secret was right.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No answer: the instance is down, paused, or too slow.
    #[error("cannot reach `{address}`: {message}")]
    Unreachable { address: String, message: String },
    /// An answer that is not a success (a wrong secret, a refused fault).
    #[error("`{address}` answered {status}: {message}")]
    Refused { address: String, status: u16, message: String },
    /// A success whose body is not what the admin API sends.
    #[error("`{address}` sent an answer that cannot be read: {message}")]
    Decode { address: String, message: String },
}

impl AdminError {
    /// No answer at all: the instance may get the call again once it is back.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, AdminError::Unreachable { .. })
    }
}

/// Calls the admin endpoints of any instance, given its address (`host:port`).
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    secret: String,
    timeout: Duration,
}

impl AdminClient {
    /// A client with its own connection pool; `secret` is the stack secret.
    pub fn new(secret: impl Into<String>) -> AdminClient {
        AdminClient::with_http(crate::plumbing::client::http_client(), secret)
    }

    /// A client sharing `http`'s connection pool.
    pub fn with_http(http: reqwest::Client, secret: impl Into<String>) -> AdminClient {
        AdminClient { http, secret: secret.into(), timeout: ADMIN_TIMEOUT }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> AdminClient {
        self.timeout = timeout;
        self
    }

    /// `GET /admin/spans?trace_id=…`: the spans of one trace this instance holds.
    pub async fn spans(&self, address: &str, trace_id: &str) -> Result<Vec<Span>, AdminError> {
        let req = self.http.get(url(address, "/admin/spans")).query(&[("trace_id", trace_id)]);
        self.send(address, req).await
    }

    /// `GET /admin/spans?limit=…`: the newest spans of this instance.
    pub async fn recent_spans(&self, address: &str, limit: usize) -> Result<Vec<Span>, AdminError> {
        let req = self.http.get(url(address, "/admin/spans")).query(&[("limit", limit)]);
        self.send(address, req).await
    }

    /// `GET /admin/faults`: the request faults active now.
    pub async fn faults(&self, address: &str) -> Result<FaultSet, AdminError> {
        self.send(address, self.http.get(url(address, "/admin/faults"))).await
    }

    /// `PUT /admin/faults`: adds `update` (a latency or errors fault replaces the one before,
    /// partitions add up); answers the faults active afterwards.
    pub async fn set_faults(&self, address: &str, update: &FaultSet) -> Result<FaultSet, AdminError> {
        self.send(address, self.http.put(url(address, "/admin/faults")).json(update)).await
    }

    /// `DELETE /admin/faults`: ends the faults of `class`, or all of them.
    pub async fn clear_faults(&self, address: &str, class: Option<FaultClass>) -> Result<FaultSet, AdminError> {
        let mut req = self.http.delete(url(address, "/admin/faults"));
        if let Some(class) = class {
            req = req.query(&[("kind", class.as_str())]);
        }
        self.send(address, req).await
    }

    /// `GET /admin/breakers`: the instance's breakers and their recent transitions.
    pub async fn breakers(&self, address: &str) -> Result<BreakerReport, AdminError> {
        self.send(address, self.http.get(url(address, "/admin/breakers"))).await
    }

    async fn send<T: DeserializeOwned>(&self, address: &str, req: reqwest::RequestBuilder) -> Result<T, AdminError> {
        let resp = req.header(SECRET_HEADER, &self.secret).timeout(self.timeout).send().await.map_err(|e| {
            AdminError::Unreachable { address: address.to_string(), message: crate::plumbing::client::root_cause(&e) }
        })?;
        let status = resp.status();
        if !status.is_success() {
            let message = resp.text().await.unwrap_or_default();
            return Err(AdminError::Refused { address: address.to_string(), status: status.as_u16(), message });
        }
        resp.json().await.map_err(|e| AdminError::Decode { address: address.to_string(), message: e.to_string() })
    }
}

fn url(address: &str, path: &str) -> String {
    format!("http://{address}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_non_empty_secret_matches() {
        let mut headers = axum::http::HeaderMap::new();
        assert!(!secret_matches(Some("s3cret"), &headers));
        headers.insert(SECRET_HEADER, "s3cret".parse().unwrap());
        assert!(secret_matches(Some("s3cret"), &headers));
        assert!(!secret_matches(Some("other"), &headers));
        assert!(!secret_matches(None, &headers));
        headers.insert(SECRET_HEADER, "".parse().unwrap());
        assert!(!secret_matches(Some(""), &headers));
    }
}
