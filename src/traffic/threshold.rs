//! k6-like pass/fail thresholds over a load's figures (SPEC section 14): `p99<50ms`,
//! `errors<1%`, `confirmed>90%`, `rate>=95%`, `dropped==0`.
//!
//! This is the one grammar for these expressions: `shop load --threshold`, a drill's
//! `steady_state.thresholds` and its `halt:` rules all parse here, so a typo gets the same
//! message everywhere (a flag as a usage error, a drill file at its `FILE:LINE:COL`).
//!
//! A [`Threshold`] is parsed once from its text and then evaluated against [`Measures`], the
//! handful of figures any window of orders comes to. `shop load` builds its `Measures` from the
//! run's [`Summary`]; a drill builds them from its steady-state probe or from the last seconds
//! of its load (a halt rule such as `errors>20%` or `p99>500ms` is the same expression, read as
//! "fire when it holds").
//!
//! ```
//! use shop::traffic::threshold::{Measures, Threshold};
//! let t: Threshold = "errors<1%".parse().unwrap();
//! let m = Measures { orders: 200, errors: 1, ..Measures::default() };
//! let row = t.evaluate(&m);
//! assert!(row.pass);
//! assert_eq!(row.observed_text(), "0.50%");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::engine::Summary;

/// What every parse error ends with, so a typo is answered with the forms that work.
pub const ACCEPTED_FORMS: &str = "a threshold is METRIC OP VALUE with METRIC one of p50, p90, p99, p999, max \
     (VALUE in ms, s or us; a bare number is ms), errors, confirmed, failed, dropped (VALUE a count or a \
     percentage of the orders offered, started or dropped, at most 100%), rate (VALUE a percentage of the target rate, or orders/s), and OP one of \
     < <= > >= ==; e.g. p99<50ms, errors<1%, confirmed>90%, rate>=95%, dropped==0";

/// The figure a threshold looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    P50,
    P90,
    P99,
    P999,
    Max,
    Errors,
    Confirmed,
    Failed,
    Dropped,
    /// The achieved start rate.
    Rate,
}

impl Metric {
    const ALL: [(&'static str, Metric); 10] = [
        ("p50", Metric::P50),
        ("p90", Metric::P90),
        ("p99", Metric::P99),
        ("p999", Metric::P999),
        ("max", Metric::Max),
        ("errors", Metric::Errors),
        ("confirmed", Metric::Confirmed),
        ("failed", Metric::Failed),
        ("dropped", Metric::Dropped),
        ("rate", Metric::Rate),
    ];

    /// Whether the bound is a duration (a latency quantile) rather than a count or a share.
    pub fn is_latency(self) -> bool {
        matches!(self, Metric::P50 | Metric::P90 | Metric::P99 | Metric::P999 | Metric::Max)
    }

    pub fn name(self) -> &'static str {
        // ALL names every variant, so the search always finds one.
        Metric::ALL.iter().find(|(_, m)| *m == self).map_or("?", |(n, _)| n)
    }
}

/// How the observed figure is compared with the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
}

impl Op {
    /// Two-character operators first, so `<=` is not read as `<` followed by `=5`.
    const ALL: [(&'static str, Op); 5] = [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("<", Op::Lt), (">", Op::Gt)];

    fn holds(self, observed: f64, bound: f64) -> bool {
        match self {
            Op::Lt => observed < bound,
            Op::Le => observed <= bound,
            Op::Gt => observed > bound,
            Op::Ge => observed >= bound,
            // Figures are rounded for display, and `==` is meant for counts such as `dropped==0`.
            Op::Eq => (observed - bound).abs() < 1e-9,
        }
    }

    pub fn symbol(self) -> &'static str {
        // ALL names every variant, so the search always finds one.
        Op::ALL.iter().find(|(_, o)| *o == self).map_or("?", |(s, _)| s)
    }
}

/// The bound's unit decides which figure is compared: a count or a share of the orders, a
/// share of the target rate or an absolute rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "unit", content = "value", rename_all = "snake_case")]
pub enum Bound {
    /// Latency in milliseconds (written `ms`, `s`, `us` or bare).
    Millis(f64),
    /// Percent of the orders, or for `rate` of the target rate.
    Percent(f64),
    /// A number of orders.
    Count(f64),
    /// Orders started per second (`rate` only).
    PerSecond(f64),
}

impl Bound {
    fn value(self) -> f64 {
        match self {
            Bound::Millis(v) | Bound::Percent(v) | Bound::Count(v) | Bound::PerSecond(v) => v,
        }
    }
}

/// One parsed threshold, e.g. `p99<50ms`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threshold {
    /// The text as the user wrote it (trimmed), for the result table.
    pub expression: String,
    pub metric: Metric,
    pub op: Op,
    pub bound: Bound,
}

