//! OTLP/HTTP protobuf export of every sampled span, so the traces a stack records can be read in
//! Jaeger or any OpenTelemetry collector.
//!
//! The message types come from `opentelemetry-proto` (generated from the official `.proto`
//! files, without its gRPC stack) and are encoded with prost; batches go out with the process's
//! own reqwest client on its own tokio runtime. The OpenTelemetry SDK's batch processor was not
//! used: it brings its own runtime glue and HTTP client abstraction for what is one bounded
//! channel and one loop here.
//!
//! A request is never delayed by export: [`Exporter::offer`] is a `try_send` into a bounded
//! queue. When the collector is slow or gone the queue fills and spans are dropped, and counted
//! in `shop_otlp_spans_dropped_total`. A service that stops sends what is queued first
//! ([`Exporter::flush`], as the SDK's batch processor does on shutdown), within a bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Status};
use prost::Message;
use tokio::sync::mpsc;

use crate::plumbing::spans::Span;

/// Where spans go and who they come from, from the standard OpenTelemetry variables.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The full URL batches are POSTed to: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    pub url: String,
    /// `service.name`: `OTEL_SERVICE_NAME`, else the service kind.
    pub service_name: String,
    /// `service.instance.id`: the instance name (`order-2`).
    pub instance: String,
    /// Spans waiting to be sent, at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub queue: usize,
    /// Spans per request, at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub batch: usize,
    /// How long the first span of a batch waits for company (`OTEL_BSP_SCHEDULE_DELAY`, ms).
    pub delay: Duration,
    /// How long one export may take (`OTEL_BSP_EXPORT_TIMEOUT`, ms).
    pub timeout: Duration,
}

impl Config {
    /// The configuration the environment asks for; `None` when no endpoint is set.
    pub fn from_env(kind: &str, instance: &str) -> Option<Config> {
        Config::from_vars(kind, instance, |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    fn from_vars(kind: &str, instance: &str, var: impl Fn(&str) -> Option<String>) -> Option<Config> {
        let url = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => url,
            None => traces_url(&var("OTEL_EXPORTER_OTLP_ENDPOINT")?),
        };
        let number = |name: &str, default: u64| var(name).and_then(|v| v.trim().parse().ok()).unwrap_or(default);
        Some(Config {
            url,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| kind.to_string()),
            instance: instance.to_string(),
            queue: number("OTEL_BSP_MAX_QUEUE_SIZE", 2048).max(1) as usize,
            batch: number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512).max(1) as usize,
            // One second rather than the SDK's five, so a lab's traces show up while you look.
            delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 1000)),
            timeout: Duration::from_millis(number("OTEL_BSP_EXPORT_TIMEOUT", 10_000).max(1)),
        })
    }
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT` with `v1/traces` appended to its path, as the exporter
/// specification says: after the path, before any query (`http://c:4318/otlp?k=v` posts to
/// `/otlp/v1/traces?k=v`).
fn traces_url(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint.trim()) {
        Ok(mut url) => {
            let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
            url.set_path(&path);
            url.to_string()
        }
        // Not a URL: the request fails and says so, as the variable's other users would.
        Err(_) => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
    }
}

/// The collector's URL as logs and `/metrics` show it: without a user name, password or query,
/// where a collector's credentials go (the gateway's `/metrics` is public).
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let hidden = !u.username().is_empty() || u.password().is_some() || u.query().is_some();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            if hidden {
                format!("{u} (credentials and query not shown)")
            } else {
                u.to_string()
            }
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

