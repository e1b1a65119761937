//! Reading `stack.yaml` (SPEC section 4): the topology `shop up` runs, validated all at once.
//!
//! A user fixing a stack file wants every problem in one go, each as `FILE:LINE:COL: message`,
//! so the file goes through the positioned reader of [`crate::plumbing::yaml`] in three steps:
//!
//! 1. [`yaml::read`] turns the text into a tree that keeps every node's position;
//! 2. `read_stack` and the readers that `raw_struct!` declares walk that tree into the raw model
//!    (`Raw*`): shape and types only, and, like serde's `deny_unknown_fields`, unknown keys
//!    rejected (with a "did you mean");
//! 3. `validate` turns the raw model into the typed [`Stack`]: ranges, durations, kinds,
//!    references, cycles, ports and fixture files, with the defaults filled in.
//!
//! Only `plumbing::yaml` touches the YAML parser, and the rest of the crate sees only [`Stack`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::plumbing::time::parse_duration;
use crate::plumbing::yaml::{self, did_you_mean, Int, List, Node, Pos, Raw, Sp, Text, Value};
pub use crate::plumbing::yaml::{FileError, Problem};
use crate::raw_struct;
use crate::services::Kind;

/// A validated stack file: everything `shop up` needs to start the topology.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    /// Tells stacks apart in output; `shop` unless the file says otherwise.
    pub name: String,
    /// The stack file's path exactly as the user gave it, for messages.
    pub file: PathBuf,
    /// The stack file's directory (`.` for a bare file name): relative paths in the file start here.
    pub dir: PathBuf,
    /// The service registry every instance heartbeats to.
    pub registry: RegistrySpec,
    /// In file order, which is also the order within a start layer.
    pub services: Vec<ServiceSpec>,
    /// The `telemetry:` section.
    pub telemetry: Telemetry,
    /// Where `name:` is written (`0:0` when it is not), for what `shop export` finds in it.
    pub name_at: Pos,
}

/// The `telemetry:` section: where every service sends its spans.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Telemetry {
    /// An OpenTelemetry collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`); every service
    /// gets it as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp: Option<String>,
}

/// The `registry:` section.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrySpec {
    /// Where the registry listens; 0 = any free port.
    pub port: u16,
    /// How often each instance re-registers.
    pub heartbeat: Duration,
    /// An instance missing heartbeats this long is dropped.
    pub ttl: Duration,
}

/// What a service runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Program {
    /// A built-in service, run as `shop serve KIND`.
    Builtin(Kind),
    /// Any program, as argv; the supervisor substitutes `{port}`.
    External(Vec<String>),
}

/// One entry of `services:`, with `defaults:` applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSpec {
    /// The key under `services:`; names instances, logs and `depends_on` entries.
    pub name: String,
    /// Where that key is written, for what `shop export` finds in it.
    pub name_at: Pos,
    /// The built-in kind (`kind:`, else the name) or the `command:`.
    pub program: Program,
    /// How many instances to run; clients balance over the healthy ones.
    pub replicas: u32,
    /// Fixed port, or 0 for any free port.
    pub port: u16,
    /// Address to listen on.
    pub bind: IpAddr,
    /// Services that must be healthy before this one starts.
    pub depends_on: Vec<String>,
    /// Extra environment for the process.
    pub env: BTreeMap<String, String>,
    /// Seed data, resolved against the stack file's directory.
    pub fixtures: Option<PathBuf>,
    /// What to do when the process exits.
    pub restart: RestartPolicy,
    /// Restarts allowed before giving up; 0 = never restart.
    pub max_restarts: u32,
    /// First wait before a restart; the supervisor doubles it each time.
    pub backoff: Duration,
    /// How the supervisor decides the service is up.
    pub health: HealthSpec,
    /// How this service calls its dependencies.
    pub client: ClientSpec,
    /// A saga that cannot finish by then is compensated (meant for `order`).
    pub saga_timeout: Option<Duration>,
    /// Per-token request limit (meant for `gateway`).
    pub rate_limit: Option<RateLimit>,
    /// The stack's `telemetry.otlp`, copied here so the one environment builder sees it.
    pub otlp: Option<String>,
}

impl ServiceSpec {
    /// Its instances' names: the service's own name, or `NAME-1`… when it has replicas. They
    /// name processes, log files and databases, and chaos targets them.
    pub fn instance_names(&self) -> Vec<String> {
        match self.replicas {
            1 => vec![self.name.clone()],
            n => (1..=n).map(|i| format!("{}-{i}", self.name)).collect(),
        }
    }
}

/// `restart: no | on-failure | always`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    OnFailure,
    Always,
}

/// The `health:` section.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSpec {
    /// HTTP path that answers 200 when the service is healthy.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// How long to wait before declaring the start failed.
    pub start_period: Duration,
    /// Failed probes in a row (liveness or readiness) before a running instance is unhealthy
    /// and its restart policy acts.
    pub retries: u32,
}

/// The `client:` section.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSpec {
    /// Per-call deadline.
    pub timeout: Duration,
    /// Extra attempts after the first, with exponential backoff and jitter.
    pub retries: u32,
    /// When to stop calling a failing dependency for a while.
    pub circuit_breaker: BreakerSpec,
}

/// The `circuit_breaker:` section.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSpec {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open.
    pub open_for: Duration,
    /// Trial calls let through while half open.
    pub half_open_requests: u32,
}

/// The `rate_limit:` section: a token bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Bucket size; defaults to `per_second`.
    pub burst: u32,
}

/// Everything wrong with a stack file; `Display` prints one `FILE:LINE:COL: message` per line.
pub type StackError = FileError;

