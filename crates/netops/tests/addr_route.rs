//! Addresses, routes, the default-route interface and address lookups.

mod common;

use std::net::IpAddr;

use common::TestNs;
use ipnetwork::IpNetwork;
use netops::Netlink;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn addresses_and_routes_round_trip() {
    let host = TestNs::new("ah");
    let container = TestNs::new("ac");
    let hnl = Netlink::in_netns(&host.ns).await.unwrap();
    let nl = Netlink::in_netns(&container.ns).await.unwrap();
    let (_, eth0) = hnl
        .create_veth("ovaddr0", "eth0", &container.ns, 1500, None)
        .await
        .unwrap();

    nl.add_address(eth0.index, net("10.1.0.2/24"))
        .await
        .unwrap();
    nl.add_address(eth0.index, net("10.1.0.2/24"))
        .await
        .unwrap();
    nl.add_address(eth0.index, net("fd00:1::2/64"))
        .await
        .unwrap();
    let addrs = nl.addresses(eth0.index).await.unwrap();
    assert!(addrs.contains(&net("10.1.0.2/24")), "{addrs:?}");
    assert!(addrs.contains(&net("fd00:1::2/64")), "{addrs:?}");
    assert_eq!(
        addrs.iter().filter(|a| **a == net("10.1.0.2/24")).count(),
        1
    );
    let shown = container.exec(&["ip", "addr", "show", "dev", "eth0"]);
    assert!(shown.contains("inet 10.1.0.2/24"), "{shown}");
    assert!(shown.contains("inet6 fd00:1::2/64"), "{shown}");
    let v6_line = shown
        .lines()
        .find(|l| l.contains("fd00:1::2"))
        .unwrap_or_default();
    assert!(
        v6_line.contains("nodad") && !v6_line.contains("tentative"),
        "IPv6 address goes through DAD: {shown}"
    );

    // Via a gateway, on-link, IPv6, a destination with host bits, and the default route.
    nl.add_route(net("10.2.0.0/16"), Some(ip("10.1.0.1")), eth0.index)
        .await
        .unwrap();
    nl.add_route(net("10.2.0.0/16"), Some(ip("10.1.0.1")), eth0.index)
        .await
        .unwrap();
    nl.add_route(net("10.3.0.0/24"), None, eth0.index)
        .await
        .unwrap();
    nl.add_route(net("fd00:2::/64"), Some(ip("fd00:1::1")), eth0.index)
        .await
        .unwrap();
    nl.add_route(net("10.4.0.9/24"), None, eth0.index)
        .await
        .unwrap();
    nl.add_route(net("0.0.0.0/0"), Some(ip("10.1.0.1")), eth0.index)
        .await
        .unwrap();

    let routes = nl.routes(eth0.index).await.unwrap();
    for expected in [
        (net("10.2.0.0/16"), Some(ip("10.1.0.1"))),
        (net("10.3.0.0/24"), None),
        (net("fd00:2::/64"), Some(ip("fd00:1::1"))),
        (net("10.4.0.0/24"), None),
        (net("0.0.0.0/0"), Some(ip("10.1.0.1"))),
        // Added by the kernel for the address.
        (net("10.1.0.0/24"), None),
    ] {
        assert!(
            routes.contains(&expected),
            "{expected:?} missing from {routes:?}"
        );
    }
    let shown = container.exec(&["ip", "route", "show"]);
    assert!(
        shown.contains("10.2.0.0/16 via 10.1.0.1 dev eth0"),
        "{shown}"
    );
    assert!(shown.contains("10.3.0.0/24 dev eth0"), "{shown}");
    assert!(shown.contains("default via 10.1.0.1 dev eth0"), "{shown}");
    assert!(container
        .exec(&["ip", "-6", "route", "show"])
        .contains("fd00:2::/64 via fd00:1::1 dev eth0"));

    assert!(nl.del_route(net("10.2.0.0/16"), eth0.index).await.unwrap());
    assert!(!nl.del_route(net("10.2.0.0/16"), eth0.index).await.unwrap());
    assert!(nl.del_route(net("fd00:2::/64"), eth0.index).await.unwrap());
    assert!(!nl.del_route(net("fd00:2::/64"), eth0.index).await.unwrap());
    let routes = nl.routes(eth0.index).await.unwrap();
    assert!(
        !routes
            .iter()
            .any(|(d, _)| *d == net("10.2.0.0/16") || *d == net("fd00:2::/64")),
        "{routes:?}"
    );
    assert!(!container
        .exec(&["ip", "route", "show"])
        .contains("10.2.0.0/16"));

    // A gateway that is not reachable: the error names the route and the device.
    let err = nl
        .add_route(net("10.9.0.0/16"), Some(ip("192.0.2.99")), eth0.index)
        .await
        .unwrap_err();
    let msg = cni::CniError::from(err).msg;
    assert!(
        msg.contains("add route") && msg.contains("10.9.0.0/16") && msg.contains("eth0"),
        "{msg}"
    );
    // Family mismatch between destination and gateway is refused before the kernel sees it.
    assert!(nl
        .add_route(net("10.9.0.0/16"), Some(ip("fd00::1")), eth0.index)
        .await
        .is_err());
}

