//! `shop chaos drill FILE` (being written).

use std::path::PathBuf;

use super::context::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The drill file (see fixtures/drills/)
    pub file: PathBuf,
    /// Makes fault percentages and jitter reproducible
    #[arg(long)]
    pub seed: Option<u64>,
}

pub async fn run(_ctx: &Context, _args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("`shop chaos drill` is not available yet")
}
