//! Static forwarding-database entries on VXLAN devices and permanent neighbour entries.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::libc;

use crate::error::{nl_errno, nl_io, Error};
use crate::link::{Link, Netlink};
use crate::mac::format_mac;

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

/// Bridge-family dumps carry NDA_DST as raw bytes (the parser cannot know the family), so the
/// length decides: 4 bytes IPv4, 16 bytes IPv6.
fn decode_address(addr: &NeighbourAddress) -> Option<IpAddr> {
    match addr {
        NeighbourAddress::Inet(a) => Some(IpAddr::V4(*a)),
        NeighbourAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        NeighbourAddress::Other(bytes) => {
            if let Ok(b) = <[u8; 4]>::try_from(bytes.as_slice()) {
                Some(IpAddr::from(b))
            } else if let Ok(b) = <[u8; 16]>::try_from(bytes.as_slice()) {
                Some(IpAddr::from(b))
            } else {
                None
            }
        }
        _ => None,
    }
}

fn destination(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(d) => decode_address(d),
        _ => None,
    })
}

fn lladdr(msg: &NeighbourMessage) -> Option<[u8; 6]> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
        _ => None,
    })
}

/// A bridge-family (FDB) message for a permanent entry `mac` in the device `index`'s own table
/// (NTF_SELF). On a bridge it is the bridge's own (`bridge fdb add MAC dev BRIDGE self local`).
fn own_fdb_message(index: u32, mac: [u8; 6]) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.header.kind = RouteType::Unspec;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    msg
}

/// An FDB message for `mac` on `vxlan` toward `dst`, in the VXLAN device's own table (without
/// NTF_SELF the kernel answers EOPNOTSUPP).
fn fdb_message(vxlan: u32, mac: [u8; 6], dst: IpAddr) -> NeighbourMessage {
    let mut msg = own_fdb_message(vxlan, mac);
    msg.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(dst)));
    msg
}

fn neigh_message(index: u32, ip: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.kind = RouteType::Unspec;
    msg.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(ip)));
    msg
}

