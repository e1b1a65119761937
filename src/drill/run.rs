//! The drill runner: the load engine with a timeline of faults beside it, then the settling,
//! the invariants and the figures of the report (SPEC section 8).
//!
//! A timeline task applies each fault at its offset through the supervisor's chaos API,
//! recording when it really took effect and when it ended. When the load is done every fault is
//! cleared (also on an error or Ctrl-C), in-flight sagas get `settle_within` to finish, and the
//! [`DrillReport`] judges the drill by its expectations.

use crate::plumbing::admin::AdminClient;
use crate::plumbing::config::STOP_GRACE;
use crate::plumbing::metrics::round;
use crate::services::order::events::Status as OrderStatus;
use crate::services::order::store as order_store;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use serde::Serialize;

use super::report::{
    expectations, per_second, secs, windows, DrillReport, FaultReport, Halted, MonkeyReport, Outcomes, ProbeReport,
    SteadyReport,
};
use super::spec::{Drill, Fault, HaltRule, SteadyState};
use crate::error::Failure;
use crate::invariants::Check;
use crate::invariants::{self, Databases};
use crate::orchestrator::control::Control;
use crate::orchestrator::protocol::{ChaosAction, InstanceState, PsRow};
use crate::orchestrator::stackfile::Stack;
use crate::orchestrator::supervisor::REGISTRY;
use crate::traffic::threshold::Measures;
use crate::traffic::{self, Live, Load, LoadPlan};

/// How long `kill … restart: true` is watched for the instance coming back.
const RESTART_WATCH: Duration = Duration::from_secs(60);

/// Everything a drill needs, found by the caller.
pub struct Setup {
    pub drill: Drill,
    /// Makes fault percentages and jitter reproducible.
    pub seed: Option<u64>,
    /// The running stack's supervisor.
    pub control: Control,
    /// The stack's instances before the drill (breakers are read from them if the status
    /// cannot be read at the end).
    pub rows: Vec<PsRow>,
    pub dbs: Databases,
    /// The stack's admin secret, for the instances' breaker endpoints.
    pub secret: String,
    /// The drill's load; the runner turns on sample recording.
    pub load: LoadPlan,
    /// The steady-state probe load, when the drill has a `steady_state:`.
    pub probe: Option<LoadPlan>,
    /// No progress lines on stderr.
    pub quiet: bool,
}

/// What the timeline did with one fault; offsets are from the start of the load.
#[derive(Debug, Default)]
pub struct Applied {
    /// When the request to apply it was sent; `None` if it never was.
    at: Option<Duration>,
    /// Why it could not be applied.
    error: Option<String>,
    /// For `kill … restart: true`: when every killed instance was healthy again.
    back: Option<JoinHandle<Option<Duration>>>,
}

impl Applied {
    /// Whether the supervisor took it.
    pub fn took(&self) -> bool {
        self.at.is_some()
    }
}

/// What happened while the load ran.
struct Exercise {
    report: traffic::Report,
    /// The load's idempotency-key prefix, to find its orders in the order database.
    run_id: String,
    /// The wall-clock time the load started, to place breaker transitions on its timeline.
    started_wall: SystemTime,
    applied: Vec<Applied>,
    /// When the load ended and the faults were cleared, from the start of the load.
    load_end: Duration,
    halted: Option<Halted>,
    /// Ctrl-C or SIGTERM ended the load: the report says what was seen until then.
    interrupted: bool,
}

/// How long past its planned end an open-ended fault still lasts if the drill dies without
/// clearing it: the supervisor's expiry is what clears it then.
const EXPIRY_SLACK: Duration = Duration::from_secs(10);
/// The expiry of an open-ended fault when the load's length is not known in advance.
const UNKNOWN_EXPIRY: Duration = Duration::from_secs(120);

/// Ctrl-C and SIGTERM, heard alike: either ends the drill and rolls its faults back.
pub struct Interrupts {
    int: Signal,
    term: Signal,
}

impl Interrupts {
    pub fn new() -> anyhow::Result<Interrupts> {
        let watch = |kind| signal(kind).map_err(|e| anyhow::anyhow!("cannot watch for Ctrl-C and SIGTERM: {e}"));
        Ok(Interrupts { int: watch(SignalKind::interrupt())?, term: watch(SignalKind::terminate())? })
    }

