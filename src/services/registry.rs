//! The service registry: instances register their address, heartbeat, and are evicted when they
//! stay silent past the TTL. Lookups are served from memory; the database keeps a record of
//! registrations for `shop inspect`.
//!
//! Wire faults: the supervisor puts the detours of active wire faults with `PUT /v1/routes`
//! (stack secret required), and `GET /v1/instances?caller=SERVICE` answers that caller with a
//! proxy's address in place of the instance it fronts. A listing without `caller` (an operator's
//! view) always shows the real addresses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{Runtime, Service};
use crate::plumbing::discovery::{Instance, InstanceStatus, Route};
use crate::plumbing::error::{ApiError, ApiPath, JsonBody};
use crate::plumbing::time::{now_ms, rfc3339};

pub const MIGRATIONS: &[&str] = &["CREATE TABLE registrations (
        instance TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        address TEXT NOT NULL,
        pid INTEGER NOT NULL,
        registered_at INTEGER NOT NULL,
        evicted_at INTEGER
    );"];

struct Entry {
    instance: Instance,
    registered_at: i64,
    last_seen: Instant,
}

#[derive(Clone)]
struct Registry {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    /// Detours of the wire faults in force, as the supervisor last put them.
    routes: Arc<Mutex<Vec<Route>>>,
    ttl: Duration,
    rt: Arc<Runtime>,
}

pub async fn build(rt: &Arc<Runtime>) -> anyhow::Result<Service> {
    let registry =
        Registry { entries: Arc::default(), routes: Arc::default(), ttl: rt.args.tuning.ttl, rt: rt.clone() };
    let evictor = evict_loop(registry.clone());
    // The detours decide where every service's calls go: the stack secret is checked before
    // their body is read, as for every admin route.
    let detours = Router::new().route("/v1/routes", get(get_routes).put(put_routes)).with_state(registry.clone());
    let detours = crate::plumbing::http::secret_required(detours, rt.secret.clone());
    // Registrations say where every service's calls go: with a stack secret, only the stack's
    // own processes may make or drop one (a registry run by hand without one stays open).
    let writes = Router::new()
        .route("/v1/register", post(register))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/v1/instances/{instance}", delete(deregister))
        .with_state(registry.clone());
    let routes = Router::new()
        .route("/v1/instances", get(list))
        .route("/v1/services/{service}", get(lookup))
        .with_state(registry)
        .merge(detours)
        .merge(rt.guarded(writes));
    Ok(Service::new(routes).with_loop("registration expiry", evictor))
}

fn check_name(what: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 64 {
        return Err(ApiError::bad_request(format!("`{what}` must be 1 to 64 characters")));
    }
    Ok(())
}

