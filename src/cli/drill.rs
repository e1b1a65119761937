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
use crate::drill::run::{self, check_targets, Setup};
use crate::drill::spec::{Drill, SpecError};
use crate::orchestrator::control::Control;
use crate::traffic::{Gateway, LoadPlan};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The drill file (see fixtures/drills/)
    // Its own id: as `file` it would be taken for the global `--file` (the stack file).
    #[arg(id = "drill_file", value_name = "FILE")]
    pub file: PathBuf,
    /// Makes fault percentages and jitter reproducible
    #[arg(long)]
    pub seed: Option<u64>,
}

/// How long the gateway may hold an order before answering 202, as `shop load` by default.
const ORDER_WAIT: Duration = Duration::from_secs(10);

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let drill = read(&args.file)?;
    let stack = ctx.stack()?;
    let dir = ctx.state_dir();
    let control = Control::require(&dir)?;
    let rows = control.status().await?.rows;
    check_targets(&drill, &rows, &args.file)?;
    let dbs = ctx.databases(&stack)?;
    let secret = dir.existing_secret().unwrap_or_default();
    let load = plan(ctx, &drill).await?;
    let setup = Setup { drill, seed: args.seed, control, rows, dbs, secret, load, quiet: ctx.quiet };
    let report = run::run(setup).await?;
    if ctx.json {
        output::print_json(&report);
    } else {
        print!("{}", render(&report, output::table, output::color_stdout()));
    }
    Ok(if report.ok { exit::OK } else { exit::RUNTIME })
}

/// The drill file; every problem is a usage error. A single problem is the error line itself;
/// several are printed one per line above a summary, as a stack file's are.
fn read(file: &std::path::Path) -> anyhow::Result<Drill> {
    Drill::load(file).map_err(|e| match e {
        SpecError::Unreadable { .. } => Failure::usage(e.to_string()),
        SpecError::Invalid(e) if e.problems.len() == 1 => Failure::usage(e.to_string()),
        SpecError::Invalid(e) => {
            eprintln!("{e}");
            Failure::usage(e.summary())
        }
    })
}

/// The drill's `load:` as the engine's plan, against the running stack's gateway.
async fn plan(ctx: &Context, drill: &Drill) -> anyhow::Result<LoadPlan> {
    let target = Target::resolve(ctx, &GatewayArgs { gateway: None }).await?;
    let users: Vec<&str> = drill.load.users.iter().map(String::as_str).collect();
    let spec = &drill.load;
    Ok(LoadPlan {
        gateway: Gateway::new(&target.gateway),
        callers: super::load::callers(&target, &users)?,
        orders: spec.orders,
        concurrency: spec.concurrency,
        rate: spec.rate,
        duration: None,
        items: spec.items.clone(),
        weights: Default::default(),
        wait: ORDER_WAIT,
        record: true,
        progress: super::load::progress_bar(spec.orders, ctx.quiet),
    })
}
