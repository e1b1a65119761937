//! `shop chaos drill FILE`: a scripted drill (SPEC section 8) against the running stack.
//!
//! A drill runs the `shop load` engine while a timeline task applies each fault at its offset
//! through the supervisor's chaos API, recording when it really took effect and when it ended.
//! When the load is done every fault is cleared (also on an error or Ctrl-C), in-flight sagas
//! get `settle_within` to finish, and the report judges the drill by its expectations:
//! throughput and latency before, during and after each fault, outcome counts, the breaker
//! transitions that happened, the invariants of section 7, and a PASS/FAIL per expectation.
//!
//! The file is read with serde_yaml into structs that reject unknown keys; each fault and the
//! load are validated while their own mapping is being read, so a bad value is reported at
//! `FILE:LINE:COL` of the entry that holds it, as serde_yaml knows positions only there.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::context::Context;
use super::load::{self, Load, Outcome, Sample, Summary};
use super::target::{parse_item, GatewayArgs};
use super::{exit, output, Failure};
use crate::invariants::{self, Check, Databases};
use crate::orchestrator::chaos::ChaosRequest;
use crate::orchestrator::control::Control;
use crate::orchestrator::supervisor::{PsRow, REGISTRY};
use crate::plumbing::time::parse_duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The drill file (see fixtures/drills/)
    // Its own id: as `file` it would be taken for the global `--file` (the stack file).
    #[arg(id = "drill_file", value_name = "FILE")]
    pub file: PathBuf,
    /// Makes fault percentages and jitter reproducible
    #[arg(long)]
    pub seed: Option<u64>,
}

/// How long the gateway may hold an order before answering 202, as `shop load` by default.
const ORDER_WAIT: Duration = Duration::from_secs(10);
/// How long `kill … restart: true` is watched for the instance coming back.
const RESTART_WATCH: Duration = Duration::from_secs(60);
/// How long the report still waits for that, once the sagas have settled.
const RESTART_GRACE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The drill file
// ---------------------------------------------------------------------------------------------

/// A validated drill file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Drill {
    /// Names the drill in the report and its final line.
    name: String,
    load: LoadSpec,
    /// In file order, which is also the report's order.
    #[serde(default)]
    faults: Vec<Fault>,
    #[serde(default)]
    expect: Expect,
}

/// The `load:` mapping: the traffic `shop load` would send.
#[derive(Debug)]
struct LoadSpec {
    orders: u64,
    concurrency: u64,
    users: Vec<String>,
    /// Orders started per second; it also fixes how long the load lasts (`orders / rate`).
    rate: Option<f64>,
    items: Vec<(String, i64)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    orders: u64,
    #[serde(default)]
    concurrency: Option<u64>,
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(default)]
    rate: Option<f64>,
    /// `SKU[:QTY]`, or a list of them.
    #[serde(default)]
    item: Option<OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl LoadSpec {
    fn from_raw(raw: RawLoad) -> Result<LoadSpec, String> {
        if raw.orders == 0 {
            return Err("`orders` must be at least 1".into());
        }
        let concurrency = raw.concurrency.unwrap_or(8);
        if !(1..=load::MAX_CONCURRENCY).contains(&concurrency) {
            return Err(format!("`concurrency` must be between 1 and {}, not {concurrency}", load::MAX_CONCURRENCY));
        }
        let users = raw.users.unwrap_or_else(|| vec!["alice".into()]);
        if users.is_empty() || users.iter().any(|u| u.trim().is_empty()) {
            return Err("`users` must name fixture users, e.g. [alice, bob]".into());
        }
        if let Some(rate) = raw.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!("`rate` must be orders per second above 0, not {rate}"));
            }
        }
        let items = match raw.item {
            None => vec![("sku-load".to_string(), 1)],
            Some(OneOrMany::One(item)) => vec![parse_item(&item)?],
            Some(OneOrMany::Many(list)) if list.is_empty() => {
                return Err("`item` names no product; write e.g. sku-load:1".into())
            }
            Some(OneOrMany::Many(list)) => list.iter().map(|i| parse_item(i)).collect::<Result<_, _>>()?,
        };
        Ok(LoadSpec { orders: raw.orders, concurrency, users, rate: raw.rate, items })
    }
}

/// One entry of `faults:`.
#[derive(Clone, Debug)]
struct Fault {
    /// Offset from the start of the load.
    at: Duration,
    /// How long it lasts; until the end of the load when absent.
    for_: Option<Duration>,
    action: Action,
}