async fn register(
    State(reg): State<Registry>,
    JsonBody(inst): JsonBody<Instance>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_name("service", &inst.service)?;
    check_name("instance", &inst.instance)?;
    if inst.address.parse::<std::net::SocketAddr>().is_err() {
        return Err(ApiError::bad_request(format!("`address` must be host:port, got `{}`", inst.address)));
    }
    let now = now_ms();
    {
        let mut entries = reg.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = entries.get(&inst.instance).filter(|e| held_by_another(e, &inst, reg.ttl)) {
            return Err(ApiError::conflict(
                "instance_name_taken",
                format!(
                    "instance name `{}` is held by pid {} at {}, which is alive and beating; give this one \
                     another name (--instance)",
                    inst.instance, held.instance.pid, held.instance.address
                ),
            ));
        }
        // A renewal from the same address keeps the time of the first registration.
        let since = entries.get(&inst.instance).filter(|e| e.instance.address == inst.address).map(|e| e.registered_at);
        let new = Entry { instance: inst.clone(), registered_at: since.unwrap_or(now), last_seen: Instant::now() };
        match entries.insert(inst.instance.clone(), new) {
            None => {
                tracing::info!(registered_service = %inst.service, registered_instance = %inst.instance, address = %inst.address, "registered")
            }
            // From another address, with no live local process left at the old one (that is
            // refused above): a restart, or a process on another machine, which the latest
            // registration wins; a live one there takes the name back at its next heartbeat.
            Some(old) if old.instance.address != inst.address => tracing::warn!(
                instance = %inst.instance, from = %old.instance.address, to = %inst.address,
                "an instance registered again from another address: a restart, or two processes under one name \
                 on different machines (then they take it from each other at every heartbeat; give each its own \
                 --instance)"
            ),
            // The same again (the supervisor renews the programs it runs, which do not beat).
            Some(_) => tracing::debug!(registered_instance = %inst.instance, "registration renewed"),
        }
    }
    let row = inst.clone();
    reg.rt
        .db
        .call(move |c| {
            c.execute(
                "INSERT INTO registrations (instance, service, address, pid, registered_at, evicted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL)
                 ON CONFLICT(instance) DO UPDATE SET service = ?2, address = ?3, pid = ?4, registered_at = ?5, evicted_at = NULL",
                rusqlite::params![row.instance, row.service, row.address, row.pid, now],
            )
        })
        .await?;
    Ok(Json(serde_json::json!({
        "ttl_ms": reg.ttl.as_millis() as u64,
    })))
}

