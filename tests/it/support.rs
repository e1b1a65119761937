//! A whole stack of `shop serve` children for one test, with typed helpers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use shop::invariants::{self, Databases, Report};
use shop::orchestrator::launcher::{wait_healthy, ServeCommand, ServiceProcess};
use shop::services::Kind;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_shop");
pub const ALICE: &str = "dev-token-alice";
pub const BOB: &str = "dev-token-bob";
pub const CAROL: &str = "dev-token-carol";
pub const DAVE: &str = "dev-token-dave";

/// The services after the registry, in dependency order.
const SERVICES: [Kind; 6] =
    [Kind::User, Kind::Inventory, Kind::Payment, Kind::Notification, Kind::Order, Kind::Gateway];

pub struct TestStack {
    pub dir: TempDir,
    pub http: reqwest::Client,
    pub registry_url: String,
    procs: HashMap<Kind, ServiceProcess>,
    env: HashMap<Kind, Vec<(String, String)>>,
    fixtures: HashMap<Kind, PathBuf>,
}

/// Per-service environment for a test stack (tuning and test hooks).
#[derive(Default)]
pub struct Options {
    env: HashMap<Kind, Vec<(String, String)>>,
    fixtures: HashMap<Kind, PathBuf>,
}

impl Options {
    pub fn env(mut self, kind: Kind, key: &str, value: &str) -> Options {
        self.env.entry(kind).or_default().push((key.into(), value.into()));
        self
    }

    /// Seeds `kind` from `path` instead of the shipped fixtures.
    pub fn fixtures(mut self, kind: Kind, path: PathBuf) -> Options {
        self.fixtures.insert(kind, path);
        self
    }
}

impl TestStack {
    pub async fn start() -> TestStack {
        TestStack::with(Options::default()).await
    }

    pub async fn with(options: Options) -> TestStack {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut stack = TestStack {
            dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            registry_url: String::new(),
            procs: HashMap::new(),
            env: options.env,
            fixtures: options.fixtures,
        };
        stack.spawn(Kind::Registry).await;
        for kind in SERVICES {
            stack.spawn(kind).await;
        }
        stack.wait_ready(Kind::Order).await;
        stack.wait_ready(Kind::Gateway).await;
        stack
    }

    fn command(&self, kind: Kind, extra: &[(String, String)]) -> ServeCommand {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let fixtures = match kind {
            _ if self.fixtures.contains_key(&kind) => self.fixtures.get(&kind).cloned(),
            Kind::User => Some(root.join("fixtures/users.yaml")),
            Kind::Inventory => Some(root.join("fixtures/products.yaml")),
            _ => None,
        };
        let mut env = vec![("SHOP_HEARTBEAT".to_string(), "200ms".to_string()), ("SHOP_TTL".into(), "1s".into())];
        env.extend(self.env.get(&kind).cloned().unwrap_or_default());
        env.extend(extra.iter().cloned());
        ServeCommand {
            binary: BIN.into(),
            kind,
            instance: kind.name().into(),
            port: 0,
            db: self.db(kind),
            registry: self.registry_url.clone(),
            fixtures,
            env,
            log: Some(self.dir.path().join(format!("{}.log", kind.name()))),
        }
    }

    /// Starts `kind` (again) and waits until it answers `/healthz`.
    pub async fn spawn(&mut self, kind: Kind) {
        self.spawn_with(kind, &[]).await
    }

    pub async fn spawn_with(&mut self, kind: Kind, extra: &[(&str, &str)]) {
        let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut cmd = self.command(kind, &extra);
        if kind == Kind::Registry {
            // A restarted registry comes back on the port the services know.
            if let Some(port) = self.registry_url.rsplit(':').next().and_then(|p| p.parse().ok()) {
                cmd.port = port;
            }
        }
        let proc =
            ServiceProcess::spawn(&cmd, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}\n{}", self.log(kind)));
        wait_healthy(&self.http, proc.address, "/healthz", Duration::from_secs(10)).await.expect("healthy");
        if kind == Kind::Registry {
            self.registry_url = format!("http://{}", proc.address);
        }
        self.procs.insert(kind, proc);
    }

    /// Starts `kind` with `extra` environment without waiting for it to be healthy: for a process
    /// a crash hook may end before it answers.
    pub fn spawn_doomed(&mut self, kind: Kind, extra: &[(&str, &str)]) {
        let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let cmd = self.command(kind, &extra);
        if let Ok(proc) = ServiceProcess::spawn(&cmd, Duration::from_secs(20)) {
            self.procs.insert(kind, proc);
        }
    }