#[derive(Clone, Debug)]
enum Action {
    Kill { target: String, restart: bool, signal: String },
    Pause { target: String },
    Latency { target: String, delay: Duration, jitter: Option<Duration>, percent: f64 },
    Errors { target: String, status: u16, percent: f64 },
    Partition { target: String, with: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    #[serde(deserialize_with = "duration")]
    at: Duration,
    #[serde(default, rename = "for", deserialize_with = "some_duration")]
    for_: Option<Duration>,
    #[serde(default)]
    kill: Option<String>,
    #[serde(default)]
    pause: Option<String>,
    #[serde(default)]
    latency: Option<String>,
    #[serde(default)]
    errors: Option<String>,
    #[serde(default)]
    partition: Option<String>,
    #[serde(default)]
    with: Option<String>,
    #[serde(default)]
    restart: Option<bool>,
    #[serde(default)]
    signal: Option<String>,
    #[serde(default, deserialize_with = "some_duration")]
    delay: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    jitter: Option<Duration>,
    #[serde(default)]
    percent: Option<f64>,
    #[serde(default)]
    status: Option<u16>,
}

impl Fault {
    fn from_raw(raw: RawFault) -> Result<Fault, String> {
        let named: Vec<(&str, &String)> = [
            ("kill", &raw.kill),
            ("pause", &raw.pause),
            ("latency", &raw.latency),
            ("errors", &raw.errors),
            ("partition", &raw.partition),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        let (kind, target) = match named.as_slice() {
            [one] => *one,
            [] => {
                return Err("a fault needs one of `kill`, `pause`, `latency`, `errors`, `partition` naming its \
                            target, e.g. { at: 1s, kill: payment, for: 3s }"
                    .into())
            }
            many => {
                let keys: Vec<&str> = many.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "a fault has exactly one of kill, pause, latency, errors, partition, not {}; \
                     write one entry per fault",
                    keys.join(" and ")
                ));
            }
        };
        let target = target.trim().to_string();
        if target.is_empty() {
            return Err(format!("`{kind}` must name a service or an instance"));
        }
        // Options that belong to another kind of fault are mistakes, not extras to ignore.
        let options: [(&str, bool, &[&str]); 7] = [
            ("with", raw.with.is_some(), &["partition"]),
            ("restart", raw.restart.is_some(), &["kill"]),
            ("signal", raw.signal.is_some(), &["kill"]),
            ("delay", raw.delay.is_some(), &["latency"]),
            ("jitter", raw.jitter.is_some(), &["latency"]),
            ("percent", raw.percent.is_some(), &["latency", "errors"]),
            ("status", raw.status.is_some(), &["errors"]),
        ];
        for (option, given, kinds) in options {
            if given && !kinds.contains(&kind) {
                return Err(format!("`{option}` belongs to a {} fault, not to `{kind}`", kinds.join(" or ")));
            }
        }
        if raw.for_.is_some_and(|d| d.is_zero()) {
            return Err("`for` must be longer than 0s; leave it out to last until the end of the load".into());
        }
        let percent = raw.percent.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("`percent` must be between 0 and 100, not {percent}"));
        }
        let action = match kind {
            "kill" => {
                let restart = raw.restart.unwrap_or(false);
                if restart && raw.for_.is_some() {
                    return Err("`for` has no meaning with `restart: true`: the restart policy brings it back; \
                                drop one of them"
                        .into());
                }
                let signal = raw.signal.as_deref().unwrap_or("KILL").trim().to_ascii_uppercase();
                let signal = signal.strip_prefix("SIG").unwrap_or(&signal).to_string();
                if signal != "KILL" && signal != "TERM" {
                    return Err(format!("`signal` must be KILL or TERM, not `{signal}`"));
                }
                Action::Kill { target, restart, signal }
            }
            "pause" => Action::Pause { target },
            "latency" => {
                let delay = raw.delay.ok_or("a latency fault needs a `delay`, e.g. delay: 200ms")?;
                Action::Latency { target, delay, jitter: raw.jitter, percent }
            }
            "errors" => {
                let status = raw.status.unwrap_or(503);
                if !(400..=599).contains(&status) {
                    return Err(format!("`status` must be between 400 and 599, not {status}"));
                }
                Action::Errors { target, status, percent }
            }
            _ => {
                let with = raw.with.map(|w| w.trim().to_string()).filter(|w| !w.is_empty());
                let with =
                    with.ok_or("a partition needs the other side in `with`, e.g. { partition: order, with: payment }")?;
                if with == target {
                    return Err(format!("a partition needs two different sides, not `{target}` twice"));
                }
                Action::Partition { target, with }
            }
        };
        Ok(Fault { at: raw.at, for_: raw.for_, action })
    }

    fn kind(&self) -> &'static str {
        match self.action {
            Action::Kill { .. } => "kill",
            Action::Pause { .. } => "pause",
            Action::Latency { .. } => "latency",
            Action::Errors { .. } => "errors",
            Action::Partition { .. } => "partition",
        }
    }

    fn target(&self) -> &str {
        match &self.action {
            Action::Kill { target, .. }
            | Action::Pause { target }
            | Action::Latency { target, .. }
            | Action::Errors { target, .. }
            | Action::Partition { target, .. } => target,
        }
    }

    /// The names the fault acts on: its target, and a partition's other side.
    fn names(&self) -> Vec<&str> {
        match &self.action {
            Action::Partition { target, with } => vec![target, with],
            _ => vec![self.target()],
        }
    }

    /// What the fault does beyond its kind and target, for the report.
    fn params(&self) -> Value {
        let ms = |d: &Duration| d.as_millis() as u64;
        match &self.action {
            Action::Kill { restart, signal, .. } => json!({"signal": signal, "restart": restart}),
            Action::Pause { .. } => json!({}),
            Action::Latency { delay, jitter, percent, .. } => {
                json!({"delay_ms": ms(delay), "jitter_ms": jitter.as_ref().map(ms).unwrap_or(0), "percent": percent})
            }
            Action::Errors { status, percent, .. } => json!({"status": status, "percent": percent}),
            Action::Partition { with, .. } => json!({"with": with}),
        }
    }

    /// The same as [`params`](Self::params), as a reader would write it.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.action {
            Action::Kill { restart, signal, .. } => {
                parts.push(format!("SIG{signal}"));
                if *restart {
                    parts.push("restart".into());
                }
            }
            Action::Pause { .. } => {}
            Action::Latency { delay, jitter, percent, .. } => {
                parts.push(humantime::format_duration(*delay).to_string());
                if let Some(j) = jitter {
                    parts.push(format!("±{}", humantime::format_duration(*j)));
                }
                parts.push(format!("{percent}%"));
            }
            Action::Errors { status, percent, .. } => parts.push(format!("{status} {percent}%")),
            Action::Partition { with, .. } => parts.push(format!("with {with}")),
        }
        if let Some(d) = self.for_ {
            parts.push(format!("for {}", humantime::format_duration(d)));
        }
        parts.join(" ")
    }

    /// The supervisor's request for this fault.
    fn request(&self, seed: Option<u64>) -> ChaosRequest {
        let ms = |d: Duration| d.as_millis() as u64;
        let base = ChaosRequest {
            action: self.kind().into(),
            target: self.target().to_string(),
            for_ms: self.for_.map(ms),
            ..Default::default()
        };
        match &self.action {
            Action::Kill { restart, signal, .. } => {
                ChaosRequest { signal: Some(signal.clone()), restart: *restart, ..base }
            }
            Action::Pause { .. } => base,
            Action::Latency { delay, jitter, percent, .. } => ChaosRequest {
                delay_ms: Some(ms(*delay)),
                jitter_ms: jitter.map(ms),
                percent: Some(*percent),
                seed,
                ..base
            },
            Action::Errors { status, percent, .. } => {
                ChaosRequest { status: Some(*status), percent: Some(*percent), seed, ..base }
            }
            Action::Partition { with, .. } => ChaosRequest { peer: Some(with.clone()), ..base },
        }
    }

    /// `kill … restart: true` ends when the instance is back, which the timeline watches for.
    fn restarts(&self) -> bool {
        matches!(self.action, Action::Kill { restart: true, .. })
    }
}

