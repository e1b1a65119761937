//! `shop chaos drill FILE`: a scripted drill (SPEC section 8) against the running stack.
//!
//! The drill itself lives in [`crate::drill`]; this command reads the file (every problem at
//! `FILE:LINE:COL`, exit 2), finds the running stack, its gateway and the users' tokens, runs
//! the drill, and prints its report (exit 1 if an expectation failed).

use std::path::PathBuf;
use std::time::Duration;

use super::context::Context;
use super::target::{GatewayArgs, Target};
use super::{exit, output, Failure};
use crate::drill::report::render;
use crate::drill::run::{self, target_problems, Setup};
use crate::drill::spec::{Drill, SpecError};
use crate::orchestrator::control::Control;
use crate::traffic::LoadPlan;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The drill file (see fixtures/drills/)
    // Its own id: as `file` it would be taken for the global `--file` (the stack file).
    #[arg(id = "drill_file", value_name = "FILE")]
    pub file: PathBuf,
    /// Makes fault percentages and jitter reproducible
    #[arg(long, allow_hyphen_values = true)]
    pub seed: Option<u64>,
    /// Also write the report as JUnit XML (one testcase per probe threshold and expectation)
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write the report as one self-contained HTML page with charts
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also write the journal (the whole report, both timelines) as JSON. `--json FILE` is the
    /// same when the drill file is given too; a bare `--json` prints the report as JSON on stdout
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<PathBuf>,
}

