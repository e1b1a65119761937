//! The order's append-only event log and the saga state folded from it.
//!
//! Nothing about an order is stored that cannot be derived from its events: the saga decides
//! its next action from [`SagaState::next`], and the `steps` a user sees come from [`steps`].

use serde::{Deserialize, Serialize};

/// One line of an order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Item {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// The largest total an order may have, in cents (ten billion dollars): far above any real
/// basket, far below where `i64` arithmetic on sums of totals could wrap.
pub const MAX_TOTAL_CENTS: i64 = 1_000_000_000_000;

impl Item {
    /// The line's amount, or `None` if it does not fit in an `i64`.
    pub fn amount_cents(&self) -> Option<i64> {
        self.quantity.checked_mul(self.unit_price_cents)
    }
}

/// An order line as the order row stores it: `[product_id, quantity, unit_price_cents]`, the
/// field names left out (a third of the row's lines text); rows written before keep the object
/// form, read alike.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredItem {
    Row(String, i64, i64),
    Object(Item),
}

/// The lines as the order row stores them (see [`StoredItem`]).
pub fn stored_items(items: &[Item]) -> String {
    let rows: Vec<(&str, i64, i64)> =
        items.iter().map(|i| (i.product_id.as_str(), i.quantity, i.unit_price_cents)).collect();
    serde_json::to_string(&rows).unwrap_or_default()
}

/// The lines from the order row's text, in either form it holds.
pub fn items_from_stored(text: &[u8]) -> serde_json::Result<Vec<Item>> {
    let stored: Vec<StoredItem> = serde_json::from_slice(text)?;
    Ok(stored
        .into_iter()
        .map(|line| match line {
            StoredItem::Row(product_id, quantity, unit_price_cents) => Item { product_id, quantity, unit_price_cents },
            StoredItem::Object(item) => item,
        })
        .collect())
}

/// The sum of the lines' amounts, or `None` if any step would wrap or the sum would exceed
/// [`MAX_TOTAL_CENTS`]: an order that costs more than that is refused, never stored wrapped.
pub fn total_cents(items: &[Item]) -> Option<i64> {
    total_of_lines(items.iter().map(|i| (i.quantity, i.unit_price_cents)))
}

/// [`total_cents`] over (quantity, unit price) pairs, for readers that do not build [`Item`]s.
pub fn total_of_lines(lines: impl IntoIterator<Item = (i64, i64)>) -> Option<i64> {
    lines
        .into_iter()
        .try_fold(0i64, |sum, (quantity, price)| sum.checked_add(quantity.checked_mul(price)?))
        .filter(|total| (0..=MAX_TOTAL_CENTS).contains(total))
}

