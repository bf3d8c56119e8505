//! vxlan-overlay's configuration (the plugin object of a conflist). Parsing is pure: a
//! conflist that leaves the VNI to the network's record is completed with the record the plugin
//! call reads through its one etcd connection.

use std::net::IpAddr;

use cni::{CniError, NetConf};
use model::records::Network;
use model::types::DEFAULT_VXLAN_PORT;
use model::{names, Mac, Mtu, Vni};
use serde::Deserialize;
use store::{EtcdConfig, PluginSettings};

#[derive(Debug, Clone)]
pub struct OverlayConfig {
    pub network: String,
    pub vni: Vni,
    /// None: the underlay's MTU less the VXLAN overhead.
    pub mtu: Option<Mtu>,
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

/// The configuration as given; `vni` (and with it `mtu` and `hostAccess`, when left out too) may
/// be the network record's.
#[derive(Debug, Clone)]
pub struct Conf {
    pub network: String,
    pub settings: PluginSettings,
    vni: Option<Vni>,
    mtu: Option<Mtu>,
    /// Whether `mtu` was given at all (0 is given: the underlay's, not the record's).
    mtu_given: bool,
    port: u16,
    vtep: VtepChoice,
    host_access: Option<bool>,
    embedded_dns: bool,
    ipam_type: String,
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

impl Conf {
    /// Reads the configuration; no I/O.
    pub fn parse(conf: &NetConf) -> Result<Conf, CniError> {
        let fields: Fields = conf.plugin_fields()?;
        let vni = fields.vni.map(Vni::new).transpose()?;
        let mtu = match fields.mtu {
            None | Some(0) => None,
            Some(m) => Some(Mtu::new(m)?),
        };
        let port = fields.port.unwrap_or(DEFAULT_VXLAN_PORT);
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
        let settings = PluginSettings::from_netconf(conf)?;
        let ipam_type = conf.ipam_type()?.to_string();
        Ok(Conf {
            network: conf.name.clone(),
            settings,
            vni,
            mtu,
            mtu_given: fields.mtu.is_some(),
            port,
            vtep,
            host_access: fields.host_access,
            embedded_dns: fields.embedded_dns,
            ipam_type,
        })
    }

    /// Whether the VNI is the network record's (a conflist for a network made with overlayctl).
    pub fn needs_record(&self) -> bool {
        self.vni.is_none()
    }

    /// The configuration, complete: `record` is the network's record, read when
    /// [`Conf::needs_record`] (none is code 108); it gives the VNI, and `mtu` and `hostAccess`
    /// where the conflist leaves them out.
    pub fn complete(self, record: Option<&Network>) -> Result<OverlayConfig, CniError> {
        let (vni, mtu, host_access) = match (self.vni, record) {
            (Some(vni), _) => (vni, self.mtu, self.host_access.unwrap_or(false)),
            (None, Some(record)) => (
                record.vni,
                if self.mtu_given { self.mtu } else { record.mtu },
                self.host_access.unwrap_or(record.host_access),
            ),
            (None, None) => {
                return Err(CniError::new(
                    cni::codes::UNKNOWN_NETWORK,
                    format!(
                        "no vni in the configuration and network {} has no record in etcd \
                         (overlayctl network create)",
                        self.network
                    ),
                ))
            }
        };
        Ok(OverlayConfig {
            network: self.network,
            vni,
            mtu,
            port: self.port,
            vtep: self.vtep,
            node: self.settings.node,
            etcd: self.settings.etcd,
            host_access,
            embedded_dns: self.embedded_dns,
            ipam_type: self.ipam_type,
        })
    }
}

impl OverlayConfig {
    /// A configuration that gives its VNI itself (tests; the plugin goes through [`Conf`]).
    pub fn from_netconf(conf: &NetConf) -> Result<Self, CniError> {
        Conf::parse(conf)?.complete(None)
    }

    /// This network's devices, sandbox, aliases, MAC and DNS domain: [`model::names`].
    pub fn bridge_name(&self) -> String {
        names::bridge(self.vni)
    }

    pub fn vxlan_name(&self) -> String {
        names::vxlan(self.vni)
    }

    pub fn gateway_veth_name(&self) -> String {
        names::gateway_veth(self.vni)
    }

    pub fn sandbox_name(&self) -> String {
        names::sandbox(self.vni, &self.node)
    }

    pub fn dns_domain(&self) -> String {
        names::dns_domain(&self.network)
    }

    pub fn bridge_alias(&self) -> String {
        names::bridge_alias(&self.network)
    }

    pub fn bridge_mac(&self) -> Mac {
        names::bridge_mac(&self.network, self.vni, &self.node)
    }
}

impl store::plugin::PluginConf for Conf {
    type Complete = OverlayConfig;

    fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    fn network(&self) -> &str {
        &self.network
    }

    fn needs_record(&self) -> bool {
        Conf::needs_record(self)
    }

    fn complete(self, record: Option<&Network>) -> Result<OverlayConfig, CniError> {
        Conf::complete(self, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn conf(extra: Value) -> Result<Conf, CniError> {
        let mut v = json!({"cniVersion": "1.0.0", "name": "demo", "type": "vxlan-overlay", "vni": 42, "node": "n1",
                           "etcd": {"endpoints": ["127.0.0.1:2379"]}, "ipam": {"type": "etcd-ipam"}});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Conf::parse(&NetConf::parse(v.to_string().as_bytes())?)
    }

    fn parse(extra: Value) -> Result<OverlayConfig, CniError> {
        conf(extra)?.complete(None)
    }

    #[test]
    fn defaults() {
        let c = parse(json!({})).unwrap();
        assert_eq!(
            (c.vni.get(), c.port, c.mtu, c.host_access),
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
        let e = parse(json!({"ipam": {"type": "etcd-ipam", "node": "inner"}})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("(n1) and the ipam section (inner)"), "{e}");
    }

    #[test]
    fn the_vni_mtu_and_host_access_of_the_record() {
        let record: Network = serde_json::from_value(json!({
            "name": "demo", "vni": 4096, "subnets": ["10.0.0.0/24"], "mtu": 1400,
            "hostAccess": true, "created": 0}))
        .unwrap();
        let c = conf(json!({"vni": null})).unwrap();
        assert!(c.needs_record());
        assert_eq!(c.clone().complete(None).unwrap_err().code, 108);
        let c = c.complete(Some(&record)).unwrap();
        assert_eq!(
            (c.vni.get(), c.mtu.map(Mtu::get), c.host_access),
            (4096, Some(1400), true)
        );
        // What the conflist gives wins; an mtu of 0 is given (the underlay's).
        let c = conf(json!({"vni": null, "mtu": 0, "hostAccess": false}))
            .unwrap()
            .complete(Some(&record))
            .unwrap();
        assert_eq!((c.mtu, c.host_access), (None, false));
        // A VNI in the conflist needs no record.
        assert!(!conf(json!({})).unwrap().needs_record());
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
            (json!({"node": "n".repeat(201)}), 7),
            (json!({"etcd": {"endpoints": []}}), 7),
            (json!({"ipam": {}}), 7),
        ] {
            assert_eq!(parse(extra.clone()).unwrap_err().code, code, "{extra}");
        }
    }
}
