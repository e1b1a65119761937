//! The drill report (SPEC section 8): its figures (windows around each fault, the verdict of
//! each expectation), and its two renderings, the human one and `--json` (the report itself,
//! serialized).

use std::time::Duration;

use comfy_table::Table;
use serde::Serialize;
use serde_json::Value;

use super::run::{AfterSettle, BreakerTransition, Settled};

/// How a fault's error begins when the drill never tried it (not steady before the drill),
/// so the table does not call it failed.
pub const NOT_INJECTED: &str = "not injected";
/// How a fault's error begins when it was in force only after the load ended (a wire fault
/// confirmed once callers switched): applied, but no order met it.
pub const TOO_LATE: &str = "too late";
use super::spec::Drill;
use crate::invariants::{self, Check};
use crate::traffic::engine::round;
use crate::traffic::{Outcome, Sample, Summary};

/// The journal of a drill: `--json` and `--json FILE` write it whole.
#[derive(Serialize)]
pub struct DrillReport {
    pub ok: bool,
    /// `passed`, `failed`, `halted`, or `not steady before the drill`.
    pub verdict: String,
    /// The expectations.
    pub checks: Vec<Check>,
    pub name: String,
    pub seed: Option<u64>,
    pub monkey: Option<MonkeyReport>,
    /// The fault timeline: what was asked, applied and ended when.
    pub faults: Vec<FaultReport>,
    pub windows: Vec<Window>,
    /// The traffic timeline, one entry per second of the load.
    pub per_second: Vec<Second>,
    /// `null` when the load never ran (not steady before the drill).
    pub outcomes: Option<Outcomes>,
    pub breaker_transitions: Vec<BreakerTransition>,
    pub invariants: invariants::Report,
    pub steady_state: Option<SteadyReport>,
    /// The halt rule that stopped the drill, if one did.
    pub halted: Option<Halted>,
}

/// The steady-state probes, before the faults and after settling.
#[derive(Default, Serialize)]
pub struct SteadyReport {
    pub before: Option<ProbeReport>,
    pub after: Option<ProbeReport>,
}