/// Why an order failed: the step, a stable code, and words for a human.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub step: String,
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    OrderPlaced {
        user_id: String,
        items: Vec<Item>,
        total_cents: i64,
        currency: String,
        trace_id: String,
    },
    /// The user may order, paying with this card. Only the token and the last four digits: the
    /// number stays in the card vault (SPEC section 17). Events written before tokens existed
    /// were scrubbed to their last four digits and have no token.
    UserValidated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        card_token: Option<String>,
        #[serde(default)]
        card_last4: String,
    },
    StockReservationRequested {},
    StockReserved {
        reservation_id: String,
    },
    PaymentRequested {},
    PaymentCaptured {
        payment_id: String,
        amount_cents: i64,
    },
    StockCommitRequested {},
    StockCommitted {},
    OrderConfirmed {},
    /// Written in the same transaction as the terminal event, with the outbox row.
    NotificationQueued {
        event_id: String,
        kind: String,
    },
    NotificationDelivered {
        notification_id: String,
        attempts: i64,
    },
    /// A business failure (or the saga timeout): compensation runs from here, in reverse.
    CompensationStarted {
        step: String,
        code: String,
        message: String,
    },
    PaymentRefundRequested {},
    PaymentRefunded {
        payment_id: String,
        refunded_cents: i64,
    },
    StockReleaseRequested {},
    StockReleased {},
    OrderFailed {
        step: String,
        code: String,
        message: String,
    },
    /// A transient failure of `step` (timeout, refused, 5xx); the step is tried again.
    StepRetried {
        step: String,
        attempt: i64,
        error: String,
    },
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::OrderPlaced { .. } => "OrderPlaced",
            Event::UserValidated { .. } => "UserValidated",
            Event::StockReservationRequested {} => "StockReservationRequested",
            Event::StockReserved { .. } => "StockReserved",
            Event::PaymentRequested {} => "PaymentRequested",
            Event::PaymentCaptured { .. } => "PaymentCaptured",
            Event::StockCommitRequested {} => "StockCommitRequested",
            Event::StockCommitted {} => "StockCommitted",
            Event::OrderConfirmed {} => "OrderConfirmed",
            Event::NotificationQueued { .. } => "NotificationQueued",
            Event::NotificationDelivered { .. } => "NotificationDelivered",
            Event::CompensationStarted { .. } => "CompensationStarted",
            Event::PaymentRefundRequested {} => "PaymentRefundRequested",
            Event::PaymentRefunded { .. } => "PaymentRefunded",
            Event::StockReleaseRequested {} => "StockReleaseRequested",
            Event::StockReleased {} => "StockReleased",
            Event::OrderFailed { .. } => "OrderFailed",
            Event::StepRetried { .. } => "StepRetried",
        }
    }

    /// The event's fields as the JSON text stored in the `data` column.
    pub fn data_json(&self) -> String {
        // Adjacently tagged events serialize as `{"type":"Name","data":{...}}`, type first: the
        // data is that text without its head and closing brace, with no second encoding.
        let full = serde_json::to_string(self).unwrap_or_default();
        let head = format!("{{\"type\":\"{}\",\"data\":", self.type_name());
        match full.strip_prefix(&head).and_then(|rest| rest.strip_suffix('}')) {
            Some(data) => data.to_string(),
            None => self.data().to_string(),
        }
    }

    /// The event's fields as stored in the `data` column.
    pub fn data(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => m.remove("data").unwrap_or(serde_json::Value::Null),
            _ => serde_json::Value::Null,
        }
    }

    pub fn from_parts(type_name: &str, data: serde_json::Value) -> Result<Event, serde_json::Error> {
        serde_json::from_value(serde_json::json!({"type": type_name, "data": data}))
    }
}

/// The stored form of the event log (SPEC section 18): each event is a small integer code and,
/// for events with fields, a JSON array of their values in [`Event::FIELDS`] order. The field
/// names are implied by the code, and `OrderPlaced`'s fields by the order row it created, so
/// neither is stored per event; trailing values the order row implies ([`Implied`]) are left
/// off too.
impl Event {
    /// Every event type in code order: the code of `NAMES[i]` is `i + 1`. Codes are stored; new
    /// types are appended, never inserted.
    pub const NAMES: [&'static str; 18] = [
        "OrderPlaced",
        "UserValidated",
        "StockReservationRequested",
        "StockReserved",
        "PaymentRequested",
        "PaymentCaptured",
        "StockCommitRequested",
        "StockCommitted",
        "OrderConfirmed",
        "NotificationQueued",
        "NotificationDelivered",
        "CompensationStarted",
        "PaymentRefundRequested",
        "PaymentRefunded",
        "StockReleaseRequested",
        "StockReleased",
        "OrderFailed",
        "StepRetried",
    ];

