//! Workload mix: which user places order `n` and what it contains, from weights such as
//! `--users alice:70,bob:20,dave:10` and `--item sku-1:1@60 --item sku-2:2@40` (SPEC section 14).
//!
//! A mix is a fixed cycle of choices spread by smooth weighted round-robin, so order `n` takes
//! slot `n % cycle`: no lock or random state on the hot path, exact proportions over every
//! cycle, and the same run twice sends the same orders.

/// Most slots one cycle may have; finer weights than this would only cost memory.
const MAX_CYCLE: u64 = 100_000;

/// A mix's text that does not parse or cannot be spread; the message names the accepted forms.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MixError {
    #[error("`{0}` is not a weighted user; write USER or USER:WEIGHT with WEIGHT a whole number above 0, e.g. --users alice:70,bob:20,dave:10")]
    User(String),
    #[error("`{0}` is not an item: {1}; write SKU[:QTY][@WEIGHT] with QTY 1 to 1000 and WEIGHT a whole number above 0, e.g. --item sku-1:1@60 --item sku-2:2@40")]
    Item(String, String),
    #[error("give every {0} a weight or none of them (e.g. {1})")]
    Partial(&'static str, &'static str),
    #[error("the weights {0:?} are too fine to spread (their sum divided by their common divisor is above {MAX_CYCLE}); use smaller numbers")]
    TooFine(Vec<u32>),
}

/// Which of `k` choices order `n` takes: round-robin, or weighted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    slots: Vec<usize>,
}

impl Cycle {
    /// Choice `n % k`, the mix when no weights are given.
    pub fn round_robin(k: usize) -> Cycle {
        Cycle { slots: (0..k.max(1)).collect() }
    }

    /// Choice `i` in `weights[i]` of every `sum(weights)` orders, interleaved (nginx's smooth
    /// weighted round-robin) so that a short run already sees the mix.
    pub fn weighted(weights: &[u32]) -> Result<Cycle, MixError> {
        let divisor = weights.iter().fold(0u64, |g, w| gcd(g, u64::from(*w)));
        let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        if weights.is_empty() || divisor == 0 {
            return Ok(Cycle::round_robin(weights.len()));
        }
        let len = sum / divisor;
        if len > MAX_CYCLE {
            return Err(MixError::TooFine(weights.to_vec()));
        }
        let weights: Vec<i64> = weights.iter().map(|w| (u64::from(*w) / divisor) as i64).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut slots = Vec::with_capacity(len as usize);
        for _ in 0..len {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            // `weights` is not empty (checked above), so there is a largest.
            let best = (0..current.len()).max_by_key(|i| (current[*i], std::cmp::Reverse(*i))).unwrap_or(0);
            current[best] -= total;
            slots.push(best);
        }
        Ok(Cycle { slots })
    }

