//! How a service finds the others, in one of two modes ([`Mode`]):
//!
//! - `registry` (the default, what `shop up` runs): registers this instance, heartbeats, and
//!   keeps a cached view of every other instance so calls go on while the registry is briefly
//!   gone;
//! - `dns` (what `shop export` writes for Kubernetes and compose): every service is at a fixed
//!   `HOST:PORT` given in [`Peers`] (`SHOP_PEERS=user=user:8080,...`), because the platform's
//!   Services and service names already do discovery and load balancing. There is no registry
//!   process: nothing registers or heartbeats, and the host name is resolved by reqwest at
//!   connect time, so `payment:8080` follows the platform's DNS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a registration went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Registered (or nothing to register: the registry itself).
    Done,
    /// No answer: the registry is not up yet, or gone for now; the heartbeat tries again.
    Unreachable,
    /// Another live process holds this instance name; why, as the registry said it.
    NameTaken(String),
    /// Refused otherwise (a missing secret); logged.
    Refused,
}

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

/// A wire fault's detour (SPEC section 13): callers named by `from` (all callers when `None`)
/// are told `address` (a proxy) for `instance` instead of its own address. The supervisor puts
/// the whole list with `PUT /v1/routes`; the registry applies it to `GET /v1/instances?caller=`,
/// so each caller learns the detour on its next refresh and the real address once it is gone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Route {
    pub instance: String,
    #[serde(default)]
    pub from: Option<String>,
    pub address: String,
}

/// Where instances come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Register with the registry and ask it where the others are.
    #[default]
    Registry,
    /// Fixed addresses from `--peers`; no registry at all.
    Dns,
}

/// The fixed addresses of `dns` mode: `NAME=HOST:PORT` pairs, in the order given; a name given
/// twice has two instances, balanced like registry instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers(pub Vec<(String, String)>);

impl Peers {
    /// Parses `user=user:8080,payment=10.0.0.7:8080` (spaces around entries are ignored, an
    /// empty string is no peers); the message names the bad entry and the expected shape.
    pub fn parse(text: &str) -> Result<Peers, String> {
        let mut peers = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |why: &str| format!("peer `{entry}` {why}; write NAME=HOST:PORT, e.g. payment=payment:8080");
            let (name, address) = entry.split_once('=').ok_or_else(|| bad("has no `=`"))?;
            let (name, address) = (name.trim(), address.trim());
            if name.is_empty() {
                return Err(bad("has no service name"));
            }
            if address.contains("://") || address.contains('/') {
                return Err(bad("must be a bare HOST:PORT, without scheme or path"));
            }
            let port = address.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
            match port {
                Some((host, Ok(port))) if !host.is_empty() && port != 0 => {}
                _ => return Err(bad("needs a host and a port from 1 to 65535")),
            }
            peers.push((name.to_string(), address.to_string()));
        }
        Ok(Peers(peers))
    }
}

impl std::fmt::Display for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: Vec<String> = self.0.iter().map(|(name, address)| format!("{name}={address}")).collect();
        f.write_str(&entries.join(","))
    }
}

pub struct Discovery {
    /// `dns` mode never talks to the registry; `registry` mode is the behaviour described above.
    mode: Mode,
    registry: String,
    http: reqwest::Client,
    /// This process's registration; `None` for the registry itself and for CLI clients.
    me: Option<Instance>,
    /// Last view fetched from the registry, by service name. Kept when the registry is down.
    view: RwLock<HashMap<String, Arc<Vec<Instance>>>>,
    /// Addresses that refused a connection recently, skipped until the instant passes.
    suspect: Mutex<HashMap<String, Instant>>,
    /// Round-robin positions, one slot per service (by a hash of its name), so the calls of one
    /// service spread over its instances whatever the pattern of calls to others.
    next: [AtomicUsize; 32],
    /// The stack secret, sent with registrations and heartbeats (a registry with a secret
    /// takes none without it).
    secret: Option<String>,
    /// Last time a cache miss forced a refresh, so a missing service cannot hammer the registry.
    /// Held across that refresh: the other misses meanwhile wait for its view instead of
    /// finding no instance at once (a burst of them would open the caller's circuit breaker).
    last_forced: tokio::sync::Mutex<Option<Instant>>,
}

impl Discovery {
    pub fn new(registry: &str, http: reqwest::Client, me: Option<Instance>) -> Discovery {
        Discovery {
            mode: Mode::Registry,
            registry: registry.trim_end_matches('/').to_string(),
            http,
            me,
            view: RwLock::new(HashMap::new()),
            suspect: Mutex::new(HashMap::new()),
            next: std::array::from_fn(|_| AtomicUsize::new(0)),
            secret: None,
            last_forced: tokio::sync::Mutex::new(None),
        }
    }

