//! The control API: the routes `shop` calls on a running supervisor (see
//! [`protocol`](crate::orchestrator::protocol) for the messages). Every route needs the stack
//! secret, checked before the body is read; bodies are read with [`JsonBody`], so a malformed
//! one gets the usual error shape.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{Supervisor, REGISTRY};
use crate::orchestrator::protocol::{ChaosRequest, ClearRequest, FaultRow, Names, Status};
use crate::plumbing::error::{ApiError, JsonBody};

type Sup = State<Arc<Supervisor>>;

impl Supervisor {
    /// The control API's router, for `shop ps`, `stop`, `start`, `restart`, `down` and `chaos`;
    /// the daemon serves it on a loopback port it records in the state dir.
    pub fn control_api(self: &Arc<Self>) -> Router {
        let routes = Router::new()
            .route("/v1/status", get(status))
            .route("/v1/up", post(up))
            .route("/v1/stop", post(stop))
            .route("/v1/start", post(start))
            .route("/v1/restart", post(restart))
            .route("/v1/down", post(down))
            .route("/v1/chaos", get(chaos_list).post(chaos_apply))
            .route("/v1/chaos/clear", post(chaos_clear))
            .with_state(self.clone());
        // Checked before any body is read: a caller without the secret learns nothing.
        crate::plumbing::http::secret_required(routes, Some(self.secret.clone()))
    }
}

fn grace(n: &Names) -> Duration {
    n.timeout_ms.map_or(crate::plumbing::config::STOP_GRACE, Duration::from_millis)
}

async fn status(State(sup): Sup) -> Result<Json<Status>, ApiError> {
    Ok(Json(sup.status()))
}

async fn up(State(sup): Sup, JsonBody(n): JsonBody<Names>) -> Result<StatusCode, ApiError> {
    let services = sup.resolve(&n.services, !n.no_deps).map_err(ApiError::bad_request)?;
    sup.spawn_up(services);
    Ok(StatusCode::ACCEPTED)
}

async fn stop(State(sup): Sup, JsonBody(n): JsonBody<Names>) -> Result<Json<Status>, ApiError> {
    let services = sup.resolve_named(&n.services).map_err(ApiError::bad_request)?;
    sup.forget_process_faults(&services);
    sup.stop_services(&services, grace(&n)).await;
    Ok(Json(sup.status()))
}

async fn start(State(sup): Sup, JsonBody(n): JsonBody<Names>) -> Result<Json<Status>, ApiError> {
    let services = sup.resolve_named(&n.services).map_err(ApiError::bad_request)?;
    sup.forget_process_faults(&services);
    sup.fresh_start(&services, false);
    sup.start_named(services).await;
    Ok(Json(sup.status()))
}

async fn restart(State(sup): Sup, JsonBody(n): JsonBody<Names>) -> Result<Json<Status>, ApiError> {
    let services = sup.resolve_named(&n.services).map_err(ApiError::bad_request)?;
    sup.forget_process_faults(&services);
    sup.stop_services(&services, grace(&n)).await;
    sup.fresh_start(&services, true);
    sup.start_named(services).await;
    Ok(Json(sup.status()))
}

async fn down(State(sup): Sup, JsonBody(n): JsonBody<Names>) -> Result<StatusCode, ApiError> {
    sup.down(grace(&n)).await;
    sup.shutdown.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

async fn chaos_list(State(sup): Sup) -> Result<Json<Vec<FaultRow>>, ApiError> {
    Ok(Json(sup.chaos_rows()))
}

async fn chaos_apply(State(sup): Sup, JsonBody(req): JsonBody<ChaosRequest>) -> Result<Json<Vec<FaultRow>>, ApiError> {
    if req.target == REGISTRY && !req.action.on_process() {
        return Err(ApiError::bad_request("the registry takes only kill, pause and resume"));
    }
    // `on`, not `target`: the log line's `target` is the code that wrote it, left out of
    // what `shop logs` shows and searches.
    tracing::warn!(action = %req.action, on = %req.target, "chaos");
    sup.apply_chaos(req).await.map(Json).map_err(ApiError::bad_request)
}

async fn chaos_clear(State(sup): Sup, JsonBody(req): JsonBody<ClearRequest>) -> Result<Json<Vec<FaultRow>>, ApiError> {
    let on = req.target.as_deref().unwrap_or("every target");
    tracing::info!(on, owner = req.owner.as_deref(), "chaos cleared");
    sup.clear_chaos(req.target.as_deref(), req.owner.as_deref()).await.map(Json).map_err(ApiError::bad_request)
}
