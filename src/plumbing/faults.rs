//! Fault injection inside a service: latency and errors on the requests it receives, and
//! partitions that make its calls to a named service fail as a cut network would.
//!
//! Faults are set at run time through the admin endpoints (`PUT/GET/DELETE /admin/faults`,
//! stack secret required) by `shop chaos`, and end by themselves at their expiry. A seed makes
//! the percentages and jitter reproducible.
//!
//! One more fault is for tests and set at start: `SHOP_FAULT_DELAY` (with
//! `SHOP_FAULT_DELAY_REQUESTS`) holds back answers *after* the handler ran, so the caller times
//! out on a request that was applied: the unknown outcome a saga must resolve.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::plumbing::error::ApiError;
use crate::plumbing::time::now_ms;

/// Longest delay a fault may add, on a request or on the wire: past it every caller has long
/// timed out, so a longer one only says the value was mistyped.
pub const MAX_DELAY_MS: u64 = 600_000;

/// Delay the requests this service receives.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub delay_ms: u64,
    #[serde(default)]
    pub jitter_ms: u64,
    /// Share of requests affected, 0..=100.
    #[serde(default = "all")]
    pub percent: f64,
    /// Unix ms after which the fault is gone; `None` until cleared.
    #[serde(default)]
    pub until_ms: Option<i64>,
}

/// Answer a share of the requests this service receives with `status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Errors {
    #[serde(default = "unavailable")]
    pub status: u16,
    #[serde(default = "all")]
    pub percent: f64,
    #[serde(default)]
    pub until_ms: Option<i64>,
}

/// Calls from this service to `peer` fail as if the network between them were cut.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub peer: String,
    #[serde(default)]
    pub until_ms: Option<i64>,
}

fn all() -> f64 {
    100.0
}

fn unavailable() -> u16 {
    503
}

/// The faults active in one process; `PUT /admin/faults` merges a body of this shape.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSet {
    #[serde(default)]
    pub latency: Option<Latency>,
    #[serde(default)]
    pub errors: Option<Errors>,
    #[serde(default)]
    pub partitions: Vec<Partition>,
    /// Reseeds the random choices (percentages, jitter) for reproducible drills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn live(until: Option<i64>, now: i64) -> bool {
    until.is_none_or(|u| u > now)
}

impl FaultSet {
    /// Drops what has expired.
    fn prune(&mut self, now: i64) {
        if self.latency.as_ref().is_some_and(|l| !live(l.until_ms, now)) {
            self.latency = None;
        }
        if self.errors.as_ref().is_some_and(|e| !live(e.until_ms, now)) {
            self.errors = None;
        }
        self.partitions.retain(|p| live(p.until_ms, now));
    }

    pub fn is_empty(&self) -> bool {
        self.latency.is_none() && self.errors.is_none() && self.partitions.is_empty()
    }
}

/// One kind of request fault, as `DELETE /admin/faults?kind=…` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClass {
    Latency,
    Errors,
    Partitions,
}

impl FaultClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultClass::Latency => "latency",
            FaultClass::Errors => "errors",
            FaultClass::Partitions => "partitions",
        }
    }

    /// The query value, with `partition` accepted for `partitions`.
    pub fn parse(s: &str) -> Option<FaultClass> {
        match s {
            "latency" => Some(FaultClass::Latency),
            "errors" => Some(FaultClass::Errors),
            "partitions" | "partition" => Some(FaultClass::Partitions),
            _ => None,
        }
    }
}

pub struct Faults {
    set: Mutex<FaultSet>,
    rng: Mutex<StdRng>,
    /// Set when any fault may be active, so the request path skips the lock otherwise.
    armed: std::sync::atomic::AtomicBool,
    test_delay: Option<Duration>,
    test_delay_requests: Option<u64>,
    seen: AtomicU64,
}

impl Faults {
    pub fn new(test_delay: Option<Duration>, test_delay_requests: Option<u64>) -> Faults {
        Faults {
            set: Mutex::new(FaultSet::default()),
            rng: Mutex::new(StdRng::from_entropy()),
            armed: std::sync::atomic::AtomicBool::new(false),
            test_delay,
            test_delay_requests,
            seen: AtomicU64::new(0),
        }
    }

    /// The active faults, without the expired ones.
    pub fn current(&self) -> FaultSet {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        set.prune(now_ms());
        set.clone()
    }

    /// Adds `update` to the active faults: a latency or errors fault replaces the one before,
    /// partitions add up (one per peer).
    pub fn apply(&self, update: FaultSet) -> Result<FaultSet, String> {
        if let Some(l) = &update.latency {
            if !(0.0..=100.0).contains(&l.percent) || l.delay_ms > MAX_DELAY_MS || l.jitter_ms > MAX_DELAY_MS {
                return Err("latency: percent must be 0..=100 and delay, jitter at most 10 minutes".into());
            }
        }
        if let Some(e) = &update.errors {
            if !(0.0..=100.0).contains(&e.percent) || !(400..=599).contains(&e.status) {
                return Err("errors: percent must be 0..=100 and status 400..=599".into());
            }
        }
        if let Some(seed) = update.seed {
            *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = StdRng::seed_from_u64(seed);
        }
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        if update.latency.is_some() {
            set.latency = update.latency;
        }
        if update.errors.is_some() {
            set.errors = update.errors;
        }
        for p in update.partitions {
            set.partitions.retain(|q| q.peer != p.peer);
            set.partitions.push(p);
        }
        set.prune(now_ms());
        self.armed.store(!set.is_empty(), Ordering::Relaxed);
        Ok(set.clone())
    }

