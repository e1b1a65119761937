//! The command line itself, through the real binary: help texts and examples, `--json` on every
//! command (or a usage error where it means nothing), exit 2 for a stack file that cannot be
//! read, one line from `chaos clear` with nothing to clear, aligned coloured tables.

use std::process::{Command, Output};

use serde_json::Value;

use crate::stack::Project;
use crate::support::BIN;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `shop ARGS` in an empty temp dir (no stack file), with no stack variables inherited.
fn in_empty_dir(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env_remove("SHOP_STACK")
        .env_remove("SHOP_STATE_DIR")
        .output()
        .unwrap()
}

/// Every command that needs a stack file (or, with nothing running, its location).
const NEEDS_THE_STACK_FILE: &[&[&str]] = &[
    &["up", "-d"],
    &["down"],
    &["ps"],
    &["logs"],
    &["top", "--once"],
    &["start", "payment"],
    &["stop", "payment"],
    &["restart", "payment"],
    &["order", "list"],
    &["order", "get", "ord_x"],
    &["order", "place", "--user", "alice", "--item", "sku-1"],
    &["inspect", "stock"],
    &["inspect", "invariants"],
    &["inspect", "registry"],
    &["inspect", "service", "payment"],
    &["inspect", "order", "ord_x"],
    &["inspect", "trace", "4bf92f3577b34da6a3ce929d0e0e4736"],
    &["chaos", "list"],
    &["chaos", "clear"],
    &["chaos", "kill", "payment"],
    &["load", "--orders", "1"],
    &["smoke"],
    &["export", "k8s"],
    &["export", "compose"],
];

#[test]
fn every_argument_of_every_command_has_help_text() {
    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && !arg.is_hide_set() && arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("`shop {path}` {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, format!("{path} {}", sub.get_name()).trim(), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&shop::cli::command(), "", &mut missing);
    assert!(missing.is_empty(), "arguments without help: {}", missing.join(", "));
}

#[test]
fn help_ends_with_examples_and_says_only_what_the_command_does() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["chaos", "latency", "--help"], &["export", "compose", "--help"], &["ps", "--help"]]
    {
        let out = in_empty_dir(dir.path(), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = stdout(&out);
        let tail =
            text.trim_end().rsplit_once("Examples:").map(|(_, t)| t).unwrap_or_else(|| panic!("{args:?}:\n{text}"));
        assert!(tail.lines().skip(1).all(|l| l.trim_start().starts_with("shop ")), "{args:?}:\n{text}");
    }
    let serve = stdout(&in_empty_dir(dir.path(), &["serve", "--help"]));
    assert!(!serve.contains("[`"), "a doc link leaks into `serve --help`:\n{serve}");
    let compose = stdout(&in_empty_dir(dir.path(), &["export", "compose", "--help"]));
    assert!(!compose.contains("manifests"), "{compose}");
    let latency = stdout(&in_empty_dir(dir.path(), &["chaos", "latency", "--help"]));
    for documented in [
        "A service (all its instances)",
        "How long each affected request is held",
        "Up to this much more or less",
        "Makes percentages and jitter reproducible",
    ] {
        assert!(latency.contains(documented), "missing `{documented}`:\n{latency}");
    }
}

