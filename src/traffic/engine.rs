//! The load engine: order traffic against the gateway, and the throughput, latency
//! percentiles and outcome counts it came to (SPEC section 3, "Driving the flow").
//!
//! Two modes (SPEC section 14). Closed loop (no `rate`): C workers share one [`Gateways`]
//! client (one connection pool, balanced over the gateways) and claim order numbers from one atomic counter, each starting its next
//! order when the last one answered, so the run ends at exactly N orders however the work is
//! spread. Open loop (`rate` R): one scheduler makes order `n` due at `start + n / R` whatever
//! earlier orders did and starts each in its own task, with at most C in flight; an order due
//! while C are in flight is `dropped`. A stall so shows up as latency and drops instead of
//! quietly lowering the offered load (coordinated omission): latency is measured from the
//! scheduled start, and the service time from the actual send is kept beside it.
//!
//! Each worker (or the scheduler) keeps its own histograms, tallies and per-second timeline and
//! hands them back when it ends, so the hot path takes no lock.
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

use super::gateway::{root_cause, Gateways, HeaderError, OrderBody, Outcome, Place, Token, Wait};
use super::workload::{Cycle, MixError};

/// Slowest latency the histogram tracks (one hour, in µs); slower requests are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Most orders in flight at once: each is a task and a connection, and more than this only
/// measures the machine running the load.
pub const MAX_CONCURRENCY: u64 = 10_000;
/// Open-loop start rates, orders per second: from one order every 1,000 s to a million a second.
/// Outside them the schedule's arithmetic leaves what a clock can hold (a rate of 1e-300 puts
/// the second order past the end of time) while no load generator could offer the top anyway.
pub const RATES: std::ops::RangeInclusive<f64> = 0.001..=1_000_000.0;
/// Cap on orders in flight in an open-loop run when the caller sets none.
pub const OPEN_LOOP_CONCURRENCY: u64 = 1000;
/// Below this share of the target start rate the report warns that the load was not offered.
pub const RATE_WARNING_SHARE: f64 = 0.95;
/// Connection refusals before any answer that end an open-loop run as "unreachable".
const OPEN_LOOP_REFUSALS: u64 = 16;
/// What a request may take beyond the gateway's wait budget before it counts as a timeout.
const TIMEOUT_SLACK: Duration = Duration::from_secs(5);

/// What traffic to send: built from `shop load`'s flags or a drill's `load:` section.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// Where the orders go: balanced over the gateways, past one that refuses connections.
    pub gateways: Gateways,
    /// (user, token) of the users who place the orders, in turn by order number.
    pub callers: Vec<(String, String)>,
    /// How many orders to place.
    pub orders: u64,
    /// Closed loop: how many are in flight at once. Open loop: the cap on orders in flight.
    pub concurrency: u64,
    /// Open loop: order `n` starts at `start + n / rate`. `None`: closed loop.
    pub rate: Option<f64>,
    /// No order starts after this long; in-flight orders still finish.
    pub duration: Option<Duration>,
    /// What each order contains: (product id, quantity); with item weights, one of them.
    pub items: Vec<(String, i64)>,
    /// Weights of the callers and items; the default is callers in turn and every item.
    pub weights: Weights,
    /// How long the gateway may hold an order before answering 202.
    pub wait: Duration,
    /// Keep a [`Sample`] per order (drills); `shop load` needs only the histogram.
    pub record: bool,
    /// Advanced once per order; hidden unless the caller shows it.
    pub progress: ProgressBar,
}

