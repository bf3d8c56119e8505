//! The key layout (see the crate documentation for the table).

use std::net::IpAddr;

use model::Vni;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn ipam(&self, net: &str) -> String {
        format!("{}/ipam/{net}/", self.prefix)
    }

    /// Where every network's allocations are: `ipam/`.
    pub fn ipam_root(&self) -> String {
        format!("{}/ipam/", self.prefix)
    }

    /// The network of a key under [`Keys::ipam_root`].
    pub fn network_of_ipam_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.ipam_root())?
            .split('/')
            .next()
            .filter(|n| !n.is_empty())
    }

    pub fn owner(&self, net: &str, container_id: &str, ifname: &str) -> String {
        format!("{}/ipam/{net}/owners/{container_id}/{ifname}", self.prefix)
    }

    pub fn owners(&self, net: &str) -> String {
        format!("{}/ipam/{net}/owners/", self.prefix)
    }

    /// `.../ips/4/0a000002` or `.../ips/6/fd00...`: fixed width, so key order is address order.
    pub fn ip(&self, net: &str, ip: IpAddr) -> String {
        format!("{}{}", self.ips(net, ip.is_ipv6()), address_hex(ip))
    }

    pub fn ips(&self, net: &str, v6: bool) -> String {
        format!("{}/ipam/{net}/ips/{}/", self.prefix, if v6 { 6 } else { 4 })
    }

    /// The address a key of [`Keys::ip`] names.
    pub fn ip_from_key(&self, key: &[u8]) -> Option<IpAddr> {
        let key = std::str::from_utf8(key).ok()?;
        let (family, hex) = key
            .rsplit('/')
            .take(2)
            .fold((None, None), |(f, h), part| match h {
                None => (f, Some(part)),
                Some(h) => (Some(part), Some(h)),
            });
        parse_address_hex(family?, hex?)
    }

    /// Names are reserved case-insensitively: DNS answers them that way.
    pub fn name(&self, net: &str, name: &str) -> String {
        format!(
            "{}/ipam/{net}/names/{}",
            self.prefix,
            name.to_ascii_lowercase()
        )
    }

    pub fn names(&self, net: &str) -> String {
        format!("{}/ipam/{net}/names/", self.prefix)
    }

    pub fn cursor(&self, net: &str, range_set: usize) -> String {
        format!("{}/ipam/{net}/cursor/{range_set}", self.prefix)
    }

    pub fn endpoint(&self, net: &str, container_id: &str, ifname: &str) -> String {
        format!("{}/endpoints/{net}/{container_id}/{ifname}", self.prefix)
    }

    pub fn endpoints(&self, net: &str) -> String {
        format!("{}/endpoints/{net}/", self.prefix)
    }

    pub fn all_endpoints(&self) -> String {
        format!("{}/endpoints/", self.prefix)
    }

    pub fn node(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }

    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// The mark of a node whose lease is gone ([`model::records::Gone`]).
    pub fn gone(&self, node: &str) -> String {
        format!("{}/gone/{node}", self.prefix)
    }

    pub fn gones(&self) -> String {
        format!("{}/gone/", self.prefix)
    }

    /// The elected reclaimer ([`model::records::Reclaimer`]), under its lease.
    pub fn reclaimer(&self) -> String {
        format!("{}/reclaimer", self.prefix)
    }

    /// The last segment of a key: the node of `nodes/<node>` and `gone/<node>`.
    pub fn last_segment(key: &str) -> &str {
        key.rsplit('/').next().unwrap_or(key)
    }

    pub fn network(&self, name: &str) -> String {
        format!("{}/networks/{name}", self.prefix)
    }

    pub fn networks(&self) -> String {
        format!("{}/networks/", self.prefix)
    }

    pub fn vni(&self, vni: Vni) -> String {
        format!("{}/vnis/{vni:08}", self.prefix)
    }

    pub fn vnis(&self) -> String {
        format!("{}/vnis/", self.prefix)
    }
}

pub fn address_hex(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

/// Exactly what [`address_hex`] writes: fixed width, lower-case digits. `from_str_radix` alone
/// would also take `+a000002` and upper case, keys no writer made (found writing the fuzz
/// target `records`, whose invariant is that a key read is the key written).
fn parse_address_hex(family: &str, hex: &str) -> Option<IpAddr> {
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    match (family, hex.len()) {
        ("4", 8) => u32::from_str_radix(hex, 16)
            .ok()
            .map(|n| IpAddr::V4(n.into())),
        ("6", 32) => u128::from_str_radix(hex, 16)
            .ok()
            .map(|n| IpAddr::V6(n.into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_keys_sort_in_address_order_and_parse_back() {
        let k = Keys::new("/p");
        let a = k.ip("n", "10.0.0.9".parse().unwrap());
        let b = k.ip("n", "10.0.0.10".parse().unwrap());
        assert!(a < b);
        assert_eq!(a, "/p/ipam/n/ips/4/0a000009");
        assert_eq!(
            k.ip_from_key(b.as_bytes()),
            Some("10.0.0.10".parse().unwrap())
        );
        let v6 = k.ip("n", "fd00::1".parse().unwrap());
        assert_eq!(
            k.ip_from_key(v6.as_bytes()),
            Some("fd00::1".parse().unwrap())
        );
        assert_eq!(k.ip_from_key(b"/p/ipam/n/ips/4/zz"), None);
    }

    /// Found writing the fuzz target `records`: keys that only look like address keys.
    #[test]
    fn address_keys_are_read_exactly_as_written() {
        let k = Keys::new("/p");
        for key in [
            &b"/p/ipam/n/ips/4/+a000002"[..],
            b"/p/ipam/n/ips/4/0A000002",
            b"/p/ipam/n/ips/6/+d000000000000000000000000000002",
            b"/p/ipam/n/ips/6/FD000000000000000000000000000002",
            b"/p/ipam/n/ips/4/0a00002",
        ] {
            assert_eq!(k.ip_from_key(key), None, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn vni_keys_are_fixed_width() {
        let k = Keys::new("/p");
        assert_eq!(k.vni(Vni::new(42).unwrap()), "/p/vnis/00000042");
        assert_eq!(k.vni(Vni::MAX), "/p/vnis/16777215");
    }

    #[test]
    fn networks_of_ipam_keys_and_node_keys() {
        let k = Keys::new("/p");
        assert_eq!(
            k.network_of_ipam_key(&k.owner("net-1", "c", "eth0")),
            Some("net-1")
        );
        assert_eq!(k.network_of_ipam_key("/p/ipam/"), None);
        assert_eq!(k.network_of_ipam_key("/p/nodes/n"), None);
        assert_eq!(k.gone("n1"), "/p/gone/n1");
        assert!(k.gone("n1").starts_with(&k.gones()));
        assert_eq!(Keys::last_segment(&k.gone("n1")), "n1");
        assert_eq!(Keys::last_segment(&k.node("n.2")), "n.2");
        assert_eq!(k.reclaimer(), "/p/reclaimer");
    }

    #[test]
    fn names_are_case_insensitive() {
        let k = Keys::new("/p");
        assert_eq!(k.name("n", "Test1"), k.name("n", "test1"));
    }
}