/// The `expect:` mapping.
#[derive(Debug)]
struct Expect {
    /// `invariants: all`: every invariant must hold once settled.
    invariants: bool,
    /// How long in-flight sagas get to finish after the faults are cleared.
    settle_within: Duration,
    /// Share of the drill's orders that must end CONFIRMED.
    min_confirmed_percent: Option<f64>,
}

impl Default for Expect {
    fn default() -> Expect {
        Expect { invariants: false, settle_within: Duration::from_secs(30), min_confirmed_percent: None }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    #[serde(default)]
    invariants: Option<String>,
    #[serde(default, deserialize_with = "some_duration")]
    settle_within: Option<Duration>,
    #[serde(default)]
    min_confirmed_percent: Option<f64>,
}

impl Expect {
    fn from_raw(raw: RawExpect) -> Result<Expect, String> {
        let invariants = match raw.invariants.as_deref() {
            None => false,
            Some("all") => true,
            Some(other) => return Err(format!("`invariants` takes only `all`, not `{other}`")),
        };
        if let Some(p) = raw.min_confirmed_percent {
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("`min_confirmed_percent` must be between 0 and 100, not {p}"));
            }
        }
        Ok(Expect {
            invariants,
            settle_within: raw.settle_within.unwrap_or(Expect::default().settle_within),
            min_confirmed_percent: raw.min_confirmed_percent,
        })
    }
}

/// Reads a mapping into its raw model `R`, then validates it into `T` while the mapping is
/// still being read, so that serde_yaml puts the mapping's position on a validation error.
struct Validated<R, T>(fn(R) -> Result<T, String>, PhantomData<R>);

impl<'de, R: Deserialize<'de>, T> Visitor<'de> for Validated<R, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let raw = R::deserialize(de::value::MapAccessDeserializer::new(map))?;
        (self.0)(raw).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for LoadSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LoadSpec, D::Error> {
        d.deserialize_map(Validated(LoadSpec::from_raw, PhantomData))
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fault, D::Error> {
        d.deserialize_map(Validated(Fault::from_raw, PhantomData))
    }
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Expect, D::Error> {
        d.deserialize_map(Validated(Expect::from_raw, PhantomData))
    }
}

/// The longest duration a drill file may give.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A duration string (`1.5s`, `200ms`), parsed inside the scalar so errors point at it.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as 500ms or 2s")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        let d = parse_duration(s).map_err(E::custom)?;
        // Also keeps every sum of offsets far from overflowing an `Instant`.
        if d > MAX_DURATION {
            return Err(E::custom(format!("`{s}` is longer than a drill can be; write at most 24h")));
        }
        Ok(d)
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

impl Drill {
    /// Reads and validates `path`; every problem is a usage error, at `FILE:LINE:COL` when
    /// serde_yaml knows the position.
    fn load(path: &Path) -> anyhow::Result<Drill> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("cannot read the drill file `{shown}`: {e}")))?;
        let drill: Drill = serde_yaml::from_str(&text).map_err(|e| {
            let message = e.to_string();
            match e.location() {
                Some(at) => {
                    let suffix = format!(" at line {} column {}", at.line(), at.column());
                    let message = message.strip_suffix(&suffix).unwrap_or(&message);
                    Failure::usage(format!("{shown}:{}:{}: {message}", at.line(), at.column()))
                }
                None => Failure::usage(format!("{shown}: {message}")),
            }
        })?;
        if drill.name.trim().is_empty() {
            return Err(Failure::usage(format!("{shown}: `name` must not be empty")));
        }
        Ok(drill)
    }
}

// ---------------------------------------------------------------------------------------------
// Running it
// ---------------------------------------------------------------------------------------------

/// What the timeline did with one fault; offsets are from the start of the load.
#[derive(Debug, Default)]
struct Applied {
    /// When the request to apply it was sent; `None` if it never was.
    at: Option<Duration>,
    /// Why it could not be applied.
    error: Option<String>,
    /// For `kill … restart: true`: when every killed instance was healthy again.
    back: Option<JoinHandle<Option<Duration>>>,
}

