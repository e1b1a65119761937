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
    let origin = crate::plumbing::logging::Origin {
        service: args.service.name().into(),
        instance: args.serve.instance.clone().unwrap_or_else(|| args.service.name().into()),
    };
    crate::plumbing::logging::init(verbose, quiet, Some(origin));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(services::serve(args.service, args.serve))?;
    Ok(super::exit::OK)
}
