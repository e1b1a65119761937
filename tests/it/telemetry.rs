//! Traces, logs, metrics and the API document as the ecosystem's own tools read them: spans
//! exported over OTLP and decoded with the official OpenTelemetry protobufs, W3C trace context
//! at the gateway, log lines carrying the order's ids, `/metrics` through promtool, and the
//! gateway refusing what its OpenAPI document forbids.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use shop::services::Kind;

use crate::support::{eventually, items, Options, TestStack, ALICE, BOB};

/// A span as the collector received it, with the resource it came from.
#[derive(Clone, Debug)]
struct Received {
    service_name: String,
    instance: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    trace_state: String,
    name: String,
    kind: i32,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// An OTLP/HTTP receiver on a free port that decodes every request with the OpenTelemetry
/// protobuf definitions and keeps the spans.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
    /// Requests answered `503` with `Retry-After: 1` so far.
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

impl Collector {
    async fn start() -> Collector {
        Collector::throttling(0).await
    }

    /// A collector that answers its first `refusals` requests `503 Retry-After: 1`, as one whose
    /// memory limiter tripped, and takes the rest.
    async fn throttling(refusals: usize) -> Collector {
        use std::sync::atomic::Ordering;
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sink = spans.clone();
        let count = refused.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let sink = sink.clone();
                let count = count.clone();
                async move {
                    if count.fetch_add(1, Ordering::SeqCst) < refusals {
                        let throttled = [(axum::http::header::RETRY_AFTER, "1")];
                        return (StatusCode::SERVICE_UNAVAILABLE, throttled).into_response();
                    }
                    count.fetch_sub(1, Ordering::SeqCst);
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let request = ExportTraceServiceRequest::decode(body).expect("a valid OTLP protobuf");
                    let mut sink = sink.lock().unwrap();
                    for rs in request.resource_spans {
                        let resource = rs.resource.unwrap_or_default();
                        let attr = |key: &str| {
                            resource
                                .attributes
                                .iter()
                                .find(|a| a.key == key)
                                .and_then(|a| string(&a.value))
                                .unwrap_or_default()
                        };
                        let (service_name, instance) = (attr("service.name"), attr("service.instance.id"));
                        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                            sink.push(Received {
                                service_name: service_name.clone(),
                                instance: instance.clone(),
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_id: hex(&span.parent_span_id),
                                trace_state: span.trace_state.clone(),
                                name: span.name.clone(),
                                kind: span.kind,
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|a| (a.key.clone(), string(&a.value).unwrap_or_default()))
                                    .collect(),
                            });
                        }
                    }
                    StatusCode::OK.into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { url, spans, refused }
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }
}

