//! The business invariants of SPEC section 7, checked by reading every service's database.
//!
//! The checks open the files read-only beside the running services (WAL allows it), so they
//! see what was committed, not what any service claims. Every table is read in order id order
//! (each has a key or index sorted by it) and the rows are merged in one pass, a sorted
//! merge-join: every row is judged, and memory does not grow with the number of orders.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

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
    // Pages read through a memory map instead of a read() each: at a million orders the copies
    // into SQLite's cache were a fifth of the time. SQLite caps the size at its own limit (2 GB);
    // pages still in the write-ahead log are read as before. The mapped pages are the system's
    // file cache, shared and dropped at exit, not memory this process allocates.
    conn.pragma_update(None, "mmap_size", 1i64 << 40)?;
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

/// An order id as the checks key it, compared in the order SQLite sorts the ids in (BINARY
/// collation: the bytes of the text), which the merge walks. An id of up to 32 bytes (every id
/// the services make: `ord_` and 26 ULID digits is 30) is held inline, its bytes zero-padded and
/// read as two big-endian numbers: no allocation and no decoding per row, a comparison of two
/// numbers instead of a byte loop (the merge compares a few million of them). Zero padding
/// keeps the text order: where two padded ids first differ, the one that ended there is a
/// prefix of the other and sorts first; padded ids that are equal differ only in length, and
/// the shorter one sorts first, as its text does.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Key {
    Short {
        hi: u128,
        lo: u128,
        len: u8,
    },
    /// Longer than 32 bytes: never made by the services, kept whole so it is still judged.
    Long(Box<[u8]>),
}

/// The longest id held inline by [`Key::Short`].
const SHORT: usize = 32;

impl Key {
    fn of(id: impl AsRef<[u8]>) -> Key {
        let id = id.as_ref();
        if id.len() > SHORT {
            return Key::Long(id.into());
        }
        let mut padded = [0u8; SHORT];
        padded[..id.len()].copy_from_slice(id);
        let (hi, lo) = padded.split_at(SHORT / 2);
        // Both halves are 16 bytes by construction (`split_at` of a 32-byte array at 16).
        let half = |b: &[u8]| u128::from_be_bytes(b.try_into().expect("16 bytes"));
        Key::Short { hi: half(hi), lo: half(lo), len: id.len() as u8 }
    }

    /// The id's bytes, written into `buf` when the id is inline.
    fn bytes<'a>(&'a self, buf: &'a mut [u8; SHORT]) -> &'a [u8] {
        match self {
            Key::Short { hi, lo, len } => {
                buf[..SHORT / 2].copy_from_slice(&hi.to_be_bytes());
                buf[SHORT / 2..].copy_from_slice(&lo.to_be_bytes());
                &buf[..*len as usize]
            }
            Key::Long(b) => b,
        }
    }

