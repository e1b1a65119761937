//! The user service: who may order, with which card. Bearer tokens are stored as SHA-256 hashes
//! only; the gateway resolves a token by its hash.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::{Runtime, Service};
use crate::fixtures;
use crate::plumbing::db::Db;
use crate::plumbing::error::{ApiError, ApiPath};
use crate::plumbing::time::now_ms;

pub const MIGRATIONS: &[&str] = &["CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        active INTEGER NOT NULL,
        card TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );"];

/// A user as other services see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    pub name: String,
    pub active: bool,
    /// The card the payment service charges (test numbers only in this lab).
    pub card: String,
}

pub async fn build(rt: &Arc<Runtime>) -> anyhow::Result<Service> {
    if let Some(path) = &rt.args.fixtures {
        let users = fixtures::load_users(path)?;
        let n = users.len();
        rt.db
            .tx(move |tx| {
                let now = now_ms();
                for u in &users {
                    // OR IGNORE: fixtures load once; a restart never resets a user.
                    tx.execute(
                        "INSERT OR IGNORE INTO users (user_id, name, active, card, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        rusqlite::params![u.id, u.name, u.active, u.card, fixtures::token_hash(&u.token), now],
                    )?;
                }
                Ok(())
            })
            .await
            .with_context(|| format!("loading fixtures from `{}`", path.display()))?;
        tracing::info!(users = n, fixtures = %path.display(), "fixtures loaded");
    }
    let routes = Router::new()
        .route("/v1/users", get(list))
        .route("/v1/users/{id}", get(by_id))
        .route("/v1/tokens/{hash}", get(by_token_hash))
        .with_state(rt.db.clone());
    Ok(Service::new(routes))
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<User> {
    Ok(User { user_id: r.get(0)?, name: r.get(1)?, active: r.get(2)?, card: r.get(3)? })
}

async fn by_id(State(db): State<Db>, ApiPath(id): ApiPath<String>) -> Result<Json<User>, ApiError> {
    let key = id.clone();
    db.read(move |c| {
        c.query_row("SELECT user_id, name, active, card FROM users WHERE user_id = ?1", [key], row).optional()
    })
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found(format!("no user `{id}`")))
}

async fn by_token_hash(State(db): State<Db>, ApiPath(hash): ApiPath<String>) -> Result<Json<User>, ApiError> {
    db.read(move |c| {
        c.query_row("SELECT user_id, name, active, card FROM users WHERE token_hash = ?1", [hash], row).optional()
    })
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("unknown token"))
}

async fn list(State(db): State<Db>) -> Result<Json<Vec<User>>, ApiError> {
    let users = db
        .read(|c| {
            let mut stmt = c.prepare("SELECT user_id, name, active, card FROM users ORDER BY user_id")?;
            let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>();
            rows
        })
        .await?;
    Ok(Json(users))
}
