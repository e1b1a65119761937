//! What one refresh of `shop top` shows, and the [`Sampler`] that turns raw samples (the
//! supervisor's status and each instance's `/metrics` text) into it.
//!
//! Everything here is pure: rates are differences between two samples of the services' own
//! counters, so the services do no extra work per request for `top`.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::orchestrator::protocol::{InstanceState, PsRow};

/// The header's order rates are averaged over this window.
const ORDER_WINDOW_MS: i64 = 10_000;
/// The sparkline covers this much history.
const HISTORY_MS: i64 = 60_000;
/// Events kept for the events pane.
const MAX_EVENTS: usize = crate::orchestrator::protocol::MAX_EVENTS;

/// One refresh: the figures `--json` prints and every frame is drawn from.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Snapshot {
    /// When the sample was taken, unix milliseconds.
    pub at_ms: i64,
    /// Seconds between this sample and the one the rates are computed against (0 for the first).
    pub window_s: f64,
    pub orders: OrderRates,
    /// Orders finished (confirmed or failed) per second, one point per sample, oldest first,
    /// covering the last 60 s.
    pub throughput: Vec<f64>,
    /// Which points of `throughput` saw a restart or a fault, so the sparkline can mark them.
    pub marks: Vec<Mark>,
    pub instances: Vec<InstanceRow>,
    /// Recent events, newest last.
    pub events: Vec<Event>,
}

/// Orders per second over the last 10 s (or what history there is), from the order service's
/// `shop_order_orders` gauge.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct OrderRates {
    pub confirmed_per_s: f64,
    pub failed_per_s: f64,
    /// Orders placed and not yet finished, per second (net growth of the pending set).
    pub pending_per_s: f64,
    /// Orders pending right now.
    pub pending: u64,
}

/// One instance's row.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct InstanceRow {
    pub service: String,
    pub instance: String,
    pub state: InstanceState,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// `None` until two samples of its `/metrics` exist.
    pub requests_per_s: Option<f64>,
    /// Share of those requests answered 5xx; `None` when there were none.
    pub error_pct: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub breakers_open: u32,
    pub faults: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Mark {
    /// Index into [`Snapshot::throughput`].
    pub index: usize,
    pub kind: EventKind,
}

pub use crate::orchestrator::protocol::{EventKind, StackEvent as Event};

/// What `top` gathered at one instant: the supervisor's rows and each reachable instance's
/// metrics, already parsed.
#[derive(Clone, Debug, Default)]
pub struct RawSample {
    pub at_ms: i64,
    pub rows: Vec<PsRow>,
    /// The supervisor's recent events, oldest first.
    pub events: Vec<Event>,
    /// By instance name; an instance that did not answer is absent.
    pub metrics: BTreeMap<String, InstanceMetrics>,
}

/// The figures `top` needs from one `/metrics` page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceMetrics {
    pub requests: f64,
    pub errors: f64,
    /// Cumulative histogram of request latency over all traffic routes: (upper bound in
    /// seconds, count), sorted by bound; the last bound is infinity.
    pub buckets: Vec<(f64, f64)>,
    /// Breaker state by dependency: 0 closed, 1 open, 2 half open.
    pub breakers: BTreeMap<String, u8>,
    /// `shop_order_orders` by status, on order instances only.
    pub orders: BTreeMap<String, f64>,
}

impl InstanceMetrics {
    /// Reads the Prometheus text exposition the services write (`plumbing::metrics`).
    pub fn parse(text: &str) -> InstanceMetrics {
        let mut m = InstanceMetrics::default();
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, labels_of(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
            let traffic = !crate::plumbing::metrics::is_tooling_route(label("route"));
            match name {
                "shop_http_requests_total" if traffic => {
                    m.requests += value;
                    if label("status").starts_with('5') {
                        m.errors += value;
                    }
                }
                "shop_http_request_duration_seconds_bucket" if traffic => {
                    let bound = match label("le") {
                        "+Inf" => f64::INFINITY,
                        le => match le.parse::<f64>() {
                            Ok(b) => b,
                            Err(_) => continue,
                        },
                    };
                    // Bounds are keyed by their bits so equal bounds from different series add up.
                    buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += value;
                }
                "shop_breaker_state" => {
                    m.breakers.insert(label("dependency").to_string(), value as u8);
                }
                "shop_order_orders" => {
                    m.orders.insert(label("status").to_string(), value);
                }
                _ => {}
            }
        }
        m.buckets = buckets.into_values().collect();
        m.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        m
    }
}