    /// The id as stored (a byte that is not UTF-8 shown as U+FFFD: only ever in a message).
    fn id(&self) -> String {
        let mut buf = [0u8; SHORT];
        String::from_utf8_lossy(self.bytes(&mut buf)).into_owned()
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Short { hi, lo, len }, Key::Short { hi: h, lo: l, len: n }) => (hi, lo, len).cmp(&(h, l, n)),
            _ => {
                let (mut a, mut b) = ([0u8; SHORT], [0u8; SHORT]);
                self.bytes(&mut a).cmp(other.bytes(&mut b))
            }
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Why an order's lines do not give its stored total (check 6), found while reading them.
#[derive(Clone, Debug)]
enum LinesProblem {
    Unreadable,
    TooLarge { stored: i64 },
    Mismatch { stored: i64, lines: i64 },
}

/// What check 6 finds in one order's lines; `pairs` is scratch space, reused from order to order.
fn lines_problem(total_cents: i64, items: &[u8], pairs: &mut Vec<(i64, i64)>) -> Option<LinesProblem> {
    pairs.clear();
    let readable = written_lines(items, pairs).is_some() || {
        // Not in the exact form the order service writes: read as the service reads its rows.
        pairs.clear();
        events::items_from_stored(items)
            .map(|lines| pairs.extend(lines.iter().map(|l| (l.quantity, l.unit_price_cents))))
            .is_ok()
    };
    if !readable {
        return Some(LinesProblem::Unreadable);
    }
    match events::total_of_lines(pairs.iter().copied()) {
        None => Some(LinesProblem::TooLarge { stored: total_cents }),
        Some(lines) if lines != total_cents => Some(LinesProblem::Mismatch { stored: total_cents, lines }),
        Some(_) => None,
    }
}

/// The quantity and unit price of each line, when `items` is exactly in a form the order
/// service writes (`serde_json` of [`events::stored_items`]'s rows, or of [`events::Item`]s as
/// rows written before hold them: no spaces, fields in their order, ASCII product ids without
/// escapes, integers without sign, fraction or leading zero, at least one line); `None` for
/// anything else, which [`lines_problem`] then reads as any JSON. Every text accepted here is
/// JSON that reading gives the same numbers for, so the verdict is the same; reading a million
/// orders' lines this way takes a fraction of the time a JSON parser does (it was a quarter of
/// the whole check).
fn written_lines(items: &[u8], pairs: &mut Vec<(i64, i64)>) -> Option<()> {
    // Each form as its line's opening, the text between product id and quantity, the text
    // between quantity and price, and its closing.
    const ROW: [&[u8]; 4] = [br#"[""#, br#"","#, b",", b"]"];
    const OBJECT: [&[u8]; 4] = [br#"{"product_id":""#, br#"","quantity":"#, br#","unit_price_cents":"#, b"}"];
    let mut rest = items.strip_prefix(b"[")?;
    let form = if rest.starts_with(ROW[0]) { ROW } else { OBJECT };
    loop {
        rest = rest.strip_prefix(form[0])?;
        let end = rest.iter().position(|b| !(0x20..0x7f).contains(b) || *b == b'"' || *b == b'\\')?;
        rest = rest[end..].strip_prefix(form[1])?;
        let (quantity, r) = json_integer(rest)?;
        let (price, r) = json_integer(r.strip_prefix(form[2])?)?;
        pairs.push((quantity, price));
        rest = r.strip_prefix(form[3])?;
        match rest {
            [b',', r @ ..] => rest = r,
            [b']'] => return Some(()),
            _ => return None,
        }
    }
}

/// A JSON integer without sign or leading zero that fits in an `i64`, and what follows it.
fn json_integer(text: &[u8]) -> Option<(i64, &[u8])> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && text[0] == b'0') {
        return None;
    }
    let value = text[..digits].iter().try_fold(0i64, |v, d| v.checked_mul(10)?.checked_add((d - b'0') as i64))?;
    Some((value, &text[digits..]))
}

/// One payment row as check 2 needs it: captured and refunded cents.
type Settlement = (i64, i64);

/// How many rows a batch between the reading threads and the merge holds: large enough that
/// handing one over costs nothing per row, small enough that the memory stays a few hundred KB
/// whatever the number of orders.
const BATCH: usize = 4096;

/// A batch of rows in id order, read from the front. The merge hands each emptied batch back
/// to its reader to fill again: a new batch per hand-over was memory freed on another thread
/// than it was allocated on, which the allocator never gave back to the reader, so every batch
/// was fresh pages the kernel had to zero (a tenth of the time at a million orders).
type Batch<T> = VecDeque<(Key, T)>;

/// The rows of one database, in order id order, handed to the merge in batches from the thread
/// reading them. A row out of order would make the merge judge wrongly, so it stops the check
/// with an error instead.
struct Sorted<T> {
    what: &'static str,
    tx: SyncSender<Batch<T>>,
    /// Batches the merge has emptied, to fill again.
    emptied: Receiver<Batch<T>>,
    batch: Batch<T>,
    last: Option<Key>,
    problem: Option<String>,
}

impl<T> Sorted<T> {
    fn new(what: &'static str, tx: SyncSender<Batch<T>>, emptied: Receiver<Batch<T>>) -> Sorted<T> {
        Sorted { what, tx, emptied, batch: VecDeque::with_capacity(BATCH), last: None, problem: None }
    }

    fn push(&mut self, id: &[u8], value: T) {
        if self.problem.is_some() {
            return;
        }
        let key = Key::of(id);
        if let Some(last) = &self.last {
            if last.cmp(&key) == Ordering::Greater {
                let (what, id) = (self.what, key.id());
                self.problem = Some(format!("{what}: `{id}` came after `{}`, not in order id order", last.id()));
                return;
            }
        }
        self.last = Some(key.clone());
        self.batch.push_back((key, value));
        if self.batch.len() == BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        let next = self.emptied.try_recv().unwrap_or_else(|_| VecDeque::with_capacity(BATCH));
        let batch = std::mem::replace(&mut self.batch, next);
        // The merge hangs up only when it has failed already; its error is the one reported.
        if self.tx.send(batch).is_err() {
            self.problem = Some(format!("{}: the merge stopped reading", self.what));
        }
    }

