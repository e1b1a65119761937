//! The stack lifecycle through the real CLI: `up -d`, `ps`, `stop`, `start`, `down`, crashes,
//! restarts, failed starts, taken ports, replicas and external programs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::{eventually, BIN};

/// A directory with a stack file on free ports; every command runs with `-f` and its state dir.
pub struct Project {
    pub dir: tempfile::TempDir,
}

/// The shipped topology on free ports, fast heartbeats, fixtures by absolute path, plus `extra`
/// lines under `services:`.
pub fn stack_yaml(extra: &str) -> String {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    format!(
        "name: test
registry: {{ port: 0, heartbeat: 200ms, ttl: 1s }}
defaults:
  backoff: 50ms
  health: {{ interval: 50ms, start_period: 10s }}
services:
  gateway:
    depends_on: [order, user, inventory]
  user:
    fixtures: {users}
  inventory:
    fixtures: {products}
  payment: {{}}
  notification: {{}}
  order:
    depends_on: [user, inventory, payment, notification]
{extra}",
        users = fixtures.join("users.yaml").display(),
        products = fixtures.join("products.yaml").display(),
    )
}

/// A project with the shipped stack started in the background (`up -d`), for tests that only
/// need a running stack.
pub fn started() -> Project {
    let p = Project::new("");
    let up = p.shop(&["up", "-d", "-q"]);
    assert_eq!(up.status.code(), Some(0), "{}", String::from_utf8_lossy(&up.stderr));
    p
}

/// A started stack holding a confirmed order of `item` (alice's: charged, stock sold) and a
/// failed one (bob's card is declined: stock released), each notified once, all settled: the
/// invariants pass over it.
pub fn with_two_orders(item: &str) -> Project {
    let p = started();
    for (user, want) in [("alice", "CONFIRMED"), ("bob", "FAILED")] {
        let (order, stderr) = p.place(user, item);
        assert_eq!(order["status"], want, "{user}: {stderr}");
    }
    let settled = p.shop(&["--json", "inspect", "invariants", "--settle", "15s"]);
    assert_eq!(settled.status.code(), Some(0), "{}", String::from_utf8_lossy(&settled.stdout));
    p
}

impl Project {
    pub fn new(extra: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stack.yaml"), stack_yaml(extra)).unwrap();
        Project { dir }
    }

    pub fn with_file(text: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stack.yaml"), text).unwrap();
        Project { dir }
    }

    pub fn shop(&self, args: &[&str]) -> Output {
        self.shop_env(args, &[])
    }

