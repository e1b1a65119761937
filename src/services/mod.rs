//! The seven services of the shop, each a `shop serve NAME` process with its own SQLite file.
//!
//! [`serve`] is the one way a service starts: bind, open the database, build the service's
//! router, register with the registry, serve until shutdown, deregister.

pub mod gateway;
pub mod inventory;
pub mod notification;
pub mod order;
pub mod payment;
pub mod registry;
pub mod user;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::plumbing::background::{Background, Loops};
use crate::plumbing::breaker::{BreakerConfig, Breakers};
use crate::plumbing::client::{http_client, ServiceClient};
use crate::plumbing::config::ServeArgs;
use crate::plumbing::db::Db;
use crate::plumbing::discovery::{Discovery, Instance, Mode as DiscoveryMode};
use crate::plumbing::faults::Faults;
use crate::plumbing::http::{self, Common, ExtraMetrics, ReadyCheck};
use crate::plumbing::metrics::Metrics;
use crate::plumbing::spans::SpanStore;

/// Which built-in service a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Registry,
    Gateway,
    User,
    Order,
    Payment,
    Inventory,
    Notification,
}

impl Kind {
    pub const ALL: [Kind; 7] =
        [Kind::Registry, Kind::Gateway, Kind::User, Kind::Order, Kind::Payment, Kind::Inventory, Kind::Notification];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Registry => "registry",
            Kind::Gateway => "gateway",
            Kind::User => "user",
            Kind::Order => "order",
            Kind::Payment => "payment",
            Kind::Inventory => "inventory",
            Kind::Notification => "notification",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The built-in services this kind calls itself, whatever the stack file's `depends_on`
    /// says (every kind also calls the registry): what a network policy must let through.
    pub fn callees(self) -> &'static [Kind] {
        match self {
            Kind::Gateway => &[Kind::Order, Kind::User, Kind::Inventory],
            Kind::Order => &[Kind::User, Kind::Inventory, Kind::Payment, Kind::Notification],
            // The card vault: a charge resolves its card token there.
            Kind::Payment => &[Kind::User],
            Kind::Registry | Kind::User | Kind::Inventory | Kind::Notification => &[],
        }
    }

    /// The port a service listens on when none is given: the two well-known ones, else any.
    pub fn default_port(self) -> u16 {
        match self {
            Kind::Gateway => 8080,
            Kind::Registry => 7070,
            _ => 0,
        }
    }

    /// The mark in each database file's header (`PRAGMA application_id`): `sh` and the kind,
    /// so a file given to the wrong service is told apart from an old schema of its own.
    pub fn application_id(self) -> i32 {
        0x7368_0000 + Kind::ALL.iter().position(|k| *k == self).unwrap_or(0) as i32 + 1
    }

    fn migrations(self) -> &'static [&'static str] {
        match self {
            Kind::Registry => registry::MIGRATIONS,
            Kind::Gateway => gateway::MIGRATIONS,
            Kind::User => user::MIGRATIONS,
            Kind::Order => order::MIGRATIONS,
            Kind::Payment => payment::MIGRATIONS,
            Kind::Inventory => inventory::MIGRATIONS,
            Kind::Notification => notification::MIGRATIONS,
        }
    }
}

/// What a running service has at hand; built once by [`serve`], shared by its handlers.
pub struct Runtime {
    pub kind: Kind,
    pub instance: String,
    pub args: ServeArgs,
    pub db: Db,
    pub metrics: Arc<Metrics>,
    /// Calls to other services, through the registry's view.
    pub client: ServiceClient,
    pub address: SocketAddr,
    /// Spans recorded by this process (requests served, calls made, sagas run).
    pub spans: Arc<SpanStore>,
    /// The stack secret (`--secret` or `SHOP_SECRET_FILE`); `None` for a service run by hand
    /// without one.
    pub secret: Option<String>,
}

impl Runtime {
    /// `routes` behind the stack secret when this process has one, checked before any body is
    /// read; open without one, as a service run by hand is.
    pub fn guarded(&self, routes: Router) -> Router {
        match &self.secret {
            Some(_) => http::secret_required(routes, self.secret.clone()),
            None => routes,
        }
    }

    pub fn discovery(&self) -> &Arc<Discovery> {
        self.client.discovery()
    }
}

/// A built service: its routes, what `/readyz` and `/metrics` should say about it, and the
/// loops it runs beside them.
pub struct Service {
    pub routes: Router,
    pub ready: Option<ReadyCheck>,
    pub extra_metrics: Option<ExtraMetrics>,
    /// Loops that must run as long as the service: [`serve`] exits non-zero when one ends.
    pub loops: Vec<Background>,
}

impl Service {
    pub fn new(routes: Router) -> Service {
        Service { routes, ready: None, extra_metrics: None, loops: Vec::new() }
    }

