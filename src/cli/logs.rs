//! `shop logs`: the merged logs of a stack's instances, prefixed with the instance name,
//! rendered readably from the JSON lines services write, narrowed by the query flags
//! (`plumbing::log_query`); `-f` follows; `--json` prints the raw lines.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use regex::Regex;

use super::context::Context;
use crate::orchestrator::state_dir::StateDir;
use crate::plumbing::log_query::{self, Level, LogQuery};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services or instances to show [default: all]
    pub services: Vec<String>,
    /// Keep printing new lines as they are written
    #[arg(short, long)]
    pub follow: bool,
    /// Lines per instance to show from the end [default: all]
    #[arg(short = 'n', long = "tail", allow_hyphen_values = true)]
    pub lines: Option<usize>,
    /// Never colour the prefixes
    #[arg(long)]
    pub no_color: bool,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only lines at or after this time: a duration ago (10m) or an RFC 3339 time
    #[arg(long, value_name = "DUR|TIME", value_parser = parse_since, allow_hyphen_values = true)]
    pub since: Option<SystemTime>,
    /// Only lines at or before this time: a duration ago (10m) or an RFC 3339 time
    #[arg(long, value_name = "DUR|TIME", value_parser = parse_since, allow_hyphen_values = true)]
    pub until: Option<SystemTime>,
    /// Only lines whose message or fields match this regular expression
    #[arg(long, value_name = "REGEX", value_parser = parse_regex, allow_hyphen_values = true)]
    pub grep: Option<Regex>,
    /// Only lines at this level and above (trace, debug, info, warn, error)
    #[arg(long, value_parser = Level::parse)]
    pub level: Option<Level>,
    /// Only lines of this trace
    #[arg(long, value_name = "ID", value_parser = crate::plumbing::trace::parse_trace_id)]
    pub trace: Option<String>,
    /// Only lines about this order (its own lines and those of its trace)
    #[arg(long, value_name = "ID", value_parser = crate::plumbing::ids::parse_order_id)]
    pub order: Option<String>,
}

fn parse_since(s: &str) -> Result<SystemTime, String> {
    log_query::parse_time(s, SystemTime::now())
}

fn parse_regex(s: &str) -> Result<Regex, String> {
    Regex::new(s).map_err(|e| {
        format!(
            "`{s}` is not a valid regular expression: {}",
            e.to_string().lines().last().unwrap_or("").trim_start_matches("error: ")
        )
    })
}

/// How each kept line is printed.
#[derive(Clone)]
pub enum Printer {
    /// Prefixed and readable.
    Styled(Style),
    /// The raw JSON line, for scripts (`--json`).
    Raw,
}

impl Printer {
    /// Fails when the reader is gone (a closed pipe), which ends a follow.
    fn print(&self, instance: &str, line: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        match self {
            Printer::Styled(style) => writeln!(std::io::stdout(), "{}", style.render(instance, line)),
            // Lines that are not JSON would break a consumer reading one object per line.
            Printer::Raw if line.trim_start().starts_with('{') => writeln!(std::io::stdout(), "{line}"),
            Printer::Raw => Ok(()),
        }
    }