    /// [`Project::shop`] with extra environment variables, as a user's shell would export them.
    pub fn shop_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .current_dir(self.dir.path())
            .args(args)
            .env_remove("SHOP_STACK")
            .env_remove("SHOP_STATE_DIR")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// `shop ARGS` started in the background, as from a second terminal, its output piped.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(BIN)
            .current_dir(self.dir.path())
            .args(args)
            .env_remove("SHOP_STACK")
            .env_remove("SHOP_STATE_DIR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `shop --json order place --user USER --item ITEM`: the order it printed (`Null` if it
    /// printed none) and its stderr, for the assertion's message.
    pub fn place(&self, user: &str, item: &str) -> (Value, String) {
        let out = self.shop(&["--json", "order", "place", "--user", user, "--item", item]);
        (serde_json::from_slice(&out.stdout).unwrap_or(Value::Null), stderr(&out))
    }

    pub fn ps(&self) -> Vec<Value> {
        let out = self.shop(&["ps", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    }

    pub fn row(&self, instance: &str) -> Value {
        self.ps().into_iter().find(|r| r["instance"] == instance).unwrap_or(Value::Null)
    }

    pub fn supervisor_pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.dir.path().join(".shop/supervisor.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()["pid"].as_u64().unwrap() as u32
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.shop(&["down", "--timeout", "2s", "-q"]);
    }
}

fn alive(pid: u64) -> bool {
    shop::orchestrator::state_dir::process_alive(pid as u32)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_detached_returns_once_everything_is_healthy_and_ps_reports_it() {
    let p = Project::new("");
    let out = p.shop(&["up", "-d", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 7);
    for r in &rows {
        assert_eq!(r["state"], "healthy", "{r}");
        for field in ["service", "instance", "pid", "address", "state", "restarts", "uptime_s", "faults"] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
        assert!(r["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    // `ps` says what `up` said, but later: uptimes only grow, everything else is equal.
    let later = p.ps();
    assert_eq!(later.len(), rows.len());
    for (now, then) in later.iter().zip(&rows) {
        assert!(now["uptime_s"].as_f64().unwrap() >= then["uptime_s"].as_f64().unwrap(), "{now} after {then}");
        let strip = |r: &Value| {
            let mut r = r.clone();
            r["uptime_s"] = Value::Null;
            r
        };
        assert_eq!(strip(now), strip(then));
    }
    // The secret is private to the user.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(p.state().join(".shop/secret")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Up again: nothing new starts.
    let again = p.shop(&["up", "-d", "--json"]);
    assert_eq!(again.status.code(), Some(0));
    let pids = |rows: &[Value]| rows.iter().map(|r| r["pid"].clone()).collect::<Vec<_>>();
    assert_eq!(pids(&serde_json::from_slice::<Vec<Value>>(&again.stdout).unwrap()), pids(&rows));
    // Table output names every column.
    let table = String::from_utf8(p.shop(&["ps"]).stdout).unwrap();
    for col in ["SERVICE", "INSTANCE", "PID", "ADDRESS", "STATE", "RESTARTS", "UPTIME", "FAULTS"] {
        assert!(table.contains(col), "{table}");
    }
    // No line ends in the padding of its last column: copied or diffed, output is what it says.
    assert!(table.lines().all(|l| !l.ends_with(' ')), "{table:?}");
    let logs = p.shop(&["logs", "registry", "-n", "50", "--no-color"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("registry | INFO  registered"),
        "{}",
        String::from_utf8_lossy(&logs.stdout)
    );
    // Each JSON line names the service that wrote it, whatever the line is about: the
    // registry's lines about the instances it registers are still the registry's.
    let raw = p.shop(&["logs", "registry", "-n", "50", "--json"]);
    let lines: Vec<Value> =
        String::from_utf8_lossy(&raw.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let registered: Vec<&Value> = lines.iter().filter(|l| l["message"] == "registered").collect();
    assert!(registered.len() >= 6, "{lines:?}");
    for l in registered {
        assert_eq!((l["service"].as_str(), l["instance"].as_str()), (Some("registry"), Some("registry")), "{l}");
        assert!(l["registered_instance"].is_string(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_child_is_restarted_and_counted_but_a_stopped_one_is_not() {
    let p = Project::new("");
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    let before = p.row("payment");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let back = eventually(Duration::from_secs(10), async || {
        let r = p.row("payment");
        r["state"] == "healthy" && r["pid"] != before["pid"]
    })
    .await;
    assert!(back, "not restarted: {}", p.row("payment"));
    assert_eq!(p.row("payment")["restarts"], 1);
    let log = std::fs::read_to_string(p.state().join(".shop/logs/payment.log")).unwrap();
    assert!(log.contains("crashed"), "{log}");

    let out = p.shop(&["stop", "payment"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = p.row("payment");
    assert_eq!((r["state"].as_str(), r["restarts"].as_i64()), (Some("stopped"), Some(1)), "{r}");
    assert!(r["pid"].is_null());
    // A service restarted by hand while a dependency is down runs anyway (it tolerates that
    // dependency being down): the restart must not take it down as well.
    let out = p.shop(&["restart", "order"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.row("order")["state"], "healthy", "{}", p.row("order"));
    // Nothing to kill or pause in a stopped service: said so, not listed as done.
    for action in ["kill", "pause"] {
        let out = p.shop(&["chaos", action, "payment"]);
        assert_eq!(out.status.code(), Some(2), "{action}: {}", stderr(&out));
        assert!(stderr(&out).contains("`payment` has no process to act on (`payment` is stopped)"), "{}", stderr(&out));
    }
    assert_eq!(String::from_utf8_lossy(&p.shop(&["chaos", "list", "--json"]).stdout).trim(), "[]");
    let out = p.shop(&["start", "payment"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.row("payment")["state"], "healthy");
    let out = p.shop(&["stop", "shipping"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown service or instance `shipping`"), "{}", stderr(&out));

    // The registry stops like any other service (it used to be skipped without a word). The
    // services keep their last view, which still has payment's old address from before its
    // restart: an order placed now waits, and confirms once the registry is back.
    // First the gateway's own view must have order's address since its restart: an order
    // through it now makes it look the address up if its last refresh came before.
    let reached = eventually(Duration::from_secs(10), async || {
        p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--wait", "5s"]).status.code() == Some(0)
    })
    .await;
    assert!(reached, "the gateway never reached the restarted order service");
    let out = p.shop(&["stop", "registry"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.row("registry")["state"], "stopped");
    let out = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--wait", "1s", "--json"]);
    let order: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    let out = p.shop(&["start", "registry"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.row("registry")["state"], "healthy");
    let id = order["id"].as_str().unwrap();
    let confirmed = eventually(Duration::from_secs(20), async || {
        let out = p.shop(&["order", "get", id, "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|o| o["status"] == "CONFIRMED")
    })
    .await;
    assert!(confirmed, "{id} did not confirm once the registry was back");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_restarts_ends_the_restart_loop_and_says_so() {
    let text = stack_yaml("").replace("  notification: {}", "  notification: {max_restarts: 2}");
    let p = Project::with_file(&text);
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    for round in 0..3 {
        let r = p.row("notification");
        let pid = r["pid"].as_i64().unwrap_or_else(|| panic!("round {round}: {r}"));
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        let settled = eventually(Duration::from_secs(10), async || {
            let r = p.row("notification");
            (r["state"] == "healthy" && r["pid"].as_i64() != Some(pid)) || r["state"] == "failed"
        })
        .await;
        assert!(settled, "round {round}: {}", p.row("notification"));
    }
    let r = p.row("notification");
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(r["restarts"], 2);
    let log = std::fs::read_to_string(p.state().join(".shop/logs/notification.log")).unwrap();
    assert!(log.contains("gave up after 2 restarts"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_never_turns_healthy_fails_up_names_itself_and_skips_its_dependents() {
    let extra = "  stuck:
    command: [sleep, \"30\"]
    health: { start_period: 1s }
  web:
    command: [python3, -m, http.server, \"{port}\", --bind, 127.0.0.1]
    depends_on: [stuck]
";
    let p = Project::new(extra);
    let started = std::time::Instant::now();
    let out = p.shop(&["up", "-d", "--wait-timeout", "120s"]);
    assert_eq!(out.status.code(), Some(1));
    // It gives up when the dependency fails, not at the (far) wait timeout.
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    let err = stderr(&out);
    assert!(err.contains("error: service `stuck` failed: `stuck` was not healthy within 1s"), "{err}");
    assert!(err.contains("error: service `web` was not started: dependency `stuck` is not healthy"), "{err}");
    assert_eq!(p.row("web")["state"], "skipped");
    assert_eq!(p.row("gateway")["state"], "healthy");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_stack_files_exit_2_with_every_problem_at_its_position() {
    let p = Project::with_file(
        "services:\n  order:\n    restrat: always\n  payment:\n    depends_on: [ordr]\n    port: 70000\n",
    );
    let out = p.shop(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "stack.yaml:3:5: unknown key `restrat` in `services.order`; did you mean `restart`?\n\
         stack.yaml:5:18: `services.payment.depends_on` names `ordr`, which is not a service in this stack; did you mean `order`?\n\
         stack.yaml:6:11: `services.payment.port` must be between 0 and 65535 (0 picks a free port), not 70000\n\
         error: `stack.yaml` is invalid (3 problems); fix it and run again\n"
    );
    let p = Project::with_file("services:\n  order:\n    depends_on: [payment]\n  payment:\n    depends_on: [order]\n");
    let out = p.shop(&["up"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("stack.yaml:3:18: dependency cycle: order -> payment -> order"),
        "{}",
        stderr(&out)
    );
    let out = p.shop(&["-f", "missing.yaml", "up"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_fixed_port_exits_1_naming_its_holder() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let text = stack_yaml("").replace("  gateway:\n", &format!("  gateway:\n    port: {port}\n"));
    let p = Project::with_file(&text);
    let out = p.shop(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(1));
    let want = format!("error: port {port} for service 'gateway' is already in use (pid {}: it-", std::process::id());
    assert!(stderr(&out).starts_with(&want), "{}", stderr(&out));
    assert!(stderr(&out).contains("; set services.gateway.port or stop that process"));
    assert!(!p.state().join(".shop/supervisor.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_of_the_stack_survives_down_or_the_death_of_its_supervisor() {
    let p = Project::new("");
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    let pids: Vec<u64> = p.ps().iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    let out = p.shop(&["down"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(pids.iter().all(|pid| !alive(*pid)), "left behind after down");
    let again = p.shop(&["down"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(stderr(&again).contains("nothing to stop"));

    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    let pids: Vec<u64> = p.ps().iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    let sup = p.supervisor_pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let gone = eventually(Duration::from_secs(5), async || pids.iter().all(|pid| !alive(*pid))).await;
    assert!(gone, "children outlived their supervisor");
    // The dead supervisor's state is noticed and cleaned, and a new stack starts.
    let out = p.shop(&["ps", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    // Said on stderr, which is a pipe here: plain text, no colour codes.
    assert!(stderr(&out).contains("found the state of a dead supervisor"), "{}", stderr(&out));
    assert!(!stderr(&out).contains('\x1b'), "colour on a pipe: {:?}", stderr(&out));
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    let purge = p.shop(&["down", "--purge"]);
    assert_eq!(purge.status.code(), Some(0));
    assert!(!p.state().join(".shop").exists(), "the purged state dir is gone, lock files and all");

    // A directory `up` did not make is never purged, whatever `--state-dir` names.
    let other = p.state().join("elsewhere");
    std::fs::create_dir_all(other.join("data")).unwrap();
    std::fs::write(other.join("data/precious.txt"), "keep").unwrap();
    let out = p.shop(&["down", "--purge", "--state-dir", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a state dir `shop up` made; nothing was deleted"), "{}", stderr(&out));
    assert!(other.join("data/precious.txt").exists());
    // Nor is it taken over (made private to its owner, filled with a stack) by `up`.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = p.shop(&["up", "-d", "--state-dir", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is neither empty nor a state dir of shop"), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&other).unwrap().permissions().mode() & 0o7777, 0o1777);
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_each_register_and_share_the_traffic() {
    let text = stack_yaml("").replace("  payment: {}", "  payment: {replicas: 2}");
    let p = Project::with_file(&text);
    let out = p.shop(&["up", "-d", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.row("payment-1")["state"], "healthy");
    assert_eq!(p.row("payment-2")["state"], "healthy");
    let gateway = p.row("gateway")["address"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    for _ in 0..10 {
        let resp = http
            .post(format!("http://{gateway}/orders"))
            .bearer_auth("dev-token-alice")
            .json(&serde_json::json!({"items": [{"product_id": "sku-load", "quantity": 1}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    for inst in ["payment-1", "payment-2"] {
        let addr = p.row(inst)["address"].as_str().unwrap().to_string();
        let text = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        let served: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("shop_http_requests_total") && l.contains("route=\"/v1/payments\"") && l.contains("POST")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(served >= 1.0, "{inst} served no charge");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_an_external_command_started_does_not_outlive_a_dead_supervisor_and_block_the_next_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // `sh` dies with the supervisor (the kernel's SIGTERM); the python it started would not.
    let extra = format!(
        "  web:
    port: {port}
    command: [sh, -c, \"python3 -m http.server {{port}} --bind 127.0.0.1; echo ended\"]
    health: {{ path: / }}
"
    );
    let p = Project::new(&extra);
    assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
    let sup = p.supervisor_pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // The next command finds the dead supervisor's state and cleans up what is left of it.
    assert_eq!(p.shop(&["ps", "-q"]).status.code(), Some(0));
    let freed =
        eventually(Duration::from_secs(5), async || tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err())
            .await;
    assert!(freed, "something still listens on web's port {port}");
    let out = p.shop(&["up", "-d", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.shop(&["down", "-q"]).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_external_command_joins_the_stack_and_is_health_checked() {
    let extra = "  web:
    command: [python3, -m, http.server, \"{port}\", --bind, 127.0.0.1]
    health: { path: / }
";
    let p = Project::new(extra);
    let out = p.shop(&["up", "-d", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let web = p.row("web");
    assert_eq!(web["state"], "healthy");
    let addr = web["address"].as_str().unwrap().to_string();
    let resp = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Registered on its behalf, so clients can find it.
    let registry = p.row("registry")["address"].as_str().unwrap().to_string();
    let found: Value = reqwest::get(format!("http://{registry}/v1/services/web")).await.unwrap().json().await.unwrap();
    assert_eq!(found[0]["address"], addr.as_str());
}

#[test]
fn three_ups_at_once_start_one_stack_and_all_three_succeed() {
    // Each used to spawn a supervisor of its own: one stack won the state dir, the others failed
    // on its ports, and a supervisor with its services ran on that nothing could find or stop.
    let p = Project::new("");
    let outs: Vec<Output> = std::thread::scope(|s| {
        let ups: Vec<_> = (0..3).map(|_| s.spawn(|| p.shop(&["up", "-d", "-q"]))).collect();
        ups.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    }
    let pids: Vec<u64> = p.ps().iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 7);
    // Supervisors started from this project's directory (their paths are relative to it).
    let supervisors = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd == p.dir.path()))
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| String::from_utf8_lossy(c).split('\0').any(|arg| arg == "supervise"))
            .count()
    };
    assert_eq!(supervisors(), 1);
    let out = p.shop(&["down"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(pids.iter().all(|pid| !alive(*pid)), "a service outlived `down`");
    assert_eq!(supervisors(), 0);
}

#[test]
fn an_up_racing_a_down_leaves_a_stack_every_command_finds_or_none() {
    // The `up` used to join the stack being stopped (reporting it healthy as it went away), or
    // start one whose record the finishing `down` then deleted: running, and found by nothing.
    let p = Project::new("");
    for delay_ms in [0, 10, 30, 60] {
        assert_eq!(p.shop(&["up", "-d", "-q"]).status.code(), Some(0));
        let down = std::process::Command::new(crate::support::BIN)
            .current_dir(p.dir.path())
            .args(["down", "-q"])
            .env_remove("SHOP_STACK")
            .env_remove("SHOP_STATE_DIR")
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let up = p.shop(&["up", "-d", "-q"]);
        let down = down.wait_with_output().unwrap();
        assert_eq!((up.status.code(), down.status.code()), (Some(0), Some(0)), "{}", stderr(&up));
        // Whichever went first, what runs is what `ps` finds: all of the stack, or none of it.
        let rows = p.ps();
        let serving = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd == p.dir.path()))
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| String::from_utf8_lossy(c).split('\0').any(|arg| arg == "serve"))
            .count();
        assert_eq!((serving, [0, 7].contains(&rows.len())), (rows.len(), true), "after {delay_ms} ms: {rows:?}");
        for row in &rows {
            assert_eq!(row["state"], "healthy", "after {delay_ms} ms: {row}");
            assert!(alive(row["pid"].as_u64().unwrap()), "after {delay_ms} ms: {row}");
        }
        let out = p.shop(&["down", "-q"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            rows.iter().all(|r| !alive(r["pid"].as_u64().unwrap())),
            "after {delay_ms} ms: a service outlived `down`"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreground_up_streams_logs_and_ctrl_c_stops_everything() {
    let p = Project::new("");
    let (mut child, seen, _rx) = foreground_up(&p, &[], std::process::Stdio::piped());
    assert!(seen.iter().any(|l| l.contains("7 instances healthy")), "{seen:?}");
    let pids: Vec<u64> = p.ps().iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 7);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let stdout = {
        let mut s = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut s).unwrap();
        s
    };
    let prefixed = stdout.lines().any(|l| l.starts_with("registry") && l.contains(" | INFO"));
    assert!(stdout.contains("SERVICE") && prefixed, "table and prefixed logs: {stdout}");
    assert!(pids.iter().all(|pid| !alive(*pid)), "a child outlived Ctrl-C");
    assert!(!p.state().join(".shop/supervisor.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_ctrl_c_kills_at_once_what_a_graceful_stop_is_still_waiting_for() {
    // A service that ignores SIGTERM: a graceful stop would wait the whole --timeout for it.
    let extra = "  stubborn:
    command: [python3, -c, \"import signal, sys, http.server as h; signal.signal(signal.SIGTERM, signal.SIG_IGN); h.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), h.SimpleHTTPRequestHandler).serve_forever()\", \"{port}\"]
    health: { path: / }
";
    let p = Project::new(extra);
    let (mut child, _, rx) = foreground_up(&p, &["--timeout", "60s"], std::process::Stdio::null());
    let pids: Vec<u64> = p.ps().iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let stopping =
        eventually(Duration::from_secs(5), async || rx.try_iter().any(|l| l.contains("Ctrl-C again to kill"))).await;
    assert!(stopping, "no graceful stop began");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = std::time::Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    child.wait().unwrap();
    // Well under the 10 s a graceful stop may take per service: the second Ctrl-C kills at once.
    assert!(second.elapsed() < Duration::from_secs(8), "the second Ctrl-C took {:?}", second.elapsed());
    let gone = eventually(Duration::from_secs(3), async || pids.iter().all(|pid| !alive(*pid))).await;
    assert!(gone, "a child outlived the second Ctrl-C");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreground_up_whose_reader_goes_away_stops_the_stack_as_ctrl_c_would() {
    // `shop up | head`: the reader of the log stream is gone once start-up is over. The next
    // log line must end the stream and stop the stack gracefully, not panic the process that
    // hosts the supervisor (which left the services to notice its death on their own).
    let p = Project::new("");
    let (mut child, _, rx) = foreground_up(&p, &[], std::process::Stdio::piped());
    let pids: Vec<u64> = p.ps().iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    drop(child.stdout.take());
    // Any log line will do: stopping a service writes the supervisor's line into its log.
    let out = p.shop(&["stop", "notification"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stopping =
        eventually(Duration::from_secs(10), async || rx.try_iter().any(|l| l.contains("stopping the stack"))).await;
    assert!(stopping, "the stack was not stopped when its reader went away");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(pids.iter().all(|pid| !alive(*pid)), "a child outlived its supervisor");
    assert!(!p.state().join(".shop/supervisor.json").exists());
}

/// `shop up ARGS` in the foreground, waited on until start-up is over ("streaming logs"); the
/// child, its stderr lines so far, and a receiver for the lines that follow.
fn foreground_up(
    p: &Project,
    args: &[&str],
    stdout: std::process::Stdio,
) -> (std::process::Child, Vec<String>, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .current_dir(p.dir.path())
        .arg("up")
        .args(args)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("streaming logs")) {
        let line =
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).expect("start-up finished");
        seen.push(line);
    }
    (child, seen, rx)
}
