//! The ADD result and its conversion between specification versions.
//!
//! One in-memory form (the 1.1.0 one) is read from any version from 0.3.0 on and written in the
//! version the request asked for: `ips[].version` only before 1.0.0, the 1.1.0 fields only from
//! 1.1.0 on, and empty optional fields never.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::version::Version;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The container's namespace path for interfaces inside it; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The address with the prefix length of its subnet, e.g. `10.0.0.2/24`.
    #[serde(with = "cidr")]
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`; absent in IPAM results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    #[serde(with = "cidr")]
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }

    pub fn is_default(&self) -> bool {
        self.dst.prefix() == 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result of any version from 0.3.0 on (a prevResult, or a delegate's output).
    pub fn from_json(value: &Value) -> Result<Self, CniError> {
        if !value.is_object() {
            return Err(CniError::decode("result is not a JSON object"));
        }
        if value.get("ip4").is_some() || value.get("ip6").is_some() {
            return Err(CniError::new(
                crate::codes::INCOMPATIBLE_VERSION,
                "results older than 0.3.0 are not supported",
            ));
        }
        let result: CniResult = serde_json::from_value(value.clone())
            .map_err(|e| CniError::decode(format!("invalid result: {e}")))?;
        for ip in &result.ips {
            if let Some(i) = ip.interface {
                if i >= result.interfaces.len() {
                    return Err(CniError::decode(format!(
                        "invalid result: ip {} names interface {i}, but there are {} interfaces",
                        ip.address,
                        result.interfaces.len()
                    )));
                }
            }
        }
        Ok(result)
    }

    /// Writes the result in `version`.
    pub fn to_json(&self, version: Version) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), version.as_str().into());
        if !self.interfaces.is_empty() {
            let interfaces = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    if !version.has_v1_1_fields() {
                        i.mtu = None;
                        i.socket_path.clear();
                        i.pci_id.clear();
                    }
                    serde_json::to_value(i).expect("interface serializes")
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !self.ips.is_empty() {
            let ips = self
                .ips
                .iter()
                .map(|ip| {
                    let mut v = serde_json::to_value(ip).expect("ip serializes");
                    if version.has_ip_version_field() {
                        let family = if ip.address.is_ipv4() { "4" } else { "6" };
                        v.as_object_mut()
                            .expect("object")
                            .insert("version".into(), family.into());
                    }
                    v
                })
                .collect();
            out.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            let routes = self
                .routes
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    if !version.has_v1_1_fields() {
                        (r.mtu, r.advmss, r.priority, r.table, r.scope) =
                            (None, None, None, None, None);
                    }
                    serde_json::to_value(r).expect("route serializes")
                })
                .collect();
            out.insert("routes".into(), Value::Array(routes));
        }
        if !self.dns.is_empty() {
            out.insert(
                "dns".into(),
                serde_json::to_value(&self.dns).expect("dns serializes"),
            );
        }
        Value::Object(out)
    }

    /// Appends an interface and returns its index, for `ips[].interface`.
    pub fn push_interface(&mut self, interface: Interface) -> usize {
        self.interfaces.push(interface);
        self.interfaces.len() - 1
    }

    pub fn has_default_route(&self, v4: bool) -> bool {
        self.routes
            .iter()
            .any(|r| r.is_default() && r.dst.is_ipv4() == v4)
    }
}

/// CIDR strings that keep the host part (`10.0.0.2/24`), as CNI results carry them.
mod cidr {
    use ipnetwork::IpNetwork;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &IpNetwork, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNetwork, D::Error> {
        let s = String::deserialize(d)?;
        if !s.contains('/') {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is not in CIDR notation"
            )));
        }
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "veth1".into(),
                    mac: "aa:bb:cc:dd:ee:ff".into(),
                    mtu: Some(1450),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: "/run/netns/c".into(),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::2/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                priority: Some(5),
                ..Route::new("0.0.0.0/0".parse().unwrap(), None)
            }],
            dns: Dns {
                nameservers: vec!["10.0.0.1".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn ip_version_only_before_1_0_0() {
        for (v, has) in [
            (Version::V0_3_0, true),
            (Version::V0_3_1, true),
            (Version::V0_4_0, true),
            (Version::V1_0_0, false),
            (Version::V1_1_0, false),
        ] {
            let out = sample().to_json(v);
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(out["ips"][0].get("version").is_some(), has, "{v}");
            if has {
                assert_eq!(out["ips"][0]["version"], "4");
                assert_eq!(out["ips"][1]["version"], "6");
            }
        }
    }

    #[test]
    fn v1_1_fields_only_in_1_1_0() {
        let old = sample().to_json(Version::V1_0_0);
        assert!(old["interfaces"][0].get("mtu").is_none());
        assert!(old["routes"][0].get("priority").is_none());
        let new = sample().to_json(Version::V1_1_0);
        assert_eq!(new["interfaces"][0]["mtu"], 1450);
        assert_eq!(new["routes"][0]["priority"], 5);
    }

    #[test]
    fn empty_fields_are_omitted() {
        let out = CniResult::default().to_json(Version::V1_1_0);
        assert_eq!(out, json!({"cniVersion": "1.1.0"}));
        let out = sample().to_json(Version::V1_1_0);
        assert!(out["interfaces"][0].get("sandbox").is_none());
        assert!(out["dns"].get("domain").is_none());
        assert!(out["ips"][1].get("gateway").is_none());
    }

    #[test]
    fn reads_every_version_back_identically() {
        for v in [Version::V0_3_0, Version::V0_4_0, Version::V1_1_0] {
            let back = CniResult::from_json(&sample().to_json(v)).unwrap();
            let mut expected = sample();
            if !v.has_v1_1_fields() {
                expected.interfaces[0].mtu = None;
                expected.routes[0].priority = None;
            }
            assert_eq!(back, expected, "{v}");
        }
    }

    #[test]
    fn keeps_the_host_part_of_addresses() {
        let r = CniResult::from_json(&json!({"ips": [{"address": "10.0.0.7/24"}]})).unwrap();
        assert_eq!(r.ips[0].address.ip().to_string(), "10.0.0.7");
        assert_eq!(
            r.to_json(Version::V1_0_0)["ips"][0]["address"],
            "10.0.0.7/24"
        );
    }

    #[test]
    fn broken_results_are_decode_errors() {
        for bad in [
            json!("string"),
            json!({"ips": [{"address": "10.0.0.7"}]}),
            json!({"ips": [{"address": "nope/24"}]}),
            json!({"interfaces": "eth0"}),
            json!({"ips": [{"address": "10.0.0.7/24", "interface": 3}]}),
            json!({"routes": [{"gw": "10.0.0.1"}]}),
        ] {
            assert_eq!(CniResult::from_json(&bad).unwrap_err().code, 6, "{bad}");
        }
        assert_eq!(
            CniResult::from_json(&json!({"ip4": {"ip": "10.0.0.2/24"}}))
                .unwrap_err()
                .code,
            1
        );
    }
}
