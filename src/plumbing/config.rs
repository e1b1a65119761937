//! What a service process is told at start: flags for the common knobs, `SHOP_*` environment
//! variables for everything the supervisor derives from stack.yaml.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::plumbing::discovery::{Mode, Peers};
use crate::plumbing::time::{parse_duration, parse_nonzero_duration};

/// The variables that wire a service into its stack, which `shop up` and `shop export` set
/// themselves: a stack file's `env:` setting one would cut the service off (a registry it
/// cannot find, an address nobody calls, a secret the others do not have). Each with what to
/// write instead. The tuning variables (client, breaker, saga, rate limit) stay open to `env:`.
pub const WIRING_VARS: &[(&str, &str)] = &[
    ("SHOP_BIND", "use `bind:`"),
    ("SHOP_PORT", "use `port:`"),
    ("SHOP_FIXTURES", "use `fixtures:`"),
    ("SHOP_DB", "each service's database is in the state dir"),
    ("SHOP_HEARTBEAT", "use `registry.heartbeat`"),
    ("SHOP_TTL", "use `registry.ttl`"),
    ("SHOP_REGISTRY", "services find each other through the stack's registry"),
    ("SHOP_DISCOVERY", "services find each other through the stack's registry"),
    ("SHOP_PEERS", "services find each other through the stack's registry"),
    ("SHOP_INSTANCE", "instances are named after their service (`NAME-N` with replicas)"),
    ("SHOP_SECRET", "every stack makes its own secret"),
    ("SHOP_SECRET_FILE", "every stack makes its own secret"),
    ("SHOP_PARENT_PID", "it names the supervisor"),
];

/// `--registry`: an `http://HOST:PORT` base URL, so a typo fails at once instead of leaving the
/// service running unregistered.
fn parse_registry_url(s: &str) -> Result<String, String> {
    // Empty for the registry itself, which registers nowhere.
    if s.is_empty() {
        return Ok(String::new());
    }
    http_base_url(s, "give the registry's base URL, such as http://127.0.0.1:7070")
}

/// An `http://HOST[:PORT][/PATH]` base URL (no query or fragment), trimmed, or why not with
/// `form` (what to write instead) appended: `--registry`, `--gateway`.
pub fn http_base_url(s: &str, form: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("`{s}` is not a URL ({e}); {form}"))?;
    if url.scheme() != "http" || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{s}` is not an http:// URL with a host; {form}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{s}` has a query or fragment; {form}"));
    }
    Ok(s.trim().to_string())
}

/// `--instance`: what the registry takes (1 to 64 characters), and a file name under the state
/// dir, so letters, digits, `-`, `_` and `.` only; `{hostname}` stands for the host's name
/// ([`instance_name`]), which tells apart replicas that run one command line (compose).
fn parse_instance(s: &str) -> Result<String, String> {
    let bare = s.replace(HOSTNAME, "h");
    let tame = bare.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && !bare.starts_with('.');
    if bare.is_empty() || bare.len() > 64 || !tame {
        let form = "1 to 64 letters, digits, `-`, `_` or `.`, and `{hostname}` for the host's name";
        return Err(format!("`{s}` is not an instance name: {form}"));
    }
    Ok(s.to_string())
}

/// What `--instance` writes for the host's name.
const HOSTNAME: &str = "{hostname}";

/// The instance name `--instance` gives, with `{hostname}` replaced by this host's name (its
/// characters an instance name cannot hold as `-`). Past the registry's 64 characters the
/// rest of the name is cut, never the host's: it is what tells the replicas apart.
pub fn instance_name(given: &str) -> String {
    if !given.contains(HOSTNAME) {
        return given.to_string();
    }
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let host: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    let host: String = if host.is_empty() { "host".into() } else { host.chars().take(48).collect() };
    // `parse_instance` let through only ASCII, so byte lengths are character counts.
    let (before, after) = given.split_once(HOSTNAME).unwrap_or((given, ""));
    let after = after.replace(HOSTNAME, "");
    let room = 64 - host.len();
    let keep_before = before.len().min(room - after.len().min(room / 2));
    let keep_after = after.len().min(room - keep_before);
    format!("{}{host}{}", &before[..keep_before], &after[..keep_after])
}

