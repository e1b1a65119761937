//! `shop logs`: the merged logs of a stack's instances, prefixed with the instance name,
//! rendered readably from the JSON lines services write; `-f` follows.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use super::context::Context;
use crate::orchestrator::state_dir::StateDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services or instances to show [default: all]
    pub services: Vec<String>,
    /// Keep printing new lines as they are written
    #[arg(short, long)]
    pub follow: bool,
    /// Lines per instance to show from the end [default: all]
    #[arg(short = 'n', long = "tail")]
    pub lines: Option<usize>,
    /// Never colour the prefixes
    #[arg(long)]
    pub no_color: bool,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let dir = ctx.state_dir();
    let files = log_files(&dir, &args.services);
    if files.is_empty() {
        if !args.services.is_empty() {
            return Err(super::Failure::usage(format!(
                "no logs for {} in `{}`; `shop ps` lists the instances",
                args.services.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "),
                dir.logs().display()
            )));
        }
        if !ctx.quiet {
            eprintln!("no logs in `{}` yet; start the stack with `shop up`", dir.logs().display());
        }
        return Ok(super::exit::OK);
    }
    let style = Style::new(&files, !args.no_color && super::output::color_stdout(), args.timestamps);
    // The existing lines, merged by time.
    let mut merged: Vec<(String, String, String)> = Vec::new();
    let mut offsets = BTreeMap::new();
    for (instance, path) in &files {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        offsets.insert(instance.clone(), text.len() as u64);
        let lines: Vec<&str> = text.lines().collect();
        let from = args.lines.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
        for line in &lines[from..] {
            merged.push((timestamp_of(line), instance.clone(), line.to_string()));
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, instance, line) in &merged {
        println!("{}", style.render(instance, line));
    }
    if args.follow {
        follow(&dir, &args.services, offsets, &style).await;
    }
    Ok(super::exit::OK)
}

/// Prints lines appended to the logs (including logs of instances that appear later) until
/// Ctrl-C.
pub async fn follow(dir: &StateDir, filter: &[String], mut offsets: BTreeMap<String, u64>, style: &Style) {
    let mut style = style.clone();
    loop {
        for (instance, path) in log_files(dir, filter) {
            let offset = offsets.entry(instance.clone()).or_insert(0);
            let Ok(mut f) = std::fs::File::open(&path) else { continue };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < *offset {
                *offset = 0; // truncated (purged and started again)
            }
            if len == *offset || f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut buf = String::new();
            if f.read_to_string(&mut buf).is_err() {
                continue;
            }
            // Only whole lines; a partial last line waits for its newline.
            let complete = buf.rfind('\n').map(|i| i + 1).unwrap_or(0);
            *offset += complete as u64;
            style.add(&instance);
            for line in buf[..complete].lines() {
                println!("{}", style.render(&instance, line));
            }
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
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| matches(name, f)))
        .collect();
    out.sort();
    out
}

fn matches(instance: &str, filter: &str) -> bool {
    instance == filter
        || instance.strip_prefix(filter).and_then(|r| r.strip_prefix('-')).is_some_and(|n| n.parse::<u32>().is_ok())
}

fn timestamp_of(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["timestamp"].as_str().map(str::to_string))
        .unwrap_or_default()
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
        format!("{prefix} {}", readable(line, self.timestamps))
    }
}

/// A JSON log line as `LEVEL message key=value …`; anything else as it is.
pub fn readable(line: &str, timestamps: bool) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let mut out = String::new();
    if timestamps {
        if let Some(t) = map.get("timestamp").and_then(|v| v.as_str()) {
            out.push_str(t);
            out.push(' ');
        }
    }
    let level = map.get("level").and_then(|v| v.as_str()).unwrap_or("INFO");
    out.push_str(&format!("{level:<5} "));
    out.push_str(map.get("message").and_then(|v| v.as_str()).unwrap_or(""));
    for (k, v) in &map {
        if matches!(
            k.as_str(),
            "timestamp" | "level" | "message" | "target" | "service" | "filename" | "line_number" | "threadId"
        ) {
            continue;
        }
        match v {
            serde_json::Value::String(s) => out.push_str(&format!(" {k}={s}")),
            other => out.push_str(&format!(" {k}={other}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_lines_render_as_level_message_and_fields() {
        let line = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"WARN","message":"retrying","order_id":"ord_1","attempt":2,"target":"shop"}"#;
        assert_eq!(super::readable(line, false), "WARN  retrying attempt=2 order_id=ord_1");
        assert_eq!(super::readable(line, true), "2026-01-01T00:00:00Z WARN  retrying attempt=2 order_id=ord_1");
        assert_eq!(super::readable("plain text", false), "plain text");
    }

    #[test]
    fn a_service_filter_matches_its_replicas_only() {
        assert!(super::matches("order-2", "order"));
        assert!(super::matches("order", "order"));
        assert!(!super::matches("order-eu", "order"));
        assert!(!super::matches("orders", "order"));
    }
}
