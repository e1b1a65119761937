//! `shop inspect`: what happened, gathered from every service of the running stack: an order's
//! saga and trace, a trace's waterfall, a service's figures, the registry, stock, and the
//! business invariants.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use comfy_table::Cell;
use serde::Serialize;
use serde_json::Value;

use super::context::Context;
use super::{exit, output, Failure};
use crate::invariants;
use crate::orchestrator::control::Control;
use crate::orchestrator::protocol::PsRow;
use crate::orchestrator::stackfile::{Program, Stack};
use crate::plumbing::admin::{AdminClient, ADMIN_TIMEOUT};
use crate::plumbing::breaker::BreakerReport;
use crate::plumbing::faults::FaultSet;
use crate::plumbing::metrics::RequestFigures;
use crate::plumbing::spans::Span;
use crate::plumbing::time::parse_duration;
use crate::services::Kind;

#[derive(clap::Subcommand, Debug)]
pub enum InspectCommand {
    /// An order's saga as a timeline, its notification, and its trace as a waterfall
    Order {
        /// The order id (ord_…)
        #[arg(value_parser = crate::plumbing::ids::parse_order_id)]
        id: String,
    },
    /// All spans of one trace across services, as a waterfall
    Trace {
        /// The trace id: 32 hex digits, as in `shop inspect order` or a `traceparent` header
        #[arg(value_parser = crate::plumbing::trace::parse_trace_id)]
        trace_id: String,
    },
    /// A service's instances, database, request figures
    Service {
        /// A service of the stack file (e.g. payment)
        name: String,
    },
    /// Every registered instance and its heartbeat age
    Registry,
    /// Per product: initial, available, reserved, sold
    Stock,
    /// Check the business invariants across all service databases
    Invariants {
        /// Wait up to this long for in-flight sagas to finish
        #[arg(long, default_value = "5s", value_parser = parse_duration, allow_hyphen_values = true)]
        settle: Duration,
    },
}

/// The running stack as `inspect` sees it: the stack file, its processes, the secret.
struct Live {
    stack: Stack,
    rows: Vec<PsRow>,
    /// When `rows` were read (µs since the epoch): the moment their uptimes count back from.
    rows_at_us: i64,
    http: reqwest::Client,
    admin: AdminClient,
}

impl Live {
    async fn connect(ctx: &Context) -> anyhow::Result<Live> {
        let stack = ctx.stack()?;
        let dir = ctx.state_dir();
        let control = Control::require(&dir)?;
        let rows = control.status().await?.rows;
        let rows_at_us = crate::plumbing::time::now_us();
        let secret = dir.existing_secret().unwrap_or_default();
        let http = crate::plumbing::client::http_client();
        Ok(Live { stack, rows, rows_at_us, admin: AdminClient::with_http(http.clone(), secret), http })
    }

    /// Addresses of the running instances of built-in `kind`.
    fn addresses(&self, kind: Kind) -> Vec<String> {
        let names = self.stack.services_of(kind);
        self.rows
            .iter()
            .filter(|r| {
                (names.contains(&r.service) || (kind == Kind::Registry && r.service == "registry")) && r.pid.is_some()
            })
            .filter_map(|r| r.address.clone())
            .collect()
    }

