//! The netlink connection and everything about links: lookup, bridge, VXLAN, veth, ports.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd};

use futures::TryStreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoPortData, InfoVeth,
    InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::libc;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMacVlan, LinkUnspec, LinkVeth, LinkVxlan};

use crate::error::{nl_errno, nl_io, Error};
use crate::mac::valid_ifname;
use crate::netns::Netns;

/// Refuses, before asking the kernel, a name no device can have.
fn interface_name(op: &'static str, name: &str) -> Result<(), Error> {
    if valid_ifname(name) {
        Ok(())
    } else {
        Err(Error::invalid(op, name, "not a valid interface name"))
    }
}

/// A network device as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND: "veth", "bridge", "vxlan", "dummy", ...; empty for devices without one
    /// (lo, physical NICs).
    pub kind: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// The bridge (or other controller) this device is enslaved to.
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub alias: Option<String>,
    /// For a veth: the ifindex of its peer, in the peer's namespace (IFLA_LINK).
    pub peer_index: Option<u32>,
    /// For a vxlan: its VNI.
    pub vxlan_id: Option<u32>,
}

impl Link {
    pub(crate) fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: String::new(),
            mac: None,
            mtu: 0,
            master: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            alias: None,
            peer_index: None,
            vxlan_id: None,
        };
        let mut iflink = None;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Controller(m) if *m != 0 => link.master = Some(*m),
                LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a.clone()),
                LinkAttribute::Link(i) => iflink = Some(*i),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = k.to_string(),
                            LinkInfo::Data(InfoData::Vxlan(vx)) => {
                                link.vxlan_id = vx.iter().find_map(|v| match v {
                                    InfoVxlan::Id(id) => Some(*id),
                                    _ => None,
                                })
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if link.kind == "veth" {
            link.peer_index = iflink;
        }
        link
    }
}

/// A route-netlink socket bound to one network namespace, with its connection task running
/// on the current tokio runtime. Dropping it stops the task.
pub struct Netlink {
    pub(crate) handle: Handle,
    connection: tokio::task::JoinHandle<()>,
    /// The namespace the socket lives in, for what netlink cannot do there (sysctls).
    ns: Netns,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// What [`rtnetlink::from_socket`] delivers besides answers: the notifications of the
/// multicast groups the socket is bound to.
pub(crate) type Notifications = futures::channel::mpsc::UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

/// Hands a synchronous netlink socket to the current tokio runtime and starts its
/// connection task.
fn spawn_connection(
    target: &str,
    socket: Socket,
    ns: Netns,
) -> Result<(Netlink, Notifications), Error> {
    let failed = |e: io::Error| Error::kernel("open netlink socket in", target, e);
    // tokio::spawn and the socket's reactor registration would panic outside a runtime.
    tokio::runtime::Handle::try_current().map_err(|e| failed(io::Error::other(e.to_string())))?;
    socket.set_non_blocking(true).map_err(failed)?;
    let fd = socket.into_raw_fd();
    // TokioSocket::from_raw_fd panics rather than failing when the runtime was built without
    // its IO driver; on unwind the socket inside is dropped and the descriptor closed.
    // SAFETY: the descriptor comes straight from into_raw_fd, so TokioSocket owns it alone.
    let socket =
        std::panic::catch_unwind(|| unsafe { TokioSocket::from_raw_fd(fd) }).map_err(|_| {
            failed(io::Error::other(
                "the tokio runtime has no IO driver (build it with enable_io or enable_all)",
            ))
        })?;
    let (conn, handle, notifications) = rtnetlink::from_socket(socket);
    let netlink = Netlink {
        handle,
        connection: tokio::spawn(conn),
        ns,
    };
    Ok((netlink, notifications))
}

/// A socket in the calling thread's namespace bound to the multicast `groups` (RTMGRP_*).
pub(crate) fn subscribe(groups: u32) -> Result<(Netlink, Notifications), Error> {
    let target = "current namespace";
    let mut socket = Socket::new(NETLINK_ROUTE)
        .map_err(|e| Error::kernel("open netlink socket in", target, e))?;
    socket
        .bind(&rtnetlink::sys::SocketAddr::new(0, groups))
        .map_err(|e| Error::kernel("subscribe to notifications in", target, e))?;
    spawn_connection(target, socket, Netns::current()?)
}

/// The kernel's notifications of links created, changed or deleted in the current namespace
/// (RTMGRP_LINK), by link name. Dropping it closes the socket.
pub struct LinkEvents {
    /// Keeps the socket's connection task running.
    _netlink: Netlink,
    notifications: Notifications,
}

impl LinkEvents {
    /// Subscribes in the calling thread's network namespace.
    pub async fn current() -> Result<LinkEvents, Error> {
        let (netlink, notifications) = subscribe(rtnetlink::constants::RTMGRP_LINK)?;
        Ok(LinkEvents {
            _netlink: netlink,
            notifications,
        })
    }

