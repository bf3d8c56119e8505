//! Tags: the comment that marks a container's rules, `<network>:<container id>/<ifname>`, and
//! reading one back.

/// nft refuses comments longer than this.
pub(crate) const MAX_COMMENT: usize = 128;

/// The comment that marks a container's rules: `<network>:<container id>/<ifname>`. Network names
/// and container ids hold neither `:` nor `/` (nor spaces), so a tag is read back unambiguously and
/// never looks like a bridge or base comment. When that is longer than nft allows, the container id
/// is shortened with a stable hash (marked `~`, a character ids never contain).
pub fn tag(network: &str, container_id: &str, ifname: &str) -> String {
    let full = format!("{network}:{container_id}/{ifname}");
    if full.len() <= MAX_COMMENT {
        return full;
    }
    let hash = fnv1a64(full.as_bytes());
    let room = MAX_COMMENT
        .saturating_sub(network.len() + ifname.len() + 19)
        .max(8);
    let keep: String = container_id.chars().take(room).collect();
    let short = format!("{network}:{keep}~{hash:016x}/{ifname}");
    // A network name long enough to overflow on its own is cut too; the hash keeps tags distinct.
    short.chars().take(MAX_COMMENT).collect()
}

/// The parts of a tag: (network, container id, ifname). The container id is None when the tag had to
/// be shortened (the full id cannot be recovered).
pub fn parse_tag(tag: &str) -> Option<(&str, Option<&str>, &str)> {
    let (network, rest) = tag.split_once(':')?;
    let (container_id, ifname) = rest.rsplit_once('/')?;
    if network.is_empty() || container_id.is_empty() || ifname.is_empty() {
        return None;
    }
    let id = (!container_id.contains('~')).then_some(container_id);
    Some((network, id, ifname))
}

/// Whether `tag` is the tag of an attachment of (`container_id`, `ifname`) on any network: the
/// network is read back from the tag and the tag made again, so that a shortened one (whose id
/// cannot be read back) is recognised exactly too.
pub fn is_tag_of(tag: &str, container_id: &str, ifname: &str) -> bool {
    parse_tag(tag).is_some_and(|(network, _, _)| self::tag(network, container_id, ifname) == tag)
}

