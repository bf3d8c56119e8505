//! Published ports: the mapping types and when two of them collide. No nftables here: how a
//! mapping is written as a DNAT rule belongs to the gwbridge table.

use std::net::IpAddr;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// "tcp" or "udp", in any case.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port: packets to `host_port` on the host's addresses (only `host_ip` when given)
/// go to `container_addr:container_port`. One family: `host_ip`, when set, has the family of
/// `container_addr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mapping {
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_addr: IpAddr,
    pub container_port: u16,
}

impl Mapping {
    /// Whether a packet could be meant for both this mapping and one of `protocol` on `host_ip`
    /// (None: every address) and `host_port`: same protocol and port, and host addresses that
    /// overlap (either is every address, or both name the same one). Mappings on two different
    /// addresses of the host do not collide, as with Docker.
    pub fn overlaps(&self, protocol: Protocol, host_ip: Option<IpAddr>, host_port: u16) -> bool {
        self.protocol == protocol
            && self.host_port == host_port
            && match (self.host_ip, host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    pub(crate) fn overlaps_mapping(&self, other: &Mapping) -> bool {
        self.overlaps(other.protocol, other.host_ip, other.host_port)
    }
}

impl std::fmt::Display for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match self.container_addr {
            IpAddr::V4(a) => format!("{a}:{}", self.container_port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.container_port),
        };
        match self.host_ip {
            Some(ip) => write!(
                f,
                "{}/{} on {ip} -> {target}",
                self.host_port, self.protocol
            ),
            None => write!(f, "{}/{} -> {target}", self.host_port, self.protocol),
        }
    }
}

/// A mapping found in the table, with the tag of the container it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub tag: String,
    pub mapping: Mapping,
}

