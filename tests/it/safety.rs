//! SPEC section 17: money that cannot wrap, card numbers only in the card vault, admin secrets
//! checked before the body, children that die with their supervisor, and an exact head limit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use shop::orchestrator::state_dir::process_alive;
use shop::services::Kind;

use crate::stack::Project;
use crate::support::*;

/// A stack started with `up -d` through the real CLI.
fn started() -> Project {
    let p = Project::new("");
    let up = p.shop(&["up", "-d", "-q"]);
    assert_eq!(up.status.code(), Some(0), "{}", String::from_utf8_lossy(&up.stderr));
    p
}

/// Writes `head` on a fresh connection in pieces of the given sizes (cycled), then reads the
/// status line of the answer.
fn status_of_head(addr: &str, head: &[u8], pieces: &[usize]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut at = 0;
    for size in pieces.iter().cycle() {
        if at >= head.len() {
            break;
        }
        let end = (at + size).min(head.len());
        if s.write_all(&head[at..end]).is_err() {
            break;
        }
        at = end;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).lines().next().unwrap_or("").to_string()
}

/// A `GET /healthz` head of exactly `len` bytes, padded by one header.
fn head_of(len: usize) -> Vec<u8> {
    let start = "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-pad: ";
    let pad = len - start.len() - 4;
    format!("{start}{}\r\n\r\n", "a".repeat(pad)).into_bytes()
}

/// A catalog with two products at the highest price a fixture may have.
const DEAR_PRODUCTS: &str = "products:
  - id: gold-1
    name: Gold bar
    price_cents: 1000000000
    stock: 5000
  - id: gold-2
    name: Gold ingot
    price_cents: 1000000000
    stock: 5000
";

#[tokio::test(flavor = "multi_thread")]
async fn an_order_over_the_total_limit_is_refused_and_totals_are_checked_against_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let products = dir.path().join("products.yaml");
    std::fs::write(&products, DEAR_PRODUCTS).unwrap();
    let stack = TestStack::with(Options::default().fixtures(Kind::Inventory, products)).await;

    // Exactly at the limit: 1000 units at 10^9 cents is 10^12 cents.
    let (status, body, _) = stack.place(ALICE, items(&[("gold-1", 1000)]), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["status"].as_str(), body["total_cents"].as_i64()), (Some("CONFIRMED"), Some(1_000_000_000_000)));

    // One cent over it.
    let (status, body, _) = stack.place(ALICE, items(&[("gold-1", 1000), ("gold-2", 1)]), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "amount_too_large", "{body}");
    assert_eq!(stack.count(Kind::Order, "SELECT count(*) FROM orders", &[]), 1);

    let report = stack.invariants(Duration::from_secs(15));
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"totals_match_items"), "{names:?}");
    assert!(report.ok, "{:#?}", report.checks);

    let doc = stack.get(&stack.gateway("/openapi.json"), None).await.1;
    let bad_request = doc["paths"]["/orders"]["post"]["responses"]["400"]["description"].as_str().unwrap_or("");
    assert!(bad_request.contains("amount_too_large"), "{bad_request}");
}

#[test]
fn a_fixture_price_that_is_not_whole_cents_from_1_to_10_9_stops_the_service_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    for (price, shown) in [("18446744073709552", "18446744073709552"), ("0", "0"), ("24.99", "24.99")] {
        let path = dir.path().join("products.yaml");
        std::fs::write(&path, DEAR_PRODUCTS.replacen("1000000000", price, 1)).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["serve", "inventory", "--port", "0", "--registry", "http://127.0.0.1:9"])
            .arg("--db")
            .arg(dir.path().join("inventory.db"))
            .arg("--fixtures")
            .arg(&path)
            .env("SHOP_PARENT_PID", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{price}: started:\n{stderr}");
        let wanted = format!(
            "{}:4:18: products[0].price_cents: must be whole cents from 1 to 1000000000, got {shown}",
            path.display()
        );
        assert!(stderr.contains(&wanted), "{price}: wanted `{wanted}` in:\n{stderr}");
    }
}

