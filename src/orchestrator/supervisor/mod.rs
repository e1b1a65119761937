//! The supervisor: starts a stack in dependency order, health-checks every instance, restarts
//! crashed ones per their policy, and answers the control API that `shop ps`, `stop`, `start`,
//! `restart`, `down` and `chaos` talk to.
//!
//! - this module: the state (one [`Instance`] per process) and what reads it (`status`,
//!   `resolve`), and `up`, which orders start-ups by dependency
//! - [`lifecycle`]: starting one instance, its health loop, the monitor that restarts crashed
//!   ones, stopping
//! - [`restart`]: the restart decision, a pure function of the policy and the crash history
//! - [`api`]: the control API's router and handlers
//! - [`chaos`]: faults the supervisor applies or pushes to services, until they expire
//!
//! State lives in one `std::sync::Mutex` that is never held across an `.await`; slow work
//! (forking, waiting for a port, stopping a process) happens outside it.

mod api;
pub mod chaos;
mod lifecycle;
mod restart;
mod wire;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use super::launcher::{LaunchError, ServiceProcess, Starting};
use super::protocol::InstanceState;
use super::protocol::{EventKind, PsRow, StackEvent, Status, MAX_EVENTS};
use super::stackfile::{BreakerSpec, ClientSpec, HealthSpec, Program, RestartPolicy, ServiceSpec, Stack};
use super::state_dir::{StateDir, SupervisorRecord};
use crate::services::Kind;

// Kept at their old path for callers that have not moved to `orchestrator::protocol`.

/// The name the registry runs under in `ps` and in the logs.
pub const REGISTRY: &str = "registry";

struct Instance {
    /// Index into `stack.services`, or `None` for the registry (see [`registry_spec`]).
    spec: Option<usize>,
    service: String,
    name: String,
    state: InstanceState,
    proc: Option<ServiceProcess>,
    pid: Option<u32>,
    address: Option<SocketAddr>,
    /// A port chosen once and kept across restarts (the registry's, an external program's).
    pinned_port: Option<u16>,
    restarts: u32,
    /// Crashes since the last healthy spell: drives backoff and `max_restarts`.
    consecutive: u32,
    /// The wait before the last automatic restart, which the next one doubles.
    last_backoff: Option<Duration>,
    started: Option<Instant>,
    healthy_since: Option<Instant>,
    next_restart: Option<Instant>,
    /// Bumped at every start, so tasks of an older incarnation stop touching it.
    generation: u64,
    detail: Option<String>,
    /// The supervisor ended this process for being unhealthy: its exit is a failure whatever its
    /// status, so `on-failure` restarts it.
    ended_unhealthy: bool,
    /// Ended by `shop chaos kill --restart`: its exit is a crash whatever its status (SIGTERM
    /// lets a service exit 0), so the restart policy acts as after a crash.
    chaos_crashed: bool,
    /// Ended for failing readiness and not healthy since: its restarts do not use up
    /// `max_restarts` (see `restart::Exit::counts`).
    outage: bool,
    /// The start in progress is an automatic restart: if it fails, the restart policy tries
    /// again (with backoff) instead of leaving the instance failed, so a stack recovers by
    /// itself once the cause (an unwritable disk) is gone.
    auto_restart: bool,
}

/// The rows `shop ps` shows.
fn rows(inner: &Inner) -> Vec<PsRow> {
    inner
        .instances
        .iter()
        .enumerate()
        .map(|(idx, i)| PsRow {
            service: i.service.clone(),
            instance: i.name.clone(),
            pid: i.pid.filter(|_| i.state.running()),
            address: i.address.map(|a| a.to_string()),
            state: i.state,
            restarts: i.restarts,
            uptime_s: i.started.filter(|_| i.state.running()).map(|s| s.elapsed().as_secs()).unwrap_or(0),
            faults: chaos::labels(&inner.chaos, idx),
            detail: i.detail.clone(),
        })
        .collect()
}

