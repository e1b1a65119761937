//! `shop load`: order traffic against the gateway, with a progress bar and a closing report of
//! throughput, latency percentiles and outcome counts (SPEC section 3, "Driving the flow").
//!
//! C workers share one pooled HTTP client and claim order numbers from one atomic counter, so
//! the run ends at exactly N orders however the work is spread. `--rate` is a schedule, not a
//! token bucket: order `n` may not start before `start + n / rate`, which caps the total start
//! rate without a lock. Each worker keeps its own latency histogram and tallies and hands them
//! back when it ends, so the hot path takes no lock and allocates only for what it sends.
//!
//! The engine ([`Load`]) is shared with `shop chaos drill`, which runs the same traffic under a
//! timeline of faults and asks it to keep one [`Sample`] per order for its before/during/after
//! windows.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::context::Context;
use super::target::{parse_item, GatewayArgs, Target};
use super::{exit, output, Failure};
use crate::plumbing::time::parse_duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many orders to place
    #[arg(long, default_value_t = 1000)]
    pub orders: u64,
    /// How many orders are in flight at once
    #[arg(short = 'c', long, default_value_t = 8)]
    pub concurrency: u64,
    /// Cap on how many orders start per second, across all workers (e.g. 200 or 200/s)
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Stop starting new orders after this long (e.g. 30s); in-flight orders still finish
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Fixture users who place the orders, in turn
    #[arg(long, value_delimiter = ',', default_value = "alice")]
    pub users: Vec<String>,
    /// What each order contains, SKU[:QTY]; repeat for more lines
    #[arg(long = "item", value_name = "SKU[:QTY]", value_parser = parse_item, default_value = "sku-load:1")]
    pub items: Vec<(String, i64)>,
    /// How long the gateway may wait for an order to finish before answering 202 (Prefer: wait)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
    #[command(flatten)]
    pub target: GatewayArgs,
}

/// `200` or `200/s`: orders per second, more than zero.
fn parse_rate(s: &str) -> Result<f64, String> {
    let number = s.trim().strip_suffix("/s").unwrap_or(s.trim());
    match number.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a rate; write orders per second, e.g. 200 or 200/s")),
    }
}

/// Slowest latency the histogram tracks (one hour, in µs); slower requests are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Most orders in flight at once: each is a task and a connection, and more than this only
/// measures the machine running `shop load`.
pub(super) const MAX_CONCURRENCY: u64 = 10_000;
/// What a request may take beyond the gateway's wait budget before it counts as a timeout.
const TIMEOUT_SLACK: Duration = Duration::from_secs(5);

/// Everything a worker needs, built once so that each request only formats its own key.
struct Plan {
    /// `{gateway}/orders`.
    url: String,
    /// `Bearer TOKEN` per user, used round-robin by order number.
    auth: Vec<HeaderValue>,
    /// `wait=SECONDS`, the same for every order.
    prefer: HeaderValue,
    /// The JSON body, the same for every order: only the idempotency key differs.
    body: String,
    /// Prefix of every idempotency key, unique per run so reruns never replay old orders.
    run_id: String,
    orders: u64,
    rate: Option<f64>,
    /// No order starts at or after this instant.
    deadline: Option<Instant>,
    timeout: Duration,
    started: Instant,
    /// Keep a [`Sample`] per order (drills); `shop load` needs only the histogram.
    record: bool,
}

/// State the workers share while they run.
struct Shared {
    /// The next order number to claim.
    next: AtomicU64,
    /// Set to stop starting orders (Ctrl-C, or the gateway is unreachable).
    stop: watch::Sender<bool>,
    /// Whether any request got an HTTP answer: until one does, failing to connect means the
    /// gateway is not there and the run ends instead of hammering a closed port.
    answered: AtomicBool,
    /// Connection failures seen before the first answer.
    refused: AtomicU64,
    /// How many refusals with no answer mean "unreachable": one per worker's first request.
    refused_limit: u64,
}

