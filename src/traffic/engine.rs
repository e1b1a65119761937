//! The load engine: order traffic against the gateway, and the throughput, latency
//! percentiles and outcome counts it came to (SPEC section 3, "Driving the flow").
//!
//! C workers share one [`Gateway`] client (one connection pool) and claim order numbers from one
//! atomic counter, so the run ends at exactly N orders however the work is spread. `rate` is a
//! schedule, not a token bucket: order `n` may not start before `start + n / rate`, which caps
//! the total start rate without a lock. Each worker keeps its own latency histogram and tallies
//! and hands them back when it ends, so the hot path takes no lock and allocates only for what
//! it sends.
//!
//! `shop load` and `shop chaos drill` both drive it from a [`LoadPlan`]; a drill also asks it
//! to keep one [`Sample`] per order for its before/during/after windows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::gateway::{root_cause, Gateway, HeaderError, OrderBody, Outcome, Place, Token, Wait};

/// Slowest latency the histogram tracks (one hour, in µs); slower requests are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Most orders in flight at once: each is a task and a connection, and more than this only
/// measures the machine running the load.
pub const MAX_CONCURRENCY: u64 = 10_000;
/// What a request may take beyond the gateway's wait budget before it counts as a timeout.
const TIMEOUT_SLACK: Duration = Duration::from_secs(5);

/// What traffic to send: built from `shop load`'s flags or a drill's `load:` section.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// Where the orders go.
    pub gateway: Gateway,
    /// (user, token) of the users who place the orders, in turn by order number.
    pub callers: Vec<(String, String)>,
    /// How many orders to place.
    pub orders: u64,
    /// How many are in flight at once.
    pub concurrency: u64,
    /// Cap on orders started per second, across all workers.
    pub rate: Option<f64>,
    /// No order starts after this long; in-flight orders still finish.
    pub duration: Option<Duration>,
    /// What each order contains: (product id, quantity).
    pub items: Vec<(String, i64)>,
    /// How long the gateway may hold an order before answering 202.
    pub wait: Duration,
    /// Keep a [`Sample`] per order (drills); `shop load` needs only the histogram.
    pub record: bool,
    /// Advanced once per order; hidden unless the caller shows it.
    pub progress: ProgressBar,
}

/// A plan that cannot run; the callers check their own inputs first, in their own words.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("a load needs at least 1 order")]
    NoOrders,
    #[error("a load's concurrency must be between 1 and {MAX_CONCURRENCY}, not {0}")]
    Concurrency(u64),
    #[error("a load's duration must be longer than 0s")]
    ZeroDuration,
    #[error("a load's rate must be orders per second above 0, not {0}")]
    Rate(f64),
    #[error("a load needs at least one user to place its orders")]
    NoCallers,
    #[error(transparent)]
    Header(#[from] HeaderError),
}

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("cannot reach the gateway at {gateway} ({cause}); is the stack running? start it with `shop up -d`")]
    Unreachable { gateway: String, cause: String },
    #[error("cannot keep latencies: {0}")]
    Histogram(String),
    #[error("a load worker ended abnormally: {0}")]
    Worker(String),
}

impl LoadPlan {
    /// Checks the plan's ranges (the callers report their own inputs in their own words first).
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.orders == 0 {
            return Err(PlanError::NoOrders);
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(PlanError::Concurrency(self.concurrency));
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err(PlanError::ZeroDuration);
        }
        if let Some(rate) = self.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(PlanError::Rate(rate));
        }
        if self.callers.is_empty() {
            return Err(PlanError::NoCallers);
        }
        Ok(())
    }
}

/// Everything a worker needs, built once so that each request only formats its own key.
struct Plan {
    gateway: Gateway,
    /// One per caller, used round-robin by order number.
    tokens: Vec<Token>,
    wait: Wait,
    /// The same for every order: only the idempotency key differs.
    body: OrderBody,
    /// Prefix of every idempotency key, unique per run so reruns never replay old orders.
    run_id: String,
    orders: u64,
    rate: Option<f64>,
    /// No order starts at or after this instant.
    deadline: Option<Instant>,
    timeout: Duration,
    started: Instant,
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
    /// Running counts, for whoever watches the run while it goes (a drill's `halt:` rules).
    live: LiveCounters,
}