    /// The stored fields of each code, in the order their values are stored (index = code - 1).
    /// `OrderPlaced` stores none: they are the order row's columns.
    pub const FIELDS: [&'static [&'static str]; 18] = [
        &[],
        &["card_token", "card_last4"],
        &[],
        &["reservation_id"],
        &[],
        &["payment_id", "amount_cents"],
        &[],
        &[],
        &[],
        &["event_id", "kind"],
        &["notification_id", "attempts"],
        &["step", "code", "message"],
        &[],
        &["refunded_cents", "payment_id"],
        &[],
        &[],
        &["step", "code", "message"],
        &["step", "attempt", "error"],
    ];

    /// The event's stored type code.
    pub fn code(&self) -> i64 {
        let name = self.type_name();
        // Every type name is in NAMES (the unit test below walks them all), so the fallback
        // is never taken.
        Self::NAMES.iter().position(|n| *n == name).map_or(0, |i| i as i64 + 1)
    }

    /// The stored data: `None` when everything is implied by the code and the order row, else
    /// the field values as a JSON array, without the trailing ones `implied` gives.
    pub fn compact_data(&self, implied: &Implied) -> Option<String> {
        let code = self.code();
        let fields = usize::try_from(code - 1).ok().and_then(|i| Self::FIELDS.get(i)).filter(|f| !f.is_empty())?;
        let data = self.data();
        let mut values: Vec<serde_json::Value> =
            fields.iter().map(|f| data.get(f).cloned().unwrap_or(serde_json::Value::Null)).collect();
        while let Some(last) = values.last() {
            if implied.value(code, fields[values.len() - 1]).as_ref() != Some(last) {
                break;
            }
            values.pop();
        }
        if values.is_empty() {
            return None;
        }
        serde_json::to_string(&values).ok()
    }

    /// The event back from its stored code and data; `placed` builds an `OrderPlaced` from the
    /// order row, which holds its fields.
    pub fn from_stored(
        code: i64,
        data: Option<&str>,
        implied: &Implied,
        placed: impl FnOnce() -> Event,
    ) -> Result<Event, StoredEventError> {
        let i =
            usize::try_from(code - 1).ok().filter(|i| *i < Self::NAMES.len()).ok_or(StoredEventError::Code(code))?;
        if i == 0 {
            return Ok(placed());
        }
        let values: Vec<serde_json::Value> = match data {
            Some(text) => serde_json::from_str(text).map_err(StoredEventError::Data)?,
            None => Vec::new(),
        };
        let mut object: serde_json::Map<String, serde_json::Value> =
            Self::FIELDS[i].iter().map(|f| f.to_string()).zip(values).collect();
        for field in Self::FIELDS[i] {
            if !object.contains_key(*field) {
                if let Some(v) = implied.value(code, field) {
                    object.insert(field.to_string(), v);
                }
            }
        }
        Event::from_parts(Self::NAMES[i], serde_json::Value::Object(object)).map_err(StoredEventError::Data)
    }
}

/// What an order row says that some event fields repeat: those values are not stored in the
/// event when they match (a captured payment's id and amount, a refund's payment id, the kind of
/// the notification queued with the terminal event).
#[derive(Clone, Debug, Default)]
pub struct Implied {
    pub payment_id: Option<String>,
    pub total_cents: i64,
    pub status: Option<Status>,
}

impl Implied {
    fn value(&self, code: i64, field: &str) -> Option<serde_json::Value> {
        match (Event::NAMES.get(usize::try_from(code - 1).ok()?)?, field) {
            (&"PaymentCaptured" | &"PaymentRefunded", "payment_id") => {
                self.payment_id.clone().map(serde_json::Value::String)
            }
            (&"PaymentCaptured", "amount_cents") => Some(self.total_cents.into()),
            (&"NotificationQueued", "kind") => match self.status? {
                Status::Confirmed => Some("order_confirmed".into()),
                Status::Failed => Some("order_failed".into()),
                Status::Pending => None,
            },
            _ => None,
        }
    }
}

/// A stored event that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum StoredEventError {
    #[error("unknown event code {0}")]
    Code(i64),
    #[error("event data: {0}")]
    Data(serde_json::Error),
}

