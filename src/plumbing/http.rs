//! HTTP bootstrap shared by every service: health, readiness and metrics routes, the metrics
//! middleware, JSON 404/405 answers, the body limit, and graceful shutdown on Ctrl-C or SIGTERM.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::plumbing::breaker::Breakers;
use crate::plumbing::error::{ApiError, MAX_BODY_BYTES};
use crate::plumbing::faults::{FaultSet, Faults};
use crate::plumbing::metrics::Metrics;
use crate::plumbing::spans::SpanStore;
use crate::plumbing::trace::TraceCtx;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Says whether the service can do its work (database, required dependencies).
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>;
/// Renders service-specific gauges for `/metrics`.
pub type ExtraMetrics = Arc<dyn Fn() -> BoxFuture<String> + Send + Sync>;

#[derive(Clone)]
pub struct Common {
    pub service: &'static str,
    pub instance: String,
    pub metrics: Arc<Metrics>,
    pub ready: ReadyCheck,
    /// Readiness of this process's own resources only (its database), without its dependencies:
    /// what the supervisor probes, so a stopped dependency never gets its callers restarted.
    pub local_ready: ReadyCheck,
    pub extra_metrics: ExtraMetrics,
    pub spans: Arc<SpanStore>,
    /// The stack secret that admin endpoints require; without one they refuse every call.
    pub secret: Option<String>,
    pub faults: Arc<Faults>,
    pub breakers: Arc<Breakers>,
}

/// Wraps a service's own routes with what every service answers.
pub fn with_common_routes(routes: Router, common: Common) -> Router {
    let metrics = common.metrics.clone();
    let routes = routes
        .route_layer(axum::middleware::from_fn_with_state(common.faults.clone(), crate::plumbing::faults::inbound));
    // Only the service's own routes make spans: health probes would drown the traces.
    let routes = routes.route_layer(axum::middleware::from_fn_with_state(common.spans.clone(), trace_requests));
    // The secret is checked by a layer, before any handler's extractors run: a caller without it
    // learns nothing from the body's validation, and a large or slow body is never read.
    let admin = Router::new()
        .route("/admin/spans", get(admin_spans))
        .route("/admin/faults", get(admin_faults).put(admin_set_faults).delete(admin_clear_faults))
        .route("/admin/breakers", get(admin_breakers));
    let admin = secret_required(admin, common.secret.clone());
    let shared = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(admin)
        .with_state(common);
    routes
        .merge(shared)
        .route_layer(axum::middleware::from_fn_with_state(metrics.clone(), record_metrics))
        .fallback(|| async { ApiError::not_found("no such route; see GET /openapi.json on the gateway") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(metrics, edge))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
}

/// The JSON 405 of a method a route does not take.
async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

/// A handler that panicked answers a JSON 500 instead of dropping the connection, and says so
/// in the log: a bug, but one the caller can see and a retry can get past.
fn panicked(why: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let why = why
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| why.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    ApiError::internal(format!("a request handler panicked: {why}")).into_response()
}

/// The size of `req`'s head as written on the wire in the canonical form (`NAME: VALUE` lines):
/// the request line, each header line and the blank line, with their CRLFs.
pub fn head_len(req: &Request) -> usize {
    let target = req.uri().path_and_query().map(|p| p.as_str().len()).unwrap_or(1);
    let target = if req.uri().scheme().is_some() { req.uri().to_string().len() } else { target };
    let request_line = req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len() + 2;
    let headers: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + 2 + value.len() + 2).sum();
    request_line + headers + 2
}

/// The outermost layer. It refuses a head over [`MAX_HEAD_BYTES`] with 431: hyper's own bound
/// is on its read buffer, so whether it trips depends on how the bytes happened to arrive; this
/// one depends only on the head, and hyper's stays as the backstop for a head that never ends.
/// And it counts, under the route `unmatched`, every answer no route counted (an unknown path, a
/// method a route does not take, a head too large), so `/metrics` shows all the traffic.
async fn edge(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let len = head_len(&req);
    let response = if len > MAX_HEAD_BYTES {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "head_too_large",
            format!("the request line and headers take {len} bytes; at most {MAX_HEAD_BYTES} are accepted"),
        )
        .into_response()
    } else {
        next.run(req).await
    };
    if response.extensions().get::<Counted>().is_none() {
        metrics.record(method.as_str(), UNMATCHED, response.status().as_u16(), start.elapsed());
    }
    response
}

/// The route label of the answers no route counted.
pub const UNMATCHED: &str = "unmatched";

/// Marks a response [`record_metrics`] has counted.
#[derive(Clone, Copy)]
struct Counted;

async fn healthz(State(c): State<Common>) -> Response {
    axum::Json(serde_json::json!({"status": "ok", "service": c.service, "instance": c.instance})).into_response()
}

#[derive(serde::Deserialize)]
struct ReadyQuery {
    /// `local`: only what this process owns (see [`Common::local_ready`]).
    scope: Option<String>,
}

