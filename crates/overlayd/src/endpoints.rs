//! The endpoint records of every network, as last read from etcd, and the stream of their
//! changes for whoever acts on them (the FDB/neighbour sync now; per-network DNS later).
//!
//! One feeder ([`crate::watch`]) writes; any number of subscribers read. Each subscriber gets its
//! own unbounded channel rather than a shared ring buffer: records are small and rare, and a
//! subscriber that never misses a change needs no "lagged, start over" path.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use model::records::Endpoint;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Endpoint records by etcd key (`<prefix>/endpoints/<net>/<container id>/<ifname>`).
pub type Endpoints = BTreeMap<String, Endpoint>;

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The complete set, after a fresh listing (start-up, or the watch was lost or compacted):
    /// subscribers reconcile everything against it. Always the first message a subscriber gets.
    Reset(Arc<Endpoints>),
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

#[derive(Debug, Default)]
struct Inner {
    /// None until the first listing: before it, "no endpoints" would be a lie that makes
    /// subscribers tear down entries that are still valid.
    endpoints: Option<Endpoints>,
    subscribers: Vec<UnboundedSender<Change>>,
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
        if let Some(endpoints) = &inner.endpoints {
            let _ = tx.send(Change::Reset(Arc::new(endpoints.clone())));
        }
        inner.subscribers.push(tx);
        rx
    }

    /// The current set; None before the first listing.
    pub fn snapshot(&self) -> Option<Endpoints> {
        self.lock().endpoints.clone()
    }

    /// Replaces everything after a fresh listing.
    pub fn reset(&self, endpoints: Endpoints) {
        let mut inner = self.lock();
        let shared = Arc::new(endpoints.clone());
        inner.endpoints = Some(endpoints);
        publish(&mut inner, Change::Reset(shared));
    }

    /// A record was written. `prev_kv` is the record etcd reports it replaced; when etcd has
    /// none to give (compacted), the cached one stands in.
    pub fn put(&self, key: String, endpoint: Endpoint, prev_kv: Option<Endpoint>) {
        let mut inner = self.lock();
        let Some(endpoints) = inner.endpoints.as_mut() else {
            return;
        };
        let cached = endpoints.insert(key.clone(), endpoint.clone());
        let previous = prev_kv.or(cached);
        if previous.as_ref() == Some(&endpoint) {
            // Rewritten unchanged (a retried ADD): nothing for anyone to do.
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
    pub fn delete(&self, key: String, prev_kv: Option<Endpoint>) {
        let mut inner = self.lock();
        let Some(endpoints) = inner.endpoints.as_mut() else {
            return;
        };
        let cached = endpoints.remove(&key);
        if let Some(previous) = prev_kv.or(cached) {
            let previous = Arc::new(previous);
            publish(&mut inner, Change::Delete { key, previous });
        }
    }
}

/// Sends to every subscriber, forgetting those that went away.
fn publish(inner: &mut Inner, change: Change) {
    if let Some(endpoints) = &inner.endpoints {
        crate::metrics::get().set_endpoints(endpoints.len());
    }
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

    #[test]
    fn nothing_before_the_first_listing_then_reset_first() {
        let cache = EndpointCache::new();
        let mut early = cache.subscribe();
        cache.put(
            "k1".into(),
            endpoint("n", 1, "02:00:00:00:00:01", &[]),
            None,
        );
        assert!(early.try_recv().is_err(), "no change before a listing");
        assert_eq!(cache.snapshot(), None);

        let mut set = Endpoints::new();
        set.insert("k1".into(), endpoint("n", 1, "02:00:00:00:00:01", &[]));
        cache.reset(set.clone());
        assert_eq!(
            early.try_recv().unwrap(),
            Change::Reset(Arc::new(set.clone()))
        );

        let mut late = cache.subscribe();
        assert_eq!(late.try_recv().unwrap(), Change::Reset(Arc::new(set)));
        assert!(late.try_recv().is_err());
    }

    #[test]
    fn put_and_delete_carry_the_previous_record() {
        let cache = EndpointCache::new();
        cache.reset(Endpoints::new());
        let mut rx = cache.subscribe();
        let _ = rx.try_recv();
        let a = endpoint("n", 1, "02:00:00:00:00:01", &["10.0.0.2/24"]);
        let b = endpoint("n", 1, "02:00:00:00:00:02", &["10.0.0.2/24"]);
        cache.put("k".into(), a.clone(), None);
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Put {
                key: "k".into(),
                endpoint: Arc::new(a.clone()),
                previous: None
            }
        );
        // Same record again: no change published.
        cache.put("k".into(), a.clone(), Some(a.clone()));
        assert!(rx.try_recv().is_err());
        // Without prev_kv, the cached record is the previous one.
        cache.put("k".into(), b.clone(), None);
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Put {
                key: "k".into(),
                endpoint: Arc::new(b.clone()),
                previous: Some(Arc::new(a))
            }
        );
        cache.delete("k".into(), None);
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::Delete {
                key: "k".into(),
                previous: Arc::new(b)
            }
        );
        // Deleting what nobody knows is silent.
        cache.delete("k".into(), None);
        assert!(rx.try_recv().is_err());
        assert_eq!(cache.snapshot(), Some(Endpoints::new()));
    }

    #[test]
    fn dropped_subscribers_are_forgotten() {
        let cache = EndpointCache::new();
        cache.reset(Endpoints::new());
        drop(cache.subscribe());
        cache.put("k".into(), endpoint("n", 1, "02:00:00:00:00:01", &[]), None);
        assert!(cache.lock().subscribers.is_empty());
    }
}
