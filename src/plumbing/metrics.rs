//! Request metrics in Prometheus text format: counters and latency histograms by route and status.
//!
//! The instance label is `shop_instance`, not `instance`: Prometheus sets `instance` itself on
//! every scrape (to the scraped address) and would rename ours to `exported_instance`.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The series of one route, by (method, status).
type ByMethodStatus = HashMap<(&'static str, u16), Series>;

#[derive(Default)]
struct Series {
    count: u64,
    sum_s: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Everything one process has served, keyed route → (method, status).
///
/// The outer key is a `String` so a lookup by the matched route's `&str` needs no allocation;
/// the lock is held for a few adds, never across an await.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<HashMap<String, ByMethodStatus>>,
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let by_route = match map.get_mut(route) {
            Some(m) => m,
            None => map.entry(route.to_string()).or_default(),
        };
        let series = by_route.entry((static_method(method), status)).or_default();
        series.count += 1;
        series.sum_s += secs;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            series.buckets[i] += 1;
        }
    }

    /// The text exposition of every series, followed by `extra` (service-specific gauges).
    pub fn render(&self, service: &str, instance: &str, extra: &str) -> String {
        let map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(4096);
        let labels = |route: &str, method: &str, status: u16| {
            format!(
                "service=\"{service}\",shop_instance=\"{}\",route=\"{}\",method=\"{method}\",status=\"{status}\"",
                escape(instance),
                escape(route)
            )
        };
        out.push_str("# HELP shop_http_requests_total Requests served, by route and status.\n");
        out.push_str("# TYPE shop_http_requests_total counter\n");
        let mut rows: Vec<_> = map
            .iter()
            .flat_map(|(route, m)| m.iter().map(move |((method, status), s)| (route, method, *status, s)))
            .collect();
        rows.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        for (route, method, status, s) in &rows {
            let _ = writeln!(out, "shop_http_requests_total{{{}}} {}", labels(route, method, *status), s.count);
        }
        out.push_str("# HELP shop_http_request_duration_seconds Request latency, by route and status.\n");
        out.push_str("# TYPE shop_http_request_duration_seconds histogram\n");
        for (route, method, status, s) in &rows {
            let l = labels(route, method, *status);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(s.buckets.iter()) {
                cumulative += n;
                let _ = writeln!(out, "shop_http_request_duration_seconds_bucket{{{l},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "shop_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "shop_http_request_duration_seconds_sum{{{l}}} {}", s.sum_s);
            let _ = writeln!(out, "shop_http_request_duration_seconds_count{{{l}}} {}", s.count);
        }
        // The service's own families (sagas, outbox, stock, breakers, the span exporter) get the
        // same `service` and `shop_instance` labels, so a dashboard grouped by instance keeps them.
        let ours = format!("service=\"{service}\",shop_instance=\"{}\"", escape(instance));
        for line in extra.lines() {
            match line.split_once([' ', '{']) {
                Some((name, rest)) if !line.starts_with('#') && !name.is_empty() => {
                    let sep = if line.as_bytes()[name.len()] == b'{' { "," } else { "} " };
                    let rest = if sep == "," { rest } else { rest.trim_start() };
                    let _ = writeln!(out, "{name}{{{ours}{sep}{rest}");
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The method as a static string, so recording a request allocates nothing.
fn static_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// Appends one gauge (with its HELP and TYPE lines) to `out`.
pub fn gauge(out: &mut String, name: &str, help: &str, labels: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Appends one counter (a running total; its name ends in `_total`) to `out`.
pub fn counter(out: &mut String, name: &str, help: &str, labels: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// The content type of the text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `x` rounded to `decimals` places, for figures in reports (`12.35 ms`, not `12.3456789 ms`).
pub fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// Whether `route` is the tooling talking to a service (health probes, scrapes, admin calls)
/// rather than traffic: counted as traffic, it would show a busy service where nothing happens.
pub fn is_tooling_route(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics") || route.starts_with("/admin")
}

/// The `route` label of a series, as [`Metrics::render`] writes it.
fn route_of(series: &str) -> &str {
    series.split("route=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("")
}

/// Request figures read back from one or more `/metrics` texts, summed over the traffic routes
/// (not the tooling's: [`is_tooling_route`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestFigures {
    pub requests: f64,
    /// Answers with a 5xx status.
    pub errors: f64,
    /// Cumulative latency histogram: upper bound in µs (`u64::MAX` for `+Inf`) → requests.
    pub buckets: std::collections::BTreeMap<u64, f64>,
}

impl RequestFigures {
    /// Adds the request counters and latency buckets of one exposition text (as [`Metrics::render`]
    /// writes it); other series are ignored.
    pub fn add_text(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            if is_tooling_route(route_of(series)) {
                continue;
            }
            let value: f64 = value.parse().unwrap_or(0.0);
            if series.starts_with("shop_http_requests_total{") {
                self.requests += value;
                if series.contains("status=\"5") {
                    self.errors += value;
                }
            } else if let Some(rest) = series.strip_prefix("shop_http_request_duration_seconds_bucket{") {
                if let Some(le) = rest.split("le=\"").nth(1).and_then(|l| l.split('"').next()) {
                    let bound = if le == "+Inf" { u64::MAX } else { (le.parse::<f64>().unwrap_or(0.0) * 1e6) as u64 };
                    *self.buckets.entry(bound).or_default() += value;
                }
            }
        }
    }

    /// The share of requests answered with a 5xx, 0 when there were none.
    pub fn error_rate(&self) -> f64 {
        if self.requests > 0.0 {
            self.errors / self.requests
        } else {
            0.0
        }
    }

    /// Upper estimates of the latency at `quantile` (0..=1), in ms: the bound of the first bucket
    /// holding it. `None` without requests, or when it lies beyond the last finite bucket.
    pub fn latency_ms(&self, quantile: f64) -> Option<f64> {
        let total = self.buckets.get(&u64::MAX).copied().unwrap_or(0.0);
        if total <= 0.0 {
            return None;
        }
        let bound = self.buckets.iter().find(|(_, c)| **c >= quantile * total).map(|(b, _)| *b)?;
        (bound != u64::MAX).then(|| bound as f64 / 1000.0)
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counted() {
        let m = Metrics::default();
        m.record("GET", "/healthz", 200, Duration::from_micros(300));
        m.record("GET", "/healthz", 200, Duration::from_millis(30));
        let text = m.render("user", "user-1", "");
        assert!(text.contains(
            r#"shop_http_requests_total{service="user",shop_instance="user-1",route="/healthz",method="GET",status="200"} 2"#
        ));
        assert!(text.contains(r#"le="0.0005"} 1"#));
        assert!(text.contains(r#"le="0.05"} 2"#));
        assert!(text.contains(r#"le="+Inf"} 2"#));
    }

    #[test]
    fn the_services_own_families_get_the_instance_labels_too() {
        let extra = "# HELP a_gauge x\n# TYPE a_gauge gauge\na_gauge 3\nb_total{dependency=\"pay\"} 2\n";
        let text = Metrics::default().render("order", "order-2", extra);
        assert!(text.contains("\na_gauge{service=\"order\",shop_instance=\"order-2\"} 3\n"), "{text}");
        assert!(
            text.contains("\nb_total{service=\"order\",shop_instance=\"order-2\",dependency=\"pay\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("\n# TYPE a_gauge gauge\n"), "{text}");
    }

    #[test]
    fn rendered_figures_read_back_with_errors_and_quantiles() {
        let m = Metrics::default();
        for _ in 0..9 {
            m.record("GET", "/v1/x", 200, Duration::from_micros(300));
        }
        m.record("POST", "/v1/x", 503, Duration::from_millis(30));
        let mut figures = RequestFigures::default();
        figures.add_text(&m.render("user", "user-1", "# HELP other\nother_gauge 7\n"));
        assert_eq!((figures.requests, figures.errors), (10.0, 1.0));
        assert!((figures.error_rate() - 0.1).abs() < 1e-9);
        assert_eq!(figures.latency_ms(0.5), Some(0.5));
        assert_eq!(figures.latency_ms(0.99), Some(50.0));
        assert_eq!(RequestFigures::default().latency_ms(0.5), None);
    }

    #[test]
    fn round_keeps_the_asked_decimals() {
        assert_eq!(round(12.3456, 2), 12.35);
        assert_eq!(round(0.0004, 3), 0.0);
    }
}
