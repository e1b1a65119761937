//! `shop down`: stop the stack in reverse dependency order; `--purge` also deletes its data.

use std::time::{Duration, Instant};

use super::context::Context;
use crate::orchestrator::control::Control;
use crate::orchestrator::state_dir::process_alive;
use crate::plumbing::time::parse_duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Grace period between SIGTERM and SIGKILL
    #[arg(long, default_value = crate::plumbing::config::STOP_GRACE_ARG, value_parser = parse_duration)]
    pub timeout: Duration,
    /// Also delete the stack's databases and logs
    #[arg(long)]
    pub purge: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let dir = ctx.state_dir();
    match Control::connect(&dir) {
        Some(control) => {
            let pid = control.record.pid;
            let started = Instant::now();
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
            dir.kill_leftovers();
            dir.remove_record();
            if !ctx.quiet {
                eprintln!("stack stopped in {:.1}s", started.elapsed().as_secs_f64());
            }
        }
        None => {
            if !ctx.quiet {
                eprintln!("no stack is running from `{}`; nothing to stop", dir.root.display());
            }
        }
    }
    if args.purge {
        for path in [dir.data(), dir.logs()] {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => anyhow::bail!("cannot delete `{}`: {e}", path.display()),
            }
        }
        let _ = std::fs::remove_file(dir.root.join("secret"));
        let _ = std::fs::remove_dir(&dir.root);
        if !ctx.quiet {
            eprintln!("deleted data and logs in `{}`", dir.root.display());
        }
    }
    Ok(super::exit::OK)
}
