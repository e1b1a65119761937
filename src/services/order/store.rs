//! The order database: orders (a projection of their events), the event log, and the outbox.
//!
//! Every write appends events and updates the projection in one transaction, so the row a
//! reader sees never disagrees with the log it was derived from.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::events::{self, steps, Event, Implied, Item, Recorded, SagaState, Status, Step};
use crate::plumbing::db::{Db, DbError};
use crate::plumbing::time::{now_ms, rfc3339};
use crate::plumbing::trace::TraceCtx;

/// The view `order_events`: the compact log in its old shape (type names, JSON objects) for
/// anyone with a sqlite3 shell. `$items` is the SQL that gives an order's lines as JSON objects.
macro_rules! order_events_view {
    ($items:literal) => {
        concat!(
            "CREATE VIEW order_events (order_id, seq, type, at, data) AS
        SELECT o.order_id, e.seq, CASE e.kind
            WHEN 1 THEN 'OrderPlaced'
            WHEN 2 THEN 'UserValidated'
            WHEN 3 THEN 'StockReservationRequested'
            WHEN 4 THEN 'StockReserved'
            WHEN 5 THEN 'PaymentRequested'
            WHEN 6 THEN 'PaymentCaptured'
            WHEN 7 THEN 'StockCommitRequested'
            WHEN 8 THEN 'StockCommitted'
            WHEN 9 THEN 'OrderConfirmed'
            WHEN 10 THEN 'NotificationQueued'
            WHEN 11 THEN 'NotificationDelivered'
            WHEN 12 THEN 'CompensationStarted'
            WHEN 13 THEN 'PaymentRefundRequested'
            WHEN 14 THEN 'PaymentRefunded'
            WHEN 15 THEN 'StockReleaseRequested'
            WHEN 16 THEN 'StockReleased'
            WHEN 17 THEN 'OrderFailed'
            WHEN 18 THEN 'StepRetried' END, o.created_at + e.at,
               CASE e.kind
                   WHEN 1 THEN json_object('user_id', o.user_id, 'items', ",
            $items,
            ", 'total_cents', o.total_cents, 'currency', o.currency, 'trace_id', o.trace_id)
                 WHEN 2 THEN CASE
                     WHEN json_extract(e.data, '$[0]') IS NULL THEN json_object('card_last4', json_extract(e.data, '$[1]'))
                     ELSE json_object('card_token', json_extract(e.data, '$[0]'), 'card_last4', json_extract(e.data, '$[1]')) END
                 WHEN 4 THEN json_object('reservation_id', json_extract(e.data, '$[0]'))
                 WHEN 6 THEN json_object('payment_id', coalesce(json_extract(e.data, '$[0]'), o.payment_id),
                                        'amount_cents', coalesce(json_extract(e.data, '$[1]'), o.total_cents))
                 WHEN 10 THEN json_object('event_id', json_extract(e.data, '$[0]'), 'kind', coalesce(json_extract(e.data, '$[1]'),
                     CASE o.status WHEN 'CONFIRMED' THEN 'order_confirmed' WHEN 'FAILED' THEN 'order_failed' END))
                 WHEN 11 THEN json_object('notification_id', json_extract(e.data, '$[0]'), 'attempts', json_extract(e.data, '$[1]'))
                 WHEN 12 THEN json_object('step', json_extract(e.data, '$[0]'), 'code', json_extract(e.data, '$[1]'), 'message', json_extract(e.data, '$[2]'))
                 WHEN 14 THEN json_object('payment_id', coalesce(json_extract(e.data, '$[1]'), o.payment_id),
                                         'refunded_cents', json_extract(e.data, '$[0]'))
                 WHEN 17 THEN json_object('step', json_extract(e.data, '$[0]'), 'code', json_extract(e.data, '$[1]'), 'message', json_extract(e.data, '$[2]'))
                 WHEN 18 THEN json_object('step', json_extract(e.data, '$[0]'), 'attempt', json_extract(e.data, '$[1]'), 'error', json_extract(e.data, '$[2]')) ELSE '{}' END
          FROM events e JOIN orders o ON o.id = e.order_key;"
        )
    };
}

pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE orders (
        order_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'FAILED')),
        items TEXT NOT NULL,
        total_cents INTEGER NOT NULL,
        currency TEXT NOT NULL,
        failure TEXT,
        payment_id TEXT,
        trace_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until INTEGER NOT NULL DEFAULT 0,
        UNIQUE (user_id, idempotency_key)
    );
    CREATE INDEX orders_by_user ON orders (user_id, order_id);
    CREATE INDEX orders_pending ON orders (status) WHERE status = 'PENDING';
    CREATE TABLE order_events (
        order_id TEXT NOT NULL REFERENCES orders (order_id),
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        at INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (order_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        event_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL REFERENCES orders (order_id),
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        delivered_at INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;",
    // Version 2 (SPEC section 17): validations used to carry the full card number. It is cut to
    // its last four digits; a saga still to charge validates again for a token. secure_delete
    // zeroes the bytes the old records leave behind instead of leaving them in free space;
    // [`Store::checkpoint`] at start-up then writes the pages back over the old ones in the main file.
    "PRAGMA secure_delete = ON;
    UPDATE order_events
       SET data = json_remove(json_set(data, '$.card_last4', substr(json_extract(data, '$.card'), -4)), '$.card')
     WHERE type = 'UserValidated' AND json_type(data, '$.card') IS NOT NULL;
    PRAGMA secure_delete = OFF;",
    // Version 3 (SPEC section 18): the compact log. Orders get an integer key that events use
    // instead of the order id's text (and keep their request hash as bytes, not hex); an event
    // is a type code, its time as milliseconds after the order's creation, and its field values
    // as a JSON array (none for OrderPlaced, whose fields are the order row's; see
    // `Event::compact_data` for the values the row implies). Delivered outbox rows are dropped: their delivery is in the
    // log (NotificationDelivered). The view `order_events` shows the log in its old shape for
    // people with a sqlite3 shell. `orders_by_user` is not recreated: no query uses it (the list
    // walks the order id index whether or not it filters by user). Dropped tables are zeroed
    // (secure_delete), as in version 2.
    concat!(
        "PRAGMA secure_delete = ON;
    CREATE TABLE orders_v3 (
        id INTEGER PRIMARY KEY,
        order_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        request_hash BLOB NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'FAILED')),
        items TEXT NOT NULL,
        total_cents INTEGER NOT NULL,
        currency TEXT NOT NULL,
        failure TEXT,
        payment_id TEXT,
        trace_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until INTEGER NOT NULL DEFAULT 0,
        UNIQUE (user_id, idempotency_key)
    );
    INSERT INTO orders_v3 (order_id, user_id, idempotency_key, request_hash, status, items, total_cents, currency,
                           failure, payment_id, trace_id, created_at, updated_at, lease_owner, lease_until)
        SELECT order_id, user_id, idempotency_key, coalesce(unhex(request_hash), request_hash), status, items, total_cents, currency,
               failure, payment_id, trace_id, created_at, updated_at, lease_owner, lease_until
          FROM orders ORDER BY order_id;
    CREATE TABLE events (
        order_key INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        at INTEGER NOT NULL,
        data TEXT,
        PRIMARY KEY (order_key, seq)
    ) WITHOUT ROWID;
    INSERT INTO events (order_key, seq, kind, at, data)
        SELECT o.id, e.seq, CASE e.type
            WHEN 'OrderPlaced' THEN 1
            WHEN 'UserValidated' THEN 2
            WHEN 'StockReservationRequested' THEN 3
            WHEN 'StockReserved' THEN 4
            WHEN 'PaymentRequested' THEN 5
            WHEN 'PaymentCaptured' THEN 6
            WHEN 'StockCommitRequested' THEN 7
            WHEN 'StockCommitted' THEN 8
            WHEN 'OrderConfirmed' THEN 9
            WHEN 'NotificationQueued' THEN 10
            WHEN 'NotificationDelivered' THEN 11
            WHEN 'CompensationStarted' THEN 12
            WHEN 'PaymentRefundRequested' THEN 13
            WHEN 'PaymentRefunded' THEN 14
            WHEN 'StockReleaseRequested' THEN 15
            WHEN 'StockReleased' THEN 16
            WHEN 'OrderFailed' THEN 17
            WHEN 'StepRetried' THEN 18 END, e.at - o.created_at,
               CASE e.type
                   WHEN 'UserValidated' THEN json_array(json_extract(e.data, '$.card_token'), json_extract(e.data, '$.card_last4'))
                   WHEN 'StockReserved' THEN json_array(json_extract(e.data, '$.reservation_id'))
                   WHEN 'PaymentCaptured' THEN json_array(json_extract(e.data, '$.payment_id'), json_extract(e.data, '$.amount_cents'))
                   WHEN 'NotificationQueued' THEN json_array(json_extract(e.data, '$.event_id'), json_extract(e.data, '$.kind'))
                   WHEN 'NotificationDelivered' THEN json_array(json_extract(e.data, '$.notification_id'), json_extract(e.data, '$.attempts'))
                   WHEN 'CompensationStarted' THEN json_array(json_extract(e.data, '$.step'), json_extract(e.data, '$.code'), json_extract(e.data, '$.message'))
                   WHEN 'PaymentRefunded' THEN json_array(json_extract(e.data, '$.refunded_cents'), json_extract(e.data, '$.payment_id'))
                   WHEN 'OrderFailed' THEN json_array(json_extract(e.data, '$.step'), json_extract(e.data, '$.code'), json_extract(e.data, '$.message'))
                   WHEN 'StepRetried' THEN json_array(json_extract(e.data, '$.step'), json_extract(e.data, '$.attempt'), json_extract(e.data, '$.error')) END
          FROM order_events e JOIN orders_v3 o USING (order_id);
    CREATE TABLE outbox_v3 (
        event_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        delivered_at INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL
    );
    INSERT INTO outbox_v3 SELECT * FROM outbox WHERE delivered_at IS NULL;
    DROP TABLE order_events;
    DROP TABLE outbox;
    DROP TABLE orders;
    ALTER TABLE orders_v3 RENAME TO orders;
    ALTER TABLE outbox_v3 RENAME TO outbox;
    CREATE INDEX orders_pending ON orders (status) WHERE status = 'PENDING';
    CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
    ",
        order_events_view!("json(o.items)"),
        "
    PRAGMA secure_delete = OFF;"
    ),
    // Version 4: order lines are stored as `[product_id, quantity, unit_price_cents]` rows
    // (`events::stored_items`) instead of objects that repeat the field names; rows written
    // before keep the object form, and every reader takes both, so nothing is rewritten. The
    // view shows the lines as objects in either case.
    concat!(
        "DROP VIEW order_events;
    ",
        order_events_view!("CASE WHEN json_type(o.items, '$[0]') = 'array'
                       THEN json((SELECT json_group_array(json_object('product_id', json_extract(value, '$[0]'),
                                 'quantity', json_extract(value, '$[1]'), 'unit_price_cents', json_extract(value, '$[2]')))
                                 FROM json_each(o.items)))
                       ELSE json(o.items) END")
    ),
    // Version 5: the caller's trace context where it differs from the default (sampled, no
    // `tracestate`), so a saga resumed after a restart keeps it. Both NULL otherwise: a byte each.
    "ALTER TABLE orders ADD COLUMN trace_unsampled INTEGER;
    ALTER TABLE orders ADD COLUMN tracestate TEXT;",
];

