//! A network's names and addresses: checking what `network create` is given, and the address
//! ranges etcd-ipam hands out of, so that `ipam usage` counts within the same bounds.
//!
//! The rules are etcd-ipam's (and host-local's): a range runs from the subnet's first address
//! after the network address to its last (IPv4: the one before the broadcast), narrowed to
//! `--ip-range` when given; the gateway, when inside the range, is not handed out.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use store::records::Network;

use crate::error::Error;

pub const MIN_MTU: u32 = 576;
pub const MAX_MTU: u32 = 65_535;
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Names become etcd key segments and parts of CNI configurations: no `/`, nothing odd.
pub fn check_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid network name {name:?}: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        )))
    }
}

pub fn parse_vni(text: &str) -> Result<u32, Error> {
    match text.trim().parse::<u64>() {
        Ok(n) if (1..=u64::from(MAX_VNI)).contains(&n) => Ok(n as u32),
        _ => Err(Error::Invalid(format!(
            "invalid vni {text:?}: it must be between 1 and {MAX_VNI}"
        ))),
    }
}

pub fn parse_mtu(text: &str) -> Result<u32, Error> {
    match text.trim().parse::<u64>() {
        Ok(n) if (u64::from(MIN_MTU)..=u64::from(MAX_MTU)).contains(&n) => Ok(n as u32),
        _ => Err(Error::Invalid(format!(
            "invalid mtu {text:?}: it must be between {MIN_MTU} and {MAX_MTU}"
        ))),
    }
}

/// The checked addressing of a network, as stored in its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    pub subnets: Vec<IpNetwork>,
    /// One per subnet, in the subnets' order.
    pub gateways: Vec<IpAddr>,
    pub ip_range: Option<IpNetwork>,
}

/// One range addresses are handed out of, with its bounds as numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNetwork,
    pub ip_range: Option<IpNetwork>,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    /// How many addresses can be handed out: the range less its gateway.
    pub fn capacity(&self) -> u128 {
        let (start, end) = (to_num(self.start), to_num(self.end));
        if start > end {
            return 0;
        }
        let gateway_inside = self.gateway.is_some_and(|g| {
            g.is_ipv6() == self.start.is_ipv6() && (start..=end).contains(&to_num(g))
        });
        (end - start + 1) - u128::from(gateway_inside)
    }
}

impl Addressing {
    /// Checks the `network create` options; the gateway of a subnet defaults to its first address.
    pub fn plan(
        subnets: &[String],
        gateways: &[String],
        ip_range: Option<&str>,
    ) -> Result<Self, Error> {
        let subnets = subnets
            .iter()
            .map(|s| parse_cidr("subnet", s))
            .collect::<Result<Vec<_>, _>>()?;
        for s in &subnets {
            let too_small = if s.is_ipv4() {
                s.prefix() > 30
            } else {
                s.prefix() > 126
            };
            if too_small {
                return Err(Error::Invalid(format!(
                    "subnet {s} is too small to hand out addresses from"
                )));
            }
        }
        let v4 = subnets.iter().filter(|s| s.is_ipv4()).count();
        if subnets.is_empty() || v4 > 1 || subnets.len() - v4 > 1 {
            return Err(Error::Invalid(
                "give one IPv4 subnet, one IPv6 subnet, or one of each".into(),
            ));
        }

        let mut chosen: Vec<Option<IpAddr>> = vec![None; subnets.len()];
        for text in gateways {
            let ip: IpAddr = text.trim().parse().map_err(|_| {
                Error::Invalid(format!("invalid gateway {text:?}: not an IP address"))
            })?;
            let i = subnets.iter().position(|s| s.contains(ip)).ok_or_else(|| {
                Error::Invalid(format!(
                    "gateway {ip} is outside the subnet{} {}",
                    if subnets.len() == 1 { "" } else { "s" },
                    join(&subnets)
                ))
            })?;
            let s = subnets[i];
            if ip == s.network() {
                return Err(Error::Invalid(format!(
                    "gateway {ip} is the network address of {s}"
                )));
            }
            if s.is_ipv4() && to_num(ip) == last(&s) {
                return Err(Error::Invalid(format!(
                    "gateway {ip} is the broadcast address of {s}"
                )));
            }
            if let Some(previous) = chosen[i].replace(ip) {
                return Err(Error::Invalid(format!(
                    "subnet {s} has two gateways, {previous} and {ip}"
                )));
            }
        }
        let gateways = subnets
            .iter()
            .zip(chosen)
            .map(|(s, g)| g.unwrap_or_else(|| first_host(s)))
            .collect();

        let ip_range = match ip_range {
            None => None,
            Some(text) => {
                let r = parse_cidr("ip-range", text)?;
                let inside = subnets.iter().any(|s| {
                    s.is_ipv4() == r.is_ipv4()
                        && s.contains(r.network())
                        && s.prefix() <= r.prefix()
                });
                if !inside {
                    return Err(Error::Invalid(format!(
                        "ip-range {r} is outside the subnet{} {}",
                        if subnets.len() == 1 { "" } else { "s" },
                        join(&subnets)
                    )));
                }
                Some(r)
            }
        };

        let addressing = Addressing {
            subnets,
            gateways,
            ip_range,
        };
        for range in addressing.ranges() {
            if range.capacity() == 0 {
                return Err(Error::Invalid(format!(
                    "no address of {} is left to hand out{}",
                    range.ip_range.unwrap_or(range.subnet),
                    " (network, broadcast and gateway addresses are not handed out)"
                )));
            }
        }
        Ok(addressing)
    }