    /// GET `path` from the first instance of `kind` that answers.
    async fn get(&self, kind: Kind, path: &str) -> anyhow::Result<Value> {
        let addrs = self.addresses(kind);
        let mut last = format!("no running instance of `{}`", kind.name());
        for addr in addrs {
            match self.http.get(format!("http://{addr}{path}")).timeout(Duration::from_secs(5)).send().await {
                Ok(r) if r.status().is_success() => return Ok(r.json().await?),
                Ok(r) if r.status() == 404 => {
                    return Err(Failure::runtime(format!("not found: {path} on `{}`", kind.name())))
                }
                Ok(r) => last = format!("{addr} answered {}", r.status()),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        let next = "`shop ps` shows its state; `shop start` or `shop chaos clear` brings back one stopped or faulted";
        Err(Failure::runtime(format!("cannot read {path} from `{}`: {last}; {next}", kind.name())))
    }

    /// Every span of `trace_id` held by any running instance, and the instances whose spans may
    /// be missing: not running, not answering, or started again since the trace began (each
    /// instance keeps its spans in memory). A partial trace says so rather than pass for whole.
    async fn spans(&self, trace_id: &str) -> (Vec<Span>, Vec<Missing>) {
        let mut all = Vec::new();
        let mut missing = Vec::new();
        let mut answered = Vec::new();
        for row in self.rows.iter().filter(|r| self.builtin(&r.service)) {
            let why = match (&row.address, row.pid) {
                (Some(addr), Some(_)) => match self.admin.spans(addr, trace_id).await {
                    Ok(spans) => {
                        all.extend(spans);
                        answered.push(row);
                        continue;
                    }
                    Err(e) => format!("did not answer: {}", crate::plumbing::client::root_cause(&e)),
                },
                _ => row.state.as_str().to_string(),
            };
            missing.push(Missing { instance: row.instance.clone(), why });
        }
        all.sort_by_key(|s| s.start_us);
        if let Some(first) = all.first().map(|s| s.start_us) {
            // Uptime is in whole seconds: a second of slack keeps an instance that was already
            // up from looking restarted. It counts back from when the rows were read, not from
            // now: a slow answer meanwhile would make every instance look restarted.
            for row in answered {
                let started = self.rows_at_us - (row.uptime_s as i64 + 1) * 1_000_000;
                if started > first {
                    let why = "started again since the trace began".to_string();
                    missing.push(Missing { instance: row.instance.clone(), why });
                }
            }
        }
        // With every instance up since the trace began, a span whose parent none holds lost it
        // to an instance's bounded memory (the oldest spans go first); the first span aside,
        // whose parent may be the caller's own. Listed, so a trace cut short does not pass for
        // whole.
        let orphans = orphans(&all);
        if orphans > 0 && missing.is_empty() {
            let why = format!(
                "the parents of {orphans} span{} are held by no instance; each keeps only its last {} spans",
                if orphans == 1 { "" } else { "s" },
                crate::plumbing::spans::CAPACITY
            );
            missing.push(Missing { instance: "earlier spans".to_string(), why });
        }
        (all, missing)
    }

    /// The `/metrics` text of the instance at `addr`, or why there is none: no answer, or an
    /// answer that is no metrics page (a program of `command:` without one).
    async fn metrics_text(&self, addr: &str) -> Result<String, String> {
        let resp = self
            .http
            .get(format!("http://{addr}/metrics"))
            .timeout(ADMIN_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("/metrics did not answer: {}", crate::plumbing::client::root_cause(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("/metrics answered {}", resp.status()));
        }
        // Prometheus's text format says so in its media type; a program that answers every
        // path with a page of its own has no figures to read.
        let prometheus = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain") && v.contains("version=0.0.4"));
        if !prometheus {
            return Err("/metrics answered no Prometheus text".to_string());
        }
        resp.text().await.map_err(|e| format!("/metrics was cut off: {}", crate::plumbing::client::root_cause(&e)))
    }

    /// Whether the instances of `service` are shop's own, which answer the admin API: only they
    /// are asked for spans, breakers and faults, so the stack's secret never goes elsewhere.
    fn builtin(&self, service: &str) -> bool {
        service == "registry" || self.stack.service(service).is_some_and(|s| matches!(s.program, Program::Builtin(_)))
    }
}

pub async fn run(ctx: &Context, command: InspectCommand) -> anyhow::Result<i32> {
    match command {
        InspectCommand::Order { id } => order(ctx, &id).await,
        InspectCommand::Trace { trace_id } => trace(ctx, &trace_id).await,
        InspectCommand::Service { name } => service(ctx, &name).await,
        InspectCommand::Registry => registry(ctx).await,
        InspectCommand::Stock => stock(ctx),
        InspectCommand::Invariants { settle } => check_invariants(ctx, settle),
    }
}

async fn order(ctx: &Context, id: &str) -> anyhow::Result<i32> {
    let live = Live::connect(ctx).await?;
    let mut order = live.get(Kind::Order, &format!("/v1/orders/{id}?events=true")).await.map_err(|e| {
        if e.to_string().starts_with("not found") {
            Failure::runtime(format!("no order `{id}`; `shop order list` shows the newest"))
        } else {
            e
        }
    })?;
    // A notification service that does not answer is not one that delivered nothing.
    let notifications = live.get(Kind::Notification, &format!("/v1/notifications?order_id={id}")).await;
    let unread = notifications.as_ref().err().map(|e| format!("{e:#}"));
    let notifications = notifications.unwrap_or(Value::Null);
    let trace_id = order["trace_id"].as_str().unwrap_or("").to_string();
    let (spans, missing) = live.spans(&trace_id).await;
    if ctx.json {
        order["notifications"] = notifications.clone();
        if let Some(why) = &unread {
            order["notifications_unread"] = Value::String(why.clone());
        }
        order["spans"] = serde_json::to_value(&spans)?;
        order["spans_missing_from"] = serde_json::to_value(&missing)?;
        output::print_json(&order);
        return Ok(exit::OK);
    }
    super::order::show_order(ctx, &order);
    println!("\ntimeline");
    let events = order["events"].as_array().cloned().unwrap_or_default();
    let t0 = events.first().and_then(|e| e["at"].as_str()).and_then(|t| humantime::parse_rfc3339(t).ok());
    let mut t = output::table(&["SEQ", "AT", "EVENT", "DETAIL"]);
    for e in &events {
        let at = e["at"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok());
        let offset = match (t0, at) {
            (Some(a), Some(b)) => format!("+{} ms", b.duration_since(a).map(|d| d.as_millis()).unwrap_or(0)),
            _ => String::new(),
        };
        let detail = match &e["data"] {
            Value::Object(m) if !m.is_empty() => m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        t.add_row(vec![
            e["seq"].to_string(),
            offset,
            e["type"].as_str().unwrap_or("").to_string(),
            truncate(&detail, 90),
        ]);
    }
    println!("{}", t.trim_fmt());
    println!("\nnotification");
    match notifications.as_array().map(Vec::as_slice) {
        None => println!("  unknown: {}", unread.as_deref().unwrap_or("the notification service answered no list")),
        Some([]) => println!("  none delivered yet"),
        Some(list) => {
            for n in list {
                println!(
                    "  {} {} delivered {} time(s): {}",
                    n["notification_id"].as_str().unwrap_or(""),
                    n["kind"].as_str().unwrap_or(""),
                    n["deliveries"],
                    n["message"].as_str().unwrap_or("")
                );
            }
        }
    }
    println!("\ntrace {trace_id}");
    print!("{}", waterfall(&spans, 40));
    if let Some(line) = missing_line(SPANS_MISSING, &missing) {
        println!("{line}");
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct TraceDoc<'a> {
    trace_id: &'a str,
    spans: &'a [Span],
    /// Instances whose spans may be missing; empty when every instance answered.
    spans_missing_from: &'a [Missing],
}

/// An instance whose spans of a trace may be missing from what is shown, and why.
#[derive(Serialize)]
struct Missing {
    instance: String,
    why: String,
}

/// Spans of a trace (sorted by start) whose parent is not among them, other than those whose
/// parent is the first span's: the caller's own span, which may have made several requests.
fn orphans(spans: &[Span]) -> usize {
    let held: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let callers = spans.first().and_then(|s| s.parent_id.as_deref());
    spans
        .iter()
        .skip(1)
        .filter(|s| s.parent_id.as_deref().is_some_and(|p| !held.contains(p) && Some(p) != callers))
        .count()
}

/// The line that names the instances a report lacks (`what`: what it lacks of them), and why.
fn missing_line(what: &str, missing: &[Missing]) -> Option<String> {
    (!missing.is_empty()).then(|| {
        let list: Vec<String> = missing.iter().map(|m| format!("{} ({})", m.instance, m.why)).collect();
        format!("{what}: {}", list.join(", "))
    })
}

/// Under a waterfall.
const SPANS_MISSING: &str = "spans may be missing from";

async fn trace(ctx: &Context, trace_id: &str) -> anyhow::Result<i32> {
    let live = Live::connect(ctx).await?;
    let (spans, missing) = live.spans(trace_id).await;
    if spans.is_empty() {
        let also = missing_line(SPANS_MISSING, &missing).map(|l| format!("; {l}")).unwrap_or_default();
        return Err(Failure::runtime(format!("no spans of trace `{trace_id}` in any running service{also}")));
    }
    if ctx.json {
        output::print_json(&TraceDoc { trace_id, spans: &spans, spans_missing_from: &missing });
    } else {
        println!("trace {trace_id}");
        print!("{}", waterfall(&spans, 50));
        if let Some(line) = missing_line(SPANS_MISSING, &missing) {
            println!("{line}");
        }
    }
    Ok(exit::OK)
}

/// Spans as a tree (children under their parent, by start time), each with a bar placed and
/// sized in proportion to the trace's whole duration.
pub fn waterfall(spans: &[Span], width: usize) -> String {
    if spans.is_empty() {
        return "  (no spans recorded)\n".into();
    }
    let t0 = spans.iter().map(|s| s.start_us).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| s.start_us + s.duration_us).max().unwrap_or(t0).max(t0 + 1);
    let total = (t1 - t0) as f64;
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: HashMap<Option<&str>, Vec<&Span>> = HashMap::new();
    for s in spans {
        // A parent we do not have (e.g. the caller's span) makes this a root.
        let parent = s.parent_id.as_deref().filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(s);
    }
    let mut rows: Vec<(usize, &Span)> = Vec::new();
    fn walk<'a>(
        node: Option<&'a str>,
        depth: usize,
        children: &HashMap<Option<&'a str>, Vec<&'a Span>>,
        rows: &mut Vec<(usize, &'a Span)>,
    ) {
        let mut kids = children.get(&node).cloned().unwrap_or_default();
        kids.sort_by_key(|s| s.start_us);
        for k in kids {
            rows.push((depth, k));
            walk(Some(k.span_id.as_str()), depth + 1, children, rows);
        }
    }
    walk(None, 0, &children, &mut rows);
    let label_width = rows.iter().map(|(d, s)| d * 2 + s.name.chars().count()).max().unwrap_or(10).min(48);
    let mut out = String::new();
    for (depth, s) in rows {
        let label = truncate(&format!("{}{}", "  ".repeat(depth), s.name), label_width);
        let offset = (((s.start_us - t0) as f64 / total) * width as f64).round() as usize;
        let len = ((s.duration_us as f64 / total) * width as f64).round().max(1.0) as usize;
        let offset = offset.min(width.saturating_sub(1));
        let len = len.min(width - offset);
        let bar = format!("{}{}{}", " ".repeat(offset), "█".repeat(len), " ".repeat(width - offset - len));
        let failed = !(s.status.starts_with('2') || s.status == "ok" || s.status == "CONFIRMED");
        out.push_str(&format!(
            "  {label:<label_width$} {:<13} |{bar}| {:>8.2} ms{}\n",
            truncate(&s.instance, 13),
            s.duration_us as f64 / 1000.0,
            if failed { format!("  {}", s.status) } else { String::new() }
        ));
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max.saturating_sub(1)).collect::<String>())
    }
}

#[derive(Serialize)]
struct ServiceReport {
    service: String,
    instances: Vec<PsRow>,
    /// Per instance: its breakers toward each dependency and their recent transitions.
    breakers: BTreeMap<String, BreakerReport>,
    /// Per instance: the request faults it is under.
    faults: BTreeMap<String, FaultSet>,
    database: Option<DatabaseReport>,
    /// Summed over the instances that answered; `null` when none did (not zero: nothing was
    /// measured).
    requests: Option<f64>,
    errors: Option<f64>,
    error_rate: Option<f64>,
    latency_ms: BTreeMap<String, f64>,
    /// Instances left out of the figures, and why: not running, or their `/metrics` did not
    /// answer (paused, overloaded).
    unanswered: Vec<Missing>,
}

#[derive(Serialize)]
struct DatabaseReport {
    path: String,
    tables: BTreeMap<String, i64>,
}

async fn service(ctx: &Context, name: &str) -> anyhow::Result<i32> {
    let live = Live::connect(ctx).await?;
    let report = gather_service(ctx, &live, name).await?;
    if ctx.json {
        output::print_json(&report);
    } else {
        print_service(&report);
    }
    Ok(exit::OK)
}

/// Asks every running instance of `name` for its figures, breakers and faults, and counts the
/// rows of its database. An instance that does not answer is left out of the sums.
async fn gather_service(ctx: &Context, live: &Live, name: &str) -> anyhow::Result<ServiceReport> {
    let known: Vec<&str> = live.rows.iter().map(|r| r.service.as_str()).collect();
    if !known.contains(&name) {
        return Err(Failure::usage(format!("unknown service `{name}`; the stack has: {}", dedup(&known).join(", "))));
    }
    let instances: Vec<PsRow> = live.rows.iter().filter(|r| r.service == name).cloned().collect();
    let db_path = ctx.state_dir().db(name);
    let database = db_path.exists().then(|| DatabaseReport {
        path: db_path.display().to_string(),
        tables: crate::plumbing::db::table_counts(&db_path),
    });
    let mut figures = RequestFigures::default();
    let mut breakers = BTreeMap::new();
    let mut faults = BTreeMap::new();
    let mut unanswered = Vec::new();
    for r in &instances {
        let (Some(addr), Some(_)) = (&r.address, r.pid) else {
            unanswered.push(Missing { instance: r.instance.clone(), why: r.state.as_str().to_string() });
            continue;
        };
        match live.metrics_text(addr).await {
            Ok(text) => figures.add_text(&text),
            Err(e) => {
                let why = format!("{}; {e}", r.state.as_str());
                unanswered.push(Missing { instance: r.instance.clone(), why });
                continue;
            }
        }
        if !live.builtin(&r.service) {
            continue;
        }
        if let Ok(b) = live.admin.breakers(addr).await {
            breakers.insert(r.instance.clone(), b);
        }
        if let Ok(f) = live.admin.faults(addr).await {
            faults.insert(r.instance.clone(), f);
        }
    }
    let measured = unanswered.len() < instances.len();
    let latency_ms = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]
        .into_iter()
        .filter_map(|(label, q)| figures.latency_ms(q).map(|ms| (label.to_string(), ms)))
        .collect();
    Ok(ServiceReport {
        service: name.to_string(),
        instances,
        breakers,
        faults,
        database,
        requests: measured.then_some(figures.requests),
        errors: measured.then_some(figures.errors),
        error_rate: measured.then(|| figures.error_rate()),
        latency_ms,
        unanswered,
    })
}

/// The service report as tables: instances, database, requests, breakers, faults.
fn print_service(report: &ServiceReport) {
    println!("service {}", report.service);
    println!("{}", output::ps_table(&report.instances).trim_fmt());
    if let Some(db) = &report.database {
        println!("\ndatabase {}", db.path);
        let mut t = output::table(&["TABLE", "ROWS"]);
        for (table, n) in &db.tables {
            t.add_row(vec![table.clone(), n.to_string()]);
        }
        println!("{}", t.trim_fmt());
    }
    match (report.requests, report.errors, report.error_rate) {
        (Some(requests), Some(errors), Some(rate)) => {
            println!("\nrequests {requests}  errors (5xx) {errors}  error rate {:.2}%", rate * 100.0)
        }
        _ => println!("\nrequests unknown: no instance answered"),
    }
    if let Some(line) = missing_line("left out of the figures", &report.unanswered) {
        println!("{line}");
    }
    let lat: Vec<String> = report.latency_ms.iter().map(|(k, v)| format!("{k} ≤ {v} ms")).collect();
    println!("latency {}", if lat.is_empty() { "-".to_string() } else { lat.join("  ") });
    let mut t = output::table(&["INSTANCE", "DEPENDENCY", "BREAKER", "FAILURES", "TRANSITIONS"]);
    let mut any = false;
    for (inst, b) in &report.breakers {
        for view in &b.breakers {
            any = true;
            t.add_row(vec![
                inst.clone(),
                view.dependency.clone(),
                view.state.as_str().to_string(),
                view.failures.to_string(),
                b.transitions_of(&view.dependency).to_string(),
            ]);
        }
    }
    if any {
        println!("\ncircuit breakers");
        println!("{}", t.trim_fmt());
    } else {
        println!("circuit breakers: none yet (one appears per dependency once it is called)");
    }
    // Shown as the JSON the admin endpoint answers, as a user would get it with curl.
    let active = report
        .faults
        .iter()
        .filter(|(_, f)| !f.is_empty())
        .map(|(inst, f)| format!("{inst}: {}", serde_json::to_value(f).unwrap_or_default()));
    let chaos = report.instances.iter().flat_map(|r| r.faults.iter().map(move |f| format!("{}: {f}", r.instance)));
    let all: Vec<String> = chaos.chain(active).collect();
    if all.is_empty() {
        println!("faults: none active");
    } else {
        println!("faults: {}", all.join("; "));
    }
}

fn dedup<'a>(v: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for s in v {
        if !out.contains(s) {
            out.push(s);
        }
    }
    out
}

