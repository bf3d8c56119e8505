//! The JSON records kept in etcd (the key layout is the store's), typed: addresses with their
//! prefix, MACs, VNIs. Each serialises exactly as the records already in etcd are written (field
//! names, text forms such as `"10.0.0.2/24"`, optional fields left out when empty), so existing
//! data reads, and a record read and written back is the same bytes.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::types::{Mac, Mtu, Vni};

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
    #[serde(with = "crate::text")]
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
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
    #[serde(with = "crate::text::vec")]
    pub ips: Vec<IpNetwork>,
    pub mac: Mac,
    pub node: String,
    /// The VTEP address of the endpoint's host: where VXLAN frames for `mac` are sent.
    pub vtep: IpAddr,
    pub vni: Vni,
}

impl Endpoint {
    /// What an endpoint is called in messages: its container name, else its container id's first
    /// 12 characters (as docker shows ids).
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.container_id.chars().take(12).collect())
    }
}

/// A host running overlayd: the value of `nodes/<name>`, attached to a lease so that it goes away
/// when the host does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    pub vtep: IpAddr,
    /// Unix seconds when this overlayd registered.
    pub since: u64,
}

/// The mark of a node whose lease is gone: the value of `gone/<node>`, written by the reclaimer
/// (overlayd's elected one) when it sees the node's lease go, or at its election for a node that
/// holds allocations or endpoints without a live lease; never while `nodes/<node>` exists. Removed
/// when the node's holdings are released, or when the node registers again. `since` is what the
/// grace period (`--reclaim-after`) is counted from, so a new reclaimer continues the countdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gone {
    /// Unix seconds when the reclaimer saw the node without a lease.
    pub since: u64,
}

/// The elected reclaimer: the value of `reclaimer`, under the lease of the overlayd that holds
/// it (a few seconds' TTL, so that a dead one is replaced within seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reclaimer {
    pub node: String,
    /// Unix seconds when it was elected.
    pub since: u64,
}

/// A network created with overlayctl: the value of `networks/<name>`. Its addressing (range sets,
/// usage) is [`crate::addressing::Addressing`]'s business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    pub name: String,
    pub vni: Vni,
    /// Network addresses with their prefix, e.g. `10.0.0.0/24`: one IPv4, one IPv6, or one each.
    #[serde(with = "crate::text::vec")]
    pub subnets: Vec<IpNetwork>,
    /// One per subnet, in the subnets' order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<IpAddr>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::text::option"
    )]
    pub ip_range: Option<IpNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<Mtu>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub host_access: bool,
    pub created: u64,
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records serialize")
}

