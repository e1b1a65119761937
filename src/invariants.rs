//! The business invariants of SPEC section 7, checked by reading every service's database.
//!
//! The checks open the files read-only beside the running services (WAL allows it), so they
//! see what was committed, not what any service claims.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::plumbing::db::{open_read_only, DbError};

/// Where each service's database is.
#[derive(Clone, Debug)]
pub struct Databases {
    pub order: PathBuf,
    pub payment: PathBuf,
    pub inventory: PathBuf,
    pub notification: PathBuf,
    /// The gateway's record of order ids it returned; without it invariant 5 is skipped.
    pub gateway: Option<PathBuf>,
}

impl Databases {
    /// The databases of the first service of each built-in kind in `stack`, under `dir`; the
    /// error names a kind the stack lacks.
    pub fn of_stack(
        stack: &crate::orchestrator::stackfile::Stack,
        dir: &crate::orchestrator::state_dir::StateDir,
    ) -> Result<Databases, String> {
        use crate::services::Kind;
        let db = |kind: Kind| {
            let name = stack
                .services_of(kind)
                .into_iter()
                .next()
                .ok_or_else(|| format!("the stack has no `{}` service", kind.name()))?;
            Ok::<_, String>(dir.db(&name))
        };
        Ok(Databases {
            order: db(Kind::Order)?,
            payment: db(Kind::Payment)?,
            inventory: db(Kind::Inventory)?,
            notification: db(Kind::Notification)?,
            gateway: db(Kind::Gateway).ok(),
        })
    }

