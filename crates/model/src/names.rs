//! Every name the plugins give to what they make, and the way back from a name to what it names.
//!
//! In a host's namespace, per network (VNIs are unique per host, so they name the devices): a
//! bridge `ovbr<vni>`, a VXLAN device `ovx<vni>` on it, the host end `ovgw<vni>` of the veth into
//! the gateway sandbox `ovl-<vni>-<node>`, and the host ends of the containers' veths, `ov` and a
//! hash of (container id, ifname). The bridge's alias `cni-overlay:<network>` and its derived MAC
//! tie it to its network; a container veth's alias `<container id>/<ifname>` names its attachment.
//! The network's DNS domain is `<network>.overlay`; its conflist `60-cni-overlay-<network>.conflist`.
//!
//! Container names: any name a runtime sends is reserved (etcd-ipam), but only names that can be
//! DNS names are served ([`dns_unservable`] is the one rule).

use std::net::IpAddr;

use crate::types::{Mac, Vni};

/// Prefix of a network's bridge: `ovbr<vni>`.
pub const BRIDGE_PREFIX: &str = "ovbr";
/// Prefix of a network's VXLAN device: `ovx<vni>`.
pub const VXLAN_PREFIX: &str = "ovx";
/// Prefix of the host end of the veth into a network's gateway sandbox: `ovgw<vni>`.
pub const GATEWAY_VETH_PREFIX: &str = "ovgw";
/// Prefix of the gateway sandboxes: `ovl-<vni>-<node>`.
pub const SANDBOX_PREFIX: &str = "ovl-";
/// The gateway's interface inside the sandbox.
pub const SANDBOX_IFNAME: &str = "gw";
/// Prefix of the host ends of the containers' veths.
pub const HOST_VETH_PREFIX: &str = "ov";
/// The DNS pseudo top-level domain every network's domain hangs below.
pub const DNS_TLD: &str = "overlay";
/// The per-host lock of the isolation table (shared by every hostAccess network).
pub const ISOLATION_LOCK: &str = "isolation";
/// gwbridge-egress's interface in the container (its `ifname` default). Outside every name a
/// runtime hands out for CNI_IFNAME (podman, nerdctl, Docker: `eth0`, `eth1`, ...; Multus:
/// `net1`, ...), so a container's second network never collides with it; one per container,
/// shared by all its networks that chain gwbridge-egress.
pub const GWBRIDGE_IFNAME: &str = "gwb0";
/// The ifname of every attachment overlayd's Docker driver records (endpoint and allocation).
/// Docker names the interface in the container itself, and one container has one endpoint per
/// network, so the endpoint id alone tells its attachments apart. The `:` makes it a name no CNI
/// runtime can pass as CNI_IFNAME: a CNI GC, whose valid attachments can never name a Docker
/// endpoint, leaves these to the driver ([`is_docker_attachment`]).
pub const DOCKER_IFNAME: &str = "docker:eth";

/// Whether an attachment recorded with `ifname` is one of overlayd's Docker driver.
pub fn is_docker_attachment(ifname: &str) -> bool {
    ifname == DOCKER_IFNAME
}

/// The prefixes runtimes number their CNI_IFNAMEs from (`eth0`, `net1`, ...).
const RUNTIME_IFNAME_PREFIXES: [&str; 2] = ["eth", "net"];
/// The marker field of the conflists overlayd writes (runtimes ignore unknown top-level fields).
pub const CONFLIST_MARKER: &str = "cniOverlayManaged";
const CONFLIST_PREFIX: &str = "60-cni-overlay-";
const CONFLIST_SUFFIX: &str = ".conflist";
const BRIDGE_ALIAS_PREFIX: &str = "cni-overlay:";

/// The longest DNS label (RFC 1035).
pub const MAX_DNS_LABEL: usize = 63;
/// The longest DNS name in its text form, without the root's dot (RFC 1035's 255 octets on the wire).
pub const MAX_DNS_NAME: usize = 253;

/// How many hex digits of the hash go into a host-side veth name.
const VETH_HASH_DIGITS: usize = 11;

