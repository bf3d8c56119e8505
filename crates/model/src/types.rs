//! The overlay's values and their limits.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// The largest VNI: VXLAN's network identifier has 24 bits.
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Where `overlayctl network create` starts when it chooses a VNI, leaving the ones below to
/// hand-written conflists (Docker starts at 256).
pub const FIRST_AUTO_VNI: u32 = 4096;
/// The VXLAN UDP port (IANA's), the default of the plugin and of the kernel device.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Bounds of a configured MTU: IPv4's minimum datagram size to the largest a link can carry.
pub const MIN_MTU: u32 = 576;
pub const MAX_MTU: u32 = 65_535;
/// The bytes VXLAN adds to each frame: outer IPv4 (20) or IPv6 (40), UDP (8), VXLAN (8) and the
/// inner Ethernet header (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// The longest node name: it goes into etcd keys and into sandbox names.
pub const MAX_NODE_NAME: usize = 200;

/// A VXLAN network identifier, 1 to [`MAX_VNI`]. Kept as a number in records and configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vni(u32);

impl Vni {
    pub const FIRST_AUTO: Vni = Vni(FIRST_AUTO_VNI);
    pub const MAX: Vni = Vni(MAX_VNI);

    /// A VNI from a configuration's number.
    pub fn new(n: u32) -> Result<Vni, Error> {
        if (1..=MAX_VNI).contains(&n) {
            Ok(Vni(n))
        } else {
            Err(Error::invalid(format!("vni {n} is outside 1 to {MAX_VNI}")))
        }
    }