/// How long a service being stopped gets between SIGTERM and SIGKILL when the caller names no
/// timeout: longer than a service's own drain of open connections, so a clean stop is never cut.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// [`STOP_GRACE`] as a command-line default (`--timeout`).
pub const STOP_GRACE_ARG: &str = "10s";

#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Port to listen on; 0 picks any free port [default: 8080 gateway, 7070 registry, 0 others]
    #[arg(long, env = "SHOP_PORT")]
    pub port: Option<u16>,
    /// SQLite file of this service [default: ./shop-SERVICE.db]
    #[arg(long, env = "SHOP_DB")]
    pub db: Option<PathBuf>,
    /// Base URL of the service registry
    #[arg(long, env = "SHOP_REGISTRY", default_value = "http://127.0.0.1:7070", value_parser = parse_registry_url)]
    pub registry: String,
    /// Instance name to register under, 1 to 64 characters [default: the service name]
    #[arg(long, env = "SHOP_INSTANCE", value_parser = parse_instance)]
    pub instance: Option<String>,
    /// Address to listen on
    #[arg(long, env = "SHOP_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Seed data (users.yaml for user, products.yaml for inventory), loaded once on first start
    #[arg(long, env = "SHOP_FIXTURES")]
    pub fixtures: Option<PathBuf>,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// Knobs the supervisor passes from stack.yaml; hidden from `--help` because users set them there.
#[derive(clap::Args, Clone, Debug)]
pub struct Tuning {
    /// How often to heartbeat the registry and refresh the view of other services
    #[arg(long, env = "SHOP_HEARTBEAT", default_value = "1s", value_parser = parse_nonzero_duration, hide = true)]
    pub heartbeat: Duration,
    /// Registry only: an instance silent this long is dropped
    #[arg(long, env = "SHOP_TTL", default_value = "3s", value_parser = parse_nonzero_duration, hide = true)]
    pub ttl: Duration,
    /// Per-call timeout toward other services
    #[arg(long, env = "SHOP_CLIENT_TIMEOUT", default_value = "2s", value_parser = parse_nonzero_duration, hide = true)]
    pub client_timeout: Duration,
    /// Retries of a transient failure on a plain call (the saga retries until its timeout)
    #[arg(long, env = "SHOP_CLIENT_RETRIES", default_value_t = 3, hide = true)]
    pub client_retries: u32,
    /// Order only: a saga that cannot finish by then is compensated and FAILED with `timeout`
    #[arg(long, env = "SHOP_SAGA_TIMEOUT", default_value = "60s", value_parser = parse_nonzero_duration, hide = true)]
    pub saga_timeout: Duration,
    /// Inventory only: a held reservation is released after this long (a safety net)
    #[arg(long, env = "SHOP_RESERVATION_TTL", default_value = "120s", value_parser = parse_duration, hide = true)]
    pub reservation_ttl: Duration,
    /// Gateway only: requests per second allowed per token
    #[arg(long, env = "SHOP_RATE_PER_SECOND", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..), hide = true)]
    pub rate_per_second: u32,
    /// Gateway only: burst allowed per token
    #[arg(long, env = "SHOP_RATE_BURST", default_value_t = 40_000, value_parser = clap::value_parser!(u32).range(1..), hide = true)]
    pub rate_burst: u32,
    /// Consecutive transient failures that open a dependency's circuit breaker
    #[arg(long, env = "SHOP_BREAKER_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..), hide = true)]
    pub breaker_threshold: u32,
    /// How long an open breaker refuses calls before letting a trial through
    #[arg(long, env = "SHOP_BREAKER_OPEN_FOR", default_value = "5s", value_parser = parse_duration, hide = true)]
    pub breaker_open_for: Duration,
    /// Trial calls while half open
    #[arg(long, env = "SHOP_BREAKER_HALF_OPEN", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), hide = true)]
    pub breaker_half_open: u32,
    /// Longest wait for a request's headers before the connection is dropped (slow clients)
    #[arg(long, env = "SHOP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_nonzero_duration, hide = true)]
    pub header_timeout: Duration,
    /// Async worker threads [default: one per core for order and gateway, one for the others]
    #[arg(long, env = "SHOP_WORKER_THREADS", hide = true)]
    pub worker_threads: Option<usize>,
    /// Seed for fault percentages and jitter
    #[arg(long, env = "SHOP_SEED", hide = true)]
    pub seed: Option<u64>,
    /// Test hook: exit at once (as a crash would) right after this saga event is persisted
    #[arg(long, env = "SHOP_CRASH_AFTER", hide = true)]
    pub crash_after: Option<String>,
    /// Test hook: hold back every answer this long, after the request was handled
    #[arg(long, env = "SHOP_FAULT_DELAY", value_parser = parse_duration, hide = true)]
    pub fault_delay: Option<Duration>,
    /// Test hook: delay only the first N answers
    #[arg(long, env = "SHOP_FAULT_DELAY_REQUESTS", hide = true)]
    pub fault_delay_requests: Option<u64>,
    /// Exit when this process (the supervisor) is gone, so no orphan keeps a port
    #[arg(long, env = "SHOP_PARENT_PID", hide = true)]
    pub parent_pid: Option<i32>,
    /// Stack secret required by admin endpoints
    #[arg(long, env = "SHOP_SECRET", hide = true)]
    pub secret: Option<String>,
    /// The stack secret read from this file instead (a mounted Kubernetes Secret, which a
    /// scanner and `kubectl describe` cannot see the way they see an environment variable)
    #[arg(long, env = "SHOP_SECRET_FILE", hide = true, conflicts_with = "secret")]
    pub secret_file: Option<PathBuf>,
    /// How to find other services: `registry` (register and heartbeat; what `shop up` runs) or
    /// `dns` (fixed addresses from --peers, no registry; what `shop export` writes)
    #[arg(long, env = "SHOP_DISCOVERY", value_enum, default_value_t = Mode::Registry)]
    pub discovery: Mode,
    /// With `--discovery dns`: where each service is, `NAME=HOST:PORT,...` (a name given twice
    /// has two instances), e.g. `user=user:8080,payment=payment:8080`
    #[arg(long, env = "SHOP_PEERS", value_parser = Peers::parse, default_value = "")]
    pub peers: Peers,
}

