//! The JSON records kept in etcd.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Who holds an address or a name: the value of `ips/...` and `names/...` keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub container_id: String,
    pub ifname: String,
    pub node: String,
}

/// One attachment's allocation: the value of `owners/<container id>/<ifname>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub container_id: String,
    pub ifname: String,
    pub node: String,
    /// The reserved container name, if the runtime gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub ips: Vec<AllocatedIp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedIp {
    /// With the subnet's prefix length, e.g. `10.0.0.2/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A container attached to an overlay network: the value of `endpoints/<net>/<container id>/<ifname>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extra DNS names (podman's `aliases` capability).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// With prefix length, e.g. `10.0.0.2/24`.
    pub ips: Vec<String>,
    pub mac: String,
    pub node: String,
    /// The VTEP address of the endpoint's host: where VXLAN frames for `mac` are sent.
    pub vtep: String,
    pub vni: u32,
}

/// A host running overlayd: the value of `nodes/<name>`, attached to a lease so that it goes away
/// when the host does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    pub vtep: String,
    /// Unix seconds when this overlayd registered.
    pub since: u64,
}

/// A network created with overlayctl: the value of `networks/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    pub name: String,
    pub vni: u32,
    pub subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub host_access: bool,
    pub created: u64,
}

impl Network {
    /// etcd-ipam's `ranges` for this network: one range set per subnet, with its gateway, and the
    /// ip-range (v4) as rangeStart/rangeEnd without its own network and broadcast addresses.
    pub fn ipam_ranges(&self) -> serde_json::Value {
        let sets: Vec<serde_json::Value> = self
            .subnets
            .iter()
            .enumerate()
            .map(|(i, subnet)| {
                let mut range = serde_json::json!({"subnet": subnet});
                if let Some(gateway) = self.gateways.get(i) {
                    range["gateway"] = serde_json::json!(gateway);
                }
                if let Some((start, end)) = self
                    .ip_range
                    .as_deref()
                    .filter(|_| !subnet.contains(':'))
                    .and_then(v4_range_bounds)
                {
                    range["rangeStart"] = serde_json::json!(start);
                    range["rangeEnd"] = serde_json::json!(end);
                }
                serde_json::json!([range])
            })
            .collect();
        serde_json::Value::Array(sets)
    }
}

fn v4_range_bounds(cidr: &str) -> Option<(String, String)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let size = 1u64 << (32 - prefix);
    let first = u32::from(addr) as u64;
    let (start, end) = if size > 2 {
        (first + 1, first + size - 2)
    } else {
        (first, first + size - 1)
    };
    Some((
        std::net::Ipv4Addr::from(start as u32).to_string(),
        std::net::Ipv4Addr::from(end as u32).to_string(),
    ))
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records serialize")
}

pub fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_ranges_of_a_network() {
        let n = Network {
            name: "demo".into(),
            vni: 1,
            subnets: vec!["10.0.0.0/24".into(), "fd00::/64".into()],
            gateways: vec!["10.0.0.1".into(), "fd00::1".into()],
            ip_range: Some("10.0.0.128/25".into()),
            mtu: None,
            internal: false,
            host_access: false,
            created: 0,
        };
        assert_eq!(
            n.ipam_ranges(),
            serde_json::json!([[{"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "rangeStart": "10.0.0.129", "rangeEnd": "10.0.0.254"}],
                               [{"subnet": "fd00::/64", "gateway": "fd00::1"}]])
        );
    }
}
