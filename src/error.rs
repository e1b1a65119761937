//! `Failure` and the exit codes of SPEC section 3, at the crate root so every layer (the cli,
//! the orchestrator, the drill runner) can fail with a code without reaching up into the cli.

/// Exit codes of every command.
pub mod exit {
    pub const OK: i32 = 0;
    pub const RUNTIME: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const REJECTED: i32 = 3;
}

/// An error that carries its exit code; any other error exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    /// A usage or configuration error: exit 2.
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Self::with_code(exit::USAGE, message)
    }

    /// A runtime failure: exit 1.
    pub fn runtime(message: impl Into<String>) -> anyhow::Error {
        Self::with_code(exit::RUNTIME, message)
    }

    /// An order rejected for a business reason: exit 3.
    pub fn rejected(message: impl Into<String>) -> anyhow::Error {
        Self::with_code(exit::REJECTED, message)
    }

    pub fn with_code(code: i32, message: impl Into<String>) -> anyhow::Error {
        Failure { code, message: message.into() }.into()
    }

    /// The exit code for any error: the carried one, or 1.
    pub fn code_of(error: &anyhow::Error) -> i32 {
        error.downcast_ref::<Failure>().map(|f| f.code).unwrap_or(exit::RUNTIME)
    }
}
