//! `shop down`: stop the stack in reverse dependency order; `--purge` also deletes its data.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::context::Context;
use super::output;
use super::Failure;
use crate::orchestrator::control::Control;
use crate::orchestrator::protocol::PsRow;
use crate::orchestrator::state_dir::{process_alive, LockKind};
use crate::plumbing::time::parse_duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Grace period between SIGTERM and SIGKILL
    #[arg(long, default_value = crate::plumbing::config::STOP_GRACE_ARG, value_parser = parse_duration, allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Also delete the stack's databases and logs
    #[arg(long)]
    pub purge: bool,
}

/// `shop down --json`: what was stopped and what was deleted.
#[derive(Serialize)]
struct Stopped {
    /// The instances as `ps` showed them just before the stop; empty if nothing ran.
    stopped: Vec<PsRow>,
    /// Seconds the stop took; 0 if nothing ran.
    duration_s: f64,
    /// The directories `--purge` deleted.
    purged: Vec<String>,
}

/// How long `down` waits for the supervisor's rows, which only its report shows.
const REPORT_WAIT: Duration = Duration::from_secs(1);

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let dir = ctx.state_dir();
    let mut report = Stopped { stopped: Vec::new(), duration_s: 0.0, purged: Vec::new() };
    match Control::connect(&dir) {
        Some(control) => {
            let pid = control.record.pid;
            let started = Instant::now();
            // An `up` meanwhile waits until this stack is gone, then starts its own.
            let Some(_stopping) = dir.lock(LockKind::Up, super::up::UP_LOCK_WAIT).await? else {
                return Err(Failure::runtime(format!(
                    "a `shop up` has been starting a stack in `{}` for {}s; wait for it, then stop it",
                    dir.root.display(),
                    super::up::UP_LOCK_WAIT.as_secs()
                )));
            };
            // Only for the report, so briefly: a supervisor too busy to answer is still stopped
            // below, within the grace the user gave.
            if let Ok(Ok(status)) = tokio::time::timeout(REPORT_WAIT, control.status()).await {
                report.stopped = status.rows;
            }
            // The supervisor may exit before it answers; what counts is that it is gone.
            let _ = control.down(args.timeout, args.timeout + Duration::from_secs(10)).await;
            let deadline = Instant::now() + Duration::from_secs(5);
            while process_alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if process_alive(pid) {
                crate::orchestrator::launcher::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
            dir.kill_leftovers(pid);
            dir.remove_record_of(pid);
            report.duration_s = started.elapsed().as_secs_f64();
            if !ctx.quiet {
                eprintln!("stack stopped in {:.1}s", started.elapsed().as_secs_f64());
            }
        }
        None => {
            ctx.check_stack_file()?;
            if !ctx.quiet {
                eprintln!("no stack is running from `{}`; nothing to stop", dir.root.display());
            }
        }
    }
    if args.purge {
        report.purged = dir.purge()?.iter().map(|p| p.display().to_string()).collect();
        if !ctx.quiet {
            eprintln!("deleted data and logs in `{}`", dir.root.display());
        }
    }
    if ctx.json {
        output::print_json(&report);
    }
    Ok(super::exit::OK)
}