/// One probe: each threshold (and the invariants) as a check, and what the probe load saw.
#[derive(Serialize)]
pub struct ProbeReport {
    pub ok: bool,
    pub checks: Vec<Check>,
    pub summary: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct Halted {
    /// The rule as written.
    pub rule: String,
    /// Seconds from the start of the load.
    pub at_s: f64,
    pub detail: String,
}

#[derive(Serialize)]
pub struct MonkeyReport {
    pub seed: u64,
    pub faults: usize,
    /// As printed before the run.
    pub timeline: Vec<String>,
}

/// One second of the load: the orders that started in it and how they fared (`started` to
/// `p99_ms`, latency from the start), and what was answered in it (`completed`, and
/// `throughput`, the orders confirmed), so an outage shows as a drop while orders still start.
#[derive(Clone, Debug, Serialize)]
pub struct Second {
    pub t: u64,
    pub started: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub errors: u64,
    pub pending: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Orders answered in this second, whatever the answer.
    pub completed: u64,
    /// Orders answered CONFIRMED in this second.
    pub throughput: u64,
}

/// The per-second traffic timeline of a load's samples, up to the last answer.
pub fn per_second(samples: &[Sample]) -> Vec<Second> {
    let Some(last) = samples.iter().map(|s| (s.start + s.latency).as_secs()).max() else { return Vec::new() };
    let mut completed = vec![0u64; last as usize + 1];
    // An order given up on in flight started, and never completed.
    for s in samples.iter().filter(|s| s.answered) {
        completed[(s.start + s.latency).as_secs() as usize] += 1;
    }
    (0..=last)
        .map(|t| {
            let from = t as f64;
            let w = window(0, "second", from, from + 1.0, samples);
            Second {
                t,
                started: w.orders,
                confirmed: w.confirmed,
                failed: w.failed,
                errors: w.errors,
                pending: w.pending,
                p50_ms: w.latency_ms.p50,
                p99_ms: w.latency_ms.p99,
                completed: completed[t as usize],
                throughput: w.throughput_per_s.round() as u64,
            }
        })
        .collect()
}

/// One fault of the timeline; times are seconds from the start of the load.
#[derive(Serialize)]
pub struct FaultReport {
    /// 1-based, in file order; windows refer to it.
    pub index: usize,
    pub fault: &'static str,
    pub target: String,
    pub params: Value,
    /// When the file asked for it.
    pub at_s: f64,
    pub for_s: Option<f64>,
    /// When it was applied; `null` if it never was.
    pub applied_at_s: Option<f64>,
    /// When it ended: its `for` ran out, the faults were cleared, or a restarted instance was
    /// healthy again.
    pub ended_at_s: Option<f64>,
    pub error: Option<String>,
    /// For the human report.
    #[serde(skip)]
    pub describe: String,
}

#[derive(Serialize)]
pub struct Outcomes {
    /// What the load saw, as `shop load --json` reports it.
    #[serde(flatten)]
    pub load: Summary,
    pub after_settle: AfterSettle,
}

/// The traffic in one window around a fault, by the start time of each order.
#[derive(Serialize)]
pub struct Window {
    pub fault: usize,
    /// before, during or after.
    pub phase: &'static str,
    pub from_s: f64,
    pub to_s: f64,
    /// Orders that started in the window; the latencies and outcomes are theirs.
    pub orders: u64,
    /// Orders started per second: what the load offered.
    pub started_per_s: f64,
    /// Orders answered CONFIRMED within the window, per second, whenever they started: what
    /// the system delivered. An outage shows here as a drop, while orders still start.
    pub throughput_per_s: f64,
    pub latency_ms: WindowLatency,
    pub confirmed: u64,
    pub failed: u64,
    /// Answered 202: the order was placed and its saga still ran.
    pub pending: u64,
    pub errors: u64,
    /// Still unanswered when an interrupted drill gave up on them: nobody knows yet what came
    /// of them, so they are neither pending nor errors.
    pub abandoned: u64,
}

#[derive(Serialize)]
pub struct WindowLatency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Seconds, to the millisecond.
pub fn secs(d: Duration) -> f64 {
    round(d.as_secs_f64(), 3)
}

/// Windows shorter than this say nothing about a rate (a fault applied at 0s has no "before").
const MIN_WINDOW_S: f64 = 0.05;

/// Before, during and after each applied fault, over the whole load.
pub fn windows(faults: &[FaultReport], samples: &[Sample], load_end: Duration) -> Vec<Window> {
    let end = load_end.as_secs_f64();
    let mut out = Vec::new();
    for f in faults {
        let (Some(applied), Some(ended)) = (f.applied_at_s, f.ended_at_s) else { continue };
        // Nothing is measured past the load's end: a fault in force only then has no window
        // of its own, and the one before it ends with the load.
        let (applied, ended) = (applied.min(end), ended.min(end));
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
    let mut latencies: Vec<f64> =
        inside.iter().filter(|s| s.answered).map(|s| s.latency.as_secs_f64() * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    // Nearest rank: the smallest latency that at least q of the orders did not exceed.
    let quantile = |q: f64| -> Option<f64> {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(rank - 1).map(|ms| round(*ms, 2))
    };
    let count = |pick: fn(&Outcome) -> bool| inside.iter().filter(|s| pick(&s.outcome)).count() as u64;
    let length = to - from;
    let per_s = |n: usize| if length > 0.0 { round(n as f64 / length, 1) } else { 0.0 };
    let delivered = samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Confirmed))
        .filter(|s| (from..to).contains(&(s.start + s.latency).as_secs_f64()))
        .count();
    Window {
        fault,
        phase,
        from_s: round(from, 3),
        to_s: round(to, 3),
        orders: inside.len() as u64,
        started_per_s: per_s(inside.len()),
        throughput_per_s: per_s(delivered),
        latency_ms: WindowLatency { p50: quantile(0.50), p99: quantile(0.99) },
        confirmed: count(|o| matches!(o, Outcome::Confirmed)),
        failed: count(|o| matches!(o, Outcome::Failed(_))),
        pending: inside.iter().filter(|s| s.answered && matches!(s.outcome, Outcome::Pending)).count() as u64,
        errors: count(|o| matches!(o, Outcome::Error(_))),
        abandoned: inside.iter().filter(|s| !s.answered).count() as u64,
    }
}

/// The drill's verdict: each expectation of the file, plus that every fault was applied
/// (a fault that never happened tests nothing).
pub fn expectations(
    drill: &Drill,
    faults: &[FaultReport],
    settled: &Settled,
    after: &AfterSettle,
    orders: u64,
    dropped: u64,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let missed: Vec<String> = faults
        .iter()
        .filter(|f| f.applied_at_s.is_none() || f.error.is_some())
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
        // Over the orders the schedule offered: one dropped at the concurrency cap is a user
        // who was never served, so it counts against the drill as a failed order would.
        let offered = orders + dropped;
        let percent = if offered > 0 { after.confirmed as f64 * 100.0 / offered as f64 } else { 0.0 };
        let dropped_note =
            if dropped > 0 { format!(", {dropped} dropped at the concurrency cap") } else { String::new() };
        checks.push(Check {
            name: "min_confirmed_percent".into(),
            ok: percent >= min,
            detail: format!(
                "{:.1}% confirmed ({} of {offered} orders offered{dropped_note}), at least {min}% expected",
                percent, after.confirmed
            ),
        });
    }
    checks
}

