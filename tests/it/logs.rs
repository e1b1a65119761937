//! `shop logs` queries on log files in the services' JSON-lines format: each filter, their
//! combination, `--json`, `-f` with a filter, and bad input (exit 2, a clear message).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::stack::Project;
use crate::support::BIN;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn line(ts: &str, level: &str, instance: &str, message: &str, fields: &str) -> String {
    format!(
        r#"{{"timestamp":"{ts}","level":"{level}","service":"{instance}","instance":"{instance}","message":"{message}"{fields}}}"#
    )
}

/// A project whose state dir holds the logs of a gateway, an order and a payment instance: one
/// order (`ord_A`, trace `4bf92f…`) that was retried, another order, and a plain-text crash line.
fn project_with_logs() -> Project {
    let p = Project::new("");
    let logs = p.dir.path().join(".shop/logs");
    std::fs::create_dir_all(&logs).unwrap();
    let gateway = [
        line(
            "2026-01-01T10:00:00.000000Z",
            "INFO",
            "gateway",
            "request",
            r#","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","path":"/v1/orders""#,
        ),
        line(
            "2026-01-01T10:05:00.000000Z",
            "INFO",
            "gateway",
            "request",
            r#","trace_id":"0af7651916cd43dd8448eb211c80319c","path":"/v1/orders""#,
        ),
    ];
    let order = [
        line(
            "2026-01-01T10:00:00.100000Z",
            "INFO",
            "order",
            "saga started",
            r#","order_id":"ord_A","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#,
        ),
        line(
            "2026-01-01T10:00:01.000000Z",
            "WARN",
            "order",
            "transient failure; retrying",
            r#","order_id":"ord_A","step":"charge""#,
        ),
        line(
            "2026-01-01T10:05:00.100000Z",
            "INFO",
            "order",
            "saga started",
            r#","order_id":"ord_B","trace_id":"0af7651916cd43dd8448eb211c80319c""#,
        ),
        line(
            "2026-01-01T10:05:02.000000Z",
            "ERROR",
            "order",
            "step failed; compensating",
            r#","order_id":"ord_B","code":"card_declined""#,
        ),
    ];
    let payment = [
        line(
            "2026-01-01T10:00:00.500000Z",
            "DEBUG",
            "payment",
            "charge",
            r#","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#,
        ),
        "thread 'main' panicked at src/payment.rs:1:1: boom".to_string(),
    ];
    for (name, lines) in [("gateway", &gateway[..]), ("order", &order[..]), ("payment", &payment[..])] {
        std::fs::write(logs.join(format!("{name}.log")), lines.join("\n") + "\n").unwrap();
    }
    p
}

/// The lines a child prints, read on a thread, so a follow that prints nothing fails the test
/// (`recv_timeout`) instead of hanging it.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let reader = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || reader.lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    rx
}

/// The messages of the kept lines, in the order printed.
fn messages(p: &Project, args: &[&str]) -> Vec<String> {
    let mut all = vec!["logs", "--json"];
    all.extend_from_slice(args);
    let out = p.shop(&all);
    assert_eq!(out.status.code(), Some(0), "shop {all:?}: {}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            format!("{} {}", v["instance"].as_str().unwrap(), v["message"].as_str().unwrap())
        })
        .collect()
}

