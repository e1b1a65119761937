//! Chaos on a running stack, kept by the supervisor: process faults it applies itself (kill,
//! pause) and request faults it pushes to services' admin endpoints (latency, errors,
//! refusing partitions), and wire faults it runs proxies for (`net`, partitions that cut the
//! wire; see [`super::wire`]). Every fault is remembered until it expires or is cleared, so `ps` and
//! `chaos list` can show it and a restarted process gets its service's faults again.

use crate::plumbing::admin::AdminClient;
use crate::plumbing::config::STOP_GRACE;
use crate::plumbing::faults::{Errors, FaultClass, FaultSet, Latency, Partition};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::Supervisor;
use crate::orchestrator::protocol::{ChaosAction, ChaosRequest, EventKind, FaultRow, InstanceState};
use crate::orchestrator::proxy::{ToxicKind, ToxicSpec};
use crate::orchestrator::stackfile::Program;
use crate::plumbing::time::now_ms;
use crate::services::Kind;

#[derive(Clone, Debug)]
pub enum FaultKind {
    Kill,
    Pause,
    Latency {
        delay_ms: u64,
        jitter_ms: u64,
        percent: f64,
    },
    Errors {
        status: u16,
        percent: f64,
    },
    /// `refuse`: the old instant refusal in the callers' client; otherwise a blackhole on the wire.
    Partition {
        peer_service: String,
        refuse: bool,
    },
    /// A toxic on the wire in front of the target; `from` is the one caller it applies to.
    Net {
        spec: ToxicSpec,
        from: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct ActiveFault {
    /// As the user named it.
    pub target: String,
    pub instances: Vec<usize>,
    /// For partitions, the instances on the other side.
    pub peer_instances: Vec<usize>,
    pub kind: FaultKind,
    pub until: Option<Instant>,
    pub until_ms: Option<i64>,
    pub seed: Option<u64>,
    /// Who applied it, if a drill or a monkey did: their rollback takes only their own.
    pub owner: Option<String>,
}

impl ActiveFault {
    fn name(&self) -> &'static str {
        match self.kind {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Latency { .. } => "latency",
            FaultKind::Errors { .. } => "errors",
            FaultKind::Partition { .. } => "partition",
            FaultKind::Net { .. } => "net",
        }
    }

    /// The toxic of a wire fault, so a second one of the same toxic replaces the first.
    fn toxic(&self) -> Option<ToxicKind> {
        match &self.kind {
            FaultKind::Net { spec, .. } => Some(spec.toxic.kind()),
            _ => None,
        }
    }

    fn from(&self) -> Option<&str> {
        match &self.kind {
            FaultKind::Net { from, .. } => from.as_deref(),
            _ => None,
        }
    }

    fn label(&self) -> String {
        match &self.kind {
            FaultKind::Kill => "killed".into(),
            FaultKind::Pause => "paused".into(),
            FaultKind::Latency { delay_ms, percent, .. } => format!("latency {delay_ms}ms {percent}%"),
            FaultKind::Errors { status, percent } => format!("errors {status} {percent}%"),
            FaultKind::Partition { peer_service, refuse } => {
                format!("partition {peer_service}{}", if *refuse { " refuse" } else { "" })
            }
            FaultKind::Net { spec, from } => {
                let mut label = format!("net {} {}", spec.toxic.kind(), spec.toxic.describe());
                if spec.direction != crate::orchestrator::proxy::Direction::Both {
                    label.push_str(&format!(" {}", spec.direction.as_str()));
                }
                if spec.toxicity < 100.0 {
                    label.push_str(&format!(" {}%", spec.toxicity));
                }
                if let Some(from) = from {
                    label.push_str(&format!(" from {from}"));
                }
                label
            }
        }
    }

    fn params(&self) -> serde_json::Value {
        match &self.kind {
            FaultKind::Kill | FaultKind::Pause => serde_json::json!({}),
            FaultKind::Latency { delay_ms, jitter_ms, percent } => {
                serde_json::json!({"delay_ms": delay_ms, "jitter_ms": jitter_ms, "percent": percent})
            }
            FaultKind::Errors { status, percent } => serde_json::json!({"status": status, "percent": percent}),
            FaultKind::Partition { peer_service, refuse } => {
                serde_json::json!({"peer": peer_service, "wire": if *refuse { "refuse" } else { "blackhole" }})
            }
            FaultKind::Net { spec, from } => {
                let mut v = serde_json::to_value(spec).unwrap_or_default();
                if let (Some(m), Some(from)) = (v.as_object_mut(), from) {
                    m.insert("from".into(), from.clone().into());
                }
                v
            }
        }
    }

    /// The body for `PUT /admin/faults` on instance `idx`, for request faults.
    /// What instance `idx` is told to do for this fault, or `None` for faults the supervisor
    /// applies itself (kill, pause).
    fn admin_body(&self, idx: usize, sup: &Supervisor) -> Option<FaultSet> {
        let until_ms = self.until_ms;
        let mut set = FaultSet { seed: self.seed, ..FaultSet::default() };
        match &self.kind {
            FaultKind::Latency { delay_ms, jitter_ms, percent } => {
                set.latency = Some(Latency { delay_ms: *delay_ms, jitter_ms: *jitter_ms, percent: *percent, until_ms })
            }
            FaultKind::Errors { status, percent } => {
                set.errors = Some(Errors { status: *status, percent: *percent, until_ms })
            }
            FaultKind::Partition { peer_service, refuse: true } => {
                // Each side refuses its calls to the other: both directions are cut.
                let peer =
                    if self.instances.contains(&idx) { peer_service.clone() } else { sup.registry_name(&self.target) };
                set.partitions = vec![Partition { peer, until_ms }];
            }
            _ => return None,
        }
        Some(set)
    }

    /// Whether it acts on each of its instances alone (a process or a request fault), so it
    /// can be cleared for some of them and stay on the others.
    fn per_instance(&self) -> bool {
        matches!(self.kind, FaultKind::Kill | FaultKind::Pause | FaultKind::Latency { .. } | FaultKind::Errors { .. })
    }

    /// The instances on the side of `scope`: a partition's peers when the scope is on that
    /// side, else its own; either side of a partition, cleared whole, ends it.
    fn side_of(&self, scope: &[usize]) -> &[usize] {
        match self.instances.iter().any(|i| scope.contains(i)) {
            true => &self.instances,
            false => &self.peer_instances,
        }
    }

    fn covers(&self, idx: usize) -> bool {
        self.instances.contains(&idx) || self.peer_instances.contains(&idx)
    }
}

/// What `chaos list` names a fault left on `left` after it was cleared for other instances of
/// its service: the one instance, or their names.
fn narrowed_target(instances: &[super::Instance], left: &[usize]) -> String {
    left.iter().map(|i| instances[*i].name.as_str()).collect::<Vec<_>>().join(",")
}

/// The FAULTS column of `ps` for instance `idx`.
pub fn labels(chaos: &[ActiveFault], idx: usize) -> Vec<String> {
    chaos
        .iter()
        .filter(|f| f.covers(idx))
        .map(|f| match (&f.kind, f.peer_instances.contains(&idx)) {
            (FaultKind::Partition { refuse, .. }, true) => {
                format!("partition {}{}", f.target, if *refuse { " refuse" } else { "" })
            }
            _ => f.label(),
        })
        .collect()
}

impl Supervisor {
    /// The name clients use to find `service` in the registry: its kind for a built-in service.
    pub(super) fn registry_name(&self, service: &str) -> String {
        match self.stack.service(service).map(|s| &s.program) {
            Some(Program::Builtin(kind)) => kind.name().to_string(),
            _ => service.to_string(),
        }
    }