    /// The name of the next link notified about (empty when the kernel's message had none);
    /// None once the socket is closed. A notification lost to a full socket buffer is not
    /// reported: whoever must not miss one also looks at the links now and then.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            let (message, _) = futures::StreamExt::next(&mut self.notifications).await?;
            match message.payload {
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link),
                ) => return Some(Link::from_message(&link).name),
                _ => continue,
            }
        }
    }
}

/// The far end of a veth pair, as [`Netlink::create_veth_on`] makes it (a container's interface).
pub struct VethPeer<'a> {
    pub name: &'a str,
    pub ns: &'a Netns,
    pub mac: Option<[u8; 6]>,
    /// IPv6 as the kernel sets it up (a link-local address), or, for an interface with no IPv6
    /// address to carry, none of its own before the end comes up
    /// ([`Netlink::no_ipv6_link_local`]): then no duplicate address detection, router
    /// solicitations or MLD reports, work the kernel does a second later under the RTNL lock that
    /// every ADD needs. (Docker turns IPv6 off in its containers on networks without it.)
    pub ipv6: bool,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub async fn current() -> Result<Netlink, Error> {
        let target = "current namespace";
        let socket = Socket::new(NETLINK_ROUTE)
            .map_err(|e| Error::kernel("open netlink socket in", target, e))?;
        Ok(spawn_connection(target, socket, Netns::current()?)?.0)
    }

    /// A socket that lives in `ns`. It is opened on a short-lived thread inside `ns` (a socket
    /// stays in the namespace it was created in) and then used from the caller's runtime.
    /// The calling thread blocks for the thread's lifetime, well under a millisecond.
    pub async fn in_netns(ns: &Netns) -> Result<Netlink, Error> {
        let target = ns.path().display().to_string();
        let socket = ns
            .run(|| Socket::new(NETLINK_ROUTE))?
            .map_err(|e| Error::kernel("open netlink socket in", target.clone(), e))?;
        Ok(spawn_connection(&target, socket, ns.try_clone()?)?.0)
    }

    /// Sends one request and waits for its acknowledgement, with flags chosen by the caller
    /// (rtnetlink's request types fix theirs).
    pub(crate) async fn request_ack(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), rtnetlink::Error> {
        let mut req = NetlinkMessage::from(message);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut responses = handle.request(req)?;
        while let Some(msg) = futures::StreamExt::next(&mut responses).await {
            if let NetlinkPayload::Error(err) = msg.payload {
                if err.code.is_some() {
                    return Err(rtnetlink::Error::NetlinkError(err));
                }
            }
        }
        Ok(())
    }

    /// "name (ifindex N)" for messages; only looked up when an error is being reported.
    pub(crate) async fn describe(&self, index: u32) -> String {
        match self.link_by_index(index).await {
            Ok(Some(link)) => format!("{} (ifindex {index})", link.name),
            _ => format!("ifindex {index}"),
        }
    }

    async fn link_message_by_index(&self, index: u32) -> Result<Option<LinkMessage>, Error> {
        // The kernel reads the index as a signed int and treats 0 and negatives as "no index".
        if index == 0 || index > i32::MAX as u32 {
            return Ok(None);
        }
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg),
            Err(e) if nl_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(Error::kernel(
                "look up link",
                format!("ifindex {index}"),
                nl_io(e),
            )),
        }
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>, Error> {
        if !valid_ifname(name) {
            // No device can have this name; asking the kernel would only give EINVAL.
            return Ok(None);
        }
        let mut stream = self.handle.link().get().match_name(name).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
            // A missing name is ENODEV, not an empty answer.
            Err(e) if nl_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(Error::kernel("look up link", name, nl_io(e))),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, Error> {
        Ok(self
            .link_message_by_index(index)
            .await?
            .as_ref()
            .map(Link::from_message))
    }

    pub async fn links(&self) -> Result<Vec<Link>, Error> {
        self.dump(AddressFamily::Unspec, None, "in namespace").await
    }

    /// The ports of bridge `master`. The kernel filters the dump (IFLA_MASTER in the request),
    /// so a look at a bridge's ports reads those, not every link of the host with its
    /// statistics. Filtered here again for a kernel that would ignore the attribute.
    pub async fn links_with_master(&self, master: u32) -> Result<Vec<Link>, Error> {
        let filter = LinkAttribute::Controller(master);
        let links = self.dump(AddressFamily::Unspec, Some(filter), "on a bridge");
        Ok(links
            .await?
            .into_iter()
            .filter(|l| l.master == Some(master))
            .collect())
    }

    /// The links of one kind ("bridge", "vxlan", …). The kernel filters the dump (IFLA_LINKINFO's
    /// kind in the request), so a look for bridges costs what the bridges do, not every veth of
    /// the host (overlayd looks on every notification about a bridge, one or more per container
    /// started or stopped). Filtered here again for a kernel that would ignore the attribute.
    pub async fn links_of_kind(&self, kind: &str) -> Result<Vec<Link>, Error> {
        let filter = LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind.into())]);
        let links = self.dump(AddressFamily::Unspec, Some(filter), kind);
        Ok(links
            .await?
            .into_iter()
            .filter(|l| l.kind == kind)
            .collect())
    }

    /// The names of the ports of bridge `master`, from the bridge family's dump: one short
    /// message a port, without the statistics and link details of a full link dump, for a DEL
    /// that only asks whether a bridge is still used (scripts/bench.sh fleet: the full dump was a
    /// quarter of a DEL's CPU time at 150 containers a host). The dump holds the ports of every
    /// bridge of the namespace; those of `master` are kept.
    pub async fn port_names(&self, master: u32) -> Result<Vec<String>, Error> {
        let ports = self
            .dump(AddressFamily::Bridge, None, "bridge ports")
            .await?;
        Ok(ports
            .into_iter()
            .filter(|l| l.master == Some(master))
            .map(|l| l.name)
            .collect())
    }

    /// A link dump of `family` (Bridge: the bridge ports' own messages), filtered by the kernel
    /// with `filter` when given.
    async fn dump(
        &self,
        family: AddressFamily,
        filter: Option<LinkAttribute>,
        what: &str,
    ) -> Result<Vec<Link>, Error> {
        let mut request = self.handle.link().get();
        request.message_mut().header.interface_family = family;
        request.message_mut().attributes.extend(filter);
        let msgs: Vec<LinkMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::kernel("list links", what, nl_io(e)))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// Looks a link up again after creating it; its absence means someone deleted it under us.
    async fn must_exist(&self, op: &'static str, name: &str) -> Result<Link, Error> {
        self.link(name)
            .await?
            .ok_or_else(|| Error::kernel(op, name, io::Error::from_raw_os_error(libc::ENODEV)))
    }

    /// Creates a bridge, or returns the existing one of that name; brought up either way.
    /// A non-bridge link of that name is [`Error::Exists`]. `mtu` None leaves the kernel default.
    /// `mac` is set in the message that creates the bridge, so the bridge never exists without it
    /// and keeps it for life (without one, the kernel gives a bridge the lowest MAC of its ports,
    /// changing it as they come and go). An existing bridge keeps the MAC it has.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> Result<Link, Error> {
        interface_name("create bridge", name)?;
        let mut builder = LinkBridge::new(name).up();
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(mac) = mac {
            builder = builder.address(mac.to_vec());
        }
        match self.handle.link().add(builder.build()).execute().await {
            Ok(()) => {}
            Err(e) if nl_errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(Error::kernel("create bridge", name, nl_io(e))),
        }
        let link = self.must_exist("create bridge", name).await?;
        if link.kind != "bridge" {
            return Err(Error::Exists {
                name: name.to_string(),
            });
        }
        if link.up {
            return Ok(link);
        }
        self.set_up(link.index).await?;
        self.must_exist("create bridge", name).await
    }

    /// Creates a VXLAN device (VNI, UDP port, local VTEP address, underlay ifindex) with
    /// learning off and proxy on, so ARP/ND are answered from the neighbour table and MACs
    /// come only from static FDB entries. Brought up. An existing VXLAN of that name with the
    /// same VNI is returned as is; any other link of that name is [`Error::Exists`].
    /// The kernel clamps the MTU to the underlay's MTU minus 50 (IPv4) or 70 (IPv6).
    pub async fn ensure_vxlan(
        &self,
        name: &str,
        vni: u32,
        port: u16,
        local: IpAddr,
        underlay: u32,
        mtu: u32,
    ) -> Result<Link, Error> {
        interface_name("create vxlan", name)?;
        if vni == 0 || vni >= 1 << 24 {
            return Err(Error::invalid(
                "create vxlan",
                name,
                format!("VNI {vni} is outside 1..16777215"),
            ));
        }
        let builder = LinkVxlan::new(name, vni)
            .port(port)
            .learning(false)
            .proxy(true)
            .dev(underlay);
        let builder = match local {
            IpAddr::V4(a) => builder.local(a),
            IpAddr::V6(a) => builder.local6(a),
        };
        let msg = builder.mtu(mtu).up().build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => {}
            Err(e) if nl_errno(&e) == Some(libc::EEXIST) => {
                if self.link(name).await?.is_none() {
                    // The name is free, so the clash is the VNI: the kernel allows one VXLAN
                    // device per (VNI, port, local address) in a namespace.
                    return Err(Error::kernel(
                        "create vxlan (another VXLAN device already uses this VNI and port)",
                        name,
                        nl_io(e),
                    ));
                }
            }
            Err(e) => return Err(Error::kernel("create vxlan", name, nl_io(e))),
        }
        let link = self.must_exist("create vxlan", name).await?;
        if link.kind != "vxlan" || link.vxlan_id != Some(vni) {
            return Err(Error::Exists {
                name: name.to_string(),
            });
        }
        if link.up {
            return Ok(link);
        }
        self.set_up(link.index).await?;
        self.must_exist("create vxlan", name).await
    }

    /// Creates a veth pair: `host_name` in this namespace, `peer_name` directly inside
    /// `peer_ns`, both with `mtu` and both brought up; `peer_mac` sets the peer's address.
    /// Either name already taken is [`Error::Exists`] naming it.
    /// Returns (host end, peer end as seen from inside `peer_ns`).
    pub async fn create_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_ns: &Netns,
        mtu: u32,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<(Link, Link), Error> {
        let peer = VethPeer {
            name: peer_name,
            ns: peer_ns,
            mac: peer_mac,
            ipv6: true,
        };
        self.create_veth_on(host_name, &peer, mtu, None).await
    }

    /// [`Netlink::create_veth`] with the host end a port of bridge `master` from its creation
    /// (IFLA_MASTER in the same message): a plugin killed right after leaves a port of that
    /// bridge, which its GC can find, not a veth that belongs to no network.
    pub async fn create_veth_on(
        &self,
        host_name: &str,
        peer: &VethPeer<'_>,
        mtu: u32,
        master: Option<u32>,
    ) -> Result<(Link, Link), Error> {
        let (peer_name, peer_ns, peer_mac, peer_ipv6) = (peer.name, peer.ns, peer.mac, peer.ipv6);
        for name in [host_name, peer_name] {
            interface_name("create veth", name)?;
        }
        let peer_nl = Netlink::in_netns(peer_ns).await?;
        // The CNI spec wants an error when the container interface exists; check it first so
        // the error names the right device.
        if peer_nl.link(peer_name).await?.is_some() {
            return Err(Error::Exists {
                name: peer_name.to_string(),
            });
        }
        if self.link(host_name).await?.is_some() {
            return Err(Error::Exists {
                name: host_name.to_string(),
            });
        }
        // MTU and MAC must be in the peer's own message: the outer .mtu() covers only the
        // host end.
        // No .up() here: the kernel configures the peer before the pair is joined, and opening
        // a veth without its peer fails with ENOTCONN. The peer is brought up afterwards.
        let mut peer = LinkUnspec::new_with_name(peer_name)
            .mtu(mtu)
            .setns_by_fd(peer_ns.as_fd().as_raw_fd());
        if let Some(mac) = peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let mut msg = LinkVeth::new(host_name, peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .mtu(mtu)
            .up();
        if let Some(master) = master {
            msg = msg.controller(master);
        }
        let msg = msg.build();
        if let Err(e) = self.handle.link().add(msg).execute().await {
            if nl_errno(&e) == Some(libc::EEXIST) {
                // Lost a race with another creator; report whichever name is now taken.
                if peer_nl.link(peer_name).await?.is_some() {
                    return Err(Error::Exists {
                        name: peer_name.to_string(),
                    });
                }
                return Err(Error::Exists {
                    name: host_name.to_string(),
                });
            }
            return Err(Error::kernel(
                "create veth",
                format!("{host_name} (peer {peer_name})"),
                nl_io(e),
            ));
        }
        let result = async {
            let host = self.must_exist("create veth", host_name).await?;
            let far = peer_nl.must_exist("create veth", peer_name).await?;
            // Before the peer comes up: without a carrier neither end has IPv6 yet.
            if master.is_some() {
                self.disable_ipv6(host_name)?;
            }
            if !peer_ipv6 {
                peer_nl.no_ipv6_link_local(far.index).await?;
            }
            peer_nl.set_up(far.index).await?;
            let far = peer_nl.must_exist("create veth", peer_name).await?;
            Ok::<_, Error>((host, far))
        }
        .await;
        if result.is_err() {
            // Do not leave a half-configured pair behind; deleting one end removes both.
            let _ = self.delete_link(host_name).await;
        }
        result
    }

    /// Creates a macvlan child of `lower` (bridge mode) named `name` in this namespace, with
    /// `mac` and `mtu`. For a container interface that another party (Docker) moves into the
    /// container: a frame to or from it crosses no veth and no bridge port (see
    /// [`Netlink::bridge_local_add`] for the way in from the lower bridge's other ports). Left
    /// down: a move takes a device down anyway, and whoever moves it brings it up where it
    /// lands. Without `ipv6`, it makes no link-local address (as [`VethPeer::ipv6`]).
    pub async fn create_macvlan(
        &self,
        name: &str,
        lower: u32,
        mac: [u8; 6],
        mtu: u32,
        ipv6: bool,
    ) -> Result<Link, Error> {
        interface_name("create macvlan", name)?;
        let msg = LinkMacVlan::new(name, lower, MacVlanMode::Bridge)
            .address(mac.to_vec())
            .mtu(mtu)
            .build();
        if let Err(e) = self.handle.link().add(msg).execute().await {
            if nl_errno(&e) == Some(libc::EEXIST) {
                return Err(Error::Exists {
                    name: name.to_string(),
                });
            }
            return Err(Error::kernel("create macvlan", name, nl_io(e)));
        }
        let result = async {
            let link = self.must_exist("create macvlan", name).await?;
            if !ipv6 {
                self.no_ipv6_link_local(link.index).await?;
            }
            Ok(link)
        }
        .await;
        if result.is_err() {
            let _ = self.delete_link(name).await;
        }
        result
    }

    /// Turns IPv6 off on link `name` of this handle's namespace (its `disable_ipv6` sysctl;
    /// netlink cannot set it). For a bridge port, which needs no address of its own: with IPv6
    /// each port got a link-local address, DAD, MLD reports, and three routes in the host's IPv6
    /// table, which the kernel walks on every device event; an ADD then cost more the more
    /// containers its host had (perf, 150 containers a host: `fib6_ifdown`, and the RTNL lock
    /// held by the MLD and address-configuration work). Nothing to do on a kernel without IPv6.
    pub fn disable_ipv6(&self, name: &str) -> Result<(), Error> {
        let key = format!("net/ipv6/conf/{name}/disable_ipv6");
        let set = move || {
            if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
                return Ok(());
            }
            crate::set_sysctl(&key, "1")
        };
        if Netns::current()?.inode() == self.ns.inode() {
            set()
        } else {
            self.ns.run(set)?
        }
    }

    async fn set_link(&self, op: &'static str, index: u32, msg: LinkMessage) -> Result<(), Error> {
        match self.handle.link().set(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::kernel(op, self.describe(index).await, nl_io(e))),
        }
    }

    /// Enslaves `index` to the bridge `master`.
    pub async fn set_master(&self, index: u32, master: u32) -> Result<(), Error> {
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        self.set_link("set master of", index, msg).await
    }

    /// The interface makes no IPv6 address of its own (addrgenmode none), so it never has a
    /// link-local address to detect duplicates of, solicit routers from or report multicast
    /// groups for. A netlink request: the `disable_ipv6` sysctl of an interface named `eth0`
    /// walks every namespace's `eth0` entry in /proc/sys's shared dentry cache, a cost that grows
    /// with the containers on the machine (10% of an ADD's CPU time at 1,000).
    pub async fn no_ipv6_link_local(&self, index: u32) -> Result<(), Error> {
        let inet6 = AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]);
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![inet6]))
            .build();
        self.set_link("turn off the IPv6 link-local address of", index, msg)
            .await
    }

    pub async fn set_up(&self, index: u32) -> Result<(), Error> {
        self.set_link(
            "bring up",
            index,
            LinkUnspec::new_with_index(index).up().build(),
        )
        .await
    }

    /// Takes a link down (IFF_UP cleared); a bridge port's learnt FDB entries go with it.
    pub async fn set_down(&self, index: u32) -> Result<(), Error> {
        self.set_link(
            "take down",
            index,
            LinkUnspec::new_with_index(index).down().build(),
        )
        .await
    }

    /// Sets IFLA_IFALIAS; an empty alias removes it.
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<(), Error> {
        self.set_link(
            "set alias of",
            index,
            LinkUnspec::new_with_index(index).alias(alias).build(),
        )
        .await
    }

    /// Bridge port isolation (IFLA_BRPORT_ISOLATED): isolated ports of a bridge cannot reach
    /// each other, only non-isolated ports (Docker's icc=false).
    pub async fn set_port_isolated(&self, index: u32, isolated: bool) -> Result<(), Error> {
        let msg = LinkBridgePort::new(index).isolated(isolated).build();
        match self.handle.link().set_port(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::kernel(
                "set port isolation of",
                self.describe(index).await,
                nl_io(e),
            )),
        }
    }

    /// Whether a bridge port is isolated. A link that is not a bridge port is an error.
    pub async fn port_isolated(&self, index: u32) -> Result<bool, Error> {
        let msg = self.link_message_by_index(index).await?.ok_or_else(|| {
            Error::kernel(
                "read port isolation of",
                format!("ifindex {index}"),
                io::Error::from_raw_os_error(libc::ENODEV),
            )
        })?;
        let port_data = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::PortData(InfoPortData::BridgePort(p)) => Some(p),
                _ => None,
            }),
            _ => None,
        });
        let Some(port_data) = port_data else {
            let name = Link::from_message(&msg).name;
            return Err(Error::invalid(
                "read port isolation of",
                name,
                "not a bridge port",
            ));
        };
        Ok(port_data
            .iter()
            .any(|p| matches!(p, InfoBridgePort::Isolated(true))))
    }

    /// Deletes a link by name; Ok(false) when it is absent. Deleting either end of a veth
    /// removes both.
    pub async fn delete_link(&self, name: &str) -> Result<bool, Error> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            // Gone between lookup and delete (e.g. its veth peer was deleted).
            Err(e) if nl_errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(Error::kernel("delete link", name, nl_io(e))),
        }
    }
}
