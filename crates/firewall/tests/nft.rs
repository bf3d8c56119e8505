//! The firewall against the real `nft` and kernel, each test inside a throwaway network namespace
//! (never the machine's own). Needs root: without it the tests fail.

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use firewall::{
    parse_tag, tag, BridgeRules, ContainerRules, Error, Firewall, Mapping, OverlayIsolation,
    Protocol,
};
use netops::{create_named_netns, delete_named_netns};

static SEQ: AtomicUsize = AtomicUsize::new(0);

const MASQ: BridgeRules = BridgeRules {
    masquerade: true,
    isolate: false,
};

/// Runs `f` on a thread inside a fresh namespace (so `nft` runs there), then removes it.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce(&str) -> T + Send + 'static) -> T {
    assert!(
        nix_root(),
        "the firewall tests create network namespaces and must run as root"
    );
    let name = format!(
        "fwt-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let ns = create_named_netns(&name).expect("create namespace");
    let inner = name.clone();
    let result =
        ns.run(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&inner))));
    drop(ns);
    delete_named_netns(&name).expect("delete namespace");
    match result.expect("run in namespace") {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn nix_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// The ruleset as `nft list ruleset` prints it in the namespace `f` runs in.
fn ruleset() -> String {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mapping(proto: Protocol, host_port: u16, addr: &str, port: u16) -> Mapping {
    Mapping {
        protocol: proto,
        host_ip: None,
        host_port,
        container_addr: addr.parse().unwrap(),
        container_port: port,
    }
}

#[test]
fn bridge_nat_is_idempotent_and_leaves_nothing_when_removed() {
    in_fresh_netns(|_| {
        let fw = Firewall::new();
        assert!(ruleset().trim().is_empty());
        let subnet = "172.18.0.5/16".parse().unwrap();
        fw.ensure_bridge_rules("gwb0", subnet, MASQ).unwrap();
        let once = ruleset();
        fw.ensure_bridge_rules("gwb0", subnet, MASQ).unwrap();
        assert_eq!(once, ruleset(), "a second ensure changed the ruleset");
        for expected in [
            "table inet cni_gwbridge",
            "fib daddr type local jump published",
            "ip saddr 172.18.0.0/16 oifname != \"gwb0\" masquerade comment \"bridge gwb0 masquerade 172.18.0.0/16\"",
            "ip saddr 172.18.0.0/16 oifname \"gwb0\" ct status dnat masquerade",
            "oifname \"gwb0\" ct status dnat fib saddr type local masquerade",
            "ip daddr 127.0.0.0/8 return",
        ] {
            assert!(once.contains(expected), "missing {expected:?} in\n{once}");
        }
        assert!(fw
            .missing_bridge_rules("gwb0", subnet, MASQ)
            .unwrap()
            .is_empty());
        // A v6 subnet on the same bridge adds its own rules.
        fw.ensure_bridge_rules("gwb0", "fd00:18::/64".parse().unwrap(), MASQ)
            .unwrap();
        assert!(ruleset().contains("ip6 saddr fd00:18::/64 oifname != \"gwb0\" masquerade"));
        assert_eq!(
            fw.missing_bridge_rules(
                "gwb1",
                subnet,
                BridgeRules {
                    masquerade: false,
                    isolate: false
                }
            )
            .unwrap(),
            vec![
                "bridge gwb1 hairpin 172.18.0.0/16".to_string(),
                "bridge gwb1 local".to_string()
            ]
        );
        // Options changed in the configuration: the bridge follows, its other subnet untouched.
        let isolated_no_masq = BridgeRules {
            masquerade: false,
            isolate: true,
        };
        fw.ensure_bridge_rules("gwb0", subnet, isolated_no_masq)
            .unwrap();
        let text = ruleset();
        assert!(!text.contains("masquerade 172.18.0.0/16"), "{text}");
        assert!(text.contains("icc-drop") && text.contains("masquerade fd00:18::/64"));
        fw.ensure_bridge_rules("gwb0", subnet, MASQ).unwrap();
        let text = ruleset();
        assert!(
            !text.contains("icc-"),
            "icc rules left after icc went on:\n{text}"
        );
        assert!(text.contains("masquerade 172.18.0.0/16"));
        assert!(fw
            .missing_bridge_rules("gwb0", subnet, MASQ)
            .unwrap()
            .is_empty());
        assert_eq!(fw.remove_bridge_rules("gwb0").unwrap(), 5);
        assert!(ruleset().trim().is_empty(), "left behind:\n{}", ruleset());
        assert_eq!(fw.remove_bridge_rules("gwb0").unwrap(), 0);
    });
}

#[test]
fn one_port_on_two_host_addresses_is_two_mappings() {
    in_fresh_netns(|_| {
        let fw = Firewall::new();
        let on = |ip: &str, addr: &str| {
            let mut m = mapping(Protocol::Tcp, 8080, addr, 80);
            m.host_ip = Some(ip.parse().unwrap());
            m
        };
        let (a, b, c) = (
            tag("demo", "aaaa", "eth1"),
            tag("demo", "bbbb", "eth1"),
            tag("demo", "cccc", "eth1"),
        );
        fw.add_container(&a, &[], &[on("192.168.205.10", "172.18.0.2")])
            .unwrap();
        // Another address of the host: free, as with Docker.
        fw.add_container(&b, &[], &[on("192.168.205.20", "172.18.0.3")])
            .unwrap();
        let ip = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            fw.holder_of(Protocol::Tcp, ip("192.168.205.20"), 8080)
                .unwrap(),
            Some(b.clone())
        );
        assert_eq!(
            fw.holder_of(Protocol::Tcp, ip("192.168.205.30"), 8080)
                .unwrap(),
            None
        );
        // The same address again, or every address: taken.
        let before = ruleset();
        for taken in [
            on("192.168.205.10", "172.18.0.4"),
            mapping(Protocol::Tcp, 8080, "172.18.0.4", 80),
        ] {
            let err = fw.add_container(&c, &[], &[taken]).unwrap_err();
            assert!(matches!(err, Error::PortInUse { port: 8080, .. }), "{err}");
        }
        assert_eq!(ruleset(), before, "a refused mapping changed the ruleset");
        assert!(fw.holder_of(Protocol::Tcp, None, 8080).unwrap().is_some());
    });
}

#[test]
fn port_mappings_round_trip_conflict_and_removal() {
    in_fresh_netns(|_| {
        let fw = Firewall::new();
        fw.ensure_bridge_rules("gwb0", "172.18.0.0/16".parse().unwrap(), MASQ)
            .unwrap();
        let a = tag("demo", "aaaa", "eth1");
        let b = tag("demo", "bbbb", "eth1");
        let mut host_ip = mapping(Protocol::Udp, 5353, "172.18.0.2", 53);
        host_ip.host_ip = Some("192.168.205.10".parse().unwrap());
        let a_maps = vec![
            mapping(Protocol::Tcp, 8080, "172.18.0.2", 80),
            mapping(Protocol::Tcp, 8080, "fd00:18::2", 80),
            host_ip,
        ];
        let a_addrs: Vec<IpAddr> =
            vec!["172.18.0.2".parse().unwrap(), "fd00:18::2".parse().unwrap()];
        fw.add_container(&a, &a_addrs, &a_maps).unwrap();
        let text = ruleset();
        assert!(text.contains("meta nfproto ipv4 tcp dport 8080 dnat ip to 172.18.0.2:80 comment \"demo:aaaa/eth1\""), "{text}");
        assert!(
            text.contains("ip saddr 172.18.0.2 return comment \"demo:aaaa/eth1\""),
            "{text}"
        );
        assert_eq!(
            fw.container(&a).unwrap(),
            Some(ContainerRules {
                addresses: a_addrs.clone(),
                mappings: a_maps.clone()
            })
        );
        assert_eq!(fw.container(&b).unwrap(), None);
        assert_eq!(
            fw.holder_of(Protocol::Udp, None, 5353).unwrap(),
            Some(a.clone())
        );
        assert_eq!(fw.holder_of(Protocol::Tcp, None, 5353).unwrap(), None);
        assert!(text.contains("dnat ip6 to [fd00:18::2]:80"), "{text}");
        assert!(
            text.contains("ip daddr 192.168.205.10 udp dport 5353 dnat ip to 172.18.0.2:53"),
            "{text}"
        );

        let listed: Vec<Mapping> = fw
            .list_port_mappings()
            .unwrap()
            .into_iter()
            .map(|p| {
                assert_eq!(p.tag, a);
                p.mapping
            })
            .collect();
        assert_eq!(listed, a_maps);

        // Same port and protocol for someone else, even on another address family: refused,
        // naming port and holder, and nothing changes.
        let before = ruleset();
        let err = fw
            .add_container(
                &b,
                &[],
                &[
                    mapping(Protocol::Udp, 9999, "172.18.0.3", 1),
                    mapping(Protocol::Tcp, 8080, "172.18.0.3", 80),
                ],
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::PortInUse { port: 8080, protocol: Protocol::Tcp, holder } if holder == "demo:aaaa/eth1"),
            "{err}"
        );
        let cni: cni::CniError = err.into();
        assert_eq!(cni.code, 106);
        assert!(
            cni.msg.contains("8080/tcp") && cni.msg.contains("demo:aaaa/eth1"),
            "{}",
            cni.msg
        );
        assert_eq!(before, ruleset());
        // Twice in one request for different targets: refused too.
        assert!(fw
            .add_container(
                &b,
                &[],
                &[
                    mapping(Protocol::Tcp, 7, "172.18.0.3", 1),
                    mapping(Protocol::Tcp, 7, "172.18.0.3", 2)
                ]
            )
            .is_err());
        assert_eq!(before, ruleset());
        // Another protocol on the same port is free.
        fw.add_container(
            &b,
            &["172.18.0.3".parse().unwrap()],
            &[mapping(Protocol::Udp, 8080, "172.18.0.3", 80)],
        )
        .unwrap();
        assert_eq!(
            fw.tags().unwrap().into_iter().collect::<Vec<_>>(),
            vec![a.clone(), b.clone()]
        );

        assert_eq!(fw.remove_tagged(&a).unwrap(), 5);
        assert_eq!(fw.remove_tagged(&a).unwrap(), 0);
        let left = fw.list_port_mappings().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].tag, b);
        assert_eq!(fw.remove_tagged(&b).unwrap(), 2);
        assert!(
            fw.exists().unwrap(),
            "the bridge rules still need the table"
        );
        fw.remove_bridge_rules("gwb0").unwrap();
        assert!(!fw.exists().unwrap());
        assert!(ruleset().trim().is_empty());
    });
}

