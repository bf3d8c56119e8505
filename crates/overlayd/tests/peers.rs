//! FDB and neighbour entries on a host's VXLAN device follow the endpoint records of the other
//! hosts: added within milliseconds of a put, replaced on update, removed on delete; endpoints of
//! the host itself and networks without a local device are left alone; what no record justifies
//! is removed by the reconciliation at start-up; nothing but `ovx*` devices is touched.

mod common;

use std::time::{Duration, Instant};

use common::{
    add_vxlan, args, br, endpoint, endpoint_key, eventually, vx, wait_registered, Daemon, EtcdIn,
    Tables,
};
use nix::sys::signal::Signal;
use testutils::lab::{in_ns, Lab};

const H1: &str = "192.168.205.10";
const H2: &str = "192.168.205.11";
const SOON: Duration = Duration::from_secs(2);

/// overlayd as node2 on the lab's second host (the first holds etcd and plays node1's VTEP).
fn start_node2(lab: &Lab, tag: &str) -> Daemon {
    let host = lab.host(1);
    Daemon::start(
        tag,
        &host.ns,
        &host.dir,
        &args(&lab.etcd_endpoint, "node2", &[]),
    )
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

#[test]
fn remote_endpoints_are_programmed_at_once_and_removed() {
    let lab = Lab::new(2);
    let host = lab.host(1);
    let etcd = EtcdIn::new(&lab.host(0).ns, &lab.etcd_endpoint);
    add_vxlan(&host.ns, "blue", 42, H2);
    let tables = Tables::new(&host.ns);
    let mut daemon = start_node2(&lab, "node2");
    wait_registered(&etcd, &mut daemon, "node2", Duration::from_secs(10));

    // The first record also tells us the watch is up, whenever that was.
    let warm = endpoint(
        "blue",
        42,
        "warm",
        "node1",
        H1,
        "02:00:00:00:01:00",
        &["10.42.0.100/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "warm"), &warm);
    tables
        .wait_for(&vx(42), Duration::from_secs(10), |t| {
            t.has_neigh("10.42.0.100", "02:00:00:00:01:00")
        })
        .unwrap_or_else(|| panic!("the first endpoint never arrived:\n{}", daemon.log()));

    let mut latencies = Vec::new();
    for i in 1..=10u8 {
        let cid = format!("c{i}");
        let mac = format!("02:00:00:00:01:{i:02x}");
        let ip = format!("10.42.0.{i}");
        let v6 = format!("fd42::{i}");
        let e = endpoint(
            "blue",
            42,
            &cid,
            "node1",
            H1,
            &mac,
            &[&format!("{ip}/24"), &format!("{v6}/64")],
        );
        let written = etcd.put_endpoint(&endpoint_key("blue", &cid), &e);
        let seen = tables
            .wait_for(&vx(42), SOON, |t| {
                t.has_fdb(&mac, H1) && t.has_neigh(&ip, &mac) && t.has_neigh(&v6, &mac)
            })
            .unwrap_or_else(|| panic!("{cid} not programmed within {SOON:?}:\n{}", daemon.log()));
        latencies.push(seen.saturating_duration_since(written));
    }
    println!(
        "put -> fdb + neighbours: median {:?}, all {latencies:?}",
        median(&latencies)
    );

    // Cross-check with iproute2, independent of netops' parsing.
    let fdb = in_ns(&host.ns, &["bridge", "fdb", "show", "dev", &vx(42)]);
    assert!(
        fdb.contains(&format!("02:00:00:00:01:01 dst {H1} self permanent")),
        "{fdb}"
    );
    let neigh = in_ns(&host.ns, &["ip", "neigh", "show", "dev", &vx(42)]);
    assert!(
        neigh.contains("10.42.0.1 lladdr 02:00:00:00:01:01 PERMANENT"),
        "{neigh}"
    );

    // This host's own endpoints and networks without a local device give nothing.
    let local = endpoint(
        "blue",
        42,
        "local",
        "node2",
        H2,
        "02:00:00:00:02:01",
        &["10.42.0.201/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "local"), &local);
    let other = endpoint(
        "red",
        43,
        "red1",
        "node1",
        H1,
        "02:00:00:00:03:01",
        &["10.43.0.1/24"],
    );
    etcd.put_endpoint(&endpoint_key("red", "red1"), &other);
    // A record whose MAC is not one: unreadable, so never programmed.
    let mut broken = serde_json::to_value(endpoint(
        "blue",
        42,
        "broken",
        "node1",
        H1,
        "02:00:00:00:01:02",
        &["10.42.0.202/24"],
    ))
    .unwrap();
    broken["mac"] = serde_json::json!("not-a-mac");
    etcd.put(
        &endpoint_key("blue", "broken"),
        broken.to_string().into_bytes(),
    );
    etcd.put(&endpoint_key("blue", "garbage"), b"{not json".to_vec());
    // A marker put after them: once it is programmed, the ones before were handled too.
    let marker = endpoint(
        "blue",
        42,
        "marker",
        "node1",
        H1,
        "02:00:00:00:01:ff",
        &["10.42.0.255/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "marker"), &marker);
    tables
        .wait_for(&vx(42), SOON, |t| t.has_fdb("02:00:00:00:01:ff", H1))
        .expect("marker programmed");
    let t = tables.of(&vx(42));
    assert!(
        !t.has_mac("02:00:00:00:02:01") && !t.has_ip("10.42.0.201"),
        "local endpoint programmed: {t:?}"
    );
    assert!(
        !t.has_mac("02:00:00:00:03:01"),
        "other network's endpoint programmed: {t:?}"
    );
    assert!(
        !t.has_ip("10.42.0.202"),
        "unreadable endpoint programmed: {t:?}"
    );
    daemon.assert_running();

    // Update: another MAC, another host, one address changed; what the old record had goes.
    let moved = endpoint(
        "blue",
        42,
        "c1",
        "node3",
        "192.168.205.12",
        "02:00:00:00:01:a1",
        &["10.42.0.1/24", "10.42.0.51/24"],
    );
    let written = etcd.put_endpoint(&endpoint_key("blue", "c1"), &moved);
    let seen = tables
        .wait_for(&vx(42), SOON, |t| {
            t.has_fdb("02:00:00:00:01:a1", "192.168.205.12")
                && t.has_neigh("10.42.0.1", "02:00:00:00:01:a1")
                && t.has_neigh("10.42.0.51", "02:00:00:00:01:a1")
                && !t.has_mac("02:00:00:00:01:01")
                && !t.has_ip("fd42::1")
        })
        .unwrap_or_else(|| {
            panic!(
                "update not applied: {:?}\n{}",
                tables.of(&vx(42)),
                daemon.log()
            )
        });
    println!(
        "update applied after {:?}",
        seen.saturating_duration_since(written)
    );

    // Same MAC, new VTEP: the FDB entry is repointed, not duplicated.
    let repointed = endpoint(
        "blue",
        42,
        "c2",
        "node4",
        "192.168.205.13",
        "02:00:00:00:01:02",
        &["10.42.0.2/24", "fd42::2/64"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "c2"), &repointed);
    tables
        .wait_for(&vx(42), SOON, |t| {
            t.has_fdb("02:00:00:00:01:02", "192.168.205.13") && !t.has_fdb("02:00:00:00:01:02", H1)
        })
        .expect("fdb entry repointed to the new VTEP");

    // Delete: entries gone.
    let mut latencies = Vec::new();
    for i in 3..=10u8 {
        let cid = format!("c{i}");
        let mac = format!("02:00:00:00:01:{i:02x}");
        let written = etcd.delete(&endpoint_key("blue", &cid));
        let seen = tables
            .wait_for(&vx(42), SOON, |t| {
                !t.has_mac(&mac) && !t.has_ip(&format!("10.42.0.{i}"))
            })
            .unwrap_or_else(|| panic!("{cid} not removed:\n{}", daemon.log()));
        latencies.push(seen.saturating_duration_since(written));
    }
    println!(
        "delete -> entries gone: median {:?}, all {latencies:?}",
        median(&latencies)
    );
    let t = tables.of(&vx(42));
    assert!(t.has_fdb("02:00:00:00:01:a1", "192.168.205.12"), "{t:?}");
    assert!(t.has_neigh("10.42.0.100", "02:00:00:00:01:00"), "{t:?}");
    daemon.assert_running();
    assert!(!daemon.log().contains("panicked"));
}

#[test]
fn what_the_bridge_learnt_about_a_removed_endpoint_goes_with_it() {
    let lab = Lab::new(2);
    let host = lab.host(1);
    let etcd = EtcdIn::new(&lab.host(0).ns, &lab.etcd_endpoint);
    add_vxlan(&host.ns, "green", 44, H2);
    let tables = Tables::new(&host.ns);
    let mut daemon = start_node2(&lab, "node2");
    wait_registered(&etcd, &mut daemon, "node2", Duration::from_secs(10));

    let (gone, stays) = ("02:00:00:00:04:01", "02:00:00:00:04:02");
    for (cid, mac, ip) in [("c1", gone, "10.44.0.1/24"), ("c2", stays, "10.44.0.2/24")] {
        let e = endpoint("green", 44, cid, "node1", H1, mac, &[ip]);
        etcd.put_endpoint(&endpoint_key("green", cid), &e);
        tables
            .wait_for(&vx(44), Duration::from_secs(10), |t| t.has_fdb(mac, H1))
            .unwrap_or_else(|| {
                panic!(
                    "{cid} never programmed:
{}",
                    daemon.log()
                )
            });
        // What the bridge learns from the container's traffic arriving through the tunnel.
        in_ns(
            &host.ns,
            &[
                "bridge",
                "fdb",
                "add",
                mac,
                "dev",
                &vx(44),
                "master",
                "dynamic",
            ],
        );
    }
    let learnt = |mac: &str| {
        in_ns(&host.ns, &["bridge", "fdb", "show", "br", &br(44)])
            .lines()
            .any(|l| l.starts_with(mac) && l.contains("dev ovx44") && !l.contains(" self"))
    };
    assert!(learnt(gone) && learnt(stays));

    etcd.delete(&endpoint_key("green", "c1"));
    eventually(SOON, || !learnt(gone) && !tables.of(&vx(44)).has_mac(gone)).unwrap_or_else(|| {
        panic!(
            "the bridge still knows {gone}:
{}",
            daemon.log()
        )
    });
    assert!(learnt(stays), "another endpoint's learnt entry was removed");
    assert!(tables.of(&vx(44)).has_fdb(stays, H1));
    daemon.assert_running();
}

#[test]
fn reconciliation_at_start_removes_what_no_record_justifies() {
    let lab = Lab::new(2);
    let host = lab.host(1);
    let etcd = EtcdIn::new(&lab.host(0).ns, &lab.etcd_endpoint);
    add_vxlan(&host.ns, "blue", 42, H2);
    // A VXLAN device of somebody else, with entries of its own.
    in_ns(
        &host.ns,
        &[
            "ip",
            "link",
            "add",
            "vx77",
            "type",
            "vxlan",
            "id",
            "77",
            "dstport",
            "4790",
            "local",
            H2,
            "dev",
            "eth0",
            "nolearning",
        ],
    );
    in_ns(&host.ns, &["ip", "link", "set", "vx77", "up"]);
    in_ns(
        &host.ns,
        &[
            "bridge",
            "fdb",
            "add",
            "02:de:ad:00:07:07",
            "dev",
            "vx77",
            "dst",
            "192.168.205.99",
            "self",
            "permanent",
        ],
    );
    in_ns(
        &host.ns,
        &[
            "ip",
            "neigh",
            "add",
            "10.77.0.7",
            "lladdr",
            "02:de:ad:00:07:07",
            "dev",
            "vx77",
            "nud",
            "permanent",
        ],
    );
    // On ours: junk, a flood entry (not ours to manage), and a neighbour with the wrong MAC.
    let junk = |mac: &str, ip: &str| {
        in_ns(
            &host.ns,
            &[
                "bridge",
                "fdb",
                "add",
                mac,
                "dev",
                &vx(42),
                "dst",
                "192.168.205.99",
                "self",
                "permanent",
            ],
        );
        in_ns(
            &host.ns,
            &[
                "ip",
                "neigh",
                "replace",
                ip,
                "lladdr",
                mac,
                "dev",
                &vx(42),
                "nud",
                "permanent",
            ],
        );
    };
    junk("02:de:ad:00:00:01", "10.42.0.99");
    in_ns(
        &host.ns,
        &[
            "bridge",
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            &vx(42),
            "dst",
            H1,
            "self",
            "permanent",
        ],
    );
    let b = endpoint(
        "blue",
        42,
        "b",
        "node1",
        H1,
        "02:00:00:00:00:0b",
        &["10.42.0.11/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "b"), &b);
    in_ns(
        &host.ns,
        &[
            "ip",
            "neigh",
            "add",
            "10.42.0.11",
            "lladdr",
            "02:de:ad:00:00:0b",
            "dev",
            &vx(42),
            "nud",
            "permanent",
        ],
    );

    let tables = Tables::new(&host.ns);
    let mut daemon = start_node2(&lab, "node2-a");
    tables
        .wait_for(&vx(42), Duration::from_secs(10), |t| {
            t.has_fdb("02:00:00:00:00:0b", H1)
                && t.has_neigh("10.42.0.11", "02:00:00:00:00:0b")
                && !t.has_mac("02:de:ad:00:00:01")
                && !t.has_ip("10.42.0.99")
        })
        .unwrap_or_else(|| {
            panic!(
                "start-up reconciliation incomplete: {:?}\n{}",
                tables.of(&vx(42)),
                daemon.log()
            )
        });
    let t = tables.of(&vx(42));
    assert!(
        t.has_fdb("00:00:00:00:00:00", H1),
        "the flood entry must stay: {t:?}"
    );
    assert!(
        !t.has_mac("02:de:ad:00:00:0b"),
        "wrong neighbour MAC corrected: {t:?}"
    );
    let foreign = tables.of("vx77");
    assert!(
        foreign.has_fdb("02:de:ad:00:07:07", "192.168.205.99")
            && foreign.has_neigh("10.77.0.7", "02:de:ad:00:07:07"),
        "vx77 touched: {foreign:?}"
    );

    // Stopped: entries drift, records change. The next start sets it all right.
    daemon.signal(Signal::SIGTERM);
    assert_eq!(
        daemon.wait(Duration::from_secs(3)).and_then(|s| s.code()),
        Some(0)
    );
    junk("02:de:ad:00:00:02", "10.42.0.98");
    etcd.delete(&endpoint_key("blue", "b"));
    let c = endpoint(
        "blue",
        42,
        "c",
        "node1",
        H1,
        "02:00:00:00:00:0c",
        &["10.42.0.12/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "c"), &c);
    let started = Instant::now();
    let mut daemon = start_node2(&lab, "node2-b");
    tables
        .wait_for(&vx(42), Duration::from_secs(10), |t| {
            t.has_fdb("02:00:00:00:00:0c", H1)
                && t.has_neigh("10.42.0.12", "02:00:00:00:00:0c")
                && !t.has_mac("02:00:00:00:00:0b")
                && !t.has_ip("10.42.0.11")
                && !t.has_mac("02:de:ad:00:00:02")
                && !t.has_ip("10.42.0.98")
        })
        .unwrap_or_else(|| {
            panic!(
                "restart reconciliation incomplete: {:?}\n{}",
                tables.of(&vx(42)),
                daemon.log()
            )
        });
    println!("reconciled {:?} after restart", started.elapsed());
    assert!(tables.of(&vx(42)).has_fdb("00:00:00:00:00:00", H1));
    assert_eq!(tables.of("vx77"), foreign, "vx77 touched");
    daemon.assert_running();
}

#[test]
fn periodic_resync_repairs_entries_changed_by_hand() {
    let lab = Lab::new(2);
    let host = lab.host(1);
    let etcd = EtcdIn::new(&lab.host(0).ns, &lab.etcd_endpoint);
    add_vxlan(&host.ns, "blue", 42, H2);
    let tables = Tables::new(&host.ns);
    let mut daemon = start_node2(&lab, "node2");
    let a = endpoint(
        "blue",
        42,
        "a",
        "node1",
        H1,
        "02:00:00:00:00:0a",
        &["10.42.0.10/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "a"), &a);
    tables
        .wait_for(&vx(42), Duration::from_secs(10), |t| {
            t.has_fdb("02:00:00:00:00:0a", H1) && t.has_neigh("10.42.0.10", "02:00:00:00:00:0a")
        })
        .unwrap_or_else(|| panic!("a not programmed:\n{}", daemon.log()));

    // Behind overlayd's back: its entries deleted, a stray one added.
    let tampered = Instant::now();
    in_ns(
        &host.ns,
        &[
            "bridge",
            "fdb",
            "del",
            "02:00:00:00:00:0a",
            "dev",
            &vx(42),
            "dst",
            H1,
            "self",
        ],
    );
    in_ns(
        &host.ns,
        &["ip", "neigh", "del", "10.42.0.10", "dev", &vx(42)],
    );
    in_ns(
        &host.ns,
        &[
            "bridge",
            "fdb",
            "add",
            "02:de:ad:00:00:01",
            "dev",
            &vx(42),
            "dst",
            "192.168.205.99",
            "self",
            "permanent",
        ],
    );
    let t = tables.of(&vx(42));
    assert!(
        !t.has_mac("02:00:00:00:00:0a") && t.has_mac("02:de:ad:00:00:01"),
        "{t:?}"
    );
    let repaired = tables
        .wait_for(
            &vx(42),
            overlayd::peers::RESYNC_EVERY + Duration::from_secs(10),
            |t| {
                t.has_fdb("02:00:00:00:00:0a", H1)
                    && t.has_neigh("10.42.0.10", "02:00:00:00:00:0a")
                    && !t.has_mac("02:de:ad:00:00:01")
            },
        )
        .unwrap_or_else(|| {
            panic!(
                "not repaired by the backstop: {:?}\n{}",
                tables.of(&vx(42)),
                daemon.log()
            )
        });
    println!("repaired {:?} after tampering", repaired - tampered);
    daemon.assert_running();
}
