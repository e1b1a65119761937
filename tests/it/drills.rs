//! `shop chaos drill` through the real CLI: each shipped drill passes on a fresh stack, a drill
//! whose expectation cannot hold exits 1 naming it, and a bad drill file exits 2 at its position.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use crate::stack::Project;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn started() -> Project {
    let p = Project::new("");
    let up = p.shop(&["up", "-d", "-q"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    p
}

fn shipped(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/drills").join(format!("{name}.yaml"));
    path.display().to_string()
}

/// Runs a drill with `--json` and returns its exit code and report.
fn drill(p: &Project, file: &str) -> (Option<i32>, Value) {
    let out = p.shop(&["chaos", "drill", file, "--json", "--seed", "7"]);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {} stderr {}", stdout(&out), stderr(&out)));
    (out.status.code(), report)
}

fn check<'a>(report: &'a Value, list: &str, name: &str) -> &'a Value {
    let found = match list {
        "expectations" => report["checks"].as_array(),
        _ => report["invariants"]["checks"].as_array(),
    };
    found.into_iter().flatten().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}

/// A shipped drill passes: exit 0, `ok`, every fault applied, every invariant holds, and the
/// report's figures add up.
fn passes(name: &str) -> (Project, Value) {
    let p = started();
    let (code, report) = drill(&p, &shipped(name));
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["name"], name);
    assert_eq!(report["invariants"]["ok"], true, "{report:#}");
    for expectation in ["faults_applied", "invariants", "settled", "min_confirmed_percent"] {
        assert_eq!(check(&report, "expectations", expectation)["ok"], true, "{report:#}");
    }
    let faults = report["faults"].as_array().unwrap();
    assert!(!faults.is_empty());
    for f in faults {
        let (applied, ended) = (f["applied_at_s"].as_f64().unwrap(), f["ended_at_s"].as_f64().unwrap());
        assert!(applied >= f["at_s"].as_f64().unwrap() && ended >= applied, "{f}");
    }
    let outcomes = &report["outcomes"];
    let sum: u64 = ["confirmed", "failed", "pending", "errors"].iter().map(|k| outcomes[k].as_u64().unwrap()).sum();
    assert_eq!(sum, outcomes["orders"].as_u64().unwrap(), "{outcomes}");
    assert_eq!(outcomes["after_settle"]["pending"], 0, "{outcomes}");
    let windowed: u64 = report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["fault"] == 1)
        .map(|w| w["orders"].as_u64().unwrap())
        .sum();
    // A fault applied at 0s may have no window before it (shorter than 50 ms): then only the
    // orders started in those first milliseconds are outside the windows: at 50 orders/s with 8
    // workers (every shipped drill), at most 8; the windows that exist are contiguous.
    let orders = outcomes["orders"].as_u64().unwrap();
    let fault1: Vec<&Value> = report["windows"].as_array().unwrap().iter().filter(|w| w["fault"] == 1).collect();
    for pair in fault1.windows(2) {
        assert_eq!(pair[0]["to_s"], pair[1]["from_s"], "windows of fault 1 are contiguous: {report:#}");
    }
    if fault1[0]["phase"] == "before" {
        assert_eq!(windowed, orders, "windows of fault 1 cover the load");
    } else {
        let concurrency = 8;
        assert!(fault1[0]["from_s"].as_f64().unwrap() < 0.05, "{report:#}");
        assert!(windowed <= orders && windowed + concurrency >= orders, "{windowed} of {orders}: {report:#}");
    }
    // Nothing of the drill is left behind.
    let list = p.shop(&["chaos", "list", "--json"]);
    assert_eq!(stdout(&list).trim(), "[]");
    (p, report)
}

fn window<'a>(report: &'a Value, phase: &str) -> &'a Value {
    report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["fault"] == 1 && w["phase"] == phase)
        .unwrap_or_else(|| panic!("no `{phase}` window in {report:#}"))
}

