//! Hostile input against real listeners: garbage bytes, lying lengths, header floods, clients
//! that never finish, piles of idle connections; and secrets kept out of logs and files.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

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

#[tokio::test(flavor = "multi_thread")]
async fn every_listener_survives_garbage_lies_floods_slow_clients_and_idle_connections() {
    // This test holds a thousand sockets open itself: raise the soft limit, and stay under the
    // hard one where it is low.
    let mut idle_count = 1000usize;
    if let Ok((_, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
        idle_count = idle_count.min((hard as usize).saturating_sub(150));
    }
    let options = Kind::ALL.iter().fold(Options::default(), |o, k| o.env(*k, "SHOP_HEADER_TIMEOUT", "1s"));
    let mut stack = TestStack::with(options).await;
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
    for kind in [Kind::Gateway, Kind::Order, Kind::Registry] {
        let pid = stack.process(kind).pid();
        let addr = stack.url(kind, "").trim_start_matches("http://").to_string();

        for size in [1, 100, 10_000] {
            raw(&addr, &random(size));
        }
        let lying = raw(&addr, b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\nContent-Type: application/json\r\n\r\n{");
        assert!(lying.is_empty() || lying.starts_with("HTTP/1.1 4"), "{}: {lying}", kind.name());
        let flood: String = (0..2000).map(|i| format!("X-Flood-{i}: {}\r\n", "a".repeat(50))).collect();
        let answer = raw(&addr, format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{flood}\r\n").as_bytes());
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{}: {}",
            kind.name(),
            &answer[..answer.len().min(80)]
        );

        // A client that never finishes its headers is dropped after the header deadline.
        let t = Instant::now();
        let mut slow = TcpStream::connect(&addr).unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = slow.read_to_end(&mut buf);
        assert!(t.elapsed() < Duration::from_secs(8), "{}: slow client held for {:?}", kind.name(), t.elapsed());

        let idle: Vec<TcpStream> = (0..idle_count).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        still_healthy(&mut stack, kind, pid).await;
        drop(idle);
        still_healthy(&mut stack, kind, pid).await;
    }
    // A real order still goes through after all that.
    let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[]).await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("CONFIRMED")));
}

#[test]
fn tokens_and_card_numbers_never_reach_the_logs_and_the_state_dir_is_private() {
    let p = Project::new("");
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    for user in ["alice", "bob", "carol", "dave"] {
        p.shop(&["order", "place", "--user", user, "--item", "sku-1"]);
    }
    p.shop(&["order", "place", "--token", "dev-token-nobody-has", "--item", "sku-1"]);
    p.shop(&["load", "--orders", "20", "--users", "alice,bob", "-q"]);
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