    /// Reads the addressing back from a record (written by us, but possibly edited by hand).
    pub fn of(network: &Network) -> Result<Self, String> {
        let parse = |what: &str, s: &str| -> Result<IpNetwork, String> {
            s.parse::<IpNetwork>()
                .map_err(|e| format!("network {}: {what} {s:?}: {e}", network.name))
        };
        let subnets = network
            .subnets
            .iter()
            .map(|s| parse("subnet", s))
            .collect::<Result<Vec<_>, _>>()?;
        let given: Vec<IpAddr> = network
            .gateways
            .iter()
            .filter_map(|g| g.parse().ok())
            .collect();
        // Matched by containment rather than position, so that a hand-edited order still works.
        let gateways = subnets
            .iter()
            .map(|s| {
                given
                    .iter()
                    .copied()
                    .find(|g| s.contains(*g))
                    .unwrap_or_else(|| first_host(s))
            })
            .collect();
        let ip_range = network
            .ip_range
            .as_deref()
            .map(|r| parse("ip-range", r))
            .transpose()?;
        Ok(Addressing {
            subnets,
            gateways,
            ip_range,
        })
    }

    /// The ranges addresses are handed out of: one per subnet.
    pub fn ranges(&self) -> Vec<Range> {
        self.subnets
            .iter()
            .zip(&self.gateways)
            .map(|(s, g)| {
                let v6 = s.is_ipv6();
                let mut lo = to_num(s.network()) + 1;
                let mut hi = if v6 { last(s) } else { last(s) - 1 };
                let ip_range = self
                    .ip_range
                    .filter(|r| r.is_ipv6() == v6 && s.contains(r.network()));
                if let Some(r) = ip_range {
                    lo = lo.max(to_num(r.network()));
                    hi = hi.min(last(&r));
                }
                Range {
                    subnet: *s,
                    ip_range,
                    start: from_num(lo, v6),
                    end: from_num(hi, v6),
                    gateway: Some(*g),
                }
            })
            .collect()
    }

    pub fn subnet_strings(&self) -> Vec<String> {
        self.subnets.iter().map(|s| s.to_string()).collect()
    }

    pub fn gateway_strings(&self) -> Vec<String> {
        self.gateways.iter().map(|g| g.to_string()).collect()
    }
}

fn parse_cidr(what: &str, text: &str) -> Result<IpNetwork, Error> {
    let text = text.trim();
    if !text.contains('/') {
        return Err(Error::Invalid(format!(
            "invalid {what} {text:?}: give it in CIDR form, e.g. 10.0.0.0/24"
        )));
    }
    let net: IpNetwork = text
        .parse()
        .map_err(|e| Error::Invalid(format!("invalid {what} {text:?}: {e}")))?;
    if net.ip() != net.network() {
        return Err(Error::Invalid(format!(
            "{what} {text} has host bits set (did you mean {}/{}?)",
            net.network(),
            net.prefix()
        )));
    }
    Ok(net)
}

fn join(subnets: &[IpNetwork]) -> String {
    subnets
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An address as a number, so that IPv4 and IPv6 share the arithmetic.
pub fn to_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn from_num(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4((n as u32).into())
    }
}

/// The subnet's last address as a number (IPv4: its broadcast address).
fn last(net: &IpNetwork) -> u128 {
    let bits = if net.is_ipv4() { 32 } else { 128 };
    let host_bits = bits - u32::from(net.prefix());
    let mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    to_num(net.network()) | mask
}

