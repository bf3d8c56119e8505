//! vxlan-overlay's configuration (the plugin object of a conflist).

use std::net::IpAddr;

use cni::{CniError, NetConf};
use serde::Deserialize;
use store::EtcdConfig;

pub const DEFAULT_PORT: u16 = 4789;
pub const MAX_VNI: u32 = (1 << 24) - 1;

#[derive(Debug, Clone)]
pub struct OverlayConfig {
    pub network: String,
    pub vni: u32,
    /// None: the underlay's MTU less the VXLAN overhead.
    pub mtu: Option<u32>,
    pub port: u16,
    pub vtep: VtepChoice,
    pub node: String,
    pub etcd: EtcdConfig,
    pub host_access: bool,
    /// overlayd answers the network's names at the gateway address; the result's `dns` says so.
    pub embedded_dns: bool,
    pub ipam_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VtepChoice {
    Address(IpAddr),
    Interface(String),
    /// The address of the interface that carries the default route.
    DefaultRoute,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields {
    #[serde(default)]
    vni: Option<u32>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    vtep: Option<VtepFields>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    etcd: Option<EtcdConfig>,
    #[serde(default)]
    host_access: Option<bool>,
    #[serde(default = "yes")]
    embedded_dns: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VtepFields {
    #[serde(default)]
    address: Option<IpAddr>,
    #[serde(default)]
    interface: Option<String>,
}

impl OverlayConfig {
    /// Reads the configuration; a conflist may leave out `vni` for a network made with
    /// overlayctl: it then comes from the network's record in etcd (with `mtu` and `hostAccess`
    /// when those are left out too), at the cost of one round trip.
    pub fn load(conf: &NetConf) -> Result<Self, CniError> {
        let mut cfg = Self::from_netconf(conf)?;
        if cfg.vni == 0 {
            let fields: Fields = conf.plugin_fields()?;
            let record = store::block_on(async { store::Store::new(cfg.etcd.clone())?.network(&cfg.network).await })??
                .ok_or_else(|| {
                    CniError::new(
                        cni::codes::UNKNOWN_NETWORK,
                        format!("no vni in the configuration and network {} has no record in etcd (overlayctl network create)", cfg.network),
                    )
                })?;
            cfg.vni = record.vni;
            if fields.mtu.is_none() {
                cfg.mtu = record.mtu;
            }
            if fields.host_access.is_none() {
                cfg.host_access = record.host_access;
            }
        }
        Ok(cfg)
    }

    /// Parses the configuration; `vni` is 0 when it is left to the network's record.
    pub fn from_netconf(conf: &NetConf) -> Result<Self, CniError> {
        let fields: Fields = conf.plugin_fields()?;
        let vni = fields.vni.unwrap_or(0);
        if fields.vni.is_some() && (vni == 0 || vni > MAX_VNI) {
            return Err(CniError::invalid_config(format!(
                "vni {vni} is outside 1 to {MAX_VNI}"
            )));
        }
        let mtu = match fields.mtu {
            None | Some(0) => None,
            Some(m) if (576..=65535).contains(&m) => Some(m),
            Some(m) => {
                return Err(CniError::invalid_config(format!(
                    "mtu {m} is outside 576 to 65535"
                )))
            }
        };
        let port = fields.port.unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err(CniError::invalid_config("port 0 is not a UDP port"));
        }
        let vtep = match fields.vtep {
            None => VtepChoice::DefaultRoute,
            Some(VtepFields {
                address: Some(a),
                interface: None,
            }) => VtepChoice::Address(a),
            Some(VtepFields {
                address: None,
                interface: Some(i),
            }) => {
                cni::env::validate_ifname(&i).map_err(|_| {
                    CniError::invalid_config(format!(
                        "vtep.interface {i:?} is not an interface name"
                    ))
                })?;
                VtepChoice::Interface(i)
            }
            Some(_) => {
                return Err(CniError::invalid_config(
                    "vtep takes exactly one of address or interface",
                ))
            }
        };
        // etcd may be given once for the whole plugin, or only in the ipam section (etcd-ipam's).
        let etcd = match fields.etcd {
            Some(e) => e,
            None => conf
                .ipam
                .as_ref()
                .and_then(|i| i.get("etcd"))
                .map(|e| {
                    serde_json::from_value(e.clone())
                        .map_err(|e| CniError::decode(format!("ipam.etcd: {e}")))
                })
                .transpose()?
                .ok_or_else(|| CniError::invalid_config("etcd.endpoints is required"))?,
        };
        etcd.validate().map_err(CniError::from)?;
        let node = match fields.node.or_else(|| {
            conf.ipam
                .as_ref()?
                .get("node")?
                .as_str()
                .map(str::to_string)
        }) {
            Some(n) => n,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .ok_or_else(|| {
                    CniError::invalid_config("node is not set and the hostname cannot be read")
                })?,
        };
        if !cni::env::is_valid_identifier(&node) || node.len() > 200 {
            return Err(CniError::invalid_config(format!(
                "node name {node:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
            )));
        }
        let ipam_type = conf.ipam_type()?.to_string();
        Ok(OverlayConfig {
            network: conf.name.clone(),
            vni,
            mtu,
            port,
            vtep,
            node,
            etcd,
            host_access: fields.host_access.unwrap_or(false),
            embedded_dns: fields.embedded_dns,
            ipam_type,
        })
    }

    /// Names of this network's devices in the host namespace. VNIs are unique per host, so they name them.
    pub fn bridge_name(&self) -> String {
        format!("ovbr{}", self.vni)
    }

    pub fn vxlan_name(&self) -> String {
        format!("ovx{}", self.vni)
    }

    /// The host end of the veth into the gateway sandbox.
    pub fn gateway_veth_name(&self) -> String {
        format!("ovgw{}", self.vni)
    }

    /// The gateway sandbox namespace (under /run/netns). The node is part of the name so that
    /// simulated hosts sharing one machine do not share sandboxes.
    pub fn sandbox_name(&self) -> String {
        format!("ovl-{}-{}", self.vni, self.node)
    }

    /// The DNS domain overlayd answers for this network: `<name>.<network>.overlay`.
    pub fn dns_domain(&self) -> String {
        dns_domain(&self.network)
    }

    /// The bridge's alias ties the VNI to the network: a second network with the same VNI on this
    /// host is refused instead of being joined to the first.
    pub fn bridge_alias(&self) -> String {
        format!("cni-overlay:{}", self.network)
    }

    /// The bridge's MAC, set in the very message that creates it: the kernel sets an alias only in
    /// a second message, so the MAC is what tells our bridge (also one caught between the two, by
    /// a concurrent ADD or after a killed one) from a stranger's. Also the MAC the result reports:
    /// the bridge keeps it for life instead of taking its ports' as they come and go.
    pub fn bridge_mac(&self) -> [u8; 6] {
        netops::derived_mac(&[
            "cni-overlay bridge",
            &self.network,
            &self.vni.to_string(),
            &self.node,
        ])
    }
}

/// The DNS domain of a network, shared with overlayd's DNS server.
pub fn dns_domain(network: &str) -> String {
    format!("{}.overlay", network.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(extra: Value) -> Result<OverlayConfig, CniError> {
        let mut v = json!({"cniVersion": "1.0.0", "name": "demo", "type": "vxlan-overlay", "vni": 42, "node": "n1",
                           "etcd": {"endpoints": ["127.0.0.1:2379"]}, "ipam": {"type": "etcd-ipam"}});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        OverlayConfig::from_netconf(&NetConf::parse(v.to_string().as_bytes())?)
    }

    #[test]
    fn defaults() {
        let c = parse(json!({})).unwrap();
        assert_eq!(
            (c.vni, c.port, c.mtu, c.host_access),
            (42, 4789, None, false)
        );
        assert_eq!(c.vtep, VtepChoice::DefaultRoute);
        assert_eq!(
            (c.bridge_name(), c.vxlan_name(), c.sandbox_name()),
            ("ovbr42".into(), "ovx42".into(), "ovl-42-n1".into())
        );
    }

    #[test]
    fn etcd_and_node_may_come_from_the_ipam_section() {
        let c = parse(json!({"etcd": null, "node": null, "ipam": {"type": "etcd-ipam", "node": "inner", "etcd": {"endpoints": ["e:1"]}}})).unwrap();
        assert_eq!(
            (c.node.as_str(), c.etcd.endpoints[0].as_str()),
            ("inner", "e:1")
        );
    }

    #[test]
    fn bad_values() {
        for (extra, code) in [
            (json!({"vni": 0}), 7),
            (json!({"vni": 16777216}), 7),
            (json!({"vni": "x"}), 6),
            (json!({"mtu": 100}), 7),
            (json!({"port": 0}), 7),
            (json!({"vtep": {"address": "x"}}), 6),
            (
                json!({"vtep": {"address": "1.2.3.4", "interface": "eth0"}}),
                7,
            ),
            (json!({"vtep": {"interface": "a/b"}}), 7),
            (json!({"node": "a b"}), 7),
            (json!({"etcd": {"endpoints": []}}), 7),
            (json!({"ipam": {}}), 7),
        ] {
            assert_eq!(parse(extra.clone()).unwrap_err().code, code, "{extra}");
        }
    }
}
