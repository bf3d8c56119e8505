//! gwbridge-egress: a chained CNI plugin that gives a container one more interface (`ifname`,
//! default gwb0) on a bridge local to the host (`bridge`, default cni_gwbridge), for egress through
//! masquerade and for published ports: Docker's docker_gwbridge, for any main plugin (vxlan-overlay).
//!
//! The interface belongs to the container, not to a network: a container on several networks
//! whose chains include gwbridge-egress has one, shared (as Docker's containers have one
//! docker_gwbridge interface whatever their overlay networks). Each network's use of it is an
//! attachment record in nftables (`attachments` chain, tagged network:container/ifname); the
//! records of the container on that interface are its reference count. ADD of a further network
//! records its attachment and publishes its ports to the shared address (no veth, no IPAM ADD,
//! no route); DEL removes that network's rules, and the veth and allocation only with the last
//! record. All of it under the per-host lock, so two networks' ADDs for one container make one
//! interface.
//!
//! - ADD (prevResult required): an address (see below); the bridge on first use, with the
//!   gateway address of the allocation, and forwarding on; a veth `gw<hash>` on the bridge and
//!   `ifname` in the container with its addresses, the on-link subnet, and a default route via the gateway unless
//!   the chain already has one for that family; in nftables, masquerade for the subnet, icc=false
//!   filtering, and the container's published ports. Everything done is undone when a step fails.
//! - DEL: rules of the attachment; veth and allocation when no other network of the container
//!   uses them; the bridge and its rules when it has no port left. Idempotent, needs neither
//!   prevResult nor CNI_NETNS.
//! - CHECK: interface, addresses, routes, bridge port, masquerade and published ports as ADD left
//!   them; the IPAM's CHECK when there is an `ipam` section.
//! - GC: attachments of this network that are not valid lose their rules, and veth and
//!   allocation when no other network of that container still uses them.
//! - STATUS: the IPAM's, when there is an `ipam` section.
//!
//! Addresses: without an `ipam` section gwbridge-egress hands out `subnet` (default
//! 172.18.0.0/16) itself, from the attachment records; with one, its plugin does, seeing the
//! bridge's name as network name and `ifname` as CNI_IFNAME. Either way one pool per bridge,
//! shared by every network that chains onto that bridge, never mixed with the main plugin's.

pub mod config;
mod ipam;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cni::skel::block_on;
use cni::{codes, CniError, CniResult, Interface, IpConfig, Plugin, Request, Route};
use firewall::{BridgeRules, Firewall, Mapping, Protocol};
use ipnetwork::IpNetwork;
use model::names::{derived_mac, host_veth_name};
use model::Mac;
use netops::{HostLock, Link, Netlink, Netns, VethPeer};

pub use crate::config::Config;
use crate::ipam::{Ipam, Who};

/// Prefix of the host-side veth names (`gw` + 11 hex digits of a hash of container id and ifname).
pub const VETH_PREFIX: &str = "gw";

/// The MTU when neither the configuration nor a default route gives one.
const FALLBACK_MTU: u32 = 1500;

pub struct GwbridgeEgress;

impl Plugin for GwbridgeEgress {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let cfg = Config::from_request(req)?;
        block_on(add(req, &cfg))?
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let cfg = Config::from_request(req)?;
        block_on(del(req, &cfg))?
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let cfg = Config::from_request(req)?;
        block_on(check(req, &cfg))?
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let cfg = Config::from_request(req)?;
        block_on(gc(req, &cfg))?
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let cfg = Config::from_request(req)?;
        ipam(req, &cfg).status()
    }
}

fn ipam<'a>(req: &'a Request, cfg: &'a Config) -> Ipam<'a> {
    Ipam {
        allocator: &cfg.allocator,
        bridge: &cfg.bridge,
        path: &req.env.path,
    }
}

fn who<'a>(req: &'a Request, cfg: &'a Config) -> Who<'a> {
    Who {
        container_id: &req.env.container_id,
        ifname: &cfg.ifname,
        netns: &req.env.netns,
    }
}

fn tag(req: &Request, cfg: &Config) -> String {
    firewall::tag(&req.conf.name, &req.env.container_id, &cfg.ifname)
}

fn check_failed(msg: impl Into<String>) -> CniError {
    CniError::new(codes::CHECK_FAILED, msg)
}