/// PASS or FAIL, coloured by comfy-table rather than by escape codes in the text, which it
/// would count as width and so pad the column wrong.
fn pass_fail(ok: bool, color: bool) -> comfy_table::Cell {
    let cell = comfy_table::Cell::new(if ok { "PASS" } else { "FAIL" });
    match color {
        true => cell.fg(if ok { comfy_table::Color::Green } else { comfy_table::Color::Red }),
        false => cell,
    }
}

fn opt_secs(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.2}s")).unwrap_or_else(|| "-".into())
}

/// The human report; `table` builds an empty table with a header, as every command's tables
/// are built, and `color` says whether PASS and FAIL may be coloured.
pub fn render(r: &DrillReport, table: fn(&[&str]) -> Table, color: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    // Writing to a String cannot fail.
    macro_rules! println {
        () => { let _ = writeln!(out); };
        ($($arg:tt)*) => { let _ = writeln!(out, $($arg)*); };
    }
    println!("drill {}", r.name);
    println!("\nfaults");
    if r.faults.is_empty() {
        println!("  none");
    } else {
        let mut t = table(&["#", "FAULT", "TARGET", "PARAMS", "AT", "APPLIED AT", "ENDED AT"]);
        for f in &r.faults {
            t.add_row(vec![
                f.index.to_string(),
                f.fault.to_string(),
                f.target.clone(),
                if f.describe.is_empty() { "-".into() } else { f.describe.clone() },
                format!("{:.2}s", f.at_s),
                match &f.error {
                    Some(e) if e.starts_with(NOT_INJECTED) => NOT_INJECTED.to_string(),
                    Some(e) if e.starts_with(TOO_LATE) => TOO_LATE.to_string(),
                    Some(e) if e.starts_with(super::run::INTERRUPTED) => super::run::INTERRUPTED.to_string(),
                    Some(_) => "failed".to_string(),
                    None => opt_secs(f.applied_at_s),
                },
                opt_secs(f.ended_at_s),
            ]);
        }
        println!("{}", t.trim_fmt());
    }
    for f in &r.faults {
        let rows: Vec<&Window> = r.windows.iter().filter(|w| w.fault == f.index).collect();
        if rows.is_empty() {
            continue;
        }
        println!("\nfault {}: {} {}", f.index, f.fault, f.target);
        let mut t = table(&[
            "WINDOW",
            "FROM",
            "TO",
            "ORDERS",
            "STARTED/S",
            "CONFIRMED/S",
            "P50",
            "P99",
            "FAILED",
            "ERRORS",
            "PENDING",
        ]);
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "-".into());
        for w in rows {
            t.add_row(vec![
                w.phase.to_string(),
                format!("{:.2}s", w.from_s),
                format!("{:.2}s", w.to_s),
                w.orders.to_string(),
                format!("{:.1}", w.started_per_s),
                format!("{:.1}", w.throughput_per_s),
                ms(w.latency_ms.p50),
                ms(w.latency_ms.p99),
                w.failed.to_string(),
                w.errors.to_string(),
                match w.abandoned {
                    0 => w.pending.to_string(),
                    n => format!("{} +{n} abandoned", w.pending),
                },
            ]);
        }
        println!("{}", t.trim_fmt());
    }
    if let Some(m) = &r.monkey {
        println!("\nmonkey (seed {}): {} faults", m.seed, m.faults);
        for line in &m.timeline {
            println!("  {line}");
        }
    }
    if let Some(steady) = &r.steady_state {
        for (when, probe) in [("before the faults", &steady.before), ("after settling", &steady.after)] {
            let Some(probe) = probe else { continue };
            println!("\nsteady state {when}");
            let mut t = table(&["CHECK", "RESULT", "DETAIL"]);
            for c in &probe.checks {
                t.add_row(vec![
                    comfy_table::Cell::new(&c.name),
                    pass_fail(c.ok, color),
                    comfy_table::Cell::new(&c.detail),
                ]);
            }
            println!("{}", t.trim_fmt());
        }
    }
    if let Some(h) = &r.halted {
        println!("\nhalted at {:.1}s: `{}` held ({}); load stopped, faults rolled back", h.at_s, h.rule, h.detail);
    }
    let Some(outcomes) = &r.outcomes else {
        println!("\nexpectations");
        let mut t = table(&["CHECK", "RESULT", "DETAIL"]);
        for c in &r.checks {
            t.add_row(vec![comfy_table::Cell::new(&c.name), pass_fail(c.ok, color), comfy_table::Cell::new(&c.detail)]);
        }
        println!("{}", t.trim_fmt());
        println!("\ndrill {}: FAILED ({})", r.name, r.verdict);
        return out;
    };
    println!("\noutcomes (as the load saw them)");
    let mut summary = table(&["METRIC", "VALUE"]);
    for (name, value) in outcomes.load.rows() {
        summary.add_row(vec![name, value]);
    }
    println!("{}", summary.trim_fmt());
    let a = &outcomes.after_settle;
    let by_code: Vec<String> = a.failures_by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let when = if r.verdict == super::run::INTERRUPTED { "when interrupted (not settled)" } else { "after settling" };
    println!(
        "{when}: {} confirmed, {} failed{}, {} pending ({} of the drill's orders reached the order service)",
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
        let mut t = table(&["INSTANCE", "DEPENDENCY", "FROM", "TO", "AT"]);
        for b in &r.breaker_transitions {
            t.add_row(vec![
                b.instance.clone(),
                b.dependency.clone(),
                b.from.clone(),
                b.to.clone(),
                format!("{:.2}s", b.at_s),
            ]);
        }
        println!("{}", t.trim_fmt());
    }
    if r.invariants.checks.is_empty() {
        println!("\ninvariants: not checked");
    } else {
        println!("\ninvariants");
        let mut t = table(&["CHECK", "RESULT", "DETAIL"]);
        for c in &r.invariants.checks {
            t.add_row(vec![comfy_table::Cell::new(&c.name), pass_fail(c.ok, color), comfy_table::Cell::new(&c.detail)]);
        }
        println!("{}", t.trim_fmt());
    }
    println!("\nexpectations");
    let mut t = table(&["CHECK", "RESULT", "DETAIL"]);
    for c in &r.checks {
        t.add_row(vec![comfy_table::Cell::new(&c.name), pass_fail(c.ok, color), comfy_table::Cell::new(&c.detail)]);
    }
    println!("{}", t.trim_fmt());
    let verdict = if r.ok { "PASSED".to_string() } else { format!("FAILED ({})", r.verdict) };
    println!("\ndrill {}: {verdict}", r.name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(start_ms: u64, latency_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            start: Duration::from_millis(start_ms),
            latency: Duration::from_millis(latency_ms),
            outcome,
            answered: true,
        }
    }

    #[test]
    fn windows_split_orders_by_their_start_around_each_fault() {
        let samples = vec![
            sample(100, 10, Outcome::Confirmed),
            sample(900, 20, Outcome::Confirmed),
            sample(1_100, 500, Outcome::Error("http_503".into())),
            sample(1_500, 700, Outcome::Pending),
            sample(2_500, 30, Outcome::Failed("card_declined".into())),
            // In flight when an interrupted drill gave up on it.
            Sample { answered: false, ..sample(1_600, 1_400, Outcome::Pending) },
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
        assert_eq!(phases, [("before", 2), ("during", 3), ("after", 1)]);
        assert_eq!((w[0].started_per_s, w[0].latency_ms.p50, w[0].latency_ms.p99), (2.0, Some(10.0), Some(20.0)));
        // Confirmed answers by when they came: both before the fault, none during or after.
        let delivered: Vec<f64> = w.iter().map(|w| w.throughput_per_s).collect();
        assert_eq!(delivered, [2.0, 0.0, 0.0]);
        // Per second: started by start time, answers by when they came, up to the last answer.
        let seconds = per_second(&samples);
        let by_second: Vec<(u64, u64, u64)> = seconds.iter().map(|s| (s.started, s.completed, s.throughput)).collect();
        // The abandoned order started in second 1 and never completed; the run went on until
        // it was given up on, in second 3.
        assert_eq!(by_second, [(2, 2, 2), (3, 1, 0), (1, 2, 0), (0, 0, 0)]);
        assert_eq!((w[1].errors, w[1].pending, w[1].abandoned, w[2].failed), (1, 1, 1, 1));
    }
}