/// How long a saga runner owns an order without writing to it before another may take over.
pub const LEASE_MS: i64 = 15_000;

/// The order as the API shows it (SPEC section 5), plus its saga steps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderView {
    pub id: String,
    pub user_id: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub currency: String,
    pub status: Status,
    pub failure: Option<super::events::Failure>,
    pub payment_id: Option<String>,
    pub trace_id: String,
    pub created_at: String,
    pub updated_at: String,
    pub steps: Vec<Step>,
}

/// An event as `shop inspect order` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventView {
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: String,
    pub data: serde_json::Value,
}

/// A notification waiting in the outbox.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub event_id: String,
    pub order_id: String,
    pub payload: String,
    pub attempts: i64,
}

#[derive(Clone)]
pub struct Store {
    pub db: Db,
    /// This instance's name, the owner recorded in leases.
    pub owner: String,
}

/// The outcome of recording a new order under an idempotency key.
pub enum Placed {
    New(Box<SagaState>),
    /// The key was used before: the order it made, and whether the body matched.
    Existing {
        order_id: String,
        same_request: bool,
    },
}

impl Store {
    /// Copies every page of the write-ahead log into the main file and empties the log, so a
    /// migration's rewritten pages replace the old ones on disk at once instead of whenever
    /// SQLite next checkpoints: a scrubbed card number must not survive in the file.
    pub async fn checkpoint(&self) -> Result<(), DbError> {
        self.db
            .call(|c| {
                // The row says whether readers kept part of the log busy; the next start-up or
                // SQLite's own checkpoints finish the job then, so it is not an error.
                let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
                if busy != 0 {
                    tracing::warn!("the start-up checkpoint found the log in use; it completes later");
                }
                Ok(())
            })
            .await
    }