fn prev_result(req: &Request) -> Result<&CniResult, CniError> {
    req.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config(
            "prevResult is missing: gwbridge-egress is a chained plugin and must follow a main \
             plugin (such as vxlan-overlay) in a conflist",
        )
    })
}

/// The runtime's port mappings with their protocol, checked.
fn requested_mappings(req: &Request) -> Result<Vec<(Protocol, &cni::PortMapping)>, CniError> {
    req.conf
        .runtime_config
        .port_mappings
        .iter()
        .map(|pm| {
            let protocol = Protocol::parse(&pm.protocol).ok_or_else(|| {
                CniError::unsupported_field("portMappings.protocol", &pm.protocol)
            })?;
            Ok((protocol, pm))
        })
        .collect()
}

/// The DNAT rules for the requested mappings to the container's bridge addresses: one per address
/// family the container has, or only the family of `hostIP` when one is given.
fn mappings_for(
    requested: &[(Protocol, &cni::PortMapping)],
    addresses: &[IpAddr],
) -> Result<Vec<Mapping>, CniError> {
    let mut out = Vec::new();
    for (protocol, pm) in requested {
        let host_ip = pm.host_ip();
        let before = out.len();
        for addr in addresses {
            if host_ip.is_some_and(|h| h.is_ipv4() != addr.is_ipv4()) {
                continue;
            }
            out.push(Mapping {
                protocol: *protocol,
                host_ip,
                host_port: pm.host_port,
                container_addr: *addr,
                container_port: pm.container_port,
            });
        }
        if out.len() == before {
            return Err(CniError::invalid_config(format!(
                "portMappings: hostIP {} has no address family in common with the container's \
                 gateway-bridge addresses",
                pm.host_ip
            )));
        }
    }
    Ok(out)
}

fn default_net(v4: bool) -> IpNetwork {
    if v4 {
        IpNetwork::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("valid")
    } else {
        IpNetwork::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("valid")
    }
}

