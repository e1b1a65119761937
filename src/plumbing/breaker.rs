//! Circuit breakers, one per dependency: after `failure_threshold` transient failures in a row
//! calls are refused at once (open) for `open_for`, then `half_open_requests` trial calls decide
//! between closing again and another open spell. A dependency that is down then costs its
//! callers nothing, and it is not hammered while it recovers.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub open_for: Duration,
    pub half_open_requests: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

struct Breaker {
    state: BreakerState,
    /// Consecutive transient failures while closed.
    failures: u32,
    opened_at: Instant,
    /// Trial calls let through and not yet finished, while half open.
    trials: u32,
    /// Trial calls that succeeded, while half open.
    trial_successes: u32,
}

/// One change of state, for the logs, `shop inspect service` and drill reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Transition {
    pub at: String,
    pub dependency: String,
    pub from: BreakerState,
    pub to: BreakerState,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BreakerView {
    pub dependency: String,
    pub state: BreakerState,
    pub failures: u32,
}

/// The body of `GET /admin/breakers`: every breaker of one process and its recent transitions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BreakerReport {
    pub breakers: Vec<BreakerView>,
    /// Oldest first, at most the last thousand.
    pub transitions: Vec<Transition>,
}

impl BreakerReport {
    /// How many recorded transitions concern `dependency`.
    pub fn transitions_of(&self, dependency: &str) -> usize {
        self.transitions.iter().filter(|t| t.dependency == dependency).count()
    }
}

pub struct Breakers {
    config: BreakerConfig,
    breakers: Mutex<HashMap<String, Breaker>>,
    /// The last transitions, oldest first.
    transitions: Mutex<VecDeque<Transition>>,
}

const KEPT_TRANSITIONS: usize = 1000;

impl Breakers {
    pub fn new(config: BreakerConfig) -> Breakers {
        Breakers { config, breakers: Mutex::new(HashMap::new()), transitions: Mutex::new(VecDeque::new()) }
    }

