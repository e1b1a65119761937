//! `shop start | stop | restart SERVICE...`: per-service control of a running stack.

use std::time::Duration;

use super::context::Context;
use super::output;
use crate::orchestrator::control::Control;
use crate::orchestrator::supervisor::Status;
use crate::plumbing::time::parse_duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services (all their instances)
    #[arg(required = true)]
    pub services: Vec<String>,
    /// Grace period between SIGTERM and SIGKILL when stopping
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `action` is `start`, `stop` or `restart`.
pub async fn run(ctx: &Context, action: &str, args: Args) -> anyhow::Result<i32> {
    let control = Control::require(&ctx.state_dir())?;
    let body = serde_json::json!({"services": args.services, "timeout_ms": args.timeout.as_millis() as u64});
    let wait = args.timeout + Duration::from_secs(60);
    let status: Status = control.post(&format!("/v1/{action}"), body, wait).await?.json().await?;
    let rows: Vec<_> = status.rows.into_iter().filter(|r| args.services.contains(&r.service)).collect();
    output::print_ps(&rows, ctx.json);
    let failed: Vec<_> = rows.iter().filter(|r| action != "stop" && r.state != "healthy").collect();
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