    fn finish(mut self) -> Result<(), DbError> {
        if self.problem.is_none() && !self.batch.is_empty() {
            self.send();
        }
        self.problem.map_or(Ok(()), |p| Err(DbError::Task(p)))
    }
}

/// The rows a reading thread hands over, one at a time, each emptied batch handed back.
struct Rows<T> {
    batches: Receiver<Batch<T>>,
    emptied: Sender<Batch<T>>,
    batch: Batch<T>,
}

impl<T> Iterator for Rows<T> {
    type Item = (Key, T);

    fn next(&mut self) -> Option<(Key, T)> {
        loop {
            if let Some(row) = self.batch.pop_front() {
                return Some(row);
            }
            let spent = std::mem::replace(&mut self.batch, self.batches.recv().ok()?);
            // The first, empty placeholder is not worth handing back. A reader that has
            // finished no longer takes batches back; nothing is lost then.
            if spent.capacity() > 0 {
                let _ = self.emptied.send(spent);
            }
        }
    }
}

/// A reading thread, joined for its outcome, and the rows it hands over.
type Reader<'scope, T> = (std::thread::ScopedJoinHandle<'scope, Result<(), DbError>>, Rows<T>);

/// Reads one database's rows on its own thread, in order id order, into a channel of batches.
/// The channel holds two batches: the reader runs ahead of the merge by that much and no more.
fn spawn_reader<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    what: &'static str,
    read: impl FnOnce(&mut Sorted<T>) -> Result<(), DbError> + Send + 'scope,
) -> Reader<'scope, T> {
    let (tx, batches) = sync_channel(2);
    let (emptied, emptied_rx) = channel();
    let handle = scope.spawn(move || {
        let mut sorted = Sorted::new(what, tx, emptied_rx);
        read(&mut sorted)?;
        sorted.finish()
    });
    (handle, Rows { batches, emptied, batch: VecDeque::new() })
}

/// One side of the merge: a database's rows, sorted by order id, one row looked ahead.
struct Side<T, I: Iterator<Item = (Key, T)>> {
    rows: std::iter::Peekable<I>,
}

impl<T, I: Iterator<Item = (Key, T)>> Side<T, I> {
    fn new(rows: I) -> Self {
        Side { rows: rows.peekable() }
    }

    fn head(&mut self) -> Option<&Key> {
        self.rows.peek().map(|(k, _)| k)
    }

    /// Every row at `key` (the side is sorted, so they are next).
    fn take(&mut self, key: &Key, mut each: impl FnMut(T)) {
        while let Some((_, v)) = self.rows.next_if(|(k, _)| k == key) {
            each(v);
        }
    }
}