impl Netlink {
    async fn neighbour_dump(
        &self,
        family: AddressFamily,
        what: &'static str,
    ) -> Result<Vec<NeighbourMessage>, Error> {
        self.handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::kernel(what, "in namespace", nl_io(e)))
    }

    /// Deletes the neighbour or FDB entry `msg`: Ok(true) when it went, Ok(false) when the
    /// kernel answers with one of the errnos in `absent` (nothing to delete), else its error.
    async fn delete_entry(
        &self,
        msg: NeighbourMessage,
        absent: &[i32],
    ) -> Result<bool, rtnetlink::Error> {
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if nl_errno(&e).is_some_and(|n| absent.contains(&n)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Static FDB entry on a VXLAN device: `mac` is reached through remote VTEP `dst`
    /// (NTF_SELF, permanent). An existing entry for `mac` is repointed to `dst`.
    /// The all-zero and multicast MACs (flood entries) are the exception: the kernel keeps a
    /// list of destinations for them and cannot replace one, so `dst` is appended to the list.
    pub async fn fdb_add(&self, vxlan: u32, mac: [u8; 6], dst: IpAddr) -> Result<(), Error> {
        let flood_entry = mac == [0; 6] || mac[0] & 1 == 1;
        let flags = if flood_entry {
            NLM_F_CREATE | NLM_F_APPEND
        } else {
            NLM_F_CREATE | NLM_F_REPLACE
        };
        let msg = RouteNetlinkMessage::NewNeighbour(fdb_message(vxlan, mac, dst));
        match self.request_ack(msg, flags).await {
            Ok(()) => Ok(()),
            Err(e) if flood_entry && nl_errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => {
                let target = format!(
                    "{} dst {dst} on {}",
                    format_mac(&mac),
                    self.describe(vxlan).await
                );
                Err(Error::Kernel {
                    op: "add fdb entry",
                    target,
                    source: nl_io(e),
                })
            }
        }
    }

    /// Removes the FDB entry `mac` -> `dst`; Ok(false) when there is no such entry.
    pub async fn fdb_del(&self, vxlan: u32, mac: [u8; 6], dst: IpAddr) -> Result<bool, Error> {
        match self
            .delete_entry(fdb_message(vxlan, mac, dst), &[libc::ENOENT])
            .await
        {
            Ok(gone) => Ok(gone),
            Err(e) => {
                let target = format!(
                    "{} dst {dst} on {}",
                    format_mac(&mac),
                    self.describe(vxlan).await
                );
                Err(Error::Kernel {
                    op: "delete fdb entry",
                    target,
                    source: nl_io(e),
                })
            }
        }
    }

    /// Forgets what the bridge above `port` learnt about `mac` on that port (NTF_MASTER: the
    /// bridge's table, not the port's own). A bridge learns a remote container's MAC on the VXLAN
    /// port from its traffic and keeps it until it ages out (300 s); once the container is gone the
    /// entry is stale. The kernel deletes it only if it points at `port`, so a MAC now learnt on
    /// another port is kept. Ok(false) when there was no such entry.
    pub async fn bridge_fdb_forget(&self, port: u32, mac: [u8; 6]) -> Result<bool, Error> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = port;
        msg.header.flags = NeighbourFlags::Controller;
        msg.header.kind = RouteType::Unspec;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        // ENOENT: nothing learnt; EINVAL/EOPNOTSUPP: the port is on no bridge.
        let absent = [libc::ENOENT, libc::EINVAL, libc::EOPNOTSUPP];
        match self.delete_entry(msg, &absent).await {
            Ok(gone) => Ok(gone),
            Err(e) => Err(Error::Kernel {
                op: "delete bridge fdb entry",
                target: format!("{} on {}", format_mac(&mac), self.describe(port).await),
                source: nl_io(e),
            }),
        }
    }

    /// Makes `mac` local to `bridge` (`bridge fdb add MAC dev BRIDGE self local`): frames for it
    /// that arrive on a port are passed up to the bridge device, where a macvlan child of the
    /// bridge with that MAC takes them ([`Netlink::create_macvlan`]). Without the entry they
    /// would be flooded to every port. Idempotent.
    pub async fn bridge_local_add(&self, bridge: u32, mac: [u8; 6]) -> Result<(), Error> {
        let msg = RouteNetlinkMessage::NewNeighbour(own_fdb_message(bridge, mac));
        self.request_ack(msg, NLM_F_CREATE | NLM_F_REPLACE)
            .await
            .map_err(|e| Error::Kernel {
                op: "add local fdb entry",
                target: format!("{} on bridge {bridge}", format_mac(&mac)),
                source: nl_io(e),
            })
    }

    /// Removes what [`Netlink::bridge_local_add`] made; Ok(false) when there was no such entry.
    pub async fn bridge_local_del(&self, bridge: u32, mac: [u8; 6]) -> Result<bool, Error> {
        self.delete_entry(own_fdb_message(bridge, mac), &[libc::ENOENT, libc::ENODEV])
            .await
            .map_err(|e| Error::Kernel {
                op: "delete local fdb entry",
                target: format!("{} on bridge {bridge}", format_mac(&mac)),
                source: nl_io(e),
            })
    }

    /// The MACs made local to `bridge` by [`Netlink::bridge_local_add`]: the bridge's table
    /// entries on the bridge device itself other than its own address. (The kernel's list of
    /// the bridge's macvlan children, the NTF_SELF entries of the same dump, is not used: a
    /// child leaves it whenever it is down, as while Docker moves it.)
    pub async fn bridge_local_macs(&self, bridge: &Link) -> Result<Vec<[u8; 6]>, Error> {
        let msgs = self
            .neighbour_dump(AddressFamily::Bridge, "list local fdb entries")
            .await?;
        Ok(msgs
            .iter()
            .filter(|m| {
                m.header.ifindex == bridge.index
                    && !m.header.flags.contains(NeighbourFlags::Own)
                    && m.header.state == NeighbourState::Permanent
            })
            .filter_map(lladdr)
            .filter(|mac| Some(*mac) != bridge.mac && mac[0] & 1 == 0)
            .collect())
    }

    /// The FDB entries of a VXLAN device that have a remote destination: (MAC, VTEP).
    pub async fn fdb_entries(&self, vxlan: u32) -> Result<Vec<([u8; 6], IpAddr)>, Error> {
        let msgs = self
            .neighbour_dump(AddressFamily::Bridge, "list fdb entries")
            .await?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == vxlan)
            .filter_map(|m| Some((lladdr(m)?, destination(m)?)))
            .collect())
    }

    /// Permanent neighbour entry `ip` -> `mac` on a device; replaces an existing one.
    pub async fn neigh_add(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<(), Error> {
        let req = self
            .handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace();
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let target = format!(
                    "{ip} lladdr {} on {}",
                    format_mac(&mac),
                    self.describe(index).await
                );
                Err(Error::Kernel {
                    op: "add neighbour",
                    target,
                    source: nl_io(e),
                })
            }
        }
    }

    /// Removes the neighbour entry for `ip`; Ok(false) when there is none.
    pub async fn neigh_del(&self, index: u32, ip: IpAddr) -> Result<bool, Error> {
        match self
            .delete_entry(neigh_message(index, ip), &[libc::ENOENT])
            .await
        {
            Ok(gone) => Ok(gone),
            Err(e) => {
                let target = format!("{ip} on {}", self.describe(index).await);
                Err(Error::Kernel {
                    op: "delete neighbour",
                    target,
                    source: nl_io(e),
                })
            }
        }
    }

    /// The permanent neighbour entries of a device, both families: (IP, MAC).
    pub async fn neigh_entries(&self, index: u32) -> Result<Vec<(IpAddr, [u8; 6])>, Error> {
        let mut msgs = self
            .neighbour_dump(AddressFamily::Inet, "list neighbours")
            .await?;
        msgs.append(
            &mut self
                .neighbour_dump(AddressFamily::Inet6, "list neighbours")
                .await?,
        );
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| Some((destination(m)?, lladdr(m)?)))
            .collect())
    }
}