impl Stack {
    /// Reads and validates the stack file at `path`.
    pub fn load(path: &Path) -> Result<Stack, StackError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let message = format!("cannot read the stack file ({e}); pass the right one with `-f FILE`");
            FileError::unreadable(path.to_path_buf(), message)
        })?;
        Stack::parse(&text, path)
    }

    /// Validates `text`; `file` is the path as given, used in messages and for relative paths.
    pub fn parse(text: &str, file: &Path) -> Result<Stack, StackError> {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut c = Check::default();
        let doc = yaml::Doc { noun: "stack file", needs: "a `services:` section" };
        let stack = yaml::read(text, doc, &mut c)
            .and_then(|root| read_stack(&mut c, &root))
            .map(|raw| validate(&mut c, raw, file.to_path_buf(), dir));
        c.0.finish(file.to_path_buf())?;
        // `finish` fails whenever no stack came out: every `None` above reported a problem.
        stack.ok_or_else(|| FileError::unreadable(file.to_path_buf(), "cannot read the stack file".into()))
    }

    /// The service called `name`.
    /// Names of the services that run built-in `kind`, in file order.
    pub fn services_of(&self, kind: Kind) -> Vec<String> {
        self.services.iter().filter(|s| s.program == Program::Builtin(kind)).map(|s| s.name.clone()).collect()
    }

    /// What the services would refuse in their fixture files at start, each as
    /// `FILE:LINE:COL: message` where the file has a place for it (reads every fixture file).
    pub fn fixture_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for s in &self.services {
            let (Program::Builtin(kind), Some(path)) = (&s.program, &s.fixtures) else { continue };
            let checked = match kind {
                Kind::User => crate::fixtures::load_users(path).map(drop),
                Kind::Inventory => crate::fixtures::load_products(path).map(drop),
                _ => Ok(()),
            };
            if let Err(e) = checked {
                problems.push(e.to_string());
            }
        }
        problems
    }

    /// Whether service `from` calls service `to` over the wire: a call its kind makes whatever
    /// the file says (payment asks the user service for cards), or an edge of `depends_on`.
    pub fn calls(&self, from: &str, to: &str) -> bool {
        let (Some(f), Some(t)) = (self.service(from), self.service(to)) else { return false };
        if f.depends_on.iter().any(|d| d == to) {
            return true;
        }
        matches!((&f.program, &t.program), (Program::Builtin(a), Program::Builtin(b)) if a.callees().contains(b))
    }

    /// The services that call `to` ([`Stack::calls`]), in file order.
    pub fn callers_of(&self, to: &str) -> Vec<String> {
        self.services.iter().filter(|s| self.calls(&s.name, to)).map(|s| s.name.clone()).collect()
    }

    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Start order: layers of service names; each layer depends only on earlier layers; names
    /// within a layer in file order.
    pub fn layers(&self) -> Vec<Vec<String>> {
        let mut placed = BTreeSet::new();
        let mut layers = Vec::new();
        while placed.len() < self.services.len() {
            let layer: Vec<&ServiceSpec> = (self.services.iter())
                .filter(|s| !placed.contains(s.name.as_str()))
                .filter(|s| s.depends_on.iter().all(|d| placed.contains(d.as_str())))
                .collect();
            if layer.is_empty() {
                break; // only a cycle gets here, and validation rejects those
            }
            placed.extend(layer.iter().map(|s| s.name.as_str()));
            layers.push(layer.iter().map(|s| s.name.clone()).collect());
        }
        layers
    }

    /// `names` plus everything they depend on, transitively (for `shop up order`), in start order.
    pub fn with_dependencies(&self, names: &[String]) -> Result<Vec<String>, String> {
        let mut todo = Vec::new();
        for name in names {
            let known = self.service(name).ok_or_else(|| {
                let all: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
                format!("unknown service `{name}`; the stack has: {}", all.join(", "))
            })?;
            todo.push(known.name.as_str());
        }
        let mut wanted = BTreeSet::new();
        while let Some(name) = todo.pop() {
            if wanted.insert(name) {
                todo.extend(self.service(name).into_iter().flat_map(|s| s.depends_on.iter().map(String::as_str)));
            }
        }
        Ok(self.layers().into_iter().flatten().filter(|n| wanted.contains(n.as_str())).collect())
    }

    /// Services that depend on `name`, directly or not, in file order.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        let mut found = BTreeSet::from([name]);
        // Grow to a fixed point: stacks are small, so the quadratic walk costs nothing.
        loop {
            let before = found.len();
            for s in &self.services {
                if s.depends_on.iter().any(|d| found.contains(d.as_str())) {
                    found.insert(&s.name);
                }
            }
            if found.len() == before {
                break;
            }
        }
        self.services
            .iter()
            .filter(|s| s.name != name && found.contains(s.name.as_str()))
            .map(|s| s.name.clone())
            .collect()
    }
}

// ---- Step 2: the tree to the raw model (shape and types) ----

/// The shared problem collector, with the checks of step 3 that only a stack file needs.
#[derive(Default)]
struct Check(yaml::Check);

impl std::ops::Deref for Check {
    type Target = yaml::Check;

    fn deref(&self) -> &yaml::Check {
        &self.0
    }
}

impl std::ops::DerefMut for Check {
    fn deref_mut(&mut self) -> &mut yaml::Check {
        &mut self.0
    }
}

raw_struct!(RawRegistry { port: Int = int, heartbeat: Text = text, ttl: Text = text });
raw_struct!(
    /// The fields `defaults:` sets and each service may override.
    RawPolicy {
        restart: Text = text,
        max_restarts: Int = int,
        backoff: Text = text,
        health: RawHealth = nested,
        client: RawClient = nested,
    }
);
raw_struct!(RawHealth {
    path: Text = text,
    interval: Text = text,
    timeout: Text = text,
    start_period: Text = text,
    retries: Int = int,
});
raw_struct!(RawClient { timeout: Text = text, retries: Int = int, circuit_breaker: RawBreaker = nested });
raw_struct!(RawBreaker { failure_threshold: Int = int, open_for: Text = text, half_open_requests: Int = int });
raw_struct!(RawRateLimit { per_second: Int = int, burst: Int = int });
raw_struct!(RawTelemetry { otlp: Text = text });
raw_struct!(
    /// One entry of `services:`; its name is the key.
    RawService {
        kind: Text = text,
        command: List = list,
        replicas: Int = int,
        port: Int = int,
        bind: Text = text,
        depends_on: List = list,
        env: BTreeMap<String, Sp<String>> = env,
        fixtures: Text = text,
        saga_timeout: Text = text,
        rate_limit: Option<Sp<RawRateLimit>> = optional,
        // The policy fields again: serde's `flatten` would need its own unknown-key bookkeeping.
        restart: Text = text,
        max_restarts: Int = int,
        backoff: Text = text,
        health: RawHealth = nested,
        client: RawClient = nested,
    }
);

impl RawService {
    fn policy(&self) -> RawPolicy {
        let (restart, max_restarts, backoff) = (self.restart.clone(), self.max_restarts.clone(), self.backoff.clone());
        RawPolicy { restart, max_restarts, backoff, health: self.health.clone(), client: self.client.clone() }
    }
}

/// The top level, read by hand: it is the root, and `services:` is a map of named entries.
struct RawStack {
    name: Text,
    registry: RawRegistry,
    defaults: RawPolicy,
    telemetry: RawTelemetry,
    /// Where `services:` is (else the file's start), and its entries by name; `None` when it is
    /// not a mapping, which was reported already.
    services: Option<Sp<Vec<NamedService>>>,
}

/// A service's name (where it is written) and its section.
type NamedService = (Sp<String>, RawService);

fn read_stack(c: &mut Check, root: &Node) -> Option<RawStack> {
    if !matches!(root.value, Value::Map(_)) {
        let found = root.describe();
        return c.fail(root.at, format!("the stack file must be a mapping with a `services:` section, not {found}"));
    }
    let top = c.fields(Some(root), "", &["name", "registry", "defaults", "telemetry", "services"]);
    let node = top.get("services");
    let at = top.0.iter().find(|(k, _)| k.v == "services").map_or(root.at, |(k, _)| k.at);
    let is_map = node.is_none_or(|n| matches!(n.value, Value::Map(_)));
    let services = (c.entries(node, "services").into_iter())
        .map(|(name, node)| {
            let service = RawService::read(c, Some(node), &format!("services.{}", name.v));
            (name, service)
        })
        .collect();
    Some(RawStack {
        name: c.text(top.get("name"), "name"),
        registry: c.nested(top.get("registry"), "registry"),
        defaults: c.nested(top.get("defaults"), "defaults"),
        telemetry: c.nested(top.get("telemetry"), "telemetry"),
        services: is_map.then_some(Sp { at, v: services }),
    })
}

// ---- Step 3: the raw model to the typed one ----

/// What a service runs with unless it overrides it.
struct Policy {
    restart: RestartPolicy,
    max_restarts: u32,
    backoff: Duration,
    health: HealthSpec,
    client: ClientSpec,
}

/// The values SPEC section 4 documents for a missing `defaults:` field.
fn builtin_policy() -> Policy {
    let ms = Duration::from_millis;
    Policy {
        restart: RestartPolicy::OnFailure,
        max_restarts: 5,
        backoff: ms(200),
        health: HealthSpec {
            path: "/healthz".into(),
            interval: ms(200),
            timeout: ms(1000),
            start_period: ms(10_000),
            retries: 3,
        },
        client: ClientSpec {
            timeout: ms(2000),
            retries: 3,
            circuit_breaker: BreakerSpec { failure_threshold: 5, open_for: ms(5000), half_open_requests: 1 },
        },
    }
}

/// The longest service name: a DNS label's length.
pub const MAX_NAME_LEN: usize = 63;

/// Replicas per service. Each is a process with its own runtime, connections and health
/// probes; a typo of a few zeros would otherwise start thousands of them and swamp the machine
/// and its supervisor.
pub const MAX_REPLICAS: u32 = 32;

