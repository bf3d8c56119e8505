//! Addresses and ranges: the arithmetic, etcd-ipam's ranges and range sets (pools) with the order
//! it hands addresses out in, a network record's range sets, and the checks of
//! `overlayctl network create`. One set of rules, so that what overlayctl accepts and counts is
//! what etcd-ipam hands out.
//!
//! The rules are host-local's: a range runs from the subnet's first address after the network
//! address to its last (IPv4: the one before the broadcast), or between `rangeStart` and
//! `rangeEnd`; the gateway (default: the subnet's first address) is never handed out, nor are
//! excluded blocks. A network record's IPv4 ip-range narrows its IPv4 subnet's range to the
//! ip-range without the ip-range's own network and broadcast addresses.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::records::Network;

/// An address as a number, so that IPv4 and IPv6 share the arithmetic.
pub fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of a [`number`] in its family.
pub fn address(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4((n as u32).into())
    }
}

/// The subnet's last address: its broadcast address for IPv4.
pub fn last_address(net: &IpNetwork) -> IpAddr {
    let bits = if net.is_ipv4() { 32 } else { 128 };
    let host_bits = bits - u32::from(net.prefix());
    let mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    address(number(net.network()) | mask, net.is_ipv6())
}

/// The first address after the network address: a range's default start, a subnet's default
/// gateway.
pub fn first_host(net: &IpNetwork) -> IpAddr {
    address(number(net.network()) + 1, net.is_ipv6())
}

/// A range's default end: the one before the broadcast for IPv4, the last address for IPv6.
pub fn last_host(net: &IpNetwork) -> IpAddr {
    let last = number(last_address(net));
    address(if net.is_ipv4() { last - 1 } else { last }, net.is_ipv6())
}

/// Whether `ip` is the network address of `net`, or (IPv4) its broadcast address.
fn is_network_or_broadcast(net: &IpNetwork, ip: IpAddr) -> bool {
    ip == net.network() || (net.is_ipv4() && ip == last_address(net))
}

/// A subnet written as a network address (no host bits), with room to hand addresses out of
/// (IPv4 up to /30, IPv6 up to /126).
pub fn check_subnet(subnet: &IpNetwork) -> Result<(), Error> {
    check_network_address("subnet", subnet)?;
    let too_small = if subnet.is_ipv4() {
        subnet.prefix() > 30
    } else {
        subnet.prefix() > 126
    };
    if too_small {
        return Err(Error::invalid(format!(
            "subnet {subnet} is too small to hand out addresses from"
        )));
    }
    Ok(())
}

fn check_network_address(what: &str, net: &IpNetwork) -> Result<(), Error> {
    if net.ip() != net.network() {
        return Err(Error::invalid(format!(
            "{what} {net} has host bits set (did you mean {}/{}?)",
            net.network(),
            net.prefix()
        )));
    }
    Ok(())
}

/// One range of a range set as etcd-ipam's (and host-local's) configuration gives it:
/// `{"subnet", "rangeStart", "rangeEnd", "gateway"}`; serialised in that form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeSpec {
    #[serde(with = "crate::text")]
    pub subnet: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

impl RangeSpec {
    /// A range from a configuration's text fields; what is not an address or a CIDR is named.
    pub fn parse(
        subnet: &str,
        range_start: Option<&str>,
        range_end: Option<&str>,
        gateway: Option<&str>,
    ) -> Result<RangeSpec, Error> {
        let addr = |field: &str, text: Option<&str>| -> Result<Option<IpAddr>, Error> {
            text.map(|s| {
                s.parse()
                    .map_err(|e| Error::invalid(format!("{field} {s:?}: {e}")))
            })
            .transpose()
        };
        Ok(RangeSpec {
            subnet: subnet
                .parse()
                .map_err(|e| Error::invalid(format!("subnet {subnet:?}: {e}")))?,
            range_start: addr("rangeStart", range_start)?,
            range_end: addr("rangeEnd", range_end)?,
            gateway: addr("gateway", gateway)?,
        })
    }
}