/// What happened while the load ran.
struct Exercise {
    report: load::Report,
    /// The load's idempotency-key prefix, to find its orders in the order database.
    run_id: String,
    /// The wall-clock time the load started, to place breaker transitions on its timeline.
    started_wall: SystemTime,
    applied: Vec<Applied>,
    /// When the load ended and the faults were cleared, from the start of the load.
    load_end: Duration,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let drill = Drill::load(&args.file)?;
    let stack = ctx.stack()?;
    let dir = ctx.state_dir();
    let control = Arc::new(Control::require(&dir)?);
    let rows = control.status().await?.rows;
    check_targets(&drill, &rows, &args.file)?;
    let dbs = ctx.databases(&stack)?;
    let secret = dir.existing_secret().unwrap_or_default();
    let mut interrupts =
        signal(SignalKind::interrupt()).map_err(|e| anyhow::anyhow!("cannot watch for Ctrl-C: {e}"))?;
    let say = |line: String| {
        if !ctx.quiet {
            eprintln!("{line}");
        }
    };
    say(format!(
        "drill {}: {} orders, {} fault{}",
        drill.name,
        drill.load.orders,
        drill.faults.len(),
        if drill.faults.len() == 1 { "" } else { "s" }
    ));
    let exercised = exercise(ctx, &drill, args.seed, &control, &mut interrupts).await;
    // Whatever happened, the stack is not left broken.
    let cleared = control
        .post("/v1/chaos/clear", json!({"target": null}), Duration::from_secs(30))
        .await
        .map_err(|e| e.context("cannot clear the drill's faults; run `shop chaos clear`"));
    let mut ex = match (exercised, cleared) {
        (Ok(ex), Ok(_)) => ex,
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(e), Err(not_cleared)) => {
            eprintln!("error: {not_cleared:#}");
            return Err(e);
        }
    };
    say(format!(
        "load done after {:.1}s; faults cleared; waiting up to {} for sagas to settle",
        ex.load_end.as_secs_f64(),
        humantime::format_duration(drill.expect.settle_within)
    ));

    let settled = settle(&dbs, drill.expect.settle_within, &mut interrupts).await?;
    let after = {
        let (path, run_id) = (dbs.order.clone(), ex.run_id.clone());
        tokio::task::spawn_blocking(move || final_outcomes(&path, &run_id))
            .await
            .map_err(|e| anyhow::anyhow!("reading the drill's orders ended abnormally: {e}"))??
    };
    let mut ended_back = Vec::new();
    for applied in &mut ex.applied {
        let back = match applied.back.take() {
            // Usually back long ago; one that is not back soon is reported as never back.
            Some(mut handle) => match tokio::time::timeout(RESTART_GRACE, &mut handle).await {
                Ok(joined) => joined.ok().flatten(),
                Err(_) => {
                    handle.abort();
                    None
                }
            },
            None => None,
        };
        ended_back.push(back);
    }
    let rows = control.status().await.map(|s| s.rows).unwrap_or(rows);
    let transitions = breaker_transitions(&rows, &secret, ex.started_wall).await;

    let faults = fault_reports(&drill, &ex, ended_back);
    let windows = windows(&faults, &ex.report.samples, ex.load_end);
    let checks = expectations(&drill, &faults, &settled, &after, ex.report.summary.orders);
    let report = DrillReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
        name: drill.name.clone(),
        seed: args.seed,
        faults,
        windows,
        outcomes: Outcomes { load: ex.report.summary, after_settle: after },
        breaker_transitions: transitions,
        invariants: settled.report,
    };
    if ctx.json {
        output::print_json(&report);
    } else {
        print_report(&report);
    }
    Ok(if report.ok { exit::OK } else { exit::RUNTIME })
}

/// Every fault names a service or instance of the running stack; the registry takes only
/// process faults, as the supervisor would say halfway through the drill.
fn check_targets(drill: &Drill, rows: &[PsRow], file: &Path) -> anyhow::Result<()> {
    let known: Vec<&str> = rows.iter().flat_map(|r| [r.service.as_str(), r.instance.as_str()]).collect();
    for (n, fault) in drill.faults.iter().enumerate() {
        for name in fault.names() {
            if !known.contains(&name) {
                let mut services: Vec<&str> = rows.iter().map(|r| r.service.as_str()).collect();
                services.dedup();
                return Err(Failure::usage(format!(
                    "{}: faults[{n}] names `{name}`, which is not a service or instance of the running stack; \
                     it has: {}",
                    file.display(),
                    services.join(", ")
                )));
            }
            let process_fault = matches!(fault.action, Action::Kill { .. } | Action::Pause { .. });
            if name == REGISTRY && !process_fault {
                return Err(Failure::usage(format!(
                    "{}: faults[{n}]: the registry takes only kill and pause",
                    file.display()
                )));
            }
        }
    }
    Ok(())
}

/// Runs the load with the fault timeline beside it. The timeline is always stopped and
/// awaited before this returns, so no fault can be applied after the caller clears them.
async fn exercise(
    ctx: &Context,
    drill: &Drill,
    seed: Option<u64>,
    control: &Arc<Control>,
    interrupts: &mut Signal,
) -> anyhow::Result<Exercise> {
    let args = load::Args {
        orders: drill.load.orders,
        concurrency: drill.load.concurrency,
        rate: drill.load.rate,
        duration: None,
        users: drill.load.users.clone(),
        items: drill.load.items.clone(),
        wait: ORDER_WAIT,
        target: GatewayArgs { gateway: None },
    };
    let mut load = Load::start(ctx, &args, true).await?;
    let run_id = load.run_id().to_string();
    let started_wall = SystemTime::now() - load.started().elapsed();
    let (stop, stopped) = watch::channel(false);
    let timeline = tokio::spawn(timeline(
        control.clone(),
        drill.faults.clone(),
        seed,
        load.started(),
        stopped,
        load.bar().clone(),
        ctx.quiet,
    ));
    let driven = drive(&mut load, interrupts).await;
    let load_end = load.started().elapsed();
    stop.send_replace(true);
    let applied = timeline.await.map_err(|e| anyhow::anyhow!("the fault timeline ended abnormally: {e}"))?;
    driven?;
    let report = load.finish()?;
    Ok(Exercise { report, run_id, started_wall, applied, load_end })
}

/// Waits for the load to end; Ctrl-C gives up on it (the caller then clears the faults).
async fn drive(load: &mut Load, interrupts: &mut Signal) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            joined = load.join_next() => match joined {
                None => return Ok(()),
                Some(merged) => merged?,
            },
            Some(()) = interrupts.recv() => {
                load.abort();
                return Err(interrupted());
            }
        }
    }
}

fn interrupted() -> anyhow::Error {
    Failure::runtime("interrupted; the drill's faults were cleared")
}