async fn readyz(
    State(c): State<Common>,
    crate::plumbing::error::ApiQuery(q): crate::plumbing::error::ApiQuery<ReadyQuery>,
) -> Response {
    let check = match q.scope.as_deref() {
        Some("local") => &c.local_ready,
        Some(other) => {
            return ApiError::bad_request(format!("`scope` must be `local` or absent, not `{other}`")).into_response()
        }
        None => &c.ready,
    };
    match check().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why).into_response(),
    }
}

async fn metrics_text(State(c): State<Common>) -> Response {
    let mut extra = (c.extra_metrics)().await;
    c.breakers.render(&mut extra);
    if let Some(exporter) = c.spans.exporter() {
        exporter.render(&mut extra, "");
    }
    let body = c.metrics.render(c.service, &c.instance, &extra);
    ([(header::CONTENT_TYPE, crate::plumbing::metrics::CONTENT_TYPE)], body).into_response()
}

async fn record_metrics(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    // MatchedPath is a shared string: cloning it does not copy the route.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(req).await;
    if let Some(route) = route {
        metrics.record(method.as_str(), route.as_str(), response.status().as_u16(), start.elapsed());
        response.extensions_mut().insert(Counted);
    }
    response
}

/// The order a response concerns, for a handler that learns it only while serving (the gateway's
/// `POST /orders`): [`trace_requests`] puts it on the request's span.
#[derive(Clone, Debug)]
pub struct OrderId(pub String);

/// Records a server span per request, as a child of the caller's `traceparent` (or as the root
/// of a new trace), and hands its context to the handler as an extension.
///
/// The handler runs inside a tracing span carrying `trace_id`, `span_id` and `order_id` (from
/// the path or query, or recorded by the handler), so every log line written while serving the
/// request names them.
async fn trace_requests(State(spans): State<Arc<SpanStore>>, mut req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let parent = TraceCtx::from_headers(req.headers());
    let ctx = parent.as_ref().map(TraceCtx::child).unwrap_or_else(TraceCtx::new_root);
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str()).unwrap_or(req.uri().path());
    let name = format!("{} {route}", req.method());
    let order_id = crate::plumbing::spans::order_in(req.uri().path())
        .or_else(|| req.uri().query().and_then(crate::plumbing::spans::order_in));
    let span = tracing::info_span!(
        "request",
        trace_id = ctx.trace_id.as_str(),
        span_id = ctx.span_id.as_str(),
        order_id = tracing::field::Empty
    );
    if let Some(id) = &order_id {
        span.record("order_id", id.as_str());
    }
    req.extensions_mut().insert(ctx.clone());
    let start = crate::plumbing::time::now_us();
    let response = next.run(req).instrument(span).await;
    let order_id = order_id.or_else(|| response.extensions().get::<OrderId>().map(|o| o.0.clone()));
    spans.record_for_order(
        &ctx,
        parent.as_ref().map(|p| p.span_id.as_str()),
        name,
        start,
        response.status().as_u16().to_string(),
        order_id,
    );
    response
}

/// Compares the `x-shop-secret` header with the stack secret.
pub fn check_secret(secret: Option<&str>, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    if crate::plumbing::admin::secret_matches(secret, headers) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("admin endpoints need the stack secret in `x-shop-secret`"))
    }
}

/// `routes`, each answering 401 without the stack secret before its body is read (SPEC section
/// 17): the admin routes here, the registry's detours, the supervisor's control API.
///
/// A method a route does not take gets the 401 too, not a 405 that tells a caller without the
/// secret which methods there are: the routes' own 405 is set here, under the layer (a router's
/// `method_not_allowed_fallback` later on fills in only the routes that have none).
pub fn secret_required<S: Clone + Send + Sync + 'static>(routes: Router<S>, secret: Option<String>) -> Router<S> {
    routes
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(Arc::new(secret), require_secret))
}