/// One worker's results, merged into the run's when it ends.
struct Tally {
    latency_us: Histogram<u64>,
    confirmed: u64,
    pending: u64,
    failures_by_code: BTreeMap<String, u64>,
    errors_by_kind: BTreeMap<String, u64>,
    /// The first failure to connect, for the "cannot reach the gateway" message.
    connect_error: Option<reqwest::Error>,
    /// Every order, when the plan asks for them; in no particular order across workers.
    samples: Vec<Sample>,
}

/// One order as a drill sees it: when it started, how long it took, what it came to.
#[derive(Clone, Debug)]
pub(super) struct Sample {
    /// When the request was sent, from the start of the run.
    pub start: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
}

impl Tally {
    fn new(latency_us: Histogram<u64>) -> Tally {
        Tally {
            latency_us,
            confirmed: 0,
            pending: 0,
            failures_by_code: BTreeMap::new(),
            errors_by_kind: BTreeMap::new(),
            connect_error: None,
            samples: Vec::new(),
        }
    }

    fn failed(&self) -> u64 {
        self.failures_by_code.values().sum()
    }

    fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }

    fn orders(&self) -> u64 {
        self.confirmed + self.pending + self.failed() + self.errors()
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us).map_err(|e| anyhow::anyhow!("cannot merge latency histograms: {e}"))?;
        self.confirmed += other.confirmed;
        self.pending += other.pending;
        for (code, n) in other.failures_by_code {
            *self.failures_by_code.entry(code).or_default() += n;
        }
        for (kind, n) in other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += n;
        }
        if self.connect_error.is_none() {
            self.connect_error = other.connect_error;
        }
        self.samples.extend(other.samples);
        Ok(())
    }
}

/// What one order came to.
#[derive(Clone, Debug)]
pub(super) enum Outcome {
    Confirmed,
    Failed(String),
    Pending,
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

/// The report, in the field names of the JSON contract.
#[derive(Serialize)]
pub(super) struct Summary {
    pub orders: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub pending: u64,
    pub errors: u64,
    pub duration_s: f64,
    pub throughput_per_s: f64,
    pub latency_ms: Latency,
    pub failures_by_code: BTreeMap<String, u64>,
    pub errors_by_kind: BTreeMap<String, u64>,
}

#[derive(Serialize)]
pub(super) struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// A finished run: the summary, and every order when they were asked for.
pub(super) struct Report {
    pub summary: Summary,
    /// Sorted by start time; empty unless the run recorded samples.
    pub samples: Vec<Sample>,
}

/// A run of order traffic in progress: [`start`](Load::start) it, drive
/// [`join_next`](Load::join_next) until it returns `None`, then [`finish`](Load::finish) it.
pub(super) struct Load {
    target: Target,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    set: JoinSet<Tally>,
    /// The tallies of the workers that have ended, merged.
    total: Tally,
    bar: ProgressBar,
}

impl Load {
    /// Checks the arguments (usage errors), finds the gateway and the users' tokens, and starts
    /// the workers; with `record`, every order is kept as a [`Sample`].
    pub(super) async fn start(ctx: &Context, args: &Args, record: bool) -> anyhow::Result<Load> {
        if args.orders == 0 {
            return Err(Failure::usage("`--orders` must be at least 1"));
        }
        if !(1..=MAX_CONCURRENCY).contains(&args.concurrency) {
            return Err(Failure::usage(format!(
                "`--concurrency` must be between 1 and {MAX_CONCURRENCY}, not {}",
                args.concurrency
            )));
        }
        if args.duration.is_some_and(|d| d.is_zero()) {
            return Err(Failure::usage("`--duration` must be longer than 0s, e.g. 30s"));
        }
        let users: Vec<&str> = args.users.iter().map(|u| u.trim()).filter(|u| !u.is_empty()).collect();
        if users.is_empty() {
            return Err(Failure::usage("`--users` names no user; give fixture users, e.g. --users alice,bob"));
        }
        let target = Target::resolve(ctx, &args.target).await?;
        let mut auth = Vec::with_capacity(users.len());
        for user in &users {
            let token = target.token(user)?;
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Failure::usage(format!("the dev token of `{user}` is not a valid header value; fix the user fixtures"))
            })?;
            // Keeps the token out of any debug output of the request.
            value.set_sensitive(true);
            auth.push(value);
        }
        let items: Vec<_> =
            args.items.iter().map(|(sku, qty)| serde_json::json!({"product_id": sku, "quantity": qty})).collect();
        let body = serde_json::json!({ "items": items }).to_string();
        // Always a valid header value: a decimal number after ASCII text.
        let prefer = HeaderValue::from_str(&format!("wait={}", args.wait.as_secs_f64()))
            .map_err(|_| Failure::usage(format!("`--wait {:?}` cannot be sent as a header", args.wait)))?;
        // Capped like the gateway's own budget so a huge --wait cannot overflow the timeout.
        let wait = args.wait.min(Duration::from_secs(3600));

