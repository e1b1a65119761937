//! Seed data files: `fixtures/users.yaml` and `fixtures/products.yaml`.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    pub users: Vec<UserFixture>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFixture {
    /// The user id, also the name `shop order place --user` takes.
    pub id: String,
    pub name: String,
    pub active: bool,
    /// A test card number: 4242424242424242 is charged, 4000000000000002 declined,
    /// 4000000000009995 has insufficient funds.
    pub card: String,
    /// Bearer token for the gateway; only its hash is stored by the user service.
    pub token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductsFile {
    pub products: Vec<ProductFixture>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductFixture {
    pub id: String,
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture file `{path}`: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: String, line: usize, column: usize, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, FixtureError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|cause| FixtureError::Read { path: shown.clone(), cause })?;
    serde_yaml::from_str(&text).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        FixtureError::Parse { path: shown, line, column, message: e.to_string() }
    })
}

pub fn load_users(path: &Path) -> Result<Vec<UserFixture>, FixtureError> {
    let users = load::<UsersFile>(path)?.users;
    if let Some(u) = users.iter().find(|u| u.id.is_empty() || u.token.is_empty()) {
        return Err(FixtureError::Invalid {
            path: path.display().to_string(),
            message: format!("user `{}` needs an id and a token", u.id),
        });
    }
    Ok(users)
}

pub fn load_products(path: &Path) -> Result<Vec<ProductFixture>, FixtureError> {
    let products = load::<ProductsFile>(path)?.products;
    if let Some(p) = products.iter().find(|p| p.price_cents < 0 || p.stock < 0 || p.id.is_empty() || p.id.len() > 64) {
        return Err(FixtureError::Invalid {
            path: path.display().to_string(),
            message: format!(
                "product `{}` needs an id of 1..=64 characters, a price and a stock that are not negative",
                p.id
            ),
        });
    }
    Ok(products)
}

/// The SHA-256 of a bearer token, hex: the only form in which a token is stored.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
