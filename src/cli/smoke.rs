//! `shop smoke`: the one command a CI job runs (SPEC section 3).
//!
//! It starts a throw-away copy of the user's stack (same topology, every port 0) with an
//! in-process supervisor and a temporary state dir, runs seven checks in order against its
//! gateway and databases, prints each as it finishes, tears the stack down and removes the
//! dir, whatever happened (a failed check, an error, Ctrl-C). Exit 0 only if all passed.
//!
//! Every check returns a `Result`: `Ok(detail)` is a PASS, `Err(why)` a FAIL, so one broken
//! step never stops the checks after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::context::Context;
use super::{exit, output, Failure};
use crate::fixtures::UserFixture;
use crate::invariants::{Check, Databases};
use crate::orchestrator::daemon;
use crate::orchestrator::protocol::InstanceState;
use crate::orchestrator::stackfile::{Program, Stack};
use crate::orchestrator::state_dir::StateDir;
use crate::orchestrator::supervisor::Supervisor;
use crate::plumbing::time::parse_duration;
use crate::services::Kind;
use crate::traffic::gateway::{self, root_cause, Gateway, OrderBody, Place, Token, Wait};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long the throw-away stack may take to start
    #[arg(long, default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub wait_timeout: Duration,
    /// Also write the results as JUnit XML (one testcase per check), for CI
    #[arg(long, value_name = "FILE")]
    pub junit: Option<std::path::PathBuf>,
}

/// The checks, in the order they run; a run that finishes reports each of them once.
const CHECKS: [&str; 7] = [
    "health",
    "confirmed_order",
    "declined_card_released",
    "inactive_user_refused",
    "idempotent_retry",
    "order_survives_payment_outage",
    "invariants",
];
/// The well-known test cards of the fixtures (SPEC section 5).
const CARD_CHARGED: &str = "4242424242424242";
const CARD_DECLINED: &str = "4000000000000002";
/// Grace between SIGTERM and SIGKILL when the stack (or payment, for the outage) stops.
const GRACE: Duration = Duration::from_secs(5);
/// How long a terminal order may take to settle: saga retries back off up to 2 s, and the order
/// service's circuit breaker toward payment may stay open a few seconds after an outage.
const SETTLE: Duration = Duration::from_secs(30);
/// Bound on one HTTP request, so a hung gateway fails a check instead of hanging CI.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let started = Instant::now();
    if let Some(path) = &args.junit {
        output::check_writable(path, "JUnit report", &[&ctx.file])?;
    }
    let stack = on_free_ports(ctx.stack_with_fixtures()?);
    let users = fixture_users(&stack)?;
    let dir = StateDir { root: std::env::temp_dir().join(crate::plumbing::ids::new("shop-smoke")) };
    if !ctx.quiet {
        errln!("starting a throw-away stack in `{}` on free ports", dir.root.display());
    }
    let running = match daemon::launch(stack.clone(), dir.clone(), &[], false).await {
        Ok(running) => running,
        Err(e) => {
            remove_dir(&dir);
            return Err(e.context("cannot start the throw-away stack"));
        }
    };
    let sup = running.sup;
    let mut report =
        Report { checks: Vec::new(), took: Vec::new(), color: !ctx.json && output::color_stdout(), json: ctx.json };
    let work = async {
        wait_started(&sup, args.wait_timeout, ctx.quiet).await;
        let smoke = Smoke::new(sup.clone(), stack, users);
        smoke.run(&mut report).await;
    };
    let interrupted = tokio::select! {
        _ = work => false,
        _ = interrupted() => true,
    };
    if interrupted {
        errln!("interrupted after {} of {} checks", report.checks.len(), CHECKS.len());
    } else {
        report.finish(started.elapsed());
    }
    if !ctx.quiet {
        errln!("stopping the throw-away stack (Ctrl-C again to kill at once)");
    }
    teardown(&sup, &dir).await;
    if let Some(path) = &args.junit {
        write_junit(path, &report, started.elapsed())?;
    }
    let all_passed = !interrupted && report.checks.len() == CHECKS.len() && report.checks.iter().all(|c| c.ok);
    Ok(if all_passed { exit::OK } else { exit::RUNTIME })
}