/// Applies each fault at its offset, in time order, until the load ends (`stop`); faults
/// still waiting then are never applied.
async fn timeline(
    control: Arc<Control>,
    faults: Vec<Fault>,
    seed: Option<u64>,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    bar: indicatif::ProgressBar,
    quiet: bool,
) -> Vec<Applied> {
    let mut applied: Vec<Applied> = faults.iter().map(|_| Applied::default()).collect();
    let mut order: Vec<usize> = (0..faults.len()).collect();
    order.sort_by_key(|i| faults[*i].at);
    for i in order {
        let fault = &faults[i];
        tokio::select! {
            _ = tokio::time::sleep_until((started + fault.at).into()) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        // The instances a restarting kill takes down, to tell the new processes from them.
        let before = if fault.restarts() { pids_of(&control, fault.target()).await } else { HashSet::new() };
        let at = started.elapsed();
        let body = match serde_json::to_value(fault.request(seed)) {
            Ok(body) => body,
            Err(e) => {
                applied[i].error = Some(format!("cannot encode the request: {e}"));
                continue;
            }
        };
        match control.post("/v1/chaos", body, Duration::from_secs(30)).await {
            Ok(_) => {
                applied[i].at = Some(at);
                if fault.restarts() {
                    let target = fault.target().to_string();
                    applied[i].back = Some(tokio::spawn(watch_restart(control.clone(), target, before, started)));
                }
                if !quiet {
                    bar.suspend(|| {
                        eprintln!("+{:.2}s {} {} {}", at.as_secs_f64(), fault.kind(), fault.target(), fault.describe())
                    });
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                if !quiet {
                    bar.suspend(|| eprintln!("warning: cannot apply {} {}: {message}", fault.kind(), fault.target()));
                }
                applied[i].error = Some(message);
            }
        }
    }
    applied
}

/// The pids of the running instances a target names (a service, or one instance).
async fn pids_of(control: &Control, target: &str) -> HashSet<u32> {
    match control.status().await {
        Ok(status) => {
            status.rows.iter().filter(|r| r.service == target || r.instance == target).filter_map(|r| r.pid).collect()
        }
        Err(_) => HashSet::new(),
    }
}

/// When every instance of `target` is healthy again in a new process, from `started`.
async fn watch_restart(
    control: Arc<Control>,
    target: String,
    before: HashSet<u32>,
    started: Instant,
) -> Option<Duration> {
    let deadline = Instant::now() + RESTART_WATCH;
    while Instant::now() < deadline {
        if let Ok(status) = control.status().await {
            let rows: Vec<&PsRow> =
                status.rows.iter().filter(|r| r.service == target || r.instance == target).collect();
            let back = !rows.is_empty()
                && rows.iter().all(|r| r.state == "healthy" && r.pid.is_some_and(|p| !before.contains(&p)));
            if back {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The invariants once in-flight sagas have had their time.
struct Settled {
    report: invariants::Report,
    /// How long until nothing was pending or reserved any more; `None` if that never happened.
    after: Option<Duration>,
    /// How long until every invariant held (notifications can trail the orders); `None` if
    /// they never all did.
    held_after: Option<Duration>,
}

/// Checks the invariants until they hold or `within` runs out, in short rounds of
/// `check_settled` so that Ctrl-C is heard between them.
async fn settle(dbs: &Databases, within: Duration, interrupts: &mut Signal) -> anyhow::Result<Settled> {
    let begun = Instant::now();
    let deadline = begun + within;
    let mut after = None;
    loop {
        let round = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(500));
        let dbs = dbs.clone();
        let checked = tokio::task::spawn_blocking(move || invariants::check_settled(&dbs, round));
        let report = tokio::select! {
            r = checked => r.map_err(|e| anyhow::anyhow!("the invariant checks ended abnormally: {e}"))??,
            Some(()) = interrupts.recv() => return Err(interrupted()),
        };
        let unstuck = report.checks.iter().any(|c| c.name == "nothing_stuck" && c.ok);
        if unstuck && after.is_none() {
            after = Some(begun.elapsed());
        }
        if report.ok || Instant::now() >= deadline {
            let held_after = report.ok.then(|| begun.elapsed());
            return Ok(Settled { report, after, held_after });
        }
    }
}

/// The drill's orders as the order database has them once settled.
#[derive(Serialize)]
struct AfterSettle {
    /// Orders of this drill in the order database (the others never reached it).
    orders: u64,
    confirmed: u64,
    failed: u64,
    pending: u64,
    failures_by_code: BTreeMap<String, u64>,
}

/// Finds the drill's orders by the load's idempotency keys (`{run_id}-{n}`), which the gateway
/// passes on unchanged: this also counts orders whose answer the load never got.
fn final_outcomes(order_db: &Path, run_id: &str) -> anyhow::Result<AfterSettle> {
    let conn = crate::plumbing::db::open_read_only(order_db)?;
    let prefix = format!("{run_id}-");
    let mut stmt = conn.prepare("SELECT status, failure FROM orders WHERE substr(idempotency_key, 1, ?1) = ?2")?;
    let rows: Vec<(String, Option<String>)> = stmt
        .query_map(rusqlite::params![prefix.len() as i64, prefix], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut after = AfterSettle { orders: 0, confirmed: 0, failed: 0, pending: 0, failures_by_code: BTreeMap::new() };
    for (status, failure) in rows {
        after.orders += 1;
        match status.as_str() {
            "CONFIRMED" => after.confirmed += 1,
            "FAILED" => {
                after.failed += 1;
                let code = failure
                    .and_then(|f| serde_json::from_str::<Value>(&f).ok())
                    .and_then(|f| f["code"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "unknown".into());
                *after.failures_by_code.entry(code).or_default() += 1;
            }
            _ => after.pending += 1,
        }
    }
    Ok(after)
}

/// One change of a circuit breaker during the drill.
#[derive(Serialize)]
struct BreakerTransition {
    instance: String,
    dependency: String,
    from: String,
    to: String,
    /// RFC 3339, as the instance recorded it.
    at: String,
    /// Seconds from the start of the load.
    at_s: f64,
}

/// The breaker transitions every running instance recorded since `since`. An instance that was
/// restarted during the drill remembers only those of its new process.
async fn breaker_transitions(rows: &[PsRow], secret: &str, since: SystemTime) -> Vec<BreakerTransition> {
    let http = crate::plumbing::client::http_client();
    let mut all = Vec::new();
    for row in rows.iter().filter(|r| r.pid.is_some()) {
        let Some(addr) = &row.address else { continue };
        let resp = http
            .get(format!("http://{addr}/admin/breakers"))
            .header("x-shop-secret", secret)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        let Ok(resp) = resp else { continue };
        if !resp.status().is_success() {
            continue;
        }
        let Ok(v) = resp.json::<Value>().await else { continue };
        for t in v["transitions"].as_array().into_iter().flatten() {
            let at = t["at"].as_str().unwrap_or_default();
            let Ok(when) = humantime::parse_rfc3339(at) else { continue };
            // Timestamps are truncated to whole milliseconds: allow for that much.
            let Ok(offset) = (when + Duration::from_millis(1)).duration_since(since) else { continue };
            all.push(BreakerTransition {
                instance: row.instance.clone(),
                dependency: t["dependency"].as_str().unwrap_or_default().to_string(),
                from: t["from"].as_str().unwrap_or_default().to_string(),
                to: t["to"].as_str().unwrap_or_default().to_string(),
                at: at.to_string(),
                at_s: round(offset.saturating_sub(Duration::from_millis(1)).as_secs_f64(), 3),
            });
        }
    }
    all.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.instance.cmp(&b.instance)));
    all
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct DrillReport {
    ok: bool,
    /// The expectations.
    checks: Vec<Check>,
    name: String,
    seed: Option<u64>,
    faults: Vec<FaultReport>,
    windows: Vec<Window>,
    outcomes: Outcomes,
    breaker_transitions: Vec<BreakerTransition>,
    invariants: invariants::Report,
}

/// One fault of the timeline; times are seconds from the start of the load.
#[derive(Serialize)]
struct FaultReport {
    /// 1-based, in file order; windows refer to it.
    index: usize,
    fault: &'static str,
    target: String,
    params: Value,
    /// When the file asked for it.
    at_s: f64,
    for_s: Option<f64>,
    /// When it was applied; `null` if it never was.
    applied_at_s: Option<f64>,
    /// When it ended: its `for` ran out, the faults were cleared, or a restarted instance was
    /// healthy again.
    ended_at_s: Option<f64>,
    error: Option<String>,
    /// For the human report.
    #[serde(skip)]
    describe: String,
}

#[derive(Serialize)]
struct Outcomes {
    /// What the load saw, as `shop load --json` reports it.
    #[serde(flatten)]
    load: Summary,
    after_settle: AfterSettle,
}

/// The traffic in one window around a fault, by the start time of each order.
#[derive(Serialize)]
struct Window {
    fault: usize,
    /// before, during or after.
    phase: &'static str,
    from_s: f64,
    to_s: f64,
    orders: u64,
    /// Orders started per second.
    throughput_per_s: f64,
    latency_ms: WindowLatency,
    confirmed: u64,
    failed: u64,
    pending: u64,
    errors: u64,
}

#[derive(Serialize)]
struct WindowLatency {
    p50: Option<f64>,
    p99: Option<f64>,
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

fn secs(d: Duration) -> f64 {
    round(d.as_secs_f64(), 3)
}

fn fault_reports(drill: &Drill, ex: &Exercise, back: Vec<Option<Duration>>) -> Vec<FaultReport> {
    drill
        .faults
        .iter()
        .zip(&ex.applied)
        .zip(back)
        .enumerate()
        .map(|(n, ((fault, applied), back))| {
            let ended = applied.at.map(|at| {
                if fault.restarts() {
                    back.unwrap_or(ex.load_end).max(at)
                } else {
                    fault.for_.map_or(ex.load_end, |d| (at + d).min(ex.load_end)).max(at)
                }
            });
            FaultReport {
                index: n + 1,
                fault: fault.kind(),
                target: fault.target().to_string(),
                params: fault.params(),
                at_s: secs(fault.at),
                for_s: fault.for_.map(secs),
                applied_at_s: applied.at.map(secs),
                ended_at_s: ended.map(secs),
                error: applied.error.clone(),
                describe: fault.describe(),
            }
        })
        .collect()
}

/// Windows shorter than this say nothing about a rate (a fault applied at 0s has no "before").
const MIN_WINDOW_S: f64 = 0.05;

/// Before, during and after each applied fault, over the whole load.
fn windows(faults: &[FaultReport], samples: &[Sample], load_end: Duration) -> Vec<Window> {
    let end = load_end.as_secs_f64();
    let mut out = Vec::new();
    for f in faults {
        let (Some(applied), Some(ended)) = (f.applied_at_s, f.ended_at_s) else { continue };
        for (phase, from, to) in [("before", 0.0, applied), ("during", applied, ended), ("after", ended, end)] {
            if to - from >= MIN_WINDOW_S {
                out.push(window(f.index, phase, from, to, samples));
            }
        }
    }
    out
}

fn window(fault: usize, phase: &'static str, from: f64, to: f64, samples: &[Sample]) -> Window {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            let t = s.start.as_secs_f64();
            t >= from && t < to
        })
        .collect();
    let mut latencies: Vec<f64> = inside.iter().map(|s| s.latency.as_secs_f64() * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    // Nearest rank: the smallest latency that at least q of the orders did not exceed.
    let quantile = |q: f64| -> Option<f64> {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(rank - 1).map(|ms| round(*ms, 2))
    };
    let count = |pick: fn(&Outcome) -> bool| inside.iter().filter(|s| pick(&s.outcome)).count() as u64;
    let length = to - from;
    Window {
        fault,
        phase,
        from_s: round(from, 3),
        to_s: round(to, 3),
        orders: inside.len() as u64,
        throughput_per_s: if length > 0.0 { round(inside.len() as f64 / length, 1) } else { 0.0 },
        latency_ms: WindowLatency { p50: quantile(0.50), p99: quantile(0.99) },
        confirmed: count(|o| matches!(o, Outcome::Confirmed)),
        failed: count(|o| matches!(o, Outcome::Failed(_))),
        pending: count(|o| matches!(o, Outcome::Pending)),
        errors: count(|o| matches!(o, Outcome::Error(_))),
    }
}

/// The drill's verdict: each expectation of the file, plus that every fault was applied
/// (a fault that never happened tests nothing).
fn expectations(
    drill: &Drill,
    faults: &[FaultReport],
    settled: &Settled,
    after: &AfterSettle,
    orders: u64,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let missed: Vec<String> = faults
        .iter()
        .filter(|f| f.applied_at_s.is_none())
        .map(|f| match &f.error {
            Some(e) => format!("#{} {} {}: {e}", f.index, f.fault, f.target),
            None => format!("#{} {} {} at {}s: the load ended first", f.index, f.fault, f.target, f.at_s),
        })
        .collect();
    checks.push(Check {
        name: "faults_applied".into(),
        ok: missed.is_empty(),
        detail: if missed.is_empty() {
            format!("{} of {} faults applied", faults.len(), faults.len())
        } else {
            format!("not applied: {}", missed.join("; "))
        },
    });
    if drill.expect.invariants {
        let failed: Vec<&str> = settled.report.checks.iter().filter(|c| !c.ok).map(|c| c.name.as_str()).collect();
        let total = settled.report.checks.len();
        checks.push(Check {
            name: "invariants".into(),
            ok: failed.is_empty(),
            detail: if failed.is_empty() {
                let after = settled.held_after.unwrap_or_default().as_secs_f64();
                format!("{total} of {total} invariants hold ({after:.1}s after the faults were cleared)")
            } else {
                format!("{} of {total} violated: {}", failed.len(), failed.join(", "))
            },
        });
    }
    let limit = humantime::format_duration(drill.expect.settle_within);
    checks.push(Check {
        name: "settled".into(),
        ok: settled.after.is_some(),
        detail: match settled.after {
            Some(d) => format!(
                "nothing pending or reserved {:.1}s after the faults were cleared (limit {limit})",
                d.as_secs_f64()
            ),
            None => format!("{} orders still pending after {limit}", settled.report.pending),
        },
    });
    if let Some(min) = drill.expect.min_confirmed_percent {
        let percent = if orders > 0 { after.confirmed as f64 * 100.0 / orders as f64 } else { 0.0 };
        checks.push(Check {
            name: "min_confirmed_percent".into(),
            ok: percent >= min,
            detail: format!(
                "{:.1}% confirmed ({} of {orders} orders), at least {min}% expected",
                percent, after.confirmed
            ),
        });
    }
    checks
}

fn pass_fail(ok: bool, color: bool) -> &'static str {
    match (ok, color) {
        (true, true) => "\x1b[32mPASS\x1b[0m",
        (false, true) => "\x1b[31mFAIL\x1b[0m",
        (true, false) => "PASS",
        (false, false) => "FAIL",
    }
}

fn opt_secs(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.2}s")).unwrap_or_else(|| "-".into())
}

fn print_report(r: &DrillReport) {
    let color = output::color_stdout();
    println!("drill {}", r.name);
    println!("\nfaults");
    if r.faults.is_empty() {
        println!("  none");
    } else {
        let mut t = output::table(&["#", "FAULT", "TARGET", "PARAMS", "AT", "APPLIED AT", "ENDED AT"]);
        for f in &r.faults {
            t.add_row(vec![
                f.index.to_string(),
                f.fault.to_string(),
                f.target.clone(),
                if f.describe.is_empty() { "-".into() } else { f.describe.clone() },
                format!("{:.2}s", f.at_s),
                f.error.as_ref().map(|_| "failed".to_string()).unwrap_or_else(|| opt_secs(f.applied_at_s)),
                opt_secs(f.ended_at_s),
            ]);
        }
        println!("{t}");
    }
    for f in &r.faults {
        let rows: Vec<&Window> = r.windows.iter().filter(|w| w.fault == f.index).collect();
        if rows.is_empty() {
            continue;
        }
        println!("\nfault {}: {} {}", f.index, f.fault, f.target);
        let mut t =
            output::table(&["WINDOW", "FROM", "TO", "ORDERS", "ORDERS/S", "P50", "P99", "FAILED", "ERRORS", "PENDING"]);
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "-".into());
        for w in rows {
            t.add_row(vec![
                w.phase.to_string(),
                format!("{:.2}s", w.from_s),
                format!("{:.2}s", w.to_s),
                w.orders.to_string(),
                format!("{:.1}", w.throughput_per_s),
                ms(w.latency_ms.p50),
                ms(w.latency_ms.p99),
                w.failed.to_string(),
                w.errors.to_string(),
                w.pending.to_string(),
            ]);
        }
        println!("{t}");
    }
    println!("\noutcomes (as the load saw them)");
    println!("{}", load::summary_table(&r.outcomes.load));
    let a = &r.outcomes.after_settle;
    let by_code: Vec<String> = a.failures_by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
    println!(
        "after settling: {} confirmed, {} failed{}, {} pending ({} of the drill's orders reached the order service)",
        a.confirmed,
        a.failed,
        if by_code.is_empty() { String::new() } else { format!(" ({})", by_code.join(", ")) },
        a.pending,
        a.orders
    );
    if r.breaker_transitions.is_empty() {
        println!("\nbreaker transitions: none");
    } else {
        println!("\nbreaker transitions");
        let mut t = output::table(&["INSTANCE", "DEPENDENCY", "FROM", "TO", "AT"]);
        for b in &r.breaker_transitions {
            t.add_row(vec![
                b.instance.clone(),
                b.dependency.clone(),
                b.from.clone(),
                b.to.clone(),
                format!("{:.2}s", b.at_s),
            ]);
        }
        println!("{t}");
    }
    println!("\ninvariants");
    let mut t = output::table(&["CHECK", "RESULT", "DETAIL"]);
    for c in &r.invariants.checks {
        t.add_row(vec![c.name.clone(), pass_fail(c.ok, color).to_string(), c.detail.clone()]);
    }
    println!("{t}");
    println!("\nexpectations");
    let mut t = output::table(&["CHECK", "RESULT", "DETAIL"]);
    for c in &r.checks {
        t.add_row(vec![c.name.clone(), pass_fail(c.ok, color).to_string(), c.detail.clone()]);
    }
    println!("{t}");
    println!("\ndrill {}: {}", r.name, if r.ok { "PASSED" } else { "FAILED" });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Drill, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.yaml");
        std::fs::write(&path, text).unwrap();
        Drill::load(&path).map_err(|e| e.to_string().replace(&path.display().to_string(), "d.yaml"))
    }

    #[test]
    fn a_full_drill_parses_into_its_faults_and_expectations() {
        let d = parse(
            "name: payment-outage
load: { orders: 400, concurrency: 8, users: [alice, bob], rate: 200, item: sku-1:2 }
faults:
  - { at: 1s, kill: payment, for: 3s }
  - { at: 1s, pause: payment, for: 2s }
  - { at: 2s, latency: inventory, delay: 200ms, jitter: 20ms, percent: 50, for: 3s }
  - { at: 1s, errors: notification, status: 503, percent: 30, for: 10s }
  - { at: 1s, partition: order, with: payment, for: 3s }
  - { at: 500ms, kill: order, restart: true, signal: TERM }
expect:
  invariants: all
  settle_within: 30s
  min_confirmed_percent: 50
",
        )
        .unwrap();
        assert_eq!(d.load.items, vec![("sku-1".to_string(), 2)]);
        assert_eq!(d.faults.len(), 6);
        let kinds: Vec<&str> = d.faults.iter().map(Fault::kind).collect();
        assert_eq!(kinds, ["kill", "pause", "latency", "errors", "partition", "kill"]);
        let latency = d.faults[2].request(Some(7));
        assert_eq!(
            (latency.delay_ms, latency.jitter_ms, latency.percent, latency.seed),
            (Some(200), Some(20), Some(50.0), Some(7))
        );
        assert_eq!(d.faults[4].request(None).peer.as_deref(), Some("payment"));
        let kill = d.faults[5].request(Some(7));
        assert!(kill.restart && kill.seed.is_none() && kill.for_ms.is_none());
        assert_eq!(kill.signal.as_deref(), Some("TERM"));
        assert!(d.expect.invariants);
        assert_eq!(d.expect.min_confirmed_percent, Some(50.0));
    }

    #[test]
    fn mistakes_are_reported_at_the_entry_that_holds_them() {
        let head = "name: x\nload: { orders: 10 }\nfaults:\n";
        let cases = [
            ("  - { at: 1s, kill: payment, forr: 3s }\n", "d.yaml:4:30: faults[0]: unknown field `forr`"),
            ("  - { at: soon, kill: payment }\n", "d.yaml:4:11: faults[0].at: `soon` is not a duration"),
            ("  - { at: 100000h, kill: payment }\n", "d.yaml:4:11: faults[0].at: `100000h` is longer than a drill"),
            ("  - { at: 1s, kill: payment, pause: order }\n", "d.yaml:4:5: faults[0]: a fault has exactly one of"),
            ("  - { at: 1s, kill: payment, delay: 1s }\n", "d.yaml:4:5: faults[0]: `delay` belongs to a latency fault"),
            ("  - { at: 1s, errors: payment, percent: 130 }\n", "d.yaml:4:5: faults[0]: `percent` must be between"),
            ("  - { at: 1s, partition: order }\n", "d.yaml:4:5: faults[0]: a partition needs the other side"),
            ("  - { at: 1s, latency: order }\n", "d.yaml:4:5: faults[0]: a latency fault needs a `delay`"),
        ];
        for (fault, want) in cases {
            let err = parse(&format!("{head}{fault}")).unwrap_err();
            assert!(err.starts_with(want), "{fault}: {err}");
        }
        let err = parse("name: x\nload: { orders: 0 }\n").unwrap_err();
        assert!(err.starts_with("d.yaml:2:7: load: `orders` must be at least 1"), "{err}");
        let err = parse("name: x\nload: { orders: 1 }\nexpect: { min_confirmed_percent: 101 }\n").unwrap_err();
        assert!(err.contains("`min_confirmed_percent` must be between 0 and 100"), "{err}");
    }

    fn sample(start_ms: u64, latency_ms: u64, outcome: Outcome) -> Sample {
        Sample { start: Duration::from_millis(start_ms), latency: Duration::from_millis(latency_ms), outcome }
    }

    #[test]
    fn windows_split_orders_by_their_start_around_each_fault() {
        let samples = vec![
            sample(100, 10, Outcome::Confirmed),
            sample(900, 20, Outcome::Confirmed),
            sample(1_100, 500, Outcome::Error("http_503".into())),
            sample(1_500, 700, Outcome::Pending),
            sample(2_500, 30, Outcome::Failed("card_declined".into())),
        ];
        let fault = FaultReport {
            index: 1,
            fault: "kill",
            target: "payment".into(),
            params: json!({}),
            at_s: 1.0,
            for_s: Some(1.0),
            applied_at_s: Some(1.0),
            ended_at_s: Some(2.0),
            error: None,
            describe: String::new(),
        };
        let w = windows(&[fault], &samples, Duration::from_secs(3));
        let phases: Vec<(&str, u64)> = w.iter().map(|w| (w.phase, w.orders)).collect();
        assert_eq!(phases, [("before", 2), ("during", 2), ("after", 1)]);
        assert_eq!((w[0].throughput_per_s, w[0].latency_ms.p50, w[0].latency_ms.p99), (2.0, Some(10.0), Some(20.0)));
        assert_eq!((w[1].errors, w[1].pending, w[2].failed), (1, 1, 1));
    }
}
