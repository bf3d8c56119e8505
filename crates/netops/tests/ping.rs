//! End to end: namespaces joined with this crate's API actually pass traffic.

mod common;

use std::net::IpAddr;

use common::TestNs;
use ipnetwork::IpNetwork;
use netops::{Link, Netlink};

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ping(from: &TestNs, to: &str) -> bool {
    from.exec_status(&["ping", "-c1", "-W1", to]).0
}

/// A container: a veth whose host end is enslaved to `bridge`, with `cidr` on eth0 and a
/// default route via `gw`.
async fn attach(
    hnl: &Netlink,
    bridge: &Link,
    c: &TestNs,
    id: &str,
    cidr: &str,
    gw: &str,
    mac: [u8; 6],
) -> Link {
    let host_name = format!("veth-{id}");
    let (h, eth0) = hnl
        .create_veth(&host_name, "eth0", &c.ns, 1450, Some(mac))
        .await
        .unwrap();
    hnl.set_master(h.index, bridge.index).await.unwrap();
    let cnl = Netlink::in_netns(&c.ns).await.unwrap();
    cnl.add_address(eth0.index, net(cidr)).await.unwrap();
    cnl.add_route(net("0.0.0.0/0"), Some(ip(gw)), eth0.index)
        .await
        .unwrap();
    h
}

#[tokio::test]
async fn ping_across_a_bridge_and_port_isolation() {
    let host = TestNs::new("ph");
    let c1 = TestNs::new("p1");
    let c2 = TestNs::new("p2");
    let hnl = Netlink::in_netns(&host.ns).await.unwrap();

    let br = hnl.ensure_bridge("br0", Some(1450), None).await.unwrap();
    hnl.add_address(br.index, net("10.9.0.1/24")).await.unwrap();
    let p1 = attach(
        &hnl,
        &br,
        &c1,
        "c1",
        "10.9.0.2/24",
        "10.9.0.1",
        [2, 0, 10, 9, 0, 2],
    )
    .await;
    let p2 = attach(
        &hnl,
        &br,
        &c2,
        "c2",
        "10.9.0.3/24",
        "10.9.0.1",
        [2, 0, 10, 9, 0, 3],
    )
    .await;

    assert!(ping(&c1, "10.9.0.3"), "c1 cannot reach c2 over the bridge");
    assert!(ping(&c2, "10.9.0.2"), "c2 cannot reach c1 over the bridge");
    assert!(ping(&c1, "10.9.0.1"), "c1 cannot reach the gateway");

    // icc=false: isolated ports no longer reach each other, but still reach the bridge.
    hnl.set_port_isolated(p1.index, true).await.unwrap();
    hnl.set_port_isolated(p2.index, true).await.unwrap();
    assert!(
        !ping(&c1, "10.9.0.3"),
        "isolated ports still talk to each other"
    );
    assert!(
        ping(&c1, "10.9.0.1"),
        "an isolated port cannot reach the gateway"
    );
}

/// One overlay host: bridge + VXLAN (learning off, proxy on) + one container.
struct OverlayHost {
    ns: TestNs,
    nl: Netlink,
    vxlan: Link,
}

#[tokio::test]
async fn ping_across_a_vxlan_overlay_with_static_fdb_and_neighbours() {
    let a = TestNs::new("oa");
    let b = TestNs::new("ob");
    let ca = TestNs::new("oca");
    let cb = TestNs::new("ocb");
    let anl = Netlink::in_netns(&a.ns).await.unwrap();
    let bnl = Netlink::in_netns(&b.ns).await.unwrap();

    // Underlay: a veth between the two "hosts".
    let (ula, ulb) = anl
        .create_veth("ul0", "ul0", &b.ns, 1500, None)
        .await
        .unwrap();
    anl.add_address(ula.index, net("192.0.2.1/24"))
        .await
        .unwrap();
    bnl.add_address(ulb.index, net("192.0.2.2/24"))
        .await
        .unwrap();

    let mut hosts = Vec::new();
    for (ns, nl, vtep, ul, container, id, cidr, mac) in [
        (
            a,
            anl,
            "192.0.2.1",
            ula.index,
            &ca,
            "ca",
            "10.10.0.2/24",
            [2, 0, 10, 10, 0, 2],
        ),
        (
            b,
            bnl,
            "192.0.2.2",
            ulb.index,
            &cb,
            "cb",
            "10.10.0.3/24",
            [2, 0, 10, 10, 0, 3],
        ),
    ] {
        // The underlay lookup the plugin does: which link holds the configured VTEP address?
        let underlay = nl
            .link_with_address(ip(vtep))
            .await
            .unwrap()
            .expect("underlay");
        assert_eq!(underlay.index, ul);
        let br = nl.ensure_bridge("br0", Some(1450), None).await.unwrap();
        let vx = nl
            .ensure_vxlan("vx4097", 4097, 4789, ip(vtep), underlay.index, 1450)
            .await
            .unwrap();
        nl.set_master(vx.index, br.index).await.unwrap();
        attach(&nl, &br, container, id, cidr, "10.10.0.1", mac).await;
        hosts.push(OverlayHost { ns, nl, vxlan: vx });
    }

    // What the plugin publishes through etcd: each host learns the other's container.
    let peers = [
        ("10.10.0.3", [2, 0, 10, 10, 0, 3], "192.0.2.2"),
        ("10.10.0.2", [2, 0, 10, 10, 0, 2], "192.0.2.1"),
    ];
    for (host, (cip, cmac, vtep)) in hosts.iter().zip(peers) {
        host.nl
            .fdb_add(host.vxlan.index, cmac, ip(vtep))
            .await
            .unwrap();
        host.nl
            .neigh_add(host.vxlan.index, ip(cip), cmac)
            .await
            .unwrap();
    }

    assert!(
        ping(&ca, "10.10.0.3"),
        "container on host A cannot reach the one on host B"
    );
    assert!(
        ping(&cb, "10.10.0.2"),
        "container on host B cannot reach the one on host A"
    );
    // The VXLAN learned nothing by itself: only the static entries are there.
    for host in &hosts {
        let entries = host.nl.fdb_entries(host.vxlan.index).await.unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(host
            .ns
            .exec(&["ip", "-d", "link", "show", "vx4097"])
            .contains("nolearning"));
    }

    // Withdraw host B's container from host A: traffic stops.
    hosts[0]
        .nl
        .fdb_del(hosts[0].vxlan.index, [2, 0, 10, 10, 0, 3], ip("192.0.2.2"))
        .await
        .unwrap();
    hosts[0]
        .nl
        .neigh_del(hosts[0].vxlan.index, ip("10.10.0.3"))
        .await
        .unwrap();
    ca.exec(&["ip", "neigh", "flush", "dev", "eth0"]);
    assert!(
        !ping(&ca, "10.10.0.3"),
        "traffic still flows after the entries were withdrawn"
    );
}