/// Answers 401 to an admin request without the stack secret, before its body is read.
async fn require_secret(State(secret): State<Arc<Option<String>>>, req: Request, next: Next) -> Response {
    match check_secret(secret.as_deref(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct SpanQuery {
    trace_id: Option<String>,
    limit: Option<usize>,
}

async fn admin_spans(
    State(c): State<Common>,
    headers: axum::http::HeaderMap,
    crate::plumbing::error::ApiQuery(q): crate::plumbing::error::ApiQuery<SpanQuery>,
) -> Result<Response, ApiError> {
    check_secret(c.secret.as_deref(), &headers)?;
    let spans = match q.trace_id {
        Some(t) => c.spans.by_trace(&t),
        None => c.spans.recent(q.limit.unwrap_or(100).min(10_000)),
    };
    Ok(axum::Json(spans).into_response())
}

async fn admin_faults(State(c): State<Common>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    check_secret(c.secret.as_deref(), &headers)?;
    Ok(axum::Json(c.faults.current()).into_response())
}

async fn admin_set_faults(
    State(c): State<Common>,
    headers: axum::http::HeaderMap,
    crate::plumbing::error::JsonBody(update): crate::plumbing::error::JsonBody<FaultSet>,
) -> Result<Response, ApiError> {
    check_secret(c.secret.as_deref(), &headers)?;
    let set = c.faults.apply(update).map_err(ApiError::bad_request)?;
    tracing::warn!(faults = ?set, "faults changed");
    Ok(axum::Json(set).into_response())
}

#[derive(serde::Deserialize)]
struct ClearQuery {
    kind: Option<String>,
}

async fn admin_clear_faults(
    State(c): State<Common>,
    headers: axum::http::HeaderMap,
    crate::plumbing::error::ApiQuery(q): crate::plumbing::error::ApiQuery<ClearQuery>,
) -> Result<Response, ApiError> {
    check_secret(c.secret.as_deref(), &headers)?;
    c.faults.clear(q.kind.as_deref());
    tracing::info!(kind = q.kind.as_deref().unwrap_or("all"), "faults cleared");
    Ok(axum::Json(c.faults.current()).into_response())
}

async fn admin_breakers(State(c): State<Common>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    check_secret(c.secret.as_deref(), &headers)?;
    Ok(axum::Json(c.breakers.report()).into_response())
}

/// Largest request head accepted (exactly, by [`limit_head`]), and hyper's read buffer, which
/// cuts off a head that never ends.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// How long open connections get to finish after shutdown starts.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Set once this process's server starts to drain: requests that wait on something (an order
/// reaching a terminal state) answer with what they have instead of being cut off at the end
/// of [`DRAIN`]. One server per process, so one flag.
static DRAINING: std::sync::LazyLock<tokio::sync::watch::Sender<bool>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(false).0);

/// Resolves once this process's server has started to drain (Ctrl-C or SIGTERM).
pub async fn draining() {
    let mut rx = DRAINING.subscribe();
    let _ = rx.wait_for(|draining| *draining).await;
}

/// Whether this process's server is draining.
pub fn is_draining() -> bool {
    *DRAINING.borrow()
}

/// How [`serve`] ends once its shutdown future resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Ctrl-C or SIGTERM: stop accepting, give open connections [`DRAIN`] to finish.
    Drain,
    /// The supervisor is gone: nobody is left to wait for, and a child that lingers holds its
    /// port against the next start. Return at once; in-flight sagas resume on the next start.
    Abandon,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains open connections (or not,
/// if it resolves to [`Stop::Abandon`]) and says which it was.
///
/// Like `axum::serve`, with the limits it leaves out: a deadline for request headers, a bound
/// on their size, and an accept loop that survives running out of file descriptors.
///
/// `header_timeout` is the longest wait for a request's headers: a client that never finishes
/// them (slowloris) is disconnected instead of holding a connection forever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: std::time::Duration,
    shutdown: impl Future<Output = Stop>,
) -> Stop {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let stop = loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: wait for connections to close rather than spin or die.
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            stop = &mut shutdown => break stop,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = closed.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn).await;
                }
            }
        });
    };
    if stop == Stop::Abandon {
        // The connection tasks die with the runtime, which the caller is about to drop.
        return stop;
    }
    DRAINING.send_replace(true);
    let _ = closing.send(true);
    drop(closed);
    // Every connection task holds a receiver; when the last is gone, all have finished.
    let _ = tokio::time::timeout(DRAIN, closing.closed()).await;
    stop
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Resolves when the process `pid` (our supervisor) is gone: we were re-parented.
///
/// Polled every 100 ms: a child must be gone within a second of its supervisor (SPEC section
/// 17), and `getppid` costs next to nothing.
pub async fn parent_gone(pid: Option<i32>) {
    let Some(pid) = pid else { return std::future::pending().await };
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tick.tick().await;
        if parent_is_gone(Some(pid)) {
            tracing::warn!(supervisor = pid, "supervisor is gone; shutting down");
            return;
        }
    }
}

/// Whether the process `pid` (our supervisor) is no longer our parent. The supervisor also has
/// the kernel send us SIGTERM when it dies (`PR_SET_PDEATHSIG`); by then we are re-parented, so
/// this tells that SIGTERM from a stop asked for by someone still waiting for us.
pub fn parent_is_gone(pid: Option<i32>) -> bool {
    pid.is_some_and(|pid| nix::unistd::getppid().as_raw() != pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common() -> Common {
        let ok: ReadyCheck = Arc::new(|| Box::pin(async { Ok(()) }));
        Common {
            service: "user",
            instance: "user".into(),
            metrics: Arc::default(),
            ready: ok.clone(),
            local_ready: ok,
            extra_metrics: Arc::new(|| Box::pin(async { String::new() })),
            spans: Arc::new(SpanStore::new("user", "user")),
            secret: None,
            faults: Arc::new(Faults::new(None, None)),
            breakers: Arc::new(Breakers::new(crate::plumbing::breaker::BreakerConfig {
                failure_threshold: 5,
                open_for: std::time::Duration::from_secs(5),
                half_open_requests: 1,
            })),
        }
    }

    #[tokio::test]
    async fn a_handler_that_panics_answers_a_json_500_and_the_service_serves_on() {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let routes = Router::new().route("/boom", get(boom));
        let app = with_common_routes(routes, common());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let boom = client.get(format!("{base}/boom")).send().await.unwrap();
        assert_eq!(boom.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: serde_json::Value = boom.json().await.unwrap();
        assert_eq!(body["error"]["code"], "internal", "{body}");
        let health = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
    }
}
