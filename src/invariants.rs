//! The business invariants of SPEC section 7, checked by reading every service's database.
//!
//! The checks open the files read-only beside the running services (WAL allows it), so they
//! see what was committed, not what any service claims.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::plumbing::db::{open_read_only, DbError};
use crate::services::inventory::{self, Stock};
use crate::services::order::events::{self, Status};
use crate::services::order::store::{order_totals, OrderTotal};
use crate::services::payment::{self, Settlement};
use crate::services::{gateway, notification};

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

/// What the checks read: every row they judge, from every database, read once.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    orders: Vec<OrderTotal>,
    stock: Vec<Stock>,
    /// Reservations still holding stock.
    held: i64,
    settlements: Vec<Settlement>,
    /// Notifications per order id.
    notifications: HashMap<String, i64>,
    /// The order ids the gateway returned; `None` without a gateway database.
    accepted: Option<Vec<String>>,
}

impl Snapshot {
    /// Reads the order database first: a row another database holds for an order placed after
    /// that read is then reported, never silently skipped.
    fn read(dbs: &Databases) -> Result<Snapshot, DbError> {
        let orders = order_totals(&open_read_only(&dbs.order)?)?;
        let mut inventory = open_read_only(&dbs.inventory)?;
        let stock = inventory::read_stock(&mut inventory)?;
        let held = inventory::held_reservations(&inventory)?;
        let settlements = payment::settlements(&open_read_only(&dbs.payment)?)?;
        let notifications = notification::counts_by_order(&open_read_only(&dbs.notification)?)?;
        let accepted = match &dbs.gateway {
            Some(path) => Some(gateway::accepted_order_ids(&open_read_only(path)?)?),
            None => None,
        };
        Ok(Snapshot { orders, stock, held, settlements, notifications, accepted })
    }

    /// Each order's status and total, by id.
    fn by_id(&self) -> HashMap<&str, (Status, i64)> {
        self.orders.iter().map(|o| (o.order_id.as_str(), (o.status, o.total_cents))).collect()
    }
}

/// Runs every check once.
pub fn check_all(dbs: &Databases) -> Result<Report, DbError> {
    Ok(judge(&Snapshot::read(dbs)?))
}

fn judge(s: &Snapshot) -> Report {
    let mut checks = vec![
        stock_conservation(&s.stock),
        charged_iff_confirmed(s),
        nothing_stuck(s),
        one_notification_per_terminal_order(s),
        totals_match_items(s),
    ];
    if let Some(accepted) = &s.accepted {
        checks.push(no_accepted_order_lost(s, accepted));
    }
    let pending = s.orders.iter().filter(|o| o.status == Status::Pending).count() as i64;
    Report { ok: checks.iter().all(|c| c.ok), checks, pending }
}

/// Check 1: every product's initial stock is its available, reserved and sold units, none negative.
fn stock_conservation(stock: &[Stock]) -> Check {
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
    check(
        "stock_conservation",
        problems,
        format!("{} products balanced; {sold} sold, {reserved} reserved", stock.len()),
    )
}

/// Check 2: a confirmed order was charged its total, a failed one nothing, none captured
/// twice, and no money moved for an order that does not exist.
fn charged_iff_confirmed(s: &Snapshot) -> Check {
    let status_of = s.by_id();
    let mut net: HashMap<&str, (i64, usize)> = HashMap::new();
    for p in &s.settlements {
        let e = net.entry(p.order_id.as_str()).or_default();
        // Saturating: amounts are bounded by the order limit, and a corrupt row must show up as
        // a mismatch below, not wrap into a match.
        e.0 = e.0.saturating_add(p.captured_cents.saturating_sub(p.refunded_cents));
        e.1 += usize::from(p.captured_cents > 0);
    }
    let mut problems = Vec::new();
    let (mut confirmed, mut failed) = (0, 0);
    for o in &s.orders {
        let id = &o.order_id;
        let (money, captures) = net.get(id.as_str()).copied().unwrap_or((0, 0));
        if captures > 1 {
            problems.push(format!("{id}: {captures} captures"));
        }
        match o.status {
            Status::Confirmed => {
                confirmed += 1;
                if money != o.total_cents {
                    problems.push(format!("{id}: CONFIRMED for {} cents but {money} cents net charged", o.total_cents));
                }
            }
            Status::Failed => {
                failed += 1;
                if money != 0 {
                    problems.push(format!("{id}: FAILED but {money} cents net charged"));
                }
            }
            Status::Pending => {} // in flight: judged once it settles (check 3)
        }
    }
    for (id, (money, _)) in &net {
        if !status_of.contains_key(id) && *money != 0 {
            problems.push(format!("{id}: {money} cents charged for an order that does not exist"));
        }
    }
    check(
        "charged_iff_confirmed",
        problems,
        format!("{confirmed} confirmed orders charged their total, {failed} failed orders charged nothing"),
    )
}

