//! Whether and when an exited instance is restarted: a pure function of its restart policy and
//! crash history, so the rules (policy, doubling backoff with a cap, a fresh start after a
//! healthy spell, `max_restarts`) are tested without processes or clocks.

use std::time::Duration;

use crate::orchestrator::stackfile::RestartPolicy;

/// Restart backoff never grows past this.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Healthy this long, an instance's crash history starts over.
pub(super) const HEALTHY_SPELL: Duration = Duration::from_secs(10);

/// What the monitor knows when an instance's process has exited.
#[derive(Clone, Copy, Debug)]
pub(super) struct Exit {
    pub(super) policy: RestartPolicy,
    /// Whether the process exited with status 0.
    pub(super) success: bool,
    /// Crashes since the last healthy spell, not counting this one.
    pub(super) crashes: u32,
    /// The stack file's `backoff`: the wait before the first restart.
    pub(super) backoff: Duration,
    /// The wait before the previous restart, which this one doubles.
    pub(super) last_backoff: Option<Duration>,
    /// How long it had been healthy when it exited (zero if it was not).
    pub(super) healthy_for: Duration,
    pub(super) max_restarts: u32,
    /// Whether this exit uses up one of `max_restarts`. Not when the instance was ended for
    /// failing readiness, or failed to start again since: the cause (a read-only or full disk, a
    /// deleted database) lies outside the program, and once it is mended the stack must recover
    /// by itself, so such restarts go on at the capped backoff, as Kubernetes' CrashLoopBackOff.
    pub(super) counts: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Start it again after `after`; `crashes` is the new crash count.
    Restart { after: Duration, crashes: u32 },
    /// It crashed `max_restarts` times in a row: leave it failed.
    GiveUp,
    /// The policy does not restart this exit: leave it crashed.
    LeaveStopped,
}

pub(super) fn decide(exit: Exit) -> Decision {
    let restart = match exit.policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure => !exit.success,
        RestartPolicy::Always => true,
    };
    if !restart {
        return Decision::LeaveStopped;
    }
    let (crashes, last) = if exit.healthy_for >= HEALTHY_SPELL || exit.crashes == 0 {
        (0, None)
    } else {
        (exit.crashes, exit.last_backoff)
    };
    let after = last.map_or(exit.backoff, |l| l.saturating_mul(2)).min(MAX_BACKOFF);
    if !exit.counts {
        return Decision::Restart { after, crashes: crashes.max(1) };
    }
    if crashes >= exit.max_restarts {
        return Decision::GiveUp;
    }
    Decision::Restart { after, crashes: crashes + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn crash(crashes: u32, last_backoff: Option<Duration>) -> Exit {
        Exit {
            policy: RestartPolicy::Always,
            success: false,
            crashes,
            backoff: ms(200),
            last_backoff,
            healthy_for: Duration::ZERO,
            max_restarts: 5,
            counts: true,
        }
    }

    /// Feeds each decision's outcome into the next crash, as the monitor does.
    fn waits(mut exit: Exit, n: usize) -> Vec<Decision> {
        let mut out = Vec::new();
        for _ in 0..n {
            let d = decide(exit);
            if let Decision::Restart { after, crashes } = d {
                exit.crashes = crashes;
                exit.last_backoff = Some(after);
            }
            out.push(d);
        }
        out
    }

    #[test]
    fn each_crash_counts_and_doubles_the_wait_from_the_configured_backoff() {
        let got = waits(crash(0, None), 3);
        assert_eq!(
            got,
            vec![
                Decision::Restart { after: ms(200), crashes: 1 },
                Decision::Restart { after: ms(400), crashes: 2 },
                Decision::Restart { after: ms(800), crashes: 3 },
            ]
        );
    }

    #[test]
    fn the_wait_stops_growing_at_ten_seconds() {
        let exit = Exit { backoff: ms(3000), max_restarts: 10, ..crash(0, None) };
        let afters: Vec<Duration> = waits(exit, 4)
            .into_iter()
            .map(|d| match d {
                Decision::Restart { after, .. } => after,
                other => panic!("expected a restart, got {other:?}"),
            })
            .collect();
        assert_eq!(afters, vec![ms(3000), ms(6000), MAX_BACKOFF, MAX_BACKOFF]);
        assert_eq!(decide(crash(1, Some(ms(6000)))), Decision::Restart { after: MAX_BACKOFF, crashes: 2 });
    }

    #[test]
    fn ten_seconds_healthy_start_the_crash_history_over() {
        let exit = Exit { healthy_for: HEALTHY_SPELL, ..crash(4, Some(ms(3200))) };
        assert_eq!(decide(exit), Decision::Restart { after: ms(200), crashes: 1 });
        let short = Exit { healthy_for: ms(9_999), ..crash(4, Some(ms(3200))) };
        assert_eq!(decide(short), Decision::Restart { after: ms(6400), crashes: 5 });
    }

    #[test]
    fn it_gives_up_after_max_restarts_crashes_in_a_row() {
        let got = waits(Exit { max_restarts: 2, ..crash(0, None) }, 3);
        assert_eq!(got[2], Decision::GiveUp);
        assert_eq!(decide(Exit { max_restarts: 0, ..crash(0, None) }), Decision::GiveUp);
    }

    #[test]
    fn restarts_after_failing_readiness_never_give_up_and_back_off_to_the_cap() {
        let outage = Exit { counts: false, max_restarts: 2, ..crash(0, None) };
        let got = waits(outage, 12);
        assert!(got.iter().all(|d| matches!(d, Decision::Restart { .. })), "{got:?}");
        assert_eq!(got[0], Decision::Restart { after: ms(200), crashes: 1 });
        assert_eq!(got[11], Decision::Restart { after: MAX_BACKOFF, crashes: 1 });
        // Once the outage is over, a real crash counts again from where the history stood.
        assert_eq!(
            decide(Exit { counts: true, max_restarts: 2, ..crash(1, Some(ms(400))) }),
            Decision::Restart { after: ms(800), crashes: 2 }
        );
    }

    #[test]
    fn each_policy_restarts_only_the_exits_it_names() {
        for (policy, success, restarts) in [
            (RestartPolicy::No, false, false),
            (RestartPolicy::No, true, false),
            (RestartPolicy::OnFailure, false, true),
            (RestartPolicy::OnFailure, true, false),
            (RestartPolicy::Always, false, true),
            (RestartPolicy::Always, true, true),
        ] {
            let d = decide(Exit { policy, success, ..crash(0, None) });
            assert_eq!(matches!(d, Decision::Restart { .. }), restarts, "{policy:?} success={success}: {d:?}");
            if !restarts {
                assert_eq!(d, Decision::LeaveStopped);
            }
        }
    }
}
