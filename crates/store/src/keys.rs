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

fn parse_address_hex(family: &str, hex: &str) -> Option<IpAddr> {
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

    #[test]
    fn vni_keys_are_fixed_width() {
        let k = Keys::new("/p");
        assert_eq!(k.vni(Vni::new(42).unwrap()), "/p/vnis/00000042");
        assert_eq!(k.vni(Vni::MAX), "/p/vnis/16777215");
    }

    #[test]
    fn names_are_case_insensitive() {
        let k = Keys::new("/p");
        assert_eq!(k.name("n", "Test1"), k.name("n", "test1"));
    }
}