impl Tuning {
    /// The stack secret, from `--secret` or the file `--secret-file` names (one trailing newline
    /// dropped, as `echo` and editors add one).
    pub fn secret(&self) -> anyhow::Result<Option<String>> {
        use anyhow::Context as _;
        let Some(path) = &self.secret_file else { return Ok(self.secret.clone()) };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the stack secret from `{}` (SHOP_SECRET_FILE)", path.display()))?;
        let secret = text.strip_suffix('\n').unwrap_or(&text);
        let secret = secret.strip_suffix('\r').unwrap_or(secret);
        anyhow::ensure!(!secret.is_empty(), "the stack secret file `{}` is empty", path.display());
        Ok(Some(secret.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_name_can_carry_the_host_name_and_stays_a_name() {
        assert_eq!(parse_instance("order-{hostname}").as_deref(), Ok("order-{hostname}"));
        assert!(parse_instance("order-{host}").is_err());
        assert_eq!(instance_name("order-2"), "order-2");
        let named = instance_name("order-{hostname}");
        let host = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
        assert!(named.starts_with("order-") && !named.contains('{') && named.len() <= 64, "{named}");
        if host.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && host.len() < 50 {
            assert_eq!(named, format!("order-{host}"));
        }
        assert!(parse_instance(&named).is_ok(), "{named}");
        // A long name gives way to the host's, which tells replicas apart.
        let long = instance_name(&format!("{}-{{hostname}}", "n".repeat(63)));
        assert!(long.len() <= 64, "{long}");
        let shown: String = host.chars().take(48).collect();
        if host.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            assert!(long.ends_with(&shown), "{long}");
            assert_eq!(instance_name("a-{hostname}-b"), format!("a-{shown}-b"));
        }
    }
}