    /// A VNI from a command line's text.
    pub fn parse(text: &str) -> Result<Vni, Error> {
        match text.trim().parse::<u64>() {
            Ok(n) if (1..=u64::from(MAX_VNI)).contains(&n) => Ok(Vni(n as u32)),
            _ => Err(Error::invalid(format!(
                "invalid vni {text:?}: it must be between 1 and {MAX_VNI}"
            ))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Vni {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Vni {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vni::new(u32::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// A configured MTU, [`MIN_MTU`] to [`MAX_MTU`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtu(u32);

impl Mtu {
    /// An MTU from a configuration's number.
    pub fn new(n: u32) -> Result<Mtu, Error> {
        if (MIN_MTU..=MAX_MTU).contains(&n) {
            Ok(Mtu(n))
        } else {
            Err(Error::invalid(format!(
                "mtu {n} is outside {MIN_MTU} to {MAX_MTU}"
            )))
        }
    }

    /// An MTU from a command line's text.
    pub fn parse(text: &str) -> Result<Mtu, Error> {
        match text.trim().parse::<u64>() {
            Ok(n) if (u64::from(MIN_MTU)..=u64::from(MAX_MTU)).contains(&n) => Ok(Mtu(n as u32)),
            _ => Err(Error::invalid(format!(
                "invalid mtu {text:?}: it must be between {MIN_MTU} and {MAX_MTU}"
            ))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Mtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Mtu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Mtu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Mtu::new(u32::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// The MTU of a container's interface: the configured one, or the underlay device's less what
/// VXLAN adds over the VTEP's family.
pub fn container_mtu(configured: Option<Mtu>, underlay_mtu: u32, vtep: IpAddr) -> u32 {
    configured.map(Mtu::get).unwrap_or_else(|| {
        underlay_mtu.saturating_sub(if vtep.is_ipv6() {
            VXLAN_OVERHEAD_V6
        } else {
            VXLAN_OVERHEAD_V4
        })
    })
}

/// An Ethernet address. Text form `aa:bb:cc:dd:ee:ff` (lower case); read in either case, with
/// `:` or `-` between the bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac([u8; 6]);

impl Mac {
    pub const fn new(octets: [u8; 6]) -> Mac {
        Mac(octets)
    }

    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Neither a group (multicast, broadcast) address nor all zeros (the flood entries' MAC).
    pub fn is_unicast(self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Mac {
        Mac(octets)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(mac: Mac) -> [u8; 6] {
        mac.0
    }
}

impl FromStr for Mac {
    type Err = Error;

    fn from_str(s: &str) -> Result<Mac, Error> {
        let bad = || Error::invalid(format!("{s:?} is not a MAC address"));
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut mac = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in mac.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::text::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::text::deserialize(d)
    }
}

/// The rule of node names: the CNI identifier rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), at most
/// [`MAX_NODE_NAME`] characters. A node name is an etcd key segment and part of sandbox names.
pub fn check_node_name(name: &str) -> Result<(), Error> {
    if cni::env::is_valid_identifier(name) && name.len() <= MAX_NODE_NAME {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "node name {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most {MAX_NODE_NAME} \
             characters)"
        )))
    }
}

/// The rule of network names, the CNI specification's for a configuration's `name`: an etcd
/// key segment, part of file names and of the DNS domain.
pub fn check_network_name(name: &str) -> Result<(), Error> {
    if cni::env::is_valid_identifier(name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid network name {name:?}: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vni_bounds_and_forms() {
        assert_eq!(Vni::new(1).unwrap().get(), 1);
        assert_eq!(Vni::new(MAX_VNI).unwrap(), Vni::MAX);
        assert_eq!(MAX_VNI, 16_777_215);
        for bad in [0, MAX_VNI + 1, u32::MAX] {
            assert_eq!(
                Vni::new(bad).unwrap_err().to_string(),
                format!("vni {bad} is outside 1 to 16777215")
            );
        }
        assert_eq!(Vni::parse(" 16777215 ").unwrap().get(), 16_777_215);
        for bad in ["0", "16777216", "-1", "x", "99999999999999999999999"] {
            assert!(
                Vni::parse(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("must be between 1 and 16777215"),
                "{bad}"
            );
        }
        assert_eq!(Vni::FIRST_AUTO.get(), 4096);
        assert_eq!(serde_json::to_string(&Vni::new(42).unwrap()).unwrap(), "42");
        assert_eq!(
            serde_json::from_str::<Vni>("4096").unwrap(),
            Vni::FIRST_AUTO
        );
        assert!(serde_json::from_str::<Vni>("0").is_err());
        assert!(serde_json::from_str::<Vni>("\"42\"").is_err());
    }

    #[test]
    fn mtu_bounds_and_the_container_rule() {
        assert_eq!(Mtu::new(576).unwrap().get(), 576);
        assert_eq!(Mtu::new(65_535).unwrap().get(), 65_535);
        assert_eq!(
            Mtu::new(575).unwrap_err().to_string(),
            "mtu 575 is outside 576 to 65535"
        );
        assert!(Mtu::new(65_536).is_err());
        assert_eq!(Mtu::parse("1450").unwrap().get(), 1450);
        assert!(Mtu::parse("575").is_err());
        assert!(Mtu::parse("65536").is_err());
        assert!(serde_json::from_str::<Mtu>("100").is_err());

        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(container_mtu(None, 1500, v4), 1450);
        assert_eq!(container_mtu(None, 1500, v6), 1430);
        assert_eq!(container_mtu(Mtu::new(1400).ok(), 1500, v6), 1400);
        assert_eq!(container_mtu(None, 40, v4), 0);
        assert_eq!(DEFAULT_VXLAN_PORT, 4789);
    }

    #[test]
    fn mac_text_forms() {
        let m: Mac = "AA:bb:0C:dd:ee:0f".parse().unwrap();
        assert_eq!(m.octets(), [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]);
        assert_eq!(m.to_string(), "aa:bb:0c:dd:ee:0f");
        assert_eq!(
            "aa-bb-cc-dd-ee-ff".parse::<Mac>().unwrap(),
            Mac::new([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "a:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:fg",
            "aa-bb:cc:dd:ee:ff",
            "é:bb:cc:dd:ee:ff",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"aa:bb:0c:dd:ee:0f\"");
        assert_eq!(
            serde_json::from_str::<Mac>("\"AA:BB:0C:DD:EE:0F\"").unwrap(),
            m
        );
    }

    #[test]
    fn unicast_macs() {
        assert!(Mac::new([2, 0, 0, 0, 0, 1]).is_unicast());
        assert!(!Mac::new([1, 0, 0x5e, 0, 0, 1]).is_unicast(), "multicast");
        assert!(!Mac::new([0xff; 6]).is_unicast(), "broadcast");
        assert!(!Mac::new([0; 6]).is_unicast(), "the flood entries' MAC");
    }

    #[test]
    fn node_and_network_names() {
        for good in ["node1", "a", "Net_1.b-c", "0"] {
            assert!(check_node_name(good).is_ok(), "{good}");
            assert!(check_network_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "é", "_x"] {
            assert!(check_node_name(bad).is_err(), "{bad}");
            assert!(check_network_name(bad).is_err(), "{bad}");
        }
        assert!(check_node_name(&"n".repeat(200)).is_ok());
        assert!(check_node_name(&"n".repeat(201)).is_err());
        assert!(check_network_name(&"n".repeat(201)).is_ok());
    }
}