/// Answers worth sending a batch again for (OTLP/HTTP, "Failures"): the collector is
/// throttling or briefly unavailable.
fn retryable(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// How long a batch may be on its way before a stopping service stops waiting for it.
const STALLED: Duration = Duration::from_secs(1);

/// Tries per batch, and the longest wait between two: a collector that stays down loses the
/// batch after a few seconds, and the spans behind it wait in the bounded queue meanwhile.
const ATTEMPTS: u32 = 3;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// How long a `Retry-After` answer asks to wait (delay-seconds; a date is left to backoff).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A finished span with what the in-memory store does not keep.
#[derive(Clone, Debug)]
pub struct Finished {
    pub span: Span,
    /// The caller's `tracestate`, exported unchanged.
    pub tracestate: Option<String>,
    /// The order the span concerns, as the `shop.order.id` attribute.
    pub order_id: Option<String>,
}

/// What the exporter has done, for `/metrics`.
#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    /// The queue was full: the collector is slower than the spans come.
    dropped_full: AtomicU64,
    /// The collector refused or could not be reached.
    dropped_failed: AtomicU64,
    /// When the batch being sent now was first sent (ms since the epoch), 0 when none is: a
    /// stopping service does not wait on a collector that has held a batch for long.
    sending_since_ms: std::sync::atomic::AtomicI64,
    /// The last batch could not be delivered.
    failing: std::sync::atomic::AtomicBool,
}

/// What the export loop is handed: a span, or the request to send what it holds now.
enum Queued {
    Span(Box<Finished>),
    /// Answered once every span queued before it has been sent (or given up on).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The sending half of the export queue; cheap to clone.
#[derive(Clone)]
pub struct Exporter {
    tx: mpsc::Sender<Queued>,
    counters: Arc<Counters>,
    url: Arc<str>,
}

impl Exporter {
    /// Starts the export loop on the current tokio runtime. It ends when the last `Exporter`
    /// is dropped.
    pub fn start(config: Config, http: reqwest::Client) -> Exporter {
        let (tx, rx) = mpsc::channel(config.queue);
        let counters = Arc::new(Counters::default());
        let url: Arc<str> = shown_url(&config.url).into();
        tracing::info!(url = %url, service_name = %config.service_name, "exporting spans over OTLP");
        tokio::spawn(run(rx, config, http, counters.clone()));
        Exporter { tx, counters, url }
    }