/// Kinds a `services:` entry may have; the registry has its own section.
const SERVICE_KINDS: [Kind; 6] =
    [Kind::Gateway, Kind::User, Kind::Order, Kind::Payment, Kind::Inventory, Kind::Notification];

// Counts: `replicas`, rate limits and the breaker's `failure_threshold`/`half_open_requests` must be
// at least 1, since zero would mean "no service", "no requests" or a breaker that never closes;
// `health.retries` too, since zero failures in a row would call every instance unhealthy.
// `max_restarts: 0` (never restart) and `retries: 0` (one attempt) are meaningful, so those only
// reject negatives. Durations that pace a loop or bound a wait (heartbeat, ttl, health interval and
// timeout, client timeout, saga_timeout) must be non-zero; backoff, start_period and open_for may be 0.
//
// Each check returns `base` after reporting, so validation carries on to find the next problem.
impl Check {
    fn duration(&mut self, raw: &Text, path: &str, nonzero: bool, base: Duration) -> Duration {
        let Some(raw) = raw else { return base };
        match parse_duration(&raw.v) {
            Ok(d) if nonzero && d.is_zero() => {
                self.report(raw.at, format!("`{path}` must be more than zero, not `{}`", raw.v));
                base
            }
            Ok(d) => d,
            Err(e) => {
                self.report(raw.at, format!("`{path}`: {e}"));
                base
            }
        }
    }

    fn count(&mut self, raw: &Int, path: &str, min: i64, base: u32) -> u32 {
        let Some(raw) = raw else { return base };
        let message = match u32::try_from(raw.v) {
            Ok(n) if raw.v >= min => return n,
            _ if raw.v < min => format!("`{path}` must be {min} or more, not {}", raw.v),
            _ => format!("`{path}` must be at most {}, not {}", u32::MAX, raw.v),
        };
        self.report(raw.at, message);
        base
    }

    fn port(&mut self, raw: &Int, path: &str, base: u16) -> u16 {
        let Some(raw) = raw else { return base };
        u16::try_from(raw.v).unwrap_or_else(|_| {
            self.report(raw.at, format!("`{path}` must be between 0 and 65535 (0 picks a free port), not {}", raw.v));
            base
        })
    }

    /// `raw` over `base`, field by field.
    fn policy(&mut self, raw: &RawPolicy, prefix: &str, base: &Policy) -> Policy {
        let p = |key: &str| format!("{prefix}.{key}");
        let restart = match raw.restart.as_ref().map(|r| (r, r.v.as_str())) {
            None => base.restart,
            Some((_, "no")) => RestartPolicy::No,
            Some((_, "on-failure")) => RestartPolicy::OnFailure,
            Some((_, "always")) => RestartPolicy::Always,
            Some((r, other)) => {
                let path = p("restart");
                self.report(r.at, format!("`{path}` must be one of no, on-failure, always, not `{other}`"));
                base.restart
            }
        };
        let (h, bh) = (&raw.health, &base.health);
        let path = match &h.path {
            None => bh.path.clone(),
            Some(path) if path.v.starts_with('/') => path.v.clone(),
            Some(path) => {
                self.report(path.at, format!("`{}` must start with `/`, not `{}`", p("health.path"), path.v));
                bh.path.clone()
            }
        };
        let (cl, bc) = (&raw.client, &base.client);
        let (b, bb) = (&cl.circuit_breaker, &bc.circuit_breaker);
        let pb = |key: &str| format!("{prefix}.client.circuit_breaker.{key}");
        Policy {
            restart,
            max_restarts: self.count(&raw.max_restarts, &p("max_restarts"), 0, base.max_restarts),
            backoff: self.duration(&raw.backoff, &p("backoff"), false, base.backoff),
            health: HealthSpec {
                path,
                interval: self.duration(&h.interval, &p("health.interval"), true, bh.interval),
                timeout: self.duration(&h.timeout, &p("health.timeout"), true, bh.timeout),
                start_period: self.duration(&h.start_period, &p("health.start_period"), false, bh.start_period),
                retries: self.count(&h.retries, &p("health.retries"), 1, bh.retries),
            },
            client: ClientSpec {
                timeout: self.duration(&cl.timeout, &p("client.timeout"), true, bc.timeout),
                retries: self.count(&cl.retries, &p("client.retries"), 0, bc.retries),
                circuit_breaker: BreakerSpec {
                    failure_threshold: self.count(
                        &b.failure_threshold,
                        &pb("failure_threshold"),
                        1,
                        bb.failure_threshold,
                    ),
                    open_for: self.duration(&b.open_for, &pb("open_for"), false, bb.open_for),
                    half_open_requests: self.count(
                        &b.half_open_requests,
                        &pb("half_open_requests"),
                        1,
                        bb.half_open_requests,
                    ),
                },
            },
        }
    }

    fn program(&mut self, name: &Sp<String>, s: &RawService) -> Program {
        let path = format!("services.{}", name.v);
        if let Some(command) = &s.command {
            if s.kind.is_some() {
                let next = "keep `kind` for a built-in service or `command` for your own program";
                self.report(command.at, format!("`{path}` has both `kind` and `command`; {next}"));
            }
            if command.v.is_empty() {
                let next = "give the program and its arguments, e.g. [python3, app.py, --port, \"{port}\"]";
                self.report(command.at, format!("`{path}.command` is empty; {next}"));
            }
            return Program::External(command.v.iter().map(|a| a.v.clone()).collect());
        }
        let kind = s.kind.as_ref().unwrap_or(name);
        let message = match Kind::parse(&kind.v) {
            Some(Kind::Registry) => {
                "`registry` is not a service kind; the registry is set up in the top-level `registry:` section".into()
            }
            Some(k) => return Program::Builtin(k),
            None => {
                let kinds: Vec<&str> = SERVICE_KINDS.iter().map(|k| k.name()).collect();
                format!("unknown service kind `{}`; use one of {}, or give `command:`", kind.v, kinds.join(", "))
            }
        };
        self.report(kind.at, message);
        Program::Builtin(Kind::Gateway) // never seen: a problem was just reported, so `parse` fails
    }
}

fn validate(c: &mut Check, raw: RawStack, file: PathBuf, dir: PathBuf) -> Stack {
    let registry = validate_registry(c, &raw.registry);
    let defaults = c.policy(&raw.defaults, "defaults", &builtin_policy());
    let telemetry = validate_telemetry(c, &raw.telemetry);
    let raw_services = raw.services.as_ref().map_or(&[][..], |s| &s.v[..]);
    if let Some(Sp { at, v: services }) = &raw.services {
        if services.is_empty() {
            c.report(*at, "the stack has no services; list at least one under `services:`, e.g. `user: {}`");
        }
    }
    let names: Vec<&str> = raw_services.iter().map(|(name, _)| name.v.as_str()).collect();
    // Fixed ports so far and who holds them, to catch a second holder.
    let mut ports: Vec<(u16, String)> = Vec::new();
    if registry.port != 0 {
        ports.push((registry.port, "the registry".into()));
    }
    let services: Vec<ServiceSpec> = (raw_services.iter())
        .map(|(name, s)| {
            let scope = Scope { names: &names, defaults: &defaults, dir: &dir, telemetry: &telemetry };
            validate_service(c, name, s, &scope, &mut ports)
        })
        .collect();
    report_clashing_instances(c, raw_services, &services);
    report_cycles(c, raw_services);
    let name_at = raw.name.as_ref().map_or(Pos::default(), |n| n.at);
    let name = raw.name.map_or_else(|| "shop".to_string(), |n| n.v);
    Stack { name, file, dir, registry, services, telemetry, name_at }
}

