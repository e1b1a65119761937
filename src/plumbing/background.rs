//! The loops a service runs beside its HTTP server (the outbox relay, the saga resumer, the
//! reservation sweeper, the registry's eviction, the heartbeat), held together so that one
//! ending is noticed.
//!
//! A detached `tokio::spawn` that dies leaves the server answering `/readyz` while nothing
//! relays, sweeps or evicts. Held in a [`Loops`], the first one to end stops the service with
//! an error naming it, and the supervisor restarts the process as after any crash.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

use crate::plumbing::http::BoxFuture;

/// One loop, named for the logs; it is meant to run until the process ends.
pub struct Background {
    pub name: &'static str,
    pub task: BoxFuture<()>,
}

impl Background {
    pub fn new(name: &'static str, task: impl Future<Output = ()> + Send + 'static) -> Background {
        Background { name, task: Box::pin(task) }
    }
}

/// How a loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoopEnded {
    #[error("background loop `{name}` returned; the service cannot work without it")]
    Returned { name: &'static str },
    #[error("background loop `{name}` panicked: {message}")]
    Panicked { name: &'static str, message: String },
    #[error("background loop `{name}` was cancelled")]
    Cancelled { name: &'static str },
}

impl LoopEnded {
    pub fn name(&self) -> &'static str {
        match self {
            LoopEnded::Returned { name } | LoopEnded::Panicked { name, .. } | LoopEnded::Cancelled { name } => name,
        }
    }
}

/// Running loops; dropping this aborts them all.
#[derive(Default)]
pub struct Loops {
    set: JoinSet<()>,
    /// A panicking task leaves only its id behind: this gives it back its name.
    names: HashMap<Id, &'static str>,
}

impl Loops {
    /// Spawns every loop on the current runtime.
    pub fn start(loops: Vec<Background>) -> Loops {
        let mut running = Loops::default();
        for Background { name, task } in loops {
            let handle = running.set.spawn(task);
            running.names.insert(handle.id(), name);
        }
        running
    }

    /// Resolves when the first loop stops, logged at error level; never while all run (nor when
    /// there are none).
    pub async fn first_exit(&mut self) -> LoopEnded {
        let Some(joined) = self.set.join_next_with_id().await else { return std::future::pending().await };
        let name = |id: Id| self.names.get(&id).copied().unwrap_or("unnamed");
        let ended = match joined {
            Ok((id, ())) => LoopEnded::Returned { name: name(id) },
            Err(e) if e.is_panic() => {
                let name = name(e.id());
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                LoopEnded::Panicked { name, message }
            }
            Err(e) => LoopEnded::Cancelled { name: name(e.id()) },
        };
        tracing::error!(background_loop = ended.name(), error = %ended, "a background loop stopped; the service exits");
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_loop_to_end_is_named_whether_it_returned_or_panicked() {
        let mut loops = Loops::start(vec![
            Background::new("forever", std::future::pending()),
            Background::new("quitter", async {}),
        ]);
        assert!(matches!(loops.first_exit().await, LoopEnded::Returned { name: "quitter" }));

        let mut loops = Loops::start(vec![
            Background::new("forever", std::future::pending()),
            Background::new("crasher", async { panic!("boom") }),
        ]);
        match loops.first_exit().await {
            LoopEnded::Panicked { name, message } => assert_eq!((name, message.as_str()), ("crasher", "boom")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn without_loops_nothing_ever_ends() {
        let mut loops = Loops::start(Vec::new());
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), loops.first_exit()).await;
        assert!(waited.is_err());
    }
}