#[test]
fn up_export_and_smoke_refuse_a_bad_fixture_with_its_position_before_starting_anything() {
    let p = Project::new("");
    let products = p.dir.path().join("dear.yaml");
    std::fs::write(&products, DEAR_PRODUCTS.replacen("1000000000", "0", 1)).unwrap();
    let stack = std::fs::read_to_string(p.dir.path().join("stack.yaml")).unwrap();
    let stack: Vec<String> = stack
        .lines()
        .map(|l| if l.contains("products.yaml") { format!("    fixtures: {}", products.display()) } else { l.into() })
        .collect();
    std::fs::write(p.dir.path().join("stack.yaml"), stack.join("\n")).unwrap();
    let wanted = format!("{}:4:18: products[0].price_cents: must be whole cents", products.display());
    for args in [&["up", "-d"][..], &["export", "k8s"], &["export", "compose"], &["smoke"]] {
        let out = p.shop(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(&wanted), "{args:?}: {stderr}");
        assert!(stderr.contains("the fixtures of `stack.yaml` are invalid (1 problem)"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(!p.dir.path().join(".shop/supervisor.json").exists(), "nothing was started");
    // The commands that only read the running stack do not read fixtures.
    assert_eq!(p.shop(&["ps"]).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_32_kib_head_limit_holds_exactly_however_the_bytes_arrive() {
    let options = Kind::ALL.iter().fold(Options::default(), |o, k| o.env(*k, "SHOP_HEADER_TIMEOUT", "20s"));
    let stack = TestStack::with(options).await;
    for kind in [Kind::Gateway, Kind::Order] {
        let addr = stack.url(kind, "").trim_start_matches("http://").to_string();
        for (how, pieces) in [
            ("in one write", vec![1 << 20]),
            ("byte by byte", vec![1]),
            ("in uneven chunks", vec![1000, 7, 9000, 1, 333, 16_384]),
        ] {
            let fits = status_of_head(&addr, &head_of(32 * 1024), &pieces);
            assert!(fits.starts_with("HTTP/1.1 200"), "{}: 32768 bytes {how}: {fits}", kind.name());
            let over = status_of_head(&addr, &head_of(32 * 1024 + 1), &pieces);
            assert!(over.starts_with("HTTP/1.1 431"), "{}: 32769 bytes {how}: {over}", kind.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_admin_route_of_every_service_answers_401_without_the_secret_before_reading_the_body() {
    let p = started();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let rows = p.ps();
    assert_eq!(rows.len(), 7);
    let admin = [
        ("GET", "/admin/faults"),
        ("PUT", "/admin/faults"),
        ("DELETE", "/admin/faults"),
        ("GET", "/admin/spans"),
        ("GET", "/admin/breakers"),
        // A method no route takes is no reason to answer anything but 401 either.
        ("POST", "/admin/faults"),
        ("PATCH", "/admin/spans"),
    ];
    // Every admin route of every service, the registry's detours, and the supervisor's control
    // API (at the address its record names).
    let mut targets: Vec<(String, String, &str, &str)> = Vec::new();
    for row in &rows {
        let addr = row["address"].as_str().unwrap().to_string();
        let who = row["instance"].as_str().unwrap().to_string();
        targets.extend(admin.iter().map(|(m, path)| (addr.clone(), who.clone(), *m, *path)));
        if who == "registry" {
            targets.extend(
                [("GET", "/v1/routes"), ("PUT", "/v1/routes")].map(|(m, path)| (addr.clone(), who.clone(), m, path)),
            );
        }
    }
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(p.dir.path().join(".shop/supervisor.json")).unwrap()).unwrap();
    let control = record["control"].as_str().unwrap().to_string();
    for (m, path) in [
        ("GET", "/v1/status"),
        ("POST", "/v1/up"),
        ("POST", "/v1/stop"),
        ("POST", "/v1/start"),
        ("POST", "/v1/restart"),
        ("POST", "/v1/down"),
        ("GET", "/v1/chaos"),
        ("POST", "/v1/chaos"),
        ("POST", "/v1/chaos/clear"),
        ("DELETE", "/v1/status"),
    ] {
        targets.push((control.clone(), "supervisor".into(), m, path));
    }
    let bodies = ["", "{\"latency\": 5}", "{\"nonsense\": true}", "not json at all", "[]"];
    for (addr, who, method, path) in &targets {
        for body in bodies {
            for secret in [None, Some("wrong")] {
                let mut req = http
                    .request(method.parse().unwrap(), format!("http://{addr}{path}"))
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(s) = secret {
                    req = req.header("x-shop-secret", s);
                }
                let resp = req.send().await.unwrap();
                let what = format!("{who} {method} {path} body {body:?} secret {secret:?}");
                assert_eq!(resp.status(), 401, "{what}");
                assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "unauthorized", "{what}");
            }
        }
        // A body announced but never sent: the answer cannot have waited for it.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 50000\r\n\r\n"
        );
        let status = status_of_head(addr, head.as_bytes(), &[1 << 20]);
        assert!(status.starts_with("HTTP/1.1 401"), "{who} {method} {path} without its body: {status}");
    }
    // Nothing of it took effect: the stack runs on, unfaulted.
    assert_eq!(p.ps().len(), 7);
    assert!(p.ps().iter().all(|r| r["state"] == "healthy" && r["faults"].as_array().unwrap().is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn registrations_and_the_card_vault_take_only_callers_with_the_stack_secret() {
    let p = started();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let secret = std::fs::read_to_string(p.dir.path().join(".shop/secret")).unwrap();
    let addr = |instance: &str| p.row(instance)["address"].as_str().unwrap().to_string();
    let (registry, user) = (addr("registry"), addr("user"));
    let users: Value = http.get(format!("http://{user}/v1/users")).send().await.unwrap().json().await.unwrap();
    let token = users.as_array().unwrap().iter().find(|u| u["user_id"] == "alice").unwrap()["card_token"]
        .as_str()
        .unwrap()
        .to_string();
    let fake = serde_json::json!({"service": "user", "instance": "user", "address": "127.0.0.1:9", "pid": 1});
    let calls = [
        http.post(format!("http://{registry}/v1/register")).json(&fake),
        http.post(format!("http://{registry}/v1/heartbeat")).json(&serde_json::json!({"instance": "user"})),
        http.delete(format!("http://{registry}/v1/instances/user")),
        http.get(format!("http://{user}/v1/cards/{token}")),
    ];
    for call in calls {
        let resp = call.header("x-shop-secret", "wrong").send().await.unwrap();
        let url = resp.url().to_string();
        assert_eq!(resp.status(), 401, "{url}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "unauthorized", "{url}");
    }
    // Nothing was taken over: the user service is still found where it listens.
    let found: Value =
        http.get(format!("http://{registry}/v1/services/user")).send().await.unwrap().json().await.unwrap();
    assert_eq!(found[0]["address"], user.as_str());
    // The stack's own callers have the secret: the vault answers them, and orders are charged.
    let card =
        http.get(format!("http://{user}/v1/cards/{token}")).header("x-shop-secret", &secret).send().await.unwrap();
    assert_eq!(card.status(), 200);
    let placed = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1"]);
    assert_eq!(placed.status.code(), Some(0), "{}", String::from_utf8_lossy(&placed.stderr));
}

#[test]
fn every_child_exits_soon_after_its_supervisor_is_killed_under_load() {
    let p = started();
    let children: Vec<(String, u32)> = p
        .ps()
        .iter()
        .map(|r| (r["instance"].as_str().unwrap().to_string(), r["pid"].as_u64().unwrap() as u32))
        .collect();
    assert_eq!(children.len(), 7);
    let mut load = std::process::Command::new(BIN)
        .current_dir(p.dir.path())
        .args(["load", "--orders", "1000000", "--concurrency", "16", "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let order_db = p.dir.path().join(".shop/data/order.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    let busy = loop {
        let placed = shop::plumbing::db::open_read_only(&order_db)
            .and_then(|c| Ok(c.query_row("SELECT count(*) FROM orders", [], |r| r.get::<_, i64>(0))?))
            .unwrap_or(0);
        if placed >= 50 || Instant::now() >= deadline {
            break placed;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(busy >= 50, "the load never got going: {busy} orders placed");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.supervisor_pid() as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let killed = Instant::now();
    // Generous against a loaded machine, well under the 5 s drain that used to hold order and
    // gateway up.
    let mut alive: Vec<&(String, u32)> = children.iter().collect();
    while !alive.is_empty() && killed.elapsed() < Duration::from_secs(3) {
        alive.retain(|(_, pid)| process_alive(*pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = load.kill();
    let _ = load.wait();
    let logs: Vec<String> = alive
        .iter()
        .map(|(name, _)| {
            let log = std::fs::read_to_string(p.dir.path().join(format!(".shop/logs/{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            format!("{name}:\n{}", tail.join("\n"))
        })
        .collect();
    assert!(alive.is_empty(), "still running 3 s after the supervisor died: {alive:?}\n{}", logs.join("\n"));
}

/// The card numbers of every fixture user.
fn fixture_cards() -> Vec<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/users.yaml");
    shop::fixtures::load_users(&path).unwrap().into_iter().map(|u| (u.id, u.card)).collect()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Whether `haystack` holds `needle` anywhere, as raw bytes.
fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_card_number_is_stored_logged_or_traced_outside_the_user_database() {
    let p = started();
    let cards = fixture_cards();
    assert!(cards.len() >= 4, "{cards:?}");
    for (user, _) in &cards {
        let out = p.shop(&["order", "place", "--user", user, "--item", "sku-1"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The decisions payment takes from the vault still come out right.
        let expected = match user.as_str() {
            "bob" => (3, Some("card_declined")),
            "dave" => (3, Some("insufficient_funds")),
            "carol" => (3, Some("user_inactive")),
            _ => (0, None),
        };
        assert_eq!(out.status.code(), Some(expected.0), "{user}: {stderr}");
        if let Some(code) = expected.1 {
            assert!(stderr.contains(code), "{user}: expected `{code}` in {stderr}");
        }
    }
    let users: Vec<&str> = cards.iter().map(|(u, _)| u.as_str()).collect();
    let load = p.shop(&["load", "--orders", "30", "--users", &users.join(","), "-q"]);
    assert_eq!(load.status.code(), Some(0), "{}", String::from_utf8_lossy(&load.stderr));

    let state = p.dir.path().join(".shop");
    let mut checked = Vec::new();
    for path in files_under(&state) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("user.db") {
            continue; // the card vault
        }
        let bytes = std::fs::read(&path).unwrap();
        for (user, card) in &cards {
            assert!(!holds(&bytes, card), "{user}'s card number is in {}", path.display());
        }
        checked.push(name);
    }
    for wanted in ["order.db", "payment.db", "order.log", "payment.log", "user.log", "gateway.log"] {
        assert!(checked.iter().any(|n| n == wanted), "{wanted} was not checked: {checked:?}");
    }

    let secret = std::fs::read_to_string(state.join("secret")).unwrap();
    let admin = shop::plumbing::admin::AdminClient::new(secret.trim());
    let mut spans = 0;
    for row in p.ps() {
        let addr = row["address"].as_str().unwrap();
        let got = admin.recent_spans(addr, 10_000).await.unwrap();
        spans += got.len();
        let text = serde_json::to_string(&got).unwrap();
        for (user, card) in &cards {
            assert!(!text.contains(card.as_str()), "{user}'s card number is in a span of {}", row["instance"]);
        }
    }
    assert!(spans > 100, "spans were recorded: {spans}");
    // What others see of a card: its token and last four digits.
    let payments = shop::plumbing::db::open_read_only(&state.join("data/payment.db")).unwrap();
    let (token, last4): (String, String) = payments
        .query_row("SELECT card_token, card_last4 FROM payments WHERE status = 'captured' LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(token.starts_with("card_") && last4 == "4242", "{token} {last4}");
}

/// An order log as the order service wrote it before card tokens: the full number in the
/// validation of one order that is over and one still to be charged.
fn seed_order_with_card(db: &std::path::Path, pending: &str, done: &str) {
    // A version-1 file: its first migration only, as the service wrote it then.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(shop::services::order::store::MIGRATIONS[0]).unwrap();
    c.pragma_update(None, "user_version", 1).unwrap();
    let placed = r#"{"user_id":"alice","items":[{"product_id":"sku-1","quantity":1,"unit_price_cents":2499}],"total_cents":2499,"currency":"USD","trace_id":"0123456789abcdef0123456789abcdef"}"#;
    for (id, status) in [(pending, "PENDING"), (done, "FAILED")] {
        c.execute(
            "INSERT INTO orders (order_id, user_id, idempotency_key, request_hash, status, items, total_cents, currency,
                                 trace_id, created_at, updated_at)
             VALUES (?1, 'alice', ?1, 'h', ?2, '[{\"product_id\":\"sku-1\",\"quantity\":1,\"unit_price_cents\":2499}]',
                     2499, 'USD', '0123456789abcdef0123456789abcdef', ?3, ?3)",
            rusqlite::params![id, status, shop::plumbing::time::now_ms()],
        )
        .unwrap();
        c.execute(
            "INSERT INTO order_events (order_id, seq, type, at, data) VALUES (?1, 1, 'OrderPlaced', ?2, ?3),
                    (?1, 2, 'UserValidated', ?2, '{\"card\":\"4242424242424242\"}')",
            rusqlite::params![id, shop::plumbing::time::now_ms(), placed],
        )
        .unwrap();
    }
    c.execute(
        "INSERT INTO order_events (order_id, seq, type, at, data) VALUES
            (?1, 3, 'CompensationStarted', 0, '{\"step\":\"validate_user\",\"code\":\"x\",\"message\":\"x\"}'),
            (?1, 4, 'OrderFailed', 0, '{\"step\":\"validate_user\",\"code\":\"x\",\"message\":\"x\"}')",
        [done],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn card_numbers_in_an_old_order_log_are_scrubbed_at_start_up_and_its_saga_still_charges() {
    let mut stack = TestStack::start().await;
    stack.kill(Kind::Order);
    let db = stack.db(Kind::Order);
    let (pending, done) = ("ord_OLDPENDING", "ord_OLDFAILED");
    seed_order_with_card(&db, pending, done);
    let before = std::fs::read(&db).unwrap();
    assert!(holds(&before, "4242424242424242"), "the seeded file holds the number");

    stack.spawn(Kind::Order).await;
    stack.wait_ready(Kind::Order).await;
    let order = stack.wait_terminal(pending, Duration::from_secs(30)).await;
    assert_eq!(order["status"], "CONFIRMED", "{order:#}");
    let validations: Vec<&Value> =
        order["events"].as_array().unwrap().iter().filter(|e| e["type"] == "UserValidated").collect();
    assert_eq!(validations.len(), 2, "validated again for a token: {order:#}");

    let conn = shop::plumbing::db::open_read_only(&db).unwrap();
    for id in [pending, done] {
        let data: String = conn
            .query_row("SELECT data FROM order_events WHERE order_id = ?1 AND seq = 2", [id], |r| r.get(0))
            .unwrap();
        assert_eq!(data, r#"{"card_last4":"4242"}"#, "{id}");
    }
    assert_eq!(stack.count(Kind::Payment, "SELECT count(*) FROM payments WHERE order_id = ?1", &[&pending]), 1);
    let (token, last4): (String, String) = shop::plumbing::db::open_read_only(&stack.db(Kind::Payment))
        .unwrap()
        .query_row("SELECT card_token, card_last4 FROM payments WHERE order_id = ?1", [pending], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(token.starts_with("card_") && last4 == "4242", "{token} {last4}");
    drop(conn);
    for suffix in ["", "-wal"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(!holds(&bytes, "4242424242424242"), "the number survives in {}", path.display());
    }
}

#[test]
fn a_charge_whose_card_cannot_be_resolved_yet_is_retried_until_the_vault_answers() {
    let p = started();
    let cut = p.shop(&["chaos", "partition", "payment", "user", "--for", "3s"]);
    assert_eq!(cut.status.code(), Some(0), "{}", String::from_utf8_lossy(&cut.stderr));
    let out = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--wait", "30s", "--json"]);
    let order: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(order["status"], "CONFIRMED", "{order:#}\n{}", String::from_utf8_lossy(&out.stderr));
    let charge = order["steps"].as_array().unwrap().iter().find(|s| s["step"] == "charge_payment").unwrap();
    assert!(charge["attempts"].as_i64().unwrap() > 1, "the vault was unreachable at first: {charge}");
    let inv = p.shop(&["inspect", "invariants", "--settle", "20s"]);
    assert_eq!(inv.status.code(), Some(0), "{}", String::from_utf8_lossy(&inv.stdout));
}
