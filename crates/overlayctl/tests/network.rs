//! `network create | ls | inspect | rm` against a real etcd.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::json;
use testutils::Etcd;

#[test]
fn create_list_and_inspect_round_trip_in_table_and_json() {
    let etcd = Etcd::start();
    let out = ctl(
        &etcd,
        &["network", "create", "demo", "--subnet", "10.0.0.0/24"],
    );
    assert_eq!(
        out.ok(),
        "created network demo: vni 4096, subnet 10.0.0.0/24, gateway 10.0.0.1\n"
    );
    let created = ctl(
        &etcd,
        &[
            "network",
            "create",
            "dual",
            "--subnet",
            "10.1.0.0/24",
            "--subnet",
            "fd00:1::/64",
            "--gateway",
            "fd00:1::fe",
            "--ip-range",
            "10.1.0.128/25",
            "--mtu",
            "1400",
            "--internal",
            "--host-access",
            "-o",
            "json",
        ],
    )
    .json();
    assert_eq!(created["name"], "dual");
    assert_eq!(created["vni"], 4097, "the next free vni");
    assert_eq!(created["subnets"], json!(["10.1.0.0/24", "fd00:1::/64"]));
    assert_eq!(created["gateways"], json!(["10.1.0.1", "fd00:1::fe"]));
    assert_eq!(created["ipRange"], "10.1.0.128/25");
    assert_eq!(created["mtu"], 1400);
    assert_eq!(created["internal"], true);
    assert_eq!(created["hostAccess"], true);
    assert!(created["created"].as_u64().unwrap() > 1_600_000_000);

    // What is in etcd is the record printed, and the vni key names the network.
    let snapshot = etcd.snapshot(PREFIX);
    let stored: serde_json::Value =
        serde_json::from_str(&snapshot[&keys().network("dual")].0).unwrap();
    assert_eq!(stored, created);
    assert_eq!(snapshot[&keys().vni(vni(4097))].0, "dual");
    assert_eq!(snapshot[&keys().vni(vni(4096))].0, "demo");

    let table = ctl(&etcd, &["network", "ls"]).ok().to_string();
    let header = table.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "VNI",
            "SUBNETS",
            "GATEWAYS",
            "INTERNAL",
            "HOST-ACCESS",
            "ENDPOINTS"
        ]
    );
    assert_eq!(
        rows(&table),
        vec![
            vec!["demo", "4096", "10.0.0.0/24", "10.0.0.1", "no", "no", "0"],
            vec![
                "dual",
                "4097",
                "10.1.0.0/24,fd00:1::/64",
                "10.1.0.1,fd00:1::fe",
                "yes",
                "yes",
                "0"
            ],
        ]
    );
    // Columns are aligned: every row's VNI starts where the header's does.
    let vni_col = header.find("VNI").unwrap();
    for line in table.lines().skip(1) {
        assert!(line[vni_col..].starts_with("409"), "{line:?}");
    }

    let listed = ctl(&etcd, &["network", "ls", "-o", "json"]).json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["name"], "demo");
    assert_eq!(listed[0]["endpoints"], 0);
    assert_eq!(listed[1]["vni"], 4097);

    let inspected = ctl(&etcd, &["network", "inspect", "dual", "-o", "json"]).json();
    let mut expected = created.clone();
    expected["endpoints"] = json!([]);
    assert_eq!(inspected, expected);

    let table = ctl(&etcd, &["network", "inspect", "demo"]).ok().to_string();
    for line in [
        "NAME          demo",
        "VNI           4096",
        "SUBNETS       10.0.0.0/24",
        "GATEWAYS      10.0.0.1",
        "IP-RANGE      -",
        "MTU           default",
        "INTERNAL      no",
        "ENDPOINTS     0",
    ] {
        assert!(
            table.lines().any(|l| l == line),
            "{line:?} missing in\n{table}"
        );
    }

    let missing = ctl(&etcd, &["network", "inspect", "nope"]);
    assert_eq!(missing.fails(), "overlayctl: network nope not found");
}

