//! JUnit XML for CI (`--junit FILE` on `shop chaos drill` and `shop smoke`): one `testsuite`,
//! one `testcase` per check, a `failure` carrying the detail, valid against the Ant JUnit schema
//! (tests/schemas/junit.xsd).

use std::time::SystemTime;

use super::report::DrillReport;

/// One testcase.
pub struct Case {
    pub name: String,
    /// Groups the cases in a CI's view: `drill.NAME.steady_state_before` and the like.
    pub classname: String,
    pub time_s: f64,
    /// The failure's one-line message and its detail; `None` is a pass.
    pub failure: Option<(String, String)>,
}

impl Case {
    pub fn new(classname: &str, name: &str, ok: bool, detail: &str) -> Case {
        Case {
            name: name.to_string(),
            classname: classname.to_string(),
            time_s: 0.0,
            failure: (!ok).then(|| (format!("{name}: {detail}"), detail.to_string())),
        }
    }
}

/// Text and attribute values, escaped; characters XML 1.0 cannot hold at all are dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// The schema's `xs:token` values: no line breaks, no runs of spaces, not empty.
fn token(s: &str) -> String {
    let t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() {
        "unnamed".into()
    } else {
        escape(&t)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// One `testsuite` document.
pub fn suite(name: &str, cases: &[Case], time_s: f64) -> String {
    use std::fmt::Write as _;
    // The schema wants a local date-time without a zone: the UTC time, its `Z` dropped.
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let stamp = stamp.trim_end_matches('Z');
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "<testsuite name=\"{}\" timestamp=\"{stamp}\" hostname=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time_s:.3}\">",
        token(name),
        token(&hostname()),
        cases.len()
    );
    out.push_str("  <properties/>\n");
    for c in cases {
        let head = format!(
            "  <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            token(&c.name),
            token(&c.classname),
            c.time_s
        );
        match &c.failure {
            None => {
                let _ = writeln!(out, "{head}/>");
            }
            Some((message, detail)) => {
                let _ = writeln!(
                    out,
                    "{head}>\n    <failure message=\"{}\" type=\"failure\">{}</failure>\n  </testcase>",
                    escape(message),
                    escape(detail)
                );
            }
        }
    }
    out.push_str("  <system-out/>\n  <system-err/>\n</testsuite>\n");
    out
}

/// The drill's suite: each steady-state probe's thresholds and invariants, then each expectation.
pub fn drill(r: &DrillReport) -> String {
    let base = format!("drill.{}", r.name);
    let mut cases = Vec::new();
    if let Some(steady) = &r.steady_state {
        for (phase, probe) in [("steady_state_before", &steady.before), ("steady_state_after", &steady.after)] {
            for c in probe.iter().flat_map(|p| &p.checks) {
                cases.push(Case::new(&format!("{base}.{phase}"), &c.name, c.ok, &c.detail));
            }
        }
    }
    for c in &r.checks {
        cases.push(Case::new(&format!("{base}.expectations"), &c.name, c.ok, &c.detail));
    }
    let time = r.outcomes.as_ref().map_or(0.0, |o| o.load.duration_s);
    suite(&r.name, &cases, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_carries_its_detail_escaped() {
        let xml = suite("x", &[Case::new("c", "p99<50ms", false, "71ms & more"), Case::new("c", "ok", true, "")], 1.0);
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains("name=\"p99&lt;50ms\""), "{xml}");
        assert!(xml.contains(">71ms &amp; more</failure>"), "{xml}");
    }
}
