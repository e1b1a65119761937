//! `shop smoke` through the real binary: every check passes on the shipped topology, the
//! throw-away stack leaves no process and no state dir behind, and `--json` has the contract's
//! shape.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use crate::stack::Project;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The throw-away state dir that smoke announced on stderr.
fn state_dir(o: &Output) -> PathBuf {
    let err = stderr(o);
    let line = err
        .lines()
        .find(|l| l.starts_with("starting a throw-away stack in `"))
        .unwrap_or_else(|| panic!("no state dir announced:\n{err}"));
    let path = line.split('`').nth(1).unwrap_or_else(|| panic!("unquoted state dir: {line}"));
    assert!(path.contains("shop-smoke"), "{path}");
    PathBuf::from(path)
}

/// Processes whose command line mentions `dir` (every `shop serve` of that stack has its
/// `--db` there).
fn processes_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(shop::orchestrator::state_dir::cmdline)
        .filter(|cmd| cmd.contains(&dir))
        .collect()
}

#[test]
fn smoke_passes_every_check_on_the_shipped_topology_and_leaves_nothing_behind() {
    let p = Project::new("");
    let out = p.shop(&["smoke"]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{text}\nstderr:\n{err}");
    let lines: Vec<&str> = text.lines().collect();
    for check in [
        "health",
        "confirmed_order",
        "declined_card_released",
        "inactive_user_refused",
        "idempotent_retry",
        "order_survives_payment_outage",
        "invariants",
    ] {
        assert!(lines.iter().any(|l| l.starts_with(&format!("PASS {check} ("))), "{check} did not pass:\n{text}");
    }
    assert!(!text.contains("\x1b["), "colour on a pipe:\n{text}");
    assert_eq!(lines.last(), Some(&"7 passed, 0 failed"), "{text}");
    assert_eq!(lines.len(), 8, "{text}");

    let dir = state_dir(&out);
    assert!(!dir.exists(), "`{}` was not removed", dir.display());
    assert_eq!(processes_under(&dir), Vec::<String>::new(), "left running");
    // Smoke never touches the project's own state dir.
    assert!(!p.dir.path().join(".shop").exists());
}

#[test]
fn smoke_json_is_one_document_with_seven_passing_checks() {
    let p = Project::new("");
    let out = p.shop(&["smoke", "--json", "-q"]);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", stdout(&out), stderr(&out));
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!((doc["passed"].as_u64(), doc["failed"].as_u64()), (Some(7), Some(0)), "{doc}");
    assert!(doc["duration_s"].as_f64().is_some_and(|d| d > 0.0), "{doc}");
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 7, "{doc}");
    for c in checks {
        assert!(c["name"].is_string() && c["detail"].is_string(), "{c}");
        assert_eq!(c["ok"], true, "{c}");
    }
    assert_eq!(checks[0]["name"], "health");
    assert_eq!(checks[6]["name"], "invariants");
}

#[test]
fn smoke_with_an_invalid_stack_file_exits_2_before_starting_anything() {
    let p = Project::with_file("services:\n  order:\n    restrat: always\n");
    let out = p.shop(&["smoke"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("stack.yaml:3:5: unknown key `restrat`"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("throw-away"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_report_path_that_cannot_be_written_exits_2_before_starting_anything() {
    let p = Project::new("");
    for path in ["/nonexistent/smoke.xml", "."] {
        let out = p.shop(&["smoke", "--junit", path]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).starts_with(&format!("error: cannot write the JUnit report to `{path}`")),
            "{}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("throw-away"), "{}", stderr(&out));
    }
}

#[test]
fn a_failed_check_is_reported_the_others_still_run_and_smoke_exits_1() {
    let p = Project::new("");
    // Fixtures without an inactive user: that one check cannot pass.
    let users = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/users.yaml"))
        .unwrap()
        .replace("active: false", "active: true");
    std::fs::write(p.dir.path().join("users.yaml"), users).unwrap();
    let stack = std::fs::read_to_string(p.dir.path().join("stack.yaml")).unwrap();
    let stack: String = stack
        .lines()
        .map(|l| if l.contains("users.yaml") { "    fixtures: users.yaml" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(p.dir.path().join("stack.yaml"), stack).unwrap();

    let out = p.shop(&["smoke"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{text}\nstderr:\n{}", stderr(&out));
    assert!(
        text.contains(
            "FAIL inactive_user_refused: the user fixtures have no inactive user; add one with `active: false`\n"
        ),
        "{text}"
    );
    assert!(text.contains("PASS idempotent_retry ("), "{text}");
    assert!(text.contains("PASS invariants ("), "{text}");
    assert!(text.ends_with("6 passed, 1 failed\n"), "{text}");
    assert!(!state_dir(&out).exists());
}
