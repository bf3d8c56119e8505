//! Addresses and routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use nix::libc;
use rtnetlink::RouteMessageBuilder;

use crate::error::{nl_errno, nl_io, Error};
use crate::link::{Link, Netlink};

/// The address an AddressMessage assigns to the interface. For IPv4, IFA_LOCAL is the
/// interface's own address (IFA_ADDRESS is the peer on point-to-point links); IPv6 sends only
/// IFA_ADDRESS unless there is a peer.
fn own_address(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(address)
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The routing table a route belongs to; RTA_TABLE overrides the 8-bit header field.
fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn route_oif(msg: &RouteMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        RouteAttribute::MultiPath(hops) => hops.first().map(|h| h.interface_index),
        _ => None,
    })
}

fn route_gateway(msg: &RouteMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => route_ip(g),
        _ => None,
    })
}

fn route_priority(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

/// Destination of a route; a route without RTA_DST is the default route of its family.
fn route_destination(msg: &RouteMessage) -> Option<IpNetwork> {
    let len = msg.header.destination_prefix_length;
    let ip = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => route_ip(d),
            _ => None,
        })
        .or(match msg.header.address_family {
            AddressFamily::Inet => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            AddressFamily::Inet6 => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            _ => None,
        })?;
    IpNetwork::new(ip, len).ok()
}

/// A main-table unicast route: the only kind this crate creates or reports.
fn is_main_unicast(msg: &RouteMessage) -> bool {
    route_table(msg) == u32::from(RouteHeader::RT_TABLE_MAIN)
        && msg.header.kind == RouteType::Unicast
}

