//! What an endpoint of another host needs on a VXLAN device: one permanent FDB entry (its MAC is
//! behind its host's VTEP) and one permanent neighbour entry per address (so that the device, in
//! proxy mode, answers ARP/ND for it without flooding). One rule set for the plugin (which adds
//! what is missing at ADD) and overlayd (which reconciles).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::error::Error;
use crate::records::Endpoint;
use crate::types::{Mac, Vni};

/// An endpoint of another node, in kernel terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub vni: Vni,
    pub mac: Mac,
    pub vtep: IpAddr,
    /// The addresses alone, without their prefix: the neighbour entries' keys.
    pub ips: Vec<IpAddr>,
}

impl Remote {
    /// The kernel form of a record of a node other than `local_node`; None for the local node's
    /// own records (their veths are on the local bridge). A record that cannot be programmed (a
    /// MAC that is not unicast) is refused whole rather than programmed half.
    pub fn of(endpoint: &Endpoint, local_node: &str) -> Result<Option<Remote>, Error> {
        if endpoint.node == local_node {
            return Ok(None);
        }
        if !endpoint.mac.is_unicast() {
            return Err(Error::invalid(format!(
                "mac {} is not a unicast address",
                endpoint.mac
            )));
        }
        Ok(Some(Remote {
            vni: endpoint.vni,
            mac: endpoint.mac,
            vtep: endpoint.vtep,
            ips: endpoint.ips.iter().map(|ip| ip.ip()).collect(),
        }))
    }
}

/// What one device should hold. Where two records claim one MAC or address (a container moving
/// between hosts, for a moment), the last in the given order (key order) wins.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub fdb: BTreeMap<Mac, IpAddr>,
    pub neigh: BTreeMap<IpAddr, Mac>,
}

/// The desired state of the device of `vni`.
pub fn desired<'a>(remotes: impl IntoIterator<Item = &'a Remote>, vni: Vni) -> Desired {
    let mut d = Desired::default();
    for r in remotes.into_iter().filter(|r| r.vni == vni) {
        d.fdb.insert(r.mac, r.vtep);
        for ip in &r.ips {
            d.neigh.insert(*ip, r.mac);
        }
    }
    d
}

/// The kernel operations that turn a device's entries into a [`Desired`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Adds replace: an entry with another destination is corrected in place.
    pub fdb_add: Vec<(Mac, IpAddr)>,
    pub fdb_del: Vec<(Mac, IpAddr)>,
    /// Adds replace: an entry with the wrong MAC is corrected in place, not deleted first.
    pub neigh_add: Vec<(IpAddr, Mac)>,
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

/// The plan against what a device holds: `fdb` its FDB entries with a destination, `neigh` its
/// permanent neighbours. Only unicast FDB entries are ever ours: the flood (all-zero) entries
/// and group addresses belong to others.
pub fn plan(desired: &Desired, fdb: &[(Mac, IpAddr)], neigh: &[(IpAddr, Mac)]) -> Plan {
    let fdb: BTreeSet<(Mac, IpAddr)> = fdb
        .iter()
        .filter(|(m, _)| m.is_unicast())
        .copied()
        .collect();
    let neigh: HashMap<IpAddr, Mac> = neigh.iter().copied().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    const M1: Mac = Mac::new([2, 0, 0, 0, 0, 1]);
    const M2: Mac = Mac::new([2, 0, 0, 0, 0, 2]);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn vni(n: u32) -> Vni {
        Vni::new(n).unwrap()
    }

    fn endpoint(node: &str, mac: &str, ips: &[&str]) -> Endpoint {
        Endpoint {
            network: "n".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            name: None,
            aliases: Vec::new(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            mac: mac.parse().unwrap(),
            node: node.into(),
            vtep: ip("192.0.2.10"),
            vni: vni(42),
        }
    }

    #[test]
    fn records_of_other_nodes_in_kernel_terms() {
        let e = endpoint("n2", "02:00:00:00:00:01", &["10.0.0.2/24", "fd00::2/64"]);
        let r = Remote::of(&e, "n1").unwrap().unwrap();
        assert_eq!(r.vni, vni(42));
        assert_eq!(r.mac, M1);
        assert_eq!(r.vtep, ip("192.0.2.10"));
        assert_eq!(r.ips, [ip("10.0.0.2"), ip("fd00::2")]);
        assert_eq!(Remote::of(&e, "n2").unwrap(), None, "the local node's own");
        for bad in [
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff",
        ] {
            let e = endpoint("n2", bad, &["10.0.0.2/24"]);
            assert!(Remote::of(&e, "n1").is_err(), "{bad}");
        }
    }

    #[test]
    fn desired_state_per_vni_last_wins() {
        let a = Remote {
            vni: vni(1),
            mac: M1,
            vtep: ip("192.0.2.1"),
            ips: vec![ip("10.0.0.2")],
        };
        let b = Remote {
            vni: vni(1),
            mac: M1,
            vtep: ip("192.0.2.2"),
            ips: vec![ip("10.0.0.3")],
        };
        let c = Remote {
            vni: vni(2),
            mac: M2,
            vtep: ip("192.0.2.3"),
            ips: vec![ip("10.0.0.2")],
        };
        let d = desired([&a, &b, &c], vni(1));
        assert_eq!(d.fdb, BTreeMap::from([(M1, ip("192.0.2.2"))]));
        assert_eq!(
            d.neigh,
            BTreeMap::from([(ip("10.0.0.2"), M1), (ip("10.0.0.3"), M1)])
        );
        assert_eq!(desired([&a, &b, &c], vni(3)), Desired::default());
    }

    #[test]
    fn plan_adds_missing_removes_unjustified_and_spares_flood_entries() {
        let d = Desired {
            fdb: BTreeMap::from([(M1, ip("192.0.2.1")), (M2, ip("192.0.2.2"))]),
            neigh: BTreeMap::from([(ip("10.0.0.1"), M1), (ip("10.0.0.2"), M2)]),
        };
        let fdb = [
            (M1, ip("192.0.2.1")),                              // right
            (M2, ip("192.0.2.9")),                              // wrong destination
            (Mac::new([2, 9, 9, 9, 9, 9]), ip("192.0.2.1")),    // unjustified
            (Mac::new([0; 6]), ip("192.0.2.1")),                // flood entry: not ours
            (Mac::new([1, 0, 0x5e, 0, 0, 1]), ip("192.0.2.1")), // multicast: not ours
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
                (M2, ip("192.0.2.9")),
                (Mac::new([2, 9, 9, 9, 9, 9]), ip("192.0.2.1"))
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

    #[test]
    fn the_plugins_adds_are_the_plans_adds() {
        // At ADD the plugin programs only what is missing and deletes nothing: an empty device
        // gets every entry, a complete one none.
        let records = [
            endpoint("n2", "02:00:00:00:00:01", &["10.0.0.2/24"]),
            endpoint("n1", "02:00:00:00:00:02", &["10.0.0.3/24"]),
        ];
        let remotes: Vec<Remote> = records
            .iter()
            .filter_map(|e| Remote::of(e, "n1").unwrap())
            .collect();
        let d = desired(&remotes, vni(42));
        let p = plan(&d, &[], &[]);
        assert_eq!(p.fdb_add, [(M1, ip("192.0.2.10"))]);
        assert_eq!(p.neigh_add, [(ip("10.0.0.2"), M1)]);
        let p = plan(&d, &[(M1, ip("192.0.2.10"))], &[(ip("10.0.0.2"), M1)]);
        assert!(p.is_empty());
    }
}