/// Instance names must be unique and leave the registry's own name alone: each names a process,
/// its log file and database, and a chaos target. `payment` with two replicas makes
/// `payment-1`, which a service of that name would share.
fn report_clashing_instances(c: &mut Check, raw: &[(Sp<String>, RawService)], services: &[ServiceSpec]) {
    let registry = crate::orchestrator::supervisor::REGISTRY;
    let mut taken: Vec<(String, String)> = vec![
        (registry.to_string(), "the stack's registry".to_string()),
        // Its log is `logs/supervisor.log`, beside the instances' own.
        ("supervisor".to_string(), "the stack's supervisor".to_string()),
    ];
    for ((name, _), spec) in raw.iter().zip(services) {
        let mut names = vec![spec.name.clone()];
        names.extend(spec.instance_names().into_iter().filter(|inst| *inst != spec.name));
        let clash = names.iter().find_map(|n| taken.iter().find(|(t, _)| t == n).map(|(_, holder)| (n, holder)));
        // A name already refused where it is written (`registry` as a kind) is not told twice.
        let told = c.problems.iter().any(|p| (p.line, p.column) == (name.at.line, name.at.column));
        if let Some((n, holder)) = clash.filter(|_| !told) {
            let what = if *n == spec.name { format!("`{n}`") } else { format!("its instance `{n}`") };
            c.report(name.at, format!("service `{}`: {what} is also the name of {holder}; rename it", spec.name));
        }
        let holder = format!("an instance of `{}`", spec.name);
        taken.push((spec.name.clone(), format!("the service `{}`", spec.name)));
        taken.extend(names.into_iter().skip(1).map(|inst| (inst, holder.clone())));
    }
}

fn validate_telemetry(c: &mut Check, raw: &RawTelemetry) -> Telemetry {
    let otlp = raw.otlp.as_ref().map(|url| {
        // Plain http: the exporter speaks no TLS, and a collector for a local lab listens on
        // loopback; an https URL would be accepted here and then drop every span.
        let plain_http = reqwest::Url::parse(&url.v)
            .is_ok_and(|u| u.scheme() == "http" && u.host_str().is_some_and(|h| !h.is_empty()));
        if !plain_http || url.v.contains(char::is_whitespace) {
            let next = "give the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 (https is not supported)";
            c.report(url.at, format!("`telemetry.otlp` must be an http:// URL, not `{}`; {next}", url.v));
        }
        url.v.clone()
    });
    Telemetry { otlp }
}

fn validate_registry(c: &mut Check, r: &RawRegistry) -> RegistrySpec {
    let registry = RegistrySpec {
        port: c.port(&r.port, "registry.port", 7070),
        heartbeat: c.duration(&r.heartbeat, "registry.heartbeat", true, Duration::from_secs(1)),
        ttl: c.duration(&r.ttl, "registry.ttl", true, Duration::from_secs(3)),
    };
    if registry.ttl <= registry.heartbeat {
        let at = r.ttl.as_ref().or(r.heartbeat.as_ref()).map_or(Pos::default(), |v| v.at);
        let (ttl, heartbeat) = (registry.ttl, registry.heartbeat);
        let next = "so instances would drop out between heartbeats; make the ttl a few heartbeats long";
        c.report(
            at,
            format!("`registry.ttl` ({ttl:?}) must be longer than `registry.heartbeat` ({heartbeat:?}), {next}"),
        );
    }
    registry
}

/// What every service entry is validated against.
struct Scope<'a> {
    /// Every service name in the stack, for `depends_on`.
    names: &'a [&'a str],
    /// `defaults:` over the built-in policy.
    defaults: &'a Policy,
    /// The stack file's directory, for fixture paths.
    dir: &'a Path,
    /// `telemetry:`, which every service gets.
    telemetry: &'a Telemetry,
}

fn validate_service(
    c: &mut Check,
    name: &Sp<String>,
    s: &RawService,
    scope: &Scope,
    ports: &mut Vec<(u16, String)>,
) -> ServiceSpec {
    let path = format!("services.{}", name.v);
    let p = |key: &str| format!("{path}.{key}");
    // Names become file names under the state dir, so keep them tame.
    if name.v.is_empty() || !name.v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
        c.report(name.at, format!("service name `{}` may only hold letters, digits, `-` and `_`; rename it", name.v));
    } else if name.v.len() > MAX_NAME_LEN {
        // With a replica's `-N` and `.log`, a longer one runs into the file system's 255 bytes
        // long before that, and a Kubernetes name stops at 63.
        let why = "it names files; `shop export` takes at most 52, as Kubernetes names need";
        c.report(
            name.at,
            format!("service name `{}` is {} characters; at most {MAX_NAME_LEN} ({why})", name.v, name.v.len()),
        );
    }
    let mut replicas = c.count(&s.replicas, &p("replicas"), 1, 1);
    if let Some(raw) = s.replicas.as_ref().filter(|_| replicas > MAX_REPLICAS) {
        let why = "each replica is a process of its own on this machine";
        c.report(raw.at, format!("`{}` must be at most {MAX_REPLICAS}, not {} ({why})", p("replicas"), raw.v));
        replicas = 1;
    }
    // An instance name (`NAME-N` with replicas) is what the registry takes: at most 64.
    let longest = if replicas > 1 { name.v.len() + 1 + replicas.to_string().len() } else { name.v.len() };
    if longest > 64 && name.v.len() <= MAX_NAME_LEN {
        let why = format!("its replicas are named up to `{}-{replicas}`, and an instance name is at most 64", name.v);
        c.report(name.at, format!("service name `{}` is too long for {replicas} replicas ({why})", name.v));
    }
    let port = c.port(&s.port, &p("port"), 0);
    if let Some(at) = s.port.as_ref().filter(|_| port != 0).map(|p| p.at) {
        claim_port(c, ports, at, port, &path, replicas);
    }
    let bind = s.bind.as_ref().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |b| {
        b.v.parse().unwrap_or_else(|_| {
            c.report(b.at, format!("`{}` must be an IP address like 127.0.0.1 or 0.0.0.0, not `{}`", p("bind"), b.v));
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        })
    });
    let depends_on = validate_depends_on(c, s.depends_on.as_ref(), &p("depends_on"), scope.names);
    let before = c.problems.len();
    let program = c.program(name, s);
    // A built-in service is wired into the stack by variables shop sets itself; an external
    // program gets none of them, so its `env:` is its own.
    if let Program::Builtin(_) = program {
        for (key, value) in &s.env {
            if let Some((_, instead)) = crate::plumbing::config::WIRING_VARS.iter().find(|(n, _)| n == key) {
                let why = "which shop sets itself to wire the service into the stack";
                c.report(value.at, format!("`{}` sets `{key}`, {why}; {instead}", p("env")));
            }
        }
    }
    // Only for a program that resolved: an unknown kind was just told, and is not a gateway.
    if let Some(f) = s.fixtures.as_ref().filter(|_| c.problems.len() == before) {
        if !matches!(program, Program::Builtin(Kind::User | Kind::Inventory)) {
            let why = "only the user and inventory services load fixtures";
            c.report(f.at, format!("`{}`: `{}` would never read them; {why}", p("fixtures"), name.v));
        }
    }
    let fixtures = s.fixtures.as_ref().map(|f| {
        let resolved = scope.dir.join(&f.v);
        if !resolved.is_file() {
            let next = "paths are relative to the stack file's directory";
            c.report(f.at, format!("`{}`: no file at `{}`; {next}", p("fixtures"), resolved.display()));
        }
        resolved
    });
    let rate_limit = s.rate_limit.as_ref().map(|r| {
        if r.v.per_second.is_none() {
            c.report(r.at, format!("`{}` needs `per_second`, e.g. {{ per_second: 100, burst: 200 }}", p("rate_limit")));
        }
        // A bucket as big as a second's worth of requests is the usual default.
        let per_second = c.count(&r.v.per_second, &p("rate_limit.per_second"), 1, 1);
        RateLimit { per_second, burst: c.count(&r.v.burst, &p("rate_limit.burst"), 1, per_second) }
    });
    let policy = c.policy(&s.policy(), &path, scope.defaults);
    let saga_timeout =
        s.saga_timeout.as_ref().map(|_| c.duration(&s.saga_timeout, &p("saga_timeout"), true, Duration::ZERO));
    ServiceSpec {
        name: name.v.clone(),
        name_at: name.at,
        program,
        replicas,
        port,
        bind,
        depends_on,
        env: s.env.iter().map(|(k, v)| (k.clone(), v.v.clone())).collect(),
        fixtures,
        restart: policy.restart,
        max_restarts: policy.max_restarts,
        backoff: policy.backoff,
        health: policy.health,
        client: policy.client,
        saga_timeout,
        rate_limit,
        otlp: scope.telemetry.otlp.clone(),
    }
}

