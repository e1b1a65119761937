//! `shop load`: order traffic against the gateway, closed loop or open loop (`--rate`), with a
//! progress bar and a closing report of throughput, latency percentiles, outcome counts and
//! start rates, checked against `--threshold`s (SPEC sections 3 and 14).
//!
//! The engine is [`crate::traffic`]; this command turns flags into its [`LoadPlan`], drives it
//! until it ends or Ctrl-C stops it, and renders its [`Summary`] and threshold results.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tokio::signal::unix::{signal, SignalKind};

use super::context::Context;
use super::target::{GatewayArgs, Target};
use super::{exit, output, Failure};
use crate::plumbing::time::parse_duration;
use crate::traffic::threshold::{evaluate_all, Measures, Threshold, ThresholdResult};
use crate::traffic::workload::{parse_users, parse_weighted_item, split_items};
use crate::traffic::{Load, LoadError, LoadPlan, Summary, Weights, MAX_CONCURRENCY, OPEN_LOOP_CONCURRENCY, RATES};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many orders to place
    #[arg(long, default_value_t = 1000, allow_hyphen_values = true)]
    pub orders: u64,
    /// Closed loop: how many orders are in flight at once (default 8). With --rate: the cap on
    /// orders in flight (default 1000); an order due while the cap is reached is dropped
    #[arg(short = 'c', long, allow_hyphen_values = true)]
    pub concurrency: Option<u64>,
    /// Open loop: start order n at start + n/RATE whatever earlier orders did (e.g. 200 or
    /// 200/s); latency is then measured from the scheduled start
    #[arg(long, value_parser = parse_rate, allow_hyphen_values = true)]
    pub rate: Option<f64>,
    /// Stop starting new orders after this long (e.g. 30s); in-flight orders still finish
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Fixture users who place the orders, in turn, or weighted: alice:70,bob:20,dave:10
    #[arg(long, value_delimiter = ',', default_value = "alice")]
    pub users: Vec<String>,
    /// What each order contains, SKU[:QTY]; repeat for more lines. With weights
    /// (sku-1:1@60 --item sku-2:2@40) each order holds one of them, by weight
    #[arg(long = "item", value_name = "SKU[:QTY][@WEIGHT]", value_parser = parse_weighted_item, default_value = "sku-load:1")]
    pub items: Vec<((String, i64), Option<u32>)>,
    /// Pass/fail check on the report, repeatable (p99<50ms, errors<1%, confirmed>90%,
    /// rate>=95%, dropped==0); any missed prints the threshold table and exits 1
    #[arg(long = "threshold", value_name = "EXPR", value_parser = Threshold::parse)]
    pub thresholds: Vec<Threshold>,
    /// How long the gateway may wait for an order to finish before answering 202 (Prefer: wait)
    #[arg(long, default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub wait: Duration,
    #[command(flatten)]
    pub target: GatewayArgs,
}

/// `200` or `200/s`: orders per second, within [`RATES`].
fn parse_rate(s: &str) -> Result<f64, String> {
    let number = s.trim().strip_suffix("/s").unwrap_or(s.trim());
    match number.trim().parse::<f64>() {
        Ok(r) if RATES.contains(&r) => Ok(r),
        Ok(r) if r.is_finite() && r > 0.0 => {
            Err(format!("`{s}` is out of range; a rate is {} to {} orders per second", RATES.start(), RATES.end()))
        }
        _ => Err(format!("`{s}` is not a rate; write orders per second, e.g. 200 or 200/s")),
    }
}

/// The plan the flags ask for; flag mistakes are usage errors, in the flags' own words.
async fn plan(ctx: &Context, args: &Args) -> anyhow::Result<LoadPlan> {
    if args.orders == 0 {
        return Err(Failure::usage("`--orders` must be at least 1"));
    }
    if let Some(t) = args.thresholds.iter().find(|t| t.needs_target_rate() && args.rate.is_none()) {
        return Err(Failure::usage(format!(
            "`{t}` compares with the target rate, which only an open loop has: add --rate, or write orders/s (rate>=200)"
        )));
    }
    let concurrency = args.concurrency.unwrap_or(if args.rate.is_some() { OPEN_LOOP_CONCURRENCY } else { 8 });
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(Failure::usage(format!(
            "`--concurrency` must be between 1 and {MAX_CONCURRENCY}, not {concurrency}"
        )));
    }
    if args.duration.is_some_and(|d| d.is_zero()) {
        return Err(Failure::usage("`--duration` must be longer than 0s, e.g. 30s"));
    }
    let (users, user_weights) = parse_users(&args.users).map_err(|e| Failure::usage(format!("`--users`: {e}")))?;
    if users.is_empty() {
        return Err(Failure::usage("`--users` names no user; give fixture users, e.g. --users alice,bob"));
    }
    let (items, item_weights) =
        split_items(args.items.clone()).map_err(|e| Failure::usage(format!("`--item`: {e}")))?;
    let target = Target::resolve(ctx, &args.target).await?;
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let callers = callers(&target, &users)?;
    Ok(LoadPlan {
        gateways: target.balanced(),
        callers,
        orders: args.orders,
        concurrency,
        rate: args.rate,
        duration: args.duration,
        items,
        weights: Weights { users: user_weights, items: item_weights },
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
                    errln!("stopping: waiting for the orders in flight (Ctrl-C again to quit at once)")
                });
            }
        }
    }
    let summary = load.finish()?.summary;
    let results = evaluate_all(&args.thresholds, &Measures::from(&summary));
    if ctx.json {
        output::print_json(&Json { summary: &summary, thresholds: &results });
    } else {
        outln!("{}", summary_table(&summary).trim_fmt());
        if !results.is_empty() {
            outln!();
            outln!("{}", threshold_table(&results).trim_fmt());
        }
    }
    if let (true, Some(target)) = (summary.rate_below_target, summary.target_rate_per_s) {
        errln!(
            "warning: the achieved start rate {:.1} orders/s is below 95% of the target {target:.1} orders/s \
             ({} orders dropped at the concurrency cap); the load asked for was not offered",
            summary.achieved_rate_per_s,
            summary.dropped
        );
    }
    if summary.orders > 0 && summary.errors == summary.orders {
        let kinds: Vec<String> = summary.errors_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        return Err(Failure::runtime(format!(
            "every order failed with an error ({}); check the stack with `shop ps` and `shop logs gateway`",
            kinds.join(", ")
        )));
    }
    let missed: Vec<&str> = results.iter().filter(|r| !r.pass).map(|r| r.expression.as_str()).collect();
    if !missed.is_empty() {
        return Err(Failure::runtime(format!(
            "{} of {} thresholds missed: {}",
            missed.len(),
            results.len(),
            missed.join(", ")
        )));
    }
    Ok(exit::OK)
}

/// `--json`: the summary's fields, and the threshold results when any were asked for.
#[derive(serde::Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    thresholds: &'a [ThresholdResult],
}

/// THRESHOLD / OBSERVED / RESULT, one row per `--threshold` in the order given.
pub fn threshold_table(results: &[ThresholdResult]) -> comfy_table::Table {
    let mut t = output::table(&["THRESHOLD", "OBSERVED", "RESULT"]);
    for r in results {
        t.add_row(vec![r.expression.clone(), r.observed_text(), if r.pass { "pass" } else { "FAIL" }.to_string()]);
    }
    t
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