    /// Cancel-safe: either signal.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Runs the drill and builds its report; the faults are cleared whatever happens.
pub async fn run(setup: Setup) -> anyhow::Result<DrillReport> {
    let Setup { drill, seed, control, rows, dbs, secret, load, probe, quiet } = setup;
    let control = Arc::new(control);
    let mut interrupts = Interrupts::new()?;
    let say = |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    say(format!(
        "drill {}: {} orders, {} fault{}",
        drill.name,
        if drill.load.orders >= u64::MAX / 4 { "as many".to_string() } else { drill.load.orders.to_string() },
        drill.faults.len(),
        if drill.faults.len() == 1 { "" } else { "s" }
    ));
    // The monkey's timeline is printed before anything runs, so a reader can reproduce it.
    if let Some(m) = &drill.monkey {
        let added = &drill.faults[drill.faults.len() - drill.monkey_faults..];
        eprintln!("monkey (seed {}): {} fault{}", m.seed, added.len(), if added.len() == 1 { "" } else { "s" });
        for line in super::monkey::describe(added) {
            eprintln!("  {line}");
        }
    }

    let mut steady = SteadyReport::default();
    if let (Some(spec), Some(plan)) = (&drill.steady_state, &probe) {
        say("steady state: probing before the faults".into());
        let before = probe_steady(spec, plan.clone(), &dbs, &mut interrupts).await?;
        let ok = before.ok;
        steady.before = Some(before);
        if !ok {
            say("not steady before the drill: nothing injected".into());
            return Ok(not_steady(&drill, seed, steady));
        }
    }

    let plan = LoadPlan { record: true, ..load };
    let owner = crate::plumbing::ids::new("drill");
    let exercised = exercise(plan, &drill, seed, &control, &owner, quiet, &mut interrupts).await;
    // Whatever happened, the stack is not left broken.
    let cleared = rollback(&control, &owner).await;
    let mut ex = match (exercised, cleared) {
        (Ok(ex), Ok(_)) => ex,
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(e), Err(not_cleared)) => {
            eprintln!("error: {not_cleared:#}");
            return Err(e);
        }
    };
    if let Some(h) = &ex.halted {
        say(format!("halted at {:.1}s: `{}` held ({}); the faults were rolled back", h.at_s, h.rule, h.detail));
    }
    if !ex.interrupted {
        say(format!(
            "load done after {:.1}s; faults cleared; waiting up to {} for sagas to settle",
            ex.load_end.as_secs_f64(),
            humantime::format_duration(drill.expect.settle_within)
        ));
    }