#[test]
fn each_logs_filter_keeps_only_its_lines_and_they_combine() {
    let p = project_with_logs();
    assert_eq!(
        messages(&p, &["--since", "2026-01-01T10:05:00Z"]),
        ["gateway request", "order saga started", "order step failed; compensating"]
    );
    assert_eq!(messages(&p, &["--until", "2026-01-01T10:00:00.200Z"]), ["gateway request", "order saga started"]);
    // The same instants written with other offsets, and in lower case (RFC 3339 section 5.6).
    assert_eq!(
        messages(&p, &["--until", "2026-01-01T11:00:00.200+01:00"]),
        messages(&p, &["--until", "2026-01-01t10:00:00.200z"])
    );
    assert_eq!(
        messages(&p, &["--since", "2026-01-01T05:05:00-05:00"]),
        ["gateway request", "order saga started", "order step failed; compensating"]
    );
    assert_eq!(
        messages(&p, &["--level", "warn"]),
        ["order transient failure; retrying", "order step failed; compensating"]
    );
    assert_eq!(messages(&p, &["--grep", "retry|compensat"]).len(), 2);
    assert_eq!(messages(&p, &["--grep", "card_declined"]), ["order step failed; compensating"]);
    assert_eq!(
        messages(&p, &["--trace", "4BF92F3577B34DA6A3CE929D0E0E4736"]),
        ["gateway request", "order saga started", "payment charge"]
    );
    assert_eq!(
        messages(&p, &["--order", "ord_A"]),
        ["gateway request", "order saga started", "payment charge", "order transient failure; retrying"],
        "the order's own lines and those of its trace"
    );
    assert_eq!(
        messages(&p, &["--order", "ord_A", "--level", "info", "order"]),
        ["order saga started", "order transient failure; retrying"]
    );
    // The trace is learnt from the order's lines even when only other services are shown.
    assert_eq!(messages(&p, &["--order", "ord_A", "gateway", "payment"]), ["gateway request", "payment charge"]);
    assert_eq!(messages(&p, &["--since", "1h", "--level", "info"]), Vec::<String>::new(), "2026-01-01 is long ago");
    assert_eq!(messages(&p, &["--level", "error", "--since", "2026-01-01T10:00:00Z", "-n", "1"]).len(), 1);

    // Readable output: prefixed, the same filters. A plain-text line has no level of its own,
    // so `--level` keeps it (a panic must not hide), and the time of the line before it.
    let out = p.shop(&["logs", "--grep", "panicked"]);
    assert_eq!(stdout(&out).trim(), "payment | thread 'main' panicked at src/payment.rs:1:1: boom", "{}", stderr(&out));
    let out = p.shop(&["logs", "--level", "error", "--no-color"]);
    assert_eq!(
        stdout(&out).trim(),
        "payment | thread 'main' panicked at src/payment.rs:1:1: boom\n\
         order   | ERROR step failed; compensating code=card_declined instance=order order_id=ord_B"
    );
    // Written after payment's line of 10:00:00.5: within a window that holds it, not after it.
    let within = p.shop(&["logs", "payment", "--since", "2026-01-01T10:00:00Z", "--until", "2026-01-01T10:00:01Z"]);
    assert!(stdout(&within).contains("panicked"), "{}", stdout(&within));
    let after = p.shop(&["logs", "payment", "--since", "2026-01-01T10:00:01Z"]);
    assert!(!stdout(&after).contains("panicked"), "{}", stdout(&after));
    // Nor does an order or a trace claim it.
    assert!(!stdout(&p.shop(&["logs", "--order", "ord_A", "--no-color"])).contains("panicked"));
}