#[test]
fn a_taken_name_or_vni_is_refused_and_nothing_changes() {
    let etcd = Etcd::start();
    ctl(
        &etcd,
        &[
            "network",
            "create",
            "a",
            "--subnet",
            "10.0.0.0/24",
            "--vni",
            "100",
        ],
    )
    .ok();
    let before = etcd.snapshot(PREFIX);

    let again = ctl(
        &etcd,
        &["network", "create", "a", "--subnet", "10.9.0.0/24"],
    );
    assert_eq!(
        again.fails(),
        "overlayctl: network with name a already exists"
    );
    let again = ctl(
        &etcd,
        &[
            "network",
            "create",
            "a",
            "--subnet",
            "10.9.0.0/24",
            "--vni",
            "200",
        ],
    );
    assert_eq!(
        again.fails(),
        "overlayctl: network with name a already exists"
    );

    let vni = ctl(
        &etcd,
        &[
            "network",
            "create",
            "b",
            "--subnet",
            "10.1.0.0/24",
            "--vni",
            "100",
        ],
    );
    assert_eq!(
        vni.fails(),
        "overlayctl: vni 100 is already used by network a"
    );

    assert_eq!(
        etcd.snapshot(PREFIX),
        before,
        "a refused create writes nothing"
    );

    // An explicit VNI below the automatic range stays out of the automatic choice's way.
    let b = ctl(
        &etcd,
        &[
            "network",
            "create",
            "b",
            "--subnet",
            "10.1.0.0/24",
            "-o",
            "json",
        ],
    )
    .json();
    assert_eq!(b["vni"], 4096);
}