/// `a="x",b="y"` as a map; values may contain escaped quotes.
fn labels_of(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

/// The latency below which `q` of the requests fell, in milliseconds, interpolated within the
/// bucket as Prometheus' `histogram_quantile` does; `None` without requests.
pub fn quantile_ms(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                // Beyond the last finite bucket all we know is "more than that bound".
                return Some(prev.0 * 1000.0);
            }
            let share = if count > prev.1 { (rank - prev.1) / (count - prev.1) } else { 1.0 };
            return Some((prev.0 + (bound - prev.0) * share) * 1000.0);
        }
        prev = (bound, count);
    }
    None
}

/// Keeps the history `top` needs between refreshes and derives each [`Snapshot`].
#[derive(Default)]
pub struct Sampler {
    /// The previous sample, for per-instance rates and for spotting events.
    last: Option<RawSample>,
    /// `(at_ms, confirmed, failed, total)` order counts, newest last, for the header rates.
    orders: VecDeque<(i64, f64, f64, f64)>,
    /// `(at_ms, orders finished per second, event kind if any)`, newest last.
    points: VecDeque<(i64, f64, Option<EventKind>)>,
    /// Breaker transitions seen between samples; the supervisor keeps the other events.
    breakers: VecDeque<Event>,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler::default()
    }

    /// Folds one sample in and returns what to show.
    pub fn absorb(&mut self, raw: RawSample) -> Snapshot {
        let prev = self.last.take();
        let window_s = prev.as_ref().map(|p| (raw.at_ms - p.at_ms).max(1) as f64 / 1000.0).unwrap_or(0.0);
        // The supervisor's events since the last sample, and the breakers' transitions between
        // the two samples of the instances' metrics.
        let mut new_events = Vec::new();
        if let Some(p) = &prev {
            new_events.extend(raw.events.iter().filter(|e| !p.events.contains(e)).cloned());
            breaker_events(p, &raw, &mut new_events);
        }
        let instances = raw
            .rows
            .iter()
            .map(|row| {
                let now = raw.metrics.get(&row.instance);
                let before = prev.as_ref().and_then(|p| p.metrics.get(&row.instance));
                instance_row(row, now, before, window_s)
            })
            .collect();

        // Order figures: replicas share one database, so the first order instance that answered
        // speaks for all of them.
        let counts = raw.metrics.values().find(|m| !m.orders.is_empty()).map(|m| {
            let get = |s: &str| m.orders.get(s).copied().unwrap_or(0.0);
            (get("CONFIRMED"), get("FAILED"), get("PENDING"))
        });
        let mut orders = OrderRates::default();
        let mut finished_per_s = 0.0;
        if let Some((confirmed, failed, pending)) = counts {
            let total = confirmed + failed + pending;
            if let Some(&(at, c, f, _)) = self.orders.back() {
                let dt = (raw.at_ms - at).max(1) as f64 / 1000.0;
                finished_per_s = ((confirmed - c).max(0.0) + (failed - f).max(0.0)) / dt;
            }
            self.orders.push_back((raw.at_ms, confirmed, failed, total));
            while self.orders.len() > 2 && self.orders[1].0 <= raw.at_ms - ORDER_WINDOW_MS {
                self.orders.pop_front();
            }
            if let (Some(first), true) = (self.orders.front(), self.orders.len() > 1) {
                let dt = (raw.at_ms - first.0).max(1) as f64 / 1000.0;
                orders.confirmed_per_s = (confirmed - first.1).max(0.0) / dt;
                orders.failed_per_s = (failed - first.2).max(0.0) / dt;
                let finished = (confirmed - first.1) + (failed - first.2);
                orders.pending_per_s = ((total - first.3) - finished).max(0.0) / dt;
            }
            orders.pending = pending as u64;
        }
        if prev.is_some() {
            let mark = new_events
                .iter()
                .map(|e: &Event| e.kind)
                .find(|k| matches!(k, EventKind::Restart | EventKind::FaultApplied))
                .or(new_events.first().map(|e| e.kind));
            self.points.push_back((raw.at_ms, finished_per_s, mark));
        }
        while self.points.front().is_some_and(|p| p.0 <= raw.at_ms - HISTORY_MS) {
            self.points.pop_front();
        }
        self.breakers.extend(new_events.into_iter().filter(|e| e.kind == EventKind::Breaker));
        while self.breakers.len() > MAX_EVENTS {
            self.breakers.pop_front();
        }
        let mut events: Vec<Event> = raw.events.iter().chain(&self.breakers).cloned().collect();
        events.sort_by_key(|e| e.at_ms);
        let events = events.split_off(events.len().saturating_sub(MAX_EVENTS));
        let throughput = self.points.iter().map(|p| p.1).collect();
        let marks =
            self.points.iter().enumerate().filter_map(|(index, p)| p.2.map(|kind| Mark { index, kind })).collect();
        let snapshot = Snapshot { at_ms: raw.at_ms, window_s, orders, throughput, marks, instances, events };
        self.last = Some(raw);
        snapshot
    }
}

