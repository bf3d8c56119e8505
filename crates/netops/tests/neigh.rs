//! FDB entries on a VXLAN device and permanent neighbour entries.

mod common;

use std::net::IpAddr;

use common::{mac_text, TestNs};
use netops::{Link, Netlink};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn vxlan(t: &TestNs, nl: &Netlink) -> Link {
    t.add_underlay("ul0", "192.0.2.1/24");
    let ul = nl.link("ul0").await.unwrap().unwrap();
    nl.ensure_vxlan("vx100", 100, 4789, ip("192.0.2.1"), ul.index, 1450)
        .await
        .unwrap()
}

#[tokio::test]
async fn fdb_entries_round_trip() {
    let t = TestNs::new("fdb");
    let nl = Netlink::in_netns(&t.ns).await.unwrap();
    let vx = vxlan(&t, &nl).await;
    let mac = [0x02, 0x42, 0x0a, 0x00, 0x00, 0x05];

    assert!(nl.fdb_entries(vx.index).await.unwrap().is_empty());
    nl.fdb_add(vx.index, mac, ip("192.0.2.2")).await.unwrap();
    nl.fdb_add(vx.index, mac, ip("192.0.2.2")).await.unwrap();
    assert_eq!(
        nl.fdb_entries(vx.index).await.unwrap(),
        vec![(mac, ip("192.0.2.2"))]
    );
    let shown = t.exec(&["bridge", "fdb", "show", "dev", "vx100"]);
    assert!(
        shown.contains(&format!("{} dst 192.0.2.2 self permanent", mac_text(&mac))),
        "{shown}"
    );

    // The container moved to another host: the entry is repointed, not duplicated.
    nl.fdb_add(vx.index, mac, ip("192.0.2.3")).await.unwrap();
    assert_eq!(
        nl.fdb_entries(vx.index).await.unwrap(),
        vec![(mac, ip("192.0.2.3"))]
    );
    assert!(t
        .exec(&["bridge", "fdb", "show", "dev", "vx100"])
        .contains("dst 192.0.2.3 self permanent"));

    // Flood entries keep a list of destinations.
    let zero = [0u8; 6];
    nl.fdb_add(vx.index, zero, ip("192.0.2.2")).await.unwrap();
    nl.fdb_add(vx.index, zero, ip("192.0.2.4")).await.unwrap();
    nl.fdb_add(vx.index, zero, ip("192.0.2.4")).await.unwrap();
    let entries = nl.fdb_entries(vx.index).await.unwrap();
    assert!(
        entries.contains(&(zero, ip("192.0.2.2"))) && entries.contains(&(zero, ip("192.0.2.4"))),
        "{entries:?}"
    );
    assert_eq!(entries.len(), 3, "{entries:?}");

    assert!(nl.fdb_del(vx.index, mac, ip("192.0.2.3")).await.unwrap());
    assert!(!nl.fdb_del(vx.index, mac, ip("192.0.2.3")).await.unwrap());
    assert!(nl.fdb_del(vx.index, zero, ip("192.0.2.2")).await.unwrap());
    assert_eq!(
        nl.fdb_entries(vx.index).await.unwrap(),
        vec![(zero, ip("192.0.2.4"))]
    );
    let shown = t.exec(&["bridge", "fdb", "show", "dev", "vx100"]);
    assert!(!shown.contains(&mac_text(&mac)), "{shown}");

    // An IPv6 underlay: the VXLAN needs an IPv6 local address (an IPv4 VXLAN refuses IPv6
    // destinations with EAFNOSUPPORT), and the kernel clamps its MTU to underlay - 70.
    let err = nl
        .fdb_add(vx.index, mac, ip("fd00:99::2"))
        .await
        .unwrap_err();
    assert_eq!(err.errno(), Some(nix::libc::EAFNOSUPPORT), "{err}");
    t.exec(&["ip", "addr", "add", "fd00:99::1/64", "dev", "ul0", "nodad"]);
    let ul = nl.link("ul0").await.unwrap().unwrap();
    let vx6 = nl
        .ensure_vxlan("vx6", 200, 4789, ip("fd00:99::1"), ul.index, 1450)
        .await
        .unwrap();
    assert_eq!(vx6.mtu, 1430);
    assert!(t
        .exec(&["ip", "-d", "link", "show", "vx6"])
        .contains("local fd00:99::1"));
    nl.fdb_add(vx6.index, mac, ip("fd00:99::2")).await.unwrap();
    assert_eq!(
        nl.fdb_entries(vx6.index).await.unwrap(),
        vec![(mac, ip("fd00:99::2"))]
    );
    assert!(t
        .exec(&["bridge", "fdb", "show", "dev", "vx6"])
        .contains("dst fd00:99::2 self permanent"));

    // Errors name the operation and device.
    let err = nl.fdb_add(999_999, mac, ip("192.0.2.2")).await.unwrap_err();
    assert!(err.to_string().contains("add fdb entry"), "{err}");
}

