//! `shop export k8s|compose`: manifests that run the stack's topology on Kubernetes or with
//! docker compose, from the same validated [`Stack`] that `shop up` runs.
//!
//! What changes off the laptop, in both formats:
//! - discovery is `dns` (`SHOP_DISCOVERY=dns`): there is no registry process; every service is
//!   told where the others are in `SHOP_PEERS`, by the platform's service names
//!   (`payment=payment:8080`), which Kubernetes Services and compose networks resolve;
//! - every container listens on `0.0.0.0` (`SHOP_BIND`), on the stack's fixed port or, for a
//!   service left on port 0, on [`CONTAINER_PORT`] (each container has its own network, so they
//!   can all share it);
//! - each SQLite file lives on a volume: a PersistentVolumeClaim per StatefulSet, or a named
//!   volume per compose service;
//! - the stack secret is generated afresh at every export, never a fixed value.
//!
//! The documents are built as `serde_yaml` values rather than typed structs: the two formats
//! are large, only a sliver of each is used, and the tests check the output against the real
//! schemas, which is what matters.

use crate::orchestrator::env::duration;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_yaml::{Mapping, Value};

use super::context::Context;
use super::Failure;
use crate::orchestrator::stackfile::{HealthSpec, Program, RestartPolicy, ServiceSpec, Stack};
use crate::plumbing::discovery::Peers;
use crate::services::Kind;

/// Builds a YAML mapping in the order given (serde_json's map would sort the keys).
macro_rules! obj {
    ($($key:expr => $value:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut map = ::serde_yaml::Mapping::new();
        $( map.insert(::serde_yaml::Value::from($key), ::serde_yaml::Value::from($value)); )*
        ::serde_yaml::Value::Mapping(map)
    }};
}

/// Where every container keeps its SQLite file (the volume's mount point).
const DATA_DIR: &str = "/data";
/// Where fixture files are mounted, read-only.
const FIXTURES_DIR: &str = "/etc/shop/fixtures";
/// Where the stack secret is mounted, read-only, as the file `SECRET_KEY` (`SHOP_SECRET_FILE`).
const SECRET_DIR: &str = "/etc/shop/secret";
/// The Secret's key and the file's name.
const SECRET_KEY: &str = "SHOP_SECRET";
/// The one writable place besides the database's volume: SQLite's temporary files go there when
/// the root filesystem is read-only.
const TMP_DIR: &str = "/tmp";
/// The port of a service the stack leaves on port 0 (any free port), which a platform cannot
/// route to: containers do not share a network namespace, so one well-known port fits all.
const CONTAINER_PORT: u16 = 8080;
/// The unprivileged user and group the image runs as (see the Dockerfile).
const USER_ID: u32 = 10001;
/// Per container: about what a service needs idle (SPEC section 11 aims under 30 MB), and a
/// ceiling that leaves room for load.
const CPU_REQUEST: &str = "50m";
const MEMORY_REQUEST: &str = "32Mi";
const CPU_LIMIT: &str = "1";
const MEMORY_LIMIT: &str = "256Mi";
/// The size of each service's database volume.
const STORAGE: &str = "1Gi";
/// The label `kubectl get -l` selects a stack by; the others follow the Kubernetes conventions.
const PART_OF: &str = "app.kubernetes.io/part-of";
/// With `PART_OF`, selects one service's pods.
const NAME: &str = "app.kubernetes.io/name";

#[derive(clap::Subcommand, Debug)]
pub enum ExportCommand {
    /// Kubernetes manifests: a ConfigMap and a Secret, a StatefulSet with a volume and a headless
    /// Service per SQLite service, the gateway as a Deployment with a Service
    K8s(K8sArgs),
    /// A docker compose file: every service with its healthcheck, dependencies and volume
    Compose(ComposeArgs),
}

