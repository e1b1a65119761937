//! `shop chaos`: break a running stack on purpose. Faults take effect at once and end by
//! themselves after `--for`; `chaos list` shows them and `chaos clear` ends them.

use std::time::Duration;

use super::context::Context;
use super::{exit, output};
use crate::error::Failure;
use crate::orchestrator::protocol::{ChaosAction, ChaosRequest, FaultRow};
use crate::orchestrator::proxy::toxic::{duration_ms, listed, parse_rate, parse_size};
use crate::orchestrator::proxy::{Direction, Toxic, ToxicKind, ToxicSpec};
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
        #[arg(long = "for", value_parser = parse_for, allow_hyphen_values = true)]
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
        #[arg(long = "for", value_parser = parse_for, allow_hyphen_values = true)]
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
        #[arg(value_parser = parse_duration, allow_hyphen_values = true)]
        delay: Duration,
        /// Up to this much more or less, at random (e.g. 50ms)
        #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
        jitter: Option<Duration>,
        /// Share of requests delayed, 0 to 100 (e.g. 50 or 50%)
        #[arg(long, default_value_t = 100.0, value_parser = parse_share, allow_hyphen_values = true)]
        percent: f64,
        /// End the fault by itself after this long (e.g. 30s) [default: until `chaos clear`]
        #[arg(long = "for", value_parser = parse_for, allow_hyphen_values = true)]
        for_: Option<Duration>,
        /// Makes percentages and jitter reproducible
        #[arg(long, allow_hyphen_values = true)]
        seed: Option<u64>,
    },
    /// Answer a share of a service's requests with an error status
    Errors {
        /// A service (all its instances) or one instance (e.g. order-2)
        target: String,
        /// The HTTP status the failing requests get
        #[arg(long, default_value_t = 503, allow_hyphen_values = true)]
        status: u16,
        /// Share of requests that fail, 0 to 100 (e.g. 50 or 50%)
        #[arg(long, default_value_t = 100.0, value_parser = parse_share, allow_hyphen_values = true)]
        percent: f64,
        /// End the fault by itself after this long (e.g. 30s) [default: until `chaos clear`]
        #[arg(long = "for", value_parser = parse_for, allow_hyphen_values = true)]
        for_: Option<Duration>,
        /// Makes percentages reproducible
        #[arg(long, allow_hyphen_values = true)]
        seed: Option<u64>,
    },
    /// Cut the wire between A and B both ways: calls hang until the caller's timeout
    Partition {
        /// One side: a service or one instance
        a: String,
        /// The other side: a service or one instance
        b: String,
        /// End the fault by itself after this long (e.g. 30s) [default: until `chaos clear`]
        #[arg(long = "for", value_parser = parse_for, allow_hyphen_values = true)]
        for_: Option<Duration>,
        /// Refuse the calls at once instead of letting them hang (the callers' client fails them)
        #[arg(long)]
        refuse: bool,
    },
    /// Break the wire in front of a service with a TCP proxy and a toxic (SPEC section 13)
    Net(NetArgs),
    /// The active faults
    List,
    /// Remove faults (of one service, or all) and restart what chaos stopped
    Clear {
        /// Only this service's or instance's faults [default: all]
        target: Option<String>,
    },
    /// Run a scripted drill (load, a timeline of faults, expectations) and report
    Drill(super::drill::Args),
    /// Random faults from a seed on the running stack; the timeline is printed first
    Monkey(super::drill::MonkeyArgs),
}

/// `shop chaos net TARGET TOXIC [PARAMS]`. Durations, rates and sizes accept no sign, so a
/// negative value is named as such rather than taken for a flag.
#[derive(clap::Args, Debug)]
pub struct NetArgs {
    /// The service (all its instances) or one instance whose callers go through the proxy
    target: String,
    /// The toxic: latency, bandwidth, slow-close, blackhole, reset, slicer or limit-data
    toxic: ToxicKind,
    /// latency, slow-close, slicer: how long
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    delay: Option<Duration>,
    /// latency: ± this much at random
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    jitter: Option<Duration>,
    /// bandwidth: kilobytes per second (10, 10KB/s, 500B/s)
    #[arg(long, value_parser = parse_rate, allow_hyphen_values = true)]
    rate: Option<u64>,
    /// blackhole: close the connection after this long (default: hang)
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    close_after: Option<Duration>,
    /// reset: how long after the connection opens
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    after: Option<Duration>,
    /// slicer: slice size (bytes, or 1KB)
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    size: Option<u64>,
    /// slicer: ± this many bytes per slice
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    variation: Option<u64>,
    /// limit-data: close after this many bytes (512, 50KB)
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    bytes: Option<u64>,
    /// up: request bytes; down: response bytes
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    direction: Direction,
    /// Share of connections affected, 0 to 100 (e.g. 50 or 50%)
    #[arg(long, default_value_t = 100.0, value_parser = parse_share, allow_hyphen_values = true)]
    toxicity: f64,
    /// Only calls from this service go through the proxy (default: every caller)
    #[arg(long)]
    from: Option<String>,
    /// End the fault after this long (e.g. 30s); `chaos clear` ends it sooner
    #[arg(long = "for", value_parser = parse_for, allow_hyphen_values = true)]
    for_: Option<Duration>,
    /// Makes toxicity and jitter reproducible
    #[arg(long, allow_hyphen_values = true)]
    seed: Option<u64>,
}

