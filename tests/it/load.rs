//! `shop load` through the real CLI against a stack started with `up -d`: the report's counts,
//! its JSON contract, and that the order database saw every order it counted.

use std::process::Output;
use std::time::{Duration, Instant};

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
