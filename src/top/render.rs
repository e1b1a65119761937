//! A [`Snapshot`] as a frame: header with order rates, the throughput sparkline with chaos
//! marks, the instance table, the events (or logs) pane and the key line.
//!
//! Pure: a function of the snapshot and the [`View`], so tests draw it on a `TestBackend` and
//! `--once` prints the same frame as text.

use crate::orchestrator::protocol::InstanceState;
use ratatui::backend::TestBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Table, TableState};
use ratatui::{Frame, Terminal};

use super::snapshot::{EventKind, InstanceRow, Snapshot};

/// Below this width the SERVICE column goes: the instance name already starts with it.
const WIDE: u16 = 100;
const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// What the user has chosen to see; everything else comes from the snapshot.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Index of the selected row in `snapshot.instances`.
    pub selected: usize,
    /// Whether the selection is drawn: not in a `--once` frame, where keys mean nothing.
    pub interactive: bool,
    /// `l`: the selected instance's log lines instead of the events.
    pub show_logs: bool,
    /// `?`: the key help on top of everything.
    pub show_help: bool,
    /// Off under `NO_COLOR` and for `--once`: then only bold and reverse video mark things.
    pub color: bool,
    /// The last action's outcome, or what is running, shown in the key line.
    pub status: Option<String>,
    /// The selected instance's last log lines, when `show_logs`.
    pub log_lines: Vec<String>,
    /// Refresh period shown in the header.
    pub interval_s: f64,
}

/// Draws the whole dashboard into `frame`.
pub fn draw(frame: &mut Frame, snap: &Snapshot, view: &View) {
    let area = frame.area();
    let rows = snap.instances.len() as u16;
    let [header, spark, table, pane, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Max(rows + 2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header_line(snap, view)), header);
    frame.render_widget(Paragraph::new(spark_lines(snap, spark.width as usize)), spark);
    draw_table(frame, table, snap, view);
    draw_pane(frame, pane, snap, view);
    frame.render_widget(Paragraph::new(key_line(view)), keys);
    if view.show_help {
        draw_help(frame, area);
    }
}

/// The frame as plain text lines of `width` columns, trailing blanks trimmed (`--once`).
pub fn text_frame(snap: &Snapshot, view: &View, width: u16) -> anyhow::Result<String> {
    // Tall enough for every row and the recent events, without a screenful of blank lines.
    let events = snap.events.len().clamp(1, 10) as u16;
    let height = 1 + 2 + (snap.instances.len() as u16 + 2) + (events + 1).max(3) + 1;
    let mut terminal = Terminal::new(TestBackend::new(width, height))?;
    terminal.draw(|f| draw(f, snap, view))?;
    Ok(buffer_text(terminal.backend().buffer()))
}

/// A buffer's cells as lines of text, trailing spaces and blank last lines dropped.
pub fn buffer_text(buffer: &ratatui::buffer::Buffer) -> String {
    let area = buffer.area;
    let mut lines = Vec::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            if let Some(cell) = buffer.cell((x, y)) {
                line.push_str(cell.symbol());
            }
        }
        lines.push(line.trim_end().to_string());
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n") + "\n"
}

fn header_line(snap: &Snapshot, view: &View) -> Line<'static> {
    let o = &snap.orders;
    let bold = Style::default().add_modifier(Modifier::BOLD);
    Line::from(vec![
        Span::styled("shop top", bold),
        Span::raw(format!(
            "  orders/s 10s: confirmed {:.1} failed {:.1} pending {:.1} ({} now)  every {}s",
            o.confirmed_per_s,
            o.failed_per_s,
            o.pending_per_s,
            o.pending,
            trim_float(view.interval_s)
        )),
    ])
}

/// Two lines: the sparkline of orders finished per second over the last 60 s, and under it a
/// letter at each point where something happened (R restart, F fault, C cleared, B breaker,
/// S state change), so the marks survive `NO_COLOR`.
fn spark_lines(snap: &Snapshot, width: usize) -> Vec<Line<'static>> {
    let label = "60s ";
    let room = width.saturating_sub(label.len() + 12);
    let from = snap.throughput.len().saturating_sub(room);
    let points = &snap.throughput[from..];
    let max = points.iter().cloned().fold(0.0_f64, f64::max);
    let mut spark = String::from(label);
    let mut marks = " ".repeat(label.len());
    for (i, v) in points.iter().enumerate() {
        let level = if max > 0.0 { ((v / max) * 7.0).round() as usize } else { 0 };
        spark.push(SPARK[level.min(7)]);
        let mark = snap.marks.iter().find(|m| m.index == from + i).map(|m| match m.kind {
            EventKind::Restart => 'R',
            EventKind::FaultApplied => 'F',
            EventKind::FaultCleared => 'C',
            EventKind::Breaker => 'B',
            EventKind::State => 'S',
        });
        marks.push(mark.unwrap_or(' '));
    }
    spark.push_str(&format!(" max {max:.1}/s"));
    vec![Line::from(spark), Line::from(marks)]
}

