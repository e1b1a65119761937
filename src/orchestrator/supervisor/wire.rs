//! The wire half of chaos: the proxies that wire faults (`shop chaos net`, and partitions that
//! cut the wire) need, reconciled from the list of active faults after every change, and the
//! detours the registry hands to callers.
//!
//! One proxy fronts one target instance for one kind of caller (`--from`, or every caller);
//! the toxics of every active fault with that key stack on it. A caller with a proxy of its
//! own passes only that one, so it carries the toxics meant for every caller as well: a
//! narrower fault never hides a broader one. A key no fault needs any more
//! loses its detour first and its proxy [`DRAIN`] later, so callers switch back on their next
//! discovery refresh and calls already in flight finish. The proxies live in the supervisor's
//! process: `chaos clear`, `shop down` or the supervisor's death leaves none running.

use std::collections::HashMap;
use std::time::Duration;

use super::chaos::FaultKind;
use super::Supervisor;
use crate::orchestrator::proxy::{Proxy, Toxic, ToxicSpec};
use crate::plumbing::admin::SECRET_HEADER;
use crate::plumbing::discovery::Route;

/// How long a retired proxy still relays clean bytes: several discovery refreshes (1 s by
/// default) plus a client timeout (2 s by default).
pub const DRAIN: Duration = Duration::from_secs(5);

/// Which proxy: the target instance, and the caller it is for (`None`: every caller).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub instance: usize,
    pub from: Option<String>,
}

/// The running proxies; a tokio mutex because reconciling starts proxies (awaits) under it.
#[derive(Default)]
pub struct Wire {
    proxies: tokio::sync::Mutex<HashMap<Key, Proxy>>,
}

impl Supervisor {
    /// The proxy each key needs now, with its toxics and seed, from the active faults.
    fn wanted(&self) -> HashMap<Key, (Vec<ToxicSpec>, Option<u64>)> {
        let inner = self.lock();
        let mut want: HashMap<Key, (Vec<ToxicSpec>, Option<u64>)> = HashMap::new();
        for f in &inner.chaos {
            match &f.kind {
                FaultKind::Net { spec, from } => {
                    let from = from.as_deref().map(|s| self.registry_name(s));
                    for idx in &f.instances {
                        let e = want.entry(Key { instance: *idx, from: from.clone() }).or_default();
                        e.0.push(spec.clone());
                        e.1 = e.1.or(f.seed);
                    }
                }
                FaultKind::Partition { peer_service, refuse: false } => {
                    let hole = ToxicSpec::new(Toxic::Blackhole { close_after_ms: None });
                    let mine = self.registry_name(&f.target);
                    for idx in &f.instances {
                        let e = want.entry(Key { instance: *idx, from: Some(peer_service.clone()) }).or_default();
                        e.0.push(hole.clone());
                    }
                    for idx in &f.peer_instances {
                        let e = want.entry(Key { instance: *idx, from: Some(mine.clone()) }).or_default();
                        e.0.push(hole.clone());
                    }
                }
                _ => {}
            }
        }
        let everyone: HashMap<usize, (Vec<ToxicSpec>, Option<u64>)> =
            want.iter().filter(|(k, _)| k.from.is_none()).map(|(k, v)| (k.instance, v.clone())).collect();
        for (key, (toxics, seed)) in want.iter_mut().filter(|(k, _)| k.from.is_some()) {
            if let Some((all, all_seed)) = everyone.get(&key.instance) {
                toxics.extend(all.iter().cloned());
                *seed = seed.or(*all_seed);
            }
        }
        want
    }

    /// The proxies a wire fault acts through: its own, and those of single callers of the same
    /// instances, which carry it too.
    pub(super) fn keys_of(&self, instances: &[usize], from: Option<&str>) -> Vec<Key> {
        let from = from.map(|s| self.registry_name(s));
        let mut keys: Vec<Key> = instances.iter().map(|i| Key { instance: *i, from: from.clone() }).collect();
        if from.is_none() {
            for (key, _) in self.wanted() {
                if key.from.is_some() && instances.contains(&key.instance) {
                    keys.push(key);
                }
            }
        }
        keys
    }

    /// Brings the proxies and the registry's detours in line with the active faults; the
    /// proxies of `reseed`'s keys that run already start their random source again from its
    /// seed (a fault just applied with `--seed`).
    pub(super) async fn sync_wire(&self, reseed: Option<(&[Key], u64)>) -> Result<(), String> {
        let want = self.wanted();
        let addresses: Vec<(String, Option<std::net::SocketAddr>)> = {
            let inner = self.lock();
            inner.instances.iter().map(|i| (i.name.clone(), i.address)).collect()
        };
        let mut proxies = self.wire.proxies.lock().await;
        let gone: Vec<Key> = proxies.keys().filter(|k| !want.contains_key(k)).cloned().collect();
        let mut retired = Vec::new();
        for k in gone {
            if let Some(p) = proxies.remove(&k) {
                retired.push(p);
            }
        }
        let mut problem = None;
        for (key, (toxics, seed)) in want {
            let Some(upstream) = addresses[key.instance].1 else { continue };
            match proxies.get(&key) {
                Some(p) => {
                    p.set_upstream(upstream);
                    if p.toxics() != toxics {
                        p.set_toxics(toxics);
                    }
                    if let Some((_, seed)) = reseed.filter(|(keys, _)| keys.contains(&key)) {
                        p.reseed(seed);
                    }
                }
                None => match Proxy::start(upstream, toxics, seed).await {
                    Ok(p) => {
                        tracing::info!(child = %addresses[key.instance].0, from = ?key.from, proxy = %p.address(), "wire proxy started");
                        proxies.insert(key, p);
                    }
                    Err(e) => problem = Some(format!("cannot start a proxy: {e}")),
                },
            }
        }
        let routes: Vec<Route> = proxies
            .iter()
            .map(|(k, p)| Route {
                instance: addresses[k.instance].0.clone(),
                from: k.from.clone(),
                address: p.address().to_string(),
            })
            .collect();
        drop(proxies);
        self.put_routes(&routes).await;
        // Only once callers are told the real address again does the proxy start to go.
        for p in retired {
            p.retire(DRAIN);
        }
        problem.map_or(Ok(()), Err)
    }

    /// Gives the registry the whole set of detours; a registry that is down gets them again
    /// when it restarts (see `reapply_faults`).
    async fn put_routes(&self, routes: &[Route]) {
        let Some(registry) = self.lock().registry else { return };
        let url = format!("http://{registry}/v1/routes");
        let sent = self
            .http
            .put(url)
            .header(SECRET_HEADER, &self.secret)
            .json(routes)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = %r.status(), "the registry refused the wire-fault routes"),
            Err(e) => tracing::warn!(error = %e, "could not give the registry the wire-fault routes"),
        }
    }
}
