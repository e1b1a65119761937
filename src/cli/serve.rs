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
        instance: args
            .serve
            .instance
            .as_deref()
            .map_or_else(|| args.service.name().into(), crate::plumbing::config::instance_name),
    };
    crate::plumbing::logging::init(verbose, quiet, Some(origin));
    raise_open_files_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Seven processes with a worker per core each oversubscribe a laptop: the order service and
    // the gateway carry most of the work, the others do as well with one worker and cost fewer
    // context switches (measured: about 7% more orders/s on 2 cores).
    let default = match args.service {
        Kind::Order | Kind::Gateway => None,
        _ => Some(1),
    };
    if let Some(n) = args.serve.tuning.worker_threads.or(default) {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.enable_all().build()?;
    let served = runtime.block_on(services::serve(args.service, args.serve));
    // The server has drained (or, its supervisor gone, given up on) its requests; what may be
    // left are blocking database calls whose callers are gone, possibly waiting out SQLite's busy
    // timeout. Dropping the runtime would wait for them; an exit rolls their transactions back.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    served?;
    Ok(super::exit::OK)
}

/// Raises the soft limit on open files to the hard one: many shells start processes at 1024,
/// which a service with a thousand idle clients would reach.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