    /// Adds a loop named `name` (for the logs) that [`serve`] starts and watches.
    pub fn with_loop(mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) -> Service {
        self.loops.push(Background::new(name, task));
        self
    }
}

/// Runs `kind` until Ctrl-C, SIGTERM, or the death of the supervisor named in `SHOP_PARENT_PID`.
///
/// Prints `listening on ADDRESS` as the first line of stdout once the port is bound, which is how
/// a launcher that asked for port 0 learns the real one.
pub async fn serve(kind: Kind, mut args: ServeArgs) -> anyhow::Result<()> {
    crate::plumbing::test_hooks::gate(&mut args.tuning);
    let port = args.port.unwrap_or(kind.default_port());
    let listener = TcpListener::bind((args.bind, port)).await.with_context(|| {
        format!(
            "cannot listen on {}:{port} for service `{}`; pick another --port or stop what holds it",
            args.bind,
            kind.name()
        )
    })?;
    let address = listener.local_addr()?;
    let instance =
        args.instance.as_deref().map_or_else(|| kind.name().to_string(), crate::plumbing::config::instance_name);
    let db_path = args.db.clone().unwrap_or_else(|| format!("shop-{}.db", kind.name()).into());
    let db = Db::open(&db_path, kind.migrations(), kind.application_id()).map_err(|e| match e {
        crate::plumbing::db::DbError::Foreign { path, found } => {
            let whose = match Kind::ALL.into_iter().find(|k| k.application_id() == found) {
                Some(other) => format!("the {} service's database", other.name()),
                // Unmarked, from before the marks: its tables told it apart.
                None if found == 0 => "another schema's database (its tables are not this service's)".to_string(),
                None => format!("another program's database (application id {found:#x})"),
            };
            anyhow::anyhow!(
                "database `{}` is {whose}, not the {} service's; give it a database of its own with --db",
                path.display(),
                kind.name()
            )
        }
        e => e.into(),
    })?;

    if kind != Kind::Registry && args.tuning.discovery == DiscoveryMode::Registry && args.registry.is_empty() {
        return Err(crate::error::Failure::usage(
            "--registry is empty; give the registry's base URL, such as http://127.0.0.1:7070 (or --discovery dns)",
        ));
    }
    let secret = args.tuning.secret()?;
    let http = http_client();
    let me = (kind != Kind::Registry).then(|| Instance {
        service: kind.name().to_string(),
        instance: instance.clone(),
        address: address.to_string(),
        pid: std::process::id(),
    });
    let (mode, peers) = (args.tuning.discovery, &args.tuning.peers);
    let discovery =
        Arc::new(Discovery::for_mode(mode, &args.registry, peers, http.clone(), me).with_secret(secret.clone()));
    let exporter = crate::plumbing::otlp::Config::from_env(kind.name(), &instance)
        .map(|config| crate::plumbing::otlp::Exporter::start(config, http.clone()));
    let spans = Arc::new(SpanStore::new(kind.name(), &instance).with_exporter(exporter.clone()));
    let faults = Arc::new(Faults::new(args.tuning.fault_delay, args.tuning.fault_delay_requests));
    if let Some(seed) = args.tuning.seed {
        let _ = faults.apply(crate::plumbing::faults::FaultSet { seed: Some(seed), ..Default::default() });
    }
    let breakers = Arc::new(Breakers::new(BreakerConfig {
        failure_threshold: args.tuning.breaker_threshold,
        open_for: args.tuning.breaker_open_for,
        half_open_requests: args.tuning.breaker_half_open,
    }));
    let client = ServiceClient::new(discovery.clone(), args.tuning.client_timeout, args.tuning.client_retries)
        .with_spans(spans.clone())
        .with_resilience(breakers.clone(), faults.clone())
        .with_secret(secret.as_deref());
    let rt = Arc::new(Runtime {
        kind,
        instance: instance.clone(),
        args: args.clone(),
        db: db.clone(),
        metrics: Arc::new(Metrics::default()),
        client,
        address,
        spans: spans.clone(),
        secret: secret.clone(),
    });

    let service = match kind {
        Kind::Registry => registry::build(&rt).await?,
        Kind::Gateway => gateway::build(&rt).await?,
        Kind::User => user::build(&rt).await?,
        Kind::Order => order::build(&rt).await?,
        Kind::Payment => payment::build(&rt).await?,
        Kind::Inventory => inventory::build(&rt).await?,
        Kind::Notification => notification::build(&rt).await?,
    };
    let Service { routes, ready, extra_metrics, mut loops } = service;
    let ready = ready.unwrap_or_else(|| db_ready(db.clone()));
    let extra_metrics = extra_metrics.unwrap_or_else(|| Arc::new(|| Box::pin(async { String::new() })));
    let common = Common {
        service: kind.name(),
        instance: instance.clone(),
        metrics: rt.metrics.clone(),
        ready,
        local_ready: db_ready(db.clone()),
        extra_metrics,
        spans: spans.clone(),
        secret: secret.clone(),
        faults,
        breakers,
    };
    let app = http::with_common_routes(routes, common);

    // In `dns` mode the platform does discovery: there is no registry to register with.
    if kind != Kind::Registry && discovery.mode() == DiscoveryMode::Registry {
        match discovery.register().await {
            crate::plumbing::discovery::Registration::Done => {}
            // A second process under a live one's name would take turns with it in the
            // registry, each missing from it half the time: this one stops instead.
            crate::plumbing::discovery::Registration::NameTaken(why) => {
                return Err(anyhow::anyhow!("{why}"));
            }
            _ => {
                tracing::warn!(registry = %args.registry, "not registered yet; will register when the registry takes it")
            }
        }
        discovery.refresh().await;
        loops.push(Background::new("heartbeat", discovery.clone().run_loop(args.tuning.heartbeat)));
    }
    let mut loops = Loops::start(loops);
    println!("listening on {address}");
    tracing::info!(%address, db = %db_path.display(), "serving");

    let parent = args.tuning.parent_pid;
    let server = http::serve(listener, app, args.tuning.header_timeout, async move {
        tokio::select! {
            // The SIGTERM may be the kernel's news of the supervisor's death (PR_SET_PDEATHSIG).
            _ = http::shutdown_signal() => if http::parent_is_gone(parent) {
                tracing::warn!(supervisor = parent, "supervisor is gone; shutting down");
                http::Stop::Abandon
            } else {
                http::Stop::Drain
            },
            _ = http::parent_gone(parent) => http::Stop::Abandon,
        }
    });
    // A dead loop stops the server too: better a restart than a healthy `/readyz` in front of a
    // relay or sweeper that no longer runs.
    //
    // The supervisor's death is watched for beside the server too, not only in its shutdown
    // future: the kernel sends the death signal when the supervisor's forking thread exits,
    // which can be before the whole process is gone and we are re-parented. That SIGTERM then
    // looks like a stop and starts a drain, which the parent's death must still cut short.
    let outcome = tokio::select! {
        stop = server => Ok(stop),
        _ = http::parent_gone(parent) => Ok(http::Stop::Abandon),
        ended = loops.first_exit() => Err(ended),
    };
    drop(loops);
    // Without a supervisor the registry (its child too) is going away as well: a deregistration
    // could only wait for a timeout.
    if !matches!(outcome, Ok(http::Stop::Abandon)) {
        discovery.deregister().await;
        // The last spans go out too (the last second of a load would be missing otherwise).
        if let Some(exporter) = &exporter {
            exporter.flush(OTLP_FLUSH).await;
        }
    }
    match outcome {
        Ok(_) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(ended) => Err(anyhow::Error::new(ended).context(format!("service `{}` stopped", kind.name()))),
    }
}

