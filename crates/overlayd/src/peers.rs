//! The static FDB and neighbour entries of this host's VXLAN devices, kept equal to the endpoint
//! records of the other hosts.
//!
//! For every remote endpoint on a network whose device `ovx<vni>` exists here: one FDB entry
//! (its MAC is behind its host's VTEP) and one permanent neighbour entry per address (so that
//! the device, in proxy mode, answers ARP/ND for it without flooding). Endpoints of this node need
//! nothing: their veths are on the local bridge.
//!
//! Changes are applied one by one as they arrive; a full reconciliation runs on every fresh
//! listing, every [`RESYNC_EVERY`] as a backstop, and soon after any failed kernel update.
//! Only devices named `ovx<vni>` of kind vxlan are ever touched, and on them only unicast FDB
//! entries with a destination and permanent neighbour entries: the flood (all-zero MAC) entries
//! and whatever the bridge learned belong to others.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use model::names::{self, vxlan};
use model::peers::{desired, plan, Remote};
use model::records::Endpoint;
use model::{Mac, Vni};
use netops::{Link, Netlink};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use crate::endpoints::Change;
use crate::error::Error;
use crate::metrics::{self, Table};

/// The backstop: catches entries changed behind our back and races with the plugin (it programs
/// what it listed; a record deleted in between is only cleaned up here).
pub const RESYNC_EVERY: Duration = Duration::from_secs(30);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The VNI of one of our VXLAN devices; None for every other link. The name and the device's
/// own VNI must agree, so a foreign device that happens to be called `ovx…` is left alone.
pub fn vni_of_device(link: &Link) -> Option<Vni> {
    let vni = names::vni_of_vxlan(&link.name)?;
    (link.kind == "vxlan" && link.vxlan_id == Some(vni.get())).then_some(vni)
}

/// The remote endpoints as last applied, and the netlink socket to apply them with.
pub struct Peers {
    node: String,
    nl: Netlink,
    remotes: BTreeMap<String, Remote>,
    /// The VNIs of the networks whose records are known (listed): only their devices are
    /// reconciled. Before a network's first listing we know nothing of it, and a reconciliation
    /// against nothing would wipe entries that are still right (the plugin's, say).
    listed: BTreeSet<Vni>,
}

impl Peers {
    pub fn new(node: String, nl: Netlink) -> Peers {
        Peers {
            node,
            nl,
            remotes: BTreeMap::new(),
            listed: BTreeSet::new(),
        }
    }

    /// The record in kernel terms if it is another node's and can be programmed; None otherwise.
    fn remote(&self, key: &str, endpoint: &Endpoint) -> Option<Remote> {
        Remote::of(endpoint, &self.node)
            .inspect_err(|e| log::warn!("ignoring endpoint {key}: {e}"))
            .ok()
            .flatten()
    }