    fn add(&mut self, instance: &str) {
        if let Printer::Styled(style) = self {
            style.add(instance);
        }
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    if let (Some(since), Some(until)) = (args.since, args.until) {
        if since > until {
            return Err(super::Failure::usage("--since is later than --until, so no line could match; swap them"));
        }
    }
    let dir = ctx.state_dir();
    if crate::orchestrator::control::Control::connect(&dir).is_none() {
        ctx.check_stack_file()?;
    }
    let all = log_files(&dir, &[]);
    let files: Vec<(String, PathBuf)> = all.iter().filter(|(name, _)| shown(name, &args.services)).cloned().collect();
    // A name that no log has and the stack does not know is a typo, not a quiet service.
    let known: Vec<String> = match ctx.stack() {
        Ok(stack) => stack.services.iter().flat_map(|s| [vec![s.name.clone()], s.instance_names()].concat()).collect(),
        Err(_) => Vec::new(),
    };
    for name in &args.services {
        if !all.iter().any(|(instance, _)| matches(instance, name)) && !known.contains(name) {
            let names = all.iter().map(|(n, _)| n.as_str()).chain(known.iter().map(String::as_str));
            let hint = match crate::plumbing::yaml::did_you_mean(name, names) {
                Some(near) => format!("did you mean `{near}`?"),
                None => {
                    format!("the logs are of: {}", all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "))
                }
            };
            return Err(super::Failure::usage(format!("no service or instance `{name}` in this stack; {hint}")));
        }
    }
    if files.is_empty() {
        if !ctx.quiet {
            let of = match args.services.is_empty() {
                true => String::new(),
                false => {
                    format!(" of {}", args.services.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "))
                }
            };
            eprintln!("no logs{of} in `{}` yet; start the stack with `shop up`", dir.logs().display());
        }
        return Ok(super::exit::OK);
    }
    let printer = if ctx.json {
        Printer::Raw
    } else {
        Printer::Styled(Style::new(&files, !args.no_color && super::output::color_stdout(), args.timestamps))
    };
    let mut query = LogQuery::new(args.since, args.until, args.grep, args.level, args.trace, args.order);
    // The existing lines, read whole so an order's trace is learnt before any line is judged.
    let mut offsets = BTreeMap::new();
    let mut texts = Vec::new();
    for (instance, path) in &files {
        let bytes = std::fs::read(path).unwrap_or_default();
        offsets.insert(instance.clone(), bytes.len() as u64);
        // A program's own output may be in any encoding: one stray byte must not hide the file.
        let text = String::from_utf8_lossy(&bytes).into_owned();
        text.lines().for_each(|l| query.learn(l));
        texts.push((instance.clone(), text));
    }
    // `--order` finds the lines of other services through the order's trace, which only the
    // order service's lines name: learnt from every log, whichever ones are shown.
    if query.order.is_some() {
        for (name, path) in all.iter().filter(|(name, _)| !files.iter().any(|(f, _)| f == name)) {
            let bytes = std::fs::read(path).unwrap_or_default();
            offsets.insert(name.clone(), bytes.len() as u64);
            String::from_utf8_lossy(&bytes).lines().for_each(|l| query.learn(l));
        }
    }
    // Kept lines merged by time; `-n` counts kept lines, per instance. A line that is not JSON
    // (a panic, a program's own output) has no time of its own: it goes with the line before it.
    let mut merged: Vec<(String, &str, &str)> = Vec::new();
    for (instance, text) in &texts {
        let mut last = String::new();
        let mut kept = Vec::new();
        for line in text.lines() {
            let at = log_query::timestamp_of(line);
            if !at.is_empty() {
                last = at;
            }
            if query.matches_after(line, &last) {
                kept.push((last.clone(), instance.as_str(), line));
            }
        }
        let from = args.lines.map(|n| kept.len().saturating_sub(n)).unwrap_or(0);
        merged.extend(kept.drain(from..));
    }
    // Stable: lines of one file with the same time keep their order.
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, instance, line) in &merged {
        if printer.print(instance, line).is_err() {
            return Ok(super::exit::OK); // the reader is gone (`shop logs | head`)
        }
    }
    if args.follow {
        follow_query(&dir, &args.services, offsets, printer, query).await;
    }
    Ok(super::exit::OK)
}

/// Kept for the callers that render like `shop logs` does (`up`, `smoke`).
pub use crate::plumbing::log_query::readable;

/// Prints lines appended to the logs (including logs of instances that appear later) until
/// Ctrl-C or until stdout is closed.
pub async fn follow(dir: &StateDir, filter: &[String], offsets: BTreeMap<String, u64>, style: &Style) {
    follow_query(dir, filter, offsets, Printer::Styled(style.clone()), LogQuery::default()).await
}

/// Prints the lines appended to the logs that the query keeps (including logs of instances
/// that appear later) until Ctrl-C or until stdout is closed.
async fn follow_query(
    dir: &StateDir,
    filter: &[String],
    mut offsets: BTreeMap<String, u64>,
    mut printer: Printer,
    mut query: LogQuery,
) {
    // The time of each log's last stamped line, for the plain-text lines after it.
    let mut stamped: BTreeMap<String, String> = BTreeMap::new();
    loop {
        for (instance, path) in log_files(dir, &[]) {
            // The other logs are read only to learn an order's trace from its own lines.
            let visible = shown(&instance, filter);
            if !visible && query.order.is_none() {
                continue;
            }
            let offset = offsets.entry(instance.clone()).or_insert(0);
            let Ok(mut f) = std::fs::File::open(&path) else { continue };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < *offset {
                *offset = 0; // truncated (purged and started again)
            }
            if len == *offset || f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_err() {
                continue;
            }
            // Only whole lines; a partial last line waits for its newline.
            let complete = buf.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
            *offset += complete as u64;
            if visible {
                printer.add(&instance);
            }
            let last = stamped.entry(instance.clone()).or_default();
            for line in String::from_utf8_lossy(&buf[..complete]).lines() {
                query.learn(line);
                let at = log_query::timestamp_of(line);
                if !at.is_empty() {
                    *last = at;
                }
                if visible && query.matches_after(line, last) && printer.print(&instance, line).is_err() {
                    // Nobody reads any more (`shop up | head`): end as Ctrl-C would, so a
                    // foreground `up` stops its stack instead of running on unseen.
                    return;
                }
            }
        }
        // Past `--until`, no line still to come can match: the follow is over. A second of
        // grace lets lines stamped before it reach the file.
        if query.until.is_some_and(|until| SystemTime::now() > until + Duration::from_secs(1)) {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tokio::signal::ctrl_c() => return,
        }
    }
}

/// `(instance, path)` of every log in the state dir that matches `filter` (service or instance
/// names; a service matches its replicas `NAME-N`).
pub fn log_files(dir: &StateDir, filter: &[String]) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir.logs()) else { return Vec::new() };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_name()?.to_str()?.strip_suffix(".log")?.to_string();
            Some((name, path))
        })
        .filter(|(name, _)| shown(name, filter))
        .collect();
    out.sort();
    out
}

