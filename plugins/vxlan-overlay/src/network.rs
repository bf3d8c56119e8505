//! A network's devices on one host, kept apart from the host's own addresses and from other networks.
//!
//! In the host namespace: a bridge `ovbr<vni>` and a VXLAN device `ovx<vni>` on it (learning off,
//! ARP/ND answered from the static neighbour table), and the host ends of the containers' veths
//! (Docker's containers, through overlayd's driver, are macvlan children of the bridge instead).
//! The bridge carries no address unless `hostAccess` is true, so the host has no route into the
//! overlay and two networks may use one subnet. The gateway address (where the network's DNS will
//! answer) lives in a small sandbox namespace `ovl-<vni>-<node>` joined to the bridge by a veth.
//! With `hostAccess` the host does route into the bridge, so whatever it forwards could follow:
//! nftables rules (the firewall crate's [`firewall::overlay_isolation`], table `inet cni_overlay`)
//! drop what is routed into the bridge from another interface, and live exactly as long as it.
//!
//! Docker keeps the bridge itself in a per-network namespace. We cannot: the reference `bandwidth`
//! plugin (and Kubernetes tooling) expects the host end of the container's veth in the runtime's
//! namespace, and a veth can only join a bridge of its own namespace.
//!
//! Creation and removal happen under a per-network lock on this host, so several first ADDs (or an
//! ADD racing the last DEL) cannot half-build or tear down each other's devices.

use std::net::IpAddr;

use cni::{codes, CniError};
use ipnetwork::IpNetwork;
use model::names::{self, SANDBOX_IFNAME};
use netops::{HostLock, Link, Netlink, Netns};

use crate::config::{OverlayConfig, VtepChoice};

/// Locks the network on this host, for making or removing its devices.
pub fn lock(cfg: &OverlayConfig) -> Result<HostLock, CniError> {
    Ok(HostLock::acquire(&names::network_lock(cfg.vni))?)
}

/// Locks the isolation table of this host. The networks' own locks do not cover it: every
/// hostAccess network's rules share the table, and the table goes with its last rule, which is
/// decided on a reading of it. Taken inside a network's lock, never the other way round.
fn isolation_lock() -> Result<HostLock, CniError> {
    Ok(HostLock::acquire(names::ISOLATION_LOCK)?)
}

/// The underlay device and this host's VXLAN tunnel endpoint address on it.
#[derive(Debug, Clone)]
pub struct Underlay {
    pub device: Link,
    pub vtep: IpAddr,
}

impl Underlay {
    pub async fn resolve(nl: &Netlink, cfg: &OverlayConfig) -> Result<Underlay, CniError> {
        match &cfg.vtep {
            VtepChoice::Address(addr) => {
                let device = nl.link_with_address(*addr).await?.ok_or_else(|| {
                    CniError::invalid_config(format!(
                        "vtep address {addr} is on no interface of this host"
                    ))
                })?;
                Ok(Underlay {
                    device,
                    vtep: *addr,
                })
            }
            VtepChoice::Interface(name) => {
                let device = nl.link(name).await?.ok_or_else(|| {
                    CniError::invalid_config(format!("vtep interface {name} does not exist"))
                })?;
                let addrs = nl.addresses(device.index).await?;
                let vtep = addrs
                    .iter()
                    .map(|a| a.ip())
                    .find(|ip| ip.is_ipv4())
                    .or_else(|| {
                        addrs
                            .iter()
                            .map(|a| a.ip())
                            .find(|ip| matches!(ip, IpAddr::V6(v6) if !v6.is_unicast_link_local()))
                    })
                    .ok_or_else(|| {
                        CniError::invalid_config(format!(
                            "vtep interface {name} has no usable address"
                        ))
                    })?;
                Ok(Underlay { device, vtep })
            }
            VtepChoice::DefaultRoute => {
                let found = match nl.default_route_interface(false).await? {
                    Some(found) => Some(found),
                    None => nl.default_route_interface(true).await?,
                };
                let (device, vtep) = found.ok_or_else(|| {
                    CniError::invalid_config("no default route to find the VTEP address on: set vtep.address or vtep.interface")
                })?;
                Ok(Underlay { device, vtep })
            }
        }
    }

    /// The container MTU: the configured one, or the underlay's less the VXLAN headers.
    pub fn container_mtu(&self, cfg: &OverlayConfig) -> u32 {
        model::types::container_mtu(cfg.mtu, self.device.mtu, self.vtep)
    }
}

/// The network's devices on this host.
pub struct Devices {
    pub bridge: Link,
    pub vxlan: Link,
    /// The VXLAN device was made (or put back on the bridge) by this call: it may hold none of
    /// the entries of the network's other endpoints yet.
    pub fresh: bool,
}

/// Whose a bridge named `ovbr<vni>` is.
enum Owner {
    /// This network's, complete.
    Us,
    /// This network's, made but not yet named (its alias is set by a second netlink message): a
    /// concurrent first ADD is between the two, or one was killed there. Completed under the lock.
    UsUnnamed,
    /// Another network's, or not ours at all.
    Other(String),
}