fn string(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<String> {
    match v.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every service of a test stack exports to `url`, in small, quick batches.
fn exporting_to(url: &str, queue: &str) -> Options {
    let mut options = Options::default();
    for kind in Kind::ALL {
        options = options.env(kind, "OTEL_EXPORTER_OTLP_ENDPOINT", url).env(kind, "OTEL_BSP_SCHEDULE_DELAY", "50").env(
            kind,
            "OTEL_BSP_MAX_QUEUE_SIZE",
            queue,
        );
    }
    options
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

#[tokio::test(flavor = "multi_thread")]
async fn one_order_yields_otlp_spans_from_every_service_in_the_callers_trace() {
    let collector = Collector::start().await;
    let stack = TestStack::with(exporting_to(&collector.url, "2048")).await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (status, order, headers) = stack
        .place(ALICE, items(&[("sku-1", 1)]), &[("traceparent", traceparent.as_str()), ("tracestate", TRACESTATE)])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["trace_id"], CALLER_TRACE);
    let echoed = headers["traceparent"].to_str().unwrap();
    assert!(echoed.starts_with(&format!("00-{CALLER_TRACE}-")) && echoed.ends_with("-01"), "{echoed}");
    let order_id = order["id"].as_str().unwrap().to_string();

    let every = ["gateway", "user", "order", "payment", "inventory", "notification"];
    // Each service exports on its own schedule: a child can arrive before its parent (the
    // notification's span before the order service's relay span), so wait for whole trees too.
    let complete = eventually(Duration::from_secs(20), async || {
        let spans = collector.of_trace(CALLER_TRACE);
        let whole = spans.iter().all(|s| s.parent_id == CALLER_SPAN || spans.iter().any(|p| p.span_id == s.parent_id));
        whole && every.iter().all(|s| spans.iter().any(|r| r.service_name == *s))
    })
    .await;
    let spans = collector.of_trace(CALLER_TRACE);
    let names: Vec<String> = spans.iter().map(|s| format!("{} {}", s.service_name, s.name)).collect();
    assert!(complete, "not every service exported a span of the trace: {names:#?}");

    // One tree: the gateway's server span hangs off the caller's span, every other span off a
    // span of the same trace.
    let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let root = spans.iter().find(|s| s.service_name == "gateway" && s.name == "POST /orders").expect("gateway span");
    assert_eq!(root.parent_id, CALLER_SPAN);
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(root.instance, "gateway");
    assert_eq!(root.attribute("http.request.method"), Some("POST"));
    assert_eq!(root.attribute("http.route"), Some("/orders"));
    assert_eq!(root.attribute("http.response.status_code"), Some("201"));
    assert_eq!(root.attribute("shop.order.id"), Some(order_id.as_str()));
    for s in &spans {
        if s.span_id != root.span_id {
            assert!(
                ids.contains(&s.parent_id.as_str()),
                "{} {} has a parent outside the trace",
                s.service_name,
                s.name
            );
        }
    }
    // The stack's bookkeeping (registrations, heartbeats, a relay's batch of deliveries) is no
    // trace of its own at the collector: only the orders' traces are exported.
    // (Each delivery of the batch is in its order's trace, under the relay's span.)
    let roots: Vec<String> = collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.parent_id.is_empty())
        .map(|s| format!("{} {}", s.service_name, s.name))
        .collect();
    for bookkeeping in ["/v1/heartbeat", "/v1/register", "/v1/instances", "/v1/services/", "/v1/notifications/batch"] {
        assert!(!roots.iter().any(|n| n.contains(bookkeeping)), "{bookkeeping} exported as a trace: {roots:?}");
    }
    // Names are operations, never ids (OpenTelemetry's span-name rule): the order is an attribute.
    for s in &spans {
        assert!(!s.name.contains("ord_") && !s.name.contains("evt_"), "{} {}", s.service_name, s.name);
    }
    let saga = spans.iter().find(|s| s.name == "saga").expect("saga span");
    assert_eq!((saga.kind, saga.attribute("shop.order.id")), (SpanKind::Internal as i32, Some(order_id.as_str())));
    assert!(spans.iter().any(|s| s.kind == SpanKind::Client as i32 && s.attribute("peer.service") == Some("payment")));
    // The gateway's lookup of the caller's token shows no hash of it, which a dictionary would
    // reverse for a weak token.
    let lookup = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32 && s.name.starts_with("GET /v1/tokens/"))
        .expect("the token lookup");
    assert_eq!(
        (lookup.name.as_str(), lookup.attribute("url.path"), lookup.attribute("url.template")),
        ("GET /v1/tokens/{hash}", Some("/v1/tokens/{hash}"), Some("/v1/tokens/{hash}"))
    );
    // A client span records the status its call was answered with, as the server span under it
    // does (201 for the order the gateway forwards, not any 2xx as 200).
    let mut pairs = Vec::new();
    for client in spans.iter().filter(|s| s.kind == SpanKind::Client as i32) {
        let served = spans.iter().find(|s| s.parent_id == client.span_id && s.kind == SpanKind::Server as i32);
        if let Some(server) = served {
            let status = client.attribute("http.response.status_code");
            assert_eq!(
                status,
                server.attribute("http.response.status_code"),
                "{} {}",
                client.service_name,
                client.name
            );
            pairs.push(status);
        }
    }
    assert!(pairs.contains(&Some("201")), "{pairs:?}");
    // The caller's tracestate went on, unchanged, to every hop: the request, its saga and the
    // notification the saga queued.
    for s in &spans {
        assert_eq!(s.trace_state, TRACESTATE, "{} {}", s.service_name, s.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_traceparents_start_a_new_trace_and_unsampled_ones_stay_unsampled() {
    let collector = Collector::start().await;
    let stack = TestStack::with(exporting_to(&collector.url, "2048")).await;
    for bad in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ] {
        let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[("traceparent", bad)]).await;
        assert_eq!(status, StatusCode::CREATED, "{bad}: {order}");
        assert_ne!(order["trace_id"], CALLER_TRACE, "{bad}");
        assert_eq!(order["trace_id"].as_str().unwrap().len(), 32);
    }
    let higher = format!("cc-{CALLER_TRACE}-{CALLER_SPAN}-01-future");
    let (_, order, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[("traceparent", higher.as_str())]).await;
    assert_eq!(order["trace_id"], CALLER_TRACE);

    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let (status, order, headers) = stack.place(ALICE, items(&[("sku-2", 1)]), &[("traceparent", unsampled)]).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert!(headers["traceparent"].to_str().unwrap().ends_with("-00"));
    // A sampled order placed afterwards is exported; the unsampled one before it never is.
    let (_, later, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[]).await;
    let later_trace = later["trace_id"].as_str().unwrap().to_string();
    assert!(eventually(Duration::from_secs(20), async || !collector.of_trace(&later_trace).is_empty()).await);
    assert!(collector.of_trace("0af7651916cd43dd8448eb211c80319c").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_collector_costs_requests_nothing_but_the_drop_count() {
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let stack = TestStack::with(exporting_to(&dead, "8")).await;
    let gateway = stack.gateway("/products");
    let mut load = Vec::new();
    for _ in 0..8 {
        let (http, url) = (stack.http.clone(), gateway.clone());
        load.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..25 {
                ok += u32::from(http.get(&url).send().await.map(|r| r.status() == StatusCode::OK).unwrap_or(false));
            }
            ok
        }));
    }
    let mut served = 0;
    for task in load {
        served += task.await.unwrap();
    }
    assert_eq!(served, 200, "every request is served while the collector is gone");
    let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");

    let dropped = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("shop_otlp_spans_dropped_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let metrics_url = stack.gateway("/metrics");
    let mut text = String::new();
    let counted = eventually(Duration::from_secs(20), async || {
        text = stack.http.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        dropped(&text) >= 200.0
    })
    .await;
    assert!(counted, "the gateway's 200+ spans are not all counted as dropped:\n{text}");
    assert!(
        text.contains("\nshop_otlp_spans_exported_total{service=\"gateway\",shop_instance=\"gateway\"} 0\n"),
        "{text}"
    );
}

/// The JSON log lines of `kind` that belong to `trace_id`.
fn lines_of_trace(stack: &TestStack, kind: Kind, trace_id: &str) -> Vec<Value> {
    stack
        .log(kind)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["trace_id"] == trace_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_of_a_failed_order_carry_its_trace_span_and_order_ids() {
    let stack = TestStack::start().await;
    // Bob's card is declined: the saga fails and compensates.
    let (status, order, _) = stack.place(BOB, items(&[("sku-2", 1)]), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "FAILED");
    let (id, trace) = (order["id"].as_str().unwrap(), order["trace_id"].as_str().unwrap());
    let mut lines = Vec::new();
    let logged = eventually(Duration::from_secs(10), async || {
        lines = lines_of_trace(&stack, Kind::Order, trace);
        lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("order failed")))
    })
    .await;
    assert!(logged, "no line of trace {trace} says the order failed:\n{}", stack.log(Kind::Order));
    let compensating = lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains("compensating")))
        .unwrap_or_else(|| panic!("no compensation line in {lines:#?}"));
    assert!(["INFO", "WARN"].contains(&compensating["level"].as_str().unwrap()), "{compensating}");
    for line in &lines {
        assert_eq!(line["order_id"], id, "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_services_metrics_pass_promtool_with_the_shop_instance_label() {
    let stack = TestStack::start().await;
    for user in [ALICE, BOB] {
        stack.place(user, items(&[("sku-1", 1)]), &[]).await;
    }
    for kind in Kind::ALL {
        let resp = stack.http.get(stack.url(kind, "/metrics")).send().await.unwrap();
        assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
        let text = resp.text().await.unwrap();
        let mut promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is not installed; CI installs it with the Debian package `prometheus`");
        use std::io::Write;
        promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = promtool.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool rejects the metrics of {}:\n{}{}\n{text}",
            kind.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if kind != Kind::Registry {
            assert!(text.contains(&format!("shop_instance=\"{}\"", kind.name())), "{text}");
        }
        assert!(!text.contains(",instance=\""), "{text}");
    }
    let payment = stack.http.get(stack.url(Kind::Payment, "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(payment.contains("# TYPE shop_payment_captured_cents_total counter"), "{payment}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_refuses_what_its_openapi_document_forbids() {
    let stack = TestStack::start().await;
    let (_, doc) = stack.get(&stack.gateway("/openapi.json"), None).await;
    assert_eq!(doc["servers"][0]["url"], stack.gateway(""));
    let key = &doc["paths"]["/orders"]["post"]["parameters"][0];
    assert_eq!((key["name"].as_str(), key["schema"]["minLength"].as_i64()), (Some("Idempotency-Key"), Some(1)));
    for query in ["limit=", "status=", "limit=0", "status=LOST"] {
        let (status, err) = stack.get(&stack.gateway(&format!("/orders?{query}")), Some(ALICE)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {err}");
        assert_eq!(err["error"]["code"], "bad_request", "{query}");
    }
    let long = "k".repeat(256);
    for key in ["", " ", long.as_str()] {
        let (status, err, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[("idempotency-key", key)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}: {err}");
    }
    let (status, _, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[("idempotency-key", &"k".repeat(255))]).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_service_sends_the_spans_still_queued_before_it_exits() {
    let collector = Collector::start().await;
    // Batches that would wait a minute for company: only the flush at shutdown sends them.
    let mut options = Options::default();
    for kind in Kind::ALL {
        options = options.env(kind, "OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url).env(
            kind,
            "OTEL_BSP_SCHEDULE_DELAY",
            "60000",
        );
    }
    let mut stack = TestStack::with(options).await;
    let parent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[("traceparent", parent.as_str())]).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    // Once the notification is delivered, every service has finished its spans of the trace.
    let id = order["id"].as_str().unwrap().to_string();
    let delivered = eventually(Duration::from_secs(20), async || {
        stack.count(Kind::Notification, "SELECT count(*) FROM notifications WHERE order_id = ?1", &[&id]) == 1
    })
    .await;
    assert!(delivered, "the notification was never delivered");
    for kind in Kind::ALL {
        stack.process(kind).stop(Duration::from_secs(10));
    }
    let spans = collector.of_trace(CALLER_TRACE);
    let services: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
    let every = ["gateway", "inventory", "notification", "order", "payment", "user"];
    assert_eq!(services.into_iter().collect::<Vec<_>>(), every, "{spans:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saga_resumed_after_a_crash_keeps_its_callers_sampled_flag_and_tracestate() {
    let collector = Collector::start().await;
    let mut stack = TestStack::with(exporting_to(&collector.url, "2048")).await;
    let unsampled = "6bf92f3577b34da6a3ce929d0e0e4736";
    let sampled = "7bf92f3577b34da6a3ce929d0e0e4736";
    let mut ids = Vec::new();
    // Each order's saga stops halfway (the order service crashes) and resumes on the restart,
    // with no request to read the trace context from.
    for (trace, flags) in [(unsampled, "00"), (sampled, "01")] {
        stack.kill(Kind::Order);
        stack.spawn_with(Kind::Order, &[("SHOP_TEST_HOOKS", "1"), ("SHOP_CRASH_AFTER", "StockReserved")]).await;
        stack.wait_ready(Kind::Order).await;
        stack.wait_gateway_reaches_order().await;
        let parent = format!("00-{trace}-{CALLER_SPAN}-{flags}");
        let headers = [("traceparent", parent.as_str()), ("tracestate", "shop=resumed"), ("prefer", "wait=1")];
        stack.place(ALICE, items(&[("sku-1", 1)]), &headers).await;
        assert!(eventually(Duration::from_secs(10), async || stack.process(Kind::Order).exited()).await);
        stack.spawn(Kind::Order).await;
        ids.push(stack.count(Kind::Order, "SELECT count(*) FROM orders", &[]));
    }
    assert_eq!(ids, [1, 2]);
    // Every order's notification delivered: both sagas are done, and their spans exported.
    let done = eventually(Duration::from_secs(20), async || {
        stack.count(Kind::Notification, "SELECT count(*) FROM notifications", &[]) == 2
    })
    .await;
    assert!(done, "{}", stack.log(Kind::Order));
    let charged = eventually(Duration::from_secs(10), async || {
        collector.of_trace(sampled).iter().any(|s| s.service_name == "payment")
    })
    .await;
    assert!(charged, "the resumed saga's charge was not exported");
    for s in collector.of_trace(sampled) {
        assert_eq!(s.trace_state, "shop=resumed", "{} {}", s.service_name, s.name);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaked: Vec<String> =
        collector.of_trace(unsampled).iter().map(|s| format!("{} {}", s.service_name, s.name)).collect();
    assert!(leaked.is_empty(), "an unsampled trace was exported after the resume: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttling_collector_gets_the_batch_again_after_its_retry_after() {
    // The first 6 requests are refused: the first batch of several services, each tried again.
    let collector = Collector::throttling(6).await;
    let stack = TestStack::with(exporting_to(&collector.url, "2048")).await;
    let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let trace_id = order["trace_id"].as_str().unwrap().to_string();
    let gateway_span = eventually(Duration::from_secs(20), async || {
        collector.of_trace(&trace_id).iter().any(|s| s.service_name == "gateway")
    })
    .await;
    assert!(gateway_span, "the order's gateway span never arrived: {:?}", collector.of_trace(&trace_id));
    assert!(collector.refused.load(std::sync::atomic::Ordering::SeqCst) >= 6);
    // Nothing was given up on, by any service: the refused batches were sent again.
    for kind in Kind::ALL {
        let text = stack.http.get(stack.url(kind, "/metrics")).send().await.unwrap().text().await.unwrap();
        let failed =
            text.lines().find(|l| l.starts_with("shop_otlp_spans_dropped_total{") && l.contains("export_failed"));
        assert!(failed.is_some_and(|l| l.ends_with(" 0")), "{kind:?}: {text}");
    }
}