impl Threshold {
    /// `rate>=95%` compares with the target start rate, which only an open loop has: judged on a
    /// closed loop it could only ever fail, so the callers refuse it up front.
    pub fn needs_target_rate(&self) -> bool {
        self.metric == Metric::Rate && matches!(self.bound, Bound::Percent(_))
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

/// A threshold's text that does not parse; the message ends with [`ACCEPTED_FORMS`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{expression}` is not a threshold: {reason}; {ACCEPTED_FORMS}")]
pub struct ThresholdError {
    pub expression: String,
    pub reason: String,
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Threshold, ThresholdError> {
        Threshold::parse(s)
    }
}

impl Threshold {
    /// Parses `METRIC OP VALUE` (spaces allowed around each part).
    pub fn parse(text: &str) -> Result<Threshold, ThresholdError> {
        let expression = text.trim().to_string();
        let fail = |reason: String| ThresholdError { expression: expression.clone(), reason };
        let Some((at, op_text, op)) = (0..expression.len())
            .filter(|i| expression.is_char_boundary(*i))
            .find_map(|i| Op::ALL.iter().find(|(s, _)| expression[i..].starts_with(s)).map(|(s, o)| (i, *s, *o)))
        else {
            return Err(fail("no comparison operator".into()));
        };
        let name = expression[..at].trim();
        let value = expression[at + op_text.len()..].trim();
        // `p99.9` is how many people write the 99.9th percentile.
        let canonical = if name == "p99.9" { "p999" } else { name };
        let Some(metric) = Metric::ALL.iter().find(|(n, _)| n.eq_ignore_ascii_case(canonical)).map(|(_, m)| *m) else {
            return Err(fail(format!("unknown metric `{name}`")));
        };
        let bound = parse_bound(metric, value).map_err(fail)?;
        Ok(Threshold { expression, metric, op, bound })
    }

    /// Compares the figure this threshold looks at with its bound. A figure that cannot be
    /// observed (a share of no orders, a target rate in a closed-loop run) never passes.
    pub fn evaluate(&self, m: &Measures) -> ThresholdResult {
        let observed = m.observe(self.metric, self.bound);
        let pass = observed.is_some_and(|o| self.op.holds(o, self.bound.value()));
        ThresholdResult { expression: self.expression.clone(), observed, unit: Unit::of(self.bound), pass }
    }
}

fn parse_bound(metric: Metric, value: &str) -> Result<Bound, String> {
    let number = |digits: &str| -> Result<f64, String> {
        match digits.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(format!("`{value}` is not a number of 0 or more")),
        }
    };
    if value.is_empty() {
        return Err("no value after the operator".into());
    }
    if metric.is_latency() {
        let (digits, scale) = if let Some(d) = value.strip_suffix("ms") {
            (d, 1.0)
        } else if let Some(d) = value.strip_suffix("us").or_else(|| value.strip_suffix("µs")) {
            (d, 0.001)
        } else if let Some(d) = value.strip_suffix('s') {
            (d, 1000.0)
        } else {
            (value, 1.0)
        };
        return Ok(Bound::Millis(number(digits)? * scale));
    }
    if let Some(d) = value.strip_suffix('%') {
        let p = number(d)?;
        // A share of the orders cannot pass 100%; the achieved rate can beat its target.
        if p > 100.0 && metric != Metric::Rate {
            return Err(format!("`{value}`: a share of the orders is at most 100%"));
        }
        return Ok(Bound::Percent(p));
    }
    if metric == Metric::Rate {
        let d = value.strip_suffix("/s").unwrap_or(value);
        return Ok(Bound::PerSecond(number(d)?));
    }
    if value.ends_with("ms") || value.ends_with('s') {
        return Err(format!("`{}` is a count or a percentage, not a duration", metric.name()));
    }
    Ok(Bound::Count(number(value)?))
}

/// The figures a window of orders came to, in the units thresholds compare.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Measures {
    /// Orders that started (whatever they came to).
    pub orders: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub errors: u64,
    /// Orders the schedule called for that could not start (open loop, concurrency cap).
    pub dropped: u64,
    /// Latency percentiles in ms; from the scheduled start in an open-loop run.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Orders per second the schedule asked for; `None` in a closed-loop run.
    pub target_rate: Option<f64>,
    /// Orders per second that actually started.
    pub achieved_rate: f64,
}