/// What both formats take.
#[derive(clap::Args, Debug)]
pub struct OutputArgs {
    /// Write to FILE instead of stdout (`-` is stdout, as kubectl and docker take it)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The image every service runs (built from the Dockerfile) [default: shop:VERSION]
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Another image for one service, e.g. one that has an external `command`'s program
    /// (repeatable)
    #[arg(long = "image-for", value_name = "SERVICE=IMAGE")]
    pub image_for: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct K8sArgs {
    #[command(flatten)]
    pub out: OutputArgs,
    /// Put every object in this namespace (and create it, enforcing the restricted Pod
    /// Security Standard) [default: kubectl's current one]
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Leave out the NetworkPolicies (default deny, then only the edges of `depends_on`)
    #[arg(long)]
    pub no_network_policies: bool,
}

#[derive(clap::Args, Debug)]
pub struct ComposeArgs {
    #[command(flatten)]
    pub out: OutputArgs,
}

pub fn run(ctx: &Context, mut command: ExportCommand) -> anyhow::Result<i32> {
    let (ExportCommand::K8s(K8sArgs { out, .. }) | ExportCommand::Compose(ComposeArgs { out })) = &mut command;
    // `-o -` is stdout, as kubectl and docker take it.
    if out.output.as_deref() == Some(Path::new("-")) {
        if ctx.json {
            return Err(Failure::usage(
                "`export --json` reports the file it wrote, and `-o -` writes the YAML to stdout instead; give \
                 `-o FILE`",
            ));
        }
        out.output = None;
    }
    if ctx.json && out.output.is_none() {
        // Without `-o` the manifests are the output; JSON about them would have to replace them.
        return Err(Failure::usage(
            "`export --json` reports the file it wrote; add `-o FILE` (without `-o` the YAML itself is the output)",
        ));
    }
    let stack = ctx.stack_with_fixtures()?;
    let (text, out, what, format) = match command {
        ExportCommand::K8s(args) => {
            let plan = Plan::new(&stack, &args.out)?;
            if let Some(ns) = &args.namespace {
                // Unlike service names, a namespace is used as given, so it must already be one.
                if dns_label(ns).as_deref() != Ok(ns.as_str()) {
                    let why = "is not a DNS label (a lower-case letter, then lower-case letters, digits or `-`)";
                    return Err(Failure::usage(format!("namespace `{ns}` {why}; pick another")));
                }
            }
            let config = plan.config_bytes();
            if config > CONFIG_MAP_MAX {
                return Err(Failure::usage(format!(
                    "the settings and fixtures come to {config} bytes, more than the {CONFIG_MAP_MAX} a Kubernetes \
                     ConfigMap holds; trim the fixture files"
                )));
            }
            if !ctx.quiet {
                for warning in plan.k8s_warnings(config).into_iter().chain(plan.warnings()) {
                    eprintln!("warning: {warning}");
                }
            }
            (k8s(&plan, args.namespace.as_deref(), !args.no_network_policies), args.out, "Kubernetes manifests", "k8s")
        }
        ExportCommand::Compose(args) => {
            let plan = Plan::new(&stack, &args.out)?;
            if !ctx.quiet {
                for warning in plan.warnings() {
                    eprintln!("warning: {warning}");
                }
            }
            (compose(&plan), args.out, "compose file", "compose")
        }
    };
    match &out.output {
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                // `shop export k8s | head` closing the pipe early is not a failure of ours.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(anyhow::anyhow!("cannot write the {what} to stdout: {e}"));
                }
                _ => {}
            }
        }
        Some(path) => {
            // `-o stack.yaml` would replace the file the manifests are made from.
            let inputs: Vec<&Path> = std::iter::once(stack.file.as_path())
                .chain(stack.services.iter().filter_map(|s| s.fixtures.as_deref()))
                .collect();
            super::output::check_writable(path, what, &inputs)?;
            std::fs::write(path, &text).with_context(|| {
                format!("cannot write the {what} to `{}`; check that its directory exists", path.display())
            })?;
            if ctx.json {
                let written = serde_json::json!({
                    "format": format,
                    "stack": stack.name,
                    "path": path.display().to_string(),
                    "bytes": text.len(),
                });
                super::output::print_json(&written);
            } else if !ctx.quiet {
                eprintln!("wrote the {what} for stack `{}` to {}", stack.name, path.display());
            }
        }
    }
    Ok(super::exit::OK)
}

// ---- What to export: the stack, resolved into names, ports and images ----

/// One service of the stack as it runs in a container.
struct Unit<'a> {
    spec: &'a ServiceSpec,
    /// The service's name as a DNS label: object name, compose service and host name.
    name: String,
    /// The port it listens on inside its container.
    port: u16,
    image: String,
    role: Role<'a>,
    /// The fixture file's content, read at export: it travels in a ConfigMap or compose config.
    fixtures: Option<String>,
}

enum Role<'a> {
    /// A built-in service with a database that must outlive the container.
    Stateful(Kind),
    /// The gateway: its database only records the orders it returned, so its replicas can
    /// scale freely, each with its own.
    Gateway,
    /// An external `command`, run as given with `{port}` substituted.
    External(&'a [String]),
}

impl Unit<'_> {
    fn kind(&self) -> Option<Kind> {
        match self.role {
            Role::Stateful(kind) => Some(kind),
            Role::Gateway => Some(Kind::Gateway),
            Role::External(_) => None,
        }
    }

    /// The name clients ask for it by: its kind, or its own name for an external program.
    fn peer_name(&self) -> String {
        self.kind().map_or(self.name.clone(), |k| k.name().to_string())
    }

    fn labels(&self, project: &str) -> Value {
        let component = self.kind().map_or("external", Kind::name);
        obj! {
            NAME => self.name.as_str(),
            "app.kubernetes.io/component" => component,
            PART_OF => project,
            "app.kubernetes.io/managed-by" => "shop",
        }
    }

    fn selector(&self, project: &str) -> Value {
        obj! { NAME => self.name.as_str(), PART_OF => project }
    }

    /// The fixture file's name inside the container, if the service has one.
    fn fixture_name(&self) -> Option<String> {
        let path = self.spec.fixtures.as_ref()?;
        Some(path.file_name().map_or_else(|| "fixtures.yaml".into(), |n| n.to_string_lossy().into_owned()))
    }

    /// The container's argv after the image's entrypoint (`shop`), or the whole argv of an
    /// external program.
    fn argv(&self, instance: bool) -> Vec<String> {
        let kind = match self.role {
            Role::External(argv) => return argv.iter().map(|a| a.replace("{port}", &self.port.to_string())).collect(),
            Role::Stateful(kind) => kind,
            Role::Gateway => Kind::Gateway,
        };
        let mut argv = vec!["serve".to_string(), kind.name().into(), "--port".into(), self.port.to_string()];
        argv.extend(["--db".into(), format!("{DATA_DIR}/{}.db", self.name)]);
        if instance {
            // Replicas run this one command line, and leases and logs need a name each: the
            // container's host name, which compose gives every replica its own.
            let name = if self.spec.replicas > 1 { format!("{}-{{hostname}}", self.name) } else { self.name.clone() };
            argv.extend(["--instance".into(), name]);
        }
        if let Some(file) = self.fixture_name() {
            argv.extend(["--fixtures".into(), format!("{FIXTURES_DIR}/{file}")]);
        }
        argv
    }

    /// What the service is told besides the shared settings: for an external program its
    /// port, then what its stack file entry sets, exactly as under `shop up`.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Role::External(_) = self.role {
            env.push(("PORT".to_string(), self.port.to_string()));
        }
        env.extend(crate::orchestrator::env::service(self.spec));
        env
    }

    /// Whether the container runs the shop image, so its user and health probe tool are known.
    fn shop_image(&self, plan: &Plan) -> bool {
        self.image == plan.image
    }
}

struct Plan<'a> {
    stack: &'a Stack,
    /// The stack's name as a DNS label: labels, compose project, ConfigMap and Secret names.
    project: String,
    /// In start order.
    units: Vec<Unit<'a>>,
    /// Every service's address by the platform's names: `SHOP_PEERS`.
    peers: Peers,
    /// The default image.
    image: String,
    /// The stack secret, generated for this export.
    secret: String,
}

