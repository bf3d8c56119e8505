//! The endpoint records of the networks present on this host, as last read from etcd, and the
//! stream of their changes for whoever acts on them (the FDB/neighbour sync, DNS, the stale check).
//!
//! Only networks with a bridge here are followed ([`crate::watch`] starts and stops one
//! list-then-watch per network as bridges come and go): the records of every other network cost
//! this host neither memory nor work, however many there are. Each followed network is listed,
//! then watched; the complete set goes out (a [`Change::Reset`]) once every network known at
//! start-up has been listed, and again after every later listing of one (a network new here, a
//! watch lost or compacted) or when a network leaves.
//!
//! Any number of subscribers read. Each gets its own unbounded channel rather than a shared ring
//! buffer: records are small and rare, and a subscriber that never misses a change needs no
//! "lagged, start over" path.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use model::records::Endpoint;
use model::Vni;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Endpoint records by etcd key (`<prefix>/endpoints/<net>/<container id>/<ifname>`).
pub type Endpoints = BTreeMap<String, Endpoint>;

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The complete set of the followed networks' records, and the VNIs of those networks (a
    /// network without records is followed all the same: its device must have no entries):
    /// subscribers reconcile everything against it. Always the first message a subscriber gets.
    Reset(Arc<Endpoints>, Arc<BTreeSet<Vni>>),
    /// A record was created or replaced. `previous` is the record it replaced, if any.
    /// Records are shared (Arc): every subscriber gets the same change.
    Put {
        key: String,
        endpoint: Arc<Endpoint>,
        previous: Option<Arc<Endpoint>>,
    },
    /// A record was removed (or became unreadable); `previous` is what it held.
    Delete {
        key: String,
        previous: Arc<Endpoint>,
    },
}

/// A network this host follows.
#[derive(Debug)]
struct Followed {
    vni: Vni,
    /// Where its records are: its keys start with this.
    prefix: String,
    /// Told apart from an earlier following of the same network, whose feeder may still be
    /// finishing a message after it was stopped.
    generation: u64,
    listed: bool,
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: Endpoints,
    networks: BTreeMap<String, Followed>,
    /// The host's networks have been looked at once: until then, "no networks" is not known.
    scanned: bool,
    /// The complete set has gone out once. Before it, "no endpoints" would be a lie that makes
    /// subscribers tear down entries that are still valid.
    synced: bool,
    generations: u64,
    subscribers: Vec<UnboundedSender<Change>>,
}

impl Inner {
    fn reset(&self) -> Change {
        let vnis = self.networks.values().filter(|f| f.listed).map(|f| f.vni);
        Change::Reset(Arc::new(self.endpoints.clone()), Arc::new(vnis.collect()))
    }

    /// The network's following, if `generation` is the current one and it has been listed.
    fn current(&self, network: &str, generation: u64) -> Option<&Followed> {
        self.networks
            .get(network)
            .filter(|f| f.generation == generation)
    }

    /// The complete set, once it is complete: at the first time, every network known listed.
    fn publish_reset(&mut self) {
        if !self.synced {
            if !self.scanned || self.networks.values().any(|f| !f.listed) {
                return;
            }
            self.synced = true;
            crate::metrics::get().set_listed();
        }
        let reset = self.reset();
        publish(self, reset);
    }
}

/// Cheap to clone; all clones share one cache.
#[derive(Debug, Clone, Default)]
pub struct EndpointCache {
    inner: Arc<Mutex<Inner>>,
}