impl From<&Summary> for Measures {
    fn from(s: &Summary) -> Measures {
        Measures {
            orders: s.orders,
            confirmed: s.confirmed,
            failed: s.failed,
            errors: s.errors,
            dropped: s.dropped,
            p50_ms: s.latency_ms.p50,
            p90_ms: s.latency_ms.p90,
            p99_ms: s.latency_ms.p99,
            p999_ms: s.latency_ms.p999,
            max_ms: s.latency_ms.max,
            target_rate: s.target_rate_per_s,
            achieved_rate: s.achieved_rate_per_s,
        }
    }
}

impl Measures {
    /// Sets the latency figures from the latencies (in µs) of the orders a window saw answered,
    /// by nearest rank, as a halt rule judges its last seconds.
    pub fn with_latencies_us(mut self, latencies_us: &mut [u64]) -> Measures {
        latencies_us.sort_unstable();
        let at = |q: f64| -> f64 {
            let Some(last) = latencies_us.len().checked_sub(1) else { return 0.0 };
            let rank = ((q * latencies_us.len() as f64).ceil() as usize).saturating_sub(1).min(last);
            latencies_us[rank] as f64 / 1000.0
        };
        (self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms) =
            (at(0.5), at(0.9), at(0.99), at(0.999), at(1.0));
        self
    }

    /// Orders the run offered: those that started and those dropped at the cap.
    fn offered(&self) -> u64 {
        self.orders + self.dropped
    }

    fn observe(&self, metric: Metric, bound: Bound) -> Option<f64> {
        let share = |n: u64, of: u64| (of > 0).then(|| n as f64 * 100.0 / of as f64);
        let count_or_share = |n: u64, of: u64| match bound {
            Bound::Percent(_) => share(n, of),
            _ => Some(n as f64),
        };
        // No order answered means no latency was measured, which cannot meet a bound honestly.
        let latency = |ms: f64| (self.orders > 0).then_some(ms);
        match metric {
            Metric::P50 => latency(self.p50_ms),
            Metric::P90 => latency(self.p90_ms),
            Metric::P99 => latency(self.p99_ms),
            Metric::P999 => latency(self.p999_ms),
            Metric::Max => latency(self.max_ms),
            // Shares of what the schedule offered, the orders that started plus those dropped, so
            // they add up to 100%: an order dropped at the cap is a user never served, and
            // `confirmed==100%` cannot pass while users were turned away.
            Metric::Errors => count_or_share(self.errors, self.offered()),
            Metric::Confirmed => count_or_share(self.confirmed, self.offered()),
            Metric::Failed => count_or_share(self.failed, self.offered()),
            Metric::Dropped => count_or_share(self.dropped, self.offered()),
            Metric::Rate => match bound {
                Bound::Percent(_) => self.target_rate.filter(|t| *t > 0.0).map(|t| self.achieved_rate * 100.0 / t),
                _ => Some(self.achieved_rate),
            },
        }
    }
}

/// The unit of an observed figure, for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Ms,
    Percent,
    Count,
    PerSecond,
}

impl Unit {
    fn of(bound: Bound) -> Unit {
        match bound {
            Bound::Millis(_) => Unit::Ms,
            Bound::Percent(_) => Unit::Percent,
            Bound::Count(_) => Unit::Count,
            Bound::PerSecond(_) => Unit::PerSecond,
        }
    }
}

/// One row of the threshold table: the expression, what was observed, and whether it held.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThresholdResult {
    pub expression: String,
    /// `None` when the figure could not be observed (no orders; no target rate in closed loop).
    pub observed: Option<f64>,
    pub unit: Unit,
    pub pass: bool,
}

impl ThresholdResult {
    /// The observed figure with its unit, e.g. `57.20 ms`, `0.50%`, `3`, `98.0 orders/s`, `n/a`.
    pub fn observed_text(&self) -> String {
        match (self.observed, self.unit) {
            (None, _) => "n/a".to_string(),
            (Some(v), Unit::Ms) => format!("{v:.2} ms"),
            (Some(v), Unit::Percent) => format!("{v:.2}%"),
            (Some(v), Unit::Count) => format!("{v:.0}"),
            (Some(v), Unit::PerSecond) => format!("{v:.1} orders/s"),
        }
    }
}

impl fmt::Display for ThresholdResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.pass { "pass" } else { "FAIL" };
        write!(f, "{}: observed {} ({verdict})", self.expression, self.observed_text())
    }
}