#[test]
fn the_payment_outage_drill_passes_and_every_order_is_eventually_confirmed() {
    let (_p, report) = passes("payment-outage");
    let after = &report["outcomes"]["after_settle"];
    assert_eq!(after["confirmed"], report["outcomes"]["orders"], "{after}");
    // The order service noticed the outage: its breaker toward payment opened.
    let opened = report["breaker_transitions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["instance"] == "order" && t["dependency"] == "payment" && t["to"] == "open");
    assert!(opened, "{:#}", report["breaker_transitions"]);
    assert!(window(&report, "during")["latency_ms"]["p99"].as_f64().unwrap() > 1000.0, "{report:#}");
}

#[test]
fn the_slow_inventory_drill_passes_with_orders_slower_only_while_it_lasts() {
    let (_p, report) = passes("slow-inventory");
    // A delay of 150 ms on half the reservations shows in the tail of the orders placed meanwhile.
    let p99 = |phase: &str| window(&report, phase)["latency_ms"]["p99"].as_f64().unwrap();
    let p50 = |phase: &str| window(&report, phase)["latency_ms"]["p50"].as_f64().unwrap();
    assert!(p99("during") >= 130.0, "{report:#}");
    // Only while it lasts: before and after it, a typical order is faster than the slow tail of
    // the orders placed during it (their p99 carries the 130 ms floor of the delay).
    for phase in ["before", "after"] {
        assert!(p50(phase) < p99("during"), "{phase}: p50 {} vs during p99 {}\n{report:#}", p50(phase), p99("during"));
        assert!(window(&report, phase)["orders"].as_u64().unwrap() > 0, "{phase} window empty: {report:#}");
    }
    assert_eq!(report["outcomes"]["errors"], 0, "{:#}", report["outcomes"]);
}

#[test]
fn the_flaky_notification_drill_passes_with_exactly_one_notification_per_order() {
    let (_p, report) = passes("flaky-notification");
    assert_eq!(check(&report, "invariants", "one_notification_per_terminal_order")["ok"], true);
    assert_eq!(report["faults"][0]["params"], serde_json::json!({"status": 503, "percent": 30.0}));
}

#[test]
fn the_order_crash_drill_passes_with_order_restarted_and_no_accepted_order_lost() {
    let (p, report) = passes("order-crash");
    assert_eq!(check(&report, "invariants", "no_accepted_order_lost")["ok"], true);
    let order = p.row("order");
    assert_eq!(order["state"], "healthy", "{order}");
    assert!(order["restarts"].as_u64().unwrap() >= 1, "{order}");
    // While order was down the gateway refused orders instead of accepting them.
    assert!(report["outcomes"]["errors"].as_u64().unwrap() > 0, "{:#}", report["outcomes"]);
}

#[test]
fn a_drill_whose_expectation_cannot_hold_fails_with_exit_1_naming_the_check() {
    let p = started();
    // bob's card is always declined: no order can confirm.
    let file = p.dir.path().join("declined.yaml");
    std::fs::write(
        &file,
        "name: all-declined
load: { orders: 20, concurrency: 4, users: [bob], rate: 40 }
faults:
  - { at: 100ms, latency: payment, delay: 20ms, for: 200ms }
expect:
  invariants: all
  settle_within: 10s
  min_confirmed_percent: 50
",
    )
    .unwrap();
    let (code, report) = drill(&p, &file.display().to_string());
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    let failing = check(&report, "expectations", "min_confirmed_percent");
    assert_eq!(failing["ok"], false);
    assert_eq!(failing["detail"], "0.0% confirmed (0 of 20 orders), at least 50% expected");
    assert_eq!(check(&report, "expectations", "invariants")["ok"], true, "{report:#}");
    assert_eq!(report["outcomes"]["failures_by_code"]["card_declined"], 20, "{report:#}");

    let out = p.shop(&["chaos", "drill", "declined.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("min_confirmed_percent  FAIL"), "{text}");
    assert!(text.trim_end().ends_with("drill all-declined: FAILED"), "{text}");

    // A target the stack does not have is refused before any order is sent.
    std::fs::write(
        p.dir.path().join("unknown.yaml"),
        "name: x\nload: { orders: 5 }\nfaults:\n  - { at: 1s, kill: shipping }\n",
    )
    .unwrap();
    let out = p.shop(&["chaos", "drill", "unknown.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("error: unknown.yaml: faults[0] names `shipping`"), "{}", stderr(&out));
}

#[test]
fn a_malformed_drill_file_exits_2_pointing_at_its_line_and_column() {
    // No stack needed: the file is read first.
    let p = Project::new("");
    std::fs::write(
        p.dir.path().join("bad.yaml"),
        "name: bad\nload: { orders: 10 }\nfaults:\n  - { at: 1s, kill: payment, forr: 3s }\n",
    )
    .unwrap();
    let out = p.shop(&["chaos", "drill", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: bad.yaml:4:30: faults[0]: unknown field `forr`, expected one of `at`, `for`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");

    std::fs::write(
        p.dir.path().join("bad.yaml"),
        "name: bad\nload: { orders: 10 }\nfaults:\n  - { at: 1s, latency: inventory, percent: 50 }\n",
    )
    .unwrap();
    let out = p.shop(&["chaos", "drill", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), "error: bad.yaml:4:5: faults[0]: a latency fault needs a `delay`, e.g. delay: 200ms\n");

    let out = p.shop(&["chaos", "drill", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("error: cannot read the drill file `missing.yaml`"), "{}", stderr(&out));
}

/// Writes `text` as `name` in the project and runs it as a drill; the exit code and stderr.
fn bad_drill(p: &Project, name: &str, text: &str) -> (Option<i32>, String) {
    std::fs::write(p.dir.path().join(name), text).unwrap();
    let out = p.shop(&["chaos", "drill", name]);
    assert_eq!(stdout(&out), "", "a bad drill file prints nothing on stdout");
    (out.status.code(), stderr(&out))
}

#[test]
fn bad_drill_files_exit_2_with_every_problem_at_its_line_and_column() {
    // No stack needed: the file is read first.
    let p = Project::new("");
    let head = "name: bad\nload: { orders: 10 }\nfaults:\n";

    let (code, err) = bad_drill(&p, "key.yaml", &format!("{head}  - {{ at: 1s, kill: payment, forr: 3s }}\n"));
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "error: key.yaml:4:30: faults[0]: unknown field `forr`, expected one of `at`, `for`, `kill`, `pause`, \
         `latency`, `errors`, `partition`, `with`, `restart`, `signal`, `delay`, `jitter`, `percent`, `status`, \
         `refuse`, `net`, `toxic`, `after`, `close_after`, `rate`, `size`, `variation`, `bytes`, `direction`, \
         `toxicity`, `from`; did you mean `for`?\n"
    );

    let (code, err) =
        bad_drill(&p, "duration.yaml", &format!("{head}  - {{ at: 1s, kill: payment, for: 3 parsecs }}\n"));
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "error: duration.yaml:4:35: faults[0].for: `3 parsecs` is not a duration (unknown time unit \"parsecs\", \
         supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); \
         write e.g. 500ms, 2s, 1m\n"
    );

    let (code, err) = bad_drill(&p, "kind.yaml", &format!("{head}  - {{ at: 1s, crash: payment }}\n"));
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "error: kind.yaml:4:15: faults[0]: unknown field `crash`, expected one of `at`, `for`, `kill`, `pause`, \
         `latency`, `errors`, `partition`, `with`, `restart`, `signal`, `delay`, `jitter`, `percent`, `status`, \
         `refuse`, `net`, `toxic`, `after`, `close_after`, `rate`, `size`, `variation`, `bytes`, `direction`, \
         `toxicity`, `from`\n"
    );

    // Several problems: one line each, in file order, then the summary a stack file gets.
    let (code, err) = bad_drill(
        &p,
        "two.yaml",
        "name: bad\nload: { orders: 0 }\nfaults:\n  - { at: 2s, latency: inventory, delay: soon }\n",
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "two.yaml:2:17: load: `orders` must be at least 1\n\
         two.yaml:4:42: faults[0].delay: `soon` is not a duration (expected number at 0); write e.g. 500ms, 2s, 1m\n\
         error: `two.yaml` is invalid (2 problems); fix it and run again\n"
    );
}
