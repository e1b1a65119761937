//! The one client for service-to-service calls: discovery, per-call timeout, trace propagation,
//! and errors that say whether the request could have been applied.
//!
//! Calls go through hyper's pooled client directly rather than reqwest: every address comes from
//! discovery and every path from this crate, so reqwest's URL parsing, redirect policy and retry
//! layers were work done twice per hop (about a tenth of the order service's CPU under load).
//! The CLI and the supervisor keep reqwest ([`http_client`]), where convenience matters more.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::plumbing::breaker::Breakers;
use crate::plumbing::discovery::Discovery;
use crate::plumbing::faults::Faults;
use crate::plumbing::spans::SpanStore;
use crate::plumbing::trace::TraceCtx;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no instance of `{0}` is registered")]
    NoInstance(String),
    #[error("cannot connect to `{service}` at {address}: {message}")]
    Refused { service: String, address: String, message: String },
    #[error("`{service}` did not answer within {timeout:?}")]
    Timeout { service: String, timeout: Duration },
    #[error("call to `{service}` failed: {message}")]
    Transport { service: String, message: String },
    #[error("`{service}` answered {status} {code}: {message}")]
    Status { service: String, status: u16, code: String, message: String },
    #[error("`{service}` sent an unreadable answer: {message}")]
    Decode { service: String, message: String },
    #[error("the circuit breaker toward `{0}` is open; not calling it for now")]
    BreakerOpen(String),
}