/// Records fixed `port` (written at `at`) for the service at `path`; a port held already, or
/// shared by replicas, is a problem.
fn claim_port(c: &mut Check, ports: &mut Vec<(u16, String)>, at: Pos, port: u16, path: &str, replicas: u32) {
    if let Some((_, holder)) = ports.iter().find(|(taken, _)| *taken == port) {
        let next = "give each service its own port, or 0 for any free one";
        c.report(at, format!("port {port} of `{path}` is already taken by {holder}; {next}"));
    } else if replicas > 1 {
        let next = "replicas cannot share a port, so use `port: 0` or `replicas: 1`";
        c.report(at, format!("`{path}` has {replicas} replicas but the fixed port {port}; {next}"));
    }
    ports.push((port, format!("`{path}`")));
}

/// The services a `depends_on` list names, once each; names not in the stack are problems.
fn validate_depends_on(c: &mut Check, list: Option<&Sp<Vec<Sp<String>>>>, path: &str, names: &[&str]) -> Vec<String> {
    let mut depends_on: Vec<String> = Vec::new();
    for dep in list.iter().flat_map(|list| &list.v) {
        if names.contains(&dep.v.as_str()) {
            if !depends_on.contains(&dep.v) {
                depends_on.push(dep.v.clone());
            }
            continue;
        }
        let hint = match did_you_mean(&dep.v, names.iter().copied()) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("the stack has: {}", names.join(", ")),
        };
        c.report(dep.at, format!("`{path}` names `{}`, which is not a service in this stack; {hint}", dep.v));
    }
    depends_on
}