    let settled = if ex.interrupted {
        Err(interrupted())
    } else {
        settle(&dbs, drill.expect.settle_within, &mut interrupts).await
    };
    let settled = match settled {
        Ok(settled) => settled,
        Err(e) if is_interrupted(&e) => {
            let now = read_outcomes(&dbs, &ex.run_id).await?;
            return Ok(interrupted_exercise(&drill, seed, &mut ex, now, steady));
        }
        Err(e) => return Err(e),
    };
    let after = read_outcomes(&dbs, &ex.run_id).await?;
    let mut ended_back = Vec::new();
    for applied in &mut ex.applied {
        let back = match applied.back.take() {
            // Usually back long ago; one that is not back soon is reported as never back.
            Some(mut handle) => match tokio::time::timeout(STOP_GRACE, &mut handle).await {
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

    if let (Some(spec), Some(plan)) = (&drill.steady_state, probe) {
        say("steady state: probing after settling".into());
        steady.after = Some(probe_steady(spec, plan, &dbs, &mut interrupts).await?);
    }

    let faults = fault_reports(&drill, &ex, ended_back);
    let windows = windows(&faults, &ex.report.samples, ex.load_end);
    let mut checks =
        expectations(&drill, &faults, &settled, &after, ex.report.summary.orders, ex.report.summary.dropped);
    checks.extend(steady_checks(&drill, &steady, ex.halted.as_ref()));
    let ok = checks.iter().all(|c| c.ok);
    Ok(DrillReport {
        ok,
        verdict: if ok {
            "passed".into()
        } else if ex.halted.is_some() {
            "halted".into()
        } else {
            "failed".into()
        },
        checks,
        name: drill.name.clone(),
        seed,
        monkey: monkey_report(&drill),
        faults,
        windows,
        per_second: per_second(&ex.report.samples),
        outcomes: Some(Outcomes { load: ex.report.summary, after_settle: after }),
        breaker_transitions: transitions,
        invariants: settled.report,
        steady_state: drill.steady_state.as_ref().map(|_| steady),
        halted: ex.halted,
    })
}

/// Clears the faults `owner` applied: the drill's (or monkey's) rollback. Faults someone else
/// set on the stack stay, as a Chaos Toolkit rollback reverts only its own actions.
async fn rollback(control: &Control, owner: &str) -> anyhow::Result<()> {
    control
        .post("/v1/chaos/clear", json!({"target": null, "owner": owner}), Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|e| e.context("cannot clear the drill's faults; run `shop chaos clear`"))
}

/// Runs the probe load and judges it by the steady-state thresholds and invariants.
async fn probe_steady(
    spec: &SteadyState,
    plan: LoadPlan,
    dbs: &Databases,
    interrupts: &mut Interrupts,
) -> anyhow::Result<ProbeReport> {
    let mut load = Load::start(plan).map_err(|e| match e {
        traffic::LoadError::Plan(e) => Failure::usage(e.to_string()),
        other => other.into(),
    })?;
    drive(&mut load, interrupts, &[], None).await?;
    let summary = load.finish()?.summary;
    let measures = Measures::from(&summary);
    let mut checks: Vec<Check> = (spec.thresholds.iter())
        .map(|t| {
            let row = t.evaluate(&measures);
            Check {
                name: t.expression.clone(),
                ok: row.pass,
                detail: format!("{} of {} orders (wanted {t})", row.observed_text(), summary.orders),
            }
        })
        .collect();
    if spec.invariants {
        let dbs = dbs.clone();
        let report = tokio::task::spawn_blocking(move || invariants::check_settled(&dbs, Duration::from_secs(10)))
            .await
            .map_err(|e| anyhow::anyhow!("the invariant checks ended abnormally: {e}"))??;
        let failed: Vec<&str> = report.checks.iter().filter(|c| !c.ok).map(|c| c.name.as_str()).collect();
        checks.push(Check {
            name: "invariants".into(),
            ok: failed.is_empty(),
            detail: if failed.is_empty() {
                format!("all {} invariants hold", report.checks.len())
            } else {
                format!("violated: {}", failed.join(", "))
            },
        });
    }
    Ok(ProbeReport { ok: checks.iter().all(|c| c.ok), checks, summary })
}

/// The report of a drill that found the stack unsteady before its faults: nothing was injected.
fn not_steady(drill: &Drill, seed: Option<u64>, steady: SteadyReport) -> DrillReport {
    let failed: Vec<String> = (steady.before.iter())
        .flat_map(|b| b.checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)))
        .collect();
    let check =
        Check { name: "steady_state_before".into(), ok: false, detail: format!("{NOT_STEADY}: {}", failed.join("; ")) };
    let fault_error = format!("{}: {NOT_STEADY}", super::report::NOT_INJECTED);
    DrillReport { steady_state: Some(steady), ..unfinished(drill, seed, NOT_STEADY, check, &fault_error) }
}

/// The report of a drill interrupted (SIGINT, SIGTERM) before its verdict, so that a CI job
/// stopped by its time limit still finds its `--junit` and journal, saying so.
pub fn interrupted_report(drill: &Drill, seed: Option<u64>) -> DrillReport {
    let check =
        Check { name: INTERRUPTED.into(), ok: false, detail: format!("{INTERRUPTED_MESSAGE}; no verdict was reached") };
    let fault_error = format!("{INTERRUPTED}: the drill ended before its verdict; when it was applied is not recorded");
    unfinished(drill, seed, INTERRUPTED, check, &fault_error)
}

/// The report of a drill interrupted once its load had begun: what the load saw until then,
/// its faults with when they were applied, and the drill's orders as the database held them
/// at that moment; nothing settled and no invariant checked, so no verdict but `interrupted`.
fn interrupted_exercise(
    drill: &Drill,
    seed: Option<u64>,
    ex: &mut Exercise,
    now: AfterSettle,
    steady: SteadyReport,
) -> DrillReport {
    for applied in &mut ex.applied {
        if let Some(back) = applied.back.take() {
            back.abort();
        }
    }
    let mut faults = fault_reports(drill, ex, ex.applied.iter().map(|_| None).collect());
    for f in faults.iter_mut().filter(|f| f.applied_at_s.is_none() && f.error.is_none()) {
        f.error = Some(format!("{}: {INTERRUPTED} before its time", super::report::NOT_INJECTED));
    }
    let check = Check {
        name: INTERRUPTED.into(),
        ok: false,
        detail: format!(
            "{INTERRUPTED_MESSAGE} after {:.1}s of load; the sagas were not settled and the invariants not checked",
            ex.load_end.as_secs_f64()
        ),
    };
    let windows = windows(&faults, &ex.report.samples, ex.load_end);
    DrillReport {
        faults,
        windows,
        per_second: per_second(&ex.report.samples),
        outcomes: Some(Outcomes { load: ex.report.summary.clone(), after_settle: now }),
        steady_state: drill.steady_state.as_ref().map(|_| steady),
        ..unfinished(drill, seed, INTERRUPTED, check, "")
    }
}

/// The drill's orders as the order database holds them now.
async fn read_outcomes(dbs: &Databases, run_id: &str) -> anyhow::Result<AfterSettle> {
    let (path, run_id) = (dbs.order.clone(), run_id.to_string());
    tokio::task::spawn_blocking(move || final_outcomes(&path, &run_id))
        .await
        .map_err(|e| anyhow::anyhow!("reading the drill's orders ended abnormally: {e}"))?
}

/// Whether `e` is the error of an interrupted drill.
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Failure>().is_some_and(|f| f.message == INTERRUPTED_MESSAGE)
}

