//! Address arithmetic for one range set: which addresses may be handed out, in which order.
//! Pure logic, no I/O: the allocator feeds it the used addresses etcd returns.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// An address as a number, so that v4 and v6 share the arithmetic.
pub fn to_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet with its network address, e.g. 10.0.0.0/24.
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.subnet.is_ipv6()
            && (to_num(self.start)..=to_num(self.end)).contains(&to_num(ip))
    }
}

/// The ranges of one range set (one address per set is handed out), with the exclusions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub ranges: Vec<Range>,
    pub exclude: Vec<IpNetwork>,
}

impl Pool {
    pub fn is_v6(&self) -> bool {
        self.ranges[0].subnet.is_ipv6()
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
            let (start, end) = (to_num(r.start), to_num(r.end));
            if from > end {
                continue;
            }
            let mut n = from.max(start);
            while n <= end {
                let ip = from_num(n, v6);
                if let Some(x) = self.exclude.iter().find(|x| x.contains(ip)) {
                    // Jump over the whole excluded block at once.
                    n = to_num(x.broadcast_or_last()) + 1;
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
            .map(|r| to_num(r.start))
            .min()
            .unwrap_or(0);
        let last = self.ranges.iter().map(|r| to_num(r.end)).max().unwrap_or(0);
        (first, last)
    }

    /// How many addresses can be handed out in all: each range, less the union of the exclusions
    /// inside it, less its gateway when no exclusion already covers it.
    pub fn capacity(&self) -> u128 {
        let mut total = 0u128;
        for r in &self.ranges {
            let (start, end) = (to_num(r.start), to_num(r.end));
            let mut blocks: Vec<(u128, u128)> = self
                .exclude
                .iter()
                .filter(|x| x.is_ipv6() == r.subnet.is_ipv6())
                .map(|x| {
                    (
                        to_num(x.network()).max(start),
                        to_num(x.broadcast_or_last()).min(end),
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
            let gateway_counts = r
                .gateway
                .is_some_and(|g| r.contains(g) && !self.exclude.iter().any(|x| x.contains(g)));
            total += (end - start + 1) - excluded - u128::from(gateway_counts);
        }
        total
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

trait LastAddress {
    fn broadcast_or_last(&self) -> IpAddr;
}

impl LastAddress for IpNetwork {
    fn broadcast_or_last(&self) -> IpAddr {
        match self {
            IpNetwork::V4(n) => IpAddr::V4(n.broadcast()),
            IpNetwork::V6(n) => {
                let host_bits = 128 - n.prefix() as u32;
                let mask = if host_bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << host_bits) - 1
                };
                IpAddr::V6((u128::from(n.network()) | mask).into())
            }
        }
    }
}

/// The default last address of a subnet: the broadcast's predecessor for v4, the last one for v6.
pub fn default_end(subnet: &IpNetwork) -> IpAddr {
    let last = to_num(subnet.broadcast_or_last());
    from_num(
        if subnet.is_ipv4() { last - 1 } else { last },
        subnet.is_ipv6(),
    )
}

/// The default first address: the one after the network address.
pub fn default_start(subnet: &IpNetwork) -> IpAddr {
    from_num(to_num(subnet.network()) + 1, subnet.is_ipv6())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str, gw: Option<&str>, exclude: &[&str]) -> Pool {
        let subnet: IpNetwork = subnet.parse().unwrap();
        Pool {
            ranges: vec![Range {
                subnet,
                start: default_start(&subnet),
                end: default_end(&subnet),
                gateway: gw.map(|g| g.parse().unwrap()),
            }],
            exclude: exclude.iter().map(|x| x.parse().unwrap()).collect(),
        }
    }

    fn n(ip: &str) -> u128 {
        to_num(ip.parse().unwrap())
    }

    #[test]
    fn first_address_is_after_the_gateway() {
        let p = pool("10.0.0.0/24", Some("10.0.0.1"), &[]);
        assert_eq!(p.first_usable(), Some(n("10.0.0.2")));
        assert!(!p.is_usable("10.0.0.1".parse().unwrap()));
        assert!(!p.is_usable("10.0.0.0".parse().unwrap()));
        assert!(!p.is_usable("10.0.0.255".parse().unwrap()));
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
        assert!(p.is_usable("fd00::ff".parse().unwrap()));
    }

    #[test]
    fn a_huge_exclusion_is_jumped_not_walked() {
        let p = pool("fd00::/64", None, &["fd00::/65"]);
        assert_eq!(p.first_usable(), Some(n("fd00::8000:0:0:0")));
    }
}
