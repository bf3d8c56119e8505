//! The network and IPAM driver: what each call of the protocol does, with the plugins' own rules
//! (etcd-ipam's allocator, vxlan-overlay's devices and peers, the store's network records).
//!
//! What the protocol does not carry, and how the driver learns it:
//! * The network's name: neither `RequestPool`/`RequestAddress` nor `CreateNetwork` carry it.
//!   IPAM calls carry only the pool, so a pool is its subnet, and a subnet maps to the one network
//!   record of etcd that has it (two Docker networks on cni-overlay must not share a subnet).
//!   Network ids map to names through the Docker API (the mirror keeps the map).
//! * The container's name: no call carries it. At `Join` the endpoint is in Docker's store, so
//!   the Docker API's network inspect lists it with its name (Docker's endpoint name is the
//!   container's name). `Join` then reserves the name with the address, cluster-wide.
//! * Which endpoint an address is for: `RequestAddress` comes before the endpoint exists. The
//!   address is allocated under a placeholder attachment, and `Join` moves it to the endpoint with
//!   the name, in two guarded transactions (release, then allocate that address with the name).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use cni::CniError;
use etcd_ipam::allocator::{self, Attachment};
use etcd_ipam::config::IpamConfig;
use ipnetwork::IpNetwork;
use model::addressing::{first_host, pools, Addressing};
use model::records::{self, Endpoint, Holder, Network};
use model::types::DEFAULT_VXLAN_PORT;
use model::{names, Mac};
use netops::Netlink;
use serde_json::Value;
use store::{EtcdConfig, Store};
use tokio::sync::Mutex as AsyncMutex;
use vxlan_overlay::config::{OverlayConfig, VtepChoice};
use vxlan_overlay::network::{self, Underlay};

use super::engine::Engine;
use super::forward::Forward;
use super::protocol::*;

/// The ifname of every Docker attachment in the records ([`names::DOCKER_IFNAME`]).
pub const IFNAME: &str = names::DOCKER_IFNAME;
/// The ifname an earlier overlayd recorded Docker's attachments with, and derived their host
/// veth's name from: an endpoint it joined is found and removed under it.
const OLD_IFNAME: &str = "eth0";
/// Where the driver caches etcd-ipam's allocation cursor (only a hint: losing it costs a round trip).
pub const DATA_DIR: &str = "/run/cni-overlay/docker-ipam";
/// Prefix of the placeholder attachment an address is held under between `RequestAddress` and
/// `Join` (the endpoint id is not known yet).
const PENDING: &str = "docker-pending-";

pub struct Settings {
    pub node: String,
    pub vtep: IpAddr,
    pub etcd: EtcdConfig,
    /// Where etcd-ipam's allocation cursor is cached for this host.
    pub data_dir: PathBuf,
}

/// What `plumb` made for a join.
struct Plumbed {
    cfg: OverlayConfig,
    host: Netlink,
    vtep: IpAddr,
    vxlan: u32,
    /// The network's devices were made by this join.
    fresh: bool,
    /// The container end, in the host's namespace until Docker moves it.
    peer_name: String,
}

struct EndpointState {
    network: String,
    address: IpNetwork,
    mac: Mac,
}

pub struct Driver {
    settings: Settings,
    engine: Engine,
    store: AsyncMutex<Store>,
    /// Docker network id to network name; filled by the mirror and on demand.
    networks: Mutex<HashMap<String, String>>,
    endpoints: Mutex<HashMap<String, EndpointState>>,
    /// Held while one of this overlayd's tasks takes a network's host lock: that lock waits by
    /// blocking its thread, so tasks of ours waiting for it could take every worker thread of
    /// the runtime from the task that holds it (20 `docker rm -f` at once stalled overlayd until
    /// the lock's 60 s wait ran out). The host lock still orders us with the CNI plugins.
    devices: AsyncMutex<()>,
    forward: Forward,
}

type Answer = Result<Value, String>;

fn ok() -> Answer {
    Ok(Value::Object(Default::default()))
}

fn json<T: serde::Serialize>(v: T) -> Answer {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

fn parse<T: for<'de> serde::Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("cni-overlay: malformed request: {e}"))
}