/// How the workload is mixed: `users[i]` weighs `callers[i]`, `items[i]` weighs `items[i]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Weights {
    /// `None`: callers in turn, by order number.
    pub users: Option<Vec<u32>>,
    /// `None`: every order holds every item; `Some`: each order holds one item, by weight.
    pub items: Option<Vec<u32>>,
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
    // The bounds of `RATES`, written out: the derive takes no constants (a test holds them equal).
    #[error("a load's rate must be 0.001 to 1000000 orders per second, not {0:e}")]
    Rate(f64),
    #[error("a load needs at least one user to place its orders")]
    NoCallers,
    #[error("a load needs at least one item in its orders")]
    NoItems,
    #[error("the {what} weights number {weights}, but there are {choices} {what}s")]
    Weights { what: &'static str, weights: usize, choices: usize },
    #[error(transparent)]
    Mix(#[from] MixError),
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
        if let Some(rate) = self.rate.filter(|r| !RATES.contains(r)) {
            return Err(PlanError::Rate(rate));
        }
        if self.callers.is_empty() {
            return Err(PlanError::NoCallers);
        }
        if self.items.is_empty() {
            return Err(PlanError::NoItems);
        }
        for (what, weights, choices) in
            [("user", &self.weights.users, self.callers.len()), ("item", &self.weights.items, self.items.len())]
        {
            if let Some(w) = weights.as_ref().filter(|w| w.len() != choices) {
                return Err(PlanError::Weights { what, weights: w.len(), choices });
            }
        }
        Ok(())
    }
}

/// Everything a worker needs, built once so that each request only formats its own key.
struct Plan {
    gateways: Gateways,
    /// One per caller, picked by `callers` from the order number.
    tokens: Vec<Token>,
    callers: Cycle,
    wait: Wait,
    /// The possible bodies, picked by `bodies` from the order number: only the idempotency
    /// key differs between orders with the same body.
    body: Vec<OrderBody>,
    bodies: Cycle,
    /// Prefix of every idempotency key, unique per run so reruns never replay old orders.
    run_id: String,
    orders: u64,
    rate: Option<f64>,
    concurrency: u64,
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
    /// Set to give up on the orders in flight too, so the workers hand back what they counted
    /// at once (an interrupted drill still reports what its load saw).
    abandon: watch::Sender<bool>,
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
    /// Latencies (µs, from the scheduled start) of the orders answered since the last
    /// [`Load::take_latencies_us`]; kept only when the plan records samples (drills), whose
    /// latency halt rules drain it every second. A std mutex: held for a push, never across
    /// an await.
    latencies_us: std::sync::Mutex<Vec<u64>>,
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
    /// From the scheduled start (the send, in closed loop) to the answer.
    latency_us: Histogram<u64>,
    /// From the actual send to the answer.
    service_us: Histogram<u64>,
    confirmed: u64,
    dropped: u64,
    /// Orders started and given up on unanswered ([`Load::abandon`]).
    abandoned: u64,
    /// Open loop: how long the schedule ran: its slots, or until the slot after the last send
    /// when sends fell behind; the achieved start rate is measured over it.
    scheduled_for: Duration,
    /// Per second of the run: what started, what ended and how long it took.
    seconds: BTreeMap<u64, Second>,
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
    /// When the order was due (open loop) or sent (closed loop), from the start of the run.
    pub start: Duration,
    /// From `start` to the answer, or to when it was given up on.
    pub latency: Duration,
    pub outcome: Outcome,
    /// Whether it was answered; not when the run was interrupted with it in flight
    /// ([`Load::abandon`]): then its outcome is `Pending`, and its latency no measure.
    pub answered: bool,
}

/// One second of a run as it is tallied.
#[derive(Default)]
struct Second {
    started: u64,
    dropped: u64,
    completed: u64,
    confirmed: u64,
    failed: u64,
    errors: u64,
    /// Latencies (from the scheduled start) of the orders answered in this second, in µs.
    latencies_us: Vec<u64>,
}

impl Second {
    fn merge(&mut self, o: Second) {
        self.started += o.started;
        self.dropped += o.dropped;
        self.completed += o.completed;
        self.confirmed += o.confirmed;
        self.failed += o.failed;
        self.errors += o.errors;
        self.latencies_us.extend(o.latencies_us);
    }
}

/// One order's timings and answer, as its task hands it back.
struct Done {
    /// When it was due: the schedule's slot in open loop, the send in closed loop.
    due: Instant,
    sent: Instant,
    answered: Instant,
    outcome: Result<Outcome, reqwest::Error>,
}

