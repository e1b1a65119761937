//! `shop chaos drill` through the real CLI: each shipped drill passes on a fresh stack, a drill
//! whose expectation cannot hold exits 1 naming it, and a bad drill file exits 2 at its position.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::stack::{started, Project};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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
    // orders started in those first milliseconds are outside the windows: at 50 orders/s (every
    // shipped drill's open-loop rate), at most 3, bounded here by 8; the windows that exist are
    // contiguous.
    let orders = outcomes["orders"].as_u64().unwrap();
    let fault1: Vec<&Value> = report["windows"].as_array().unwrap().iter().filter(|w| w["fault"] == 1).collect();
    for pair in fault1.windows(2) {
        assert_eq!(pair[0]["to_s"], pair[1]["from_s"], "windows of fault 1 are contiguous: {report:#}");
    }
    if fault1[0]["phase"] == "before" {
        assert_eq!(windowed, orders, "windows of fault 1 cover the load");
    } else {
        let first_moments = 8;
        assert!(fault1[0]["from_s"].as_f64().unwrap() < 0.05, "{report:#}");
        assert!(windowed <= orders && windowed + first_moments >= orders, "{windowed} of {orders}: {report:#}");
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
    let during = window(&report, "during");
    assert!(during["latency_ms"]["p99"].as_f64().unwrap() > 1000.0, "{report:#}");
    // Orders kept starting while payment was down, but few were confirmed until it came back.
    let (started, confirmed) =
        (during["started_per_s"].as_f64().unwrap(), during["throughput_per_s"].as_f64().unwrap());
    assert!(confirmed < started / 2.0, "{during:#}");
    assert!(window(&report, "after")["throughput_per_s"].as_f64().unwrap() > 0.0, "{report:#}");
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
    // bob's card is always declined: no order can confirm. As many in flight as there are
    // orders, so a slow machine drops none at the concurrency cap and all 20 are offered.
    let file = p.dir.path().join("declined.yaml");
    std::fs::write(
        &file,
        "name: all-declined
load: { orders: 20, concurrency: 20, users: [bob], rate: 40 }
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
    assert_eq!(failing["detail"], "0.0% confirmed (0 of 20 orders offered), at least 50% expected");
    assert_eq!(check(&report, "expectations", "invariants")["ok"], true, "{report:#}");
    assert_eq!(report["outcomes"]["failures_by_code"]["card_declined"], 20, "{report:#}");

    let out = p.shop(&["chaos", "drill", "declined.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("min_confirmed_percent  FAIL"), "{text}");
    assert!(text.trim_end().ends_with("drill all-declined: FAILED (failed)"), "{text}");

    // A target the stack does not have, or a user the fixtures lack, is refused before any order
    // is sent, at its place in the file; a near miss is named.
    let cases = [
        (
            "unknown.yaml",
            "faults:\n  - { at: 1s, kill: shipping }\n",
            "error: unknown.yaml:4:5: faults[0] names `shipping`",
        ),
        (
            "typos.yaml",
            "faults:\n  - { at: 1s, kill: paymnt }\n",
            "typos.yaml:4:5: faults[0] names `paymnt`, which is not a service or instance of the running stack; \
             did you mean `payment`?",
        ),
        ("nobody.yaml", "  users: [nobody]\n", "error: nobody.yaml:4:10: load: no fixture user `nobody`"),
    ];
    for (file, rest, want) in cases {
        let load = if file == "nobody.yaml" { "load:\n  orders: 5\n" } else { "load: { orders: 5 }\n" };
        write(&p, file, &format!("name: x\n{load}{rest}"));
        let out = p.shop(&["chaos", "drill", file]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(want), "{file}: {}", stderr(&out));
    }
    // All of them at once, each at its place, including a monkey's targets.
    write(
        &p,
        "all.yaml",
        "name: x\nload:\n  rate: 5\n  duration: 2s\n  users: [nobody]\nfaults:\n  - { at: 1s, kill: paymnt }\n  \
         - { at: 1s, latency: registry, delay: 5ms }\n  - { at: 1s, net: gateway, toxic: reset }\nmonkey: { \
         mean_interval: 10m, targets: [invntory] }\n",
    );
    let out = p.shop(&["chaos", "drill", "all.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for want in [
        "all.yaml:7:5: faults[0] names `paymnt`",
        "all.yaml:8:5: faults[1]: the registry takes only kill and pause",
        "all.yaml:9:5: faults[2]: the gateway takes no wire fault: its callers are clients outside the stack",
        "all.yaml:10:40: monkey.targets names `invntory`, which is not a service or instance of the running stack; \
         did you mean `inventory`?",
        "all.yaml:5:10: load: no fixture user `nobody`",
        "error: `all.yaml` names 5 things the running stack does not have",
    ] {
        assert!(err.contains(want), "{want}:\n{err}");
    }
    // `chaos monkey` judges its targets even when the seed draws no fault on them.
    let out = p.shop(&["chaos", "monkey", "--duration", "1s", "--mean-interval", "10m", "--targets", "paymnt"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("error: --targets names `paymnt`"), "{}", stderr(&out));
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

// ---- SPEC section 14: steady state, halt, monkey, rollback, reports ----

fn write(p: &Project, name: &str, text: &str) -> String {
    let path = p.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `shop chaos drill ARGS` in the background, its stderr kept for the test to read.
fn spawn_drill(p: &Project, args: &[&str]) -> std::process::Child {
    p.spawn(&[&["chaos", "drill"], args].concat())
}

fn faults_left(p: &Project) -> String {
    stdout(&p.shop(&["chaos", "list", "--json"])).trim().to_string()
}

#[test]
fn the_monkey_drill_writes_valid_junit_a_journal_and_an_html_page_with_charts() {
    let p = started();
    let dir = p.dir.path();
    let (junit, html, journal, png) = (dir.join("r.xml"), dir.join("r.html"), dir.join("r.json"), dir.join("r.png"));
    let out = p.shop(&[
        "chaos",
        "drill",
        &shipped("monkey"),
        "--junit",
        junit.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--json-file",
        journal.to_str().unwrap(),
    ]);
    // The timeline is printed before the run.
    assert!(stderr(&out).contains("monkey (seed 42):"), "{}", stderr(&out));
    assert_eq!(faults_left(&p), "[]");
    let report: Value = serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
    assert_eq!(out.status.code(), Some(if report["ok"] == true { 0 } else { 1 }), "{report:#}");
    assert!(report["monkey"]["faults"].as_u64().unwrap() > 0, "{report:#}");
    assert!(!report["per_second"].as_array().unwrap().is_empty(), "{report:#}");
    assert_eq!(report["steady_state"]["before"]["ok"], true, "{report:#}");
    assert!(report["steady_state"]["after"]["checks"].as_array().unwrap().len() >= 3, "{report:#}");

    crate::tools::assert_valid_junit(&junit);
    let xml = std::fs::read_to_string(&junit).unwrap();
    // One testcase per probe threshold (before and after) and per expectation.
    assert!(
        xml.contains("classname=\"drill.monkey.steady_state_before\" time=\"0.000\"")
            || xml.contains("drill.monkey.steady_state_before"),
        "{xml}"
    );
    assert!(xml.contains("name=\"p99&lt;2s\""), "{xml}");
    assert!(xml.contains("name=\"not_halted\""), "{xml}");

    let page = crate::tools::chromium(&html, &png);
    assert!(page.console_errors().is_empty(), "{:?}", page.console_errors());
    assert_eq!(page.dom.matches("<svg class=\"chart\"").count(), 3, "{}", page.dom);
    assert!(page.dom.contains("errors per second") && page.dom.contains("class=\"fault\""), "{}", page.dom);
    assert!(std::fs::metadata(&png).unwrap().len() > 1000, "the screenshot is empty");
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(
        !text.contains("http://")
            || text.matches("http://").all(|_| text.contains("xmlns=\"http://www.w3.org/2000/svg\""))
    );
    assert!(!text.contains("<script") && !text.contains("https://"), "the page must need no network");
}

#[test]
fn a_stack_not_steady_before_the_drill_gets_no_fault_and_exit_1() {
    let p = started();
    let file = write(
        &p,
        "unsteady.yaml",
        "name: unsteady
load: { rate: 20, duration: 2s }
steady_state:
  probe_load: { orders: 10, rate: 20 }
  thresholds: [ \"p99<0ms\" ]
faults:
  - { at: 0s, kill: payment, for: 5s }
",
    );
    let (code, report) = drill(&p, &file);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["verdict"], "not steady before the drill", "{report:#}");
    assert!(report["faults"][0]["applied_at_s"].is_null(), "{report:#}");
    assert!(report["outcomes"].is_null(), "{report:#}");
    assert_eq!(faults_left(&p), "[]");
    assert_eq!(p.row("payment")["state"], "healthy");
    let out = p.shop(&["chaos", "drill", "unsteady.yaml"]);
    assert!(stdout(&out).contains("drill unsteady: FAILED (not steady before the drill)"), "{}", stdout(&out));
    // The fault was never tried, so it is not shown as one that failed.
    let faults = stdout(&out).split("\nfaults").nth(1).unwrap_or_default().to_string();
    assert!(faults.contains("not injected") && !faults.contains("failed"), "{}", stdout(&out));
}

#[test]
fn an_interrupted_drill_clears_its_faults_and_still_writes_its_reports_saying_so() {
    let p = started();
    write(&p, "long.yaml", "name: long\nload: { rate: 10, duration: 60s }\nfaults:\n  - { at: 1s, kill: payment }\n");
    let (junit, journal) = (p.dir.path().join("i.xml"), p.dir.path().join("i.json"));
    let child = spawn_drill(&p, &["long.yaml", "--junit", "i.xml", "--json-file", "i.json"]);
    // Interrupted once the kill is in force, as a CI job's time limit would.
    let killed = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        faults_left(&p).contains("kill")
    });
    assert!(killed, "the drill never applied its kill");
    // Orders keep starting while payment is down, and wait for it.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(faults_left(&p), "[]");
    crate::tools::assert_valid_junit(&junit);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("name=\"interrupted\"") && xml.contains("<failure"), "{xml}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&journal).unwrap()).unwrap();
    assert_eq!((report["ok"].as_bool(), report["verdict"].as_str()), (Some(false), Some("interrupted")), "{report:#}");
    // What happened before the signal is kept: when the kill was applied, the orders the load
    // saw (the orders of the first second, before it), and their timeline.
    let fault = &report["faults"][0];
    assert!(fault["applied_at_s"].as_f64().is_some() && fault["error"].is_null(), "{report:#}");
    assert!(report["outcomes"]["orders"].as_u64().is_some_and(|n| n > 0), "{report:#}");
    assert!(report["per_second"].as_array().is_some_and(|s| !s.is_empty()), "{report:#}");
    // Those in flight when the signal came count as started, in their second and window.
    assert!(report["outcomes"]["abandoned"].as_u64().is_some_and(|n| n > 0), "{report:#}");
    assert!(report["per_second"][1]["started"].as_u64().is_some_and(|n| n > 0), "{report:#}");
    let during = report["windows"].as_array().unwrap().iter().find(|w| w["phase"] == "during").cloned();
    assert!(during.is_some_and(|w| w["orders"].as_u64() > Some(0)), "{report:#}");
    assert_eq!(report["invariants"]["checks"], serde_json::json!([]), "not checked, so none passed");
    let printed = stdout(&out);
    assert!(
        printed.contains("when interrupted (not settled)") && printed.contains("invariants: not checked"),
        "{printed}"
    );
}

#[test]
fn a_halt_rule_stops_the_load_rolls_back_and_names_itself() {
    let p = started();
    let file = write(
        &p,
        "halting.yaml",
        "name: halting
load: { rate: 20, duration: 30s }
faults:
  - { at: 0s, errors: order, status: 503, percent: 100 }
halt:
  - { when: \"errors>50%\", for: 1s }
expect: { settle_within: 10s }
",
    );
    let (code, report) = drill(&p, &file);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["verdict"], "halted", "{report:#}");
    assert_eq!(report["halted"]["rule"], "errors>50%", "{report:#}");
    assert!(report["halted"]["at_s"].as_f64().unwrap() < 20.0, "{report:#}");
    assert!(report["outcomes"]["orders"].as_u64().unwrap() < 600, "the load stopped early: {report:#}");
    assert_eq!(faults_left(&p), "[]");
}

#[test]
fn a_latency_halt_rule_stops_the_load_on_slow_answers_rolls_back_and_names_itself() {
    let p = started();
    let file = write(
        &p,
        "slow.yaml",
        "name: slow
load: { rate: 20, duration: 30s }
faults:
  - { at: 0s, latency: payment, delay: 800ms }
halt:
  - { when: \"p99>500ms\", for: 2s }
expect: { settle_within: 10s }
",
    );
    let (code, report) = drill(&p, &file);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["verdict"], "halted", "{report:#}");
    assert_eq!(report["halted"]["rule"], "p99>500ms", "{report:#}");
    let detail = report["halted"]["detail"].as_str().unwrap();
    assert!(detail.contains(" ms of ") && detail.ends_with("answered in the last 2s"), "{report:#}");
    assert!(report["outcomes"]["orders"].as_u64().unwrap() < 600, "the load stopped early: {report:#}");
    assert_eq!(faults_left(&p), "[]");
}

#[test]
fn json_with_a_path_writes_the_journal_and_json_alone_prints_the_report() {
    let p = started();
    let file = write(&p, "tiny.yaml", "name: tiny\nload: { orders: 3 }\nexpect: { settle_within: 10s }\n");
    let journal = p.dir.path().join("journal.json");
    let read_journal = || -> Value { serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap() };

    // SPEC's form: the human report on stdout, the journal in the file.
    let out = p.shop(&["chaos", "drill", &file, "--json", journal.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("drill tiny: PASSED"), "{}", stdout(&out));
    assert!(serde_json::from_slice::<Value>(&out.stdout).is_err(), "{}", stdout(&out));
    let written = read_journal();
    assert_eq!(written["name"], "tiny");
    assert!(written["per_second"].is_array() && written["faults"].is_array(), "{written:#}");
    std::fs::remove_file(&journal).unwrap();

    // The path first, then the file; and the `--json-file` alias.
    let out = p.shop(&["chaos", "drill", "--json", journal.to_str().unwrap(), &file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(read_journal()["name"], "tiny");
    std::fs::remove_file(&journal).unwrap();
    let out = p.shop(&["chaos", "drill", &file, "--json-file", journal.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(read_journal()["name"], "tiny");

    // A bare `--json`, after the file or before the subcommand: the report on stdout.
    for args in [vec!["chaos", "drill", file.as_str(), "--json"], vec!["--json", "chaos", "drill", file.as_str()]] {
        let out = p.shop(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(report["name"], "tiny", "{args:?}");
    }
}

#[test]
fn a_sigkilled_drill_leaves_faults_that_expire_by_themselves() {
    let p = started();
    let file = write(
        &p,
        "killed.yaml",
        "name: killed\nload: { rate: 10, duration: 2s }\nfaults:\n  - { at: 0s, latency: payment, delay: 5ms }\n",
    );
    let mut child = spawn_drill(&p, &[&file, "-q"]);
    crate::tools::wait_until(Duration::from_secs(20), "the drill's fault", || faults_left(&p) != "[]");
    let listed: Value = serde_json::from_str(&faults_left(&p)).unwrap();
    let expires = listed[0]["expires_in_s"].as_f64().expect("every drill fault carries an expiry");
    child.kill().unwrap();
    child.wait().unwrap();
    crate::tools::wait_until(Duration::from_secs_f64(expires + 5.0), "the fault to expire", || faults_left(&p) == "[]");
}

#[test]
fn sigint_and_sigterm_roll_the_drill_back_long_before_the_faults_expire() {
    let p = started();
    // The fault's expiry is the rest of the 60 s load plus slack: only the rollback clears it sooner.
    let file = write(
        &p,
        "long.yaml",
        "name: long\nload: { rate: 5, duration: 60s }\nfaults:\n  - { at: 0s, latency: payment, delay: 5ms }\n",
    );
    for signal in ["-INT", "-TERM"] {
        let child = p.spawn(&["chaos", "drill", &file, "-q"]);
        crate::tools::wait_until(Duration::from_secs(20), "the drill's fault", || faults_left(&p) != "[]");
        let sent = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{signal}: {}", stderr(&out));
        assert!(stderr(&out).contains("interrupted; the drill's faults were cleared"), "{signal}: {}", stderr(&out));
        assert_eq!(faults_left(&p), "[]", "{signal}: the rollback ran before the drill exited");
    }
}

#[test]
fn the_same_monkey_seed_prints_the_same_timeline_and_bad_monkeys_exit_2() {
    let p = started();
    let args = [
        "chaos",
        "monkey",
        "--duration",
        "1s",
        "--seed",
        "42",
        "--targets",
        "payment",
        "--faults",
        "latency,errors",
        "--mean-interval",
        "300ms",
        "--for",
        "200ms",
    ];
    let (a, b) = (p.shop(&args), p.shop(&args));
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert!(stdout(&a).starts_with("monkey (seed 42):"), "{}", stdout(&a));
    assert_eq!(stdout(&a), stdout(&b));
    assert_eq!(faults_left(&p), "[]");
    // With --json, stdout is one document: the same timeline, and what became of each fault.
    let listed = stdout(&a).lines().count() - 1;
    let c = p.shop(&[&["--json"][..], &args].concat());
    assert_eq!(c.status.code(), Some(0), "{}", stderr(&c));
    let doc: Value = serde_json::from_slice(&c.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&c)));
    let faults = doc["faults"].as_array().unwrap();
    assert_eq!((doc["seed"].as_u64(), faults.len(), doc["applied"].as_u64()), (Some(42), listed, Some(listed as u64)));
    assert!(faults.iter().all(|f| f["applied_at_s"].as_f64().is_some() && f["error"].is_null()), "{doc:#}");
    assert!(stderr(&c).contains("monkey (seed 42):"), "the timeline still shows: {}", stderr(&c));
    // A report that could not be written at the end is refused before the drill begins.
    let out = p.shop(&["chaos", "drill", &shipped("payment-outage"), "--html", "/nonexistent/r.html"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let want = "cannot write the HTML report to `/nonexistent/r.html`: `/nonexistent` is not a directory";
    assert!(stderr(&out).contains(want), "{}", stderr(&out));
    assert_eq!(faults_left(&p), "[]");
    // Nor may a report replace the drill file it comes from.
    let drill = write(&p, "d.yaml", "name: d\nload: { orders: 1 }\n");
    let out = p.shop(&["chaos", "drill", &drill, "--json", &drill]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is what this command reads"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&drill).unwrap(), "name: d\nload: { orders: 1 }\n");
    let none = p.shop(&["chaos", "monkey", "--duration", "1s", "--targets", ","]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
    assert!(stderr(&none).contains("a monkey with no targets"), "{}", stderr(&none));
    // A fault that ends as it starts would make a monkey that never breaks anything.
    let brief = p.shop(&["chaos", "monkey", "--duration", "1s", "--targets", "payment", "--for", "0s"]);
    assert_eq!(brief.status.code(), Some(2), "{}", stderr(&brief));
    assert!(stderr(&brief).contains("--for and --max-concurrent must be above 0"), "{}", stderr(&brief));
    let weights = write(&p, "w.yaml", "name: w\nload: { rate: 10, duration: 1s, users: \"alice:-5\" }\n");
    let out = p.shop(&["chaos", "drill", &weights]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("w.yaml:2:40: load: `users`: the weight of `alice` must be above 0, not -5"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn smoke_junit_has_one_valid_testcase_per_check() {
    let p = Project::new("");
    let junit = p.dir.path().join("smoke.xml");
    let out = p.shop(&["smoke", "-q", "--junit", junit.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    crate::tools::assert_valid_junit(&junit);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"7\" failures=\"0\""), "{xml}");
    assert!(xml.contains("<testcase name=\"order_survives_payment_outage\" classname=\"smoke\""), "{xml}");
    // Each testcase carries how long its check took: the outage check waits for payment.
    let case = xml.split("name=\"order_survives_payment_outage\"").nth(1).unwrap();
    let time: f64 = case.split("time=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    assert!(time > 0.05, "{xml}");
}

#[test]
fn a_wire_fault_holds_back_no_fault_due_beside_it_and_counts_as_applied_once_in_force() {
    let p = started();
    let file = write(
        &p,
        "side.yaml",
        "name: side
load: { rate: 20, duration: 2s }
faults:
  - { at: 0s, net: payment, toxic: latency, delay: 5ms, for: 1s }
  - { at: 0s, latency: inventory, delay: 5ms, for: 1s }
",
    );
    let (code, report) = drill(&p, &file);
    assert_eq!(code, Some(0), "{report:#}");
    let applied = |n: usize| report["faults"][n]["applied_at_s"].as_f64().unwrap();
    // The wire fault is in force once callers switched to its proxy, a discovery refresh (200 ms
    // here) later; the request-level fault beside it did not wait for that.
    assert!(applied(0) >= 0.2, "{report:#}");
    assert!(applied(1) < applied(0), "{report:#}");
}

#[test]
fn a_drill_rolls_back_its_own_faults_and_leaves_the_ones_it_found() {
    let p = started();
    assert_eq!(p.shop(&["chaos", "latency", "notification", "1ms", "--for", "120s"]).status.code(), Some(0));
    let file = write(
        &p,
        "own.yaml",
        "name: own\nload: { rate: 10, duration: 1s }\nfaults:\n  - { at: 0s, latency: inventory, delay: 1ms }\n",
    );
    let (code, report) = drill(&p, &file);
    assert_eq!(code, Some(0), "{report:#}");
    let left: Value = serde_json::from_str(&faults_left(&p)).unwrap();
    let services: Vec<&str> = left.as_array().unwrap().iter().map(|f| f["service"].as_str().unwrap()).collect();
    assert_eq!(services, ["notification"], "{left:#}");
}

#[test]
fn an_interrupted_monkey_still_prints_its_json_saying_so() {
    let p = started();
    let child = std::process::Command::new(crate::support::BIN)
        .current_dir(p.dir.path())
        .args(["--json", "chaos", "monkey", "--duration", "60s", "--seed", "3", "--targets", "payment"])
        .args(["--faults", "latency", "--mean-interval", "500ms", "--for", "30s"])
        .env_remove("SHOP_STACK")
        .env_remove("SHOP_STATE_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::tools::wait_until(Duration::from_secs(20), "the monkey's first fault", || faults_left(&p) != "[]");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted; the monkey's faults were cleared"), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert_eq!((doc["interrupted"].as_bool(), doc["seed"].as_u64()), (Some(true), Some(3)), "{doc:#}");
    assert!(doc["applied"].as_u64().is_some_and(|n| n >= 1), "{doc:#}");
    let faults = doc["faults"].as_array().unwrap();
    assert!(faults.iter().any(|f| f["error"].as_str().is_some_and(|e| e.contains("interrupted"))), "{doc:#}");
    assert_eq!(faults_left(&p), "[]");
}

#[test]
fn a_wire_fault_in_force_only_after_the_load_is_not_counted_as_applied() {
    // Callers refresh their view every 1.5 s here: a wire fault due at 0.4 s is in force at
    // about 1.6 s, well after the 1 s load.
    let text = crate::stack::stack_yaml("").replace("heartbeat: 200ms, ttl: 1s", "heartbeat: 1500ms, ttl: 5s");
    let p = Project::with_file(&text);
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    let file = write(
        &p,
        "late.yaml",
        "name: late\nload: { rate: 10, duration: 1s }\nfaults:\n  - { at: 400ms, net: inventory, toxic: latency, delay: 5ms }\n",
    );
    let (code, report) = drill(&p, &file);
    assert_eq!(code, Some(1), "{report:#}");
    let detail = check(&report, "expectations", "faults_applied")["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("too late: in force at") && detail.contains("no order met it"), "{report:#}");
    // Nothing is measured past the load: the window before the fault ends with it.
    for w in report["windows"].as_array().unwrap() {
        assert!(w["to_s"].as_f64().unwrap() <= report["outcomes"]["duration_s"].as_f64().unwrap() + 0.1, "{w}");
    }
}