/// An event with its place in the log.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub seq: i64,
    pub at_ms: i64,
    pub event: Event,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pending,
    Confirmed,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Confirmed => "CONFIRMED",
            Status::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "PENDING" => Some(Status::Pending),
            "CONFIRMED" => Some(Status::Confirmed),
            "FAILED" => Some(Status::Failed),
            _ => None,
        }
    }

    /// A `status` filter of a list query: absent or empty is no filter, anything else must be
    /// a status; the error is the message for a 400.
    pub fn parse_filter(s: Option<&str>) -> Result<Option<Status>, String> {
        match s {
            None | Some("") => Ok(None),
            Some(s) => Status::parse(s)
                .map(Some)
                .ok_or_else(|| format!("unknown status `{s}`; use PENDING, CONFIRMED or FAILED")),
        }
    }

    /// Whether the saga is over (confirmed or failed).
    pub fn is_terminal(self) -> bool {
        self != Status::Pending
    }
}

/// What the saga does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    ValidateUser,
    ReserveStock,
    ChargePayment,
    CommitStock,
    Confirm,
    RefundPayment,
    ReleaseStock,
    MarkFailed,
    Done,
}

/// The order as folded from its events.
#[derive(Clone, Debug, Default)]
pub struct SagaState {
    pub order_id: String,
    pub user_id: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub currency: String,
    pub trace_id: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Whether the user was validated (at least once).
    pub validated: bool,
    /// The card to charge, once a validation carried one.
    pub card_token: Option<String>,
    pub reserve_requested: bool,
    pub reservation_id: Option<String>,
    pub charge_requested: bool,
    pub payment_id: Option<String>,
    pub commit_requested: bool,
    pub committed: bool,
    pub confirmed: bool,
    pub compensating: Option<Failure>,
    pub refund_requested: bool,
    pub refunded: bool,
    pub release_requested: bool,
    pub released: bool,
    pub failed: Option<Failure>,
    pub notification_queued: bool,
    pub notification_delivered: bool,
    /// Retries so far of the step in progress, for backoff across restarts.
    pub retries: i64,
    /// The log itself, as applied: the next event's sequence number is its length plus one.
    pub log: Vec<Recorded>,
}

impl SagaState {
    pub fn fold(order_id: &str, events: &[Recorded]) -> SagaState {
        let mut s = SagaState { order_id: order_id.to_string(), ..SagaState::default() };
        for r in events {
            s.apply(&r.event, r.at_ms);
        }
        s
    }

    pub fn apply(&mut self, event: &Event, at_ms: i64) {
        self.log.push(Recorded { seq: self.log.len() as i64 + 1, at_ms, event: event.clone() });
        self.updated_ms = at_ms;
        if !matches!(event, Event::StepRetried { .. }) {
            self.retries = 0;
        }
        match event {
            Event::OrderPlaced { user_id, items, total_cents, currency, trace_id } => {
                self.user_id = user_id.clone();
                self.items = items.clone();
                self.total_cents = *total_cents;
                self.currency = currency.clone();
                self.trace_id = trace_id.clone();
                self.created_ms = at_ms;
            }
            Event::UserValidated { card_token, .. } => {
                self.validated = true;
                // A scrubbed event has no token: keep one a later validation brought.
                if card_token.is_some() {
                    self.card_token = card_token.clone();
                }
            }
            Event::StockReservationRequested {} => self.reserve_requested = true,
            Event::StockReserved { reservation_id } => self.reservation_id = Some(reservation_id.clone()),
            Event::PaymentRequested {} => self.charge_requested = true,
            Event::PaymentCaptured { payment_id, .. } => self.payment_id = Some(payment_id.clone()),
            Event::StockCommitRequested {} => self.commit_requested = true,
            Event::StockCommitted {} => self.committed = true,
            Event::OrderConfirmed {} => self.confirmed = true,
            Event::NotificationQueued { .. } => self.notification_queued = true,
            Event::NotificationDelivered { .. } => self.notification_delivered = true,
            Event::CompensationStarted { step, code, message } => {
                self.compensating = Some(Failure { step: step.clone(), code: code.clone(), message: message.clone() })
            }
            Event::PaymentRefundRequested {} => self.refund_requested = true,
            Event::PaymentRefunded { .. } => self.refunded = true,
            Event::StockReleaseRequested {} => self.release_requested = true,
            Event::StockReleased {} => self.released = true,
            Event::OrderFailed { step, code, message } => {
                self.failed = Some(Failure { step: step.clone(), code: code.clone(), message: message.clone() })
            }
            Event::StepRetried { attempt, .. } => self.retries = *attempt,
        }
    }

