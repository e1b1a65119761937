//! Finding the running stack's gateway and the fixture users' dev tokens, for the commands
//! that drive traffic (`shop order`, `shop load`).

use std::time::Duration;

use super::context::Context;
use super::Failure;
use crate::orchestrator::control::Control;
use crate::orchestrator::protocol::{InstanceState, PsRow};
use crate::orchestrator::stackfile::{Program, Stack};
use crate::orchestrator::state_dir::StateDir;
use crate::services::Kind;
use crate::traffic::Gateways;

/// Where to send requests, and as whom.
pub struct Target {
    /// `http://host:port` of the gateway: the first healthy instance of the running stack's.
    pub gateway: String,
    /// Every gateway instance with an address, healthy ones first; `gateway` alone when it was
    /// given or is the stack file's fixed port.
    pub gateways: Vec<String>,
    /// Fixture user id → dev token, in file order.
    pub tokens: Vec<(String, String)>,
    /// The running stack's state dir, when the gateways came from its supervisor.
    supervised: Option<StateDir>,
    /// The stack's services of the gateway kind.
    stack_gateways: Vec<String>,
    /// Those of `gateways` that were healthy when they were read.
    healthy: Vec<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Gateway base URL, such as http://127.0.0.1:8080 [default: the running stack's gateway]
    #[arg(long, env = "SHOP_GATEWAY", value_parser = parse_gateway_url)]
    pub gateway: Option<String>,
}

/// `--gateway`: an `http://HOST[:PORT]` URL, so a typo is a usage error and not a run of
/// orders that all fail to connect.
fn parse_gateway_url(s: &str) -> Result<String, String> {
    crate::plumbing::config::http_base_url(s, "write the gateway's base URL, such as http://127.0.0.1:8080")
}

impl Target {
    pub async fn resolve(ctx: &Context, args: &GatewayArgs) -> anyhow::Result<Target> {
        let stack = ctx.stack()?;
        let tokens = tokens(&stack)?;
        let stack_gateways = stack.services_of(Kind::Gateway);
        let (gateways, healthy, supervised) = match &args.gateway {
            Some(url) => (vec![url.trim_end_matches('/').to_string()], Vec::new(), None),
            None => match supervised_gateways(&ctx.state_dir(), &stack_gateways).await? {
                Some((gateways, healthy)) => (gateways, healthy, Some(ctx.state_dir())),
                None => (vec![fixed_gateway(&stack)?], Vec::new(), None),
            },
        };
        Ok(Target { gateway: gateways[0].clone(), gateways, tokens, supervised, stack_gateways, healthy })
    }

    /// A load's client of the gateways: balanced over the running stack's gateway instances,
    /// kept up to date from its supervisor (a replica killed and restarted on a new port).
    pub fn balanced(&self) -> Gateways {
        let balanced = Gateways::new(&self.gateway);
        balanced.set(&self.gateways);
        if let Some(state_dir) = self.supervised.clone() {
            // From the first order on, only the healthy ones: a paused replica would hold every
            // order sent to it for the whole request timeout. `set` keeps the list as it is when
            // none is healthy.
            balanced.set(&self.healthy);
            let stack_gateways = self.stack_gateways.clone();
            balanced.follow(GATEWAYS_REFRESH, move || {
                let (state_dir, names) = (state_dir.clone(), stack_gateways.clone());
                async move { healthy_gateways(&state_dir, &names).await.unwrap_or_default() }
            });
        }
        balanced
    }

    /// The dev token of fixture user `user`, or a usage error listing the users there are.
    pub fn token(&self, user: &str) -> anyhow::Result<String> {
        self.tokens.iter().find(|(u, _)| u == user).map(|(_, t)| t.clone()).ok_or_else(|| {
            let known: Vec<&str> = self.tokens.iter().map(|(u, _)| u.as_str()).collect();
            Failure::usage(format!(
                "no fixture user `{user}`; the fixtures have: {} (or pass --token)",
                known.join(", ")
            ))
        })
    }

    /// The error for a gateway that does not answer, naming the address tried.
    pub fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        Failure::runtime(format!(
            "cannot reach the gateway at {} ({}); is the stack running? start it with `shop up -d`",
            self.gateway,
            crate::plumbing::client::root_cause(e)
        ))
    }
}

/// How often a load asks the supervisor which gateways are healthy.
const GATEWAYS_REFRESH: Duration = Duration::from_secs(1);

/// The running stack's gateway instances with an address, healthy ones first, and the healthy
/// ones; `None` when no supervisor answers for the state dir or it runs no gateway.
async fn supervised_gateways(
    state_dir: &StateDir,
    names: &[String],
) -> anyhow::Result<Option<(Vec<String>, Vec<String>)>> {
    let Some(control) = Control::connect(state_dir) else {
        return Ok(None);
    };
    let status = control.status().await?;
    let mut rows: Vec<_> = status.rows.iter().filter(|r| names.contains(&r.service) && r.address.is_some()).collect();
    rows.sort_by_key(|r| r.state != InstanceState::Healthy);
    let url = |r: &&PsRow| r.address.as_ref().map(|a| format!("http://{a}"));
    let gateways: Vec<String> = rows.iter().filter_map(url).collect();
    let healthy: Vec<String> = rows.iter().filter(|r| r.state == InstanceState::Healthy).filter_map(url).collect();
    Ok((!gateways.is_empty()).then_some((gateways, healthy)))
}

/// The running stack's healthy gateway instances, as its supervisor sees them now.
async fn healthy_gateways(state_dir: &StateDir, names: &[String]) -> Option<Vec<String>> {
    supervised_gateways(state_dir, names).await.ok().flatten().map(|(_, healthy)| healthy)
}

/// The gateway's fixed port in the stack file, so a stack started by hand on the default
/// ports works too.
fn fixed_gateway(stack: &Stack) -> anyhow::Result<String> {
    let names = stack.services_of(Kind::Gateway);
    let port = stack.services.iter().find(|s| names.contains(&s.name)).map(|s| s.port).unwrap_or(8080);
    if port == 0 {
        return Err(Failure::runtime("no stack is running and the gateway has no fixed port; start the stack with `shop up -d` or pass --gateway URL"));
    }
    Ok(format!("http://127.0.0.1:{port}"))
}

/// Fixture users and tokens from the user service's fixtures in the stack file.
pub fn tokens(stack: &Stack) -> anyhow::Result<Vec<(String, String)>> {
    let Some(path) =
        stack.services.iter().find(|s| s.program == Program::Builtin(Kind::User)).and_then(|s| s.fixtures.clone())
    else {
        return Ok(Vec::new());
    };
    let users = crate::fixtures::load_users(&path).map_err(|e| Failure::usage(e.to_string()))?;
    Ok(users.into_iter().map(|u| (u.id, u.token)).collect())
}

pub use crate::traffic::gateway::parse_item;
