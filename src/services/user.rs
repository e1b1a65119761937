//! The user service: who may order, with which card. Bearer tokens are stored as SHA-256 hashes
//! only; the gateway resolves a token by its hash.
//!
//! It is also the card vault (SPEC section 17): the only place a full card number is stored.
//! Every other service sees a user's card as a `card_token` and its last four digits; payment
//! resolves the token here (`GET /v1/cards/{token}`) at the moment it charges.

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

pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        active INTEGER NOT NULL,
        card TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );",
    // Version 2: the token other services carry instead of the number; existing users get one.
    "ALTER TABLE users ADD COLUMN card_token TEXT;
    UPDATE users SET card_token = 'card_' || lower(hex(randomblob(12))) WHERE card_token IS NULL;
    CREATE UNIQUE INDEX users_by_card_token ON users (card_token);",
];

/// A user as other services see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    pub name: String,
    pub active: bool,
    /// Stands for the user's card everywhere outside this service; payment resolves it.
    pub card_token: String,
    /// The last four digits of the card, for display and receipts.
    pub card_last4: String,
}

/// A card as the vault resolves it for payment: the one answer that carries the full number,
/// which the caller may use to decide a charge but never store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Card {
    pub card_token: String,
    /// The user the card belongs to: payment refuses a token charged for someone else.
    pub user_id: String,
    pub number: String,
    pub card_last4: String,
}

/// The random token of a new card, as SQL (the same form the version-2 migration gives).
const NEW_CARD_TOKEN: &str = "'card_' || lower(hex(randomblob(12)))";

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
                        &format!(
                            "INSERT OR IGNORE INTO users (user_id, name, active, card, token_hash, created_at, card_token)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NEW_CARD_TOKEN})"
                        ),
                        rusqlite::params![u.id, u.name, u.active, u.card, fixtures::token_hash(&u.token), now],
                    )?;
                }
                Ok(())
            })
            .await
            .with_context(|| format!("loading fixtures from `{}`", path.display()))?;
        tracing::info!(users = n, fixtures = %path.display(), "fixtures loaded");
    }
    // The one route that gives out a whole card number takes only callers of this stack.
    let vault = rt.guarded(Router::new().route("/v1/cards/{token}", get(card_by_token)).with_state(rt.db.clone()));
    let routes = Router::new()
        .route("/v1/users", get(list))
        .route("/v1/users/{id}", get(by_id))
        .route("/v1/tokens/{hash}", get(by_token_hash))
        .with_state(rt.db.clone())
        .merge(vault);
    Ok(Service::new(routes))
}

/// The columns [`row`] reads; the number itself is reduced to its last four digits in SQL, so
/// it never leaves this service through a `User`.
const USER_COLUMNS: &str = "user_id, name, active, card_token, substr(card, -4)";

fn row(r: &rusqlite::Row) -> rusqlite::Result<User> {
    Ok(User { user_id: r.get(0)?, name: r.get(1)?, active: r.get(2)?, card_token: r.get(3)?, card_last4: r.get(4)? })
}

async fn by_id(State(db): State<Db>, ApiPath(id): ApiPath<String>) -> Result<Json<User>, ApiError> {
    let key = id.clone();
    db.read(move |c| {
        c.query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"), [key], row).optional()
    })
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found(format!("no user `{id}`")))
}

async fn by_token_hash(State(db): State<Db>, ApiPath(hash): ApiPath<String>) -> Result<Json<User>, ApiError> {
    db.read(move |c| {
        c.query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE token_hash = ?1"), [hash], row).optional()
    })
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("unknown token"))
}

async fn list(State(db): State<Db>) -> Result<Json<Vec<User>>, ApiError> {
    let users = db
        .read(|c| {
            let mut stmt = c.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY user_id"))?;
            let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>();
            rows
        })
        .await?;
    Ok(Json(users))
}

/// `GET /v1/cards/{token}`: the card behind a token, for the payment service only.
async fn card_by_token(State(db): State<Db>, ApiPath(token): ApiPath<String>) -> Result<Json<Card>, ApiError> {
    db.read(move |c| {
        c.query_row(
            "SELECT card_token, user_id, card, substr(card, -4) FROM users WHERE card_token = ?1",
            [token],
            |r| Ok(Card { card_token: r.get(0)?, user_id: r.get(1)?, number: r.get(2)?, card_last4: r.get(3)? }),
        )
        .optional()
    })
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("unknown card token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_migration_gives_every_existing_user_its_own_card_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.db");
        let v1 = Db::open(&path, &MIGRATIONS[..1], 0).unwrap();
        v1.call(|c| {
            c.execute_batch(
                "INSERT INTO users VALUES ('alice', 'A', 1, '4242424242424242', 'h1', 0);
                 INSERT INTO users VALUES ('bob', 'B', 1, '4000000000000002', 'h2', 0);",
            )
        })
        .await
        .unwrap();
        drop(v1);
        let db = Db::open(&path, MIGRATIONS, 0).unwrap();
        let users: Vec<User> = db
            .read(|c| {
                let mut stmt = c.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY user_id"))?;
                let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>();
                rows
            })
            .await
            .unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.iter().all(|u| u.card_token.starts_with("card_") && u.card_token.len() == 29), "{users:?}");
        assert_ne!(users[0].card_token, users[1].card_token);
        assert_eq!((users[0].card_last4.as_str(), users[1].card_last4.as_str()), ("4242", "0002"));
    }
}