    /// Applies one change; false when a kernel update failed (a resync should follow).
    pub async fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Reset(endpoints, vnis) => {
                self.remotes = endpoints
                    .iter()
                    .filter_map(|(k, e)| Some((k.clone(), self.remote(k, e)?)))
                    .collect();
                self.listed = (*vnis).clone();
                self.resync("fresh listing").await
            }
            Change::Put { key, endpoint, .. } => {
                let new = self.remote(&key, &endpoint);
                self.update(key, new).await
            }
            Change::Delete { key, .. } => self.update(key, None).await,
        }
    }

    /// The device of a VNI, if this host has one (no local container on that network: none).
    async fn device(&self, vni: Vni) -> Result<Option<u32>, netops::Error> {
        Ok(self
            .nl
            .link(&vxlan(vni))
            .await?
            .filter(|l| vni_of_device(l) == Some(vni))
            .map(|l| l.index))
    }

    /// Replaces (or with None removes) the record at `key` and brings every FDB and neighbour
    /// slot it touched, before or after, to what the remaining records want. `old` is what we
    /// applied for this key: the previous record that etcd's prev_kv reports, as it reached us.
    async fn update(&mut self, key: String, new: Option<Remote>) -> bool {
        let old = match &new {
            Some(r) => self.remotes.insert(key.clone(), r.clone()),
            None => self.remotes.remove(&key),
        };
        if old == new {
            return true;
        }
        let mut ok = true;
        let mut devices: HashMap<Vni, Option<u32>> = HashMap::new();
        for r in old.iter().chain(new.iter()) {
            if devices.contains_key(&r.vni) {
                continue;
            }
            let device = match self.device(r.vni).await {
                Ok(device) => device,
                Err(e) => {
                    log::warn!("looking up {}: {e}", vxlan(r.vni));
                    ok = false;
                    None
                }
            };
            devices.insert(r.vni, device);
        }

        let mut fdb_slots = BTreeSet::new();
        let mut neigh_slots = BTreeSet::new();
        for r in old.iter().chain(new.iter()) {
            fdb_slots.insert((r.vni, r.mac));
            neigh_slots.extend(r.ips.iter().map(|ip| (r.vni, *ip)));
        }
        for (vni, mac) in fdb_slots {
            let Some(&Some(dev)) = devices.get(&vni) else {
                continue;
            };
            let result = match self.fdb_winner(vni, mac) {
                Some(vtep) => self
                    .nl
                    .fdb_add(dev, mac.octets(), vtep)
                    .await
                    .map(|()| counted(Table::Fdb, true)),
                // Only `old` can have put a now unwanted entry there.
                None => match &old {
                    Some(o) => match self.nl.fdb_del(dev, mac.octets(), o.vtep).await {
                        // The bridge's learnt entry for the MAC would point at the tunnel
                        // for another 300 s: a leftover of an endpoint that is gone.
                        Ok(deleted) => {
                            if deleted {
                                counted(Table::Fdb, false);
                            }
                            self.nl.bridge_fdb_forget(dev, mac.octets()).await
                        }
                        Err(e) => Err(e),
                    },
                    None => Ok(true),
                },
            };
            ok &= report(result, || format!("fdb {mac} on {}", vxlan(vni)));
        }
        for (vni, ip) in neigh_slots {
            let Some(&Some(dev)) = devices.get(&vni) else {
                continue;
            };
            let result = match self.neigh_winner(vni, ip) {
                Some(mac) => self
                    .nl
                    .neigh_add(dev, ip, mac.octets())
                    .await
                    .map(|()| counted(Table::Neighbour, true)),
                None => self
                    .nl
                    .neigh_del(dev, ip)
                    .await
                    .map(|deleted| deleted && counted(Table::Neighbour, false)),
            };
            ok &= report(result, || format!("neighbour {ip} on {}", vxlan(vni)));
        }
        if devices.values().any(Option::is_some) {
            match &new {
                Some(r) => log::info!(
                    "{key}: {} via {} ({}) on {}",
                    r.mac,
                    r.vtep,
                    list(&r.ips),
                    vxlan(r.vni)
                ),
                None => log::info!("{key}: removed"),
            }
        } else {
            log::debug!("{key}: no local VXLAN device for its network, nothing to program");
        }
        ok
    }

    fn fdb_winner(&self, vni: Vni, mac: Mac) -> Option<IpAddr> {
        self.remotes
            .values()
            .rev()
            .find(|r| r.vni == vni && r.mac == mac)
            .map(|r| r.vtep)
    }

    fn neigh_winner(&self, vni: Vni, ip: IpAddr) -> Option<Mac> {
        self.remotes
            .values()
            .rev()
            .find(|r| r.vni == vni && r.ips.contains(&ip))
            .map(|r| r.mac)
    }

    /// Full reconciliation of every `ovx<vni>` device; false when something failed.
    pub async fn resync(&mut self, why: &str) -> bool {
        if self.listed.is_empty() {
            return true;
        }
        let started = std::time::Instant::now();
        let links = match self.nl.links().await {
            Ok(links) => links,
            Err(e) => {
                log::warn!("resync ({why}): {e}");
                return false;
            }
        };
        let mut ok = true;
        let mut devices = 0;
        for link in &links {
            let Some(vni) = vni_of_device(link).filter(|v| self.listed.contains(v)) else {
                continue;
            };
            devices += 1;
            ok &= self.resync_device(why, link, vni).await;
        }
        log::debug!(
            "resync ({why}): {devices} VXLAN devices, {} remote endpoints",
            self.remotes.len()
        );
        metrics::get().resynced(why, started.elapsed());
        ok
    }

    async fn resync_device(&self, why: &str, link: &Link, vni: Vni) -> bool {
        let entries = async {
            let fdb: Vec<(Mac, IpAddr)> = (self.nl.fdb_entries(link.index).await?)
                .into_iter()
                .map(|(mac, vtep)| (Mac::from(mac), vtep))
                .collect();
            let neigh: Vec<(IpAddr, Mac)> = (self.nl.neigh_entries(link.index).await?)
                .into_iter()
                .map(|(ip, mac)| (ip, Mac::from(mac)))
                .collect();
            Ok::<_, netops::Error>((fdb, neigh))
        };
        let (fdb, neigh) = match entries.await {
            Ok(entries) => entries,
            Err(e) => return report::<()>(Err(e), || format!("reading {}", link.name)),
        };
        let plan = plan(&desired(self.remotes.values(), vni), &fdb, &neigh);
        if plan.is_empty() {
            return true;
        }
        let (dev, name) = (link.index, &link.name);
        log::info!(
            "resync ({why}) of {name}: fdb +{} -{}, neighbours +{} -{}",
            plan.fdb_add.len(),
            plan.fdb_del.len(),
            plan.neigh_add.len(),
            plan.neigh_del.len()
        );
        let mut ok = true;
        // Adds first: an add replaces in place, so a moved MAC never goes missing in between.
        for (mac, vtep) in &plan.fdb_add {
            let r = self.nl.fdb_add(dev, mac.octets(), *vtep).await;
            let r = r.map(|()| counted(Table::Fdb, true));
            ok &= report(r, || format!("adding fdb {mac} dst {vtep} on {name}"));
        }
        for (mac, vtep) in &plan.fdb_del {
            let r = match self.nl.fdb_del(dev, mac.octets(), *vtep).await {
                Ok(deleted) => {
                    if deleted {
                        counted(Table::Fdb, false);
                    }
                    self.nl.bridge_fdb_forget(dev, mac.octets()).await
                }
                Err(e) => Err(e),
            };
            ok &= report(r, || format!("removing fdb {mac} dst {vtep} on {name}"));
        }
        for (ip, mac) in &plan.neigh_add {
            let r = self.nl.neigh_add(dev, *ip, mac.octets()).await;
            let r = r.map(|()| counted(Table::Neighbour, true));
            ok &= report(r, || format!("adding neighbour {ip} on {name}"));
        }
        for ip in &plan.neigh_del {
            let r = self.nl.neigh_del(dev, *ip).await;
            let r = r.map(|deleted| deleted && counted(Table::Neighbour, false));
            ok &= report(r, || format!("removing neighbour {ip} on {name}"));
        }
        ok
    }
}