/// A drill's report with no verdict reached: `verdict`, one failed `check`, and its faults
/// listed with `fault_error`.
fn unfinished(drill: &Drill, seed: Option<u64>, verdict: &str, check: Check, fault_error: &str) -> DrillReport {
    let faults = drill
        .faults
        .iter()
        .enumerate()
        .map(|(n, f)| FaultReport {
            index: n + 1,
            fault: f.kind(),
            target: f.target().to_string(),
            params: f.params(),
            at_s: secs(f.at),
            for_s: f.for_.map(secs),
            applied_at_s: None,
            ended_at_s: None,
            error: Some(fault_error.to_string()),
            describe: f.describe(),
        })
        .collect();
    DrillReport {
        ok: false,
        verdict: verdict.into(),
        checks: vec![check],
        name: drill.name.clone(),
        seed,
        monkey: monkey_report(drill),
        faults,
        windows: Vec::new(),
        per_second: Vec::new(),
        outcomes: None,
        breaker_transitions: Vec::new(),
        // Not checked, so not passed either.
        invariants: invariants::Report { ok: false, checks: Vec::new(), pending: 0 },
        steady_state: None,
        halted: None,
    }
}

/// The verdict of a drill whose stack failed its steady state before any fault.
pub const NOT_STEADY: &str = "not steady before the drill";
/// The verdict of a drill stopped by SIGINT or SIGTERM.
pub const INTERRUPTED: &str = "interrupted";
const INTERRUPTED_MESSAGE: &str = "interrupted; the drill's faults were cleared";

/// The expectations the steady state and halt rules add.
fn steady_checks(drill: &Drill, steady: &SteadyReport, halted: Option<&Halted>) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(after) = &steady.after {
        let failed: Vec<String> =
            after.checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect();
        checks.push(Check {
            name: "steady_state_after".into(),
            ok: after.ok,
            detail: if after.ok { "steady again after settling".into() } else { failed.join("; ") },
        });
    }
    if !drill.halt.is_empty() {
        checks.push(Check {
            name: "not_halted".into(),
            ok: halted.is_none(),
            detail: match halted {
                None => format!("no halt rule fired ({} watched)", drill.halt.len()),
                Some(h) => format!("`{}` held at {:.1}s: {}", h.rule, h.at_s, h.detail),
            },
        });
    }
    checks
}

fn monkey_report(drill: &Drill) -> Option<MonkeyReport> {
    drill.monkey.as_ref().map(|m| MonkeyReport {
        seed: m.seed,
        faults: drill.monkey_faults,
        timeline: super::monkey::describe(&drill.faults[drill.faults.len() - drill.monkey_faults..]),
    })
}