/// Whether `instance`'s log is one `filter` asks for (all of them when it is empty).
fn shown(instance: &str, filter: &[String]) -> bool {
    filter.is_empty() || filter.iter().any(|f| matches(instance, f))
}

fn matches(instance: &str, filter: &str) -> bool {
    instance == filter
        || instance.strip_prefix(filter).and_then(|r| r.strip_prefix('-')).is_some_and(|n| n.parse::<u32>().is_ok())
}

/// How prefixes look: padded to the longest instance name, coloured per instance on a terminal.
#[derive(Clone)]
pub struct Style {
    width: usize,
    color: bool,
    timestamps: bool,
}

const COLORS: [u8; 6] = [36, 33, 32, 35, 34, 31];

impl Style {
    pub fn new(files: &[(String, PathBuf)], color: bool, timestamps: bool) -> Style {
        let width = files.iter().map(|(n, _)| n.len()).max().unwrap_or(8);
        Style { width, color, timestamps }
    }

    fn add(&mut self, instance: &str) {
        self.width = self.width.max(instance.len());
    }

    pub fn render(&self, instance: &str, line: &str) -> String {
        let prefix = format!("{instance:<width$} |", width = self.width);
        let prefix = if self.color {
            let c = COLORS[instance.bytes().map(usize::from).sum::<usize>() % COLORS.len()];
            format!("\x1b[{c}m{prefix}\x1b[0m")
        } else {
            prefix
        };
        format!("{prefix} {}", log_query::readable(line, self.timestamps))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_service_filter_matches_its_replicas_only() {
        assert!(super::matches("order-2", "order"));
        assert!(super::matches("order", "order"));
        assert!(!super::matches("order-eu", "order"));
        assert!(!super::matches("orders", "order"));
    }
}
