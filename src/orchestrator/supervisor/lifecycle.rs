//! An instance's life under the supervisor: starting it (fork, address, first healthy probe),
//! probing it while it runs, restarting it when it crashes (the monitor), and stopping it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::Level;

use super::restart::{self, Decision, HEALTHY_SPELL};
use super::{log_line, Instance, Supervisor, REGISTRY};
use crate::orchestrator::env;
use crate::orchestrator::launcher::{self, ServeCommand, ServiceProcess};
use crate::orchestrator::protocol::InstanceState;
use crate::orchestrator::stackfile::{HealthSpec, Program, RestartPolicy, ServiceSpec};
use crate::services::Kind;

/// Readiness of a built-in service's own resources (its database), not of its dependencies:
/// a stopped dependency must not get its callers restarted.
const LOCAL_READINESS: &str = "/readyz?scope=local";
/// How often the monitor looks for exited processes and due restarts.
const MONITOR_TICK: Duration = Duration::from_millis(100);

/// How waiting for a fresh process to be healthy ended.
enum Wait {
    Healthy,
    /// The instance was stopped or started again meanwhile: this start no longer matters.
    Superseded,
    Failed(String),
}

impl Supervisor {
    /// Forks instance `idx`, waits for its address and its health, and records the outcome.
    pub(super) async fn start_instance(self: &Arc<Self>, idx: usize) {
        let (name, generation) = self.begin_start(idx);
        let spec = self.spec(idx);
        let launched = match &spec.program {
            Program::External(argv) => self.launch_external(idx, &name, spec, argv).await,
            Program::Builtin(kind) => self.launch_builtin(idx, &name, spec, *kind).await,
        };
        let proc = match launched {
            Ok(p) => p,
            Err(e) => return self.start_failed(idx, generation, e),
        };
        let Some(address) = self.record_started(idx, generation, proc) else { return };
        match self.wait_healthy(idx, generation, &name, address, &spec.health).await {
            Wait::Healthy => {}
            Wait::Superseded => return,
            Wait::Failed(why) => return self.start_failed(idx, generation, why),
        }
        {
            let mut inner = self.lock();
            let inst = &mut inner.instances[idx];
            if inst.generation != generation {
                return;
            }
            inst.set_state(InstanceState::Healthy, &self.journal);
            inst.healthy_since = Some(Instant::now());
            inst.outage = false;
            inst.auto_restart = false;
        }
        if matches!(spec.program, Program::External(_)) {
            self.register_external(idx).await;
        }
        // A restarted process starts clean: give it the faults its service is under.
        self.reapply_faults(idx).await;
        let me = self.clone();
        tokio::spawn(async move { me.health_loop(idx, generation).await });
    }

    /// Marks instance `idx` starting, in a new generation; returns its name and generation.
    fn begin_start(&self, idx: usize) -> (String, u64) {
        let mut inner = self.lock();
        let inst = &mut inner.instances[idx];
        inst.generation += 1;
        inst.set_state(InstanceState::Starting, &self.journal);
        inst.detail = None;
        inst.next_restart = None;
        inst.ended_unhealthy = false;
        inst.chaos_crashed = false;
        (inst.name.clone(), inst.generation)
    }