    /// Whether a call to `dependency` may go out now.
    pub fn allow(&self, dependency: &str) -> bool {
        let mut map = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up by &str first: the key is allocated once per dependency, not per call.
        if !map.contains_key(dependency) {
            map.insert(
                dependency.to_string(),
                Breaker {
                    state: BreakerState::Closed,
                    failures: 0,
                    opened_at: Instant::now(),
                    trials: 0,
                    trial_successes: 0,
                },
            );
        }
        let Some(b) = map.get_mut(dependency) else { return true };
        if b.state == BreakerState::Open && b.opened_at.elapsed() >= self.config.open_for {
            self.transition(dependency, b, BreakerState::HalfOpen);
        }
        match b.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if b.trials < self.config.half_open_requests.max(1) => {
                b.trials += 1;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    /// Records how an allowed call ended: `ok` unless it failed transiently.
    pub fn record(&self, dependency: &str, ok: bool) {
        let mut map = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = map.get_mut(dependency) else { return };
        match (b.state, ok) {
            (BreakerState::Closed, true) => b.failures = 0,
            (BreakerState::Closed, false) => {
                b.failures += 1;
                if b.failures >= self.config.failure_threshold.max(1) {
                    self.transition(dependency, b, BreakerState::Open);
                }
            }
            (BreakerState::HalfOpen, true) => {
                b.trials = b.trials.saturating_sub(1);
                b.trial_successes += 1;
                if b.trial_successes >= self.config.half_open_requests.max(1) {
                    self.transition(dependency, b, BreakerState::Closed);
                }
            }
            (BreakerState::HalfOpen, false) => self.transition(dependency, b, BreakerState::Open),
            // A call let through before the breaker opened finished late: nothing to learn.
            (BreakerState::Open, _) => {}
        }
    }

    fn transition(&self, dependency: &str, b: &mut Breaker, to: BreakerState) {
        let from = b.state;
        b.state = to;
        b.failures = 0;
        b.trials = 0;
        b.trial_successes = 0;
        if to == BreakerState::Open {
            b.opened_at = Instant::now();
        }
        match to {
            BreakerState::Open => tracing::warn!(dependency, from = from.as_str(), "circuit breaker opened"),
            _ => tracing::info!(dependency, from = from.as_str(), to = to.as_str(), "circuit breaker changed state"),
        }
        let mut log = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == KEPT_TRANSITIONS {
            log.pop_front();
        }
        log.push_back(Transition {
            at: crate::plumbing::time::rfc3339(crate::plumbing::time::now_ms()),
            dependency: dependency.to_string(),
            from,
            to,
        });
    }

    pub fn views(&self) -> Vec<BreakerView> {
        let map = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<BreakerView> = map
            .iter()
            .map(|(d, b)| BreakerView { dependency: d.clone(), state: b.state, failures: b.failures })
            .collect();
        out.sort_by(|a, b| a.dependency.cmp(&b.dependency));
        out
    }

    pub fn transitions(&self) -> Vec<Transition> {
        self.transitions.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// What `GET /admin/breakers` answers.
    pub fn report(&self) -> BreakerReport {
        BreakerReport { breakers: self.views(), transitions: self.transitions() }
    }

    /// Gauges and counters for `/metrics`.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP shop_breaker_state Circuit breaker per dependency: 0 closed, 1 open, 2 half open.\n");
        out.push_str("# TYPE shop_breaker_state gauge\n");
        for v in self.views() {
            let n = match v.state {
                BreakerState::Closed => 0,
                BreakerState::Open => 1,
                BreakerState::HalfOpen => 2,
            };
            let _ = writeln!(out, "shop_breaker_state{{dependency=\"{}\"}} {n}", v.dependency);
        }
        let mut counts: HashMap<(String, &'static str), u64> = HashMap::new();
        for t in self.transitions() {
            *counts.entry((t.dependency, t.to.as_str())).or_default() += 1;
        }
        out.push_str("# HELP shop_breaker_transitions_total Circuit breaker changes of state, by new state.\n");
        out.push_str("# TYPE shop_breaker_transitions_total counter\n");
        let mut rows: Vec<_> = counts.into_iter().collect();
        rows.sort();
        for ((dep, to), n) in rows {
            let _ = writeln!(out, "shop_breaker_transitions_total{{dependency=\"{dep}\",to=\"{to}\"}} {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `allow` until it lets a call through (the breaker went half open), within 30 s.
    fn wait_for_trial(b: &Breakers, dependency: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !b.allow(dependency) {
            assert!(Instant::now() < deadline, "the breaker never went half open");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_breaker_opens_rejects_half_opens_and_closes() {
        // Open for 1 s: the "still open" checks right after opening cannot be outrun by a busy
        // machine, and the half-open step is polled for rather than slept for.
        let b = Breakers::new(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(1),
            half_open_requests: 1,
        });
        for _ in 0..3 {
            assert!(b.allow("payment"));
            b.record("payment", false);
        }
        assert!(!b.allow("payment"), "open after 3 failures");
        wait_for_trial(&b, "payment");
        assert!(!b.allow("payment"), "only one trial");
        b.record("payment", false);
        assert!(!b.allow("payment"), "a failed trial opens again");
        wait_for_trial(&b, "payment");
        b.record("payment", true);
        assert!(b.allow("payment") && b.allow("payment"), "closed after a good trial");
        let to: Vec<_> = b.transitions().iter().map(|t| t.to).collect();
        use BreakerState::*;
        assert_eq!(to, vec![Open, HalfOpen, Open, HalfOpen, Closed]);
        let mut text = String::new();
        b.render(&mut text);
        assert!(text.contains("shop_breaker_state{dependency=\"payment\"} 0"));
        assert!(text.contains("shop_breaker_transitions_total{dependency=\"payment\",to=\"open\"} 2"));
    }

    #[test]
    fn successes_reset_the_failure_count() {
        let b = Breakers::new(BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(5),
            half_open_requests: 1,
        });
        for _ in 0..5 {
            assert!(b.allow("x"));
            b.record("x", false);
            assert!(b.allow("x"));
            b.record("x", true);
        }
        assert_eq!(b.views()[0].state, BreakerState::Closed);
    }
}