/// A record read from `key`; a value that is not one is [`Error::Corrupt`], naming the key.
pub fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(value).map_err(|e| Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `json` (a record as written before the records were typed) and encodes it back:
    /// the same bytes.
    fn round_trip<T: Serialize + for<'de> Deserialize<'de>>(json: &str) -> T {
        let record: T = decode(b"/k", json.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(encode(&record)).unwrap(), json);
        record
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn endpoints_read_and_write_todays_json() {
        let e: Endpoint = round_trip(
            r#"{"network":"demo","containerId":"c1","ifname":"eth0","name":"test1","aliases":["web","api.v1"],"ips":["10.0.0.2/24","fd00::2/64"],"mac":"02:42:0a:00:00:02","node":"node1","vtep":"192.168.205.10","vni":4096}"#,
        );
        assert_eq!(e.ips, [net("10.0.0.2/24"), net("fd00::2/64")]);
        assert_eq!(e.ips[0].ip(), ip("10.0.0.2"));
        assert_eq!(e.mac, Mac::new([2, 0x42, 10, 0, 0, 2]));
        assert_eq!(e.vtep, ip("192.168.205.10"));
        assert_eq!(e.vni.get(), 4096);
        // Without name and aliases, and over an IPv6 underlay.
        round_trip::<Endpoint>(
            r#"{"network":"n","containerId":"c2","ifname":"net1","ips":["10.0.0.3/24"],"mac":"02:00:00:00:00:01","node":"n2","vtep":"2001:db8::1","vni":1}"#,
        );
    }

    #[test]
    fn an_endpoint_is_called_by_its_name_else_its_short_id() {
        let named: Endpoint = round_trip(
            r#"{"network":"demo","containerId":"c1","ifname":"eth0","name":"test1","ips":["10.0.0.2/24"],"mac":"02:42:0a:00:00:02","node":"node1","vtep":"192.168.205.10","vni":4096}"#,
        );
        assert_eq!(named.label(), "test1");
        let unnamed = Endpoint {
            name: None,
            container_id: "0123456789abcdef".into(),
            ..named
        };
        assert_eq!(unnamed.label(), "0123456789ab");
    }

    #[test]
    fn networks_read_and_write_todays_json() {
        let n: Network = round_trip(
            r#"{"name":"dual","vni":4097,"subnets":["10.1.0.0/24","fd00:1::/64"],"gateways":["10.1.0.1","fd00:1::fe"],"ipRange":"10.1.0.128/25","mtu":1400,"internal":true,"hostAccess":true,"created":1700000000}"#,
        );
        assert_eq!(n.subnets, [net("10.1.0.0/24"), net("fd00:1::/64")]);
        assert_eq!(n.gateways, [ip("10.1.0.1"), ip("fd00:1::fe")]);
        assert_eq!(n.ip_range, Some(net("10.1.0.128/25")));
        assert_eq!(n.mtu.map(Mtu::get), Some(1400));
        let n: Network = round_trip(
            r#"{"name":"demo","vni":4096,"subnets":["10.0.0.0/24"],"gateways":["10.0.0.1"],"internal":false,"hostAccess":false,"created":1}"#,
        );
        assert_eq!((n.ip_range, n.mtu), (None, None));
        // Written by hand: the optional fields may be missing altogether.
        let n: Network = decode(
            b"/k",
            br#"{"name":"old","vni":7,"subnets":["10.0.0.0/24"],"created":0}"#,
        )
        .unwrap();
        assert!(n.gateways.is_empty() && !n.internal && !n.host_access);
    }

    #[test]
    fn allocations_holders_and_nodes_read_and_write_todays_json() {
        let a: Allocation = round_trip(
            r#"{"containerId":"c1","ifname":"eth0","node":"node1","name":"test1","ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1"},{"address":"fd00::2/64"}]}"#,
        );
        assert_eq!(a.ips[0].address, net("10.0.0.2/24"));
        assert_eq!(a.ips[0].gateway, Some(ip("10.0.0.1")));
        assert_eq!(a.ips[1].gateway, None);
        round_trip::<Allocation>(
            r#"{"containerId":"fill-1","ifname":"eth0","node":"filler","ips":[{"address":"10.8.0.1/16"}]}"#,
        );
        round_trip::<Holder>(r#"{"containerId":"c1","ifname":"eth0","node":"node1"}"#);
        let n: Node = round_trip(r#"{"name":"node1","vtep":"192.168.205.10","since":1700000000}"#);
        assert_eq!(n.vtep, ip("192.168.205.10"));
        let g: Gone = round_trip(r#"{"since":1700000000}"#);
        assert_eq!(g.since, 1_700_000_000);
        let r: Reclaimer = round_trip(r#"{"node":"node1","since":1700000000}"#);
        assert_eq!(r.node, "node1");
    }

    #[test]
    fn unreadable_records_are_corrupt_naming_the_key() {
        for bad in [
            r#"{"network":"n","containerId":"c","ifname":"eth0","ips":["10.0.0/24"],"mac":"02:00:00:00:00:01","node":"n","vtep":"192.0.2.1","vni":1}"#,
            r#"{"network":"n","containerId":"c","ifname":"eth0","ips":[],"mac":"zz","node":"n","vtep":"192.0.2.1","vni":1}"#,
            r#"{"network":"n","containerId":"c","ifname":"eth0","ips":[],"mac":"02:00:00:00:00:01","node":"n","vtep":"host","vni":1}"#,
            r#"{"network":"n","containerId":"c","ifname":"eth0","ips":[],"mac":"02:00:00:00:00:01","node":"n","vtep":"192.0.2.1","vni":0}"#,
            "not json",
        ] {
            let e = decode::<Endpoint>(b"/p/endpoints/n/c/eth0", bad.as_bytes()).unwrap_err();
            assert!(
                matches!(&e, Error::Corrupt { key, .. } if key == "/p/endpoints/n/c/eth0"),
                "{bad}: {e}"
            );
            assert!(e
                .to_string()
                .starts_with("corrupt record at /p/endpoints/n/c/eth0: "));
        }
        assert!(decode::<Network>(
            b"/k",
            br#"{"name":"n","vni":1,"subnets":["x"],"created":0}"#
        )
        .is_err());
        assert!(decode::<Network>(
            b"/k",
            br#"{"name":"n","vni":1,"subnets":[],"mtu":100,"created":0}"#
        )
        .is_err());
    }

    #[test]
    fn an_address_without_prefix_reads_as_a_host_address() {
        let e: Endpoint = decode(
            b"/k",
            br#"{"network":"n","containerId":"c","ifname":"eth0","ips":["10.0.0.2"],"mac":"02:00:00:00:00:01","node":"n","vtep":"192.0.2.1","vni":1}"#,
        )
        .unwrap();
        assert_eq!(e.ips, [net("10.0.0.2/32")]);
    }
}