    /// Runs an external program on its port (fixed, kept from an earlier start, or picked
    /// now), so its address is known without asking it.
    async fn launch_external(
        &self,
        idx: usize,
        name: &str,
        spec: &ServiceSpec,
        argv: &[String],
    ) -> Result<ServiceProcess, String> {
        let pinned = self.lock().instances[idx].pinned_port;
        let port = match pinned.or((spec.port != 0).then_some(spec.port)) {
            Some(p) => p,
            None => crate::orchestrator::ports::pick_free(spec.bind).unwrap_or(0),
        };
        let argv: Vec<String> = argv.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).envs(env::service(spec));
        cmd.env("PORT", port.to_string());
        let (inst, program, log) = (name.to_string(), argv[0].clone(), self.dir.log(name));
        let address = SocketAddr::new(spec.bind, port);
        self.lock().instances[idx].pinned_port = Some(port);
        self.spawner
            .run(move || launcher::start(cmd, &inst, &program, Some(&log), true))
            .await
            .map(|s| s.with_known_address(address))
    }

    /// Runs `shop serve KIND` and waits (up to the start period) for the address it reports.
    async fn launch_builtin(
        &self,
        idx: usize,
        name: &str,
        spec: &ServiceSpec,
        kind: Kind,
    ) -> Result<ServiceProcess, String> {
        let cmd = self.serve_command(idx, name, spec, kind);
        let starting = self.spawner.run(move || cmd.start(true)).await?;
        let wait = spec.health.start_period;
        tokio::task::spawn_blocking(move || starting.wait_address(wait))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
    }

    /// Keeps a started process on its instance; `None` if the instance was stopped meanwhile.
    fn record_started(&self, idx: usize, generation: u64, proc: ServiceProcess) -> Option<SocketAddr> {
        let address = proc.address;
        let pid = proc.pid();
        let log = {
            let mut inner = self.lock();
            if inner.instances[idx].generation != generation {
                return None;
            }
            let inst = &mut inner.instances[idx];
            inst.pid = Some(pid);
            inst.address = Some(address);
            inst.started = Some(Instant::now());
            inst.proc = Some(proc);
            if inst.service == REGISTRY {
                // Restarts keep the port: every service was told this address.
                inst.pinned_port = Some(address.port());
                inner.registry = Some(address);
            }
            self.dir.log(&inner.instances[idx].name)
        };
        log_line(
            &log,
            Level::INFO,
            &format!("supervisor: started {} (pid {pid}) on {address}", self.lock().instances[idx].name),
        );
        Some(address)
    }

    /// Healthy within the start period, or failed; a process that exits meanwhile fails at once.
    async fn wait_healthy(
        &self,
        idx: usize,
        generation: u64,
        name: &str,
        address: SocketAddr,
        health: &HealthSpec,
    ) -> Wait {
        let deadline = Instant::now() + health.start_period;
        let url = format!("http://{address}{}", health.path);
        loop {
            let exited = {
                let mut inner = self.lock();
                let inst = &mut inner.instances[idx];
                if inst.generation != generation {
                    return Wait::Superseded;
                }
                inst.proc.as_mut().is_none_or(|p| p.exited())
            };
            if exited {
                return Wait::Failed(format!("`{name}` exited during start-up"));
            }
            if probe(&self.http, &url, health.timeout).await.is_ok() {
                return Wait::Healthy;
            }
            if Instant::now() >= deadline {
                return Wait::Failed(format!("`{name}` was not healthy within {:?} ({url})", health.start_period));
            }
            tokio::time::sleep(health.interval.min(Duration::from_millis(50))).await;
        }
    }

    /// The `shop serve` command line and environment of a built-in instance.
    fn serve_command(&self, idx: usize, name: &str, spec: &ServiceSpec, kind: Kind) -> ServeCommand {
        let inner = self.lock();
        let inst = &inner.instances[idx];
        ServeCommand {
            binary: self.binary.clone(),
            kind,
            instance: name.to_string(),
            // Only the registry pins a port of its own choosing; the others use the stack's.
            port: inst.pinned_port.unwrap_or(spec.port),
            db: self.dir.db(&inst.service),
            registry: inner.registry.map(|a| format!("http://{a}")).unwrap_or_default(),
            fixtures: spec.fixtures.clone().map(|p| p.canonicalize().unwrap_or(p)),
            env: env::supervised(&self.stack.registry, &self.secret, spec),
            log: Some(self.dir.log(name)),
        }
    }

    fn start_failed(&self, idx: usize, generation: u64, why: String) {
        let log = {
            let mut inner = self.lock();
            let stopping = inner.stopping;
            let inst = &mut inner.instances[idx];
            if inst.generation != generation {
                return;
            }
            if let Some(mut p) = inst.proc.take() {
                p.kill();
            }
            if inst.auto_restart && !stopping {
                // A restart that fails (its database still unwritable, say) is one more crash:
                // the policy retries with backoff until `max_restarts`.
                let spec = self.spec_of(inst);
                inst.generation += 1;
                self.after_exit(inst, spec, false, &format!("did not start again ({why})"), Instant::now());
                return;
            }
            inst.set_state(InstanceState::Failed, &self.journal);
            inst.detail = Some(why.clone());
            self.dir.log(&inst.name)
        };
        log_line(&log, Level::ERROR, &format!("supervisor: {why}"));
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
            .header(crate::plumbing::admin::SECRET_HEADER, &self.secret)
            .json(&body)
            .timeout(Duration::from_secs(1))
            .send()
            .await;
    }

    /// Probes a running instance every `health.interval` until its generation changes: liveness
    /// (`health.path`) and, for built-in services, the readiness of their own database. After
    /// `health.retries` failures in a row it is unhealthy, and unless its policy is `restart: no`
    /// the supervisor ends it so the restart policy acts.
    async fn health_loop(self: Arc<Self>, idx: usize, generation: u64) {
        let spec = self.spec(idx);
        let (health, external) = (&spec.health, matches!(spec.program, Program::External(_)));
        let mut failures = 0;
        let mut beat = Instant::now();
        loop {
            tokio::time::sleep(health.interval).await;
            let (address, state) = {
                let inner = self.lock();
                let inst = &inner.instances[idx];
                if inst.generation != generation || !inst.state.running() {
                    return;
                }
                (inst.address, inst.state)
            };
            if state == InstanceState::Paused {
                continue;
            }
            let Some(address) = address else { return };
            let mut outcome = probe(&self.http, &format!("http://{address}{}", health.path), health.timeout).await;
            if outcome.is_ok() && !external {
                let url = format!("http://{address}{LOCAL_READINESS}");
                outcome = probe(&self.http, &url, health.timeout).await.map_err(|why| format!("not ready: {why}"));
            }
            let ok = outcome.is_ok();
            failures = if ok { 0 } else { failures + 1 };
            let ended = {
                let mut inner = self.lock();
                let inst = &mut inner.instances[idx];
                if inst.generation != generation || inst.state == InstanceState::Paused {
                    None
                } else if ok {
                    if inst.state != InstanceState::Healthy {
                        inst.set_state(InstanceState::Healthy, &self.journal);
                        inst.healthy_since = Some(Instant::now());
                        inst.detail = None;
                    }
                    if inst.healthy_since.is_some_and(|t| t.elapsed() >= HEALTHY_SPELL) {
                        inst.forget_crashes();
                    }
                    None
                } else if failures >= health.retries && inst.state == InstanceState::Healthy {
                    let why = outcome.err().unwrap_or_default();
                    inst.set_state(InstanceState::Unhealthy, &self.journal);
                    inst.healthy_since = None;
                    inst.detail = Some(format!("unhealthy after {failures} failed probes: {why}"));
                    let restarts = spec.restart != RestartPolicy::No;
                    if restarts {
                        inst.ended_unhealthy = true;
                    }
                    let log = self.dir.log(&inst.name);
                    let then = if restarts { "ending it so its restart policy acts" } else { "restart: no leaves it" };
                    log_line(&log, Level::WARN, &format!("supervisor: {} unhealthy ({why}); {then}", inst.name));
                    tracing::warn!(child = %inst.name, %why, "unhealthy");
                    inst.pid.filter(|_| restarts)
                } else {
                    None
                }
            };
            if let Some(pid) = ended {
                // The monitor reaps the exit and restarts it; SIGKILL if it ignores SIGTERM.
                launcher::signal_group(pid, Signal::SIGTERM);
                let me = self.clone();
                tokio::spawn(async move { me.kill_if_still_running(idx, generation, pid).await });
                return;
            }
            if external && ok && beat.elapsed() >= self.stack.registry.heartbeat {
                beat = Instant::now();
                self.register_external(idx).await;
            }
        }
    }

    /// SIGKILLs the group of `pid` if instance `idx` is still in `generation` after the stop grace.
    async fn kill_if_still_running(&self, idx: usize, generation: u64, pid: u32) {
        tokio::time::sleep(crate::plumbing::config::STOP_GRACE).await;
        let still = {
            let inner = self.lock();
            let inst = &inner.instances[idx];
            inst.generation == generation && inst.pid == Some(pid)
        };
        if still {
            launcher::signal_group(pid, Signal::SIGKILL);
        }
    }

    /// Reaps exited children and restarts them per policy; runs until the process ends.
    pub async fn monitor(self: Arc<Self>) {
        let mut tick = tokio::time::interval(MONITOR_TICK);
        loop {
            tick.tick().await;
            for idx in self.reap() {
                let me = self.clone();
                tokio::spawn(async move { me.start_instance(idx).await });
            }
            self.expire_faults().await;
        }
    }

    /// Handles every instance whose process has exited, and returns those due a restart now.
    fn reap(&self) -> Vec<usize> {
        let mut due = Vec::new();
        let mut inner = self.lock();
        if inner.stopping {
            return due;
        }
        let now = Instant::now();
        for (idx, inst) in inner.instances.iter_mut().enumerate() {
            if let Some(at) = inst.next_restart {
                if at <= now {
                    inst.next_restart = None;
                    inst.count_restart(&self.journal);
                    inst.auto_restart = true;
                    due.push(idx);
                }
                continue;
            }
            // Only instances that made it to healthy are restarted; a failed start is
            // reported (with its log) instead of looping.
            if !matches!(inst.state, InstanceState::Healthy | InstanceState::Unhealthy | InstanceState::Paused) {
                continue;
            }
            let Some(status) = inst.proc.as_mut().and_then(|p| p.exit_status()) else { continue };
            let spec = self.spec_of(inst);
            self.on_exit(inst, spec, status, now);
        }
        due
    }

    /// Cleans up after an exited process and applies the restart decision to its instance.
    fn on_exit(&self, inst: &mut Instance, spec: &ServiceSpec, status: ExitStatus, now: Instant) {
        // Whatever the dead process left running in its group would hold its port.
        if let Some(pid) = inst.pid {
            launcher::signal_group(pid, Signal::SIGKILL);
        }
        inst.proc = None;
        inst.generation += 1;
        let (success, what) = if inst.ended_unhealthy {
            // The reason it was unhealthy stays in what `ps` says until it is healthy again.
            let why = inst.detail.take().unwrap_or_else(|| "unhealthy".to_string());
            (false, format!("was ended for being {why} ({status})"))
        } else if std::mem::take(&mut inst.chaos_crashed) {
            (false, format!("was killed by shop chaos ({status})"))
        } else {
            (status.success(), format!("exited ({status})"))
        };
        self.after_exit(inst, spec, success, &what, now);
    }

    /// Applies the restart decision to an instance whose process is gone; `what` says how it
    /// went, for `ps` and the log.
    fn after_exit(&self, inst: &mut Instance, spec: &ServiceSpec, success: bool, what: &str, now: Instant) {
        inst.outage |= inst.ended_unhealthy;
        inst.ended_unhealthy = false;
        let (policy, max) = (spec.restart, spec.max_restarts);
        let status = what;
        let decision = restart::decide(restart::Exit {
            policy,
            success,
            crashes: inst.consecutive,
            backoff: spec.backoff,
            last_backoff: inst.last_backoff,
            healthy_for: inst.healthy_since.map(|t| now.saturating_duration_since(t)).unwrap_or_default(),
            max_restarts: max,
            counts: !inst.outage,
        });
        // No longer healthy: a restart that fails to start is not "after a healthy spell" again,
        // which would reset its backoff and crash count every time.
        inst.healthy_since = None;
        let log = self.dir.log(&inst.name);
        let name = inst.name.clone();
        match decision {
            Decision::LeaveStopped => {
                inst.set_state(InstanceState::Crashed, &self.journal);
                inst.detail = Some(format!("{status}; restart policy does not restart it"));
                log_line(
                    &log,
                    Level::WARN,
                    &format!("supervisor: {name} {status}; not restarted (restart: {policy:?})"),
                );
            }
            Decision::GiveUp => {
                inst.set_state(InstanceState::Failed, &self.journal);
                inst.detail = Some(format!("gave up after {max} restarts (max_restarts); it keeps crashing: {status}"));
                log_line(
                    &log,
                    Level::ERROR,
                    &format!("supervisor: {name} {status}; gave up after {max} restarts (max_restarts)"),
                );
                tracing::error!(child = %name, "gave up after {max} restarts");
            }
            Decision::Restart { after, crashes } => {
                inst.consecutive = crashes;
                inst.last_backoff = Some(after);
                inst.set_state(InstanceState::Crashed, &self.journal);
                inst.next_restart = Some(now + after);
                let count = if inst.outage {
                    "restart (not counted toward max_restarts while it has not been ready since)".to_string()
                } else {
                    format!("restart {crashes} of {max}")
                };
                inst.detail = Some(format!("{status}; {count} in {after:?}"));
                log_line(&log, Level::WARN, &format!("supervisor: {name} crashed: {status}; {count} in {after:?}"));
                tracing::warn!(child = %name, %status, wait = ?after, "crashed; restarting");
            }
        }
    }

    /// Stops instances of `services` (SIGTERM, SIGKILL after `grace`); they end `stopped`,
    /// which is never counted as a crash.
    pub async fn stop_services(&self, services: &[String], grace: Duration) {
        self.stop_into(services, grace, InstanceState::Stopped).await;
    }

    async fn stop_into(&self, services: &[String], grace: Duration, state: InstanceState) {
        let procs: Vec<(ServiceProcess, PathBuf)> = {
            let mut inner = self.lock();
            inner
                .instances
                .iter_mut()
                .filter(|i| i.named_by(services))
                .filter_map(|i| {
                    i.generation += 1;
                    i.next_restart = None;
                    // A process chaos killed is stopped too: `stop` wins over the kill's expiry.
                    if i.state.running() || matches!(i.state, InstanceState::Crashed | InstanceState::Killed) {
                        i.set_state(state, &self.journal);
                    }
                    i.proc.take().map(|p| (p, self.dir.log(&i.name)))
                })
                .collect()
        };
        let mut batch = tokio::task::JoinSet::new();
        for (mut p, log) in procs {
            batch.spawn_blocking(move || {
                p.signal(Signal::SIGCONT); // a paused process cannot handle SIGTERM
                p.stop(grace);
                log_line(&log, Level::INFO, &format!("supervisor: stopped {}", p.instance));
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
            self.stop_services(&layer, grace).await;
        }
        self.stop_services(&[REGISTRY.to_string()], grace).await;
    }

    /// Kills everything at once (a second Ctrl-C).
    pub fn kill_all(&self) {
        let mut inner = self.lock();
        inner.stopping = true;
        for i in inner.instances.iter_mut() {
            // A graceful stop in progress owns some processes already: their groups are killed
            // by pid, which also ends that stop's wait at once.
            if let Some(pid) = i.pid {
                launcher::signal_group(pid, Signal::SIGKILL);
            }
            if let Some(mut p) = i.proc.take() {
                p.kill();
            }
            i.set_state(InstanceState::Killed, &self.journal);
        }
    }
}

/// One probe: `Ok` on a 2xx within `timeout`, else why not (the service's own message when it
/// gives one, as `/readyz` does).
async fn probe(http: &reqwest::Client, url: &str, timeout: Duration) -> Result<(), String> {
    let response = http.get(url).timeout(timeout).send().await.map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body: serde_json::Value =
        tokio::time::timeout(timeout, response.json()).await.ok().and_then(Result::ok).unwrap_or_default();
    match body["error"]["message"].as_str() {
        Some(message) => Err(format!("{status}: {message}")),
        None => Err(format!("answered {status}")),
    }
}