/// One FDB or neighbour entry added (or replaced) or deleted, as the kernel announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourChange {
    pub added: bool,
    /// A bridge-family (FDB) entry; otherwise an IPv4/IPv6 neighbour entry.
    pub fdb: bool,
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    /// The neighbour's address, or the FDB entry's destination (the remote VTEP).
    pub ip: Option<IpAddr>,
    pub permanent: bool,
}

/// The kernel's notifications of FDB and neighbour entries added, replaced and deleted in the
/// current namespace (RTMGRP_NEIGH), for whoever must see an entry arrive or go without polling
/// the tables (the benchmarks).
pub struct NeighbourEvents {
    /// Keeps the socket's connection task running.
    _netlink: Netlink,
    notifications: crate::link::Notifications,
}

impl NeighbourEvents {
    /// Subscribes in the calling thread's network namespace.
    pub async fn current() -> Result<NeighbourEvents, Error> {
        let (netlink, notifications) = crate::link::subscribe(rtnetlink::constants::RTMGRP_NEIGH)?;
        Ok(NeighbourEvents {
            _netlink: netlink,
            notifications,
        })
    }

    /// The next change; None once the socket is closed.
    pub async fn next(&mut self) -> Option<NeighbourChange> {
        loop {
            let (message, _) = futures::StreamExt::next(&mut self.notifications).await?;
            let (added, m) = match message.payload {
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewNeighbour(m),
                ) => (true, m),
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::DelNeighbour(m),
                ) => (false, m),
                _ => continue,
            };
            return Some(change(added, &m));
        }
    }
}

fn change(added: bool, m: &NeighbourMessage) -> NeighbourChange {
    NeighbourChange {
        added,
        fdb: m.header.family == AddressFamily::Bridge,
        index: m.header.ifindex,
        mac: lladdr(m),
        ip: destination(m),
        permanent: m.header.state == NeighbourState::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_fdb_entry_reads_as_such() {
        let mut m = fdb_message(7, [2, 0, 0, 0, 0, 9], "192.0.2.1".parse().unwrap());
        m.header.state = NeighbourState::Permanent;
        let c = change(false, &m);
        assert!(!c.added && c.fdb && c.permanent);
        assert_eq!((c.index, c.mac), (7, Some([2, 0, 0, 0, 0, 9])));
        assert_eq!(c.ip, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn decodes_raw_destinations_by_length() {
        let v4 = NeighbourAddress::Other(vec![192, 0, 2, 7]);
        assert_eq!(decode_address(&v4), Some("192.0.2.7".parse().unwrap()));
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[15] = 1;
        assert_eq!(
            decode_address(&NeighbourAddress::Other(b.to_vec())),
            Some("fd00::1".parse().unwrap())
        );
        assert_eq!(
            decode_address(&NeighbourAddress::Other(vec![1, 2, 3])),
            None
        );
    }
}