#[tokio::test]
async fn neighbour_entries_round_trip() {
    let t = TestNs::new("nb");
    let nl = Netlink::in_netns(&t.ns).await.unwrap();
    let vx = vxlan(&t, &nl).await;
    let mac = [0x02, 0x42, 0x0a, 0x00, 0x00, 0x07];
    let mac2 = [0x02, 0x42, 0x0a, 0x00, 0x00, 0x08];

    nl.neigh_add(vx.index, ip("10.5.0.7"), mac).await.unwrap();
    nl.neigh_add(vx.index, ip("10.5.0.7"), mac).await.unwrap();
    nl.neigh_add(vx.index, ip("fd00:5::7"), mac).await.unwrap();
    let entries = nl.neigh_entries(vx.index).await.unwrap();
    assert!(entries.contains(&(ip("10.5.0.7"), mac)), "{entries:?}");
    assert!(entries.contains(&(ip("fd00:5::7"), mac)), "{entries:?}");
    assert_eq!(entries.len(), 2, "{entries:?}");
    let shown = t.exec(&["ip", "neigh", "show", "dev", "vx100"]);
    assert!(
        shown.contains(&format!("10.5.0.7 lladdr {} PERMANENT", mac_text(&mac))),
        "{shown}"
    );

    // Replaced, not duplicated.
    nl.neigh_add(vx.index, ip("10.5.0.7"), mac2).await.unwrap();
    let entries = nl.neigh_entries(vx.index).await.unwrap();
    assert!(entries.contains(&(ip("10.5.0.7"), mac2)), "{entries:?}");
    assert_eq!(entries.len(), 2);

    assert!(nl.neigh_del(vx.index, ip("10.5.0.7")).await.unwrap());
    assert!(!nl.neigh_del(vx.index, ip("10.5.0.7")).await.unwrap());
    assert!(nl.neigh_del(vx.index, ip("fd00:5::7")).await.unwrap());
    assert!(nl.neigh_entries(vx.index).await.unwrap().is_empty());
    assert!(!t
        .exec(&["ip", "neigh", "show", "dev", "vx100"])
        .contains("10.5.0.7"));
}

/// A macvlan child of a bridge, with its MAC made local to the bridge: listed as the bridge's
/// local entry (not the bridge's own address, not the kernel's list of children), reached from
/// a port of the bridge in another namespace, and gone from the list once removed.
#[tokio::test]
async fn macvlan_child_of_a_bridge_with_its_local_entry() {
    let t = TestNs::new("mvbr");
    let nl = Netlink::in_netns(&t.ns).await.unwrap();
    let bridge = nl.ensure_bridge("br0", Some(1500), None).await.unwrap();
    let mac = [0x02, 0x42, 0x0a, 0x00, 0x00, 0x07];

    let child = nl
        .create_macvlan("mv0", bridge.index, mac, 1400, false)
        .await
        .unwrap();
    assert!(
        !child.up && child.mac == Some(mac) && child.mtu == 1400,
        "{child:?}"
    );
    nl.set_up(child.index).await.unwrap();
    let details = t.exec(&["ip", "-d", "link", "show", "mv0"]);
    assert!(details.contains("macvlan mode bridge"), "{details}");
    assert!(details.contains("addrgenmode none"), "{details}");
    // The name is taken: an error naming it, and the first one untouched.
    let err = nl
        .create_macvlan("mv0", bridge.index, mac, 1400, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mv0"), "{err}");

    assert!(nl.bridge_local_macs(&bridge).await.unwrap().is_empty());
    nl.bridge_local_add(bridge.index, mac).await.unwrap();
    nl.bridge_local_add(bridge.index, mac).await.unwrap();
    assert_eq!(nl.bridge_local_macs(&bridge).await.unwrap(), vec![mac]);

    // A peer on a port of the bridge, in a namespace of its own, reaches the child.
    t.exec(&["ip", "addr", "add", "10.9.0.1/24", "dev", "mv0"]);
    let peer = TestNs::new("mvpeer");
    let (port, _) = nl
        .create_veth_on(
            "port0",
            &netops::VethPeer {
                name: "eth0",
                ns: &peer.ns,
                mac: None,
                ipv6: false,
            },
            1400,
            Some(bridge.index),
        )
        .await
        .unwrap();
    nl.set_up(port.index).await.unwrap();
    peer.exec(&["ip", "addr", "add", "10.9.0.2/24", "dev", "eth0"]);
    let (ok, out) = peer.exec_status(&["ping", "-c", "1", "-W", "2", "10.9.0.1"]);
    assert!(ok, "{out}");

    assert!(nl.bridge_local_del(bridge.index, mac).await.unwrap());
    assert!(!nl.bridge_local_del(bridge.index, mac).await.unwrap());
    assert!(nl.bridge_local_macs(&bridge).await.unwrap().is_empty());
    assert!(nl.delete_link("mv0").await.unwrap());
}