fn owner(bridge: &Link, cfg: &OverlayConfig) -> Owner {
    match bridge.alias.as_deref() {
        Some(alias) if alias == cfg.bridge_alias() => Owner::Us,
        None if bridge.mac == Some(cfg.bridge_mac().octets()) => Owner::UsUnnamed,
        Some(alias) => Owner::Other(alias.to_string()),
        None => Owner::Other("something else".into()),
    }
}

fn vni_taken(cfg: &OverlayConfig, bridge: &Link, by: &str) -> CniError {
    CniError::invalid_config(format!(
        "vni {} is already used on this host by {by} (bridge {})",
        cfg.vni, bridge.name
    ))
}

/// This network's bridge on this host, if it exists. A bridge of that name that belongs to another
/// network means the VNI is taken here: refused (code 7). ADD calls this before allocating
/// anything, so a refused ADD leaves nothing behind; a bridge of ours still being made passes.
pub async fn existing_bridge(nl: &Netlink, cfg: &OverlayConfig) -> Result<Option<Link>, CniError> {
    match nl.link(&cfg.bridge_name()).await? {
        Some(bridge) => match owner(&bridge, cfg) {
            Owner::Us | Owner::UsUnnamed => Ok(Some(bridge)),
            Owner::Other(by) => Err(vni_taken(cfg, &bridge, &by)),
        },
        None => Ok(None),
    }
}

/// Creates (or finds) the network's devices. Call with the network lock held.
pub async fn ensure(
    nl: &Netlink,
    cfg: &OverlayConfig,
    underlay: &Underlay,
    mtu: u32,
    gateways: &[IpNetwork],
) -> Result<Devices, CniError> {
    let unnamed = match nl.link(&cfg.bridge_name()).await? {
        None => true,
        Some(bridge) => match owner(&bridge, cfg) {
            Owner::Us => false,
            Owner::UsUnnamed => true,
            Owner::Other(by) => return Err(vni_taken(cfg, &bridge, &by)),
        },
    };
    // Made here, its MAC in the message that creates it; or found, and up again if someone took
    // it down.
    let bridge = nl
        .ensure_bridge(
            &cfg.bridge_name(),
            Some(mtu),
            Some(cfg.bridge_mac().octets()),
        )
        .await?;
    if unnamed {
        nl.set_alias(bridge.index, &cfg.bridge_alias()).await?;
    }
    let vxlan = nl
        .ensure_vxlan(
            &cfg.vxlan_name(),
            cfg.vni.get(),
            cfg.port,
            underlay.vtep,
            underlay.device.index,
            mtu,
        )
        .await?;
    // A device made by ensure_vxlan is on no bridge yet; one found there is a previous call's.
    let fresh = vxlan.master != Some(bridge.index);
    if fresh {
        nl.set_master(vxlan.index, bridge.index).await?;
    }
    if cfg.host_access {
        // The isolation first: the address gives the host its route into the bridge, and there
        // must be no moment when that route is open to what the host forwards. Run on every ADD,
        // so that rules lost since (a firewall reload flushing the ruleset) come back.
        isolate(&bridge.name)?;
        // The host reaches its local containers through the bridge's address.
        for gw in gateways {
            nl.add_address(bridge.index, *gw).await?;
        }
    } else if !gateways.is_empty() {
        ensure_sandbox(nl, cfg, &bridge, mtu, gateways).await?;
    }
    Ok(Devices {
        bridge,
        vxlan,
        fresh,
    })
}

/// The devices `ensure` returned, read again, when nothing of the network was removed since: the
/// bridge of the same index and the VXLAN device of the same index on it. Removal
/// ([`remove_if_unused`], under the network's lock) deletes the VXLAN device first and the sandbox
/// after the bridge, and a bridge made anew gets another index; so with both in place the
/// sandbox and its addresses are too, and `ensure` need not run again. None: run it again.
pub async fn unchanged(
    nl: &Netlink,
    cfg: &OverlayConfig,
    devices: &Devices,
) -> Result<Option<Devices>, CniError> {
    let bridge = nl.link(&cfg.bridge_name()).await?;
    let vxlan = nl.link(&cfg.vxlan_name()).await?;
    Ok(match (bridge, vxlan) {
        (Some(bridge), Some(vxlan))
            if bridge.index == devices.bridge.index
                && vxlan.index == devices.vxlan.index
                && vxlan.master == Some(bridge.index)
                && bridge.up
                && vxlan.up =>
        {
            Some(Devices {
                bridge,
                vxlan,
                fresh: false,
            })
        }
        _ => None,
    })
}