/// Check 3: no order pending and no stock reserved: every saga ran to its end.
fn nothing_stuck(s: &Snapshot) -> Check {
    let pending = s.orders.iter().filter(|o| o.status == Status::Pending).count();
    let reserved: i64 = s.stock.iter().map(|p| p.reserved).sum();
    let mut problems = Vec::new();
    if pending > 0 {
        problems.push(format!("{pending} orders PENDING"));
    }
    if reserved > 0 || s.held > 0 {
        problems.push(format!("{reserved} units reserved by {} reservations", s.held));
    }
    check("nothing_stuck", problems, "no order pending, no stock reserved".into())
}

/// Check 4: exactly one notification per confirmed or failed order, none for unknown orders.
fn one_notification_per_terminal_order(s: &Snapshot) -> Check {
    let status_of = s.by_id();
    let mut problems = Vec::new();
    for o in s.orders.iter().filter(|o| o.status.is_terminal()) {
        let n = s.notifications.get(&o.order_id).copied().unwrap_or(0);
        if n != 1 {
            problems.push(format!("{}: {} with {n} notifications", o.order_id, o.status.as_str()));
        }
    }
    for (id, n) in &s.notifications {
        if !status_of.contains_key(id.as_str()) {
            problems.push(format!("{id}: {n} notifications for an order that does not exist"));
        }
    }
    let notified: i64 = s.notifications.values().sum();
    let terminal = s.orders.iter().filter(|o| o.status.is_terminal()).count();
    check(
        "one_notification_per_terminal_order",
        problems,
        format!("{notified} notifications for {terminal} terminal orders"),
    )
}

/// Check 6: every order's stored total is the sum of its lines at the unit prices it was
/// placed at, computed without wrapping and within the order limit. Check 2 compares charges
/// with the stored total, so a total that wrapped when stored would pass there; not here.
fn totals_match_items(s: &Snapshot) -> Check {
    let mut problems = Vec::new();
    for o in &s.orders {
        let id = &o.order_id;
        match o.items.as_deref().map(events::total_cents) {
            None => problems.push(format!("{id}: its lines cannot be read")),
            Some(None) => problems.push(format!(
                "{id}: its lines add up to more than {} cents (stored total {})",
                events::MAX_TOTAL_CENTS,
                o.total_cents
            )),
            Some(Some(total)) if total != o.total_cents => {
                problems.push(format!("{id}: total {} cents but its lines add up to {total}", o.total_cents))
            }
            Some(Some(_)) => {}
        }
    }
    check("totals_match_items", problems, format!("{} orders total the sum of their lines", s.orders.len()))
}

