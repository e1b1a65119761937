//! `dns` discovery, as `shop export` runs it on Kubernetes and compose: no registry process,
//! every service at a fixed address given in `SHOP_PEERS`. Locally the fixed addresses are free
//! loopback ports picked up front, as a platform's service names would be.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use shop::invariants::{self, Databases};
use shop::orchestrator::launcher::{wait_healthy, ServeCommand, ServiceProcess};
use shop::orchestrator::ports::pick_free;
use shop::services::Kind;

use crate::support::{items, ALICE, BIN, BOB};

/// The services of the shop, in the order they would start; no registry among them.
const SERVICES: [Kind; 6] =
    [Kind::User, Kind::Inventory, Kind::Payment, Kind::Notification, Kind::Order, Kind::Gateway];

struct DnsStack {
    dir: tempfile::TempDir,
    ports: HashMap<Kind, u16>,
    /// Kept so the processes live as long as the test (dropping one kills it).
    _procs: Vec<ServiceProcess>,
}

impl DnsStack {
    async fn start() -> DnsStack {
        let dir = tempfile::tempdir().unwrap();
        let loopback = "127.0.0.1".parse().unwrap();
        let mut ports = HashMap::new();
        for kind in SERVICES {
            // Distinct, as fixed service addresses are.
            let port = loop {
                let p = pick_free(loopback).unwrap();
                if !ports.values().any(|q| *q == p) {
                    break p;
                }
            };
            ports.insert(kind, port);
        }
        // Payment by name, as `payment:8080` is on a platform: resolved when connecting.
        let host = |k: &Kind| if *k == Kind::Payment { "localhost" } else { "127.0.0.1" };
        let peers: Vec<String> = SERVICES.iter().map(|k| format!("{}={}:{}", k.name(), host(k), ports[k])).collect();
        // Nothing listens here: were anything to ask a registry, it would be refused.
        let nowhere = format!("http://127.0.0.1:{}", pick_free(loopback).unwrap());
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut procs = Vec::new();
        for kind in SERVICES {
            let fixtures = match kind {
                Kind::User => Some(root.join("fixtures/users.yaml")),
                Kind::Inventory => Some(root.join("fixtures/products.yaml")),
                _ => None,
            };
            let cmd = ServeCommand {
                binary: BIN.into(),
                kind,
                instance: kind.name().into(),
                port: ports[&kind],
                db: dir.path().join(format!("{}.db", kind.name())),
                registry: nowhere.clone(),
                fixtures,
                env: vec![("SHOP_DISCOVERY".into(), "dns".into()), ("SHOP_PEERS".into(), peers.join(","))],
                log: Some(dir.path().join(format!("{}.log", kind.name()))),
            };
            let proc = ServiceProcess::spawn(&cmd, Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("{e}\n{}", log(&dir, kind)));
            assert_eq!(proc.address.port(), ports[&kind], "{} listens on its fixed port", kind.name());
            wait_healthy(&http, proc.address, "/healthz", Duration::from_secs(10)).await.expect("healthy");
            procs.push(proc);
        }
        DnsStack { dir, ports, _procs: procs }
    }

    fn url(&self, kind: Kind, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[&kind])
    }
}

fn log(dir: &tempfile::TempDir, kind: Kind) -> String {
    std::fs::read_to_string(dir.path().join(format!("{}.log", kind.name()))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_dns_discovery_an_order_is_confirmed_end_to_end_without_any_registry() {
    let stack = DnsStack::start().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // Readiness needs the dependencies' addresses, not a registry.
    for kind in [Kind::Order, Kind::Gateway] {
        let addr = format!("127.0.0.1:{}", stack.ports[&kind]).parse().unwrap();
        wait_healthy(&http, addr, "/readyz", Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{} not ready without a registry: {e}", kind.name()));
    }

    let place = |token: &'static str, body: Value| {
        let req = http.post(stack.url(Kind::Gateway, "/orders")).bearer_auth(token).json(&body);
        async move {
            let resp = req.send().await.expect("gateway answers");
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, order) = place(ALICE, items(&[("sku-1", 2)])).await;
    assert_eq!(status, 201, "{order:#}\n{}", log(&stack.dir, Kind::Order));
    assert_eq!(order["status"], "CONFIRMED", "{order:#}");
    assert_eq!(order["total_cents"], 2 * 2499);
    // A business failure is compensated across services found the same way.
    let (status, declined) = place(BOB, items(&[("sku-2", 1)])).await;
    assert_eq!((status, declined["status"].as_str()), (201, Some("FAILED")), "{declined:#}");
    assert_eq!(declined["failure"]["code"], "card_declined");

    let id = order["id"].as_str().unwrap();
    let read = http.get(stack.url(Kind::Gateway, &format!("/orders/{id}"))).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(read.json::<Value>().await.unwrap()["status"], "CONFIRMED");

    // Notifications are delivered and money and stock balance, as with the registry.
    let db = |k: Kind| stack.dir.path().join(format!("{}.db", k.name()));
    let databases = Databases {
        order: db(Kind::Order),
        payment: db(Kind::Payment),
        inventory: db(Kind::Inventory),
        notification: db(Kind::Notification),
        gateway: Some(db(Kind::Gateway)),
    };
    let report = invariants::check_settled(&databases, Duration::from_secs(15)).expect("databases readable");
    assert!(report.ok, "invariants failed: {:#?}", report.checks);
    for kind in SERVICES {
        let text = log(&stack.dir, kind);
        assert!(!text.contains("registry unreachable"), "{} tried the registry:\n{text}", kind.name());
    }
}

#[test]
fn a_malformed_peer_list_is_a_usage_error_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "payment", "--port", "0", "--discovery", "dns", "--peers", "user=user:8080,order"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("peer `order` has no `=`; write NAME=HOST:PORT"), "{stderr}");
}