    /// Records a new order and its `OrderPlaced` event (plus any `more` events already known,
    /// such as a user validated from the cache), or finds the order this key made before.
    pub async fn place(
        &self,
        order_id: String,
        idempotency_key: String,
        request_hash: String,
        trace: &TraceCtx,
        event: Event,
        more: Vec<Event>,
    ) -> Result<Placed, DbError> {
        let (unsampled, tracestate) = ((!trace.sampled).then_some(1), trace.tracestate.clone());
        let owner = self.owner.clone();
        self.db
            .tx(move |tx| {
                let Event::OrderPlaced { user_id, items, total_cents, currency, trace_id } = &event else {
                    unreachable!("place is only called with OrderPlaced")
                };
                let request_hash = stored_hash(&request_hash);
                if let Some((order_id, same_request)) = find_by_key(tx, user_id, &idempotency_key, &request_hash)? {
                    return Ok(Placed::Existing { order_id, same_request });
                }
                let now = now_ms();
                tx.prepare_cached(
                    "INSERT INTO orders (order_id, user_id, idempotency_key, request_hash, status, items, total_cents, currency,
                                         trace_id, created_at, updated_at, lease_owner, lease_until, trace_unsampled, tracestate)
                     VALUES (?1, ?2, ?3, ?4, 'PENDING', ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13)",
                )?
                .execute(params![
                    order_id,
                    user_id,
                    idempotency_key,
                    request_hash,
                    events::stored_items(items),
                    total_cents,
                    currency,
                    trace_id,
                    now,
                    owner,
                    now + LEASE_MS,
                    unsampled,
                    tracestate
                ])?;
                let key = LogKey { order: tx.last_insert_rowid(), created_ms: now };
                let mut recorded = Vec::with_capacity(1 + more.len());
                for (i, e) in std::iter::once(&event).chain(more.iter()).enumerate() {
                    insert_event(tx, key, i as i64 + 1, now, e, &Implied::default())?;
                    recorded.push(Recorded { seq: i as i64 + 1, at_ms: now, event: e.clone() });
                }
                Ok(Placed::New(Box::new(SagaState::fold(&order_id, &recorded))))
            })
            .await
    }

    /// Appends `events` after what the log holds, updates the projection from `state` (which
    /// already has them applied), renews this runner's lease, and queues `outbox` if given.
    pub async fn append(
        &self,
        state: &SagaState,
        events: Vec<Event>,
        outbox: Option<(String, String)>,
    ) -> Result<(), DbError> {
        let order_id = state.order_id.clone();
        let status = state.status();
        let failure = state.failure().map(|f| serde_json::to_string(f).unwrap_or_default());
        let payment_id = state.payment_id.clone();
        // What the row holds once this append commits; it never changes after (payment id and
        // total are set once, and a notification is queued with the terminal status).
        let implied = Implied { payment_id: payment_id.clone(), total_cents: state.total_cents, status: Some(status) };
        let owner = self.owner.clone();
        let at = state.updated_ms;
        // `state` already holds these events, so it knows their numbers; the primary key on
        // (order_id, seq) refuses a second runner writing the same step.
        let mut seq = (state.log.len() - events.len().min(state.log.len())) as i64;
        self.db
            .tx(move |tx| {
                // The log key first, then the row by that key: `UPDATE … RETURNING` would do both
                // in one statement, but SQLite builds a temporary table for every RETURNING, which
                // cost more than the second lookup (a fifth of the order database's thread).
                let key = tx
                    .prepare_cached("SELECT id, created_at FROM orders WHERE order_id = ?1")?
                    .query_row([&order_id], |r| Ok(LogKey { order: r.get(0)?, created_ms: r.get(1)? }))?;
                if status == Status::Pending {
                    // Still PENDING, as it was (an order never returns to it): the status is left
                    // out, so SQLite neither checks its `IN (…)` constraint (a temporary table of
                    // the list each time) nor touches the index of PENDING orders.
                    tx.prepare_cached(
                        "UPDATE orders SET failure = ?2, payment_id = ?3, updated_at = ?4, lease_owner = ?5, lease_until = ?6
                         WHERE id = ?1",
                    )?
                    .execute(params![key.order, failure, payment_id, at, owner, at + LEASE_MS])?;
                } else {
                    tx.prepare_cached(
                        "UPDATE orders SET status = ?2, failure = ?3, payment_id = ?4, updated_at = ?5, lease_owner = NULL, lease_until = 0
                         WHERE id = ?1",
                    )?
                    .execute(params![key.order, status.as_str(), failure, payment_id, at])?;
                }
                for e in &events {
                    seq += 1;
                    insert_event(tx, key, seq, at, e, &implied)?;
                }
                if let Some((event_id, payload)) = outbox {
                    tx.prepare_cached(
                        "INSERT INTO outbox (event_id, order_id, payload, next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                    )?
                    .execute(params![event_id, order_id, payload, at])?;
                }
                Ok(())
            })
            .await
    }

    /// Takes the lease on a PENDING order unless another live runner holds it.
    pub async fn claim(&self, order_id: &str) -> Result<bool, DbError> {
        let (order_id, owner) = (order_id.to_string(), self.owner.clone());
        self.db
            .call(move |c| {
                let now = now_ms();
                let n = c.execute(
                    "UPDATE orders SET lease_owner = ?2, lease_until = ?3
                     WHERE order_id = ?1 AND status = 'PENDING' AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until < ?4)",
                    params![order_id, owner, now + LEASE_MS, now],
                )?;
                Ok(n == 1)
            })
            .await
    }

    /// PENDING orders this instance may run: unowned, its own, or with a lapsed lease.
    pub async fn resumable(&self) -> Result<Vec<String>, DbError> {
        let owner = self.owner.clone();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT order_id FROM orders WHERE status = 'PENDING'
                     AND (lease_owner IS NULL OR lease_owner = ?1 OR lease_until < ?2) ORDER BY order_id LIMIT 1000",
                )?;
                let rows = stmt.query_map(params![owner, now_ms()], |r| r.get(0))?.collect();
                rows
            })
            .await
    }

    pub async fn events(&self, order_id: &str) -> Result<Vec<Recorded>, DbError> {
        let order_id = order_id.to_string();
        self.db.read(move |c| load_events(c, &order_id)).await
    }

    /// The trace context the order's caller gave, as far as the trace id does not say it: its
    /// sampled flag and `tracestate`, for a saga resumed without the request.
    pub async fn trace_context(&self, order_id: &str) -> Result<(bool, Option<String>), DbError> {
        let order_id = order_id.to_string();
        self.db
            .read(move |c| {
                let found: Option<(Option<i64>, Option<String>)> = c
                    .prepare_cached("SELECT trace_unsampled, tracestate FROM orders WHERE order_id = ?1")?
                    .query_row([&order_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let (unsampled, tracestate) = found.unwrap_or_default();
                Ok((unsampled.is_none(), tracestate))
            })
            .await
    }

    /// The order with its steps, or `None`.
    pub async fn view(&self, order_id: &str) -> Result<Option<(OrderView, Vec<Recorded>)>, DbError> {
        let order_id = order_id.to_string();
        self.db
            .read(move |c| {
                let exists: Option<i64> = c
                    .prepare_cached("SELECT 1 FROM orders WHERE order_id = ?1")?
                    .query_row([&order_id], |r| r.get(0))
                    .optional()?;
                if exists.is_none() {
                    return Ok(None);
                }
                let events = load_events(c, &order_id)?;
                Ok(Some((view_of(&SagaState::fold(&order_id, &events), &events), events)))
            })
            .await
    }

    /// The newest orders of a user (or of everyone), optionally of one status.
    pub async fn list(
        &self,
        user_id: Option<String>,
        status: Option<Status>,
        limit: u32,
    ) -> Result<Vec<OrderView>, DbError> {
        self.db
            .read(move |c| {
                let ids: Vec<String> = c
                    .prepare_cached(
                        "SELECT order_id FROM orders WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR status = ?2)
                         ORDER BY order_id DESC LIMIT ?3",
                    )?
                    .query_map(params![user_id, status.map(|s| s.as_str()), limit], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                ids.iter()
                    .map(|id| {
                        let events = load_events(c, id)?;
                        Ok(view_of(&SagaState::fold(id, &events), &events))
                    })
                    .collect()
            })
            .await
    }

    /// Undelivered outbox rows whose next attempt is due.
    pub async fn due_outbox(&self, limit: usize) -> Result<Vec<OutboxRow>, DbError> {
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT event_id, order_id, payload, attempts FROM outbox
                     WHERE delivered_at IS NULL AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT ?2",
                )?;
                let rows = stmt
                    .query_map(params![now_ms(), limit as i64], |r| {
                        Ok(OutboxRow {
                            event_id: r.get(0)?,
                            order_id: r.get(1)?,
                            payload: r.get(2)?,
                            attempts: r.get(3)?,
                        })
                    })?
                    .collect();
                rows
            })
            .await
    }

    /// Marks deliveries done and logs each on its order (`NotificationDelivered` with the
    /// notification id), all in one transaction; a row already gone (another relay got there
    /// first) is skipped, so each delivery is logged once even if two relays raced.
    pub async fn delivered_batch(&self, delivered: &[(OutboxRow, String)]) -> Result<(), DbError> {
        let delivered: Vec<(String, String, i64, String)> = delivered
            .iter()
            .map(|(row, id)| (row.event_id.clone(), row.order_id.clone(), row.attempts + 1, id.clone()))
            .collect();
        self.db
            .tx(move |tx| {
                let now = now_ms();
                // A delivered row is deleted, not kept: the log's NotificationDelivered is its record.
                let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE event_id = ?1")?;
                let mut log_key = tx.prepare_cached(
                    "SELECT id, created_at, (SELECT coalesce(max(seq), 0) + 1 FROM events WHERE order_key = orders.id)
                     FROM orders WHERE order_id = ?1",
                )?;
                for (event_id, order_id, attempts, notification_id) in delivered {
                    if delete.execute([&event_id])? == 1 {
                        let (key, seq) = log_key.query_row([&order_id], |r| {
                            Ok((LogKey { order: r.get(0)?, created_ms: r.get(1)? }, r.get(2)?))
                        })?;
                        let delivered = Event::NotificationDelivered { notification_id, attempts };
                        insert_event(tx, key, seq, now, &delivered, &Implied::default())?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// Records a failed delivery and when to try again.
    pub async fn delivery_failed(&self, row: &OutboxRow, next_attempt_ms: i64, error: String) -> Result<(), DbError> {
        let event_id = row.event_id.clone();
        self.db
            .call(move |c| {
                c.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE event_id = ?1",
                    params![event_id, next_attempt_ms, error],
                )
            })
            .await
            .map(|_| ())
    }

    /// Figures for `/metrics`: orders by status and the outbox backlog.
    pub async fn figures(&self) -> Result<(Vec<(String, i64)>, i64), DbError> {
        self.db
            .read(|c| {
                let by_status = c
                    .prepare_cached("SELECT status, count(*) FROM orders GROUP BY status")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                let backlog =
                    c.query_row("SELECT count(*) FROM outbox WHERE delivered_at IS NULL", [], |r| r.get(0))?;
                Ok((by_status, backlog))
            })
            .await
    }
}

/// How an order ended, as a drill counts it.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: Status,
    /// The failure's stable code (`out_of_stock`, `timeout`, …) when it has one.
    pub failure_code: Option<String>,
}

/// Reads the status column, which the schema's CHECK keeps to the three statuses.
fn status_at(r: &rusqlite::Row, idx: usize) -> rusqlite::Result<Status> {
    let text: String = r.get(idx)?;
    Status::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, format!("status `{text}`").into())
    })
}

