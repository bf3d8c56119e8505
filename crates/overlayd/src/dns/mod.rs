//! Per-network DNS: the containers of a network find each other by name, on every host.
//!
//! * [`records`]: a network's names as an immutable [`records::Zone`]; the zones of this host's
//!   networks and which networks each local container is on as one [`records::View`], swapped
//!   whole on change, so that a container on several networks is answered the names of all of
//!   them (and of no other).
//! * [`server`]: UDP and TCP port 53 on the network's gateway addresses (in its sandbox
//!   namespace, or on its bridge with hostAccess), answering from the zone.
//! * [`forward`]: everything else goes to the upstream resolvers.
//!
//! This module is one more subscriber of the [`crate::endpoints::EndpointCache`]: every record
//! change rebuilds its network's zone at once (the watch delivers it milliseconds after the ADD
//! on another host). A network is served on this host while it has a local endpoint, which is
//! also when vxlan-overlay keeps its sandbox; vxlan-overlay writes the record only once the
//! sandbox and its addresses exist.

pub mod forward;
pub mod records;
pub mod server;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use model::names::dns_domain;
use model::records::Endpoint;
use model::Vni;
use netops::Netlink;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, Instant};

use crate::endpoints::Change;
use crate::error::Error;
use forward::Forwarder;
use records::{View, ViewCell, Zone};
use server::{sandbox_path, Gateway, Place, Serving};

/// Binding failed (no sandbox or address yet, port taken): first retry after this, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often the sandboxes served are checked to still be the networks' sandboxes (a stat each),
/// and the servers to still run.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// One network's records, zone and server on this host.
struct Net {
    endpoints: BTreeMap<String, Arc<Endpoint>>,
    zone: Arc<Zone>,
    serving: Option<Serving>,
    /// When to try binding again, and the wait before the attempt after that.
    retry: Option<(Instant, Duration)>,
}

impl Net {
    fn new(name: &str) -> Net {
        Net {
            endpoints: BTreeMap::new(),
            zone: Arc::new(Zone::empty(name)),
            serving: None,
            retry: None,
        }
    }
}

struct Dns {
    node: String,
    host: Netlink,
    forwarder: Arc<Forwarder>,
    /// What every server answers from, swapped whole after each change.
    view: Arc<ViewCell>,
    nets: HashMap<String, Net>,
    /// The network each record key was filed under (a Delete is found by key alone).
    key_net: HashMap<String, String>,
}

/// Runs until the endpoint cache goes away. `upstreams` from --dns-upstream (empty: the host's
/// /etc/resolv.conf). Failing to serve one network is retried, never fatal.
pub async fn run(
    node: String,
    upstreams: Vec<SocketAddr>,
    mut changes: UnboundedReceiver<Change>,
) -> Result<(), Error> {
    let mut dns = Dns {
        node,
        host: Netlink::current().await?,
        forwarder: Arc::new(Forwarder::new(upstreams)),
        view: Arc::new(ViewCell::default()),
        nets: HashMap::new(),
        key_net: HashMap::new(),
    };
    let mut next_check = Instant::now() + CHECK_EVERY;
    loop {
        let wake = dns.next_retry().map_or(next_check, |r| r.min(next_check));
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else {
                    return Err(Error::Dns("the endpoint cache went away".into()));
                };
                dns.apply(change).await;
                dns.publish();
            }
            _ = sleep_until(wake) => {
                let now = Instant::now();
                if now >= next_check {
                    dns.check().await;
                    next_check = now + CHECK_EVERY;
                }
                dns.retry_due(now).await;
            }
        }
    }
}

impl Dns {
    async fn apply(&mut self, change: Change) {
        match change {
            Change::Reset(all, _) => {
                let mut touched: BTreeSet<String> = self.nets.keys().cloned().collect();
                for net in self.nets.values_mut() {
                    net.endpoints.clear();
                }
                self.key_net.clear();
                for (key, endpoint) in all.iter() {
                    touched.insert(endpoint.network.clone());
                    self.insert(key.clone(), Arc::new(endpoint.clone()));
                }
                for name in touched {
                    self.refresh(&name, true).await;
                }
            }
            Change::Put { key, endpoint, .. } => {
                let local = endpoint.node == self.node;
                let name = endpoint.network.clone();
                if let Some(old) = self.remove(&key) {
                    if old != name {
                        self.refresh(&old, false).await;
                    }
                }
                self.insert(key, endpoint);
                // A local ADD is when a sandbox may have been made anew or got another address.
                self.refresh(&name, local).await;
            }
            Change::Delete { key, previous } => {
                let name = self
                    .remove(&key)
                    .unwrap_or_else(|| previous.network.clone());
                self.refresh(&name, false).await;
            }
        }
    }

    fn insert(&mut self, key: String, endpoint: Arc<Endpoint>) {
        let name = endpoint.network.clone();
        self.key_net.insert(key.clone(), name.clone());
        self.nets
            .entry(name.clone())
            .or_insert_with(|| Net::new(&name))
            .endpoints
            .insert(key, endpoint);
    }

    /// A new view for the servers: every network's zone (shared, not copied) and the networks of
    /// each local container, from the local records. Once per change, after its zones.
    fn publish(&self) {
        let zones = self
            .nets
            .iter()
            .map(|(name, net)| (name.clone(), net.zone.clone()))
            .collect();
        let local = records::local_records(self.nets.values().map(|n| &n.endpoints), &self.node);
        self.view.store(View::build(zones, local));
    }