#[test]
fn a_malformed_trace_id_is_a_usage_error_not_a_trace_without_spans() {
    let dir = tempfile::tempdir().unwrap();
    for id in ["nothex", "00000000000000000000000000000000", "4bf92f3577b34da6a3ce929d0e0e47"] {
        let out = in_empty_dir(dir.path(), &["inspect", "trace", id]);
        assert_eq!(out.status.code(), Some(2), "{id}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("`{id}` is not a trace id; write its 32 hex digits")),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn serve_refuses_a_zero_pace_or_limit_before_it_starts() {
    // Zero would panic the heartbeat's timer, or refuse every request at the gateway's limiter.
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (&["serve", "user", "--heartbeat", "0s"][..], "`0s` must be more than zero"),
        (&["serve", "registry", "--ttl", "0ms"], "`0ms` must be more than zero"),
        (&["serve", "gateway", "--rate-burst", "0"], "0 is not in 1.."),
        // Values the registry would refuse, or no registry at all: refused before serving.
        (&["serve", "payment", "--instance", ""], "`` is not an instance name"),
        (&["serve", "payment", "--registry", "notaurl"], "`notaurl` is not a URL"),
    ] {
        let out = in_empty_dir(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_missing_stack_file_exits_2_with_the_same_message_from_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut first: Option<String> = None;
    for args in NEEDS_THE_STACK_FILE {
        let out = in_empty_dir(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "shop {args:?}: {}{}", stdout(&out), stderr(&out));
        let message = stderr(&out);
        assert!(message.contains("cannot read the stack file") && message.contains("-f FILE"), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert_eq!(first.get_or_insert_with(|| message.clone()), &message, "shop {args:?}");
    }
    assert!(!dir.path().join(".shop").exists(), "nothing was created beside a missing stack file");
}

#[test]
fn an_invalid_stack_file_exits_2_with_its_problems_from_every_command() {
    let p = Project::with_file("name: broken\nservices:\n  gateway: { port: eighty }\n");
    let mut first: Option<String> = None;
    for args in NEEDS_THE_STACK_FILE {
        let out = p.shop(args);
        assert_eq!(out.status.code(), Some(2), "shop {args:?}: {}{}", stdout(&out), stderr(&out));
        let message = stderr(&out);
        assert!(message.contains("stack.yaml:3:") && message.contains("is invalid"), "{args:?}: {message}");
        assert_eq!(first.get_or_insert_with(|| message.clone()), &message, "shop {args:?}");
    }
}

#[test]
fn with_a_valid_file_and_nothing_running_ps_logs_and_down_say_so_and_succeed() {
    let p = Project::new("");
    let ps = p.shop(&["ps"]);
    assert_eq!(ps.status.code(), Some(0), "{}", stderr(&ps));
    assert!(stderr(&ps).contains("no stack is running"), "{}", stderr(&ps));
    assert_eq!(stdout(&p.shop(&["ps", "--json"])).trim(), "[]");
    let logs = p.shop(&["logs"]);
    assert_eq!(logs.status.code(), Some(0), "{}", stderr(&logs));
    let down = p.shop(&["down"]);
    assert_eq!(down.status.code(), Some(0), "{}", stderr(&down));
    assert!(stderr(&down).contains("nothing to stop"), "{}", stderr(&down));
    let down = p.shop(&["down", "--json"]);
    let report: Value = serde_json::from_slice(&down.stdout).unwrap();
    assert_eq!(report["stopped"], serde_json::json!([]), "{report}");
}

#[test]
fn a_bad_chaos_value_is_a_usage_error_whether_or_not_a_stack_runs() {
    let p = Project::new("");
    for (args, want) in [
        (&["chaos", "net", "payment", "bandwidth", "--rate", "0"][..], "--rate must be more than 0"),
        (&["chaos", "net", "payment", "reset", "--toxicity", "200"], "--toxicity must be 0 to 100, got 200"),
        (&["chaos", "net", "payment", "reset", "--toxicity", "NaN"], "--toxicity must be 0 to 100, got NaN"),
        (&["chaos", "latency", "payment", "5ms", "--percent", "NaN"], "--percent must be 0 to 100, got NaN"),
        (&["chaos", "errors", "payment", "--status", "200"], "--status must be 400 to 599, got 200"),
        (&["chaos", "errors", "payment", "--percent", "half"], "`half` is not a share; write a percentage"),
        (&["chaos", "net", "payment", "reset", "--toxicity", "150%"], "--toxicity must be 0 to 100, got 150"),
    ] {
        let out = p.shop(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    // A share may be written with its sign: past the values, only the missing stack is wrong.
    let out = p.shop(&["chaos", "net", "payment", "reset", "--toxicity", "50%"]);
    assert!(stderr(&out).contains("no stack is running"), "{}", stderr(&out));
}

#[test]
fn json_is_refused_with_exit_2_where_it_cannot_mean_anything() {
    let p = Project::new("");
    for (args, why) in [
        (&["completions", "bash", "--json"][..], "shell script"),
        (&["serve", "payment", "--json"], "prints no result"),
        (&["up", "--json"], "shop up -d --json"),
        (&["export", "k8s", "--json"], "-o FILE"),
    ] {
        let out = p.shop(args);
        assert_eq!(out.status.code(), Some(2), "shop {args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "shop {args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "shop {args:?}: {}", stdout(&out));
    }
}

#[test]
fn export_json_reports_the_file_it_wrote() {
    let p = Project::new("");
    for format in ["k8s", "compose"] {
        let path = p.dir.path().join(format!("{format}.yaml"));
        let out = p.shop(&["export", format, "-o", path.to_str().unwrap(), "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let written: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(written["format"], format);
        assert_eq!(written["stack"], "test");
        assert_eq!(written["path"], path.display().to_string());
        assert_eq!(written["bytes"], std::fs::metadata(&path).unwrap().len());
    }
}

/// `shop ARGS` on a pseudo-terminal (through `script`), as a person at a terminal sees it.
fn on_a_terminal(p: &Project, args: &str) -> String {
    let out = Command::new("script")
        .current_dir(p.dir.path())
        .args(["-qec", &format!("{BIN} {args}"), "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("SHOP_STACK")
        .env_remove("SHOP_STATE_DIR")
        .env("TERM", "xterm")
        .output()
        .expect("`script` (util-linux) runs commands on a pseudo-terminal; install util-linux");
    assert_eq!(out.status.code(), Some(0), "{args}: {}{}", stdout(&out), stderr(&out));
    stdout(&out).replace("\r\n", "\n")
}

/// What a terminal shows: the text without its ANSI escape sequences.
fn visible(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Where the column after `word` starts in `line`.
fn column_after(line: &str, word: &str) -> usize {
    let end = line.find(word).unwrap() + word.len();
    end + (line[end..].len() - line[end..].trim_start().len())
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_running_stack_json_chaos_clear_and_coloured_tables_behave() {
    let p = Project::new("");
    let up = p.shop(&["up", "-d", "-q", "--json"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let rows: Value = serde_json::from_slice(&up.stdout).unwrap();
    let instances = rows.as_array().unwrap().len();
    assert!(instances >= 7, "{rows}");

    // Nothing to clear: one line, nothing on stdout.
    let clear = p.shop(&["chaos", "clear"]);
    assert_eq!(clear.status.code(), Some(0), "{}", stderr(&clear));
    assert_eq!(stderr(&clear), "no active faults; nothing to clear\n");
    assert_eq!(stdout(&clear), "");
    let latency = p.shop(&["chaos", "latency", "payment", "10ms", "--json"]);
    assert_eq!(latency.status.code(), Some(0), "{}", stderr(&latency));
    let active: Value = serde_json::from_slice(&latency.stdout).unwrap();
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");
    let clear = p.shop(&["chaos", "clear", "payment"]);
    assert_eq!(stderr(&clear), "cleared 1 fault on `payment`\n");
    assert_eq!(stdout(&clear), "");

    // The invariants table on a terminal: coloured, and the DETAIL column still aligned.
    let table = on_a_terminal(&p, "inspect invariants --settle 1s");
    assert!(table.contains("\x1b["), "no colour on a terminal: {table:?}");
    let shown = visible(&table);
    let lines: Vec<&str> = shown.lines().filter(|l| l.contains("PASS") || l.contains("DETAIL")).collect();
    assert!(lines.len() >= 2, "{shown}");
    let detail_at: Vec<usize> = lines
        .iter()
        .map(|l| if l.contains("RESULT") { column_after(l, "RESULT") } else { column_after(l, "PASS") })
        .collect();
    assert!(detail_at.iter().all(|c| *c == detail_at[0]), "misaligned:\n{shown}");

    // `logs --json`: the raw lines, each one JSON object.
    let logs = p.shop(&["logs", "payment", "--json"]);
    assert_eq!(logs.status.code(), Some(0), "{}", stderr(&logs));
    let lines: Vec<&str> = std::str::from_utf8(&logs.stdout).unwrap().lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.is_object(), "{line}");
    }

    // `down --json`: what it stopped.
    let down = p.shop(&["down", "--json", "--timeout", "2s"]);
    assert_eq!(down.status.code(), Some(0), "{}", stderr(&down));
    let report: Value = serde_json::from_slice(&down.stdout).unwrap();
    assert_eq!(report["stopped"].as_array().unwrap().len(), instances, "{report}");
    assert!(report["duration_s"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn f_names_the_stack_file_after_the_subcommand_too_but_follows_after_logs() {
    let p = Project::new("");
    for args in
        [&["ps", "-f", "missing.yaml"][..], &["inspect", "stock", "-f", "missing.yaml"], &["-f", "missing.yaml", "ps"]]
    {
        let out = p.shop(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("missing.yaml"), "{args:?}: {}", stderr(&out));
    }
    // `logs -f` follows: with nothing running it says so and ends, as without -f.
    let out = p.shop(&["logs", "-f"]);
    assert!(
        !stderr(&out).contains("missing.yaml") && !stderr(&out).contains("unexpected argument"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_shop_log_filter_that_does_not_parse_is_said_not_ignored() {
    let p = crate::stack::Project::new("");
    let out = p.shop_env(&["ps"], &[("SHOP_LOG", "warn,[[")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("SHOP_LOG=`warn,[[` is not a tracing filter"), "{}", stderr(&out));
    let out = p.shop_env(&["ps"], &[("SHOP_LOG", "warn")]);
    assert!(!stderr(&out).contains("tracing filter"), "{}", stderr(&out));
}
