//! Hostile input against real listeners: garbage bytes, lying lengths, header floods, clients
//! that never finish, piles of idle connections; and secrets kept out of logs and files.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::StatusCode;
use shop::services::Kind;

use crate::stack::Project;
use crate::support::*;

/// Sends `bytes` on a fresh connection and returns whatever comes back before it closes.
fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

async fn still_healthy(stack: &mut TestStack, kind: Kind, pid: u32) {
    let (status, _) = stack.get(&stack.url(kind, "/healthz"), None).await;
    assert_eq!(status, StatusCode::OK, "{} unhealthy", kind.name());
    assert_eq!(stack.process(kind).pid(), pid);
    assert!(!stack.process(kind).exited(), "{} died", kind.name());
}

/// A soft limit on open files raised to the hard one, and how many idle connections this test
/// process can then hold (it holds a thousand itself where the limit allows).
fn idle_budget() -> usize {
    let mut idle_count = 1000usize;
    if let Ok((_, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
        idle_count = idle_count.min((hard as usize).saturating_sub(150));
    }
    idle_count
}

/// Garbage, a lying length, a header flood, a client that never finishes its headers (dropped
/// after the 1 s deadline the listener was given), then `idle_count` idle connections, calling
/// `healthy` while they are open and after.
async fn batter(name: &str, addr: &str, idle_count: usize, mut healthy: impl AsyncFnMut()) {
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                rng_state as u8
            })
            .collect()
    };
    for size in [1, 100, 10_000] {
        raw(addr, &random(size));
    }
    let lying = raw(
        addr,
        b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\nContent-Type: application/json\r\n\r\n{",
    );
    assert!(lying.is_empty() || lying.starts_with("HTTP/1.1 4"), "{name}: {lying}");
    let flood: String = (0..2000).map(|i| format!("X-Flood-{i}: {}\r\n", "a".repeat(50))).collect();
    let answer = raw(addr, format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{flood}\r\n").as_bytes());
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{name}: {}", &answer[..answer.len().min(80)]);

    // A client that never finishes its headers is dropped by the (1 s) header deadline: the
    // read ends with the connection closed, long before the generous 30 s bound.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let closed = slow.read_to_end(&mut buf);
    assert!(closed.is_ok(), "{name}: a slow client was held for 30 s: {closed:?}");

    let idle: Vec<TcpStream> = (0..idle_count).map(|_| TcpStream::connect(addr).unwrap()).collect();
    healthy().await;
    drop(idle);
    healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_listener_survives_garbage_lies_floods_slow_clients_and_idle_connections() {
    let idle_count = idle_budget();
    let options = Kind::ALL
        .iter()
        .fold(Options::default(), |o, k| o.env(*k, "SHOP_TEST_HOOKS", "1").env(*k, "SHOP_HEADER_TIMEOUT", "1s"));
    let mut stack = TestStack::with(options).await;
    for kind in Kind::ALL {
        let pid = stack.process(kind).pid();
        let addr = stack.url(kind, "").trim_start_matches("http://").to_string();
        let stack = &mut stack;
        batter(kind.name(), &addr, idle_count, async || still_healthy(stack, kind, pid).await).await;
    }
    // A real order still goes through after all that.
    let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[]).await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("CONFIRMED")));
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_supervisor_control_api_survives_garbage_lies_floods_slow_clients_and_idle_connections() {
    let idle_count = idle_budget();
    let p = Project::new("");
    let hooks = [("SHOP_TEST_HOOKS", "1"), ("SHOP_HEADER_TIMEOUT", "1s")];
    let up = p.shop_env(&["up", "-d", "-q"], &hooks);
    assert_eq!(up.status.code(), Some(0), "{}", String::from_utf8_lossy(&up.stderr));
    let record = std::fs::read_to_string(p.dir.path().join(".shop/supervisor.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    let control = record["control"].as_str().unwrap().trim_start_matches("http://").to_string();
    let pid = p.supervisor_pid();
    batter("supervisor", &control, idle_count, async || {
        let ps = p.shop(&["ps", "--json"]);
        assert_eq!(ps.status.code(), Some(0), "ps failed: {}", String::from_utf8_lossy(&ps.stderr));
        assert_eq!(p.supervisor_pid(), pid, "the supervisor was replaced");
    })
    .await;
    // It still acts on what it is asked: a restart through the control API goes through.
    let restart = p.shop(&["restart", "payment"]);
    assert_eq!(restart.status.code(), Some(0), "{}", String::from_utf8_lossy(&restart.stderr));
    assert_eq!(p.row("payment")["state"], "healthy", "{}", p.row("payment"));
}

#[test]
fn tokens_and_card_numbers_never_reach_the_logs_and_the_state_dir_is_private() {
    let p = Project::new("");
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    // Each order really happens (or is refused) as the fixtures say, so the secrets below were
    // on the wire and had every chance to be logged.
    for (user, code, status) in
        [("alice", 0, "CONFIRMED"), ("bob", 3, "FAILED"), ("carol", 3, ""), ("dave", 3, "FAILED")]
    {
        let out = p.shop(&["--json", "order", "place", "--user", user, "--item", "sku-1"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{user}: {stderr}");
        if !status.is_empty() {
            let order: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(order["status"], status, "{user}: {order}");
        } else {
            assert!(stderr.contains("user_inactive"), "{user}: {stderr}");
        }
    }
    let stranger = p.shop(&["order", "place", "--token", "dev-token-nobody-has", "--item", "sku-1"]);
    assert_eq!(stranger.status.code(), Some(2), "{}", String::from_utf8_lossy(&stranger.stderr));
    let load = p.shop(&["--json", "load", "--orders", "20", "--users", "alice,bob", "-q"]);
    assert_eq!(load.status.code(), Some(0), "{}", String::from_utf8_lossy(&load.stderr));
    // `order list` and its filters, over what was just placed.
    let list = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = p.shop(&[&["--json", "order", "list", "--limit", "100"][..], args].concat());
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let all = list(&[]);
    assert!(all.len() >= 23, "3 orders and 20 loaded: {all:#?}");
    let bobs = list(&["--user", "bob"]);
    assert!(!bobs.is_empty() && bobs.iter().all(|o| o["user_id"] == "bob"), "{bobs:#?}");
    let failed = list(&["--status", "FAILED"]);
    assert!(failed.iter().any(|o| o["user_id"] == "dave"), "{failed:#?}");
    assert!(failed.iter().all(|o| o["status"] == "FAILED"), "{failed:#?}");
    let alices = list(&["--user", "alice", "--status", "CONFIRMED"]);
    assert!(!alices.is_empty() && alices.iter().all(|o| o["user_id"] == "alice" && o["status"] == "CONFIRMED"));
    assert_eq!(all.iter().filter(|o| o["user_id"] == "alice" && o["status"] == "CONFIRMED").count(), alices.len());
    let logs = p.shop(&["logs", "--no-color", "-t"]);
    let mut all = String::from_utf8_lossy(&logs.stdout).into_owned();
    for entry in std::fs::read_dir(p.dir.path().join(".shop/logs")).unwrap() {
        all.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(all.len() > 1000, "logs were written");
    for secret in ["dev-token", "4242424242424242", "4000000000000002", "4000000000009995"] {
        assert!(!all.contains(secret), "`{secret}` appears in the logs");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &str| std::fs::metadata(p.dir.path().join(path)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(".shop/secret"), 0o600);
    assert_eq!(mode(".shop") & 0o077, 0, "the state dir is readable by others: {:o}", mode(".shop"));
    for row in p.ps() {
        assert!(row["address"].as_str().unwrap().starts_with("127.0.0.1:"), "{row}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_file_found_in_the_state_dir_is_replaced_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new("");
    // Left by someone else: weak, and readable and writable by everyone.
    let root = p.dir.path().join(".shop");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("secret"), "weak").unwrap();
    std::fs::set_permissions(root.join("secret"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let up = p.shop(&["up", "-d", "-q"]);
    assert_eq!(up.status.code(), Some(0), "{}", String::from_utf8_lossy(&up.stderr));
    let secret = std::fs::read_to_string(root.join("secret")).unwrap();
    assert_eq!(secret.len(), 64, "a fresh 32-byte secret: {secret}");
    let mode = std::fs::metadata(root.join("secret")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let registry = p.row("registry")["address"].as_str().unwrap().to_string();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let faults = |s: String| http.get(format!("http://{registry}/admin/faults")).header("x-shop-secret", s).send();
    assert_eq!(faults("weak".into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(faults(secret).await.unwrap().status(), StatusCode::OK);
    assert_eq!(p.shop(&["down", "-q"]).status.code(), Some(0));
}
