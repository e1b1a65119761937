//! The chaos monkey (SPEC section 14): random faults from a seed, expanded into an ordinary
//! fault timeline before anything runs, so it can be printed first and the same seed always
//! gives the same timeline (`monkey:` in a drill file, `shop chaos monkey` on a running stack).
//!
//! The generator is a SplitMix64 of our own rather than `rand`'s `StdRng`, whose stream may
//! change between releases: a seed written in a drill file must mean the same faults forever.

use crate::orchestrator::proxy::{Direction, Toxic, ToxicSpec};
use std::time::Duration;

use super::spec::{Action, Fault};

/// The kinds of fault a monkey may pick.
pub const KINDS: [&str; 6] = ["kill", "pause", "latency", "errors", "partition", "net"];

/// A monkey, validated.
#[derive(Clone, Debug)]
pub struct Monkey {
    /// Mean time between two faults (arrivals are exponential, as independent failures are).
    pub mean_interval: Duration,
    /// Fault kinds, from [`KINDS`].
    pub faults: Vec<String>,
    /// Services or instances the faults land on.
    pub targets: Vec<String>,
    /// At most this many of its faults at once; a fault that would exceed it waits.
    pub max_concurrent: usize,
    pub seed: u64,
    /// How long each fault lasts.
    pub fault_for: Duration,
    /// Where a drill file writes `targets`; the faults drawn from them point there.
    pub targets_at: Option<crate::plumbing::yaml::Pos>,
}

/// SplitMix64: tiny, fast and fully specified, hence stable for a given seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        // Callers pass non-empty lists (validated), so the index is in range.
        &items[(self.next() % items.len() as u64) as usize]
    }
}

impl Monkey {
    /// The faults it injects within `horizon` (the length of the load), in time order.
    pub fn timeline(&self, horizon: Duration) -> Vec<Fault> {
        let mut rng = SplitMix(self.seed);
        let mean = self.mean_interval.as_secs_f64().max(0.001);
        let mut t = 0.0_f64;
        let mut out: Vec<Fault> = Vec::new();
        loop {
            t += -(1.0 - rng.unit()).ln() * mean;
            // Wait for a slot when `max_concurrent` faults are already active.
            let ends: Vec<f64> = (out.iter())
                .map(|f| (f.at + f.for_.unwrap_or_default()).as_secs_f64())
                .filter(|end| *end > t)
                .collect();
            if ends.len() >= self.max_concurrent {
                let mut ends = ends;
                ends.sort_by(f64::total_cmp);
                t = ends[ends.len() - self.max_concurrent];
            }
            if t >= horizon.as_secs_f64() {
                return out;
            }
            let kind = rng.pick(&self.faults).clone();
            let target = rng.pick(&self.targets).clone();
            let action = match kind.as_str() {
                "kill" => Action::Kill { target, restart: false, signal: "KILL".into() },
                "pause" => Action::Pause { target },
                "latency" => {
                    Action::Latency { target, delay: Duration::from_millis(200), jitter: None, percent: 100.0 }
                }
                "errors" => Action::Errors { target, status: 503, percent: 50.0 },
                "net" => {
                    // On the wire: a reset soon after each connection opens, or a slow link.
                    let toxics = [Toxic::Reset { after_ms: 50 }, Toxic::Latency { delay_ms: 200, jitter_ms: 50 }];
                    let toxic = rng.pick(&toxics).clone();
                    Action::Net {
                        target,
                        spec: ToxicSpec { toxic, direction: Direction::Both, toxicity: 100.0 },
                        from: None,
                    }
                }
                _ => {
                    let others: Vec<String> = self.targets.iter().filter(|o| **o != target).cloned().collect();
                    let with = if others.is_empty() { "order".to_string() } else { rng.pick(&others).clone() };
                    Action::Partition { target, with, refuse: false }
                }
            };
            // Whole milliseconds, as the supervisor takes them and the timeline prints them.
            let at = Duration::from_millis((t * 1000.0) as u64);
            out.push(Fault { at, for_: Some(self.fault_for), action, written_at: self.targets_at });
        }
    }
}

/// The timeline as printed before the run: one line per fault.
pub fn describe(faults: &[Fault]) -> Vec<String> {
    faults
        .iter()
        .map(|f| format!("+{:>7.3}s {:<9} {:<14} {}", f.at.as_secs_f64(), f.kind(), f.target(), f.describe()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monkey(seed: u64) -> Monkey {
        Monkey {
            mean_interval: Duration::from_secs(4),
            faults: vec!["kill".into(), "pause".into(), "latency".into()],
            targets: vec!["payment".into(), "inventory".into()],
            max_concurrent: 1,
            seed,
            fault_for: Duration::from_secs(2),
            targets_at: None,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_timeline_and_another_seed_another() {
        let a = describe(&monkey(42).timeline(Duration::from_secs(60)));
        assert!(a.len() > 3, "{a:?}");
        assert_eq!(a, describe(&monkey(42).timeline(Duration::from_secs(60))));
        assert_ne!(a, describe(&monkey(43).timeline(Duration::from_secs(60))));
    }

    #[test]
    fn no_more_than_max_concurrent_faults_overlap() {
        let faults = monkey(7).timeline(Duration::from_secs(300));
        for pair in faults.windows(2) {
            assert!(pair[1].at >= pair[0].at + pair[0].for_.unwrap(), "{pair:?}");
        }
    }
}
