//! Health that never lies (SPEC section 13): readiness fails on a database that cannot be
//! written, was deleted or replaced; the supervisor sees it, calls the instance unhealthy and
//! restarts it per policy; no order or charge is confirmed and then lost; the stack recovers by
//! itself once the disk is writable again.
//!
//! Root ignores file modes, so "unwritable" is `chattr +i` (the immutable flag stops root too);
//! these tests fail, not skip, where `chattr` is missing or the filesystem lacks the flag.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::stack::{stack_yaml, Project};
use crate::support::{eventually, ALICE};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The test stack, with `service`'s entry replaced by `entry` (or `extra` appended to order's).
fn started_with(service: &str, entry: &str, extra: &str) -> Project {
    let text = stack_yaml(extra).replace(&format!("  {service}: {{}}\n"), &format!("  {service}: {entry}\n"));
    let p = Project::with_file(&text);
    let up = p.shop(&["up", "-d", "-q"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    p
}

fn data(p: &Project, file: &str) -> PathBuf {
    p.dir.path().join(".shop/data").join(file)
}

fn addr(p: &Project, instance: &str) -> String {
    p.row(instance)["address"].as_str().expect("an address").to_string()
}

fn log(p: &Project, instance: &str) -> String {
    std::fs::read_to_string(p.dir.path().join(format!(".shop/logs/{instance}.log"))).unwrap_or_default()
}

/// Sets or clears the immutable flag, which stops writes even by root.
fn immutable(path: &Path, on: bool) {
    let flag = if on { "+i" } else { "-i" };
    let status = Command::new("chattr").arg(flag).arg(path).status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "`chattr {flag} {}` failed ({status:?}); these tests need chattr (e2fsprogs) and a filesystem with the immutable flag",
        path.display()
    );
}

/// The files SQLite writes for `db`: the database and its write-ahead log.
fn database_files(db: &Path) -> Vec<PathBuf> {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    [db.to_path_buf(), wal].into_iter().filter(|f| f.exists()).collect()
}

/// Clears the immutable flag even when an assertion fails, so the temp dir can be removed.
struct Unfreeze(Vec<PathBuf>);

impl Drop for Unfreeze {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(f).status();
        }
    }
}

/// The supervisor's status rows, straight from its control API (fast enough to poll tightly).
struct Control {
    http: reqwest::Client,
    url: String,
    secret: String,
}

impl Control {
    fn of(p: &Project) -> Control {
        let record: Value =
            serde_json::from_str(&std::fs::read_to_string(p.dir.path().join(".shop/supervisor.json")).unwrap())
                .unwrap();
        Control {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            url: format!("http://{}/v1/status", record["control"].as_str().unwrap()),
            secret: std::fs::read_to_string(p.dir.path().join(".shop/secret")).unwrap(),
        }
    }

    async fn row(&self, instance: &str) -> Value {
        let Ok(resp) = self.http.get(&self.url).header("x-shop-secret", &self.secret).send().await else {
            return Value::Null;
        };
        let status: Value = resp.json().await.unwrap_or_default();
        status["rows"].as_array().into_iter().flatten().find(|r| r["instance"] == instance).cloned().unwrap_or_default()
    }
}