/// What in a drill only the running stack can judge: every fault's target (and the monkey's)
/// must be one of its services or instances, a partition's sides and a wire fault's `from`
/// whole services that call the target, the registry takes only kill and pause, and the
/// gateway (its callers are outside the stack) no wire fault. All
/// of it is told before any order is sent, each at its place, rather than one problem per run
/// or as the supervisor would say it halfway through the drill.
pub fn target_problems(drill: &Drill, rows: &[PsRow], stack: &Stack, file: &Path) -> Vec<String> {
    let gateways = stack.services_of(crate::services::Kind::Gateway);
    let known: Vec<&str> = rows.iter().flat_map(|r| [r.service.as_str(), r.instance.as_str()]).collect();
    let service_of =
        |name: &str| rows.iter().find(|r| r.instance == name && r.service != name).map(|r| r.service.clone());
    let part_of = |name: &str, service: &str| {
        format!(
            "names `{name}`, one instance of `{service}`; partitions and `from` take whole services: name `{service}`"
        )
    };
    let no_wire = "the gateway takes no wire fault: its callers are clients outside the stack, which never pass a \
                   proxy; break the wire behind it (e.g. `net: order`, or `from: gateway`)";
    // `FILE:LINE:COL` where the file writes it, as for every other mistake in the file.
    let place = |at| crate::plumbing::yaml::Pos::place(file, at);
    let unknown = |name: &str| {
        let mut services: Vec<&str> = rows.iter().map(|r| r.service.as_str()).collect();
        services.dedup();
        let hint = match crate::plumbing::yaml::did_you_mean(name, known.iter().copied()) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("it has: {}", services.join(", ")),
        };
        format!("names `{name}`, which is not a service or instance of the running stack; {hint}")
    };
    let only_process = "the registry takes only kill and pause";
    let mut problems = Vec::new();
    // The file's own faults; the monkey's are judged by its targets below, drawn or not.
    for (n, fault) in drill.faults[..drill.faults.len() - drill.monkey_faults].iter().enumerate() {
        for name in fault.names() {
            if !known.contains(&name) {
                problems.push(format!("{}: faults[{n}] {}", place(fault.written_at), unknown(name)));
            } else if name == REGISTRY && !fault.is_process_fault() {
                problems.push(format!("{}: faults[{n}]: {only_process}", place(fault.written_at)));
            } else if let Some(service) = service_of(name).filter(|_| fault.whole_services().contains(&name)) {
                problems.push(format!("{}: faults[{n}] {}", place(fault.written_at), part_of(name, &service)));
            }
        }
        if fault.action() == ChaosAction::Net && gateways.iter().any(|g| g == fault.target()) {
            problems.push(format!("{}: faults[{n}]: {no_wire}", place(fault.written_at)));
        }
        if let Some(from) = fault.whole_services().first().filter(|_| fault.action() == ChaosAction::Net) {
            let target = service_of(fault.target()).unwrap_or_else(|| fault.target().to_string());
            if known.contains(from) && !stack.calls(from, &target) {
                let why = if *from == target {
                    "is the target itself, and a service never calls itself over the wire".to_string()
                } else {
                    format!("never calls `{target}`, so no call would pass the fault")
                };
                let callers = stack.callers_of(&target).join(", ");
                problems.push(format!(
                    "{}: faults[{n}]: `from: {from}` {why}; name one of its callers ({callers})",
                    place(fault.written_at)
                ));
            }
        }
    }
    if let Some(m) = &drill.monkey {
        // In a drill file, `monkey.targets` at its place; on the command line, `--targets`.
        let what = match m.targets_at {
            Some(at) => format!("{}: monkey.targets", place(Some(at))),
            None => "--targets".to_string(),
        };
        for name in &m.targets {
            if !known.contains(&name.as_str()) {
                problems.push(format!("{what} {}", unknown(name)));
            } else if name == REGISTRY && m.faults.iter().any(|f| f != "kill" && f != "pause") {
                problems.push(format!("{what}: {only_process}, and the monkey's faults include others"));
            } else if let Some(service) = service_of(name).filter(|_| m.faults.iter().any(|f| f == "partition")) {
                problems.push(format!("{what} {}, and the monkey's faults include partition", part_of(name, &service)));
            } else if gateways.contains(name) && m.faults.iter().any(|f| f == "net") {
                problems.push(format!("{what}: {no_wire}, and the monkey's faults include net"));
            }
        }
    }
    problems
}

/// Runs the load with the fault timeline beside it. The timeline is always stopped and
/// awaited before this returns, so no fault can be applied after the caller clears them.
async fn exercise(
    plan: LoadPlan,
    drill: &Drill,
    seed: Option<u64>,
    control: &Arc<Control>,
    owner: &str,
    quiet: bool,
    interrupts: &mut Interrupts,
) -> anyhow::Result<Exercise> {
    let mut load = Load::start(plan).map_err(|e| match e {
        traffic::LoadError::Plan(e) => Failure::usage(e.to_string()),
        other => other.into(),
    })?;
    let run_id = load.run_id().to_string();
    let started_wall = SystemTime::now() - load.started().elapsed();
    let (stop, stopped) = watch::channel(false);
    let schedule = Schedule {
        faults: drill.faults.clone(),
        seed,
        horizon: expiry_horizon(drill),
        started: load.started(),
        owner: owner.to_string(),
    };
    let timeline = tokio::spawn(timeline(control.clone(), schedule, stopped, load.bar().clone(), quiet));
    let halt = Halting { stop: &stop, control, owner };
    let driven = drive(&mut load, interrupts, &drill.halt, Some(halt)).await;
    let load_end = load.started().elapsed();
    stop.send_replace(true);
    // The load's own report first: a fault still being confirmed is not part of its time.
    let report = load.finish();
    let applied = timeline.await.map_err(|e| anyhow::anyhow!("the fault timeline ended abnormally: {e}"))?;
    let (halted, interrupted) = match driven {
        Ok(halted) => (halted, false),
        Err(e) if is_interrupted(&e) => (None, true),
        Err(e) => return Err(e),
    };
    let report = report?;
    Ok(Exercise { report, run_id, started_wall, applied, load_end, halted, interrupted })
}

/// When the faults of a drill stop mattering: the end of its load if known, for the expiry
/// every fault carries.
fn expiry_horizon(drill: &Drill) -> Option<Duration> {
    drill.horizon()
}

/// What a halt rule does once it fires: stop the timeline and roll back at once.
struct Halting<'a> {
    stop: &'a watch::Sender<bool>,
    control: &'a Control,
    owner: &'a str,
}