    /// Removes every fault (or only those of one kind: `latency`, `errors`, `partitions`).
    pub fn clear(&self, kind: Option<&str>) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        // An unknown kind clears everything, as it always has: a stray query never leaves a fault on.
        match kind.and_then(FaultClass::parse) {
            Some(FaultClass::Latency) => set.latency = None,
            Some(FaultClass::Errors) => set.errors = None,
            Some(FaultClass::Partitions) => set.partitions.clear(),
            None => *set = FaultSet::default(),
        }
        self.armed.store(!set.is_empty(), Ordering::Relaxed);
    }

    /// Whether calls to `peer` are cut off.
    pub fn partitioned_from(&self, peer: &str) -> bool {
        if !self.armed.load(Ordering::Relaxed) {
            return false;
        }
        let set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        set.partitions.iter().any(|p| p.peer == peer && live(p.until_ms, now))
    }

    fn roll(&self, percent: f64) -> bool {
        percent >= 100.0 || self.rng.lock().unwrap_or_else(|p| p.into_inner()).gen_range(0.0..100.0) < percent
    }

    /// What to do to the next inbound request: a delay first, then maybe an error status.
    fn inbound_plan(&self) -> (Option<Duration>, Option<u16>) {
        if !self.armed.load(Ordering::Relaxed) {
            return (None, None);
        }
        let (latency, errors) = {
            let set = self.set.lock().unwrap_or_else(|p| p.into_inner());
            let now = now_ms();
            (
                set.latency.clone().filter(|l| live(l.until_ms, now)),
                set.errors.clone().filter(|e| live(e.until_ms, now)),
            )
        };
        let delay = latency.filter(|l| self.roll(l.percent)).map(|l| {
            let jitter = if l.jitter_ms > 0 {
                self.rng.lock().unwrap_or_else(|p| p.into_inner()).gen_range(0..=2 * l.jitter_ms) as i64
                    - l.jitter_ms as i64
            } else {
                0
            };
            Duration::from_millis((l.delay_ms as i64 + jitter).max(0) as u64)
        });
        let status = errors.filter(|e| self.roll(e.percent)).map(|e| e.status);
        (delay, status)
    }

    fn test_delay_for_next(&self) -> Option<Duration> {
        let delay = self.test_delay?;
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        self.test_delay_requests.is_none_or(|limit| n < limit).then_some(delay)
    }
}

/// Middleware over a service's own routes (never health, metrics or admin).
pub async fn inbound(State(faults): State<Arc<Faults>>, req: Request, next: Next) -> Response {
    let (delay, status) = faults.inbound_plan();
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if let Some(status) = status {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return ApiError::new(code, "injected_fault", format!("fault injected by shop chaos: {status}"))
            .into_response();
    }
    let response = next.run(req).await;
    if let Some(delay) = faults.test_delay_for_next() {
        tokio::time::sleep(delay).await;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_merge_expire_and_clear() {
        let f = Faults::new(None, None);
        let now = now_ms();
        f.apply(FaultSet {
            latency: Some(Latency { delay_ms: 100, jitter_ms: 0, percent: 100.0, until_ms: None }),
            partitions: vec![Partition { peer: "payment".into(), until_ms: Some(now + 60_000) }],
            ..FaultSet::default()
        })
        .unwrap();
        f.apply(FaultSet {
            errors: Some(Errors { status: 503, percent: 50.0, until_ms: Some(now - 1) }),
            ..FaultSet::default()
        })
        .unwrap();
        let cur = f.current();
        assert!(cur.latency.is_some() && cur.errors.is_none(), "expired errors are gone: {cur:?}");
        assert!(f.partitioned_from("payment") && !f.partitioned_from("user"));
        assert_eq!(f.inbound_plan(), (Some(Duration::from_millis(100)), None));
        f.clear(Some("latency"));
        assert!(f.current().latency.is_none() && f.partitioned_from("payment"));
        f.clear(None);
        assert!(f.current().is_empty());
        assert!(f
            .apply(FaultSet {
                errors: Some(Errors { status: 200, percent: 10.0, until_ms: None }),
                ..FaultSet::default()
            })
            .is_err());
    }

    #[test]
    fn a_seed_makes_the_choices_repeat() {
        let run = || {
            let f = Faults::new(None, None);
            f.apply(FaultSet {
                errors: Some(Errors { status: 503, percent: 30.0, until_ms: None }),
                seed: Some(7),
                ..FaultSet::default()
            })
            .unwrap();
            (0..50).map(|_| f.inbound_plan().1.is_some()).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|h| **h).count();
        assert!((5..=25).contains(&hits), "{hits} of 50 at 30%");
    }
}
