//! `shop order place | get | list`: orders through the gateway, as a fixture user.

use std::time::Duration;

use serde_json::Value;

use super::context::Context;
use super::target::{parse_item, GatewayArgs, Target};
use super::{exit, output, Failure};
use crate::plumbing::time::parse_duration;
use crate::traffic::gateway::{Gateway, OrderBody, Place, Token, Wait};

#[derive(clap::Subcommand, Debug)]
pub enum OrderCommand {
    /// Place an order and follow its saga
    Place(PlaceArgs),
    /// Show one order
    Get(GetArgs),
    /// List orders, newest first
    List(ListArgs),
}

#[derive(clap::Args, Debug)]
pub struct PlaceArgs {
    /// Fixture user to order as (their dev token is used)
    #[arg(long, required_unless_present = "token")]
    pub user: Option<String>,
    /// Items as SKU or SKU:QTY; repeat for more lines
    #[arg(long = "item", required = true, value_parser = parse_item)]
    pub items: Vec<(String, i64)>,
    /// Bearer token to use instead of the fixture user's
    #[arg(long)]
    pub token: Option<String>,
    /// Idempotency key: the same key and items give the same order
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// How long to wait for the order to be CONFIRMED or FAILED
    #[arg(long, default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub wait: Duration,
    #[command(flatten)]
    pub target: GatewayArgs,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The order id (ord_…)
    #[arg(value_parser = crate::plumbing::ids::parse_order_id)]
    pub id: String,
    /// Fixture user who owns it [default: whichever fixture user does]
    #[arg(long)]
    pub user: Option<String>,
    #[command(flatten)]
    pub target: GatewayArgs,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this fixture user's orders [default: every fixture user's]
    #[arg(long)]
    pub user: Option<String>,
    /// Only orders in this status: PENDING, CONFIRMED or FAILED
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many orders (per user when listing every fixture user's)
    #[arg(long, default_value_t = 20, allow_hyphen_values = true)]
    pub limit: u32,
    #[command(flatten)]
    pub target: GatewayArgs,
}

pub async fn run(ctx: &Context, command: OrderCommand) -> anyhow::Result<i32> {
    match command {
        OrderCommand::Place(args) => place(ctx, args).await,
        OrderCommand::Get(args) => get(ctx, args).await,
        OrderCommand::List(args) => list(ctx, args).await,
    }
}

/// How long a read of orders may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The bearer header of a token; a token that cannot be a header is a usage error.
fn bearer(user: &str, token: &str) -> anyhow::Result<Token> {
    Token::bearer(user, token).map_err(|e| Failure::usage(e.to_string()))
}

