//! The drill's HTML report (`--html FILE`): one self-contained page, no script and no network
//! access, with inline SVG charts of throughput, p99 and errors per second, each fault drawn as
//! a band over them, breaker transitions as marks, and the outcome and invariant tables.
//!
//! No JavaScript at all: the page cannot log a console error, works offline and from a CI
//! artifact, and prints as it shows.

use std::fmt::Write as _;

use super::junit::escape;
use super::report::{DrillReport, Second};
use crate::invariants::Check;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const PAD: f64 = 36.0;
/// One colour per fault kind, so bands read at a glance.
fn band_colour(kind: &str) -> &'static str {
    match kind {
        "kill" => "#e4572e",
        "pause" => "#f3a712",
        "latency" => "#6a4c93",
        "errors" => "#c5283d",
        _ => "#1982c4",
    }
}

/// One chart: a polyline of `value` per second over fault bands and breaker marks.
fn chart(r: &DrillReport, title: &str, unit: &str, value: fn(&Second) -> Option<f64>) -> String {
    let seconds = &r.per_second;
    // Seconds in which no order started (all dropped, or the load halted) have no entry, so
    // the axis also reaches the last fault and breaker transition, which are drawn on it.
    let ends = (r.faults.iter().filter_map(|f| f.ended_at_s.or(f.applied_at_s)))
        .chain(r.breaker_transitions.iter().map(|b| b.at_s));
    let span = ends.fold(seconds.len().max(1) as f64, |span, end| span.max(end.ceil()));
    let max = seconds.iter().filter_map(value).fold(0.0_f64, f64::max).max(1.0);
    let x = |t: f64| PAD + t / span * (WIDTH - 2.0 * PAD);
    let y = |v: f64| HEIGHT - PAD / 2.0 - v / max * (HEIGHT - PAD);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure><figcaption>{}</figcaption><svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    for f in &r.faults {
        let (Some(from), Some(to)) = (f.applied_at_s, f.ended_at_s) else { continue };
        let _ = write!(
            svg,
            "<rect class=\"fault\" x=\"{:.1}\" y=\"0\" width=\"{:.1}\" height=\"{HEIGHT}\" fill=\"{}\" \
             fill-opacity=\"0.18\"><title>#{} {} {} {:.2}s–{:.2}s</title></rect>",
            x(from),
            (x(to) - x(from)).max(1.0),
            band_colour(f.fault),
            f.index,
            escape(f.fault),
            escape(&f.target),
            from,
            to
        );
    }
    for b in &r.breaker_transitions {
        let bx = x(b.at_s);
        let _ = write!(
            svg,
            "<line class=\"breaker\" x1=\"{bx:.1}\" x2=\"{bx:.1}\" y1=\"0\" y2=\"{HEIGHT}\" stroke=\"#333\" \
             stroke-dasharray=\"3 3\"><title>{} → {}: {} → {} at {:.2}s</title></line>",
            escape(&b.instance),
            escape(&b.dependency),
            escape(&b.from),
            escape(&b.to),
            b.at_s
        );
    }
    let points: Vec<String> =
        (seconds.iter()).filter_map(|s| value(s).map(|v| format!("{:.1},{:.1}", x(s.t as f64 + 0.5), y(v)))).collect();
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#0b6e4f\" stroke-width=\"2\" points=\"{}\"/>\
         <line x1=\"{PAD}\" x2=\"{PAD}\" y1=\"0\" y2=\"{HEIGHT}\" stroke=\"#999\"/>\
         <text x=\"2\" y=\"12\" font-size=\"10\">{max:.0} {unit}</text>\
         <text x=\"{PAD}\" y=\"{HEIGHT}\" font-size=\"10\">0s</text>\
         <text x=\"{:.1}\" y=\"{HEIGHT}\" font-size=\"10\" text-anchor=\"end\">{}s</text></svg></figure>",
        points.join(" "),
        WIDTH - PAD,
        span
    );
    svg
}

fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(t, "<th>{}</th>", escape(h));
    }
    t.push_str("</tr></thead><tbody>");
    for row in rows {
        t.push_str("<tr>");
        for cell in row {
            let class = match cell.as_str() {
                "PASS" => " class=\"pass\"",
                "FAIL" => " class=\"fail\"",
                _ => "",
            };
            let _ = write!(t, "<td{class}>{}</td>", escape(&cell));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

fn checks(list: &[Check]) -> String {
    let rows = list
        .iter()
        .map(|c| vec![c.name.clone(), if c.ok { "PASS" } else { "FAIL" }.to_string(), c.detail.clone()])
        .collect();
    table(&["check", "result", "detail"], rows)
}

/// The whole page.
pub fn render(r: &DrillReport) -> String {
    let mut page = String::new();
    let verdict = if r.ok { "PASSED".to_string() } else { format!("FAILED ({})", r.verdict) };
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>drill {name}: {verdict}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:800px}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}\
         .pass{{color:#0b6e4f;font-weight:bold}}.fail{{color:#c5283d;font-weight:bold}}\
         figure{{margin:0 0 1em}}figcaption{{font-weight:bold}}</style></head><body>\
         <h1>drill {name}</h1><p id=\"verdict\" class=\"{cls}\">{verdict}</p>",
        name = escape(&r.name),
        verdict = escape(&verdict),
        cls = if r.ok { "pass" } else { "fail" }
    );
    if let Some(h) = &r.halted {
        let _ = write!(
            page,
            "<p class=\"fail\">halted at {:.1}s: <code>{}</code> held ({})</p>",
            h.at_s,
            escape(&h.rule),
            escape(&h.detail)
        );
    }
    page.push_str("<h2>per second</h2>");
    page.push_str(&chart(r, "throughput (orders confirmed per second, as answered)", "orders/s", |s| {
        Some(s.throughput as f64)
    }));
    page.push_str(&chart(r, "p99 latency per second", "ms", |s| s.p99_ms));
    page.push_str(&chart(r, "errors per second", "errors/s", |s| Some(s.errors as f64)));
    page.push_str("<h2>faults</h2>");
    let rows = (r.faults.iter())
        .map(|f| {
            let s = |v: Option<f64>| v.map(|v| format!("{v:.2}s")).unwrap_or_else(|| "-".into());
            vec![
                f.index.to_string(),
                f.fault.to_string(),
                f.target.clone(),
                f.describe.clone(),
                format!("{:.2}s", f.at_s),
                s(f.applied_at_s),
                s(f.ended_at_s),
                f.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    page.push_str(&table(&["#", "fault", "target", "params", "at", "applied", "ended", "error"], rows));
    if let Some(m) = &r.monkey {
        let _ = write!(page, "<p>monkey, seed {}: {} faults</p>", m.seed, m.faults);
    }
    page.push_str("<h2>breaker transitions</h2>");
    let rows = (r.breaker_transitions.iter())
        .map(|b| {
            vec![b.instance.clone(), b.dependency.clone(), b.from.clone(), b.to.clone(), format!("{:.2}s", b.at_s)]
        })
        .collect();
    page.push_str(&table(&["instance", "dependency", "from", "to", "at"], rows));
    page.push_str("<h2>outcomes</h2>");
    match &r.outcomes {
        Some(o) => {
            let mut rows: Vec<Vec<String>> = o.load.rows().into_iter().map(|(k, v)| vec![k, v]).collect();
            let a = &o.after_settle;
            let when = if r.verdict == super::run::INTERRUPTED { "when interrupted" } else { "after settling" };
            rows.push(vec![format!("{when}: confirmed"), a.confirmed.to_string()]);
            rows.push(vec![format!("{when}: failed"), a.failed.to_string()]);
            rows.push(vec![format!("{when}: pending"), a.pending.to_string()]);
            page.push_str(&table(&["metric", "value"], rows));
        }
        None => page.push_str("<p>the load never ran</p>"),
    }
    if let Some(steady) = &r.steady_state {
        for (when, probe) in [("before the faults", &steady.before), ("after settling", &steady.after)] {
            if let Some(p) = probe {
                let _ = write!(page, "<h2>steady state {when}</h2>");
                page.push_str(&checks(&p.checks));
            }
        }
    }
    page.push_str("<h2>invariants</h2>");
    if r.invariants.checks.is_empty() {
        page.push_str("<p>not checked</p>");
    } else {
        page.push_str(&checks(&r.invariants.checks));
    }
    page.push_str("<h2>expectations</h2>");
    page.push_str(&checks(&r.checks));
    page.push_str("</body></html>\n");
    page
}
