//! The test hooks (`SHOP_CRASH_AFTER`, `SHOP_FAULT_DELAY`, `SHOP_HEADER_TIMEOUT`,
//! `SHOP_TOP_PANIC`): inert without `SHOP_TEST_HOOKS=1`, announced at start-up either way.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::stack::Project;

#[test]
fn hooks_left_exported_in_a_shell_are_ignored_by_up_and_announced() {
    let p = Project::new("");
    // Any of these, obeyed, breaks the stack: the order service would exit after its first
    // event, every answer would be 5 s late (failing health checks), slow clients would be cut.
    let exported = [("SHOP_CRASH_AFTER", "OrderPlaced"), ("SHOP_FAULT_DELAY", "5s"), ("SHOP_HEADER_TIMEOUT", "1s")];
    let up = p.shop_env(&["up", "-d", "-q"], &exported);
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert_eq!(up.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: test hooks ignored (SHOP_CRASH_AFTER, SHOP_FAULT_DELAY, SHOP_HEADER_TIMEOUT)")
            && stderr.contains("SHOP_TEST_HOOKS=1"),
        "{stderr}"
    );
    // The services inherited the variables through the supervisor and say they ignore them.
    let order_log = std::fs::read_to_string(p.dir.path().join(".shop/logs/order.log")).unwrap();
    assert!(order_log.contains("warning: test hooks ignored"), "{order_log}");

    let out = p.shop_env(&["--json", "order", "place", "--user", "alice", "--item", "sku-1"], &exported);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let order: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(p.row("order")["restarts"], 0, "the order service crashed: {}", p.row("order"));

    // The documented 10 s header deadline holds, not the exported 1 s: a client that never
    // finishes its headers is still connected after 3 s, and dropped well before 60 s.
    let address = p.row("gateway")["address"].as_str().unwrap().to_string();
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut byte = [0u8; 1];
    match slow.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the gateway cut a slow client before 3 s: {other:?}"),
    }
    slow.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest);
    assert!(closed.is_ok(), "the gateway held a slow client for 60 s: {closed:?}");
}

#[test]
fn a_hook_with_the_opt_in_acts_and_is_announced() {
    let p = Project::new("");
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    // `ps` is a command like any other: it announces the hooks it sees.
    let ps = p.shop_env(&["ps"], &[("SHOP_TEST_HOOKS", "1"), ("SHOP_TOP_PANIC", "1")]);
    let stderr = String::from_utf8_lossy(&ps.stderr);
    assert!(stderr.contains("warning: test hooks active (SHOP_TOP_PANIC)"), "{stderr}");
    let ps = p.shop_env(&["ps"], &[]);
    assert!(ps.stderr.is_empty(), "{}", String::from_utf8_lossy(&ps.stderr));
}
