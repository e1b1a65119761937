//! The toxics a wire proxy applies to the bytes it relays (Toxiproxy's fault set), the
//! direction each acts in, and the parsers for their user-written parameters (rates, sizes).
//! These types travel in the control API unchanged, so they serialize as the CLI spells them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plumbing::faults::MAX_DELAY_MS;

/// Which bytes a toxic acts on: `up` is the request side (caller to target), `down` the
/// response side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
    #[default]
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Both => "both",
        }
    }

    /// Whether a toxic set for `self` acts on bytes flowing in `flow` (`Up` or `Down`).
    pub fn covers(self, flow: Direction) -> bool {
        self == Direction::Both || self == flow
    }
}

/// The toxic names, as `shop chaos net TARGET TOXIC` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ToxicKind {
    Latency,
    Bandwidth,
    SlowClose,
    Blackhole,
    Reset,
    Slicer,
    LimitData,
}

impl ToxicKind {
    pub const ALL: [ToxicKind; 7] = [
        ToxicKind::Latency,
        ToxicKind::Bandwidth,
        ToxicKind::SlowClose,
        ToxicKind::Blackhole,
        ToxicKind::Reset,
        ToxicKind::Slicer,
        ToxicKind::LimitData,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ToxicKind::Latency => "latency",
            ToxicKind::Bandwidth => "bandwidth",
            ToxicKind::SlowClose => "slow-close",
            ToxicKind::Blackhole => "blackhole",
            ToxicKind::Reset => "reset",
            ToxicKind::Slicer => "slicer",
            ToxicKind::LimitData => "limit-data",
        }
    }

    /// The parameters this toxic takes, named as the CLI's flags (the drill file writes
    /// `close_after`). Any other one given is refused rather than ignored: `reset --delay 50ms`
    /// would otherwise reset every connection at once, not after 50 ms.
    pub fn params(self) -> &'static [&'static str] {
        match self {
            ToxicKind::Latency => &["delay", "jitter"],
            ToxicKind::Bandwidth => &["rate"],
            ToxicKind::SlowClose => &["delay"],
            ToxicKind::Blackhole => &["close-after"],
            ToxicKind::Reset => &["after"],
            ToxicKind::Slicer => &["size", "variation", "delay"],
            ToxicKind::LimitData => &["bytes"],
        }
    }

    /// The first of `given` (the parameters that were set) this toxic does not take, with the
    /// toxics that do take it, for a message that says where it belongs.
    pub fn stray(self, given: &[&'static str]) -> Option<(&'static str, Vec<ToxicKind>)> {
        let param = given.iter().copied().find(|p| !self.params().contains(p))?;
        Some((param, ToxicKind::ALL.into_iter().filter(|k| k.params().contains(&param)).collect()))
    }

    /// `latency, slow-close or slicer`: the toxics that take a stray parameter, for messages.
    pub fn either(kinds: &[ToxicKind]) -> String {
        let names: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        listed(&names, "or")
    }

    /// Parses a toxic name; the message lists the valid ones.
    pub fn parse(s: &str) -> Result<ToxicKind, String> {
        ToxicKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = ToxicKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown toxic `{s}`; the toxics are: {}", names.join(", "))
        })
    }
}

impl fmt::Display for ToxicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One toxic with its parameters. Durations are in milliseconds so the JSON stays plain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "toxic", rename_all = "kebab-case")]
pub enum Toxic {
    /// Every chunk waits `delay_ms` ± a uniform `jitter_ms`.
    Latency { delay_ms: u64, jitter_ms: u64 },
    /// Bytes leave at `rate` bytes per second at most.
    Bandwidth { bytes_per_s: u64 },
    /// The close (EOF) is passed on `delay_ms` late.
    SlowClose { delay_ms: u64 },
    /// Bytes are swallowed; the connection hangs, or is closed after `close_after_ms`.
    Blackhole { close_after_ms: Option<u64> },
    /// The connection is reset (SO_LINGER 0, so the peer sees RST) `after_ms` after it opened.
    Reset { after_ms: u64 },
    /// Each chunk is cut into slices of `size` ± `variation` bytes, `delay_ms` apart.
    Slicer { size: u64, variation: u64, delay_ms: u64 },
    /// The connection is closed once `bytes` have passed in the toxic's direction.
    LimitData { bytes: u64 },
}

impl Toxic {
    pub fn kind(&self) -> ToxicKind {
        match self {
            Toxic::Latency { .. } => ToxicKind::Latency,
            Toxic::Bandwidth { .. } => ToxicKind::Bandwidth,
            Toxic::SlowClose { .. } => ToxicKind::SlowClose,
            Toxic::Blackhole { .. } => ToxicKind::Blackhole,
            Toxic::Reset { .. } => ToxicKind::Reset,
            Toxic::Slicer { .. } => ToxicKind::Slicer,
            Toxic::LimitData { .. } => ToxicKind::LimitData,
        }
    }

    /// The parameters as `key=value` words, for `chaos list`, `ps` and the drill report.
    pub fn describe(&self) -> String {
        let ms = |v: u64| format!("{v}ms");
        match self {
            Toxic::Latency { delay_ms, jitter_ms } => format!("delay={} jitter={}", ms(*delay_ms), ms(*jitter_ms)),
            Toxic::Bandwidth { bytes_per_s } => format!("rate={}B/s", bytes_per_s),
            Toxic::SlowClose { delay_ms } => format!("delay={}", ms(*delay_ms)),
            Toxic::Blackhole { close_after_ms: Some(c) } => format!("close-after={}", ms(*c)),
            Toxic::Blackhole { close_after_ms: None } => "hang".into(),
            Toxic::Reset { after_ms } => format!("after={}", ms(*after_ms)),
            Toxic::Slicer { size, variation, delay_ms } => {
                format!("size={size} variation={variation} delay={}", ms(*delay_ms))
            }
            Toxic::LimitData { bytes } => format!("bytes={bytes}"),
        }
    }