/// Polls `instance` until `done` holds for its row, recording every state it passed through.
async fn watch_states(
    control: &Control,
    instance: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let row = control.row(instance).await;
        if let Some(s) = row["state"].as_str() {
            if seen.last().map(String::as_str) != Some(s) {
                seen.push(s.to_string());
            }
        }
        if done(&row) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{instance} never got there; states seen: {seen:?}; last row: {row}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_writes_to_the_database_and_liveness_alone_does_not_make_an_instance_healthy() {
    // `restart: no` keeps the unhealthy instance in place, so `ps` shows it for good.
    let p = started_with("notification", "{ restart: no, health: { retries: 2 } }", "");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let notification = addr(&p, "notification");
    let ready = http.get(format!("http://{notification}/readyz?scope=local")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let db = data(&p, "notification.db");
    let frozen = Unfreeze(database_files(&db));
    for f in &frozen.0 {
        immutable(f, true);
    }
    let resp = http.get(format!("http://{notification}/readyz?scope=local")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot be written"), "{body}");
    // Liveness still answers: only readiness knows.
    assert_eq!(http.get(format!("http://{notification}/healthz")).send().await.unwrap().status(), 200);
    let unhealthy = eventually(Duration::from_secs(10), async || p.row("notification")["state"] == "unhealthy").await;
    assert!(unhealthy, "{}", p.row("notification"));
    let row = p.row("notification");
    assert!(row["detail"].as_str().unwrap().contains("cannot be written"), "{row}");
    assert_eq!(row["restarts"], 0);
    let table = p.shop(&["ps"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("unhealthy"), "{}", String::from_utf8_lossy(&table.stdout));

    // Writable again: healthy again by itself.
    drop(frozen);
    let healthy = eventually(Duration::from_secs(10), async || p.row("notification")["state"] == "healthy").await;
    assert!(healthy, "{}", p.row("notification"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_cannot_write_its_database_exits_at_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("payment.db");
    let first = Command::new(crate::support::BIN)
        .args(["serve", "payment", "--port", "0", "--registry", "http://127.0.0.1:9", "--db"])
        .arg(&db)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut first = first.unwrap();
    let created = eventually(Duration::from_secs(10), async || db.exists()).await;
    let _ = first.kill();
    let _ = first.wait();
    assert!(created);
    let frozen = Unfreeze(database_files(&db));
    for f in &frozen.0 {
        immutable(f, true);
    }
    let out = Command::new(crate::support::BIN)
        .args(["serve", "payment", "--port", "0", "--registry", "http://127.0.0.1:9", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot open database `{}` for writing", db.display())), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "it must not say it is listening");
}

#[test]
fn a_service_given_another_services_database_refuses_it_naming_whose_it_is() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("user.db");
    let mut user = Command::new(crate::support::BIN)
        .args(["serve", "user", "--port", "0", "--registry", "http://127.0.0.1:9", "--db"])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(user.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    let _ = user.kill();
    let _ = user.wait();
    // One that took the file would serve on: each gets 10 s to refuse, then is stopped.
    let serve = |kind: &str| {
        let mut child = Command::new(crate::support::BIN)
            .args(["serve", kind, "--port", "0", "--registry", "http://127.0.0.1:9", "--db"])
            .arg(&db)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    };
    for kind in ["inventory", "order", "notification"] {
        let out = serve(kind);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{kind}: {err}");
        let want = format!("database `{}` is the user service's database, not the {kind} service's", db.display());
        assert!(err.contains(&want), "{kind}: {err}");
    }
    // A file from before the marks: told apart by its tables, and not marked by the refusal.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "application_id", 0).unwrap();
    drop(conn);
    let out = serve("inventory");
    assert!(
        stderr(&out).contains("is another schema's database (its tables are not this service's)"),
        "{}",
        stderr(&out)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mark: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap();
    assert_eq!(mark, 0, "a refusal leaves the file as it was");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_payment_database_refuses_charges_and_after_the_restart_no_confirmed_order_lacks_its_charge() {
    // A slower probe gives the test time to see the refusal before the supervisor acts.
    let p = started_with("payment", "{ health: { interval: 300ms } }", "");
    let control = Control::of(&p);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let payment = addr(&p, "payment");
    std::fs::remove_file(data(&p, "payment.db")).unwrap();

    let charge = json!({"order_id": "ord_probe", "user_id": "alice", "amount_cents": 100, "card_token": "card_probe"});
    let resp = http.post(format!("http://{payment}/v1/payments")).json(&charge).send().await.unwrap();
    assert_eq!(resp.status(), 503, "a charge must not be taken into a deleted file");
    let resp = http.get(format!("http://{payment}/readyz?scope=local")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("was deleted"));

    // Orders placed meanwhile wait for payment rather than being confirmed without a charge.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--wait", "0s", "--json"]);
        let order: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
        ids.push(order["id"].as_str().unwrap().to_string());
    }
    let states = watch_states(&control, "payment", Duration::from_secs(20), |r| {
        r["state"] == "healthy" && r["restarts"].as_u64() >= Some(1)
    })
    .await;
    assert!(states.iter().any(|s| s == "unhealthy"), "payment never showed unhealthy: {states:?}");
    assert!(log(&p, "payment").contains("supervisor: payment unhealthy"), "{}", log(&p, "payment"));
    assert!(data(&p, "payment.db").exists(), "the restart creates a new database");

    for id in &ids {
        let confirmed = eventually(Duration::from_secs(20), async || {
            let out = p.shop(&["order", "get", id, "--json"]);
            serde_json::from_slice::<Value>(&out.stdout).map(|o| o["status"] == "CONFIRMED").unwrap_or(false)
        })
        .await;
        assert!(confirmed, "{id}: {}", String::from_utf8_lossy(&p.shop(&["inspect", "order", id]).stdout));
    }
    let payments = shop::plumbing::db::open_read_only(&data(&p, "payment.db")).unwrap();
    for id in &ids {
        let n: i64 = payments
            .query_row("SELECT count(*) FROM payments WHERE order_id = ?1 AND captured_cents > 0", [id], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "confirmed order {id} has {n} charges in the payment database");
    }
    let inv = p.shop(&["inspect", "invariants", "--settle", "20s"]);
    assert_eq!(inv.status.code(), Some(0), "{}", String::from_utf8_lossy(&inv.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_write_ahead_log_is_unready_refuses_orders_and_loses_nothing_confirmed_to_a_crash() {
    let p = started_with("order", "{ health: { interval: 300ms } }", "");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let place =
        |wait: &str| p.shop(&["order", "place", "--user", "alice", "--item", "sku-1", "--wait", wait, "--json"]);
    let before = place("5s");
    assert_eq!(before.status.code(), Some(0), "{}", stderr(&before));
    let id = serde_json::from_slice::<Value>(&before.stdout).unwrap()["id"].as_str().unwrap().to_string();
    // Commits land in the log first: one deleted under a running service swallows them.
    std::fs::remove_file(data(&p, "order.db-wal")).unwrap();
    let order = addr(&p, "order");
    let resp = http.get(format!("http://{order}/readyz?scope=local")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("write-ahead log"));
    let refused = place("0s");
    assert_ne!(refused.status.code(), Some(0), "an order confirmed into a deleted log: {}", stderr(&refused));
    // A crash now loses nothing that was confirmed: the log's content is in the database. (The
    // supervisor may have ended the unready service already: then there is no process to kill.)
    let kill = p.shop(&["chaos", "kill", "order", "--restart"]);
    assert!(kill.status.success() || stderr(&kill).contains("has no process to act on"), "{}", stderr(&kill));
    let back = eventually(Duration::from_secs(20), async || {
        p.row("order")["state"] == "healthy" && p.shop(&["order", "get", &id]).status.success()
    })
    .await;
    assert!(back, "order {id} is gone after the crash: {}", p.row("order"));
    let inv = p.shop(&["inspect", "invariants", "--settle", "20s"]);
    assert_eq!(inv.status.code(), Some(0), "{}", String::from_utf8_lossy(&inv.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_a_healthy_spell_whose_restarts_keep_failing_backs_off_and_counts_them() {
    let p = started_with("notification", "{}", "");
    // Healthy for the whole spell (10 s) that wipes a crash history clean.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let files = database_files(&data(&p, "notification.db"));
    for f in &files {
        immutable(f, true);
    }
    let pid = p.row("notification")["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    // Each failed start is one more crash, with the wait doubling: not "restart 1" forever.
    let counted = eventually(Duration::from_secs(15), async || log(&p, "notification").contains("restart 3 of")).await;
    // `ps` says why meanwhile (between two attempts), in the service's own words.
    let want = "exited before it was listening: cannot open database";
    let said = eventually(Duration::from_secs(5), async || {
        p.row("notification")["detail"].as_str().is_some_and(|d| d.contains(want))
    })
    .await;
    for f in &files {
        immutable(f, false);
    }
    assert!(said, "{}", p.row("notification"));
    assert!(counted, "{}", log(&p, "notification"));
    let text = log(&p, "notification");
    assert!(text.contains("restart 2 of 5 in 100ms") && text.contains("restart 3 of 5 in 200ms"), "{text}");
    p.shop(&["down", "-q"]);
}

/// What the load saw: ids the gateway accepted, and how many placements it refused.
#[derive(Default)]
struct Seen {
    accepted: Vec<String>,
    refused: usize,
}

/// Places orders as alice through the gateway until `stop`, one at a time.
async fn load(gateway: String, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    let body = json!({"items": [{"product_id": "sku-1", "quantity": 1}]});
    while !stop.load(Ordering::SeqCst) {
        let resp = http.post(format!("http://{gateway}/orders")).bearer_auth(ALICE).json(&body).send().await;
        let accepted = match resp {
            Ok(r) if r.status().is_success() => {
                r.json::<Value>().await.ok().and_then(|v| v["id"].as_str().map(String::from))
            }
            _ => None,
        };
        {
            let mut seen = seen.lock().unwrap();
            match accepted {
                Some(id) => seen.accepted.push(id),
                None => seen.refused += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_order_database_under_load_refuses_orders_and_the_stack_recovers_by_itself() {
    // Enough restarts (at a doubling backoff) to outlast the outage below.
    let p = started_with("order", "", "    max_restarts: 20\n");
    let control = Control::of(&p);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let driver = tokio::spawn(load(addr(&p, "gateway"), stop.clone(), seen.clone()));
    let warm = eventually(Duration::from_secs(20), async || seen.lock().unwrap().accepted.len() >= 5).await;
    assert!(warm, "no orders accepted before the fault");

    let db = data(&p, "order.db");
    let frozen = Unfreeze(database_files(&db));
    for f in &frozen.0 {
        immutable(f, true);
    }
    let states = watch_states(&control, "order", Duration::from_secs(20), |r| r["restarts"].as_u64() >= Some(1)).await;
    assert!(states.iter().any(|s| s == "unhealthy"), "order never showed unhealthy: {states:?}");
    // The restart found the database still unwritable and refused to serve.
    let refused_start =
        eventually(Duration::from_secs(20), async || log(&p, "order").contains("cannot open database")).await;
    assert!(refused_start, "{}", log(&p, "order"));
    let refused_meanwhile = eventually(Duration::from_secs(10), async || seen.lock().unwrap().refused > 0).await;
    assert!(refused_meanwhile, "no order was refused while the database was unwritable");

    drop(frozen);
    let back = eventually(Duration::from_secs(30), async || control.row("order").await["state"] == "healthy").await;
    assert!(back, "order did not recover by itself: {}\n{}", control.row("order").await, log(&p, "order"));
    let before = seen.lock().unwrap().accepted.len();
    let flowing = eventually(Duration::from_secs(20), async || seen.lock().unwrap().accepted.len() >= before + 3).await;
    assert!(flowing, "orders do not flow again after recovery");
    stop.store(true, Ordering::SeqCst);
    driver.await.unwrap();

    // Every accepted order exists and ends terminal; none confirmed then lost.
    let accepted = std::mem::take(&mut seen.lock().unwrap().accepted);
    for id in &accepted {
        let terminal = eventually(Duration::from_secs(30), async || {
            let out = p.shop(&["order", "get", id, "--json"]);
            serde_json::from_slice::<Value>(&out.stdout)
                .map(|o| o["status"] == "CONFIRMED" || o["status"] == "FAILED")
                .unwrap_or(false)
        })
        .await;
        assert!(
            terminal,
            "accepted order {id} is lost or stuck: {}",
            String::from_utf8_lossy(&p.shop(&["inspect", "order", id]).stdout)
        );
    }
    let inv = p.shop(&["inspect", "invariants", "--settle", "20s"]);
    assert_eq!(inv.status.code(), Some(0), "{}", String::from_utf8_lossy(&inv.stdout));
}