        let bar = progress_bar(args.orders, ctx.quiet);
        let started = Instant::now();
        let plan = Arc::new(Plan {
            url: format!("{}/orders", target.gateway),
            auth,
            prefer,
            body,
            run_id: crate::plumbing::ids::new("load"),
            orders: args.orders,
            rate: args.rate,
            // A deadline too far to represent is no deadline at all.
            deadline: args.duration.and_then(|d| started.checked_add(d)),
            timeout: wait + TIMEOUT_SLACK,
            started,
            record,
        });
        let workers = args.concurrency.min(args.orders);
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            next: AtomicU64::new(0),
            stop,
            answered: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            refused_limit: workers,
        });
        let histogram = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
            .map_err(|e| anyhow::anyhow!("cannot create the latency histogram: {e}"))?;
        let http = crate::plumbing::client::http_client();
        let mut set = JoinSet::new();
        for _ in 0..workers {
            let tally = Tally::new(histogram.clone());
            set.spawn(worker(http.clone(), plan.clone(), shared.clone(), bar.clone(), tally));
        }
        Ok(Load { target, plan, shared, set, total: Tally::new(histogram), bar })
    }

    /// When the run started: the zero of every [`Sample::start`].
    pub(super) fn started(&self) -> Instant {
        self.plan.started
    }

    /// The prefix of every idempotency key the run sends (`{run_id}-{n}`), so its orders can
    /// be found in the order database.
    pub(super) fn run_id(&self) -> &str {
        &self.plan.run_id
    }

    /// The progress bar, to print lines above it without tearing it.
    pub(super) fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Starts no more orders; those in flight still finish.
    pub(super) fn stop(&self) {
        self.shared.stop.send_replace(true);
    }

    /// Gives up on the orders in flight.
    pub(super) fn abort(&mut self) {
        self.set.abort_all();
        self.bar.finish_and_clear();
    }

    /// Waits for the next worker to end and keeps its results; `None` once all have ended.
    /// Cancel-safe, so it can race Ctrl-C in a `select!`.
    pub(super) async fn join_next(&mut self) -> Option<anyhow::Result<()>> {
        let joined = self.set.join_next().await?;
        Some(match joined {
            Ok(tally) => self.total.merge(tally),
            Err(e) => Err(anyhow::anyhow!("a load worker ended abnormally: {e}")),
        })
    }

    /// The report, once every worker has ended; an error if the gateway never answered.
    pub(super) fn finish(mut self) -> anyhow::Result<Report> {
        let elapsed = self.plan.started.elapsed();
        self.bar.finish_and_clear();
        if !self.shared.answered.load(Ordering::Relaxed) {
            if let Some(e) = &self.total.connect_error {
                return Err(self.target.unreachable(e));
            }
        }
        let summary = summarize(&self.total, elapsed);
        let mut samples = std::mem::take(&mut self.total.samples);
        samples.sort_by_key(|s| s.start);
        Ok(Report { summary, samples })
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let mut load = Load::start(ctx, &args, false).await?;
    // One listener for the whole run, so a Ctrl-C between two polls is not lost.
    let mut interrupts =
        signal(SignalKind::interrupt()).map_err(|e| anyhow::anyhow!("cannot watch for Ctrl-C: {e}"))?;
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = load.join_next() => match joined {
                None => break,
                Some(merged) => merged?,
            },
            Some(()) = interrupts.recv() => {
                if interrupted {
                    load.abort();
                    return Err(Failure::runtime("interrupted; the orders in flight were not waited for"));
                }
                interrupted = true;
                load.stop();
                load.bar().suspend(|| {
                    eprintln!("stopping: waiting for the orders in flight (Ctrl-C again to quit at once)")
                });
            }
        }
    }
    let summary = load.finish()?.summary;
    if ctx.json {
        output::print_json(&summary);
    } else {
        println!("{}", summary_table(&summary));
    }
    if summary.orders > 0 && summary.errors == summary.orders {
        let kinds: Vec<String> = summary.errors_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        return Err(Failure::runtime(format!(
            "every order failed with an error ({}); check the stack with `shop ps` and `shop logs gateway`",
            kinds.join(", ")
        )));
    }
    Ok(exit::OK)
}

