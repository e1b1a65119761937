//! The command line: global options, the subcommands, and exit codes (SPEC section 3).

mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit codes of every command.
pub mod exit {
    pub const OK: i32 = 0;
    pub const RUNTIME: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const REJECTED: i32 = 3;
}

/// An error that carries its exit code; anything else exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Failure { code: exit::USAGE, message: message.into() }.into()
    }
}

#[derive(Parser, Debug)]
#[command(name = "shop", version, about = "A local microservices lab: run, drive, break and inspect an e-commerce stack")]
pub struct Cli {
    /// The stack file [default: ./stack.yaml, or $SHOP_STACK]
    #[arg(short = 'f', long = "file", global = true, env = "SHOP_STACK")]
    pub file: Option<PathBuf>,
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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one service in the foreground
    Serve(serve::Args),
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
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
            let code = e.downcast_ref::<Failure>().map(|f| f.code).unwrap_or(exit::RUNTIME);
            eprintln!("error: {e:#}");
            code
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) => serve::run(args, cli.verbose, cli.quiet),
    }
}

/// Logs to stderr: human-readable on a terminal, JSON lines otherwise (a supervisor's log file).
pub fn init_logging(verbose: u8, quiet: bool, fields: Option<(&'static str, String)>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("SHOP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        let _ = builder.with_target(false).try_init();
    } else {
        let _ = builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init();
    }
    let _ = fields;
}