/// Evaluates every threshold against the same figures, in the order given.
pub fn evaluate_all(thresholds: &[Threshold], m: &Measures) -> Vec<ThresholdResult> {
    thresholds.iter().map(|t| t.evaluate(m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Threshold {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn measures() -> Measures {
        Measures {
            orders: 200,
            confirmed: 190,
            failed: 8,
            errors: 2,
            dropped: 0,
            p50_ms: 4.0,
            p90_ms: 9.0,
            p99_ms: 42.5,
            p999_ms: 80.0,
            max_ms: 120.0,
            target_rate: Some(100.0),
            achieved_rate: 97.0,
        }
    }

    #[test]
    fn the_spec_examples_parse_into_typed_thresholds() {
        assert_eq!(t("p99<50ms").bound, Bound::Millis(50.0));
        assert_eq!(t("p50 < 10ms").op, Op::Lt);
        assert_eq!(t("p90<0.5s").bound, Bound::Millis(500.0));
        assert_eq!(t("max<=200").bound, Bound::Millis(200.0));
        assert_eq!(t("p999<1s").metric, Metric::P999);
        assert_eq!(t("p99.9<1s").metric, Metric::P999);
        assert_eq!(t("rate>=110%").bound, Bound::Percent(110.0));
        assert_eq!(t("errors<1%").bound, Bound::Percent(1.0));
        assert_eq!(t("confirmed>90%").metric, Metric::Confirmed);
        assert_eq!(t("failed<5").bound, Bound::Count(5.0));
        let rate = t("rate>=95%");
        assert_eq!((rate.metric, rate.op, rate.bound), (Metric::Rate, Op::Ge, Bound::Percent(95.0)));
        assert_eq!(t("rate>50/s").bound, Bound::PerSecond(50.0));
        let dropped = t(" dropped==0 ");
        assert_eq!((dropped.op, dropped.bound, dropped.expression.as_str()), (Op::Eq, Bound::Count(0.0), "dropped==0"));
    }

    #[test]
    fn malformed_thresholds_are_refused_with_the_accepted_forms() {
        for bad in
            ["p99", "p95<50ms", "p99<fast", "errors<1ms", "p99<-3ms", "<5", "dropped==", "rate>=NaN%", "errors<120%"]
        {
            let e = bad.parse::<Threshold>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("`{bad}` is not a threshold")), "{e}");
            assert!(e.contains("p99<50ms, errors<1%, confirmed>90%, rate>=95%, dropped==0"), "{e}");
        }
        assert!(Threshold::parse("p95<50ms").unwrap_err().reason.contains("unknown metric `p95`"));
    }

    #[test]
    fn thresholds_compare_the_figure_their_unit_names() {
        let m = measures();
        let row = |s: &str| t(s).evaluate(&m);
        assert!(row("p99<50ms").pass);
        assert!(!row("p99<40ms").pass);
        assert_eq!(row("p99<40ms").observed_text(), "42.50 ms");
        assert!(row("errors<=1%").pass);
        assert!(!row("errors<1%").pass);
        assert!(row("confirmed>90%").pass);
        assert!(row("failed<10").pass);
        assert_eq!(row("rate>=95%").observed, Some(97.0));
        assert!(row("rate>=95%").pass);
        assert!(!row("rate>=98%").pass);
        assert!(row("rate>90/s").pass);
        assert!(row("dropped==0").pass);
        assert!(row("dropped<1%").pass);
    }

    #[test]
    fn shares_are_of_the_orders_offered_so_drops_count_against_them() {
        // 40 offered: 16 started and confirmed, 24 dropped at the cap.
        let m = Measures { orders: 16, confirmed: 16, dropped: 24, ..Measures::default() };
        let row = |s: &str| t(s).evaluate(&m);
        assert_eq!(row("confirmed==100%").observed, Some(40.0));
        assert!(!row("confirmed==100%").pass);
        assert_eq!(row("dropped<=100%").observed, Some(60.0));
        assert_eq!(row("errors<1%").observed, Some(0.0));
        assert!(row("confirmed==16").pass, "a count is still a count");
    }

    #[test]
    fn a_window_of_latencies_gives_its_quantiles_by_nearest_rank() {
        let mut us: Vec<u64> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let m = Measures { orders: 100, ..Measures::default() }.with_latencies_us(&mut us);
        assert_eq!((m.p50_ms, m.p90_ms, m.p99_ms, m.max_ms), (50.0, 90.0, 99.0, 100.0));
        assert!(t("p99>98ms").evaluate(&m).pass);
        let none = Measures::default().with_latencies_us(&mut []);
        assert!(!t("p99>0ms").evaluate(&none).pass);
    }

    #[test]
    fn a_figure_that_cannot_be_observed_never_passes() {
        let closed = Measures { target_rate: None, ..measures() };
        let row = t("rate>=95%").evaluate(&closed);
        assert_eq!((row.observed, row.pass, row.observed_text().as_str()), (None, false, "n/a"));
        let empty = Measures::default();
        assert!(!t("errors<1%").evaluate(&empty).pass);
        assert!(t("errors<1").evaluate(&empty).pass);
        assert!(!t("p99<50ms").evaluate(&empty).pass, "no answered order meets a latency bound");
    }
}
