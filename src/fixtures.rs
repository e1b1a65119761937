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
    /// Integer cents in `1..=MAX_PRICE_CENTS`, checked while parsing so the error has the
    /// price's line and column.
    #[serde(deserialize_with = "price_cents")]
    pub price_cents: i64,
    pub stock: i64,
}

/// The highest unit price a product may have, in cents: with at most 1000 units per line, one
/// line stays within an order's total limit.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000;

/// Reads a price as an integer in `1..=MAX_PRICE_CENTS`; a float, a string or a number out of
/// range is refused rather than rounded or wrapped.
fn price_cents<'de, D: serde::Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    struct Price;
    impl serde::de::Visitor<'_> for Price {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "whole cents from 1 to {MAX_PRICE_CENTS}")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            if (1..=MAX_PRICE_CENTS).contains(&v) {
                Ok(v)
            } else {
                Err(E::custom(format!("must be whole cents from 1 to {MAX_PRICE_CENTS}, got {v}")))
            }
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            match i64::try_from(v) {
                Ok(v) => self.visit_i64(v),
                Err(_) => Err(E::custom(format!("must be whole cents from 1 to {MAX_PRICE_CENTS}, got {v}"))),
            }
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            Err(E::custom(format!("must be whole cents from 1 to {MAX_PRICE_CENTS}, got {v}")))
        }
    }
    de.deserialize_any(Price)
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
        // The position is already in front: drop serde_yaml's own `at line L column C` suffix.
        let message = e.to_string();
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_string(),
            None => message,
        };
        FixtureError::Parse { path: shown, line, column, message }
    })
}

pub fn load_users(path: &Path) -> Result<Vec<UserFixture>, FixtureError> {
    let users = load::<UsersFile>(path)?.users;
    let invalid = |message: String| FixtureError::Invalid { path: path.display().to_string(), message };
    for (n, u) in users.iter().enumerate() {
        if u.id.is_empty() || u.token.is_empty() {
            return Err(invalid(format!("user `{}` needs an id and a token", u.id)));
        }
        if !card_number_valid(&u.card) {
            return Err(invalid(format!(
                "users[{n}].card of `{}` is not a card number (12 to 19 digits passing the Luhn check), \
                 such as 4242424242424242",
                u.id
            )));
        }
        if let Some(first) = users[..n].iter().position(|v| v.id == u.id) {
            return Err(invalid(format!("users[{n}].id `{}` is users[{first}]'s too; ids are unique", u.id)));
        }
        // A token names one user: shared, it would place one user's orders as another's.
        if let Some(first) = users[..n].iter().position(|v| v.token == u.token) {
            let other = &users[first].id;
            return Err(invalid(format!(
                "users[{n}].token of `{}` is `{other}`'s too; each user needs a token of its own",
                u.id
            )));
        }
    }
    Ok(users)
}

/// 12 to 19 digits whose Luhn checksum holds, as every card number's does.
fn card_number_valid(card: &str) -> bool {
    let digits: Vec<u32> = card.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != card.len() || !(12..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The most a product's stock may hold: sums of stock over every product stay far inside the
/// 64-bit integers the invariants add them in.
pub const MAX_STOCK: i64 = 1_000_000_000_000;

pub fn load_products(path: &Path) -> Result<Vec<ProductFixture>, FixtureError> {
    let products = load::<ProductsFile>(path)?.products;
    let invalid = |message: String| FixtureError::Invalid { path: path.display().to_string(), message };
    for (n, p) in products.iter().enumerate() {
        if p.id.is_empty() || p.id.chars().count() > 64 {
            return Err(invalid(format!("products[{n}].id `{}` must be 1 to 64 characters", p.id)));
        }
        if p.stock < 0 {
            return Err(invalid(format!("products[{n}].stock of `{}` is {}; it cannot be negative", p.id, p.stock)));
        }
        if p.stock > MAX_STOCK {
            return Err(invalid(format!("products[{n}].stock of `{}` is {}; at most {MAX_STOCK}", p.id, p.stock)));
        }
        if let Some(first) = products[..n].iter().position(|q| q.id == p.id) {
            return Err(invalid(format!("products[{n}].id `{}` is products[{first}]'s too; ids are unique", p.id)));
        }
    }
    Ok(products)
}

/// The SHA-256 of a bearer token, hex: the only form in which a token is stored.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn products(text: &str) -> Result<Vec<ProductFixture>, FixtureError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("products.yaml");
        std::fs::write(&path, text).unwrap();
        load_products(&path).map_err(|e| match e {
            FixtureError::Parse { line, column, message, .. } => {
                FixtureError::Parse { path: "products.yaml".into(), line, column, message }
            }
            e => e,
        })
    }

    fn entry(price: &str) -> String {
        format!("products:\n  - id: p\n    name: P\n    price_cents: {price}\n    stock: 1\n")
    }

    #[test]
    fn prices_from_one_cent_to_ten_million_dollars_load() {
        assert_eq!(products(&entry("1")).unwrap()[0].price_cents, 1);
        assert_eq!(products(&entry("1000000000")).unwrap()[0].price_cents, MAX_PRICE_CENTS);
    }

    #[test]
    fn a_price_out_of_range_or_not_whole_cents_is_refused_at_its_line_and_column() {
        for bad in ["0", "-5", "1000000001", "18446744073709552", "99999999999999999999", "24.99", "\"2499\""] {
            let err = products(&entry(bad)).unwrap_err().to_string();
            assert!(err.starts_with("products.yaml:4:18: "), "{bad}: {err}");
            assert!(err.contains("price_cents"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_bad_user_is_named_with_what_is_wrong_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.yaml");
        let line = |id: &str, card: &str, token: &str| {
            format!("  - {{ id: {id}, name: x, active: true, card: \"{card}\", token: {token} }}\n")
        };
        let good = line("alice", "4242424242424242", "ta");
        for (body, want) in [
            (good.clone() + &line("bob", "4242424242424241", "tb"), "users[1].card of `bob` is not a card number"),
            (good.clone() + &line("bob", "4242-4242", "tb"), "users[1].card of `bob` is not a card number"),
            (good.clone() + &line("bob", "4000000000000002", "ta"), "users[1].token of `bob` is `alice`'s too"),
            (good.clone() + &line("alice", "4000000000000002", "tb"), "users[1].id `alice` is users[0]'s too"),
        ] {
            std::fs::write(&path, format!("users:\n{body}")).unwrap();
            let err = load_users(&path).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        std::fs::write(&path, format!("users:\n{good}{}", line("bob", "4000000000009995", "tb"))).unwrap();
        assert_eq!(load_users(&path).unwrap().len(), 2);
    }

    #[test]
    fn a_bad_product_is_named_with_what_is_wrong_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        let line = |id: &str, stock: i64| format!("  - {{ id: {id}, name: x, price_cents: 100, stock: {stock} }}\n");
        for (body, want) in [
            (line("a", 1) + &line("b", -1), "products[1].stock of `b` is -1; it cannot be negative"),
            (line("a", 1) + &line("a", 2), "products[1].id `a` is products[0]'s too; ids are unique"),
            (line("''", 1), "products[0].id `` must be 1 to 64 characters"),
            (line("a", i64::MAX), "products[0].stock of `a` is 9223372036854775807; at most 1000000000000"),
        ] {
            std::fs::write(&path, format!("products:\n{body}")).unwrap();
            let err = load_products(&path).unwrap_err().to_string();
            assert!(err.ends_with(want), "{err}");
        }
    }
}
