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

/// Each check fails on its own kind of damage, and only on it.
#[cfg(test)]
mod damage_tests {
    use super::*;
    use crate::services::order::events::Item;

    fn line(cents: i64) -> Vec<Item> {
        vec![Item { product_id: "p".into(), quantity: 1, unit_price_cents: cents }]
    }

    fn settled() -> Snapshot {
        Snapshot {
            orders: vec![
                OrderTotal {
                    order_id: "o1".into(),
                    status: Status::Confirmed,
                    total_cents: 500,
                    items: Some(line(500)),
                },
                OrderTotal { order_id: "o2".into(), status: Status::Failed, total_cents: 300, items: Some(line(300)) },
            ],
            stock: vec![Stock { product_id: "p".into(), initial: 10, available: 9, reserved: 0, sold: 1 }],
            held: 0,
            settlements: vec![
                Settlement { order_id: "o1".into(), captured_cents: 500, refunded_cents: 0 },
                Settlement { order_id: "o2".into(), captured_cents: 300, refunded_cents: 300 },
            ],
            notifications: [("o1".to_string(), 1), ("o2".to_string(), 1)].into(),
            accepted: Some(vec!["o1".into(), "o2".into()]),
        }
    }

    /// The names of the checks that fail on `s`.
    fn failing(s: &Snapshot) -> Vec<String> {
        let report = judge(s);
        assert_eq!(report.ok, report.checks.iter().all(|c| c.ok));
        report.checks.into_iter().filter(|c| !c.ok).map(|c| c.name).collect()
    }

    #[test]
    fn each_damage_fails_exactly_its_own_check() {
        assert!(failing(&settled()).is_empty());
        type Damage = (&'static str, fn(&mut Snapshot));
        let cases: [Damage; 7] = [
            ("stock_conservation", |s| s.stock[0].available += 1),
            ("stock_conservation", |s| {
                // Balanced in sum but negative: still wrong.
                s.stock[0].available = 12;
                s.stock[0].sold = -2;
            }),
            ("charged_iff_confirmed", |s| s.settlements[0].captured_cents += 1),
            ("charged_iff_confirmed", |s| s.settlements[0].refunded_cents = 500),
            ("one_notification_per_terminal_order", |s| {
                s.notifications.insert("o2".into(), 2);
            }),
            ("one_notification_per_terminal_order", |s| {
                s.notifications.remove("o1");
            }),
            ("no_accepted_order_lost", |s| s.accepted.as_mut().unwrap().push("o9".into())),
        ];
        for (check, damage) in cases {
            let mut s = settled();
            damage(&mut s);
            assert_eq!(failing(&s), [check]);
        }
        // An order left PENDING, with its stock still held: stuck, and nothing else is judged
        // for it while it is in flight.
        let mut s = settled();
        s.orders[0].status = Status::Pending;
        s.stock[0] = Stock { product_id: "p".into(), initial: 10, available: 9, reserved: 1, sold: 0 };
        s.held = 1;
        assert_eq!(failing(&s), ["nothing_stuck"]);
    }

    #[test]
    fn money_or_notifications_for_an_order_that_does_not_exist_are_reported() {
        let mut s = settled();
        s.notifications.insert("ghost".into(), 1);
        assert_eq!(
            one_notification_per_terminal_order(&s).detail,
            "ghost: 1 notifications for an order that does not exist"
        );
        // A refunded charge for an unknown order nets to nothing: no money moved.
        s.settlements.push(Settlement { order_id: "ghost".into(), captured_cents: 10, refunded_cents: 10 });
        assert!(charged_iff_confirmed(&s).ok);
    }

    #[test]
    fn a_long_list_of_problems_shows_five_and_counts_the_rest() {
        let problems: Vec<String> = (1..=8).map(|i| format!("p{i}")).collect();
        let c = check("x", problems, "fine".into());
        assert!(!c.ok);
        assert_eq!(c.detail, "p1; p2; p3; p4; p5 (and 3 more)");
        assert_eq!(check("x", vec![], "fine".into()), Check { name: "x".into(), ok: true, detail: "fine".into() });
    }

    #[test]
    fn the_first_missing_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(format!("{n}.db"));
        let dbs = Databases {
            order: path("order"),
            payment: path("payment"),
            inventory: path("inventory"),
            notification: path("notification"),
            gateway: None,
        };
        assert_eq!(dbs.missing(), Some(path("order").as_path()));
        for n in ["order", "payment"] {
            std::fs::write(path(n), b"").unwrap();
        }
        assert_eq!(dbs.missing(), Some(path("inventory").as_path()));
        for n in ["inventory", "notification"] {
            std::fs::write(path(n), b"").unwrap();
        }
        assert_eq!(dbs.missing(), None);
    }
}
