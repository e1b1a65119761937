//! Drill files (SPEC section 8): the file → a typed [`Drill`], every problem reported at once
//! at its `FILE:LINE:COL`, as stack.yaml's are.
//!
//! The file goes through the positioned reader of [`crate::plumbing::yaml`]: first into raw
//! sections (shape and types, unknown keys rejected with a "did you mean"), then each section is
//! validated into its typed form. Messages start with the section they are about
//! (`faults[0]: …`, `load: …`), and point at the offending value, or at the section's mapping
//! when what is wrong is a missing or conflicting key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::orchestrator::protocol::{ChaosAction, ChaosRequest};
use crate::orchestrator::proxy::toxic::{duration_ms, listed, parse_rate, parse_size};
use crate::orchestrator::proxy::{Direction, Toxic, ToxicKind, ToxicSpec};
use crate::plumbing::faults::MAX_DELAY_MS;
use crate::plumbing::time::parse_duration;
use crate::plumbing::yaml::{self, Bool, Check, FileError, Float, Int, List, Node, Pos, Raw, Sp, Text};
use crate::raw_struct;
use crate::traffic::gateway::parse_item;
use crate::traffic::{MAX_CONCURRENCY, RATES};

use super::monkey::{self, Monkey};
use crate::traffic::threshold::{Metric, Threshold};

/// A validated drill file.
#[derive(Clone, Debug)]
pub struct Drill {
    /// Names the drill in the report and its final line.
    pub name: String,
    pub load: LoadSpec,
    /// In file order, which is also the report's order.
    pub faults: Vec<Fault>,
    pub expect: Expect,
    /// Checked before the faults (not steady: nothing is injected) and again after settling.
    pub steady_state: Option<SteadyState>,
    /// Judged every second while the load runs; the first that holds stops the drill.
    pub halt: Vec<HaltRule>,
    /// The monkey that added the last [`monkey_faults`](Self::monkey_faults) entries of `faults`.
    pub monkey: Option<Monkey>,
    pub monkey_faults: usize,
}

/// The `steady_state:` mapping.
#[derive(Clone, Debug)]
pub struct SteadyState {
    /// A short load whose figures the thresholds judge.
    pub probe: ProbeLoad,
    pub thresholds: Vec<Threshold>,
    /// `invariants: all`: every invariant must hold too.
    pub invariants: bool,
}

/// `steady_state.probe_load`.
#[derive(Clone, Debug)]
pub struct ProbeLoad {
    pub orders: u64,
    pub rate: Option<f64>,
}

/// One entry of `halt:`.
#[derive(Clone, Debug)]
pub struct HaltRule {
    pub when: Threshold,
    /// How long the condition must hold, judged over that many trailing seconds.
    pub for_: Duration,
}

/// The `load:` mapping: the traffic `shop load` would send.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// With `rate` and `duration`, `rate × duration`.
    pub orders: u64,
    pub concurrency: u64,
    /// The callers in turn: a weighted mix is expanded (alice:80,bob:20 → 4 alice, 1 bob).
    pub users: Vec<String>,
    /// No order starts after this long.
    pub duration: Option<Duration>,
    /// Orders started per second; it also fixes how long the load lasts (`orders / rate`).
    pub rate: Option<f64>,
    pub items: Vec<(String, i64)>,
    /// Where `users` is written, for a message about a user the fixtures do not have.
    pub users_at: Option<Pos>,
}

/// One entry of `faults:`.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Offset from the start of the load.
    pub at: Duration,
    /// How long it lasts; until the end of the load when absent.
    pub for_: Option<Duration>,
    pub action: Action,
    /// Where the file writes it (a monkey's faults: its `targets`), for a message about its
    /// target, which only the running stack can judge.
    pub written_at: Option<Pos>,
}

/// What a fault does, to what.
#[derive(Clone, Debug)]
pub enum Action {
    Kill {
        target: String,
        restart: bool,
        signal: String,
    },
    Pause {
        target: String,
    },
    Latency {
        target: String,
        delay: Duration,
        jitter: Option<Duration>,
        percent: f64,
    },
    Errors {
        target: String,
        status: u16,
        percent: f64,
    },
    /// `refuse`: the old instant refusal; otherwise the wire is cut (blackhole both ways).
    Partition {
        target: String,
        with: String,
        refuse: bool,
    },
    /// A wire fault: `- { at: 2s, net: payment, toxic: reset, after: 50ms, for: 5s }`.
    Net {
        target: String,
        spec: ToxicSpec,
        from: Option<String>,
    },
}

/// The `expect:` mapping.
#[derive(Clone, Debug)]
pub struct Expect {
    /// `invariants: all`: every invariant must hold once settled.
    pub invariants: bool,
    /// How long in-flight sagas get to finish after the faults are cleared.
    pub settle_within: Duration,
    /// Share of the drill's orders that must end CONFIRMED.
    pub min_confirmed_percent: Option<f64>,
}

impl Default for Expect {
    fn default() -> Expect {
        Expect { invariants: false, settle_within: Duration::from_secs(30), min_confirmed_percent: None }
    }
}