fn instance_row(
    row: &PsRow,
    now: Option<&InstanceMetrics>,
    before: Option<&InstanceMetrics>,
    window_s: f64,
) -> InstanceRow {
    let mut out = InstanceRow {
        service: row.service.clone(),
        instance: row.instance.clone(),
        state: row.state,
        pid: row.pid,
        restarts: row.restarts,
        faults: row.faults.clone(),
        breakers_open: now.map(|m| m.breakers.values().filter(|s| **s == 1).count() as u32).unwrap_or(0),
        ..Default::default()
    };
    let (Some(now), Some(before)) = (now, before) else { return out };
    // A restarted process starts its counters from zero: then the whole count is new.
    let restarted = now.requests < before.requests;
    let base = |b: f64| if restarted { 0.0 } else { b };
    let requests = now.requests - base(before.requests);
    let errors = (now.errors - base(before.errors)).max(0.0);
    if window_s > 0.0 {
        out.requests_per_s = Some(requests / window_s);
    }
    if requests > 0.0 {
        out.error_pct = Some(100.0 * errors / requests);
        let delta: Vec<(f64, f64)> = now
            .buckets
            .iter()
            .map(|&(bound, n)| {
                let old = before.buckets.iter().find(|b| b.0 == bound).map(|b| b.1).unwrap_or(0.0);
                (bound, (n - base(old)).max(0.0))
            })
            .collect();
        out.p50_ms = quantile_ms(&delta, 0.5);
        out.p99_ms = quantile_ms(&delta, 0.99);
    }
    out
}

/// Breaker transitions between two samples of the instances' metrics.
fn breaker_events(prev: &RawSample, now: &RawSample, out: &mut Vec<Event>) {
    for (instance, b) in &now.metrics {
        let Some(a) = prev.metrics.get(instance) else { continue };
        for (dep, state) in &b.breakers {
            let was = a.breakers.get(dep).copied().unwrap_or(0);
            if was != *state {
                out.push(Event {
                    at_ms: now.at_ms,
                    instance: instance.clone(),
                    kind: EventKind::Breaker,
                    text: format!("breaker to {dep}: {} -> {}", breaker_name(was), breaker_name(*state)),
                });
            }
        }
    }
}

