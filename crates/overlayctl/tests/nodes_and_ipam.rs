//! `node ls` and `ipam usage` against a real etcd.

mod common;

use common::*;
use serde_json::json;
use testutils::Etcd;

#[test]
fn node_ls_shows_live_nodes_and_nodes_known_only_from_endpoints() {
    let etcd = Etcd::start();
    let empty = ctl(&etcd, &["node", "ls"]);
    assert_eq!(
        empty.ok(),
        "NAME   VTEP   ALIVE   DEAD SINCE   ALLOCATIONS   NAMES   ENDPOINTS\n"
    );

    put_node(&etcd, "node1", "192.168.205.10");
    put_node(&etcd, "idle", "192.168.205.12");
    put_endpoints(
        &etcd,
        &[
            endpoint("demo", &container_id(1), Some("a"), "node1", "10.0.0.2"),
            endpoint("demo", &container_id(2), Some("b"), "node2", "10.0.0.3"),
            endpoint("other", &container_id(3), Some("c"), "node2", "10.1.0.2"),
        ],
    );
    let table = ctl(&etcd, &["node", "ls"]).ok().to_string();
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "NAME",
            "VTEP",
            "ALIVE",
            "DEAD",
            "SINCE",
            "ALLOCATIONS",
            "NAMES",
            "ENDPOINTS"
        ]
    );
    assert_eq!(
        rows(&table),
        vec![
            vec!["idle", "192.168.205.12", "yes", "-", "0", "0", "0"],
            vec!["node1", "192.168.205.10", "yes", "-", "0", "0", "1"],
            // No node record: its overlayd is gone; the VTEP is the one its endpoints carry. No
            // reclaimer marked it, so since when is unknown.
            vec!["node2", "192.168.205.15", "no", "unknown", "0", "0", "2"],
        ]
    );

    let json = ctl(&etcd, &["node", "ls", "-o", "json"]).json();
    assert_eq!(
        json,
        json!([
            {"name": "idle", "vtep": "192.168.205.12", "alive": true, "since": 1_700_000_000,
             "deadSince": null, "deadFor": null, "allocations": 0, "names": 0, "endpoints": 0},
            {"name": "node1", "vtep": "192.168.205.10", "alive": true, "since": 1_700_000_000,
             "deadSince": null, "deadFor": null, "allocations": 0, "names": 0, "endpoints": 1},
            {"name": "node2", "vtep": "192.168.205.15", "alive": false, "since": null,
             "deadSince": null, "deadFor": null, "allocations": 0, "names": 0, "endpoints": 2},
        ])
    );
}

#[test]
fn ipam_usage_counts_the_address_keys_within_each_range() {
    let etcd = Etcd::start();
    ctl(
        &etcd,
        &["network", "create", "demo", "--subnet", "10.0.0.0/24"],
    )
    .ok();
    ctl(
        &etcd,
        &[
            "network",
            "create",
            "ranged",
            "--subnet",
            "10.1.0.0/24",
            "--subnet",
            "fd00::/120",
            "--ip-range",
            "10.1.0.128/25",
        ],
    )
    .ok();
    put_addresses(&etcd, "demo", &["10.0.0.2", "10.0.0.3", "10.0.0.254"]);
    // One inside the range, one in the subnet but outside the range (not counted), one v6. The
    // range is what etcd-ipam hands out: 10.1.0.129-10.1.0.254, the ip-range without its own
    // network and broadcast addresses.
    put_addresses(&etcd, "ranged", &["10.1.0.130", "10.1.0.5", "fd00::2"]);

    let table = ctl(&etcd, &["ipam", "usage"]).ok().to_string();
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NETWORK", "SUBNET", "IP-RANGE", "USED", "FREE", "TOTAL"]
    );
    assert_eq!(
        rows(&table),
        vec![
            vec!["demo", "10.0.0.0/24", "-", "3", "250", "253"],
            vec!["ranged", "10.1.0.0/24", "10.1.0.128/25", "1", "125", "126"],
            vec!["ranged", "fd00::/120", "-", "1", "253", "254"],
        ]
    );

    let json = ctl(&etcd, &["ipam", "usage", "demo", "-o", "json"]).json();
    assert_eq!(
        json,
        json!([{
            "network": "demo", "subnet": "10.0.0.0/24", "ipRange": null,
            "rangeStart": "10.0.0.1", "rangeEnd": "10.0.0.254",
            "used": 3, "free": 250, "total": 253
        }])
    );

    assert_eq!(
        ctl(&etcd, &["ipam", "usage", "nope"]).fails(),
        "overlayctl: network nope not found"
    );
}
