//! Feeds the [`EndpointCache`] from etcd with the records of the networks present on this host,
//! and of no other.
//!
//! A network is present while its bridge is (`ovbr<vni>` with the alias `cni-overlay:<network>`,
//! which vxlan-overlay makes before it writes the first local endpoint record and removes after
//! the last): that is when this host has FDB and neighbour entries to keep and names to serve
//! for it. The bridges are read from the kernel at start, again on every link notification about
//! a bridge of ours (RTMGRP_LINK), and every [`RESCAN_EVERY`] as a backstop (a notification can
//! be lost when the socket's buffer overflows).
//!
//! Each present network is followed by a list-then-watch of its own key range
//! (`endpoints/<network>/`, [`store::watch`]): a consistent listing, then each change. When its
//! watch is lost (a partition, a compaction, a restarted member) the network is listed again, so
//! nothing that happened in between is missed. The watches share one etcd connection.

use std::collections::BTreeMap;
use std::time::Duration;

use model::names;
use model::records::{self, Endpoint};
use model::Vni;
use netops::{Link, LinkEvents, Netlink};
use store::etcd_client::{Event, EventType, KeyValue};
use store::{Follower, Store};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::endpoints::{EndpointCache, Endpoints};
use crate::error::Error;
use crate::retry::Retry;

/// The backstop of the link notifications.
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// After a failed read of the host's links.
const RESCAN_RETRY: Duration = Duration::from_secs(1);

/// The network and VNI of one of our bridges; None for every other link.
pub fn bridge_network(link: &Link) -> Option<(&str, Vni)> {
    if link.kind != "bridge" {
        return None;
    }
    let vni = names::vni_of_bridge(&link.name)?;
    Some((names::network_of_bridge_alias(link.alias.as_deref()?)?, vni))
}

/// The networks present on this host, by the bridges among `links`.
pub fn present_networks(links: &[Link]) -> BTreeMap<String, Vni> {
    links
        .iter()
        .filter_map(bridge_network)
        .map(|(network, vni)| (network.to_string(), vni))
        .collect()
}

/// Runs until aborted; etcd being unreachable is retried, never fatal.
pub async fn run(mut store: Store, cache: EndpointCache) -> Result<(), Error> {
    // Subscribed before the first look at the links: no bridge can come between the two unseen.
    let mut events = LinkEvents::current().await?;
    let nl = Netlink::current().await?;
    // Connected first: until etcd has answered, nothing is known (even a host without networks
    // must not say it has listed). The networks' watches then share this connection (a failing
    // one reconnects on its own).
    let mut retry = Retry::new("endpoint watch");
    loop {
        // A read, not just a connection: etcd-client connects lazily.
        let prefix = store.keys().prefix().to_string();
        match store.get(prefix, None).await {
            Ok(_) => break retry.succeeded(),
            Err(e) => {
                store.reset();
                retry.failed(e).await;
            }
        }
    }
    let mut feeders: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
    let mut next_scan = Instant::now();
    loop {
        tokio::select! {
            _ = sleep_until(next_scan) => {}
            event = events.next() => match event {
                // A name we cannot tell is looked at as well.
                Some(name) if name.is_empty() || name.starts_with(names::BRIDGE_PREFIX) => {}
                Some(_) => continue,
                None => return Err(Error::Task {
                    task: "endpoint watch",
                    reason: "the link notifications ended".into(),
                }),
            },
        }
        let links = match nl.links_of_kind("bridge").await {
            Ok(links) => links,
            Err(e) => {
                log::warn!("endpoint watch: reading the host's bridges: {e}");
                next_scan = Instant::now() + RESCAN_RETRY;
                continue;
            }
        };
        let present = present_networks(&links);
        let followed = cache.followed();
        for (network, vni) in &followed {
            if present.get(network) != Some(vni) {
                if let Some(feeder) = feeders.remove(network) {
                    feeder.abort();
                }
                cache.unfollow(network);
                log::info!("network {network} (VNI {vni}) is no longer on this host: not followed");
            }
        }
        for (network, &vni) in &present {
            if followed.get(network) == Some(&vni) {
                continue;
            }
            let prefix = store.keys().endpoints(network);
            let generation = cache.follow(network, vni, prefix.clone());
            log::info!("network {network} (VNI {vni}) is on this host: following {prefix}");
            let feeder = Feeder {
                cache: cache.clone(),
                network: network.clone(),
                generation,
                retry: Retry::new("endpoint watch"),
            };
            let task = tokio::spawn(follow(store.clone(), prefix, feeder));
            if let Some(old) = feeders.insert(network.clone(), task) {
                old.abort();
            }
        }
        cache.scanned();
        crate::metrics::get().set_networks(present.len());
        next_scan = Instant::now() + RESCAN_EVERY;
    }
}

/// Follows one network's records until aborted.
async fn follow(mut store: Store, prefix: String, mut feeder: Feeder) {
    loop {
        let lost = store.list_and_watch(&prefix, &mut feeder).await;
        crate::metrics::get().watch_restarted("endpoint watch");
        store.reset();
        feeder.retry.failed(lost).await;
    }
}

struct Feeder {
    cache: EndpointCache,
    network: String,
    generation: u64,
    retry: Retry,
}

impl Follower for Feeder {
    fn listed(&mut self, kvs: Vec<KeyValue>, revision: i64) {
        let endpoints: Endpoints = kvs
            .iter()
            .filter_map(|kv| Some((key_of(kv), decode(kv)?)))
            .collect();
        log::debug!(
            "listed {} endpoint records of {} at revision {revision}",
            endpoints.len(),
            self.network
        );
        self.cache.listed(&self.network, self.generation, endpoints);
    }

    fn changed(&mut self, events: &[Event]) {
        let (network, generation) = (self.network.as_str(), self.generation);
        for event in events {
            let Some(kv) = event.kv() else {
                continue;
            };
            let previous = event.prev_kv().and_then(decode);
            match event.event_type() {
                EventType::Put => match decode(kv) {
                    Some(endpoint) => {
                        self.cache
                            .put(network, generation, key_of(kv), endpoint, previous)
                    }
                    // Unreadable now: whatever it used to describe is no longer to be trusted.
                    None => self.cache.delete(network, generation, key_of(kv), previous),
                },
                EventType::Delete => self.cache.delete(network, generation, key_of(kv), previous),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, kind: &str, alias: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.into(),
            mac: None,
            mtu: 1500,
            master: None,
            up: true,
            alias: alias.map(Into::into),
            peer_index: None,
            vxlan_id: None,
        }
    }

    #[test]
    fn networks_present_are_those_of_our_bridges_with_their_alias() {
        let vni = |n| Vni::new(n).unwrap();
        let links = [
            link(1, "ovbr42", "bridge", Some("cni-overlay:blue")),
            link(2, "ovbr43", "bridge", Some("cni-overlay:red")),
            // Not ours: no alias yet (set just after creation), a foreign alias, the wrong
            // kind, a name that is not exactly ovbr<vni>.
            link(3, "ovbr44", "bridge", None),
            link(4, "ovbr45", "bridge", Some("something else")),
            link(5, "ovbr46", "dummy", Some("cni-overlay:green")),
            link(6, "ovbr046", "bridge", Some("cni-overlay:green")),
            link(7, "ovx42", "vxlan", None),
        ];
        let present = present_networks(&links);
        assert_eq!(
            present.into_iter().collect::<Vec<_>>(),
            [("blue".to_string(), vni(42)), ("red".to_string(), vni(43))]
        );
        assert_eq!(bridge_network(&links[0]), Some(("blue", vni(42))));
        assert_eq!(bridge_network(&links[6]), None);
    }
}