impl<'a> Plan<'a> {
    fn new(stack: &'a Stack, out: &OutputArgs) -> anyhow::Result<Plan<'a>> {
        // Names Kubernetes and compose cannot take are mistakes in the stack file: all of them
        // are told at once, each at its `FILE:LINE:COL`, as the file's other mistakes are.
        let mut problems = Vec::new();
        let mut problem = |at: crate::plumbing::yaml::Pos, message: String| {
            problems.push(crate::plumbing::yaml::Problem { line: at.line, column: at.column, message });
        };
        let project = dns_label(&stack.name).unwrap_or_else(|why| {
            problem(stack.name_at, format!("stack name `{}` {why}; rename it in `name:`", stack.name));
            String::new()
        });
        let mut taken: BTreeMap<String, &str> = BTreeMap::new();
        for spec in &stack.services {
            match dns_label(&spec.name) {
                Err(why) => problem(
                    spec.name_at,
                    format!("service name `{}` {why}, as Kubernetes and compose need; rename it", spec.name),
                ),
                Ok(label) => {
                    if let Some(other) = taken.insert(label.clone(), &spec.name) {
                        let why =
                            format!("services `{other}` and `{}` both become `{label}` in the manifests", spec.name);
                        problem(spec.name_at, format!("{why}; rename one"));
                    }
                }
            }
        }
        if !problems.is_empty() {
            problems.sort_by_key(|p| (p.line, p.column));
            let n = problems.len();
            // As every other mistake in the file: `FILE:LINE:COL: message` lines, then one line
            // of what to do.
            eprintln!("{}", crate::plumbing::yaml::FileError { file: stack.file.clone(), problems });
            return Err(Failure::usage(format!(
                "`{}` cannot be exported ({n} problem{}); fix it and run again",
                stack.file.display(),
                if n == 1 { "" } else { "s" }
            )));
        }
        let image = out.image.clone().unwrap_or_else(|| format!("shop:{}", env!("CARGO_PKG_VERSION")));
        let mut images = BTreeMap::new();
        for entry in &out.image_for {
            let (service, img) = entry
                .split_once('=')
                .filter(|(s, i)| !s.is_empty() && !i.is_empty())
                .ok_or_else(|| Failure::usage(format!("--image-for `{entry}` must be SERVICE=IMAGE")))?;
            if stack.service(service).is_none() {
                let all: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
                let all = all.join(", ");
                return Err(Failure::usage(format!("--image-for names `{service}`, not in the stack; it has: {all}")));
            }
            images.insert(service.to_string(), img.to_string());
        }
        let mut units = Vec::new();
        for name in stack.layers().into_iter().flatten() {
            let Some(spec) = stack.service(&name) else { continue };
            let label = dns_label(&spec.name).unwrap_or_default(); // checked above
            let role = match &spec.program {
                Program::Builtin(Kind::Gateway) => Role::Gateway,
                Program::Builtin(kind) => Role::Stateful(*kind),
                Program::External(argv) => Role::External(argv),
            };
            let port = if spec.port == 0 { CONTAINER_PORT } else { spec.port };
            let image = images.get(&spec.name).cloned().unwrap_or_else(|| image.clone());
            let fixtures =
                match &spec.fixtures {
                    Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                        format!("cannot read the fixtures of `{}` at `{}`", spec.name, path.display())
                    })?),
                    None => None,
                };
            units.push(Unit { spec, name: label, port, image, role, fixtures });
        }
        // Clients ask for a service by its kind, as they ask the registry; an external program
        // is found by its own name, as the supervisor registers it.
        let peers = units.iter().map(|u| (u.peer_name(), format!("{}:{}", u.name, u.port))).collect();
        Ok(Plan { stack, project, units, peers: Peers(peers), image, secret: new_secret() })
    }

    /// Whether `from` calls `to`: a call its kind makes whatever `depends_on` says (payment asks
    /// the user service for cards), or an edge of `depends_on`. A client asks for a dependency
    /// by its kind and is balanced over every service of that kind (`SHOP_PEERS`), so
    /// depending on `inventory` reaches `inventory-eu` (kind inventory) too.
    fn calls(&self, from: &Unit, to: &Unit) -> bool {
        if let (Some(caller), Some(callee)) = (from.kind(), to.kind()) {
            if caller.callees().contains(&callee) {
                return true;
            }
        }
        let wanted = to.peer_name();
        from.spec.depends_on.iter().any(|dep| self.units.iter().any(|u| &u.spec.name == dep && u.peer_name() == wanted))
    }

    /// Settings every built-in service gets, in both formats.
    fn shared_env(&self) -> Vec<(String, String)> {
        vec![
            ("SHOP_DISCOVERY".into(), "dns".into()),
            ("SHOP_PEERS".into(), self.peers.to_string()),
            // Inside a container only: the platform's network is the boundary there.
            ("SHOP_BIND".into(), "0.0.0.0".into()),
            // As under `shop up`: commit allocator memory on use.
            crate::orchestrator::env::allocator(),
        ]
    }

    /// What the stack asks for that a container cannot give as asked, in either format.
    fn warnings(&self) -> Vec<String> {
        let loopback = |url: &str| {
            reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).is_some_and(|h| {
                h == "localhost"
                    || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            })
        };
        let mut warnings = Vec::new();
        if let Some(url) = self.stack.telemetry.otlp.as_deref().filter(|u| loopback(u)) {
            warnings.push(format!(
                "`telemetry.otlp` is `{url}`, a loopback address: inside a container that is the container itself, \
                 so every span would be dropped; name the collector as the containers reach it"
            ));
        }
        warnings
    }

    /// Bytes of the ConfigMap's data (the settings and the fixture files) as JSON, the form
    /// the API server and `kubectl apply`'s annotation hold: every newline and quote escaped.
    fn config_bytes(&self) -> usize {
        let json = |text: &str| serde_json::to_string(text).map_or(text.len(), |j| j.len());
        let env: usize = self.shared_env().iter().map(|(k, v)| json(k) + json(v)).sum();
        let own: usize = (self.units.iter())
            .map(|u| {
                let env: usize = u.env().iter().map(|(k, v)| json(k) + json(v)).sum();
                env + u.fixtures.as_deref().map_or(0, json)
            })
            .sum();
        env + own
    }

    /// What the stack asks for that Kubernetes cannot give as asked.
    /// `config` is the ConfigMap's size ([`Plan::config_bytes`]), measured once by the caller.
    fn k8s_warnings(&self, config: usize) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .units
            .iter()
            .filter(|u| matches!(u.role, Role::Stateful(_)) && u.spec.replicas > 1)
            .map(|u| {
                format!(
                    "`services.{}` has {} replicas, but on Kubernetes each pod of a StatefulSet gets its own SQLite \
                     database, so it runs 1; scale the gateway instead (compose keeps the replicas on one shared volume)",
                    u.spec.name, u.spec.replicas
                )
            })
            .collect();
        if config > APPLY_ANNOTATION_MAX {
            warnings.push(format!(
                "the ConfigMap holds {config} bytes of settings and fixtures: `kubectl apply` keeps a copy in an \
                 annotation of at most {APPLY_ANNOTATION_MAX} bytes and refuses it; use `kubectl apply --server-side` \
                 or `kubectl create`"
            ));
        }
        warnings
    }
}