/// Why a drill file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the drill file `{}`: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    /// Every problem, at its position.
    #[error("{0}")]
    Invalid(FileError),
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        self.action().as_str()
    }

    /// The supervisor's action for this fault.
    pub fn action(&self) -> ChaosAction {
        match self.action {
            Action::Kill { .. } => ChaosAction::Kill,
            Action::Pause { .. } => ChaosAction::Pause,
            Action::Latency { .. } => ChaosAction::Latency,
            Action::Errors { .. } => ChaosAction::Errors,
            Action::Partition { .. } => ChaosAction::Partition,
            Action::Net { .. } => ChaosAction::Net,
        }
    }

    pub fn target(&self) -> &str {
        match &self.action {
            Action::Kill { target, .. }
            | Action::Pause { target }
            | Action::Latency { target, .. }
            | Action::Errors { target, .. }
            | Action::Partition { target, .. }
            | Action::Net { target, .. } => target,
        }
    }

    /// The names the fault acts on: its target, and a partition's other side.
    pub fn names(&self) -> Vec<&str> {
        match &self.action {
            Action::Partition { target, with, .. } => vec![target, with],
            Action::Net { target, from: Some(from), .. } => vec![target, from],
            _ => vec![self.target()],
        }
    }

    /// The names the fault needs to be whole services: a partition's two sides (callers refuse
    /// or detour by service) and the caller a wire fault is `from`.
    pub fn whole_services(&self) -> Vec<&str> {
        match &self.action {
            Action::Partition { target, with, .. } => vec![target, with],
            Action::Net { from: Some(from), .. } => vec![from],
            _ => Vec::new(),
        }
    }

    /// Whether only kill and pause, which the registry takes too.
    pub fn is_process_fault(&self) -> bool {
        matches!(self.action, Action::Kill { .. } | Action::Pause { .. })
    }

    /// What the fault does beyond its kind and target, for the report.
    pub fn params(&self) -> Value {
        let ms = |d: &Duration| d.as_millis() as u64;
        match &self.action {
            Action::Kill { restart, signal, .. } => json!({"signal": signal, "restart": restart}),
            Action::Pause { .. } => json!({}),
            Action::Latency { delay, jitter, percent, .. } => {
                json!({"delay_ms": ms(delay), "jitter_ms": jitter.as_ref().map(ms).unwrap_or(0), "percent": percent})
            }
            Action::Errors { status, percent, .. } => json!({"status": status, "percent": percent}),
            Action::Partition { with, refuse, .. } => json!({"with": with, "refuse": refuse}),
            Action::Net { spec, from, .. } => {
                let mut v = serde_json::to_value(spec).unwrap_or_default();
                if let (Some(m), Some(from)) = (v.as_object_mut(), from) {
                    m.insert("from".into(), json!(from));
                }
                v
            }
        }
    }

    /// The same as [`params`](Self::params), as a reader would write it.
    pub fn describe(&self) -> String {
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
            Action::Partition { with, refuse, .. } => {
                parts.push(format!("with {with}"));
                if *refuse {
                    parts.push("refuse".into());
                }
            }
            Action::Net { spec, from, .. } => {
                parts.push(format!("{} {}", spec.toxic.kind(), spec.toxic.describe()));
                if spec.direction != Direction::Both {
                    parts.push(spec.direction.as_str().into());
                }
                if spec.toxicity < 100.0 {
                    parts.push(format!("{}%", spec.toxicity));
                }
                if let Some(from) = from {
                    parts.push(format!("from {from}"));
                }
            }
        }
        if let Some(d) = self.for_ {
            parts.push(format!("for {}", humantime::format_duration(d)));
        }
        parts.join(" ")
    }

    /// The supervisor's request for this fault.
    pub fn request(&self, seed: Option<u64>) -> ChaosRequest {
        let ms = |d: Duration| d.as_millis() as u64;
        let base = ChaosRequest {
            action: self.action(),
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
            Action::Partition { with, refuse, .. } => {
                ChaosRequest { peer: Some(with.clone()), refuse: *refuse, ..base }
            }
            Action::Net { spec, from, .. } => {
                ChaosRequest { net: Some(spec.clone()), from: from.clone(), seed, ..base }
            }
        }
    }

    /// `kill … restart: true` ends when the instance is back, which the timeline watches for.
    pub fn restarts(&self) -> bool {
        matches!(self.action, Action::Kill { restart: true, .. })
    }
}

impl Drill {
    /// Reads and validates the drill file at `path`.
    pub fn load(path: &Path) -> Result<Drill, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SpecError::Unreadable { path: path.to_path_buf(), source })?;
        Drill::parse(&text, path).map_err(SpecError::Invalid)
    }

    /// Validates `text`; `file` is the path as given, for messages.
    pub fn parse(text: &str, file: &Path) -> Result<Drill, FileError> {
        let mut c = Check::with_unknown_key(unknown_key);
        let doc = yaml::Doc { noun: "drill file", needs: "`name:` and `load:`" };
        let drill = yaml::read(text, doc, &mut c).and_then(|root| read_drill(&mut c, &root));
        let drill = drill.map(Drill::with_monkey);
        c.finish(file.to_path_buf())?;
        // `finish` fails whenever no drill came out: every `None` above reported a problem.
        drill.ok_or_else(|| FileError::unreadable(file.to_path_buf(), "cannot read the drill file".into()))
    }
}

impl Drill {
    /// How long the load lasts when that is known before it runs.
    pub fn horizon(&self) -> Option<Duration> {
        // Capped as every duration of a drill is: a slow rate over many orders would otherwise
        // overflow what a `Duration` holds.
        let by_rate = self.load.rate.map(|r| {
            Duration::try_from_secs_f64(self.load.orders as f64 / r).unwrap_or(MAX_DURATION).min(MAX_DURATION)
        });
        match (self.load.duration, by_rate) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        }
    }

    /// Appends the monkey's timeline to the file's faults.
    fn with_monkey(mut self) -> Drill {
        if let (Some(m), Some(h)) = (&self.monkey, self.horizon()) {
            let added = m.timeline(h);
            self.monkey_faults = added.len();
            self.faults.extend(added);
        }
        self
    }
}

/// serde's wording, which drill files have always used, with a suggestion when one is close:
/// "faults[0]: unknown field `forr`, expected one of `at`, `for`, …; did you mean `for`?"
fn unknown_key(path: &str, key: &str, known: &[&str], near: Option<&str>) -> String {
    let known: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    let prefix = if path.is_empty() { String::new() } else { format!("{path}: ") };
    let hint = near.map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
    format!("{prefix}unknown field `{key}`, expected one of {}{hint}", known.join(", "))
}

// ---- The raw sections: shape and types ----

