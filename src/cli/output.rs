//! Tables and JSON for stdout, built in one place.

use std::io::IsTerminal;
use std::path::Path;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use serde::Serialize;

use crate::error::Failure;
use crate::orchestrator::protocol::PsRow;

/// Refuses, before any work, a report file that could not be written at the end: one in a
/// missing or unwritable directory, or a directory itself. Found after a ten-minute drill, the
/// typo would cost the drill. Writing over one of `inputs` (the drill or stack file the command
/// reads) is refused too: it would replace the file with the report.
pub fn check_writable(path: &Path, what: &str, inputs: &[&Path]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let same = |input: &Path| matches!((path.canonicalize(), input.canonicalize()), (Ok(a), Ok(b)) if a == b);
    let problem = if let Some(input) = inputs.iter().find(|input| same(input)) {
        Some(format!("`{}` is what this command reads", input.display()))
    } else if path.is_dir() {
        Some("it is a directory".to_string())
    } else if !dir.is_dir() {
        Some(format!("`{}` is not a directory", dir.display()))
    } else if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
        Some(format!("`{}` is not writable", dir.display()))
    } else {
        None
    };
    match problem {
        Some(why) => Err(Failure::usage(format!("cannot write the {what} to `{}`: {why}", path.display()))),
        None => Ok(()),
    }
}

/// Colour only on a terminal, never with `NO_COLOR` set.
pub fn color_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => outln!("{s}"),
        Err(e) => errln!("error: cannot render JSON: {e}"),
    }
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(header.to_vec());
    t
}

/// PASS or FAIL, green or red when `color`. comfy-table applies the colour after padding the
/// cell to its visible width; escape codes written into the text would count as width and
/// misalign the column.
pub fn pass_fail(ok: bool, color: bool) -> Cell {
    let cell = Cell::new(if ok { "PASS" } else { "FAIL" });
    match color {
        true => cell.fg(if ok { Color::Green } else { Color::Red }),
        false => cell,
    }
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
        println!("{}", ps_table(rows).trim_fmt());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drops ANSI escape sequences (`ESC [ ... letter`), leaving what a terminal shows.
    fn visible(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn coloured_pass_and_fail_cells_keep_the_next_column_aligned() {
        let mut t = table(&["CHECK", "RESULT", "DETAIL"]);
        t.enforce_styling();
        t.add_row(vec![Cell::new("stock_conserved"), pass_fail(true, true), Cell::new("detail-a")]);
        t.add_row(vec![Cell::new("one_charge"), pass_fail(false, true), Cell::new("detail-b")]);
        let rendered = t.to_string();
        assert!(rendered.contains("\x1b["), "the cells are coloured: {rendered:?}");
        let lines: Vec<String> = rendered.lines().map(visible).collect();
        let columns: Vec<Option<usize>> =
            lines.iter().map(|l| ["DETAIL", "detail-a", "detail-b"].iter().find_map(|w| l.find(w))).collect();
        assert!(columns.iter().all(|c| c.is_some() && *c == columns[0]), "misaligned:\n{}", lines.join("\n"));
    }
}