/// Orders ended so far, by outcome; relaxed atomics, read once a second.
#[derive(Default)]
struct LiveCounters {
    done: AtomicU64,
    confirmed: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
}

/// A reading of the running counts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Live {
    pub done: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub errors: u64,
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
pub struct Sample {
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

    fn merge(&mut self, other: Tally) -> Result<(), LoadError> {
        self.latency_us.add(&other.latency_us).map_err(|e| LoadError::Histogram(e.to_string()))?;
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

/// The report, in the field names of the JSON contract.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
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

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Summary {
    /// The rows of the human report, as (metric, value); failure codes and error kinds are
    /// indented under their totals.
    pub fn rows(&self) -> Vec<(String, String)> {
        let l = &self.latency_ms;
        let mut rows: Vec<(String, String)> = [
            ("orders", self.orders.to_string()),
            ("duration", format!("{:.3} s", self.duration_s)),
            ("throughput", format!("{:.1} orders/s", self.throughput_per_s)),
            ("latency p50", format!("{:.2} ms", l.p50)),
            ("latency p90", format!("{:.2} ms", l.p90)),
            ("latency p99", format!("{:.2} ms", l.p99)),
            ("latency p99.9", format!("{:.2} ms", l.p999)),
            ("latency max", format!("{:.2} ms", l.max)),
            ("confirmed", self.confirmed.to_string()),
            ("failed", self.failed.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        rows.extend(self.failures_by_code.iter().map(|(code, n)| (format!("  {code}"), n.to_string())));
        rows.push(("pending".into(), self.pending.to_string()));
        rows.push(("errors".into(), self.errors.to_string()));
        rows.extend(self.errors_by_kind.iter().map(|(kind, n)| (format!("  {kind}"), n.to_string())));
        rows
    }
}

/// A finished run: the summary, and every order when they were asked for.
pub struct Report {
    pub summary: Summary,
    /// Sorted by start time; empty unless the run recorded samples.
    pub samples: Vec<Sample>,
}

/// A run of order traffic in progress: [`start`](Load::start) it, drive
/// [`join_next`](Load::join_next) until it returns `None`, then [`finish`](Load::finish) it.
pub struct Load {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    set: JoinSet<Tally>,
    /// The tallies of the workers that have ended, merged.
    total: Tally,
    bar: ProgressBar,
}

impl Load {
    /// Checks the plan and starts the workers.
    pub fn start(plan: LoadPlan) -> Result<Load, LoadError> {
        plan.validate()?;
        let tokens = (plan.callers.iter())
            .map(|(user, token)| Token::bearer(user, token))
            .collect::<Result<Vec<_>, _>>()
            .map_err(PlanError::from)?;
        let wait = Wait::new(plan.wait);
        let started = Instant::now();
        let run = Arc::new(Plan {
            gateway: plan.gateway,
            tokens,
            timeout: wait.duration() + TIMEOUT_SLACK,
            wait,
            body: OrderBody::new(&plan.items),
            run_id: crate::plumbing::ids::new("load"),
            orders: plan.orders,
            rate: plan.rate,
            // A deadline too far to represent is no deadline at all.
            deadline: plan.duration.and_then(|d| started.checked_add(d)),
            started,
            record: plan.record,
        });
        let workers = plan.concurrency.min(plan.orders);
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            next: AtomicU64::new(0),
            stop,
            answered: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            refused_limit: workers,
            live: LiveCounters::default(),
        });
        let histogram =
            Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| LoadError::Histogram(e.to_string()))?;
        let bar = plan.progress;
        let mut set = JoinSet::new();
        for _ in 0..workers {
            let tally = Tally::new(histogram.clone());
            set.spawn(worker(run.clone(), shared.clone(), bar.clone(), tally));
        }
        Ok(Load { plan: run, shared, set, total: Tally::new(histogram), bar })
    }

    /// When the run started: the zero of every [`Sample::start`].
    pub fn started(&self) -> Instant {
        self.plan.started
    }

    /// The prefix of every idempotency key the run sends (`{run_id}-{n}`), so its orders can
    /// be found in the order database.
    pub fn run_id(&self) -> &str {
        &self.plan.run_id
    }

    /// The progress bar, to print lines above it without tearing it.
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// The orders ended so far, by outcome.
    pub fn live(&self) -> Live {
        let l = &self.shared.live;
        Live {
            done: l.done.load(Ordering::Relaxed),
            confirmed: l.confirmed.load(Ordering::Relaxed),
            failed: l.failed.load(Ordering::Relaxed),
            errors: l.errors.load(Ordering::Relaxed),
        }
    }

    /// Starts no more orders; those in flight still finish.
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
    }