    /// Checks values that parse but make no sense (a zero rate would never send a byte).
    pub fn validate(&self) -> Result<(), String> {
        let durations: &[(&str, Option<u64>)] = match self {
            Toxic::Latency { delay_ms, jitter_ms } => &[("delay", Some(*delay_ms)), ("jitter", Some(*jitter_ms))],
            Toxic::SlowClose { delay_ms } | Toxic::Slicer { delay_ms, .. } => &[("delay", Some(*delay_ms))],
            Toxic::Blackhole { close_after_ms } => &[("close-after", *close_after_ms)],
            Toxic::Reset { after_ms } => &[("after", Some(*after_ms))],
            Toxic::Bandwidth { .. } | Toxic::LimitData { .. } => &[],
        };
        if let Some((param, _)) = durations.iter().find(|(_, ms)| ms.is_some_and(|ms| ms > MAX_DELAY_MS)) {
            return Err(format!("--{param} must be at most 10m"));
        }
        match self {
            Toxic::Bandwidth { bytes_per_s: 0 } => Err("--rate must be more than 0".into()),
            Toxic::Slicer { size: 0, .. } => Err("--size must be at least 1 byte".into()),
            Toxic::Slicer { size, variation, .. } if variation >= size => {
                Err(format!("--variation ({variation}) must be smaller than --size ({size})"))
            }
            _ => Ok(()),
        }
    }
}

/// A toxic as a proxy holds it: which bytes, and the share of connections it applies to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToxicSpec {
    #[serde(flatten)]
    pub toxic: Toxic,
    #[serde(default)]
    pub direction: Direction,
    /// Percent of connections affected, 0 to 100.
    #[serde(default = "hundred")]
    pub toxicity: f64,
}

fn hundred() -> f64 {
    100.0
}

impl ToxicSpec {
    pub fn new(toxic: Toxic) -> ToxicSpec {
        ToxicSpec { toxic, direction: Direction::Both, toxicity: 100.0 }
    }
}

/// Parses a size: `1000`, `50KB`, `2MB` (KB = 1000 bytes, KiB = 1024); no sign, no fraction.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let bad = || format!("`{s}` is not a size; write a whole number of bytes, e.g. 512, 50KB, 1MB");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "kib" => 1024,
        "mb" | "m" => 1_000_000,
        "mib" => 1024 * 1024,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Parses a rate in kilobytes per second as the SPEC writes it (`--rate 10` or `10KB/s`),
/// into bytes per second; `B/s` and `MB/s` are accepted too.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("`{s}` is not a rate; write kilobytes per second, e.g. 10, 10KB/s, 1MB/s");
    let body = t.strip_suffix("/s").unwrap_or(t);
    if body.chars().all(|c| c.is_ascii_digit()) {
        let kb: u64 = body.parse().map_err(|_| bad())?;
        return kb.checked_mul(1000).ok_or_else(bad);
    }
    parse_size(body).map_err(|_| bad())
}

/// `a, b and c` (or `a, b or c`): a list of names for a message.
pub fn listed(names: &[String], last: &str) -> String {
    match names.split_last() {
        Some((only, [])) => only.clone(),
        Some((tail, rest)) => format!("{} {last} {tail}", rest.join(", ")),
        None => String::new(),
    }
}

/// A wire duration parameter in milliseconds; the same words as every other duration.
pub fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates_parse_in_the_units_users_write_and_refuse_signs() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("50KB").unwrap(), 50_000);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert!(parse_size("-5").is_err());
        assert!(parse_size("1.5KB").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_rate("10").unwrap(), 10_000);
        assert_eq!(parse_rate("10KB/s").unwrap(), 10_000);
        assert_eq!(parse_rate("500B/s").unwrap(), 500);
        assert!(parse_rate("-10").unwrap_err().contains("not a rate"));
    }

    #[test]
    fn toxics_serialize_with_their_cli_names() {
        let spec = ToxicSpec { toxic: Toxic::LimitData { bytes: 10 }, direction: Direction::Down, toxicity: 50.0 };
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v, serde_json::json!({"toxic": "limit-data", "bytes": 10, "direction": "down", "toxicity": 50.0}));
        assert_eq!(serde_json::from_value::<ToxicSpec>(v).unwrap(), spec);
        assert!(ToxicKind::parse("explode").unwrap_err().contains("latency, bandwidth, slow-close"));
        for k in ToxicKind::ALL {
            assert_eq!(ToxicKind::parse(k.as_str()).unwrap(), k);
        }
    }

    #[test]
    fn a_parameter_of_another_toxic_is_named_with_the_toxics_that_take_it() {
        assert_eq!(ToxicKind::Slicer.stray(&["size", "variation", "delay"]), None);
        assert_eq!(ToxicKind::Latency.stray(&[]), None);
        let (param, owners) = ToxicKind::Reset.stray(&["delay"]).unwrap();
        assert_eq!(param, "delay");
        assert_eq!(owners, [ToxicKind::Latency, ToxicKind::SlowClose, ToxicKind::Slicer]);
        assert_eq!(ToxicKind::Bandwidth.stray(&["rate", "bytes"]).unwrap().0, "bytes");
    }
}