    /// Queues `span` for export, or drops and counts it if the queue is full. Never waits.
    pub fn offer(&self, span: Finished) {
        if self.tx.try_send(Queued::Span(Box::new(span))).is_err() {
            self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends every span queued so far without waiting for its batch to fill, and returns once
    /// they are sent, or after `within` (a collector that does not answer must not hold up a
    /// stopping service).
    pub async fn flush(&self, within: Duration) {
        // A collector that is failing, or has held a batch for a second already, would only
        // make the stop wait out `within`: each service of a stopping stack would add it again.
        let since = self.counters.sending_since_ms.load(Ordering::Relaxed);
        let stalled = since > 0 && crate::plumbing::time::now_ms() - since > STALLED.as_millis() as i64;
        if stalled || self.counters.failing.load(Ordering::Relaxed) {
            return;
        }
        let (done, sent) = tokio::sync::oneshot::channel();
        let _ = tokio::time::timeout(within, async {
            if self.tx.send(Queued::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        })
        .await;
    }

    /// Spans dropped so far, for any reason.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped_full.load(Ordering::Relaxed) + self.counters.dropped_failed.load(Ordering::Relaxed)
    }

    /// The exporter's counters in Prometheus text format, with `labels` on every series.
    pub fn render(&self, out: &mut String, labels: &str) {
        use std::fmt::Write;
        let c = &self.counters;
        let sep = if labels.is_empty() { "" } else { "," };
        let _ = writeln!(
            out,
            "# HELP shop_otlp_spans_exported_total Spans the OTLP collector at {} accepted.\n\
             # TYPE shop_otlp_spans_exported_total counter\n\
             shop_otlp_spans_exported_total{} {}",
            self.url,
            if labels.is_empty() { String::new() } else { format!("{{{labels}}}") },
            c.exported.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP shop_otlp_spans_dropped_total Spans not exported: the queue was full, or the collector failed.\n\
             # TYPE shop_otlp_spans_dropped_total counter\n\
             shop_otlp_spans_dropped_total{{{labels}{sep}reason=\"queue_full\"}} {}\n\
             shop_otlp_spans_dropped_total{{{labels}{sep}reason=\"export_failed\"}} {}",
            c.dropped_full.load(Ordering::Relaxed),
            c.dropped_failed.load(Ordering::Relaxed)
        );
    }
}

/// Collects batches (full, or `delay` after their first span) and posts them one at a time, so
/// a slow collector fills the queue instead of piling up requests.
async fn run(mut rx: mpsc::Receiver<Queued>, config: Config, http: reqwest::Client, counters: Arc<Counters>) {
    // Whether the last export failed: failures are logged when they start and when they end,
    // not once per batch.
    let mut failing = false;
    let shown = shown_url(&config.url);
    while let Some(first) = rx.recv().await {
        let (mut batch, mut flushed) = (Vec::new(), None);
        match first {
            Queued::Span(span) => batch.push(*span),
            Queued::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + config.delay;
        while batch.len() < config.batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Queued::Span(span))) => batch.push(*span),
                Ok(Some(Queued::Flush(done))) => {
                    flushed = Some(done);
                    break;
                }
                _ => break,
            }
        }
        let n = batch.len() as u64;
        let body = encode(&config, &batch).encode_to_vec();
        counters.sending_since_ms.store(crate::plumbing::time::now_ms(), Ordering::Relaxed);
        let failure = send(&http, &config, body).await;
        counters.sending_since_ms.store(0, Ordering::Relaxed);
        counters.failing.store(failure.is_some(), Ordering::Relaxed);
        match failure {
            None => {
                counters.exported.fetch_add(n, Ordering::Relaxed);
                if std::mem::take(&mut failing) {
                    tracing::info!(url = %shown, "OTLP collector accepts spans again");
                }
            }
            Some(why) => {
                counters.dropped_failed.fetch_add(n, Ordering::Relaxed);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(url = %shown, error = %why, "cannot export spans; dropping them until the collector answers");
                }
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

/// Posts one batch, again after a throttling or unavailable answer or a failed connection
/// (waiting as `Retry-After` asks, else 1 s, then 2 s), at most [`ATTEMPTS`] times; why it
/// failed, or `None` once the collector took it.
async fn send(http: &reqwest::Client, config: &Config, body: Vec<u8>) -> Option<String> {
    let mut attempt = 1;
    loop {
        let sent = http
            .post(&config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .timeout(config.timeout)
            .body(body.clone())
            .send()
            .await;
        let (why, again, asked) = match sent {
            Ok(resp) if resp.status().is_success() => return None,
            Ok(resp) => {
                (format!("the collector answered {}", resp.status()), retryable(resp.status()), retry_after(&resp))
            }
            Err(e) => (crate::plumbing::client::root_cause(&e), e.is_connect(), None),
        };
        if !again || attempt >= ATTEMPTS {
            return Some(why);
        }
        let backoff = Duration::from_secs(1 << (attempt - 1));
        tokio::time::sleep(asked.unwrap_or(backoff).min(MAX_RETRY_WAIT)).await;
        attempt += 1;
    }
}

/// One export request: the resource (this instance) and its spans.
pub fn encode(config: &Config, batch: &[Finished]) -> ExportTraceServiceRequest {
    let resource = Resource {
        attributes: vec![
            attribute("service.name", &config.service_name),
            attribute("service.instance.id", &config.instance),
        ],
        ..Default::default()
    };
    let scope =
        InstrumentationScope { name: "shop".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope),
                spans: batch.iter().map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The OTLP form of a recorded span. Kind and HTTP attributes are read from its name, which
/// says what it is: `POST /orders` (served), `→ payment POST /v1/payments` (a call made), or
/// anything else (`saga ord_…`: work inside the process).
fn span(f: &Finished) -> opentelemetry_proto::tonic::trace::v1::Span {
    let s = &f.span;
    let http_status: Option<u16> = s.status.parse().ok();
    let mut attributes = Vec::new();
    // The name is the most general one that tells the operation (OpenTelemetry's span-name
    // rule): a client span is `{method} {url.template}`, and no name carries an id, so a
    // backend lists operations, not orders. The ids stay in the attributes.
    let (kind, name) = if let Some(call) = s.name.strip_prefix("→ ") {
        let mut words = call.splitn(3, ' ');
        let mut name = s.name.clone();
        if let (Some(peer), Some(method), Some(path)) = (words.next(), words.next(), words.next()) {
            attributes.push(attribute("peer.service", peer));
            attributes.push(attribute("http.request.method", method));
            attributes.push(attribute("url.path", path));
            // Where the call went, when it went anywhere (HTTP client conventions: required).
            if let Some((host, port)) = s.address.as_deref().and_then(|a| a.rsplit_once(':')) {
                attributes.push(attribute("server.address", host));
                if let Ok(port) = port.parse::<i64>() {
                    attributes.push(KeyValue {
                        key: "server.port".into(),
                        value: Some(AnyValue { value: Some(any_value::Value::IntValue(port)) }),
                        ..Default::default()
                    });
                }
                attributes.push(attribute("url.full", &format!("http://{host}:{port}{path}")));
            }
            name = match route_template(path) {
                Some(template) => {
                    attributes.push(attribute("url.template", template));
                    format!("{method} {template}")
                }
                None => method.to_string(),
            };
        }
        (SpanKind::Client, name)
    } else if let Some((method, route)) = s.name.split_once(' ').filter(|(m, _)| is_method(m)) {
        attributes.push(attribute("http.request.method", method));
        attributes.push(attribute("http.route", route));
        attributes.push(attribute("url.scheme", "http"));
        (SpanKind::Server, s.name.clone())
    } else {
        // `saga ord_… (resumed)`, `relay evt_…`: the words without the id.
        let name: Vec<&str> = s.name.split(' ').filter(|w| !is_id(w)).collect();
        (SpanKind::Internal, name.join(" "))
    };
    if let Some(code) = http_status {
        attributes.push(KeyValue {
            key: "http.response.status_code".into(),
            value: Some(AnyValue { value: Some(any_value::Value::IntValue(code.into())) }),
            ..Default::default()
        });
    }
    if let Some(order) = &f.order_id {
        attributes.push(attribute("shop.order.id", order));
    }
    // OpenTelemetry's HTTP conventions: a server span fails on 5xx, a client span on any 4xx/5xx.
    let failed = match (kind, http_status) {
        (SpanKind::Server, Some(code)) => code >= 500,
        (_, Some(code)) => code >= 400,
        (_, None) => s.status.starts_with("error") || s.status == "FAILED",
    };
    let status = if failed {
        Status { code: StatusCode::Error as i32, message: s.status.clone() }
    } else {
        Status { code: StatusCode::Unset as i32, message: String::new() }
    };
    let nanos = |us: i64| (us.max(0) as u64).saturating_mul(1000);
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: hex::decode(&s.trace_id).unwrap_or_default(),
        span_id: hex::decode(&s.span_id).unwrap_or_default(),
        trace_state: f.tracestate.clone().unwrap_or_default(),
        parent_span_id: s.parent_id.as_deref().and_then(|p| hex::decode(p).ok()).unwrap_or_default(),
        // Only sampled spans are exported: the W3C sampled bit.
        flags: 1,
        name,
        kind: kind as i32,
        start_time_unix_nano: nanos(s.start_us),
        end_time_unix_nano: nanos(s.start_us + s.duration_us),
        attributes,
        status: Some(status),
        ..Default::default()
    }
}

/// The routes shop's services serve one another, as their routers declare them.
const ROUTES: &[&str] = &[
    "/v1/users/{id}",
    "/v1/cards/{token}",
    "/v1/tokens/{hash}",
    "/v1/orders/{id}",
    "/v1/reservations/{order_id}",
    "/v1/reservations/{order_id}/commit",
    "/v1/reservations/{order_id}/release",
    "/v1/payments/by-order/{order_id}",
    "/v1/payments/by-order/{order_id}/refund",
    "/v1/notifications/batch",
    "/v1/instances/{instance}",
    "/v1/services/{service}",
];

/// The route `path` (query left out) fills: itself when it has no parameter, the template of
/// [`ROUTES`] it matches, or `None`, which leaves a client span named by its method alone.
fn route_template(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let fills = |template: &str| {
        let parts: Vec<&str> = template.split('/').collect();
        parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
    };
    // A literal route first: `/v1/notifications/batch` is not an instance of a template.
    ROUTES.iter().find(|t| **t == path).or_else(|| ROUTES.iter().find(|t| fills(t))).copied().or_else(|| {
        // A path with nothing in it that varies is its own template.
        const PLAIN: &[&str] =
            &["/v1/orders", "/v1/products", "/v1/payments", "/v1/reservations", "/v1/notifications", "/v1/users"];
        PLAIN.iter().find(|p| **p == path).copied()
    })
}

/// An id (`ord_01M8…`, `evt_…`), not a word of an operation's name.
fn is_id(word: &str) -> bool {
    word.split_once('_').is_some_and(|(prefix, rest)| {
        prefix.len() <= 5 && prefix.bytes().all(|b| b.is_ascii_lowercase()) && rest.len() >= 10
    })
}

fn is_method(word: &str) -> bool {
    matches!(word, "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS")
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_endpoint_and_service_name_come_from_the_standard_variables() {
        assert_eq!(Config::from_vars("order", "order-1", vars(&[])), None);
        let c =
            Config::from_vars("order", "order-1", vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])).unwrap();
        assert_eq!(
            (c.url.as_str(), c.service_name.as_str(), c.instance.as_str()),
            ("http://c:4318/v1/traces", "order", "order-1")
        );
        let c = Config::from_vars(
            "order",
            "order-1",
            vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t/x"),
                ("OTEL_SERVICE_NAME", "shop-order"),
            ]),
        )
        .unwrap();
        assert_eq!((c.url.as_str(), c.service_name.as_str()), ("http://t/x", "shop-order"));
    }

    #[tokio::test]
    async fn a_stop_does_not_wait_on_a_collector_that_holds_a_batch() {
        // A collector that takes the connection and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let pairs = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "10")];
        let config = Config::from_vars("order", "order", vars(&pairs)).unwrap();
        let exporter = Exporter::start(config, reqwest::Client::new());
        let ctx = crate::plumbing::trace::TraceCtx::resume("4bf92f3577b34da6a3ce929d0e0e4736");
        exporter.offer(Finished {
            span: Span { trace_id: ctx.trace_id.clone(), span_id: ctx.span_id.clone(), ..Span::default() },
            tracestate: None,
            order_id: None,
        });
        tokio::time::sleep(STALLED + Duration::from_millis(300)).await;
        // Its batch has been on its way for longer than `STALLED`: the flush gives up at once
        // instead of waiting out its 10 s.
        let flushed = tokio::time::timeout(Duration::from_secs(3), exporter.flush(Duration::from_secs(10))).await;
        assert!(flushed.is_ok(), "the flush waited on a collector that holds its batch");
    }

    #[test]
    fn the_traces_path_goes_after_the_endpoints_path_and_before_its_query() {
        assert_eq!(traces_url("http://c:4318/otlp/?k=v"), "http://c:4318/otlp/v1/traces?k=v");
        assert_eq!(traces_url("http://u:p@c:4318"), "http://u:p@c:4318/v1/traces");
    }

    #[test]
    fn credentials_and_query_stay_out_of_the_url_shown() {
        let shown = shown_url("http://collector-user:s3cr3t@127.0.0.1:4318/v1/traces?api_key=TOPSECRET");
        assert_eq!(shown, "http://127.0.0.1:4318/v1/traces (credentials and query not shown)");
        assert_eq!(shown_url("http://127.0.0.1:4318/v1/traces"), "http://127.0.0.1:4318/v1/traces");
    }

    #[test]
    fn spans_are_encoded_with_kind_parent_status_and_attributes() {
        let config =
            Config::from_vars("gateway", "gateway", vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c")])).unwrap();
        let recorded = |name: &str, status: &str| Finished {
            span: Span {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
                parent_id: Some("00f067aa0ba902b8".into()),
                service: "gateway".into(),
                instance: "gateway".into(),
                name: name.into(),
                start_us: 1_000,
                duration_us: 5,
                status: status.into(),
                address: Some("127.0.0.1:4100".into()),
            },
            tracestate: Some("rojo=1".into()),
            order_id: Some("ord_1".into()),
        };
        let request = encode(&config, &[recorded("POST /orders", "201"), recorded("→ order POST /v1/orders", "503")]);
        let bytes = request.encode_to_vec();
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let spans = &back.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].kind, SpanKind::Server as i32);
        assert_eq!(spans[0].parent_span_id, hex::decode("00f067aa0ba902b8").unwrap());
        assert_eq!(spans[0].trace_state, "rojo=1");
        assert_eq!((spans[0].start_time_unix_nano, spans[0].end_time_unix_nano), (1_000_000, 1_005_000));
        assert_eq!(spans[0].status.as_ref().unwrap().code, StatusCode::Unset as i32);
        assert_eq!(spans[1].kind, SpanKind::Client as i32);
        let client: Vec<(&str, Option<&any_value::Value>)> = spans[1]
            .attributes
            .iter()
            .map(|a| (a.key.as_str(), a.value.as_ref().and_then(|v| v.value.as_ref())))
            .collect();
        assert!(client.contains(&("server.address", Some(&any_value::Value::StringValue("127.0.0.1".into())))));
        assert!(client.contains(&("server.port", Some(&any_value::Value::IntValue(4100)))));
        let full = any_value::Value::StringValue("http://127.0.0.1:4100/v1/orders".into());
        assert!(client.contains(&("url.full", Some(&full))), "{client:?}");
        assert_eq!(spans[1].status.as_ref().unwrap().code, StatusCode::Error as i32);
        let keys: Vec<&str> = spans[0].attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            ["http.request.method", "http.route", "url.scheme", "http.response.status_code", "shop.order.id"]
        );
        let resource = back.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
    }

