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

use super::report::{expectations, secs, windows, DrillReport, FaultReport, Outcomes};
use super::spec::{Drill, Fault};
use crate::error::Failure;
use crate::invariants::{self, Databases};
use crate::orchestrator::control::Control;
use crate::orchestrator::protocol::{InstanceState, PsRow};
use crate::orchestrator::supervisor::REGISTRY;
use crate::traffic::{self, Load, LoadPlan};

/// How long `kill … restart: true` is watched for the instance coming back.
const RESTART_WATCH: Duration = Duration::from_secs(60);
/// How long the report still waits for that, once the sagas have settled.

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
    /// No progress lines on stderr.
    pub quiet: bool,
}

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
    report: traffic::Report,
    /// The load's idempotency-key prefix, to find its orders in the order database.
    run_id: String,
    /// The wall-clock time the load started, to place breaker transitions on its timeline.
    started_wall: SystemTime,
    applied: Vec<Applied>,
    /// When the load ended and the faults were cleared, from the start of the load.
    load_end: Duration,
}

/// Runs the drill and builds its report; the faults are cleared whatever happens.
pub async fn run(setup: Setup) -> anyhow::Result<DrillReport> {
    let Setup { drill, seed, control, rows, dbs, secret, load, quiet } = setup;
    let control = Arc::new(control);
    let mut interrupts =
        signal(SignalKind::interrupt()).map_err(|e| anyhow::anyhow!("cannot watch for Ctrl-C: {e}"))?;
    let say = |line: String| {
        if !quiet {
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
    let plan = LoadPlan { record: true, ..load };
    let exercised = exercise(plan, &drill, seed, &control, quiet, &mut interrupts).await;
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

    let faults = fault_reports(&drill, &ex, ended_back);
    let windows = windows(&faults, &ex.report.samples, ex.load_end);
    let checks = expectations(&drill, &faults, &settled, &after, ex.report.summary.orders);
    Ok(DrillReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
        name: drill.name.clone(),
        seed,
        faults,
        windows,
        outcomes: Outcomes { load: ex.report.summary, after_settle: after },
        breaker_transitions: transitions,
        invariants: settled.report,
    })
}

/// process faults, as the supervisor would say halfway through the drill.
pub fn check_targets(drill: &Drill, rows: &[PsRow], file: &Path) -> anyhow::Result<()> {
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
            if name == REGISTRY && !fault.is_process_fault() {
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
    plan: LoadPlan,
    drill: &Drill,
    seed: Option<u64>,
    control: &Arc<Control>,
    quiet: bool,
    interrupts: &mut Signal,
) -> anyhow::Result<Exercise> {
    let mut load = Load::start(plan).map_err(|e| match e {
        traffic::LoadError::Plan(e) => Failure::usage(e.to_string()),
        other => other.into(),
    })?;
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
        quiet,
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