// ---- Kubernetes ----

/// The most a ConfigMap's data may hold (the API server's limit on an object).
const CONFIG_MAP_MAX: usize = 1 << 20;
/// The most `kubectl apply`'s `last-applied-configuration` annotation holds.
const APPLY_ANNOTATION_MAX: usize = 256 * 1024;

/// The objects of one Kubernetes export, one method per kind of object.
///
/// Every pod meets the Pod Security Standards' "restricted" profile (a non-root user, no
/// privilege escalation, no capabilities, the runtime's seccomp profile), with a read-only root
/// filesystem and no service-account token: the services need none of it. Only the volumes
/// are writable: the database's and an `emptyDir` at `/tmp`.
struct K8s<'p, 'a> {
    plan: &'p Plan<'a>,
    namespace: Option<&'p str>,
    /// The ConfigMap's name.
    config: String,
    /// The Secret's name.
    secret: String,
}

fn k8s(plan: &Plan, namespace: Option<&str>, network_policies: bool) -> String {
    let project = plan.project.as_str();
    let k = K8s { plan, namespace, config: format!("{project}-config"), secret: format!("{project}-secret") };
    let mut docs = Vec::new();
    if let Some(ns) = namespace {
        docs.push(k.namespace_object(ns));
    }
    docs.push(k.config_map());
    docs.push(k.secret_object());
    // Before the pods, so that no pod ever runs without its policy.
    if network_policies {
        docs.extend(k.network_policies());
    }
    for unit in &plan.units {
        docs.push(k.service(unit));
        docs.push(k.workload(unit));
    }
    let secret = &k.secret;
    let header = format!(
        "# Kubernetes manifests for stack `{project}`, written by `shop export k8s`.\n\
         # Apply: shop export k8s | kubectl apply -f -    List: kubectl get all,pvc,networkpolicy -l {PART_OF}={project}\n\
         # The Secret `{secret}` holds a stack secret generated for this export.\n"
    );
    header + &yaml_documents(&docs)
}

impl K8s<'_, '_> {
    fn stack_labels(&self) -> Value {
        obj! { PART_OF => self.plan.project.as_str(), "app.kubernetes.io/managed-by" => "shop" }
    }

    /// Selects every pod of the stack.
    fn stack_selector(&self) -> Value {
        obj! { "matchLabels" => obj! { PART_OF => self.plan.project.as_str() } }
    }

    fn meta(&self, name: &str, labels: &Value) -> Value {
        let mut m = obj! { "name" => name };
        if let Some(ns) = self.namespace {
            set(&mut m, "namespace", ns);
        }
        set(&mut m, "labels", labels.clone());
        m
    }

    /// The namespace `--namespace` creates, where the API server refuses any pod that is not
    /// restricted, so a later edit cannot quietly loosen one.
    fn namespace_object(&self, ns: &str) -> Value {
        let mut labels = self.stack_labels();
        set(&mut labels, "pod-security.kubernetes.io/enforce", "restricted");
        obj! { "apiVersion" => "v1", "kind" => "Namespace", "metadata" => obj! { "name" => ns, "labels" => labels } }
    }

    /// Shared settings, per-service settings as `SERVICE.VAR`, fixture files as
    /// `SERVICE.fixtures`; workloads read single keys, so changing a setting is a ConfigMap edit
    /// and a rollout restart.
    fn config_map(&self) -> Value {
        let mut data = Mapping::new();
        for (k, v) in self.plan.shared_env() {
            data.insert(k.into(), v.into());
        }
        for unit in &self.plan.units {
            for (k, v) in unit.env() {
                if config_key(&k) {
                    data.insert(format!("{}.{k}", unit.name).into(), v.into());
                }
            }
            if let Some(text) = &unit.fixtures {
                data.insert(format!("{}.fixtures", unit.name).into(), text.as_str().into());
            }
        }
        obj! {
            "apiVersion" => "v1", "kind" => "ConfigMap",
            "metadata" => self.meta(&self.config, &self.stack_labels()),
            "data" => Value::Mapping(data),
        }
    }

    fn secret_object(&self) -> Value {
        obj! {
            "apiVersion" => "v1", "kind" => "Secret",
            "metadata" => self.meta(&self.secret, &self.stack_labels()),
            "type" => "Opaque",
            "stringData" => obj! { SECRET_KEY => self.plan.secret.as_str() },
        }
    }