fn network_of(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

/// The routes to add in the container: the IPAM's (their gateway defaulting to ours) and a
/// default route via the gateway, per family; no default route of a family the chain already
/// routes by default (then the subnet alone, on-link, is ours).
fn container_routes(prev: &CniResult, allocation: &CniResult) -> Vec<Route> {
    let mut routes = Vec::new();
    for v4 in [true, false] {
        let Some(gw) = allocation
            .ips
            .iter()
            .find(|ip| ip.address.is_ipv4() == v4)
            .and_then(|ip| ip.gateway)
        else {
            continue;
        };
        let mut family: Vec<Route> = allocation
            .routes
            .iter()
            .filter(|r| r.dst.is_ipv4() == v4)
            .map(|r| Route {
                dst: network_of(r.dst),
                gw: r.gw.or(Some(gw)),
                ..r.clone()
            })
            .collect();
        if !family.iter().any(Route::is_default) {
            family.push(Route::new(default_net(v4), Some(gw)));
        }
        if prev.has_default_route(v4) {
            family.retain(|r| !r.is_default());
        }
        routes.extend(family);
    }
    routes
}

/// The bridge addresses: each gateway with the prefix length of the address it serves.
fn gateway_addresses(allocation: &CniResult) -> Result<Vec<IpNetwork>, CniError> {
    if allocation.ips.is_empty() {
        return Err(CniError::invalid_config(
            "the IPAM plugin returned no address for the gateway bridge",
        ));
    }
    allocation
        .ips
        .iter()
        .map(|ip| {
            let gw = ip.gateway.ok_or_else(|| {
                CniError::invalid_config(format!(
                    "the IPAM result has no gateway for {}: the gateway bridge needs one",
                    ip.address
                ))
            })?;
            if gw.is_ipv4() != ip.address.is_ipv4() || !ip.address.contains(gw) {
                return Err(CniError::invalid_config(format!(
                    "gateway {gw} is not in the subnet of {}",
                    ip.address
                )));
            }
            IpNetwork::new(gw, ip.address.prefix())
                .map_err(|e| CniError::invalid_config(format!("gateway {gw}: {e}")))
        })
        .collect()
}

async fn default_mtu(host: &Netlink) -> Result<u32, CniError> {
    for v6 in [false, true] {
        if let Some((link, _)) = host.default_route_interface(v6).await? {
            if link.mtu > 0 {
                return Ok(link.mtu);
            }
        }
    }
    Ok(FALLBACK_MTU)
}

/// Forwarding in the host namespace (the one the plugin runs in). Left on when the last container
/// goes, as every container network does: something else may rely on it by then.
fn enable_forwarding(addresses: &[IpNetwork]) -> Result<(), CniError> {
    let mut keys = Vec::new();
    if addresses.iter().any(|a| a.is_ipv4()) {
        keys.push("net.ipv4.ip_forward");
    }
    if addresses.iter().any(|a| a.is_ipv6()) {
        keys.push("net.ipv6.conf.all.forwarding");
    }
    for key in keys {
        if netops::get_sysctl(key)? != "1" {
            netops::set_sysctl(key, "1")?;
        }
    }
    Ok(())
}

/// Whether br_netfilter hands this host's bridged frames of every family in `addresses` to the IP
/// hooks (net.bridge.bridge-nf-call-iptables / -ip6tables, per network namespace).
fn br_netfilter_covers(addresses: &[IpNetwork]) -> bool {
    let on = |key: &str| netops::get_sysctl(key).is_ok_and(|v| v == "1");
    addresses.iter().all(|a| {
        on(if a.is_ipv4() {
            "net/bridge/bridge-nf-call-iptables"
        } else {
            "net/bridge/bridge-nf-call-ip6tables"
        })
    })
}

/// icc=false is enforced by the forward rules (see the firewall crate) and, where they do not see
/// bridged frames (no br_netfilter), by bridge port isolation: isolated ports reach the bridge
/// (the host) but not each other. Where br_netfilter is active, isolation must stay off: a
/// connection from one container to another's published port is DNATed back into the bridge
/// and then *bridged* between the two ports (br_netfilter's bridged DNAT), which isolation would
/// drop; the forward rules let exactly those through.
fn isolate_ports(cfg: &Config, addresses: &[IpNetwork]) -> bool {
    !cfg.icc && !br_netfilter_covers(addresses)
}

fn bridge_rules(cfg: &Config) -> BridgeRules {
    BridgeRules {
        masquerade: cfg.ip_masq,
        isolate: !cfg.icc,
    }
}

/// What an ADD has done so far, for undoing exactly that when a later step fails.
#[derive(Default)]
struct Done {
    veth: Option<String>,
    rules: bool,
}

async fn add(req: &Request, cfg: &Config) -> Result<CniResult, CniError> {
    let prev = prev_result(req)?;
    let requested = requested_mappings(req)?;
    let container_ns = Netns::open(&req.env.netns)?;
    let tag = tag(req, cfg);
    let fw = Firewall::under_lock();
    let lock = host_lock()?;
    // Refuse a taken port before anything changes (add_container checks again, under this lock,
    // with the targets known). The container's other networks may publish the same mappings on
    // its shared interface (podman hands each network all of them): add_container decides those.
    if !requested.is_empty() {
        let published = fw.list_port_mappings()?;
        for (protocol, pm) in &requested {
            if let Some(p) = published.iter().find(|p| {
                p.mapping.overlaps(*protocol, pm.host_ip(), pm.host_port)
                    && !firewall::is_tag_of(&p.tag, &req.env.container_id, &cfg.ifname)
            }) {
                return Err(firewall::Error::PortInUse {
                    protocol: *protocol,
                    port: pm.host_port,
                    holder: p.tag.clone(),
                }
                .into());
            }
        }
    }
    // The container's interface may already be there, made for another of its networks: then
    // this network joins it (under the lock, so a concurrent ADD of another network of the
    // container either made it before or finds it made).
    let host = Netlink::current().await?;
    let inside = Netlink::in_netns(&container_ns).await?;
    if let Some(shared) = shared_interface(req, cfg, &fw, &host, &inside).await? {
        return join(req, cfg, prev, &shared, &tag, &fw, &inside, &requested).await;
    }
    let ipam = ipam(req, cfg);
    let allocation = ipam.add(who(req, cfg), &fw)?;
    let mut done = Done::default();
    let outcome = attach(
        req,
        cfg,
        prev,
        &allocation,
        (&container_ns, &host, &inside),
        &tag,
        &fw,
        &requested,
        &mut done,
    )
    .await;
    match outcome {
        Ok(result) => Ok(result),
        Err(e) => {
            log::warn!("ADD of {tag} failed, undoing it: {e}");
            if done.rules {
                if let Err(u) = fw.remove_tagged(&tag) {
                    log::warn!("undo: {u}");
                }
            }
            if let Some(veth) = &done.veth {
                match Netlink::current().await {
                    Ok(nl) => {
                        if let Err(u) = nl.delete_link(veth).await {
                            log::warn!("undo: {u}");
                        }
                    }
                    Err(u) => log::warn!("undo: {u}"),
                }
            }
            if let Err(u) = ipam.del(who(req, cfg)) {
                log::warn!("undo: IPAM DEL: {u}");
            }
            match remove_bridge_if_unused(cfg, &fw).await {
                Ok(true) => lock.remove_file(),
                Ok(false) => {}
                Err(u) => log::warn!("undo: {u}"),
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn attach(
    req: &Request,
    cfg: &Config,
    prev: &CniResult,
    allocation: &CniResult,
    // The container's namespace, and netlink in the host's and in it (opened once per call:
    // each is a socket, the container's one made on a thread of its own).
    (container_ns, host, inside): (&Netns, &Netlink, &Netlink),
    tag: &str,
    fw: &Firewall,
    requested: &[(Protocol, &cni::PortMapping)],
    done: &mut Done,
) -> Result<CniResult, CniError> {
    let gateways = gateway_addresses(allocation)?;
    let addresses: Vec<IpAddr> = allocation.ips.iter().map(|ip| ip.address.ip()).collect();
    let mappings = mappings_for(requested, &addresses)?;

    let mtu = match cfg.mtu {
        Some(mtu) => mtu,
        None => default_mtu(host).await?,
    };
    // A MAC of its own from birth: the containers' ARP entries for the gateway stay right as
    // ports come and go (the kernel would otherwise give the bridge its lowest port's MAC).
    let bridge = host
        .ensure_bridge(
            &cfg.bridge,
            Some(mtu),
            Some(derived_mac(&["gwbridge-egress bridge", &cfg.bridge]).octets()),
        )
        .await?;
    let present = host.addresses(bridge.index).await?;
    for gw in &gateways {
        if !present.contains(gw) {
            host.add_address(bridge.index, *gw).await?;
        }
    }
    enable_forwarding(&gateways)?;

    let host_name = host_veth_name(VETH_PREFIX, &req.env.container_id, &cfg.ifname);
    // Born a port of the bridge (its host end then has IPv6 off); the container end makes a
    // link-local address only where it gets an IPv6 address, as vxlan-overlay's.
    let far_end = VethPeer {
        name: &cfg.ifname,
        ns: container_ns,
        mac: None,
        ipv6: addresses.iter().any(IpAddr::is_ipv6),
    };
    let (host_veth, container_veth) = host
        .create_veth_on(&host_name, &far_end, mtu, Some(bridge.index))
        .await?;
    done.veth = Some(host_name.clone());
    host.set_port_isolated(host_veth.index, isolate_ports(cfg, &gateways))
        .await?;

    for ip in &allocation.ips {
        inside.add_address(container_veth.index, ip.address).await?;
    }
    let routes = container_routes(prev, allocation);
    for route in &routes {
        inside
            .add_route(route.dst, route.gw, container_veth.index)
            .await?;
    }

    for ip in &allocation.ips {
        fw.ensure_bridge_rules(&cfg.bridge, ip.address, bridge_rules(cfg))?;
    }
    fw.add_container(tag, &addresses, &mappings)?;
    done.rules = true;

    let mut result = our_result(
        req,
        cfg,
        prev,
        &host_veth,
        &container_veth,
        allocation,
        routes,
    );
    // The main plugin's DNS stays; the IPAM's is used only when the chain has none.
    if result.dns.is_empty() {
        result.dns = allocation.dns.clone();
    }
    Ok(result)
}

/// prevResult plus our two interfaces (the host veth; `ifname` with sandbox and MAC), the
/// addresses of `allocation` on ours, and `routes`.
fn our_result(
    req: &Request,
    cfg: &Config,
    prev: &CniResult,
    host_veth: &Link,
    container_veth: &Link,
    allocation: &CniResult,
    routes: Vec<Route>,
) -> CniResult {
    let mut result = prev.clone();
    result.push_interface(Interface {
        name: host_veth.name.clone(),
        mac: host_veth.mac.as_ref().map(mac_text).unwrap_or_default(),
        mtu: Some(host_veth.mtu),
        ..Default::default()
    });
    let ours = result.push_interface(Interface {
        name: cfg.ifname.clone(),
        mac: container_veth
            .mac
            .as_ref()
            .map(mac_text)
            .unwrap_or_default(),
        mtu: Some(container_veth.mtu),
        sandbox: req.env.netns.clone(),
        ..Default::default()
    });
    result.ips.extend(allocation.ips.iter().map(|ip| IpConfig {
        address: ip.address,
        gateway: ip.gateway,
        interface: Some(ours),
    }));
    result.routes.extend(routes);
    result
}

/// The container's gateway interface as another of its networks left it.
struct Shared {
    /// The other networks' attachment tags.
    holders: BTreeSet<String>,
    host_veth: Link,
    container_veth: Link,
    /// Its addresses (those the attachments record) with their gateways (the bridge's).
    allocation: CniResult,
}

/// The container's interface `ifname` when another network of the container already made it
/// (its attachment is recorded); None when this ADD is the container's first on this bridge.
/// Recorded but not there (the veth, or its peer in this namespace): an error, since making it
/// anew would need a second allocation for the same (container id, ifname), and releasing the
/// first is the other network's DEL's business.
async fn shared_interface(
    req: &Request,
    cfg: &Config,
    fw: &Firewall,
    host: &Netlink,
    inside: &Netlink,
) -> Result<Option<Shared>, CniError> {
    let own = tag(req, cfg);
    let holders: BTreeSet<String> = fw
        .attachments_of(&req.env.container_id, &cfg.ifname)?
        .into_iter()
        .filter(|t| *t != own)
        .collect();
    if holders.is_empty() {
        return Ok(None);
    }
    let list = holders.iter().cloned().collect::<Vec<_>>().join(", ");
    let broken = |what: String| {
        CniError::new(
            codes::KERNEL,
            format!(
                "the gateway interface {} of container {} is recorded for {list}, but {what}: \
                 DEL those attachments (or GC) first",
                cfg.ifname, req.env.container_id
            ),
        )
    };
    let host_name = host_veth_name(VETH_PREFIX, &req.env.container_id, &cfg.ifname);
    let host_veth = host
        .link(&host_name)
        .await?
        .ok_or_else(|| broken(format!("its host veth {host_name} is missing")))?;
    let container_veth = inside
        .link(&cfg.ifname)
        .await?
        .filter(|l| l.peer_index == Some(host_veth.index))
        .ok_or_else(|| {
            broken(format!(
                "{} in {} is not the peer of {host_name}",
                cfg.ifname, req.env.netns
            ))
        })?;
    let bridge = host
        .link(&cfg.bridge)
        .await?
        .filter(|b| b.kind == "bridge" && host_veth.master == Some(b.index))
        .ok_or_else(|| broken(format!("{host_name} is not a port of {}", cfg.bridge)))?;
    let gateways = host.addresses(bridge.index).await?;
    let mut recorded = BTreeSet::new();
    for holder in &holders {
        if let Some(rules) = fw.container(holder)? {
            recorded.extend(rules.addresses);
        }
    }
    let mut allocation = CniResult::default();
    for address in inside.addresses(container_veth.index).await? {
        if !recorded.contains(&address.ip()) {
            continue;
        }
        let gateway = gateways
            .iter()
            .find(|g| g.prefix() == address.prefix() && g.contains(address.ip()))
            .map(|g| g.ip());
        allocation.ips.push(IpConfig {
            address,
            gateway,
            interface: None,
        });
    }
    if allocation.ips.is_empty() {
        return Err(broken(format!(
            "{} has none of the addresses recorded for it",
            cfg.ifname
        )));
    }
    Ok(Some(Shared {
        holders,
        host_veth,
        container_veth,
        allocation,
    }))
}

/// ADD of a further network of a container onto its existing gateway interface: the attachment
/// record and this network's published ports (to the shared addresses), nothing else. The
/// result lists the shared interface and addresses, so that the runtime sees the way out, and
/// the routes ADD would have made that are on the interface (the default route stays the one
/// the first network's ADD made).
#[allow(clippy::too_many_arguments)]
async fn join(
    req: &Request,
    cfg: &Config,
    prev: &CniResult,
    shared: &Shared,
    tag: &str,
    fw: &Firewall,
    inside: &Netlink,
    requested: &[(Protocol, &cni::PortMapping)],
) -> Result<CniResult, CniError> {
    let addresses: Vec<IpAddr> = shared
        .allocation
        .ips
        .iter()
        .map(|ip| ip.address.ip())
        .collect();
    let mappings = mappings_for(requested, &addresses)?;
    for ip in &shared.allocation.ips {
        fw.ensure_bridge_rules(&cfg.bridge, ip.address, bridge_rules(cfg))?;
    }
    // One transaction: recorded with its ports, or nothing changed.
    fw.add_container(tag, &addresses, &mappings)?;
    log::info!(
        "{tag}: joined the container's gateway interface {} (also used by {})",
        cfg.ifname,
        shared
            .holders
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    let present = inside.routes(shared.container_veth.index).await?;
    let routes = container_routes(prev, &shared.allocation)
        .into_iter()
        .filter(|r| {
            present
                .iter()
                .any(|(dst, gw)| network_of(*dst) == r.dst && *gw == r.gw)
        })
        .collect();
    Ok(our_result(
        req,
        cfg,
        prev,
        &shared.host_veth,
        &shared.container_veth,
        &shared.allocation,
        routes,
    ))
}

/// Removes the bridge and its rules when no port is left on it. Returns true when nothing of
/// gwbridge-egress is left on the host at all (no table), so the lock file can go too.
async fn remove_bridge_if_unused(cfg: &Config, fw: &Firewall) -> Result<bool, CniError> {
    let host = Netlink::current().await?;
    match host.link(&cfg.bridge).await? {
        Some(bridge) if bridge.kind == "bridge" => {
            if !host.port_names(bridge.index).await?.is_empty() {
                return Ok(false);
            }
            host.delete_link(&cfg.bridge).await?;
            fw.remove_bridge_rules(&cfg.bridge)?;
        }
        // Something else of that name: not ours to remove.
        Some(_) => return Ok(false),
        None => {
            fw.remove_bridge_rules(&cfg.bridge)?;
        }
    }
    Ok(!fw.exists()?)
}

async fn del(req: &Request, cfg: &Config) -> Result<(), CniError> {
    let tag = tag(req, cfg);
    let fw = Firewall::under_lock();
    let lock = host_lock()?;
    let host = Netlink::current().await?;
    fw.remove_tagged(&tag)?;
    // The interface is the container's: it stays while another of its networks uses it.
    let others = fw.attachments_of(&req.env.container_id, &cfg.ifname)?;
    if !others.is_empty() {
        log::info!(
            "{tag}: removed; the gateway interface {} stays for {}",
            cfg.ifname,
            others.into_iter().collect::<Vec<_>>().join(", ")
        );
        return Ok(());
    }
    // The host side goes by name and takes the container side with it: no namespace needed.
    host.delete_link(&host_veth_name(
        VETH_PREFIX,
        &req.env.container_id,
        &cfg.ifname,
    ))
    .await?;
    // The allocation goes even if the cleanup below fails; its error is reported after.
    let released = ipam(req, cfg).del(who(req, cfg));
    let clean = remove_bridge_if_unused(cfg, &fw).await?;
    released?;
    if clean {
        lock.remove_file();
    }
    Ok(())
}

async fn check(req: &Request, cfg: &Config) -> Result<(), CniError> {
    let prev = prev_result(req)?;
    let requested = requested_mappings(req)?;
    ipam(req, cfg).check(who(req, cfg))?;

    // The container side.
    let ns = Netns::open(&req.env.netns)?;
    let inside = Netlink::in_netns(&ns).await?;
    let netops::check::Checked { link, ips, .. } =
        netops::check::container_interface(&inside, prev, &cfg.ifname).await?;
    if ips.is_empty() {
        return Err(check_failed(format!(
            "prevResult has no address on {}",
            cfg.ifname
        )));
    }

    // The host side.
    let host = Netlink::current().await?;
    let bridge = host
        .link(&cfg.bridge)
        .await?
        .filter(|l| l.kind == "bridge")
        .ok_or_else(|| check_failed(format!("bridge {} is missing", cfg.bridge)))?;
    let host_name = host_veth_name(VETH_PREFIX, &req.env.container_id, &cfg.ifname);
    let veth = host
        .link(&host_name)
        .await?
        .ok_or_else(|| check_failed(format!("host veth {host_name} is missing")))?;
    if veth.master != Some(bridge.index) {
        return Err(check_failed(format!(
            "{host_name} is not a port of {}",
            cfg.bridge
        )));
    }
    if link.peer_index != Some(veth.index) {
        return Err(check_failed(format!(
            "{} in the container is not the peer of {host_name}",
            cfg.ifname
        )));
    }
    let bridge_addrs = host.addresses(bridge.index).await?;
    let subnets: Vec<IpNetwork> = ips.iter().map(|ip| ip.address).collect();
    let isolate = isolate_ports(cfg, &subnets);
    if host.port_isolated(veth.index).await? != isolate {
        return Err(check_failed(format!(
            "{host_name} should {}be an isolated bridge port (icc={})",
            if isolate { "" } else { "not " },
            cfg.icc
        )));
    }
    for ip in &ips {
        let Some(gw) = ip.gateway else { continue };
        let want = IpNetwork::new(gw, ip.address.prefix())
            .map_err(|e| check_failed(format!("gateway {gw}: {e}")))?;
        if !bridge_addrs.contains(&want) {
            return Err(check_failed(format!(
                "{} lacks the gateway address {want}",
                cfg.bridge
            )));
        }
    }

    // The rules.
    let fw = Firewall::new();
    for ip in &ips {
        let missing = fw.missing_bridge_rules(&cfg.bridge, ip.address, bridge_rules(cfg))?;
        if !missing.is_empty() {
            return Err(check_failed(format!(
                "nftables rules missing in table inet {}: {}",
                fw.table(),
                missing.join(", ")
            )));
        }
    }
    let tag = tag(req, cfg);
    let rules = fw
        .container(&tag)?
        .ok_or_else(|| check_failed(format!("table inet {} has no rule of {tag}", fw.table())))?;
    let addresses: Vec<IpAddr> = ips.iter().map(|ip| ip.address.ip()).collect();
    let want: BTreeSet<Mapping> = mappings_for(&requested, &addresses)?.into_iter().collect();
    let have: BTreeSet<Mapping> = rules.mappings.into_iter().collect();
    if want != have {
        let show = |set: &BTreeSet<Mapping>| {
            set.iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(check_failed(format!(
            "published ports of {tag} differ: expected [{}], found [{}]",
            show(&want),
            show(&have)
        )));
    }
    let recorded: BTreeSet<IpAddr> = rules.addresses.into_iter().collect();
    if recorded != addresses.iter().copied().collect() {
        return Err(check_failed(format!(
            "table inet {} records other addresses for {tag}",
            fw.table()
        )));
    }
    Ok(())
}

/// Attachments of this network recorded on this host whose (container id, ifname) is not in
/// `cni.dev/valid-attachments` lose their rules, their veth if one is left, and their allocation
/// (an IPAM DEL for exactly that attachment: the pool is shared with other networks on the bridge,
/// so the IPAM's own GC, which would only know this network's attachments, is not called).
async fn gc(req: &Request, cfg: &Config) -> Result<(), CniError> {
    let valid = req
        .conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("GC needs cni.dev/valid-attachments"))?;
    let network = req.conf.name.as_str();
    let keep: BTreeSet<String> = valid
        .iter()
        .map(|a| firewall::tag(network, &a.container_id, &cfg.ifname))
        .collect();
    let fw = Firewall::under_lock();
    let lock = host_lock()?;
    let host = Netlink::current().await?;
    let ipam = ipam(req, cfg);
    let mut failures = Vec::new();
    for stale in fw.tags()? {
        let Some((net, container_id, ifname)) = firewall::parse_tag(&stale) else {
            continue;
        };
        if net != network || keep.contains(&stale) {
            continue;
        }
        log::info!("GC: removing stale attachment {stale}");
        fw.remove_tagged(&stale)?;
        let Some(container_id) = container_id else {
            log::warn!("GC: {stale} has a shortened container id: its allocation stays");
            continue;
        };
        // Another network of the container (valid, or that network's GC to judge) still uses
        // the interface: it and its allocation stay.
        if !fw.attachments_of(container_id, ifname)?.is_empty() {
            log::info!("GC: {container_id}/{ifname} stays, another network uses it");
            continue;
        }
        host.delete_link(&host_veth_name(VETH_PREFIX, container_id, ifname))
            .await?;
        let gone = Who {
            container_id,
            ifname,
            netns: "",
        };
        if let Err(e) = ipam.del(gone) {
            failures.push(format!("{stale}: {e}"));
        }
    }
    let clean = remove_bridge_if_unused(cfg, &fw).await?;
    if !failures.is_empty() {
        return Err(CniError::new(
            codes::TRY_AGAIN_LATER,
            format!(
                "GC could not release {} allocation(s): {}",
                failures.len(),
                failures.join("; ")
            ),
        ));
    }
    if clean {
        lock.remove_file();
    }
    Ok(())
}

/// An interface's MAC as results and CHECK write it.
fn mac_text(mac: &[u8; 6]) -> String {
    Mac::from(*mac).to_string()
}

/// One lock per host, held by ADD, DEL and GC for their whole run: the port conflict check and
/// the rule addition, and "last container leaves: remove the bridge" against a concurrent ADD,
/// each happen as one step. The last user removes its file.
fn host_lock() -> Result<HostLock, CniError> {
    Ok(HostLock::acquire("gwbridge-egress")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(v: serde_json::Value) -> CniResult {
        CniResult::from_json(&v).unwrap()
    }

    #[test]
    fn default_route_only_when_the_chain_has_none() {
        let alloc = result(json!({"ips": [
            {"address": "172.18.0.2/16", "gateway": "172.18.0.1"},
            {"address": "fd00:18::2/64", "gateway": "fd00:18::1"}]}));
        let none = result(json!({}));
        let routes = container_routes(&none, &alloc);
        assert_eq!(routes.len(), 2);
        assert!(routes.iter().all(|r| r.is_default()));
        assert_eq!(routes[0].gw, Some("172.18.0.1".parse().unwrap()));
        let v4_default = result(json!({"routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}]}));
        let routes = container_routes(&v4_default, &alloc);
        assert_eq!(routes.len(), 1);
        assert!(routes[0].dst.is_ipv6());
    }

    #[test]
    fn ipam_routes_get_our_gateway() {
        let alloc = result(json!({
            "ips": [{"address": "172.18.0.2/16", "gateway": "172.18.0.1"}],
            "routes": [{"dst": "198.51.100.7/24"}]}));
        let routes = container_routes(&result(json!({})), &alloc);
        assert_eq!(routes[0].dst.to_string(), "198.51.100.0/24");
        assert_eq!(routes[0].gw, Some("172.18.0.1".parse().unwrap()));
        assert!(routes[1].is_default());
    }

    #[test]
    fn gateways_are_required_and_in_the_subnet() {
        let ok = result(json!({"ips": [{"address": "172.18.0.2/16", "gateway": "172.18.0.1"}]}));
        assert_eq!(
            gateway_addresses(&ok).unwrap()[0].to_string(),
            "172.18.0.1/16"
        );
        for bad in [
            json!({"ips": [{"address": "172.18.0.2/16"}]}),
            json!({"ips": [{"address": "172.18.0.2/16", "gateway": "10.0.0.1"}]}),
            json!({}),
        ] {
            assert_eq!(gateway_addresses(&result(bad)).unwrap_err().code, 7);
        }
    }

    #[test]
    fn mappings_follow_the_families() {
        let pm = |host_ip: &str| cni::PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: host_ip.into(),
        };
        let (any, v6) = (pm(""), pm("fd00::1"));
        let addrs: Vec<IpAddr> = vec!["172.18.0.2".parse().unwrap(), "fd00:18::2".parse().unwrap()];
        assert_eq!(
            mappings_for(&[(Protocol::Tcp, &any)], &addrs)
                .unwrap()
                .len(),
            2
        );
        let only6 = mappings_for(&[(Protocol::Tcp, &v6)], &addrs).unwrap();
        assert_eq!(only6.len(), 1);
        assert!(only6[0].container_addr.is_ipv6());
        assert_eq!(
            mappings_for(&[(Protocol::Tcp, &v6)], &addrs[..1])
                .unwrap_err()
                .code,
            7
        );
    }
}
