//! The full-screen dashboard: raw mode and the alternate screen, a refresh every interval, keys
//! that act on the selected instance, and a terminal restored on every way out (q, Ctrl-C,
//! SIGTERM/SIGHUP, a lost stack, a panic).

use crate::orchestrator::protocol::InstanceState;
use std::io::{IsTerminal, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use anyhow::Context as _;
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc;

use super::fetch::{self, Action};
use super::render::{self, View};
use super::snapshot::{Sampler, Snapshot};
use crate::error::Failure;
use crate::orchestrator::control::Control;
use crate::orchestrator::state_dir::StateDir;

/// Log lines kept for the logs pane; more than any terminal shows.
const LOG_LINES: usize = 200;
/// Failed samples in a row, with the supervisor gone, before `top` says the stack is lost.
const LOST_AFTER: u32 = 2;

pub struct Options {
    pub interval: Duration,
    pub color: bool,
}

/// One snapshot with real rates: two samples `window` apart (`--once`, `--json`).
pub async fn one_snapshot(control: &Control, window: Duration) -> anyhow::Result<Snapshot> {
    let http = crate::plumbing::client::http_client();
    let mut sampler = Sampler::new();
    sampler.absorb(fetch::sample(control, &http).await?);
    tokio::time::sleep(window).await;
    Ok(sampler.absorb(fetch::sample(control, &http).await?))
}

/// Runs the dashboard until the user quits; exit 1 when the stack goes away under it.
pub async fn run(control: Control, dir: StateDir, options: Options) -> anyhow::Result<i32> {
    if !std::io::stdout().is_terminal() {
        return Err(Failure::usage("`shop top` needs a terminal; use `shop top --once` or `--json` in scripts"));
    }
    let control = Arc::new(control);
    let http = crate::plumbing::client::http_client();
    let mut sampler = Sampler::new();
    let mut snap = sampler.absorb(fetch::sample(&control, &http).await?);
    let mut terminal = enter().context("cannot set up the terminal for `shop top`")?;
    let _guard = Restore;
    let stop_keys = Arc::new(AtomicBool::new(false));
    let mut keys = read_keys(stop_keys.clone());
    let (done_tx, mut done) = mpsc::unbounded_channel::<String>();
    let mut view = View {
        color: options.color,
        interactive: true,
        interval_s: options.interval.as_secs_f64(),
        ..Default::default()
    };
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut failures = 0;
    let outcome = loop {
        view.selected = view.selected.min(snap.instances.len().saturating_sub(1));
        if view.show_logs {
            view.log_lines = snap
                .instances
                .get(view.selected)
                .map(|r| fetch::last_log_lines(&dir, &r.instance, LOG_LINES))
                .unwrap_or_default();
        }
        terminal.draw(|f| render::draw(f, &snap, &view)).context("cannot draw `shop top`")?;
        // For the test that a panic leaves a usable terminal, as `SHOP_CRASH_AFTER` does for sagas.
        if crate::plumbing::test_hooks::active("SHOP_TOP_PANIC") {
            panic!("SHOP_TOP_PANIC is set: panicking with the dashboard on screen");
        }
        tokio::select! {
            _ = tick.tick() => match fetch::sample(&control, &http).await {
                Ok(raw) => {
                    failures = 0;
                    snap = sampler.absorb(raw);
                }
                Err(e) => {
                    failures += 1;
                    if failures >= LOST_AFTER && Control::connect(&dir).is_none() {
                        break Outcome::Lost;
                    }
                    view.status = Some(format!("error: {e:#}; showing the last sample"));
                }
            },
            key = keys.recv() => {
                let Some(key) = key else { break Outcome::Quit };
                match handle_key(key, &snap, &mut view) {
                    KeyOutcome::Quit => break Outcome::Quit,
                    KeyOutcome::Act(action) => {
                        view.status = Some(format!("{}…", action.describe()));
                        let (control, done_tx) = (control.clone(), done_tx.clone());
                        tokio::spawn(async move {
                            let message = match action.run(&control).await {
                                Ok(()) => format!("{}: done", action.describe()),
                                Err(e) => format!("{} failed: {e:#}", action.describe()),
                            };
                            let _ = done_tx.send(message);
                        });
                    }
                    KeyOutcome::Redraw => {}
                }
            }
            Some(message) = done.recv() => {
                view.status = Some(message);
                // Show the effect now rather than at the next tick.
                tick.reset_immediately();
            }
            _ = tokio::signal::ctrl_c() => break Outcome::Quit,
            _ = term.recv() => break Outcome::Quit,
            _ = hangup.recv() => break Outcome::Quit,
        }
    };
    stop_keys.store(true, Ordering::Relaxed);
    drop(terminal);
    restore();
    match outcome {
        Outcome::Quit => Ok(crate::error::exit::OK),
        Outcome::Lost => Err(Failure::runtime(format!(
            "the stack running from `{}` went away; start it again with `shop up -d`",
            dir.root.display()
        ))),
    }
}

enum Outcome {
    Quit,
    Lost,
}

enum KeyOutcome {
    Quit,
    Act(Action),
    Redraw,
}

fn handle_key(key: KeyEvent, snap: &Snapshot, view: &mut View) -> KeyOutcome {
    let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
    if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) && !view.show_help {
        return KeyOutcome::Quit;
    }
    if view.show_help {
        view.show_help = false;
        return KeyOutcome::Redraw;
    }
    let Some(row) = snap.instances.get(view.selected) else { return KeyOutcome::Redraw };
    let instance = row.instance.clone();
    let service = row.service.clone();
    let action = match key.code {
        KeyCode::Up => {
            view.selected = view.selected.saturating_sub(1);
            return KeyOutcome::Redraw;
        }
        KeyCode::Down => {
            view.selected = (view.selected + 1).min(snap.instances.len().saturating_sub(1));
            return KeyOutcome::Redraw;
        }
        KeyCode::Char('l') => {
            view.show_logs = !view.show_logs;
            return KeyOutcome::Redraw;
        }
        KeyCode::Char('?') => {
            view.show_help = true;
            return KeyOutcome::Redraw;
        }
        KeyCode::Char('k') => Action::Kill { instance },
        KeyCode::Char('p') if row.state == InstanceState::Paused => Action::Resume { instance },
        KeyCode::Char('p') => Action::Pause { instance },
        KeyCode::Char('r') => Action::Restart { service },
        KeyCode::Char('s') if row.state == InstanceState::Stopped => Action::Start { service },
        KeyCode::Char('s') => Action::Stop { service },
        KeyCode::Char('c') => Action::Clear { instance },
        _ => return KeyOutcome::Redraw,
    };
    // The registry too: the supervisor takes what `shop chaos` and `shop restart` take for it,
    // and what it refuses comes back as the status line's error.
    KeyOutcome::Act(action)
}

/// Key presses from a blocking reader thread; polling lets the thread notice `stop` and end.
fn read_keys(stop: Arc<AtomicBool>) -> mpsc::UnboundedReceiver<KeyEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => match event::read() {
                    Ok(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => {
                        if tx.send(k).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// Raw mode, the alternate screen and a hidden cursor; a panic hook restores them before the
/// panic message prints, so it is readable and the shell usable.
fn enter() -> std::io::Result<Terminal<CrosstermBackend<Stdout>>> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
    crossterm::terminal::enable_raw_mode()?;
    let mut stdout = std::io::stdout();
    crossterm::execute!(stdout, crossterm::terminal::EnterAlternateScreen, crossterm::cursor::Hide)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(stdout))?;
    terminal.clear()?;
    Ok(terminal)
}

/// Leaves raw mode and the alternate screen and shows the cursor; harmless when already done.
fn restore() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(std::io::stdout(), crossterm::terminal::LeaveAlternateScreen, crossterm::cursor::Show);
}

/// Restores the terminal when the loop ends by `?` (an error) as well.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}