/// Visits every order's id, status, total and stored lines (the JSON text, unparsed), the id and
/// lines as bytes borrowed from SQLite's row buffer (not checked as UTF-8 here: the invariants
/// compare ids as bytes and read the lines themselves), in order id order (byte order of the
/// text; a walk of the order id index, which the invariants merge with the other databases'
/// rows): a read of the whole table for the invariants, which at a million orders must not
/// allocate per row.
pub fn visit_order_totals(
    c: &rusqlite::Connection,
    mut visit: impl FnMut(&[u8], Status, i64, &[u8]),
) -> rusqlite::Result<()> {
    let mut stmt = c.prepare("SELECT order_id, status, total_cents, items FROM orders ORDER BY order_id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        // Matched as bytes, against each status's own text: no UTF-8 check per row.
        let text = r.get_ref(1)?.as_bytes()?;
        let status = [Status::Pending, Status::Confirmed, Status::Failed]
            .into_iter()
            .find(|s| s.as_str().as_bytes() == text)
            .ok_or_else(|| {
                let status = String::from_utf8_lossy(text);
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    format!("status `{status}`").into(),
                )
            })?;
        visit(r.get_ref(0)?.as_bytes()?, status, r.get_ref(2)?.as_i64()?, r.get_ref(3)?.as_bytes()?);
    }
    Ok(())
}