/// How long a stopping service waits for its last spans to reach the OTLP collector.
const OTLP_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// `/metrics` gauges read from the service's own database on each scrape: `read` returns one
/// figure per `(name, help)` of `gauges`; a failed read shows zeros rather than no series.
pub fn db_gauges<const N: usize>(
    db: Db,
    read: fn(&rusqlite::Connection) -> rusqlite::Result<[i64; N]>,
    gauges: [(&'static str, &'static str); N],
) -> ExtraMetrics {
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move {
            let figures = db.call(move |c| read(c)).await.unwrap_or([0; N]);
            let mut out = String::new();
            for ((name, help), value) in gauges.iter().zip(figures) {
                // A `_total` is a running total, which Prometheus wants typed as a counter.
                if name.ends_with("_total") {
                    crate::plumbing::metrics::counter(&mut out, name, help, "", value as f64);
                } else {
                    crate::plumbing::metrics::gauge(&mut out, name, help, "", value as f64);
                }
            }
            out
        })
    })
}

/// The longest a readiness check waits for its database write probe.
const WRITE_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// The default readiness check: the database takes writes (see [`Db::health`]).
pub fn db_ready(db: Db) -> ReadyCheck {
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move { db.health(WRITE_PROBE_TIMEOUT).await.map_err(|e| e.to_string()) })
    })
}

/// Readiness that also needs each of `deps` to be known in the registry (or `dns` peers).
pub fn ready_with_deps(rt: &Arc<Runtime>, deps: &'static [&'static str]) -> ReadyCheck {
    let db = db_ready(rt.db.clone());
    let discovery = rt.discovery().clone();
    Arc::new(move || {
        let db = db.clone();
        let discovery = discovery.clone();
        Box::pin(async move {
            db().await?;
            // A dependency missing from the cached view is looked up in the registry before it
            // counts as missing: it may have registered after this process last refreshed.
            let mut missing = Vec::new();
            for dep in deps.iter().copied() {
                if discovery.instances(dep).await.is_empty() {
                    missing.push(dep);
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("no instance registered for: {}", missing.join(", ")))
            }
        })
    })
}