/// One testcase per check; a check that never ran (Ctrl-C) is a failure saying so.
fn write_junit(path: &std::path::Path, report: &Report, elapsed: Duration) -> anyhow::Result<()> {
    use crate::drill::junit::{suite, Case};
    let cases: Vec<Case> = CHECKS
        .iter()
        .map(|name| match report.checks.iter().position(|c| c.name == *name) {
            Some(i) => {
                let c = &report.checks[i];
                Case { time_s: report.took[i].as_secs_f64(), ..Case::new("smoke", name, c.ok, &c.detail) }
            }
            None => Case::new("smoke", name, false, "not run: smoke was interrupted first"),
        })
        .collect();
    std::fs::write(path, suite("smoke", &cases, elapsed.as_secs_f64()))
        .with_context(|| format!("cannot write the JUnit report to `{}`", path.display()))
}

/// The user's topology with every fixed port replaced by 0, so smoke never collides with a
/// running stack (or another smoke run).
fn on_free_ports(mut stack: Stack) -> Stack {
    stack.registry.port = 0;
    for s in &mut stack.services {
        s.port = 0;
    }
    stack
}

/// The users of the user service's fixtures; none when it has no fixtures (the checks that
/// need a user then fail, saying so).
fn fixture_users(stack: &Stack) -> anyhow::Result<Vec<UserFixture>> {
    let Some(path) =
        stack.services_of(Kind::User).into_iter().next().and_then(|name| stack.service(&name)?.fixtures.clone())
    else {
        return Ok(Vec::new());
    };
    crate::fixtures::load_users(&path).map_err(|e| Failure::usage(e.to_string()))
}

/// Waits until the supervisor's start-up is over (healthy or not) or `timeout` passes; the
/// `health` check then judges the outcome.
async fn wait_started(sup: &Supervisor, timeout: Duration, quiet: bool) {
    let started = Instant::now();
    while sup.status().starting && started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !quiet {
        let rows = sup.status().rows;
        let healthy = rows.iter().filter(|r| r.state == InstanceState::Healthy).count();
        errln!(
            "{healthy} of {} instances healthy after {} ms; running the checks",
            rows.len(),
            started.elapsed().as_millis()
        );
    }
}

/// Resolves on Ctrl-C; never, if the handler cannot be installed.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Stops everything (a second Ctrl-C kills at once), makes sure nothing of the stack is left
/// running, and removes the temporary state dir.
async fn teardown(sup: &Supervisor, dir: &StateDir) {
    tokio::select! {
        _ = sup.down(GRACE) => {}
        _ = interrupted() => {
            errln!("killing the throw-away stack");
            sup.kill_all();
        }
    }
    // Belt and braces: any `shop serve` still holding a database under the dir.
    dir.kill_leftovers(std::process::id());
    dir.remove_record();
    remove_dir(dir);
}

fn remove_dir(dir: &StateDir) {
    if let Err(e) = std::fs::remove_dir_all(&dir.root) {
        if e.kind() != std::io::ErrorKind::NotFound {
            errln!("warning: cannot remove the throw-away state dir `{}`: {e}", dir.root.display());
        }
    }
}

/// The checks' results, printed as they come (human mode) or as one document at the end.
struct Report {
    checks: Vec<Check>,
    /// How long each check took, beside it: the JUnit report's `time` of each testcase.
    took: Vec<Duration>,
    color: bool,
    json: bool,
}

/// `shop smoke --json`.
#[derive(Serialize)]
struct Summary<'a> {
    ok: bool,
    checks: &'a [Check],
    passed: usize,
    failed: usize,
    duration_s: f64,
}