raw_struct!(RawLoad {
    orders: Int = int,
    concurrency: Int = int,
    users: List = one_or_many,
    rate: Float = float,
    duration: Text = text,
    item: List = one_or_many
});
raw_struct!(
    /// One entry of `faults:`; exactly one of `kill` … `partition` names its target.
    RawFault {
        at: Text = text,
        r#for: Text = text,
        kill: Text = text,
        pause: Text = text,
        latency: Text = text,
        errors: Text = text,
        partition: Text = text,
        with: Text = text,
        restart: Bool = boolean,
        signal: Text = text,
        delay: Text = text,
        jitter: Text = text,
        percent: Float = float,
        status: Int = int,
        refuse: Bool = boolean,
        net: Text = text,
        toxic: Text = text,
        after: Text = text,
        close_after: Text = text,
        rate: Text = text,
        size: Text = text,
        variation: Text = text,
        bytes: Text = text,
        direction: Text = text,
        toxicity: Float = float,
        from: Text = text,
    }
);
raw_struct!(RawProbe { orders: Int = int, rate: Float = float });
raw_struct!(RawSteady { probe_load: Option<Sp<RawProbe>> = optional, thresholds: List = list, invariants: Text = text });
raw_struct!(RawHalt { when: Text = text, r#for: Text = text });
raw_struct!(RawMonkey {
    mean_interval: Text = text,
    faults: List = list,
    targets: List = list,
    max_concurrent: Int = int,
    seed: Int = int,
    r#for: Text = text,
});
raw_struct!(RawExpect { invariants: Text = text, settle_within: Text = text, min_confirmed_percent: Float = float });

/// The longest duration a drill file may give.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

fn read_drill(c: &mut Check, root: &Node) -> Option<Drill> {
    if !root.is_map() {
        let found = root.describe();
        return c.fail(root.at, format!("a drill file must be a mapping with `name:` and `load:`, not {found}"));
    }
    let top = c.fields(Some(root), "", &["name", "load", "steady_state", "faults", "monkey", "halt", "expect"]);
    let name = c.text(top.get("name"), "name");
    let load_node = top.get("load");
    let raw_load: RawLoad = c.nested(load_node, "load");
    let faults = read_faults(c, top.get("faults"));
    let raw_expect: RawExpect = c.nested(top.get("expect"), "expect");
    let raw_steady: Option<Sp<RawSteady>> = c.optional(top.get("steady_state"), "steady_state");
    let raw_monkey: Option<Sp<RawMonkey>> = c.optional(top.get("monkey"), "monkey");
    let halt = read_halt(c, top.get("halt"));

    let name = match name {
        Some(n) if !n.v.trim().is_empty() => n.v,
        Some(n) => return c.fail(n.at, "`name` must not be empty; it names the drill in its report".into()),
        None => return c.fail(root.at, "a drill needs a `name:`, e.g. name: payment-outage".into()),
    };
    let load = match load_node {
        Some(node) => validate_load(c, &raw_load, node.at),
        None => c.fail(root.at, "a drill needs a `load:`, e.g. load: { orders: 200, concurrency: 8 }".into()),
    };
    let faults: Vec<Option<Fault>> =
        faults.iter().enumerate().map(|(n, f)| validate_fault(c, f, &format!("faults[{n}]"))).collect();
    let expect = validate_expect(c, &raw_expect);
    let steady_state = match &raw_steady {
        None => Some(None),
        Some(raw) => validate_steady(c, &raw.v, raw.at).map(Some),
    };
    let monkey = match (&raw_monkey, &load) {
        (None, _) => Some(None),
        (Some(raw), load) => validate_monkey(c, &raw.v, raw.at, load.as_ref()).map(Some),
    };
    Some(Drill {
        name,
        load: load?,
        faults: faults.into_iter().collect::<Option<_>>()?,
        expect: expect?,
        steady_state: steady_state?,
        halt: halt?,
        monkey: monkey?,
        monkey_faults: 0,
    })
}

/// A fault as read: where its mapping starts, whether it read without a problem, and its fields.
struct ReadFault {
    at: Pos,
    /// False when a key or a value's type was reported already: a missing kind then is most
    /// likely that key misspelled (`kil: payment`), so it is not reported twice.
    clean: bool,
    raw: RawFault,
}

/// The entries of `faults:`.
fn read_faults(c: &mut Check, node: Option<&Node>) -> Vec<ReadFault> {
    let Some(node) = node else { return Vec::new() };
    let yaml::Value::List(items) = &node.value else {
        c.report(node.at, format!("`faults` must be a list of faults, not {}", node.describe()));
        return Vec::new();
    };
    (items.iter().enumerate())
        .map(|(n, item)| {
            let path = format!("faults[{n}]");
            if !item.is_map() {
                let next = "write each fault as a mapping, e.g. - { at: 1s, kill: payment, for: 3s }";
                c.report(item.at, format!("{path}: a fault must be a mapping, not {}; {next}", item.describe()));
            }
            let before = c.problems.len();
            let raw = RawFault::read(c, Some(item), &path);
            ReadFault { at: item.at, clean: c.problems.len() == before, raw }
        })
        .collect()
}

/// A number as a message shows it: plain, or in exponent form when plain would run to hundreds
/// of digits (`1e-300`).
fn shown(v: f64) -> String {
    if v == 0.0 || (1e-6..1e15).contains(&v.abs()) {
        v.to_string()
    } else {
        format!("{v:e}")
    }
}

/// A duration at most a day long; `None` after reporting.
fn duration(c: &mut Check, raw: &Sp<String>, path: &str) -> Option<Duration> {
    match parse_duration(&raw.v) {
        // Also keeps every sum of offsets far from overflowing an `Instant`.
        Ok(d) if d > MAX_DURATION => {
            c.fail(raw.at, format!("{path}: `{}` is longer than a drill can be; write at most 24h", raw.v))
        }
        Ok(d) => Some(d),
        Err(e) => c.fail(raw.at, format!("{path}: {e}")),
    }
}

fn optional_duration(c: &mut Check, raw: &Text, path: &str) -> Result<Option<Duration>, ()> {
    match raw {
        None => Ok(None),
        Some(raw) => duration(c, raw, path).map(Some).ok_or(()),
    }
}

fn percent(c: &mut Check, raw: &Float, path: &str, key: &str) -> Option<f64> {
    match raw {
        None => Some(100.0),
        Some(p) if (0.0..=100.0).contains(&p.v) => Some(p.v),
        Some(p) => c.fail(p.at, format!("{path}: `{key}` must be between 0 and 100, not {}", p.v)),
    }
}

fn validate_load(c: &mut Check, raw: &RawLoad, at: Pos) -> Option<LoadSpec> {
    let mut ok = true;
    let duration = match &raw.duration {
        None => None,
        Some(d) => match duration(c, d, "load.duration") {
            Some(v) if v.is_zero() => {
                c.report(d.at, "load: `duration` must be longer than 0s");
                ok = false;
                None
            }
            Some(v) => Some(v),
            None => {
                ok = false;
                None
            }
        },
    };
    let rate = raw.rate.as_ref().map(|r| r.v).filter(|r| RATES.contains(r));
    if let Some(r) = raw.rate.as_ref().filter(|r| !RATES.contains(&r.v)) {
        let (low, high) = (RATES.start(), RATES.end());
        c.report(r.at, format!("load: `rate` must be {low} to {high} orders per second, not {}", shown(r.v)));
        ok = false;
    }
    let orders = match (&raw.orders, duration, rate) {
        (Some(o), _, _) if o.v < 1 => {
            c.report(o.at, "load: `orders` must be at least 1");
            None
        }
        (Some(o), _, _) => u64::try_from(o.v).ok(),
        // Open loop by rate and duration: order n starts at n / rate until the duration ends.
        (None, Some(d), Some(r)) => Some(((d.as_secs_f64() * r).ceil() as u64).max(1)),
        // Closed loop for a duration: as many orders as fit.
        (None, Some(_), None) => Some(u64::MAX / 2),
        (None, None, _) => {
            c.report(at, "load: give `orders`, or `rate` and `duration`; write e.g. { rate: 100, duration: 20s }");
            None
        }
    };
    let concurrency = match &raw.concurrency {
        // As `shop load`: with a rate, the cap on orders in flight is wide, so an outage builds
        // the queue real users would build; without one, eight workers in a closed loop.
        None if rate.is_some() => crate::traffic::OPEN_LOOP_CONCURRENCY,
        None => 8,
        Some(n) if (1..=MAX_CONCURRENCY as i64).contains(&n.v) => n.v as u64,
        Some(n) => {
            c.report(n.at, format!("load: `concurrency` must be between 1 and {MAX_CONCURRENCY}, not {}", n.v));
            ok = false;
            0
        }
    };
    let users = match &raw.users {
        None => vec!["alice".to_string()],
        Some(list) => match users_mix(&list.v) {
            Ok(users) => users,
            Err((at, message)) => {
                c.report(at, format!("load: {message}"));
                ok = false;
                Vec::new()
            }
        },
    };
    let items = match &raw.item {
        None => vec![("sku-load".to_string(), 1)],
        Some(list) if list.v.is_empty() => {
            c.report(list.at, "load: `item` names no product; write e.g. sku-load:1");
            ok = false;
            Vec::new()
        }
        Some(list) => (list.v.iter())
            .filter_map(|item| parse_item(&item.v).map_err(|e| c.report(item.at, format!("load: {e}"))).ok())
            .collect(),
    };
    ok &= raw.item.as_ref().is_none_or(|list| items.len() == list.v.len());
    let users_at = raw.users.as_ref().map(|list| list.at);
    let spec = LoadSpec { orders: orders?, concurrency, users, duration, rate, items, users_at };
    ok.then_some(spec)
}

/// `users: [alice, bob]`, `users: "alice:80,bob:20"` or `[alice:80, bob:20]`: the callers in
/// turn, each weight divided by the weights' greatest common divisor.
fn users_mix(list: &[Sp<String>]) -> Result<Vec<String>, (Pos, String)> {
    let mut mix: Vec<(String, u64)> = Vec::new();
    for entry in list {
        for part in entry.v.split(',').map(str::trim) {
            let (name, weight) = match part.split_once(':') {
                None => (part, 1),
                Some((name, w)) => match w.trim().parse::<i64>() {
                    Ok(w) if w > 0 => (name.trim(), w as u64),
                    Ok(w) => {
                        return Err((entry.at, format!("`users`: the weight of `{name}` must be above 0, not {w}")))
                    }
                    Err(_) => {
                        return Err((entry.at, format!("`users`: `{part}` is not NAME:WEIGHT, e.g. alice:80,bob:20")))
                    }
                },
            };
            if name.is_empty() {
                return Err((
                    entry.at,
                    "`users` must name fixture users, e.g. [alice, bob] or \"alice:80,bob:20\"".into(),
                ));
            }
            mix.push((name.to_string(), weight));
        }
    }
    if mix.is_empty() {
        let at = list.first().map(|e| e.at).unwrap_or(Pos { line: 1, column: 1 });
        return Err((at, "`users` must name fixture users, e.g. [alice, bob]".into()));
    }
    let gcd = mix.iter().fold(0, |g, (_, w)| num_gcd(g, *w));
    let total: u64 = mix.iter().map(|(_, w)| w / gcd).sum();
    if total > 1000 {
        let at = list[0].at;
        return Err((at, format!("`users`: the weights reduce to {total} turns; use simpler ones like 80,20")));
    }
    // Interleaved, so a short run still sees the mix: alice bob alice alice … rather than blocks.
    let mut left: Vec<(String, u64)> = mix.iter().map(|(n, w)| (n.clone(), w / gcd)).collect();
    let mut out = Vec::new();
    while left.iter().any(|(_, w)| *w > 0) {
        for (name, w) in left.iter_mut().filter(|(_, w)| *w > 0) {
            out.push(name.clone());
            *w -= 1;
        }
    }
    Ok(out)
}

fn num_gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        num_gcd(b, a % b)
    }
}

