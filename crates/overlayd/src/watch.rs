//! Feeds the [`EndpointCache`] from etcd through the store's list-then-watch
//! ([`store::watch`]): a consistent listing of every endpoint record, then each change. When the
//! watch is lost the store lists again, so nothing that happened in between is missed.

use model::records::{self, Endpoint};
use store::etcd_client::{Event, EventType, KeyValue};
use store::{Follower, Store};

use crate::endpoints::{EndpointCache, Endpoints};
use crate::error::Error;
use crate::retry::Retry;

/// Runs until aborted; etcd being unreachable is retried, never fatal.
pub async fn run(mut store: Store, cache: EndpointCache) -> Result<(), Error> {
    let prefix = store.keys().all_endpoints();
    let mut feeder = Feeder {
        cache,
        retry: Retry::new("endpoint watch"),
    };
    loop {
        let lost = store.list_and_watch(&prefix, &mut feeder).await;
        crate::metrics::get().watch_restarted("endpoint watch");
        store.reset();
        feeder.retry.failed(lost).await;
    }
}

struct Feeder {
    cache: EndpointCache,
    retry: Retry,
}

impl Follower for Feeder {
    fn listed(&mut self, kvs: Vec<KeyValue>, revision: i64) {
        let endpoints: Endpoints = kvs
            .iter()
            .filter_map(|kv| Some((key_of(kv), decode(kv)?)))
            .collect();
        log::debug!(
            "listed {} endpoint records at revision {revision}",
            endpoints.len()
        );
        self.cache.reset(endpoints);
        crate::metrics::get().set_listed();
    }

    fn changed(&mut self, events: &[Event]) {
        for event in events {
            let Some(kv) = event.kv() else {
                continue;
            };
            let previous = event.prev_kv().and_then(decode);
            match event.event_type() {
                EventType::Put => match decode(kv) {
                    Some(endpoint) => self.cache.put(key_of(kv), endpoint, previous),
                    // Unreadable now: whatever it used to describe is no longer to be trusted.
                    None => self.cache.delete(key_of(kv), previous),
                },
                EventType::Delete => self.cache.delete(key_of(kv), previous),
            }
        }
    }

    fn watching(&mut self) {
        self.retry.succeeded();
    }
}

fn key_of(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

/// A record, or None (logged) when it is not a readable endpoint.
fn decode(kv: &KeyValue) -> Option<Endpoint> {
    match records::decode::<Endpoint>(kv.key(), kv.value()) {
        Ok(endpoint) => Some(endpoint),
        Err(e) => {
            log::warn!("ignoring {e}");
            None
        }
    }
}
