//! The command line: global options, the subcommands, and exit codes (SPEC section 3).

/// `println!` for commands that may host the supervisor in this process (`up` in the
/// foreground, `smoke`): a reader that goes away (`shop up | head`) must not panic it half-way
/// through starting or stopping a stack, as the std macro does on a closed pipe. The line is
/// dropped instead, and the log stream, which does notice, stops the stack as Ctrl-C would.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` for the same commands, for the same reason.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod chaos;
mod context;
mod down;
mod drill;
mod examples;
mod export;
mod file_flag;
mod inspect;
mod journal_flag;
mod load;
mod logs;
mod order;
mod output;
mod ps;
mod serve;
mod service_ctl;
mod smoke;
mod target;
mod top;
mod up;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::orchestrator::protocol::ServiceAction;

pub use crate::error::{exit, Failure};

#[derive(Parser, Debug)]
#[command(
    name = "shop",
    version,
    about = "A local microservices lab: run, drive, break and inspect an e-commerce stack"
)]
pub struct Cli {
    /// The stack file [default: ./stack.yaml, or $SHOP_STACK]
    #[arg(long = "file", global = true, env = "SHOP_STACK")]
    pub file: Option<PathBuf>,
    /// Same as --file, before or after the subcommand (after `shop logs`, -f means follow)
    #[arg(short = 'f', value_name = "FILE", conflicts_with = "file")]
    pub file_short: Option<PathBuf>,
    /// Where the running stack keeps pids, ports, logs and data [default: .shop/ beside the stack file]
    #[arg(long, global = true, env = "SHOP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Machine-readable output on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Less output
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More output (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the stack in dependency order and wait until it is healthy
    Up(up::Args),
    /// Stop the stack in reverse dependency order
    Down(down::Args),
    /// List the stack's instances
    #[command(alias = "status")]
    Ps,
    /// Show the stack's logs
    Logs(logs::Args),
    /// A live dashboard of the running stack
    Top(top::Args),
    /// Start services of a running stack
    Start(service_ctl::Args),
    /// Stop services of a running stack (never counted as a crash)
    Stop(service_ctl::Args),
    /// Restart services of a running stack
    Restart(service_ctl::Args),
    /// Place, get and list orders through the gateway
    #[command(subcommand)]
    Order(order::OrderCommand),
    /// Show what happened: orders, traces, services, registry, stock, invariants
    #[command(subcommand)]
    Inspect(inspect::InspectCommand),
    /// Break the running stack on purpose: kill, pause, latency, errors, partitions, drills
    #[command(subcommand)]
    Chaos(chaos::ChaosCommand),
    /// Generate order traffic and report throughput, latency and outcomes
    Load(load::Args),
    /// Start a throw-away stack, check the happy and failure paths, tear it down
    Smoke(smoke::Args),
    /// Write Kubernetes manifests or a docker compose file for the stack
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell to write completions for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run one service in the foreground
    Serve(serve::Args),
    /// The background supervisor started by `up -d`
    #[command(hide = true)]
    Supervise {
        /// Services to start, with their dependencies [default: all]
        services: Vec<String>,
        /// Start only the named services, not their dependencies
        #[arg(long)]
        no_deps: bool,
    },
}

/// The whole command line as clap sees it, each command's help ending with its examples.
pub fn command() -> clap::Command {
    examples::attach(Cli::command(), "")
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    // `chaos drill FILE --json JOURNAL` names the journal; everywhere else `--json` is the switch.
    let args = journal_flag::rewrite(file_flag::rewrite(std::env::args_os().collect()));
    let cli = match command().try_get_matches_from(args).and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = Failure::code_of(&e);
            eprintln!("error: {e:#}");
            code
        }
    }
}

/// Why `--json` cannot mean anything for this command, if it cannot.
fn json_refused(command: &Command) -> Option<&'static str> {
    match command {
        Command::Completions { .. } => Some("`completions` prints a shell script; run it without --json"),
        Command::Serve(_) => Some("`serve` runs one service in the foreground and prints no result"),
        Command::Up(args) if !args.detach => Some(
            "a foreground `up` streams logs until Ctrl-C; use `shop up -d --json` for the table, then `shop logs -f --json`",
        ),
        _ => None,
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let ctx = context::Context::new(&cli);
    crate::plumbing::test_hooks::warn_at_start();
    if cli.json {
        if let Some(why) = json_refused(&cli.command) {
            return Err(Failure::usage(format!("--json does not apply here: {why}")));
        }
    }
    if let Command::Serve(args) = cli.command {
        return serve::run(args, cli.verbose, cli.quiet);
    }
    if let Command::Completions { shell } = cli.command {
        let mut cmd = command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "shop", &mut script);
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        return Ok(exit::OK);
    }
    if matches!(
        cli.command,
        Command::Ps | Command::Logs(_) | Command::Inspect(_) | Command::Order(_) | Command::Export(_)
    ) {
        // Commands that only print end quietly when their reader goes away (`shop ps | head`),
        // as Unix tools do, instead of failing on a closed pipe. Processes that serve or
        // supervise keep ignoring SIGPIPE: a peer closing a socket must not kill them.
        // SAFETY: set before any thread starts, to the default disposition.
        unsafe {
            let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
        }
    }
    let origin = matches!(cli.command, Command::Supervise { .. })
        .then(|| crate::plumbing::logging::Origin { service: "supervisor".into(), instance: "supervisor".into() });
    crate::plumbing::logging::init(cli.verbose, cli.quiet, origin);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(&ctx, args).await,
            Command::Down(args) => down::run(&ctx, args).await,
            Command::Ps => ps::run(&ctx).await,
            Command::Logs(args) => logs::run(&ctx, args).await,
            Command::Top(args) => top::run(&ctx, args).await,
            Command::Start(args) => service_ctl::run(&ctx, ServiceAction::Start, args).await,
            Command::Stop(args) => service_ctl::run(&ctx, ServiceAction::Stop, args).await,
            Command::Restart(args) => service_ctl::run(&ctx, ServiceAction::Restart, args).await,
            Command::Load(args) => load::run(&ctx, args).await,
            Command::Smoke(args) => smoke::run(&ctx, args).await,
            Command::Export(command) => export::run(&ctx, command),
            Command::Order(command) => order::run(&ctx, command).await,
            Command::Inspect(command) => inspect::run(&ctx, command).await,
            Command::Chaos(command) => chaos::run(&ctx, command).await,
            Command::Supervise { services, no_deps } => up::supervise(&ctx, services, no_deps).await,
            Command::Serve(_) | Command::Completions { .. } => unreachable!("handled above"),
        }
    })
}
