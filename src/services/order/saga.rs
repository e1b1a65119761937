//! The saga executor: drives one order from PENDING to CONFIRMED or FAILED.
//!
//! Each step is persisted (a `…Requested` event) before the call it names, every call is keyed
//! by the order id so a repeat is harmless, and the next action is always derived from the log.
//! A crash at any point therefore resumes exactly where it stopped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use tokio::sync::{watch, Notify};

use super::events::{Action, Event, SagaState};
use super::store::{view_of, OrderView, Store};
use crate::plumbing::client::{backoff, encode_component, CallError, ServiceClient};
use crate::plumbing::spans::SpanStore;
use crate::plumbing::time::now_ms;
use crate::plumbing::trace::TraceCtx;
use crate::services::inventory::{Line, Reservation};
use crate::services::payment::Payment;
use crate::services::user::User;

pub struct Saga {
    pub store: Store,
    client: ServiceClient,
    spans: Arc<SpanStore>,
    timeout_ms: i64,
    /// Sagas running in this process; each receiver gets the final order when the saga ends.
    running: Mutex<HashMap<String, watch::Receiver<Option<Arc<OrderView>>>>>,
    /// Wakes the outbox relay when a notification is queued.
    pub relay_wake: Arc<Notify>,
    /// Test hook: exit right after this event is persisted.
    crash_after: Option<String>,
    /// Users validated in the last moments: a burst of orders by one user costs one lookup.
    users: Mutex<HashMap<String, (User, std::time::Instant)>>,
}

/// How long a validated user is trusted; as long as the gateway trusts a token.
const USER_CACHE_TTL: Duration = Duration::from_secs(2);

/// How a step's calls ended.
enum Outcome<T> {
    Done(T),
    /// A business refusal: (code, message).
    Refused(String, String),
    /// `saga_timeout` passed while the step kept failing transiently.
    TimedOut(String),
}