/// A range addresses are handed out of, with host-local's defaults applied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet with its network address, e.g. 10.0.0.0/24.
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    /// Checks a configured range and fills in its defaults: the subnet's host addresses, and its
    /// first address as the gateway.
    pub fn new(spec: &RangeSpec) -> Result<Range, Error> {
        let subnet = spec.subnet;
        check_subnet(&subnet)?;
        let inside = |field: &str, ip: Option<IpAddr>| -> Result<Option<IpAddr>, Error> {
            match ip {
                Some(ip) if !subnet.contains(ip) => Err(Error::invalid(format!(
                    "{field} {ip} is outside subnet {subnet}"
                ))),
                ip => Ok(ip),
            }
        };
        let start = inside("rangeStart", spec.range_start)?.unwrap_or_else(|| first_host(&subnet));
        let end = inside("rangeEnd", spec.range_end)?.unwrap_or_else(|| last_host(&subnet));
        // As host-local: the gateway defaults to the subnet's first address.
        let gateway = inside("gateway", spec.gateway)?.or(Some(first_host(&subnet)));
        if number(start) > number(end) {
            return Err(Error::invalid(format!(
                "rangeStart {start} is after rangeEnd {end}"
            )));
        }
        if start == subnet.network() || (subnet.is_ipv4() && end == last_address(&subnet)) {
            return Err(Error::invalid(format!(
                "range {start}-{end} includes the network or broadcast address of {subnet}"
            )));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    pub fn is_v6(&self) -> bool {
        self.subnet.is_ipv6()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.is_v6()
            && (number(self.start)..=number(self.end)).contains(&number(ip))
    }

    /// How many addresses can be handed out: the range less the union of the exclusions inside
    /// it, less its gateway when no exclusion already covers it.
    pub fn capacity(&self, exclude: &[IpNetwork]) -> u128 {
        let (start, end) = (number(self.start), number(self.end));
        let mut blocks: Vec<(u128, u128)> = exclude
            .iter()
            .filter(|x| x.is_ipv6() == self.is_v6())
            .map(|x| {
                (
                    number(x.network()).max(start),
                    number(last_address(x)).min(end),
                )
            })
            .filter(|(lo, hi)| lo <= hi)
            .collect();
        blocks.sort_unstable();
        let mut excluded = 0u128;
        let mut covered_until: Option<u128> = None;
        for (lo, hi) in blocks {
            let lo = match covered_until {
                Some(c) if lo <= c => c + 1,
                _ => lo,
            };
            if lo <= hi {
                excluded += hi - lo + 1;
            }
            covered_until = Some(covered_until.map_or(hi, |c| c.max(hi)));
        }
        let gateway_counts = self
            .gateway
            .is_some_and(|g| self.contains(g) && !exclude.iter().any(|x| x.contains(g)));
        (end - start + 1) - excluded - u128::from(gateway_counts)
    }
}

/// The ranges of one range set (one address per set is handed out), with the exclusions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub ranges: Vec<Range>,
    pub exclude: Vec<IpNetwork>,
}

/// Checks a configuration's range sets and makes them pools: every set non-empty, of one family,
/// with an address left after `exclude` (each set takes the exclusions of its family); no range
/// overlapping another.
pub fn pools(sets: &[Vec<RangeSpec>], exclude: &[IpNetwork]) -> Result<Vec<Pool>, Error> {
    if sets.is_empty() {
        return Err(Error::invalid("ipam needs ranges (or subnet)"));
    }
    let mut pools = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let Some(first) = set.first() else {
            return Err(Error::invalid(format!("range set {i} is empty")));
        };
        let ranges = set.iter().map(Range::new).collect::<Result<Vec<_>, _>>()?;
        if ranges.iter().any(|r| r.is_v6() != ranges[0].is_v6()) {
            return Err(Error::invalid(format!("range set {i} mixes IPv4 and IPv6")));
        }
        let pool = Pool {
            ranges,
            exclude: exclude
                .iter()
                .filter(|x| x.is_ipv6() == first.subnet.is_ipv6())
                .copied()
                .collect(),
        };
        if pool.capacity() == 0 {
            return Err(Error::invalid(format!(
                "range set {i} has no address to hand out after exclusions"
            )));
        }
        pools.push(pool);
    }
    let all: Vec<&Range> = pools.iter().flat_map(|p| p.ranges.iter()).collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.is_v6() == b.is_v6()
                && number(a.start) <= number(b.end)
                && number(b.start) <= number(a.end)
            {
                return Err(Error::invalid(format!(
                    "ranges {}-{} and {}-{} overlap",
                    a.start, a.end, b.start, b.end
                )));
            }
        }
    }
    Ok(pools)
}