fn cni(e: CniError) -> String {
    e.msg
}

impl Driver {
    pub fn new(settings: Settings, engine: Engine) -> Result<Driver, String> {
        let store = Store::new(settings.etcd.clone()).map_err(|e| e.to_string())?;
        Ok(Driver {
            settings,
            engine,
            store: AsyncMutex::new(store),
            networks: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            devices: AsyncMutex::new(()),
            forward: Forward::default(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn node(&self) -> &str {
        &self.settings.node
    }

    pub fn etcd(&self) -> &EtcdConfig {
        &self.settings.etcd
    }

    pub fn remember_network(&self, id: &str, name: &str) {
        if let Ok(mut map) = self.networks.lock() {
            map.insert(id.to_string(), name.to_string());
        }
    }

    /// One call of the protocol: `Ok` is the answer's JSON, `Err` the `Err` Docker shows.
    /// None for a method this driver does not know (HTTP 404, as the protocol asks).
    pub async fn call(&self, method: &str, body: &[u8]) -> Option<Answer> {
        let answer = match method {
            // Docker caches this answer by the plugin's name, whichever role asked first: the
            // authorization role is listed here too, and used only when dockerd runs with
            // `--authorization-plugin NAME` (see super::authz).
            "Plugin.Activate" => json(Activate {
                implements: vec!["NetworkDriver", "IpamDriver", AUTHZ_IMPLEMENTS],
            }),
            // Local scope: Docker keeps each network to its host (the only kind since Docker 24
            // without Swarm); the connectivity across hosts is ours.
            "NetworkDriver.GetCapabilities" => json(NetworkCapabilities {
                scope: "local",
                connectivity_scope: "global",
            }),
            "NetworkDriver.CreateNetwork" => self.create_network(body),
            "NetworkDriver.DeleteNetwork" => self.delete_network(body).await,
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(body).await,
            "NetworkDriver.DeleteEndpoint" => self.delete_endpoint(body).await,
            "NetworkDriver.Join" => self.join(body).await,
            "NetworkDriver.EndpointOperInfo" => json(OperInfo {
                value: HashMap::new(),
            }),
            "NetworkDriver.Leave"
            | "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity"
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete"
            | "IpamDriver.ReleasePool" => ok(),
            "IpamDriver.GetCapabilities" => json(IpamCapabilities {
                requires_mac_address: false,
            }),
            "IpamDriver.GetDefaultAddressSpaces" => json(AddressSpaces {
                local: "cni-overlay",
                global: "cni-overlay",
            }),
            "IpamDriver.RequestPool" => self.request_pool(body).await,
            "IpamDriver.RequestAddress" => self.request_address(body).await,
            "IpamDriver.ReleaseAddress" => self.release_address(body).await,
            _ => return None,
        };
        Some(answer)
    }

    /// The network record that has `subnet`, if any.
    async fn record_with_subnet(&self, subnet: &IpNetwork) -> Result<Option<Network>, String> {
        let mut store = self.store.lock().await;
        let prefix = store.keys().networks();
        let (kvs, _) = store.get_prefix(&prefix).await.map_err(|e| e.to_string())?;
        Ok(kvs
            .iter()
            .filter_map(|kv| records::decode::<Network>(kv.key(), kv.value()).ok())
            .find(|n| n.subnets.contains(subnet)))
    }

    async fn record(&self, name: &str) -> Result<Network, String> {
        let mut store = self.store.lock().await;
        store
            .network(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("network {name} has no record in etcd (removed on another host?)")
            })
    }

    async fn network_name(&self, id: &str) -> Result<String, String> {
        if let Some(name) = self.networks.lock().ok().and_then(|m| m.get(id).cloned()) {
            return Ok(name);
        }
        let found = self
            .engine
            .network(id)
            .await?
            .ok_or_else(|| format!("Docker does not know network {id}"))?;
        self.remember_network(id, &found.name);
        Ok(found.name)
    }

    async fn request_pool(&self, body: &[u8]) -> Answer {
        let req: RequestPool = parse(body)?;
        if req.pool.is_empty() {
            return Err(
                "the cni-overlay IPAM driver needs --subnet: the subnet is the network's, \
                 cluster-wide"
                    .into(),
            );
        }
        if !req.sub_pool.is_empty() {
            return Err("cni-overlay: --ip-range is not supported for Docker networks".into());
        }
        let subnet = IpNetwork::from_str(&req.pool).map_err(|e| format!("{}: {e}", req.pool))?;
        model::addressing::check_subnet(&subnet).map_err(|e| e.to_string())?;
        if subnet.is_ipv6() != req.v6 {
            return Err(format!("{subnet} is not of the family asked for"));
        }
        let gateway = match self.record_with_subnet(&subnet).await? {
            Some(record) => gateway_of(&record, &subnet),
            None => first_host(&subnet),
        };
        json(PoolGranted {
            pool_id: subnet.to_string(),
            pool: subnet.to_string(),
            data: HashMap::from([(
                GATEWAY_DATA.to_string(),
                format!("{gateway}/{}", subnet.prefix()),
            )]),
        })
    }

    fn ipam_config(&self, record: &Network) -> Result<IpamConfig, String> {
        let sets = Addressing::of(record).range_sets();
        Ok(IpamConfig {
            network: record.name.clone(),
            pools: pools(&sets, &[]).map_err(|e| e.to_string())?,
            routes: Vec::new(),
            dns: Default::default(),
            etcd: self.settings.etcd.clone(),
            node: self.settings.node.clone(),
            data_dir: self.settings.data_dir.clone(),
        })
    }

    async fn request_address(&self, body: &[u8]) -> Answer {
        let req: RequestAddress = parse(body)?;
        let subnet =
            IpNetwork::from_str(&req.pool_id).map_err(|e| format!("pool {}: {e}", req.pool_id))?;
        let wanted: Option<IpAddr> = if req.address.is_empty() {
            None
        } else {
            Some(
                req.address
                    .parse()
                    .map_err(|e| format!("{}: {e}", req.address))?,
            )
        };
        let gateway_asked = req
            .options
            .as_ref()
            .and_then(|o| o.get(REQUEST_ADDRESS_TYPE))
            .is_some_and(|t| t == GATEWAY_TYPE);
        let record = self.record_with_subnet(&subnet).await?;
        if gateway_asked {
            // The gateway is the network's (the gateway sandbox holds it on every host), never
            // allocated: etcd-ipam never hands it out.
            let gw = wanted
                .or_else(|| record.as_ref().map(|r| gateway_of(r, &subnet)))
                .unwrap_or_else(|| first_host(&subnet));
            return json(AddressGranted {
                address: format!("{gw}/{}", subnet.prefix()),
                data: HashMap::new(),
            });
        }
        let record = record.ok_or_else(|| {
            format!(
                "no cni-overlay network with subnet {subnet} in etcd yet (overlayd registers a new \
                 Docker network within a second); try again"
            )
        })?;
        let cfg = self.ipam_config(&record)?;
        let placeholder = format!(
            "{PENDING}{:016x}",
            std::hash::RandomState::new().hash_one(0u8)
        );
        let attachment = Attachment {
            container_id: &placeholder,
            ifname: IFNAME,
            name: None,
        };
        let requested: Vec<IpAddr> = wanted.into_iter().collect();
        let mut store = self.store.lock().await;
        let allocation = allocator::add(&mut store, &cfg, &attachment, &requested)
            .await
            .map_err(cni)?;
        let address = allocation
            .ips
            .iter()
            .map(|ip| ip.address)
            .find(|a| subnet.contains(a.ip()))
            .ok_or("the allocation has no address in the pool")?;
        json(AddressGranted {
            address: address.to_string(),
            data: HashMap::new(),
        })
    }

    /// Releases the attachment holding `address` if it is this node's (a placeholder, or an
    /// endpoint's); the gateway and others' addresses are left alone.
    async fn release_address(&self, body: &[u8]) -> Answer {
        let req: ReleaseAddress = parse(body)?;
        let subnet =
            IpNetwork::from_str(&req.pool_id).map_err(|e| format!("pool {}: {e}", req.pool_id))?;
        let ip: IpAddr = req
            .address
            .parse()
            .map_err(|e| format!("{}: {e}", req.address))?;
        let Some(record) = self.record_with_subnet(&subnet).await? else {
            return ok();
        };
        let mut store = self.store.lock().await;
        if let Some(holder) = holder_of(&mut store, &record.name, ip).await? {
            if holder.node == self.settings.node {
                store::release::release_allocation(
                    &mut store,
                    &record.name,
                    &holder.container_id,
                    &holder.ifname,
                    Some(&self.settings.node),
                )
                .await
                .map_err(|e| e.to_string())?;
                if holder.container_id.starts_with(PENDING) {
                    // Never used (Docker rolled back a refused join, say `--name test1` taken on
                    // another host): this host's next container gets it, as in the seed, where
                    // test2 gets 10.0.0.3 after test1 was refused.
                    allocator::offer_again(&self.ipam_config(&record)?, ip);
                }
            }
        }
        ok()
    }

    fn create_network(&self, body: &[u8]) -> Answer {
        let req: CreateNetwork = parse(body)?;
        if req.ipv4.iter().all(|d| d.pool.is_empty()) {
            return Err("cni-overlay networks need --subnet".into());
        }
        // The name comes later (the mirror reads it from Docker and registers the network).
        log::info!("docker: network {} created here", req.network_id);
        ok()
    }

    async fn delete_network(&self, body: &[u8]) -> Answer {
        let req: NetworkRef = parse(body)?;
        let Some(name) = self
            .networks
            .lock()
            .ok()
            .and_then(|m| m.get(&req.network_id).cloned())
        else {
            log::warn!(
                "docker: deleting network {}, whose name this overlayd never learnt",
                req.network_id
            );
            return ok();
        };
        let mut store = self.store.lock().await;
        match store::networks::remove(&mut store, &name).await {
            Ok(_) => {
                log::info!("docker: network {name} removed, from etcd too");
                ok()
            }
            Err(store::StoreError::NetworkNotFound(_)) => ok(),
            // Docker removes the network here whatever a driver answers (libnetwork honours only
            // its own ForbiddenError, which the remote protocol cannot carry): the record stays,
            // and the mirror puts the network back on this host. The answer lands in dockerd's
            // log; ours says it too.
            Err(e) => {
                log::warn!(
                    "docker: network rm {name} here: {e}; the network stays cluster-wide and comes \
                     back on this host"
                );
                Err(format!("cni-overlay: {e}"))
            }
        }
    }

    async fn create_endpoint(&self, body: &[u8]) -> Answer {
        let req: CreateEndpoint = parse(body)?;
        let iface = req.interface.unwrap_or_default();
        if iface.address.is_empty() {
            return Err(
                "cni-overlay endpoints need an IPv4 address from the cni-overlay IPAM driver"
                    .into(),
            );
        }
        let address =
            IpNetwork::from_str(&iface.address).map_err(|e| format!("{}: {e}", iface.address))?;
        let network = self.network_name(&req.network_id).await?;
        let given: Option<Mac> = iface.mac_address.parse().ok();
        // The MAC follows the address, as vxlan-overlay's does (an address that moves keeps its
        // MAC, so other containers' neighbour caches stay right).
        let mac = match given {
            Some(mac) => mac,
            None => names::endpoint_mac(&network, &[address.ip()]).ok_or("no address")?,
        };
        if let Ok(mut map) = self.endpoints.lock() {
            map.insert(
                req.endpoint_id.clone(),
                EndpointState {
                    network,
                    address,
                    mac,
                },
            );
        }
        let mut interface = HashMap::new();
        if given.is_none() {
            interface.insert("MacAddress", mac.to_string());
        }
        json(EndpointCreated { interface })
    }

    async fn join(&self, body: &[u8]) -> Answer {
        let req: Join = parse(body)?;
        let (network, address, mac) = {
            let map = self.endpoints.lock().map_err(|e| e.to_string())?;
            let ep = map.get(&req.endpoint_id).ok_or_else(|| {
                format!(
                    "cni-overlay: unknown endpoint {} (overlayd restarted?)",
                    req.endpoint_id
                )
            })?;
            (ep.network.clone(), ep.address, ep.mac)
        };
        let record = self.record(&network).await?;
        // The container's name comes from the Docker API, whose network inspect takes dockerd
        // 1 ms, or 8-10 ms with `--cluster-store` set: asked while the devices are made, which
        // need no name; the name is claimed before the endpoint's record is published.
        let (name, plumbed) = tokio::join!(
            self.container_name(&req.network_id, &req.endpoint_id),
            self.plumb(&record, &req.endpoint_id, address, mac),
        );
        let joined = async {
            let plumbed = plumbed?;
            let name = name?;
            self.claim(&record, &req.endpoint_id, address, name.as_deref())
                .await?;
            self.publish(&record, &req.endpoint_id, address, mac, name, &plumbed)
                .await?;
            Ok::<_, String>(plumbed.peer_name)
        };
        match joined.await {
            Ok(peer) => json(Joined {
                interface_name: InterfaceName {
                    src_name: peer,
                    dst_prefix: "eth",
                },
            }),
            Err(e) => {
                if let Err(undo) = self.detach(&network, &req.endpoint_id, Some(mac)).await {
                    log::warn!("docker: undoing a failed join: {undo}");
                }
                Err(e)
            }
        }
    }

    /// The name of the container an endpoint is for (Docker's endpoint name), from the Docker
    /// API: at `Join` the endpoint is in Docker's store.
    async fn container_name(
        &self,
        network: &str,
        endpoint: &str,
    ) -> Result<Option<String>, String> {
        let name =
            (self.engine.network(network).await?).and_then(|n| n.containers.get(endpoint).cloned());
        if name.is_none() {
            log::warn!("docker: no container name found for endpoint {endpoint}");
        }
        Ok(name)
    }

    /// Moves the address from its placeholder to the endpoint, reserving the container's name
    /// with it (etcd-ipam's one transaction): a name held on any host refuses the join with
    /// `endpoint with name <name> already exists in network <network>`.
    async fn claim(
        &self,
        record: &Network,
        endpoint: &str,
        address: IpNetwork,
        name: Option<&str>,
    ) -> Result<(), String> {
        let cfg = self.ipam_config(record)?;
        let mut store = self.store.lock().await;
        let holder = holder_of(&mut store, &record.name, address.ip()).await?;
        match holder {
            Some(h) if h.container_id == endpoint => return Ok(()),
            Some(h) if h.node == self.settings.node && h.container_id.starts_with(PENDING) => {
                store::release::release_allocation(
                    &mut store,
                    &record.name,
                    &h.container_id,
                    &h.ifname,
                    Some(&self.settings.node),
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            Some(h) => {
                return Err(format!(
                    "address {} is held by {} on {}",
                    address.ip(),
                    h.container_id,
                    h.node
                ))
            }
            None => {}
        }
        let attachment = Attachment {
            container_id: endpoint,
            ifname: IFNAME,
            name,
        };
        match allocator::add(&mut store, &cfg, &attachment, &[address.ip()]).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Never used: this host's next container gets it, as in the seed, where test2
                // gets 10.0.0.3 after test1 was refused.
                allocator::offer_again(&cfg, address.ip());
                Err(cni(e))
            }
        }
    }

    fn overlay_config(&self, record: &Network) -> OverlayConfig {
        OverlayConfig {
            network: record.name.clone(),
            vni: record.vni,
            mtu: record.mtu,
            port: DEFAULT_VXLAN_PORT,
            vtep: VtepChoice::Address(self.settings.vtep),
            node: self.settings.node.clone(),
            etcd: self.settings.etcd.clone(),
            host_access: record.host_access,
            embedded_dns: true,
            ipam_type: "etcd-ipam".into(),
        }
    }

    /// vxlan-overlay's ADD up to its record, with the container end left in the host's
    /// namespace for Docker to move: the network's devices and the macvlan child of its bridge.
    async fn plumb(
        &self,
        record: &Network,
        endpoint: &str,
        address: IpNetwork,
        mac: Mac,
    ) -> Result<Plumbed, String> {
        let err = |e: CniError| e.msg;
        let cfg = self.overlay_config(record);
        let host = Netlink::current().await.map_err(|e| e.to_string())?;
        let underlay = Underlay::resolve(&host, &cfg).await.map_err(err)?;
        let mtu = underlay.container_mtu(&cfg);
        let subnet = record
            .subnets
            .iter()
            .find(|s| s.contains(address.ip()))
            .copied()
            .ok_or("address outside the network")?;
        let gateway = IpNetwork::new(gateway_of(record, &subnet), subnet.prefix())
            .map_err(|e| e.to_string())?;
        let peer_name = container_end(endpoint);
        let devices = {
            let _devices = self.devices.lock().await;
            let _lock = network::lock(&cfg).map_err(err)?;
            let devices = network::ensure(&host, &cfg, &underlay, mtu, &[gateway])
                .await
                .map_err(err)?;
            // The container's interface is a macvlan child of the bridge, not a veth: a frame
            // to or from the container crosses no veth and no bridge port (the veth's queue and
            // receive pass are most of what the overlay costs beyond the kernel's VXLAN, see the
            // README). Its MAC is made local to the bridge, so that frames for it from the
            // VXLAN device and the gateway sandbox go up to it instead of being flooded; that
            // entry is also what keeps the network's devices while the container is attached.
            // Docker's containers need no host end: no `hostAccess`, no `bandwidth` plugin.
            // No link-local address while it waits in the host's namespace (Docker moves it,
            // and the move resets it to the container namespace's defaults).
            host.create_macvlan(&peer_name, devices.bridge.index, mac.octets(), mtu, false)
                .await
                .map_err(|e| e.to_string())?;
            host.bridge_local_add(devices.bridge.index, mac.octets())
                .await
                .map_err(|e| e.to_string())?;
            devices
        };
        self.forward
            .allow(&cfg.bridge_name(), devices.fresh)
            .await?;
        Ok(Plumbed {
            cfg,
            host,
            vtep: underlay.vtep,
            vxlan: devices.vxlan.index,
            fresh: devices.fresh,
            peer_name,
        })
    }

    /// The endpoint's record, and on devices just made the other endpoints' entries.
    async fn publish(
        &self,
        record: &Network,
        endpoint: &str,
        address: IpNetwork,
        mac: Mac,
        name: Option<String>,
        plumbed: &Plumbed,
    ) -> Result<(), String> {
        let err = |e: CniError| e.msg;
        let cfg = &plumbed.cfg;
        let endpoint_record = Endpoint {
            network: record.name.clone(),
            container_id: endpoint.to_string(),
            ifname: IFNAME.to_string(),
            name,
            aliases: Vec::new(),
            ips: vec![address],
            mac,
            node: self.settings.node.clone(),
            vtep: plumbed.vtep,
            vni: record.vni,
        };
        let mut store = self.store.lock().await;
        let listed =
            vxlan_overlay::peers::publish(&mut store, cfg, &endpoint_record, plumbed.fresh)
                .await
                .map_err(err)?
                .endpoints;
        // The other endpoints' entries are this overlayd's peer follower's to keep: it lists the
        // network when its bridge appears here and follows it. A join programs them only on
        // devices it made, ahead of that listing, as vxlan-overlay's ADD does; listing on every
        // join made each cost as much as the network.
        if let Some(endpoints) = listed {
            vxlan_overlay::peers::program(&plumbed.host, plumbed.vxlan, cfg, &endpoints)
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// vxlan-overlay's DEL: the container's interface and its local entry, the endpoint record
    /// if ours, the devices with the last one. `mac`: the endpoint's, when this overlayd knows it
    /// (else its record says).
    async fn detach(
        &self,
        network_name: &str,
        endpoint: &str,
        mac: Option<Mac>,
    ) -> Result<(), String> {
        let err = |e: CniError| e.msg;
        let record = match self.record(network_name).await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("docker: {e}; removing the endpoint's veth only");
                let host = Netlink::current().await.map_err(|e| e.to_string())?;
                host.delete_link(&names::host_veth(endpoint, OLD_IFNAME))
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(());
            }
        };
        let cfg = self.overlay_config(&record);
        let host = Netlink::current().await.map_err(|e| e.to_string())?;
        // Unknown to this overlayd (it restarted since the join): a join that completed published
        // the endpoint's record (under IFNAME, or OLD_IFNAME by an earlier overlayd), which has
        // the MAC; one cut short left the child in the host's namespace, which has it, and no
        // record. `recorded_as`: the ifname of the record to remove.
        let (mac, recorded_as) = match mac {
            Some(mac) => (Some(mac), Some(IFNAME)),
            None => {
                let mut found = None;
                let mut store = self.store.lock().await;
                for ifname in [IFNAME, OLD_IFNAME] {
                    if let Some(record) =
                        vxlan_overlay::peers::get(&mut store, &cfg, endpoint, ifname)
                            .await
                            .map_err(err)?
                    {
                        found = Some((record.mac, ifname));
                        break;
                    }
                }
                drop(store);
                match found {
                    Some((mac, ifname)) => (Some(mac), Some(ifname)),
                    None => {
                        let child = host
                            .link(&container_end(endpoint))
                            .await
                            .map_err(|e| e.to_string())?;
                        (child.and_then(|l| l.mac).map(Mac::from), None)
                    }
                }
            }
        };
        {
            let _devices = self.devices.lock().await;
            let lock = network::lock(&cfg).map_err(err)?;
            // The veth of an endpoint joined by an overlayd before macvlan children.
            host.delete_link(&names::host_veth(endpoint, OLD_IFNAME))
                .await
                .map_err(|e| e.to_string())?;
            // The container's interface, when Docker has moved it back (Leave) or never moved
            // it (a join that failed); in a namespace that is gone, it went with it.
            host.delete_link(&container_end(endpoint))
                .await
                .map_err(|e| e.to_string())?;
            if let (Some(mac), Some(bridge)) = (
                mac,
                host.link(&cfg.bridge_name())
                    .await
                    .map_err(|e| e.to_string())?,
            ) {
                host.bridge_local_del(bridge.index, mac.octets())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if network::remove_if_unused(&host, &cfg, &lock)
                .await
                .map_err(err)?
            {
                self.forward.revoke(&cfg.bridge_name()).await;
            }
        }
        let Some(ifname) = recorded_as else {
            return Ok(());
        };
        let mut store = self.store.lock().await;
        vxlan_overlay::peers::remove(&mut store, &cfg, endpoint, ifname)
            .await
            .map_err(err)
    }

    async fn delete_endpoint(&self, body: &[u8]) -> Answer {
        let req: EndpointRef = parse(body)?;
        let known = self
            .endpoints
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&req.endpoint_id));
        let (network, mac) = match known {
            Some(e) => (e.network, Some(e.mac)),
            None => (self.network_name(&req.network_id).await?, None),
        };
        self.detach(&network, &req.endpoint_id, mac).await?;
        ok()
    }
}

/// The container end's name in the host namespace, until Docker moves and renames it.
fn container_end(endpoint: &str) -> String {
    format!("dk{}", &endpoint[..endpoint.len().min(12)])
}

fn gateway_of(record: &Network, subnet: &IpNetwork) -> IpAddr {
    record
        .subnets
        .iter()
        .position(|s| s == subnet)
        .and_then(|i| record.gateways.get(i).copied())
        .unwrap_or_else(|| first_host(subnet))
}

/// Who holds `ip` in `network`.
async fn holder_of(store: &mut Store, network: &str, ip: IpAddr) -> Result<Option<Holder>, String> {
    let key = store.keys().ip(network, ip);
    let resp = store.get(key, None).await.map_err(|e| e.to_string())?;
    match resp.kvs().first() {
        Some(kv) => Ok(Some(
            records::decode::<Holder>(kv.key(), kv.value()).map_err(|e| e.to_string())?,
        )),
        None => Ok(None),
    }
}