/// A threshold expression written in the file, reported at its position.
fn threshold(c: &mut Check, raw: &Sp<String>, path: &str) -> Option<Threshold> {
    Threshold::parse(&raw.v).map_err(|e| c.report(raw.at, format!("{path}: {e}"))).ok()
}

fn validate_steady(c: &mut Check, raw: &RawSteady, at: Pos) -> Option<SteadyState> {
    let probe = match &raw.probe_load {
        None => c.fail(at, "steady_state: `probe_load` is missing; write e.g. { orders: 200, rate: 100 }".into()),
        Some(p) => {
            let orders = match &p.v.orders {
                Some(o) if o.v >= 1 => Some(o.v as u64),
                Some(o) => c.fail(o.at, "steady_state.probe_load: `orders` must be at least 1".into()),
                None => c.fail(p.at, "steady_state.probe_load: `orders` is missing; write e.g. { orders: 200 }".into()),
            };
            let rate = match &p.v.rate {
                None => Some(None),
                Some(r) if RATES.contains(&r.v) => Some(Some(r.v)),
                Some(r) => {
                    let (low, high) = (RATES.start(), RATES.end());
                    c.fail(r.at, format!("steady_state.probe_load: `rate` must be {low} to {high}, not {}", shown(r.v)))
                }
            };
            orders.zip(rate).map(|(orders, rate)| ProbeLoad { orders, rate })
        }
    };
    let list = raw.thresholds.as_ref().map(|l| l.v.clone()).unwrap_or_default();
    let closed_loop = matches!(&probe, Some(p) if p.rate.is_none());
    let thresholds: Vec<Option<Threshold>> = list
        .iter()
        .enumerate()
        .map(|(n, raw)| {
            let path = format!("steady_state.thresholds[{n}]");
            let parsed = threshold(c, raw, &path)?;
            if closed_loop && parsed.needs_target_rate() {
                let why = "compares with the target rate, which only a probe_load with a `rate` has";
                return c.fail(raw.at, format!("{path}: `{parsed}` {why}; give the probe a rate, or write orders/s"));
            }
            Some(parsed)
        })
        .collect();
    let invariants = match &raw.invariants {
        None => Some(false),
        Some(i) if i.v == "all" => Some(true),
        Some(i) => c.fail(i.at, format!("steady_state: `invariants` takes only `all`, not `{}`", i.v)),
    };
    Some(SteadyState {
        probe: probe?,
        thresholds: thresholds.into_iter().collect::<Option<_>>()?,
        invariants: invariants?,
    })
}

