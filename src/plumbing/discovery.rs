//! The registry client inside every service: registers this instance, heartbeats, and keeps a
//! cached view of every other instance so calls go on while the registry is briefly gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One running instance as the registry knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    pub service: String,
    pub instance: String,
    /// `host:port`
    pub address: String,
    pub pid: u32,
}

/// What an instance was last seen doing, as `GET /v1/instances` reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceStatus {
    #[serde(flatten)]
    pub instance: Instance,
    pub registered_at: String,
    pub heartbeat_age_ms: i64,
    pub status: String,
}

pub struct Discovery {
    registry: String,
    http: reqwest::Client,
    /// This process's registration; `None` for the registry itself and for CLI clients.
    me: Option<Instance>,
    /// Last view fetched from the registry, by service name. Kept when the registry is down.
    view: RwLock<HashMap<String, Arc<Vec<Instance>>>>,
    /// Addresses that refused a connection recently, skipped until the instant passes.
    suspect: Mutex<HashMap<String, Instant>>,
    next: AtomicUsize,
    /// Last time a cache miss forced a refresh, so a missing service cannot hammer the registry.
    last_forced: Mutex<Option<Instant>>,
}

impl Discovery {
    pub fn new(registry: &str, http: reqwest::Client, me: Option<Instance>) -> Discovery {
        Discovery {
            registry: registry.trim_end_matches('/').to_string(),
            http,
            me,
            view: RwLock::new(HashMap::new()),
            suspect: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            last_forced: Mutex::new(None),
        }
    }

    pub fn registry_url(&self) -> &str {
        &self.registry
    }

    /// Registers (or re-registers) this instance; false when the registry is unreachable.
    pub async fn register(&self) -> bool {
        let Some(me) = &self.me else { return true };
        let url = format!("{}/v1/register", self.registry);
        matches!(self.http.post(url).json(me).timeout(Duration::from_secs(2)).send().await, Ok(r) if r.status().is_success())
    }

    async fn heartbeat(&self) {
        let Some(me) = &self.me else { return };
        let url = format!("{}/v1/heartbeat", self.registry);
        let body = serde_json::json!({"instance": me.instance, "service": me.service});
        match self.http.post(url).json(&body).timeout(Duration::from_secs(2)).send().await {
            // The registry restarted (or evicted us while we were paused): register again.
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                if self.register().await {
                    tracing::info!(registry = %self.registry, "re-registered with the registry");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "registry unreachable; keeping the cached view"),
        }
    }

    pub async fn deregister(&self) {
        let Some(me) = &self.me else { return };
        let url = format!("{}/v1/instances/{}", self.registry, me.instance);
        let _ = self.http.delete(url).timeout(Duration::from_millis(500)).send().await;
    }

    /// Fetches the whole view; on failure the old view stays.
    pub async fn refresh(&self) -> bool {
        let url = format!("{}/v1/instances", self.registry);
        let Ok(resp) = self.http.get(url).timeout(Duration::from_secs(2)).send().await else { return false };
        let Ok(list) = resp.json::<Vec<InstanceStatus>>().await else { return false };
        let mut by_service: HashMap<String, Vec<Instance>> = HashMap::new();
        for s in list {
            by_service.entry(s.instance.service.clone()).or_default().push(s.instance);
        }
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        *view = by_service
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_by(|a, b| a.instance.cmp(&b.instance));
                (k, Arc::new(v))
            })
            .collect();
        true
    }

    /// Heartbeats and refreshes every `every` until the process ends.
    pub fn spawn_loop(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.heartbeat().await;
                me.refresh().await;
            }
        })
    }

    /// All known instances of `service`, refreshing once if none is cached.
    pub async fn instances(&self, service: &str) -> Arc<Vec<Instance>> {
        if let Some(list) = self.cached(service) {
            return list;
        }
        let force = {
            let mut last = self.last_forced.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() > Duration::from_millis(100));
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if force {
            self.refresh().await;
        }
        self.cached(service).unwrap_or_default()
    }

    fn cached(&self, service: &str) -> Option<Arc<Vec<Instance>>> {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        view.get(service).filter(|l| !l.is_empty()).cloned()
    }

    /// The next address for `service` in round-robin order, skipping instances that just
    /// refused a connection unless every one of them did.
    pub async fn pick(&self, service: &str) -> Option<String> {
        let list = self.instances(service).await;
        if list.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let suspect = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        (0..list.len())
            .map(|i| &list[(start + i) % list.len()])
            .find(|inst| suspect.get(&inst.address).is_none_or(|until| *until <= now))
            .or_else(|| list.get(start % list.len()))
            .map(|inst| inst.address.clone())
    }

    /// Notes that `address` refused a connection, so `pick` prefers the others for a moment.
    pub fn mark_failed(&self, address: &str) {
        let mut suspect = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        suspect.insert(address.to_string(), Instant::now() + Duration::from_secs(1));
    }

    /// The cached view of every service, for readiness checks.
    pub fn knows(&self, service: &str) -> bool {
        self.cached(service).is_some()
    }
}
