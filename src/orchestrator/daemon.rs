//! Running a supervisor: in the foreground (`shop up`) or as the background process that
//! `shop up -d` starts (`shop supervise`).

use std::sync::Arc;
use std::time::Duration;

use super::stackfile::Stack;
use super::state_dir::{DirLock, LockKind, StateDir};
use super::supervisor::Supervisor;
use crate::error::Failure;

/// A supervisor that is serving its control API and starting its services.
pub struct Running {
    pub sup: Arc<Supervisor>,
    /// The state dir's supervisor lock, held for as long as this supervisor runs.
    _lock: DirLock,
}

/// Prepares the state dir, checks fixed ports, serves the control API, records itself, and
/// starts `services` (all when empty) in the background. A state dir has one supervisor: a
/// second one would start a second stack on the same databases and lose track of one of them.
pub async fn launch(stack: Stack, dir: StateDir, services: &[String], no_deps: bool) -> anyhow::Result<Running> {
    dir.create()?;
    let Some(lock) = dir.try_lock(LockKind::Supervisor)? else {
        return Err(Failure::runtime(format!(
            "another supervisor runs in `{}`; `shop ps` shows its stack and `shop down` stops it",
            dir.root.display()
        )));
    };
    let secret = dir.secret()?;
    let sup = Supervisor::new(stack, dir.clone(), secret)?;
    let targets = sup.resolve(services, !no_deps).map_err(Failure::usage)?;
    super::ports::check_stack(&sup.stack).map_err(Failure::runtime)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let control = listener.local_addr()?;
    let app = sup.control_api();
    // The hardened accept loop every service uses: the control API listens on loopback, but a
    // stuck or hostile local client must not be able to hold the supervisor's only door shut.
    let header_timeout = crate::plumbing::test_hooks::header_timeout();
    tokio::spawn(crate::plumbing::http::serve(listener, app, header_timeout, std::future::pending()));
    // The start is under way before the record says where this supervisor answers: an `up`
    // waiting on the record then never sees a stack that is neither starting nor started (every
    // instance still pending), which it would take for one that is up.
    sup.spawn_up(targets);
    dir.write_record(&sup.record(control))?;
    tokio::spawn(sup.clone().monitor());
    Ok(Running { sup, _lock: lock })
}

impl Running {
    /// Serves until `down` is asked for (API) or SIGTERM/SIGINT arrives, then stops every
    /// service in reverse dependency order and removes the supervisor record.
    pub async fn serve_until_down(&self, grace: Duration) {
        tokio::select! {
            _ = self.sup.shutdown.notified() => {}
            _ = crate::plumbing::http::shutdown_signal() => self.sup.down(grace).await,
        }
        self.sup.dir.remove_record_of(std::process::id());
    }
}