/// The gateway sandbox: a namespace holding the gateway address, on the bridge through a veth.
async fn ensure_sandbox(
    nl: &Netlink,
    cfg: &OverlayConfig,
    bridge: &Link,
    mtu: u32,
    gateways: &[IpNetwork],
) -> Result<(), CniError> {
    let host_end = match nl.link(&cfg.gateway_veth_name()).await? {
        Some(link) => link,
        None => {
            // A sandbox without its veth is a leftover of an interrupted ADD: start it afresh.
            netops::delete_named_netns(&cfg.sandbox_name())?;
            let sandbox = netops::create_named_netns(&cfg.sandbox_name())?;
            let (host_end, _) = nl
                .create_veth(
                    &cfg.gateway_veth_name(),
                    SANDBOX_IFNAME,
                    &sandbox,
                    mtu,
                    None,
                )
                .await?;
            nl.set_master(host_end.index, bridge.index).await?;
            nl.set_up(host_end.index).await?;
            host_end
        }
    };
    let _ = host_end;
    let sandbox = Netns::open(netops::named_netns_path(&cfg.sandbox_name()))?;
    let snl = Netlink::in_netns(&sandbox).await?;
    let gw_link = snl.link(SANDBOX_IFNAME).await?.ok_or_else(|| {
        CniError::new(
            codes::KERNEL,
            format!(
                "sandbox {} lost its {SANDBOX_IFNAME} interface",
                cfg.sandbox_name()
            ),
        )
    })?;
    for gw in gateways {
        snl.add_address(gw_link.index, *gw).await?;
    }
    Ok(())
}

/// Removes the network's devices and sandbox when no container is attached any more (no veth on
/// the bridge other than the network's own, no macvlan child's MAC local to it), and then
/// the lock's file. Call with the network's lock, `lock`, held. Returns whether they were removed.
pub async fn remove_if_unused(
    nl: &Netlink,
    cfg: &OverlayConfig,
    lock: &HostLock,
) -> Result<bool, CniError> {
    // The isolation rules go with a bridge that was routed (it holds the gateway addresses) even
    // when this DEL's configuration says hostAccess false: changed since the ADD, they would leak.
    let mut routed = cfg.host_access;
    if let Some(bridge) = nl.link(&cfg.bridge_name()).await? {
        let infrastructure = [cfg.vxlan_name(), cfg.gateway_veth_name()];
        let ports = nl
            .port_names(bridge.index)
            .await?
            .into_iter()
            .filter(|name| !infrastructure.contains(name))
            .count();
        if ports > 0 {
            return Ok(false);
        }
        // Docker's containers are macvlan children of the bridge, not ports: each has its MAC
        // made local to the bridge for as long as it is attached (overlayd's Docker driver).
        // Looked for only once no port is left: the bridge-family dump it takes holds every FDB
        // entry of the host, the VXLAN devices' included (the kernel filters that dump by device
        // only for sockets with strict checking).
        if !nl.bridge_local_macs(&bridge).await?.is_empty() {
            return Ok(false);
        }
        // Refuse to delete a bridge of that name that is not ours.
        if let Owner::Other(_) = owner(&bridge, cfg) {
            return Ok(false);
        }
        if !routed {
            let addresses = nl.addresses(bridge.index).await?;
            routed = addresses
                .iter()
                .any(|a| !matches!(a.ip(), IpAddr::V6(v6) if v6.is_unicast_link_local()));
        }
        nl.delete_link(&cfg.vxlan_name()).await?;
        nl.delete_link(&cfg.gateway_veth_name()).await?;
        nl.delete_link(&cfg.bridge_name()).await?;
    }
    netops::delete_named_netns(&cfg.sandbox_name())?;
    // After the bridge (its address and route went with it), also when the bridge was already
    // gone: a DEL retried after a failure here, or GC, still finds the rules to remove. Networks
    // without hostAccess never touch nftables (nor need `nft` on the host).
    if routed {
        unisolate(&cfg.bridge_name())?;
    }
    lock.remove_file();
    Ok(true)
}

/// Adds the isolation rules of `bridge` (idempotent).
fn isolate(bridge: &str) -> Result<(), CniError> {
    let _lock = isolation_lock()?;
    Ok(firewall::OverlayIsolation::new().add_bridge(bridge)?)
}

/// Whether `bridge` has its isolation rules, complete and in order (for CHECK).
pub fn is_isolated(bridge: &str) -> Result<bool, CniError> {
    Ok(firewall::OverlayIsolation::new().is_isolated(bridge)?)
}

/// Removes the isolation rules of `bridge`, and the table with the last ones (idempotent).
fn unisolate(bridge: &str) -> Result<(), CniError> {
    let lock = isolation_lock()?;
    let isolation = firewall::OverlayIsolation::new();
    isolation.remove_bridge(bridge)?;
    if !isolation.exists()? {
        lock.remove_file();
    }
    Ok(())
}

/// The gateway addresses from an IPAM result, with their subnets' prefix lengths.
pub fn gateways(result: &cni::CniResult) -> Vec<IpNetwork> {
    result
        .ips
        .iter()
        .filter_map(|ip| {
            ip.gateway
                .and_then(|g| IpNetwork::new(g, ip.address.prefix()).ok())
        })
        .collect()
}