#[test]
fn a_damaged_base_is_repaired() {
    in_fresh_netns(|_| {
        let fw = Firewall::new();
        fw.add_container(
            &tag("n", "c", "eth1"),
            &[],
            &[mapping(Protocol::Tcp, 80, "172.18.0.2", 80)],
        )
        .unwrap();
        let ok = Command::new("nft")
            .args(["flush", "chain", "inet", "cni_gwbridge", "output"])
            .status()
            .unwrap();
        assert!(ok.success());
        let subnet = "172.18.0.0/16".parse().unwrap();
        assert!(fw
            .missing_bridge_rules("gwb0", subnet, MASQ)
            .unwrap()
            .contains(&"gwbridge-egress base".to_string()));
        fw.ensure_bridge_rules("gwb0", subnet, MASQ).unwrap();
        assert!(fw
            .missing_bridge_rules("gwb0", subnet, MASQ)
            .unwrap()
            .is_empty());
        let text = ruleset();
        assert_eq!(
            text.matches("fib daddr type local jump published").count(),
            2,
            "{text}"
        );
        fw.remove_tagged(&tag("n", "c", "eth1")).unwrap();
        fw.remove_bridge_rules("gwb0").unwrap();
        assert!(ruleset().trim().is_empty());
    });
}

#[test]
fn tags_read_back_and_long_ids_get_short_stable_tags() {
    assert_eq!(tag("demo", "abc", "eth1"), "demo:abc/eth1");
    assert_eq!(
        parse_tag("demo:abc/eth1"),
        Some(("demo", Some("abc"), "eth1"))
    );
    assert_eq!(parse_tag("bridge gwb0 local"), None);
    let long = "a".repeat(200);
    let t = tag("demo", &long, "eth1");
    assert!(t.len() <= 128, "{t}");
    assert_eq!(t, tag("demo", &long, "eth1"));
    assert_ne!(t, tag("demo", &long, "eth2"));
    assert_eq!(parse_tag(&t), Some(("demo", None, "eth1")));
}

