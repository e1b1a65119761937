//! Driving and seeing through the real CLI: `shop order` exit codes and JSON, traces across
//! every service, the waterfall, `inspect` documents, and the invariant checker catching a
//! broken database.

use std::collections::HashSet;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::stack::started;
use crate::support::eventually;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

fn has_fields(v: &Value, fields: &[&str]) {
    for f in fields {
        assert!(v.get(*f).is_some(), "`{f}` missing in {v}");
    }
}

#[test]
fn order_place_exits_0_confirmed_3_rejected_and_1_pending_or_unreachable() {
    let p = started();
    let ok = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1:2"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let text = stdout(&ok);
    assert!(text.contains("CONFIRMED") && text.contains("$49.98") && text.contains("charge_payment"), "{text}");

    let declined = p.shop(&["order", "place", "--user", "bob", "--item", "sku-1"]);
    assert_eq!(declined.status.code(), Some(3));
    assert!(stderr(&declined).contains("the card was declined (card_declined)"), "{}", stderr(&declined));
    let inactive = p.shop(&["order", "place", "--user", "carol", "--item", "sku-1"]);
    assert_eq!(inactive.status.code(), Some(3));
    assert!(stderr(&inactive).contains("user_inactive"));
    let unknown = p.shop(&["order", "place", "--user", "zed", "--item", "sku-1"]);
    assert_eq!(unknown.status.code(), Some(2));

    assert_eq!(p.shop(&["stop", "payment"]).status.code(), Some(0));
    let pending = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--wait", "300ms"]);
    assert_eq!(pending.status.code(), Some(1));
    assert!(
        stderr(&pending).contains("still PENDING") && stderr(&pending).contains("shop inspect order ord_"),
        "{}",
        stderr(&pending)
    );
    assert_eq!(p.shop(&["start", "payment"]).status.code(), Some(0));

    let gone = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--gateway", "http://127.0.0.1:9"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("cannot reach the gateway at http://127.0.0.1:9"), "{}", stderr(&gone));
    assert!(stderr(&gone).contains("shop up"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_links_gateway_order_user_inventory_payment_and_notification_spans() {
    let p = started();
    let placed = json(&p.shop(&["order", "place", "--user", "alice", "--item", "sku-2", "--json"]));
    has_fields(
        &placed,
        &[
            "id",
            "user_id",
            "items",
            "total_cents",
            "currency",
            "status",
            "failure",
            "payment_id",
            "trace_id",
            "created_at",
            "updated_at",
            "steps",
        ],
    );
    for s in placed["steps"].as_array().unwrap() {
        has_fields(s, &["step", "service", "outcome", "duration_ms", "attempts"]);
    }
    let id = placed["id"].as_str().unwrap().to_string();
    let trace_id = placed["trace_id"].as_str().unwrap().to_string();
    // The notification is delivered after the answer; wait for its span.
    let mut doc = Value::Null;
    let complete = eventually(Duration::from_secs(10), async || {
        doc = json(&p.shop(&["inspect", "trace", &trace_id, "--json"]));
        doc["spans"].as_array().is_some_and(|s| s.iter().any(|s| s["service"] == "notification"))
    })
    .await;
    assert!(complete, "{doc:#}");
    assert_eq!(doc["trace_id"], trace_id.as_str());
    let spans = doc["spans"].as_array().unwrap();
    for s in spans {
        has_fields(s, &["service", "instance", "name", "span_id", "parent_id", "start_us", "duration_us", "status"]);
    }
    let services: HashSet<&str> = spans.iter().map(|s| s["service"].as_str().unwrap()).collect();
    for want in ["gateway", "order", "user", "inventory", "payment", "notification"] {
        assert!(services.contains(want), "no {want} span: {services:?}");
    }
    let ids: HashSet<&str> = spans.iter().map(|s| s["span_id"].as_str().unwrap()).collect();
    let roots: Vec<&Value> = spans.iter().filter(|s| s["parent_id"].is_null()).collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert_eq!((roots[0]["service"].as_str(), roots[0]["name"].as_str()), (Some("gateway"), Some("POST /orders")));
    for s in spans.iter().filter(|s| !s["parent_id"].is_null()) {
        assert!(ids.contains(s["parent_id"].as_str().unwrap()), "dangling parent: {s}");
    }
    // A server span's parent is the caller's client span, in another service.
    let charge = spans.iter().find(|s| s["service"] == "payment" && s["name"] == "POST /v1/payments").unwrap();
    let caller = spans.iter().find(|s| s["span_id"] == charge["parent_id"]).unwrap();
    assert_eq!(
        (caller["service"].as_str(), caller["name"].as_str()),
        (Some("order"), Some("→ payment POST /v1/payments"))
    );

    // The same, as `inspect order`: timeline, notification and waterfall in one document.
    let inspected = json(&p.shop(&["inspect", "order", &id, "--json"]));
    has_fields(&inspected, &["id", "status", "steps", "events", "notifications", "spans"]);
    for e in inspected["events"].as_array().unwrap() {
        has_fields(e, &["seq", "type", "at", "data"]);
    }
    assert_eq!(inspected["notifications"].as_array().unwrap().len(), 1);
    let human = p.shop(&["inspect", "order", &id]);
    assert_eq!(human.status.code(), Some(0));
    let text = stdout(&human);
    for want in
        ["timeline", "OrderPlaced", "NotificationDelivered", "POST /orders", "saga ord_", "█", "delivered 1 time(s)"]
    {
        assert!(text.contains(want), "`{want}` missing:\n{text}");
    }
    let missing = p.shop(&["inspect", "order", "ord_nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(inspected["spans_missing_from"], serde_json::json!([]), "every instance answered");
    assert!(!text.contains("spans may be missing"), "{text}");

    // A trace whose spans cannot all be read says so, and from where: an instance that is down,
    // then one started again since (spans live in each instance's memory).
    assert_eq!(p.shop(&["chaos", "kill", "payment"]).status.code(), Some(0));
    let doc = json(&p.shop(&["inspect", "trace", &trace_id, "--json"]));
    assert_eq!(doc["spans_missing_from"], serde_json::json!([{"instance": "payment", "why": "killed"}]), "{doc:#}");
    let text = stdout(&p.shop(&["inspect", "trace", &trace_id]));
    assert!(text.contains("spans may be missing from: payment (killed)"), "{text}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(p.shop(&["chaos", "clear"]).status.code(), Some(0));
    assert!(eventually(Duration::from_secs(10), async || p.row("payment")["state"] == "healthy").await);
    let doc = json(&p.shop(&["inspect", "order", &id, "--json"]));
    let why = &doc["spans_missing_from"][0];
    assert_eq!(
        (why["instance"].as_str(), why["why"].as_str()),
        (Some("payment"), Some("started again since the trace began"))
    );
}

#[test]
fn inspect_documents_have_the_fields_of_the_spec() {
    let p = started();
    assert_eq!(p.shop(&["order", "place", "--user", "alice", "--item", "sku-3"]).status.code(), Some(0));
    let stock = json(&p.shop(&["inspect", "stock", "--json"]));
    let sku3 = stock.as_array().unwrap().iter().find(|s| s["product_id"] == "sku-3").unwrap().clone();
    assert_eq!(
        (sku3["initial"].as_i64(), sku3["available"].as_i64(), sku3["reserved"].as_i64(), sku3["sold"].as_i64()),
        (Some(40), Some(39), Some(0), Some(1))
    );
    let inv = json(&p.shop(&["inspect", "invariants", "--json"]));
    assert_eq!(inv["ok"], true, "{inv:#}");
    assert_eq!(inv["checks"].as_array().unwrap().len(), 6);
    for c in inv["checks"].as_array().unwrap() {
        has_fields(c, &["name", "ok", "detail"]);
    }
    let reg = json(&p.shop(&["inspect", "registry", "--json"]));
    assert_eq!(reg.as_array().unwrap().len(), 6);
    has_fields(&reg[0], &["service", "instance", "address", "pid", "heartbeat_age_ms", "status"]);
    let svc = json(&p.shop(&["inspect", "service", "order", "--json"]));
    has_fields(&svc, &["service", "instances", "database", "requests", "errors", "error_rate", "latency_ms"]);
    assert!(svc["database"]["tables"]["orders"].as_i64() == Some(1), "{svc:#}");
    assert!(svc["requests"].as_f64().unwrap() >= 1.0);
    let list = json(&p.shop(&["order", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    let got = json(&p.shop(&["order", "get", list[0]["id"].as_str().unwrap(), "--json"]));
    assert_eq!(got["id"], list[0]["id"]);
    assert_eq!(p.shop(&["inspect", "service", "shipping"]).status.code(), Some(2));
}

#[test]
fn inspect_invariants_fails_on_a_broken_database_copy_and_passes_on_the_original() {
    let p = started();
    for user in ["alice", "bob", "alice"] {
        p.shop(&["order", "place", "--user", user, "--item", "sku-1"]);
    }
    // Settled generously: on a loaded machine the last notification may still be on its way.
    let out = p.shop(&["inspect", "invariants", "--settle", "30s"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(p.shop(&["down", "-q"]).status.code(), Some(0));
    // A copy of the stopped stack's data with one unit of stock vanished and one refund lost.
    let copy = p.dir.path().join("broken");
    std::fs::create_dir_all(copy.join("data")).unwrap();
    for entry in std::fs::read_dir(p.dir.path().join(".shop/data")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join("data").join(entry.file_name())).unwrap();
    }
    let inv = rusqlite::Connection::open(copy.join("data/inventory.db")).unwrap();
    inv.execute("UPDATE products SET available = available - 1 WHERE product_id = 'sku-1'", []).unwrap();
    let pay = rusqlite::Connection::open(copy.join("data/payment.db")).unwrap();
    pay.execute("UPDATE payments SET captured_cents = amount_cents, status = 'captured' WHERE status = 'declined' OR status = 'refunded'", []).unwrap();
    drop((inv, pay));
    let broken = p.shop(&["--state-dir", copy.to_str().unwrap(), "inspect", "invariants", "--settle", "0s"]);
    assert_eq!(broken.status.code(), Some(1), "{}", stdout(&broken));
    let text = stdout(&broken);
    assert!(text.contains("stock_conservation") && text.contains("FAIL"), "{text}");
    assert!(text.contains("sku-1: initial 500 != available 497 + reserved 0 + sold 2"), "{text}");
    assert!(text.contains("FAILED but 2499 cents net charged"), "{text}");
    assert!(text.contains("4 passed, 2 failed"), "{text}");
    let original = p.shop(&["inspect", "invariants", "--json"]);
    assert_eq!(original.status.code(), Some(0));
    assert_eq!(json(&original)["ok"], true);
}

#[test]
fn order_list_and_get_say_when_the_gateway_cannot_answer_rather_than_finding_nothing() {
    let p = started();
    let placed = json(&p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--json"]));
    let id = placed["id"].as_str().unwrap().to_string();
    assert_eq!(p.shop(&["stop", "order"]).status.code(), Some(0));
    let list = p.shop(&["order", "list", "--json"]);
    assert_eq!(list.status.code(), Some(1), "an outage is not an empty list: {}", stdout(&list));
    assert!(stdout(&list).is_empty() && stderr(&list).contains("503"), "{}", stderr(&list));
    let got = p.shop(&["order", "get", &id]);
    assert_eq!(got.status.code(), Some(1));
    assert!(stderr(&got).contains("503") && !stderr(&got).contains("no order"), "{}", stderr(&got));
    assert_eq!(p.shop(&["start", "order"]).status.code(), Some(0));
    // Once the gateway's discovery sees it again.
    crate::tools::wait_until(Duration::from_secs(10), "the order back at the gateway", || {
        p.shop(&["order", "get", &id]).status.success()
    });
    let missing = p.shop(&["order", "get", "ord_01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert!(stderr(&missing).contains("no order"), "{}", stderr(&missing));
}

#[test]
fn inspect_order_names_only_what_did_not_answer_and_never_takes_silence_for_nothing_delivered() {
    let p = started();
    let placed = json(&p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--json"]));
    let id = placed["id"].as_str().unwrap().to_string();
    // Delivered, so its notification is on record before anything breaks.
    crate::tools::wait_until(Duration::from_secs(10), "the notification", || {
        json(&p.shop(&["inspect", "order", &id, "--json"]))["notifications"].as_array().is_some_and(|n| n.len() == 1)
    });
    // A paused instance keeps the span query waiting out its timeout: the others, which did
    // not restart, are not to look restarted for it.
    assert_eq!(p.shop(&["chaos", "pause", "payment", "--for", "30s"]).status.code(), Some(0));
    let doc = json(&p.shop(&["inspect", "order", &id, "--json"]));
    let missing: Vec<&str> =
        doc["spans_missing_from"].as_array().unwrap().iter().map(|m| m["instance"].as_str().unwrap()).collect();
    assert_eq!(missing, ["payment"], "{doc:#}");
    // Nor does a service none of whose instances answered show figures of zero.
    let svc = json(&p.shop(&["inspect", "service", "payment", "--json"]));
    assert!(svc["requests"].is_null() && svc["error_rate"].is_null(), "{svc:#}");
    assert_eq!(svc["unanswered"][0]["instance"], "payment", "{svc:#}");
    let text = stdout(&p.shop(&["inspect", "service", "payment"]));
    assert!(text.contains("requests unknown") && text.contains("left out of the figures: payment (paused"), "{text}");
    assert_eq!(p.shop(&["chaos", "clear"]).status.code(), Some(0));
    assert_eq!(p.shop(&["stop", "notification"]).status.code(), Some(0));
    let doc = json(&p.shop(&["inspect", "order", &id, "--json"]));
    assert!(doc["notifications"].is_null() && doc["notifications_unread"].is_string(), "{doc:#}");
    let text = stdout(&p.shop(&["inspect", "order", &id]));
    assert!(!text.contains("none delivered yet") && text.contains("notification\n  unknown: "), "{text}");
}

#[test]
fn inspecting_a_service_that_is_down_says_what_to_do() {
    let p = started();
    assert_eq!(p.shop(&["chaos", "kill", "registry"]).status.code(), Some(0));
    let out = p.shop(&["inspect", "registry"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no running instance of `registry`"), "{err}");
    assert!(err.contains("`shop ps` shows its state; `shop start` or `shop chaos clear` brings back"), "{err}");
    p.shop(&["down"]);
}

#[test]
fn inspect_asks_only_shops_own_services_for_admin_data_and_counts_traffic_not_probes() {
    // `web` answers 404 where a metrics page would be; `app` answers 200 "ok" on every path,
    // as many application servers do.
    let app = tempfile::tempdir().unwrap();
    let script = app.path().join("ok.py");
    std::fs::write(
        &script,
        "import http.server, sys\n\
         class Ok(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       self.send_response(200); self.send_header('content-type', 'text/plain'); self.end_headers()\n\
         \x20       self.wfile.write(b'ok')\n\
         http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), Ok).serve_forever()\n",
    )
    .unwrap();
    let extra = format!(
        "  web:
    command: [python3, -m, http.server, \"{{port}}\", --bind, 127.0.0.1]
    health: {{ path: / }}
  app:
    command: [python3, {}, \"{{port}}\"]
    health: {{ path: / }}
",
        script.display()
    );
    let p = crate::stack::Project::new(&extra);
    let up = p.shop(&["up", "-d", "-q"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let (order, why) = p.place("alice", "sku-1");
    let id = order["id"].as_str().unwrap_or_else(|| panic!("{why}")).to_string();

    // A program of `command:` has no admin API and must never be handed the stack's secret.
    let out = p.shop(&["inspect", "order", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).contains("web"), "{}", stdout(&out));
    // Without a metrics page its figures are unknown, not zero.
    let out = p.shop(&["--json", "inspect", "service", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let web: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(web["requests"].is_null() && web["error_rate"].is_null(), "{web:#}");
    assert!(web["unanswered"][0]["why"].as_str().unwrap().contains("/metrics answered 404"), "{web:#}");
    let out = p.shop(&["--json", "inspect", "service", "app"]);
    let app: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(app["requests"].is_null(), "a page of its own is no metrics: {app:#}");
    assert!(app["unanswered"][0]["why"].as_str().unwrap().contains("no Prometheus text"), "{app:#}");
    let access = std::fs::read_to_string(p.dir.path().join(".shop/logs/web.log")).unwrap();
    assert!(!access.contains("/admin"), "web was asked for admin data:\n{access}");

    // The health checks, every 50 ms here, are no traffic: inventory served this one order's
    // reservation and commit.
    let out = p.shop(&["--json", "inspect", "service", "inventory"]);
    let inventory: Value = serde_json::from_slice(&out.stdout).unwrap();
    let requests = inventory["requests"].as_f64().unwrap();
    assert!((1.0..=4.0).contains(&requests), "{inventory:#}");

    // An id is an id: a path in its place is refused before any request.
    for bad in ["../../healthz", "ord_X#junk"] {
        let out = p.shop(&["inspect", "order", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stdout(&out));
        assert!(stderr(&out).contains("is not an order id"), "{}", stderr(&out));
    }
}

#[test]
fn a_trace_whose_older_spans_an_instance_no_longer_holds_says_so() {
    // The order service keeps 12 spans, so the first order's are gone after a few more.
    let text = crate::stack::stack_yaml("")
        .replace("  order:\n", "  order:\n    env: { SHOP_TEST_HOOKS: \"1\", SHOP_SPAN_CAPACITY: \"12\" }\n");
    let p = crate::stack::Project::with_file(&text);
    let up = p.shop(&["up", "-d", "-q"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let (first, why) = p.place("alice", "sku-1");
    let id = first["id"].as_str().unwrap_or_else(|| panic!("{why}")).to_string();
    let doc = json(&p.shop(&["inspect", "order", &id, "--json"]));
    assert_eq!(doc["spans_missing_from"], serde_json::json!([]), "whole while the order service holds it: {doc:#}");
    for _ in 0..4 {
        p.place("alice", "sku-1");
    }
    let doc = json(&p.shop(&["inspect", "order", &id, "--json"]));
    let missing = doc["spans_missing_from"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{doc:#}");
    assert!(missing[0]["why"].as_str().unwrap().contains("are held by no instance"), "{doc:#}");
    let text = stdout(&p.shop(&["inspect", "order", &id]));
    assert!(text.contains("spans may be missing from: earlier spans (the parents of"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_never_left_still_has_its_span_in_the_trace() {
    let p = started();
    assert_eq!(p.shop(&["stop", "order", "-q"]).status.code(), Some(0));
    let gateway = p.row("gateway")["address"].as_str().unwrap().to_string();
    // Once the registry has let the stopped instance go (ttl 1s) and the gateway has seen it,
    // there is nothing to call: the call is never sent.
    let registry = p.row("registry")["address"].as_str().unwrap().to_string();
    let gone = eventually(Duration::from_secs(10), async || {
        let url = format!("http://{registry}/v1/services/order");
        let list: Value = reqwest::get(&url).await.unwrap().json().await.unwrap_or(Value::Null);
        list.as_array().is_some_and(|l| l.is_empty())
    })
    .await;
    assert!(gone, "the registry still lists order");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = reqwest::Client::new()
        .post(format!("http://{gateway}/orders"))
        .bearer_auth("dev-token-alice")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("prefer", "wait=1")
        .json(&serde_json::json!({"items": [{"product_id": "sku-1", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let doc = json(&p.shop(&["inspect", "trace", trace_id, "--json"]));
    let spans = doc["spans"].as_array().unwrap();
    let unsent: Vec<&Value> = spans.iter().filter(|s| s["name"] == "→ order POST /v1/orders").collect();
    assert!(!unsent.is_empty(), "no span for the call the gateway could not make: {doc:#}");
    let statuses: Vec<&str> = unsent.iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert!(statuses.iter().all(|s| s.starts_with("error: no instance of `order`")), "{statuses:?}");
}