    /// The instances a target names: one instance, or every instance of a service.
    fn target_instances(&self, target: &str) -> Result<(Vec<usize>, String), String> {
        let inner = self.lock();
        if let Some((idx, inst)) = inner.instances.iter().enumerate().find(|(_, i)| i.name == target) {
            return Ok((vec![idx], inst.service.clone()));
        }
        let all: Vec<usize> =
            inner.instances.iter().enumerate().filter(|(_, i)| i.service == target).map(|(n, _)| n).collect();
        if all.is_empty() {
            let mut names: Vec<&str> = inner.instances.iter().map(|i| i.service.as_str()).collect();
            names.dedup();
            let known = inner.instances.iter().flat_map(|i| [i.service.as_str(), i.name.as_str()]);
            let hint = match crate::plumbing::yaml::did_you_mean(target, known) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("the stack has: {}", names.join(", ")),
            };
            return Err(format!("unknown service or instance `{target}`; {hint}"));
        }
        Ok((all, target.to_string()))
    }

    pub fn chaos_rows(&self) -> Vec<FaultRow> {
        let inner = self.lock();
        let now = Instant::now();
        inner
            .chaos
            .iter()
            .map(|f| FaultRow {
                service: f.target.clone(),
                fault: f.name().into(),
                params: f.params(),
                expires_in_s: f.until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
            })
            .collect()
    }