impl Pool {
    pub fn is_v6(&self) -> bool {
        self.ranges[0].is_v6()
    }

    pub fn range_of(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    /// May `ip` be handed out? Inside a range, not its gateway, not excluded.
    pub fn is_usable(&self, ip: IpAddr) -> bool {
        match self.range_of(ip) {
            Some(r) => r.gateway != Some(ip) && !self.exclude.iter().any(|x| x.contains(ip)),
            None => false,
        }
    }

    /// The first usable address at or after `from`, in range order; None past the last range.
    pub fn next_usable(&self, from: u128) -> Option<u128> {
        let v6 = self.is_v6();
        for r in &self.ranges {
            let (start, end) = (number(r.start), number(r.end));
            if from > end {
                continue;
            }
            let mut n = from.max(start);
            while n <= end {
                let ip = address(n, v6);
                if let Some(x) = self.exclude.iter().find(|x| x.contains(ip)) {
                    // Jump over the whole excluded block at once.
                    n = number(last_address(x)) + 1;
                    continue;
                }
                if r.gateway != Some(ip) {
                    return Some(n);
                }
                n += 1;
            }
        }
        None
    }

    pub fn first_usable(&self) -> Option<u128> {
        self.next_usable(0)
    }

    /// The number key range `[first, last]` that covers every range: what a window read spans.
    pub fn span(&self) -> (u128, u128) {
        let first = self
            .ranges
            .iter()
            .map(|r| number(r.start))
            .min()
            .unwrap_or(0);
        let last = self.ranges.iter().map(|r| number(r.end)).max().unwrap_or(0);
        (first, last)
    }

    /// How many addresses can be handed out in all.
    pub fn capacity(&self) -> u128 {
        self.ranges.iter().map(|r| r.capacity(&self.exclude)).sum()
    }

    /// Chooses the next candidate from a window of used addresses read from etcd.
    ///
    /// `used` holds the used addresses at or after `from`, ascending, as returned by a range read
    /// with `limit`; `window_full` says the read hit its limit, so nothing is known past its last key.
    pub fn pick(&self, from: u128, used: &[u128], window_full: bool, skip: usize) -> Pick {
        let known_until = if window_full {
            used.last().copied()
        } else {
            None
        };
        let mut free_seen = 0usize;
        let mut n = from;
        let mut used_iter = used.iter().peekable();
        while let Some(candidate) = self.next_usable(n) {
            if let Some(limit) = known_until {
                if candidate > limit {
                    return Pick::ReadFrom(candidate);
                }
            }
            while used_iter.peek().is_some_and(|&&u| u < candidate) {
                used_iter.next();
            }
            if used_iter.peek() != Some(&&candidate) {
                if free_seen == skip {
                    return Pick::Free(candidate);
                }
                free_seen += 1;
            }
            n = candidate + 1;
        }
        if free_seen > 0 {
            // Fewer free addresses than `skip` asked to pass over: take the first after all.
            return self.pick(from, used, window_full, 0);
        }
        Pick::EndOfPool
    }
}

/// What [`Pool::pick`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Free(u128),
    /// Every address of the window is used: read the next window from here.
    ReadFrom(u128),
    /// No free address between `from` and the end of the pool.
    EndOfPool,
}

