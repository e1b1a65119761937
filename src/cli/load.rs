//! `shop load`: order traffic against the gateway (being written).

use super::context::Context;
use super::target::GatewayArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: GatewayArgs,
}

pub async fn run(_ctx: &Context, _args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("`shop load` is not available yet")
}