impl CallError {
    /// Worth retrying: the dependency may answer next time. A 4xx never is.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Status { status, .. } => *status >= 500 || *status == 429,
            CallError::Decode { .. } => false,
            _ => true,
        }
    }

    /// The request may have been applied although we got no answer (a timeout, a reset).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, CallError::Timeout { .. } | CallError::Transport { .. })
            || matches!(self, CallError::Status { status, .. } if *status >= 500)
    }

    /// The error code a dependency gave with a 4xx, e.g. `out_of_stock`.
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    /// What the dependency said (for a 4xx/5xx), else the whole error.
    pub fn message(&self) -> String {
        match self {
            CallError::Status { message, .. } if !message.is_empty() => message.clone(),
            other => other.to_string(),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The pooled connections of one process to its dependencies.
type Pool = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP client bound to the registry view; clone it freely.
#[derive(Clone)]
pub struct ServiceClient {
    http: Pool,
    discovery: Arc<Discovery>,
    timeout: Duration,
    retries: u32,
    /// Where calls made within a trace are recorded as client spans.
    spans: Option<Arc<SpanStore>>,
    /// One breaker per instance of each dependency (named as the registry names it, so the
    /// service's own name when it runs one).
    breakers: Option<Arc<Breakers>>,
    /// Partitions injected by `shop chaos`.
    faults: Option<Arc<Faults>>,
    /// When a refused call last forced a refresh of the registry view.
    last_refresh: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// The stack secret, sent with every call: some routes (the card vault) take none without.
    secret: Option<HeaderValue>,
}

/// A pooled client for loopback calls; one per process.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1))
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The connection pool for service-to-service calls: loopback only, so no proxy and no TLS.
fn pool() -> Pool {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

impl ServiceClient {
    pub fn new(discovery: Arc<Discovery>, timeout: Duration, retries: u32) -> ServiceClient {
        ServiceClient {
            http: pool(),
            discovery,
            timeout,
            retries,
            spans: None,
            breakers: None,
            faults: None,
            last_refresh: Arc::default(),
            secret: None,
        }
    }

    /// The same client, sending the stack secret with every call.
    pub fn with_secret(self, secret: Option<&str>) -> ServiceClient {
        ServiceClient { secret: secret.and_then(|s| HeaderValue::from_str(s).ok()), ..self }
    }

    /// The same client behind per-instance circuit breakers and injected partitions.
    pub fn with_resilience(self, breakers: Arc<Breakers>, faults: Arc<Faults>) -> ServiceClient {
        ServiceClient { breakers: Some(breakers), faults: Some(faults), ..self }
    }

    /// The same client, recording a span for every call made within a trace.
    pub fn with_spans(self, spans: Arc<SpanStore>) -> ServiceClient {
        ServiceClient { spans: Some(spans), ..self }
    }

    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same client with another per-call timeout (a call that waits on purpose).
    pub fn with_timeout(&self, timeout: Duration) -> ServiceClient {
        ServiceClient { timeout, ..self.clone() }
    }

    /// One call to some instance of `service`. A refused connection moves on to another
    /// instance at once (nothing was delivered, so that is always safe); anything else is
    /// returned to the caller, who knows whether the request is safe to repeat.
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        service: &str,
        method: Method,
        path: &str,
        body: Option<&B>,
        trace: Option<&TraceCtx>,
    ) -> Result<T, CallError> {
        let start_us = crate::plumbing::time::now_us();
        if self.faults.as_ref().is_some_and(|f| f.partitioned_from(service)) {
            // Every instance is cut off: each call is a failure toward each of them, until
            // their breakers are open.
            let mut error = CallError::Refused {
                service: service.to_string(),
                address: "-".into(),
                message: "network partition injected by shop chaos".into(),
            };
            if let Some(b) = &self.breakers {
                let list = self.discovery.instances(service).await;
                let allowed: Vec<&str> =
                    list.iter().map(|i| i.instance.as_str()).filter(|name| b.allow(name)).collect();
                if allowed.is_empty() && !list.is_empty() {
                    error = CallError::BreakerOpen(service.to_string());
                }
                for name in allowed {
                    b.record(name, false);
                }
            }
            self.record_unsent(service, &method, path, trace, start_us, &error);
            return Err(error);
        }
        let mut last = CallError::NoInstance(service.to_string());
        // Instances that refused this call. Each counts against its breaker once the call is
        // over, unless the same instance answered at its new address after a refresh: a
        // restart moves an instance, and its old address refusing is no failure of it.
        let mut refused: Vec<String> = Vec::new();
        let settle = |refused: &[String], answered: Option<&str>| {
            if let Some(b) = &self.breakers {
                for name in refused.iter().filter(|n| Some(n.as_str()) != answered) {
                    b.record(name, false);
                }
            }
        };
        // Every known instance refused: the view may be stale (a restart moved the service to a
        // new port), so it is refreshed once, at most every 200 ms, before giving up.
        for round in 0..2 {
            if round == 1 && !(matches!(last, CallError::Refused { .. }) && self.refresh_due()) {
                break;
            }
            if round == 1 {
                self.discovery.refresh().await;
            }
            for (address, instance) in self.discovery.pick(service).await {
                // One breaker per instance: a replica that fails is passed over while the others
                // serve, and the call fails fast only when every one is open.
                if self.breakers.as_ref().is_some_and(|b| !b.allow(&instance)) {
                    if !matches!(last, CallError::Refused { .. }) {
                        last = CallError::BreakerOpen(service.to_string());
                    }
                    continue;
                }
                match self.send(service, &address, method.clone(), path, body, trace).await {
                    Err(e @ CallError::Refused { .. }) => {
                        self.discovery.mark_failed(&address);
                        if !refused.contains(&instance) {
                            refused.push(instance);
                        }
                        last = e;
                    }
                    other => {
                        if let Some(b) = &self.breakers {
                            // A 4xx is the dependency working as it should; only transient
                            // failures count.
                            b.record(&instance, !matches!(&other, Err(e) if e.is_transient()));
                        }
                        settle(&refused, Some(&instance));
                        return other;
                    }
                }
            }
        }
        settle(&refused, None);
        // A refusal was a call sent, and has its span; no instance, or every breaker open, was none.
        if !matches!(last, CallError::Refused { .. }) {
            self.record_unsent(service, &method, path, trace, start_us, &last);
        }
        Err(last)
    }

    /// A call that never left (no instance known, every breaker open, a partition) still gets
    /// its client span, so the caller's trace shows where the time went and why.
    fn record_unsent(
        &self,
        service: &str,
        method: &Method,
        path: &str,
        trace: Option<&TraceCtx>,
        start_us: i64,
        error: &CallError,
    ) {
        if let (Some(parent), Some(store)) = (trace, &self.spans) {
            let name = format!("→ {service} {method} {}", span_path(path));
            store.record(&parent.child(), Some(&parent.span_id), name, start_us, format!("error: {error}"));
        }
    }

    fn refresh_due(&self) -> bool {
        let mut last = self.last_refresh.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() > Duration::from_millis(200));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    /// [`call`](Self::call) retried on transient failures with exponential backoff and jitter,
    /// for requests that are idempotent (reads, or writes carrying an idempotency key).
    pub async fn call_idempotent<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        service: &str,
        method: Method,
        path: &str,
        body: Option<&B>,
        trace: Option<&TraceCtx>,
    ) -> Result<T, CallError> {
        let mut attempt = 0;
        loop {
            match self.call(service, method.clone(), path, body, trace).await {
                Err(e) if e.is_transient() && attempt < self.retries => {
                    tokio::time::sleep(backoff(attempt, Duration::from_millis(50), Duration::from_secs(1))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        service: &str,
        address: &str,
        method: Method,
        path: &str,
        body: Option<&B>,
        trace: Option<&TraceCtx>,
    ) -> Result<T, CallError> {
        let span = trace.map(|t| (t, t.child(), crate::plumbing::time::now_us()));
        let result = self.exchange(service, address, method.clone(), path, body, span.as_ref().map(|s| &s.1)).await;
        if let (Some((parent, ctx, start)), Some(store)) = (span, &self.spans) {
            let status = match &result {
                Ok((status, _)) => status.as_str().to_string(),
                Err(CallError::Status { status, .. }) => status.to_string(),
                Err(e) => format!("error: {e}"),
            };
            let route = span_path(path);
            let name = format!("→ {service} {method} {route}");
            store.record_call(&ctx, Some(&parent.span_id), name, start, status, address);
        }
        result.map(|(_, answer)| answer)
    }

    async fn exchange<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        service: &str,
        address: &str,
        method: Method,
        path: &str,
        body: Option<&B>,
        trace: Option<&TraceCtx>,
    ) -> Result<(hyper::StatusCode, T), CallError> {
        let transport = |message: String| CallError::Transport { service: service.to_string(), message };
        let mut req = hyper::Request::builder().method(method).uri(format!("http://{address}{}", escape_uri(path)));
        let body = match body {
            Some(body) => {
                req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Bytes::from(serde_json::to_vec(body).map_err(|e| transport(format!("cannot encode the request: {e}")))?)
            }
            None => Bytes::new(),
        };
        if let Some(secret) = &self.secret {
            req = req.header(crate::plumbing::admin::SECRET_HEADER, secret.clone());
        }
        if let Some(trace) = trace {
            req = req.header("traceparent", trace.header_value());
            if let Some(state) = &trace.tracestate {
                req = req.header("tracestate", state.as_str());
            }
        }
        let req = req.body(Full::new(body)).map_err(|e| transport(format!("cannot build the request: {e}")))?;
        // One deadline for the whole exchange, the answer's body included.
        let answered = tokio::time::timeout(self.timeout, async {
            let resp = self.http.request(req).await.map_err(|e| self.classify(service, address, e))?;
            let (head, body) = resp.into_parts();
            let bytes = body.collect().await.map_err(|e| transport(root_cause(&e)))?.to_bytes();
            Ok::<_, CallError>((head.status, bytes))
        })
        .await;
        let (status, bytes) = match answered {
            Ok(answer) => answer?,
            Err(_) => return Err(CallError::Timeout { service: service.to_string(), timeout: self.timeout }),
        };
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map(|answer| (status, answer))
                .map_err(|e| CallError::Decode { service: service.to_string(), message: e.to_string() });
        }
        let (code, message) = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => (
                v["error"]["code"].as_str().unwrap_or("error").to_string(),
                v["error"]["message"].as_str().unwrap_or("").to_string(),
            ),
            Err(_) => ("error".to_string(), String::from_utf8_lossy(&bytes).chars().take(200).collect()),
        };
        Err(CallError::Status { service: service.to_string(), status: status.as_u16(), code, message })
    }

    /// A refused or timed-out connect delivered nothing; anything later may have.
    fn classify(&self, service: &str, address: &str, e: hyper_util::client::legacy::Error) -> CallError {
        if e.is_connect() {
            CallError::Refused { service: service.to_string(), address: address.to_string(), message: root_cause(&e) }
        } else {
            CallError::Transport { service: service.to_string(), message: root_cause(&e) }
        }
    }
}

/// `s` as one path segment or query value: every byte but the unreserved ones of RFC 3986
/// percent-encoded, so an id with `/`, `?`, `%` or control bytes stays one value.
pub fn encode_component(s: &str) -> String {
    percent_encode(s, |b| !matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~'))
}

/// `path` with the bytes a URI cannot carry (controls, space, non-ASCII, quotes, angle
/// brackets, backslash, caret, backtick, braces, bar) percent-encoded and the rest as given:
/// a caller that forgot [`encode_component`] still sends a request, as a lenient URL parser
/// would, instead of failing before it leaves.
fn escape_uri(path: &str) -> std::borrow::Cow<'_, str> {
    let bad = |b: u8| b <= b' ' || b >= 0x7f || b"\"<>\\^`{|}".contains(&b);
    if !path.bytes().any(bad) {
        return path.into();
    }
    percent_encode(path, bad).into()
}

/// `s` with each byte `escape` picks written as `%XX`, the others as they are (only ASCII bytes
/// are ever kept: both callers escape every byte from 0x7f up).
fn percent_encode(s: &str, escape: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if escape(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The innermost cause of an error (`connection refused`), not the wrappers around it: what a
/// person needs to read when a request fails.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Exponential backoff with equal jitter: half of `base·2^attempt` (capped at `max`) is always
/// waited, the other half is random, so the wait lies in `[exp / 2, exp]`. Retrying clients do
/// not stampede a recovering service in step, yet none retries at once as full jitter allows.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let half = exp / 2;
    half + exp.mul_f64(rand::thread_rng().gen_range(0.0..0.5))
}

/// A call's path as its span shows it (and exports it, as `url.path`): without the query, and
/// with a credential in the path (the hash of a bearer token the gateway looks up, which a
/// dictionary would reverse for a weak token) replaced by its route's name.
fn span_path(path: &str) -> std::borrow::Cow<'_, str> {
    const CREDENTIALS: &[(&str, &str)] = &[("/v1/tokens/", "{hash}")];
    let path = path.split('?').next().unwrap_or(path);
    for (prefix, name) in CREDENTIALS {
        if let Some(rest) = path.strip_prefix(prefix) {
            let tail = rest.find('/').map_or("", |at| &rest[at..]);
            return format!("{prefix}{name}{tail}").into();
        }
    }
    path.into()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_span_shows_no_credential_of_its_path() {
        assert_eq!(span_path("/v1/tokens/0fdfad7fffda93507205d06ab1c3"), "/v1/tokens/{hash}");
        assert_eq!(span_path("/v1/orders/ord_1/commit?x=1"), "/v1/orders/ord_1/commit");
        assert_eq!(span_path("/v1/users/alice"), "/v1/users/alice");
    }
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..20 {
            let d = backoff(attempt, base, max);
            assert!(d <= max, "{attempt}: {d:?}");
            assert!(d >= base.saturating_mul(1 << attempt.min(16)).min(max) / 2);
        }
    }

    #[test]
    fn components_and_paths_are_encoded_into_uris_hyper_accepts() {
        let id = "=ó\u{1}\u{1b}a/b?c%d e";
        assert_eq!(encode_component(id), "%3D%C3%B3%01%1Ba%2Fb%3Fc%25d%20e");
        assert_eq!(encode_component("ord_01ABC-x.y~z"), "ord_01ABC-x.y~z");
        let path = format!("/v1/orders/{id}");
        let escaped = escape_uri(&path);
        assert_eq!(escaped, "/v1/orders/=%C3%B3%01%1Ba/b?c%d%20e");
        assert!(format!("http://127.0.0.1:1{escaped}").parse::<hyper::Uri>().is_ok());
        assert!(matches!(escape_uri("/v1/orders?user_id=alice&limit=5"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn four_hundreds_are_not_retried_but_five_hundreds_are() {
        let status = |s| CallError::Status { service: "x".into(), status: s, code: "c".into(), message: String::new() };
        assert!(!status(409).is_transient());
        assert!(status(503).is_transient());
        assert!(CallError::NoInstance("x".into()).is_transient());
        assert!(!CallError::NoInstance("x".into()).outcome_unknown());
    }
}
