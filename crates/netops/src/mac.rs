//! MAC address text form and deterministic host-side interface names.

/// Parses "aa:bb:cc:dd:ee:ff" (either case; '-' also accepted as separator).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let sep = if s.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = s.split(sep);
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

/// "aa:bb:cc:dd:ee:ff", lower case.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Linux interface names hold at most 15 bytes (IFNAMSIZ - 1).
pub(crate) const MAX_IFNAME: usize = 15;

/// How many hex digits of the hash go into a host-side name.
const NAME_HASH_DIGITS: usize = 11;

/// FNV-1a, 64 bit: stable across runs, processes and Rust versions, unlike std's hasher.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator so ("ab","c") and ("a","bc") hash differently.
            hash ^= 0xff;
            hash = hash.wrapping_mul(PRIME);
        }
        for b in part.iter() {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

/// Deterministic host-side veth name for (container id, ifname): `prefix` followed by 11 hex
/// digits of a stable hash. The prefix is cut to 4 bytes so the name fits in 15 bytes.
pub fn host_veth_name(prefix: &str, container_id: &str, ifname: &str) -> String {
    let room = MAX_IFNAME - NAME_HASH_DIGITS;
    let mut cut = prefix.len().min(room);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = fnv1a64(&[container_id.as_bytes(), ifname.as_bytes()]);
    let digits = format!("{hash:016x}");
    format!("{}{}", &prefix[..cut], &digits[..NAME_HASH_DIGITS])
}

/// A stable, locally administered unicast MAC derived from `parts`: a device created with it keeps
/// it for life (the kernel leaves a bridge's address alone once it was set), and whoever knows the
/// parts can tell the device is the one they made.
pub fn derived_mac(parts: &[&str]) -> [u8; 6] {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    let h = fnv1a64(&bytes).to_be_bytes();
    // Bit 0 of the first byte clear: unicast; bit 1 set: locally administered.
    [(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
}

/// The kernel's dev_valid_name(): 1-15 bytes, not "." or "..", no '/', ':' or whitespace.
pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = parse_mac("AA:bb:0C:dd:ee:0f").unwrap();
        assert_eq!(m, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]);
        assert_eq!(format_mac(&m), "aa:bb:0c:dd:ee:0f");
        assert_eq!(
            parse_mac("aa-bb-cc-dd-ee-ff"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
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
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn host_veth_names_are_stable_and_short() {
        let a = host_veth_name("ov", "0123456789abcdef", "eth0");
        assert_eq!(a, host_veth_name("ov", "0123456789abcdef", "eth0"));
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("ov"));
        assert!(valid_ifname(&a));
        assert_ne!(a, host_veth_name("ov", "0123456789abcdef", "eth1"));
        assert_ne!(a, host_veth_name("gw", "0123456789abcdef", "eth0"));
        assert_ne!(
            host_veth_name("ov", "ab", "c"),
            host_veth_name("ov", "a", "bc")
        );
        // Pinned value: the name must never change between releases, or DEL would miss links.
        assert_eq!(host_veth_name("ov", "c1", "eth0"), "ovbcd778a1816");
        let long = host_veth_name("verylongprefix", "x", "eth0");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("very"));
        let multibyte = host_veth_name("ééé", "x", "eth0");
        assert!(multibyte.len() <= 15);
    }

    #[test]
    fn derived_macs_are_stable_local_unicast() {
        let a = derived_mac(&["demo", "4096", "node1"]);
        assert_eq!(a, derived_mac(&["demo", "4096", "node1"]));
        assert_eq!(a[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(a, derived_mac(&["demo", "4096", "node2"]));
        assert_ne!(derived_mac(&["ab", "c"]), derived_mac(&["a", "bc"]));
        // Pinned: a bridge made by one release must be recognised by the next.
        assert_eq!(format_mac(&derived_mac(&["x"])), "ae:63:f5:4c:86:02");
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn interface_name_rules() {
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("abcdefghijklmno"));
        for bad in [
            "",
            ".",
            "..",
            "abcdefghijklmnop",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
    }
}