impl Report {
    fn record(&mut self, name: &str, (result, took): (anyhow::Result<String>, Duration)) {
        let check = match result {
            Ok(detail) => Check { name: name.into(), ok: true, detail },
            Err(e) => Check { name: name.into(), ok: false, detail: format!("{e:#}") },
        };
        if !self.json {
            let (green, red, reset) = if self.color { ("\x1b[32m", "\x1b[31m", "\x1b[0m") } else { ("", "", "") };
            if check.ok {
                outln!("{green}PASS{reset} {} ({})", check.name, check.detail);
            } else {
                outln!("{red}FAIL{reset} {}: {}", check.name, check.detail);
            }
        }
        self.checks.push(check);
        self.took.push(took);
    }

    fn finish(&self, elapsed: Duration) {
        let passed = self.checks.iter().filter(|c| c.ok).count();
        let failed = self.checks.len() - passed;
        if self.json {
            output::print_json(&Summary {
                ok: failed == 0 && self.checks.len() == CHECKS.len(),
                checks: &self.checks,
                passed,
                failed,
                duration_s: (elapsed.as_secs_f64() * 100.0).round() / 100.0,
            });
        } else {
            outln!("{passed} passed, {failed} failed");
        }
    }
}

/// A check's result and how long it took.
async fn timed<T>(check: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let result = check.await;
    (result, started.elapsed())
}

/// A product of `GET /products`.
#[derive(Clone, Debug, Deserialize)]
struct Product {
    product_id: String,
    price_cents: i64,
    available: i64,
}

/// A gateway answer: status, `Location`, JSON body (`null` when there is none).
struct Reply {
    status: u16,
    location: Option<String>,
    body: Value,
}

impl From<gateway::Reply> for Reply {
    fn from(reply: gateway::Reply) -> Reply {
        Reply { status: reply.status.as_u16(), location: reply.location(), body: reply.json() }
    }
}

impl Reply {
    /// `201 CONFIRMED`, `403 user_inactive: …`: enough to see what went wrong in one line.
    fn describe(&self) -> String {
        let b = &self.body;
        if let Some(code) = b["error"]["code"].as_str() {
            return format!("{} {code}: {}", self.status, b["error"]["message"].as_str().unwrap_or(""));
        }
        if let Some(status) = b["status"].as_str() {
            let failure = match b["failure"]["code"].as_str() {
                Some(code) => format!(" ({code}: {})", b["failure"]["message"].as_str().unwrap_or("")),
                None => String::new(),
            };
            return format!("{} {status}{failure}", self.status);
        }
        let text = b.to_string();
        format!("{} {}", self.status, text.chars().take(200).collect::<String>())
    }

    fn id(&self) -> anyhow::Result<String> {
        self.body["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the answer has no order id: {}", self.describe()))
    }
}

/// A throw-away stack under test.
struct Smoke {
    sup: Arc<Supervisor>,
    stack: Stack,
    users: Vec<UserFixture>,
    /// For the instances' own health probes.
    http: reqwest::Client,
    /// A gateway instance; `None` when none came up.
    gateway: Option<Gateway>,
}

impl Smoke {
    fn new(sup: Arc<Supervisor>, stack: Stack, users: Vec<UserFixture>) -> Smoke {
        let gateways = stack.services_of(Kind::Gateway);
        let mut rows: Vec<_> =
            sup.status().rows.into_iter().filter(|r| gateways.contains(&r.service) && r.address.is_some()).collect();
        rows.sort_by_key(|r| r.state != InstanceState::Healthy);
        let gateway = rows.into_iter().next().and_then(|r| r.address).map(|a| Gateway::new(&format!("http://{a}")));
        Smoke { sup, stack, users, http: crate::plumbing::client::http_client(), gateway }
    }

    async fn run(&self, report: &mut Report) {
        report.record(CHECKS[0], timed(self.health()).await);
        report.record(CHECKS[1], timed(self.confirmed_order()).await);
        report.record(CHECKS[2], timed(self.declined_card_released()).await);
        report.record(CHECKS[3], timed(self.inactive_user_refused()).await);
        report.record(CHECKS[4], timed(self.idempotent_retry()).await);
        report.record(CHECKS[5], timed(self.order_survives_payment_outage()).await);
        report.record(CHECKS[6], timed(self.invariants()).await);
    }