/// A container id as people are shown it: its first 12 characters, as Docker does.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

pub fn bridge(vni: Vni) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

/// The VNI a bridge's name stands for: None unless `name` is exactly `ovbr<vni>`.
pub fn vni_of_bridge(name: &str) -> Option<Vni> {
    let vni = Vni::new(name.strip_prefix(BRIDGE_PREFIX)?.parse().ok()?).ok()?;
    (bridge(vni) == name).then_some(vni)
}

pub fn vxlan(vni: Vni) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// The VNI a VXLAN device's name stands for: None unless `name` is exactly `ovx<vni>` (no
/// leading zeros, a VNI in range). The device's kind and its own VNI are for the caller to check.
pub fn vni_of_vxlan(name: &str) -> Option<Vni> {
    let vni = Vni::new(name.strip_prefix(VXLAN_PREFIX)?.parse().ok()?).ok()?;
    (vxlan(vni) == name).then_some(vni)
}

pub fn gateway_veth(vni: Vni) -> String {
    format!("{GATEWAY_VETH_PREFIX}{vni}")
}

/// The gateway sandbox namespace (a named namespace, under /run/netns). The node is part of the
/// name so that simulated hosts sharing one machine do not share sandboxes.
pub fn sandbox(vni: Vni, node: &str) -> String {
    format!("{SANDBOX_PREFIX}{vni}-{node}")
}

/// The VNI of node `node`'s gateway sandbox named `name`: None unless `name` is exactly
/// [`sandbox`]`(vni, node)`.
pub fn vni_of_sandbox(name: &str, node: &str) -> Option<Vni> {
    let vni = name
        .strip_prefix(SANDBOX_PREFIX)?
        .strip_suffix(node)?
        .strip_suffix('-')?;
    let vni = Vni::new(vni.parse().ok()?).ok()?;
    (sandbox(vni, node) == name).then_some(vni)
}

/// The host end of a container's veth: found again by name at DEL, without the namespace.
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    host_veth_name(HOST_VETH_PREFIX, container_id, ifname)
}

/// A deterministic host-side veth name for (container id, ifname): `prefix` (cut to 4 bytes)
/// and 11 hex digits of a stable hash, so that it fits in an interface name. Never to change
/// between releases: DEL finds links by it.
pub fn host_veth_name(prefix: &str, container_id: &str, ifname: &str) -> String {
    let room = cni::env::MAX_IFNAME_LEN - VETH_HASH_DIGITS;
    let mut cut = prefix.len().min(room);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = fnv1a64(&[container_id.as_bytes(), ifname.as_bytes()]);
    let digits = format!("{hash:016x}");
    format!("{}{}", &prefix[..cut], &digits[..VETH_HASH_DIGITS])
}