/// The entries of `halt:`; `None` once a problem was reported.
fn read_halt(c: &mut Check, node: Option<&Node>) -> Option<Vec<HaltRule>> {
    let Some(node) = node else { return Some(Vec::new()) };
    let yaml::Value::List(items) = &node.value else {
        return c.fail(
            node.at,
            format!(
                "`halt` must be a list of rules, e.g. - {{ when: \"errors>20%\", for: 3s }}, not {}",
                node.describe()
            ),
        );
    };
    let mut rules = Vec::new();
    let mut ok = true;
    for (n, item) in items.iter().enumerate() {
        let path = format!("halt[{n}]");
        let raw = RawHalt::read(c, Some(item), &path);
        let when = match &raw.when {
            None => c.fail(item.at, format!("{path}: a rule needs `when`, e.g. when: \"errors>20%\"")),
            Some(w) => threshold(c, w, &path),
        };
        // `rate` compares with the whole run's target; a few seconds of answers have no rate.
        let when = when.and_then(|t| match t.metric {
            Metric::Rate => {
                let at = raw.when.as_ref().map_or(item.at, |w| w.at);
                c.fail(
                    at,
                    format!(
                        "{path}: `{t}`: a halt rule judges the orders answered in its last seconds: \
                         p50, p90, p99, p999, max, errors, failed, confirmed or dropped"
                    ),
                )
            }
            _ => Some(t),
        });
        let for_ = match &raw.r#for {
            None => Some(Duration::from_secs(1)),
            Some(f) => duration(c, f, &format!("{path}.for")).map(|d| d.max(Duration::from_secs(1))),
        };
        match (when, for_) {
            (Some(when), Some(for_)) => rules.push(HaltRule { when, for_ }),
            _ => ok = false,
        }
    }
    ok.then_some(rules)
}

fn validate_monkey(c: &mut Check, raw: &RawMonkey, at: Pos, load: Option<&LoadSpec>) -> Option<Monkey> {
    let mean_interval = match &raw.mean_interval {
        None => Some(Duration::from_secs(4)),
        Some(m) => match duration(c, m, "monkey.mean_interval") {
            Some(d) if d.is_zero() => c.fail(m.at, "monkey: `mean_interval` must be longer than 0s".into()),
            d => d,
        },
    };
    let faults = match &raw.faults {
        None => Some(vec!["kill".to_string(), "pause".to_string()]),
        Some(list) if list.v.is_empty() => {
            c.fail(list.at, format!("monkey: `faults` names no fault; pick from {}", monkey::KINDS.join(", ")))
        }
        Some(list) => {
            let bad = list.v.iter().find(|k| !monkey::KINDS.contains(&k.v.as_str()));
            match bad {
                Some(k) => c.fail(
                    k.at,
                    format!(
                        "monkey: `{}` is not a fault a monkey can inject; pick from {}",
                        k.v,
                        monkey::KINDS.join(", ")
                    ),
                ),
                None => Some(list.v.iter().map(|k| k.v.clone()).collect()),
            }
        }
    };
    let targets = match &raw.targets {
        Some(list) if !list.v.is_empty() => Some(list.v.iter().map(|t| t.v.trim().to_string()).collect::<Vec<_>>()),
        Some(list) => c.fail(list.at, "monkey: `targets` is empty; a monkey with no targets has nothing to break, e.g. targets: [payment, inventory]".into()),
        None => c.fail(at, "monkey: `targets` is missing; a monkey with no targets has nothing to break, e.g. targets: [payment, inventory]".into()),
    };
    let max_concurrent = match &raw.max_concurrent {
        None => Some(1),
        Some(m) if (1..=100).contains(&m.v) => Some(m.v as usize),
        Some(m) => c.fail(m.at, format!("monkey: `max_concurrent` must be between 1 and 100, not {}", m.v)),
    };
    let seed = match &raw.seed {
        None => Some(0),
        Some(s) if s.v >= 0 => Some(s.v as u64),
        Some(s) => c.fail(s.at, format!("monkey: `seed` must be at least 0, not {}", s.v)),
    };
    let fault_for = match &raw.r#for {
        None => mean_interval.map(|m| m.max(Duration::from_secs(1))),
        Some(f) => duration(c, f, "monkey.for"),
    };
    if let Some(load) = load {
        if load.duration.is_none() && load.rate.is_none() {
            return c.fail(
                at,
                "monkey: the load needs a `rate` or a `duration`, so the monkey knows how long it runs".into(),
            );
        }
    }
    Some(Monkey {
        mean_interval: mean_interval?,
        faults: faults?,
        targets: targets?,
        max_concurrent: max_concurrent?,
        seed: seed?,
        fault_for: fault_for?,
        targets_at: raw.targets.as_ref().map(|list| list.at),
    })
}

/// The keys that name a fault's kind and its target.
const KINDS: [&str; 6] = ["kill", "pause", "latency", "errors", "partition", "net"];