async fn place(ctx: &Context, args: PlaceArgs) -> anyhow::Result<i32> {
    let target = Target::resolve(ctx, &args.target).await?;
    let token = match (&args.token, &args.user) {
        (Some(t), _) => bearer("--token", t)?,
        (None, Some(u)) => bearer(u, &target.token(u)?)?,
        (None, None) => return Err(Failure::usage("give `--user NAME` or `--token TOKEN`")),
    };
    let gateway = Gateway::new(&target.gateway);
    let wait = Wait::new(args.wait);
    // Always a key, as a careful client sends one: if the answer is lost on the way, the same
    // command with this key gets the order instead of placing a second one.
    let key = args.idempotency_key.clone().unwrap_or_else(|| crate::plumbing::ids::new("cli"));
    let order = Place {
        token: &token,
        body: &OrderBody::new(&args.items),
        wait: &wait,
        idempotency_key: Some(&key),
        timeout: wait.duration() + Duration::from_secs(10),
    };
    let reply = gateway.place(&order).await.map_err(|e| {
        if e.is_timeout() {
            // Sent, and no answer: it may have been placed.
            return Failure::runtime(format!(
                "the gateway at {} did not answer within {}s, and the order may or may not have been placed; run \
                 the same command again with `--idempotency-key {key}` to get it if it was, instead of placing another",
                target.gateway,
                order.timeout.as_secs()
            ));
        }
        target.unreachable(&e)
    })?;
    let status = reply.status.as_u16();
    let value = reply.json();
    if !(200..300).contains(&status) {
        let code = value["error"]["code"].as_str().unwrap_or("error");
        let message = value["error"]["message"].as_str().unwrap_or("");
        let exit_code = match (status, code) {
            (403, "user_inactive") => exit::REJECTED,
            (400 | 401 | 413 | 422, _) => exit::USAGE,
            _ => exit::RUNTIME,
        };
        // An answer lost on the way may have placed the order: the key that asks for it again
        // comes back, and this command takes it as a flag.
        let again = match reply.headers.get("idempotency-key").and_then(|k| k.to_str().ok()) {
            Some(key) => format!(" (here: run the same command again with `--idempotency-key {key}`)"),
            None => String::new(),
        };
        return Err(Failure::with_code(
            exit_code,
            format!("the gateway refused the order ({status} {code}): {message}{again}"),
        ));
    }
    show_order(ctx, &value);
    match value["status"].as_str() {
        Some("CONFIRMED") => Ok(exit::OK),
        Some("FAILED") => {
            if !ctx.json {
                eprintln!(
                    "order {} FAILED at {}: {} ({})",
                    value["id"].as_str().unwrap_or("?"),
                    value["failure"]["step"].as_str().unwrap_or("?"),
                    value["failure"]["message"].as_str().unwrap_or(""),
                    value["failure"]["code"].as_str().unwrap_or("?"),
                );
            }
            Ok(exit::REJECTED)
        }
        _ => {
            let id = value["id"].as_str().unwrap_or("?");
            eprintln!(
                "order {id} is still PENDING after {}; the saga carries on. Follow it with `shop inspect order {id}`",
                humantime::format_duration(args.wait)
            );
            Ok(exit::RUNTIME)
        }
    }
}

async fn get(ctx: &Context, args: GetArgs) -> anyhow::Result<i32> {
    let target = Target::resolve(ctx, &args.target).await?;
    let users: Vec<String> = match &args.user {
        Some(u) => vec![u.clone()],
        None => target.tokens.iter().map(|(u, _)| u.clone()).collect(),
    };
    let gateway = Gateway::new(&target.gateway);
    for user in users {
        let token = bearer(&user, &target.token(&user)?)?;
        let reply = gateway.order(&token, &args.id, READ_TIMEOUT).await.map_err(|e| target.unreachable(&e))?;
        if reply.status.is_success() {
            let value: Value = serde_json::from_slice(&reply.body)
                .map_err(|e| anyhow::anyhow!("the gateway answered order `{}` with invalid JSON: {e}", args.id))?;
            show_order(ctx, &value);
            return Ok(exit::OK);
        }
        // Another user's order is a 404 to this one; anything else is not an answer at all.
        if reply.status != reqwest::StatusCode::NOT_FOUND {
            return Err(Failure::runtime(format!(
                "the gateway could not look up order `{}` for {user}: {}",
                args.id,
                reply.refusal()
            )));
        }
    }
    Err(Failure::runtime(format!("no order `{}` for any fixture user; `shop order list` shows them", args.id)))
}

async fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<i32> {
    let target = Target::resolve(ctx, &args.target).await?;
    if let Some(s) = &args.status {
        if !["PENDING", "CONFIRMED", "FAILED"].contains(&s.as_str()) {
            return Err(Failure::usage(format!("unknown status `{s}`; use PENDING, CONFIRMED or FAILED")));
        }
    }
    if !(1..=100).contains(&args.limit) {
        return Err(Failure::usage(format!("--limit must be 1 to 100, got {}", args.limit)));
    }
    let users: Vec<String> = match &args.user {
        Some(u) => vec![u.clone()],
        None => target.tokens.iter().map(|(u, _)| u.clone()).collect(),
    };
    let gateway = Gateway::new(&target.gateway);
    let mut all: Vec<Value> = Vec::new();
    for user in users {
        let token = bearer(&user, &target.token(&user)?)?;
        let reply = gateway
            .orders(&token, args.limit, args.status.as_deref(), READ_TIMEOUT)
            .await
            .map_err(|e| target.unreachable(&e))?;
        // An outage is not an empty list.
        if !reply.status.is_success() {
            return Err(Failure::runtime(format!("the gateway could not list {user}'s orders: {}", reply.refusal())));
        }
        match reply.json() {
            Value::Array(orders) => all.extend(orders),
            _ => anyhow::bail!("the gateway listed {user}'s orders in something other than a JSON array"),
        }
    }
    all.sort_by(|a, b| b["id"].as_str().cmp(&a["id"].as_str()));
    all.truncate(args.limit as usize);
    if ctx.json {
        output::print_json(&all);
        return Ok(exit::OK);
    }
    let mut t = output::table(&["ID", "USER", "STATUS", "TOTAL", "ITEMS", "FAILURE", "CREATED"]);
    for o in &all {
        t.add_row(vec![
            o["id"].as_str().unwrap_or("").to_string(),
            o["user_id"].as_str().unwrap_or("").to_string(),
            o["status"].as_str().unwrap_or("").to_string(),
            money(o["total_cents"].as_i64().unwrap_or(0), o["currency"].as_str().unwrap_or("USD")),
            o["items"].as_array().map(|i| i.len()).unwrap_or(0).to_string(),
            o["failure"]["code"].as_str().unwrap_or("-").to_string(),
            o["created_at"].as_str().unwrap_or("").to_string(),
        ]);
    }
    println!("{}", t.trim_fmt());
    Ok(exit::OK)
}

/// `$24.99` for 2499 USD cents; other currencies as `24.99 EUR`.
pub fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let (whole, frac) = (cents.abs() / 100, cents.abs() % 100);
    match currency {
        "USD" => format!("{sign}${whole}.{frac:02}"),
        other => format!("{sign}{whole}.{frac:02} {other}"),
    }
}

/// The order, its items and its saga steps (or the JSON document with `--json`).
pub fn show_order(ctx: &Context, o: &Value) {
    if ctx.json {
        output::print_json(o);
        return;
    }
    let currency = o["currency"].as_str().unwrap_or("USD");
    println!(
        "order {}  {}  user {}  total {}",
        o["id"].as_str().unwrap_or("?"),
        o["status"].as_str().unwrap_or("?"),
        o["user_id"].as_str().unwrap_or("?"),
        money(o["total_cents"].as_i64().unwrap_or(0), currency)
    );
    if let Some(f) = o["failure"].as_object() {
        println!(
            "failed at {}: {} ({})",
            f["step"].as_str().unwrap_or("?"),
            f["message"].as_str().unwrap_or(""),
            f["code"].as_str().unwrap_or("?")
        );
    }
    let mut items = output::table(&["PRODUCT", "QTY", "UNIT PRICE", "AMOUNT"]);
    for i in o["items"].as_array().into_iter().flatten() {
        let (q, p) = (i["quantity"].as_i64().unwrap_or(0), i["unit_price_cents"].as_i64().unwrap_or(0));
        items.add_row(vec![
            i["product_id"].as_str().unwrap_or("").to_string(),
            q.to_string(),
            money(p, currency),
            money(p * q, currency),
        ]);
    }
    println!("{}", items.trim_fmt());
    let mut steps = output::table(&["STEP", "SERVICE", "OUTCOME", "ATTEMPTS", "DURATION"]);
    for s in o["steps"].as_array().into_iter().flatten() {
        let name = s["step"].as_str().unwrap_or("").to_string();
        let name = if s["compensation"].as_bool() == Some(true) { format!("↩ {name}") } else { name };
        steps.add_row(vec![
            name,
            s["service"].as_str().unwrap_or("").to_string(),
            s["outcome"].as_str().unwrap_or("").to_string(),
            s["attempts"].as_i64().unwrap_or(0).to_string(),
            format!("{} ms", s["duration_ms"].as_i64().unwrap_or(0)),
        ]);
    }
    println!("{}", steps.trim_fmt());
    println!("payment {}  trace {}", o["payment_id"].as_str().unwrap_or("-"), o["trace_id"].as_str().unwrap_or("-"));
}

#[cfg(test)]
mod tests {
    #[test]
    fn money_is_rendered_from_integer_cents() {
        assert_eq!(super::money(2499, "USD"), "$24.99");
        assert_eq!(super::money(5, "USD"), "$0.05");
        assert_eq!(super::money(-1050, "EUR"), "-10.50 EUR");
    }
}
