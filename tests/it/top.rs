//! `shop top` against a running stack: `--once` and `--json`, the message without a stack, and
//! the real dashboard in a tmux pseudo-terminal (select, kill, quit, terminal restored).

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stack::{started, Project};
use crate::support::BIN;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn top_without_a_running_stack_says_so_like_ps_and_exits_1() {
    let p = Project::new("");
    for args in [&["top", "--once"][..], &["top", "--json"], &["top"]] {
        let out = p.shop(args);
        assert_eq!(out.status.code(), Some(1), "shop {args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("no stack is running from"), "{}", stderr(&out));
        assert!(stderr(&out).contains("start one with `shop up -d`"), "{}", stderr(&out));
    }
}

#[test]
fn an_interval_too_short_to_refresh_on_is_refused_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    for interval in ["0s", "10ms", "-1s"] {
        let out = Command::new(BIN).current_dir(dir.path()).args(["top", "--interval", interval]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{interval}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("`{interval}`")), "{}", stderr(&out));
    }
}

#[test]
fn once_prints_a_frame_and_json_a_snapshot_with_every_instance() {
    let p = started();
    let placed = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1"]);
    assert_eq!(placed.status.code(), Some(0), "{}", stderr(&placed));
    let ps = p.ps();

    let once = p.shop(&["top", "--once", "--interval", "300ms"]);
    assert_eq!(once.status.code(), Some(0), "{}", stderr(&once));
    let text = String::from_utf8_lossy(&once.stdout).into_owned();
    assert!(text.contains("orders/s 10s: confirmed"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "a piped frame is 80 columns:\n{text}");
    assert!(!text.contains('\x1b'), "plain text, no escapes:\n{text}");
    for row in &ps {
        let instance = row["instance"].as_str().unwrap();
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(instance));
        let line = line.unwrap_or_else(|| panic!("no row for {instance}:\n{text}"));
        assert!(line.contains("healthy"), "{line}");
    }

    let json = p.shop(&["top", "--json", "--interval", "300ms"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let snap: Value = serde_json::from_slice(&json.stdout).unwrap();
    let rows = snap["instances"].as_array().unwrap();
    assert_eq!(rows.len(), ps.len(), "{snap:#}");
    for (row, ps_row) in rows.iter().zip(&ps) {
        assert_eq!(row["instance"], ps_row["instance"]);
        assert_eq!(row["state"], ps_row["state"]);
        assert_eq!(row["pid"], ps_row["pid"]);
        assert!(row["requests_per_s"].is_number(), "two samples give a rate: {row}");
    }
    for key in ["confirmed_per_s", "failed_per_s", "pending_per_s", "pending"] {
        assert!(snap["orders"][key].is_number(), "{key}: {snap:#}");
    }
    assert!(snap["throughput"].is_array() && snap["events"].is_array(), "{snap:#}");
}

#[test]
fn once_and_json_show_the_events_that_came_before_them() {
    let p = started();
    let killed = p.shop(&["chaos", "kill", "payment", "-q"]);
    assert_eq!(killed.status.code(), Some(0), "{}", stderr(&killed));
    let cleared = p.shop(&["chaos", "clear", "payment", "-q"]);
    assert_eq!(cleared.status.code(), Some(0), "{}", stderr(&cleared));
    // The restart after the clear is the last thing that happened.
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.row("payment")["state"] != "healthy" {
        assert!(Instant::now() < deadline, "payment did not come back: {:?}", p.row("payment"));
        std::thread::sleep(Duration::from_millis(100));
    }

    let json = p.shop(&["top", "--json", "--interval", "200ms"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let snap: Value = serde_json::from_slice(&json.stdout).unwrap();
    let events: Vec<(String, String, String)> = snap["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["instance"].as_str().unwrap().into(),
                e["kind"].as_str().unwrap().into(),
                e["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    let payment: Vec<_> = events.iter().filter(|e| e.0 == "payment").map(|e| (e.1.as_str(), e.2.as_str())).collect();
    let at = |want: (&str, &str)| {
        payment.iter().position(|e| *e == want).unwrap_or_else(|| panic!("no {want:?} in {payment:?}"))
    };
    assert!(at(("state", "healthy -> killed")) < at(("fault_cleared", "cleared killed")), "{payment:?}");
    assert!(at(("fault_applied", "fault killed")) < at(("fault_cleared", "cleared killed")), "{payment:?}");
    // Then it started again (a restart or a change of state, as the supervisor's tick saw it).
    assert!(at(("fault_cleared", "cleared killed")) < payment.len() - 1, "{payment:?}");
    let times: Vec<i64> = snap["events"].as_array().unwrap().iter().map(|e| e["at_ms"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");

    // A kill left to the restart policy is a fault too, not a crash of the service's own.
    let restarted = p.shop(&["chaos", "kill", "inventory", "--restart", "-q"]);
    assert_eq!(restarted.status.code(), Some(0), "{}", stderr(&restarted));

    let once = p.shop(&["top", "--once", "--interval", "200ms"]);
    assert_eq!(once.status.code(), Some(0), "{}", stderr(&once));
    let text = String::from_utf8_lossy(&once.stdout).into_owned();
    assert!(text.contains("inventory      fault killed (SIGKILL), left to"), "{text}");
    assert!(!text.contains("no events yet"), "{text}");
    assert!(text.lines().any(|l| l.contains("payment") && l.contains("cleared killed")), "{text}");
}

/// A tmux server of its own, killed when the test ends however it ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let socket = format!("shop-top-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        Tmux { socket }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is needed for this test (CI installs it): apt-get install tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Polls the pane until `probe` holds; panics naming `what` with the last screen otherwise.
    fn wait_for(&self, what: &str, probe: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if probe(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "waited 20s for {what}; the pane shows:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}

#[test]
fn the_dashboard_in_a_terminal_kills_payment_with_k_and_restores_the_terminal_on_q() {
    let p = started();
    let ps = p.ps();
    let tmux = Tmux::new();
    let dir = p.dir.path().display().to_string();
    // After `top` ends the shell prints its exit code and waits, so the pane can be inspected.
    let script = format!("cd '{dir}' && env -u SHOP_STACK -u SHOP_STATE_DIR NO_COLOR=1 '{BIN}' top --interval 300ms; echo top-exited-$?; sleep 600");
    tmux.run(&["new-session", "-d", "-x", "80", "-y", "24", "-s", "top", "sh", "-c", &script]);

    let screen = tmux.wait_for("every instance on screen", |s| {
        ps.iter().all(|r| s.lines().any(|l| l.contains(r["instance"].as_str().unwrap()) && l.contains("healthy")))
    });
    assert_eq!(tmux.run(&["display", "-p", "-t", "top", "#{alternate_on}"]).trim(), "1", "{screen}");
    let escapes = tmux.run(&["capture-pane", "-p", "-e", "-t", "top"]);
    assert!(
        !escapes.contains("\x1b[32m") && !escapes.contains("[38;5;2m"),
        "NO_COLOR: healthy is not green:\n{escapes}"
    );

    let index = ps.iter().position(|r| r["instance"] == "payment").unwrap();
    for _ in 0..index {
        tmux.keys(&["Down"]);
    }
    tmux.wait_for("payment selected", |s| s.lines().any(|l| l.starts_with(">") && l.contains("payment")));
    tmux.keys(&["k"]);
    tmux.wait_for("the payment row to turn killed", |s| {
        s.lines().any(|l| l.contains("payment") && l.contains("killed") && !l.contains("healthy"))
    });
    assert_eq!(p.row("payment")["state"], "killed");

    tmux.keys(&["q"]);
    let screen = tmux.wait_for("top to exit", |s| s.contains("top-exited-"));
    assert!(screen.contains("top-exited-0"), "{screen}");
    assert_eq!(tmux.run(&["display", "-p", "-t", "top", "#{alternate_on}"]).trim(), "0", "alternate screen left");
    assert_eq!(tmux.run(&["display", "-p", "-t", "top", "#{cursor_flag}"]).trim(), "1", "cursor visible again");
}

#[test]
fn a_supervisor_that_does_not_answer_is_reported_and_q_still_quits() {
    let p = started();
    let tmux = Tmux::new();
    let dir = p.dir.path().display().to_string();
    let script = format!(
        "cd '{dir}' && env -u SHOP_STACK -u SHOP_STATE_DIR NO_COLOR=1 '{BIN}' top --interval 200ms; echo top-exited-$?; sleep 600"
    );
    tmux.run(&["new-session", "-d", "-x", "100", "-y", "24", "-s", "top", "sh", "-c", &script]);
    tmux.wait_for("the dashboard", |s| s.contains("instances"));
    let supervisor = nix::unistd::Pid::from_raw(p.supervisor_pid() as i32);
    nix::sys::signal::kill(supervisor, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let said = std::panic::catch_unwind(|| tmux.wait_for("the unanswered sample", |s| s.contains("did not answer")));
    tmux.keys(&["q"]);
    let quit = std::panic::catch_unwind(|| tmux.wait_for("top to exit on q", |s| s.contains("top-exited-0")));
    nix::sys::signal::kill(supervisor, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(said.is_ok() && quit.is_ok(), "{}", tmux.screen());
}

#[test]
fn ctrl_c_and_a_lost_stack_restore_the_terminal_too() {
    let p = started();
    let tmux = Tmux::new();
    let dir = p.dir.path().display().to_string();
    let script = format!(
        "cd '{dir}' && env -u SHOP_STACK -u SHOP_STATE_DIR -u NO_COLOR '{BIN}' top --interval 200ms; echo top-exited-$?; sleep 600"
    );
    tmux.run(&["new-session", "-d", "-x", "80", "-y", "24", "-s", "top", "sh", "-c", &script]);
    tmux.wait_for("the dashboard", |s| s.contains("instances"));
    let escapes = tmux.run(&["capture-pane", "-p", "-e", "-t", "top"]);
    assert!(
        escapes.contains("\x1b[32m") || escapes.contains("[38;5;2m"),
        "without NO_COLOR, healthy is green:\n{escapes}"
    );
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for("top to exit on Ctrl-C", |s| s.contains("top-exited-"));
    assert!(screen.contains("top-exited-0"), "{screen}");
    assert_eq!(tmux.run(&["display", "-p", "-t", "top", "#{alternate_on}"]).trim(), "0");
    assert_eq!(tmux.run(&["display", "-p", "-t", "top", "#{cursor_flag}"]).trim(), "1");

    // Now the stack goes away under a running dashboard.
    tmux.run(&["kill-server"]);
    let tmux = Tmux::new();
    tmux.run(&["new-session", "-d", "-x", "80", "-y", "24", "-s", "top", "sh", "-c", &script]);
    tmux.wait_for("the dashboard", |s| s.contains("instances"));
    let down = p.shop(&["down", "--timeout", "2s", "-q"]);
    assert_eq!(down.status.code(), Some(0), "{}", stderr(&down));
    let screen = tmux.wait_for("top to notice the stack is gone", |s| s.contains("top-exited-"));
    assert!(screen.contains("top-exited-1") && screen.contains("went away"), "{screen}");
    assert_eq!(tmux.run(&["display", "-p", "-t", "top", "#{alternate_on}"]).trim(), "0");
    assert_eq!(tmux.run(&["display", "-p", "-t", "top", "#{cursor_flag}"]).trim(), "1");
}

#[test]
fn a_panic_with_the_dashboard_on_screen_still_restores_the_terminal() {
    let p = started();
    let tmux = Tmux::new();
    let dir = p.dir.path().display().to_string();
    let script = format!(
        "cd '{dir}' && env -u SHOP_STACK -u SHOP_STATE_DIR SHOP_TEST_HOOKS=1 SHOP_TOP_PANIC=1 RUST_BACKTRACE=0 '{BIN}' top 2>&1; echo top-exited-$?; sleep 600"
    );
    tmux.run(&["new-session", "-d", "-x", "80", "-y", "24", "-s", "top", "sh", "-c", &script]);
    let screen = tmux.wait_for("top to exit", |s| s.contains("top-exited-"));
    assert!(screen.contains("SHOP_TOP_PANIC is set") && screen.contains("top-exited-101"), "{screen}");
    assert_eq!(tmux.run(&["display", "-p", "-t", "top", "#{alternate_on}"]).trim(), "0");
    assert_eq!(tmux.run(&["display", "-p", "-t", "top", "#{cursor_flag}"]).trim(), "1");
}