    pub fn status(&self) -> Status {
        if self.confirmed {
            Status::Confirmed
        } else if self.failed.is_some() {
            Status::Failed
        } else {
            Status::Pending
        }
    }

    /// The failure users see: final once FAILED, already known while compensating.
    pub fn failure(&self) -> Option<&Failure> {
        self.failed.as_ref().or(self.compensating.as_ref())
    }

    /// The next action. Compensation undoes, in reverse, every step that was *requested*, not
    /// only those known to have succeeded: a request whose answer was lost may have been applied,
    /// and refund and release are no-ops (tombstones) where nothing happened.
    pub fn next(&self) -> Action {
        if self.confirmed || self.failed.is_some() {
            return Action::Done;
        }
        if self.compensating.is_some() {
            if self.charge_requested && !self.refunded {
                return Action::RefundPayment;
            }
            if self.reserve_requested && !self.released {
                return Action::ReleaseStock;
            }
            return Action::MarkFailed;
        }
        if !self.validated {
            Action::ValidateUser
        } else if self.reservation_id.is_none() {
            Action::ReserveStock
        } else if self.payment_id.is_none() {
            // A saga validated before card tokens existed has none to charge: it asks the user
            // service again, then charges.
            if self.card_token.is_none() {
                Action::ValidateUser
            } else {
                Action::ChargePayment
            }
        } else if !self.committed {
            Action::CommitStock
        } else {
            Action::Confirm
        }
    }
}

/// One saga step as `shop order place` and `shop inspect order` show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub step: String,
    pub service: String,
    /// `ok`, `pending`, or the failure code
    pub outcome: String,
    pub duration_ms: i64,
    pub attempts: i64,
    /// true for refund and release
    pub compensation: bool,
}

