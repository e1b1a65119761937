//! `shop smoke`: the CI check (being written).

use super::context::Context;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub async fn run(_ctx: &Context, _args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("`shop smoke` is not available yet")
}