impl Tally {
    fn new(latency_us: Histogram<u64>) -> Tally {
        Tally {
            service_us: latency_us.clone(),
            latency_us,
            confirmed: 0,
            dropped: 0,
            abandoned: 0,
            scheduled_for: Duration::ZERO,
            seconds: BTreeMap::new(),
            pending: 0,
            failures_by_code: BTreeMap::new(),
            errors_by_kind: BTreeMap::new(),
            connect_error: None,
            samples: Vec::new(),
        }
    }

    /// An order started at `due` and given up on unanswered: it started all the same.
    fn abandoned(&mut self, plan: &Plan, due: Instant) {
        self.abandoned += 1;
        self.seconds.entry(second_of(plan, due)).or_default().started += 1;
        if plan.record {
            let (start, latency) = (due.saturating_duration_since(plan.started), due.elapsed());
            self.samples.push(Sample { start, latency, outcome: Outcome::Pending, answered: false });
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
        self.service_us.add(&other.service_us).map_err(|e| LoadError::Histogram(e.to_string()))?;
        self.confirmed += other.confirmed;
        self.dropped += other.dropped;
        self.abandoned += other.abandoned;
        self.scheduled_for = self.scheduled_for.max(other.scheduled_for);
        for (t, second) in other.seconds {
            self.seconds.entry(t).or_default().merge(second);
        }
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

    /// Counts one answered (or failed) order in the totals, its seconds and its sample.
    fn record(&mut self, plan: &Plan, shared: &Shared, done: Done) {
        let Done { due, sent, answered, outcome } = done;
        if outcome.is_ok() && !shared.answered.load(Ordering::Relaxed) {
            shared.answered.store(true, Ordering::Relaxed);
        }
        let latency = answered.saturating_duration_since(due);
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(micros(latency));
        self.service_us.saturating_record(micros(answered.saturating_duration_since(sent)));
        self.seconds.entry(second_of(plan, sent)).or_default().started += 1;
        let second = self.seconds.entry(second_of(plan, answered)).or_default();
        second.completed += 1;
        second.latencies_us.push(micros(latency));
        let live = &shared.live;
        live.done.fetch_add(1, Ordering::Relaxed);
        match &outcome {
            Ok(Outcome::Confirmed) => live.confirmed.fetch_add(1, Ordering::Relaxed),
            Ok(Outcome::Failed(_)) => live.failed.fetch_add(1, Ordering::Relaxed),
            Ok(Outcome::Pending) => 0,
            Ok(Outcome::Error(_)) | Err(_) => live.errors.fetch_add(1, Ordering::Relaxed),
        };
        if plan.record {
            // A poisoned lock only means another worker panicked; its data is still a list.
            live.latencies_us.lock().unwrap_or_else(|e| e.into_inner()).push(micros(latency));
        }
        match &outcome {
            Ok(Outcome::Confirmed) => second.confirmed += 1,
            Ok(Outcome::Failed(_)) => second.failed += 1,
            Ok(Outcome::Error(_)) | Err(_) => second.errors += 1,
            Ok(Outcome::Pending) => {}
        }
        if plan.record {
            let outcome = match &outcome {
                Ok(o) => o.clone(),
                Err(_) => Outcome::Error("transport".to_string()),
            };
            self.samples.push(Sample {
                start: due.saturating_duration_since(plan.started),
                latency,
                outcome,
                answered: true,
            });
        }
        match outcome {
            Ok(Outcome::Confirmed) => self.confirmed += 1,
            Ok(Outcome::Pending) => self.pending += 1,
            Ok(Outcome::Failed(code)) => *self.failures_by_code.entry(code).or_default() += 1,
            Ok(Outcome::Error(kind)) => *self.errors_by_kind.entry(kind).or_default() += 1,
            Err(e) => {
                *self.errors_by_kind.entry("transport".to_string()).or_default() += 1;
                if e.is_connect() && !shared.answered.load(Ordering::Relaxed) {
                    let refused = shared.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    if refused >= shared.refused_limit {
                        shared.stop.send_replace(true);
                    }
                    self.connect_error.get_or_insert(e);
                }
            }
        }
    }
}

/// The second of the run an instant falls in, from 0.
fn second_of(plan: &Plan, at: Instant) -> u64 {
    at.saturating_duration_since(plan.started).as_secs()
}

/// How orders were started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each worker starts its next order when the last one answered (no `rate`).
    Closed,
    /// Order `n` starts at `start + n / rate`, whatever earlier orders did.
    Open,
}

/// The report, in the field names of the JSON contract.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Open loop (`rate` set: orders start on a schedule) or closed loop (each worker waits).
    pub mode: Mode,
    pub orders: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub pending: u64,
    pub errors: u64,
    /// Orders the open-loop schedule called for that were still waiting for a free slot under
    /// the concurrency cap when the run's duration ended (or it was stopped).
    pub dropped: u64,
    /// Orders started and still unanswered when the run was interrupted: not counted in
    /// `orders`, but in the achieved start rate. Only an interrupted drill has any.
    #[serde(skip_serializing_if = "is_zero")]
    pub abandoned: u64,
    pub duration_s: f64,
    pub throughput_per_s: f64,
    /// Orders per second the schedule asked for; `None` in closed loop.
    pub target_rate_per_s: Option<f64>,
    /// Orders per second that actually started.
    pub achieved_rate_per_s: f64,
    /// The achieved start rate fell below 95% of the target: the load asked for was not offered.
    pub rate_below_target: bool,
    /// From the scheduled start to the answer (no coordinated omission); in closed loop the
    /// scheduled start is the send.
    pub latency_ms: Latency,
    /// From the actual send to the answer.
    pub service_time_ms: Latency,
    pub failures_by_code: BTreeMap<String, u64>,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// One entry per second of the run, from 0, seconds with nothing in them included.
    pub timeline: Vec<TimelineSecond>,
}