/// Claims order numbers until the run's end and places each order.
async fn worker(
    http: reqwest::Client,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    bar: ProgressBar,
    mut tally: Tally,
) -> Tally {
    let mut stop = shared.stop.subscribe();
    loop {
        if *stop.borrow() {
            break;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n >= plan.orders {
            break;
        }
        if let Some(rate) = plan.rate {
            // A start time too far to represent would never come: the run is over for this worker.
            let Some(at) =
                Duration::try_from_secs_f64(n as f64 / rate).ok().and_then(|offset| plan.started.checked_add(offset))
            else {
                break;
            };
            if plan.deadline.is_some_and(|d| at >= d) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if plan.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let sent = Instant::now();
        let outcome = place(&http, &plan, n).await;
        if outcome.is_ok() && !shared.answered.load(Ordering::Relaxed) {
            shared.answered.store(true, Ordering::Relaxed);
        }
        let latency = sent.elapsed();
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        tally.latency_us.saturating_record(micros);
        if plan.record {
            let outcome = match &outcome {
                Ok(o) => o.clone(),
                Err(_) => Outcome::Error("transport".to_string()),
            };
            tally.samples.push(Sample { start: sent.duration_since(plan.started), latency, outcome });
        }
        match outcome {
            Ok(Outcome::Confirmed) => tally.confirmed += 1,
            Ok(Outcome::Pending) => tally.pending += 1,
            Ok(Outcome::Failed(code)) => *tally.failures_by_code.entry(code).or_default() += 1,
            Ok(Outcome::Error(kind)) => *tally.errors_by_kind.entry(kind).or_default() += 1,
            Err(e) => {
                *tally.errors_by_kind.entry("transport".to_string()).or_default() += 1;
                if e.is_connect() && !shared.answered.load(Ordering::Relaxed) {
                    let refused = shared.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    if refused >= shared.refused_limit {
                        shared.stop.send_replace(true);
                    }
                    tally.connect_error.get_or_insert(e);
                }
            }
        }
        bar.inc(1);
    }
    tally
}

/// Places order `n` and classifies the answer; `Err` is a transport failure (no answer, or
/// the body was cut off).
async fn place(http: &reqwest::Client, plan: &Plan, n: u64) -> Result<Outcome, reqwest::Error> {
    // `auth` is never empty (checked before the run), so the index is in range.
    let auth = plan.auth[(n % plan.auth.len() as u64) as usize].clone();
    let response = http
        .post(&plan.url)
        .timeout(plan.timeout)
        .header(AUTHORIZATION, auth)
        .header("prefer", plan.prefer.clone())
        .header("idempotency-key", format!("{}-{n}", plan.run_id))
        .header(CONTENT_TYPE, "application/json")
        .body(plan.body.clone())
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    Ok(classify(status, &body))
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
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["error"]["code"].as_str().map(str::to_string)
}

/// A bar of orders done with the live rate, on stderr only when it is a terminal and not `-q`.
fn progress_bar(len: u64, quiet: bool) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() && !quiet {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} orders  {rate}  {elapsed}")
        .map(|s| {
            s.with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} orders/s", state.per_sec());
            })
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let visible = !target.is_hidden();
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(style);
    if visible {
        // Redraws the elapsed time and rate even while every order is slow.
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    bar
}

fn summarize(total: &Tally, elapsed: Duration) -> Summary {
    let h = &total.latency_us;
    let ms = |us: u64| round(us as f64 / 1000.0, 2);
    let orders = total.orders();
    let secs = elapsed.as_secs_f64();
    Summary {
        orders,
        confirmed: total.confirmed,
        failed: total.failed(),
        pending: total.pending,
        errors: total.errors(),
        duration_s: round(secs, 3),
        throughput_per_s: if secs > 0.0 { round(orders as f64 / secs, 1) } else { 0.0 },
        latency_ms: Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        },
        failures_by_code: total.failures_by_code.clone(),
        errors_by_kind: total.errors_by_kind.clone(),
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

pub(super) fn summary_table(s: &Summary) -> comfy_table::Table {
    let mut t = output::table(&["METRIC", "VALUE"]);
    let l = &s.latency_ms;
    let rows = [
        ("orders", s.orders.to_string()),
        ("duration", format!("{:.3} s", s.duration_s)),
        ("throughput", format!("{:.1} orders/s", s.throughput_per_s)),
        ("latency p50", format!("{:.2} ms", l.p50)),
        ("latency p90", format!("{:.2} ms", l.p90)),
        ("latency p99", format!("{:.2} ms", l.p99)),
        ("latency p99.9", format!("{:.2} ms", l.p999)),
        ("latency max", format!("{:.2} ms", l.max)),
        ("confirmed", s.confirmed.to_string()),
        ("failed", s.failed.to_string()),
    ];
    for (name, value) in rows {
        t.add_row(vec![name.to_string(), value]);
    }
    for (code, n) in &s.failures_by_code {
        t.add_row(vec![format!("  {code}"), n.to_string()]);
    }
    t.add_row(vec!["pending".to_string(), s.pending.to_string()]);
    t.add_row(vec!["errors".to_string(), s.errors.to_string()]);
    for (kind, n) in &s.errors_by_kind {
        t.add_row(vec![format!("  {kind}"), n.to_string()]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_or_without_per_second() {
        assert_eq!(parse_rate("200").unwrap(), 200.0);
        assert_eq!(parse_rate("12.5/s").unwrap(), 12.5);
        for bad in ["0", "-3", "fast", "200/m", "inf", "NaN"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_classified_by_status_and_body() {
        let body = |s: &str| s.as_bytes().to_vec();
        assert!(matches!(
            classify(StatusCode::CREATED, &body(r#"{"status":"CONFIRMED","failure":null}"#)),
            Outcome::Confirmed
        ));
        assert!(matches!(classify(StatusCode::OK, &body(r#"{"status":"PENDING"}"#)), Outcome::Pending));
        assert!(matches!(classify(StatusCode::ACCEPTED, b""), Outcome::Pending));
        match classify(
            StatusCode::CREATED,
            &body(r#"{"status":"FAILED","failure":{"step":"payment","code":"card_declined"}}"#),
        ) {
            Outcome::Failed(code) => assert_eq!(code, "card_declined"),
            _ => panic!("not a failure"),
        }
        match classify(StatusCode::SERVICE_UNAVAILABLE, b"{}") {
            Outcome::Error(kind) => assert_eq!(kind, "http_503"),
            _ => panic!("not an error"),
        }
        match classify(StatusCode::CREATED, b"not json") {
            Outcome::Error(kind) => assert_eq!(kind, "invalid_response"),
            _ => panic!("not an error"),
        }
    }

    #[test]
    fn counts_add_up_to_the_orders_sent() {
        let h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap();
        let mut a = Tally::new(h.clone());
        a.confirmed = 3;
        a.failures_by_code.insert("card_declined".into(), 2);
        let mut b = Tally::new(h);
        b.pending = 1;
        b.errors_by_kind.insert("http_503".into(), 4);
        b.failures_by_code.insert("card_declined".into(), 1);
        a.merge(b).unwrap();
        let s = summarize(&a, Duration::from_secs(2));
        assert_eq!((s.orders, s.confirmed, s.failed, s.pending, s.errors), (11, 3, 3, 1, 4));
        assert_eq!(s.failures_by_code["card_declined"], 3);
        assert_eq!(s.throughput_per_s, 5.5);
    }
}
