//! The benchmark's own tools, whose figures the README quotes: `bench/run.sh` refuses a bad
//! argument before it builds or measures anything, and `bench/fill_direct.py` copies a real
//! order into a stopped stack's databases so that every invariant still holds.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::stack::with_two_orders;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A PATH holding only what the argument checks and `--help` use (bash, dirname, sed). A check that
/// let a bad argument through would then stop at the first tool the run needs (wrk, apt-get,
/// cargo) instead of installing, building and measuring for minutes.
fn narrow_path() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for tool in ["bash", "dirname", "sed"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, dir.path().join(tool)).unwrap();
    }
    dir
}

fn run_bench(args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = narrow_path();
    Command::new(repo().join("bench/run.sh"))
        .args(args)
        .env("PATH", path.path())
        .env_remove("DURATION")
        .env_remove("CONNECTIONS")
        .env_remove("ROUNDS")
        .env_remove("GROW_ROUNDS")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Arguments, environment, and the line the benchmark refuses them with.
type Refusal = (&'static [&'static str], &'static [(&'static str, &'static str)], &'static str);

#[test]
fn the_benchmark_refuses_bad_arguments_in_one_line_before_it_runs_anything() {
    let refused: [Refusal; 9] = [
        (&["--grow", "abc"], &[], "--grow takes a whole number, such as 1000000; got `abc`"),
        (&["--grow"], &[], "--grow needs a number of orders, such as 1000000"),
        (&["--direct"], &[], "--direct chooses how --grow N fills the stack; give --grow N with it"),
        (&["--fast"], &[], "unknown argument: --fast (usage: bench/run.sh [--grow N [--direct]]; --help for more)"),
        (&[], &[("DURATION", "10")], "DURATION is a number of seconds or minutes, such as 10s or 1m; got `10`"),
        (&[], &[("ROUNDS", "0")], "ROUNDS, GROW_ROUNDS and CONNECTIONS must be at least 1"),
        (&[], &[("GROW_ROUNDS", "0")], "ROUNDS, GROW_ROUNDS and CONNECTIONS must be at least 1"),
        (&[], &[("GROW_ROUNDS", "seven")], "GROW_ROUNDS takes a whole number, such as 7; got `seven`"),
        (&[], &[("CONNECTIONS", "many")], "CONNECTIONS takes a whole number, such as 32; got `many`"),
    ];
    for (args, env, message) in refused {
        let out = run_bench(args, env);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), format!("{message}\n"), "{args:?} {env:?}");
        assert!(out.stdout.is_empty(), "{args:?} {env:?}: {}", text(&out.stdout));
    }
}

#[test]
fn the_benchmark_explains_itself_with_help() {
    for flag in ["--help", "-h"] {
        let out = run_bench(&[flag], &[]);
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", text(&out.stderr));
        let help = text(&out.stdout);
        assert!(help.starts_with("Usage: bench/run.sh [--grow N [--direct]]\n"), "{help}");
        for part in
            ["DURATION=10s CONNECTIONS=32 ROUNDS=3", "GROW_ROUNDS=7", "--grow N", "--direct", "bench/results.json"]
        {
            assert!(help.contains(part), "{flag} does not mention {part}:\n{help}");
        }
        assert!(!help.lines().any(|l| l.starts_with('#')), "comment marks left in:\n{help}");
    }
}

/// `bench/fill_direct.py ARGS…`
fn fill(args: &[&str]) -> Output {
    Command::new("python3").arg(repo().join("bench/fill_direct.py")).args(args).output().unwrap()
}

fn orders(data: &Path, status: &str) -> i64 {
    let conn = shop::plumbing::db::open_read_only(&data.join("order.db")).unwrap();
    conn.query_row("SELECT count(*) FROM orders WHERE status = ?1", [status], |r| r.get(0)).unwrap()
}

#[test]
fn fill_direct_copies_a_real_order_and_every_invariant_still_holds() {
    // Settled (every notification delivered) before the stack stops, so the copies start from
    // a finished order.
    let p = with_two_orders("sku-1:1");
    assert_eq!(p.shop(&["down", "-q"]).status.code(), Some(0));
    let data = p.dir.path().join(".shop/data");

    let out = fill(&[data.to_str().unwrap(), "250"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!((orders(&data, "CONFIRMED"), orders(&data, "FAILED")), (251, 1));

    // The copies are orders like any other: every check passes over them, stack down.
    let out = p.shop(&["--json", "inspect", "invariants", "--settle", "0s"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 6, "{report:#}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{report:#}");

    // And the stack starts over them and keeps taking orders.
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    let (order, stderr) = p.place("alice", "sku-1:1");
    assert_eq!(order["status"], "CONFIRMED", "{stderr}");
}

#[test]
fn fill_direct_refuses_bad_input_in_one_line_and_writes_nothing() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    let cases: [(&[&str], String); 3] = [
        (&[], "fill_direct.py: usage: bench/fill_direct.py DATA_DIR N [ORDER_ID]\n".into()),
        (
            &[dir, "ten"],
            "fill_direct.py: N is a whole number of copies, 1 or more, such as 1000000; got `ten`\n".into(),
        ),
        (&[dir, "10"], format!("fill_direct.py: {dir}/order.db does not exist")),
    ];
    for (args, message) in cases {
        let out = fill(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).starts_with(&message), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr).lines().count(), 1, "{args:?}: {}", text(&out.stderr));
    }
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0, "a refused fill created files");
}