impl NetArgs {
    /// The toxic with its parameters; a missing required one is named with an example.
    fn toxic(&self) -> Result<Toxic, String> {
        let need = |what: &str, example: &str| {
            format!("`{}` needs {what}, e.g. shop chaos net {} {} {example}", self.toxic, self.target, self.toxic)
        };
        let ms = |d: Option<Duration>| d.map(duration_ms);
        let given: Vec<&'static str> = [
            ("delay", self.delay.is_some()),
            ("jitter", self.jitter.is_some()),
            ("rate", self.rate.is_some()),
            ("close-after", self.close_after.is_some()),
            ("after", self.after.is_some()),
            ("size", self.size.is_some()),
            ("variation", self.variation.is_some()),
            ("bytes", self.bytes.is_some()),
        ]
        .into_iter()
        .filter_map(|(param, set)| set.then_some(param))
        .collect();
        if let Some((param, owners)) = self.toxic.stray(&given) {
            let takes: Vec<String> = self.toxic.params().iter().map(|p| format!("--{p}")).collect();
            return Err(format!(
                "--{param} belongs to a {} toxic, not to `{}`, which takes {}",
                ToxicKind::either(&owners),
                self.toxic,
                listed(&takes, "and")
            ));
        }
        Ok(match self.toxic {
            ToxicKind::Latency => Toxic::Latency {
                delay_ms: ms(self.delay).ok_or_else(|| need("--delay", "--delay 200ms"))?,
                jitter_ms: ms(self.jitter).unwrap_or(0),
            },
            ToxicKind::Bandwidth => {
                Toxic::Bandwidth { bytes_per_s: self.rate.ok_or_else(|| need("--rate (KB/s)", "--rate 10"))? }
            }
            ToxicKind::SlowClose => {
                Toxic::SlowClose { delay_ms: ms(self.delay).ok_or_else(|| need("--delay", "--delay 1s"))? }
            }
            ToxicKind::Blackhole => Toxic::Blackhole { close_after_ms: ms(self.close_after) },
            ToxicKind::Reset => Toxic::Reset { after_ms: ms(self.after).unwrap_or(0) },
            ToxicKind::Slicer => Toxic::Slicer {
                size: self.size.ok_or_else(|| need("--size", "--size 64 --delay 10ms"))?,
                variation: self.variation.unwrap_or(0),
                delay_ms: ms(self.delay).unwrap_or(0),
            },
            ToxicKind::LimitData => {
                Toxic::LimitData { bytes: self.bytes.ok_or_else(|| need("--bytes", "--bytes 1000"))? }
            }
        })
    }
}

/// `--for`: a fault that would end as it starts is a slip of the keyboard, not a fault.
fn parse_for(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!(
            "`{s}` would end the fault as it starts; write e.g. 30s, or leave --for out to keep it until `chaos clear`"
        )),
        d => Ok(d),
    }
}

/// `--percent` and `--toxicity`: a share of requests or connections, written `50` or `50%`.
/// The range (0 to 100) is the request's own check, with or without a stack.
fn parse_share(s: &str) -> Result<f64, String> {
    let number = s.trim().strip_suffix('%').unwrap_or(s.trim());
    number
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("`{s}` is not a share; write a percentage from 0 to 100, e.g. 50 or 50%"))
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(duration_ms)
}

pub async fn run(ctx: &Context, command: ChaosCommand) -> anyhow::Result<i32> {
    if let ChaosCommand::Drill(args) = command {
        return super::drill::run(ctx, args).await;
    }
    if let ChaosCommand::Monkey(args) = command {
        return super::drill::monkey(ctx, args).await;
    }
    // Bad flags are usage errors whether or not a stack runs: the request is built first.
    let request = match command {
        ChaosCommand::List => {
            let rows = ctx.control()?.chaos_list().await?;
            print_rows(ctx, &rows);
            return Ok(exit::OK);
        }
        ChaosCommand::Clear { target } => {
            let control = ctx.control()?;
            let before = control.chaos_list().await?;
            let rows = control.chaos_clear(target.clone()).await?;
            if ctx.json {
                print_rows(ctx, &rows);
                return Ok(exit::OK);
            }
            // One line says what happened; the table follows only if faults elsewhere remain.
            let on = target.map(|t| format!(" on `{t}`")).unwrap_or_default();
            // Counted by what is gone, not by the rows left: a service's fault cleared for one
            // replica is still a row, of the replicas it stays on.
            let same =
                |a: &FaultRow, b: &FaultRow| a.service == b.service && a.fault == b.fault && a.params == b.params;
            let cleared = before.iter().filter(|b| !rows.iter().any(|r| same(b, r))).count();
            if !ctx.quiet {
                match cleared {
                    0 => errln!("no active faults{on}; nothing to clear"),
                    1 => errln!("cleared 1 fault{on}"),
                    n => errln!("cleared {n} faults{on}"),
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
        ChaosCommand::Partition { a, b, for_, refuse } => ChaosRequest {
            action: ChaosAction::Partition,
            target: a,
            peer: Some(b),
            for_ms: ms(for_),
            refuse,
            ..Default::default()
        },
        ChaosCommand::Net(args) => {
            let toxic = args.toxic().map_err(Failure::usage)?;
            ChaosRequest {
                action: ChaosAction::Net,
                target: args.target,
                for_ms: ms(args.for_),
                seed: args.seed,
                from: args.from,
                net: Some(ToxicSpec { toxic, direction: args.direction, toxicity: args.toxicity }),
                ..Default::default()
            }
        }
        ChaosCommand::Drill(_) | ChaosCommand::Monkey(_) => unreachable!("handled above"),
    };
    request.check().map_err(Failure::usage)?;
    let rows = ctx.control()?.chaos(&request).await?;
    if !ctx.quiet && !ctx.json {
        errln!("{} {}: done", request.action, request.target);
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
        outln!("no active faults");
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
    outln!("{}", t.trim_fmt());
}