    /// The choice for order `n`.
    pub fn pick(&self, n: u64) -> usize {
        // `slots` is never empty: both constructors give it at least one entry.
        self.slots[(n % self.slots.len() as u64) as usize]
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn weight(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|w| *w > 0)
}

/// `alice:70,bob:20` or `alice,bob` → the users and, if any were given, their weights.
/// Blank entries are skipped; a weight on some users but not others is refused.
pub fn parse_users(parts: &[String]) -> Result<(Vec<String>, Option<Vec<u32>>), MixError> {
    let mut users = Vec::new();
    let mut weights = Vec::new();
    for part in parts.iter().flat_map(|p| p.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once(':') {
            Some((user, w)) => {
                let w = weight(w).filter(|_| !user.trim().is_empty()).ok_or_else(|| MixError::User(part.into()))?;
                users.push(user.trim().to_string());
                weights.push(w);
            }
            None => users.push(part.to_string()),
        }
    }
    match weights.len() {
        0 => Ok((users, None)),
        n if n == users.len() => Ok((users, Some(weights))),
        _ => Err(MixError::Partial("user", "--users alice:70,bob:30")),
    }
}

/// `sku-1:2@60` → ((`sku-1`, 2), Some(60)); without `@` the weight is `None`.
pub fn parse_weighted_item(s: &str) -> Result<((String, i64), Option<u32>), MixError> {
    let bad = |why: &str| MixError::Item(s.into(), why.into());
    let (item, w) = match s.rsplit_once('@') {
        Some((item, w)) => {
            (item, Some(weight(w).ok_or_else(|| bad("the weight after `@` must be a whole number above 0"))?))
        }
        None => (s, None),
    };
    let (sku, quantity) = super::gateway::parse_item(item.trim()).map_err(|why| {
        // parse_item names the input itself; here the whole argument is named once.
        bad(why.split_once(": ").map_or(why.as_str(), |(_, why)| why))
    })?;
    // Refused here, as `order place` refuses it, rather than by every order the gateway answers.
    let requested = crate::services::order::RequestedItem { product_id: sku, quantity };
    requested.check_quantity().map_err(|_| bad("the quantity after `:` must be 1 to 1000"))?;
    Ok(((requested.product_id, requested.quantity), w))
}

/// Order lines as (product id, quantity).
pub type Items = Vec<(String, i64)>;

/// Weighted items as (items, weights): `None` when no item has a weight (every order then
/// holds every item), an error when only some have one.
pub fn split_items(items: Vec<((String, i64), Option<u32>)>) -> Result<(Items, Option<Vec<u32>>), MixError> {
    let weighted = items.iter().filter(|(_, w)| w.is_some()).count();
    let (items, weights): (Vec<_>, Vec<_>) = items.into_iter().unzip();
    match weighted {
        0 => Ok((items, None)),
        n if n == items.len() => Ok((items, Some(weights.into_iter().flatten().collect()))),
        _ => Err(MixError::Partial("--item", "--item sku-1:1@60 --item sku-2:2@40")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn weighted_cycles_hold_the_exact_proportions_interleaved() {
        let c = Cycle::weighted(&[70, 20, 10]).unwrap();
        let picks: Vec<usize> = (0..10).map(|n| c.pick(n)).collect();
        assert_eq!(picks.iter().filter(|p| **p == 0).count(), 7);
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 2);
        assert_eq!(picks.iter().filter(|p| **p == 2).count(), 1);
        // Interleaved, not 7 alices then 2 bobs.
        assert_ne!(&picks[..3], &[0, 0, 0]);
        assert_eq!(Cycle::round_robin(2).pick(3), 1);
        assert!(matches!(Cycle::weighted(&[99_999, 99_998]), Err(MixError::TooFine(_))));
    }

    #[test]
    fn users_parse_with_or_without_weights() {
        assert_eq!(parse_users(&strings(&["alice,bob"])).unwrap(), (strings(&["alice", "bob"]), None));
        let (users, weights) = parse_users(&strings(&["alice:70, bob:20", "dave:10"])).unwrap();
        assert_eq!((users, weights), (strings(&["alice", "bob", "dave"]), Some(vec![70, 20, 10])));
        for bad in ["alice:-5", "alice:0", "alice:x", ":3"] {
            assert_eq!(parse_users(&strings(&[bad])), Err(MixError::User(bad.into())), "{bad}");
        }
        assert_eq!(parse_users(&strings(&["alice:3,bob"])), Err(MixError::Partial("user", "--users alice:70,bob:30")));
    }

    #[test]
    fn items_parse_with_quantity_and_weight() {
        assert_eq!(parse_weighted_item("sku-1:2@60").unwrap(), (("sku-1".into(), 2), Some(60)));
        assert_eq!(parse_weighted_item("sku-1").unwrap(), (("sku-1".into(), 1), None));
        for (bad, why) in [
            ("sku-1@-3", "weight"),
            ("sku-1@", "weight"),
            ("sku-1:x@4", "quantity"),
            ("sku-1:abc", "quantity"),
            ("sku-1:0", "quantity after `:` must be 1 to 1000"),
            ("sku-1:-1@2", "quantity after `:` must be 1 to 1000"),
            ("sku-1:1001", "quantity after `:` must be 1 to 1000"),
            ("@4", "product id"),
        ] {
            let e = parse_weighted_item(bad).unwrap_err();
            assert!(matches!(&e, MixError::Item(s, _) if s == bad), "{bad}: {e}");
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        let mixed = vec![(("a".into(), 1), Some(1)), (("b".into(), 1), None)];
        assert_eq!(split_items(mixed), Err(MixError::Partial("--item", "--item sku-1:1@60 --item sku-2:2@40")));
    }
}
