//! A bare axum hello-world: the reference the benchmark measures in the same run as the saga,
//! so that orders/s can be divided by the rate this machine gives the simplest axum handler
//! and compared across machines (SPEC section 18).
//!
//! Usage: `hello [PORT]` (0 or nothing: any free port). It prints `listening on ADDR` once
//! bound, so a script can read the port. Same runtime shape as a light service: tokio's
//! multi-thread runtime, one HTTP/1 listener, one route.

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|e| anyhow::anyhow!("port {p:?}: {e}"))?,
        None => 0,
    };
    let app = Router::new().route("/", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