/// Reports each dependency cycle once, at the `depends_on` entry of its first edge.
fn report_cycles(c: &mut Check, services: &[NamedService]) {
    let index = |name: &str| services.iter().position(|(n, _)| n.v == name);
    let edges: Vec<Vec<(usize, Pos)>> = (services.iter())
        .map(|(_, s)| s.depends_on.iter().flat_map(|l| &l.v).filter_map(|d| Some((index(&d.v)?, d.at))).collect())
        .collect();
    // Iterative depth-first search (0 = unseen, 1 = on the path, 2 = done), so that a long
    // dependency chain cannot overflow the call stack. `path` holds (service, edges followed).
    let mut state = vec![0u8; services.len()];
    for start in 0..services.len() {
        if state[start] != 0 {
            continue;
        }
        state[start] = 1;
        let mut path = vec![(start, 0usize)];
        while let Some((node, next)) = path.last_mut() {
            let Some(&(to, _)) = edges[*node].get(*next) else {
                state[*node] = 2;
                path.pop();
                continue;
            };
            *next += 1;
            match state[to] {
                0 => {
                    state[to] = 1;
                    path.push((to, 0));
                }
                1 => {
                    let from = path.iter().position(|&(n, _)| n == to).unwrap_or(0);
                    let (first, followed) = path[from];
                    let at = edges[first][followed.saturating_sub(1)].1; // the edge `first` took last
                    let cycle: Vec<&str> =
                        (path[from..].iter().map(|&(n, _)| n)).chain([to]).map(|n| services[n].0.v.as_str()).collect();
                    let next = "remove one of these `depends_on` entries";
                    c.report(at, format!("dependency cycle: {}; {next}", cycle.join(" -> ")));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Stack, StackError> {
        Stack::parse(yaml, Path::new("stack.yaml"))
    }

    fn err(yaml: &str) -> String {
        parse(yaml).unwrap_err().to_string()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn telemetry_otlp_reaches_every_service_and_must_be_a_url() {
        let stack = parse("telemetry: {otlp: 'http://127.0.0.1:4318'}\nservices:\n  user: {}\n").unwrap();
        assert_eq!(stack.telemetry.otlp.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(stack.services[0].otlp.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(parse("services:\n  user: {}\n").unwrap().telemetry, Telemetry::default());
        assert_eq!(
            err("telemetry:\n  otlp: collector:4318\nservices:\n  user: {}\n"),
            "stack.yaml:2:9: `telemetry.otlp` must be an http:// URL, not `collector:4318`; \
             give the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 (https is not supported)"
        );
        assert!(err("telemetry: {otlpp: x}\nservices:\n  user: {}\n").contains("did you mean `otlp`?"));
    }

    #[test]
    fn replicas_names_fit_the_registry() {
        let name = "a".repeat(62);
        assert!(parse(&format!("services:\n  {name}: {{kind: user, replicas: 9}}\n")).is_ok());
        assert!(err(&format!("services:\n  {name}: {{kind: user, replicas: 10}}\n"))
            .contains("is too long for 10 replicas"));
    }

    #[test]
    fn instance_names_are_unique_and_leave_the_registry_alone() {
        assert_eq!(
            err("services:\n  registry: {kind: payment}\n"),
            "stack.yaml:2:3: service `registry`: `registry` is also the name of the stack's registry; rename it"
        );
        assert_eq!(
            err("services:\n  payment: {replicas: 2}\n  payment-1: {kind: payment}\n"),
            "stack.yaml:3:3: service `payment-1`: `payment-1` is also the name of an instance of `payment`; rename it"
        );
        assert_eq!(
            err("services:\n  payment-2: {kind: payment}\n  payment: {replicas: 2}\n"),
            "stack.yaml:3:3: service `payment`: its instance `payment-2` is also the name of the service \
             `payment-2`; rename it"
        );
        assert!(err("services:\n  supervisor: {kind: user}\n").contains("the stack's supervisor"));
        let ok = parse("services:\n  payment: {replicas: 2}\n  payment-3: {kind: payment}\n").unwrap();
        assert_eq!(ok.services[0].instance_names(), strings(&["payment-1", "payment-2"]));
        assert_eq!(ok.services[1].instance_names(), strings(&["payment-3"]));
    }

    #[test]
    fn the_shipped_stack_file_parses_with_the_documented_values() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("stack.yaml");
        let stack = Stack::load(&file).unwrap();
        assert_eq!(stack.name, "shop");
        assert_eq!(stack.registry, RegistrySpec { port: 7070, heartbeat: ms(1000), ttl: ms(3000) });
        let layers =
            [strings(&["user", "inventory", "payment", "notification"]), strings(&["order"]), strings(&["gateway"])];
        assert_eq!(stack.layers(), layers);
        let gateway = stack.service("gateway").unwrap();
        assert_eq!(gateway.program, Program::Builtin(Kind::Gateway));
        assert_eq!((gateway.port, gateway.replicas), (8080, 1));
        assert_eq!(gateway.depends_on, strings(&["order", "user", "inventory"]));
        assert_eq!(gateway.rate_limit, Some(RateLimit { per_second: 20000, burst: 40000 }));
        let order = stack.service("order").unwrap();
        let builtin = builtin_policy();
        assert_eq!(order.saga_timeout, Some(ms(60_000)));
        assert_eq!(
            (order.port, order.bind, order.restart),
            (0, IpAddr::V4(Ipv4Addr::LOCALHOST), RestartPolicy::OnFailure)
        );
        assert_eq!((order.max_restarts, order.backoff), (5, ms(200)));
        assert_eq!((&order.health, &order.client), (&builtin.health, &builtin.client));
        let users = stack.service("user").unwrap().fixtures.clone().unwrap();
        assert_eq!(users, Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/users.yaml"));
    }

    #[test]
    fn unknown_keys_are_rejected_at_every_level_with_a_suggestion() {
        let yaml = "\
nmae: x
registry: {prot: 1}
defaults:
  restrat: no
  health: {intreval: 1s}
  client: {retires: 1, circuit_breaker: {open_fr: 1s}}
services:
  order:
    dependson: [user]
    health: {timout: 1s}
    client: {circuitbreaker: {}}
    rate_limit: {brust: 1, per_second: 1}
  user: {}
";
        assert_eq!(
            err(yaml),
            "\
stack.yaml:1:1: unknown key `nmae` at the top level; did you mean `name`?
stack.yaml:2:12: unknown key `prot` in `registry`; did you mean `port`?
stack.yaml:4:3: unknown key `restrat` in `defaults`; did you mean `restart`?
stack.yaml:5:12: unknown key `intreval` in `defaults.health`; did you mean `interval`?
stack.yaml:6:12: unknown key `retires` in `defaults.client`; did you mean `retries`?
stack.yaml:6:42: unknown key `open_fr` in `defaults.client.circuit_breaker`; did you mean `open_for`?
stack.yaml:9:5: unknown key `dependson` in `services.order`; did you mean `depends_on`?
stack.yaml:10:14: unknown key `timout` in `services.order.health`; did you mean `timeout`?
stack.yaml:11:14: unknown key `circuitbreaker` in `services.order.client`; did you mean `circuit_breaker`?
stack.yaml:12:18: unknown key `brust` in `services.order.rate_limit`; did you mean `burst`?"
        );
    }

    #[test]
    fn wrong_types_name_the_field_and_the_value() {
        let yaml = "\
name: [a]
registry: 7070
services:
  gateway:
    port: eighty
    replicas: \"2\"
    depends_on: order
    command: {a: b}
    env: {A: [1]}
  user: yes
";
        assert_eq!(
            err(yaml),
            "\
stack.yaml:1:7: `name` must be a single value, not a list
stack.yaml:2:11: `registry` must be a mapping (`{}` for none), not `7070`
stack.yaml:5:11: `services.gateway.port` must be a whole number, not `eighty`
stack.yaml:6:15: `services.gateway.replicas` must be a whole number, not `\"2\"`
stack.yaml:7:17: `services.gateway.depends_on` must be a list like [a, b], not `order`
stack.yaml:8:14: `services.gateway.command` must be a list like [a, b], not a mapping
stack.yaml:9:14: `services.gateway.env.A` must be a single value, not a list
stack.yaml:10:9: `services.user` must be a mapping (`{}` for none), not `yes`"
        );
    }

    #[test]
    fn service_kinds_default_to_the_name_and_must_be_built_in() {
        let yaml = "\
services:
  shipping: {}
  user-eu: {kind: usr}
  registry:
  y: {kind: user, command: [a]}
  z: {command: []}
";
        assert_eq!(
            err(yaml),
            "\
stack.yaml:2:3: unknown service kind `shipping`; use one of gateway, user, order, payment, inventory, notification, or give `command:`
stack.yaml:3:19: unknown service kind `usr`; use one of gateway, user, order, payment, inventory, notification, or give `command:`
stack.yaml:4:3: `registry` is not a service kind; the registry is set up in the top-level `registry:` section
stack.yaml:5:28: `services.y` has both `kind` and `command`; keep `kind` for a built-in service or `command` for your own program
stack.yaml:6:16: `services.z.command` is empty; give the program and its arguments, e.g. [python3, app.py, --port, \"{port}\"]"
        );
    }

    #[test]
    fn a_builtin_kind_can_run_under_another_name() {
        let stack = parse("services:\n  inventory: {}\n  inventory-eu: {kind: inventory}\n").unwrap();
        assert_eq!(stack.service("inventory-eu").unwrap().program, Program::Builtin(Kind::Inventory));
    }

    #[test]
    fn external_commands_and_env_values_are_kept_as_strings() {
        let stack = parse(
            "services:\n  web: {command: [python3, -m, http.server, '{port}'], env: {A: 1, B: true, C: x, D:}}\n",
        )
        .unwrap();
        let web = stack.service("web").unwrap();
        assert_eq!(web.program, Program::External(strings(&["python3", "-m", "http.server", "{port}"])));
        let env: Vec<(&str, &str)> = web.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env, [("A", "1"), ("B", "true"), ("C", "x"), ("D", "")]);
    }

    #[test]
    fn depends_on_must_name_services_in_the_stack() {
        assert_eq!(
            err("services:\n  gateway: {depends_on: [ordr, shipping]}\n  order: {}\n"),
            "\
stack.yaml:2:26: `services.gateway.depends_on` names `ordr`, which is not a service in this stack; did you mean `order`?
stack.yaml:2:32: `services.gateway.depends_on` names `shipping`, which is not a service in this stack; the stack has: gateway, order"
        );
    }

    #[test]
    fn dependency_cycles_are_printed_in_full() {
        let yaml = "\
services:
  gateway: {depends_on: [order]}
  order: {depends_on: [payment]}
  payment: {depends_on: [user]}
  user: {depends_on: [order]}
  notification: {depends_on: [notification]}
";
        assert_eq!(
            err(yaml),
            "\
stack.yaml:3:24: dependency cycle: order -> payment -> user -> order; remove one of these `depends_on` entries
stack.yaml:6:31: dependency cycle: notification -> notification; remove one of these `depends_on` entries"
        );
    }

    #[test]
    fn fixed_ports_must_be_unique_and_not_shared_by_replicas() {
        let yaml = "\
registry: {port: 8080}
services:
  gateway: {port: 8080}
  user: {port: 9000}
  order: {port: 9000}
  payment: {port: 9001, replicas: 2}
  inventory: {port: 0, replicas: 2}
  notification: {port: 7070}
";
        assert_eq!(
            err(yaml),
            "\
stack.yaml:3:19: port 8080 of `services.gateway` is already taken by the registry; give each service its own port, or 0 for any free one
stack.yaml:5:17: port 9000 of `services.order` is already taken by `services.user`; give each service its own port, or 0 for any free one
stack.yaml:6:19: `services.payment` has 2 replicas but the fixed port 9001; replicas cannot share a port, so use `port: 0` or `replicas: 1`"
        );
        // The registry's default port counts too.
        assert_eq!(
            err("services:\n  user: {port: 7070}\n"),
            "stack.yaml:2:16: port 7070 of `services.user` is already taken by the registry; give each service its own port, or 0 for any free one"
        );
    }

    #[test]
    fn ports_must_fit_in_sixteen_bits() {
        assert_eq!(
            err("registry: {port: -1}\nservices:\n  gateway: {port: 70000}\n  user: {port: 99999999999999999999}\n"),
            "\
stack.yaml:1:18: `registry.port` must be between 0 and 65535 (0 picks a free port), not -1
stack.yaml:3:19: `services.gateway.port` must be between 0 and 65535 (0 picks a free port), not 70000
stack.yaml:4:16: `services.user.port` is out of range: 99999999999999999999"
        );
    }

    #[test]
    fn health_retries_default_to_three_and_must_be_at_least_one() {
        let stack =
            parse("defaults:\n  health: {retries: 5}\nservices:\n  user: {}\n  payment: {health: {retries: 1}}\n")
                .unwrap();
        assert_eq!(stack.service("user").unwrap().health.retries, 5);
        assert_eq!(stack.service("payment").unwrap().health.retries, 1);
        assert_eq!(parse("services:\n  user: {}\n").unwrap().service("user").unwrap().health.retries, 3);
        assert_eq!(
            err("services:\n  user: {health: {retries: 0}}\n  order: {health: {retires: 2}}\n"),
            "\
stack.yaml:2:28: `services.user.health.retries` must be 1 or more, not 0
stack.yaml:3:20: unknown key `retires` in `services.order.health`; did you mean `retries`?"
        );
    }

    #[test]
    fn counts_below_their_minimum_are_errors() {
        let yaml = "\
defaults:
  max_restarts: -1
  client: {retries: -2, circuit_breaker: {failure_threshold: 0, half_open_requests: 0}}
services:
  user: {replicas: 0, rate_limit: {per_second: 0, burst: -3}}
  order: {max_restarts: 0, client: {retries: 0}, replicas: 4294967296}
";
        assert_eq!(
            err(yaml),
            "\
stack.yaml:2:17: `defaults.max_restarts` must be 0 or more, not -1
stack.yaml:3:21: `defaults.client.retries` must be 0 or more, not -2
stack.yaml:3:62: `defaults.client.circuit_breaker.failure_threshold` must be 1 or more, not 0
stack.yaml:3:85: `defaults.client.circuit_breaker.half_open_requests` must be 1 or more, not 0
stack.yaml:5:20: `services.user.replicas` must be 1 or more, not 0
stack.yaml:5:48: `services.user.rate_limit.per_second` must be 1 or more, not 0
stack.yaml:5:58: `services.user.rate_limit.burst` must be 1 or more, not -3
stack.yaml:6:60: `services.order.replicas` must be at most 4294967295, not 4294967296"
        );
        assert_eq!(
            err("services:\n  gateway: {rate_limit: {burst: 3}}\n"),
            "stack.yaml:2:25: `services.gateway.rate_limit` needs `per_second`, e.g. { per_second: 100, burst: 200 }"
        );
    }

    #[test]
    fn durations_must_parse_and_some_must_be_more_than_zero() {
        let yaml = "\
registry: {heartbeat: 0s, ttl: soon}
defaults: {backoff: 0s, health: {interval: 0ms, timeout: 2 fortnights, start_period: 0s}}
services:
  order: {saga_timeout: 0s, client: {timeout: 0s, circuit_breaker: {open_for: 0s}}}
";
        assert_eq!(
            err(yaml),
            "\
stack.yaml:1:23: `registry.heartbeat` must be more than zero, not `0s`
stack.yaml:1:32: `registry.ttl`: `soon` is not a duration (expected number at 0); write e.g. 500ms, 2s, 1m
stack.yaml:2:44: `defaults.health.interval` must be more than zero, not `0ms`
stack.yaml:2:58: `defaults.health.timeout`: `2 fortnights` is not a duration (unknown time unit \"fortnights\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write e.g. 500ms, 2s, 1m
stack.yaml:4:25: `services.order.saga_timeout` must be more than zero, not `0s`
stack.yaml:4:47: `services.order.client.timeout` must be more than zero, not `0s`"
        );
        assert_eq!(
            err("registry: {heartbeat: 5s}\nservices: {user: {}}\n"),
            "stack.yaml:1:23: `registry.ttl` (3s) must be longer than `registry.heartbeat` (5s), so instances would drop out between heartbeats; make the ttl a few heartbeats long"
        );
    }

    #[test]
    fn fixture_files_must_exist_beside_the_stack_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("fixtures")).unwrap();
        std::fs::write(dir.path().join("fixtures/users.yaml"), "[]").unwrap();
        let file = dir.path().join("stack.yaml");
        let yaml =
            "services:\n  user: {fixtures: fixtures/users.yaml}\n  inventory: {fixtures: fixtures/products.yaml}\n";
        std::fs::write(&file, yaml).unwrap();
        let expected = format!(
            "{}:3:25: `services.inventory.fixtures`: no file at `{}`; paths are relative to the stack file's directory",
            file.display(),
            dir.path().join("fixtures/products.yaml").display()
        );
        assert_eq!(Stack::load(&file).unwrap_err().to_string(), expected);
        std::fs::write(dir.path().join("fixtures/products.yaml"), "[]").unwrap();
        let stack = Stack::load(&file).unwrap();
        assert_eq!(stack.dir, dir.path());
        assert_eq!(stack.service("user").unwrap().fixtures, Some(dir.path().join("fixtures/users.yaml")));
    }

    #[test]
    fn restart_policy_is_one_of_three_words() {
        assert_eq!(
            err("defaults: {restart: sometimes}\nservices:\n  user: {restart: always}\n  order: {restart: false}\n"),
            "\
stack.yaml:1:21: `defaults.restart` must be one of no, on-failure, always, not `sometimes`
stack.yaml:4:20: `services.order.restart` must be one of no, on-failure, always, not `false`"
        );
        assert_eq!(parse("services:\n  user: {restart: no}\n").unwrap().services[0].restart, RestartPolicy::No);
    }

    #[test]
    fn a_stack_needs_services_but_not_a_name() {
        assert_eq!(parse("services: {user: }\n").unwrap().name, "shop");
        let none = "stack.yaml:1:1: the stack has no services; list at least one under `services:`, e.g. `user: {}`";
        assert_eq!(err("services: {}\n"), none);
        assert_eq!(err("services:\n"), none);
        assert_eq!(err("name: x\n"), none);
    }

    #[test]
    fn other_bad_values_are_reported_too() {
        let yaml = "\
services:
  'a b': {command: [x]}
  user: {bind: localhost, health: {path: healthz}}
  order: {}
  order: {}
";
        assert_eq!(
            err(yaml),
            "\
stack.yaml:2:3: service name `a b` may only hold letters, digits, `-` and `_`; rename it
stack.yaml:3:16: `services.user.bind` must be an IP address like 127.0.0.1 or 0.0.0.0, not `localhost`
stack.yaml:3:42: `services.user.health.path` must start with `/`, not `healthz`
stack.yaml:5:3: duplicate key `order` in `services`; keep one"
        );
    }

    #[test]
    fn several_problems_are_reported_together_sorted_by_line() {
        let yaml = "\
registry: {ttl: 0s}
services:
  order: {depends_on: [payment]}
  payment: {depends_on: [order], replicas: 0}
  shipping: {}
bogus: 1
";
        assert_eq!(
            err(yaml),
            "\
stack.yaml:1:17: `registry.ttl` must be more than zero, not `0s`
stack.yaml:3:24: dependency cycle: order -> payment -> order; remove one of these `depends_on` entries
stack.yaml:4:44: `services.payment.replicas` must be 1 or more, not 0
stack.yaml:5:3: unknown service kind `shipping`; use one of gateway, user, order, payment, inventory, notification, or give `command:`
stack.yaml:6:1: unknown key `bogus` at the top level; expected one of: name, registry, defaults, telemetry, services"
        );
    }

    #[test]
    fn an_environment_name_with_an_equals_sign_is_refused() {
        assert_eq!(
            err("services:\n  user: {env: {\"A=B\": x, C: y}}\n"),
            "stack.yaml:2:16: `services.user.env` has the name `A=B`; an environment name is not empty and holds \
             no `=` or NUL"
        );
    }

    #[test]
    fn fixtures_on_a_service_that_never_reads_them_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.yaml"), "products: []").unwrap();
        let path = dir.path().join("stack.yaml");
        let text = "services:\n  payment: {fixtures: f.yaml}\n  web: {command: [x], fixtures: f.yaml}\n  shipping: {fixtures: f.yaml}\n";
        std::fs::write(&path, text).unwrap();
        let err = Stack::load(&path).unwrap_err().to_string();
        let shown = path.display();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(
            lines[0]
                .starts_with(&format!("{shown}:2:23: `services.payment.fixtures`: `payment` would never read them")),
            "{err}"
        );
        assert!(lines[1].starts_with(&format!("{shown}:3:33: `services.web.fixtures`")), "{err}");
        // An unknown kind is told once, as unknown.
        assert!(lines[2].starts_with(&format!("{shown}:4:3: unknown service kind `shipping`")), "{err}");
    }

    #[test]
    fn an_env_that_would_rewire_the_service_is_refused_and_tuning_is_not() {
        assert_eq!(
            err("services:\n  payment: {env: {SHOP_BIND: 0.0.0.0, SHOP_CLIENT_RETRIES: 9, SHOP_SECRET: x}}\n"),
            "\
stack.yaml:2:19: `services.payment.env` sets `SHOP_BIND`, which shop sets itself to wire the service into the stack; use `bind:`
stack.yaml:2:63: `services.payment.env` sets `SHOP_SECRET`, which shop sets itself to wire the service into the stack; every stack makes its own secret"
        );
        assert!(parse("services:\n  payment: {env: {SHOP_CLIENT_RETRIES: 9, SHOP_LOG: debug}}\n").is_ok());
        // An external program gets none of them: its `env:` is its own.
        assert!(parse("services:\n  web: {command: [x], env: {SHOP_REGISTRY: 'http://x:1', SHOP_PORT: 1}}\n").is_ok());
    }

    #[test]
    fn a_service_name_longer_than_a_dns_label_is_refused() {
        let long = "a".repeat(64);
        assert_eq!(
            err(&format!("services:\n  {long}: {{kind: user}}\n")),
            format!("stack.yaml:2:3: service name `{long}` is 64 characters; at most 63 (it names files; `shop export` takes at most 52, as Kubernetes names need)")
        );
        assert!(parse(&format!("services:\n  {}: {{kind: user}}\n", "a".repeat(63))).is_ok());
    }

    #[test]
    fn replicas_are_capped_so_a_typo_cannot_start_thousands_of_processes() {
        assert_eq!(
            err("services:\n  user: {replicas: 100000}\n"),
            "stack.yaml:2:20: `services.user.replicas` must be at most 32, not 100000 (each replica is a process of its own on this machine)"
        );
        let stack = parse("services:\n  user: {replicas: 32}\n").unwrap();
        assert_eq!(stack.services[0].replicas, 32);
    }

    #[test]
    fn service_settings_override_defaults_field_by_field() {
        let yaml = "\
defaults:
  restart: always
  health: {interval: 1s, timeout: 3s}
  client: {retries: 7, circuit_breaker: {open_for: 9s}}
services:
  user: {}
  order:
    max_restarts: 0
    health: {timeout: 5s}
    client: {circuit_breaker: {failure_threshold: 2}}
";
        let stack = parse(yaml).unwrap();
        let (user, order) = (stack.service("user").unwrap(), stack.service("order").unwrap());
        assert_eq!((user.restart, user.max_restarts, user.backoff), (RestartPolicy::Always, 5, ms(200)));
        assert_eq!(
            user.health,
            HealthSpec {
                path: "/healthz".into(),
                interval: ms(1000),
                timeout: ms(3000),
                start_period: ms(10_000),
                retries: 3
            }
        );
        assert_eq!((order.restart, order.max_restarts), (RestartPolicy::Always, 0));
        assert_eq!(order.health, HealthSpec { timeout: ms(5000), ..user.health.clone() });
        let breaker = BreakerSpec { failure_threshold: 2, open_for: ms(9000), half_open_requests: 1 };
        assert_eq!(order.client, ClientSpec { timeout: ms(2000), retries: 7, circuit_breaker: breaker });
    }

    #[test]
    fn with_dependencies_and_dependents_follow_depends_on_transitively() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("stack.yaml");
        let stack = Stack::load(&file).unwrap();
        let order = stack.with_dependencies(&strings(&["order"])).unwrap();
        assert_eq!(order, strings(&["user", "inventory", "payment", "notification", "order"]));
        assert_eq!(stack.with_dependencies(&strings(&["user", "inventory"])).unwrap(), strings(&["user", "inventory"]));
        assert_eq!(
            stack.with_dependencies(&strings(&["shipping"])).unwrap_err(),
            "unknown service `shipping`; the stack has: gateway, user, inventory, payment, notification, order"
        );
        assert_eq!(stack.dependents("payment"), strings(&["gateway", "order"]));
        assert_eq!(stack.dependents("user"), strings(&["gateway", "order"]));
        assert!(stack.dependents("gateway").is_empty());
    }

    #[test]
    fn syntax_errors_and_unsupported_yaml_carry_their_location() {
        assert_eq!(
            err("services:\n  user: {port: 1\n"),
            "stack.yaml:3:1: invalid YAML: while parsing a flow mapping, did not find expected ',' or '}'"
        );
        assert_eq!(
            err("services:\n  user: &u {}\n  order: *u\n"),
            "stack.yaml:2:9: anchors and aliases (`&name`, `*name`) are not supported; write the value out"
        );
        assert_eq!(
            err("services: {user: {}}\n---\nservices: {order: {}}\n"),
            "stack.yaml:2:1: a second YAML document starts here; a stack file holds exactly one"
        );
        assert_eq!(
            err("services: {user: {port: !!str 8080}}\n"),
            "stack.yaml:1:25: YAML tags (`!!str`, `!name`) are not supported; remove it"
        );
    }

    #[test]
    fn a_missing_file_is_one_error_naming_it() {
        let e = Stack::load(Path::new("/nonexistent/stack.yaml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/nonexistent/stack.yaml: cannot read the stack file (No such file or directory (os error 2)); pass the right one with `-f FILE`"
        );
    }

    #[test]
    fn garbage_input_gives_located_errors_and_never_panics() {
        assert_eq!(err(""), "stack.yaml:1:1: the stack file is empty; it needs at least a `services:` section");
        assert_eq!(
            err("- a\n"),
            "stack.yaml:1:1: the stack file must be a mapping with a `services:` section, not a list"
        );
        let deep: String = (0..100).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert_eq!(err(&deep), "stack.yaml:33:33: nested more than 32 levels deep; this is not a stack file");
        // Fixed pseudo-random soups, so a failure reproduces: raw bytes, and YAML punctuation.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut byte = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        let soup = String::from_utf8_lossy(&(0..4000).map(|_| byte()).collect::<Vec<u8>>()).into_owned();
        let alphabet = b" :-[]{},\n\n#&*!'\"?|>ab1";
        let yamlish =
            (0..300).map(|_| (0..80).map(|_| alphabet[usize::from(byte()) % alphabet.len()] as char).collect());
        let mut inputs = vec![
            soup.clone(),
            soup.replace('\0', " "),
            "[".repeat(100_000),
            "{a: ".repeat(10_000),
            "# only a comment\n".into(),
            "plain words".into(),
            "? [a]\n: b\n".into(),
            "services:\n  ? {a: b}\n  : {}\n".into(),
            "services:\n\tuser: {}\n".into(),
        ];
        assert_eq!(
            err(&format!("services:\n  user: {{port: \"a\\nb{}\"}}\n", "c".repeat(50))),
            format!("stack.yaml:2:16: `services.user.port` must be a whole number, not `\"a\\nb{}…\"`", "c".repeat(37))
        );
        inputs.extend((1..60).map(|n| "services:\n  user:\n    port: \"a\n".chars().take(n).collect::<String>()));
        inputs.extend(yamlish);
        // Some of these are valid stacks; the point is that nothing panics.
        for input in inputs {
            if let Err(e) = parse(&input) {
                assert!(
                    !e.problems.is_empty() && e.problems.iter().all(|p| p.line >= 1 && p.column >= 1),
                    "{input:?}: {e}"
                );
            }
        }
    }
}