    /// Applies one chaos request; the error is for the user (an unknown target, a bad value).
    pub async fn apply_chaos(self: &Arc<Self>, req: ChaosRequest) -> Result<Vec<FaultRow>, String> {
        let (instances, target_service) = self.target_instances(&req.target)?;
        let wire = match req.action {
            ChaosAction::Net => true,
            ChaosAction::Partition => !req.refuse,
            _ => false,
        };
        // A wire fault is in force once callers have switched to its proxy (one discovery
        // refresh, waited for below), and lasts its `--for` from then.
        let switch = if wire { self.stack.registry.heartbeat + Duration::from_millis(100) } else { Duration::ZERO };
        // Saturating: a `--for` of centuries means "until cleared", not an overflow.
        let lasts = req.for_ms.map(|ms| Duration::from_millis(ms).saturating_add(switch));
        let until = lasts.and_then(|d| Instant::now().checked_add(d));
        let until_ms =
            until.and(lasts).map(|d| now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
        req.check()?;
        let percent = req.percent.unwrap_or(100.0);
        let mut fault = ActiveFault {
            target: req.target.clone(),
            instances: instances.clone(),
            peer_instances: Vec::new(),
            kind: FaultKind::Kill,
            until,
            until_ms,
            seed: req.seed,
            owner: req.owner.clone(),
        };
        match req.action {
            ChaosAction::Kill => {
                self.require_any_running(&instances, &req.target)?;
                // KILL or TERM, as `check` made sure.
                let signal = match req.signal.as_deref().unwrap_or("KILL").trim_start_matches("SIG") {
                    "TERM" => Signal::SIGTERM,
                    _ => Signal::SIGKILL,
                };
                if req.restart {
                    // The restart policy takes over, as after a crash: nothing lasting to keep,
                    // but the journal tells this crash from one of the service's own.
                    let names: Vec<String> = {
                        let inner = self.lock();
                        instances.iter().map(|i| inner.instances[*i].name.clone()).collect()
                    };
                    for name in names {
                        let text = format!(
                            "fault killed (SIG{}), left to the restart policy",
                            signal.as_str().trim_start_matches("SIG")
                        );
                        self.journal.record(&name, EventKind::FaultApplied, text);
                    }
                    self.kill_instances(&instances, signal, true).await;
                    return Ok(self.chaos_rows());
                }
                self.kill_instances(&instances, signal, false).await;
            }
            ChaosAction::Pause => {
                self.require_any_running(&instances, &req.target)?;
                self.signal_instances(&instances, Signal::SIGSTOP, Some(InstanceState::Paused));
                fault.kind = FaultKind::Pause;
            }
            ChaosAction::Resume => {
                self.resume(&instances);
                let mut inner = self.lock();
                inner.chaos.retain(|f| {
                    !(matches!(f.kind, FaultKind::Pause) && f.instances.iter().all(|i| instances.contains(i)))
                });
                self.journal.faults_changed(&inner);
                drop(inner);
                return Ok(self.chaos_rows());
            }
            ChaosAction::Latency => {
                let delay_ms = req.delay_ms.ok_or("latency needs a delay, e.g. 200ms")?;
                fault.kind = FaultKind::Latency { delay_ms, jitter_ms: req.jitter_ms.unwrap_or(0), percent };
            }
            ChaosAction::Errors => {
                let status = req.status.unwrap_or(503);
                fault.kind = FaultKind::Errors { status, percent };
            }
            ChaosAction::Partition => {
                let peer = req.peer.clone().ok_or("partition needs two services")?;
                let (peer_instances, peer_service) = self.target_instances(&peer)?;
                // Calls are refused or detoured by service on the callers' side, so a partition
                // from one replica would cut its whole service: refused rather than misreported.
                for (named, service) in [(&req.target, &target_service), (&peer, &peer_service)] {
                    if named != service {
                        return Err(format!(
                            "a partition is between whole services; `{named}` is one instance of `{service}`: \
                             name `{service}`, or kill or pause `{named}` to take that replica away"
                        ));
                    }
                }
                if peer_instances.iter().any(|i| instances.contains(i)) {
                    return Err("a partition needs two different services".into());
                }
                fault.peer_instances = peer_instances;
                fault.kind =
                    FaultKind::Partition { peer_service: self.registry_name(&peer_service), refuse: req.refuse };
                if !req.refuse {
                    self.require_running(&instances, &req.target)?;
                    self.require_running(&fault.peer_instances, &peer)?;
                }
            }
            ChaosAction::Net => {
                let spec = req.net.clone().ok_or("net needs a toxic, e.g. `shop chaos net payment reset`")?;
                // Its toxic and toxicity passed `check`.
                if self.stack.services_of(Kind::Gateway).contains(&target_service) {
                    // Its callers are clients outside the stack, which never ask the registry.
                    return Err(format!(
                        "`{}` is the gateway: its callers are clients outside the stack, which do not look it up \
                         in the registry, so no call would pass a proxy; break the wire behind it instead \
                         (e.g. `shop chaos net order …`, or `--from gateway`)",
                        req.target
                    ));
                }
                if let Some(from) = &req.from {
                    let services: Vec<String> = self.stack.services.iter().map(|s| s.name.clone()).collect();
                    if !services.contains(from) {
                        return Err(format!(
                            "--from names `{from}`, which is not a service in this stack; the services are: {}",
                            services.join(", ")
                        ));
                    }
                    if !self.stack.calls(from, &target_service) {
                        // The proxy would sit on a path no call takes: listed, and never acting.
                        let callers = self.stack.callers_of(&target_service).join(", ");
                        let why = if *from == target_service {
                            "the target itself: a service never calls itself over the wire".to_string()
                        } else {
                            format!("which never calls `{target_service}`")
                        };
                        return Err(format!("--from names `{from}`, {why}; name one of its callers ({callers})"));
                    }
                }
                self.require_running(&instances, &req.target)?;
                fault.kind = FaultKind::Net { spec, from: req.from.clone() };
            }
        }
        self.push(&fault).await?;
        // With a seed, the proxies it acts through draw as from a fresh start: the same seed
        // gives the same connections whatever ran on them before.
        let reseed = match (&fault.kind, fault.seed) {
            (FaultKind::Net { from, .. }, Some(seed)) => Some((self.keys_of(&fault.instances, from.as_deref()), seed)),
            _ => None,
        };
        {
            let mut inner = self.lock();
            // A new fault of the same kind on the same instances replaces the old one; wire faults
            // replace only the same toxic for the same caller, and different toxics stack.
            inner.chaos.retain(|f| {
                !(f.name() == fault.name()
                    && f.instances == fault.instances
                    && f.peer_instances == fault.peer_instances
                    && f.toxic() == fault.toxic()
                    && f.from() == fault.from())
            });
            inner.chaos.push(fault);
            self.journal.faults_changed(&inner);
        }
        if wire {
            self.sync_wire(reseed.as_ref().map(|(keys, seed)| (keys.as_slice(), *seed))).await?;
            // Callers learn the detour on their next discovery refresh, one heartbeat away:
            // answering after it means the fault is on the wire when `shop chaos` returns.
            tokio::time::sleep(switch).await;
        }
        Ok(self.chaos_rows())
    }

    /// A wire fault needs each instance it fronts to run (the proxy needs its address).
    fn require_running(&self, instances: &[usize], target: &str) -> Result<(), String> {
        let inner = self.lock();
        let down: Vec<String> = instances
            .iter()
            .map(|i| &inner.instances[*i])
            .filter(|i| !i.state.running() || i.address.is_none())
            .map(|i| format!("`{}` is {}", i.name, i.state))
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(format!("`{target}` is not running ({}); start it first: shop start {target}", down.join(", ")))
        }
    }