/// The addressing of a network record: its subnets, their gateways, its ip-range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    pub subnets: Vec<IpNetwork>,
    /// Per subnet, in the subnets' order: its gateway, if the record names one.
    pub gateways: Vec<Option<IpAddr>>,
    pub ip_range: Option<IpNetwork>,
}

impl Addressing {
    /// Checks what `network create` is given; the gateway of a subnet defaults to its first
    /// address. The ranges it makes must have an address to hand out.
    pub fn plan(
        subnets: &[String],
        gateways: &[String],
        ip_range: Option<&str>,
    ) -> Result<Addressing, Error> {
        let subnets = subnets
            .iter()
            .map(|s| parse_cidr("subnet", s))
            .collect::<Result<Vec<_>, _>>()?;
        for s in &subnets {
            check_subnet(s)?;
        }
        let v4 = subnets.iter().filter(|s| s.is_ipv4()).count();
        if subnets.is_empty() || v4 > 1 || subnets.len() - v4 > 1 {
            return Err(Error::invalid(
                "give one IPv4 subnet, one IPv6 subnet, or one of each",
            ));
        }

        let mut chosen: Vec<Option<IpAddr>> = vec![None; subnets.len()];
        for text in gateways {
            let ip: IpAddr = text.trim().parse().map_err(|_| {
                Error::invalid(format!("invalid gateway {text:?}: not an IP address"))
            })?;
            let i = subnets.iter().position(|s| s.contains(ip)).ok_or_else(|| {
                Error::invalid(format!(
                    "gateway {ip} is outside the subnet{} {}",
                    plural(&subnets),
                    join(&subnets)
                ))
            })?;
            let s = subnets[i];
            if ip == s.network() {
                return Err(Error::invalid(format!(
                    "gateway {ip} is the network address of {s}"
                )));
            }
            if is_network_or_broadcast(&s, ip) {
                return Err(Error::invalid(format!(
                    "gateway {ip} is the broadcast address of {s}"
                )));
            }
            if let Some(previous) = chosen[i].replace(ip) {
                return Err(Error::invalid(format!(
                    "subnet {s} has two gateways, {previous} and {ip}"
                )));
            }
        }
        let gateways = subnets
            .iter()
            .zip(chosen)
            .map(|(s, g)| Some(g.unwrap_or_else(|| first_host(s))))
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
                    return Err(Error::invalid(format!(
                        "ip-range {r} is outside the subnet{} {}",
                        plural(&subnets),
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
        for (i, spec) in addressing
            .range_sets()
            .iter()
            .map(|set| &set[0])
            .enumerate()
        {
            let of = addressing
                .ip_range_of(&addressing.subnets[i])
                .unwrap_or(spec.subnet);
            let why = match Range::new(spec) {
                Ok(r) if r.capacity(&[]) > 0 => continue,
                Ok(_) => String::new(),
                Err(e) => format!(": {e}"),
            };
            return Err(Error::invalid(format!(
                "no address of {of} is left to hand out (network, broadcast and gateway \
                 addresses are not handed out){why}"
            )));
        }
        Ok(addressing)
    }

    /// The addressing of a record (written by overlayctl, but possibly edited by hand): gateways
    /// are matched to subnets by containment, so that a hand-edited order still works.
    pub fn of(network: &Network) -> Addressing {
        Addressing {
            subnets: network.subnets.clone(),
            gateways: network
                .subnets
                .iter()
                .map(|s| network.gateways.iter().copied().find(|g| s.contains(*g)))
                .collect(),
            ip_range: network.ip_range,
        }
    }

    /// The gateways to record: one per subnet.
    pub fn record_gateways(&self) -> Vec<IpAddr> {
        self.gateways.iter().flatten().copied().collect()
    }

    /// The ip-range that narrows `subnet`'s range, if any: an IPv4 one, on the IPv4 subnet.
    /// (etcd-ipam has never applied an IPv6 ip-range.)
    pub fn ip_range_of(&self, subnet: &IpNetwork) -> Option<IpNetwork> {
        self.ip_range.filter(|r| r.is_ipv4() && subnet.is_ipv4())
    }

    /// etcd-ipam's range sets for the network: one per subnet, with its gateway, and the IPv4
    /// ip-range, without its own network and broadcast addresses, as rangeStart/rangeEnd.
    pub fn range_sets(&self) -> Vec<Vec<RangeSpec>> {
        self.subnets
            .iter()
            .enumerate()
            .map(|(i, subnet)| {
                let bounds = self.ip_range_of(subnet).map(|r| {
                    let (first, last) = (number(r.network()), number(last_address(&r)));
                    let v6 = r.is_ipv6();
                    if last - first + 1 > 2 {
                        (address(first + 1, v6), address(last - 1, v6))
                    } else {
                        (address(first, v6), address(last, v6))
                    }
                });
                vec![RangeSpec {
                    subnet: *subnet,
                    range_start: bounds.map(|b| b.0),
                    range_end: bounds.map(|b| b.1),
                    gateway: self.gateways.get(i).copied().flatten(),
                }]
            })
            .collect()
    }

    /// The ranges addresses are handed out of, one per subnet, as etcd-ipam makes them.
    pub fn ranges(&self) -> Result<Vec<Range>, Error> {
        self.range_sets()
            .iter()
            .map(|set| Range::new(&set[0]))
            .collect()
    }
}

fn parse_cidr(what: &str, text: &str) -> Result<IpNetwork, Error> {
    let text = text.trim();
    if !text.contains('/') {
        return Err(Error::invalid(format!(
            "invalid {what} {text:?}: give it in CIDR form, e.g. 10.0.0.0/24"
        )));
    }
    let net: IpNetwork = text
        .parse()
        .map_err(|e| Error::invalid(format!("invalid {what} {text:?}: {e}")))?;
    check_network_address(what, &net)?;
    Ok(net)
}

fn plural(subnets: &[IpNetwork]) -> &'static str {
    if subnets.len() == 1 {
        ""
    } else {
        "s"
    }
}

fn join(subnets: &[IpNetwork]) -> String {
    subnets
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn n(s: &str) -> u128 {
        number(ip(s))
    }

    fn spec(subnet: &str) -> RangeSpec {
        RangeSpec::parse(subnet, None, None, None).unwrap()
    }

    fn pool(subnet: &str, gw: Option<&str>, exclude: &[&str]) -> Pool {
        let subnet = net(subnet);
        Pool {
            ranges: vec![Range {
                subnet,
                start: first_host(&subnet),
                end: last_host(&subnet),
                gateway: gw.map(ip),
            }],
            exclude: exclude.iter().map(|x| net(x)).collect(),
        }
    }

    #[test]
    fn arithmetic() {
        assert_eq!(number(ip("10.0.0.1")), 0x0a00_0001);
        assert_eq!(address(0x0a00_0001, false), ip("10.0.0.1"));
        assert_eq!(address(number(ip("fd00::1")), true), ip("fd00::1"));
        assert_eq!(last_address(&net("10.0.0.0/24")), ip("10.0.0.255"));
        assert_eq!(last_address(&net("fd00::/120")), ip("fd00::ff"));
        assert_eq!(
            last_address(&net("::/0")),
            ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
        );
        assert_eq!(last_address(&net("0.0.0.0/0")), ip("255.255.255.255"));
        assert_eq!(first_host(&net("10.0.0.0/24")), ip("10.0.0.1"));
        assert_eq!(last_host(&net("10.0.0.0/24")), ip("10.0.0.254"));
        assert_eq!(last_host(&net("fd00::/120")), ip("fd00::ff"));
    }

    #[test]
    fn ranges_get_host_locals_defaults_and_checks() {
        let r = Range::new(&spec("10.0.0.0/24")).unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.0.0.1"), ip("10.0.0.254"), Some(ip("10.0.0.1")))
        );
        assert_eq!(r.capacity(&[]), 253);
        let r = Range::new(&spec("fd00::/120")).unwrap();
        assert_eq!((r.start, r.end), (ip("fd00::1"), ip("fd00::ff")));
        assert_eq!(r.capacity(&[]), 254);

        let bad = |subnet: &str, start: Option<&str>, end: Option<&str>, gw: Option<&str>| {
            Range::new(&RangeSpec::parse(subnet, start, end, gw).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("10.0.0.5/24", None, None, None).contains("did you mean 10.0.0.0/24?"));
        assert!(bad("10.0.0.0/31", None, None, None).contains("too small"));
        assert!(bad("fd00::/127", None, None, None).contains("too small"));
        assert!(bad("10.0.0.0/24", None, None, Some("10.0.1.1"))
            .contains("gateway 10.0.1.1 is outside"));
        assert!(bad("10.0.0.0/24", None, Some("10.0.1.10"), None)
            .contains("rangeEnd 10.0.1.10 is outside"));
        assert!(
            bad("10.0.0.0/24", Some("10.0.0.50"), Some("10.0.0.10"), None)
                .contains("after rangeEnd")
        );
        assert!(bad("10.0.0.0/24", Some("10.0.0.0"), None, None).contains("network or broadcast"));
        assert!(bad("10.0.0.0/24", None, Some("10.0.0.255"), None).contains("network or broadcast"));
        assert!(RangeSpec::parse("nonsense", None, None, None).is_err());
        assert!(RangeSpec::parse("10.0.0.0/33", None, None, None).is_err());
        assert!(RangeSpec::parse("10.0.0.0/24", Some("x"), None, None).is_err());
    }

    #[test]
    fn pools_are_checked_as_a_whole() {
        let ok = pools(
            &[vec![spec("10.0.0.0/24")], vec![spec("fd00::/64")]],
            &[net("10.0.0.0/28")],
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(!ok[0].is_v6() && ok[1].is_v6());
        assert_eq!(ok[0].exclude, [net("10.0.0.0/28")]);
        assert!(ok[1].exclude.is_empty());
        let err = |sets: &[Vec<RangeSpec>], exclude: &[IpNetwork]| {
            pools(sets, exclude).unwrap_err().to_string()
        };
        assert!(err(&[], &[]).contains("needs ranges"));
        assert!(err(&[vec![]], &[]).contains("range set 0 is empty"));
        assert!(err(&[vec![spec("10.0.0.0/24"), spec("fd00::/64")]], &[]).contains("mixes"));
        assert!(err(&[vec![spec("10.0.0.0/24")]], &[net("10.0.0.0/24")]).contains("no address"));
        assert!(
            err(&[vec![spec("10.0.0.0/24")], vec![spec("10.0.0.0/25")]], &[]).contains("overlap")
        );
    }

    #[test]
    fn first_address_is_after_the_gateway() {
        let p = pool("10.0.0.0/24", Some("10.0.0.1"), &[]);
        assert_eq!(p.first_usable(), Some(n("10.0.0.2")));
        assert!(!p.is_usable(ip("10.0.0.1")));
        assert!(!p.is_usable(ip("10.0.0.0")));
        assert!(!p.is_usable(ip("10.0.0.255")));
        assert_eq!(p.capacity(), 253);
    }

    #[test]
    fn exclusions_are_skipped_and_counted() {
        let p = pool("10.0.0.0/24", Some("10.0.0.1"), &["10.0.0.0/28"]);
        assert_eq!(p.first_usable(), Some(n("10.0.0.16")));
        assert_eq!(p.capacity(), 254 - 15);
    }

    #[test]
    fn pick_skips_used_and_asks_for_more_when_the_window_is_full() {
        let p = pool("10.0.0.0/24", Some("10.0.0.1"), &[]);
        let used = [n("10.0.0.2"), n("10.0.0.3"), n("10.0.0.5")];
        assert_eq!(
            p.pick(n("10.0.0.2"), &used, false, 0),
            Pick::Free(n("10.0.0.4"))
        );
        assert_eq!(
            p.pick(n("10.0.0.2"), &used, false, 1),
            Pick::Free(n("10.0.0.6"))
        );
        let full = [n("10.0.0.2"), n("10.0.0.3")];
        assert_eq!(
            p.pick(n("10.0.0.2"), &full, true, 0),
            Pick::ReadFrom(n("10.0.0.4"))
        );
        let all: Vec<u128> = (2..=254).map(|i| n(&format!("10.0.0.{i}"))).collect();
        assert_eq!(p.pick(n("10.0.0.2"), &all, false, 0), Pick::EndOfPool);
    }

    #[test]
    fn skip_past_the_free_addresses_falls_back_to_the_first() {
        let p = pool("10.0.0.0/30", None, &[]);
        assert_eq!(
            p.pick(n("10.0.0.1"), &[], false, 5),
            Pick::Free(n("10.0.0.1"))
        );
    }

    #[test]
    fn overlapping_exclusions_and_an_excluded_gateway() {
        let p = pool(
            "10.0.0.0/24",
            Some("10.0.0.1"),
            &["10.0.0.0/28", "10.0.0.8/29", "10.0.0.0/24"],
        );
        assert_eq!(p.capacity(), 0);
        let p = pool(
            "10.0.0.0/24",
            Some("10.0.0.1"),
            &["10.0.0.0/28", "10.0.0.8/29"],
        );
        assert_eq!(p.capacity(), 254 - 15);
    }

    #[test]
    fn ipv6_ranges() {
        let p = pool("fd00::/120", Some("fd00::1"), &[]);
        assert_eq!(p.first_usable(), Some(n("fd00::2")));
        assert_eq!(p.capacity(), 255 - 1);
        assert!(p.is_usable(ip("fd00::ff")));
        assert_eq!(p.span(), (n("fd00::1"), n("fd00::ff")));
    }

    #[test]
    fn a_huge_exclusion_is_jumped_not_walked() {
        let p = pool("fd00::/64", None, &["fd00::/65"]);
        assert_eq!(p.first_usable(), Some(n("fd00::8000:0:0:0")));
    }

    fn record(subnets: &[&str], gateways: &[&str], ip_range: Option<&str>) -> Network {
        Network {
            name: "demo".into(),
            vni: crate::types::Vni::FIRST_AUTO,
            subnets: subnets.iter().map(|s| net(s)).collect(),
            gateways: gateways.iter().map(|g| ip(g)).collect(),
            ip_range: ip_range.map(net),
            mtu: None,
            internal: false,
            host_access: false,
            created: 0,
        }
    }

    #[test]
    fn a_records_range_sets_as_etcd_ipam_configuration() {
        let n = record(
            &["10.0.0.0/24", "fd00::/64"],
            &["10.0.0.1", "fd00::1"],
            Some("10.0.0.128/25"),
        );
        let sets = Addressing::of(&n).range_sets();
        assert_eq!(
            serde_json::to_value(&sets).unwrap(),
            serde_json::json!([[{"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "rangeStart": "10.0.0.129", "rangeEnd": "10.0.0.254"}],
                               [{"subnet": "fd00::/64", "gateway": "fd00::1"}]])
        );
        // And back, as etcd-ipam reads its configuration.
        let back: Vec<Vec<RangeSpec>> =
            serde_json::from_value(serde_json::to_value(&sets).unwrap()).unwrap();
        assert_eq!(back, sets);
        // Gateways found by containment; a subnet without one gets none (etcd-ipam's default).
        let n = record(
            &["10.0.0.0/24", "fd00::/64"],
            &["fd00::9"],
            Some("10.0.0.0/31"),
        );
        let sets = Addressing::of(&n).range_sets();
        assert_eq!(sets[0][0].gateway, None);
        assert_eq!(sets[1][0].gateway, Some(ip("fd00::9")));
        assert_eq!(
            (sets[0][0].range_start, sets[0][0].range_end),
            (Some(ip("10.0.0.0")), Some(ip("10.0.0.1")))
        );
        // An IPv6 ip-range is not applied (etcd-ipam never did).
        let n = record(&["fd00::/64"], &[], Some("fd00::/120"));
        assert_eq!(Addressing::of(&n).range_sets()[0][0].range_start, None);
    }

    fn plan(
        subnets: &[&str],
        gateways: &[&str],
        range: Option<&str>,
    ) -> Result<Addressing, String> {
        let s: Vec<String> = subnets.iter().map(|x| x.to_string()).collect();
        let g: Vec<String> = gateways.iter().map(|x| x.to_string()).collect();
        Addressing::plan(&s, &g, range).map_err(|e| e.to_string())
    }

    #[test]
    fn plan_defaults_and_capacity_as_etcd_ipam_counts() {
        let a = plan(&["10.0.0.0/24"], &[], None).unwrap();
        assert_eq!(a.record_gateways(), vec![ip("10.0.0.1")]);
        let r = &a.ranges().unwrap()[0];
        assert_eq!((r.start, r.end), (ip("10.0.0.1"), ip("10.0.0.254")));
        assert_eq!(r.capacity(&[]), 253);

        let a = plan(&["fd00::/120", "10.0.0.0/24"], &["fd00::fe"], None).unwrap();
        assert_eq!(a.record_gateways(), vec![ip("fd00::fe"), ip("10.0.0.1")]);
        let r = &a.ranges().unwrap()[0];
        assert_eq!((r.start, r.end), (ip("fd00::1"), ip("fd00::ff")));
        assert_eq!(r.capacity(&[]), 254);
    }

    #[test]
    fn ip_range_narrows_the_range_without_its_network_and_broadcast() {
        let a = plan(&["10.0.0.0/24"], &[], Some("10.0.0.128/25")).unwrap();
        let r = &a.ranges().unwrap()[0];
        assert_eq!((r.start, r.end), (ip("10.0.0.129"), ip("10.0.0.254")));
        assert_eq!(
            r.capacity(&[]),
            126,
            "the gateway 10.0.0.1 is outside the range"
        );
        let a = plan(&["10.0.0.0/24"], &[], Some("10.0.0.0/25")).unwrap();
        let r = &a.ranges().unwrap()[0];
        assert_eq!((r.start, r.end), (ip("10.0.0.1"), ip("10.0.0.126")));
        assert_eq!(r.capacity(&[]), 125);
        // The range applies to the IPv4 subnet only.
        let a = plan(&["10.0.0.0/24", "fd00::/64"], &[], Some("10.0.0.0/28")).unwrap();
        assert_eq!(a.ip_range_of(&a.subnets[1]), None);
        assert_eq!(a.ranges().unwrap()[1].end, ip("fd00::ffff:ffff:ffff:ffff"));
    }

    #[test]
    fn plan_refusals() {
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
            (
                &["10.0.0.0/24"],
                &[],
                Some("10.0.0.5/24"),
                "ip-range 10.0.0.5/24 has host bits set",
            ),
            (&["10.0.0.0/24"], &[], Some("10.0.0.0/32"), "no address"),
            (&["10.0.0.0/24"], &[], Some("10.0.0.1/32"), "no address"),
            // etcd-ipam refuses a range that holds the broadcast address: so does create.
            (&["10.0.0.0/24"], &[], Some("10.0.0.254/31"), "no address"),
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
        let n = record(
            &["10.0.0.0/24", "fd00::/64"],
            &["fd00::9"],
            Some("10.0.0.64/26"),
        );
        let a = Addressing::of(&n);
        assert_eq!(a.gateways, vec![None, Some(ip("fd00::9"))]);
        let ranges = a.ranges().unwrap();
        assert_eq!(
            ranges[0].gateway,
            Some(ip("10.0.0.1")),
            "etcd-ipam's default"
        );
        assert_eq!(
            (ranges[0].start, ranges[0].end),
            (ip("10.0.0.65"), ip("10.0.0.126"))
        );
        assert_eq!(ranges[0].capacity(&[]), 62);
    }
}