impl Instance {
    /// Whether a stop, start or restart naming `names` (services or instances) means this one.
    fn named_by(&self, names: &[String]) -> bool {
        names.contains(&self.service) || names.contains(&self.name)
    }

    /// A user-asked start (or healthy spell) begins a fresh crash history.
    fn forget_crashes(&mut self) {
        self.consecutive = 0;
        self.last_backoff = None;
    }

    /// Every change of state goes through here, so the journal misses none, however brief.
    fn set_state(&mut self, state: InstanceState, journal: &Journal) {
        if state != self.state {
            journal.record(&self.name, EventKind::State, format!("{} -> {state}", self.state));
            self.state = state;
        }
    }

    fn count_restart(&mut self, journal: &Journal) {
        self.restarts += 1;
        journal.record(&self.name, EventKind::Restart, format!("restarted (#{})", self.restarts));
    }
}

/// The supervisor's recent events for `shop top`, whose `--once` frame has no history of its
/// own: each change of state and restart as it is made, each fault as it is applied or cleared.
/// Its lock is a leaf, taken inside `inner`'s.
#[derive(Default)]
struct Journal(Mutex<JournalInner>);

#[derive(Default)]
struct JournalInner {
    events: VecDeque<StackEvent>,
    /// The fault labels of each instance as last recorded.
    faults: Vec<Vec<String>>,
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, JournalInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, instance: &str, kind: EventKind, text: String) {
        let mut journal = self.lock();
        let at_ms = crate::plumbing::time::now_ms();
        journal.events.push_back(StackEvent { at_ms, instance: instance.to_string(), kind, text });
        if journal.events.len() > MAX_EVENTS {
            journal.events.pop_front();
        }
    }

    /// Records the faults applied and cleared since the last call, per instance; called
    /// wherever the faults change, with the state lock held.
    fn faults_changed(&self, inner: &Inner) {
        let now: Vec<Vec<String>> = (0..inner.instances.len()).map(|idx| chaos::labels(&inner.chaos, idx)).collect();
        let before = std::mem::replace(&mut self.lock().faults, now.clone());
        for (idx, labels) in now.iter().enumerate() {
            let old = before.get(idx).map(Vec::as_slice).unwrap_or_default();
            let name = &inner.instances[idx].name;
            for f in old.iter().filter(|f| !labels.contains(f)) {
                self.record(name, EventKind::FaultCleared, format!("cleared {f}"));
            }
            for f in labels.iter().filter(|f| !old.contains(f)) {
                self.record(name, EventKind::FaultApplied, format!("fault {f}"));
            }
        }
    }

    fn recent(&self) -> Vec<StackEvent> {
        self.lock().events.iter().cloned().collect()
    }
}

struct Inner {
    instances: Vec<Instance>,
    /// Faults set by `shop chaos`, until they expire or are cleared.
    chaos: Vec<chaos::ActiveFault>,
    /// The registry's address once it runs; every other service is told it.
    registry: Option<SocketAddr>,
    /// Start-ups in progress.
    starting: usize,
    stopping: bool,
}

pub struct Supervisor {
    pub stack: Stack,
    pub dir: StateDir,
    secret: String,
    /// The `shop` binary, which every built-in service runs as `shop serve KIND`.
    binary: PathBuf,
    http: reqwest::Client,
    spawner: Spawner,
    /// The registry as if the stack file listed it, so it is started and restarted like any
    /// other service.
    registry_spec: ServiceSpec,
    inner: Mutex<Inner>,
    /// The proxies of active wire faults.
    wire: wire::Wire,
    journal: Journal,
    /// Fires when `down` is asked for (by the API or a signal).
    pub shutdown: Notify,
}

/// Forks children from one long-lived thread, so `PR_SET_PDEATHSIG` (which fires when the
/// forking *thread* ends) means "when the supervisor ends".
struct Spawner {
    jobs: std::sync::mpsc::Sender<SpawnJob>,
}