#[test]
fn following_past_until_ends_since_no_line_to_come_can_match() {
    let p = project_with_logs();
    let mut child = Command::new(BIN)
        .current_dir(p.dir.path())
        .args(["logs", "-f", "--until", "1h", "--json"])
        .env_remove("SHOP_STACK")
        .env_remove("SHOP_STATE_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.and_then(|s| s.code()), Some(0), "`logs -f --until 1h` must end on its own");
}

#[test]
fn a_bad_regex_a_bad_time_or_a_bad_level_is_a_usage_error_naming_the_value() {
    let p = project_with_logs();
    for (args, needle) in [
        (&["logs", "--grep", "(unclosed"][..], "`(unclosed` is not a valid regular expression"),
        (&["logs", "--since", "last tuesday"], "`last tuesday` is neither a duration nor a time"),
        (&["logs", "--until", "2026-13-45T99:00:00Z"], "is neither a duration nor a time"),
        (&["logs", "--level", "loud"], "`loud` is not a log level"),
        (&["logs", "--trace", "tA"], "`tA` is not a trace id"),
        (&["logs", "--since", "-5m"], "`-5m` is neither a duration nor a time"),
        (&["logs", "--since", "5m", "--until", "10m"], "--since is later than --until"),
    ] {
        let out = p.shop(args);
        assert_eq!(out.status.code(), Some(2), "shop {args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "shop {args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn follow_with_a_filter_prints_only_new_matching_lines() {
    let p = project_with_logs();
    let mut child = Command::new(BIN)
        .current_dir(p.dir.path())
        .args(["logs", "-f", "--level", "warn", "--json", "order"])
        .env_remove("SHOP_STACK")
        .env_remove("SHOP_STATE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("retrying"), "{first}");
    let mut second = String::new();
    out.read_line(&mut second).unwrap();
    assert!(second.contains("compensating"), "{second}");

    let mut f = std::fs::OpenOptions::new().append(true).open(p.dir.path().join(".shop/logs/order.log")).unwrap();
    writeln!(f, "{}", line("2026-01-01T11:00:00Z", "INFO", "order", "quiet", "")).unwrap();
    writeln!(f, "{}", line("2026-01-01T11:00:01Z", "ERROR", "order", "loud", "")).unwrap();
    drop(f);
    let mut next = String::new();
    out.read_line(&mut next).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(next.contains("\"message\":\"loud\""), "the info line is skipped, the error printed: {next}");
}

#[test]
fn a_stray_byte_hides_no_line_text_lines_keep_their_place_and_unknown_names_are_refused() {
    let p = project_with_logs();
    let logs = p.dir.path().join(".shop/logs");
    // A program's own output in Latin-1 in the middle of the payment log.
    let mut payment = std::fs::OpenOptions::new().append(true).open(logs.join("payment.log")).unwrap();
    payment.write_all(b"caf\xe9 ok\n").unwrap();
    payment
        .write_all(
            (line("2026-01-01T10:06:00.000000Z", "INFO", "payment", "after the stray byte", "") + "\n").as_bytes(),
        )
        .unwrap();
    let out = p.shop(&["logs", "--no-color"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert!(text.iter().any(|l| l.contains("after the stray byte")), "{text:#?}");
    assert!(text.iter().any(|l| l.contains("caf\u{fffd} ok")), "{text:#?}");
    // The panic comes right after the line before it (10:00:00.5), not first of all.
    let at =
        |needle: &str| text.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}: {text:#?}"));
    assert!(at("gateway") < at("panicked"), "{text:#?}");
    assert!(at("DEBUG charge") < at("panicked") && at("panicked") < at("transient failure"), "{text:#?}");

    // Followed too: a stray byte does not stop the lines after it.
    let mut follow = Command::new(BIN)
        .current_dir(p.dir.path())
        .args(["logs", "payment", "-f", "-n", "0", "--no-color"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    payment.write_all(b"\xff\xfe junk\n").unwrap();
    payment
        .write_all((line("2026-01-01T10:07:00.000000Z", "INFO", "payment", "followed", "") + "\n").as_bytes())
        .unwrap();
    let rx = lines_of(&mut follow);
    let seen: Vec<String> = (0..2).map_while(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).ok()).collect();
    follow.kill().unwrap();
    let _ = follow.wait();
    assert!(seen.last().is_some_and(|l| l.contains("followed")), "{seen:?}");

    // A name no log has and the stack does not know is refused; a known one without logs is not.
    let out = p.shop(&["logs", "order", "ordr-x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no service or instance `ordr-x` in this stack"), "{}", stderr(&out));
    let out = p.shop(&["logs", "odrer"]);
    assert!(stderr(&out).contains("did you mean `order`?"), "{}", stderr(&out));
    let out = p.shop(&["logs", "inventory"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("no logs of `inventory`"), "{}", stderr(&out));
}

#[test]
fn a_crash_is_a_warning_in_the_instances_log_and_a_chaos_line_names_what_it_hit() {
    let p = crate::stack::started();
    let out = p.shop(&["chaos", "kill", "payment", "--restart", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let crashed = loop {
        let out = p.shop(&["logs", "payment", "--level", "warn", "--grep", "crashed", "--no-color"]);
        if !stdout(&out).is_empty() || std::time::Instant::now() > deadline {
            break stdout(&out);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(crashed.contains("WARN  supervisor: payment crashed"), "{crashed}");
    let out = p.shop(&["logs", "supervisor", "--grep", "payment", "--no-color"]);
    let chaos = stdout(&out).lines().find(|l| l.contains("WARN  chaos action=kill")).map(str::to_string);
    assert!(chaos.is_some_and(|l| l.contains("on=payment")), "{}", stdout(&out));
    // A fault ended by hand says so too, not only one that expires.
    assert_eq!(p.shop(&["chaos", "clear", "payment", "-q"]).status.code(), Some(0));
    let out = p.shop(&["logs", "supervisor", "--grep", "chaos cleared", "--no-color"]);
    assert!(stdout(&out).contains("on=payment"), "{}", stdout(&out));
}

#[test]
fn a_followed_service_filter_finds_the_orders_lines_by_the_trace_other_logs_name() {
    let p = project_with_logs();
    let logs = p.dir.path().join(".shop/logs");
    let mut follow = p.spawn(&["logs", "payment", "-f", "-n", "0", "--order", "ord_C", "--no-color"]);
    let rx = lines_of(&mut follow);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let append = |file: &str, text: String| {
        let mut f = std::fs::OpenOptions::new().append(true).open(logs.join(file)).unwrap();
        f.write_all((text + "\n").as_bytes()).unwrap();
    };
    // Only the order service's line names the order; payment's names only its trace.
    let trace = r#","trace_id":"1bf92f3577b34da6a3ce929d0e0e4736""#;
    append(
        "order.log",
        line("2026-01-01T11:00:00.000000Z", "INFO", "order", "saga started", &format!(r#","order_id":"ord_C"{trace}"#)),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    append("payment.log", line("2026-01-01T11:00:00.100000Z", "INFO", "payment", "charged", trace));
    let seen = rx.recv_timeout(std::time::Duration::from_secs(10));
    follow.kill().unwrap();
    let _ = follow.wait();
    assert!(seen.as_deref().is_ok_and(|l| l.contains("charged")), "{seen:?}");

    let out = p.shop(&["logs", "--order", "../x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not an order id"), "{}", stderr(&out));
}