    /// Whether `kind` is not running: never started, killed, or exited.
    pub fn is_down(&mut self, kind: Kind) -> bool {
        self.procs.get_mut(&kind).is_none_or(|p| p.exited())
    }

    pub async fn wait_ready(&self, kind: Kind) {
        let addr = self.procs[&kind].address;
        wait_healthy(&self.http, addr, "/readyz", Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{} not ready: {e}", kind.name()));
    }

    /// Waits until the gateway can reach the order service again (its view of the registry is
    /// fresh and its breaker closed) after a restart.
    pub async fn wait_gateway_reaches_order(&self) {
        let url = self.gateway("/orders?limit=1");
        let ok =
            eventually(Duration::from_secs(30), async || self.get(&url, Some(ALICE)).await.0 == StatusCode::OK).await;
        assert!(ok, "the gateway does not reach the order service");
    }

    pub fn db(&self, kind: Kind) -> PathBuf {
        self.dir.path().join(format!("{}.db", kind.name()))
    }

    pub fn log(&self, kind: Kind) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", kind.name()))).unwrap_or_default()
    }

    pub fn url(&self, kind: Kind, path: &str) -> String {
        format!("http://{}{path}", self.procs[&kind].address)
    }

    pub fn gateway(&self, path: &str) -> String {
        self.url(Kind::Gateway, path)
    }

    /// The gateway's address, for a test that speaks raw HTTP.
    pub fn gateway_addr(&self) -> std::net::SocketAddr {
        self.procs[&Kind::Gateway].address
    }

    pub fn kill(&mut self, kind: Kind) {
        if let Some(mut p) = self.procs.remove(&kind) {
            p.kill();
        }
    }

    pub fn process(&mut self, kind: Kind) -> &mut ServiceProcess {
        self.procs.get_mut(&kind).expect("running")
    }

    /// `POST /orders` as `token` with optional extra headers.
    pub async fn place(
        &self,
        token: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.post(self.gateway("/orders")).bearer_auth(token).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("gateway answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    pub async fn get(&self, url: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("answers");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The order as the order service has it (any owner).
    pub async fn order(&self, id: &str) -> Value {
        self.get(&self.url(Kind::Order, &format!("/v1/orders/{id}?events=true")), None).await.1
    }

    /// Polls the order until it is terminal.
    pub async fn wait_terminal(&self, id: &str, within: Duration) -> Value {
        let mut last = Value::Null;
        let found = eventually(within, async || {
            last = self.order(id).await;
            last["status"] != "PENDING" && !last["status"].is_null()
        })
        .await;
        if !found {
            panic!(
                "order {id} still {} after {within:?}: {last:#}\norder log:\n{}",
                last["status"],
                self.log(Kind::Order)
            );
        }
        last
    }

    pub fn databases(&self) -> Databases {
        Databases {
            order: self.db(Kind::Order),
            payment: self.db(Kind::Payment),
            inventory: self.db(Kind::Inventory),
            notification: self.db(Kind::Notification),
            gateway: Some(self.db(Kind::Gateway)),
        }
    }

    /// Waits up to `settle` for every invariant of SPEC section 7 and returns the report.
    pub fn invariants(&self, settle: Duration) -> Report {
        invariants::check_settled(&self.databases(), settle).expect("databases readable")
    }

    pub fn assert_invariants(&self) {
        let report = self.invariants(Duration::from_secs(15));
        assert!(report.ok, "invariants failed: {:#?}", report.checks);
    }

    /// One integer from a read-only query of a service's database.
    pub fn count(&self, kind: Kind, sql: &str, params: &[&dyn rusqlite::ToSql]) -> i64 {
        let conn = shop::plumbing::db::open_read_only(&self.db(kind)).expect("db");
        conn.query_row(sql, params, |r| r.get(0)).expect("query")
    }

    /// `(available, reserved, sold)` of a product.
    pub fn stock(&self, product: &str) -> (i64, i64, i64) {
        let conn = shop::plumbing::db::open_read_only(&self.db(Kind::Inventory)).expect("db");
        conn.query_row("SELECT available, reserved, sold FROM products WHERE product_id = ?1", [product], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("product")
    }
}

/// Polls `probe` every 20 ms until it holds or `within` passes; false on timeout.
pub async fn eventually(within: Duration, mut probe: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if probe().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn items(list: &[(&str, i64)]) -> Value {
    serde_json::json!({
        "items": list.iter().map(|(p, q)| serde_json::json!({"product_id": p, "quantity": q})).collect::<Vec<_>>()
    })
}