/// Whether `entry` is another live process's, on this machine, than the one registering `inst`
/// under its name. A restart registers from a new address while the old entry still lives out
/// its ttl, but the old process is gone by then (the supervisor waits for it), so it is not held.
/// Only loopback addresses are judged: a pid means something only on this machine.
fn held_by_another(entry: &Entry, inst: &Instance, ttl: Duration) -> bool {
    let loopback = |a: &str| a.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
    entry.instance.address != inst.address
        && entry.instance.pid != inst.pid
        && entry.last_seen.elapsed() < ttl
        && loopback(&entry.instance.address)
        && loopback(&inst.address)
        && i32::try_from(entry.instance.pid)
            .is_ok_and(|pid| pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
}

#[derive(Deserialize)]
struct Heartbeat {
    instance: String,
    #[allow(dead_code)]
    service: Option<String>,
    /// Where the beating instance listens. A heartbeat from another address than the one
    /// registered must not keep that entry alive: the process registered there may be dead.
    address: Option<String>,
}

async fn heartbeat(State(reg): State<Registry>, JsonBody(hb): JsonBody<Heartbeat>) -> Result<StatusCode, ApiError> {
    let mut entries = reg.entries.lock().unwrap_or_else(|p| p.into_inner());
    match entries.get_mut(&hb.instance) {
        Some(e) if hb.address.as_ref().is_none_or(|a| *a == e.instance.address) => {
            e.last_seen = Instant::now();
            Ok(StatusCode::NO_CONTENT)
        }
        // Registered elsewhere since: 404 makes this live instance register its address again.
        Some(e) => Err(ApiError::not_found(format!(
            "instance `{}` is registered at {}, not here; register again",
            hb.instance, e.instance.address
        ))),
        // Unknown: the registry restarted or evicted it. 404 tells the instance to register again.
        None => Err(ApiError::not_found(format!("instance `{}` is not registered", hb.instance))),
    }
}

#[derive(Deserialize)]
struct DeregisterQuery {
    /// Only the registration at this address goes: a process leaving must not take down another
    /// that registered under its name since.
    address: Option<String>,
}

async fn deregister(
    State(reg): State<Registry>,
    ApiPath(instance): ApiPath<String>,
    Query(q): Query<DeregisterQuery>,
) -> StatusCode {
    let removed = {
        let mut entries = reg.entries.lock().unwrap_or_else(|p| p.into_inner());
        let theirs =
            entries.get(&instance).is_some_and(|e| q.address.as_ref().is_some_and(|a| *a != e.instance.address));
        !theirs && entries.remove(&instance).is_some()
    };
    if removed {
        tracing::info!(registered_instance = %instance, "deregistered");
        record_gone(&reg, instance).await;
    }
    StatusCode::NO_CONTENT
}

fn snapshot(reg: &Registry, service: Option<&str>) -> Vec<InstanceStatus> {
    let entries = reg.entries.lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<InstanceStatus> = entries
        .values()
        .filter(|e| service.is_none_or(|s| e.instance.service == s))
        .map(|e| InstanceStatus {
            instance: e.instance.clone(),
            registered_at: rfc3339(e.registered_at),
            heartbeat_age_ms: e.last_seen.elapsed().as_millis() as i64,
            status: if e.last_seen.elapsed() > reg.ttl / 2 { "late".into() } else { "up".into() },
        })
        .collect();
    out.sort_by(|a, b| (&a.instance.service, &a.instance.instance).cmp(&(&b.instance.service, &b.instance.instance)));
    out
}

#[derive(Deserialize)]
struct ListQuery {
    /// The calling service; its wire-fault detours apply.
    caller: Option<String>,
}

async fn list(State(reg): State<Registry>, Query(q): Query<ListQuery>) -> Json<Vec<InstanceStatus>> {
    let mut out = snapshot(&reg, None);
    if let Some(caller) = q.caller {
        let routes = reg.routes.lock().unwrap_or_else(|p| p.into_inner());
        for s in &mut out {
            // A detour for this very caller wins over one for every caller.
            let mine = |r: &&Route| r.instance == s.instance.instance && r.from.as_deref() == Some(caller.as_str());
            let any = |r: &&Route| r.instance == s.instance.instance && r.from.is_none();
            if let Some(r) = routes.iter().find(mine).or_else(|| routes.iter().find(any)) {
                s.instance.address = r.address.clone();
            }
        }
    }
    Json(out)
}

async fn get_routes(State(reg): State<Registry>) -> Json<Vec<Route>> {
    Json(reg.routes.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

/// Replaces every detour at once: the supervisor always sends the whole set.
async fn put_routes(
    State(reg): State<Registry>,
    JsonBody(routes): JsonBody<Vec<Route>>,
) -> Result<StatusCode, ApiError> {
    for r in &routes {
        if r.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ApiError::bad_request(format!("`address` must be host:port, got `{}`", r.address)));
        }
    }
    tracing::info!(routes = routes.len(), "wire-fault routes updated");
    *reg.routes.lock().unwrap_or_else(|p| p.into_inner()) = routes;
    Ok(StatusCode::NO_CONTENT)
}

async fn lookup(State(reg): State<Registry>, ApiPath(service): ApiPath<String>) -> Json<Vec<InstanceStatus>> {
    Json(snapshot(&reg, Some(&service)))
}

async fn evict_loop(reg: Registry) {
    let mut tick = tokio::time::interval((reg.ttl / 4).max(Duration::from_millis(50)));
    loop {
        tick.tick().await;
        let evicted: Vec<String> = {
            let mut entries = reg.entries.lock().unwrap_or_else(|p| p.into_inner());
            let stale: Vec<String> =
                entries.iter().filter(|(_, e)| e.last_seen.elapsed() > reg.ttl).map(|(k, _)| k.clone()).collect();
            for k in &stale {
                entries.remove(k);
            }
            stale
        };
        for instance in evicted {
            tracing::warn!(registered_instance = %instance, ttl_ms = reg.ttl.as_millis() as u64, "evicted: no heartbeat within the TTL");
            record_gone(&reg, instance).await;
        }
    }
}

/// Notes in the database when an instance left (deregistered or evicted), for `shop inspect`.
async fn record_gone(reg: &Registry, instance: String) {
    let now = now_ms();
    let _ = reg
        .rt
        .db
        .tx(move |c| {
            c.execute("UPDATE registrations SET evicted_at = ?2 WHERE instance = ?1", rusqlite::params![instance, now])
        })
        .await;
}