impl Saga {
    pub fn new(
        store: Store,
        client: ServiceClient,
        spans: Arc<SpanStore>,
        saga_timeout: Duration,
        crash_after: Option<String>,
    ) -> Saga {
        Saga {
            store,
            client,
            spans,
            timeout_ms: saga_timeout.as_millis() as i64,
            running: Mutex::new(HashMap::new()),
            relay_wake: Arc::new(Notify::new()),
            crash_after,
            users: Mutex::new(HashMap::new()),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Starts driving `order_id` unless it already runs here. `state` skips reloading the log
    /// for an order that was just placed; `parent` is the span of the request that placed it.
    pub fn start(self: &Arc<Self>, order_id: &str, state: Option<SagaState>, parent: Option<TraceCtx>) {
        let tx = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(order_id) {
                return;
            }
            let (tx, rx) = watch::channel(None);
            running.insert(order_id.to_string(), rx);
            tx
        };
        let me = self.clone();
        let order_id = order_id.to_string();
        let span = tracing::info_span!(
            "saga",
            order_id = order_id.as_str(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty
        );
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let last = me.drive(&order_id, state, parent).await;
                // Waiters get the order from memory: no read of what was just written.
                let _ = tx.send(last.map(|s| Arc::new(view_of(&s, &s.log))));
                me.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&order_id);
            },
            span,
        ));
    }

    /// Waits up to `budget` for the saga of `order_id` to end, if it runs here; the order as it
    /// ended, when this process ran it to the end.
    pub async fn wait(&self, order_id: &str, budget: Duration) -> Option<Arc<OrderView>> {
        let rx = self.running.lock().unwrap_or_else(|p| p.into_inner()).get(order_id).cloned();
        let mut rx = rx?;
        let _ = tokio::time::timeout(budget, rx.changed()).await;
        let view = rx.borrow().clone();
        view
    }

    /// Runs the saga to its end and returns the final state (`None` if it could not run here).
    async fn drive(&self, order_id: &str, state: Option<SagaState>, parent: Option<TraceCtx>) -> Option<SagaState> {
        let started_us = crate::plumbing::time::now_us();
        let resumed = state.is_none();
        let mut state = match state {
            Some(s) => s,
            None => {
                match self.store.claim(order_id).await {
                    Ok(true) => {}
                    Ok(false) => return None, // terminal, or another instance runs it
                    Err(e) => {
                        tracing::error!(order_id, error = %e, "cannot claim saga; the resume scan will try again");
                        return None;
                    }
                }
                match self.store.events(order_id).await {
                    Ok(events) => SagaState::fold(order_id, &events),
                    Err(e) => {
                        tracing::error!(order_id, error = %e, "cannot load saga; the resume scan will try again");
                        return None;
                    }
                }
            }
        };
        // The saga is one span of the order's trace; every call it makes is a child of it. It
        // keeps the caller's sampled flag and `tracestate`: from the request that placed the
        // order, or, resumed, as the order row kept them.
        let trace = match &parent {
            Some(p) if p.trace_id == state.trace_id => p.child(),
            _ => {
                let (sampled, tracestate) = self.store.trace_context(order_id).await.unwrap_or((true, None));
                TraceCtx { sampled, tracestate, ..TraceCtx::resume(&state.trace_id) }
            }
        };
        // Every log line of the saga carries its ids (the span opened in `start`).
        tracing::Span::current().record("trace_id", trace.trace_id.as_str()).record("span_id", trace.span_id.as_str());
        loop {
            let action = state.next();
            let result = match action {
                Action::Done => break,
                Action::ValidateUser => self.validate_user(&mut state, &trace).await,
                Action::ReserveStock => self.reserve(&mut state, &trace).await,
                Action::ChargePayment => self.charge(&mut state, &trace).await,
                Action::CommitStock => self.commit(&mut state, &trace).await,
                Action::Confirm => {
                    self.finish(&mut state, &trace, vec![Event::OrderConfirmed {}], "order_confirmed").await
                }
                Action::RefundPayment => self.refund(&mut state, &trace).await,
                Action::ReleaseStock => self.release(&mut state, &trace).await,
                Action::MarkFailed => {
                    let f = state
                        .compensating
                        .clone()
                        .unwrap_or_else(|| unreachable!("MarkFailed only while compensating"));
                    self.finish(
                        &mut state,
                        &trace,
                        vec![Event::OrderFailed { step: f.step, code: f.code, message: f.message }],
                        "order_failed",
                    )
                    .await
                }
            };
            if let Err(e) = result {
                // Another instance may have taken the saga over while this one was paused or
                // slow past its lease, and written the step first: it runs it now, and this one
                // stops rather than retry a write that can never be its own.
                if let Ok(false) = self.store.claim(order_id).await {
                    tracing::info!(
                        order_id,
                        error = %e,
                        "saga taken over by another instance (this one held it past its lease); leaving it"
                    );
                    return None;
                }
                // The database itself failed (disk full, locked for too long). The state in
                // memory may hold events that were not committed, so it is rebuilt from the log
                // before anything else is done; the same action is then retried.
                tracing::error!(order_id, error = %e, "saga could not persist a step; retrying");
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Ok(events) = self.store.events(order_id).await {
                        state = SagaState::fold(order_id, &events);
                        break;
                    }
                }
            }
        }
        let name = if resumed { format!("saga {order_id} (resumed)") } else { format!("saga {order_id}") };
        let parent_id = parent.as_ref().map(|p| p.span_id.as_str());
        self.spans.record(&trace, parent_id, name, started_us, state.status().as_str().to_string());
        if matches!(state.status(), super::events::Status::Failed) {
            tracing::info!(status = "FAILED", "saga finished: order failed and compensated");
        } else {
            tracing::debug!(status = state.status().as_str(), "saga finished");
        }
        Some(state)
    }

    /// Persists `events` (applied to `state` first) and honours the crash hook.
    async fn record(
        &self,
        state: &mut SagaState,
        events: Vec<Event>,
        outbox: Option<(String, String)>,
    ) -> anyhow::Result<()> {
        // Applied in place: if the commit fails, the caller's error path rebuilds the state from
        // the log, so nothing uncommitted is ever acted on.
        let now = now_ms();
        let mut events = events;
        for e in &events {
            state.apply(e, now);
        }
        // The next step's intent goes into the same commit as this step's result: it is still
        // persisted before its call, at one commit per step instead of two.
        if let Some(intent) = next_intent(state) {
            state.apply(&intent, now);
            events.push(intent);
        }
        let crash = self.crash_after.is_some().then(|| events.clone());
        self.store.append(state, events, outbox).await?;
        for e in crash.iter().flatten() {
            self.crash_point(&state.order_id, e);
        }
        Ok(())
    }

    /// `user_id` as validated within the last moments, if it was.
    pub fn cached_user(&self, user_id: &str) -> Option<User> {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.get(user_id).filter(|(_, at)| at.elapsed() < USER_CACHE_TTL).map(|(u, _)| u.clone())
    }

    /// The test hook `SHOP_CRASH_AFTER=EVENT`: exit, as a crash would, once `event` is persisted.
    pub fn crash_point(&self, order_id: &str, event: &Event) {
        if self.crash_after.as_deref() == Some(event.type_name()) {
            tracing::warn!(order_id, point = event.type_name(), "SHOP_CRASH_AFTER reached; exiting as a crash would");
            std::process::exit(70);
        }
    }

    fn deadline_passed(&self, state: &SagaState) -> bool {
        now_ms() > state.created_ms + self.timeout_ms
    }

    /// Calls `f` until it succeeds, is refused for a business reason, or (for forward steps)
    /// `saga_timeout` passes. Each transient failure is logged on the order as `StepRetried`.
    async fn attempt<T, F, Fut>(
        &self,
        state: &mut SagaState,
        step: &str,
        forward: bool,
        mut f: F,
    ) -> anyhow::Result<Outcome<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        loop {
            if forward && self.deadline_passed(state) {
                return Ok(Outcome::TimedOut(format!("`{step}` did not succeed within the saga timeout")));
            }
            match f().await {
                Ok(v) => return Ok(Outcome::Done(v)),
                Err(e) if e.is_transient() => {
                    let attempt = state.retries + 1;
                    tracing::warn!(order_id = %state.order_id, step, attempt, error = %e, "transient failure; retrying");
                    self.record(
                        state,
                        vec![Event::StepRetried { step: step.into(), attempt, error: e.to_string() }],
                        None,
                    )
                    .await?;
                    let wait = backoff(attempt.min(20) as u32, Duration::from_millis(50), Duration::from_secs(2));
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    let code = e.code().unwrap_or("rejected").to_string();
                    return Ok(Outcome::Refused(code, e.message()));
                }
            }
        }
    }

    /// Turns a refusal or timeout of `step` into `CompensationStarted`.
    async fn fail_step<T>(&self, state: &mut SagaState, step: &str, outcome: Outcome<T>) -> anyhow::Result<Option<T>> {
        let (code, message) = match outcome {
            Outcome::Done(v) => return Ok(Some(v)),
            Outcome::Refused(code, message) => (code, message),
            Outcome::TimedOut(message) => ("timeout".to_string(), message),
        };
        tracing::info!(order_id = %state.order_id, step, code, "step failed; compensating");
        self.record(state, vec![Event::CompensationStarted { step: step.into(), code, message }], None).await?;
        Ok(None)
    }

    async fn validate_user(&self, state: &mut SagaState, trace: &TraceCtx) -> anyhow::Result<()> {
        let path = format!("/v1/users/{}", encode_component(&state.user_id));
        let cached = self.cached_user(&state.user_id);
        let outcome = match cached {
            Some(user) => Outcome::Done(user),
            None => {
                self.attempt(state, "validate_user", true, || {
                    self.client.call::<(), User>("user", Method::GET, &path, None, Some(trace))
                })
                .await?
            }
        };
        if let Outcome::Done(user) = &outcome {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            if users.len() > 10_000 {
                users.clear(); // bounded: a cache, not a copy of the user table
            }
            users.insert(user.user_id.clone(), (user.clone(), std::time::Instant::now()));
        }
        let outcome = match outcome {
            Outcome::Done(u) if !u.active => {
                Outcome::Refused("user_inactive".into(), format!("user `{}` is not active", u.user_id))
            }
            Outcome::Refused(code, _) if code == "not_found" => {
                Outcome::Refused("unknown_user".into(), format!("no user `{}`", state.user_id))
            }
            other => other,
        };
        if let Some(user) = self.fail_step(state, "validate_user", outcome).await? {
            let event = Event::UserValidated { card_token: Some(user.card_token), card_last4: user.card_last4 };
            self.record(state, vec![event], None).await?;
        }
        Ok(())
    }

    async fn reserve(&self, state: &mut SagaState, trace: &TraceCtx) -> anyhow::Result<()> {
        if !state.reserve_requested {
            self.record(state, vec![Event::StockReservationRequested {}], None).await?;
        }
        let body = serde_json::json!({
            "order_id": state.order_id,
            "items": state.items.iter().map(|i| Line { product_id: i.product_id.clone(), quantity: i.quantity }).collect::<Vec<_>>(),
        });
        let outcome = self
            .attempt(state, "reserve_stock", true, || {
                self.client.call::<_, Reservation>(
                    "inventory",
                    Method::POST,
                    "/v1/reservations",
                    Some(&body),
                    Some(trace),
                )
            })
            .await?;
        let outcome = match outcome {
            Outcome::Refused(code, msg) if code == "reservation_released" => {
                Outcome::Refused("reservation_expired".into(), msg)
            }
            other => other,
        };
        if let Some(r) = self.fail_step(state, "reserve_stock", outcome).await? {
            self.record(state, vec![Event::StockReserved { reservation_id: r.reservation_id }], None).await?;
        }
        Ok(())
    }

    /// Charges once. When an attempt's outcome is unknown (a timeout, a reset), the payment
    /// service is asked by order id before anything else is done.
    async fn charge(&self, state: &mut SagaState, trace: &TraceCtx) -> anyhow::Result<()> {
        if !state.charge_requested {
            self.record(state, vec![Event::PaymentRequested {}], None).await?;
        }
        let body = serde_json::json!({
            "order_id": state.order_id,
            "user_id": state.user_id,
            "amount_cents": state.total_cents,
            "card_token": state.card_token.clone().unwrap_or_default(),
        });
        let lookup = format!("/v1/payments/by-order/{}", state.order_id);
        let unknown_cell = std::sync::atomic::AtomicBool::new(false);
        let (unknown, body, lookup, client) = (&unknown_cell, &body, &lookup, &self.client);
        let outcome = self
            .attempt(state, "charge_payment", true, || async move {
                if unknown.load(std::sync::atomic::Ordering::Relaxed) {
                    match client.call::<(), Payment>("payment", Method::GET, lookup, None, Some(trace)).await {
                        Ok(p) => return Ok(p),
                        Err(e) if e.status() == Some(404) => {} // never arrived: charging again is safe
                        Err(e) => return Err(e),
                    }
                }
                let result =
                    client.call::<_, Payment>("payment", Method::POST, "/v1/payments", Some(body), Some(trace)).await;
                unknown.store(matches!(&result, Err(e) if e.outcome_unknown()), std::sync::atomic::Ordering::Relaxed);
                result
            })
            .await?;
        let outcome = match outcome {
            Outcome::Done(p) if p.status == "declined" => {
                let code = p.decline_code.unwrap_or_else(|| "card_declined".into());
                let message = match code.as_str() {
                    "insufficient_funds" => "the card has insufficient funds".to_string(),
                    _ => "the card was declined".to_string(),
                };
                Outcome::Refused(code, message)
            }
            Outcome::Done(p) if p.status != "captured" => {
                Outcome::Refused("payment_voided".into(), format!("payment {} is {}", p.payment_id, p.status))
            }
            other => other,
        };
        if let Some(p) = self.fail_step(state, "charge_payment", outcome).await? {
            self.record(
                state,
                vec![Event::PaymentCaptured { payment_id: p.payment_id, amount_cents: p.captured_cents }],
                None,
            )
            .await?;
        }
        Ok(())
    }

    async fn commit(&self, state: &mut SagaState, trace: &TraceCtx) -> anyhow::Result<()> {
        if !state.commit_requested {
            self.record(state, vec![Event::StockCommitRequested {}], None).await?;
        }
        let path = format!("/v1/reservations/{}/commit", state.order_id);
        // Once paid, the order goes through unless the reservation is gone: the deadline is
        // not applied here, because compensating now would refund a customer we could serve.
        let outcome = self
            .attempt(state, "commit_stock", false, || {
                self.client.call::<(), Reservation>("inventory", Method::POST, &path, None, Some(trace))
            })
            .await?;
        let outcome = match outcome {
            Outcome::Refused(_, msg) => Outcome::Refused("reservation_expired".into(), msg),
            other => other,
        };
        if self.fail_step(state, "commit_stock", outcome).await?.is_some() {
            // Committed and confirmed in one transaction, with the notification's outbox row.
            let events = vec![Event::StockCommitted {}, Event::OrderConfirmed {}];
            self.finish(state, trace, events, "order_confirmed").await?;
        }
        Ok(())
    }

    /// Compensations never give up: a refund owed while payment is down is paid when it returns.
    async fn refund(&self, state: &mut SagaState, trace: &TraceCtx) -> anyhow::Result<()> {
        if !state.refund_requested {
            self.record(state, vec![Event::PaymentRefundRequested {}], None).await?;
        }
        let path = format!("/v1/payments/by-order/{}/refund", state.order_id);
        let body = serde_json::json!({"user_id": state.user_id});
        loop {
            let outcome = self
                .attempt(state, "refund_payment", false, || {
                    self.client.call::<_, Payment>("payment", Method::POST, &path, Some(&body), Some(trace))
                })
                .await?;
            match outcome {
                Outcome::Done(p) => {
                    let event = Event::PaymentRefunded { payment_id: p.payment_id, refunded_cents: p.refunded_cents };
                    return self.record(state, vec![event], None).await;
                }
                // A 4xx on a refund is a bug, not a reason to keep the money: log loudly, retry slowly.
                Outcome::Refused(_, msg) | Outcome::TimedOut(msg) => {
                    tracing::error!(order_id = %state.order_id, error = %msg, "refund refused; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    async fn release(&self, state: &mut SagaState, trace: &TraceCtx) -> anyhow::Result<()> {
        if !state.release_requested {
            self.record(state, vec![Event::StockReleaseRequested {}], None).await?;
        }
        let path = format!("/v1/reservations/{}/release", state.order_id);
        loop {
            let outcome = self
                .attempt(state, "release_stock", false, || {
                    self.client.call::<(), Reservation>("inventory", Method::POST, &path, None, Some(trace))
                })
                .await?;
            match outcome {
                Outcome::Done(_) => {
                    // The last compensation and the verdict in one transaction.
                    let f =
                        state.compensating.clone().unwrap_or_else(|| unreachable!("releasing only while compensating"));
                    let failed = Event::OrderFailed { step: f.step, code: f.code, message: f.message };
                    return self.finish(state, trace, vec![Event::StockReleased {}, failed], "order_failed").await;
                }
                Outcome::Refused(_, msg) | Outcome::TimedOut(msg) => {
                    tracing::error!(order_id = %state.order_id, error = %msg, "release refused; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// The terminal event, `NotificationQueued` and the outbox row, in one transaction.
    async fn finish(
        &self,
        state: &mut SagaState,
        trace: &TraceCtx,
        mut events: Vec<Event>,
        kind: &str,
    ) -> anyhow::Result<()> {
        let event_id = crate::plumbing::ids::new("evt");
        events.push(Event::NotificationQueued { event_id: event_id.clone(), kind: kind.into() });
        let failure = events.iter().find_map(|e| match e {
            Event::OrderFailed { code, message, .. } => Some((code, message)),
            _ => None,
        });
        // The notification carries the order id in its own field; the message does not repeat
        // it (a million stored notifications, 30 bytes each).
        let message = match failure {
            Some((code, why)) => format!("Your order failed: {code} ({why})"),
            None => format!("Your order is confirmed: {} cents charged.", state.total_cents),
        };
        let payload = serde_json::json!({
            "event_id": event_id,
            "order_id": state.order_id,
            "user_id": state.user_id,
            "kind": kind,
            "message": message,
            "trace_id": state.trace_id,
            "parent_span_id": trace.span_id,
            // The caller's sampling decision and tracestate reach the notification hop too.
            "trace_flags": if trace.sampled { "01" } else { "00" },
            "tracestate": trace.tracestate,
        });
        self.record(state, events, Some((event_id, payload.to_string()))).await?;
        self.relay_wake.notify_one();
        Ok(())
    }
}

/// The `…Requested` event of the step `state` is about to take, if it is not recorded yet.
fn next_intent(state: &SagaState) -> Option<Event> {
    match state.next() {
        Action::ReserveStock if !state.reserve_requested => Some(Event::StockReservationRequested {}),
        Action::ChargePayment if !state.charge_requested => Some(Event::PaymentRequested {}),
        Action::CommitStock if !state.commit_requested => Some(Event::StockCommitRequested {}),
        Action::RefundPayment if !state.refund_requested => Some(Event::PaymentRefundRequested {}),
        Action::ReleaseStock if !state.release_requested => Some(Event::StockReleaseRequested {}),
        _ => None,
    }
}
