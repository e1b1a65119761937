//! Finding the running stack's gateway and the fixture users' dev tokens, for the commands
//! that drive traffic (`shop order`, `shop load`).

use super::context::Context;
use super::Failure;
use crate::orchestrator::control::Control;
use crate::orchestrator::protocol::InstanceState;
use crate::orchestrator::stackfile::{Program, Stack};
use crate::services::Kind;

/// Where to send requests, and as whom.
pub struct Target {
    /// `http://host:port` of the gateway.
    pub gateway: String,
    /// Fixture user id → dev token, in file order.
    pub tokens: Vec<(String, String)>,
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
        let gateway = match &args.gateway {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => gateway_of(ctx, &stack).await?,
        };
        Ok(Target { gateway, tokens })
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

/// The running stack's gateway (the first healthy instance), else the fixed port in the stack
/// file, so a stack started by hand on the default ports works too.
async fn gateway_of(ctx: &Context, stack: &Stack) -> anyhow::Result<String> {
    let names = stack.services_of(Kind::Gateway);
    let gateways: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Some(control) = Control::connect(&ctx.state_dir()) {
        let status = control.status().await?;
        let mut rows: Vec<_> =
            status.rows.iter().filter(|r| gateways.contains(&r.service.as_str()) && r.address.is_some()).collect();
        rows.sort_by_key(|r| r.state != InstanceState::Healthy);
        if let Some(addr) = rows.first().and_then(|r| r.address.clone()) {
            return Ok(format!("http://{addr}"));
        }
    }
    let port = stack.services.iter().find(|s| gateways.contains(&s.name.as_str())).map(|s| s.port).unwrap_or(8080);
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