/// The steps of a saga, derived from its log in the order they started.
pub fn steps(events: &[Recorded]) -> Vec<Step> {
    struct Open {
        step: &'static str,
        service: &'static str,
        start: i64,
        attempts: i64,
        compensation: bool,
    }
    let mut out = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut last_at = events.first().map(|e| e.at_ms).unwrap_or(0);
    let begin = |open: &mut Vec<Open>, step, service, start, compensation| {
        open.push(Open { step, service, start, attempts: 1, compensation });
    };
    let close = |open: &mut Vec<Open>, out: &mut Vec<Step>, step: &str, at: i64, outcome: &str| {
        if let Some(i) = open.iter().position(|o| o.step == step) {
            let o = open.remove(i);
            out.push(Step {
                step: o.step.into(),
                service: o.service.into(),
                outcome: outcome.into(),
                duration_ms: (at - o.start).max(0),
                attempts: o.attempts,
                compensation: o.compensation,
            });
        }
    };
    for r in events {
        let at = r.at_ms;
        match &r.event {
            Event::OrderPlaced { .. } => begin(&mut open, "validate_user", "user", at, false),
            Event::UserValidated { .. } => close(&mut open, &mut out, "validate_user", at, "ok"),
            Event::StockReservationRequested {} => begin(&mut open, "reserve_stock", "inventory", at, false),
            Event::StockReserved { .. } => close(&mut open, &mut out, "reserve_stock", at, "ok"),
            Event::PaymentRequested {} => begin(&mut open, "charge_payment", "payment", at, false),
            Event::PaymentCaptured { .. } => close(&mut open, &mut out, "charge_payment", at, "ok"),
            Event::StockCommitRequested {} => begin(&mut open, "commit_stock", "inventory", at, false),
            Event::StockCommitted {} => {
                close(&mut open, &mut out, "commit_stock", at, "ok");
                begin(&mut open, "confirm", "order", at, false);
            }
            Event::OrderConfirmed {} => close(&mut open, &mut out, "confirm", at, "ok"),
            Event::CompensationStarted { step, code, .. } => close(&mut open, &mut out, step, at, code),
            Event::PaymentRefundRequested {} => begin(&mut open, "refund_payment", "payment", at, true),
            Event::PaymentRefunded { .. } => close(&mut open, &mut out, "refund_payment", at, "ok"),
            Event::StockReleaseRequested {} => begin(&mut open, "release_stock", "inventory", at, true),
            Event::StockReleased {} => close(&mut open, &mut out, "release_stock", at, "ok"),
            Event::NotificationQueued { .. } => begin(&mut open, "notify", "notification", at, false),
            Event::NotificationDelivered { attempts, .. } => {
                if let Some(o) = open.iter_mut().find(|o| o.step == "notify") {
                    o.attempts = (*attempts).max(1);
                }
                close(&mut open, &mut out, "notify", at, "ok");
            }
            Event::StepRetried { step, .. } => {
                if let Some(o) = open.iter_mut().find(|o| o.step == step) {
                    o.attempts += 1;
                }
            }
            Event::OrderFailed { .. } => {}
        }
        last_at = last_at.max(at);
    }
    for o in open {
        out.push(Step {
            step: o.step.into(),
            service: o.service.into(),
            outcome: "pending".into(),
            duration_ms: (last_at - o.start).max(0),
            attempts: o.attempts,
            compensation: o.compensation,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(quantity: i64, unit_price_cents: i64) -> Item {
        Item { product_id: "p".into(), quantity, unit_price_cents }
    }

    #[test]
    fn a_total_that_would_wrap_or_exceed_the_limit_is_none() {
        assert_eq!(total_cents(&[line(2, 250), line(1, 1)]), Some(501));
        assert_eq!(total_cents(&[line(1000, 18_446_744_073_709_552)]), None);
        assert_eq!(total_cents(&[line(1, i64::MAX), line(1, 1)]), None);
        assert_eq!(total_cents(&[line(1000, 1_000_000_000)]), Some(MAX_TOTAL_CENTS));
        assert_eq!(total_cents(&[line(1000, 1_000_000_000), line(1, 1)]), None);
    }

    fn log(events: Vec<Event>) -> Vec<Recorded> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Recorded { seq: i as i64 + 1, at_ms: 1000 + 10 * i as i64, event })
            .collect()
    }

    fn placed() -> Event {
        Event::OrderPlaced {
            user_id: "alice".into(),
            items: vec![Item { product_id: "sku-1".into(), quantity: 2, unit_price_cents: 250 }],
            total_cents: 500,
            currency: "USD".into(),
            trace_id: "t".into(),
        }
    }

    fn validated() -> Event {
        Event::UserValidated { card_token: Some("card_1".into()), card_last4: "4242".into() }
    }

    #[test]
    fn a_scrubbed_validation_without_a_token_validates_again_before_charging_only() {
        let scrubbed = Event::from_parts("UserValidated", serde_json::json!({"card_last4": "4242"})).unwrap();
        assert_eq!(scrubbed, Event::UserValidated { card_token: None, card_last4: "4242".into() });
        let mut events = vec![placed(), scrubbed];
        // Validated: the next step is still the reservation.
        assert_eq!(SagaState::fold("o", &log(events.clone())).next(), Action::ReserveStock);
        events.extend([Event::StockReservationRequested {}, Event::StockReserved { reservation_id: "r".into() }]);
        // No token to charge with: validate again, then charge with the token it brings.
        assert_eq!(SagaState::fold("o", &log(events.clone())).next(), Action::ValidateUser);
        events.push(validated());
        let s = SagaState::fold("o", &log(events.clone()));
        assert_eq!((s.next(), s.card_token.as_deref()), (Action::ChargePayment, Some("card_1")));
        // Already charged: no card is needed any more, whatever the log holds.
        let mut charged = vec![placed(), Event::UserValidated { card_token: None, card_last4: "4242".into() }];
        charged.extend([
            Event::StockReservationRequested {},
            Event::StockReserved { reservation_id: "r".into() },
            Event::PaymentRequested {},
            Event::PaymentCaptured { payment_id: "p".into(), amount_cents: 500 },
        ]);
        assert_eq!(SagaState::fold("o", &log(charged)).next(), Action::CommitStock);
    }

    #[test]
    fn the_happy_path_walks_every_step_in_order() {
        let mut events = vec![placed()];
        let expected =
            [Action::ValidateUser, Action::ReserveStock, Action::ChargePayment, Action::CommitStock, Action::Confirm];
        let results = [
            vec![validated()],
            vec![Event::StockReservationRequested {}, Event::StockReserved { reservation_id: "res_1".into() }],
            vec![Event::PaymentRequested {}, Event::PaymentCaptured { payment_id: "pay_1".into(), amount_cents: 500 }],
            vec![Event::StockCommitRequested {}, Event::StockCommitted {}],
            vec![Event::OrderConfirmed {}],
        ];
        for (want, result) in expected.iter().zip(results) {
            assert_eq!(&SagaState::fold("o", &log(events.clone())).next(), want);
            events.extend(result);
        }
        let s = SagaState::fold("o", &log(events.clone()));
        assert_eq!((s.next(), s.status()), (Action::Done, Status::Confirmed));
        let names: Vec<_> = steps(&log(events)).into_iter().map(|s| (s.step, s.outcome)).collect();
        assert_eq!(names.len(), 5);
        assert!(names.iter().all(|(_, o)| o == "ok"));
    }

    #[test]
    fn a_declined_card_compensates_what_was_requested_in_reverse() {
        let events = vec![
            placed(),
            validated(),
            Event::StockReservationRequested {},
            Event::StockReserved { reservation_id: "res_1".into() },
            Event::PaymentRequested {},
            Event::CompensationStarted {
                step: "charge_payment".into(),
                code: "card_declined".into(),
                message: "no".into(),
            },
        ];
        let s = SagaState::fold("o", &log(events.clone()));
        // The charge was requested, so a refund (a no-op for a decline) comes first, then release.
        assert_eq!(s.next(), Action::RefundPayment);
        let mut more = events.clone();
        more.extend([
            Event::PaymentRefundRequested {},
            Event::PaymentRefunded { payment_id: "pay_1".into(), refunded_cents: 0 },
        ]);
        assert_eq!(SagaState::fold("o", &log(more.clone())).next(), Action::ReleaseStock);
        more.extend([Event::StockReleaseRequested {}, Event::StockReleased {}]);
        assert_eq!(SagaState::fold("o", &log(more.clone())).next(), Action::MarkFailed);
        more.push(Event::OrderFailed {
            step: "charge_payment".into(),
            code: "card_declined".into(),
            message: "no".into(),
        });
        let s = SagaState::fold("o", &log(more.clone()));
        assert_eq!((s.status(), s.failure().map(|f| f.code.as_str())), (Status::Failed, Some("card_declined")));
        let st = steps(&log(more));
        assert_eq!(st.iter().find(|s| s.step == "charge_payment").unwrap().outcome, "card_declined");
        assert!(st.iter().find(|s| s.step == "release_stock").unwrap().compensation);
    }

    #[test]
    fn a_failure_before_any_request_needs_no_compensation() {
        let events = vec![
            placed(),
            Event::CompensationStarted {
                step: "validate_user".into(),
                code: "user_inactive".into(),
                message: "x".into(),
            },
        ];
        assert_eq!(SagaState::fold("o", &log(events)).next(), Action::MarkFailed);
    }

    #[test]
    fn retries_are_counted_as_attempts() {
        let events = vec![
            placed(),
            validated(),
            Event::StockReservationRequested {},
            Event::StepRetried { step: "reserve_stock".into(), attempt: 1, error: "refused".into() },
            Event::StepRetried { step: "reserve_stock".into(), attempt: 2, error: "refused".into() },
            Event::StockReserved { reservation_id: "r".into() },
        ];
        let st = steps(&log(events));
        assert_eq!(st[1].attempts, 3);
    }

    #[test]
    fn the_stored_data_text_is_the_events_fields() {
        let e = Event::StockReserved { reservation_id: "res_1".into() };
        assert_eq!(e.data_json(), r#"{"reservation_id":"res_1"}"#);
        assert_eq!(Event::PaymentRequested {}.data_json(), "{}");
        let e = placed();
        let back = Event::from_parts(e.type_name(), serde_json::from_str(&e.data_json()).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn every_event_round_trips_through_its_code_and_compact_data() {
        let all = vec![
            placed(),
            validated(),
            Event::UserValidated { card_token: None, card_last4: "4242".into() },
            Event::StockReservationRequested {},
            Event::StockReserved { reservation_id: "res_1".into() },
            Event::PaymentRequested {},
            Event::PaymentCaptured { payment_id: "pay_1".into(), amount_cents: 500 },
            Event::StockCommitRequested {},
            Event::StockCommitted {},
            Event::OrderConfirmed {},
            Event::NotificationQueued { event_id: "evt_1".into(), kind: "order_confirmed".into() },
            Event::NotificationDelivered { notification_id: "ntf_1".into(), attempts: 2 },
            Event::CompensationStarted { step: "s".into(), code: "c".into(), message: "m".into() },
            Event::PaymentRefundRequested {},
            Event::PaymentRefunded { payment_id: "pay_1".into(), refunded_cents: 500 },
            Event::StockReleaseRequested {},
            Event::StockReleased {},
            Event::OrderFailed { step: "s".into(), code: "c".into(), message: "m".into() },
            Event::StepRetried { step: "s".into(), attempt: 1, error: "e".into() },
        ];
        let mut codes: Vec<i64> = all.iter().map(Event::code).collect();
        codes.dedup();
        assert_eq!(codes, (1..=18).collect::<Vec<_>>());
        let row = Implied { payment_id: Some("pay_1".into()), total_cents: 500, status: Some(Status::Confirmed) };
        for implied in [Implied::default(), row.clone()] {
            for e in &all {
                let data = e.compact_data(&implied);
                assert_eq!(&Event::from_stored(e.code(), data.as_deref(), &implied, placed).unwrap(), e, "{data:?}");
            }
        }
        let none = Implied::default();
        assert_eq!(
            Event::StockReserved { reservation_id: "r".into() }.compact_data(&none).as_deref(),
            Some(r#"["r"]"#)
        );
        assert_eq!(placed().compact_data(&none), None);
        // What the row holds is left off; what differs from it is kept.
        assert_eq!(Event::PaymentCaptured { payment_id: "pay_1".into(), amount_cents: 500 }.compact_data(&row), None);
        assert_eq!(
            Event::PaymentCaptured { payment_id: "pay_1".into(), amount_cents: 400 }.compact_data(&row).as_deref(),
            Some(r#"["pay_1",400]"#)
        );
        let queued = Event::NotificationQueued { event_id: "evt_1".into(), kind: "order_confirmed".into() };
        assert_eq!(queued.compact_data(&row).as_deref(), Some(r#"["evt_1"]"#));
        assert!(Event::from_stored(19, None, &none, placed).is_err());
    }

    #[test]
    fn events_round_trip_through_type_and_data() {
        let e = Event::StockReserved { reservation_id: "res_1".into() };
        assert_eq!(Event::from_parts(e.type_name(), e.data()).unwrap(), e);
        let e = Event::PaymentRequested {};
        assert_eq!(Event::from_parts(e.type_name(), e.data()).unwrap(), e);
    }
}