    pub fn with_secret(self, secret: Option<String>) -> Discovery {
        Discovery { secret, ..self }
    }

    /// `req` with the stack secret, if this process has one.
    fn signed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = bookkeeping(req);
        match &self.secret {
            Some(s) => req.header(crate::plumbing::admin::SECRET_HEADER, s),
            None => req,
        }
    }

    /// `dns` mode: the view is `peers`, fixed for the life of the process. It is put where the
    /// registry's view would be, so picking, balancing and skipping refused addresses work the
    /// same in both modes.
    pub fn dns(peers: &Peers, http: reqwest::Client) -> Discovery {
        let mut by_service: HashMap<String, Vec<Instance>> = HashMap::new();
        for (service, address) in &peers.0 {
            let list = by_service.entry(service.clone()).or_default();
            let instance = format!("{service}@{address}");
            // Listing an address twice would only skew the round robin toward it.
            if !list.iter().any(|i| i.address == *address) {
                list.push(Instance { service: service.clone(), instance, address: address.clone(), pid: 0 });
            }
        }
        let discovery = Discovery { mode: Mode::Dns, ..Discovery::new("", http, None) };
        *discovery.view.write().unwrap_or_else(|p| p.into_inner()) =
            by_service.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        discovery
    }

    /// The discovery a service was configured for (`--discovery`, `--registry`, `--peers`).
    pub fn for_mode(
        mode: Mode,
        registry: &str,
        peers: &Peers,
        http: reqwest::Client,
        me: Option<Instance>,
    ) -> Discovery {
        match mode {
            Mode::Registry => Discovery::new(registry, http, me),
            Mode::Dns => Discovery::dns(peers, http),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn registry_url(&self) -> &str {
        &self.registry
    }

    /// Registers (or re-registers) this instance; false when the registry is unreachable.
    pub async fn register(&self) -> Registration {
        let Some(me) = &self.me else { return Registration::Done };
        let url = format!("{}/v1/register", self.registry);
        let req = self.signed(self.http.post(url)).json(me).timeout(Duration::from_secs(2));
        match req.send().await {
            Ok(r) if r.status().is_success() => Registration::Done,
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {
                let answer: serde_json::Value = r.json().await.unwrap_or_default();
                let why = answer["error"]["message"].as_str().unwrap_or("the name is taken").to_string();
                tracing::error!(registry = %self.registry, "the registry refused this instance: {why}");
                Registration::NameTaken(why)
            }
            // Answered, but refused: unreachable it is not, and retrying will not help.
            Ok(r) => {
                let status = r.status();
                let why = r.text().await.unwrap_or_default();
                let hint = match status {
                    reqwest::StatusCode::UNAUTHORIZED => {
                        "it takes only its stack's processes: give this one the stack \
                         secret (--secret, SHOP_SECRET or SHOP_SECRET_FILE)"
                    }
                    _ => "see its answer",
                };
                tracing::error!(registry = %self.registry, %status, answer = %why, "the registry refused this instance; {hint}");
                Registration::Refused
            }
            Err(_) => Registration::Unreachable,
        }
    }

    async fn heartbeat(&self) {
        let Some(me) = &self.me else { return };
        let url = format!("{}/v1/heartbeat", self.registry);
        let body = serde_json::json!({"instance": me.instance, "service": me.service, "address": me.address});
        match self.signed(self.http.post(url)).json(&body).timeout(Duration::from_secs(2)).send().await {
            // The registry restarted (or evicted us while we were paused): register again.
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                if self.register().await == Registration::Done {
                    tracing::info!(registry = %self.registry, "re-registered with the registry");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "registry unreachable; keeping the cached view"),
        }
    }

    pub async fn deregister(&self) {
        let Some(me) = &self.me else { return };
        // With our address: a registration someone else made under this name since is theirs.
        let url = format!("{}/v1/instances/{}?address={}", self.registry, me.instance, me.address);
        let _ = self.signed(self.http.delete(url)).timeout(Duration::from_millis(500)).send().await;
    }

    /// Fetches the whole view; on failure the old view stays. In `dns` mode the view is fixed.
    pub async fn refresh(&self) -> bool {
        if self.mode == Mode::Dns {
            return true;
        }
        // Naming the caller lets the registry hand it a wire fault's proxy instead (see [`Route`]).
        let url = match &self.me {
            Some(me) => format!("{}/v1/instances?caller={}", self.registry, me.service),
            None => format!("{}/v1/instances", self.registry),
        };
        let Ok(resp) = bookkeeping(self.http.get(url)).timeout(Duration::from_secs(2)).send().await else {
            return false;
        };
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

    /// Heartbeats and refreshes every `every` until the process ends, on a task of its own.
    pub fn spawn_loop(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run_loop(every))
    }

    /// Heartbeats and refreshes every `every`, forever: for a caller that holds its own tasks.
    pub async fn run_loop(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.heartbeat().await;
            self.refresh().await;
        }
    }

    /// All known instances of `service`, refreshing once if none is cached.
    pub async fn instances(&self, service: &str) -> Arc<Vec<Instance>> {
        if let Some(list) = self.cached(service) {
            return list;
        }
        let mut last = self.last_forced.lock().await;
        // The refresh this caller waited for may have brought the service.
        if let Some(list) = self.cached(service) {
            return list;
        }
        if last.is_none_or(|t| t.elapsed() > Duration::from_millis(100)) {
            *last = Some(Instant::now());
            self.refresh().await;
        }
        self.cached(service).unwrap_or_default()
    }

    fn cached(&self, service: &str) -> Option<Arc<Vec<Instance>>> {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        view.get(service).filter(|l| !l.is_empty()).cloned()
    }

    /// The instances of `service` in the order to try them: round robin (each call starts one
    /// further), those that just refused a connection last. Each as its address and its name.
    pub async fn pick(&self, service: &str) -> Vec<(String, String)> {
        let list = self.instances(service).await;
        if list.is_empty() {
            return Vec::new();
        }
        let slot = service.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % self.next.len();
        let start = self.next[slot].fetch_add(1, Ordering::Relaxed);
        let suspect = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut order: Vec<&Instance> = (0..list.len()).map(|i| &list[(start + i) % list.len()]).collect();
        // Stable: the round-robin order holds within each group.
        order.sort_by_key(|inst| suspect.get(&inst.address).is_some_and(|until| *until > now));
        order.into_iter().map(|inst| (inst.address.clone(), inst.instance.clone())).collect()
    }

    /// Notes that `address` refused a connection, so `pick` prefers the others for a moment.
    pub fn mark_failed(&self, address: &str) {
        let mut suspect = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        suspect.insert(address.to_string(), Instant::now() + Duration::from_secs(1));
    }

    /// Whether the cached view has an address for `service`, without asking the registry (in
    /// `dns` mode, whether it was given one at all).
    pub fn knows(&self, service: &str) -> bool {
        self.cached(service).is_some()
    }
}