fn first_host(net: &IpNetwork) -> IpAddr {
    from_num(to_num(net.network()) + 1, net.is_ipv6())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(
        subnets: &[&str],
        gateways: &[&str],
        range: Option<&str>,
    ) -> Result<Addressing, String> {
        let s: Vec<String> = subnets.iter().map(|x| x.to_string()).collect();
        let g: Vec<String> = gateways.iter().map(|x| x.to_string()).collect();
        Addressing::plan(&s, &g, range).map_err(|e| e.to_string())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names() {
        for good in ["demo", "a", "Net_1.b-c", "0"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "é", "_x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vni_and_mtu_bounds() {
        assert_eq!(parse_vni("1").unwrap(), 1);
        assert_eq!(parse_vni("16777215").unwrap(), 16_777_215);
        for bad in ["0", "16777216", "-1", "x", "99999999999999999999999"] {
            assert!(parse_vni(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mtu("1450").unwrap(), 1450);
        assert!(parse_mtu("575").is_err());
        assert!(parse_mtu("65536").is_err());
    }

    #[test]
    fn defaults_and_capacity_as_etcd_ipam_counts() {
        let a = plan(&["10.0.0.0/24"], &[], None).unwrap();
        assert_eq!(a.gateways, vec![ip("10.0.0.1")]);
        let r = &a.ranges()[0];
        assert_eq!((r.start, r.end), (ip("10.0.0.1"), ip("10.0.0.254")));
        assert_eq!(r.capacity(), 253);

        let a = plan(&["fd00::/120", "10.0.0.0/24"], &["fd00::fe"], None).unwrap();
        assert_eq!(a.gateways, vec![ip("fd00::fe"), ip("10.0.0.1")]);
        let r = &a.ranges()[0];
        assert_eq!((r.start, r.end), (ip("fd00::1"), ip("fd00::ff")));
        assert_eq!(r.capacity(), 254);
    }

    #[test]
    fn ip_range_narrows_the_range_but_keeps_network_and_broadcast_out() {
        let a = plan(&["10.0.0.0/24"], &[], Some("10.0.0.128/25")).unwrap();
        let r = &a.ranges()[0];
        assert_eq!((r.start, r.end), (ip("10.0.0.128"), ip("10.0.0.254")));
        assert_eq!(
            r.capacity(),
            127,
            "the gateway 10.0.0.1 is outside the range"
        );
        let a = plan(&["10.0.0.0/24"], &[], Some("10.0.0.0/25")).unwrap();
        let r = &a.ranges()[0];
        assert_eq!((r.start, r.end), (ip("10.0.0.1"), ip("10.0.0.127")));
        assert_eq!(r.capacity(), 126);
        // The range applies to its own family only.
        let a = plan(&["10.0.0.0/24", "fd00::/64"], &[], Some("10.0.0.0/28")).unwrap();
        assert_eq!(a.ranges()[1].ip_range, None);
    }

    #[test]
    fn refusals() {
        // (subnets, gateways, ip-range, expected part of the message)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], Option<&'a str>, &'a str);
        let cases: &[Case] = &[
            (&["nonsense"], &[], None, "CIDR form"),
            (&["10.0.0.0/33"], &[], None, "invalid subnet"),
            (
                &["10.0.0.5/24"],
                &[],
                None,
                "host bits set (did you mean 10.0.0.0/24?)",
            ),
            (&["10.0.0.0/31"], &[], None, "too small"),
            (
                &["10.0.0.0/24", "10.1.0.0/24"],
                &[],
                None,
                "one IPv4 subnet",
            ),
            (&["fd00::/64", "fd01::/64"], &[], None, "one IPv4 subnet"),
            (
                &["10.0.0.0/24"],
                &["10.0.1.1"],
                None,
                "outside the subnet 10.0.0.0/24",
            ),
            (&["10.0.0.0/24"], &["x"], None, "not an IP address"),
            (&["10.0.0.0/24"], &["10.0.0.0"], None, "network address"),
            (&["10.0.0.0/24"], &["10.0.0.255"], None, "broadcast address"),
            (
                &["10.0.0.0/24"],
                &["10.0.0.1", "10.0.0.2"],
                None,
                "two gateways",
            ),
            (
                &["10.0.0.0/24"],
                &[],
                Some("10.0.1.0/25"),
                "outside the subnet",
            ),
            (
                &["10.0.0.0/24"],
                &[],
                Some("10.0.0.0/23"),
                "outside the subnet",
            ),
            (
                &["10.0.0.0/24"],
                &[],
                Some("fd00::/64"),
                "outside the subnet",
            ),
            (&["10.0.0.0/24"], &[], Some("10.0.0.0/32"), "no address"),
            (&["10.0.0.0/24"], &[], Some("10.0.0.1/32"), "no address"),
        ];
        for (subnets, gateways, range, expected) in cases {
            let err = plan(subnets, gateways, *range).unwrap_err();
            assert!(
                err.contains(expected),
                "{subnets:?} {gateways:?} {range:?}: {err}"
            );
        }
    }

    #[test]
    fn reads_a_record_back() {
        let network = Network {
            name: "n".into(),
            vni: 1,
            subnets: vec!["10.0.0.0/24".into(), "fd00::/64".into()],
            gateways: vec!["fd00::9".into()],
            ip_range: Some("10.0.0.64/26".into()),
            mtu: None,
            internal: false,
            host_access: false,
            created: 0,
        };
        let a = Addressing::of(&network).unwrap();
        assert_eq!(a.gateways, vec![ip("10.0.0.1"), ip("fd00::9")]);
        assert_eq!(a.ranges()[0].capacity(), 64);
    }
}