    // ---- the checks ----

    /// Every instance is healthy in the supervisor's eyes and answers its probes itself.
    async fn health(&self) -> anyhow::Result<String> {
        let rows = self.sup.status().rows;
        let mut problems = Vec::new();
        for r in &rows {
            if r.state != InstanceState::Healthy {
                let why = r.detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default();
                problems.push(format!("`{}` is {}{why}", r.instance, r.state));
                self.show_log_tail(&r.instance);
                continue;
            }
            let Some(address) = &r.address else {
                problems.push(format!("`{}` has no address", r.instance));
                continue;
            };
            // External programs promise only their own health path; built-ins answer both.
            let paths = match self.stack.service(&r.service) {
                Some(s) if matches!(s.program, Program::External(_)) => vec![s.health.path.clone()],
                _ => vec!["/healthz".to_string(), "/readyz".to_string()],
            };
            for path in paths {
                let url = format!("http://{address}{path}");
                match self.http.get(&url).timeout(Duration::from_secs(5)).send().await {
                    Ok(resp) if resp.status().as_u16() == 200 => {}
                    Ok(resp) => problems.push(format!("`{}`: GET {path} answered {}", r.instance, resp.status())),
                    Err(e) => problems.push(format!("`{}`: GET {path} failed: {}", r.instance, root_cause(&e))),
                }
            }
        }
        if rows.is_empty() {
            bail!("the stack has no instances");
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        Ok(format!("{} instances healthy; /healthz and /readyz answer 200", rows.len()))
    }

    async fn confirmed_order(&self) -> anyhow::Result<String> {
        let user = self.active_user_with_card(CARD_CHARGED)?;
        let product = self.stocked_product().await?;
        let reply = self.place(&user.token, &product.product_id, 1, None, 10).await?;
        if reply.status != 201 || reply.body["status"] != "CONFIRMED" {
            bail!(
                "`{}` ordering 1 × {}: expected 201 CONFIRMED, got {}",
                user.id,
                product.product_id,
                reply.describe()
            );
        }
        let total = reply.body["total_cents"].as_i64();
        if total != Some(product.price_cents) {
            bail!(
                "order {} totals {} cents, expected 1 × {} = {} cents",
                reply.id()?,
                total.map(|t| t.to_string()).unwrap_or_else(|| "no".into()),
                product.price_cents,
                product.price_cents
            );
        }
        Ok(format!(
            "{} CONFIRMED for `{}`, 1 × {} = {} cents",
            reply.id()?,
            user.id,
            product.product_id,
            product.price_cents
        ))
    }

    async fn declined_card_released(&self) -> anyhow::Result<String> {
        let user = self.active_user_with_card(CARD_DECLINED)?;
        let product = self.stocked_product().await?;
        let before = product.available;
        let reply = self.place(&user.token, &product.product_id, 1, None, 10).await?;
        if reply.status != 201 || reply.body["status"] != "FAILED" {
            bail!("`{}` (declined card): expected 201 FAILED, got {}", user.id, reply.describe());
        }
        let code = reply.body["failure"]["code"].as_str().unwrap_or("none");
        if code != "card_declined" {
            bail!("order {} FAILED with `{code}`, expected `card_declined`", reply.id()?);
        }
        // The release precedes FAILED in the saga; the short poll only absorbs a slow read.
        let deadline = Instant::now() + Duration::from_secs(5);
        let after = loop {
            let now = self.product(&product.product_id).await?.available;
            if now == before || Instant::now() >= deadline {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if after != before {
            bail!(
                "order {} FAILED but `{}` has {after} available, {before} before it: its stock was not released",
                reply.id()?,
                product.product_id
            );
        }
        Ok(format!("{} FAILED card_declined; `{}` back to {before} available", reply.id()?, product.product_id))
    }

    async fn inactive_user_refused(&self) -> anyhow::Result<String> {
        let user = self
            .users
            .iter()
            .find(|u| !u.active)
            .ok_or_else(|| anyhow!("the user fixtures have no inactive user; add one with `active: false`"))?;
        let product = self.stocked_product().await?;
        let reply = self.place(&user.token, &product.product_id, 1, None, 10).await?;
        if reply.status != 403 || reply.body["error"]["code"] != "user_inactive" {
            bail!("`{}` (inactive): expected 403 user_inactive, got {}", user.id, reply.describe());
        }
        Ok(format!("`{}` got 403 user_inactive", user.id))
    }

    async fn idempotent_retry(&self) -> anyhow::Result<String> {
        let user = self.active_user_with_card(CARD_CHARGED)?;
        let product = self.stocked_product().await?;
        let key = crate::plumbing::ids::new("smoke");
        let first = self.place(&user.token, &product.product_id, 1, Some(&key), 10).await?;
        let second = self.place(&user.token, &product.product_id, 1, Some(&key), 10).await?;
        if first.status != 201 {
            bail!("first request with key `{key}`: expected 201, got {}", first.describe());
        }
        if second.status != 200 {
            bail!("retry with key `{key}`: expected 200, got {}", second.describe());
        }
        let (a, b) = (first.id()?, second.id()?);
        if a != b {
            bail!("key `{key}` gave two orders: {a} then {b}");
        }
        Ok(format!("{a} returned twice (201, then 200)"))
    }

    /// Payment down: the order is accepted and kept PENDING; payment back: it completes.
    async fn order_survives_payment_outage(&self) -> anyhow::Result<String> {
        let payment = self.stack.services_of(Kind::Payment);
        if payment.is_empty() {
            bail!("the stack has no payment service");
        }
        let user = self.active_user_with_card(CARD_CHARGED)?;
        let product = self.stocked_product().await?;
        self.sup.stop_services(&payment, GRACE).await;
        let placed = self.place_during_outage(&user.token, &product.product_id).await;
        self.sup.up(payment.clone()).await;
        let back = Instant::now();
        let id = placed?;
        let unhealthy: Vec<String> = self
            .sup
            .status()
            .rows
            .into_iter()
            .filter(|r| payment.contains(&r.service) && r.state != InstanceState::Healthy)
            .map(|r| format!("`{}` is {}", r.instance, r.state))
            .collect();
        if !unhealthy.is_empty() {
            bail!("{id} accepted, but payment did not come back: {}", unhealthy.join(", "));
        }
        let deadline = back + SETTLE;
        loop {
            let reply = self.get_order(&user.token, &id).await?;
            match reply.body["status"].as_str() {
                Some("CONFIRMED") if reply.status == 200 => break,
                Some("FAILED") => bail!("{id} FAILED after payment returned: {}", reply.describe()),
                _ if Instant::now() >= deadline => {
                    bail!("{id} is not CONFIRMED {}s after payment returned: {}", SETTLE.as_secs(), reply.describe())
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Ok(format!(
            "{id} was 202 PENDING while payment was down, CONFIRMED {:.1}s after it returned",
            back.elapsed().as_secs_f64()
        ))
    }

    /// The order placed while payment is stopped: 202 PENDING, and its `Location` answers.
    async fn place_during_outage(&self, token: &str, product: &str) -> anyhow::Result<String> {
        let reply = self.place(token, product, 1, None, 1).await?;
        if reply.status != 202 || reply.body["status"] != "PENDING" {
            bail!("with payment stopped: expected 202 PENDING, got {}", reply.describe());
        }
        let id = reply.id()?;
        let location = reply.location.clone().ok_or_else(|| anyhow!("202 for {id} has no Location header"))?;
        let gateway = self.gateway()?;
        let url = format!("{}{location}", gateway.base());
        let token = Token::bearer("smoke", token)?;
        let found = self
            .answer(gateway.get(&location, Some(&token), REQUEST_TIMEOUT).await)
            .with_context(|| format!("GET {url}"))?;
        if found.status != 200 || found.body["id"] != id.as_str() {
            bail!("{id} was accepted but GET {location} answered {}: the order is lost", found.describe());
        }
        Ok(id)
    }

    async fn invariants(&self) -> anyhow::Result<String> {
        let dbs = self.databases()?;
        let report = tokio::task::spawn_blocking(move || crate::invariants::check_settled(&dbs, SETTLE))
            .await
            .context("the invariant check stopped")?
            .context("cannot read the stack's databases")?;
        if !report.ok {
            let failed: Vec<String> =
                report.checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect();
            bail!("{}", failed.join("; "));
        }
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        Ok(format!("{} hold", names.join(", ")))
    }

    // ---- helpers ----

    fn gateway(&self) -> anyhow::Result<&Gateway> {
        self.gateway.as_ref().ok_or_else(|| anyhow!("no gateway instance came up, so no request can be sent"))
    }

    /// The first active fixture user with `card`.
    fn active_user_with_card(&self, card: &str) -> anyhow::Result<&UserFixture> {
        self.users
            .iter()
            .find(|u| u.card == card && u.active)
            .ok_or_else(|| anyhow!("the user fixtures have no active user with card {card}; add one"))
    }

    async fn products(&self) -> anyhow::Result<Vec<Product>> {
        let gateway = self.gateway()?;
        let url = format!("{}/products", gateway.base());
        let reply =
            self.answer(gateway.get("/products", None, REQUEST_TIMEOUT).await).with_context(|| format!("GET {url}"))?;
        if reply.status != 200 {
            bail!("GET /products: expected 200, got {}", reply.describe());
        }
        serde_json::from_value(reply.body).context("GET /products answered something that is not a product list")
    }

    async fn product(&self, id: &str) -> anyhow::Result<Product> {
        self.products()
            .await?
            .into_iter()
            .find(|p| p.product_id == id)
            .ok_or_else(|| anyhow!("`{id}` is no longer in GET /products"))
    }

    /// A product every order here can take from without running out.
    async fn stocked_product(&self) -> anyhow::Result<Product> {
        self.products().await?.into_iter().find(|p| p.available > 10).ok_or_else(|| {
            anyhow!("GET /products has no product with more than 10 available; add stock to the fixtures")
        })
    }

    async fn place(
        &self,
        token: &str,
        product: &str,
        quantity: i64,
        key: Option<&str>,
        wait_s: u64,
    ) -> anyhow::Result<Reply> {
        let gateway = self.gateway()?;
        let url = format!("{}/orders", gateway.base());
        let token = Token::bearer("smoke", token)?;
        let order = Place {
            token: &token,
            body: &OrderBody::new(&[(product.to_string(), quantity)]),
            wait: &Wait::new(Duration::from_secs(wait_s)),
            idempotency_key: key,
            timeout: REQUEST_TIMEOUT,
        };
        self.answer(gateway.place(&order).await).with_context(|| format!("POST {url}"))
    }

    async fn get_order(&self, token: &str, id: &str) -> anyhow::Result<Reply> {
        let gateway = self.gateway()?;
        let url = format!("{}/orders/{id}", gateway.base());
        let token = Token::bearer("smoke", token)?;
        self.answer(gateway.order(&token, id, REQUEST_TIMEOUT).await).with_context(|| format!("GET {url}"))
    }

    /// A request's answer, or its failure named by its innermost cause.
    fn answer(&self, sent: Result<gateway::Reply, reqwest::Error>) -> anyhow::Result<Reply> {
        sent.map(Reply::from).map_err(|e| anyhow!("{}", root_cause(&e)))
    }

    /// The databases of the stack's first service of each kind, in the throw-away state dir.
    fn databases(&self) -> anyhow::Result<Databases> {
        self.sup.dir.databases(&self.stack).map_err(|e| anyhow!(e))
    }

    /// The last lines of a failed instance's log, on stderr: the state dir is about to go.
    fn show_log_tail(&self, instance: &str) {
        let tail = self.sup.tail(instance, 10);
        if tail.is_empty() {
            return;
        }
        errln!("last lines of `{instance}`'s log:");
        for line in tail {
            errln!("  {}", super::logs::readable(&line, false));
        }
    }
}