/// One second of the run: orders started and answered in it, and the latency of those answered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineSecond {
    /// Seconds since the start of the run.
    pub t: u64,
    pub started: u64,
    /// Orders the open-loop schedule called for in this second that could not start.
    pub dropped: u64,
    pub completed: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub errors: u64,
    /// `None` when no order was answered in this second.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
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
        let st = &self.service_time_ms;
        let mode = match (self.mode, self.target_rate_per_s) {
            (Mode::Open, Some(rate)) => format!("open loop, {rate} orders/s scheduled"),
            _ => "closed loop".to_string(),
        };
        let mut rows: Vec<(String, String)> =
            vec![("mode".to_string(), mode), ("orders".to_string(), self.orders.to_string())];
        if self.abandoned > 0 {
            rows.push(("abandoned in flight".into(), self.abandoned.to_string()));
        }
        if let Some(target) = self.target_rate_per_s {
            rows.push(("dropped".into(), self.dropped.to_string()));
            rows.push(("target start rate".into(), format!("{target:.1} orders/s")));
            let warning = if self.rate_below_target { "  (below 95% of the target)" } else { "" };
            rows.push(("achieved start rate".into(), format!("{:.1} orders/s{warning}", self.achieved_rate_per_s)));
        }
        let latency = if self.mode == Mode::Open { "latency (from scheduled start)" } else { "latency" };
        rows.extend(
            [
                ("duration", format!("{:.3} s", self.duration_s)),
                ("throughput", format!("{:.1} orders/s", self.throughput_per_s)),
                ("p50", format!("{:.2} ms", l.p50)),
                ("p90", format!("{:.2} ms", l.p90)),
                ("p99", format!("{:.2} ms", l.p99)),
                ("p99.9", format!("{:.2} ms", l.p999)),
                ("max", format!("{:.2} ms", l.max)),
            ]
            .into_iter()
            .map(|(name, value)| {
                let name =
                    if name.starts_with('p') || name == "max" { format!("{latency} {name}") } else { name.into() };
                (name, value)
            }),
        );
        if self.mode == Mode::Open {
            rows.push(("service time p50".into(), format!("{:.2} ms", st.p50)));
            rows.push(("service time p99".into(), format!("{:.2} ms", st.p99)));
            rows.push(("service time max".into(), format!("{:.2} ms", st.max)));
        }
        rows.push(("confirmed".into(), self.confirmed.to_string()));
        rows.push(("failed".into(), self.failed.to_string()));
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
        let callers = match &plan.weights.users {
            Some(w) => Cycle::weighted(w).map_err(PlanError::from)?,
            None => Cycle::round_robin(tokens.len()),
        };
        let (body, bodies) = match &plan.weights.items {
            Some(w) => (
                plan.items.iter().map(|item| OrderBody::new(std::slice::from_ref(item))).collect(),
                Cycle::weighted(w).map_err(PlanError::from)?,
            ),
            None => (vec![OrderBody::new(&plan.items)], Cycle::round_robin(1)),
        };
        let started = Instant::now();
        let run = Arc::new(Plan {
            gateways: plan.gateways,
            tokens,
            callers,
            timeout: wait.duration() + TIMEOUT_SLACK,
            wait,
            body,
            bodies,
            run_id: crate::plumbing::ids::new("load"),
            orders: plan.orders,
            rate: plan.rate,
            concurrency: plan.concurrency,
            // A deadline too far to represent is no deadline at all.
            deadline: plan.duration.and_then(|d| started.checked_add(d)),
            started,
            record: plan.record,
        });
        let workers = plan.concurrency.min(plan.orders);
        let (stop, _) = watch::channel(false);
        let (abandon, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            next: AtomicU64::new(0),
            stop,
            abandon,
            answered: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            refused_limit: if run.rate.is_some() { OPEN_LOOP_REFUSALS.min(workers) } else { workers },
            live: LiveCounters::default(),
        });
        let histogram =
            Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| LoadError::Histogram(e.to_string()))?;
        let bar = plan.progress;
        let mut set = JoinSet::new();
        if let Some(rate) = run.rate {
            let tally = Tally::new(histogram.clone());
            set.spawn(schedule(run.clone(), shared.clone(), bar.clone(), tally, rate));
        } else {
            for _ in 0..workers {
                let tally = Tally::new(histogram.clone());
                set.spawn(worker(run.clone(), shared.clone(), bar.clone(), tally));
            }
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

    /// The latencies (µs) of the orders answered since the last call, in no particular order;
    /// empty unless the plan records samples.
    pub fn take_latencies_us(&self) -> Vec<u64> {
        std::mem::take(&mut *self.shared.live.latencies_us.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Starts no more orders; those in flight still finish.
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
    }

    /// Starts no more orders and gives up on those in flight, keeping the count of those that
    /// ended: every worker returns at once, so [`Load::join_next`] then [`Load::finish`] report
    /// the run up to now. The orders given up on are not counted.
    pub fn abandon(&self) {
        self.shared.stop.send_replace(true);
        self.shared.abandon.send_replace(true);
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
                let gateway = self.plan.gateways.describe();
                return Err(LoadError::Unreachable { gateway, cause: root_cause(e) });
            }
        }
        let summary = summarize(&self.total, elapsed, self.plan.rate);
        let mut samples = std::mem::take(&mut self.total.samples);
        samples.sort_by_key(|s| s.start);
        Ok(Report { summary, samples })
    }
}

