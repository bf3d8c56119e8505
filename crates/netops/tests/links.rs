//! Links: bridge, VXLAN, veth, bridge ports, aliases and deletion.

mod common;

use std::net::IpAddr;

use cni::codes;
use common::{mac_text, TestNs};
use netops::{Error, Netlink, Netns, VethPeer};

#[tokio::test]
async fn ensure_bridge_is_idempotent_and_refuses_other_kinds() {
    let t = TestNs::new("br");
    let nl = Netlink::in_netns(&t.ns).await.unwrap();

    let first = nl.ensure_bridge("br0", Some(1400), None).await.unwrap();
    assert_eq!(first.kind, "bridge");
    assert!(first.up);
    assert_eq!(first.mtu, 1400);
    let second = nl.ensure_bridge("br0", Some(1400), None).await.unwrap();
    assert_eq!(first.index, second.index);
    assert!(t
        .exec(&["ip", "-d", "link", "show", "br0"])
        .contains("bridge"));

    // A bridge brought down by someone else comes back up.
    t.exec(&["ip", "link", "set", "br0", "down"]);
    assert!(nl.ensure_bridge("br0", None, None).await.unwrap().up);

    t.exec(&[
        "ip", "link", "add", "notbr", "type", "veth", "peer", "name", "notbrp",
    ]);
    match nl.ensure_bridge("notbr", None, None).await {
        Err(err @ Error::Exists { .. }) => {
            let cni: cni::CniError = err.into();
            assert_eq!(cni.code, codes::INTERFACE_EXISTS);
            assert!(cni.msg.contains("notbr"));
        }
        other => panic!("expected Exists, got {other:?}"),
    }
    assert!(matches!(
        nl.ensure_bridge("name-too-long-for-linux", None, None)
            .await,
        Err(Error::Invalid { .. })
    ));

    // Lookups.
    assert_eq!(nl.link("br0").await.unwrap().unwrap().index, first.index);
    assert_eq!(
        nl.link_by_index(first.index).await.unwrap().unwrap().name,
        "br0"
    );
    assert!(nl.link("missing0").await.unwrap().is_none());
    assert!(nl.link("").await.unwrap().is_none());
    assert!(nl.link_by_index(999_999).await.unwrap().is_none());
    assert!(nl.link_by_index(0).await.unwrap().is_none());
    assert!(nl.link_by_index(u32::MAX).await.unwrap().is_none());
    let names: Vec<String> = nl
        .links()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    for n in ["lo", "br0", "notbr"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

#[tokio::test]
async fn ensure_vxlan_has_learning_off_and_proxy_on() {
    let t = TestNs::new("vx");
    t.add_underlay("ul0", "192.0.2.1/24");
    let nl = Netlink::in_netns(&t.ns).await.unwrap();
    let underlay = nl.link("ul0").await.unwrap().unwrap();
    let local: IpAddr = "192.0.2.1".parse().unwrap();

    let vx = nl
        .ensure_vxlan("vx4097", 4097, 4789, local, underlay.index, 1450)
        .await
        .unwrap();
    assert_eq!(vx.kind, "vxlan");
    assert_eq!(vx.vxlan_id, Some(4097));
    assert_eq!(vx.mtu, 1450);
    assert!(vx.up);

    let details = t.exec(&["ip", "-d", "link", "show", "vx4097"]);
    for expected in [
        "vxlan id 4097",
        "local 192.0.2.1",
        "dev ul0",
        "dstport 4789",
        "nolearning",
        "proxy",
    ] {
        assert!(
            details.contains(expected),
            "`{expected}` missing from: {details}"
        );
    }
    assert!(!details.contains(" learning"), "learning is on: {details}");

    let again = nl
        .ensure_vxlan("vx4097", 4097, 4789, local, underlay.index, 1450)
        .await
        .unwrap();
    assert_eq!(again.index, vx.index);
    // Same name, other VNI: refused.
    assert!(matches!(
        nl.ensure_vxlan("vx4097", 4098, 4789, local, underlay.index, 1450)
            .await,
        Err(Error::Exists { .. })
    ));
    // Same VNI and port under another name: the kernel allows only one.
    let clash = nl
        .ensure_vxlan("vxother", 4097, 4789, local, underlay.index, 1450)
        .await
        .unwrap_err();
    assert_eq!(clash.errno(), Some(nix::libc::EEXIST), "{clash}");
    assert!(clash.to_string().contains("vxother"));

    // The kernel clamps a VXLAN's MTU to the underlay's MTU minus 50.
    let big = nl
        .ensure_vxlan("vxbig", 4099, 4789, local, underlay.index, 9000)
        .await
        .unwrap();
    assert_eq!(big.mtu, 1450);
    assert!(matches!(
        nl.ensure_vxlan("vxbad", 0, 4789, local, underlay.index, 1450)
            .await,
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        nl.ensure_vxlan("vxbad", 1 << 24, 4789, local, underlay.index, 1450)
            .await,
        Err(Error::Invalid { .. })
    ));
}

#[tokio::test]
async fn create_veth_puts_the_peer_in_the_other_namespace() {
    let host = TestNs::new("vh");
    let container = TestNs::new("vc");
    let nl = Netlink::in_netns(&host.ns).await.unwrap();
    let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    let (h, p) = nl
        .create_veth("ovtest0", "eth0", &container.ns, 1400, Some(mac))
        .await
        .unwrap();
    assert_eq!(h.name, "ovtest0");
    assert_eq!(h.kind, "veth");
    assert_eq!(h.mtu, 1400);
    assert!(h.up);
    assert_eq!(p.name, "eth0");
    assert_eq!(p.kind, "veth");
    assert_eq!(p.mtu, 1400);
    assert_eq!(p.mac, Some(mac));
    assert_eq!(h.peer_index, Some(p.index));
    assert_eq!(p.peer_index, Some(h.index));

    let inside = container.exec(&["ip", "-o", "link", "show", "eth0"]);
    assert!(inside.contains("mtu 1400"), "{inside}");
    assert!(inside.contains(&mac_text(&mac)), "{inside}");
    assert!(
        !host.exec_status(&["ip", "link", "show", "eth0"]).0,
        "peer also visible on the host side"
    );

    // The container already has eth0: the CNI spec wants an error (code 103 here).
    match nl
        .create_veth("ovtest1", "eth0", &container.ns, 1400, None)
        .await
    {
        Err(err @ Error::Exists { .. }) => {
            assert!(err.to_string().contains("eth0"));
            let cni: cni::CniError = err.into();
            assert_eq!(cni.code, codes::INTERFACE_EXISTS);
        }
        other => panic!("expected Exists, got {other:?}"),
    }
    assert!(
        nl.link("ovtest1").await.unwrap().is_none(),
        "half-created veth left behind"
    );
    // The host name is taken.
    match nl
        .create_veth("ovtest0", "eth1", &container.ns, 1400, None)
        .await
    {
        Err(Error::Exists { name }) => assert_eq!(name, "ovtest0"),
        other => panic!("expected Exists, got {other:?}"),
    }

    // Deleting the host end removes the peer too; a second delete reports absence.
    assert!(nl.delete_link("ovtest0").await.unwrap());
    assert!(!nl.delete_link("ovtest0").await.unwrap());
    assert!(!container.exec_status(&["ip", "link", "show", "eth0"]).0);
    let cnl = Netlink::in_netns(&container.ns).await.unwrap();
    assert!(cnl.link("eth0").await.unwrap().is_none());
}

#[tokio::test]
async fn a_bridge_made_with_a_mac_keeps_it_as_ports_come_and_go() {
    let host = TestNs::new("bm");
    let c1 = TestNs::new("bmc");
    let nl = Netlink::in_netns(&host.ns).await.unwrap();
    let mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    let br = nl.ensure_bridge("br0", None, Some(mac)).await.unwrap();
    assert_eq!(br.mac, Some(mac));
    // A port with a lower MAC joins: without the MAC set at creation the kernel takes the port's.
    let (h, _) = nl
        .create_veth("ovport0", "eth0", &c1.ns, 1500, None)
        .await
        .unwrap();
    host.exec(&[
        "ip",
        "link",
        "set",
        "ovport0",
        "address",
        "02:00:00:00:00:01",
    ]);
    nl.set_master(h.index, br.index).await.unwrap();
    nl.set_up(h.index).await.unwrap();
    assert_eq!(nl.link("br0").await.unwrap().unwrap().mac, Some(mac));
    nl.delete_link("ovport0").await.unwrap();
    assert_eq!(nl.link("br0").await.unwrap().unwrap().mac, Some(mac));
    // An existing bridge keeps its own MAC.
    let again = nl
        .ensure_bridge("br0", None, Some([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]))
        .await
        .unwrap();
    assert_eq!(again.mac, Some(mac));
}

#[tokio::test]
async fn ports_masters_aliases_and_isolation() {
    let host = TestNs::new("ph");
    let c1 = TestNs::new("pc");
    let nl = Netlink::in_netns(&host.ns).await.unwrap();
    let br = nl.ensure_bridge("br0", None, None).await.unwrap();
    let (h, _) = nl
        .create_veth("ovport0", "eth0", &c1.ns, 1500, None)
        .await
        .unwrap();

    nl.set_master(h.index, br.index).await.unwrap();
    // A second bridge with a port of its own, and a bridge without ports: each sees only its own.
    let c2 = TestNs::new("pc2");
    let br1 = nl.ensure_bridge("br1", None, None).await.unwrap();
    let empty = nl.ensure_bridge("br2", None, None).await.unwrap();
    let (other, _) = nl
        .create_veth_on(
            "ovport1",
            &peer("eth0", &c2.ns, true),
            1500,
            Some(br1.index),
        )
        .await
        .unwrap();
    let ports = nl.links_with_master(br.index).await.unwrap();
    assert_eq!(
        ports.iter().map(|l| l.index).collect::<Vec<_>>(),
        vec![h.index]
    );
    let ports = nl.links_with_master(br1.index).await.unwrap();
    assert_eq!(
        ports.iter().map(|l| l.index).collect::<Vec<_>>(),
        vec![other.index]
    );
    assert!(nl.links_with_master(empty.index).await.unwrap().is_empty());
    assert_eq!(nl.port_names(br.index).await.unwrap(), vec!["ovport0"]);
    assert_eq!(nl.port_names(br1.index).await.unwrap(), vec!["ovport1"]);
    assert!(nl.port_names(empty.index).await.unwrap().is_empty());
    // A veth born a bridge port has IPv6 off on its host end (this handle's namespace, not the
    // test thread's); one made without a bridge keeps it, as does the container end.
    let ipv6_off = |ns: &TestNs, dev: &str| {
        ns.exec(&[
            "cat",
            &format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"),
        ])
        .trim()
        .to_string()
    };
    assert_eq!(ipv6_off(&host, "ovport1"), "1");
    assert_eq!(ipv6_off(&host, "ovport0"), "0");
    assert_eq!(ipv6_off(&c2, "eth0"), "0");
    let mut bridges: Vec<String> = (nl.links_of_kind("bridge").await.unwrap())
        .into_iter()
        .map(|l| l.name)
        .collect();
    bridges.sort();
    assert_eq!(bridges, vec!["br0", "br1", "br2"]);
    let veths = nl.links_of_kind("veth").await.unwrap();
    assert_eq!(veths.len(), 2);
    assert!(veths.iter().all(|l| l.kind == "veth"));
    assert_eq!(
        nl.link("ovport0").await.unwrap().unwrap().master,
        Some(br.index)
    );

    assert!(!nl.port_isolated(h.index).await.unwrap());
    nl.set_port_isolated(h.index, true).await.unwrap();
    assert!(nl.port_isolated(h.index).await.unwrap());
    let shown = host.exec(&["bridge", "-d", "link", "show", "dev", "ovport0"]);
    assert!(shown.contains("isolated on"), "{shown}");
    nl.set_port_isolated(h.index, false).await.unwrap();
    assert!(!nl.port_isolated(h.index).await.unwrap());
    assert!(host
        .exec(&["bridge", "-d", "link", "show", "dev", "ovport0"])
        .contains("isolated off"));
    // Not a bridge port.
    assert!(matches!(
        nl.port_isolated(br.index).await,
        Err(Error::Invalid { .. })
    ));

    nl.set_alias(h.index, "container c1 eth0").await.unwrap();
    assert_eq!(
        nl.link_by_index(h.index)
            .await
            .unwrap()
            .unwrap()
            .alias
            .as_deref(),
        Some("container c1 eth0")
    );
    assert!(host
        .exec(&["ip", "link", "show", "ovport0"])
        .contains("alias container c1 eth0"));

    host.exec(&["ip", "link", "set", "ovport0", "down"]);
    nl.set_up(h.index).await.unwrap();
    assert!(nl.link_by_index(h.index).await.unwrap().unwrap().up);

    // Failures name the operation and the device.
    let err = nl.set_master(h.index, 999_999).await.unwrap_err();
    let msg = cni::CniError::from(err).msg;
    assert!(
        msg.contains("set master") && msg.contains("ovport0"),
        "{msg}"
    );
    let err = nl.set_up(999_999).await.unwrap_err();
    assert_eq!(err.errno(), Some(nix::libc::ENODEV));
    assert!(err.to_string().contains("999999"), "{err}");
}

#[test]
fn netlink_current_uses_the_callers_namespace_and_needs_an_io_runtime() {
    let t = TestNs::new("cur");
    t.exec(&[
        "ip",
        "link",
        "add",
        "only-here",
        "type",
        "veth",
        "peer",
        "name",
        "only-herep",
    ]);
    // On a thread inside the namespace, current() sees that namespace's links.
    let seen =
        t.ns.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let nl = Netlink::current().await?;
                Ok::<_, Error>(nl.link("only-here").await?.is_some())
            })
        })
        .unwrap()
        .unwrap();
    assert!(seen);

    // Outside any runtime, or in one without the IO driver: an error, not a panic.
    assert!(futures::executor::block_on(Netlink::current()).is_err());
    let no_io = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(no_io.block_on(Netlink::current()).is_err());
    assert!(no_io.block_on(Netlink::in_netns(&t.ns)).is_err());
}