#[test]
fn twenty_concurrent_creates_get_twenty_distinct_vnis() {
    let etcd = Etcd::start();
    let runs: Vec<Vec<String>> = (0..20)
        .map(|i| {
            [
                "network",
                "create",
                &format!("net{i}"),
                "--subnet",
                &format!("10.{i}.0.0/24"),
                "-o",
                "json",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        })
        .collect();
    let results = ctl_parallel(&etcd, &runs);
    let mut vnis = BTreeSet::new();
    for (i, run) in results.iter().enumerate() {
        let record = run.json();
        assert_eq!(record["name"], format!("net{i}"));
        let vni = record["vni"].as_u64().unwrap();
        assert!(vni >= 4096, "{vni}");
        assert!(vnis.insert(vni), "vni {vni} handed out twice");
    }
    assert_eq!(vnis.len(), 20);

    // etcd agrees: 20 networks, 20 vni keys, each naming the network whose record holds it.
    let snapshot = etcd.snapshot(PREFIX);
    let vni_keys: Vec<_> = snapshot
        .iter()
        .filter(|(k, _)| k.starts_with(&keys().vnis()))
        .collect();
    assert_eq!(vni_keys.len(), 20);
    for (key, (owner, _)) in vni_keys {
        let record: serde_json::Value =
            serde_json::from_str(&snapshot[&keys().network(owner)].0).unwrap();
        assert_eq!(
            keys().vni(vni(record["vni"].as_u64().unwrap() as u32)),
            *key
        );
    }
}

#[test]
fn invalid_inputs_fail_with_one_line_and_write_nothing() {
    let etcd = Etcd::start();
    let cases: &[(&[&str], &str)] = &[
        (
            &["bad/name", "--subnet", "10.0.0.0/24"],
            "invalid network name",
        ),
        (&["_bad", "--subnet", "10.0.0.0/24"], "invalid network name"),
        (&["n"], "required arguments were not provided: --subnet"),
        (&["n", "--subnet", "10.0.0.0/33"], "invalid subnet"),
        (&["n", "--subnet", "nonsense"], "invalid subnet"),
        (
            &["n", "--subnet", "10.0.0.5/24"],
            "host bits set (did you mean 10.0.0.0/24?)",
        ),
        (
            &["n", "--subnet", "10.0.0.0/24", "--subnet", "10.1.0.0/24"],
            "one IPv4 subnet",
        ),
        (
            &["n", "--subnet", "10.0.0.0/24", "--gateway", "10.0.1.1"],
            "gateway 10.0.1.1 is outside",
        ),
        (
            &["n", "--subnet", "10.0.0.0/24", "--vni", "0"],
            "invalid vni \"0\"",
        ),
        (
            &["n", "--subnet", "10.0.0.0/24", "--vni", "16777216"],
            "invalid vni",
        ),
        (
            &["n", "--subnet", "10.0.0.0/24", "--vni", "x"],
            "invalid vni",
        ),
        (
            &["n", "--subnet", "10.0.0.0/24", "--ip-range", "10.0.1.0/25"],
            "ip-range 10.0.1.0/25 is outside",
        ),
        (
            &["n", "--subnet", "10.0.0.0/24", "--mtu", "100"],
            "invalid mtu",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["network", "create"];
        full.extend_from_slice(args);
        let out = ctl(&etcd, &full);
        let line = out.fails();
        assert!(line.contains(expected), "{args:?}: {line:?}");
    }
    assert_eq!(etcd.keys(PREFIX), Vec::<String>::new());
}

#[test]
fn inspect_shows_the_containers_of_every_host_and_rm_waits_for_them() {
    let etcd = Etcd::start();
    ctl(
        &etcd,
        &["network", "create", "demo", "--subnet", "10.0.0.0/24"],
    )
    .ok();
    ctl(
        &etcd,
        &["network", "create", "other", "--subnet", "10.5.0.0/24"],
    )
    .ok();
    let (id1, id2, id3) = (container_id(0xa1), container_id(0xb2), container_id(0xc3));
    put_endpoints(
        &etcd,
        &[
            endpoint("demo", &id1, Some("test1"), "node1", "10.0.0.2"),
            endpoint("demo", &id2, Some("test2"), "node2", "10.0.0.3"),
            endpoint("other", &id3, None, "node2", "10.5.0.2"),
        ],
    );
    // The ipam cursor etcd-ipam leaves behind; rm removes it with the network.
    put(
        &etcd,
        vec![(keys().cursor("demo", 0), b"10.0.0.3".to_vec())],
    );

    let table = ctl(&etcd, &["network", "inspect", "demo"]).ok().to_string();
    assert!(table.contains("ENDPOINTS     2"), "{table}");
    let containers: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.is_empty())
        .skip(1)
        .collect();
    assert_eq!(
        containers[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "CONTAINER", "ID", "ADDRESSES", "MAC", "NODE"]
    );
    let cells: Vec<Vec<&str>> = containers[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        cells,
        vec![
            vec![
                "test1",
                "a1a1a1a1a1a1",
                "10.0.0.2/24",
                "02:42:0a:00:00:02",
                "node1"
            ],
            vec![
                "test2",
                "b2b2b2b2b2b2",
                "10.0.0.3/24",
                "02:42:0a:00:00:03",
                "node2"
            ],
        ]
    );

    let json = ctl(&etcd, &["network", "inspect", "demo", "-o", "json"]).json();
    let endpoints = json["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2);
    assert_eq!(endpoints[0]["name"], "test1");
    assert_eq!(
        endpoints[0]["containerId"],
        id1.as_str(),
        "the full id in JSON"
    );
    assert_eq!(endpoints[0]["addresses"], json!(["10.0.0.2/24"]));
    assert_eq!(endpoints[0]["mac"], "02:42:0a:00:00:02");
    assert_eq!(endpoints[0]["node"], "node1");
    assert_eq!(endpoints[1]["node"], "node2");

    let counts = ctl(&etcd, &["network", "ls"]).ok().to_string();
    let counts: Vec<(String, String)> = rows(&counts)
        .into_iter()
        .map(|r| (r[0].clone(), r[6].clone()))
        .collect();
    assert_eq!(
        counts,
        [("demo".into(), "2".into()), ("other".into(), "1".into())]
    );

    let before = etcd.snapshot(PREFIX);
    let refused = ctl(&etcd, &["network", "rm", "demo"]);
    assert_eq!(
        refused.fails(),
        "overlayctl: network demo has 2 endpoints (test1 on node1, test2 on node2): remove the containers first"
    );
    let refused = ctl(&etcd, &["network", "rm", "other"]);
    assert_eq!(
        refused.fails(),
        "overlayctl: network other has 1 endpoint (c3c3c3c3c3c3 on node2): remove the containers first"
    );
    assert_eq!(etcd.snapshot(PREFIX), before, "a refused rm writes nothing");

    // The containers go (as their DEL removes the records); then the network can.
    delete_prefix(&etcd, &keys().endpoints("demo"));
    let removed = ctl(&etcd, &["network", "rm", "demo"]);
    assert_eq!(removed.ok(), "removed network demo (vni 4096)\n");
    let left = etcd.keys(PREFIX);
    for gone in [
        keys().network("demo"),
        keys().vni(vni(4096)),
        keys().cursor("demo", 0),
    ] {
        assert!(!left.contains(&gone), "{gone} left behind: {left:?}");
    }
    assert!(left.contains(&keys().network("other")));
    assert!(left.contains(&keys().vni(vni(4097))));

    assert_eq!(
        ctl(&etcd, &["network", "rm", "demo"]).fails(),
        "overlayctl: network demo not found"
    );
    // The name and the VNI are free again.
    let again = ctl(
        &etcd,
        &[
            "network",
            "create",
            "demo",
            "--subnet",
            "10.0.0.0/24",
            "-o",
            "json",
        ],
    )
    .json();
    assert_eq!(again["vni"], 4096);
}

#[test]
fn another_prefix_is_another_world() {
    let etcd = Etcd::start();
    ctl(
        &etcd,
        &[
            "--etcd-prefix",
            "/lab",
            "network",
            "create",
            "x",
            "--subnet",
            "10.0.0.0/24",
        ],
    )
    .ok();
    assert_eq!(
        etcd.keys("/lab/"),
        ["/lab/networks/x", "/lab/vnis/00004096"]
    );
    assert_eq!(
        rows(ctl(&etcd, &["network", "ls"]).ok()),
        Vec::<Vec<String>>::new()
    );
    let listed = ctl(
        &etcd,
        &["network", "ls", "--etcd-prefix", "/lab", "-o", "json"],
    )
    .json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}