impl EndpointCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still consistent enough.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of every change from now on, starting with a [`Change::Reset`] of the current
    /// set if there is one yet. Subscribing and that first snapshot happen under one lock, so no
    /// change can fall between them.
    pub fn subscribe(&self) -> UnboundedReceiver<Change> {
        let (tx, rx) = unbounded_channel();
        let mut inner = self.lock();
        if inner.synced {
            let _ = tx.send(inner.reset());
        }
        inner.subscribers.push(tx);
        rx
    }

    /// The current set; None before it is complete.
    pub fn snapshot(&self) -> Option<Endpoints> {
        let inner = self.lock();
        inner.synced.then(|| inner.endpoints.clone())
    }

    /// The networks followed, with their VNIs.
    pub fn followed(&self) -> BTreeMap<String, Vni> {
        let inner = self.lock();
        (inner.networks.iter())
            .map(|(name, f)| (name.clone(), f.vni))
            .collect()
    }

    /// Starts following `network` (its records under `prefix`), or follows it anew; the
    /// generation its feeder must give with every message.
    pub fn follow(&self, network: &str, vni: Vni, prefix: String) -> u64 {
        let mut inner = self.lock();
        inner.generations += 1;
        let generation = inner.generations;
        let old = inner.networks.insert(
            network.to_string(),
            Followed {
                vni,
                prefix: prefix.clone(),
                generation,
                listed: false,
            },
        );
        // Followed anew (its VNI changed): what it had is no longer known until it is listed.
        if old.is_some_and(|f| f.listed) {
            inner.endpoints.retain(|k, _| !k.starts_with(&prefix));
            inner.publish_reset();
        }
        generation
    }

    /// Stops following `network` (its bridge is gone): its records are forgotten.
    pub fn unfollow(&self, network: &str) {
        let mut inner = self.lock();
        let Some(old) = inner.networks.remove(network) else {
            return;
        };
        inner.endpoints.retain(|k, _| !k.starts_with(&old.prefix));
        inner.publish_reset();
    }

    /// The host's networks have been looked at (and followed): with none, the set is complete.
    pub fn scanned(&self) {
        let mut inner = self.lock();
        if !inner.scanned {
            inner.scanned = true;
            inner.publish_reset();
        }
    }

    /// A fresh listing of one network's records replaces what was known of it.
    pub fn listed(&self, network: &str, generation: u64, endpoints: Endpoints) {
        let mut inner = self.lock();
        let Some(followed) = inner.current(network, generation) else {
            return;
        };
        let prefix = followed.prefix.clone();
        inner.endpoints.retain(|k, _| !k.starts_with(&prefix));
        inner.endpoints.extend(endpoints);
        if let Some(f) = inner.networks.get_mut(network) {
            f.listed = true;
        }
        inner.publish_reset();
    }

    /// A record was written. `prev_kv` is the record etcd reports it replaced; when etcd has
    /// none to give (compacted), the cached one stands in.
    pub fn put(
        &self,
        network: &str,
        generation: u64,
        key: String,
        endpoint: Endpoint,
        prev_kv: Option<Endpoint>,
    ) {
        let mut inner = self.lock();
        if !inner
            .current(network, generation)
            .is_some_and(|f| f.listed && key.starts_with(&f.prefix))
        {
            return;
        }
        let cached = inner.endpoints.insert(key.clone(), endpoint.clone());
        let previous = prev_kv.or(cached);
        if !inner.synced || previous.as_ref() == Some(&endpoint) {
            // Rewritten unchanged (a retried ADD): nothing for anyone to do. Before the complete
            // set went out, it carries this record.
            return;
        }
        publish(
            &mut inner,
            Change::Put {
                key,
                endpoint: Arc::new(endpoint),
                previous: previous.map(Arc::new),
            },
        );
    }

    /// A record was removed; `prev_kv` as for [`EndpointCache::put`].
    pub fn delete(&self, network: &str, generation: u64, key: String, prev_kv: Option<Endpoint>) {
        let mut inner = self.lock();
        if !inner
            .current(network, generation)
            .is_some_and(|f| f.listed && key.starts_with(&f.prefix))
        {
            return;
        }
        let cached = inner.endpoints.remove(&key);
        if !inner.synced {
            return;
        }
        if let Some(previous) = prev_kv.or(cached) {
            let previous = Arc::new(previous);
            publish(&mut inner, Change::Delete { key, previous });
        }
    }
}

