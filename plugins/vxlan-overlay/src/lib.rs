//! vxlan-overlay: puts a container on an overlay network shared by many hosts. One VXLAN network
//! per VNI; a veth into the container; addresses from any IPAM plugin (etcd-ipam for cluster-wide
//! ones); an endpoint record in etcd so that the other hosts (their overlayd) can reach it.

pub mod config;
pub mod ipam;
pub mod network;
pub mod peers;

use std::collections::HashSet;
use std::future::Future;

use cni::{codes, CniError, CniResult, Command, Interface, Plugin, Request};
use model::records::Endpoint;
use model::{names, Mac};
use netops::{Netlink, Netns, VethPeer};
use store::plugin::{etcd_status, ready_through_outage};
use store::Store;

use crate::config::{Conf, OverlayConfig};
use crate::network::Underlay;

pub struct VxlanOverlay;

/// Runs one verb: the configuration parsed (no I/O), then one store, one etcd connection
/// ([`store::plugin::run`]).
fn run<T, F>(req: &Request, work: impl FnOnce(OverlayConfig, Store) -> F) -> Result<T, CniError>
where
    F: Future<Output = Result<T, CniError>>,
{
    store::plugin::run(Conf::parse(&req.conf)?, work)
}

impl Plugin for VxlanOverlay {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        run(req, |cfg, mut store| async move {
            let container = Netns::open(&req.env.netns)?;
            add(&cfg, req, &container, &mut store).await
        })
    }

    /// Removes the veth, the endpoint record and (delegated) the addresses; the network's devices
    /// go with the last local endpoint. Works without the namespace and when already done.
    fn del(&self, req: &Request) -> Result<(), CniError> {
        run(req, |cfg, mut store| async move {
            detach(&cfg, req).await?;
            ipam::release(&cfg, req, &mut store).await
        })
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        run(req, |cfg, mut store| async move {
            let prev = req
                .conf
                .prev_result
                .as_ref()
                .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
            let container = Netns::open(&req.env.netns)?;
            check(&cfg, req, prev, &container, &mut store).await?;
            cni::invoke::run(
                &cfg.ipam_type,
                Command::Check,
                &req.env.path,
                &req.conf.bytes,
            )
        })
    }

    /// Delegates to IPAM, then removes this node's endpoint records and host veths whose
    /// attachment is not valid any more. Continues past errors and reports the first.
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        run(req, |cfg, mut store| async move {
            let ipam =
                cni::invoke::run(&cfg.ipam_type, Command::Gc, &req.env.path, &req.conf.bytes);
            let valid: HashSet<(String, String)> = req
                .conf
                .valid_attachments
                .iter()
                .flatten()
                .map(|a| (a.container_id.clone(), a.ifname.clone()))
                .collect();
            let ours = gc(&cfg, &valid, &mut store).await;
            ipam.and(ours)
        })
    }

    /// etcd answers (ready through an outage: see store::plugin::ready_through_outage), then
    /// the IPAM's STATUS.
    fn status(&self, req: &Request) -> Result<(), CniError> {
        ready_through_outage(run(req, |cfg, mut store| async move {
            let key = store.keys().node(&cfg.node);
            let etcd = etcd_status(store.get(key, None).await.map(drop));
            let ipam = cni::invoke::run(
                &cfg.ipam_type,
                Command::Status,
                &req.env.path,
                &req.conf.bytes,
            );
            etcd.and(ipam)
        }))
    }
}

/// A MAC as the result and CHECK write it; empty when the kernel gave none.
fn mac_text(mac: Option<[u8; 6]>) -> String {
    mac.map(|m| Mac::from(m).to_string()).unwrap_or_default()
}