/// How long the gateway may hold an order before answering 202, as `shop load` by default.
const ORDER_WAIT: Duration = Duration::from_secs(10);

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let drill = read(&args.file)?;
    for (path, what) in outputs(&args) {
        if let Some(path) = path {
            output::check_writable(path, what, &[&args.file, &ctx.file])?;
        }
    }
    let stack = ctx.stack()?;
    let dir = ctx.state_dir();
    let control = Control::require(&dir)?;
    let rows = control.status().await?.rows;
    let mut problems = target_problems(&drill, &rows, &stack, &args.file);
    problems.extend(user_problems(&drill, &stack, &args.file)?);
    refuse(problems, &args.file)?;
    let dbs = ctx.databases(&stack)?;
    let secret = dir.existing_secret().unwrap_or_default();
    let load = plan(ctx, &drill).await?;
    let probe = drill.steady_state.as_ref().map(|steady| LoadPlan {
        orders: steady.probe.orders,
        rate: steady.probe.rate,
        duration: None,
        record: false,
        progress: indicatif::ProgressBar::hidden(),
        ..load.clone()
    });
    let kept = drill.clone();
    let setup = Setup { drill, seed: args.seed, control, rows, dbs, secret, load, probe, quiet: ctx.quiet };
    let report = match run::run(setup).await {
        Ok(report) => report,
        Err(e) if run::is_interrupted(&e) => {
            // The files still say what happened: a CI job stopped at its time limit gets a
            // failed JUnit report, not none.
            if let Err(not_written) = write_outputs(&args, &run::interrupted_report(&kept, args.seed)) {
                errln!("error: {not_written:#}");
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    // The report first: a file that cannot be written after all must not take it with it.
    if ctx.json {
        output::print_json(&report);
    } else {
        outln!("{}", render(&report, output::table, output::color_stdout()).trim_end_matches('\n'));
    }
    write_outputs(&args, &report)?;
    if report.verdict == run::INTERRUPTED {
        return Err(run::interrupted());
    }
    Ok(if report.ok { exit::OK } else { exit::RUNTIME })
}

/// The users of the drill's load that the fixtures lack, at the place `load.users` is written.
fn user_problems(
    drill: &Drill,
    stack: &crate::orchestrator::stackfile::Stack,
    file: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    let tokens = super::target::tokens(stack)?;
    let known: Vec<&str> = tokens.iter().map(|(u, _)| u.as_str()).collect();
    let place = crate::plumbing::yaml::Pos::place(file, drill.load.users_at);
    let mut missing: Vec<&String> = drill.load.users.iter().filter(|u| !known.contains(&u.as_str())).collect();
    missing.dedup();
    Ok(missing
        .into_iter()
        .map(|user| format!("{place}: load: no fixture user `{user}`; the fixtures have: {}", known.join(", ")))
        .collect())
}

/// Every problem found, as a usage error: one is the error line itself; several are printed
/// one per line above a summary, as the file's own problems are.
fn refuse(problems: Vec<String>, file: &std::path::Path) -> anyhow::Result<()> {
    match problems.as_slice() {
        [] => Ok(()),
        [one] => Err(Failure::usage(one.clone())),
        many => {
            for p in many {
                errln!("{p}");
            }
            Err(Failure::usage(format!(
                "`{}` names {} things the running stack does not have; fix them and run again",
                file.display(),
                many.len()
            )))
        }
    }
}

/// The report files the flags ask for, with what each holds.
fn outputs(args: &Args) -> [(&Option<PathBuf>, &'static str); 3] {
    [(&args.junit, "JUnit report"), (&args.html, "HTML report"), (&args.json_file, "journal")]
}

/// `--junit`, `--html` and the journal (`--json FILE` or `--json-file FILE`), each written whole.
fn write_outputs(args: &Args, report: &crate::drill::report::DrillReport) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let journal = || {
        serde_json::to_string_pretty(report).map(|mut s| {
            s.push('\n');
            s
        })
    };
    for (path, what) in outputs(args) {
        let Some(path) = path else { continue };
        let text = match what {
            "JUnit report" => crate::drill::junit::drill(report),
            "HTML report" => crate::drill::html::render(report),
            _ => journal().context("cannot encode the journal")?,
        };
        std::fs::write(path, text).with_context(|| format!("cannot write the {what} to `{}`", path.display()))?;
    }
    Ok(())
}

/// The drill file; every problem is a usage error. A single problem is the error line itself;
/// several are printed one per line above a summary, as a stack file's are.
fn read(file: &std::path::Path) -> anyhow::Result<Drill> {
    Drill::load(file).map_err(|e| match e {
        SpecError::Unreadable { .. } => Failure::usage(e.to_string()),
        SpecError::Invalid(e) if e.problems.len() == 1 => Failure::usage(e.to_string()),
        SpecError::Invalid(e) => {
            errln!("{e}");
            Failure::usage(e.summary())
        }
    })
}

/// The drill's `load:` as the engine's plan, against the running stack's gateway.
async fn plan(ctx: &Context, drill: &Drill) -> anyhow::Result<LoadPlan> {
    let target = Target::resolve(ctx, &GatewayArgs { gateway: None }).await?;
    let users: Vec<&str> = drill.load.users.iter().map(String::as_str).collect();
    let spec = &drill.load;
    // The users were judged against the fixtures with the file's other mistakes (`user_problems`).
    let callers = super::load::callers(&target, &users)?;
    Ok(LoadPlan {
        gateways: target.balanced(),
        callers,
        orders: spec.orders,
        concurrency: spec.concurrency,
        rate: spec.rate,
        duration: spec.duration,
        items: spec.items.clone(),
        weights: Default::default(),
        wait: ORDER_WAIT,
        record: true,
        progress: super::load::progress_bar(spec.orders.min(1_000_000_000), ctx.quiet),
    })
}

/// `shop chaos monkey`: the monkey of a drill file, on the running stack without a load.
#[derive(clap::Args, Debug)]
pub struct MonkeyArgs {
    /// How long the monkey runs
    #[arg(long, value_parser = crate::plumbing::time::parse_duration, allow_hyphen_values = true)]
    pub duration: Duration,
    /// The same seed gives the same timeline
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub seed: u64,
    /// Services or instances to break, comma-separated (e.g. payment,inventory)
    #[arg(long, value_delimiter = ',', required = true)]
    pub targets: Vec<String>,
    /// Fault kinds to pick from: kill, pause, latency, errors, partition, net
    #[arg(long, value_delimiter = ',', default_value = "kill,pause")]
    pub faults: Vec<String>,
    /// Mean time between two faults
    #[arg(long, default_value = "4s", value_parser = crate::plumbing::time::parse_duration, allow_hyphen_values = true)]
    pub mean_interval: Duration,
    /// How long each fault lasts [default: the mean interval, at least 1s]
    #[arg(long = "for", value_parser = crate::plumbing::time::parse_duration, allow_hyphen_values = true)]
    pub for_: Option<Duration>,
    /// At most this many faults at once
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    pub max_concurrent: usize,
}

pub async fn monkey(ctx: &Context, args: MonkeyArgs) -> anyhow::Result<i32> {
    use crate::drill::monkey::{describe, Monkey, KINDS};
    let targets: Vec<String> = args.targets.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    if targets.is_empty() {
        return Err(Failure::usage(
            "a monkey with no targets has nothing to break; give e.g. --targets payment,inventory",
        ));
    }
    if let Some(bad) = args.faults.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(Failure::usage(format!(
            "`{bad}` is not a fault a monkey can inject; pick from {}",
            KINDS.join(", ")
        )));
    }
    let zero_for = args.for_.is_some_and(|d| d.is_zero());
    if args.duration.is_zero() || args.mean_interval.is_zero() || args.max_concurrent == 0 || zero_for {
        return Err(Failure::usage("--duration, --mean-interval, --for and --max-concurrent must be above 0"));
    }
    let monkey = Monkey {
        mean_interval: args.mean_interval,
        faults: args.faults.clone(),
        targets,
        max_concurrent: args.max_concurrent,
        seed: args.seed,
        fault_for: args.for_.unwrap_or(args.mean_interval.max(Duration::from_secs(1))),
        targets_at: None,
    };
    let faults = monkey.timeline(args.duration);
    let control = Control::require(&ctx.state_dir())?;
    let rows = control.status().await?.rows;
    let as_drill = Drill {
        name: "monkey".into(),
        load: crate::drill::spec::LoadSpec {
            orders: 1,
            concurrency: 1,
            users: Vec::new(),
            duration: None,
            rate: None,
            items: Vec::new(),
            users_at: None,
        },
        monkey_faults: faults.len(),
        faults: faults.clone(),
        expect: Default::default(),
        steady_state: None,
        halt: Vec::new(),
        monkey: Some(monkey),
    };
    // The targets are judged whether or not the seed drew a fault on them.
    let targets = std::path::Path::new("--targets");
    refuse(target_problems(&as_drill, &rows, &ctx.stack()?, targets), targets)?;
    // The timeline first, on stdout: it is the result a reader reproduces with the seed. With
    // `--json` stdout is the one document at the end, and the timeline goes to stderr.
    let heading = format!(
        "monkey (seed {}): {} faults over {}",
        args.seed,
        faults.len(),
        humantime::format_duration(args.duration)
    );
    let lines = std::iter::once(heading).chain(describe(&faults).into_iter().map(|line| format!("  {line}")));
    for line in lines {
        match ctx.json {
            false => outln!("{line}"),
            true if !ctx.quiet => errln!("{line}"),
            true => {}
        }
    }
    let run = run::monkey(control, faults, args.duration, ctx.quiet).await?;
    let applied = run.faults.iter().filter(|f| f.applied_at_s.is_some()).count();
    if ctx.json {
        output::print_json(&MonkeyJson {
            seed: args.seed,
            duration_s: args.duration.as_secs_f64(),
            applied,
            interrupted: run.interrupted,
            faults: &run.faults,
        });
    }
    if run.interrupted {
        return Err(Failure::runtime("interrupted; the monkey's faults were cleared"));
    }
    Ok(if applied == run.faults.len() { exit::OK } else { exit::RUNTIME })
}

/// `chaos monkey --json`: the timeline drawn from the seed, and what became of each fault.
#[derive(serde::Serialize)]
struct MonkeyJson<'a> {
    seed: u64,
    duration_s: f64,
    /// How many of the faults the supervisor took.
    applied: usize,
    /// Ctrl-C or SIGTERM ended it before its duration; what it applied was cleared.
    interrupted: bool,
    faults: &'a [crate::drill::report::FaultReport],
}