/// Sends to every subscriber, forgetting those that went away.
fn publish(inner: &mut Inner, change: Change) {
    crate::metrics::get().set_endpoints(inner.endpoints.len());
    inner
        .subscribers
        .retain(|tx| tx.send(change.clone()).is_ok());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn endpoint(node: &str, vni: u32, mac: &str, ips: &[&str]) -> Endpoint {
        Endpoint {
            network: format!("net{vni}"),
            container_id: format!("c-{mac}"),
            ifname: "eth0".into(),
            name: None,
            aliases: Vec::new(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            mac: mac.parse().unwrap(),
            node: node.into(),
            vtep: "192.0.2.10".parse().unwrap(),
            vni: model::Vni::new(vni).unwrap(),
        }
    }

    fn vnis(v: &[u32]) -> Arc<BTreeSet<Vni>> {
        Arc::new(v.iter().map(|n| Vni::new(*n).unwrap()).collect())
    }

    /// A cache following net1 (VNI 1, keys under `p/net1/`), listed empty; and its generation.
    fn following() -> (EndpointCache, u64) {
        let cache = EndpointCache::new();
        let generation = cache.follow("net1", Vni::new(1).unwrap(), "p/net1/".into());
        cache.scanned();
        cache.listed("net1", generation, Endpoints::new());
        (cache, generation)
    }

    #[test]
    fn nothing_before_every_known_network_is_listed_then_reset_first() {
        let cache = EndpointCache::new();
        let mut early = cache.subscribe();
        let g1 = cache.follow("net1", Vni::new(1).unwrap(), "p/net1/".into());
        let g2 = cache.follow("net2", Vni::new(2).unwrap(), "p/net2/".into());
        let a = endpoint("n", 1, "02:00:00:00:00:01", &[]);
        // A put before its network's listing is not known yet: the listing will carry it.
        cache.put("net1", g1, "p/net1/a".into(), a.clone(), None);
        cache.scanned();
        let mut set = Endpoints::new();
        set.insert("p/net1/a".into(), a.clone());
        cache.listed("net1", g1, set.clone());
        assert!(early.try_recv().is_err(), "net2 is not listed yet");
        assert_eq!(cache.snapshot(), None);
        cache.listed("net2", g2, Endpoints::new());
        assert_eq!(
            early.try_recv().unwrap(),
            Change::Reset(Arc::new(set.clone()), vnis(&[1, 2]))
        );
        assert!(early.try_recv().is_err());

        let mut late = cache.subscribe();
        assert_eq!(
            late.try_recv().unwrap(),
            Change::Reset(Arc::new(set), vnis(&[1, 2]))
        );
        assert!(late.try_recv().is_err());
    }

    #[test]
    fn a_host_without_networks_is_complete_at_its_first_scan() {
        let cache = EndpointCache::new();
        let mut rx = cache.subscribe();
        cache.scanned();
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Reset(Arc::new(Endpoints::new()), vnis(&[]))
        );
    }

    #[test]
    fn put_and_delete_carry_the_previous_record() {
        let (cache, g) = following();
        let mut rx = cache.subscribe();
        let _ = rx.try_recv();
        let a = endpoint("n", 1, "02:00:00:00:00:01", &["10.0.0.2/24"]);
        let b = endpoint("n", 1, "02:00:00:00:00:02", &["10.0.0.2/24"]);
        let k = || "p/net1/k".to_string();
        cache.put("net1", g, k(), a.clone(), None);
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Put {
                key: k(),
                endpoint: Arc::new(a.clone()),
                previous: None
            }
        );
        // Same record again: no change published.
        cache.put("net1", g, k(), a.clone(), Some(a.clone()));
        assert!(rx.try_recv().is_err());
        // Without prev_kv, the cached record is the previous one.
        cache.put("net1", g, k(), b.clone(), None);
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Put {
                key: k(),
                endpoint: Arc::new(b.clone()),
                previous: Some(Arc::new(a))
            }
        );
        cache.delete("net1", g, k(), None);
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Delete {
                key: k(),
                previous: Arc::new(b)
            }
        );
        // Deleting what nobody knows is silent.
        cache.delete("net1", g, k(), None);
        assert!(rx.try_recv().is_err());
        assert_eq!(cache.snapshot(), Some(Endpoints::new()));
    }

    #[test]
    fn networks_come_and_go_and_an_old_following_is_not_heard() {
        let (cache, g1) = following();
        let mut rx = cache.subscribe();
        let _ = rx.try_recv();
        let a = endpoint("n", 1, "02:00:00:00:00:01", &[]);
        let b = endpoint("n", 3, "02:00:00:00:00:03", &[]);
        cache.put("net1", g1, "p/net1/a".into(), a.clone(), None);
        let _ = rx.try_recv();
        // A network new here: nothing until its listing, then the complete set with it.
        let g3 = cache.follow("net3", Vni::new(3).unwrap(), "p/net3/".into());
        assert!(rx.try_recv().is_err());
        let mut set3 = Endpoints::new();
        set3.insert("p/net3/b".into(), b.clone());
        cache.listed("net3", g3, set3);
        let mut both = Endpoints::new();
        both.insert("p/net1/a".into(), a.clone());
        both.insert("p/net3/b".into(), b.clone());
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Reset(Arc::new(both), vnis(&[1, 3]))
        );
        // Gone from the host: forgotten, and a stopped feeder's late messages are not heard.
        cache.unfollow("net3");
        let mut only1 = Endpoints::new();
        only1.insert("p/net1/a".into(), a.clone());
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Reset(Arc::new(only1.clone()), vnis(&[1]))
        );
        cache.put("net3", g3, "p/net3/c".into(), b.clone(), None);
        let g3b = cache.follow("net3", Vni::new(3).unwrap(), "p/net3/".into());
        cache.put("net3", g3, "p/net3/c".into(), b.clone(), None);
        cache.listed("net3", g3, Endpoints::new());
        assert!(rx.try_recv().is_err());
        assert_eq!(cache.snapshot(), Some(only1));
        // A key outside the network's prefix is not the network's.
        cache.listed("net3", g3b, Endpoints::new());
        let _ = rx.try_recv();
        cache.put("net3", g3b, "p/net1/x".into(), b, None);
        assert!(rx.try_recv().is_err());
        assert_eq!(
            cache.followed().keys().collect::<Vec<_>>(),
            ["net1", "net3"]
        );
    }

    #[test]
    fn dropped_subscribers_are_forgotten() {
        let (cache, g) = following();
        drop(cache.subscribe());
        cache.put(
            "net1",
            g,
            "p/net1/k".into(),
            endpoint("n", 1, "02:00:00:00:00:01", &[]),
            None,
        );
        assert!(cache.lock().subscribers.is_empty());
    }
}