/// The smaller of two optional keys in text order.
fn least<'a>(a: Option<&'a Key>, b: Option<&'a Key>) -> Option<&'a Key> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.cmp(a) == Ordering::Less { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The checks' running totals and problems, fed one order id at a time by the merge: every
/// row is judged as it goes by, and nothing per order is kept but the problems.
#[derive(Debug, Default)]
struct Tally {
    orders: usize,
    pending: usize,
    confirmed: usize,
    failed: usize,
    terminal: usize,
    notified: i64,
    accepted: usize,
    /// Check 2's problems with the order they are about, sorted by it at the end.
    charged: Vec<(Key, String)>,
    /// Money for ids the order database does not hold, sorted by id at the end, after `charged`.
    stray_money: Vec<(Key, String)>,
    /// Check 4's problems with the order they are about, sorted by it at the end.
    notifications: Vec<(Key, String)>,
    /// Notifications for ids the order database does not hold, in id order.
    stray_notifications: Vec<String>,
    /// Orders whose lines do not give their total, in id order.
    bad_lines: Vec<(Key, LinesProblem)>,
    /// Ids the gateway returned that the order database does not hold, in id order.
    missing: Vec<Key>,
}

/// An order row as the merge judges it.
struct OrderRow {
    status: Status,
    total_cents: i64,
}

/// An order row as its reader hands it over: its lines are judged there (check 6), so they
/// never cross to the merge.
struct OrderRead {
    row: OrderRow,
    lines: Option<LinesProblem>,
}

impl OrderRead {
    /// `pairs` is scratch space, reused from order to order.
    fn of(status: Status, total_cents: i64, items: &[u8], pairs: &mut Vec<(i64, i64)>) -> OrderRead {
        OrderRead { row: OrderRow { status, total_cents }, lines: lines_problem(total_cents, items, pairs) }
    }
}

impl Tally {
    /// Judges one order id with every row all databases hold about it.
    fn judge(
        &mut self,
        key: Key,
        order: Option<OrderRow>,
        payments: &[Settlement],
        notes: Option<i64>,
        accepted: usize,
    ) {
        // Saturating: amounts are bounded by the order limit, and a corrupt row must show up as
        // a mismatch, not wrap into a match.
        let net = payments
            .iter()
            .fold(0i64, |net, (captured, refunded)| net.saturating_add(captured.saturating_sub(*refunded)));
        let captures = payments.iter().filter(|(captured, _)| *captured > 0).count();
        self.accepted += accepted;
        let Some(order) = order else {
            if !payments.is_empty() && net != 0 {
                self.stray_money
                    .push((key.clone(), format!("{}: {net} cents charged for an order that does not exist", key.id())));
            }
            if let Some(n) = notes {
                self.notified += n;
                self.stray_notifications
                    .push(format!("{}: {n} notifications for an order that does not exist", key.id()));
            }
            if accepted > 0 {
                self.missing.push(key);
            }
            return;
        };
        self.orders += 1;
        if captures > 1 {
            self.charged.push((key.clone(), format!("{}: {captures} captures", key.id())));
        }
        match order.status {
            Status::Confirmed => {
                self.confirmed += 1;
                if net != order.total_cents {
                    let total = order.total_cents;
                    self.charged.push((
                        key.clone(),
                        format!("{}: CONFIRMED for {total} cents but {net} cents net charged", key.id()),
                    ));
                }
            }
            Status::Failed => {
                self.failed += 1;
                if net != 0 {
                    self.charged.push((key.clone(), format!("{}: FAILED but {net} cents net charged", key.id())));
                }
            }
            Status::Pending => self.pending += 1, // in flight: judged once it settles (check 3)
        }
        let notes = notes.unwrap_or(0);
        self.notified += notes;
        if order.status.is_terminal() {
            self.terminal += 1;
            if notes != 1 {
                let status = order.status.as_str();
                self.notifications.push((key.clone(), format!("{}: {status} with {notes} notifications", key.id())));
            }
        }
    }
}

/// The sorted merge-join of the order rows with the other databases' rows: the order rows come
/// in one at a time, in id order; each side is drained up to that id, rows for ids before it
/// belonging to no order. One pass, constant memory, every row judged.
struct Merge<P, N, A>
where
    P: Iterator<Item = (Key, Settlement)>,
    N: Iterator<Item = (Key, i64)>,
    A: Iterator<Item = (Key, ())>,
{
    payments: Side<Settlement, P>,
    notifications: Side<i64, N>,
    accepted: Option<Side<(), A>>,
    tally: Tally,
    /// The last order id, to prove the order rows came sorted.
    last: Option<Key>,
    /// An order row out of order, which stops the check.
    out_of_order: Option<String>,
    /// Reused for each id's payment rows (almost always one).
    payments_at: Vec<Settlement>,
}

impl<P, N, A> Merge<P, N, A>
where
    P: Iterator<Item = (Key, Settlement)>,
    N: Iterator<Item = (Key, i64)>,
    A: Iterator<Item = (Key, ())>,
{
    fn new(payments: P, notifications: N, accepted: Option<A>) -> Self {
        Merge {
            payments: Side::new(payments),
            notifications: Side::new(notifications),
            accepted: accepted.map(Side::new),
            tally: Tally::default(),
            last: None,
            out_of_order: None,
            payments_at: Vec::new(),
        }
    }

    /// Judges `key` with the rows every side holds for it.
    fn at(&mut self, key: Key, order: Option<OrderRow>) {
        let mut payments = std::mem::take(&mut self.payments_at);
        payments.clear();
        self.payments.take(&key, |s| payments.push(s));
        let mut notes = None;
        self.notifications.take(&key, |n| *notes.get_or_insert(0) += n);
        let mut accepted = 0;
        if let Some(side) = &mut self.accepted {
            side.take(&key, |()| accepted += 1);
        }
        self.tally.judge(key, order, &payments, notes, accepted);
        self.payments_at = payments;
    }

    /// Ids the sides hold before `bound` (all of them without one): no order row has them.
    fn strays_before(&mut self, bound: Option<&Key>) {
        loop {
            // The smallest id any side holds next, compared where it lies: it is copied only
            // when it is a stray, which almost no id is.
            let p = self.payments.head();
            let n = self.notifications.head();
            let a = self.accepted.as_mut().and_then(Side::head);
            let Some(next) = least(least(p, n), a) else { break };
            if bound.is_some_and(|b| next >= b) {
                break;
            }
            let key = next.clone();
            self.at(key, None);
        }
    }

    /// One order row, in id order.
    fn order(&mut self, key: Key, read: OrderRead) {
        if self.out_of_order.is_some() {
            return;
        }
        if let Some(last) = &self.last {
            if last.cmp(&key) != Ordering::Less {
                let id = key.id();
                self.out_of_order = Some(format!("orders: `{id}` came after `{}`, not in order id order", last.id()));
                return;
            }
        }
        if let Some(problem) = read.lines {
            self.tally.bad_lines.push((key.clone(), problem));
        }
        self.strays_before(Some(&key));
        self.last = Some(key.clone());
        self.at(key, Some(read.row));
    }

    /// After the last order row: what the sides still hold belongs to no order.
    fn finish(mut self) -> Result<Tally, DbError> {
        if let Some(problem) = self.out_of_order {
            return Err(DbError::Task(problem));
        }
        self.strays_before(None);
        if self.accepted.is_none() {
            self.tally.accepted = 0;
        }
        Ok(self.tally)
    }
}

/// What the checks read beside the merged rows: the inventory's stock and held reservations.
struct Inventory {
    stock: Vec<Stock>,
    held: i64,
}

/// Reads every database and judges every row: the order database's read transaction starts
/// before any other database is read, so a row another database holds for an order placed after
/// that read is then reported, never silently skipped. Every database is read on its own thread,
/// in order id order, and the rows are merged here as they come: the order rows are the widest
/// to read, so the merge runs beside their reading instead of after each row of it.
fn read_and_tally(dbs: &Databases) -> Result<(Tally, Inventory), DbError> {
    let order_db = open_for_check(&dbs.order)?;
    order_db.execute_batch("BEGIN")?;
    // The first read starts the read transaction (BEGIN alone does not).
    order_db.query_row("SELECT count(*) FROM (SELECT 1 FROM orders LIMIT 1)", [], |r| r.get::<_, i64>(0))?;
    let mut inventory = open_for_check(&dbs.inventory)?;
    let stock =
        Inventory { stock: inventory::read_stock(&mut inventory)?, held: inventory::held_reservations(&inventory)? };
    std::thread::scope(|scope| -> Result<_, DbError> {
        let (orders, order_rows) = spawn_reader(scope, "orders", move |out: &mut Sorted<OrderRead>| {
            let mut pairs = Vec::new();
            visit_order_totals(&order_db, |id, status, total, items| {
                out.push(id, OrderRead::of(status, total, items, &mut pairs))
            })?;
            Ok(order_db.execute_batch("COMMIT")?)
        });
        let (payments, payment_rows) = spawn_reader(scope, "payments", |out: &mut Sorted<Settlement>| {
            let conn = open_for_check(&dbs.payment)?;
            Ok(visit_settlements(&conn, |id, captured, refunded| out.push(id, (captured, refunded)))?)
        });
        let (notifications, notification_rows) = spawn_reader(scope, "notifications", |out: &mut Sorted<i64>| {
            let conn = open_for_check(&dbs.notification)?;
            Ok(notification::visit_counts_by_order(&conn, |id, n| out.push(id, n))?)
        });
        let gateway = dbs.gateway.as_ref().map(|path| {
            spawn_reader(scope, "accepted orders", move |out: &mut Sorted<()>| {
                let conn = open_for_check(path)?;
                Ok(gateway::visit_accepted_order_ids(&conn, |id| out.push(id, ()))?)
            })
        });
        let (gateway, accepted_rows) = match gateway {
            Some((handle, rows)) => (Some(handle), Some(rows)),
            None => (None, None),
        };
        let mut merge = Merge::new(payment_rows, notification_rows, accepted_rows);
        // Every order row is taken, so the order reader always ends; a reader that failed ends
        // its rows early, and its error, not the tally of what came before, is returned. The
        // merge is dropped once done, which hangs up the other readers' channels, so none waits
        // for a merge that stopped.
        for (key, read) in order_rows {
            merge.order(key, read);
        }
        let tally = merge.finish();
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<(), DbError>>| {
            h.join().map_err(|_| DbError::Task("a thread reading a database panicked".into()))?
        };
        let read_orders = join(orders);
        let others = [Some(payments), Some(notifications), gateway]
            .into_iter()
            .flatten()
            .map(join)
            .collect::<Result<Vec<()>, DbError>>();
        // In the order that explains the most: orders that were not all read make the tally
        // meaningless, and a merge that stopped stops the other readers.
        read_orders?;
        let tally = tally?;
        others?;
        Ok((tally, stock))
    })
}

/// Runs every check once.
pub fn check_all(dbs: &Databases) -> Result<Report, DbError> {
    let (tally, stock) = read_and_tally(dbs)?;
    Ok(report(tally, &stock, dbs.gateway.is_some()))
}

fn report(mut t: Tally, s: &Inventory, with_gateway: bool) -> Report {
    let mut checks = vec![
        stock_conservation(&s.stock),
        charged_iff_confirmed(&mut t),
        nothing_stuck(&t, s),
        one_notification_per_terminal_order(&mut t),
        totals_match_items(&t),
    ];
    if with_gateway {
        checks.push(no_accepted_order_lost(t.accepted, &t.missing));
    }
    Report { ok: checks.iter().all(|c| c.ok), checks, pending: t.pending as i64 }
}

/// Problems keyed by order id, listed in id order: the same order each run,
/// while only the problems are sorted, never the million orders.
fn in_id_order(problems: &mut Vec<(Key, String)>) -> Vec<String> {
    problems.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    problems.drain(..).map(|(_, p)| p).collect()
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
fn charged_iff_confirmed(t: &mut Tally) -> Check {
    let mut problems = in_id_order(&mut t.charged);
    problems.extend(in_id_order(&mut t.stray_money));
    check(
        "charged_iff_confirmed",
        problems,
        format!("{} confirmed orders charged their total, {} failed orders charged nothing", t.confirmed, t.failed),
    )
}

/// Check 3: no order pending and no stock reserved: every saga ran to its end.
fn nothing_stuck(t: &Tally, s: &Inventory) -> Check {
    let reserved: i64 = s.stock.iter().map(|p| p.reserved).sum();
    let mut problems = Vec::new();
    if t.pending > 0 {
        problems.push(format!("{} orders PENDING", t.pending));
    }
    if reserved > 0 || s.held > 0 {
        problems.push(format!("{reserved} units reserved by {} reservations", s.held));
    }
    check("nothing_stuck", problems, "no order pending, no stock reserved".into())
}

/// Check 4: exactly one notification per confirmed or failed order, none for unknown orders.
fn one_notification_per_terminal_order(t: &mut Tally) -> Check {
    let mut problems = in_id_order(&mut t.notifications);
    problems.append(&mut t.stray_notifications);
    check(
        "one_notification_per_terminal_order",
        problems,
        format!("{} notifications for {} terminal orders", t.notified, t.terminal),
    )
}

/// Check 6: every order's stored total is the sum of its lines at the unit prices it was
/// placed at, computed without wrapping and within the order limit. Check 2 compares charges
/// with the stored total, so a total that wrapped when stored would pass there; not here.
/// The lines are judged as they are read (`Merge::order`), so they are never kept.
fn totals_match_items(t: &Tally) -> Check {
    let problems = t
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
    check("totals_match_items", problems, format!("{} orders total the sum of their lines", t.orders))
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
    wait_for_quiet(dbs, deadline)?;
    loop {
        let report = check_all(dbs)?;
        if report.ok || std::time::Instant::now() >= deadline {
            return Ok(report);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Waits, until `deadline`, for the sagas in flight to end and their notifications to be
/// delivered: two indexed lookups (the partial index of PENDING orders, the outbox of undelivered
/// notifications) each round. Right after a load the last orders are still running, and a full
/// check of every row made then only finds them and has to be made again.
fn wait_for_quiet(dbs: &Databases, deadline: std::time::Instant) -> Result<(), DbError> {
    let conn = open_for_check(&dbs.order)?;
    let mut busy =
        conn.prepare("SELECT EXISTS (SELECT 1 FROM orders WHERE status = 'PENDING') OR EXISTS (SELECT 1 FROM outbox)")?;
    while busy.query_row([], |r| r.get::<_, bool>(0))? && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
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

    /// What the other databases hold, as their readers would hand it to the merge.
    struct Others {
        stock: Vec<Stock>,
        held: i64,
        settlements: Vec<(Key, i64, i64)>,
        notifications: Vec<(Key, i64)>,
        accepted: Option<Vec<Key>>,
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

    /// Rows in id order, as SQLite hands them over (a stable sort: equal ids keep their order).
    fn sorted<T>(mut rows: Vec<(Key, T)>) -> std::vec::IntoIter<(Key, T)> {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.into_iter()
    }

    struct Snap {
        tally: Tally,
        inventory: Inventory,
        gateway: bool,
    }

    fn snapshot((mut orders, others): (Vec<(&'static str, Status, i64, String)>, Others)) -> Snap {
        orders.sort_by(|a, b| a.0.cmp(b.0));
        let payments = sorted(others.settlements.into_iter().map(|(k, c, r)| (k, (c, r))).collect());
        let gateway = others.accepted.is_some();
        let accepted = others.accepted.map(|ids| sorted(ids.into_iter().map(|k| (k, ())).collect()));
        let mut merge = Merge::new(payments, sorted(others.notifications), accepted);
        for (id, status, total, items) in &orders {
            merge.order(Key::of(id), OrderRead::of(*status, *total, items.as_bytes(), &mut Vec::new()));
        }
        let inventory = Inventory { stock: others.stock, held: others.held };
        Snap { tally: merge.finish().unwrap(), inventory, gateway }
    }

    fn judge(s: Snap) -> Report {
        report(s.tally, &s.inventory, s.gateway)
    }

    #[test]
    fn a_settled_shop_passes_all_six_checks() {
        let report = judge(snapshot(settled()));
        assert!(report.ok, "{report:?}");
        assert_eq!(report.checks.len(), 6);
        assert_eq!(report.checks[4].name, "totals_match_items");
        assert_eq!(report.pending, 0);
        assert_eq!(report.checks[1].detail, "1 confirmed orders charged their total, 1 failed orders charged nothing");
    }

    #[test]
    fn ids_come_back_unchanged_from_their_keys() {
        let long = "x".repeat(SHORT + 1);
        for id in ["ord_01M8EHZ8C4NWWXPXXJY9RM8MWM", "ord_01m8ehz8c4nwwxpxxjy9rm8mwm", "o1", "", "a\0", &long] {
            assert_eq!(Key::of(id).id(), id);
        }
        assert!(matches!(Key::of("ord_01M8EHZ8C4NWWXPXXJY9RM8MWM"), Key::Short { .. }));
        assert!(matches!(Key::of(&long), Key::Long(_)));
        assert_ne!(Key::of("a"), Key::of("a\0"));
    }

    #[test]
    fn lines_in_the_written_form_read_as_json_reads_them() {
        let mut pairs = Vec::new();
        let item = |product_id: &str, quantity, unit_price_cents| events::Item {
            product_id: product_id.into(),
            quantity,
            unit_price_cents,
        };
        for items in [
            lines(2, 499),
            events::stored_items(&[item("a", 1, 0), item("", 10, i64::MAX)]),
            // The object form of rows written before.
            r#"[{"product_id":"a","quantity":1,"unit_price_cents":0},{"product_id":"","quantity":10,"unit_price_cents":9223372036854775807}]"#.into(),
        ] {
            assert!(written_lines(items.as_bytes(), &mut pairs).is_some(), "{items}");
            let json = events::items_from_stored(items.as_bytes()).unwrap();
            assert_eq!(pairs, json.iter().map(|l| (l.quantity, l.unit_price_cents)).collect::<Vec<_>>());
            pairs.clear();
        }
        // Anything else is left to the JSON reader, valid or not.
        for items in [
            "[]",
            r#"[{"product_id":"p","quantity":1,"unit_price_cents":5} ]"#,
            r#"[{"product_id":"p","quantity":01,"unit_price_cents":5}]"#,
            r#"[{"product_id":"p","quantity":-1,"unit_price_cents":5}]"#,
            r#"[{"product_id":"p","quantity":1.0,"unit_price_cents":5}]"#,
            r#"[{"product_id":"p\"","quantity":1,"unit_price_cents":5}]"#,
            r#"[{"product_id":"é","quantity":1,"unit_price_cents":5}]"#,
            r#"[{"product_id":"p","quantity":9223372036854775808,"unit_price_cents":5}]"#,
            r#"[{"product_id":"p","quantity":1,"unit_price_cents":5},]"#,
            r#"[{"product_id":"p","quantity":1,"unit_price_cents":5}]x"#,
            r#"[{"quantity":1,"product_id":"p","unit_price_cents":5}]"#,
            r#"[["p",1,5] ]"#,
            r#"[["p",01,5]]"#,
            r#"[["p",1]]"#,
            r#"[["p",1,5,6]]"#,
            r#"[["p",1,5],{"product_id":"p","quantity":1,"unit_price_cents":5}]"#,
        ] {
            assert!(written_lines(items.as_bytes(), &mut pairs).is_none(), "{items}");
        }
        // Such lines are still judged, by the JSON reader.
        let mut problem = |items: &str| format!("{:?}", lines_problem(5, items.as_bytes(), &mut pairs));
        assert_eq!(problem(r#"[{"quantity":1,"product_id":"p","unit_price_cents":5}]"#), "None");
        assert_eq!(problem(r#"[["p",1,2],{"product_id":"p","quantity":1,"unit_price_cents":3}]"#), "None");
        assert_eq!(problem(r#"[["p",1,5,6]]"#), "Some(Unreadable)");
        assert_eq!(problem(r#"[{"product_id":"p","quantity":1,"unit_price_cents":5},]"#), "Some(Unreadable)");
        assert_eq!(
            problem(r#"[{"product_id":"p","quantity":-1,"unit_price_cents":5}]"#),
            "Some(TooLarge { stored: 5 })"
        );
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
        let c = charged_iff_confirmed(&mut snapshot((orders, others)).tally);
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
        let c = nothing_stuck(&s.tally, &s.inventory);
        assert_eq!(c.detail, "1 orders PENDING; 1 units reserved by 1 reservations");
        assert_eq!(judge(s).pending, 1);
    }

    #[test]
    fn a_pending_order_needs_no_notification_but_a_terminal_one_needs_exactly_one() {
        let (mut orders, others) = settled();
        orders.push(("o3", Status::Pending, 100, lines(1, 100)));
        assert!(one_notification_per_terminal_order(&mut snapshot((orders.clone(), others)).tally).ok);
        let (_, mut others) = settled();
        others.notifications = vec![(Key::of("o1"), 2), (Key::of("o2"), 1), (Key::of("ghost"), 1)];
        let c = one_notification_per_terminal_order(&mut snapshot((orders, others)).tally);
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
        let c = judge(s).checks.pop().expect("the sixth check is there with a gateway database");
        assert_eq!(c.name, "no_accepted_order_lost");
        assert_eq!(c.detail, "lost: returned by the gateway, missing from the order database");
    }

    #[test]
    fn without_a_gateway_database_the_fifth_check_is_skipped() {
        let (orders, mut others) = settled();
        others.accepted = None;
        assert_eq!(judge(snapshot((orders, others))).checks.len(), 5);
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
        let mut s = snapshot((orders, others));
        assert!(charged_iff_confirmed(&mut s.tally).ok);
        let c = totals_match_items(&s.tally);
        assert!(!c.ok);
        assert_eq!(
            c.detail,
            "o3: its lines add up to more than 1000000000000 cents (stored total 384); o4: total 7 cents but its lines add up to 6; o5: its lines cannot be read"
        );
        assert!(!judge(s).ok);
    }

    #[test]
    fn ids_compare_as_sqlite_sorts_their_text() {
        let ids = [
            "ord_01M8EHZ8C4NWWXPXXJY9RM8MWM",
            "ord_01M8EHZ8C4NWWXPXXJY9RM8MWN",
            "ord_7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "ord_00000000000000000000000000",
            "ord-never-stored",
            "ord_",
            "ord_01m8ehz8c4nwwxpxxjy9rm8mwm",
            "o1",
            "ghost",
            "",
        ];
        for a in ids {
            for b in ids {
                assert_eq!(Key::of(a).cmp(&Key::of(b)), a.cmp(b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn rows_of_ids_that_are_ulids_and_ids_that_are_not_meet_in_the_merge() {
        let (mut orders, mut others) = settled();
        let (a, b) = ("ord_01M8EHZ8C4NWWXPXXJY9RM8MWM", "ord_01M8EHZ8C4NWWXPXXJY9RM8MWP");
        orders.push((a, Status::Confirmed, 200, lines(1, 200)));
        orders.push((b, Status::Failed, 100, lines(1, 100)));
        others.settlements.push((Key::of(a), 200, 0));
        // Between the two orders in id order, and after all of them: money for no order.
        others.settlements.push((Key::of("ord_01M8EHZ8C4NWWXPXXJY9RM8MWN"), 7, 0));
        others.settlements.push((Key::of("zzz"), 9, 0));
        others.notifications.extend([(Key::of(a), 1), (Key::of(b), 1)]);
        others.accepted.as_mut().unwrap().extend([Key::of(a), Key::of(b)]);
        let s = judge(snapshot((orders, others)));
        assert_eq!(s.checks[1].detail, "ord_01M8EHZ8C4NWWXPXXJY9RM8MWN: 7 cents charged for an order that does not exist; zzz: 9 cents charged for an order that does not exist");
        assert!(s.checks.iter().filter(|c| c.name != "charged_iff_confirmed").all(|c| c.ok), "{s:?}");
        assert_eq!(s.checks[5].detail, "all 4 orders the gateway returned exist");
    }

    #[test]
    fn order_rows_out_of_id_order_stop_the_check() {
        let none = std::iter::empty();
        let mut merge = Merge::new(none.clone(), std::iter::empty(), None::<std::iter::Empty<(Key, ())>>);
        let read = || OrderRead::of(Status::Confirmed, 500, lines(1, 500).as_bytes(), &mut Vec::new());
        merge.order(Key::of("o2"), read());
        merge.order(Key::of("o1"), read());
        let err = merge.finish().unwrap_err().to_string();
        assert!(err.contains("`o1` came after `o2`"), "{err}");
    }
}