fn validate_fault(c: &mut Check, read: &ReadFault, path: &str) -> Option<Fault> {
    let (raw, at) = (&read.raw, read.at);
    let named: Vec<(&str, &Sp<String>)> = [&raw.kill, &raw.pause, &raw.latency, &raw.errors, &raw.partition, &raw.net]
        .into_iter()
        .zip(KINDS)
        .filter_map(|(v, k)| v.as_ref().map(|v| (k, v)))
        .collect();
    let at_offset = match &raw.at {
        None => c.fail(at, format!("{path}: a fault needs `at`, its offset from the start of the load, e.g. at: 2s")),
        Some(a) => duration(c, a, &format!("{path}.at")),
    };
    let for_ = optional_duration(c, &raw.r#for, &format!("{path}.for"));
    let (kind, target) = match named.as_slice() {
        [one] => *one,
        [] if !read.clean => return None,
        [] => {
            let message = format!(
                "{path}: a fault needs one of `kill`, `pause`, `latency`, `errors`, `partition`, `net` naming its target, \
                 e.g. {{ at: 1s, kill: payment, for: 3s }}"
            );
            return c.fail(at, message);
        }
        many => {
            let keys: Vec<&str> = many.iter().map(|(k, _)| *k).collect();
            let message = format!(
                "{path}: a fault has exactly one of kill, pause, latency, errors, partition, net, not {}; \
                 write one entry per fault",
                keys.join(" and ")
            );
            return c.fail(at, message);
        }
    };
    let name = target.v.trim().to_string();
    if name.is_empty() {
        return c.fail(target.at, format!("{path}: `{kind}` must name a service or an instance"));
    }
    // Options that belong to another kind of fault are mistakes, not extras to ignore.
    let options: [(&str, Option<Pos>, &[&str]); 18] = [
        ("with", raw.with.as_ref().map(|v| v.at), &["partition"]),
        ("refuse", raw.refuse.as_ref().map(|v| v.at), &["partition"]),
        ("restart", raw.restart.as_ref().map(|v| v.at), &["kill"]),
        ("signal", raw.signal.as_ref().map(|v| v.at), &["kill"]),
        ("delay", raw.delay.as_ref().map(|v| v.at), &["latency", "net"]),
        ("jitter", raw.jitter.as_ref().map(|v| v.at), &["latency", "net"]),
        ("toxic", raw.toxic.as_ref().map(|v| v.at), &["net"]),
        ("after", raw.after.as_ref().map(|v| v.at), &["net"]),
        ("close_after", raw.close_after.as_ref().map(|v| v.at), &["net"]),
        ("rate", raw.rate.as_ref().map(|v| v.at), &["net"]),
        ("size", raw.size.as_ref().map(|v| v.at), &["net"]),
        ("variation", raw.variation.as_ref().map(|v| v.at), &["net"]),
        ("bytes", raw.bytes.as_ref().map(|v| v.at), &["net"]),
        ("direction", raw.direction.as_ref().map(|v| v.at), &["net"]),
        ("toxicity", raw.toxicity.as_ref().map(|v| v.at), &["net"]),
        ("from", raw.from.as_ref().map(|v| v.at), &["net"]),
        ("percent", raw.percent.as_ref().map(|v| v.at), &["latency", "errors"]),
        ("status", raw.status.as_ref().map(|v| v.at), &["errors"]),
    ];
    let mut ok = true;
    for (option, given, kinds) in options {
        if let Some(given) = given.filter(|_| !kinds.contains(&kind)) {
            c.report(given, format!("{path}: `{option}` belongs to a {} fault, not to `{kind}`", kinds.join(" or ")));
            ok = false;
        }
    }
    if let (Ok(Some(d)), Some(raw_for)) = (for_, &raw.r#for) {
        if d.is_zero() {
            let next = "leave it out to last until the end of the load";
            c.report(raw_for.at, format!("{path}: `for` must be longer than 0s; {next}"));
            ok = false;
        }
    }
    let action = action(c, raw, kind, name, for_.ok().flatten(), at, path);
    let fault = Fault { at: at_offset?, for_: for_.ok()?, action: action?, written_at: Some(at) };
    ok.then_some(fault)
}

/// The fault's action, once its kind and target are known.
fn action(
    c: &mut Check,
    raw: &RawFault,
    kind: &str,
    target: String,
    for_: Option<Duration>,
    at: Pos,
    path: &str,
) -> Option<Action> {
    let percent = percent(c, &raw.percent, path, "percent");
    match kind {
        "kill" => {
            let restart = raw.restart.as_ref().is_some_and(|r| r.v);
            if restart && for_.is_some() {
                let next = "the restart policy brings it back; drop one of them";
                return c.fail(at, format!("{path}: `for` has no meaning with `restart: true`: {next}"));
            }
            let signal = match &raw.signal {
                None => "KILL".to_string(),
                Some(s) => {
                    let upper = s.v.trim().to_ascii_uppercase();
                    let signal = upper.strip_prefix("SIG").unwrap_or(&upper).to_string();
                    if signal != "KILL" && signal != "TERM" {
                        return c.fail(s.at, format!("{path}: `signal` must be KILL or TERM, not `{signal}`"));
                    }
                    signal
                }
            };
            Some(Action::Kill { target, restart, signal })
        }
        "pause" => Some(Action::Pause { target }),
        "latency" => {
            let Some(raw_delay) = &raw.delay else {
                return c.fail(at, format!("{path}: a latency fault needs a `delay`, e.g. delay: 200ms"));
            };
            let delay = duration(c, raw_delay, &format!("{path}.delay"));
            let jitter = optional_duration(c, &raw.jitter, &format!("{path}.jitter"));
            let (delay, jitter) = (delay?, jitter.ok()?);
            let longest = Duration::from_millis(MAX_DELAY_MS);
            let too_long = [(Some(raw_delay), Some(delay)), (raw.jitter.as_ref(), jitter)]
                .into_iter()
                .find_map(|(raw, d)| raw.filter(|_| d.is_some_and(|d| d > longest)));
            if let Some(raw) = too_long {
                return c
                    .fail(raw.at, format!("{path}: `{}` is longer than a fault may delay; write at most 10m", raw.v));
            }
            Some(Action::Latency { target, delay, jitter, percent: percent? })
        }
        "errors" => {
            let status = match &raw.status {
                None => 503,
                Some(s) if (400..=599).contains(&s.v) => s.v as u16,
                Some(s) => return c.fail(s.at, format!("{path}: `status` must be between 400 and 599, not {}", s.v)),
            };
            Some(Action::Errors { target, status, percent: percent? })
        }
        "net" => net_action(c, raw, target, at, path),
        _ => {
            let with = raw.with.as_ref().map(|w| w.v.trim().to_string()).filter(|w| !w.is_empty());
            let Some(with) = with else {
                let next = "e.g. { partition: order, with: payment }";
                return c.fail(at, format!("{path}: a partition needs the other side in `with`, {next}"));
            };
            if with == target {
                return c.fail(at, format!("{path}: a partition needs two different sides, not `{target}` twice"));
            }
            Some(Action::Partition { target, with, refuse: raw.refuse.as_ref().is_some_and(|r| r.v) })
        }
    }
}

/// A `net:` fault: the toxic and its parameters, with the names of `shop chaos net`.
fn net_action(c: &mut Check, raw: &RawFault, target: String, at: Pos, path: &str) -> Option<Action> {
    let Some(raw_toxic) = &raw.toxic else {
        return c.fail(
            at,
            format!("{path}: a net fault needs a `toxic`, e.g. {{ at: 2s, net: payment, toxic: reset, after: 50ms }}"),
        );
    };
    let kind = match ToxicKind::parse(raw_toxic.v.trim()) {
        Ok(k) => k,
        Err(e) => return c.fail(raw_toxic.at, format!("{path}: {e}")),
    };
    let params = [
        ("delay", &raw.delay),
        ("jitter", &raw.jitter),
        ("rate", &raw.rate),
        ("close-after", &raw.close_after),
        ("after", &raw.after),
        ("size", &raw.size),
        ("variation", &raw.variation),
        ("bytes", &raw.bytes),
    ];
    let given: Vec<&'static str> = params.iter().filter(|(_, v)| v.is_some()).map(|(p, _)| *p).collect();
    if let Some((param, owners)) = kind.stray(&given) {
        // The file spells the parameters with `_`, the CLI with `-`.
        let key = |p: &str| format!("`{}`", p.replace('-', "_"));
        let pos = params.iter().find(|(p, _)| *p == param).and_then(|(_, v)| v.as_ref()).map_or(at, |v| v.at);
        let takes: Vec<String> = kind.params().iter().map(|p| key(p)).collect();
        let message = format!(
            "{path}: {} belongs to a {} toxic, not to `{kind}`, which takes {}",
            key(param),
            ToxicKind::either(&owners),
            listed(&takes, "and")
        );
        return c.fail(pos, message);
    }
    let ms = |c: &mut Check, raw: &Text, key: &str| -> Result<Option<u64>, ()> {
        optional_duration(c, raw, &format!("{path}.{key}")).map(|d| d.map(duration_ms))
    };
    let number =
        |c: &mut Check, raw: &Text, key: &str, parse: fn(&str) -> Result<u64, String>| -> Result<Option<u64>, ()> {
            match raw {
                None => Ok(None),
                Some(v) => match parse(&v.v) {
                    Ok(n) => Ok(Some(n)),
                    Err(e) => {
                        c.report(v.at, format!("{path}.{key}: {e}"));
                        Err(())
                    }
                },
            }
        };
    let delay = ms(c, &raw.delay, "delay");
    let jitter = ms(c, &raw.jitter, "jitter");
    let after = ms(c, &raw.after, "after");
    let close_after = ms(c, &raw.close_after, "close_after");
    let rate = number(c, &raw.rate, "rate", parse_rate);
    let size = number(c, &raw.size, "size", parse_size);
    let variation = number(c, &raw.variation, "variation", parse_size);
    let bytes = number(c, &raw.bytes, "bytes", parse_size);
    let (delay, jitter, after, close_after) = (delay.ok()?, jitter.ok()?, after.ok()?, close_after.ok()?);
    let (rate, size, variation, bytes) = (rate.ok()?, size.ok()?, variation.ok()?, bytes.ok()?);
    let mut need = |key: &str, example: &str| -> Option<u64> {
        c.fail(at, format!("{path}: a `{kind}` toxic needs `{key}`, e.g. {key}: {example}"))
    };
    let toxic = match kind {
        ToxicKind::Latency => {
            Toxic::Latency { delay_ms: delay.or_else(|| need("delay", "200ms"))?, jitter_ms: jitter.unwrap_or(0) }
        }
        ToxicKind::Bandwidth => Toxic::Bandwidth { bytes_per_s: rate.or_else(|| need("rate", "10KB/s"))? },
        ToxicKind::SlowClose => Toxic::SlowClose { delay_ms: delay.or_else(|| need("delay", "1s"))? },
        ToxicKind::Blackhole => Toxic::Blackhole { close_after_ms: close_after },
        ToxicKind::Reset => Toxic::Reset { after_ms: after.unwrap_or(0) },
        ToxicKind::Slicer => Toxic::Slicer {
            size: size.or_else(|| need("size", "64"))?,
            variation: variation.unwrap_or(0),
            delay_ms: delay.unwrap_or(0),
        },
        ToxicKind::LimitData => Toxic::LimitData { bytes: bytes.or_else(|| need("bytes", "1000"))? },
    };
    if let Err(e) = toxic.validate() {
        return c.fail(at, format!("{path}: {e}"));
    }
    let direction = match raw.direction.as_ref().map(|d| d.v.trim()) {
        None | Some("both") => Direction::Both,
        Some("up") => Direction::Up,
        Some("down") => Direction::Down,
        Some(other) => {
            let at = raw.direction.as_ref().map_or(at, |d| d.at);
            return c.fail(at, format!("{path}: `direction` is up, down or both, not `{other}`"));
        }
    };
    let toxicity = percent(c, &raw.toxicity, path, "toxicity")?;
    let from = raw.from.as_ref().map(|f| f.v.trim().to_string());
    Some(Action::Net { target, spec: ToxicSpec { toxic, direction, toxicity }, from })
}

fn validate_expect(c: &mut Check, raw: &RawExpect) -> Option<Expect> {
    let invariants = match &raw.invariants {
        None => Some(false),
        Some(i) if i.v == "all" => Some(true),
        Some(i) => c.fail(i.at, format!("expect: `invariants` takes only `all`, not `{}`", i.v)),
    };
    let settle_within = match &raw.settle_within {
        None => Some(Expect::default().settle_within),
        Some(s) => duration(c, s, "expect.settle_within"),
    };
    let min_confirmed_percent = match &raw.min_confirmed_percent {
        None => Some(None),
        Some(p) if (0.0..=100.0).contains(&p.v) => Some(Some(p.v)),
        Some(p) => c.fail(p.at, format!("expect: `min_confirmed_percent` must be between 0 and 100, not {}", p.v)),
    };
    Some(Expect {
        invariants: invariants?,
        settle_within: settle_within?,
        min_confirmed_percent: min_confirmed_percent?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Drill, String> {
        Drill::parse(text, Path::new("d.yaml")).map_err(|e| e.to_string())
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
        assert_eq!((d.load.orders, d.load.concurrency, d.load.rate), (400, 8, Some(200.0)));
        assert_eq!(d.load.users, ["alice", "bob"]);
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
    fn the_shipped_drills_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/drills");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            Drill::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn mistakes_are_reported_at_the_key_or_value_that_holds_them() {
        let head = "name: x\nload: { orders: 10 }\nfaults:\n";
        let cases = [
            (
                "  - { at: 1s, kill: payment, forr: 3s }\n",
                "d.yaml:4:30: faults[0]: unknown field `forr`, expected one of `at`, `for`",
            ),
            ("  - { at: soon, kill: payment }\n", "d.yaml:4:11: faults[0].at: `soon` is not a duration"),
            ("  - { at: 100000h, kill: payment }\n", "d.yaml:4:11: faults[0].at: `100000h` is longer than a drill"),
            ("  - { at: 1s, kill: payment, pause: order }\n", "d.yaml:4:5: faults[0]: a fault has exactly one of"),
            (
                "  - { at: 1s, kill: payment, delay: 1s }\n",
                "d.yaml:4:37: faults[0]: `delay` belongs to a latency or net fault",
            ),
            ("  - { at: 1s, errors: payment, percent: 130 }\n", "d.yaml:4:41: faults[0]: `percent` must be between"),
            ("  - { at: 1s, partition: order }\n", "d.yaml:4:5: faults[0]: a partition needs the other side"),
            ("  - { at: 1s, latency: order }\n", "d.yaml:4:5: faults[0]: a latency fault needs a `delay`"),
            (
                "  - { at: 1s, latency: payment, delay: 11m }\n",
                "d.yaml:4:40: faults[0]: `11m` is longer than a fault may delay; write at most 10m",
            ),
            ("  - { at: 1s, restart: yes, kill: order }\n", "d.yaml:4:24: `faults[0].restart` must be true or false"),
        ];
        for (fault, want) in cases {
            let err = parse(&format!("{head}{fault}")).unwrap_err();
            assert!(err.starts_with(want), "{fault}: {err}");
        }
        // A rate so slow its second order would be due past the end of time panicked the drill.
        let err = parse("name: x\nload: { rate: 1e-300, orders: 5 }\n").unwrap_err();
        assert_eq!(err, "d.yaml:2:15: load: `rate` must be 0.001 to 1000000 orders per second, not 1e-300");
        let d = parse("name: x\nload: { rate: 0.001, orders: 9000000000000000000 }\n").unwrap();
        assert_eq!(d.horizon(), Some(MAX_DURATION));
        let err = parse("name: x\nload: { orders: 0 }\n").unwrap_err();
        assert_eq!(err, "d.yaml:2:17: load: `orders` must be at least 1");
        let err = parse("name: x\nload: { orders: 1 }\nexpect: { min_confirmed_percent: 101 }\n").unwrap_err();
        assert_eq!(err, "d.yaml:3:34: expect: `min_confirmed_percent` must be between 0 and 100, not 101");
    }

    #[test]
    fn every_problem_is_reported_at_once_in_file_order() {
        let err = parse(
            "name: x\nlaod: { orders: 1 }\nfaults:\n  - { at: 1s, kill: payment }\n  - { at: 2 parsecs, pause: order }\n",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "d.yaml:1:1: a drill needs a `load:`, e.g. load: { orders: 200, concurrency: 8 }
d.yaml:2:1: unknown field `laod`, expected one of `name`, `load`, `steady_state`, `faults`, `monkey`, `halt`, `expect`; did you mean `load`?
d.yaml:5:11: faults[1].at: `2 parsecs` is not a duration (unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write e.g. 500ms, 2s, 1m"
        );
        assert_eq!(
            parse("").unwrap_err(),
            "d.yaml:1:1: the drill file is empty; it needs at least `name:` and `load:`"
        );
        assert_eq!(
            parse("- a\n").unwrap_err(),
            "d.yaml:1:1: a drill file must be a mapping with `name:` and `load:`, not a list"
        );
    }

    #[test]
    fn net_faults_read_the_toxic_and_its_parameters_and_name_a_bad_toxic() {
        let head = "name: x\nload: { orders: 10 }\nfaults:\n";
        let d = parse(&format!("{head}  - {{ at: 2s, net: payment, toxic: reset, after: 50ms, for: 5s }}\n")).unwrap();
        let f = &d.faults[0];
        assert_eq!((f.kind(), f.target()), ("net", "payment"));
        assert_eq!(f.describe(), "reset after=50ms for 5s");
        let req = f.request(Some(7));
        assert_eq!(req.net.unwrap().toxic, Toxic::Reset { after_ms: 50 });
        let d = parse(&format!(
            "{head}  - {{ at: 1s, net: payment, toxic: bandwidth, rate: 10KB/s, direction: down, toxicity: 50, from: order }}\n"
        ))
        .unwrap();
        assert_eq!(d.faults[0].names(), ["payment", "order"]);
        assert_eq!(d.faults[0].params()["bytes_per_s"], 10_000);
        let err = parse(&format!("{head}  - {{ at: 1s, net: payment, toxic: explode }}\n")).unwrap_err();
        assert!(err.contains("d.yaml:4:36: faults[0]: unknown toxic `explode`; the toxics are: latency,"), "{err}");
        let err = parse(&format!("{head}  - {{ at: 1s, net: payment, toxic: limit-data, bytes: -3 }}\n")).unwrap_err();
        assert!(err.contains("is not a size"), "{err}");
        let err = parse(&format!("{head}  - {{ at: 1s, kill: payment, toxic: reset }}\n")).unwrap_err();
        assert!(err.contains("`toxic` belongs to a net fault"), "{err}");
        // A parameter of another toxic would otherwise be dropped: this reset would be at once.
        let err = parse(&format!("{head}  - {{ at: 1s, net: payment, toxic: reset, delay: 50ms }}\n")).unwrap_err();
        assert_eq!(
            err,
            "d.yaml:4:50: faults[0]: `delay` belongs to a latency, slow-close or slicer toxic, not to `reset`, which takes `after`"
        );
        let err =
            parse(&format!("{head}  - {{ at: 1s, net: payment, toxic: latency, delay: 9ms, close_after: 1s }}\n"))
                .unwrap_err();
        assert!(
            err.contains(
                "`close_after` belongs to a blackhole toxic, not to `latency`, which takes `delay` and `jitter`"
            ),
            "{err}"
        );
    }
}

#[cfg(test)]
mod section_14 {
    use super::*;

    fn parse(text: &str) -> Result<Drill, String> {
        Drill::parse(text, Path::new("d.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn steady_state_halt_monkey_and_an_open_loop_load_parse() {
        let d = parse(
            "name: m
load: { rate: 300, duration: 20s, users: \"alice:80,bob:20\" }
steady_state:
  probe_load: { orders: 200, rate: 100 }
  thresholds: [ \"p99<50ms\", \"errors<1%\" ]
  invariants: all
halt:
  - { when: \"errors>20%\", for: 3s }
monkey: { mean_interval: 4s, faults: [kill, pause], targets: [payment, inventory], max_concurrent: 1, seed: 42 }
",
        )
        .unwrap();
        assert_eq!((d.load.orders, d.load.duration), (6000, Some(Duration::from_secs(20))));
        assert_eq!(d.load.users, ["alice", "bob", "alice", "alice", "alice"]);
        let steady = d.steady_state.unwrap();
        assert_eq!((steady.probe.orders, steady.thresholds.len(), steady.invariants), (200, 2, true));
        assert_eq!(d.halt[0].for_, Duration::from_secs(3));
        assert!(d.monkey_faults > 0 && d.monkey_faults == d.faults.len());
    }

    #[test]
    fn bad_thresholds_weights_and_monkeys_are_reported_at_their_position() {
        let cases = [
            ("name: x\nload: { orders: 1 }\nsteady_state: { probe_load: { orders: 5 }, thresholds: [\"p98<5ms\"] }\n", "d.yaml:3:57: steady_state.thresholds[0]: `p98<5ms` is not a threshold: unknown metric `p98`; a threshold is METRIC OP VALUE"),
            ("name: x\nload: { orders: 1 }\nsteady_state: { probe_load: { orders: 5 }, thresholds: [\"rate>=95%\"] }\n", "d.yaml:3:57: steady_state.thresholds[0]: `rate>=95%` compares with the target rate, which only a probe_load with a `rate` has"),
            ("name: x\nload: { orders: 1, users: \"alice:-1\" }\n", "d.yaml:2:27: load: `users`: the weight of `alice` must be above 0, not -1"),
            ("name: x\nload: { rate: 10, duration: 5s }\nmonkey: { targets: [] }\n", "d.yaml:3:20: monkey: `targets` is empty; a monkey with no targets"),
            ("name: x\nload: { rate: 10, duration: 5s }\nmonkey: { seed: 1 }\n", "d.yaml:3:9: monkey: `targets` is missing"),
            ("name: x\nload: { rate: 10, duration: 5s }\nhalt:\n  - { when: \"rate<50%\" }\n", "d.yaml:4:13: halt[0]: `rate<50%`: a halt rule judges the orders answered in its last seconds"),
            ("name: x\nload: { rate: 10, duration: 5s }\nhalt:\n  - { when: \"errors>120%\" }\n", "d.yaml:4:13: halt[0]: `errors>120%` is not a threshold: `120%`: a share of the orders is at most 100%"),
            ("name: x\nload: { rate: 10, duration: 5s }\nsteady_state: { probe_lod: {} }\n", "d.yaml:3:15: steady_state: `probe_load` is missing"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(want), "{text}\n{err}");
        }
    }
}