    /// Default deny for every pod of the stack, DNS for all of them, then per service: ingress
    /// from the services that call it (the gateway: from anywhere, on its port) and egress to
    /// the services it calls. A connection needs both ends' consent, so exactly the calls the
    /// services make ([`Plan::calls`]) are open.
    fn network_policies(&self) -> Vec<Value> {
        let project = self.plan.project.as_str();
        let labels = self.stack_labels();
        let tcp = |port: u16| obj! { "protocol" => "TCP", "port" => port };
        let mut docs = vec![
            self.network_policy(
                &format!("{project}-default-deny"),
                self.stack_selector(),
                Some(Vec::new()),
                Some(Vec::new()),
                &labels,
            ),
            self.network_policy(
                &format!("{project}-dns"),
                self.stack_selector(),
                None,
                Some(vec![obj! {
                    "ports" => vec![obj! { "protocol" => "UDP", "port" => 53 }, tcp(53)],
                }]),
                &labels,
            ),
        ];
        for unit in &self.plan.units {
            let ingress = if let Role::Gateway = unit.role {
                vec![obj! { "ports" => vec![tcp(unit.port)] }]
            } else {
                let from: Vec<Value> = self
                    .plan
                    .units
                    .iter()
                    .filter(|other| self.plan.calls(other, unit))
                    .map(|other| obj! { "podSelector" => obj! { "matchLabels" => other.selector(project) } })
                    .collect();
                if from.is_empty() {
                    Vec::new()
                } else {
                    vec![obj! { "from" => from, "ports" => vec![tcp(unit.port)] }]
                }
            };
            // One rule per dependency: each listens on its own port.
            let egress = self
                .plan
                .units
                .iter()
                .filter(|dep| self.plan.calls(unit, dep))
                .map(|dep| {
                    obj! {
                        "to" => vec![obj! { "podSelector" => obj! { "matchLabels" => dep.selector(project) } }],
                        "ports" => vec![tcp(dep.port)],
                    }
                })
                .collect();
            let selector = obj! { "matchLabels" => unit.selector(project) };
            docs.push(self.network_policy(&unit.name, selector, Some(ingress), Some(egress), &unit.labels(project)));
        }
        docs
    }

    /// A NetworkPolicy; `None` leaves that direction to other policies, an empty list denies it.
    fn network_policy(
        &self,
        name: &str,
        selector: Value,
        ingress: Option<Vec<Value>>,
        egress: Option<Vec<Value>>,
        labels: &Value,
    ) -> Value {
        let mut spec = obj! { "podSelector" => selector };
        let mut types = Vec::new();
        if let Some(rules) = ingress {
            types.push("Ingress");
            if !rules.is_empty() {
                set(&mut spec, "ingress", rules);
            }
        }
        if let Some(rules) = egress {
            types.push("Egress");
            if !rules.is_empty() {
                set(&mut spec, "egress", rules);
            }
        }
        set(&mut spec, "policyTypes", types);
        obj! {
            "apiVersion" => "networking.k8s.io/v1", "kind" => "NetworkPolicy",
            "metadata" => self.meta(name, labels),
            "spec" => spec,
        }
    }

    /// A built-in service's environment: the shared settings and its own from the ConfigMap,
    /// where the secret file is, and its pod's name as its instance.
    fn env(&self, unit: &Unit) -> Vec<Value> {
        let from_config = |key: String, env: &str| {
            obj! { "name" => env, "valueFrom" => obj! { "configMapKeyRef" => obj! { "name" => self.config.as_str(), "key" => key } } }
        };
        let mut env = Vec::new();
        if unit.kind().is_some() {
            env.extend(self.plan.shared_env().into_iter().map(|(k, _)| from_config(k.clone(), &k)));
            // A file, not the value: environment variables show in `kubectl describe`, in
            // crash dumps and in every child process.
            env.push(obj! { "name" => "SHOP_SECRET_FILE", "value" => format!("{SECRET_DIR}/{SECRET_KEY}") });
            // The pod's name tells replicas apart in spans and logs.
            env.push(obj! {
                "name" => "SHOP_INSTANCE",
                "valueFrom" => obj! { "fieldRef" => obj! { "fieldPath" => "metadata.name" } },
            });
        }
        for (k, v) in unit.env() {
            env.push(if config_key(&k) {
                from_config(format!("{}.{k}", unit.name), &k)
            } else {
                obj! { "name" => k, "value" => v }
            });
        }
        env
    }

    fn container(&self, unit: &Unit) -> Value {
        let mut container = obj! { "name" => unit.name.as_str(), "image" => unit.image.as_str() };
        let argv = unit.argv(false);
        // `args` follow the image's `shop` entrypoint; an external program replaces it.
        set(&mut container, if unit.kind().is_some() { "args" } else { "command" }, argv);
        set(&mut container, "env", self.env(unit));
        set(
            &mut container,
            "ports",
            vec![obj! { "name" => "http", "containerPort" => unit.port, "protocol" => "TCP" }],
        );
        let h = &unit.spec.health;
        let ready_path = if unit.kind().is_some() { "/readyz" } else { h.path.as_str() };
        set(&mut container, "startupProbe", probe(&h.path, h, start_failures(h)));
        set(&mut container, "readinessProbe", probe(ready_path, h, h.retries));
        set(&mut container, "livenessProbe", probe(&h.path, h, h.retries));
        set(
            &mut container,
            "resources",
            obj! {
                "requests" => obj! { "cpu" => CPU_REQUEST, "memory" => MEMORY_REQUEST },
                "limits" => obj! { "cpu" => CPU_LIMIT, "memory" => MEMORY_LIMIT },
            },
        );
        set(
            &mut container,
            "securityContext",
            obj! {
                "allowPrivilegeEscalation" => false,
                "readOnlyRootFilesystem" => true,
                "runAsNonRoot" => true,
                "capabilities" => obj! { "drop" => vec!["ALL"] },
            },
        );
        let mut mounts = Vec::new();
        if unit.kind().is_some() {
            mounts.push(obj! { "name" => "data", "mountPath" => DATA_DIR });
            mounts.push(obj! { "name" => "secret", "mountPath" => SECRET_DIR, "readOnly" => true });
        }
        mounts.push(obj! { "name" => "tmp", "mountPath" => TMP_DIR });
        if unit.fixture_name().is_some() {
            mounts.push(obj! { "name" => "fixtures", "mountPath" => FIXTURES_DIR, "readOnly" => true });
        }
        set(&mut container, "volumeMounts", mounts);
        container
    }