/// Closed loop: claims order numbers until the run's end and places each order once the last
/// one answered.
async fn worker(plan: Arc<Plan>, shared: Arc<Shared>, bar: ProgressBar, mut tally: Tally) -> Tally {
    let stop = shared.stop.subscribe();
    let mut abandoned = shared.abandon.subscribe();
    loop {
        if *stop.borrow() {
            break;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n >= plan.orders || plan.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let now = Instant::now();
        let done = tokio::select! {
            done = order(plan.clone(), n, now) => done,
            _ = abandoned.wait_for(|a| *a) => {
                tally.abandoned(&plan, now);
                break;
            }
        };
        tally.record(&plan, &shared, done);
        bar.inc(1);
    }
    tally
}

/// Open loop: order `n` falls due at `start + n / rate` whatever earlier orders did, and starts
/// at once in its own task; one that falls due while `concurrency` are in flight cannot start and
/// is `dropped` (SPEC section 14, as k6's constant arrival rate drops iterations). The load asked
/// for is so never quietly lowered: a stall shows as latency of the orders in flight and as
/// drops, never as fewer orders offered.
async fn schedule(plan: Arc<Plan>, shared: Arc<Shared>, bar: ProgressBar, mut tally: Tally, rate: f64) -> Tally {
    let mut stop = shared.stop.subscribe();
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    // When each order in flight was due, for those given up on if the run is abandoned.
    let mut dues: std::collections::HashMap<tokio::task::Id, Instant> = std::collections::HashMap::new();
    let mut next = 0u64;
    let mut last_send: Option<Instant> = None;
    let mut stopped = false;
    loop {
        // The next slot, unless every order has one or the duration is over.
        let due = (next < plan.orders)
            .then(|| Duration::try_from_secs_f64(next as f64 / rate).ok())
            .flatten()
            .and_then(|offset| plan.started.checked_add(offset))
            .filter(|due| plan.deadline.is_none_or(|d| *due < d));
        let Some(due) = due else { break };
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {
                if (in_flight.len() as u64) < plan.concurrency {
                    last_send = Some(Instant::now());
                    dues.insert(in_flight.spawn(order(plan.clone(), next, due)).id(), due);
                } else {
                    tally.dropped += 1;
                    tally.seconds.entry(second_of(&plan, due)).or_default().dropped += 1;
                    bar.inc(1);
                }
                next += 1;
            }
            changed = stop.wait_for(|s| *s) => {
                // The sender lives in `shared`, so an error cannot come; stop either way.
                let _ = changed;
                stopped = true;
                break;
            }
            Some(joined) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                collect(&plan, &shared, &bar, &mut tally, &mut dues, joined);
            }
        }
    }
    // The schedule ran at least as long as its slots, longer when the sends fell behind them.
    let due_count = next as f64;
    let slots = Duration::try_from_secs_f64(due_count / rate).unwrap_or(Duration::MAX);
    let sends = Duration::try_from_secs_f64(1.0 / rate)
        .ok()
        .zip(last_send)
        .and_then(|(slot, at)| at.saturating_duration_since(plan.started).checked_add(slot))
        .unwrap_or(Duration::ZERO);
    tally.scheduled_for = if stopped { slots.min(plan.started.elapsed()).max(sends) } else { slots.max(sends) };
    let mut abandoned = shared.abandon.subscribe();
    loop {
        tokio::select! {
            joined = in_flight.join_next_with_id() => match joined {
                Some(joined) => collect(&plan, &shared, &bar, &mut tally, &mut dues, joined),
                None => break,
            },
            _ = abandoned.wait_for(|a| *a) => {
                in_flight.abort_all();
                for due in dues.into_values() {
                    tally.abandoned(&plan, due);
                }
                break;
            }
        }
    }
    tally
}