fn draw_table(frame: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let wide = area.width >= WIDE;
    let mut header = vec!["INSTANCE", "STATE", "PID", "RST", "REQ/S", "ERR%", "P50", "P99", "BRK", "FAULTS"];
    let mut widths = vec![
        Constraint::Length(14),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(3),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(3),
        Constraint::Min(6),
    ];
    if wide {
        header.insert(0, "SERVICE");
        widths.insert(0, Constraint::Length(13));
    }
    // What the FAULTS column gets of the width: the rest, less the spaces between columns and
    // the selection mark. A longer list ends in `…`, so a cut is never taken for the whole.
    let fixed: u16 = widths.iter().map(|w| if let Constraint::Length(n) = w { *n } else { 0 }).sum();
    let room = area.width.saturating_sub(fixed + widths.len() as u16).max(6) as usize;
    let rows = snap.instances.iter().map(|r| {
        let mut cells = vec![
            r.instance.clone(),
            r.state.to_string(),
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.restarts.to_string(),
            opt(r.requests_per_s, 1),
            opt(r.error_pct, 1),
            ms(r.p50_ms),
            ms(r.p99_ms),
            r.breakers_open.to_string(),
            if r.faults.is_empty() { "-".into() } else { ellipsis(&r.faults.join(", "), room) },
        ];
        if wide {
            cells.insert(0, r.service.clone());
        }
        Row::new(cells).style(state_style(r, view.color))
    });
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .column_spacing(1)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol(">")
        .block(Block::default().borders(Borders::TOP).title(" instances "));
    let mut state =
        TableState::default().with_selected((view.interactive && !snap.instances.is_empty()).then_some(view.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// `text` cut to `width` characters, ending in `…` when cut.
fn ellipsis(text: &str, width: usize) -> String {
    match text.chars().count() <= width {
        true => text.to_string(),
        false => text.chars().take(width.saturating_sub(1)).chain(['…']).collect(),
    }
}

fn state_style(row: &InstanceRow, color: bool) -> Style {
    use ratatui::style::Color;
    if !color {
        return Style::default();
    }
    match row.state {
        InstanceState::Healthy => Style::default().fg(Color::Green),
        InstanceState::Starting | InstanceState::Pending | InstanceState::Paused | InstanceState::Unhealthy => {
            Style::default().fg(Color::Yellow)
        }
        InstanceState::Stopped | InstanceState::Skipped => Style::default().fg(Color::DarkGray),
        InstanceState::Crashed | InstanceState::Killed | InstanceState::Failed => Style::default().fg(Color::Red),
    }
}

fn draw_pane(frame: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let room = area.height.saturating_sub(1) as usize;
    let (title, lines): (String, Vec<Line>) = if view.show_logs {
        let name = snap.instances.get(view.selected).map(|r| r.instance.as_str()).unwrap_or("-");
        let from = view.log_lines.len().saturating_sub(room);
        (format!(" logs: {name} "), view.log_lines[from..].iter().map(|l| Line::from(l.clone())).collect())
    } else {
        let from = snap.events.len().saturating_sub(room);
        let lines = snap.events[from..]
            .iter()
            .map(|e| Line::from(format!("{} {:<14} {}", clock(e.at_ms), e.instance, e.text)))
            .collect::<Vec<_>>();
        let lines = if lines.is_empty() { vec![Line::from("no events yet")] } else { lines };
        // The times are UTC, as the logs' are: said once in the title rather than on each line.
        (" events (UTC) ".to_string(), lines)
    };
    let block = Block::default().borders(Borders::TOP).title(title);
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn key_line(view: &View) -> Line<'static> {
    match &view.status {
        Some(s) => Line::from(s.clone()),
        None => Line::from("↑↓ select k kill p pause r restart s stop/start c clear l logs ? help q quit"),
    }
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::from("↑/↓     select an instance"),
        Line::from("k       kill it (chaos kill; c brings it back)"),
        Line::from("p       pause it, or resume it when paused"),
        Line::from("r       restart its service"),
        Line::from("s       stop its service, or start it when stopped"),
        Line::from("c       clear its faults"),
        Line::from("l       its last log lines instead of the events"),
        Line::from("?       this help; any key closes it"),
        Line::from("q       quit (also Ctrl-C, Esc)"),
    ];
    let w = 56.min(area.width);
    let h = (text.len() as u16 + 2).min(area.height);
    let popup = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(text).block(Block::bordered().title(" keys ")), popup);
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "-".into())
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 10.0 => format!("{v:.1}ms"),
        Some(v) if v < 10_000.0 => format!("{v:.0}ms"),
        Some(v) => format!("{:.0}s", v / 1000.0),
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// `HH:MM:SS` (UTC) of a unix-millisecond time.
fn clock(at_ms: i64) -> String {
    let s = at_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::snapshot::{Event, Mark, OrderRates};

    fn row(service: &str, instance: &str, state: InstanceState, faults: &[&str]) -> InstanceRow {
        InstanceRow {
            service: service.into(),
            instance: instance.into(),
            state,
            pid: (state != InstanceState::Killed).then_some(4242),
            restarts: 0,
            requests_per_s: Some(12.5),
            error_pct: Some(0.0),
            p50_ms: Some(3.2),
            p99_ms: Some(41.0),
            breakers_open: 0,
            faults: faults.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn known_stack() -> Snapshot {
        let mut order = row("order", "order", InstanceState::Healthy, &[]);
        order.breakers_open = 1;
        Snapshot {
            at_ms: 3_600_000,
            window_s: 1.0,
            orders: OrderRates { confirmed_per_s: 4.2, failed_per_s: 0.3, pending_per_s: 0.1, pending: 2 },
            throughput: vec![1.0, 2.0, 4.0, 4.0, 0.5],
            marks: vec![Mark { index: 3, kind: EventKind::FaultApplied }],
            instances: vec![
                row("registry", "registry", InstanceState::Healthy, &[]),
                row("user", "user", InstanceState::Healthy, &[]),
                row("inventory", "inventory", InstanceState::Healthy, &[]),
                row("payment", "payment", InstanceState::Killed, &["killed"]),
                row("notification", "notification", InstanceState::Paused, &["paused"]),
                order,
                row("gateway", "gateway", InstanceState::Healthy, &["latency 30ms 100%", "errors 503 5%"]),
            ],
            events: vec![Event {
                at_ms: 3_600_000,
                instance: "payment".into(),
                kind: EventKind::FaultApplied,
                text: "fault killed".into(),
            }],
        }
    }

    fn frame_at(width: u16, height: u16, view: &View) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, &known_stack(), view)).unwrap();
        buffer_text(terminal.backend().buffer())
    }

    #[test]
    fn a_frame_at_80x24_shows_every_instance_its_state_and_faults() {
        let text = frame_at(80, 24, &View { interval_s: 1.0, ..Default::default() });
        for instance in ["registry", "user", "inventory", "payment", "notification", "order", "gateway"] {
            assert!(text.lines().any(|l| l.contains(instance)), "{instance} missing:\n{text}");
        }
        let payment = text.lines().find(|l| l.contains("payment ") && l.contains("killed")).unwrap_or("");
        assert!(payment.contains("killed"), "{text}");
        assert!(text.lines().any(|l| l.contains("notification") && l.contains("paused")), "{text}");
        assert!(text.lines().any(|l| l.contains("gateway") && l.contains("latency")), "{text}");
        // Two faults do not fit in 80 columns: the cut shows.
        let gateway = text.lines().find(|l| l.contains("gateway")).unwrap_or("");
        assert!(gateway.trim_end().ends_with('…'), "{gateway}");
        assert!(text.contains("confirmed 4.2"), "{text}");
        assert!(text.contains("01:00:00 payment"), "events pane:\n{text}");
        assert!(text.contains(" events (UTC) "), "the pane says its times are UTC:\n{text}");
        assert!(text.contains("F"), "the fault is marked under the sparkline:\n{text}");
        assert!(text.contains("q quit"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 80));
    }

    #[test]
    fn a_wide_frame_adds_the_service_column_and_help_and_logs_replace_panes() {
        let text = frame_at(120, 30, &View::default());
        assert!(text.contains("SERVICE"), "{text}");
        let view = View {
            show_logs: true,
            selected: 3,
            interactive: true,
            log_lines: vec!["INFO  charged".into()],
            ..Default::default()
        };
        let text = frame_at(80, 24, &view);
        assert!(text.contains("logs: payment") && text.contains("INFO  charged"), "{text}");
        let text = frame_at(80, 24, &View { show_help: true, ..Default::default() });
        assert!(text.contains("pause it, or resume it"), "{text}");
    }
}