/// The far end of a test veth: `name` in `ns`, IPv6 as asked.
fn peer<'a>(name: &'a str, ns: &'a Netns, ipv6: bool) -> VethPeer<'a> {
    VethPeer {
        name,
        ns,
        mac: None,
        ipv6,
    }
}

/// A veth born a port of a bridge (IFLA_MASTER in the creating message): no moment at which a
/// killed plugin leaves a veth of no network behind.
#[tokio::test]
async fn a_veth_can_be_born_a_port_of_a_bridge() {
    let host = TestNs::new("bp");
    let c1 = TestNs::new("bpc");
    let nl = Netlink::in_netns(&host.ns).await.unwrap();
    let br = nl.ensure_bridge("br0", None, None).await.unwrap();
    let (h, _) = nl
        .create_veth_on(
            "ovborn0",
            &peer("eth0", &c1.ns, false),
            1500,
            Some(br.index),
        )
        .await
        .unwrap();
    let ports = nl.links_with_master(br.index).await.unwrap();
    assert!(
        ports.iter().any(|p| p.index == h.index),
        "ovborn0 is not a port of br0: {ports:?}"
    );
    // Its far end was asked without IPv6: no address of its own from before it came up.
    assert!(c1
        .exec(&["ip", "-d", "link", "show", "eth0"])
        .contains("addrgenmode none"));
    assert_eq!(
        c1.exec(&["ip", "-6", "-o", "addr", "show", "dev", "eth0"])
            .trim(),
        ""
    );
    assert!(c1
        .exec(&["ip", "-o", "link", "show", "eth0"])
        .contains("UP"));
}
