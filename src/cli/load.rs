//! `shop load`: order traffic against the gateway, with a progress bar and a closing report of
//! throughput, latency percentiles and outcome counts (SPEC section 3, "Driving the flow").
//!
//! The engine is [`crate::traffic`]; this command turns flags into its [`LoadPlan`], drives it
//! until it ends or Ctrl-C stops it, and renders its [`Summary`].

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tokio::signal::unix::{signal, SignalKind};

use super::context::Context;
use super::target::{parse_item, GatewayArgs, Target};
use super::{exit, output, Failure};
use crate::plumbing::time::parse_duration;
use crate::traffic::{Gateway, Load, LoadError, LoadPlan, Summary, MAX_CONCURRENCY};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many orders to place
    #[arg(long, default_value_t = 1000)]
    pub orders: u64,
    /// How many orders are in flight at once
    #[arg(short = 'c', long, default_value_t = 8)]
    pub concurrency: u64,
    /// Cap on how many orders start per second, across all workers (e.g. 200 or 200/s)
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Stop starting new orders after this long (e.g. 30s); in-flight orders still finish
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Fixture users who place the orders, in turn
    #[arg(long, value_delimiter = ',', default_value = "alice")]
    pub users: Vec<String>,
    /// What each order contains, SKU[:QTY]; repeat for more lines
    #[arg(long = "item", value_name = "SKU[:QTY]", value_parser = parse_item, default_value = "sku-load:1")]
    pub items: Vec<(String, i64)>,
    /// How long the gateway may wait for an order to finish before answering 202 (Prefer: wait)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
    #[command(flatten)]
    pub target: GatewayArgs,
}

/// `200` or `200/s`: orders per second, more than zero.
fn parse_rate(s: &str) -> Result<f64, String> {
    let number = s.trim().strip_suffix("/s").unwrap_or(s.trim());
    match number.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a rate; write orders per second, e.g. 200 or 200/s")),
    }
}

/// The plan the flags ask for; flag mistakes are usage errors, in the flags' own words.
async fn plan(ctx: &Context, args: &Args) -> anyhow::Result<LoadPlan> {
    if args.orders == 0 {
        return Err(Failure::usage("`--orders` must be at least 1"));
    }
    if !(1..=MAX_CONCURRENCY).contains(&args.concurrency) {
        return Err(Failure::usage(format!(
            "`--concurrency` must be between 1 and {MAX_CONCURRENCY}, not {}",
            args.concurrency
        )));
    }
    if args.duration.is_some_and(|d| d.is_zero()) {
        return Err(Failure::usage("`--duration` must be longer than 0s, e.g. 30s"));
    }
    let users: Vec<&str> = args.users.iter().map(|u| u.trim()).filter(|u| !u.is_empty()).collect();
    if users.is_empty() {
        return Err(Failure::usage("`--users` names no user; give fixture users, e.g. --users alice,bob"));
    }
    let target = Target::resolve(ctx, &args.target).await?;
    let callers = callers(&target, &users)?;
    Ok(LoadPlan {
        gateway: Gateway::new(&target.gateway),
        callers,
        orders: args.orders,
        concurrency: args.concurrency,
        rate: args.rate,
        duration: args.duration,
        items: args.items.clone(),
        wait: args.wait,
        record: false,
        progress: progress_bar(args.orders, ctx.quiet),
    })
}

/// (user, token) of each fixture user; an unknown user is a usage error listing the known ones.
pub(super) fn callers(target: &Target, users: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
    users.iter().map(|user| Ok((user.to_string(), target.token(user)?))).collect()
}

/// Starts the engine; a plan it refuses is the user's mistake (exit 2).
pub(super) fn start(plan: LoadPlan) -> anyhow::Result<Load> {
    Load::start(plan).map_err(|e| match e {
        LoadError::Plan(e) => Failure::usage(e.to_string()),
        other => other.into(),
    })
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let mut load = start(plan(ctx, &args).await?)?;
    // One listener for the whole run, so a Ctrl-C between two polls is not lost.
    let mut interrupts =
        signal(SignalKind::interrupt()).map_err(|e| anyhow::anyhow!("cannot watch for Ctrl-C: {e}"))?;
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = load.join_next() => match joined {
                None => break,
                Some(merged) => merged?,
            },
            Some(()) = interrupts.recv() => {
                if interrupted {
                    load.abort();
                    return Err(Failure::runtime("interrupted; the orders in flight were not waited for"));
                }
                interrupted = true;
                load.stop();
                load.bar().suspend(|| {
                    eprintln!("stopping: waiting for the orders in flight (Ctrl-C again to quit at once)")
                });
            }
        }
    }
    let summary = load.finish()?.summary;
    if ctx.json {
        output::print_json(&summary);
    } else {
        println!("{}", summary_table(&summary));
    }
    if summary.orders > 0 && summary.errors == summary.orders {
        let kinds: Vec<String> = summary.errors_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        return Err(Failure::runtime(format!(
            "every order failed with an error ({}); check the stack with `shop ps` and `shop logs gateway`",
            kinds.join(", ")
        )));
    }
    Ok(exit::OK)
}

/// A bar of orders done with the live rate, on stderr only when it is a terminal and not `-q`.
pub(super) fn progress_bar(len: u64, quiet: bool) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() && !quiet {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} orders  {rate}  {elapsed}")
        .map(|s| {
            s.with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} orders/s", state.per_sec());
            })
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let visible = !target.is_hidden();
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(style);
    if visible {
        // Redraws the elapsed time and rate even while every order is slow.
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    bar
}

pub(super) fn summary_table(s: &Summary) -> comfy_table::Table {
    let mut t = output::table(&["METRIC", "VALUE"]);
    for (name, value) in s.rows() {
        t.add_row(vec![name, value]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_or_without_per_second() {
        assert_eq!(parse_rate("200").unwrap(), 200.0);
        assert_eq!(parse_rate("12.5/s").unwrap(), 12.5);
        for bad in ["0", "-3", "fast", "200/m", "inf", "NaN"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