    /// The pod: restricted, as the image's numeric user (so `runAsNonRoot` can be checked; an
    /// image given with `--image-for` runs as that user too), `fsGroup` making the volumes
    /// writable and the secret readable by it.
    fn pod_template(&self, unit: &Unit) -> Value {
        let mut volumes = vec![obj! { "name" => "tmp", "emptyDir" => Mapping::new() }];
        if let Role::Gateway = unit.role {
            volumes.push(obj! { "name" => "data", "emptyDir" => Mapping::new() });
        }
        if unit.kind().is_some() {
            volumes.push(obj! {
                "name" => "secret",
                "secret" => obj! {
                    "secretName" => self.secret.as_str(),
                    "items" => vec![obj! { "key" => SECRET_KEY, "path" => SECRET_KEY }],
                    // Owner and group (`fsGroup`) read; nobody else.
                    "defaultMode" => 0o440,
                },
            });
        }
        if let Some(file) = unit.fixture_name() {
            volumes.push(obj! {
                "name" => "fixtures",
                "configMap" => obj! {
                    "name" => self.config.as_str(),
                    "items" => vec![obj! { "key" => format!("{}.fixtures", unit.name), "path" => file }],
                },
            });
        }
        let pod = obj! {
            "securityContext" => obj! {
                "runAsNonRoot" => true,
                "runAsUser" => USER_ID,
                "runAsGroup" => USER_ID,
                "fsGroup" => USER_ID,
                "seccompProfile" => obj! { "type" => "RuntimeDefault" },
            },
            "automountServiceAccountToken" => false,
            "terminationGracePeriodSeconds" => 10,
            "containers" => vec![self.container(unit)],
            "volumes" => volumes,
        };
        obj! { "metadata" => obj! { "labels" => unit.labels(&self.plan.project) }, "spec" => pod }
    }

    fn service(&self, unit: &Unit) -> Value {
        let project = self.plan.project.as_str();
        let mut spec = Mapping::new();
        if let Role::Stateful(_) = unit.role {
            // Headless: the name resolves to the pod itself, which has a stable identity.
            spec.insert("clusterIP".into(), "None".into());
        }
        spec.insert("selector".into(), unit.selector(project));
        spec.insert(
            "ports".into(),
            vec![obj! { "name" => "http", "port" => unit.port, "targetPort" => "http", "protocol" => "TCP" }].into(),
        );
        obj! {
            "apiVersion" => "v1", "kind" => "Service",
            "metadata" => self.meta(&unit.name, &unit.labels(project)),
            "spec" => Value::Mapping(spec),
        }
    }

    /// A StatefulSet with a volume claim for a service with a database, a Deployment otherwise.
    fn workload(&self, unit: &Unit) -> Value {
        let project = self.plan.project.as_str();
        let labels = unit.labels(project);
        if let Role::Stateful(_) = unit.role {
            obj! {
                "apiVersion" => "apps/v1", "kind" => "StatefulSet",
                "metadata" => self.meta(&unit.name, &labels),
                "spec" => obj! {
                    "serviceName" => unit.name.as_str(),
                    // One writer per SQLite file: see `Plan::k8s_warnings`.
                    "replicas" => 1,
                    "selector" => obj! { "matchLabels" => unit.selector(project) },
                    "template" => self.pod_template(unit),
                    "volumeClaimTemplates" => vec![obj! {
                        "metadata" => obj! { "name" => "data", "labels" => labels.clone() },
                        "spec" => obj! {
                            "accessModes" => vec!["ReadWriteOnce"],
                            "resources" => obj! { "requests" => obj! { "storage" => STORAGE } },
                        },
                    }],
                },
            }
        } else {
            obj! {
                "apiVersion" => "apps/v1", "kind" => "Deployment",
                "metadata" => self.meta(&unit.name, &labels),
                "spec" => obj! {
                    "replicas" => unit.spec.replicas,
                    "selector" => obj! { "matchLabels" => unit.selector(project) },
                    "template" => self.pod_template(unit),
                },
            }
        }
    }
}

/// An HTTP probe on the container's `http` port with the stack's timing; Kubernetes counts
/// whole seconds, so sub-second settings round up.
fn probe(path: &str, h: &HealthSpec, failures: u32) -> Value {
    obj! {
        "httpGet" => obj! { "path" => path, "port" => "http" },
        "periodSeconds" => whole_seconds(h.interval),
        "timeoutSeconds" => whole_seconds(h.timeout),
        "failureThreshold" => failures,
    }
}

/// Failures the startup probe allows: as many periods as fit in `start_period`.
fn start_failures(h: &HealthSpec) -> u32 {
    let period = u64::from(whole_seconds(h.interval)) * 1000;
    let start = h.start_period.as_millis().min(u128::from(u32::MAX)) as u64;
    start.div_ceil(period).clamp(1, u64::from(u32::MAX)) as u32
}

fn whole_seconds(d: Duration) -> u32 {
    d.as_millis().div_ceil(1000).clamp(1, u128::from(u32::MAX)) as u32
}

