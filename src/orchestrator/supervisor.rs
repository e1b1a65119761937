//! The supervisor: starts a stack in dependency order, health-checks every instance, restarts
//! crashed ones per their policy, and answers the control API that `shop ps`, `stop`, `start`,
//! `restart` and `down` talk to.
//!
//! State lives in one `std::sync::Mutex` that is never held across an `.await`; slow work
//! (forking, waiting for a port, stopping a process) happens outside it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

use super::launcher::{self, LaunchError, ServeCommand, ServiceProcess, Starting};
use super::stackfile::{Program, RestartPolicy, ServiceSpec, Stack};
use super::state_dir::{StateDir, SupervisorRecord};
use crate::plumbing::error::ApiError;
use crate::services::Kind;

/// The name the registry runs under in `ps` and in the logs.
pub const REGISTRY: &str = "registry";
/// Restart backoff never grows past this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Healthy this long after a restart, an instance's backoff starts over.
const HEALTHY_SPELL: Duration = Duration::from_secs(10);
/// Consecutive failed probes before a healthy instance is called unhealthy.
const UNHEALTHY_AFTER: u32 = 3;

/// One row of `shop ps` (SPEC section 3), plus why an instance failed or was skipped.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PsRow {
    pub service: String,
    pub instance: String,
    pub pid: Option<u32>,
    pub address: Option<String>,
    pub state: String,
    pub restarts: u32,
    pub uptime_s: u64,
    pub faults: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the control API reports: the rows, and whether a start-up is still running.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub starting: bool,
    pub stopping: bool,
    pub rows: Vec<PsRow>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Pending,
    Starting,
    Healthy,
    Unhealthy,
    Crashed,
    Stopped,
    Killed,
    Paused,
    Failed,
    Skipped,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Starting => "starting",
            Phase::Healthy => "healthy",
            Phase::Unhealthy => "unhealthy",
            Phase::Crashed => "crashed",
            Phase::Stopped => "stopped",
            Phase::Killed => "killed",
            Phase::Paused => "paused",
            Phase::Failed => "failed",
            Phase::Skipped => "skipped",
        }
    }

    pub(super) fn running(self) -> bool {
        matches!(self, Phase::Starting | Phase::Healthy | Phase::Unhealthy | Phase::Paused)
    }
}

pub(super) struct Instance {
    /// Index into `stack.services`, or `None` for the registry.
    pub(super) spec: Option<usize>,
    pub(super) service: String,
    pub(super) name: String,
    pub(super) phase: Phase,
    pub(super) proc: Option<ServiceProcess>,
    pub(super) pid: Option<u32>,
    pub(super) address: Option<SocketAddr>,
    /// A port chosen once and kept across restarts (the registry's, an external program's).
    pub(super) pinned_port: Option<u16>,
    pub(super) restarts: u32,
    /// Crashes since the last healthy spell: drives backoff and `max_restarts`.
    pub(super) consecutive: u32,
    pub(super) started: Option<Instant>,
    pub(super) healthy_since: Option<Instant>,
    pub(super) next_restart: Option<Instant>,
    /// Bumped at every start, so tasks of an older incarnation stop touching it.
    pub(super) generation: u64,
    pub(super) detail: Option<String>,
}

pub(super) struct Inner {
    pub(super) instances: Vec<Instance>,
    /// Faults set by `shop chaos`, until they expire or are cleared.
    pub(super) chaos: Vec<super::chaos::ActiveFault>,
    registry: Option<SocketAddr>,
    /// Start-ups in progress.
    starting: usize,
    stopping: bool,
}