fn breaker_name(state: u8) -> &'static str {
    match state {
        0 => "closed",
        1 => "open",
        _ => "half-open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP shop_http_requests_total Requests served, by route and status.
shop_http_requests_total{service="order",instance="order",route="/v1/orders",method="POST",status="201"} 90
shop_http_requests_total{service="order",instance="order",route="/v1/orders",method="POST",status="503"} 10
shop_http_requests_total{service="order",instance="order",route="/healthz",method="GET",status="200"} 500
shop_http_request_duration_seconds_bucket{service="order",instance="order",route="/v1/orders",method="POST",status="201",le="0.01"} 50
shop_http_request_duration_seconds_bucket{service="order",instance="order",route="/v1/orders",method="POST",status="201",le="0.1"} 90
shop_http_request_duration_seconds_bucket{service="order",instance="order",route="/v1/orders",method="POST",status="201",le="+Inf"} 90
shop_http_request_duration_seconds_bucket{service="order",instance="order",route="/v1/orders",method="POST",status="503",le="0.01"} 10
shop_http_request_duration_seconds_bucket{service="order",instance="order",route="/v1/orders",method="POST",status="503",le="0.1"} 10
shop_http_request_duration_seconds_bucket{service="order",instance="order",route="/v1/orders",method="POST",status="503",le="+Inf"} 10
shop_breaker_state{dependency="payment"} 1
shop_breaker_state{dependency="user"} 0
shop_order_orders{status="CONFIRMED"} 80
shop_order_orders{status="PENDING"} 2
"#;

    #[test]
    fn a_metrics_page_gives_traffic_without_health_probes_and_open_breakers() {
        let m = InstanceMetrics::parse(PAGE);
        assert_eq!(m.requests, 100.0);
        assert_eq!(m.errors, 10.0);
        assert_eq!(m.buckets, vec![(0.01, 60.0), (0.1, 100.0), (f64::INFINITY, 100.0)]);
        assert_eq!(m.breakers.get("payment"), Some(&1));
        assert_eq!(m.orders.get("CONFIRMED"), Some(&80.0));
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let b = [(0.01, 60.0), (0.1, 100.0), (f64::INFINITY, 100.0)];
        let p50 = quantile_ms(&b, 0.5).unwrap();
        assert!((p50 - 8.333).abs() < 0.01, "{p50}");
        assert!(quantile_ms(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.5).is_none());
    }

    fn row(instance: &str, state: InstanceState, restarts: u32, faults: &[&str]) -> PsRow {
        PsRow {
            service: instance.into(),
            instance: instance.into(),
            pid: Some(1),
            address: None,
            state,
            restarts,
            uptime_s: 1,
            faults: faults.iter().map(|s| s.to_string()).collect(),
            detail: None,
        }
    }

    #[test]
    fn two_samples_give_rates_events_and_a_marked_sparkline_point() {
        let mut s = Sampler::new();
        let rows = vec![row("order", InstanceState::Healthy, 0, &[]), row("payment", InstanceState::Healthy, 0, &[])];
        let first = RawSample {
            at_ms: 1_000,
            rows: rows.clone(),
            events: Vec::new(),
            metrics: [("order".to_string(), InstanceMetrics::parse(PAGE))].into(),
        };
        let snap = s.absorb(first);
        assert_eq!(snap.instances[0].requests_per_s, None);
        let page2 =
            PAGE.replace("status=\"201\"} 90", "status=\"201\"} 110").replace("le=\"0.1\"} 90", "le=\"0.1\"} 110");
        let page2 =
            page2.replace("le=\"+Inf\"} 90", "le=\"+Inf\"} 110").replace("\"CONFIRMED\"} 80", "\"CONFIRMED\"} 90");
        let killed =
            vec![row("order", InstanceState::Healthy, 0, &[]), row("payment", InstanceState::Killed, 0, &["killed"])];
        // The supervisor's events, and a breaker that opened between the two scrapes of `order`.
        let event = |kind, text: &str| Event { at_ms: 2_500, instance: "payment".into(), kind, text: text.into() };
        let events = vec![event(EventKind::FaultApplied, "fault killed"), event(EventKind::State, "healthy -> killed")];
        let page2 =
            page2.replace("shop_breaker_state{dependency=\"user\"} 0", "shop_breaker_state{dependency=\"user\"} 1");
        let second = RawSample {
            at_ms: 3_000,
            rows: killed,
            events,
            metrics: [("order".to_string(), InstanceMetrics::parse(&page2))].into(),
        };
        let snap = s.absorb(second);
        assert_eq!(snap.instances[0].requests_per_s, Some(10.0));
        assert_eq!(snap.instances[0].error_pct, Some(0.0));
        assert_eq!(snap.instances[0].breakers_open, 2);
        assert_eq!(snap.orders.confirmed_per_s, 5.0);
        assert_eq!(snap.throughput, vec![5.0]);
        assert_eq!(snap.marks, vec![Mark { index: 0, kind: EventKind::FaultApplied }]);
        let texts: Vec<_> = snap.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, vec!["fault killed", "healthy -> killed", "breaker to user: closed -> open"]);
        // A later sample keeps the supervisor's events and the breaker's, in time order, and
        // marks no new point for events already shown.
        let third = RawSample { at_ms: 4_000, ..s.last.clone().unwrap() };
        let snap = s.absorb(third);
        let texts: Vec<_> = snap.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, vec!["fault killed", "healthy -> killed", "breaker to user: closed -> open"]);
        assert_eq!(snap.marks, vec![Mark { index: 0, kind: EventKind::FaultApplied }]);
    }
}
