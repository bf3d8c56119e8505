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

use netops::{format_mac, parse_mac, Link, Netlink};
use store::records::Endpoint;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use crate::endpoints::Change;
use crate::error::Error;

/// The backstop: catches entries changed behind our back and races with the plugin (it programs
/// what it listed; a record deleted in between is only cleaned up here).
pub const RESYNC_EVERY: Duration = Duration::from_secs(30);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The VXLAN device of a VNI in the host namespace, as the vxlan-overlay plugin names it.
pub fn vxlan_name(vni: u32) -> String {
    format!("ovx{vni}")
}

/// The VNI of one of our VXLAN devices; None for every other link. The name and the device's
/// own VNI must agree, so a foreign device that happens to be called `ovx…` is left alone.
pub fn vni_of_device(link: &Link) -> Option<u32> {
    let vni: u32 = link.name.strip_prefix("ovx")?.parse().ok()?;
    (link.kind == "vxlan" && vxlan_name(vni) == link.name && link.vxlan_id == Some(vni))
        .then_some(vni)
}

/// An endpoint of another node, in kernel terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub vni: u32,
    pub mac: [u8; 6],
    pub vtep: IpAddr,
    pub ips: Vec<IpAddr>,
}

impl Remote {
    /// The kernel form of a record; a record with anything unreadable is refused whole, rather
    /// than programmed half.
    pub fn parse(e: &Endpoint) -> Result<Remote, String> {
        let mac =
            parse_mac(&e.mac).ok_or_else(|| format!("mac {:?} is not a MAC address", e.mac))?;
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(format!("mac {} is not a unicast address", e.mac));
        }
        let vtep = e
            .vtep
            .parse()
            .map_err(|_| format!("vtep {:?} is not an IP address", e.vtep))?;
        let ips = e
            .ips
            .iter()
            .map(|cidr| {
                // "10.0.0.2/24": the neighbour entry is for the address alone.
                let addr = cidr.split('/').next().unwrap_or_default();
                addr.parse()
                    .map_err(|_| format!("ip {cidr:?} is not an address"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Remote {
            vni: e.vni,
            mac,
            vtep,
            ips,
        })
    }
}

/// What one device should hold. Where two records claim one MAC or address (a container moving
/// between hosts, for a moment), the last key in key order wins, in every code path alike.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub fdb: BTreeMap<[u8; 6], IpAddr>,
    pub neigh: BTreeMap<IpAddr, [u8; 6]>,
}

pub fn desired<'a>(remotes: impl IntoIterator<Item = &'a Remote>, vni: u32) -> Desired {
    let mut d = Desired::default();
    for r in remotes.into_iter().filter(|r| r.vni == vni) {
        d.fdb.insert(r.mac, r.vtep);
        for ip in &r.ips {
            d.neigh.insert(*ip, r.mac);
        }
    }
    d
}

/// The kernel operations that turn a device's entries into `desired`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub fdb_add: Vec<([u8; 6], IpAddr)>,
    pub fdb_del: Vec<([u8; 6], IpAddr)>,
    /// Adds replace: an entry with the wrong MAC is corrected in place, not deleted first.
    pub neigh_add: Vec<(IpAddr, [u8; 6])>,
    pub neigh_del: Vec<IpAddr>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.fdb_add.is_empty()
            && self.fdb_del.is_empty()
            && self.neigh_add.is_empty()
            && self.neigh_del.is_empty()
    }
}

/// `fdb` are the device's FDB entries with a destination, `neigh` its permanent neighbours.
pub fn plan(desired: &Desired, fdb: &[([u8; 6], IpAddr)], neigh: &[(IpAddr, [u8; 6])]) -> Plan {
    let unicast = |mac: &[u8; 6]| mac[0] & 1 == 0 && *mac != [0; 6];
    let fdb: BTreeSet<([u8; 6], IpAddr)> =
        fdb.iter().filter(|(m, _)| unicast(m)).copied().collect();
    let neigh: HashMap<IpAddr, [u8; 6]> = neigh.iter().copied().collect();
    Plan {
        fdb_add: desired
            .fdb
            .iter()
            .map(|(m, v)| (*m, *v))
            .filter(|e| !fdb.contains(e))
            .collect(),
        fdb_del: fdb
            .iter()
            .filter(|(m, v)| desired.fdb.get(m) != Some(v))
            .copied()
            .collect(),
        neigh_add: desired
            .neigh
            .iter()
            .filter(|(ip, mac)| neigh.get(ip) != Some(mac))
            .map(|(ip, mac)| (*ip, *mac))
            .collect(),
        neigh_del: {
            let mut del: Vec<IpAddr> = neigh
                .keys()
                .filter(|ip| !desired.neigh.contains_key(ip))
                .copied()
                .collect();
            del.sort();
            del
        },
    }
}

/// The remote endpoints as last applied, and the netlink socket to apply them with.
pub struct Peers {
    node: String,
    nl: Netlink,
    remotes: BTreeMap<String, Remote>,
    /// False until the first listing arrived: until then we know nothing, and a reconciliation
    /// against nothing would wipe entries that are still right.
    synced: bool,
}