    /// The first required database file that does not exist: the stack has not run yet.
    pub fn missing(&self) -> Option<&std::path::Path> {
        [&self.order, &self.payment, &self.inventory, &self.notification]
            .into_iter()
            .map(PathBuf::as_path)
            .find(|p| !p.exists())
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
    /// Orders still PENDING when the report was made.
    pub pending: i64,
}

fn check(name: &str, problems: Vec<String>, ok_detail: String) -> Check {
    let ok = problems.is_empty();
    let detail = if ok {
        ok_detail
    } else {
        let shown: Vec<_> = problems.iter().take(5).cloned().collect();
        let more = if problems.len() > 5 { format!(" (and {} more)", problems.len() - 5) } else { String::new() };
        format!("{}{more}", shown.join("; "))
    };
    Check { name: name.into(), ok, detail }
}

/// Runs all five checks once.
pub fn check_all(dbs: &Databases) -> Result<Report, DbError> {
    let order = open_read_only(&dbs.order)?;
    let orders: Vec<(String, String, i64)> = order
        .prepare("SELECT order_id, status, total_cents FROM orders")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let status_of: HashMap<&str, (&str, i64)> =
        orders.iter().map(|(id, s, t)| (id.as_str(), (s.as_str(), *t))).collect();
    let pending = orders.iter().filter(|o| o.1 == "PENDING").count() as i64;
    let mut checks = Vec::new();

    // 1. Stock conservation.
    let inventory = open_read_only(&dbs.inventory)?;
    let stock = crate::services::inventory::read_stock(&mut { inventory })?;
    let problems: Vec<String> = stock
        .iter()
        .filter(|s| s.initial != s.available + s.reserved + s.sold || s.available < 0 || s.reserved < 0 || s.sold < 0)
        .map(|s| {
            format!(
                "{}: initial {} != available {} + reserved {} + sold {}",
                s.product_id, s.initial, s.available, s.reserved, s.sold
            )
        })
        .collect();
    let reserved: i64 = stock.iter().map(|s| s.reserved).sum();
    let sold: i64 = stock.iter().map(|s| s.sold).sum();
    checks.push(check(
        "stock_conservation",
        problems,
        format!("{} products balanced; {sold} sold, {reserved} reserved", stock.len()),
    ));

    // 2. Charged iff confirmed, at most one capture per order.
    let payment = open_read_only(&dbs.payment)?;
    let payments: Vec<(String, i64, i64)> = payment
        .prepare("SELECT order_id, captured_cents, refunded_cents FROM payments")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut net: HashMap<&str, (i64, usize)> = HashMap::new();
    for (id, captured, refunded) in &payments {
        let e = net.entry(id.as_str()).or_default();
        e.0 += captured - refunded;
        e.1 += usize::from(*captured > 0);
    }
    let mut problems = Vec::new();
    let (mut confirmed, mut failed) = (0, 0);
    for (id, status, total) in &orders {
        let (money, captures) = net.get(id.as_str()).copied().unwrap_or((0, 0));
        if captures > 1 {
            problems.push(format!("{id}: {captures} captures"));
        }
        match status.as_str() {
            "CONFIRMED" => {
                confirmed += 1;
                if money != *total {
                    problems.push(format!("{id}: CONFIRMED for {total} cents but {money} cents net charged"));
                }
            }
            "FAILED" => {
                failed += 1;
                if money != 0 {
                    problems.push(format!("{id}: FAILED but {money} cents net charged"));
                }
            }
            _ => {} // in flight: judged once it settles (check 3)
        }
    }
    for (id, (money, _)) in &net {
        if !status_of.contains_key(id) && *money != 0 {
            problems.push(format!("{id}: {money} cents charged for an order that does not exist"));
        }
    }
    checks.push(check(
        "charged_iff_confirmed",
        problems,
        format!("{confirmed} confirmed orders charged their total, {failed} failed orders charged nothing"),
    ));

    // 3. Nothing stuck.
    let held: i64 = open_read_only(&dbs.inventory)?.query_row(
        "SELECT count(*) FROM reservations WHERE status = 'held'",
        [],
        |r| r.get(0),
    )?;
    let mut problems = Vec::new();
    if pending > 0 {
        problems.push(format!("{pending} orders PENDING"));
    }
    if reserved > 0 || held > 0 {
        problems.push(format!("{reserved} units reserved by {held} reservations"));
    }
    checks.push(check("nothing_stuck", problems, "no order pending, no stock reserved".into()));

    // 4. Exactly one notification per terminal order.
    let notification = open_read_only(&dbs.notification)?;
    let counts: HashMap<String, i64> = notification
        .prepare("SELECT order_id, count(*) FROM notifications GROUP BY order_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut problems = Vec::new();
    for (id, status, _) in &orders {
        let n = counts.get(id).copied().unwrap_or(0);
        if status != "PENDING" && n != 1 {
            problems.push(format!("{id}: {status} with {n} notifications"));
        }
    }
    for (id, n) in &counts {
        if !status_of.contains_key(id.as_str()) {
            problems.push(format!("{id}: {n} notifications for an order that does not exist"));
        }
    }
    let notified: i64 = counts.values().sum();
    checks.push(check(
        "one_notification_per_terminal_order",
        problems,
        format!("{notified} notifications for {} terminal orders", confirmed + failed),
    ));

    // 5. No accepted order lost.
    if let Some(path) = &dbs.gateway {
        let gateway = open_read_only(path)?;
        let accepted: Vec<String> = gateway
            .prepare("SELECT order_id FROM accepted_orders")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let problems: Vec<String> = accepted
            .iter()
            .filter(|id| !status_of.contains_key(id.as_str()))
            .map(|id| format!("{id}: returned by the gateway, missing from the order database"))
            .collect();
        checks.push(check(
            "no_accepted_order_lost",
            problems,
            format!("all {} orders the gateway returned exist", accepted.len()),
        ));
    }

    Ok(Report { ok: checks.iter().all(|c| c.ok), checks, pending })
}

/// Checks repeatedly until all pass or `settle` runs out: in-flight sagas get time to finish.
pub fn check_settled(dbs: &Databases, settle: std::time::Duration) -> Result<Report, DbError> {
    let deadline = std::time::Instant::now() + settle;
    loop {
        let report = check_all(dbs)?;
        if report.ok || std::time::Instant::now() >= deadline {
            return Ok(report);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