#[tokio::test]
async fn default_route_interface_and_address_lookup() {
    let host = TestNs::new("dh");
    let container = TestNs::new("dc");
    let hnl = Netlink::in_netns(&host.ns).await.unwrap();
    let nl = Netlink::in_netns(&container.ns).await.unwrap();

    assert!(nl.default_route_interface(false).await.unwrap().is_none());

    let (_, eth0) = hnl
        .create_veth("ovdef0", "eth0", &container.ns, 1500, None)
        .await
        .unwrap();
    nl.add_address(eth0.index, net("10.7.0.2/24"))
        .await
        .unwrap();
    nl.add_address(eth0.index, net("fd00:7::2/64"))
        .await
        .unwrap();
    nl.add_route(net("0.0.0.0/0"), Some(ip("10.7.0.1")), eth0.index)
        .await
        .unwrap();

    let (link, addr) = nl
        .default_route_interface(false)
        .await
        .unwrap()
        .expect("an IPv4 default route");
    assert_eq!(link.name, "eth0");
    assert_eq!(link.index, eth0.index);
    assert_eq!(addr, ip("10.7.0.2"));
    assert!(
        nl.default_route_interface(true).await.unwrap().is_none(),
        "no IPv6 default route yet"
    );

    nl.add_route(net("::/0"), Some(ip("fd00:7::1")), eth0.index)
        .await
        .unwrap();
    let (link, addr) = nl
        .default_route_interface(true)
        .await
        .unwrap()
        .expect("an IPv6 default route");
    assert_eq!(link.index, eth0.index);
    assert_eq!(
        addr,
        ip("fd00:7::2"),
        "must be the global address, not the link-local one"
    );

    assert_eq!(
        nl.link_with_address(ip("10.7.0.2"))
            .await
            .unwrap()
            .map(|l| l.name),
        Some("eth0".into())
    );
    assert_eq!(
        nl.link_with_address(ip("fd00:7::2"))
            .await
            .unwrap()
            .map(|l| l.index),
        Some(eth0.index)
    );
    assert_eq!(
        nl.link_with_address(ip("127.0.0.1"))
            .await
            .unwrap()
            .map(|l| l.name),
        Some("lo".into())
    );
    assert!(nl
        .link_with_address(ip("10.7.0.3"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn the_shared_container_check_compares_mac_addresses_and_routes() {
    use cni::{CniResult, Interface, IpConfig, Route};
    let host = TestNs::new("ch");
    let container = TestNs::new("cc");
    let hnl = Netlink::in_netns(&host.ns).await.unwrap();
    let nl = Netlink::in_netns(&container.ns).await.unwrap();
    let (_, eth0) = hnl
        .create_veth(
            "ovchk0",
            "eth0",
            &container.ns,
            1500,
            Some([2, 0, 0, 0, 0, 9]),
        )
        .await
        .unwrap();
    nl.add_address(eth0.index, net("10.9.0.2/24"))
        .await
        .unwrap();
    nl.set_up(eth0.index).await.unwrap();
    nl.add_route(net("10.8.0.0/16"), Some(ip("10.9.0.1")), eth0.index)
        .await
        .unwrap();
    let mut prev = CniResult::default();
    let index = prev.push_interface(Interface {
        name: "eth0".into(),
        mac: "02:00:00:00:00:09".into(),
        sandbox: "/run/netns/x".into(),
        ..Default::default()
    });
    prev.ips.push(IpConfig {
        address: net("10.9.0.2/24"),
        gateway: Some(ip("10.9.0.1")),
        interface: Some(index),
    });
    prev.routes
        .push(Route::new(net("10.8.0.0/16"), Some(ip("10.9.0.1"))));
    // A route of a later plugin, through another interface: not ours to check.
    prev.routes
        .push(Route::new(net("0.0.0.0/0"), Some(ip("172.18.0.1"))));
    let checked = netops::check::container_interface(&nl, &prev, "eth0")
        .await
        .unwrap();
    assert_eq!((checked.index, checked.ips.len()), (index, 1));

    let code = |e: netops::Error| cni::CniError::from(e).code;
    let mut wrong_mac = prev.clone();
    wrong_mac.interfaces[index].mac = "02:00:00:00:00:0A".into();
    let e = netops::check::container_interface(&nl, &wrong_mac, "eth0")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("has MAC 02:00:00:00:00:09"), "{e}");
    assert_eq!(code(e), cni::codes::CHECK_FAILED);
    let e = netops::check::container_interface(&nl, &prev, "eth1")
        .await
        .unwrap_err();
    assert_eq!(code(e), cni::codes::CHECK_FAILED);

    container.exec(&["ip", "route", "del", "10.8.0.0/16"]);
    let e = netops::check::container_interface(&nl, &prev, "eth0")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("route to 10.8.0.0/16 via 10.9.0.1"),
        "{e}"
    );
    container.exec(&["ip", "addr", "del", "10.9.0.2/24", "dev", "eth0"]);
    let e = netops::check::container_interface(&nl, &prev, "eth0")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("address 10.9.0.2/24 is missing"),
        "{e}"
    );
    // Gone entirely.
    host.exec(&["ip", "link", "del", "ovchk0"]);
    let e = netops::check::container_interface(&nl, &prev, "eth0")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("eth0 is missing"), "{e}");
}