    /// A kill or pause needs a process to act on, now or soon: on a service stopped by hand (or
    /// never started, or given up on) it would be listed as done while doing nothing, and a
    /// later `start` would drop it without a word. One killed or restarting comes back by
    /// itself, so a fault on it stands.
    fn require_any_running(&self, instances: &[usize], target: &str) -> Result<(), String> {
        use InstanceState::{Failed, Pending, Skipped, Stopped};
        let inner = self.lock();
        let all = instances.iter().map(|i| &inner.instances[*i]);
        if all.clone().all(|i| matches!(i.state, Stopped | Pending | Failed | Skipped)) {
            let states: Vec<String> = all.map(|i| format!("`{}` is {}", i.name, i.state)).collect();
            Err(format!(
                "`{target}` has no process to act on ({}); start it first: shop start {target}",
                states.join(", ")
            ))
        } else {
            Ok(())
        }
    }

    /// Sends a request fault to every running instance it covers.
    async fn push(&self, fault: &ActiveFault) -> Result<(), String> {
        let targets: Vec<(usize, String)> = {
            let inner = self.lock();
            fault
                .instances
                .iter()
                .chain(fault.peer_instances.iter())
                .filter(|i| inner.instances[**i].state.running())
                .filter_map(|i| inner.instances[*i].address.map(|a| (*i, a.to_string())))
                .collect()
        };
        let admin = AdminClient::with_http(self.http.clone(), self.secret.clone());
        for (idx, addr) in targets {
            let Some(set) = fault.admin_body(idx, self) else { continue };
            match admin.set_faults(&addr, &set).await {
                Ok(_) => {}
                // A paused or dying instance gets it again when it restarts.
                Err(e) if e.is_unreachable() => tracing::warn!(%addr, error = %e, "could not set a fault"),
                Err(e) => return Err(format!("{addr} refused the fault: {e}")),
            }
        }
        Ok(())
    }

