//! The invariant checker shown to fail: a copy of a real stack's databases, damaged in each
//! invariant's own way, makes exactly that check fail and `shop inspect invariants` exit non-zero.

use std::path::Path;

use serde_json::Value;

use crate::stack::{with_two_orders, Project};

/// Copies the live stack's databases (a consistent snapshot each, beside the running services)
/// into a fresh state dir under `to`.
fn snapshot(p: &Project, to: &Path) {
    let data = to.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["order", "payment", "inventory", "notification", "gateway", "user"] {
        let live = p.dir.path().join(format!(".shop/data/{name}.db"));
        let conn = shop::plumbing::db::open_read_only(&live).unwrap();
        let copy = data.join(format!("{name}.db"));
        conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()]).unwrap();
    }
}

/// `shop inspect invariants --json` over the state dir `state`: the exit code and the names of
/// the failed checks.
fn inspect(p: &Project, state: &Path) -> (Option<i32>, Vec<String>, Value) {
    let out = p.shop(&["--state-dir", state.to_str().unwrap(), "--json", "inspect", "invariants", "--settle", "0s"]);
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let failed = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    (out.status.code(), failed, report)
}

#[test]
fn each_kind_of_damage_fails_exactly_its_own_invariant() {
    let p = with_two_orders("sku-1:2");

    let copies = tempfile::tempdir().unwrap();
    let undamaged = copies.path().join("undamaged");
    snapshot(&p, &undamaged);
    let (code, failed, report) = inspect(&p, &undamaged);
    assert_eq!((code, failed.len()), (Some(0), 0), "{report:#}");
    assert_eq!(report["checks"].as_array().unwrap().len(), 6, "{report:#}");

    let damages: [(&str, &str, &str); 6] = [
        ("stock_conservation", "inventory", "UPDATE products SET available = available + 1 WHERE product_id = 'sku-1'"),
        (
            "charged_iff_confirmed",
            "payment",
            "UPDATE payments SET captured_cents = captured_cents + 1, amount_cents = amount_cents + 1
             WHERE status = 'captured'",
        ),
        (
            "one_notification_per_terminal_order",
            "notification",
            "INSERT INTO notifications
             SELECT 'dup-' || event_id, 'dup-' || notification_id, order_id, user_id, kind, message, 1, created_at
             FROM notifications LIMIT 1",
        ),
        ("no_accepted_order_lost", "gateway", "INSERT INTO accepted_orders VALUES ('ord-never-stored', 'u1', 0)"),
        ("nothing_stuck", "order", "UPDATE orders SET status = 'PENDING' WHERE status = 'CONFIRMED'"),
        // The lines, not the total: a changed total would also break charged_iff_confirmed.
        // The first line's quantity, stored as `[product_id, quantity, unit_price_cents]`.
        (
            "totals_match_items",
            "order",
            "UPDATE orders SET items = json_set(items, '$[0][1]', json_extract(items, '$[0][1]') + 1)
             WHERE status = 'CONFIRMED'",
        ),
    ];
    for (check, db, sql) in damages {
        let state = copies.path().join(check);
        snapshot(&p, &state);
        let conn = rusqlite::Connection::open(state.join(format!("data/{db}.db"))).unwrap();
        assert_eq!(conn.execute(sql, []).unwrap(), 1, "{check}: the damage touched one row");
        drop(conn);
        let (code, failed, report) = inspect(&p, &state);
        assert_ne!(code, Some(0), "{check}: damage not reported: {report:#}");
        assert_eq!(failed, vec![check.to_string()], "{report:#}");
    }
    // The text form says the same, with the exit code of a runtime failure.
    let text = p.shop(&[
        "--state-dir",
        copies.path().join("nothing_stuck").to_str().unwrap(),
        "inspect",
        "invariants",
        "--settle",
        "0s",
    ]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_ne!(text.status.code(), Some(0));
    assert!(stdout.contains("1 orders PENDING") && stdout.contains(" passed, 1 failed"), "{stdout}");
}