/// The outcomes of the orders whose idempotency key starts with `prefix`: a drill's or a load's
/// orders, found even when their client never got an answer.
pub fn outcomes_by_key_prefix(c: &rusqlite::Connection, prefix: &str) -> rusqlite::Result<Vec<Outcome>> {
    let mut stmt = c.prepare("SELECT status, failure FROM orders WHERE substr(idempotency_key, 1, ?1) = ?2")?;
    let rows = stmt.query_map(params![prefix.len() as i64, prefix], |r| {
        let failure: Option<String> = r.get(1)?;
        // Read as loose JSON: only the code matters, whatever else older rows carry.
        let failure_code = failure
            .and_then(|f| serde_json::from_str::<serde_json::Value>(&f).ok())
            .and_then(|f| f["code"].as_str().map(str::to_string));
        Ok(Outcome { status: status_at(r, 0)?, failure_code })
    })?;
    rows.collect()
}

/// The request hash as stored: its bytes when it is hex (half the size), else its text.
fn stored_hash(request_hash: &str) -> rusqlite::types::Value {
    match hex::decode(request_hash) {
        Ok(bytes) => rusqlite::types::Value::Blob(bytes),
        Err(_) => rusqlite::types::Value::Text(request_hash.to_string()),
    }
}

/// The order this key made, and whether its request hash is `hash` (compared as stored).
fn find_by_key(
    tx: &rusqlite::Connection,
    user_id: &str,
    key: &str,
    hash: &rusqlite::types::Value,
) -> rusqlite::Result<Option<(String, bool)>> {
    tx.prepare_cached("SELECT order_id, request_hash IS ?3 FROM orders WHERE user_id = ?1 AND idempotency_key = ?2")?
        .query_row(params![user_id, key, hash], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Where an order's events go: the order row's integer key, and its creation time, which
/// event times are stored relative to (a few bytes instead of eight).
#[derive(Clone, Copy, Debug)]
struct LogKey {
    order: i64,
    created_ms: i64,
}

fn insert_event(
    tx: &rusqlite::Connection,
    key: LogKey,
    seq: i64,
    at: i64,
    event: &Event,
    implied: &Implied,
) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO events (order_key, seq, kind, at, data) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![key.order, seq, event.code(), at - key.created_ms, event.compact_data(implied)])?;
    Ok(())
}