async fn registry(ctx: &Context) -> anyhow::Result<i32> {
    let live = Live::connect(ctx).await?;
    let list = live.get(Kind::Registry, "/v1/instances").await?;
    if ctx.json {
        output::print_json(&list);
        return Ok(exit::OK);
    }
    let mut t = output::table(&["SERVICE", "INSTANCE", "ADDRESS", "PID", "HEARTBEAT AGE", "STATUS", "REGISTERED"]);
    for i in list.as_array().into_iter().flatten() {
        t.add_row(vec![
            i["service"].as_str().unwrap_or("").to_string(),
            i["instance"].as_str().unwrap_or("").to_string(),
            i["address"].as_str().unwrap_or("").to_string(),
            i["pid"].to_string(),
            format!("{} ms", i["heartbeat_age_ms"]),
            i["status"].as_str().unwrap_or("").to_string(),
            i["registered_at"].as_str().unwrap_or("").to_string(),
        ]);
    }
    println!("{}", t.trim_fmt());
    Ok(exit::OK)
}

fn stock(ctx: &Context) -> anyhow::Result<i32> {
    let dbs = ctx.databases(&ctx.stack()?)?;
    let mut conn = crate::plumbing::db::open_read_only(&dbs.inventory)?;
    let stock = crate::services::inventory::read_stock(&mut conn)?;
    if ctx.json {
        output::print_json(&stock);
        return Ok(exit::OK);
    }
    let mut t = output::table(&["PRODUCT", "INITIAL", "AVAILABLE", "RESERVED", "SOLD"]);
    for s in &stock {
        t.add_row(vec![
            s.product_id.clone(),
            s.initial.to_string(),
            s.available.to_string(),
            s.reserved.to_string(),
            s.sold.to_string(),
        ]);
    }
    println!("{}", t.trim_fmt());
    Ok(exit::OK)
}

