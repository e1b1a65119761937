//! `shop ps` (alias `status`): the running stack's instances.

use super::context::Context;
use super::output;
use crate::orchestrator::control::Control;

pub async fn run(ctx: &Context) -> anyhow::Result<i32> {
    let dir = ctx.state_dir();
    let Some(control) = Control::connect(&dir) else {
        ctx.check_stack_file()?;
        if ctx.json {
            println!("[]");
        } else if !ctx.quiet {
            eprintln!("no stack is running from `{}`; start one with `shop up -d`", dir.root.display());
        }
        return Ok(super::exit::OK);
    };
    let status = control.status().await?;
    output::print_ps(&status.rows, ctx.json);
    Ok(super::exit::OK)
}