#[test]
fn icc_rules_keep_their_order_and_go_with_the_bridge() {
    in_fresh_netns(|_| {
        let fw = Firewall::new();
        let subnet = "172.18.0.0/16".parse().unwrap();
        let isolated = BridgeRules {
            masquerade: true,
            isolate: true,
        };
        fw.ensure_bridge_rules("gwb0", subnet, isolated).unwrap();
        let text = ruleset();
        let accept = "iifname \"gwb0\" oifname \"gwb0\" ct status dnat accept comment \"bridge gwb0 icc-published\"";
        let drop = "iifname \"gwb0\" oifname \"gwb0\" drop comment \"bridge gwb0 icc-drop\"";
        assert!(text.contains(accept) && text.contains(drop), "{text}");
        assert!(text.find(accept) < text.find(drop));
        // The accept rule deleted by hand: both come back, in order.
        let handle = Command::new("nft")
            .args(["-a", "list", "chain", "inet", "cni_gwbridge", "forward"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&handle.stdout).into_owned();
        let line = listing
            .lines()
            .find(|l| l.contains("icc-published"))
            .unwrap();
        let h = line.rsplit("handle ").next().unwrap().trim().to_string();
        assert!(Command::new("nft")
            .args([
                "delete",
                "rule",
                "inet",
                "cni_gwbridge",
                "forward",
                "handle",
                &h
            ])
            .status()
            .unwrap()
            .success());
        assert_eq!(
            fw.missing_bridge_rules("gwb0", subnet, isolated).unwrap(),
            vec!["bridge gwb0 icc-published".to_string()]
        );
        fw.ensure_bridge_rules("gwb0", subnet, isolated).unwrap();
        let text = ruleset();
        assert_eq!(text.matches("icc-drop").count(), 1, "{text}");
        assert!(text.find(accept) < text.find(drop), "{text}");
        assert_eq!(fw.remove_bridge_rules("gwb0").unwrap(), 5);
        assert!(ruleset().trim().is_empty());
    });
}

#[test]
fn overlay_isolation_is_idempotent_and_its_table_goes_with_the_last_bridge() {
    in_fresh_netns(|_| {
        let iso = OverlayIsolation::new();
        assert_eq!(iso.table(), "cni_overlay");
        // gwbridge-egress's table alongside: never touched by the isolation.
        let fw = Firewall::new();
        fw.ensure_bridge_rules("gwb0", "172.18.0.0/16".parse().unwrap(), MASQ)
            .unwrap();
        let gwbridge_only = ruleset();
        assert!(!iso.exists().unwrap());
        assert!(!iso.is_isolated("ovbr4000").unwrap());

        iso.add_bridge("ovbr4000").unwrap();
        let once = ruleset();
        iso.add_bridge("ovbr4000").unwrap();
        assert_eq!(once, ruleset(), "a second add changed the ruleset");
        let accept = "iifname != \"ovbr4000\" oifname \"ovbr4000\" ct status dnat accept comment \"bridge ovbr4000 isolation dnat\"";
        let drop = "iifname != \"ovbr4000\" oifname \"ovbr4000\" counter packets 0 bytes 0 drop comment \"bridge ovbr4000 isolation drop\"";
        assert!(once.contains("table inet cni_overlay"), "{once}");
        assert!(
            once.contains("type filter hook forward priority filter; policy accept;"),
            "{once}"
        );
        assert!(once.contains(accept) && once.contains(drop), "{once}");
        assert!(once.find(accept) < once.find(drop), "{once}");
        assert!(iso.is_isolated("ovbr4000").unwrap());

        // A bridge whose name extends another's is a bridge of its own.
        iso.add_bridge("ovbr40").unwrap();
        assert!(iso.is_isolated("ovbr40").unwrap());
        assert_eq!(iso.remove_bridge("ovbr40").unwrap(), 2);
        assert_eq!(iso.remove_bridge("ovbr40").unwrap(), 0);
        assert_eq!(once, ruleset());

        assert_eq!(iso.remove_bridge("ovbr4000").unwrap(), 2);
        assert!(!iso.exists().unwrap(), "the table outlived its last rule");
        assert_eq!(gwbridge_only, ruleset());
        assert_eq!(iso.remove_bridge("ovbr4000").unwrap(), 0);
        fw.remove_bridge_rules("gwb0").unwrap();
        assert!(ruleset().trim().is_empty());
    });
}

#[test]
fn overlay_isolation_replaces_a_damaged_set_and_removes_an_empty_table() {
    in_fresh_netns(|_| {
        let iso = OverlayIsolation::new();
        iso.add_bridge("ovbr1").unwrap();
        iso.add_bridge("ovbr2").unwrap();
        // ovbr1's accept deleted by hand: the drop alone would break NodePorts. Both come back, in
        // order, and ovbr2's rules stay as they were.
        let listing = Command::new("nft")
            .args(["-a", "list", "chain", "inet", "cni_overlay", "forward"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        let h = listing
            .lines()
            .find(|l| l.contains("bridge ovbr1 isolation dnat"))
            .unwrap()
            .rsplit("handle ")
            .next()
            .unwrap()
            .trim()
            .to_string();
        assert!(Command::new("nft")
            .args([
                "delete",
                "rule",
                "inet",
                "cni_overlay",
                "forward",
                "handle",
                &h
            ])
            .status()
            .unwrap()
            .success());
        assert!(!iso.is_isolated("ovbr1").unwrap());
        assert!(iso.is_isolated("ovbr2").unwrap());
        iso.add_bridge("ovbr1").unwrap();
        assert!(iso.is_isolated("ovbr1").unwrap() && iso.is_isolated("ovbr2").unwrap());
        let text = ruleset();
        assert_eq!(text.matches("bridge ovbr1 isolation").count(), 2, "{text}");
        assert_eq!(text.matches("bridge ovbr2 isolation").count(), 2, "{text}");

        // The chain emptied by hand: removing a bridge with no rules left still deletes the table.
        assert!(Command::new("nft")
            .args(["flush", "chain", "inet", "cni_overlay", "forward"])
            .status()
            .unwrap()
            .success());
        assert_eq!(iso.remove_bridge("ovbr1").unwrap(), 0);
        assert!(ruleset().trim().is_empty(), "left behind:\n{}", ruleset());
    });
}