fn check_invariants(ctx: &Context, settle: Duration) -> anyhow::Result<i32> {
    let dbs = ctx.databases(&ctx.stack()?)?;
    let report = invariants::check_settled(&dbs, settle)?;
    if ctx.json {
        output::print_json(&report);
    } else {
        let color = output::color_stdout();
        let mut t = output::table(&["CHECK", "RESULT", "DETAIL"]);
        for c in &report.checks {
            t.add_row(vec![Cell::new(&c.name), output::pass_fail(c.ok, color), Cell::new(&c.detail)]);
        }
        println!("{}", t.trim_fmt());
        let failed = report.checks.iter().filter(|c| !c.ok).count();
        println!("{} passed, {failed} failed", report.checks.len() - failed);
    }
    Ok(if report.ok { exit::OK } else { exit::RUNTIME })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, start: i64, dur: i64) -> Span {
        Span {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_id: parent.map(Into::into),
            service: "s".into(),
            instance: "s".into(),
            name: format!("op {id}"),
            start_us: start,
            duration_us: dur,
            status: "200".into(),
            address: None,
        }
    }

    #[test]
    fn a_span_whose_parent_no_instance_holds_is_counted_but_not_the_first() {
        // The first span's parent is the caller's; the third's parent was dropped.
        let spans = [span("a", Some("caller"), 0, 10), span("b", Some("a"), 1, 5), span("c", Some("gone"), 2, 1)];
        assert_eq!(super::orphans(&spans), 1);
        assert_eq!(super::orphans(&spans[..2]), 0);
        // A second request of the same caller is no orphan.
        let two_requests = [span("a", Some("caller"), 0, 10), span("d", Some("caller"), 20, 5)];
        assert_eq!(super::orphans(&two_requests), 0);
    }

    #[test]
    fn the_waterfall_nests_children_and_scales_bars_to_time() {
        let spans = vec![span("b", Some("a"), 500, 500), span("a", None, 0, 1000), span("c", Some("b"), 750, 250)];
        let text = waterfall(&spans, 20);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("op a") && lines[1].contains("  op b") && lines[2].contains("    op c"), "{text}");
        let bar = |l: &str| l.split('|').nth(1).unwrap().to_string();
        assert_eq!(bar(lines[0]), "█".repeat(20));
        assert_eq!(bar(lines[1]), format!("{}{}", " ".repeat(10), "█".repeat(10)));
        assert_eq!(bar(lines[2]), format!("{}{}", " ".repeat(15), "█".repeat(5)));
    }
}