/// A fork to do on the spawner thread, and where to send the child.
type SpawnJob =
    (Box<dyn FnOnce() -> Result<Starting, LaunchError> + Send>, oneshot::Sender<Result<Starting, LaunchError>>);

impl Spawner {
    fn new() -> anyhow::Result<Spawner> {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (job, reply) in rx {
                    let _ = reply.send(job());
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start the spawner thread: {e}"))?;
        Ok(Spawner { jobs: tx })
    }

    async fn run(
        &self,
        job: impl FnOnce() -> Result<Starting, LaunchError> + Send + 'static,
    ) -> Result<Starting, String> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((Box::new(job), tx)).map_err(|_| "the spawner thread is gone".to_string())?;
        rx.await.map_err(|_| "the spawner thread is gone".to_string())?.map_err(|e| e.to_string())
    }
}

impl Supervisor {
    pub fn new(stack: Stack, dir: StateDir, secret: String) -> anyhow::Result<Arc<Supervisor>> {
        let binary = std::env::current_exe().map_err(|e| anyhow::anyhow!("cannot find the shop binary: {e}"))?;
        let mut instances = vec![new_instance(None, REGISTRY, REGISTRY)];
        instances[0].pinned_port = (stack.registry.port != 0).then_some(stack.registry.port);
        for (idx, spec) in stack
            .layers()
            .iter()
            .flatten()
            .filter_map(|name| stack.services.iter().enumerate().find(|(_, s)| &s.name == name))
        {
            for inst in spec.instance_names() {
                instances.push(new_instance(Some(idx), &spec.name, &inst));
            }
        }
        Ok(Arc::new(Supervisor {
            registry_spec: registry_spec(&stack),
            stack,
            dir,
            secret,
            binary,
            http: crate::plumbing::client::http_client(),
            spawner: Spawner::new()?,
            inner: Mutex::new(Inner { instances, chaos: Vec::new(), registry: None, starting: 0, stopping: false }),
            journal: Journal::default(),
            wire: wire::Wire::default(),
            shutdown: Notify::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The spec instance `idx` runs: its stack file entry, or the registry's.
    fn spec(&self, idx: usize) -> &ServiceSpec {
        let inner = self.lock();
        self.spec_of(&inner.instances[idx])
    }

    /// [`spec`](Self::spec) for an instance already in hand (under the lock).
    fn spec_of(&self, inst: &Instance) -> &ServiceSpec {
        inst.spec.map_or(&self.registry_spec, |s| &self.stack.services[s])
    }

    pub fn status(&self) -> Status {
        let inner = self.lock();
        Status {
            starting: inner.starting > 0,
            stopping: inner.stopping,
            rows: rows(&inner),
            events: self.journal.recent(),
        }
    }

    /// Service names as the user may give them: unknown ones are a usage error.
    pub fn resolve(&self, names: &[String], with_deps: bool) -> Result<Vec<String>, String> {
        if names.is_empty() {
            return Ok(self.stack.services.iter().map(|s| s.name.clone()).collect());
        }
        let known: Vec<String> = self.stack.services.iter().map(|s| s.name.clone()).collect();
        if let Some(n) = names.iter().find(|n| *n != REGISTRY && !known.contains(n)) {
            return Err(format!("unknown service `{n}`; the stack has: {}", known.join(", ")));
        }
        let names: Vec<String> = names.iter().filter(|n| *n != REGISTRY).cloned().collect();
        if with_deps {
            self.stack.with_dependencies(&names)
        } else {
            Ok(names)
        }
    }

    /// The services, or instances of one (`order-2`: one replica), that a stop, start or
    /// restart names, as given. The registry is one of them: it stops like any other (its
    /// clients keep their last view, and their heartbeats find it gone), where `up` always
    /// starts it first and so leaves it out of what it resolves.
    pub fn resolve_named(&self, names: &[String]) -> Result<Vec<String>, String> {
        let known: Vec<String> =
            std::iter::once(REGISTRY.to_string()).chain(self.stack.services.iter().map(|s| s.name.clone())).collect();
        let instances: Vec<String> = self.lock().instances.iter().map(|i| i.name.clone()).collect();
        match names.iter().find(|n| !known.contains(n) && !instances.contains(n)) {
            Some(n) => {
                let hint =
                    match crate::plumbing::yaml::did_you_mean(n, known.iter().chain(&instances).map(String::as_str)) {
                        Some(near) => format!("did you mean `{near}`?"),
                        None => format!("the stack has: {}", known.join(", ")),
                    };
                Err(format!("unknown service or instance `{n}`; {hint}"))
            }
            None => Ok(names.to_vec()),
        }
    }

    /// A start asked for by the user begins a fresh crash count (and a restart is counted).
    fn fresh_start(&self, services: &[String], count_restart: bool) {
        let mut inner = self.lock();
        for inst in inner.instances.iter_mut().filter(|i| i.named_by(services)) {
            inst.forget_crashes();
            inst.auto_restart = false;
            inst.outage = false;
            if count_restart {
                inst.count_restart(&self.journal);
            }
        }
    }

    /// Starts `services` (already resolved) in dependency order, registry first; what runs
    /// already is left alone. Services whose dependency failed are marked skipped.
    pub async fn up(self: &Arc<Self>, services: Vec<String>) {
        self.start_in_order(services, Dependencies::MustBeHealthy).await;
    }

    /// Starts the services a user named (`shop start`, `shop restart`), in dependency order,
    /// whatever state their dependencies are in: each tolerates a dependency that is down (the
    /// saga retries, readiness leaves dependencies out), so a restart while one is down must
    /// not turn into an outage of its own, as `docker compose restart` does not.
    pub async fn start_named(self: &Arc<Self>, services: Vec<String>) {
        self.start_in_order(services, Dependencies::Tolerated).await;
    }

    async fn start_in_order(self: &Arc<Self>, services: Vec<String>, dependencies: Dependencies) {
        if dependencies == Dependencies::MustBeHealthy || services.iter().any(|s| s == REGISTRY) {
            self.ensure_started(0).await;
        }
        let registry_ok = self.lock().instances[0].state == InstanceState::Healthy;
        for layer in self.stack.layers() {
            let mut batch = tokio::task::JoinSet::new();
            // A service named, or one of its instances.
            let named = |n: &String| {
                services.contains(n)
                    || self.instances_of(n).iter().any(|i| self.lock().instances[*i].named_by(&services))
            };
            for spec in layer.iter().filter(|n| named(n)).filter_map(|n| self.stack.service(n)) {
                let failed_dep = match dependencies {
                    Dependencies::Tolerated => None,
                    Dependencies::MustBeHealthy if !registry_ok => Some(REGISTRY.to_string()),
                    Dependencies::MustBeHealthy => spec.depends_on.iter().find(|d| !self.service_healthy(d)).cloned(),
                };
                for idx in self.instances_of(&spec.name) {
                    if !self.lock().instances[idx].named_by(&services) {
                        continue;
                    }
                    if let Some(dep) = &failed_dep {
                        let mut inner = self.lock();
                        let inst = &mut inner.instances[idx];
                        if !inst.state.running() {
                            inst.set_state(InstanceState::Skipped, &self.journal);
                            inst.detail = Some(format!("dependency `{dep}` is not healthy"));
                        }
                        continue;
                    }
                    let me = self.clone();
                    batch.spawn(async move { me.ensure_started(idx).await });
                }
            }
            while batch.join_next().await.is_some() {}
        }
    }

    /// [`up`](Self::up) in the background; `status().starting` is true from this call until
    /// it has finished.
    pub fn spawn_up(self: &Arc<Self>, services: Vec<String>) {
        self.lock().starting += 1;
        let me = self.clone();
        tokio::spawn(async move {
            me.up(services).await;
            me.lock().starting -= 1;
        });
    }

    fn service_healthy(&self, name: &str) -> bool {
        let inner = self.lock();
        let mut all = inner.instances.iter().filter(|i| i.service == name).peekable();
        all.peek().is_some() && all.all(|i| i.state == InstanceState::Healthy)
    }

    fn instances_of(&self, service: &str) -> Vec<usize> {
        self.lock().instances.iter().enumerate().filter(|(_, i)| i.service == service).map(|(n, _)| n).collect()
    }

    /// Starts instance `idx` unless it is running, and waits for it to be healthy.
    async fn ensure_started(self: &Arc<Self>, idx: usize) {
        if self.lock().instances[idx].state.running() {
            return;
        }
        self.start_instance(idx).await;
    }

    pub fn record(&self, control: SocketAddr) -> SupervisorRecord {
        SupervisorRecord {
            pid: std::process::id(),
            control: control.to_string(),
            stack_file: self.stack.file.canonicalize().unwrap_or_else(|_| self.stack.file.clone()),
            started_at: crate::plumbing::time::rfc3339(crate::plumbing::time::now_ms()),
        }
    }

    /// The last `n` lines of an instance's log, for failure reports.
    pub fn tail(&self, instance: &str, n: usize) -> Vec<String> {
        tail_lines(&self.dir.log(instance), n)
    }
}

fn new_instance(spec: Option<usize>, service: &str, name: &str) -> Instance {
    Instance {
        spec,
        service: service.into(),
        name: name.into(),
        state: InstanceState::Pending,
        proc: None,
        pid: None,
        address: None,
        pinned_port: None,
        restarts: 0,
        consecutive: 0,
        last_backoff: None,
        started: None,
        healthy_since: None,
        next_restart: None,
        generation: 0,
        detail: None,
        ended_unhealthy: false,
        chaos_crashed: false,
        outage: false,
        auto_restart: false,
    }
}

/// The registry as a service entry: it is not in the stack file (only its port and timing
/// are, under `registry:`), always restarts, and is probed at `/healthz`. Its client settings
/// are the services' own defaults: the registry calls nothing.
fn registry_spec(stack: &Stack) -> ServiceSpec {
    ServiceSpec {
        name: REGISTRY.into(),
        name_at: Default::default(),
        program: Program::Builtin(Kind::Registry),
        replicas: 1,
        port: stack.registry.port,
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        depends_on: Vec::new(),
        env: Default::default(),
        fixtures: None,
        restart: RestartPolicy::Always,
        max_restarts: 5,
        backoff: Duration::from_millis(200),
        health: HealthSpec {
            path: "/healthz".into(),
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
            start_period: Duration::from_secs(10),
            retries: 3,
        },
        client: ClientSpec {
            timeout: Duration::from_secs(2),
            retries: 3,
            circuit_breaker: BreakerSpec {
                failure_threshold: 5,
                open_for: Duration::from_secs(5),
                half_open_requests: 1,
            },
        },
        saga_timeout: None,
        rate_limit: None,
        otlp: stack.telemetry.otlp.clone(),
    }
}

/// Appends a line to an instance's log, in the JSON-lines shape the services use, at the level
/// `shop logs --level` filters on: a crash is a warning there as in the supervisor's own log.
fn log_line(path: &std::path::Path, level: tracing::Level, message: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let line = serde_json::json!({
            "timestamp": crate::plumbing::time::rfc3339(crate::plumbing::time::now_ms()),
            "level": level.as_str(),
            "message": message,
            "service": "supervisor",
            "instance": "supervisor",
        });
        let _ = f.write_all(format!("{line}\n").as_bytes()); // one write: lines from several writers never interleave
    }
}

/// The last `n` lines of a file; none if it cannot be read.
pub fn tail_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let lines: Vec<String> = String::from_utf8_lossy(&bytes).lines().map(str::to_string).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Whether a start waits on the health of what a service depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dependencies {
    /// `up`: a service whose dependency is not healthy is skipped, as compose's
    /// `condition: service_healthy`.
    MustBeHealthy,
    /// A start the user named: it runs whatever its dependencies do.
    Tolerated,
}