/// Waits for the load to end, judging the halt rules every second; Ctrl-C or SIGTERM gives up
/// on it (the caller then clears the faults). A rule that fires stops the load and rolls back
/// before the orders in flight finish.
async fn drive(
    load: &mut Load,
    interrupts: &mut Interrupts,
    rules: &[HaltRule],
    halting: Option<Halting<'_>>,
) -> anyhow::Result<Option<Halted>> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One reading per second, newest last: a rule judges the difference over its `for`.
    let mut readings: Vec<Live> = vec![Live::default()];
    // The latencies of the orders answered in each second, aligned with `readings` (the first
    // is empty); only the last `longest` seconds are kept.
    let mut answered: Vec<Vec<u64>> = vec![Vec::new()];
    let longest = rules.iter().map(|r| r.for_.as_secs().max(1) as usize).max().unwrap_or(1);
    let mut halted = None;
    loop {
        tokio::select! {
            joined = load.join_next() => match joined {
                None => return Ok(halted),
                Some(merged) => merged?,
            },
            _ = interrupts.recv() => {
                // What ended so far is kept for the report; the orders in flight are given up.
                load.abandon();
                while let Some(merged) = load.join_next().await {
                    merged?;
                }
                return Err(interrupted());
            }
            _ = tick.tick(), if !rules.is_empty() && halted.is_none() => {
                readings.push(load.live());
                answered.push(load.take_latencies_us());
                if let Some(old) = answered.len().checked_sub(longest + 1) {
                    answered[old] = Vec::new();
                }
                let now = readings[readings.len() - 1];
                for rule in rules {
                    let secs = rule.for_.as_secs().max(1) as usize;
                    if readings.len() <= secs {
                        continue;
                    }
                    let then = readings[readings.len() - 1 - secs];
                    let mut latencies: Vec<u64> = answered[answered.len() - secs..].concat();
                    let measures = Measures {
                        orders: now.done - then.done,
                        confirmed: now.confirmed - then.confirmed,
                        failed: now.failed - then.failed,
                        errors: now.errors - then.errors,
                        ..Measures::default()
                    }
                    .with_latencies_us(&mut latencies);
                    let row = rule.when.evaluate(&measures);
                    if row.pass && measures.orders > 0 {
                        load.stop();
                        let at_s = secs_f(load.started().elapsed());
                        if let Some(h) = &halting {
                            h.stop.send_replace(true);
                            // Rolled back now, not once the orders in flight are done.
                            if let Err(e) = rollback(h.control, h.owner).await {
                                eprintln!("warning: {e:#}");
                            }
                        }
                        let detail = format!(
                            "{} of {} orders answered in the last {}",
                            row.observed_text(),
                            measures.orders,
                            humantime::format_duration(rule.for_)
                        );
                        halted = Some(Halted { rule: rule.when.expression.clone(), at_s, detail });
                        break;
                    }
                }
            }
        }
    }
}

fn secs_f(d: Duration) -> f64 {
    secs(d)
}

pub fn interrupted() -> anyhow::Error {
    Failure::runtime(INTERRUPTED_MESSAGE)
}

/// The faults a timeline applies, and when.
pub struct Schedule {
    pub faults: Vec<Fault>,
    /// The run's seed, handed to each fault's request.
    pub seed: Option<u64>,
    /// How long the run may last at most, if known: a fault without a duration of its own
    /// expires a little after it.
    pub horizon: Option<Duration>,
    /// The moment the faults' offsets count from.
    pub started: Instant,
    /// Whose faults they are: the rollback clears these and no others.
    pub owner: String,
}