    async fn clear_remote(&self, fault: &ActiveFault) {
        let class = match fault.kind {
            FaultKind::Latency { .. } => FaultClass::Latency,
            FaultKind::Errors { .. } => FaultClass::Errors,
            FaultKind::Partition { refuse: true, .. } => FaultClass::Partitions,
            _ => return,
        };
        let addrs: Vec<String> = {
            let inner = self.lock();
            fault
                .instances
                .iter()
                .chain(fault.peer_instances.iter())
                .filter_map(|i| inner.instances[*i].address.map(|a| a.to_string()))
                .collect()
        };
        let admin = AdminClient::with_http(self.http.clone(), self.secret.clone());
        for addr in addrs {
            // An instance that is gone has no fault left to clear.
            let _ = admin.clear_faults(&addr, Some(class)).await;
        }
    }

    /// Kills instances. Without `restart` they stay down (state `killed`) until the fault ends;
    /// with it, the exit is left to the monitor, which restarts per policy as after a crash.
    async fn kill_instances(self: &Arc<Self>, instances: &[usize], signal: Signal, restart: bool) {
        if restart {
            let mut inner = self.lock();
            for idx in instances {
                let inst = &mut inner.instances[*idx];
                if let Some(p) = &inst.proc {
                    inst.chaos_crashed = true;
                    p.signal(Signal::SIGCONT); // a paused process cannot handle SIGTERM
                    p.signal(signal);
                }
            }
            return;
        }
        let procs: Vec<_> = {
            let mut inner = self.lock();
            instances
                .iter()
                .filter_map(|idx| {
                    let inst = &mut inner.instances[*idx];
                    inst.generation += 1;
                    inst.next_restart = None;
                    inst.set_state(InstanceState::Killed, &self.journal);
                    inst.detail =
                        Some(format!("killed by shop chaos (SIG{})", signal.as_str().trim_start_matches("SIG")));
                    inst.proc.take()
                })
                .collect()
        };
        let _ = tokio::task::spawn_blocking(move || {
            for mut p in procs {
                p.signal(Signal::SIGCONT);
                if signal == Signal::SIGKILL {
                    p.kill();
                } else {
                    p.stop(STOP_GRACE);
                }
            }
        })
        .await;
    }