/// Counts an entry added or removed; true, for chaining.
fn counted(table: Table, added: bool) -> bool {
    metrics::get().kernel_update(table, added);
    true
}

/// Logs a failed kernel update; false when it failed. A device deleted under us (the last
/// container of its network left) is no failure: there is nothing left to program.
fn report<T>(result: Result<T, netops::Error>, what: impl FnOnce() -> String) -> bool {
    match result {
        Ok(_) => true,
        Err(e) if e.errno() == Some(libc::ENODEV) => {
            log::debug!("{}: device gone", what());
            true
        }
        Err(e) => {
            log::warn!("{}: {e}", what());
            false
        }
    }
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies the changes of an endpoint-cache subscription until aborted.
pub async fn run(node: String, mut changes: UnboundedReceiver<Change>) -> Result<(), Error> {
    let mut peers = Peers::new(node, Netlink::current().await?);
    let mut backstop = tokio::time::interval_at(Instant::now() + RESYNC_EVERY, RESYNC_EVERY);
    backstop.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut retry: Option<Instant> = None;
    let mut retry_delay = RETRY_FIRST;
    loop {
        let (ok, full) = tokio::select! {
            change = changes.recv() => match change {
                Some(change) => {
                    let full = matches!(change, Change::Reset(..));
                    (peers.apply(change).await, full)
                }
                None => {
                    return Err(Error::Task {
                        task: "peer sync",
                        reason: "the endpoint cache went away".into(),
                    })
                }
            },
            _ = backstop.tick() => (peers.resync("periodic").await, true),
            _ = sleep_until(retry.unwrap_or_else(Instant::now)), if retry.is_some() => {
                (peers.resync("retry after a failed update").await, true)
            }
        };
        if !ok {
            // A pending retry stays as scheduled; failures in a row are retried less often.
            if retry.is_none() || full {
                retry = Some(Instant::now() + retry_delay);
                retry_delay = (retry_delay * 2).min(RETRY_MAX);
            }
        } else if full {
            retry = None;
            retry_delay = RETRY_FIRST;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ovx_vxlan_devices_with_matching_vni_are_ours() {
        let link = |name: &str, kind: &str, id: Option<u32>| Link {
            index: 5,
            name: name.into(),
            kind: kind.into(),
            mac: None,
            mtu: 1450,
            master: None,
            up: true,
            alias: None,
            peer_index: None,
            vxlan_id: id,
        };
        let vni = |n| Some(Vni::new(n).unwrap());
        assert_eq!(vni_of_device(&link("ovx42", "vxlan", Some(42))), vni(42));
        assert_eq!(vni_of_device(&link("ovx42", "vxlan", Some(43))), None);
        assert_eq!(vni_of_device(&link("ovx042", "vxlan", Some(42))), None);
        assert_eq!(vni_of_device(&link("ovx42", "bridge", None)), None);
        assert_eq!(vni_of_device(&link("vx42", "vxlan", Some(42))), None);
        assert_eq!(vni_of_device(&link("ovxa", "vxlan", Some(42))), None);
    }

    #[test]
    fn records_are_programmed_by_the_models_rules() {
        use crate::endpoints::tests::endpoint;
        // Another node's record is a remote; this node's and a multicast MAC's are not.
        let peers_of = |e: &Endpoint| Remote::of(e, "n1");
        let r = peers_of(&endpoint("n2", 42, "02:00:00:00:00:01", &["10.0.0.2/24"]))
            .unwrap()
            .unwrap();
        let d = desired([&r], Vni::new(42).unwrap());
        assert_eq!(d.fdb.len() + d.neigh.len(), 2);
        assert!(plan(&d, &[], &[]).fdb_del.is_empty());
        assert!(peers_of(&endpoint("n1", 42, "02:00:00:00:00:01", &[]))
            .unwrap()
            .is_none());
        assert!(peers_of(&endpoint("n2", 42, "01:00:5e:00:00:01", &[])).is_err());
    }
}