/// The order's log, decoded: `OrderPlaced` is rebuilt from the order row, which holds its fields.
pub fn load_events(c: &rusqlite::Connection, order_id: &str) -> rusqlite::Result<Vec<Recorded>> {
    let placed: Option<(i64, i64, Event, Implied)> = c
        .prepare_cached(
            "SELECT id, created_at, user_id, items, total_cents, currency, trace_id, payment_id, status
             FROM orders WHERE order_id = ?1",
        )?
        .query_row([order_id], |r| {
            let items: String = r.get(3)?;
            let items = events::items_from_stored(items.as_bytes())
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e)))?;
            let event = Event::OrderPlaced {
                user_id: r.get(2)?,
                items,
                total_cents: r.get(4)?,
                currency: r.get(5)?,
                trace_id: r.get(6)?,
            };
            let implied = Implied { payment_id: r.get(7)?, total_cents: r.get(4)?, status: Some(status_at(r, 8)?) };
            Ok((r.get(0)?, r.get(1)?, event, implied))
        })
        .optional()?;
    let Some((key, created_ms, placed, implied)) = placed else { return Ok(Vec::new()) };
    let mut stmt = c.prepare_cached("SELECT seq, kind, at, data FROM events WHERE order_key = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([key], |r| {
        let (seq, code, at, data): (i64, i64, i64, Option<String>) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let event = Event::from_stored(code, data.as_deref(), &implied, || placed.clone())
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Integer, Box::new(e)))?;
        Ok(Recorded { seq, at_ms: created_ms + at, event })
    })?;
    rows.collect()
}

pub fn view_of(s: &SagaState, events: &[Recorded]) -> OrderView {
    OrderView {
        id: s.order_id.clone(),
        user_id: s.user_id.clone(),
        items: s.items.clone(),
        total_cents: s.total_cents,
        currency: s.currency.clone(),
        status: s.status(),
        failure: s.failure().cloned(),
        payment_id: s.payment_id.clone(),
        trace_id: s.trace_id.clone(),
        created_at: rfc3339(s.created_ms),
        updated_at: rfc3339(s.updated_ms),
        steps: steps(events),
    }
}

pub fn event_views(events: &[Recorded]) -> Vec<EventView> {
    events
        .iter()
        .map(|r| EventView {
            seq: r.seq,
            kind: r.event.type_name().to_string(),
            at: rfc3339(r.at_ms),
            // The card token is for payment, not for display.
            data: match &r.event {
                Event::UserValidated { card_last4, .. } => serde_json::json!({"card_last4": card_last4}),
                e => e.data(),
            },
        })
        .collect()
}
