//! `shop load` through the real CLI against a stack started with `up -d`: the report's counts,
//! its JSON contract, and that the order database saw every order it counted.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stack::{started, Project};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn count(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("`{field}` is not a count in {v}"))
}

#[test]
fn load_places_every_order_and_reports_outcomes_that_match_the_order_database() {
    let p = started();
    let out = p.shop(&["load", "--orders", "40", "--concurrency", "4", "--users", "alice,bob", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // One JSON document and nothing else on stdout; no progress bar off a terminal.
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert_eq!(stderr(&out), "");
    assert_eq!(count(&report, "orders"), 40, "{report}");
    let sum: u64 = ["confirmed", "failed", "pending", "errors"].iter().map(|f| count(&report, f)).sum();
    assert_eq!(sum, 40, "{report}");
    // Round-robin: every other order is bob's, whose card is declined.
    assert_eq!(count(&report, "confirmed"), 20, "{report}");
    assert_eq!(count(&report, "failed"), 20, "{report}");
    assert_eq!(report["failures_by_code"]["card_declined"], 20, "{report}");
    assert_eq!(report["errors_by_kind"], serde_json::json!({}), "{report}");
    let latency = &report["latency_ms"];
    let ms = |f: &str| latency[f].as_f64().unwrap_or_else(|| panic!("latency_ms.{f} missing in {report}"));
    for f in ["p50", "p90", "p99", "p999", "max"] {
        assert!(ms(f) > 0.0, "latency_ms.{f} in {report}");
    }
    assert!(ms("p50") <= ms("p90") && ms("p90") <= ms("p99") && ms("p99") <= ms("p999") && ms("p999") <= ms("max"));
    assert!(report["duration_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["throughput_per_s"].as_f64().unwrap() > 0.0, "{report}");

    let db = shop::plumbing::db::open_read_only(&p.dir.path().join(".shop/data/order.db")).unwrap();
    let orders: i64 = db.query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0)).unwrap();
    assert_eq!(orders, 40);
    // Outcome by outcome: every one of alice's orders confirmed, every one of bob's failed on
    // the declined card, as the report counted them.
    let mut rows =
        db.prepare("SELECT user_id, status, coalesce(json_extract(failure, '$.code'), '') FROM orders").unwrap();
    let outcomes: Vec<(String, String, String)> =
        rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    for (user, status, code) in &outcomes {
        let want = if user == "alice" { ("CONFIRMED", "") } else { ("FAILED", "card_declined") };
        assert_eq!((user.as_str() == "alice" || user == "bob", status.as_str(), code.as_str()), (true, want.0, want.1));
    }
    let confirmed = outcomes.iter().filter(|o| o.1 == "CONFIRMED").count() as u64;
    assert_eq!((confirmed, 40 - confirmed), (count(&report, "confirmed"), count(&report, "failed")));
    // Money and stock agree with those outcomes: one capture per confirmed order, none else.
    let payments = shop::plumbing::db::open_read_only(&p.dir.path().join(".shop/data/payment.db")).unwrap();
    let captured: i64 =
        payments.query_row("SELECT COUNT(*) FROM payments WHERE captured_cents > 0", [], |r| r.get(0)).unwrap();
    assert_eq!(captured as u64, confirmed);
    let inv = p.shop(&["inspect", "invariants", "--settle", "15s"]);
    assert_eq!(inv.status.code(), Some(0), "{}", stdout(&inv));
}

#[test]
fn bad_load_flags_exit_2_before_any_order_is_sent() {
    let p = Project::new("");
    // A gateway nothing listens on: none of these may get as far as sending.
    let gateway = ["--gateway", "http://127.0.0.1:1"];
    let out = p.shop(&["load", "--orders", "0", gateway[0], gateway[1]]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`--orders` must be at least 1"), "{}", stderr(&out));
    let out = p.shop(&["load", "--concurrency", "0", gateway[0], gateway[1]]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = p.shop(&["load", "--rate", "fast", gateway[0], gateway[1]]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A sign is named as a bad value, not taken for an unknown flag.
    for (flag, value, want) in [
        ("--orders", "-1", "invalid value '-1' for '--orders <ORDERS>'"),
        ("--duration", "-5s", "`-5s` is not a duration"),
        ("--rate", "-3", "`-3` is not a rate"),
        ("--rate", "1e-300", "`1e-300` is out of range; a rate is 0.001 to 1000000 orders per second"),
        // Values the gateway would refuse in every order are refused here, naming the part.
        ("--item", "sku-1:0", "the quantity after `:` must be 1 to 1000"),
        ("--item", "sku-1:abc", "the quantity after `:` must be a whole number"),
        ("--item", "sku-1:2@x", "the weight after `@` must be a whole number above 0"),
        ("--gateway", "notaurl", "`notaurl` is not a URL"),
        ("--gateway", "ftp://127.0.0.1:1", "is not an http:// URL with a host"),
    ] {
        let out = p.shop(&["load", flag, value, gateway[0], gateway[1]]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(want), "{flag} {value}: {}", stderr(&out));
    }
    let out = p.shop(&["load", "--threshold", "rate>=95%", gateway[0], gateway[1]]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("which only an open loop has: add --rate"), "{}", stderr(&out));
    let out = p.shop(&["load", "--users", "nobody", gateway[0], gateway[1]]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no fixture user `nobody`"), "{err}");
    for user in ["alice", "bob", "carol"] {
        assert!(err.contains(user), "{err}");
    }
    assert_eq!(stdout(&out), "");
}

#[test]
fn load_against_an_unreachable_gateway_stops_at_once_with_exit_1() {
    let p = Project::new("");
    let began = Instant::now();
    let out = p.shop(&["load", "--orders", "100000", "--gateway", "http://127.0.0.1:1", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach the gateway at http://127.0.0.1:1"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // Generous: "at once" means no retry loop over 100000 orders, not a speed on a busy machine.
    assert!(began.elapsed() < Duration::from_secs(60), "took {:?}", began.elapsed());
}

#[test]
fn load_prints_a_table_and_honours_rate_and_duration() {
    let p = started();
    let out = p.shop(&["load", "--orders", "10", "--concurrency", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    for word in ["throughput", "p50", "p99", "p99.9", "max", "confirmed", "failed", "pending", "errors"] {
        assert!(table.contains(word), "{word} missing in\n{table}");
    }
    assert!(table.lines().any(|l| l.split_whitespace().eq(["confirmed", "10"])), "{table}");

    // 20 orders/s for 500ms starts about 10 of the 100000 asked for.
    let began = Instant::now();
    let out =
        p.shop(&["load", "--orders", "100000", "--rate", "20/s", "--duration", "500ms", "--wait", "5s", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    let orders = count(&report, "orders");
    assert!((5..=12).contains(&orders), "{report}");
    assert_eq!(count(&report, "confirmed"), orders, "{report}");
    assert!(began.elapsed() < Duration::from_secs(60), "took {:?}", began.elapsed());
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

fn ms(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for p in path {
        at = &at[p];
    }
    at.as_f64().unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

#[test]
fn open_loop_load_reports_its_mode_rates_and_a_per_second_timeline() {
    let p = started();
    let out = p.shop(&["load", "--orders", "30", "--rate", "60", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["mode"], "open", "{report}");
    assert_eq!(report["target_rate_per_s"], 60.0, "{report}");
    assert!(ms(&report, &["achieved_rate_per_s"]) > 0.0, "{report}");
    let below = report["rate_below_target"].as_bool().unwrap_or_else(|| panic!("no rate_below_target in {report}"));
    assert_eq!(below, ms(&report, &["achieved_rate_per_s"]) < 57.0, "{report}");
    assert_eq!(count(&report, "orders") + count(&report, "dropped"), 30, "{report}");
    assert_eq!(count(&report, "dropped"), 0, "nothing is dropped without --duration: {report}");
    assert_eq!(count(&report, "confirmed"), 30, "{report}");
    for f in ["p50", "p99", "max"] {
        assert!(ms(&report, &["service_time_ms", f]) > 0.0, "service_time_ms.{f} in {report}");
        assert!(ms(&report, &["latency_ms", f]) >= ms(&report, &["service_time_ms", f]) * 0.99, "{report}");
    }
    let timeline = report["timeline"].as_array().unwrap_or_else(|| panic!("no timeline in {report}"));
    assert!(!timeline.is_empty(), "{report}");
    for (i, second) in timeline.iter().enumerate() {
        assert_eq!(second["t"], i as u64, "{second}");
        for f in ["started", "completed", "confirmed", "failed", "errors"] {
            assert!(second[f].is_u64(), "{f} in {second}");
        }
        assert!(second.get("p50_ms").is_some() && second.get("p99_ms").is_some(), "{second}");
    }
    let sum = |f: &str| timeline.iter().map(|s| s[f].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!((sum("started"), sum("completed"), sum("confirmed")), (30, 30, 30), "{report}");

    // Closed loop says so, with no target rate.
    let out = p.shop(&["load", "--orders", "5", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!((report["mode"].as_str(), report["target_rate_per_s"].is_null()), (Some("closed"), true), "{report}");
    let out = p.shop(&["load", "--orders", "5", "--rate", "50"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    for row in ["open loop, 50 orders/s scheduled", "target start rate", "achieved start rate", "service time p99"] {
        assert!(table.contains(row), "{row} missing in\n{table}");
    }
}

#[test]
fn a_stall_keeps_the_open_loop_offering_its_rate_where_a_closed_loop_backs_off() {
    let p = started();
    let chaos = p.shop(&["chaos", "latency", "payment", "500ms"]);
    assert_eq!(chaos.status.code(), Some(0), "{}", stderr(&chaos));
    // Open loop: 40 orders/s for 2 s are offered whatever the stall does to them, so about 80
    // users each wait out the stall, as real users would have.
    let open = p.shop(&["load", "--rate", "40", "--duration", "2s", "--json"]);
    assert_eq!(open.status.code(), Some(0), "{}", stderr(&open));
    let open = json(&open);
    assert_eq!(open["mode"], "open", "{open}");
    assert!(count(&open, "orders") >= 76, "the schedule held under the stall: {open}");
    assert_eq!(count(&open, "dropped"), 0, "{open}");
    let (latency, service) = (ms(&open, &["latency_ms", "p50"]), ms(&open, &["service_time_ms", "p50"]));
    assert!(
        service >= 500.0 && latency >= service,
        "latency {latency} ms from the scheduled start, service {service} ms: {open}"
    );
    // Closed loop with 8 workers over the same 2 s: each waits for its order before the next, so
    // the stall silently cuts the load to a handful of slow orders.
    let closed = p.shop(&["load", "--concurrency", "8", "--duration", "2s", "--json"]);
    assert_eq!(closed.status.code(), Some(0), "{}", stderr(&closed));
    let closed = json(&closed);
    assert_eq!(closed["mode"], "closed", "{closed}");
    assert!(
        count(&open, "orders") >= 2 * count(&closed, "orders"),
        "open loop {} orders vs closed loop {}: {open} {closed}",
        count(&open, "orders"),
        count(&closed, "orders")
    );
}

#[test]
fn orders_due_while_the_concurrency_cap_is_full_are_dropped_and_fail_a_dropped_threshold() {
    let p = started();
    let chaos = p.shop(&["chaos", "latency", "payment", "300ms"]);
    assert_eq!(chaos.status.code(), Some(0), "{}", stderr(&chaos));
    let out = p.shop(&[
        "load",
        "--orders",
        "1000",
        "--rate",
        "20",
        "--duration",
        "1s",
        "--concurrency",
        "1",
        "--threshold",
        "dropped==0",
        "--threshold",
        "errors<1%",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", stdout(&out), stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("THRESHOLD"), "{table}");
    let row = |first: &str| -> Vec<&str> {
        let row = table.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|w| w.first() == Some(&first));
        row.unwrap_or_else(|| panic!("no `{first}` row in\n{table}"))
    };
    assert_eq!(row("dropped==0").last(), Some(&"FAIL"), "{table}");
    assert_eq!(row("errors<1%").last(), Some(&"pass"), "{table}");
    assert!(stderr(&out).contains("1 of 2 thresholds missed: dropped==0"), "{}", stderr(&out));
    let dropped: u64 = row("dropped")[1].parse().unwrap_or_else(|e| panic!("{e}: {table}"));
    assert!(dropped > 0, "{table}");
    assert!(stderr(&out).contains("orders dropped at the concurrency cap"), "{}", stderr(&out));
}

#[test]
fn thresholds_that_hold_exit_0_and_appear_in_the_json() {
    let p = started();
    let out = p.shop(&[
        "load",
        "--orders",
        "10",
        "--json",
        "--threshold",
        "confirmed>90%",
        "--threshold",
        "p99<60s",
        "--threshold",
        "failed==0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    let rows = report["thresholds"].as_array().unwrap_or_else(|| panic!("no thresholds in {report}"));
    let exprs: Vec<&str> = rows.iter().map(|r| r["expression"].as_str().unwrap()).collect();
    assert_eq!(exprs, ["confirmed>90%", "p99<60s", "failed==0"], "{report}");
    assert!(rows.iter().all(|r| r["pass"] == true), "{report}");
    assert_eq!(rows[0]["observed"], 100.0, "{report}");

    let out = p.shop(&["load", "--orders", "4", "--users", "bob", "--json", "--threshold", "confirmed>90%"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["thresholds"][0]["pass"], false, "{report}");
    assert!(stderr(&out).contains("1 of 1 thresholds missed: confirmed>90%"), "{}", stderr(&out));
}

#[test]
fn weighted_users_and_items_set_the_mix_of_orders() {
    let p = started();
    // bob's card is declined: a 3:1 mix of alice and bob fails one order in four.
    let out = p.shop(&["load", "--orders", "40", "--users", "alice:3,bob:1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!((count(&report, "confirmed"), count(&report, "failed")), (30, 10), "{report}");

    let out = p.shop(&["load", "--orders", "20", "--item", "sku-load:1@3", "--item", "sku-load:2@1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(count(&json(&out), "confirmed"), 20);
    let db = shop::plumbing::db::open_read_only(&p.dir.path().join(".shop/data/order.db")).unwrap();
    let quantity_two: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM order_events WHERE type = 'OrderPlaced' AND json_extract(data, '$.items[0].quantity') = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(quantity_two, 5);
}

#[test]
fn bad_rates_weights_and_thresholds_exit_2_naming_the_accepted_forms() {
    let p = Project::new("");
    let gateway = ["--gateway", "http://127.0.0.1:1"];
    let cases: [(&[&str], &str); 6] = [
        (&["--rate", "0"], "write orders per second, e.g. 200 or 200/s"),
        (&["--users", "alice:-5,bob:10"], "write USER or USER:WEIGHT"),
        (&["--users", "alice:3,bob"], "give every user a weight or none"),
        (&["--item", "sku-1:1@-2"], "write SKU[:QTY][@WEIGHT]"),
        (&["--threshold", "p95<50ms"], "e.g. p99<50ms, errors<1%, confirmed>90%, rate>=95%, dropped==0"),
        (&["--threshold", "errors<<1"], "METRIC OP VALUE"),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["load"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&gateway);
        let out = p.shop(&args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{flags:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{flags:?}");
    }
}

/// The POST /orders answers an instance counted in its `/metrics`.
async fn orders_served(address: &str) -> f64 {
    let text = reqwest::get(format!("http://{address}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("shop_http_requests_total") && l.contains("route=\"/orders\"") && l.contains("POST"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_load_balances_over_gateway_replicas_and_fails_over_when_one_is_killed() {
    let p = Project::with_file(&crate::stack::stack_yaml("").replace("  gateway:\n", "  gateway:\n    replicas: 2\n"));
    let up = p.shop(&["up", "-d", "-q"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let second = p.row("gateway-2")["address"].as_str().unwrap().to_string();
    let load = p.spawn(&["load", "--rate", "40", "--duration", "6s", "--users", "alice", "--json"]);
    std::thread::sleep(Duration::from_millis(1500));
    // The first gateway is the one a load that talks to one gateway would have picked.
    let kill = p.shop(&["chaos", "kill", "gateway-1", "-q"]);
    assert_eq!(kill.status.code(), Some(0), "{}", stderr(&kill));
    let out = load.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    // Only an order in flight on the killed replica can be lost; every later one goes to the
    // healthy replica instead of failing to connect.
    assert!(count(&report, "errors") <= 3, "{report}");
    assert!(count(&report, "confirmed") >= count(&report, "orders") - 3, "{report}");
    let timeline = report["timeline"].as_array().unwrap();
    for second in &timeline[3..timeline.len().min(6)] {
        assert!(second["confirmed"].as_u64().unwrap() > 0 && second["errors"] == 0, "{second} in {report}");
    }
    // Both replicas took orders: the load was balanced before the kill.
    let served = orders_served(&second).await;
    assert!(served >= 40.0, "gateway-2 served {served} orders");
    assert_eq!(p.shop(&["chaos", "clear", "-q"]).status.code(), Some(0));
}

#[test]
fn a_load_sends_nothing_to_a_gateway_replica_that_is_paused_when_it_starts() {
    let p = Project::with_file(&crate::stack::stack_yaml("").replace("  gateway:\n", "  gateway:\n    replicas: 2\n"));
    let up = p.shop(&["up", "-d", "-q"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let paused = p.shop(&["chaos", "pause", "gateway-1", "-q"]);
    assert_eq!(paused.status.code(), Some(0), "{}", stderr(&paused));
    // A paused replica takes the connection and never answers: an order sent there would
    // wait out the whole request timeout.
    let out = p.shop(&["load", "--rate", "20", "--duration", "2s", "--users", "alice", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!((count(&report, "errors"), count(&report, "confirmed")), (0, count(&report, "orders")), "{report}");
    assert_eq!(p.shop(&["chaos", "clear", "-q"]).status.code(), Some(0));
}