/// Counts one open-loop order's task; a task that panicked counts as an error.
fn collect(
    plan: &Plan,
    shared: &Shared,
    bar: &ProgressBar,
    tally: &mut Tally,
    dues: &mut std::collections::HashMap<tokio::task::Id, Instant>,
    joined: Result<(tokio::task::Id, Done), tokio::task::JoinError>,
) {
    match joined {
        Ok((id, done)) => {
            dues.remove(&id);
            tally.record(plan, shared, done)
        }
        Err(e) => {
            dues.remove(&e.id());
            *tally.errors_by_kind.entry("load_task".to_string()).or_default() += 1
        }
    }
    bar.inc(1);
}

/// Places order `n`, due at `due`, and notes when it was sent and answered.
async fn order(plan: Arc<Plan>, n: u64, due: Instant) -> Done {
    let sent = Instant::now();
    let outcome = place(&plan, n).await;
    Done { due, sent, answered: Instant::now(), outcome }
}

/// Places order `n` and classifies the answer; `Err` is a transport failure (no answer, or
/// the body was cut off).
async fn place(plan: &Plan, n: u64) -> Result<Outcome, reqwest::Error> {
    // `callers` and `bodies` pick among `tokens` and `body`, which are never empty (checked
    // before the run), so the indexes are in range.
    let token = &plan.tokens[plan.callers.pick(n)];
    let body = &plan.body[plan.bodies.pick(n)];
    let key = format!("{}-{n}", plan.run_id);
    let order = Place { token, body, wait: &plan.wait, idempotency_key: Some(&key), timeout: plan.timeout };
    Ok(plan.gateways.place(&order).await?.outcome())
}

