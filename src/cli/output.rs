//! Tables and JSON for stdout, built in one place.

use std::io::IsTerminal;

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

use crate::orchestrator::protocol::PsRow;

/// Colour only on a terminal, never with `NO_COLOR` set.
pub fn color_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(header.to_vec());
    t
}

/// `12s`, `4m03s`, `2h05m`.
pub fn uptime(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

pub fn ps_table(rows: &[PsRow]) -> Table {
    let mut t = table(&["SERVICE", "INSTANCE", "PID", "ADDRESS", "STATE", "RESTARTS", "UPTIME", "FAULTS"]);
    for r in rows {
        t.add_row(vec![
            r.service.clone(),
            r.instance.clone(),
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.address.clone().unwrap_or_else(|| "-".into()),
            r.state.to_string(),
            r.restarts.to_string(),
            if r.uptime_s > 0 || r.pid.is_some() { uptime(r.uptime_s) } else { "-".into() },
            if r.faults.is_empty() { "-".into() } else { r.faults.join(", ") },
        ]);
    }
    t
}

pub fn print_ps(rows: &[PsRow], json: bool) {
    if json {
        print_json(&rows);
    } else {
        println!("{}", ps_table(rows));
    }
}