/// Whether `ifname` is one a runtime hands out for a container's networks (`eth<N>`, `net<N>`):
/// a chained plugin's own interface of such a name collides with the container's next network.
pub fn is_runtime_ifname(ifname: &str) -> bool {
    RUNTIME_IFNAME_PREFIXES.iter().any(|p| {
        ifname
            .strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The alias of a container veth's host end: the attachment it belongs to.
pub fn attachment_alias(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// (container id, ifname) of an [`attachment_alias`].
pub fn parse_attachment_alias(alias: &str) -> Option<(&str, &str)> {
    alias.split_once('/')
}

/// The bridge's alias ties the VNI to the network: a second network with the same VNI on this
/// host is refused instead of being joined to the first.
pub fn bridge_alias(network: &str) -> String {
    format!("{BRIDGE_ALIAS_PREFIX}{network}")
}

/// The network a bridge's [`bridge_alias`] names.
pub fn network_of_bridge_alias(alias: &str) -> Option<&str> {
    alias
        .strip_prefix(BRIDGE_ALIAS_PREFIX)
        .filter(|n| !n.is_empty())
}

/// The MAC of a container's interface: derived from its network and address (its first IPv4
/// address, else its first), as Docker's overlay derives it. Derived, so that vxlan-overlay can
/// write the endpoint record (which carries it) before the veth exists: a host veth with an
/// attachment alias then always has its record, unless the record was released since, which is
/// what overlayd's stale check relies on (see `overlayd::stale`). From the address, so that an
/// address that moves to a new container (its old host died and was reclaimed) keeps its MAC:
/// the other containers' ARP and neighbour caches stay right, and reach the new owner at once
/// instead of after the cached entry times out (up to a minute). None without an address.
pub fn endpoint_mac(network: &str, addresses: &[IpAddr]) -> Option<Mac> {
    let address = (addresses.iter().find(|a| a.is_ipv4())).or_else(|| addresses.first())?;
    Some(derived_mac(&[
        "cni-overlay endpoint",
        network,
        &address.to_string(),
    ]))
}

/// The bridge's MAC, set in the very message that creates it: the kernel sets an alias only in
/// a second message, so the MAC is what tells our bridge (also one caught between the two) from a
/// stranger's. The bridge keeps it for life.
pub fn bridge_mac(network: &str, vni: Vni, node: &str) -> Mac {
    derived_mac(&["cni-overlay bridge", network, &vni.to_string(), node])
}

/// A stable, locally administered unicast MAC derived from `parts`: whoever knows the parts can
/// tell the device is the one they made.
pub fn derived_mac(parts: &[&str]) -> Mac {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    let h = fnv1a64(&bytes).to_be_bytes();
    // Bit 0 of the first byte clear: unicast; bit 1 set: locally administered.
    Mac::new([(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]])
}

/// The DNS domain of a network, where overlayd answers its names and the search domain the
/// plugin's result gives: `<network>.overlay`, lower-cased.
pub fn dns_domain(network: &str) -> String {
    format!("{}.{DNS_TLD}", network.to_ascii_lowercase())
}

/// Why a container's name (or alias) cannot be served by DNS in `network`, or None when it can.
/// The one rule of what DNS serves: every label 1 to [`MAX_DNS_LABEL`] characters of letters,
/// digits, `-` and `_` (one trailing dot allowed: the absolute form), and the name under the
/// network's domain (`<name>.<network>.overlay`) at most [`MAX_DNS_NAME`] characters. Names
/// that break it are still reserved (uniqueness does not depend on DNS), only not served.
pub fn dns_unservable(name: &str, network: &str) -> Option<String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Some("it is empty".into());
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Some("it has an empty label".into());
        }
        if label.len() > MAX_DNS_LABEL {
            return Some(format!(
                "a label of {} characters (DNS allows {MAX_DNS_LABEL})",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return Some(format!("{c:?} is not a DNS name's character"));
        }
    }
    let qualified = bare.len() + 1 + dns_domain(network).len();
    if qualified > MAX_DNS_NAME {
        return Some(format!(
            "{qualified} characters under {} (DNS allows {MAX_DNS_NAME})",
            dns_domain(network)
        ));
    }
    None
}

/// The per-host lock of a network's devices.
pub fn network_lock(vni: Vni) -> String {
    format!("vni{vni}")
}

/// The conflist overlayd keeps for a network.
pub fn conflist_file(network: &str) -> String {
    format!("{CONFLIST_PREFIX}{network}{CONFLIST_SUFFIX}")
}

/// The network a [`conflist_file`] name is for.
pub fn network_of_conflist(file_name: &str) -> Option<&str> {
    file_name
        .strip_prefix(CONFLIST_PREFIX)?
        .strip_suffix(CONFLIST_SUFFIX)
        .filter(|n| !n.is_empty())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn vni(n: u32) -> Vni {
        Vni::new(n).unwrap()
    }

    #[test]
    fn runtime_interface_names_and_ours() {
        for runtime in ["eth0", "eth1", "eth12", "net1", "net0"] {
            assert!(is_runtime_ifname(runtime), "{runtime}");
        }
        for other in [
            GWBRIDGE_IFNAME,
            "eth",
            "net",
            "eth1a",
            "ethx",
            "egress0",
            "veth1",
            "lo",
        ] {
            assert!(!is_runtime_ifname(other), "{other}");
        }
    }

    #[test]
    fn device_and_sandbox_names() {
        assert_eq!(bridge(vni(42)), "ovbr42");
        assert_eq!(vxlan(vni(42)), "ovx42");
        assert_eq!(gateway_veth(vni(42)), "ovgw42");
        assert_eq!(sandbox(vni(42), "n1"), "ovl-42-n1");
        assert_eq!(network_lock(vni(4096)), "vni4096");
        // The longest VNI still makes interface names the kernel takes.
        assert!(gateway_veth(Vni::MAX).len() <= cni::env::MAX_IFNAME_LEN);
        assert!(bridge(Vni::MAX).len() <= cni::env::MAX_IFNAME_LEN);
    }

    #[test]
    fn only_exact_vxlan_names_have_a_vni() {
        assert_eq!(vni_of_vxlan("ovx42"), Some(vni(42)));
        assert_eq!(vni_of_vxlan("ovx16777215"), Some(Vni::MAX));
        for other in [
            "ovx042",
            "ovx0",
            "ovx16777216",
            "vx42",
            "ovxa",
            "ovx",
            "ovbr42",
            "ovx+1",
        ] {
            assert_eq!(vni_of_vxlan(other), None, "{other}");
        }
    }

    #[test]
    fn the_docker_ifname_is_one_no_cni_runtime_can_pass() {
        assert!(cni::env::validate_ifname(DOCKER_IFNAME).is_err());
        assert!(is_docker_attachment(DOCKER_IFNAME));
        assert!(!is_docker_attachment("eth0"));
    }

    #[test]
    fn host_veth_names_are_stable_and_short() {
        let a = host_veth_name("ov", "0123456789abcdef", "eth0");
        assert_eq!(a, host_veth("0123456789abcdef", "eth0"));
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("ov"));
        assert!(cni::env::validate_ifname(&a).is_ok());
        assert_ne!(a, host_veth_name("ov", "0123456789abcdef", "eth1"));
        assert_ne!(a, host_veth_name("gw", "0123456789abcdef", "eth0"));
        assert_ne!(
            host_veth_name("ov", "ab", "c"),
            host_veth_name("ov", "a", "bc")
        );
        // Pinned value: the name must never change between releases, or DEL would miss links.
        assert_eq!(host_veth("c1", "eth0"), "ovbcd778a1816");
        let long = host_veth_name("verylongprefix", "x", "eth0");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("very"));
        let multibyte = host_veth_name("ééé", "x", "eth0");
        assert!(multibyte.len() <= 15);
    }

    #[test]
    fn attachment_aliases() {
        assert_eq!(attachment_alias("c1", "eth0"), "c1/eth0");
        assert_eq!(parse_attachment_alias("c1/eth0"), Some(("c1", "eth0")));
        assert_eq!(parse_attachment_alias("no alias"), None);
    }

    #[test]
    fn derived_macs_are_stable_local_unicast() {
        let a = derived_mac(&["demo", "4096", "node1"]);
        assert_eq!(a, derived_mac(&["demo", "4096", "node1"]));
        assert_eq!(a.octets()[0] & 0x03, 0x02, "locally administered unicast");
        assert!(a.is_unicast());
        assert_ne!(a, derived_mac(&["demo", "4096", "node2"]));
        assert_ne!(derived_mac(&["ab", "c"]), derived_mac(&["a", "bc"]));
        // Pinned: a bridge made by one release must be recognised by the next.
        assert_eq!(derived_mac(&["x"]).to_string(), "ae:63:f5:4c:86:02");
        assert_eq!(
            bridge_mac("demo", vni(4096), "node1"),
            derived_mac(&["cni-overlay bridge", "demo", "4096", "node1"])
        );
        assert_ne!(
            bridge_mac("demo", vni(4096), "node1"),
            bridge_mac("demo", vni(4097), "node1")
        );
        assert_eq!(bridge_alias("demo"), "cni-overlay:demo");
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn bridge_names_and_aliases_lead_back() {
        assert_eq!(vni_of_bridge("ovbr42"), Some(vni(42)));
        for other in ["ovbr042", "ovbr0", "ovbr", "ovx42", "ovbr16777216"] {
            assert_eq!(vni_of_bridge(other), None, "{other}");
        }
        assert_eq!(network_of_bridge_alias(&bridge_alias("demo")), Some("demo"));
        assert_eq!(network_of_bridge_alias("cni-overlay:"), None);
        assert_eq!(network_of_bridge_alias("c1/eth0"), None);
    }

    #[test]
    fn endpoint_macs_follow_the_address() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let a = endpoint_mac("demo", &[ip("10.0.0.2")]).unwrap();
        assert!(a.is_unicast());
        assert_eq!(a.octets()[0] & 0x03, 0x02, "locally administered unicast");
        // The first IPv4 address counts, wherever it is; else the first address.
        assert_eq!(
            endpoint_mac("demo", &[ip("fd00::2"), ip("10.0.0.2"), ip("10.0.0.9")]),
            Some(a)
        );
        assert_ne!(endpoint_mac("demo", &[ip("fd00::2")]), Some(a));
        assert_ne!(endpoint_mac("demo", &[ip("10.0.0.3")]), Some(a));
        assert_ne!(endpoint_mac("other", &[ip("10.0.0.2")]), Some(a));
        assert_eq!(endpoint_mac("demo", &[]), None);
        // Pinned: a record written by one release must match the interface the next one makes.
        assert_eq!(
            a,
            derived_mac(&["cni-overlay endpoint", "demo", "10.0.0.2"])
        );
    }

    #[test]
    fn which_names_dns_serves() {
        for good in [
            "test1",
            "web-0.prod",
            "Web_1",
            "api.v1",
            "web.",
            &"a".repeat(63),
            &format!("{}.{}", "a".repeat(63), "b".repeat(63)),
        ] {
            assert_eq!(dns_unservable(good, "demo"), None, "{good}");
        }
        let why = |name: &str| dns_unservable(name, "demo").unwrap_or_default();
        assert_eq!(
            why(&"y".repeat(100)),
            "a label of 100 characters (DNS allows 63)"
        );
        assert_eq!(why(""), "it is empty");
        assert_eq!(why("."), "it is empty");
        assert_eq!(why(".a"), "it has an empty label");
        assert_eq!(why("a..b"), "it has an empty label");
        assert_eq!(why("bad name!"), "' ' is not a DNS name's character");
        assert_eq!(why("*"), "'*' is not a DNS name's character");
        assert_eq!(why("caf\u{e9}"), "'\u{e9}' is not a DNS name's character");
        // A 250-character pod name in namespace prod: labels fit, the whole does not.
        let long = format!("{}.prod", vec!["y".repeat(62); 4].join("."));
        assert!(long.len() > 250);
        assert!(
            why(&long).ends_with("under demo.overlay (DNS allows 253)"),
            "{}",
            why(&long)
        );
        // The network's domain counts: what fits under a short one may not under a long one.
        let name = vec!["n".repeat(60); 3].join(".");
        assert_eq!(dns_unservable(&name, "demo"), None);
        assert!(dns_unservable(&name, &"x".repeat(70)).is_some());
    }

    #[test]
    fn dns_domain_is_the_lower_cased_network_name() {
        assert_eq!(dns_domain("Demo"), "demo.overlay");
    }

    #[test]
    fn conflist_names() {
        assert_eq!(conflist_file("demo"), "60-cni-overlay-demo.conflist");
        assert_eq!(
            network_of_conflist("60-cni-overlay-demo.conflist"),
            Some("demo")
        );
        for other in [
            "60-cni-overlay-.conflist",
            "60-cni-overlay-demo.conf",
            "10-other.conflist",
            ".60-cni-overlay-demo.conflist.tmp",
        ] {
            assert_eq!(network_of_conflist(other), None, "{other}");
        }
    }
}