/// A call to the registry is the stack's bookkeeping: its trace is kept, never exported.
fn bookkeeping(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("traceparent", crate::plumbing::trace::TraceCtx::bookkeeping().header_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_name_host_port_pairs_and_name_the_bad_entry() {
        let peers = Peers::parse(" user=user:8080, payment=10.0.0.7:9000,payment=payment-2:9000 ,").unwrap();
        assert_eq!(
            peers.0,
            [("user", "user:8080"), ("payment", "10.0.0.7:9000"), ("payment", "payment-2:9000")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(peers.to_string(), "user=user:8080,payment=10.0.0.7:9000,payment=payment-2:9000");
        assert_eq!(Peers::parse("").unwrap(), Peers::default());
        assert_eq!(
            Peers::parse("user=user:8080,payment").unwrap_err(),
            "peer `payment` has no `=`; write NAME=HOST:PORT, e.g. payment=payment:8080"
        );
        for bad in ["user=http://user:8080", "user=user", "user=:80", "user=user:0", "user=user:x", "=user:80"] {
            assert!(Peers::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn dns_mode_serves_the_fixed_addresses_without_a_registry() {
        let peers = Peers::parse("user=user:8080,payment=p1:8080,payment=p2:8080,payment=p1:8080").unwrap();
        let d = Discovery::dns(&peers, reqwest::Client::new());
        assert_eq!(d.mode(), Mode::Dns);
        assert_eq!(d.register().await, Registration::Done, "nothing to register with is not a failure");
        assert!(d.refresh().await);
        assert!(d.knows("user") && d.knows("payment") && !d.knows("order"));
        let addresses: Vec<String> = d.instances("payment").await.iter().map(|i| i.address.clone()).collect();
        assert_eq!(addresses, ["p1:8080", "p2:8080"]);
        let mut picked = vec![d.pick("payment").await[0].0.clone(), d.pick("payment").await[0].0.clone()];
        picked.sort();
        assert_eq!(picked, ["p1:8080", "p2:8080"]);
        d.mark_failed("p1:8080");
        assert_eq!(d.pick("payment").await.first().map(|p| p.0.as_str()), Some("p2:8080"));
        assert!(d.pick("order").await.is_empty());
    }
}
