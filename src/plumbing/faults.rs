//! Fault injection on a service's inbound requests.
//!
//! For now one fault, set at start through `SHOP_FAULT_DELAY` (and optionally
//! `SHOP_FAULT_DELAY_REQUESTS`): the answer to each request is held back after the handler has
//! run, so the caller times out on a request that *was* applied. That is the hardest case for a
//! saga (an unknown outcome) and what tests of the charge step need.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

#[derive(Default)]
pub struct Faults {
    /// Hold every answer back this long.
    delay: Option<Duration>,
    /// Only the first N requests are delayed; all of them when `None`.
    delay_requests: Option<u64>,
    seen: AtomicU64,
}

impl Faults {
    pub fn new(delay: Option<Duration>, delay_requests: Option<u64>) -> Faults {
        Faults { delay, delay_requests, seen: AtomicU64::new(0) }
    }

    pub fn is_empty(&self) -> bool {
        self.delay.is_none()
    }

    fn delay_for_next(&self) -> Option<Duration> {
        let delay = self.delay?;
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        self.delay_requests.is_none_or(|limit| n < limit).then_some(delay)
    }
}

/// Middleware over a service's own routes (never health or metrics).
pub async fn inbound(State(faults): State<Arc<Faults>>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if let Some(delay) = faults.delay_for_next() {
        tokio::time::sleep(delay).await;
    }
    response
}