/// Check 5: every order id the gateway returned is in the order database.
fn no_accepted_order_lost(s: &Snapshot, accepted: &[String]) -> Check {
    let status_of = s.by_id();
    let problems: Vec<String> = accepted
        .iter()
        .filter(|id| !status_of.contains_key(id.as_str()))
        .map(|id| format!("{id}: returned by the gateway, missing from the order database"))
        .collect();
    check("no_accepted_order_lost", problems, format!("all {} orders the gateway returned exist", accepted.len()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, status: Status, total: i64) -> OrderTotal {
        let items = vec![events::Item { product_id: "p".into(), quantity: 1, unit_price_cents: total }];
        OrderTotal { order_id: id.into(), status, total_cents: total, items: Some(items) }
    }

    fn paid(id: &str, captured: i64, refunded: i64) -> Settlement {
        Settlement { order_id: id.into(), captured_cents: captured, refunded_cents: refunded }
    }

    fn stock(id: &str, initial: i64, available: i64, reserved: i64, sold: i64) -> Stock {
        Stock { product_id: id.into(), initial, available, reserved, sold }
    }

    /// A settled shop: one confirmed order, one failed and refunded, each notified once.
    fn settled() -> Snapshot {
        Snapshot {
            orders: vec![order("o1", Status::Confirmed, 500), order("o2", Status::Failed, 300)],
            stock: vec![stock("p", 10, 9, 0, 1)],
            held: 0,
            settlements: vec![paid("o1", 500, 0), paid("o2", 300, 300)],
            notifications: [("o1".to_string(), 1), ("o2".to_string(), 1)].into(),
            accepted: Some(vec!["o1".into(), "o2".into()]),
        }
    }

    #[test]
    fn a_settled_shop_passes_all_six_checks() {
        let report = judge(&settled());
        assert!(report.ok, "{report:?}");
        assert_eq!(report.checks.len(), 6);
        assert_eq!(report.checks[4].name, "totals_match_items");
        assert_eq!(report.pending, 0);
        assert_eq!(report.checks[1].detail, "1 confirmed orders charged their total, 1 failed orders charged nothing");
    }

    #[test]
    fn stock_that_does_not_add_up_is_reported_with_its_columns() {
        let c = stock_conservation(&[stock("p", 10, 5, 1, 1)]);
        assert!(!c.ok);
        assert_eq!(c.detail, "p: initial 10 != available 5 + reserved 1 + sold 1");
    }

    #[test]
    fn a_double_capture_and_money_for_a_failed_order_are_both_caught() {
        let mut s = settled();
        s.settlements = vec![paid("o1", 500, 0), paid("o1", 500, 0), paid("o2", 300, 0), paid("ghost", 10, 0)];
        let c = charged_iff_confirmed(&s);
        assert!(!c.ok);
        for wanted in ["o1: 2 captures", "o2: FAILED but 300 cents net charged", "ghost: 10 cents charged"] {
            assert!(c.detail.contains(wanted), "{wanted} not in {}", c.detail);
        }
    }

    #[test]
    fn a_pending_order_and_held_stock_are_stuck() {
        let mut s = settled();
        s.orders.push(order("o3", Status::Pending, 100));
        s.stock = vec![stock("p", 10, 8, 1, 1)];
        s.held = 1;
        let c = nothing_stuck(&s);
        assert_eq!(c.detail, "1 orders PENDING; 1 units reserved by 1 reservations");
        assert_eq!(judge(&s).pending, 1);
    }

    #[test]
    fn a_pending_order_needs_no_notification_but_a_terminal_one_needs_exactly_one() {
        let mut s = settled();
        s.orders.push(order("o3", Status::Pending, 100));
        assert!(one_notification_per_terminal_order(&s).ok);
        s.notifications.insert("o1".into(), 2);
        let c = one_notification_per_terminal_order(&s);
        assert_eq!(c.detail, "o1: CONFIRMED with 2 notifications");
    }

    #[test]
    fn an_order_the_gateway_returned_must_exist() {
        let s = settled();
        assert!(no_accepted_order_lost(&s, &["o1".into()]).ok);
        let c = no_accepted_order_lost(&s, &["o1".into(), "lost".into()]);
        assert_eq!(c.detail, "lost: returned by the gateway, missing from the order database");
    }

    #[test]
    fn without_a_gateway_database_the_fifth_check_is_skipped() {
        let mut s = settled();
        s.accepted = None;
        assert_eq!(judge(&s).checks.len(), 5);
    }

    #[test]
    fn a_total_that_wrapped_when_stored_is_caught_even_when_the_charge_matches_it() {
        let mut s = settled();
        let line = events::Item { product_id: "p".into(), quantity: 1000, unit_price_cents: 18_446_744_073_709_552 };
        let wrapped = 384;
        s.orders.push(OrderTotal {
            order_id: "o3".into(),
            status: Status::Confirmed,
            total_cents: wrapped,
            items: Some(vec![line]),
        });
        s.orders.push(OrderTotal {
            order_id: "o4".into(),
            status: Status::Failed,
            total_cents: 7,
            items: Some(vec![events::Item { product_id: "p".into(), quantity: 2, unit_price_cents: 3 }]),
        });
        s.settlements.push(paid("o3", wrapped, 0));
        s.notifications.extend([("o3".to_string(), 1), ("o4".to_string(), 1)]);
        assert!(charged_iff_confirmed(&s).ok);
        let c = totals_match_items(&s);
        assert!(!c.ok);
        assert_eq!(
            c.detail,
            "o3: its lines add up to more than 1000000000000 cents (stored total 384); o4: total 7 cents but its lines add up to 6"
        );
        assert!(!judge(&s).ok);
    }
}
