//! What every stack command needs first: the stack file and the state dir.

use std::path::PathBuf;

use super::{Cli, Failure};
use crate::orchestrator::control::Control;
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

    /// The validated stack with its fixture files read and checked too, for the commands that
    /// start it or ship it (`up`, `smoke`, `export`): a fixture a service would refuse at its
    /// start is a mistake in the configuration, told before anything runs, at its place, with
    /// exit 2. The other commands do not read fixtures: an edit to one while the stack runs
    /// must not stop `ps` or `down`.
    pub fn stack_with_fixtures(&self) -> anyhow::Result<Stack> {
        let stack = self.stack()?;
        let problems = stack.fixture_problems();
        if problems.is_empty() {
            return Ok(stack);
        }
        for problem in &problems {
            eprintln!("{problem}");
        }
        let n = problems.len();
        Err(Failure::usage(format!(
            "the fixtures of `{}` are invalid ({n} problem{}); fix them and run again",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )))
    }

    /// The validated stack; an invalid file prints every problem and exits 2.
    pub fn stack(&self) -> anyhow::Result<Stack> {
        Stack::load(&self.file).map_err(|e| {
            if e.problems.iter().any(|p| p.line == 0) {
                // The file could not be read at all: one line says so.
                return Failure::usage(e.to_string());
            }
            eprintln!("{e}");
            let n = e.problems.len();
            Failure::usage(format!(
                "`{}` is invalid ({n} problem{}); fix it and run again",
                self.file.display(),
                if n == 1 { "" } else { "s" }
            ))
        })
    }

    /// The stack's databases in the state dir: a usage error if the stack lacks a service, a
    /// runtime error if the stack has never run.
    pub fn databases(&self, stack: &Stack) -> anyhow::Result<crate::invariants::Databases> {
        let dbs = self.state_dir().databases(stack).map_err(Failure::usage)?;
        if let Some(path) = dbs.missing() {
            return Err(Failure::runtime(format!(
                "no database at `{}`; has the stack run? start it with `shop up -d`",
                path.display()
            )));
        }
        Ok(dbs)
    }

    /// The running stack's supervisor. When none runs, a stack file that cannot be read is the
    /// real mistake (a wrong directory or `-f`), so it is reported first, as a usage error.
    pub fn control(&self) -> anyhow::Result<Control> {
        let dir = self.state_dir();
        if let Some(control) = Control::connect(&dir) {
            return Ok(control);
        }
        self.stack()?;
        Control::require(&dir)
    }

    /// For commands that work without a running stack (`ps`, `logs`, `down`): nothing runs
    /// from the state dir, so the stack file must at least be readable and valid, or the
    /// "nothing is running" they would print may come from the wrong place.
    pub fn check_stack_file(&self) -> anyhow::Result<()> {
        self.stack().map(drop)
    }

    /// The state dir, whether or not the stack file is valid (so `down` always works).
    pub fn state_dir(&self) -> StateDir {
        StateDir::resolve(self.explicit_state_dir.as_deref(), &self.file)
    }
}