async fn add(
    cfg: &OverlayConfig,
    req: &Request,
    container: &Netns,
    store: &mut Store,
) -> Result<CniResult, CniError> {
    let host = Netlink::current().await?;
    let inside = Netlink::in_netns(container).await?;
    // Refuse before anything is allocated: the spec requires an error for an existing interface.
    if inside.link(&req.env.ifname).await?.is_some() {
        return Err(CniError::new(
            codes::INTERFACE_EXISTS,
            format!(
                "interface {} already exists in {}",
                req.env.ifname, req.env.netns
            ),
        ));
    }
    // A name that is not a valid name is refused before anything is allocated (attach reads it again).
    req.env.args.container_name()?;
    let underlay = Underlay::resolve(&host, cfg).await?;
    network::existing_bridge(&host, cfg).await?;
    let ipam = ipam::add(cfg, req, store).await?;
    match attach(cfg, req, container, &host, &inside, &underlay, ipam, store).await {
        Ok(result) => Ok(result),
        Err(e) => {
            // Undo everything done so far, the allocation included; the original error is reported.
            if let Err(undo) = detach(cfg, req).await {
                log::warn!("undoing a failed ADD: {undo}");
            }
            if let Err(undo) = ipam::release(cfg, req, store).await {
                log::warn!("releasing the record and allocation of a failed ADD: {undo}");
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn attach(
    cfg: &OverlayConfig,
    req: &Request,
    container: &Netns,
    host: &Netlink,
    inside: &Netlink,
    underlay: &Underlay,
    ipam: CniResult,
    store: &mut Store,
) -> Result<CniResult, CniError> {
    if ipam.ips.is_empty() {
        return Err(CniError::invalid_config(format!(
            "IPAM plugin {} returned no address",
            cfg.ipam_type
        )));
    }
    let mtu = underlay.container_mtu(cfg);
    let host_name = names::host_veth(&req.env.container_id, &req.env.ifname);
    // The MAC is derived, so the record can be written before the veth exists: a host veth that
    // carries an attachment alias then always has its record (until it is released), and
    // overlayd can take any such veth without one for a stale attachment (released while its
    // host was gone) without mistaking an ADD in flight for one.
    let addresses: Vec<_> = ipam.ips.iter().map(|ip| ip.address.ip()).collect();
    let mac = names::endpoint_mac(&cfg.network, &addresses).ok_or_else(|| {
        CniError::invalid_config(format!("IPAM plugin {} returned no address", cfg.ipam_type))
    })?;
    let record = Endpoint {
        network: cfg.network.clone(),
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        name: req.env.args.container_name()?,
        aliases: req
            .conf
            .runtime_config
            .aliases
            .get(&cfg.network)
            .cloned()
            .unwrap_or_default(),
        ips: ipam.ips.iter().map(|ip| ip.address).collect(),
        mac,
        node: cfg.node.clone(),
        vtep: underlay.vtep,
        vni: cfg.vni,
    };
    // The network's devices and gateway sandbox before the record: overlayd starts serving the
    // network's names when this host's first record of it arrives, and must find the sandbox then.
    let made = {
        let _lock = network::lock(cfg)?;
        network::ensure(host, cfg, underlay, mtu, &network::gateways(&ipam)).await?
    };
    let published = peers::publish(store, cfg, &record, made.fresh).await?;

    let (devices, host_end, peer) = {
        let _lock = network::lock(cfg)?;
        // Again if a DEL of the network's last other container removed them meanwhile.
        let devices = match network::unchanged(host, cfg, &made).await? {
            Some(devices) => devices,
            None => network::ensure(host, cfg, underlay, mtu, &network::gateways(&ipam)).await?,
        };
        // Born a port of the bridge: a veth of this network from its first moment, so that GC
        // finds it when this process is killed before the alias below (faults.sh killed).
        let far_end = VethPeer {
            name: &req.env.ifname,
            ns: container,
            mac: Some(mac.octets()),
            // On a network without IPv6 the interface makes no link-local address: no DAD,
            // solicitations or MLD for an interface that carries no IPv6.
            ipv6: ipam.ips.iter().any(|ip| ip.address.is_ipv6()),
        };
        let (host_end, peer) = host
            .create_veth_on(&host_name, &far_end, mtu, Some(devices.bridge.index))
            .await?;
        // The alias names the attachment, so that GC can tell which veth belongs to whom.
        host.set_alias(
            host_end.index,
            &names::attachment_alias(&req.env.container_id, &req.env.ifname),
        )
        .await?;
        host.set_up(host_end.index).await?;
        (devices, host_end, peer)
    };

    for ip in &ipam.ips {
        inside.add_address(peer.index, ip.address).await?;
    }
    for route in &ipam.routes {
        // As the reference plugins do: a route without a gateway goes via its family's gateway.
        let gw = route.gw.or_else(|| {
            ipam.ips
                .iter()
                .find(|ip| ip.address.is_ipv4() == route.dst.is_ipv4())
                .and_then(|ip| ip.gateway)
        });
        inside.add_route(route.dst, gw, peer.index).await?;
    }
    if peer.mac.map(Mac::from) != Some(mac) {
        return Err(CniError::new(
            codes::KERNEL,
            format!(
                "interface {} has MAC {}, not {mac} as asked",
                req.env.ifname,
                mac_text(peer.mac)
            ),
        ));
    }
    // The entries of the network's other endpoints on this host are overlayd's to keep: it lists
    // the network when the network's bridge appears on its host and follows it from there. An
    // ADD programs them only where nobody has yet: on devices it made (until overlayd's listing),
    // and on every ADD while no overlayd is alive on this node (the plugin alone then gives each
    // ADD the endpoints known at that moment). Listing the network on every ADD made each one
    // cost as much as the network is large (scripts/bench.sh fleet: 2.6x from the first 100 of
    // 1,000 to the last 100).
    if made.fresh || devices.fresh || !published.overlayd_live {
        let endpoints = match published.endpoints {
            Some(endpoints) => endpoints,
            None => peers::list(store, cfg).await?,
        };
        peers::program(host, devices.vxlan.index, cfg, &endpoints).await?;
    }

    let mut result = CniResult {
        routes: ipam.routes.clone(),
        dns: dns(cfg, &ipam),
        ..Default::default()
    };
    result.push_interface(Interface {
        name: devices.bridge.name.clone(),
        mac: mac_text(devices.bridge.mac),
        ..Default::default()
    });
    result.push_interface(Interface {
        name: host_end.name.clone(),
        mac: mac_text(host_end.mac),
        mtu: Some(mtu),
        ..Default::default()
    });
    let index = result.push_interface(Interface {
        name: req.env.ifname.clone(),
        mac: mac.to_string(),
        mtu: Some(mtu),
        sandbox: req.env.netns.clone(),
        ..Default::default()
    });
    result.ips = ipam
        .ips
        .into_iter()
        .map(|ip| cni::IpConfig {
            interface: Some(index),
            ..ip
        })
        .collect();
    Ok(result)
}

/// The result's DNS: overlayd answers the network's names at the gateway addresses, under the
/// network's search domain; what the IPAM plugin gave comes after.
fn dns(cfg: &OverlayConfig, ipam: &CniResult) -> cni::Dns {
    let mut dns = ipam.dns.clone();
    if cfg.embedded_dns {
        let gateways: Vec<String> = network::gateways(ipam)
            .iter()
            .map(|g| g.ip().to_string())
            .collect();
        if !gateways.is_empty() {
            dns.nameservers = gateways.into_iter().chain(dns.nameservers).collect();
            dns.search.insert(0, cfg.dns_domain());
        }
    }
    dns
}

/// The host's part of DEL: the veth, and the network's devices with the last local endpoint. The
/// record and the allocation go after ([`ipam::release`]): a veth with an attachment alias and no
/// record is what overlayd takes for a stale attachment, never the other way round.
async fn detach(cfg: &OverlayConfig, req: &Request) -> Result<(), CniError> {
    let host = Netlink::current().await?;
    let lock = network::lock(cfg)?;
    // Deleting the host end removes the container end with it, namespace or not.
    host.delete_link(&names::host_veth(&req.env.container_id, &req.env.ifname))
        .await?;
    network::remove_if_unused(&host, cfg, &lock).await?;
    Ok(())
}

async fn check(
    cfg: &OverlayConfig,
    req: &Request,
    prev: &CniResult,
    container: &Netns,
    store: &mut Store,
) -> Result<(), CniError> {
    let failed = |msg: String| CniError::new(codes::CHECK_FAILED, msg);
    let inside = Netlink::in_netns(container).await?;
    let link = netops::check::container_interface(&inside, prev, &req.env.ifname)
        .await?
        .link;
    let mac = mac_text(link.mac);
    let host = Netlink::current().await?;
    let want_mtu = Underlay::resolve(&host, cfg).await?.container_mtu(cfg);
    if link.mtu != want_mtu {
        return Err(failed(format!(
            "interface {} has MTU {}, expected {want_mtu}",
            req.env.ifname, link.mtu
        )));
    }
    // With hostAccess the host routes into the bridge; without its isolation rules, whatever the
    // host forwards could follow.
    if cfg.host_access && !network::is_isolated(&cfg.bridge_name())? {
        return Err(failed(format!(
            "the isolation rules of {} are missing from table inet {}",
            cfg.bridge_name(),
            firewall::overlay_isolation::TABLE
        )));
    }
    let record = peers::get(store, cfg, &req.env.container_id, &req.env.ifname)
        .await?
        .ok_or_else(|| {
            failed(format!(
                "no endpoint record for {}/{}",
                req.env.container_id, req.env.ifname
            ))
        })?;
    // A record of another node under this key: this attachment was released while its host was
    // gone, and the name and addresses may be someone else's now.
    if record.node != cfg.node {
        return Err(failed(format!(
            "endpoint record of {}/{} belongs to node {}, not {}",
            req.env.container_id, req.env.ifname, record.node, cfg.node
        )));
    }
    if link.mac.map(Mac::from) != Some(record.mac) {
        return Err(failed(format!(
            "endpoint record has MAC {}, the interface {mac}",
            record.mac
        )));
    }
    Ok(())
}

async fn gc(
    cfg: &OverlayConfig,
    valid: &HashSet<(String, String)>,
    store: &mut Store,
) -> Result<(), CniError> {
    let mut first_error = None;
    // The veths first, then the records, as DEL does: a veth with an attachment alias and no
    // record is what overlayd takes for a stale attachment.
    let host = Netlink::current().await?;
    let lock = network::lock(cfg)?;
    if let Some(bridge) = host.link(&cfg.bridge_name()).await? {
        for port in host.links_with_master(bridge.index).await? {
            let Some((container_id, ifname)) = port
                .alias
                .as_deref()
                .and_then(names::parse_attachment_alias)
            else {
                // A container veth without its alias: an ADD killed between creating it (a port
                // from birth) and naming it; ADDs in flight hold the network's lock, as we do.
                if port.kind == "veth"
                    && port.name != names::gateway_veth(cfg.vni)
                    && port.name.starts_with(names::HOST_VETH_PREFIX)
                {
                    if let Err(e) = host.delete_link(&port.name).await {
                        first_error.get_or_insert(e.into());
                    }
                }
                continue;
            };
            if port.kind == "veth"
                && !valid.contains(&(container_id.to_string(), ifname.to_string()))
            {
                if let Err(e) = host.delete_link(&port.name).await {
                    first_error.get_or_insert(e.into());
                }
            }
        }
    }
    if let Err(e) = network::remove_if_unused(&host, cfg, &lock).await {
        first_error.get_or_insert(e);
    }
    drop(lock);
    for record in peers::of_node(store, cfg).await? {
        // overlayd's Docker driver keeps its own endpoints: no CNI runtime's list names them.
        if names::is_docker_attachment(&record.ifname) {
            continue;
        }
        if !valid.contains(&(record.container_id.clone(), record.ifname.clone())) {
            if let Err(e) = peers::remove(store, cfg, &record.container_id, &record.ifname).await {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
