//! `shop chaos` against a running stack: each fault's effect, its end on clear and on expiry,
//! circuit breakers, orders through outages and partitions, and the admin endpoints' secret.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stack::{stack_yaml, Project};
use crate::support::eventually;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&o.stdout), stderr(o)))
}

/// A stack whose breakers reopen quickly and whose sagas time out in `saga_timeout`.
fn started(saga_timeout: &str) -> Project {
    let text = stack_yaml("")
        .replace("  backoff: 50ms\n", "  backoff: 50ms\n  client: { timeout: 500ms, circuit_breaker: { failure_threshold: 3, open_for: 500ms } }\n")
        .replace("    depends_on: [user, inventory, payment, notification]\n", &format!("    depends_on: [user, inventory, payment, notification]\n    saga_timeout: {saga_timeout}\n"));
    let p = Project::with_file(&text);
    let up = p.shop(&["up", "-d", "-q"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    p
}

fn ok(p: &Project, args: &[&str]) {
    let out = p.shop(args);
    assert_eq!(out.status.code(), Some(0), "shop {args:?}: {}", stderr(&out));
}

fn addr(p: &Project, instance: &str) -> String {
    p.row(instance)["address"].as_str().unwrap().to_string()
}

async fn timed_get(url: &str) -> (u16, Duration) {
    let t = Instant::now();
    let status = reqwest::get(url).await.map(|r| r.status().as_u16()).unwrap_or(0);
    (status, t.elapsed())
}

/// The order service's `/admin/breakers` document.
async fn breakers(http: &reqwest::Client, order: &str, p: &Project) -> Value {
    let resp = http.get(format!("http://{order}/admin/breakers")).header("x-shop-secret", secret(p)).send().await;
    resp.unwrap().json().await.unwrap()
}

/// A service's own `/admin/faults` document.
async fn admin_faults(address: &str, p: &Project) -> Value {
    let http = reqwest::Client::new();
    let resp = http.get(format!("http://{address}/admin/faults")).header("x-shop-secret", secret(p)).send().await;
    resp.unwrap().json().await.unwrap()
}

fn secret(p: &Project) -> String {
    std::fs::read_to_string(p.dir.path().join(".shop/secret")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_and_errors_take_effect_at_once_and_end_on_clear_and_on_expiry() {
    let p = started("60s");
    let inventory = format!("http://{}/v1/products", addr(&p, "inventory"));
    ok(&p, &["chaos", "latency", "inventory", "400ms"]);
    let (status, took) = timed_get(&inventory).await;
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert_eq!(p.row("inventory")["faults"][0], "latency 400ms 100%");
    ok(&p, &["chaos", "clear", "inventory"]);
    // Cleared means gone from the service itself, not only from the supervisor's list.
    let faults = admin_faults(&addr(&p, "inventory"), &p).await;
    assert_eq!(faults["latency"], Value::Null, "{faults}");
    assert!(p.row("inventory")["faults"].as_array().unwrap().is_empty(), "{}", p.row("inventory"));

    let user = format!("http://{}/v1/users/alice", addr(&p, "user"));
    ok(&p, &["chaos", "errors", "user", "--status", "500", "--for", "1s"]);
    assert_eq!(timed_get(&user).await.0, 500);
    let rows = json(&p.shop(&["chaos", "list", "--json"]));
    assert_eq!((rows[0]["service"].as_str(), rows[0]["fault"].as_str()), (Some("user"), Some("errors")));
    assert!(rows[0]["expires_in_s"].as_f64().unwrap() <= 1.0);
    let expired = eventually(Duration::from_secs(5), async || timed_get(&user).await.0 == 200).await;
    assert!(expired, "errors did not expire");
    assert!(
        eventually(Duration::from_secs(3), async || json(&p.shop(&["chaos", "list", "--json"]))
            == Value::Array(vec![]))
        .await
    );
    assert_eq!(p.shop(&["chaos", "latency", "nosuch", "1s"]).status.code(), Some(2));
    // A delay past every caller's timeout is a typo: refused by the supervisor in its own words.
    let long = p.shop(&["chaos", "latency", "payment", "11m"]);
    assert_eq!(long.status.code(), Some(2), "{}", stderr(&long));
    assert!(stderr(&long).contains("must be at most 10m"), "{}", stderr(&long));

    // --jitter, --percent and --seed from the command line: the supervisor lists them, and about
    // half of the requests wait (3 s ± 500 ms, so a delayed one takes at least 2.5 s), the
    // others do not; both kinds must show among 20.
    ok(&p, &["chaos", "latency", "inventory", "3s", "--jitter", "500ms", "--percent", "50", "--seed", "7"]);
    let rows = json(&p.shop(&["chaos", "list", "--json"]));
    assert_eq!(rows[0]["params"], serde_json::json!({"delay_ms": 3000, "jitter_ms": 500, "percent": 50.0}), "{rows}");
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let url = inventory.clone();
        requests.spawn(async move { timed_get(&url).await });
    }
    let (mut slow, mut fast) = (0, 0);
    while let Some(done) = requests.join_next().await {
        let (status, took) = done.unwrap();
        assert_eq!(status, 200);
        if took >= Duration::from_millis(2500) {
            slow += 1
        } else {
            fast += 1
        }
    }
    assert!(slow > 0 && fast > 0, "{slow} delayed and {fast} not, of 20 at 50%");
    ok(&p, &["chaos", "clear"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_keeps_a_service_down_until_the_fault_ends_and_pause_freezes_it() {
    let p = started("60s");
    let pid = p.row("payment")["pid"].as_u64().unwrap();
    ok(&p, &["chaos", "kill", "payment", "--for", "3s"]);
    // Down for as long as the fault lasts: each row read while `chaos list` still shows the kill
    // afterwards (so the fault was active when the row was read) says killed, with no process.
    let mut seen_down = 0;
    loop {
        let r = p.row("payment");
        let active = json(&p.shop(&["chaos", "list", "--json"]))
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["service"] == "payment" && f["fault"] == "kill");
        if !active {
            break;
        }
        assert_eq!((r["state"].as_str(), r["faults"][0].as_str()), (Some("killed"), Some("killed")), "{r}");
        assert!(
            r["pid"].is_null() || !shop::orchestrator::state_dir::process_alive(r["pid"].as_u64().unwrap() as u32),
            "{r}"
        );
        seen_down += 1;
    }
    assert!(seen_down >= 1, "the kill was never seen in force");
    assert!(!shop::orchestrator::state_dir::process_alive(pid as u32));
    let back = eventually(Duration::from_secs(10), async || p.row("payment")["state"] == "healthy").await;
    assert!(back, "not restarted after --for: {}", p.row("payment"));
    assert_eq!(p.row("payment")["restarts"], 0, "a chaos kill is not a crash");

    // --signal TERM lets the service stop cleanly (it logs `stopped`); SIGKILL gives it no chance.
    let log = || std::fs::read_to_string(p.dir.path().join(".shop/logs/payment.log")).unwrap();
    let stopped_before = log().matches("\"stopped\"").count() + log().matches(" stopped").count();
    ok(&p, &["chaos", "kill", "payment", "--signal", "TERM"]);
    let clean = eventually(Duration::from_secs(10), async || {
        log().matches("\"stopped\"").count() + log().matches(" stopped").count() > stopped_before
    })
    .await;
    assert!(clean, "no clean stop after SIGTERM:\n{}", log());
    assert_eq!(p.row("payment")["state"], "killed");
    let hup = p.shop(&["chaos", "kill", "payment", "--signal", "HUP"]);
    assert_eq!(hup.status.code(), Some(2), "{}", stderr(&hup));
    assert!(stderr(&hup).contains("--signal must be KILL or TERM"), "{}", stderr(&hup));
    ok(&p, &["chaos", "clear", "payment"]);
    assert!(eventually(Duration::from_secs(10), async || p.row("payment")["state"] == "healthy").await);

    ok(&p, &["chaos", "pause", "notification"]);
    let pid = p.row("notification")["pid"].as_u64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.split(") ").nth(1).unwrap().starts_with('T'), "not stopped: {stat}");
    assert_eq!(p.row("notification")["state"], "paused");
    ok(&p, &["chaos", "resume", "notification"]);
    assert_eq!(p.row("notification")["state"], "healthy");
    assert!(json(&p.shop(&["chaos", "list", "--json"])).as_array().unwrap().is_empty());

    // --restart: the restart policy brings it back, counted as a crash.
    ok(&p, &["chaos", "kill", "payment", "--restart"]);
    let restarted = eventually(Duration::from_secs(10), async || {
        let r = p.row("payment");
        r["state"] == "healthy" && r["restarts"] == 1
    })
    .await;
    assert!(restarted, "{}", p.row("payment"));
    // With SIGTERM the service stops cleanly and exits 0; it is still a crash to the policy.
    ok(&p, &["chaos", "kill", "payment", "--signal", "TERM", "--restart"]);
    let restarted = eventually(Duration::from_secs(10), async || {
        let r = p.row("payment");
        r["state"] == "healthy" && r["restarts"] == 2
    })
    .await;
    assert!(restarted, "{}", p.row("payment"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_start_and_restart_by_hand_supersede_a_kill_or_a_pause() {
    let p = started("60s");
    let faults = || json(&p.shop(&["chaos", "list", "--json"])).as_array().unwrap().len();
    // A restart replaces the paused process: the pause is not listed over the fresh one.
    ok(&p, &["chaos", "pause", "payment"]);
    ok(&p, &["restart", "payment"]);
    let r = p.row("payment");
    assert_eq!((r["state"].as_str(), r["faults"].as_array().map(Vec::len)), (Some("healthy"), Some(0)), "{r}");
    assert_eq!(faults(), 0);
    let pid = r["pid"].as_u64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(!stat.split(") ").nth(1).unwrap().starts_with('T'), "still stopped by SIGSTOP: {stat}");
    // A stop wins over a kill's expiry: what the user stopped stays stopped.
    ok(&p, &["chaos", "kill", "payment", "--for", "2s"]);
    ok(&p, &["stop", "payment"]);
    assert_eq!(p.row("payment")["state"], "stopped");
    assert_eq!(faults(), 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(p.row("payment")["state"], "stopped", "{}", p.row("payment"));
    // And a start of a killed service starts it, with nothing left listed.
    ok(&p, &["start", "payment"]);
    ok(&p, &["chaos", "kill", "payment"]);
    ok(&p, &["start", "payment"]);
    assert_eq!((p.row("payment")["state"].as_str(), faults()), (Some("healthy"), 0), "{}", p.row("payment"));
}

#[test]
fn a_partition_is_between_whole_services_and_chaos_output_survives_a_closed_pipe() {
    let p = Project::with_file(&stack_yaml("").replace("  payment: {}\n", "  payment: {replicas: 2}\n"));
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    // Callers refuse or detour by service: one replica on either side would cut them all.
    for args in [["chaos", "partition", "order", "payment-1"], ["chaos", "partition", "payment-1", "order"]] {
        let out = p.shop(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("`payment-1` is one instance of `payment`"), "{}", stderr(&out));
    }
    // A service never calls itself over the wire: a fault from it to itself would do nothing.
    let out = p.shop(&["chaos", "net", "payment-1", "latency", "--delay", "5ms", "--from", "payment"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--from names `payment`, the target itself"), "{}", stderr(&out));
    assert!(stderr(&out).contains("name one of its callers (order)"), "{}", stderr(&out));
    // Nor through a service that never calls it: listed, the fault would never act.
    let out = p.shop(&["chaos", "net", "payment", "blackhole", "--from", "gateway"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let want = "--from names `gateway`, which never calls `payment`; name one of its callers (order)";
    assert!(stderr(&out).contains(want), "{}", stderr(&out));
    // The card vault's caller is one, though the stack file does not say so.
    let out = p.shop(&["chaos", "net", "user", "latency", "--delay", "1ms", "--from", "payment", "--for", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    p.shop(&["chaos", "clear"]);
    assert!(json(&p.shop(&["chaos", "list", "--json"])).as_array().unwrap().is_empty());
    // So in a drill file, a partition's side or a wire fault's `from`, told before any order.
    std::fs::write(
        p.dir.path().join("sides.yaml"),
        "name: sides\nload: { orders: 5 }\nfaults:\n  - { at: 1s, partition: order, with: payment-2 }\n  \
         - { at: 1s, net: inventory, toxic: reset, from: payment-1 }\n  \
         - { at: 1s, net: payment-2, toxic: reset, from: payment }\n  \
         - { at: 1s, net: payment, toxic: reset, from: notification }\n",
    )
    .unwrap();
    let out = p.shop(&["chaos", "drill", "sides.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for want in [
        "sides.yaml:4:5: faults[0] names `payment-2`, one instance of `payment`; partitions and `from` take whole \
         services: name `payment`",
        "sides.yaml:5:5: faults[1] names `payment-1`, one instance of `payment`",
        "sides.yaml:6:5: faults[2]: `from: payment` is the target itself",
        "sides.yaml:7:5: faults[3]: `from: notification` never calls `payment`, so no call would pass the fault; \
         name one of its callers (order)",
    ] {
        assert!(stderr(&out).contains(want), "{want}\n{}", stderr(&out));
    }
    // A reader that goes away early is no failure of the command's.
    let listed = std::process::Command::new("sh")
        .current_dir(p.dir.path())
        .arg("-c")
        .arg(format!(
            "'{}' chaos latency payment 1ms --for 1s | true; '{}' chaos list | true",
            crate::support::BIN,
            crate::support::BIN
        ))
        .env_remove("SHOP_STACK")
        .env_remove("SHOP_STATE_DIR")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert_eq!(p.shop(&["down", "-q"]).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_placed_while_payment_is_killed_all_confirm_after_clear_with_one_charge_each() {
    let p = started("60s");
    ok(&p, &["chaos", "kill", "payment"]);
    let mut ids = Vec::new();
    for _ in 0..6 {
        let out = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--wait", "0s", "--json"]);
        assert_eq!(out.status.code(), Some(1), "PENDING while payment is down");
        ids.push(json(&out)["id"].as_str().unwrap().to_string());
    }
    // The order service's breaker toward payment opens after the threshold and refuses fast.
    let order = addr(&p, "order");
    let http = reqwest::Client::new();
    let opened = eventually(Duration::from_secs(10), async || {
        let v = breakers(&http, &order, &p).await;
        v["transitions"].as_array().unwrap().iter().any(|t| t["dependency"] == "payment" && t["to"] == "open")
    })
    .await;
    assert!(opened, "breaker toward payment never opened");
    ok(&p, &["chaos", "clear"]);
    for id in &ids {
        let done = eventually(Duration::from_secs(20), async || {
            json(&p.shop(&["order", "get", id, "--json"]))["status"] == "CONFIRMED"
        })
        .await;
        assert!(done, "{id} did not confirm: {}", String::from_utf8_lossy(&p.shop(&["inspect", "order", id]).stdout));
    }
    let v = breakers(&http, &order, &p).await;
    let to: Vec<&str> = v["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["dependency"] == "payment")
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert!(to.contains(&"half_open") && to.last() == Some(&"closed"), "{to:?}");
    let payments = shop::plumbing::db::open_read_only(&p.dir.path().join(".shop/data/payment.db")).unwrap();
    for id in &ids {
        let n: i64 = payments
            .query_row("SELECT count(*) FROM payments WHERE order_id = ?1 AND captured_cents > 0", [id], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "{id} charged {n} times");
    }
    let inv = p.shop(&["inspect", "invariants", "--settle", "20s"]);
    assert_eq!(inv.status.code(), Some(0), "{}", String::from_utf8_lossy(&inv.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_between_order_and_payment_never_leaves_an_order_half_done() {
    let p = started("2s");
    // No --for: the partition lasts until cleared, so nothing below races its expiry.
    ok(&p, &["chaos", "partition", "order", "payment"]);
    assert_eq!(p.row("order")["faults"][0], "partition payment");
    assert_eq!(p.row("payment")["faults"][0], "partition order");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = p.shop(&["order", "place", "--user", "alice", "--item", "sku-2", "--wait", "0s", "--json"]);
        ids.push(json(&out)["id"].as_str().unwrap().to_string());
    }
    // Past the saga timeout (it gave up and started compensating) but still partitioned: the
    // compensation (the refund or void) waits, and the order stays PENDING.
    for id in &ids {
        let mut last = Value::Null;
        let gave_up = eventually(Duration::from_secs(20), async || {
            last = json(&p.shop(&["--json", "inspect", "order", id]));
            last.to_string().contains("CompensationStarted")
        })
        .await;
        assert!(gave_up, "{id}: the saga never timed out: {last:#}");
    }
    for id in &ids {
        assert_eq!(json(&p.shop(&["order", "get", id, "--json"]))["status"], "PENDING");
    }
    ok(&p, &["chaos", "clear"]);
    for id in &ids {
        let mut last = Value::Null;
        let failed = eventually(Duration::from_secs(20), async || {
            last = json(&p.shop(&["order", "get", id, "--json"]));
            last["status"] == "FAILED"
        })
        .await;
        assert!(failed, "{last:#}");
        assert_eq!(last["failure"]["code"], "timeout");
    }
    let inv = p.shop(&["inspect", "invariants", "--settle", "20s"]);
    assert_eq!(inv.status.code(), Some(0), "{}", String::from_utf8_lossy(&inv.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_refuse_calls_without_the_stack_secret() {
    let p = started("60s");
    let http = reqwest::Client::new();
    let order = addr(&p, "order");
    for (method, path) in [
        ("GET", "/admin/faults"),
        ("PUT", "/admin/faults"),
        ("DELETE", "/admin/faults"),
        ("GET", "/admin/spans"),
        ("GET", "/admin/breakers"),
    ] {
        for secret in [None, Some("wrong")] {
            let mut req =
                http.request(method.parse().unwrap(), format!("http://{order}{path}")).json(&serde_json::json!({}));
            if let Some(s) = secret {
                req = req.header("x-shop-secret", s);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {secret:?}");
            assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
        }
    }
    let resp =
        http.get(format!("http://{order}/admin/faults")).header("x-shop-secret", secret(&p)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let control =
        serde_json::from_str::<Value>(&std::fs::read_to_string(p.dir.path().join(".shop/supervisor.json")).unwrap())
            .unwrap();
    let resp = http.get(format!("http://{}/v1/status", control["control"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[test]
fn a_failed_notification_delivery_is_logged_in_its_orders_trace() {
    let p = started("60s");
    ok(&p, &["chaos", "errors", "notification", "--status", "503", "--for", "2s"]);
    let out = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let order = json(&out);
    let (id, trace) = (order["id"].as_str().unwrap(), order["trace_id"].as_str().unwrap());
    // `shop logs --trace` finds the relay's retries as `--order` does.
    let found = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let lines = String::from_utf8_lossy(&p.shop(&["logs", "--trace", trace, "--order", id]).stdout).into_owned();
        lines.contains("notification delivery failed; will retry")
    });
    assert!(found, "{}", String::from_utf8_lossy(&p.shop(&["logs", "--order", id]).stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_replica_opens_only_its_own_breaker_and_the_others_keep_serving() {
    // A breaker that opens at the first failure and stays open: one per service would turn a
    // single failing replica into an outage of the whole service for `open_for`.
    let text = stack_yaml("").replace(
        "  gateway:\n",
        "  gateway:\n    client: { circuit_breaker: { failure_threshold: 1, open_for: 60s } }\n",
    );
    let p = Project::with_file(&text.replace("  order:\n", "  order:\n    replicas: 3\n"));
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    ok(&p, &["chaos", "errors", "order-1", "--status", "503", "--percent", "100"]);
    for n in 0..9 {
        let out = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1"]);
        assert_eq!(out.status.code(), Some(0), "order {n}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let gateway = addr(&p, "gateway");
    let report = breakers(&reqwest::Client::new(), &gateway, &p).await;
    let state = |name: &str| {
        let list = report["breakers"].as_array().unwrap();
        list.iter().find(|b| b["dependency"] == name).map(|b| b["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state("order-1").as_deref(), Some("open"), "{report:#}");
    for other in ["order-2", "order-3"] {
        assert_eq!(state(other).as_deref(), Some("closed"), "{report:#}");
    }
    p.shop(&["down"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn clearing_one_replica_leaves_its_services_fault_on_the_others_or_says_why_it_cannot() {
    let p = Project::with_file(&stack_yaml("").replace("  payment: {}\n", "  payment: {replicas: 2}\n"));
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    ok(&p, &["chaos", "errors", "payment", "--status", "503"]);
    ok(&p, &["chaos", "kill", "payment"]);
    let cleared = p.shop(&["chaos", "clear", "payment-1"]);
    assert_eq!(cleared.status.code(), Some(0), "{}", stderr(&cleared));
    assert!(stderr(&cleared).contains("cleared 2 faults on `payment-1`"), "{}", stderr(&cleared));
    // payment-1 is back and answers; payment-2 is still killed and still listed.
    let faults = |instance: &str| p.row(instance)["faults"].clone();
    assert_eq!(faults("payment-1"), serde_json::json!([]), "{}", p.row("payment-1"));
    assert_eq!(faults("payment-2"), serde_json::json!(["errors 503 100%", "killed"]), "{}", p.row("payment-2"));
    assert_eq!(p.row("payment-2")["state"], "killed");
    let back = eventually(Duration::from_secs(20), async || p.row("payment-1")["state"] == "healthy").await;
    assert!(back, "{}", p.row("payment-1"));
    let list = json(&p.shop(&["chaos", "list", "--json"]));
    let targets: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["service"].as_str().unwrap()).collect();
    assert_eq!(targets, vec!["payment-2", "payment-2"], "{list}");
    // The cleared replica's requests are its own again: no 503 from the fault.
    let first = p.row("payment-1")["address"].as_str().unwrap().to_string();
    let status = reqwest::get(format!("http://{first}/v1/payments/pay_none")).await.unwrap().status();
    assert_ne!(status, 503, "payment-1 still answers with the cleared fault");
    // The rest clears with its service's name.
    ok(&p, &["chaos", "clear", "payment"]);
    assert!(json(&p.shop(&["chaos", "list", "--json"])).as_array().unwrap().is_empty());

    // A wire toxic in front of the whole service has no per-replica half: refused, kept.
    ok(&p, &["chaos", "net", "payment", "latency", "--delay", "5ms"]);
    let out = p.shop(&["chaos", "clear", "payment-2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let want = "`payment-2` is under a net fault set on `payment`, which cannot be cleared for one instance; \
                clear it with `shop chaos clear payment`";
    assert!(stderr(&out).contains(want), "{}", stderr(&out));
    assert_eq!(json(&p.shop(&["chaos", "list", "--json"])).as_array().unwrap().len(), 1);
    ok(&p, &["chaos", "clear", "payment"]);
}
