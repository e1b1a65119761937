//! `shop top`: the live dashboard of a running stack (SPEC section 15); `--once` prints one
//! frame as text, `--json` one snapshot. The engine is `crate::top`.

use std::io::IsTerminal;
use std::time::Duration;

use super::context::Context;
use super::output;
use crate::plumbing::time::parse_duration;
use crate::top::{app, render};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Time between refreshes (and the window of `--once` and `--json` rates)
    #[arg(long, default_value = "1s", value_parser = parse_interval, allow_hyphen_values = true)]
    pub interval: Duration,
    /// Print one frame as plain text and exit
    #[arg(long)]
    pub once: bool,
}

/// The shortest refresh: each one asks every instance for its figures, and a zero interval
/// would be a busy loop (and a rate over no time at all).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < MIN_INTERVAL => Err(format!("`{s}` is too short; the dashboard refreshes at most every 100ms")),
        d => Ok(d),
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let dir = ctx.state_dir();
    let control = ctx.control()?;
    if ctx.json || args.once {
        let snap = app::one_snapshot(&control, args.interval).await?;
        if ctx.json {
            output::print_json(&snap);
        } else {
            // A frame as wide as the terminal, or the 80 columns `top` is designed for.
            let width = std::io::stdout()
                .is_terminal()
                .then(|| crossterm::terminal::size().ok().map(|s| s.0))
                .flatten()
                .unwrap_or(80);
            let view = render::View { interval_s: args.interval.as_secs_f64(), ..Default::default() };
            print!("{}", render::text_frame(&snap, &view, width)?);
        }
        return Ok(super::exit::OK);
    }
    let color = std::env::var_os("NO_COLOR").is_none();
    app::run(control, dir, app::Options { interval: args.interval, color }).await
}
