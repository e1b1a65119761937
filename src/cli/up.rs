//! `shop up`: start the stack (or some services and their dependencies), show each instance's
//! progress to healthy, then either stream the logs until Ctrl-C (foreground) or return once
//! all are healthy with the `ps` table (`-d`).

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::context::Context;
use super::{exit, output, Failure};
use crate::orchestrator::control::Control;
use crate::orchestrator::daemon;
use crate::orchestrator::protocol::{InstanceState, Names, PsRow, Status};
use crate::orchestrator::state_dir::{process_alive, LockKind, StateDir};
use crate::orchestrator::supervisor::Supervisor;
use crate::plumbing::time::parse_duration;

/// How long an `up` waits for another one that is starting a stack in the same state dir: it
/// holds the lock only until its supervisor records itself, which takes well under this.
pub(super) const UP_LOCK_WAIT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services to start, with their dependencies [default: all]
    pub services: Vec<String>,
    /// Run the supervisor in the background; return once every service is healthy
    #[arg(short, long)]
    pub detach: bool,
    /// How long to wait for every service to be healthy
    #[arg(long, default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub wait_timeout: Duration,
    /// Start only the named services, not their dependencies
    #[arg(long)]
    pub no_deps: bool,
    /// Grace period between SIGTERM and SIGKILL when stopping
    #[arg(long, default_value = crate::plumbing::config::STOP_GRACE_ARG, value_parser = parse_duration, allow_hyphen_values = true)]
    pub timeout: Duration,
}

/// Where start-up progress is read from.
enum Source {
    Local(Arc<Supervisor>),
    Remote(Control),
}