/// The network part of `net`: the kernel refuses an IPv4 route whose destination has host
/// bits set.
fn network_of(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

impl Netlink {
    /// Adds `addr` (with its prefix length, e.g. 10.0.0.2/24) to a link. Already present is
    /// fine. IPv6 addresses are added with IFA_F_NODAD: IPAM hands out unique addresses, and
    /// DAD would leave them tentative (unusable as source) for a second or more.
    pub async fn add_address(&self, index: u32, addr: IpNetwork) -> Result<(), Error> {
        let mut req = self.handle.address().add(index, addr.ip(), addr.prefix());
        if addr.is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if nl_errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => {
                let target = self.describe(index).await;
                Err(Error::Kernel {
                    op: "add address",
                    target: format!("{addr} to {target}"),
                    source: nl_io(e),
                })
            }
        }
    }

    async fn address_messages(&self) -> Result<Vec<AddressMessage>, Error> {
        self.address_messages_of(AddressFamily::Unspec).await
    }

    /// The addresses of one family (Unspec: all), as the kernel dumps them: asking for IPv4
    /// only spares a caller the IPv6 link-local address of every container veth on the host,
    /// which would make each plugin call cost more as the host's containers grow.
    async fn address_messages_of(
        &self,
        family: AddressFamily,
    ) -> Result<Vec<AddressMessage>, Error> {
        let mut request = self.handle.address().get();
        request.message_mut().header.family = family;
        request
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::kernel("list addresses", "in namespace", nl_io(e)))
    }

    /// The addresses of a link with their prefix length, e.g. 10.0.0.2/24 (IPv6 link-local
    /// addresses included).
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNetwork>, Error> {
        let msgs = self.address_messages().await?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| IpNetwork::new(own_address(m)?, m.header.prefix_len).ok())
            .collect())
    }

    /// The first link holding `addr` (e.g. the underlay device of a configured VTEP address).
    pub async fn link_with_address(&self, addr: IpAddr) -> Result<Option<Link>, Error> {
        let msgs = self.address_messages_of(family_of(addr)).await?;
        let found = msgs.iter().find(|m| {
            m.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if *ip == addr))
        });
        match found {
            Some(m) => self.link_by_index(m.header.index).await,
            None => Ok(None),
        }
    }

    /// Adds a main-table route to `dst` (host bits are ignored) out of `index`, via `gw`, or
    /// on-link (scope link) when `gw` is None. An identical route already present is fine.
    pub async fn add_route(
        &self,
        dst: IpNetwork,
        gw: Option<IpAddr>,
        index: u32,
    ) -> Result<(), Error> {
        let dst = network_of(dst);
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.ip(), dst.prefix())
            .map_err(|e| Error::invalid("add route", dst.to_string(), e.to_string()))?
            .output_interface(index);
        builder = match gw {
            Some(gw) => builder
                .gateway(gw)
                .map_err(|e| Error::invalid("add route", dst.to_string(), e.to_string()))?,
            None => builder.scope(RouteScope::Link),
        };
        match self.handle.route().add(builder.build()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if nl_errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => {
                let via = gw.map_or("on-link".to_string(), |g| format!("via {g}"));
                let target = format!("{dst} {via} dev {}", self.describe(index).await);
                Err(Error::Kernel {
                    op: "add route",
                    target,
                    source: nl_io(e),
                })
            }
        }
    }

    async fn route_messages(&self) -> Result<Vec<RouteMessage>, Error> {
        self.route_messages_of(&[AddressFamily::Inet, AddressFamily::Inet6])
            .await
    }

    async fn route_messages_of(
        &self,
        families: &[AddressFamily],
    ) -> Result<Vec<RouteMessage>, Error> {
        let mut all = Vec::new();
        for &family in families {
            let mut filter = RouteMessageBuilder::<IpAddr>::new().build();
            filter.header.address_family = family;
            let mut msgs: Vec<RouteMessage> = self
                .handle
                .route()
                .get(filter)
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::kernel("list routes", "in namespace", nl_io(e)))?;
            all.append(&mut msgs);
        }
        Ok(all)
    }

    /// Deletes the main-table route to `dst` out of `index`; Ok(false) when there is none.
    pub async fn del_route(&self, dst: IpNetwork, index: u32) -> Result<bool, Error> {
        let dst = network_of(dst);
        let routes = self.route_messages().await?;
        let Some(found) = routes.into_iter().find(|m| {
            is_main_unicast(m) && route_oif(m) == Some(index) && route_destination(m) == Some(dst)
        }) else {
            return Ok(false);
        };
        // Send back only what identifies the route: the kernel matches every field it is given.
        let mut msg = RouteMessage::default();
        msg.header = found.header;
        msg.attributes = found
            .attributes
            .into_iter()
            .filter(|a| {
                matches!(
                    a,
                    RouteAttribute::Destination(_)
                        | RouteAttribute::Gateway(_)
                        | RouteAttribute::Oif(_)
                        | RouteAttribute::Table(_)
                        | RouteAttribute::Priority(_)
                )
            })
            .collect();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if nl_errno(&e) == Some(libc::ESRCH) => Ok(false),
            Err(e) => {
                let target = format!("{dst} dev {}", self.describe(index).await);
                Err(Error::Kernel {
                    op: "delete route",
                    target,
                    source: nl_io(e),
                })
            }
        }
    }

    /// Main-table unicast routes out of `index`, both families: (destination, gateway).
    pub async fn routes(&self, index: u32) -> Result<Vec<(IpNetwork, Option<IpAddr>)>, Error> {
        let routes = self.route_messages().await?;
        Ok(routes
            .iter()
            .filter(|m| is_main_unicast(m) && route_oif(m) == Some(index))
            .filter_map(|m| Some((route_destination(m)?, route_gateway(m))))
            .collect())
    }

    /// The link carrying the main-table default route of the family (lowest metric wins) and
    /// its first global address of that family. None when there is no default route or the
    /// link has no global address.
    pub async fn default_route_interface(&self, v6: bool) -> Result<Option<(Link, IpAddr)>, Error> {
        let family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        // One family's routes and addresses: the host's IPv6 ones grow with its container veths.
        let routes = self.route_messages_of(&[family]).await?;
        let best = routes
            .iter()
            .filter(|m| {
                m.header.address_family == family
                    && m.header.destination_prefix_length == 0
                    && is_main_unicast(m)
            })
            .filter_map(|m| Some((route_priority(m), route_oif(m)?)))
            .min_by_key(|(priority, _)| *priority);
        let Some((_, oif)) = best else {
            return Ok(None);
        };
        let Some(link) = self.link_by_index(oif).await? else {
            return Ok(None);
        };
        let msgs = self.address_messages_of(family).await?;
        let global = msgs
            .iter()
            .filter(|m| {
                m.header.index == oif
                    && m.header.family == family
                    && m.header.scope == AddressScope::Universe
            })
            .find_map(own_address);
        Ok(global.map(|ip| (link, ip)))
    }
}

fn family_of(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}
