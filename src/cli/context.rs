//! What every stack command needs first: the stack file and the state dir.

use std::path::PathBuf;

use super::{exit, Cli, Failure};
use crate::orchestrator::stackfile::Stack;
use crate::orchestrator::state_dir::StateDir;

pub struct Context {
    pub file: PathBuf,
    pub explicit_state_dir: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
}

impl Context {
    pub fn new(cli: &Cli) -> Context {
        Context {
            file: cli.file.clone().or_else(|| cli.file_short.clone()).unwrap_or_else(|| PathBuf::from("stack.yaml")),
            explicit_state_dir: cli.state_dir.clone(),
            json: cli.json,
            quiet: cli.quiet,
        }
    }

    /// The validated stack; an invalid file prints every problem and exits 2.
    pub fn stack(&self) -> anyhow::Result<Stack> {
        Stack::load(&self.file).map_err(|e| {
            if e.problems.iter().any(|p| p.line == 0) {
                // The file could not be read at all: one line says so.
                return Failure { code: exit::USAGE, message: e.to_string() }.into();
            }
            eprintln!("{e}");
            let n = e.problems.len();
            Failure {
                code: exit::USAGE,
                message: format!(
                    "`{}` is invalid ({n} problem{}); fix it and run again",
                    self.file.display(),
                    if n == 1 { "" } else { "s" }
                ),
            }
            .into()
        })
    }

    /// The state dir, whether or not the stack file is valid (so `down` always works).
    pub fn state_dir(&self) -> StateDir {
        StateDir::resolve(self.explicit_state_dir.as_deref(), &self.file)
    }
}