/// Refuses `mappings` (wanted by the container tagged `tag`) with [`Error::PortInUse`] when one
/// overlaps a mapping already published (`existing`, whoever holds it), or an earlier one of the
/// same request other than its other-family twin. Exactly the same mapping (same target address
/// and port) is no conflict: the target is an address of one container's gateway interface, so
/// only another network of that container publishes it (podman hands every network of a
/// container its port mappings), and each network keeps its own rule until its DEL.
pub(crate) fn check_conflicts(
    existing: &[Published],
    tag: &str,
    mappings: &[Mapping],
) -> Result<()> {
    let in_use = |m: &Mapping, holder: &str| Error::PortInUse {
        protocol: m.protocol,
        port: m.host_port,
        holder: holder.to_string(),
    };
    for (i, m) in mappings.iter().enumerate() {
        if let Some(p) = existing
            .iter()
            .find(|p| p.mapping.overlaps_mapping(m) && p.mapping != *m)
        {
            return Err(in_use(m, &p.tag));
        }
        // The same port twice in one request is fine only as the two families of one mapping.
        let clash = mappings[..i].iter().any(|earlier| {
            earlier.overlaps_mapping(m)
                && !(earlier.host_ip == m.host_ip
                    && earlier.container_port == m.container_port
                    && earlier.container_addr.is_ipv4() != m.container_addr.is_ipv4())
        });
        if clash {
            return Err(in_use(m, tag));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `protocol` `host_port` on `host_ip` ("" for every address) to `addr`:`port`.
    fn mapping(
        protocol: Protocol,
        host_ip: &str,
        host_port: u16,
        addr: &str,
        port: u16,
    ) -> Mapping {
        Mapping {
            protocol,
            host_ip: (!host_ip.is_empty()).then(|| ip(host_ip)),
            host_port,
            container_addr: ip(addr),
            container_port: port,
        }
    }

    fn published(tag: &str, mapping: Mapping) -> Published {
        Published {
            tag: tag.to_string(),
            mapping,
        }
    }

    /// The holder named by a refusal, or None when accepted.
    fn holder(existing: &[Published], mappings: &[Mapping]) -> Option<String> {
        match check_conflicts(existing, "new:c/eth1", mappings) {
            Ok(()) => None,
            Err(Error::PortInUse { holder, .. }) => Some(holder),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn protocol_names_parse_in_any_case_and_nothing_else_does() {
        assert_eq!(Protocol::parse("tcp"), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("TCP"), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("Udp"), Some(Protocol::Udp));
        for bad in ["", "sctp", "tcp ", " udp", "tcp6", "icmp"] {
            assert_eq!(Protocol::parse(bad), None, "{bad:?}");
        }
        for p in [Protocol::Tcp, Protocol::Udp] {
            assert_eq!(Protocol::parse(p.as_str()), Some(p));
            assert_eq!(p.to_string(), p.as_str());
        }
    }

    #[test]
    fn overlap_needs_the_same_protocol_and_port() {
        let m = mapping(Protocol::Tcp, "", 8080, "172.18.0.2", 80);
        assert!(m.overlaps(Protocol::Tcp, None, 8080));
        assert!(
            !m.overlaps(Protocol::Udp, None, 8080),
            "tcp and udp are apart"
        );
        assert!(!m.overlaps(Protocol::Tcp, None, 8081));
        // The container side plays no part: the host port is what is taken.
        assert!(m.overlaps_mapping(&mapping(Protocol::Tcp, "", 8080, "172.18.0.9", 9999)));
    }

    #[test]
    fn every_address_overlaps_any_address_of_either_family() {
        let everywhere = mapping(Protocol::Tcp, "", 8080, "172.18.0.2", 80);
        let on_one = mapping(Protocol::Tcp, "192.168.205.10", 8080, "172.18.0.3", 80);
        assert!(everywhere.overlaps(Protocol::Tcp, Some(ip("192.168.205.10")), 8080));
        assert!(on_one.overlaps(Protocol::Tcp, None, 8080));
        // The families of the host addresses are not compared: a v4-only mapping on every
        // address still holds the port against a v6 one.
        assert!(everywhere.overlaps(Protocol::Tcp, Some(ip("fd00::1")), 8080));
        let v6_everywhere = mapping(Protocol::Tcp, "", 8080, "fd00::2", 80);
        assert!(v6_everywhere.overlaps_mapping(&everywhere));
    }

    #[test]
    fn two_host_addresses_are_two_mappings() {
        let a = mapping(Protocol::Tcp, "192.168.205.10", 8080, "172.18.0.2", 80);
        assert!(a.overlaps(Protocol::Tcp, Some(ip("192.168.205.10")), 8080));
        assert!(!a.overlaps(Protocol::Tcp, Some(ip("192.168.205.11")), 8080));
        assert!(
            !a.overlaps(Protocol::Tcp, Some(ip("fd00::10")), 8080),
            "v4 vs v6"
        );
        let v6 = mapping(Protocol::Tcp, "fd00::10", 8080, "fd00::2", 80);
        assert!(!v6.overlaps(Protocol::Tcp, Some(ip("fd00::11")), 8080));
        assert!(v6.overlaps(Protocol::Tcp, Some(ip("fd00::10")), 8080));
    }

    #[test]
    fn host_addresses_are_compared_as_addresses_not_as_text() {
        let m = mapping(Protocol::Udp, "fd00:0:0::10", 53, "fd00::2", 53);
        assert!(m.overlaps(Protocol::Udp, Some(ip("fd00::10")), 53));
        // The unspecified address is not "every address" here: the caller (cni's
        // PortMapping::host_ip) turns 0.0.0.0 and :: into None before a mapping is made.
        let unspecified = mapping(Protocol::Tcp, "0.0.0.0", 80, "172.18.0.2", 80);
        assert!(!unspecified.overlaps(Protocol::Tcp, Some(ip("10.0.0.1")), 80));
    }

    #[test]
    fn unspecified_host_ips_from_the_runtime_mean_every_address() {
        for any in ["0.0.0.0", "::", ""] {
            let pm = cni::PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".to_string(),
                host_ip: any.to_string(),
            };
            let m = mapping(Protocol::Tcp, "192.168.205.10", 8080, "172.18.0.2", 80);
            assert_eq!(pm.host_ip(), None, "{any:?}");
            assert!(
                m.overlaps(Protocol::Tcp, pm.host_ip(), pm.host_port),
                "{any:?}"
            );
        }
    }

    #[test]
    fn mappings_display_as_host_side_then_target() {
        let m = mapping(Protocol::Tcp, "", 8080, "172.18.0.2", 80);
        assert_eq!(m.to_string(), "8080/tcp -> 172.18.0.2:80");
        let m = mapping(Protocol::Udp, "192.168.205.10", 5353, "172.18.0.2", 53);
        assert_eq!(m.to_string(), "5353/udp on 192.168.205.10 -> 172.18.0.2:53");
        let m = mapping(Protocol::Tcp, "fd00::10", 8443, "fd00::2", 443);
        assert_eq!(m.to_string(), "8443/tcp on fd00::10 -> [fd00::2]:443");
    }

    #[test]
    fn a_port_held_by_another_container_is_refused_naming_the_holder() {
        let existing = [
            published(
                "a:1/eth1",
                mapping(Protocol::Tcp, "", 8080, "172.18.0.2", 80),
            ),
            published(
                "b:2/eth1",
                mapping(Protocol::Udp, "192.168.205.10", 53, "172.18.0.3", 53),
            ),
        ];
        let tcp = |host_ip, port| mapping(Protocol::Tcp, host_ip, port, "172.18.0.9", 80);
        let udp = |host_ip, port| mapping(Protocol::Udp, host_ip, port, "172.18.0.9", 53);
        assert_eq!(
            holder(&existing, &[tcp("", 8080)]).as_deref(),
            Some("a:1/eth1")
        );
        assert_eq!(
            holder(&existing, &[tcp("10.1.1.1", 8080)]).as_deref(),
            Some("a:1/eth1"),
            "a port on every address holds it on each"
        );
        assert_eq!(
            holder(&existing, &[udp("", 53)]).as_deref(),
            Some("b:2/eth1")
        );
        assert_eq!(holder(&existing, &[udp("192.168.205.11", 53)]), None);
        assert_eq!(holder(&existing, &[udp("", 8080)]), None, "udp is not tcp");
        assert_eq!(holder(&existing, &[tcp("", 53)]), None, "tcp is not udp");
        // One refused mapping refuses the whole request, whatever its position.
        assert_eq!(
            holder(&existing, &[tcp("", 9000), udp("", 53)]).as_deref(),
            Some("b:2/eth1")
        );
    }

    #[test]
    fn the_refusal_carries_the_requested_port_and_protocol() {
        let existing = [published(
            "a:1/eth1",
            mapping(Protocol::Tcp, "", 8080, "172.18.0.2", 80),
        )];
        let wanted = mapping(Protocol::Tcp, "192.168.205.10", 8080, "172.18.0.9", 81);
        match check_conflicts(&existing, "new:c/eth1", &[wanted]) {
            Err(Error::PortInUse {
                protocol,
                port,
                holder,
            }) => {
                assert_eq!((protocol, port), (Protocol::Tcp, 8080));
                assert_eq!(holder, "a:1/eth1");
            }
            other => panic!("expected PortInUse, got {other:?}"),
        }
    }

    #[test]
    fn one_request_may_publish_a_port_once_per_family() {
        // What mappings_for in gwbridge-egress makes of one runtime mapping for a dual-stack
        // container: the v4 and v6 halves of one mapping.
        let v4 = mapping(Protocol::Tcp, "", 8080, "172.18.0.2", 80);
        let v6 = mapping(Protocol::Tcp, "", 8080, "fd00::2", 80);
        assert_eq!(holder(&[], &[v4.clone(), v6.clone()]), None);
        // Twice in one family is two targets for one port.
        let v4_again = mapping(Protocol::Tcp, "", 8080, "172.18.0.3", 80);
        assert_eq!(
            holder(&[], &[v4.clone(), v4_again]).as_deref(),
            Some("new:c/eth1"),
            "the request itself is named as the holder"
        );
        // Two families but different container ports are two mappings, not one.
        let v6_elsewhere = mapping(Protocol::Tcp, "", 8080, "fd00::2", 81);
        assert_eq!(
            holder(&[], &[v4.clone(), v6_elsewhere]).as_deref(),
            Some("new:c/eth1")
        );
        // Two families on different host addresses: one of them every address.
        let v6_on_one = mapping(Protocol::Tcp, "fd00::10", 8080, "fd00::2", 80);
        assert_eq!(
            holder(&[], &[v4.clone(), v6_on_one]).as_deref(),
            Some("new:c/eth1")
        );
        // The same port on two host addresses, and tcp beside udp, are separate mappings.
        let on_a = mapping(Protocol::Tcp, "192.168.205.10", 8080, "172.18.0.2", 80);
        let on_b = mapping(Protocol::Tcp, "192.168.205.11", 8080, "172.18.0.2", 80);
        let udp = mapping(Protocol::Udp, "", 8080, "172.18.0.2", 80);
        assert_eq!(holder(&[], &[on_a, on_b, udp]), None);
        // A third copy clashes with the first of its family even after a twin.
        assert_eq!(
            holder(&[], &[v4.clone(), v6, v4]).as_deref(),
            Some("new:c/eth1")
        );
    }

    #[test]
    fn the_same_mapping_from_another_network_of_the_container_is_no_conflict() {
        let same = mapping(Protocol::Tcp, "", 8080, "172.18.0.2", 80);
        let existing = [published("front:c/gwb0", same.clone())];
        assert_eq!(holder(&existing, &[same]), None);
        // Another target behind the same host port still is.
        for other in [
            mapping(Protocol::Tcp, "", 8080, "172.18.0.2", 81),
            mapping(Protocol::Tcp, "", 8080, "172.18.0.3", 80),
            mapping(Protocol::Tcp, "192.0.2.1", 8080, "172.18.0.2", 80),
        ] {
            assert_eq!(
                holder(&existing, &[other]),
                Some("front:c/gwb0".to_string())
            );
        }
    }

    #[test]
    fn nothing_requested_is_never_refused() {
        let existing = [published(
            "a:1/eth1",
            mapping(Protocol::Tcp, "", 8080, "172.18.0.2", 80),
        )];
        assert!(check_conflicts(&existing, "a:1/eth1", &[]).is_ok());
    }
}