impl Source {
    async fn status(&self) -> anyhow::Result<Status> {
        match self {
            Source::Local(s) => Ok(s.status()),
            Source::Remote(c) => c.status().await,
        }
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let stack = ctx.stack_with_fixtures()?;
    let dir = ctx.state_dir();
    let started = Instant::now();

    // Two `up`s at once start one stack: the second waits here until the first one's supervisor
    // has recorded itself, then finds it below and joins it, as `up` on a running stack does.
    dir.create()?;
    let Some(starting) = dir.lock(LockKind::Up, UP_LOCK_WAIT).await? else {
        return Err(Failure::runtime(format!(
            "another `shop up` has been starting a stack in `{}` for {}s; wait for it, or stop it",
            dir.root.display(),
            UP_LOCK_WAIT.as_secs()
        )));
    };
    if let Some(control) = Control::connect(&dir) {
        // Idempotent: the running supervisor starts only what is not running. The lock is held
        // until the stack is reported: a `down` meanwhile waits for this `up` to finish rather
        // than stop the stack under it, so what `up` reports is what runs.
        control.up(&Names { services: args.services.clone(), no_deps: args.no_deps, timeout_ms: None }).await?;
        let code = watch(ctx, &Source::Remote(control), &args, &dir, started).await?;
        drop(starting);
        if !args.detach {
            errln!(
                "the stack runs in the background (pid in `{}`); following its logs, `shop down` stops it",
                dir.root.display()
            );
            super::logs::follow(&dir, &[], current_offsets(&dir), &log_style(&dir)).await;
        }
        return Ok(code);
    }

    if args.detach {
        crate::orchestrator::ports::check_stack(&stack).map_err(Failure::runtime)?;
        let control = spawn_supervisor(ctx, &dir, &args).await?;
        drop(starting);
        return watch(ctx, &Source::Remote(control), &args, &dir, started).await;
    }

    let running = daemon::launch(stack, dir.clone(), &args.services, args.no_deps).await?;
    drop(starting);
    let offsets = current_offsets(&dir);
    let code = watch(ctx, &Source::Local(running.sup.clone()), &args, &dir, started).await?;
    if !ctx.quiet {
        errln!("streaming logs; Ctrl-C stops the stack");
    }
    let sup = running.sup.clone();
    let style = log_style(&dir);
    tokio::select! {
        _ = super::logs::follow(&dir, &[], offsets, &style) => {}
        _ = sup.shutdown.notified() => {}
    }
    // First Ctrl-C (which ended `follow`): stop gracefully; a second one kills.
    errln!("stopping the stack (Ctrl-C again to kill at once)");
    let graceful = sup.down(args.timeout);
    tokio::select! {
        _ = graceful => {}
        _ = tokio::signal::ctrl_c() => {
            errln!("killing");
            sup.kill_all();
        }
    }
    dir.remove_record();
    Ok(code)
}

/// Starts `shop supervise` detached from this terminal (own session) and waits for it to
/// serve its control API.
/// `dir` exists already: [`run`] created it to take its `up` lock.
async fn spawn_supervisor(ctx: &Context, dir: &StateDir, args: &Args) -> anyhow::Result<Control> {
    let log_path = dir.log("supervisor");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--file").arg(&ctx.file).arg("--state-dir").arg(&dir.root).arg("supervise");
    if args.no_deps {
        cmd.arg("--no-deps");
    }
    cmd.args(&args.services).stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from this terminal so
    // closing the terminal or a Ctrl-C here does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start the supervisor: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(control) = Control::connect(dir).filter(|c| c.record.pid == child.id()) {
            // Reap it later without blocking: it lives on after this command returns.
            std::thread::spawn(move || child.wait());
            return Ok(control);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = crate::orchestrator::supervisor::tail_lines(&log_path, 5).join("\n  ");
            let code = if status.code() == Some(exit::USAGE) { exit::USAGE } else { exit::RUNTIME };
            return Err(Failure {
                code,
                message: format!(
                    "the supervisor exited at start ({status}); its log `{}` ends:\n  {tail}",
                    log_path.display()
                ),
            }
            .into());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the supervisor did not start within 10s; see `{}`", log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Shows progress until start-up ends (or `--wait-timeout`), prints the table, and reports
/// each failed or skipped service. Returns the exit code.
async fn watch(ctx: &Context, source: &Source, args: &Args, dir: &StateDir, started: Instant) -> anyhow::Result<i32> {
    let progress = Progress::new(ctx.quiet);
    let deadline = started + args.wait_timeout;
    let mut timed_out = false;
    let status = loop {
        let status = source.status().await?;
        progress.update(&status.rows);
        if !status.starting {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break status;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    progress.finish();
    let rows: Vec<PsRow> = status.rows.into_iter().filter(|r| r.state != InstanceState::Pending).collect();
    // With services named, one the user stopped and did not name stays stopped: not an error.
    let left_stopped = |r: &PsRow| !args.services.is_empty() && r.state == InstanceState::Stopped;
    let bad: Vec<&PsRow> = rows.iter().filter(|r| r.state != InstanceState::Healthy && !left_stopped(r)).collect();
    if ctx.json {
        output::print_json(&rows);
    } else {
        outln!("{}", output::ps_table(&rows).trim_fmt());
    }
    if !ctx.quiet && bad.is_empty() {
        errln!("{} instances healthy in {} ms", rows.len(), started.elapsed().as_millis());
    }
    for r in &bad {
        match r.state {
            InstanceState::Skipped => {
                errln!("error: service `{}` was not started: {}", r.instance, r.detail.clone().unwrap_or_default())
            }
            InstanceState::Failed | InstanceState::Crashed => {
                errln!("error: service `{}` failed: {}", r.instance, r.detail.clone().unwrap_or_default());
                let tail = crate::orchestrator::supervisor::tail_lines(&dir.log(&r.instance), 10);
                if !tail.is_empty() {
                    errln!("  last lines of `{}`:", dir.log(&r.instance).display());
                    for line in tail {
                        errln!("    {}", super::logs::readable(&line, false));
                    }
                }
            }
            state if timed_out => {
                errln!("error: service `{}` is not healthy after {:?} (still {state})", r.instance, args.wait_timeout)
            }
            state => errln!("error: service `{}` is {state}", r.instance),
        }
    }
    Ok(if bad.is_empty() { exit::OK } else { exit::RUNTIME })
}

fn current_offsets(dir: &StateDir) -> BTreeMap<String, u64> {
    super::logs::log_files(dir, &[])
        .into_iter()
        .map(|(name, path)| (name, std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)))
        .collect()
}

fn log_style(dir: &StateDir) -> super::logs::Style {
    super::logs::Style::new(&super::logs::log_files(dir, &[]), output::color_stdout(), false)
}

/// One progress line per instance on stderr (a spinner on a terminal, plain lines otherwise).
struct Progress {
    multi: MultiProgress,
    bars: std::sync::Mutex<HashMap<String, (ProgressBar, String)>>,
    tty: bool,
    quiet: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let target = if tty && !quiet { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Progress { multi: MultiProgress::with_draw_target(target), bars: Default::default(), tty, quiet }
    }

    fn update(&self, rows: &[PsRow]) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        for r in rows.iter().filter(|r| r.state != InstanceState::Pending) {
            let label = match r.state {
                InstanceState::Starting if r.address.is_some() => "waiting for health".to_string(),
                InstanceState::Starting => "starting".to_string(),
                InstanceState::Healthy => format!("healthy ({})", r.address.clone().unwrap_or_default()),
                other => format!("{other}{}", r.detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()),
            };
            let entry = bars.entry(r.instance.clone()).or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:<16} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(r.instance.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                (bar, String::new())
            });
            if entry.1 != label {
                if !self.tty && !self.quiet {
                    errln!("{:<16} {label}", r.instance);
                }
                entry.0.set_message(label.clone());
                if matches!(
                    r.state,
                    InstanceState::Healthy | InstanceState::Failed | InstanceState::Skipped | InstanceState::Crashed
                ) {
                    entry.0.finish();
                }
                entry.1 = label;
            }
        }
    }

    fn finish(&self) {
        for (bar, _) in self.bars.lock().unwrap_or_else(|p| p.into_inner()).values() {
            bar.finish();
        }
    }
}

/// `shop supervise`: the background supervisor that `up -d` starts.
pub async fn supervise(ctx: &Context, services: Vec<String>, no_deps: bool) -> anyhow::Result<i32> {
    let stack = ctx.stack()?;
    let dir = ctx.state_dir();
    if let Some(other) = dir.live_supervisor().filter(|r| r.pid != std::process::id() && process_alive(r.pid)) {
        anyhow::bail!("a supervisor (pid {}) already runs this stack", other.pid);
    }
    let running = daemon::launch(stack, dir, &services, no_deps).await?;
    running.serve_until_down(crate::plumbing::config::STOP_GRACE).await;
    Ok(exit::OK)
}