impl Peers {
    pub fn new(node: String, nl: Netlink) -> Peers {
        Peers {
            node,
            nl,
            remotes: BTreeMap::new(),
            synced: false,
        }
    }

    /// The record in kernel terms if it is another node's and readable; None otherwise.
    fn remote(&self, key: &str, endpoint: &Endpoint) -> Option<Remote> {
        if endpoint.node == self.node {
            return None;
        }
        Remote::parse(endpoint)
            .inspect_err(|e| log::warn!("ignoring endpoint {key}: {e}"))
            .ok()
    }

    /// Applies one change; false when a kernel update failed (a resync should follow).
    pub async fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Reset(endpoints) => {
                self.remotes = endpoints
                    .iter()
                    .filter_map(|(k, e)| Some((k.clone(), self.remote(k, e)?)))
                    .collect();
                self.synced = true;
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
    async fn device(&self, vni: u32) -> Result<Option<u32>, netops::Error> {
        Ok(self
            .nl
            .link(&vxlan_name(vni))
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
        let mut devices: HashMap<u32, Option<u32>> = HashMap::new();
        for r in old.iter().chain(new.iter()) {
            if devices.contains_key(&r.vni) {
                continue;
            }
            let device = match self.device(r.vni).await {
                Ok(device) => device,
                Err(e) => {
                    log::warn!("looking up {}: {e}", vxlan_name(r.vni));
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
                Some(vtep) => self.nl.fdb_add(dev, mac, vtep).await.map(|()| true),
                // Only `old` can have put a now unwanted entry there.
                None => match &old {
                    Some(o) => match self.nl.fdb_del(dev, mac, o.vtep).await {
                        // The bridge's learnt entry for the MAC would point at the tunnel
                        // for another 300 s: a leftover of an endpoint that is gone.
                        Ok(_) => self.nl.bridge_fdb_forget(dev, mac).await,
                        Err(e) => Err(e),
                    },
                    None => Ok(true),
                },
            };
            ok &= report(result, || {
                format!("fdb {} on {}", format_mac(&mac), vxlan_name(vni))
            });
        }
        for (vni, ip) in neigh_slots {
            let Some(&Some(dev)) = devices.get(&vni) else {
                continue;
            };
            let result = match self.neigh_winner(vni, ip) {
                Some(mac) => self.nl.neigh_add(dev, ip, mac).await.map(|()| true),
                None => self.nl.neigh_del(dev, ip).await,
            };
            ok &= report(result, || format!("neighbour {ip} on {}", vxlan_name(vni)));
        }
        if devices.values().any(Option::is_some) {
            match &new {
                Some(r) => log::info!(
                    "{key}: {} via {} ({}) on {}",
                    format_mac(&r.mac),
                    r.vtep,
                    list(&r.ips),
                    vxlan_name(r.vni)
                ),
                None => log::info!("{key}: removed"),
            }
        } else {
            log::debug!("{key}: no local VXLAN device for its network, nothing to program");
        }
        ok
    }

    fn fdb_winner(&self, vni: u32, mac: [u8; 6]) -> Option<IpAddr> {
        self.remotes
            .values()
            .rev()
            .find(|r| r.vni == vni && r.mac == mac)
            .map(|r| r.vtep)
    }

    fn neigh_winner(&self, vni: u32, ip: IpAddr) -> Option<[u8; 6]> {
        self.remotes
            .values()
            .rev()
            .find(|r| r.vni == vni && r.ips.contains(&ip))
            .map(|r| r.mac)
    }

    /// Full reconciliation of every `ovx<vni>` device; false when something failed.
    pub async fn resync(&mut self, why: &str) -> bool {
        if !self.synced {
            return true;
        }
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
            let Some(vni) = vni_of_device(link) else {
                continue;
            };
            devices += 1;
            ok &= self.resync_device(why, link, vni).await;
        }
        log::debug!(
            "resync ({why}): {devices} VXLAN devices, {} remote endpoints",
            self.remotes.len()
        );
        ok
    }

    async fn resync_device(&self, why: &str, link: &Link, vni: u32) -> bool {
        let entries = async {
            let fdb = self.nl.fdb_entries(link.index).await?;
            let neigh = self.nl.neigh_entries(link.index).await?;
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
            let r = self.nl.fdb_add(dev, *mac, *vtep).await;
            ok &= report(r, || {
                format!("adding fdb {} dst {vtep} on {name}", format_mac(mac))
            });
        }
        for (mac, vtep) in &plan.fdb_del {
            let r = match self.nl.fdb_del(dev, *mac, *vtep).await {
                Ok(_) => self.nl.bridge_fdb_forget(dev, *mac).await,
                Err(e) => Err(e),
            };
            ok &= report(r, || {
                format!("removing fdb {} dst {vtep} on {name}", format_mac(mac))
            });
        }
        for (ip, mac) in &plan.neigh_add {
            let r = self.nl.neigh_add(dev, *ip, *mac).await;
            ok &= report(r, || format!("adding neighbour {ip} on {name}"));
        }
        for ip in &plan.neigh_del {
            let r = self.nl.neigh_del(dev, *ip).await;
            ok &= report(r, || format!("removing neighbour {ip} on {name}"));
        }
        ok
    }
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
                    let full = matches!(change, Change::Reset(_));
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
    use crate::endpoints::tests::endpoint;

    const M1: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_records_into_kernel_terms() {
        let e = endpoint(
            "n2",
            42,
            "02:00:00:00:00:01",
            &["10.0.0.2/24", "fd00::2/64"],
        );
        let r = Remote::parse(&e).unwrap();
        assert_eq!(r.vni, 42);
        assert_eq!(r.mac, M1);
        assert_eq!(r.vtep, ip("192.0.2.10"));
        assert_eq!(r.ips, [ip("10.0.0.2"), ip("fd00::2")]);
        // An address without a prefix length is accepted as is.
        assert!(Remote::parse(&endpoint("n", 1, "02:00:00:00:00:01", &["10.0.0.2"])).is_ok());
        for bad in [
            endpoint("n", 1, "zz", &[]),
            endpoint("n", 1, "01:00:5e:00:00:01", &[]),
            endpoint("n", 1, "00:00:00:00:00:00", &[]),
            endpoint("n", 1, "02:00:00:00:00:01", &["10.0.0/24"]),
            Endpoint {
                vtep: "host".into(),
                ..endpoint("n", 1, "02:00:00:00:00:01", &[])
            },
        ] {
            assert!(Remote::parse(&bad).is_err(), "{bad:?}");
        }
    }

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
        assert_eq!(vni_of_device(&link("ovx42", "vxlan", Some(42))), Some(42));
        assert_eq!(vni_of_device(&link("ovx42", "vxlan", Some(43))), None);
        assert_eq!(vni_of_device(&link("ovx042", "vxlan", Some(42))), None);
        assert_eq!(vni_of_device(&link("ovx42", "bridge", None)), None);
        assert_eq!(vni_of_device(&link("vx42", "vxlan", Some(42))), None);
        assert_eq!(vni_of_device(&link("ovxa", "vxlan", Some(42))), None);
    }

    #[test]
    fn desired_state_per_vni_last_key_wins() {
        let a = Remote {
            vni: 1,
            mac: M1,
            vtep: ip("192.0.2.1"),
            ips: vec![ip("10.0.0.2")],
        };
        let b = Remote {
            vni: 1,
            mac: M1,
            vtep: ip("192.0.2.2"),
            ips: vec![ip("10.0.0.3")],
        };
        let c = Remote {
            vni: 2,
            mac: M2,
            vtep: ip("192.0.2.3"),
            ips: vec![ip("10.0.0.2")],
        };
        let d = desired([&a, &b, &c], 1);
        assert_eq!(d.fdb, BTreeMap::from([(M1, ip("192.0.2.2"))]));
        assert_eq!(
            d.neigh,
            BTreeMap::from([(ip("10.0.0.2"), M1), (ip("10.0.0.3"), M1)])
        );
        assert_eq!(desired([&a, &b, &c], 3), Desired::default());
    }

    #[test]
    fn plan_adds_missing_removes_unjustified_and_spares_flood_entries() {
        let d = Desired {
            fdb: BTreeMap::from([(M1, ip("192.0.2.1")), (M2, ip("192.0.2.2"))]),
            neigh: BTreeMap::from([(ip("10.0.0.1"), M1), (ip("10.0.0.2"), M2)]),
        };
        let fdb = [
            (M1, ip("192.0.2.1")),                    // right
            (M2, ip("192.0.2.9")),                    // wrong destination
            ([2, 9, 9, 9, 9, 9], ip("192.0.2.1")),    // unjustified
            ([0; 6], ip("192.0.2.1")),                // flood entry: not ours
            ([1, 0, 0x5e, 0, 0, 1], ip("192.0.2.1")), // multicast: not ours
        ];
        let neigh = [
            (ip("10.0.0.1"), M1),  // right
            (ip("10.0.0.2"), M1),  // wrong MAC
            (ip("10.0.0.99"), M2), // unjustified
        ];
        let p = plan(&d, &fdb, &neigh);
        assert_eq!(p.fdb_add, [(M2, ip("192.0.2.2"))]);
        assert_eq!(
            p.fdb_del,
            [
                ([2, 0, 0, 0, 0, 2], ip("192.0.2.9")),
                ([2, 9, 9, 9, 9, 9], ip("192.0.2.1"))
            ]
        );
        assert_eq!(p.neigh_add, [(ip("10.0.0.2"), M2)]);
        assert_eq!(p.neigh_del, [ip("10.0.0.99")]);
        assert!(plan(
            &d,
            &[(M1, ip("192.0.2.1")), (M2, ip("192.0.2.2"))],
            &[(ip("10.0.0.1"), M1), (ip("10.0.0.2"), M2)]
        )
        .is_empty());
    }
}