/// Applies each fault at its offset, in time order, until the load ends (`stop`); faults
/// still waiting then are never applied. Each is applied in a task of its own, so a wire
/// fault, which the supervisor confirms only once callers have switched to its proxy, does
/// not hold back the faults due after it; those sent before `stop` are awaited, so none is
/// applied after the caller clears them.
pub async fn timeline(
    control: Arc<Control>,
    schedule: Schedule,
    mut stop: watch::Receiver<bool>,
    bar: indicatif::ProgressBar,
    quiet: bool,
) -> Vec<Applied> {
    let Schedule { faults, seed, horizon, started, owner } = schedule;
    let how = Arc::new(Applying { control, seed, horizon, started, owner, bar, quiet });
    let mut applied: Vec<Applied> = faults.iter().map(|_| Applied::default()).collect();
    let mut order: Vec<usize> = (0..faults.len()).collect();
    order.sort_by_key(|i| faults[*i].at);
    let mut sent = tokio::task::JoinSet::new();
    for i in order {
        let fault = faults[i].clone();
        tokio::select! {
            _ = tokio::time::sleep_until((started + fault.at).into()) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let how = how.clone();
        sent.spawn(async move { (i, apply(&how, fault).await) });
    }
    while let Some(joined) = sent.join_next().await {
        match joined {
            Ok((i, outcome)) => applied[i] = outcome,
            Err(e) => tracing::warn!(error = %e, "applying a fault ended abnormally"),
        }
    }
    applied
}

/// What every fault of a timeline is applied with.
struct Applying {
    control: Arc<Control>,
    seed: Option<u64>,
    horizon: Option<Duration>,
    started: Instant,
    owner: String,
    bar: indicatif::ProgressBar,
    quiet: bool,
}

/// Applies one fault; `at` in what it returns is when the supervisor confirmed it (for a wire
/// fault, once callers had switched to its proxy).
async fn apply(how: &Applying, fault: Fault) -> Applied {
    let Applying { control, seed, horizon, started, owner, bar, quiet } = how;
    let (seed, horizon, started, quiet) = (*seed, *horizon, *started, *quiet);
    let mut applied = Applied::default();
    // The instances a restarting kill takes down, to tell the new processes from them.
    let before = if fault.restarts() { pids_of(control, fault.target()).await } else { HashSet::new() };
    let due = started.elapsed();
    let mut request = fault.request(seed);
    request.owner = Some(owner.to_string());
    // Every fault carries an expiry, so one left by a drill that was SIGKILLed ends anyway.
    if request.for_ms.is_none() && !fault.restarts() {
        let left = horizon.map_or(UNKNOWN_EXPIRY, |h| h.saturating_sub(due) + EXPIRY_SLACK);
        request.for_ms = Some(left.as_millis() as u64);
    }
    let body = match serde_json::to_value(request) {
        Ok(body) => body,
        Err(e) => {
            applied.error = Some(format!("cannot encode the request: {e}"));
            return applied;
        }
    };
    match control.post("/v1/chaos", body, Duration::from_secs(30)).await {
        Ok(_) => {
            let at = started.elapsed();
            applied.at = Some(at);
            if fault.restarts() {
                let target = fault.target().to_string();
                applied.back = Some(tokio::spawn(watch_restart(control.clone(), target, before, started)));
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
            applied.error = Some(message);
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
                && rows
                    .iter()
                    .all(|r| r.state == InstanceState::Healthy && r.pid.is_some_and(|p| !before.contains(&p)));
            if back {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The invariants once in-flight sagas have had their time.
pub struct Settled {
    pub report: invariants::Report,
    /// How long until nothing was pending or reserved any more; `None` if that never happened.
    pub after: Option<Duration>,
    /// How long until every invariant held (notifications can trail the orders); `None` if
    /// they never all did.
    pub held_after: Option<Duration>,
}

/// Checks the invariants until they hold or `within` runs out, in short rounds of
/// `check_settled` so that Ctrl-C is heard between them.
async fn settle(dbs: &Databases, within: Duration, interrupts: &mut Interrupts) -> anyhow::Result<Settled> {
    let begun = Instant::now();
    let deadline = begun + within;
    let mut after = None;
    loop {
        let round = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(500));
        let dbs = dbs.clone();
        let checked = tokio::task::spawn_blocking(move || invariants::check_settled(&dbs, round));
        let report = tokio::select! {
            r = checked => r.map_err(|e| anyhow::anyhow!("the invariant checks ended abnormally: {e}"))??,
            _ = interrupts.recv() => return Err(interrupted()),
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
pub struct AfterSettle {
    /// Orders of this drill in the order database (the others never reached it).
    pub orders: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub pending: u64,
    pub failures_by_code: BTreeMap<String, u64>,
}

/// Finds the drill's orders by the load's idempotency keys (`{run_id}-{n}`), which the gateway
/// passes on unchanged: this also counts orders whose answer the load never got.
fn final_outcomes(order_db: &Path, run_id: &str) -> anyhow::Result<AfterSettle> {
    let conn = crate::plumbing::db::open_read_only(order_db)?;
    let outcomes = order_store::outcomes_by_key_prefix(&conn, &format!("{run_id}-"))?;
    let mut after = AfterSettle { orders: 0, confirmed: 0, failed: 0, pending: 0, failures_by_code: BTreeMap::new() };
    for outcome in outcomes {
        after.orders += 1;
        match outcome.status {
            OrderStatus::Confirmed => after.confirmed += 1,
            OrderStatus::Failed => {
                after.failed += 1;
                let code = outcome.failure_code.unwrap_or_else(|| "unknown".into());
                *after.failures_by_code.entry(code).or_default() += 1;
            }
            OrderStatus::Pending => after.pending += 1,
        }
    }
    Ok(after)
}

/// One change of a circuit breaker during the drill.
#[derive(Serialize)]
pub struct BreakerTransition {
    pub instance: String,
    pub dependency: String,
    pub from: String,
    pub to: String,
    /// RFC 3339, as the instance recorded it.
    pub at: String,
    /// Seconds from the start of the load.
    pub at_s: f64,
}

/// The breaker transitions every running instance recorded since `since`. An instance that was
/// restarted during the drill remembers only those of its new process.
async fn breaker_transitions(rows: &[PsRow], secret: &str, since: SystemTime) -> Vec<BreakerTransition> {
    let admin = AdminClient::new(secret);
    let mut all = Vec::new();
    for row in rows.iter().filter(|r| r.pid.is_some()) {
        let Some(addr) = &row.address else { continue };
        // An instance that does not answer has no transitions to report.
        let Ok(report) = admin.breakers(addr).await else { continue };
        for t in report.transitions {
            let Ok(when) = humantime::parse_rfc3339(&t.at) else { continue };
            // Timestamps are truncated to whole milliseconds: allow for that much.
            let Ok(offset) = (when + Duration::from_millis(1)).duration_since(since) else { continue };
            all.push(BreakerTransition {
                instance: row.instance.clone(),
                dependency: t.dependency,
                from: t.from.as_str().to_string(),
                to: t.to.as_str().to_string(),
                at: t.at,
                at_s: round(offset.saturating_sub(Duration::from_millis(1)).as_secs_f64(), 3),
            });
        }
    }
    all.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.instance.cmp(&b.instance)));
    all
}

fn fault_reports(drill: &Drill, ex: &Exercise, back: Vec<Option<Duration>>) -> Vec<FaultReport> {
    timeline_reports(&drill.faults, &ex.applied, back, ex.load_end)
}

/// Each fault with when it was applied and ended; `end` is when the run ended and cleared
/// them, and `back` when a killed target that restarts was healthy again.
fn timeline_reports(
    faults: &[Fault],
    applied: &[Applied],
    back: Vec<Option<Duration>>,
    end: Duration,
) -> Vec<FaultReport> {
    faults
        .iter()
        .zip(applied)
        .zip(back)
        .enumerate()
        .map(|(n, ((fault, applied), back))| {
            let ended = applied.at.map(|at| {
                if fault.restarts() {
                    back.unwrap_or(end).max(at)
                } else {
                    fault.for_.map_or(end, |d| (at + d).min(end)).max(at)
                }
            });
            let late = applied.at.filter(|at| *at > end).map(|at| {
                format!(
                    "{}: in force at {:.2}s, after the load ended at {:.2}s; no order met it",
                    super::report::TOO_LATE,
                    secs(at),
                    secs(end)
                )
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
                error: applied.error.clone().or(late),
                describe: fault.describe(),
            }
        })
        .collect()
}

/// `shop chaos monkey`: applies `faults` on their timeline for `duration`, then rolls back and
/// says what was applied when; Ctrl-C or SIGTERM rolls back at once (exit 1). Each fault
/// carries its own expiry too.
pub async fn monkey(
    control: Control,
    faults: Vec<Fault>,
    duration: Duration,
    quiet: bool,
) -> anyhow::Result<MonkeyRun> {
    let control = Arc::new(control);
    let mut interrupts = Interrupts::new()?;
    let started = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let bar = indicatif::ProgressBar::hidden();
    let owner = crate::plumbing::ids::new("monkey");
    let schedule =
        Schedule { faults: faults.clone(), seed: None, horizon: Some(duration), started, owner: owner.clone() };
    let mut applying = tokio::spawn(timeline(control.clone(), schedule, stopped, bar, quiet));
    let end = tokio::time::sleep_until((started + duration).into());
    tokio::pin!(end);
    let mut finished = None;
    let interrupted_at = loop {
        tokio::select! {
            _ = &mut end => break false,
            _ = interrupts.recv() => break true,
            joined = &mut applying, if finished.is_none() => finished = Some(joined),
        }
    };
    stop.send_replace(true);
    let applied = match finished {
        Some(joined) => joined,
        None => applying.await,
    }
    .map_err(|e| anyhow::anyhow!("the fault timeline ended abnormally: {e}"))?;
    rollback(&control, &owner).await?;
    let took = applied.iter().filter(|a| a.took()).count();
    if !quiet {
        eprintln!("monkey done: {took} of {} faults applied; faults cleared", applied.len());
    }
    // A killed target that restarts is back by the policy's own timing, not watched here.
    let back = applied.iter().map(|_| None).collect();
    let mut faults = timeline_reports(&faults, &applied, back, started.elapsed());
    if interrupted_at {
        for f in faults.iter_mut().filter(|f| f.applied_at_s.is_none() && f.error.is_none()) {
            f.error = Some(format!("{}: {INTERRUPTED} before its time", super::report::NOT_INJECTED));
        }
    }
    Ok(MonkeyRun { faults, interrupted: interrupted_at })
}

/// What a monkey run did: each fault with when it was applied and ended, and whether Ctrl-C
/// or SIGTERM cut it short (its faults were cleared all the same).
pub struct MonkeyRun {
    pub faults: Vec<FaultReport>,
    pub interrupted: bool,
}
