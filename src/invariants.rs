//! The business invariants of SPEC section 7, checked by reading every service's database.
//!
//! The checks open the files read-only beside the running services (WAL allows it), so they
//! see what was committed, not what any service claims.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;

use serde::Serialize;

use crate::plumbing::db::DbError;
use crate::services::inventory::{self, Stock};
use crate::services::order::events::{self, Status};
use crate::services::order::store::visit_order_totals;
use crate::services::payment::visit_settlements;
use crate::services::{gateway, notification};

/// Opens a database read-only for the checks. Each connection is used by one thread only, so
/// SQLite's per-call mutexes (a tenth of the time at a million orders) are left out.
fn open_for_check(path: &std::path::Path) -> Result<rusqlite::Connection, DbError> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)
        .map_err(|cause| DbError::Open { path: path.to_path_buf(), cause })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

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

/// An order id as the checks key it: the 128 bits of an `ord_<ULID>` id (no allocation, a cheap
/// hash: a million of them are joined in well under a second), the text of any other id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Ulid(u128),
    Text(Box<str>),
}

/// Crockford base 32, the alphabet of ULIDs, upper case only: decoding is then exactly the
/// inverse of `Key::id`, so two different id texts never share a key.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// [`CROCKFORD`] inverted: a digit's value by its byte, [`NOT_A_DIGIT`] for any other byte. Four
/// million ids are decoded per check at a million orders; a table lookup per digit instead of a
/// search of the alphabet.
const DECODE: [u8; 256] = {
    let mut table = [NOT_A_DIGIT; 256];
    let mut i = 0;
    while i < CROCKFORD.len() {
        table[CROCKFORD[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_A_DIGIT: u8 = u8::MAX;

impl Key {
    fn of(id: &str) -> Key {
        Self::ulid(id).map_or_else(|| Key::Text(id.into()), Key::Ulid)
    }

    fn ulid(id: &str) -> Option<u128> {
        let digits = id.strip_prefix("ord_")?.as_bytes();
        // 26 digits of 5 bits hold 130 bits: a first digit above 7 would not fit in 128.
        if digits.len() != 26 || digits[0] > b'7' {
            return None;
        }
        digits.iter().try_fold(0u128, |acc, d| {
            let v = DECODE[*d as usize];
            (v != NOT_A_DIGIT).then_some((acc << 5) | v as u128)
        })
    }

    /// The id as stored.
    fn id(&self) -> String {
        match self {
            Key::Text(t) => t.to_string(),
            Key::Ulid(v) => {
                let mut s = String::with_capacity(30);
                s.push_str("ord_");
                for i in (0..26).rev() {
                    s.push(CROCKFORD[((v >> (5 * i)) & 31) as usize] as char);
                }
                s
            }
        }
    }
}

/// FxHash's mixing step: ULIDs are random in their low bits, so SipHash's resistance to chosen
/// keys buys nothing here and costs a third of the join.
#[derive(Default)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_u128(&mut self, v: u128) {
        self.add(v as u64);
        self.add((v >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// One order with everything the other databases hold about it, joined by order id.
#[derive(Clone, Debug)]
struct Ledger {
    status: Status,
    total_cents: i64,
    /// Captured minus refunded over its payment rows.
    net_cents: i64,
    captures: usize,
    notifications: i64,
}

/// Why an order's lines do not give its stored total (check 6), found while reading them.
#[derive(Clone, Debug)]
enum LinesProblem {
    Unreadable,
    TooLarge { stored: i64 },
    Mismatch { stored: i64, lines: i64 },
}

/// An order line as check 6 reads it: the shape of [`events::Item`], its product id borrowed
/// from the row's text (a million orders, no allocation per line).
#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(borrow, rename = "product_id")]
    _product_id: std::borrow::Cow<'a, str>,
    quantity: i64,
    unit_price_cents: i64,
}

/// What the checks read: every row they judge, from every database, read once and joined by
/// order id into one map.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    orders: FastMap<Key, Ledger>,
    /// Orders whose lines do not give their total, in the order they were read.
    bad_lines: Vec<(Key, LinesProblem)>,
    stock: Vec<Stock>,
    /// Reservations still holding stock.
    held: i64,
    /// Net money and captures for ids the order database does not hold.
    stray_money: FastMap<Key, (i64, usize)>,
    /// Notifications for ids the order database does not hold.
    stray_notifications: Vec<(Key, i64)>,
    /// How many ids the gateway returned, and those missing from the order database; `None`
    /// without a gateway database.
    accepted: Option<(usize, Vec<Key>)>,
}

/// What the databases other than the order database hold, read on a second thread.
#[derive(Default)]
struct Others {
    stock: Vec<Stock>,
    held: i64,
    settlements: Vec<(Key, i64, i64)>,
    notifications: Vec<(Key, i64)>,
    accepted: Option<Vec<Key>>,
}

impl Others {
    fn read(dbs: &Databases) -> Result<Others, DbError> {
        let mut inventory = open_for_check(&dbs.inventory)?;
        let stock = inventory::read_stock(&mut inventory)?;
        let held = inventory::held_reservations(&inventory)?;
        let mut settlements = Vec::new();
        visit_settlements(&open_for_check(&dbs.payment)?, |id, captured, refunded| {
            settlements.push((Key::of(id), captured, refunded))
        })?;
        let mut notifications = Vec::new();
        notification::visit_counts_by_order(&open_for_check(&dbs.notification)?, |id, n| {
            notifications.push((Key::of(id), n))
        })?;
        let accepted = match &dbs.gateway {
            Some(path) => {
                let mut ids = Vec::new();
                gateway::visit_accepted_order_ids(&open_for_check(path)?, |id| ids.push(Key::of(id)))?;
                Some(ids)
            }
            None => None,
        };
        Ok(Others { stock, held, settlements, notifications, accepted })
    }
}

impl Snapshot {
    /// Reads the order database first: its read transaction starts before any other database
    /// is read, so a row another database holds for an order placed after that read is then
    /// reported, never silently skipped. The other databases are read on a second thread
    /// meanwhile (the order table is the long read).
    fn read(dbs: &Databases) -> Result<Snapshot, DbError> {
        let order_db = open_for_check(&dbs.order)?;
        order_db.execute_batch("BEGIN")?;
        let count: i64 = order_db.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))?;
        let mut snapshot = Snapshot::default();
        snapshot.orders.reserve(usize::try_from(count).unwrap_or(0));
        let others = std::thread::scope(|scope| -> Result<Others, DbError> {
            let others = scope.spawn(|| Others::read(dbs));
            visit_order_totals(&order_db, |id, status, total, items| snapshot.add_order(id, status, total, items))?;
            others.join().map_err(|_| DbError::Task("the thread reading the other databases panicked".into()))?
        })?;
        order_db.execute_batch("COMMIT")?;
        snapshot.join(others);
        Ok(snapshot)
    }

    /// One order row; its lines are judged here (check 6) so they are never kept.
    fn add_order(&mut self, id: &str, status: Status, total_cents: i64, items: &str) {
        let key = Key::of(id);
        let lines = serde_json::from_str::<Vec<Line>>(items).ok();
        let problem = match lines.map(|l| events::total_of_lines(l.iter().map(|l| (l.quantity, l.unit_price_cents)))) {
            None => Some(LinesProblem::Unreadable),
            Some(None) => Some(LinesProblem::TooLarge { stored: total_cents }),
            Some(Some(lines)) if lines != total_cents => Some(LinesProblem::Mismatch { stored: total_cents, lines }),
            Some(Some(_)) => None,
        };
        if let Some(problem) = problem {
            self.bad_lines.push((key.clone(), problem));
        }
        self.orders.insert(key, Ledger { status, total_cents, net_cents: 0, captures: 0, notifications: 0 });
    }

    /// Joins what the other databases hold onto the orders.
    fn join(&mut self, others: Others) {
        self.stock = others.stock;
        self.held = others.held;
        for (key, captured, refunded) in others.settlements {
            // Saturating: amounts are bounded by the order limit, and a corrupt row must show
            // up as a mismatch, not wrap into a match.
            let net = captured.saturating_sub(refunded);
            let capture = usize::from(captured > 0);
            match self.orders.get_mut(&key) {
                Some(o) => {
                    o.net_cents = o.net_cents.saturating_add(net);
                    o.captures += capture;
                }
                None => {
                    let e = self.stray_money.entry(key).or_default();
                    e.0 = e.0.saturating_add(net);
                    e.1 += capture;
                }
            }
        }
        for (key, n) in others.notifications {
            match self.orders.get_mut(&key) {
                Some(o) => o.notifications += n,
                None => self.stray_notifications.push((key, n)),
            }
        }
        self.accepted = others.accepted.map(|ids| {
            let missing = ids.iter().filter(|k| !self.orders.contains_key(*k)).cloned().collect();
            (ids.len(), missing)
        });
    }
}

/// Problems keyed by order id, listed in id order (ULID ids first): the same order each run,
/// while only the problems are sorted, never the million orders.
fn in_id_order(mut problems: Vec<(&Key, String)>) -> Vec<String> {
    problems.sort_unstable_by(|a, b| a.0.cmp(b.0));
    problems.into_iter().map(|(_, p)| p).collect()
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
    if let Some((count, missing)) = &s.accepted {
        checks.push(no_accepted_order_lost(*count, missing));
    }
    let pending = s.orders.values().filter(|o| o.status == Status::Pending).count() as i64;
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
    let mut problems = Vec::new();
    let (mut confirmed, mut failed) = (0, 0);
    for (key, o) in &s.orders {
        if o.captures > 1 {
            problems.push((key, format!("{}: {} captures", key.id(), o.captures)));
        }
        match o.status {
            Status::Confirmed => {
                confirmed += 1;
                if o.net_cents != o.total_cents {
                    problems.push((
                        key,
                        format!(
                            "{}: CONFIRMED for {} cents but {} cents net charged",
                            key.id(),
                            o.total_cents,
                            o.net_cents
                        ),
                    ));
                }
            }
            Status::Failed => {
                failed += 1;
                if o.net_cents != 0 {
                    problems.push((key, format!("{}: FAILED but {} cents net charged", key.id(), o.net_cents)));
                }
            }
            Status::Pending => {} // in flight: judged once it settles (check 3)
        }
    }
    let mut problems = in_id_order(problems);
    let mut strays: Vec<_> = s.stray_money.iter().filter(|(_, (money, _))| *money != 0).collect();
    strays.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, (money, _)) in strays {
        problems.push(format!("{}: {money} cents charged for an order that does not exist", key.id()));
    }
    check(
        "charged_iff_confirmed",
        problems,
        format!("{confirmed} confirmed orders charged their total, {failed} failed orders charged nothing"),
    )
}

/// Check 3: no order pending and no stock reserved: every saga ran to its end.
fn nothing_stuck(s: &Snapshot) -> Check {
    let pending = s.orders.values().filter(|o| o.status == Status::Pending).count();
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
    let mut problems = Vec::new();
    let (mut terminal, mut notified) = (0, 0);
    for (key, o) in &s.orders {
        notified += o.notifications;
        if o.status.is_terminal() {
            terminal += 1;
            if o.notifications != 1 {
                problems
                    .push((key, format!("{}: {} with {} notifications", key.id(), o.status.as_str(), o.notifications)));
            }
        }
    }
    let mut problems = in_id_order(problems);
    for (key, n) in &s.stray_notifications {
        notified += n;
        problems.push(format!("{}: {n} notifications for an order that does not exist", key.id()));
    }
    check(
        "one_notification_per_terminal_order",
        problems,
        format!("{notified} notifications for {terminal} terminal orders"),
    )
}

/// Check 6: every order's stored total is the sum of its lines at the unit prices it was
/// placed at, computed without wrapping and within the order limit. Check 2 compares charges
/// with the stored total, so a total that wrapped when stored would pass there; not here.
/// The lines are judged as they are read (`Snapshot::add_order`), so they are never kept.
fn totals_match_items(s: &Snapshot) -> Check {
    let problems = s
        .bad_lines
        .iter()
        .map(|(key, problem)| match problem {
            LinesProblem::Unreadable => format!("{}: its lines cannot be read", key.id()),
            LinesProblem::TooLarge { stored } => format!(
                "{}: its lines add up to more than {} cents (stored total {stored})",
                key.id(),
                events::MAX_TOTAL_CENTS
            ),
            LinesProblem::Mismatch { stored, lines } => {
                format!("{}: total {stored} cents but its lines add up to {lines}", key.id())
            }
        })
        .collect();
    check("totals_match_items", problems, format!("{} orders total the sum of their lines", s.orders.len()))
}

/// Check 5: every order id the gateway returned is in the order database.
fn no_accepted_order_lost(accepted: usize, missing: &[Key]) -> Check {
    let problems: Vec<String> = missing
        .iter()
        .map(|key| format!("{}: returned by the gateway, missing from the order database", key.id()))
        .collect();
    check("no_accepted_order_lost", problems, format!("all {accepted} orders the gateway returned exist"))
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

    fn stock(id: &str, initial: i64, available: i64, reserved: i64, sold: i64) -> Stock {
        Stock { product_id: id.into(), initial, available, reserved, sold }
    }

    fn lines(quantity: i64, unit_price_cents: i64) -> String {
        format!(r#"[{{"product_id":"p","quantity":{quantity},"unit_price_cents":{unit_price_cents}}}]"#)
    }

    /// What the databases of a settled shop hold: one confirmed order, one failed and
    /// refunded, each notified once.
    fn settled() -> (Vec<(&'static str, Status, i64, String)>, Others) {
        let orders = vec![("o1", Status::Confirmed, 500, lines(1, 500)), ("o2", Status::Failed, 300, lines(1, 300))];
        let others = Others {
            stock: vec![stock("p", 10, 9, 0, 1)],
            held: 0,
            settlements: vec![(Key::of("o1"), 500, 0), (Key::of("o2"), 300, 300)],
            notifications: vec![(Key::of("o1"), 1), (Key::of("o2"), 1)],
            accepted: Some(vec![Key::of("o1"), Key::of("o2")]),
        };
        (orders, others)
    }

    fn snapshot((orders, others): (Vec<(&'static str, Status, i64, String)>, Others)) -> Snapshot {
        let mut s = Snapshot::default();
        for (id, status, total, items) in &orders {
            s.add_order(id, *status, *total, items);
        }
        s.join(others);
        s
    }

    #[test]
    fn a_settled_shop_passes_all_six_checks() {
        let report = judge(&snapshot(settled()));
        assert!(report.ok, "{report:?}");
        assert_eq!(report.checks.len(), 6);
        assert_eq!(report.checks[4].name, "totals_match_items");
        assert_eq!(report.pending, 0);
        assert_eq!(report.checks[1].detail, "1 confirmed orders charged their total, 1 failed orders charged nothing");
    }

    #[test]
    fn order_ids_that_are_ulids_key_by_their_bits_and_come_back_unchanged() {
        for id in ["ord_01M8EHZ8C4NWWXPXXJY9RM8MWM", "ord_7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "ord_00000000000000000000000000"]
        {
            assert!(matches!(Key::of(id), Key::Ulid(_)), "{id}");
            assert_eq!(Key::of(id).id(), id);
        }
        // Not the exact upper-case form: kept as text, so no two texts share a key.
        for id in
            ["ord_01m8ehz8c4nwwxpxxjy9rm8mwm", "ord_8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "ord_01M8EHZ8C4NWWXPXXJY9RM8MW", "o1"]
        {
            assert_eq!(Key::of(id), Key::Text(id.into()));
            assert_eq!(Key::of(id).id(), id);
        }
    }

    #[test]
    fn stock_that_does_not_add_up_is_reported_with_its_columns() {
        let c = stock_conservation(&[stock("p", 10, 5, 1, 1)]);
        assert!(!c.ok);
        assert_eq!(c.detail, "p: initial 10 != available 5 + reserved 1 + sold 1");
    }

    #[test]
    fn a_double_capture_and_money_for_a_failed_order_are_both_caught() {
        let (orders, mut others) = settled();
        others.settlements =
            vec![(Key::of("o1"), 500, 0), (Key::of("o1"), 500, 0), (Key::of("o2"), 300, 0), (Key::of("ghost"), 10, 0)];
        let c = charged_iff_confirmed(&snapshot((orders, others)));
        assert!(!c.ok);
        for wanted in ["o1: 2 captures", "o2: FAILED but 300 cents net charged", "ghost: 10 cents charged"] {
            assert!(c.detail.contains(wanted), "{wanted} not in {}", c.detail);
        }
    }

    #[test]
    fn a_pending_order_and_held_stock_are_stuck() {
        let (mut orders, mut others) = settled();
        orders.push(("o3", Status::Pending, 100, lines(1, 100)));
        others.stock = vec![stock("p", 10, 8, 1, 1)];
        others.held = 1;
        let s = snapshot((orders, others));
        let c = nothing_stuck(&s);
        assert_eq!(c.detail, "1 orders PENDING; 1 units reserved by 1 reservations");
        assert_eq!(judge(&s).pending, 1);
    }

    #[test]
    fn a_pending_order_needs_no_notification_but_a_terminal_one_needs_exactly_one() {
        let (mut orders, others) = settled();
        orders.push(("o3", Status::Pending, 100, lines(1, 100)));
        assert!(one_notification_per_terminal_order(&snapshot((orders.clone(), others))).ok);
        let (_, mut others) = settled();
        others.notifications = vec![(Key::of("o1"), 2), (Key::of("o2"), 1), (Key::of("ghost"), 1)];
        let c = one_notification_per_terminal_order(&snapshot((orders, others)));
        assert_eq!(
            c.detail,
            "o1: CONFIRMED with 2 notifications; ghost: 1 notifications for an order that does not exist"
        );
    }

    #[test]
    fn an_order_the_gateway_returned_must_exist() {
        let (orders, mut others) = settled();
        others.accepted = Some(vec![Key::of("o1"), Key::of("lost")]);
        let s = snapshot((orders, others));
        let c = judge(&s).checks.pop().expect("the sixth check is there with a gateway database");
        assert_eq!(c.name, "no_accepted_order_lost");
        assert_eq!(c.detail, "lost: returned by the gateway, missing from the order database");
    }

    #[test]
    fn without_a_gateway_database_the_fifth_check_is_skipped() {
        let (orders, mut others) = settled();
        others.accepted = None;
        assert_eq!(judge(&snapshot((orders, others))).checks.len(), 5);
    }

    #[test]
    fn a_total_that_wrapped_when_stored_is_caught_even_when_the_charge_matches_it() {
        let (mut orders, mut others) = settled();
        let wrapped = 384;
        orders.push(("o3", Status::Confirmed, wrapped, lines(1000, 18_446_744_073_709_552)));
        orders.push(("o4", Status::Failed, 7, lines(2, 3)));
        orders.push(("o5", Status::Failed, 0, "not json".into()));
        others.settlements.push((Key::of("o3"), wrapped, 0));
        others.notifications.extend([(Key::of("o3"), 1), (Key::of("o4"), 1), (Key::of("o5"), 1)]);
        let s = snapshot((orders, others));
        assert!(charged_iff_confirmed(&s).ok);
        let c = totals_match_items(&s);
        assert!(!c.ok);
        assert_eq!(
            c.detail,
            "o3: its lines add up to more than 1000000000000 cents (stored total 384); o4: total 7 cents but its lines add up to 6; o5: its lines cannot be read"
        );
        assert!(!judge(&s).ok);
    }
}