    /// Removes a record; the network it was in.
    fn remove(&mut self, key: &str) -> Option<String> {
        let name = self.key_net.remove(key)?;
        if let Some(net) = self.nets.get_mut(&name) {
            net.endpoints.remove(key);
        }
        Some(name)
    }

    /// The VNI of the network's local endpoints; None when it has none here.
    fn local_vni(&self, net: &Net) -> Option<Vni> {
        net.endpoints
            .values()
            .find(|e| e.node == self.node)
            .map(|e| e.vni)
    }

    /// After the records of `name` changed: its new zone, then its server started or stopped.
    /// `verify`: also check that a running server still listens where the gateway is.
    async fn refresh(&mut self, name: &str, verify: bool) {
        let Some(net) = self.nets.get(name) else {
            return;
        };
        let vni = self.local_vni(net);
        // Only networks served here need their names: a host sees the records of every
        // network, and most have no container on it.
        let zone = match vni {
            Some(_) => Zone::build(name, net.endpoints.values().map(|e| e.as_ref())),
            None => Zone::empty(name),
        };
        log::debug!("DNS of network {name}: {} names", zone.len());
        let Some(net) = self.nets.get_mut(name) else {
            return;
        };
        net.zone = Arc::new(zone);
        match vni {
            None => {
                if net.serving.take().is_some() {
                    log::info!("DNS of network {name}: no local container left, sockets closed");
                }
                net.retry = None;
                if net.endpoints.is_empty() {
                    self.nets.remove(name);
                }
            }
            Some(vni) => {
                if net.serving.is_none() {
                    if net.retry.is_none() || verify {
                        let found = Gateway::find(&self.host, vni, &self.node).await;
                        self.start(name, found);
                    }
                } else if verify {
                    let found = Gateway::find(&self.host, vni, &self.node).await;
                    self.reconcile(name, found);
                }
            }
        }
    }

    /// Serves `name` on `found`, or schedules another attempt.
    fn start(&mut self, name: &str, found: Result<Gateway, Error>) {
        let Some(net) = self.nets.get_mut(name) else {
            return;
        };
        let started = found.and_then(|gateway| {
            let place = gateway.describe();
            Serving::start(name, gateway, self.view.clone(), self.forwarder.clone())
                .map(|serving| (serving, place))
        });
        match started {
            Ok((serving, place)) => {
                log::info!("DNS of network {name} ({}.) on {place}", dns_domain(name));
                net.serving = Some(serving);
                net.retry = None;
            }
            Err(e) => {
                let wait = match net.retry {
                    None => {
                        log::warn!("DNS of network {name}: {e}; retrying");
                        RETRY_FIRST
                    }
                    Some((_, wait)) => {
                        log::debug!("DNS of network {name}: {e}");
                        (wait * 2).min(RETRY_MAX)
                    }
                };
                net.retry = Some((Instant::now() + wait, wait));
            }
        }
    }

    /// A running server whose gateway moved (new sandbox, other addresses) is made anew there.
    fn reconcile(&mut self, name: &str, found: Result<Gateway, Error>) {
        let Some(net) = self.nets.get_mut(name) else {
            return;
        };
        let Some(serving) = &net.serving else {
            return;
        };
        match found {
            Ok(g) if g.place == serving.gateway_place && g.addrs == serving.addrs => {}
            Ok(g) => {
                log::info!(
                    "DNS of network {name}: the gateway is now {}, binding there",
                    g.describe()
                );
                net.serving = None;
                self.start(name, Ok(g));
            }
            // Gone for a moment (a DEL removing the sandbox before its record): the periodic
            // check closes the sockets if it stays gone.
            Err(e) => log::debug!("DNS of network {name}: checking the gateway: {e}"),
        }
    }

    /// The periodic check: servers that stopped, or whose sandbox is no longer the network's
    /// sandbox, are closed and started again (at once, then with back-off).
    async fn check(&mut self) {
        let mut restart = Vec::new();
        for (name, net) in &self.nets {
            let (Some(serving), Some(vni)) = (&net.serving, self.local_vni(net)) else {
                continue;
            };
            let stale = serving.is_finished()
                || match serving.gateway_place {
                    Place::Sandbox { inode } => std::fs::metadata(sandbox_path(vni, &self.node))
                        .map(|m| m.ino() != inode)
                        .unwrap_or(true),
                    Place::Bridge => false,
                };
            if stale {
                restart.push(name.clone());
            }
        }
        for name in restart {
            if let Some(net) = self.nets.get_mut(&name) {
                log::info!("DNS of network {name}: its sandbox changed or the server stopped");
                net.serving = None;
                net.retry = Some((Instant::now(), RETRY_FIRST / 2));
            }
        }
    }

    fn next_retry(&self) -> Option<Instant> {
        self.nets
            .values()
            .filter_map(|n| n.retry.map(|(at, _)| at))
            .min()
    }

    async fn retry_due(&mut self, now: Instant) {
        let due: Vec<(String, Vni)> = self
            .nets
            .iter()
            .filter(|(_, n)| n.serving.is_none() && n.retry.is_some_and(|(at, _)| at <= now))
            .filter_map(|(name, n)| Some((name.clone(), self.local_vni(n)?)))
            .collect();
        for (name, vni) in due {
            let found = Gateway::find(&self.host, vni, &self.node).await;
            self.start(&name, found);
        }
    }
}