/// Whether a rule's comment is a container's tag. The bridge comments of an IPv6 subnet
/// (`bridge br0 masquerade fd00::/64`) would parse as a tag; the space tells them apart.
pub(crate) fn is_tag(comment: &str) -> bool {
    parse_tag(comment).is_some() && !comment.contains(' ')
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container id as runtimes make them: 64 hex digits.
    const ID: &str = "8f3c1e2d4b5a69788f3c1e2d4b5a69788f3c1e2d4b5a69788f3c1e2d4b5a6978";

    #[test]
    fn a_tag_is_network_id_and_interface_and_reads_back() {
        let t = tag("demo", ID, "eth1");
        assert_eq!(t, format!("demo:{ID}/eth1"));
        assert_eq!(parse_tag(&t), Some(("demo", Some(ID), "eth1")));
        assert!(is_tag(&t));
    }

    #[test]
    fn identifier_punctuation_and_interface_names_survive_the_round_trip() {
        // libcni allows `_`, `.` and `-` in network names and container ids; interface names
        // may hold dots (VLANs) and, being at most 15 bytes, anything but `/`, `:` and spaces.
        let cases = [
            ("my-net_1.prod", "a.b-c_d", "eth1.100"),
            ("n", "x", "e"),
            ("N3t", "ID-with-CAPS", "vethé"),
        ];
        for (net, id, ifname) in cases {
            let t = tag(net, id, ifname);
            assert_eq!(parse_tag(&t), Some((net, Some(id), ifname)), "{t}");
            assert!(is_tag(&t), "{t}");
        }
    }

    #[test]
    fn an_id_with_a_colon_or_slash_still_reads_back() {
        // The network is cut at the first `:` and the interface at the last `/`: an id holding
        // either (which CNI forbids anyway) cannot shift the other two parts.
        let t = tag("net", "odd:id/with/slashes", "eth0");
        assert_eq!(
            parse_tag(&t),
            Some(("net", Some("odd:id/with/slashes"), "eth0"))
        );
    }

    #[test]
    fn a_tag_is_recognised_as_its_attachments_on_any_network() {
        let long_net = "n".repeat(60);
        for net in ["front", "back", long_net.as_str()] {
            let t = tag(net, ID, "gwb0");
            assert!(is_tag_of(&t, ID, "gwb0"), "{t}");
            assert!(!is_tag_of(&t, ID, "gwb1"), "{t}");
            assert!(!is_tag_of(&t, &ID[1..], "gwb0"), "{t}");
            // Another container whose id shares the kept part of a shortened tag.
            let mut other = ID.to_string();
            other.replace_range(63.., "0");
            assert!(!is_tag_of(&t, &other, "gwb0"), "{t}");
        }
        assert!(parse_tag(&tag(&long_net, ID, "gwb0")).unwrap().1.is_none());
        assert!(!is_tag_of("bridge br0 masquerade 10.0.0.0/8", ID, "gwb0"));
    }

    #[test]
    fn tags_of_different_attachments_differ() {
        let tags = [
            tag("a", "c1", "eth1"),
            tag("b", "c1", "eth1"),
            tag("a", "c2", "eth1"),
            tag("a", "c1", "eth2"),
        ];
        let distinct: std::collections::BTreeSet<_> = tags.iter().collect();
        assert_eq!(distinct.len(), tags.len(), "{tags:?}");
    }

    #[test]
    fn a_tag_of_exactly_the_limit_is_kept_whole() {
        let id = "i".repeat(MAX_COMMENT - "net:/eth0".len());
        let t = tag("net", &id, "eth0");
        assert_eq!(t.len(), MAX_COMMENT);
        assert_eq!(parse_tag(&t), Some(("net", Some(id.as_str()), "eth0")));
    }

    #[test]
    fn one_byte_over_the_limit_shortens_the_id_with_a_hash() {
        let id = "i".repeat(MAX_COMMENT - "net:/eth0".len() + 1);
        let t = tag("net", &id, "eth0");
        assert_eq!(
            t.len(),
            MAX_COMMENT,
            "the shortened tag uses all the room there is"
        );
        let (network, short_id, ifname) = parse_tag(&t).expect("still a tag");
        assert_eq!((network, short_id, ifname), ("net", None, "eth0"));
        assert!(is_tag(&t));
        let (kept, hash) = t["net:".len()..t.len() - "/eth0".len()]
            .split_once('~')
            .expect("marked ~");
        assert!(id.starts_with(kept), "the id's beginning is kept: {kept}");
        assert_eq!(hash.len(), 16);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    }

    #[test]
    fn shortened_tags_are_stable_and_tell_long_ids_apart() {
        let long = |last: char| format!("{}{last}", "c".repeat(300));
        let a = tag("net", &long('a'), "eth1");
        assert_eq!(
            a,
            tag("net", &long('a'), "eth1"),
            "the same attachment, the same tag"
        );
        // The ids differ only beyond what is kept: the hash tells them apart.
        assert_ne!(a, tag("net", &long('b'), "eth1"));
        // The hash covers the network and interface too.
        let hash_of = |t: &str| {
            let (_, rest) = t.split_once('~').expect("shortened");
            rest.rsplit_once('/').expect("tag").0.to_string()
        };
        assert_ne!(hash_of(&a), hash_of(&tag("net", &long('a'), "eth2")));
        assert_ne!(hash_of(&a), hash_of(&tag("ne2", &long('a'), "eth1")));
    }

    #[test]
    fn long_networks_and_interfaces_leave_the_id_at_least_eight_characters() {
        // The longest network and interface whose tag keeps all its parts: 27 bytes go to `:`,
        // `~`, the hash, `/` and the 8 characters of id.
        let network = "n".repeat(MAX_COMMENT - 27 - 15);
        let ifname = "i".repeat(15);
        let t = tag(&network, ID, &ifname);
        assert_eq!(t.len(), MAX_COMMENT);
        assert_eq!(
            parse_tag(&t),
            Some((network.as_str(), None, ifname.as_str()))
        );
        assert!(t.contains(&format!(":{}~", &ID[..8])), "{t}");
    }

    #[test]
    fn no_tag_is_ever_longer_than_nft_allows() {
        for network_len in [1, 20, 64, 100, 101, 102, 127, 128, 200] {
            for id_len in [1, 64, 110, 128, 300] {
                let network = "n".repeat(network_len);
                let id = "c".repeat(id_len);
                let t = tag(&network, &id, "eth0");
                assert!(
                    t.len() <= MAX_COMMENT,
                    "{network_len}/{id_len}: {}",
                    t.len()
                );
            }
        }
    }

    #[test]
    fn incomplete_tags_are_not_read() {
        for bad in [
            "",
            "net",
            "net:id",
            "net/eth0",
            ":id/eth0",
            "net:/eth0",
            "net:id/",
            "gwbridge-egress base",
        ] {
            assert_eq!(parse_tag(bad), None, "{bad:?}");
            assert!(!is_tag(bad), "{bad:?}");
        }
    }

    #[test]
    fn bridge_comments_are_never_tags() {
        // With an IPv6 subnet a bridge comment holds both `:` and `/`.
        for comment in [
            "bridge cni_gwbridge masquerade fd00:1::/64",
            "bridge cni_gwbridge hairpin fd00:1::/64",
            "bridge cni_gwbridge masquerade 172.18.0.0/16",
            "bridge cni_gwbridge local",
            "bridge ovbr4000 isolation drop",
        ] {
            assert!(!is_tag(comment), "{comment}");
        }
        assert!(parse_tag("bridge b masquerade fd00:1::/64").is_some());
    }

    #[test]
    fn the_hash_is_fnv_1a_64() {
        // Published test vectors: changing the hash would orphan the rules of every container
        // with a shortened tag.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