pub struct Supervisor {
    pub stack: Stack,
    pub dir: StateDir,
    pub(super) secret: String,
    binary: PathBuf,
    pub(super) http: reqwest::Client,
    spawner: Spawner,
    inner: Mutex<Inner>,
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
    fn new() -> Spawner {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (job, reply) in rx {
                    let _ = reply.send(job());
                }
            })
            .expect("the spawner thread starts");
        Spawner { jobs: tx }
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
        for layer in stack.layers() {
            for name in layer {
                let (idx, spec) =
                    stack.services.iter().enumerate().find(|(_, s)| s.name == name).expect("layers name services");
                for i in 1..=spec.replicas {
                    let inst = if spec.replicas == 1 { name.clone() } else { format!("{name}-{i}") };
                    instances.push(new_instance(Some(idx), &name, &inst));
                }
            }
        }
        Ok(Arc::new(Supervisor {
            stack,
            dir,
            secret,
            binary,
            http: crate::plumbing::client::http_client(),
            spawner: Spawner::new(),
            inner: Mutex::new(Inner { instances, chaos: Vec::new(), registry: None, starting: 0, stopping: false }),
            shutdown: Notify::new(),
        }))
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> Status {
        let inner = self.lock();
        let rows = inner
            .instances
            .iter()
            .enumerate()
            .map(|(idx, i)| PsRow {
                service: i.service.clone(),
                instance: i.name.clone(),
                pid: i.pid.filter(|_| i.phase.running()),
                address: i.address.map(|a| a.to_string()),
                state: i.phase.as_str().into(),
                restarts: i.restarts,
                uptime_s: i.started.filter(|_| i.phase.running()).map(|s| s.elapsed().as_secs()).unwrap_or(0),
                faults: super::chaos::labels(&inner.chaos, idx, &i.service),
                detail: i.detail.clone(),
            })
            .collect();
        Status { starting: inner.starting > 0, stopping: inner.stopping, rows }
    }

    /// Service names as the user may give them: unknown ones are a usage error.
    pub fn resolve(&self, names: &[String], with_deps: bool) -> Result<Vec<String>, String> {
        if names.is_empty() {
            return Ok(self.stack.services.iter().map(|s| s.name.clone()).collect());
        }
        let known: Vec<String> = self.stack.services.iter().map(|s| s.name.clone()).collect();
        let mut out = Vec::new();
        for n in names {
            if n == REGISTRY {
                continue;
            }
            if !known.contains(n) {
                return Err(format!("unknown service `{n}`; the stack has: {}", known.join(", ")));
            }
        }
        let names: Vec<String> = names.iter().filter(|n| *n != REGISTRY).cloned().collect();
        if with_deps {
            out = self.stack.with_dependencies(&names)?;
        } else {
            out.extend(names);
        }
        Ok(out)
    }

    /// A start asked for by the user begins a fresh crash count (and a restart is counted).
    fn fresh_start(&self, services: &[String], count_restart: bool) {
        let mut inner = self.lock();
        for inst in inner.instances.iter_mut().filter(|i| services.contains(&i.service)) {
            inst.consecutive = 0;
            if count_restart {
                inst.restarts += 1;
            }
        }
    }

    /// Starts `services` (already resolved) in dependency order, registry first; what runs
    /// already is left alone. Services whose dependency failed are marked skipped.
    pub async fn up(self: &Arc<Self>, services: Vec<String>) {
        self.ensure_started(0).await;
        let registry_ok = self.lock().instances[0].phase == Phase::Healthy;
        for layer in self.stack.layers() {
            let mut batch = tokio::task::JoinSet::new();
            for name in layer.iter().filter(|n| services.contains(n)) {
                let spec = self.stack.service(name).expect("layer names a service");
                let failed_dep = if registry_ok {
                    spec.depends_on.iter().find(|d| !self.service_healthy(d)).cloned()
                } else {
                    Some(REGISTRY.to_string())
                };
                for idx in self.instances_of(name) {
                    if let Some(dep) = &failed_dep {
                        let mut inner = self.lock();
                        let inst = &mut inner.instances[idx];
                        if !inst.phase.running() {
                            inst.phase = Phase::Skipped;
                            inst.detail = Some(format!("skipped: dependency `{dep}` is not healthy"));
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
        all.peek().is_some() && all.all(|i| matches!(i.phase, Phase::Healthy))
    }

    pub(super) fn instances_of(&self, service: &str) -> Vec<usize> {
        self.lock().instances.iter().enumerate().filter(|(_, i)| i.service == service).map(|(n, _)| n).collect()
    }

    /// Starts instance `idx` unless it is running, and waits for it to be healthy.
    async fn ensure_started(self: &Arc<Self>, idx: usize) {
        {
            let inner = self.lock();
            if inner.instances[idx].phase.running() {
                return;
            }
        }
        self.start_instance(idx).await;
    }

    fn spec(&self, idx: usize) -> Option<&ServiceSpec> {
        let spec = self.lock().instances[idx].spec;
        spec.map(|s| &self.stack.services[s])
    }

    /// Forks instance `idx`, waits for its address and its health, and records the outcome.
    pub(super) async fn start_instance(self: &Arc<Self>, idx: usize) {
        let spec = self.spec(idx).cloned();
        let (name, service, generation, pinned) = {
            let mut inner = self.lock();
            let inst = &mut inner.instances[idx];
            inst.generation += 1;
            inst.phase = Phase::Starting;
            inst.detail = None;
            inst.next_restart = None;
            (inst.name.clone(), inst.service.clone(), inst.generation, inst.pinned_port)
        };
        let health = spec.as_ref().map(|s| s.health.clone()).unwrap_or_else(default_health);
        let log = self.dir.log(&name);
        let launched = match &spec {
            Some(ServiceSpec { program: Program::External(argv), bind, port, .. }) => {
                let port = match pinned.or((*port != 0).then_some(*port)) {
                    Some(p) => p,
                    None => super::ports::pick_free(*bind).unwrap_or(0),
                };
                let argv: Vec<String> = argv.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..]).envs(spec.as_ref().map(|s| s.env.clone()).unwrap_or_default());
                cmd.env("PORT", port.to_string());
                let (inst, program, log2) = (name.clone(), argv[0].clone(), log.clone());
                let address = SocketAddr::new(*bind, port);
                self.lock().instances[idx].pinned_port = Some(port);
                self.spawner
                    .run(move || launcher::start(cmd, &inst, &program, Some(&log2), true))
                    .await
                    .map(|s| s.with_known_address(address))
            }
            _ => {
                let cmd = self.serve_command(idx, &name, &service, spec.as_ref(), pinned);
                match self.spawner.run(move || cmd.start(true)).await {
                    Ok(starting) => {
                        let wait = health.start_period;
                        tokio::task::spawn_blocking(move || starting.wait_address(wait))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string()))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let proc = match launched {
            Ok(p) => p,
            Err(e) => return self.start_failed(idx, generation, e),
        };
        let address = proc.address;
        {
            let mut inner = self.lock();
            if inner.instances[idx].generation != generation {
                return; // stopped meanwhile
            }
            let inst = &mut inner.instances[idx];
            inst.pid = Some(proc.pid());
            inst.address = Some(address);
            inst.started = Some(Instant::now());
            inst.proc = Some(proc);
            if idx == 0 {
                inst.pinned_port = Some(address.port());
                inner.registry = Some(address);
            }
        }
        log_line(
            &log,
            &format!("supervisor: started {name} (pid {}) on {address}", self.lock().instances[idx].pid.unwrap_or(0)),
        );
        // Healthy within the start period, or failed; a process that exits meanwhile fails at once.
        let deadline = Instant::now() + health.start_period;
        let url = format!("http://{address}{}", health.path);
        loop {
            let exited = {
                let mut inner = self.lock();
                let inst = &mut inner.instances[idx];
                if inst.generation != generation {
                    return;
                }
                inst.proc.as_mut().is_none_or(|p| p.exited())
            };
            if exited {
                return self.start_failed(idx, generation, format!("`{name}` exited during start-up"));
            }
            if probe(&self.http, &url, health.timeout).await {
                break;
            }
            if Instant::now() >= deadline {
                return self.start_failed(
                    idx,
                    generation,
                    format!("`{name}` was not healthy within {:?} ({url})", health.start_period),
                );
            }
            tokio::time::sleep(health.interval.min(Duration::from_millis(50))).await;
        }
        {
            let mut inner = self.lock();
            let inst = &mut inner.instances[idx];
            if inst.generation != generation {
                return;
            }
            inst.phase = Phase::Healthy;
            inst.healthy_since = Some(Instant::now());
        }
        if matches!(spec.as_ref().map(|s| &s.program), Some(Program::External(_))) {
            self.register_external(idx).await;
        }
        // A restarted process starts clean: give it the faults its service is under.
        self.reapply_faults(idx).await;
        let me = self.clone();
        tokio::spawn(async move { me.health_loop(idx, generation).await });
    }

    fn serve_command(
        &self,
        idx: usize,
        name: &str,
        service: &str,
        spec: Option<&ServiceSpec>,
        pinned: Option<u16>,
    ) -> ServeCommand {
        let inner = self.lock();
        let registry = inner.registry.map(|a| format!("http://{a}")).unwrap_or_default();
        let reg = &self.stack.registry;
        let mut env = vec![
            ("SHOP_HEARTBEAT".to_string(), humantime::format_duration(reg.heartbeat).to_string()),
            ("SHOP_TTL".to_string(), humantime::format_duration(reg.ttl).to_string()),
            ("SHOP_SECRET".to_string(), self.secret.clone()),
            // mimalloc commits whole arenas up front by default; committing on use keeps each
            // service's resident memory at what it uses (about 26 MB instead of 38 under load).
            ("MIMALLOC_ARENA_EAGER_COMMIT".to_string(), "0".to_string()),
        ];
        let (kind, port) = match spec {
            Some(s) => {
                env.push(("SHOP_BIND".into(), s.bind.to_string()));
                env.push(("SHOP_CLIENT_TIMEOUT".into(), humantime::format_duration(s.client.timeout).to_string()));
                env.push(("SHOP_CLIENT_RETRIES".into(), s.client.retries.to_string()));
                let cb = &s.client.circuit_breaker;
                env.push(("SHOP_BREAKER_THRESHOLD".into(), cb.failure_threshold.to_string()));
                env.push(("SHOP_BREAKER_OPEN_FOR".into(), humantime::format_duration(cb.open_for).to_string()));
                env.push(("SHOP_BREAKER_HALF_OPEN".into(), cb.half_open_requests.to_string()));
                if let Some(t) = s.saga_timeout {
                    env.push(("SHOP_SAGA_TIMEOUT".into(), humantime::format_duration(t).to_string()));
                }
                if let Some(r) = &s.rate_limit {
                    env.push(("SHOP_RATE_PER_SECOND".into(), r.per_second.to_string()));
                    env.push(("SHOP_RATE_BURST".into(), r.burst.to_string()));
                }
                env.extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                let kind = match s.program {
                    Program::Builtin(k) => k,
                    Program::External(_) => unreachable!("external programs are not served"),
                };
                (kind, s.port)
            }
            None => (Kind::Registry, pinned.unwrap_or(0)),
        };
        let _ = idx;
        ServeCommand {
            binary: self.binary.clone(),
            kind,
            instance: name.to_string(),
            port,
            db: self.dir.db(service),
            registry,
            fixtures: spec.and_then(|s| s.fixtures.clone()).map(|p| p.canonicalize().unwrap_or(p)),
            env,
            log: Some(self.dir.log(name)),
        }
    }

    fn start_failed(&self, idx: usize, generation: u64, why: String) {
        let log = {
            let mut inner = self.lock();
            let inst = &mut inner.instances[idx];
            if inst.generation != generation {
                return;
            }
            if let Some(mut p) = inst.proc.take() {
                p.kill();
            }
            inst.phase = Phase::Failed;
            inst.detail = Some(why.clone());
            self.dir.log(&inst.name)
        };
        log_line(&log, &format!("supervisor: {why}"));
        tracing::error!("{why}");
    }

    /// The supervisor registers external programs (which know nothing of the registry) on
    /// their behalf, so clients can discover them like any other instance.
    async fn register_external(&self, idx: usize) {
        let (registry, body) = {
            let inner = self.lock();
            let inst = &inner.instances[idx];
            let body = serde_json::json!({
                "service": inst.service, "instance": inst.name,
                "address": inst.address.map(|a| a.to_string()), "pid": inst.pid.unwrap_or(0),
            });
            (inner.registry, body)
        };
        let Some(registry) = registry else { return };
        let _ = self
            .http
            .post(format!("http://{registry}/v1/register"))
            .json(&body)
            .timeout(Duration::from_secs(1))
            .send()
            .await;
    }

    /// Probes a running instance every `health.interval` until its generation changes.
    async fn health_loop(self: Arc<Self>, idx: usize, generation: u64) {
        let (health, external) = match self.spec(idx) {
            Some(s) => (s.health.clone(), matches!(s.program, Program::External(_))),
            None => (default_health(), false),
        };
        let mut failures = 0;
        let mut beat = Instant::now();
        loop {
            tokio::time::sleep(health.interval).await;
            let (address, phase) = {
                let inner = self.lock();
                let inst = &inner.instances[idx];
                if inst.generation != generation || !inst.phase.running() {
                    return;
                }
                (inst.address, inst.phase)
            };
            if phase == Phase::Paused {
                continue;
            }
            let Some(address) = address else { return };
            let ok = probe(&self.http, &format!("http://{address}{}", health.path), health.timeout).await;
            failures = if ok { 0 } else { failures + 1 };
            {
                let mut inner = self.lock();
                let inst = &mut inner.instances[idx];
                if inst.generation == generation && inst.phase != Phase::Paused {
                    if ok {
                        if inst.phase != Phase::Healthy {
                            inst.phase = Phase::Healthy;
                            inst.healthy_since = Some(Instant::now());
                        }
                        if inst.healthy_since.is_some_and(|t| t.elapsed() >= HEALTHY_SPELL) {
                            inst.consecutive = 0;
                        }
                    } else if failures >= UNHEALTHY_AFTER && inst.phase == Phase::Healthy {
                        inst.phase = Phase::Unhealthy;
                        inst.healthy_since = None;
                    }
                }
            }
            if external && ok && beat.elapsed() >= self.stack.registry.heartbeat {
                beat = Instant::now();
                self.register_external(idx).await;
            }
        }
    }

    /// Reaps exited children and restarts them per policy; runs until the process ends.
    pub async fn monitor(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let mut due = Vec::new();
            {
                let mut inner = self.lock();
                if inner.stopping {
                    continue;
                }
                let now = Instant::now();
                for idx in 0..inner.instances.len() {
                    let spec = inner.instances[idx].spec.map(|s| &self.stack.services[s]);
                    let inst = &mut inner.instances[idx];
                    if let Some(at) = inst.next_restart {
                        if at <= now {
                            inst.next_restart = None;
                            inst.restarts += 1;
                            due.push(idx);
                        }
                        continue;
                    }
                    // Only instances that made it to healthy are restarted; a failed start is
                    // reported (with its log) instead of looping.
                    if !matches!(inst.phase, Phase::Healthy | Phase::Unhealthy | Phase::Paused) {
                        continue;
                    }
                    let Some(status) = inst.proc.as_mut().and_then(|p| p.exit_status()) else { continue };
                    // Whatever the dead process left running in its group would hold its port.
                    if let Some(pid) = inst.pid {
                        launcher::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    inst.proc = None;
                    inst.generation += 1;
                    let (policy, max, backoff) = spec.map(|s| (s.restart, s.max_restarts, s.backoff)).unwrap_or((
                        RestartPolicy::Always,
                        5,
                        Duration::from_millis(200),
                    ));
                    let restart = match policy {
                        RestartPolicy::No => false,
                        RestartPolicy::OnFailure => !status.success(),
                        RestartPolicy::Always => true,
                    };
                    let log = self.dir.log(&inst.name);
                    if !restart {
                        inst.phase = Phase::Crashed;
                        inst.detail = Some(format!("exited ({status}); restart policy does not restart it"));
                        log_line(
                            &log,
                            &format!(
                                "supervisor: {} exited ({status}); not restarted (restart: {policy:?})",
                                inst.name
                            ),
                        );
                        continue;
                    }
                    if inst.consecutive >= max {
                        inst.phase = Phase::Failed;
                        inst.detail =
                            Some(format!("gave up after {max} restarts (max_restarts); it keeps crashing: {status}"));
                        log_line(
                            &log,
                            &format!(
                                "supervisor: {} exited ({status}); gave up after {max} restarts (max_restarts)",
                                inst.name
                            ),
                        );
                        tracing::error!(instance = %inst.name, "gave up after {max} restarts");
                        continue;
                    }
                    let wait = backoff.saturating_mul(1 << inst.consecutive.min(16)).min(MAX_BACKOFF);
                    inst.consecutive += 1;
                    inst.phase = Phase::Crashed;
                    inst.next_restart = Some(now + wait);
                    log_line(
                        &log,
                        &format!(
                            "supervisor: {} crashed ({status}); restart {} of {max} in {wait:?}",
                            inst.name, inst.consecutive
                        ),
                    );
                    tracing::warn!(instance = %inst.name, %status, ?wait, "crashed; restarting");
                }
            }
            for idx in due {
                let me = self.clone();
                tokio::spawn(async move { me.start_instance(idx).await });
            }
            self.expire_faults().await;
        }
    }

    /// Stops instances of `services` (SIGTERM, SIGKILL after `grace`); never counted as a crash.
    pub async fn stop(&self, services: &[String], grace: Duration, phase_after: &'static str) {
        let phase = if phase_after == "killed" { Phase::Killed } else { Phase::Stopped };
        let procs: Vec<(ServiceProcess, PathBuf)> = {
            let mut inner = self.lock();
            inner
                .instances
                .iter_mut()
                .filter(|i| services.contains(&i.service))
                .filter_map(|i| {
                    i.generation += 1;
                    i.next_restart = None;
                    if i.phase.running() || i.phase == Phase::Crashed {
                        i.phase = phase;
                    }
                    i.proc.take().map(|p| (p, self.dir.log(&i.name)))
                })
                .collect()
        };
        let mut batch = tokio::task::JoinSet::new();
        for (mut p, log) in procs {
            batch.spawn_blocking(move || {
                p.signal(nix::sys::signal::Signal::SIGCONT); // a paused process cannot handle SIGTERM
                p.stop(grace);
                log_line(&log, &format!("supervisor: stopped {}", p.instance));
            });
        }
        while batch.join_next().await.is_some() {}
    }

    /// Stops everything in reverse dependency order, the registry last.
    pub async fn down(&self, grace: Duration) {
        self.lock().stopping = true;
        let mut layers = self.stack.layers();
        layers.reverse();
        for layer in layers {
            self.stop(&layer, grace, "stopped").await;
        }
        self.stop(&[REGISTRY.to_string()], grace, "stopped").await;
    }

    /// Kills everything at once (a second Ctrl-C).
    pub fn kill_all(&self) {
        let mut inner = self.lock();
        inner.stopping = true;
        for i in inner.instances.iter_mut() {
            // A graceful stop in progress owns some processes already: their groups are killed
            // by pid, which also ends that stop's wait at once.
            if let Some(pid) = i.pid {
                launcher::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
            if let Some(mut p) = i.proc.take() {
                p.kill();
            }
            i.phase = Phase::Killed;
        }
    }

    /// The control API on `listener`, for `shop ps`, `stop`, `start`, `restart`, `down`.
    pub fn control_api(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/status", get(api_status))
            .route("/v1/up", post(api_up))
            .route("/v1/stop", post(api_stop))
            .route("/v1/start", post(api_start))
            .route("/v1/restart", post(api_restart))
            .route("/v1/down", post(api_down))
            .route("/v1/chaos", get(super::chaos::api_list).post(super::chaos::api_apply))
            .route("/v1/chaos/clear", post(super::chaos::api_clear))
            .with_state(self.clone())
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
        phase: Phase::Pending,
        proc: None,
        pid: None,
        address: None,
        pinned_port: None,
        restarts: 0,
        consecutive: 0,
        started: None,
        healthy_since: None,
        next_restart: None,
        generation: 0,
        detail: None,
    }
}

fn default_health() -> super::stackfile::HealthSpec {
    super::stackfile::HealthSpec {
        path: "/healthz".into(),
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(1),
        start_period: Duration::from_secs(10),
    }
}

async fn probe(http: &reqwest::Client, url: &str, timeout: Duration) -> bool {
    matches!(http.get(url).timeout(timeout).send().await, Ok(r) if r.status().is_success())
}

/// Appends a line to an instance's log, in the JSON-lines shape the services use.
fn log_line(path: &std::path::Path, message: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let line = serde_json::json!({
            "timestamp": crate::plumbing::time::rfc3339(crate::plumbing::time::now_ms()),
            "level": "INFO",
            "message": message,
            "service": "supervisor",
        });
        let _ = f.write_all(format!("{line}\n").as_bytes()); // one write: lines from several writers never interleave
    }
}

pub fn tail_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    no_deps: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

pub(super) fn authorize(sup: &Supervisor, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get("x-shop-secret").and_then(|v| v.to_str().ok()).unwrap_or("");
    if given.is_empty() || given != sup.secret {
        return Err(ApiError::unauthorized("the stack secret is required (header x-shop-secret)"));
    }
    Ok(())
}

async fn api_status(State(sup): State<Arc<Supervisor>>, headers: HeaderMap) -> Result<Json<Status>, ApiError> {
    authorize(&sup, &headers)?;
    Ok(Json(sup.status()))
}

async fn api_up(
    State(sup): State<Arc<Supervisor>>,
    headers: HeaderMap,
    Json(n): Json<Names>,
) -> Result<StatusCode, ApiError> {
    authorize(&sup, &headers)?;
    let services = sup.resolve(&n.services, !n.no_deps).map_err(ApiError::bad_request)?;
    sup.spawn_up(services);
    Ok(StatusCode::ACCEPTED)
}

async fn api_stop(
    State(sup): State<Arc<Supervisor>>,
    headers: HeaderMap,
    Json(n): Json<Names>,
) -> Result<Json<Status>, ApiError> {
    authorize(&sup, &headers)?;
    let services = sup.resolve(&n.services, false).map_err(ApiError::bad_request)?;
    sup.stop(&services, Duration::from_millis(n.timeout_ms.unwrap_or(10_000)), "stopped").await;
    Ok(Json(sup.status()))
}

async fn api_start(
    State(sup): State<Arc<Supervisor>>,
    headers: HeaderMap,
    Json(n): Json<Names>,
) -> Result<Json<Status>, ApiError> {
    authorize(&sup, &headers)?;
    let services = sup.resolve(&n.services, false).map_err(ApiError::bad_request)?;
    sup.fresh_start(&services, false);
    sup.up(services).await;
    Ok(Json(sup.status()))
}

async fn api_restart(
    State(sup): State<Arc<Supervisor>>,
    headers: HeaderMap,
    Json(n): Json<Names>,
) -> Result<Json<Status>, ApiError> {
    authorize(&sup, &headers)?;
    let services = sup.resolve(&n.services, false).map_err(ApiError::bad_request)?;
    sup.stop(&services, Duration::from_millis(n.timeout_ms.unwrap_or(10_000)), "stopped").await;
    sup.fresh_start(&services, true);
    sup.up(services).await;
    Ok(Json(sup.status()))
}

async fn api_down(
    State(sup): State<Arc<Supervisor>>,
    headers: HeaderMap,
    Json(n): Json<Names>,
) -> Result<StatusCode, ApiError> {
    authorize(&sup, &headers)?;
    let grace = Duration::from_millis(n.timeout_ms.unwrap_or(10_000));
    sup.down(grace).await;
    sup.shutdown.notify_one();
    Ok(StatusCode::NO_CONTENT)
}
