//! `shop start | stop | restart SERVICE...`: per-service control of a running stack.

use std::time::Duration;

use super::context::Context;
use super::output;
use crate::orchestrator::protocol::{InstanceState, Names, ServiceAction};
use crate::plumbing::time::parse_duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services (all their instances), or instances (`order-2`: one replica)
    #[arg(required = true)]
    pub services: Vec<String>,
    /// Grace period between SIGTERM and SIGKILL when stopping
    #[arg(long, default_value = crate::plumbing::config::STOP_GRACE_ARG, value_parser = parse_duration, allow_hyphen_values = true)]
    pub timeout: Duration,
}

pub async fn run(ctx: &Context, action: ServiceAction, args: Args) -> anyhow::Result<i32> {
    let control = ctx.control()?;
    let names =
        Names { services: args.services.clone(), no_deps: false, timeout_ms: Some(args.timeout.as_millis() as u64) };
    let wait = args.timeout + Duration::from_secs(60);
    let status = control.service(action, &names, wait).await?;
    let rows: Vec<_> = (status.rows.into_iter())
        .filter(|r| args.services.contains(&r.service) || args.services.contains(&r.instance))
        .collect();
    output::print_ps(&rows, ctx.json);
    // A stop is done whatever state it leaves; a start or restart must end healthy.
    let failed: Vec<_> =
        rows.iter().filter(|r| action != ServiceAction::Stop && r.state != InstanceState::Healthy).collect();
    for r in &failed {
        eprintln!(
            "error: `{}` is {}{}",
            r.instance,
            r.state,
            r.detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
        );
    }
    Ok(if failed.is_empty() { super::exit::OK } else { super::exit::RUNTIME })
}