    fn signal_instances(&self, instances: &[usize], signal: Signal, state: Option<InstanceState>) {
        let mut inner = self.lock();
        for idx in instances {
            let inst = &mut inner.instances[*idx];
            if let Some(p) = &inst.proc {
                p.signal(signal);
                if let Some(state) = state {
                    inst.set_state(state, &self.journal);
                }
            }
        }
    }

    fn resume(&self, instances: &[usize]) {
        let mut inner = self.lock();
        for idx in instances {
            let inst = &mut inner.instances[*idx];
            if let Some(p) = &inst.proc {
                p.signal(Signal::SIGCONT);
                if inst.state == InstanceState::Paused {
                    inst.set_state(InstanceState::Healthy, &self.journal);
                    inst.healthy_since = Some(Instant::now());
                }
            }
        }
    }

    /// Ends a fault: restarts what it killed, resumes what it paused, clears request faults.
    async fn undo(self: &Arc<Self>, fault: ActiveFault) {
        match fault.kind {
            FaultKind::Kill => {
                for idx in fault.instances {
                    let killed = self.lock().instances[idx].state == InstanceState::Killed;
                    if killed {
                        let me = self.clone();
                        tokio::spawn(async move { me.start_instance(idx).await });
                    }
                }
            }
            FaultKind::Pause => self.resume(&fault.instances),
            FaultKind::Net { .. } | FaultKind::Partition { refuse: false, .. } => {
                // The fault is already off the list: reconciling retires its proxies.
                if let Err(e) = self.sync_wire(None).await {
                    tracing::warn!(error = %e, "wire faults");
                }
            }
            _ => self.clear_remote(&fault).await,
        }
    }

