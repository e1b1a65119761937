//! `shop chaos`: break a running stack on purpose. Faults take effect at once and end by
//! themselves after `--for`; `chaos list` shows them and `chaos clear` ends them.

use std::time::Duration;

use super::context::Context;
use super::{exit, output};
use crate::orchestrator::protocol::{ChaosAction, ChaosRequest, FaultRow};
use crate::plumbing::time::parse_duration;

#[derive(clap::Subcommand, Debug)]
pub enum ChaosCommand {
    /// Kill a service (all instances) or one instance; it stays down until --for or `chaos clear`
    Kill {
        /// A service (all its instances) or one instance (e.g. order-2)
        target: String,
        /// KILL or TERM
        #[arg(long, default_value = "KILL")]
        signal: String,
        /// End the fault by itself after this long (e.g. 30s) [default: until `chaos clear`]
        #[arg(long = "for", value_parser = parse_duration)]
        for_: Option<Duration>,
        /// Let the restart policy bring it back, as after a crash
        #[arg(long)]
        restart: bool,
    },
    /// SIGSTOP: the process hangs with its port open
    Pause {
        /// A service (all its instances) or one instance (e.g. order-2)
        target: String,
        /// End the fault by itself after this long (e.g. 30s) [default: until `chaos clear`]
        #[arg(long = "for", value_parser = parse_duration)]
        for_: Option<Duration>,
    },
    /// SIGCONT a paused service
    Resume {
        /// A service (all its instances) or one instance (e.g. order-2)
        target: String,
    },
    /// Delay the requests a service receives
    Latency {
        /// A service (all its instances) or one instance (e.g. order-2)
        target: String,
        /// How long each affected request is held (e.g. 200ms)
        #[arg(value_parser = parse_duration)]
        delay: Duration,
        /// Up to this much more or less, at random (e.g. 50ms)
        #[arg(long, value_parser = parse_duration)]
        jitter: Option<Duration>,
        /// Share of requests delayed
        #[arg(long, default_value_t = 100.0)]
        percent: f64,
        /// End the fault by itself after this long (e.g. 30s) [default: until `chaos clear`]
        #[arg(long = "for", value_parser = parse_duration)]
        for_: Option<Duration>,
        /// Makes percentages and jitter reproducible
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Answer a share of a service's requests with an error status
    Errors {
        /// A service (all its instances) or one instance (e.g. order-2)
        target: String,
        /// The HTTP status the failing requests get
        #[arg(long, default_value_t = 503)]
        status: u16,
        /// Share of requests that fail
        #[arg(long, default_value_t = 100.0)]
        percent: f64,
        /// End the fault by itself after this long (e.g. 30s) [default: until `chaos clear`]
        #[arg(long = "for", value_parser = parse_duration)]
        for_: Option<Duration>,
        /// Makes percentages reproducible
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Calls between A and B fail as a network partition would, both ways
    Partition {
        /// One side: a service or one instance
        a: String,
        /// The other side: a service or one instance
        b: String,
        /// End the fault by itself after this long (e.g. 30s) [default: until `chaos clear`]
        #[arg(long = "for", value_parser = parse_duration)]
        for_: Option<Duration>,
    },
    /// The active faults
    List,
    /// Remove faults (of one service, or all) and restart what chaos stopped
    Clear {
        /// Only this service's or instance's faults [default: all]
        target: Option<String>,
    },
    /// Run a scripted drill (load, a timeline of faults, expectations) and report
    Drill(super::drill::Args),
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

pub async fn run(ctx: &Context, command: ChaosCommand) -> anyhow::Result<i32> {
    if let ChaosCommand::Drill(args) = command {
        return super::drill::run(ctx, args).await;
    }
    let control = ctx.control()?;
    let request = match command {
        ChaosCommand::List => {
            let rows = control.chaos_list().await?;
            print_rows(ctx, &rows);
            return Ok(exit::OK);
        }
        ChaosCommand::Clear { target } => {
            let before = control.chaos_list().await?.len();
            let rows = control.chaos_clear(target.clone()).await?;
            if ctx.json {
                print_rows(ctx, &rows);
                return Ok(exit::OK);
            }
            // One line says what happened; the table follows only if faults elsewhere remain.
            let on = target.map(|t| format!(" on `{t}`")).unwrap_or_default();
            let cleared = before.saturating_sub(rows.len());
            if !ctx.quiet {
                match cleared {
                    0 => eprintln!("no active faults{on}; nothing to clear"),
                    1 => eprintln!("cleared 1 fault{on}"),
                    n => eprintln!("cleared {n} faults{on}"),
                }
            }
            if !rows.is_empty() {
                print_rows(ctx, &rows);
            }
            return Ok(exit::OK);
        }
        ChaosCommand::Kill { target, signal, for_, restart } => ChaosRequest {
            action: ChaosAction::Kill,
            target,
            signal: Some(signal),
            for_ms: ms(for_),
            restart,
            ..Default::default()
        },
        ChaosCommand::Pause { target, for_ } => {
            ChaosRequest { action: ChaosAction::Pause, target, for_ms: ms(for_), ..Default::default() }
        }
        ChaosCommand::Resume { target } => ChaosRequest { action: ChaosAction::Resume, target, ..Default::default() },
        ChaosCommand::Latency { target, delay, jitter, percent, for_, seed } => ChaosRequest {
            action: ChaosAction::Latency,
            target,
            delay_ms: Some(delay.as_millis() as u64),
            jitter_ms: ms(jitter),
            percent: Some(percent),
            for_ms: ms(for_),
            seed,
            ..Default::default()
        },
        ChaosCommand::Errors { target, status, percent, for_, seed } => ChaosRequest {
            action: ChaosAction::Errors,
            target,
            status: Some(status),
            percent: Some(percent),
            for_ms: ms(for_),
            seed,
            ..Default::default()
        },
        ChaosCommand::Partition { a, b, for_ } => ChaosRequest {
            action: ChaosAction::Partition,
            target: a,
            peer: Some(b),
            for_ms: ms(for_),
            ..Default::default()
        },
        ChaosCommand::Drill(_) => unreachable!("handled above"),
    };
    let rows = control.chaos(&request).await?;
    if !ctx.quiet && !ctx.json {
        eprintln!("{} {}: done", request.action, request.target);
    }
    print_rows(ctx, &rows);
    Ok(exit::OK)
}

fn print_rows(ctx: &Context, rows: &[FaultRow]) {
    if ctx.json {
        output::print_json(&rows);
        return;
    }
    if rows.is_empty() {
        println!("no active faults");
        return;
    }
    let mut t = output::table(&["SERVICE", "FAULT", "PARAMS", "EXPIRES IN"]);
    for r in rows {
        let params = match &r.params {
            serde_json::Value::Object(m) if !m.is_empty() => {
                m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            }
            _ => "-".into(),
        };
        let expires = r.expires_in_s.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "until cleared".into());
        t.add_row(vec![r.service.clone(), r.fault.clone(), params, expires]);
    }
    println!("{t}");
}
