//! k6-like threshold expressions as drills use them (`p99<50ms`, `errors<1%`, `confirmed>90%`,
//! `dropped==0`): parsed once from the drill file, judged against the [`Figures`] of a probe
//! load or of the last seconds of the drill's load (`halt:` rules).
//!
//! The grammar is the one `shop load --threshold` accepts (SPEC section 14); the drill keeps its
//! own small evaluator over its own figures so that `halt:` can judge a few seconds of counts,
//! which a whole-run summary cannot.

use std::fmt;

use crate::traffic::Summary;

/// What a threshold measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// A latency quantile in milliseconds, by its quantile (0.5, 0.9, 0.99, 0.999, 1.0 for max).
    Latency(f64),
    Errors,
    Failed,
    Confirmed,
    /// Orders the concurrency cap kept from starting.
    Dropped,
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

/// A count metric is judged as a share of the orders when written with `%`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    Ms,
    Percent,
    Count,
}

/// One parsed threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub metric: Metric,
    pub op: Op,
    /// In the unit: milliseconds, percent, or a count.
    pub value: f64,
    pub unit: Unit,
    /// As written, for reports.
    pub text: String,
}

/// What thresholds are judged against.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub orders: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub errors: u64,
    pub dropped: u64,
    /// p50, p90, p99, p99.9, max, in milliseconds; `None` when nothing was measured.
    pub latency_ms: Option<[f64; 5]>,
}

/// The accepted forms, for error messages.
pub const FORMS: &str = "p50|p90|p99|p999|max with <, <=, >, >= and a duration (p99<50ms), \
                         errors|failed|confirmed with a percentage or a count (errors<1%), dropped==0";

impl Threshold {
    /// Parses `p99<50ms` and the like; the error says what is wrong and the accepted forms.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let t = text.trim();
        let ops = [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("<", Op::Lt), (">", Op::Gt)];
        let Some((at, sym, op)) =
            ops.iter().filter_map(|(s, op)| t.find(s).map(|at| (at, *s, *op))).min_by_key(|x| x.0)
        else {
            return Err(format!("`{t}` has no comparison; write e.g. {FORMS}"));
        };
        let (name, value) = (t[..at].trim(), t[at + sym.len()..].trim());
        let metric = match name {
            "p50" => Metric::Latency(0.5),
            "p90" => Metric::Latency(0.9),
            "p99" => Metric::Latency(0.99),
            "p999" | "p99.9" => Metric::Latency(0.999),
            "max" => Metric::Latency(1.0),
            "errors" => Metric::Errors,
            "failed" => Metric::Failed,
            "confirmed" => Metric::Confirmed,
            "dropped" => Metric::Dropped,
            other => return Err(format!("`{t}`: unknown metric `{other}`; the accepted forms are {FORMS}")),
        };
        let number =
            |s: &str| -> Result<f64, String> {
                s.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| {
                    format!("`{t}`: `{value}` is not a number at least 0; the accepted forms are {FORMS}")
                })
            };
        let (value, unit) = match metric {
            Metric::Latency(_) => {
                let d = crate::plumbing::time::parse_duration(value).map_err(|_| {
                    format!("`{t}`: `{value}` is not a duration like 50ms; the accepted forms are {FORMS}")
                })?;
                (d.as_secs_f64() * 1000.0, Unit::Ms)
            }
            _ => match value.strip_suffix('%') {
                Some(p) => {
                    let p = number(p)?;
                    if p > 100.0 {
                        return Err(format!("`{t}`: a percentage is at most 100%"));
                    }
                    (p, Unit::Percent)
                }
                None => (number(value)?, Unit::Count),
            },
        };
        Ok(Threshold { metric, op, value, unit, text: t.to_string() })
    }

    /// Whether the figures meet the threshold, and the measured value as a reader would write it.
    pub fn judge(&self, f: &Figures) -> (bool, String) {
        let (actual, shown) = match self.metric {
            Metric::Latency(q) => {
                let i = [0.5, 0.9, 0.99, 0.999, 1.0].iter().position(|x| *x == q).unwrap_or(4);
                match f.latency_ms {
                    Some(l) => (l[i], format!("{:.2}ms", l[i])),
                    // Nothing measured cannot meet a latency bound honestly.
                    None => return (false, "no orders measured".into()),
                }
            }
            m => {
                let count = match m {
                    Metric::Errors => f.errors,
                    Metric::Failed => f.failed,
                    Metric::Confirmed => f.confirmed,
                    _ => f.dropped,
                };
                match self.unit {
                    Unit::Percent => {
                        let p = if f.orders > 0 { count as f64 * 100.0 / f.orders as f64 } else { 0.0 };
                        (p, format!("{p:.2}% ({count} of {})", f.orders))
                    }
                    _ => (count as f64, count.to_string()),
                }
            }
        };
        let ok = match self.op {
            Op::Lt => actual < self.value,
            Op::Le => actual <= self.value,
            Op::Gt => actual > self.value,
            Op::Ge => actual >= self.value,
            Op::Eq => (actual - self.value).abs() < f64::EPSILON,
        };
        (ok, shown)
    }

    /// Whether it can be judged on counts alone (what `halt:` sees each second).
    pub fn is_count(&self) -> bool {
        !matches!(self.metric, Metric::Latency(_))
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Figures {
    /// The figures of a whole load.
    pub fn of(s: &Summary) -> Figures {
        let l = &s.latency_ms;
        Figures {
            orders: s.orders,
            confirmed: s.confirmed,
            failed: s.failed,
            errors: s.errors,
            dropped: 0,
            latency_ms: (s.orders > 0).then_some([l.p50, l.p90, l.p99, l.p999, l.max]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        Figures {
            orders: 200,
            confirmed: 190,
            failed: 8,
            errors: 2,
            dropped: 0,
            latency_ms: Some([5.0, 9.0, 40.0, 60.0, 80.0]),
        }
    }

    #[test]
    fn thresholds_pass_and_fail_on_the_figures() {
        let cases = [
            ("p99<50ms", true),
            ("p99 < 30ms", false),
            ("p50<=5ms", true),
            ("errors<2%", true),
            ("errors<1", false),
            ("confirmed>90%", true),
            ("confirmed>=96%", false),
            ("dropped==0", true),
            ("max<1s", true),
        ];
        for (text, want) in cases {
            let t = Threshold::parse(text).unwrap();
            assert_eq!(t.judge(&figures()).0, want, "{text}");
        }
    }

    #[test]
    fn malformed_thresholds_name_the_accepted_forms() {
        for bad in ["p99", "p98<50ms", "p99<fast", "errors<-1%", "errors<120%", "latency>3"] {
            let err = Threshold::parse(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        assert!(Threshold::parse("p98<50ms").unwrap_err().contains("p50|p90|p99"));
    }
}
