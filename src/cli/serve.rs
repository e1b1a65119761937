//! `shop serve SERVICE`: run one service in the foreground.

use crate::plumbing::config::ServeArgs;
use crate::services::{self, Kind};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which service to run
    #[arg(value_enum)]
    pub service: Kind,
    #[command(flatten)]
    pub serve: ServeArgs,
}

pub fn run(args: Args, verbose: u8, quiet: bool) -> anyhow::Result<i32> {
    super::init_logging(verbose, quiet, true);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(services::serve(args.service, args.serve))?;
    Ok(super::exit::OK)
}