    /// Gives up on the orders in flight.
    pub fn abort(&mut self) {
        self.set.abort_all();
        self.bar.finish_and_clear();
    }

    /// Waits for the next worker to end and keeps its results; `None` once all have ended.
    /// Cancel-safe, so it can race Ctrl-C in a `select!`.
    pub async fn join_next(&mut self) -> Option<Result<(), LoadError>> {
        let joined = self.set.join_next().await?;
        Some(match joined {
            Ok(tally) => self.total.merge(tally),
            Err(e) => Err(LoadError::Worker(e.to_string())),
        })
    }

    /// The report, once every worker has ended; an error if the gateway never answered.
    pub fn finish(mut self) -> Result<Report, LoadError> {
        let elapsed = self.plan.started.elapsed();
        self.bar.finish_and_clear();
        if !self.shared.answered.load(Ordering::Relaxed) {
            if let Some(e) = &self.total.connect_error {
                let gateway = self.plan.gateway.base().to_string();
                return Err(LoadError::Unreachable { gateway, cause: root_cause(e) });
            }
        }
        let summary = summarize(&self.total, elapsed);
        let mut samples = std::mem::take(&mut self.total.samples);
        samples.sort_by_key(|s| s.start);
        Ok(Report { summary, samples })
    }
}

/// Claims order numbers until the run's end and places each order.
async fn worker(plan: Arc<Plan>, shared: Arc<Shared>, bar: ProgressBar, mut tally: Tally) -> Tally {
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
        let outcome = place(&plan, n).await;
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
        let live = &shared.live;
        live.done.fetch_add(1, Ordering::Relaxed);
        match &outcome {
            Ok(Outcome::Confirmed) => live.confirmed.fetch_add(1, Ordering::Relaxed),
            Ok(Outcome::Failed(_)) => live.failed.fetch_add(1, Ordering::Relaxed),
            Ok(Outcome::Pending) => 0,
            Ok(Outcome::Error(_)) | Err(_) => live.errors.fetch_add(1, Ordering::Relaxed),
        };
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
async fn place(plan: &Plan, n: u64) -> Result<Outcome, reqwest::Error> {
    // `tokens` is never empty (checked before the run), so the index is in range.
    let token = &plan.tokens[(n % plan.tokens.len() as u64) as usize];
    let key = format!("{}-{n}", plan.run_id);
    let order = Place { token, body: &plan.body, wait: &plan.wait, idempotency_key: Some(&key), timeout: plan.timeout };
    Ok(plan.gateway.place(&order).await?.outcome())
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

pub use crate::plumbing::metrics::round;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LoadPlan {
        LoadPlan {
            gateway: Gateway::new("http://127.0.0.1:1"),
            callers: vec![("alice".into(), "t".into())],
            orders: 10,
            concurrency: 2,
            rate: None,
            duration: None,
            items: vec![("sku-load".into(), 1)],
            wait: Duration::from_secs(10),
            record: false,
            progress: ProgressBar::hidden(),
        }
    }

    #[test]
    fn plans_out_of_range_are_refused() {
        assert!(plan().validate().is_ok());
        assert!(matches!(LoadPlan { orders: 0, ..plan() }.validate(), Err(PlanError::NoOrders)));
        assert!(matches!(LoadPlan { concurrency: 0, ..plan() }.validate(), Err(PlanError::Concurrency(0))));
        let zero = LoadPlan { duration: Some(Duration::ZERO), ..plan() };
        assert!(matches!(zero.validate(), Err(PlanError::ZeroDuration)));
        assert!(matches!(LoadPlan { rate: Some(f64::NAN), ..plan() }.validate(), Err(PlanError::Rate(_))));
        assert!(matches!(LoadPlan { callers: vec![], ..plan() }.validate(), Err(PlanError::NoCallers)));
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
        let rows = s.rows();
        assert!(rows.contains(&("  card_declined".to_string(), "3".to_string())), "{rows:?}");
        assert!(rows.contains(&("  http_503".to_string(), "4".to_string())), "{rows:?}");
    }
}