    /// Removes the faults on `target` (a service or instance), or all; undoes each.
    /// Clears the faults on `target` (every target if `None`), or only those `owner` applied.
    pub async fn clear_chaos(
        self: &Arc<Self>,
        target: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Vec<FaultRow>, String> {
        let scope = match target {
            Some(t) => Some(self.target_instances(t)?.0),
            None => None,
        };
        let removed: Vec<ActiveFault> = {
            let mut inner = self.lock();
            // A fault on more instances than the scope (a service's, cleared for one replica)
            // is split when it acts on each instance alone; one that ties the instances to
            // others (a partition, a wire toxic in front of the whole service) is refused here,
            // before anything is cleared.
            if let Some(scope) = &scope {
                let tied = inner.chaos.iter().find(|f| {
                    owner.is_none_or(|o| f.owner.as_deref() == Some(o))
                        && scope.iter().any(|i| f.covers(*i))
                        && !f.per_instance()
                        && f.side_of(scope).iter().any(|i| !scope.contains(i))
                });
                if let Some(f) = tied {
                    return Err(format!(
                        "`{}` is under a {} fault set on `{}`, which cannot be cleared for one instance; \
                         clear it with `shop chaos clear {}`",
                        target.unwrap_or_default(),
                        f.name(),
                        f.target,
                        f.target
                    ));
                }
            }
            let mut gone = Vec::new();
            let mut kept = Vec::new();
            for f in std::mem::take(&mut inner.chaos) {
                let mine = owner.is_none_or(|o| f.owner.as_deref() == Some(o));
                match &scope {
                    _ if !mine => kept.push(f),
                    None => gone.push(f),
                    Some(scope) if !scope.iter().any(|i| f.covers(*i)) => kept.push(f),
                    Some(scope) if f.instances.iter().all(|i| scope.contains(i)) => gone.push(f),
                    Some(scope) => {
                        let (cleared, left): (Vec<usize>, Vec<usize>) =
                            f.instances.iter().partition(|i| scope.contains(i));
                        let target = narrowed_target(&inner.instances, &left);
                        gone.push(ActiveFault { instances: cleared, ..f.clone() });
                        kept.push(ActiveFault { instances: left, target, ..f });
                    }
                }
            }
            inner.chaos = kept;
            self.journal.faults_changed(&inner);
            gone
        };
        for f in removed {
            self.undo(f).await;
        }
        if owner.is_some() {
            // An owner's rollback: a pause it did not apply is not its to end.
            return Ok(self.chaos_rows());
        }
        // Whatever chaos stopped without a record (a resumed-but-not-cleared process) comes back.
        let paused: Vec<usize> = {
            let inner = self.lock();
            inner
                .instances
                .iter()
                .enumerate()
                .filter(|(i, inst)| inst.state == InstanceState::Paused && scope.as_ref().is_none_or(|s| s.contains(i)))
                .map(|(i, _)| i)
                .collect()
        };
        self.resume(&paused);
        Ok(self.chaos_rows())
    }

    /// Forgets the kills and pauses on instances of `services`, which the user is stopping,
    /// starting or restarting by hand: that command decides what runs now, so the fault must
    /// neither be listed over a fresh process nor, on expiry, restart what the user stopped.
    pub(super) fn forget_process_faults(&self, services: &[String]) {
        let mut inner = self.lock();
        let mine: Vec<usize> =
            (inner.instances.iter().enumerate()).filter(|(_, inst)| inst.named_by(services)).map(|(i, _)| i).collect();
        for fault in inner.chaos.iter_mut().filter(|f| matches!(f.kind, FaultKind::Kill | FaultKind::Pause)) {
            fault.instances.retain(|i| !mine.contains(i));
        }
        inner.chaos.retain(|f| !(matches!(f.kind, FaultKind::Kill | FaultKind::Pause) && f.instances.is_empty()));
        self.journal.faults_changed(&inner);
    }

    /// Ends the faults whose time is up; called by the monitor.
    pub(super) async fn expire_faults(self: &Arc<Self>) {
        let now = Instant::now();
        let expired: Vec<ActiveFault> = {
            let mut inner = self.lock();
            if !inner.chaos.iter().any(|f| f.until.is_some_and(|u| u <= now)) {
                return;
            }
            let (gone, kept): (Vec<_>, Vec<_>) =
                std::mem::take(&mut inner.chaos).into_iter().partition(|f| f.until.is_some_and(|u| u <= now));
            inner.chaos = kept;
            self.journal.faults_changed(&inner);
            gone
        };
        for f in expired {
            tracing::info!(on = %f.target, fault = f.name(), "fault expired");
            self.undo(f).await;
        }
    }

    /// Gives a freshly started instance the request faults its service is under.
    pub(super) async fn reapply_faults(&self, idx: usize) {
        // A restarted target has a new address for its proxies; a restarted registry has
        // forgotten the detours.
        let wire = self
            .lock()
            .chaos
            .iter()
            .any(|f| matches!(f.kind, FaultKind::Net { .. } | FaultKind::Partition { refuse: false, .. }));
        if wire {
            let _ = self.sync_wire(None).await;
        }
        let faults: Vec<ActiveFault> = self.lock().chaos.iter().filter(|f| f.covers(idx)).cloned().collect();
        for f in faults {
            let only_me = ActiveFault {
                instances: if f.instances.contains(&idx) { vec![idx] } else { Vec::new() },
                peer_instances: if f.peer_instances.contains(&idx) { vec![idx] } else { Vec::new() },
                ..f
            };
            let _ = self.push(&only_me).await;
        }
    }
}