/// Whether `SERVICE.NAME` can be a ConfigMap key; other names (rare in `env:`) are inlined.
fn config_key(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

// ---- docker compose ----

fn compose(plan: &Plan) -> String {
    let project = plan.project.as_str();
    let mut services = Mapping::new();
    let mut volumes = Mapping::new();
    let mut configs = Mapping::new();
    for unit in &plan.units {
        let spec = unit.spec;
        let mut svc = obj! { "image" => unit.image.as_str() };
        // `$` starts an interpolation in compose: the stack's own values are taken literally.
        let argv: Vec<String> = unit.argv(true).iter().map(|a| literal(a)).collect();
        match unit.role {
            // Replaces the image's entrypoint (and so its command) with the program.
            Role::External(_) => set(&mut svc, "entrypoint", argv),
            _ => set(&mut svc, "command", argv),
        }
        let mut env = Mapping::new();
        if unit.kind().is_some() {
            for (k, v) in plan.shared_env() {
                env.insert(k.into(), v.into());
            }
            // Generated at export; `SHOP_SECRET=... docker compose up` overrides it.
            env.insert("SHOP_SECRET".into(), format!("${{SHOP_SECRET:-{}}}", plan.secret).into());
        }
        for (k, v) in unit.env() {
            env.insert(k.into(), literal(&v).into());
        }
        set(&mut svc, "environment", env);
        if unit.kind().is_some() {
            let volume = format!("{}-data", unit.name);
            set(&mut svc, "volumes", vec![format!("{volume}:{DATA_DIR}")]);
            volumes.insert(volume.into(), Mapping::new().into());
        }
        // As on Kubernetes: nothing writable but the volume and a tmpfs, no capabilities, no
        // setuid escalation.
        set(&mut svc, "read_only", true);
        set(&mut svc, "tmpfs", vec![TMP_DIR]);
        set(&mut svc, "cap_drop", vec!["ALL"]);
        set(&mut svc, "security_opt", vec!["no-new-privileges:true"]);
        if let (Some(file), Some(text)) = (unit.fixture_name(), &unit.fixtures) {
            let name = format!("{}-fixtures", unit.name);
            set(
                &mut svc,
                "configs",
                vec![obj! { "source" => name.as_str(), "target" => format!("{FIXTURES_DIR}/{file}") }],
            );
            configs.insert(name.into(), obj! { "content" => literal(text) });
        }
        if let Role::Gateway = unit.role {
            // The public API, published where the stack binds it (127.0.0.1 unless `bind:` says
            // otherwise); replicas each take the next host port.
            let published = match spec.replicas {
                1 => unit.port.to_string(),
                n => format!("{}-{}", unit.port, (u32::from(unit.port) + n - 1).min(65535)),
            };
            let mut port = obj! { "target" => unit.port, "published" => published, "protocol" => "tcp" };
            if !spec.bind.is_unspecified() {
                set(&mut port, "host_ip", spec.bind.to_string());
            }
            set(&mut svc, "ports", vec![port]);
        }
        let h = &spec.health;
        let url = literal(&format!("http://127.0.0.1:{}{}", unit.port, h.path));
        // The shop image has curl; another image (`--image-for`) needs curl or wget.
        let test: Vec<String> = if unit.shop_image(plan) {
            ["CMD", "curl", "-fsS", "-o", "/dev/null", &url].map(String::from).into()
        } else {
            let quoted = url.replace('\'', "'\\''");
            let shell = format!("curl -fsS -o /dev/null '{quoted}' || wget -q -O /dev/null '{quoted}'");
            vec!["CMD-SHELL".into(), shell]
        };
        set(
            &mut svc,
            "healthcheck",
            obj! {
                "test" => test,
                // The stack's interval while starting, so dependents start as soon as they can;
                // then whole seconds, as on Kubernetes, so a probe is not forked five times a
                // second in every container for ever.
                "interval" => duration(Duration::from_secs(whole_seconds(h.interval).into())),
                "timeout" => duration(h.timeout),
                // Failed probes in a row before unhealthy: the stack's `health.retries`.
                "retries" => h.retries,
                "start_period" => duration(h.start_period),
                "start_interval" => duration(h.interval),
            },
        );
        if !spec.depends_on.is_empty() {
            let mut deps = Mapping::new();
            for dep in &spec.depends_on {
                let name = plan.units.iter().find(|u| &u.spec.name == dep).map_or(dep.as_str(), |u| u.name.as_str());
                deps.insert(name.into(), obj! { "condition" => "service_healthy" });
            }
            set(&mut svc, "depends_on", deps);
        }
        let restart = match spec.restart {
            RestartPolicy::No => "no".to_string(),
            RestartPolicy::OnFailure if spec.max_restarts == 0 => "no".to_string(),
            RestartPolicy::OnFailure => format!("on-failure:{}", spec.max_restarts),
            RestartPolicy::Always => "always".to_string(),
        };
        set(&mut svc, "restart", restart);
        set(
            &mut svc,
            "deploy",
            obj! {
                "replicas" => spec.replicas,
                "resources" => obj! {
                    "limits" => obj! { "cpus" => CPU_LIMIT, "memory" => compose_memory(MEMORY_LIMIT) },
                    "reservations" => obj! { "cpus" => "0.05", "memory" => compose_memory(MEMORY_REQUEST) },
                },
            },
        );
        set(
            &mut svc,
            "labels",
            obj! { PART_OF => project, NAME => unit.name.as_str(), "app.kubernetes.io/managed-by" => "shop" },
        );
        services.insert(unit.name.clone().into(), svc);
    }
    let mut file = obj! { "name" => project, "services" => Value::Mapping(services) };
    if !volumes.is_empty() {
        set(&mut file, "volumes", volumes);
    }
    if !configs.is_empty() {
        set(&mut file, "configs", configs);
    }
    let header = format!(
        "# docker compose file for stack `{project}`, written by `shop export compose`.\n\
         # Run: docker compose -f FILE up -d    Gateway: see `ports:` of the gateway.\n\
         # SHOP_SECRET defaults to a stack secret generated for this export; set it to override.\n"
    );
    header + &yaml_documents(&[file])
}

/// `256Mi` as compose writes it (`256m`).
fn compose_memory(k8s: &str) -> String {
    k8s.trim_end_matches("i").to_lowercase()
}

/// A string compose takes literally: `$` is doubled so it is not interpolated.
fn literal(text: &str) -> String {
    text.replace('$', "$$")
}

// ---- Shared helpers ----

/// Adds `key: value` to a mapping built by `obj!` (anything else is left alone).
fn set(map: &mut Value, key: &str, value: impl Into<Value>) {
    if let Value::Mapping(m) = map {
        m.insert(key.into(), value.into());
    }
}

/// Documents separated by `---`; serializing a plain value tree cannot fail, but should it,
/// the document says so rather than vanishing.
fn yaml_documents(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| {
            let mut d = d.clone();
            mark_yaml11_words(&mut d);
            let text = serde_yaml::to_string(&d).unwrap_or_else(|e| format!("# cannot render this document: {e}\n"));
            quote_marked_words(&text)
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Words YAML 1.1 reads as booleans or null (yaml.org/type/bool.html, null.html).
const YAML11_WORDS: [&str; 26] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE", "on",
    "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
];
/// Around a marked string (hex-encoded, so the mark is a plain word serde_yaml writes as is).
const QUOTE_MARK: (&str, &str) = ("shop-quote-", "-end");

/// serde_yaml writes YAML 1.2, which leaves plain many strings that YAML 1.1 readers (kubectl,
/// PyYAML) take for something else: `no` and `on` for booleans, `12:30` for a number, a date,
/// `=` and `<<` for tags they cannot build. A value a stack gives (an env value, a command
/// argument) may be any of these, so every one-line string that is not plainly a word is
/// marked before serializing and written single-quoted after.
fn mark_yaml11_words(v: &mut Value) {
    match v {
        Value::String(s) if needs_quotes(s) => {
            let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
            *s = format!("{}{hex}{}", QUOTE_MARK.0, QUOTE_MARK.1);
        }
        Value::Sequence(items) => items.iter_mut().for_each(mark_yaml11_words),
        Value::Mapping(map) => {
            let entries = std::mem::take(map);
            for (mut key, mut value) in entries {
                mark_yaml11_words(&mut key);
                mark_yaml11_words(&mut value);
                map.insert(key, value);
            }
        }
        _ => {}
    }
}

/// Whether a string is not plainly a word to every YAML reader: a letter, then letters, digits
/// and `_ . / -`, and not one of [`YAML11_WORDS`]. Text over several lines is left to
/// serde_yaml's block style, which no reader takes for anything but a string.
fn needs_quotes(s: &str) -> bool {
    let word = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
    !s.contains('\n') && (!word || YAML11_WORDS.contains(&s))
}

fn quote_marked_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(QUOTE_MARK.0) {
        let after = &rest[at + QUOTE_MARK.0.len()..];
        let original = after.find(QUOTE_MARK.1).and_then(|end| {
            let hex = &after[..end];
            let bytes: Option<Vec<u8>> =
                (0..hex.len() / 2).map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
            Some((end, String::from_utf8(bytes?).ok()?)).filter(|_| hex.len().is_multiple_of(2))
        });
        // Text that only looks like a mark (a stack's own word) is kept as it is.
        let Some((end, original)) = original else {
            out.push_str(&rest[..at + QUOTE_MARK.0.len()]);
            rest = after;
            continue;
        };
        out.push_str(&rest[..at]);
        out.push('\'');
        out.push_str(&original.replace('\'', "''"));
        out.push('\'');
        rest = &after[end + QUOTE_MARK.1.len()..];
    }
    out.push_str(rest);
    out
}

/// `name` as a DNS label (RFC 1035: what a Service name must be): lower case, `_` as `-`.
fn dns_label(name: &str) -> Result<String, String> {
    let label = name.to_lowercase().replace('_', "-");
    let ok_chars = label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let starts = label.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let ends = label.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    // 52, not 63: a StatefulSet's pods carry its name plus a revision hash in a label.
    if !ok_chars || !starts || !ends || label.len() > 52 {
        return Err("is not a DNS label (a letter, then letters, digits or `-`, at most 52 characters)".into());
    }
    Ok(label)
}

/// A fresh stack secret, as `shop up` makes one.
fn new_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::thread_rng().gen();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_yaml_11_would_misread_come_out_single_quoted() {
        let mut doc = Mapping::new();
        for (k, v) in [("a", "no"), ("b", "12:30"), ("c", "it's"), ("d", "plain-word.1"), ("e", "shop-quote-zz-end")] {
            doc.insert(k.into(), v.into());
        }
        doc.insert("f".into(), Value::Number(5.into()));
        doc.insert("g".into(), "two\nlines".into());
        let text = yaml_documents(&[Value::Mapping(doc.clone())]);
        for line in ["a: 'no'", "b: '12:30'", "c: 'it''s'", "d: plain-word.1", "e: shop-quote-zz-end", "f: 5"] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        // Read back, every value is what went in.
        assert_eq!(serde_yaml::from_str::<Value>(&text).unwrap(), Value::Mapping(doc));
    }

    #[test]
    // `duration` itself is tested beside it, in `orchestrator::env`.
    fn probe_timings_are_whole_seconds_rounded_up() {
        assert_eq!(whole_seconds(Duration::from_millis(200)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(2500)), 3);
        let h = HealthSpec {
            path: "/healthz".into(),
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
            start_period: Duration::from_secs(10),
            retries: 3,
        };
        assert_eq!(start_failures(&h), 10);
    }

    #[test]
    fn names_become_dns_labels_or_are_refused() {
        assert_eq!(dns_label("Inventory_EU").unwrap(), "inventory-eu");
        for bad in ["1web", "web-", "", "a.b", &"x".repeat(53)] {
            assert!(dns_label(bad).is_err(), "{bad}");
        }
        assert_eq!(literal("a$b"), "a$$b");
        assert_eq!(compose_memory("256Mi"), "256m");
    }

    #[test]
    fn every_export_has_its_own_secret() {
        assert_ne!(new_secret(), new_secret());
        assert_eq!(new_secret().len(), 64);
    }
}