fn ms(us: u64) -> f64 {
    round(us as f64 / 1000.0, 2)
}

fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = ((q * sorted.len() as f64).ceil() as usize).saturating_sub(1).min(last);
    sorted.get(rank).copied()
}

fn timeline(seconds: &BTreeMap<u64, Second>) -> Vec<TimelineSecond> {
    let Some(last) = seconds.keys().next_back().copied() else {
        return Vec::new();
    };
    let empty = Second::default();
    (0..=last)
        .map(|t| {
            let s = seconds.get(&t).unwrap_or(&empty);
            let mut sorted = s.latencies_us.clone();
            sorted.sort_unstable();
            TimelineSecond {
                t,
                started: s.started,
                dropped: s.dropped,
                completed: s.completed,
                confirmed: s.confirmed,
                failed: s.failed,
                errors: s.errors,
                p50_ms: percentile(&sorted, 0.50).map(ms),
                p99_ms: percentile(&sorted, 0.99).map(ms),
            }
        })
        .collect()
}

fn summarize(total: &Tally, elapsed: Duration, rate: Option<f64>) -> Summary {
    let orders = total.orders();
    let secs = elapsed.as_secs_f64();
    let per_second = |n: u64, over: f64| if over > 0.0 { round(n as f64 / over, 1) } else { 0.0 };
    let achieved = match rate {
        Some(_) => per_second(orders + total.abandoned, total.scheduled_for.as_secs_f64()),
        None => per_second(orders + total.abandoned, secs),
    };
    Summary {
        mode: if rate.is_some() { Mode::Open } else { Mode::Closed },
        orders,
        dropped: total.dropped,
        abandoned: total.abandoned,
        target_rate_per_s: rate,
        achieved_rate_per_s: achieved,
        rate_below_target: rate.is_some_and(|r| achieved < r * RATE_WARNING_SHARE),
        confirmed: total.confirmed,
        failed: total.failed(),
        pending: total.pending,
        errors: total.errors(),
        duration_s: round(secs, 3),
        throughput_per_s: per_second(orders, secs),
        latency_ms: latency(&total.latency_us),
        service_time_ms: latency(&total.service_us),
        failures_by_code: total.failures_by_code.clone(),
        errors_by_kind: total.errors_by_kind.clone(),
        timeline: timeline(&total.seconds),
    }
}

pub use crate::plumbing::metrics::round;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LoadPlan {
        LoadPlan {
            gateways: Gateways::new("http://127.0.0.1:1"),
            callers: vec![("alice".into(), "t".into())],
            orders: 10,
            concurrency: 2,
            rate: None,
            duration: None,
            items: vec![("sku-load".into(), 1)],
            weights: Weights::default(),
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
        let slow = LoadPlan { rate: Some(1e-300), ..plan() }.validate().unwrap_err().to_string();
        assert!(slow.contains(&format!("{} to {} orders", RATES.start(), RATES.end())), "{slow}");
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
        let s = summarize(&a, Duration::from_secs(2), None);
        assert_eq!((s.orders, s.confirmed, s.failed, s.pending, s.errors), (11, 3, 3, 1, 4));
        assert_eq!(s.failures_by_code["card_declined"], 3);
        assert_eq!(s.throughput_per_s, 5.5);
        let rows = s.rows();
        assert!(rows.contains(&("  card_declined".to_string(), "3".to_string())), "{rows:?}");
        assert!(rows.contains(&("  http_503".to_string(), "4".to_string())), "{rows:?}");
    }
}