    #[test]
    fn span_names_are_operations_and_the_ids_stay_in_attributes() {
        let config = Config::from_vars("order", "order", vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c")])).unwrap();
        let finished = |name: &str| Finished {
            span: Span { name: name.into(), status: "200".into(), ..Span::default() },
            tracestate: None,
            order_id: None,
        };
        let names = [
            ("→ user GET /v1/users/erin", "GET /v1/users/{id}"),
            ("→ user GET /v1/cards/card_bcd4eff17edd87", "GET /v1/cards/{token}"),
            (
                "→ inventory POST /v1/reservations/ord_01M8HCM1KEEG0Y3DTZSWNTKCF7/commit",
                "POST /v1/reservations/{order_id}/commit",
            ),
            (
                "→ payment POST /v1/payments/by-order/ord_01M8HCM1KEEG0Y3DTZSWNTKCF7/refund",
                "POST /v1/payments/by-order/{order_id}/refund",
            ),
            ("→ notification POST /v1/notifications/batch", "POST /v1/notifications/batch"),
            ("→ order GET /v1/orders?user_id=alice&limit=5", "GET /v1/orders"),
            ("→ web GET /somewhere/else/42", "GET"),
            ("saga ord_01M8HCM1KEEG0Y3DTZSWNTKCF7 (resumed)", "saga (resumed)"),
            ("relay evt_01M8HCM1KN6AC0W9ZJ5T2XQ4DP", "relay"),
            ("GET /v1/orders/{id}", "GET /v1/orders/{id}"),
        ];
        let batch: Vec<Finished> = names.iter().map(|(n, _)| finished(n)).collect();
        let request = encode(&config, &batch);
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        for ((recorded, want), span) in names.iter().zip(spans) {
            assert_eq!(span.name, *want, "{recorded}");
        }
        let path = spans[0].attributes.iter().find(|a| a.key == "url.path").unwrap();
        assert_eq!(path.value, Some(AnyValue { value: Some(any_value::Value::StringValue("/v1/users/erin".into())) }));
    }
}
