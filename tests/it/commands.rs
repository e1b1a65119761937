//! Commands and stack-file options through the real CLI that the lifecycle tests do not reach:
//! `up SERVICE`, `--no-deps`, `up` over a partly stopped stack, `restart`, `completions`, the
//! restart policies `always` and `no`, backoff doubling with its cap and reset, and
//! `down --timeout` escalating to SIGKILL.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::stack::{stack_yaml, Project};
use crate::support::eventually;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(p: &Project, args: &[&str]) -> Output {
    let out = p.shop(args);
    assert_eq!(out.status.code(), Some(0), "shop {args:?}: {}", stderr(&out));
    out
}

/// Instances by state, from one `ps`.
fn healthy(p: &Project) -> Vec<String> {
    let mut names: Vec<String> = p
        .ps()
        .into_iter()
        .filter(|r| r["state"] == "healthy")
        .map(|r| r["instance"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn pid(p: &Project, instance: &str) -> u64 {
    let row = p.row(instance);
    row["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {row}"))
}

fn log(p: &Project, instance: &str) -> String {
    std::fs::read_to_string(p.dir.path().join(format!(".shop/logs/{instance}.log"))).unwrap_or_default()
}

fn signal(pid: u64, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

#[tokio::test(flavor = "multi_thread")]
async fn up_service_starts_its_dependencies_no_deps_does_not_and_up_starts_only_what_is_missing() {
    let p = Project::new("");
    // One service: it and the registry, nothing else.
    ok(&p, &["up", "-d", "-q", "payment"]);
    assert_eq!(healthy(&p), ["payment", "registry"]);
    let payment = pid(&p, "payment");

    // The gateway pulls in what it depends on, transitively; what runs is left alone.
    ok(&p, &["up", "-d", "-q", "gateway"]);
    assert_eq!(healthy(&p).len(), 7, "{:#?}", p.ps());
    assert_eq!(pid(&p, "payment"), payment, "a running service was restarted");

    // With two stopped, `up` starts those two and nothing else.
    ok(&p, &["stop", "notification"]);
    ok(&p, &["stop", "user"]);
    let before: Vec<(String, Value)> =
        p.ps().into_iter().map(|r| (r["instance"].as_str().unwrap().to_string(), r["pid"].clone())).collect();
    ok(&p, &["up", "-d", "-q"]);
    assert_eq!(healthy(&p).len(), 7, "{:#?}", p.ps());
    for (instance, old) in before {
        let now = p.row(&instance)["pid"].clone();
        if instance == "notification" || instance == "user" {
            assert!(now.is_u64() && now != old, "{instance} was not started: {now}");
        } else {
            assert_eq!(now, old, "{instance} was restarted by `up`");
        }
    }

    // --no-deps: the gateway comes back without notification, which it needs only through
    // order (still running); `up gateway` without it would start notification too.
    ok(&p, &["stop", "gateway"]);
    ok(&p, &["stop", "notification"]);
    ok(&p, &["up", "-d", "-q", "--no-deps", "gateway"]);
    assert_eq!(p.row("gateway")["state"], "healthy", "{}", p.row("gateway"));
    assert_eq!(p.row("notification")["state"], "stopped", "{}", p.row("notification"));
    // A named service whose own dependency is down is not started, and `up` says why.
    ok(&p, &["stop", "order"]);
    let out = p.shop(&["up", "-d", "-q", "--no-deps", "order"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("dependency `notification` is not healthy"), "{}", stderr(&out));
    assert_eq!(p.row("notification")["state"], "stopped", "{}", p.row("notification"));
    ok(&p, &["up", "-d", "-q"]);

    // `restart`: a new process, healthy, and the restart shows in `ps`.
    let old = pid(&p, "payment");
    ok(&p, &["restart", "payment"]);
    let r = p.row("payment");
    assert_eq!(r["state"], "healthy", "{r}");
    assert_ne!(r["pid"].as_u64(), Some(old), "{r}");
    assert_eq!(r["restarts"], 1, "{r}");
    let nosuch = p.shop(&["restart", "nosuch"]);
    assert_eq!(nosuch.status.code(), Some(2), "{}", stderr(&nosuch));
}

#[test]
fn completions_print_a_script_for_each_shell_that_names_the_commands() {
    let p = Project::new("");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ok(&p, &["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["up", "down", "chaos", "inspect", "export"] {
            assert!(script.contains(word), "{shell}: `{word}` missing");
        }
        assert_eq!(stderr(&out), "");
    }
    let bash = ok(&p, &["completions", "bash"]);
    let bash = String::from_utf8_lossy(&bash.stdout);
    assert!(bash.contains("complete") && bash.contains("shop"), "{bash}");
    // The script is valid shell: bash parses it without running anything.
    let file = p.dir.path().join("shop.bash");
    std::fs::write(&file, bash.as_bytes()).unwrap();
    let parsed = std::process::Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(parsed.status.success(), "{}", stderr(&parsed));
    assert_eq!(p.shop(&["completions", "tcsh"]).status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_policies_always_and_no_and_a_backoff_that_doubles_caps_and_starts_over() {
    let text = stack_yaml("")
        .replace("  notification: {}", "  notification: { restart: always }")
        .replace("  payment: {}", "  payment: { restart: \"no\" }")
        .replace("  user:\n", "  user:\n    backoff: 3s\n");
    let p = Project::with_file(&text);
    ok(&p, &["up", "-d", "-q"]);

    // `always`: a clean exit (SIGTERM, status 0) is restarted too.
    let old = pid(&p, "notification");
    signal(old, nix::sys::signal::Signal::SIGTERM);
    let back = eventually(Duration::from_secs(20), async || {
        let r = p.row("notification");
        r["state"] == "healthy" && r["pid"].as_u64().is_some_and(|n| n != old)
    })
    .await;
    assert!(
        back,
        "`restart: always` did not restart a clean exit: {}\n{}",
        p.row("notification"),
        log(&p, "notification")
    );

    // `no`: a crash stays down.
    signal(pid(&p, "payment"), nix::sys::signal::Signal::SIGKILL);
    let decided = eventually(Duration::from_secs(10), async || log(&p, "payment").contains("not restarted")).await;
    assert!(decided, "{}", log(&p, "payment"));
    let r = p.row("payment");
    assert_ne!(r["state"], "healthy", "{r}");
    assert_eq!(r["restarts"], 0, "{r}");

    // Backoff 3 s, doubled to 6 s, then capped at 10 s (not 12 s).
    for (n, wait) in [(1, "3s"), (2, "6s"), (3, "10s")] {
        let old = pid(&p, "user");
        signal(old, nix::sys::signal::Signal::SIGKILL);
        let line = format!("restart {n} of 5 in {wait}");
        let logged = eventually(Duration::from_secs(10), async || log(&p, "user").contains(&line)).await;
        assert!(logged, "`{line}` not in\n{}", log(&p, "user"));
        let back = eventually(Duration::from_secs(40), async || {
            let r = p.row("user");
            r["state"] == "healthy" && r["pid"].as_u64().is_some_and(|n| n != old)
        })
        .await;
        assert!(back, "{}", p.row("user"));
    }
    // Healthy for longer than the 10 s spell, its crash history starts over: 3 s again.
    std::thread::sleep(Duration::from_secs(11));
    signal(pid(&p, "user"), nix::sys::signal::Signal::SIGKILL);
    let reset =
        eventually(Duration::from_secs(10), async || log(&p, "user").matches("restart 1 of 5 in 3s").count() == 2)
            .await;
    assert!(reset, "the backoff did not start over:\n{}", log(&p, "user"));
}

#[tokio::test(flavor = "multi_thread")]
async fn down_with_a_timeout_kills_what_ignores_sigterm() {
    let extra = "  stubborn:
    command: [sh, -c, \"trap '' TERM; exec python3 -m http.server {port} --bind 127.0.0.1\"]
    health: { path: / }
";
    let p = Project::new(extra);
    ok(&p, &["up", "-d", "-q"]);
    let stubborn = pid(&p, "stubborn");
    // It really ignores SIGTERM.
    signal(stubborn, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(p.row("stubborn")["state"], "healthy");
    assert!(shop::orchestrator::state_dir::process_alive(stubborn as u32));
    let supervisor = p.supervisor_pid();
    ok(&p, &["down", "--timeout", "1s"]);
    let gone = eventually(Duration::from_secs(10), async || {
        !shop::orchestrator::state_dir::process_alive(stubborn as u32)
            && !shop::orchestrator::state_dir::process_alive(supervisor)
    })
    .await;
    // It ignored SIGTERM, so only the SIGKILL after the timeout can have ended it.
    assert!(gone, "the process that ignores SIGTERM outlived `down --timeout 1s`");
}

#[test]
fn stop_start_and_restart_take_one_replica_by_its_instance_name() {
    let p = Project::with_file(&crate::stack::stack_yaml("").replace("  order:\n", "  order:\n    replicas: 2\n"));
    ok(&p, &["up", "-d", "-q"]);
    let state = |instance: &str| p.row(instance)["state"].as_str().unwrap().to_string();
    ok(&p, &["stop", "order-2"]);
    assert_eq!((state("order-1"), state("order-2")), ("healthy".into(), "stopped".into()));
    ok(&p, &["start", "order-2"]);
    assert_eq!(state("order-2"), "healthy");
    let before = pid(&p, "order-2");
    ok(&p, &["restart", "order-1"]);
    assert_eq!((p.row("order-1")["restarts"].as_u64(), p.row("order-2")["restarts"].as_u64()), (Some(1), Some(0)));
    assert_eq!(pid(&p, "order-2"), before, "the other replica was left alone");
    let out = p.shop(&["stop", "order-9"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown service or instance `order-9`; did you mean `order-1`?"),
        "{}",
        stderr(&out)
    );
    ok(&p, &["down"]);
}
