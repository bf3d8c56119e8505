//! gwbridge-egress chained after a main plugin, on simulated hosts (`Lab::new(2)`): egress through
//! masquerade, published ports from everywhere, isolation, refusal of taken ports, cleanup, CHECK,
//! GC, and the chain with Debian's portmap, tuning and bandwidth.
//!
//! Every scenario takes the main plugin as a parameter; the tests below run them after Debian's
//! reference `bridge`. Needs root: without it the tests fail (Lab::new asserts), never skip.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{json, Value};
use testutils::lab::{in_ns, try_in_ns, Lab, INTERNET_ADDR};
use testutils::{Invocation, TempDir};

const NET: &str = "demo";

fn chain(lab: &Lab, host: usize, main: &MainPlugin, gw: Value) -> Chain {
    Chain::new(
        NET,
        vec![(main.config)(lab, host, 0), gwbridge(lab, host, gw)],
    )
}

/// The container reaches the internet; the internet sees the host's underlay address; the ADD
/// result carries our interfaces, address and route after the main plugin's.
fn scenario_egress(main: &MainPlugin) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let c1 = Attachment::new("egress-c1", lab.container("c1"));
    let chain = chain(&lab, 0, main, json!({}));
    let result = chain
        .add(&lab, 0, &c1)
        .unwrap_or_else(|(i, out)| panic!("ADD of plugin {i}: {out:?}"));

    // Our part of the result, appended to the main plugin's.
    let interfaces = result["interfaces"].as_array().unwrap();
    let n = interfaces.len();
    let host_side = &interfaces[n - 2];
    let ours = &interfaces[n - 1];
    assert!(
        host_side["name"].as_str().unwrap().starts_with("gw"),
        "{result}"
    );
    assert!(host_side.get("sandbox").is_none(), "{result}");
    assert_eq!(ours["name"], "gwb0");
    assert_eq!(ours["sandbox"], c1.netns_path);
    assert_eq!(ours["mac"].as_str().unwrap().len(), 17);
    let ip = result["ips"].as_array().unwrap().last().unwrap();
    assert_eq!(ip["interface"], n - 1);
    assert!(
        ip["address"].as_str().unwrap().starts_with("172.18."),
        "{result}"
    );
    assert_eq!(ip["gateway"], "172.18.0.1");
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "172.18.0.1"}])
    );
    assert_eq!(result["cniVersion"], VERSION);
    assert!(in_ns(&c1.ns, &["ip", "route"]).contains("default via 172.18.0.1 dev gwb0"));

    assert!(lab.ping_within(&c1.ns, INTERNET_ADDR, std::time::Duration::from_secs(5)));
    let _seen = TcpServer::start(&lab.internet, &format!("{INTERNET_ADDR}:8000"), "inet");
    let answer = eventually("container to the internet", || {
        tcp_ask(&c1.ns, &format!("{INTERNET_ADDR}:8000"))
    });
    assert_eq!(
        answer,
        format!("inet {}", lab.host(0).addr),
        "not masqueraded to the underlay address"
    );

    assert_all_ok(&chain.del(&lab, 0, &c1, Some(&result)));
}

/// tcp and udp published ports reach the container from the internet, from the other host, from
/// the host itself and (hairpin) from another container on the same gateway bridge.
fn scenario_published_ports(main: &MainPlugin, br_netfilter: bool) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    set_br_netfilter(&lab, 0, br_netfilter);
    let c1 = Attachment::new("pub-c1", lab.container("c1"))
        .publish(8080, 80, "tcp")
        .publish(5353, 53, "udp");
    let c2 = Attachment::new("pub-c2", lab.container("c2"));
    let chain = chain(&lab, 0, main, json!({}));
    let r1 = chain
        .add(&lab, 0, &c1)
        .unwrap_or_else(|(i, out)| panic!("ADD of plugin {i}: {out:?}"));
    let r2 = chain
        .add(&lab, 0, &c2)
        .unwrap_or_else(|(i, out)| panic!("ADD of plugin {i}: {out:?}"));
    let gateway = "172.18.0.1";
    {
        let _tcp = TcpServer::start(&c1.ns, "0.0.0.0:80", "c1");
        let _udp = UdpServer::start(&c1.ns, "0.0.0.0:53", "c1");
        let host = lab.host(0).addr.clone();
        let tcp_to = format!("{host}:8080");
        let udp_to = format!("{host}:5353");
        // (who asks, the address c1 sees: clients outside keep theirs, local ones are masqueraded)
        let askers = [
            (
                lab.internet.clone(),
                format!("{}.1", testutils::lab::UNDERLAY),
            ),
            (lab.host(1).ns.clone(), lab.host(1).addr.clone()),
            (lab.host(0).ns.clone(), gateway.to_string()),
            (c2.ns.clone(), gateway.to_string()),
        ];
        for (ns, seen) in &askers {
            let got = eventually(&format!("tcp {tcp_to} from {ns}"), || tcp_ask(ns, &tcp_to));
            assert_eq!(got, format!("c1 {seen}"), "tcp from {ns}");
            let got = eventually(&format!("udp {udp_to} from {ns}"), || udp_ask(ns, &udp_to));
            assert_eq!(got, format!("c1 {seen}"), "udp from {ns}");
        }
    }
    let table = nft_table(&lab, 0);
    assert!(table.contains("tcp dport 8080 dnat ip to"), "{table}");
    assert!(
        table.contains(&format!("comment \"{NET}:pub-c1/gwb0\"")),
        "{table}"
    );
    assert_all_ok(&chain.del(&lab, 0, &c1, Some(&r1)));
    assert!(
        !nft_table(&lab, 0).contains("8080"),
        "the mapping outlived DEL"
    );
    assert_all_ok(&chain.del(&lab, 0, &c2, Some(&r2)));
}

/// icc=false (default): containers cannot reach each other over the gateway bridge, the host
/// reaches both. icc=true: they can.
fn scenario_isolation(main: &MainPlugin, br_netfilter: bool) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    set_br_netfilter(&lab, 0, br_netfilter);
    let isolated = chain(&lab, 0, main, json!({}));
    let a = Attachment::new("iso-a", lab.container("a"));
    let b = Attachment::new("iso-b", lab.container("b"));
    let ra = isolated
        .add(&lab, 0, &a)
        .unwrap_or_else(|(i, out)| panic!("{i}: {out:?}"));
    let rb = isolated
        .add(&lab, 0, &b)
        .unwrap_or_else(|(i, out)| panic!("{i}: {out:?}"));
    let (addr_a, addr_b) = (
        address_on(&ra, "gwb0", &a.netns_path),
        address_on(&rb, "gwb0", &b.netns_path),
    );
    assert!(lab.ping_within(&lab.host(0).ns, &addr_a, std::time::Duration::from_secs(5)));
    assert!(lab.ping(&lab.host(0).ns, &addr_b));
    assert!(lab.ping(&a.ns, "172.18.0.1"), "a cannot reach its gateway");
    assert!(
        !lab.ping(&a.ns, &addr_b),
        "icc=false but a reaches b over the gateway bridge"
    );
    assert!(
        !lab.ping(&b.ns, &addr_a),
        "icc=false but b reaches a over the gateway bridge"
    );
    // ...while the main network (eth0: the overlay, or the reference bridge) still joins them.
    let main_b = address_on(&rb, "eth0", &b.netns_path);
    assert!(
        lab.ping_within(&a.ns, &main_b, std::time::Duration::from_secs(5)),
        "a cannot reach b over the main network"
    );
    // Isolation is the bridge's job only where br_netfilter does not hand frames to nftables.
    let interfaces = ra["interfaces"].as_array().unwrap();
    let port = interfaces[interfaces.len() - 2]["name"].as_str().unwrap();
    let detail = in_ns(&lab.host(0).ns, &["ip", "-d", "link", "show", port]);
    assert_eq!(detail.contains("isolated on"), !br_netfilter, "{detail}");

    // Another network on its own bridge with icc=true.
    let mut open = chain(
        &lab,
        0,
        main,
        json!({"bridge": "gwicc", "ifname": "eth2", "icc": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "172.19.0.0/16"}]], "dataDir": ipam_dir(&lab, 0)}}),
    );
    open.name = "iccnet".into();
    open.plugins[0] = (main.config)(&lab, 0, 1);
    let c = Attachment::new("icc-c", lab.container("c"));
    let d = Attachment::new("icc-d", lab.container("d"));
    let rc = open
        .add(&lab, 0, &c)
        .unwrap_or_else(|(i, out)| panic!("{i}: {out:?}"));
    let rd = open
        .add(&lab, 0, &d)
        .unwrap_or_else(|(i, out)| panic!("{i}: {out:?}"));
    let addr_d = address_on(&rd, "eth2", &d.netns_path);
    assert!(
        lab.ping_within(&c.ns, &addr_d, std::time::Duration::from_secs(5)),
        "icc=true but c cannot reach d"
    );

    for (chain, att, r) in [
        (&isolated, &a, &ra),
        (&isolated, &b, &rb),
        (&open, &c, &rc),
        (&open, &d, &rd),
    ] {
        assert_all_ok(&chain.del(&lab, 0, att, Some(r)));
    }
}

/// A host port and protocol published by one container is refused to another with 106, naming
/// port and holder, and the host is left exactly as it was; the same port over udp is free.
fn scenario_port_in_use(main: &MainPlugin) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let chain = chain(&lab, 0, main, json!({}));
    let c1 = Attachment::new("taken-c1", lab.container("c1")).publish(8080, 80, "tcp");
    let r1 = chain
        .add(&lab, 0, &c1)
        .unwrap_or_else(|(i, out)| panic!("{i}: {out:?}"));

    let c2 = Attachment::new("taken-c2", lab.container("c2")).publish(8080, 8080, "tcp");
    let main_only = lab.run_on(0, &chain.invocation("ADD", 0, &c2, None)).ok();
    let before = host_state(&lab, 0);
    let out = lab.run_on(0, &chain.invocation("ADD", 1, &c2, Some(&main_only)));
    let err = out.err(106);
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("8080/tcp") && msg.contains("taken-c1/gwb0"),
        "{msg}"
    );
    assert_eq!(
        host_state(&lab, 0),
        before,
        "a refused ADD changed the host"
    );
    assert!(!try_in_ns(&c2.ns, &["ip", "link", "show", "gwb0"]));

    let c2 = Attachment {
        port_mappings: vec![json!({"hostPort": 8080, "containerPort": 80, "protocol": "udp"})],
        ..c2
    };
    let r2 = lab
        .run_on(0, &chain.invocation("ADD", 1, &c2, Some(&main_only)))
        .ok();
    assert_all_ok(&chain.del(&lab, 0, &c2, Some(&r2)));
    assert_all_ok(&chain.del(&lab, 0, &c1, Some(&r1)));

    // Two ADDs for the same port at once: the per-host lock lets exactly one through.
    let racers: Vec<Attachment> = (0..2)
        .map(|n| {
            Attachment::new(&format!("race-{n}"), lab.container(&format!("race{n}")))
                .publish(7070, 80, "tcp")
        })
        .collect();
    let prevs: Vec<Value> = racers
        .iter()
        .map(|a| lab.run_on(0, &chain.invocation("ADD", 0, a, None)).ok())
        .collect();
    let outs: Vec<testutils::Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = racers
            .iter()
            .zip(&prevs)
            .map(|(a, prev)| {
                let inv = chain.invocation("ADD", 1, a, Some(prev));
                let lab = &lab;
                scope.spawn(move || lab.run_on(0, &inv))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = (0..2).filter(|&n| outs[n].code == 0).collect();
    assert_eq!(winners.len(), 1, "{outs:?}");
    let loser = 1 - winners[0];
    outs[loser].err(106);
    assert_eq!(nft_table(&lab, 0).matches("dport 7070").count(), 1);
    for n in 0..2 {
        let cached = if n == loser {
            prevs[n].clone()
        } else {
            outs[n].json()
        };
        assert_all_ok(&chain.del(&lab, 0, &racers[n], Some(&cached)));
    }
    assert!(!nft_table(&lab, 0).contains("cni_gwbridge"));
}

/// DEL leaves no rule, link, allocation or lock file behind; DEL twice and DEL without the
/// namespace succeed; an ADD that fails half-way undoes itself.
fn scenario_cleanup(main: &MainPlugin) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let chain = chain(&lab, 0, main, json!({}));
    // The main plugin alone once, so that what it leaves for good (its bridge) is in "before".
    let warm = Attachment::new("warm", lab.container("warm"));
    let main_only = Chain {
        name: chain.name.clone(),
        version: chain.version.clone(),
        plugins: vec![chain.plugins[0].clone()],
    };
    let rw = main_only
        .add(&lab, 0, &warm)
        .unwrap_or_else(|(i, out)| panic!("{i}: {out:?}"));
    assert_all_ok(&main_only.del(&lab, 0, &warm, Some(&rw)));
    let before = host_state(&lab, 0);
    assert!(!before.ruleset.contains("cni_gwbridge"));

    let c1 = Attachment::new("clean-c1", lab.container("c1")).publish(8080, 80, "tcp");
    let c2 = Attachment::new("clean-c2", lab.container("c2")).publish(5353, 53, "udp");
    let r1 = chain
        .add(&lab, 0, &c1)
        .unwrap_or_else(|(i, out)| panic!("{i}: {out:?}"));
    let r2 = chain
        .add(&lab, 0, &c2)
        .unwrap_or_else(|(i, out)| panic!("{i}: {out:?}"));
    let during = host_state(&lab, 0);
    assert!(during.links.contains("cni_gwbridge") && during.lock_file);
    assert_eq!(
        during
            .allocations
            .iter()
            .filter(|a| a.starts_with("cni_gwbridge/"))
            .count(),
        2
    );

    assert_all_ok(&chain.del(&lab, 0, &c1, Some(&r1)));
    assert_all_ok(&chain.del(&lab, 0, &c1, Some(&r1)));
    let half = host_state(&lab, 0);
    assert!(
        half.links.contains("cni_gwbridge"),
        "the bridge went while c2 still uses it"
    );
    assert!(!half.ruleset.contains("8080") && half.ruleset.contains("5353"));

    // c2's namespace is gone before its DEL.
    lab.remove_container(&c2.ns);
    let gone = Attachment {
        netns_path: String::new(),
        ..c2
    };
    assert_all_ok(&chain.del(&lab, 0, &gone, Some(&r2)));
    assert_all_ok(&chain.del(&lab, 0, &gone, None));
    assert_eq!(host_state(&lab, 0), before, "DEL left something behind");

    // gwb0 already in the container: ADD fails with 103 and undoes itself completely.
    let c3 = Attachment::new("clean-c3", lab.container("c3")).publish(8080, 80, "tcp");
    in_ns(
        &c3.ns,
        &[
            "ip", "link", "add", "gwb0", "type", "veth", "peer", "name", "gwb0p",
        ],
    );
    let r3 = lab.run_on(0, &chain.invocation("ADD", 0, &c3, None)).ok();
    lab.run_on(0, &chain.invocation("ADD", 1, &c3, Some(&r3)))
        .err(103);
    assert_all_ok(&main_only.del(&lab, 0, &c3, Some(&r3)));
    assert_eq!(
        host_state(&lab, 0),
        before,
        "a failed ADD left something behind"
    );
}

/// ADD of a new container `name` through `chain`: its attachment, result, and address on gwb0.
fn own_add(lab: &mut Lab, chain: &Chain, name: &str) -> (Attachment, Value, String) {
    let att = Attachment::new(name, lab.container(name));
    let r = chain
        .add(lab, 0, &att)
        .unwrap_or_else(|(i, out)| panic!("{name}: {i}: {out:?}"));
    let addr = address_on(&r, "gwb0", &att.netns_path);
    (att, r, addr)
}

/// Without an `ipam` section gwbridge-egress hands out the subnet itself: the lowest free
/// address after the gateway, a released one again first; a full subnet is code 101 with the
/// host left exactly as it was; the last DEL leaves the host as before, and no host-local
/// directory is made.
fn scenario_own_allocation(main: &MainPlugin) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let main_conf = (main.config)(&lab, 0, 0);
    // Our own /29: .1 the gateway, .2-.6 handed out, on a bridge of the test's own.
    let ours = json!({"type": "gwbridge-egress", "bridge": "gwown", "subnet": "172.20.9.0/29",
                      "capabilities": {"portMappings": true}});
    let chain = Chain::new(NET, vec![main_conf.clone(), ours]);
    let main_only = Chain::new(NET, vec![main_conf]);
    let warm = Attachment::new("own-warm", lab.container("warm"));
    let rw = main_only
        .add(&lab, 0, &warm)
        .unwrap_or_else(|(i, out)| panic!("{i}: {out:?}"));
    assert_all_ok(&main_only.del(&lab, 0, &warm, Some(&rw)));
    let before = host_state(&lab, 0);

    let (c1, r1, a1) = own_add(&mut lab, &chain, "own-c1");
    let (c2, r2, a2) = own_add(&mut lab, &chain, "own-c2");
    assert_eq!((a1.as_str(), a2.as_str()), ("172.20.9.2", "172.20.9.3"));
    let gw = r1["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ip| ip["address"] == "172.20.9.2/29")
        .unwrap_or_else(|| panic!("no 172.20.9.2/29 in {r1}"));
    assert_eq!(gw["gateway"], "172.20.9.1", "{r1}");
    assert!(
        in_ns(&lab.host(0).ns, &["ip", "-o", "addr", "show", "gwown"]).contains("172.20.9.1/29")
    );

    assert_all_ok(&chain.del(&lab, 0, &c1, Some(&r1)));
    let (c3, r3, a3) = own_add(&mut lab, &chain, "own-c3");
    assert_eq!(a3, "172.20.9.2", "the released address is handed out first");
    let mut rest = Vec::new();
    for (name, want) in [
        ("own-c4", "172.20.9.4"),
        ("own-c5", "172.20.9.5"),
        ("own-c6", "172.20.9.6"),
    ] {
        let (att, r, addr) = own_add(&mut lab, &chain, name);
        assert_eq!(addr, want);
        rest.push((att, r));
    }

    // Full: 101, and nothing of the refused ADD stays.
    let c7 = Attachment::new("own-c7", lab.container("c7"));
    let r7 = lab.run_on(0, &chain.invocation("ADD", 0, &c7, None)).ok();
    let full = host_state(&lab, 0);
    let err = lab
        .run_on(0, &chain.invocation("ADD", 1, &c7, Some(&r7)))
        .err(101);
    assert!(
        err["msg"].as_str().unwrap().contains("172.20.9.0/29"),
        "{err}"
    );
    assert_eq!(host_state(&lab, 0), full, "a refused ADD changed the host");
    assert!(!try_in_ns(&c7.ns, &["ip", "link", "show", "gwb0"]));
    assert_all_ok(&main_only.del(&lab, 0, &c7, Some(&r7)));

    for (att, r) in [(c2, r2), (c3, r3)].into_iter().chain(rest) {
        assert_all_ok(&chain.del(&lab, 0, &att, Some(&r)));
    }
    assert_eq!(host_state(&lab, 0), before, "DEL left something behind");
    assert!(
        !std::path::Path::new("/var/lib/cni/networks/gwown").exists(),
        "our own allocation made a host-local directory"
    );
}

/// A configuration with an `ipam` section beside one without, on one bridge and subnet: the
/// delegate's address that our own allocation already handed out is refused with 102, its lease
/// released, and the host left as it was.
fn scenario_pools_sharing_addresses(main: &MainPlugin) {
    let mut lab = Lab::new(1);
    let _locks = LockFiles::of(&lab);
    let main_conf = (main.config)(&lab, 0, 0);
    let ours = json!({"type": "gwbridge-egress", "bridge": "gwmix", "subnet": "172.20.8.0/29"});
    let theirs = gwbridge(
        &lab,
        0,
        json!({"bridge": "gwmix", "ipam": {"type": "host-local",
            "ranges": [[{"subnet": "172.20.8.0/29"}]], "dataDir": ipam_dir(&lab, 0)}}),
    );
    let own = Chain::new(NET, vec![main_conf.clone(), ours]);
    let delegated = Chain::new(NET, vec![main_conf, theirs]);
    let (a, ra, addr) = own_add(&mut lab, &own, "mix-a");
    assert_eq!(addr, "172.20.8.2");
    let b = Attachment::new("mix-b", lab.container("b"));
    let rb = lab
        .run_on(0, &delegated.invocation("ADD", 0, &b, None))
        .ok();
    let before = host_state(&lab, 0);
    let err = lab
        .run_on(0, &delegated.invocation("ADD", 1, &b, Some(&rb)))
        .err(102);
    assert!(err["msg"].as_str().unwrap().contains("172.20.8.2"), "{err}");
    assert_eq!(
        host_state(&lab, 0),
        before,
        "a refused ADD changed the host"
    );
    assert_all_ok(&own.del(&lab, 0, &a, Some(&ra)));
}

/// An upgraded host: a container that got its gateway address from host-local, the default before
/// gwbridge-egress allocated itself, has its lease released by DEL, and host-local's directory goes
/// with the last lease. (The directory is host-local's default, `/var/lib/cni/networks/<bridge>`,
/// on a bridge name of this test's own.)
fn scenario_legacy_lease_released() {
    let mut lab = Lab::new(1);
    let _locks = LockFiles::of(&lab);
    let bridge = "gwlegacy";
    let dir = std::path::Path::new("/var/lib/cni/networks").join(bridge);
    let _ = std::fs::remove_dir_all(&dir);
    let att = Attachment::new("legacy-c1", lab.container("c1"));
    // host-local as gwbridge-egress ran it: the bridge as network name, our ifname.
    let legacy = json!({"cniVersion": VERSION, "name": bridge, "type": "gwbridge-egress",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "172.18.0.0/16"}]]}});
    let host_local = |command: &str| {
        Invocation::new(find_plugin("host-local"), command)
            .attachment(&att.container_id, &att.netns_path, "gwb0")
            .env("CNI_PATH", &cni_path())
            .stdin(&legacy)
    };
    lab.run_on(0, &host_local("ADD")).ok();
    let leases = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("172.18."))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        leases().len(),
        1,
        "host-local made no lease in {}",
        dir.display()
    );

    let ours = Chain::new(
        NET,
        vec![json!({"type": "gwbridge-egress", "bridge": bridge})],
    );
    let out = lab.run_on(0, &ours.invocation("DEL", 0, &att, None));
    let cleanup = std::fs::remove_dir_all(&dir);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        cleanup.is_err(),
        "DEL left host-local's directory: {:?}",
        leases()
    );
}

/// No prevResult on ADD: code 7, nothing done.
fn scenario_no_prev_result(main: &MainPlugin) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let chain = chain(&lab, 0, main, json!({}));
    let c1 = Attachment::new("noprev", lab.container("c1"));
    let before = host_state(&lab, 0);
    let out = lab.run_on(0, &chain.invocation("ADD", 1, &c1, None));
    let err = out.err(7);
    assert!(err["msg"].as_str().unwrap().contains("prevResult"), "{err}");
    assert_eq!(host_state(&lab, 0), before);
}

/// CHECK passes after ADD (ours and the IPAM's) and fails (107) once gwb0 is removed by hand.
fn scenario_check(main: &MainPlugin) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let chain = chain(&lab, 0, main, json!({}));
    let c1 = Attachment::new("check-c1", lab.container("c1")).publish(8080, 80, "tcp");
    let r1 = chain
        .add(&lab, 0, &c1)
        .unwrap_or_else(|(i, out)| panic!("{i}: {out:?}"));
    chain.check(&lab, 0, &c1, 1, &r1).ok();
    if main.check_accepts_chained_addresses {
        chain.check(&lab, 0, &c1, 0, &r1).ok();
    }
    // A published port that is not in place is found too.
    let other = Attachment {
        port_mappings: vec![json!({"hostPort": 9090, "containerPort": 80})],
        ..Attachment::new("check-c1", (c1.ns.clone(), c1.netns_path.clone()))
    };
    let err = chain.check(&lab, 0, &other, 1, &r1).err(107);
    assert!(err["msg"].as_str().unwrap().contains("9090"), "{err}");

    in_ns(&c1.ns, &["ip", "link", "del", "gwb0"]);
    let err = chain.check(&lab, 0, &c1, 1, &r1).err(107);
    assert!(err["msg"].as_str().unwrap().contains("gwb0"), "{err}");
    assert_all_ok(&chain.del(&lab, 0, &c1, Some(&r1)));
}

/// bridge + gwbridge-egress + Debian's portmap + tuning + bandwidth: ADD, CHECK and DEL.
fn scenario_full_chain(main: &MainPlugin) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let mut chain = chain(&lab, 0, main, json!({}));
    chain.plugins.extend([
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        json!({"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}}),
        json!({"type": "bandwidth", "ingressRate": 8_000_000, "ingressBurst": 800_000,
               "egressRate": 8_000_000, "egressBurst": 800_000}),
    ]);
    let c1 = Attachment::new("full-c1", lab.container("c1")).publish(8080, 80, "tcp");
    let result = chain
        .add(&lab, 0, &c1)
        .unwrap_or_else(|(i, out)| panic!("ADD of plugin {i}: {out:?}"));
    assert_eq!(
        address_on(&result, "gwb0", &c1.netns_path)
            .split('.')
            .take(2)
            .collect::<Vec<_>>(),
        ["172", "18"]
    );
    assert!(lab.ping_within(&c1.ns, INTERNET_ADDR, std::time::Duration::from_secs(5)));
    assert_eq!(
        in_ns(&c1.ns, &["sysctl", "-n", "net.core.somaxconn"]).trim(),
        "512"
    );
    assert!(in_ns(&lab.host(0).ns, &["tc", "qdisc", "show"]).contains("tbf"));

    // How Debian's portmap CHECK does on the same host without gwbridge-egress in the chain.
    let portmap_alone = portmap_check_without_us(&mut lab, main);
    for i in 0..chain.plugins.len() {
        let out = chain.check(&lab, 0, &c1, i, &result);
        let kind = chain.plugins[i]["type"].as_str().unwrap();
        if i == 0 && !main.check_accepts_chained_addresses {
            // Debian's bridge 1.1.1 wants every prevResult address on eth0, ours included (and
            // its error lacks cniVersion, so it is read by hand).
            assert_ne!(
                out.code, 0,
                "the reference bridge's CHECK now accepts chained addresses"
            );
            assert!(
                out.stdout.contains("Failed to match addr 172.18."),
                "{}",
                out.stdout
            );
            continue;
        }
        if kind == "portmap" {
            if let Some(alone) = &portmap_alone {
                // portmap 1.1.1 with iptables-nft fails its CHECK looking for an ip6tables chain it
                // never made; it does so without gwbridge-egress too (`alone`).
                assert!(alone.contains("could not check ipv6 dnat"), "{alone}");
                assert!(
                    out.stdout.contains("could not check ipv6 dnat"),
                    "{}",
                    out.stdout
                );
                continue;
            }
        }
        assert_eq!(
            out.code, 0,
            "CHECK of {kind}: {} {}",
            out.stdout, out.stderr
        );
    }
    assert_all_ok(&chain.del(&lab, 0, &c1, Some(&result)));
    let after = host_state(&lab, 0);
    assert!(!after.ruleset.contains("cni_gwbridge"), "{}", after.ruleset);
    assert!(!after.links.contains("cni_gwbridge") && !after.lock_file);
    assert!(
        after.links.iter().all(|l| !l.starts_with("gw")),
        "{:?}",
        after.links
    );
    assert!(after.allocations.is_empty(), "{:?}", after.allocations);
}

/// Dual stack on the gateway bridge: both families on gwb0 with a default route each, IPv6
/// forwarding on, a published port reached over IPv6 from the host and (hairpin) from another
/// container, and everything gone after DEL.
fn scenario_dual_stack(main: &MainPlugin) {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let ipam = json!({"ipam": {"type": "host-local", "dataDir": ipam_dir(&lab, 0),
        "ranges": [[{"subnet": GW_SUBNET}], [{"subnet": "fd00:18::/64"}]]}});
    let chain = chain(&lab, 0, main, ipam);
    let c1 = Attachment::new("ds-c1", lab.container("c1")).publish(8080, 80, "tcp");
    let c2 = Attachment::new("ds-c2", lab.container("c2"));
    let r1 = chain
        .add(&lab, 0, &c1)
        .unwrap_or_else(|(i, out)| panic!("ADD of plugin {i}: {out:?}"));
    let r2 = chain
        .add(&lab, 0, &c2)
        .unwrap_or_else(|(i, out)| panic!("ADD of plugin {i}: {out:?}"));
    let ours: Vec<&Value> = r1["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ip| ip["gateway"] == "172.18.0.1" || ip["gateway"] == "fd00:18::1")
        .collect();
    assert_eq!(ours.len(), 2, "{r1}");
    assert!(in_ns(&c1.ns, &["ip", "-6", "route"]).contains("default via fd00:18::1 dev gwb0"));
    assert_eq!(
        in_ns(
            &lab.host(0).ns,
            &["sysctl", "-n", "net.ipv6.conf.all.forwarding"]
        )
        .trim(),
        "1"
    );
    let table = nft_table(&lab, 0);
    assert!(table.contains("dnat ip6 to [fd00:18::2]:80"), "{table}");
    assert!(
        table.contains("ip6 saddr fd00:18::/64 oifname != \"cni_gwbridge\" masquerade"),
        "{table}"
    );
    {
        let _server = TcpServer::start(&c1.ns, "[::]:80", "c1");
        for ns in [&lab.host(0).ns, &c2.ns] {
            let got = eventually(&format!("tcp [fd00:18::1]:8080 from {ns}"), || {
                tcp_ask(ns, "[fd00:18::1]:8080")
            });
            assert_eq!(got, "c1 fd00:18::1", "from {ns}");
        }
    }
    chain.check(&lab, 0, &c1, 1, &r1).ok();
    assert_all_ok(&chain.del(&lab, 0, &c1, Some(&r1)));
    assert_all_ok(&chain.del(&lab, 0, &c2, Some(&r2)));
    let after = host_state(&lab, 0);
    assert!(!after.ruleset.contains("cni_gwbridge") && !after.links.contains("cni_gwbridge"));
    assert!(after.allocations.is_empty(), "{:?}", after.allocations);
}

/// Runs main plugin + portmap (no gwbridge-egress) for a container of its own and returns
/// portmap's CHECK error, None when its CHECK passes.
fn portmap_check_without_us(lab: &mut Lab, main: &MainPlugin) -> Option<String> {
    let chain = Chain::new(
        "pmalone",
        vec![
            (main.config)(lab, 0, 1),
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ],
    );
    let att = Attachment::new("pm-alone", lab.container("pmalone")).publish(9999, 80, "tcp");
    let result = chain
        .add(lab, 0, &att)
        .unwrap_or_else(|(i, out)| panic!("ADD of plugin {i}: {out:?}"));
    let out = chain.check(lab, 0, &att, 1, &result);
    assert_all_ok(&chain.del(lab, 0, &att, Some(&result)));
    (out.code != 0).then_some(out.stdout)
}

/// GC (1.1.0) removes the rules, veth and allocation of attachments of this network that are not
/// valid, and nothing of valid ones or of other networks on the same bridge. The IPAM here is a
/// test double that speaks 1.1.0 (Debian's host-local 1.1.1 does not) and logs what it is asked.
fn scenario_gc() {
    let mut lab = Lab::new(2);
    let _locks = LockFiles::of(&lab);
    let ipam_dir = TempDir::new("gw-fake-ipam");
    let script = ipam_dir.path().join("fake-ipam");
    std::fs::write(&script, FAKE_IPAM).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", ipam_dir.path().display(), cni_path());
    let keep = Attachment::new("gc-keep", lab.container("keep")).publish(8080, 80, "tcp");
    let stale = Attachment::new("gc-stale", lab.container("stale")).publish(8081, 80, "tcp");
    let other = Attachment::new("gc-other", lab.container("other")).publish(8082, 80, "tcp");
    let run = |command: &str, network: &str, att: &Attachment, extra: Value| {
        let mut conf = json!({"cniVersion": "1.1.0", "name": network, "type": "gwbridge-egress",
            "ipam": {"type": "fake-ipam"}, "prevResult": {"cniVersion": "1.1.0"},
            "runtimeConfig": {"portMappings": att.port_mappings}});
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                conf[k] = v;
            }
        }
        let inv = Invocation::new(our_binary(), command)
            .attachment(&att.container_id, &att.netns_path, "eth0")
            .env("CNI_PATH", &path)
            .env("FAKE_IPAM_DIR", &ipam_dir.path().display().to_string())
            .stdin(&conf);
        lab.run_on(0, &inv)
    };
    run("ADD", "demo", &keep, json!({})).ok();
    let rs = run("ADD", "demo", &stale, json!({})).ok();
    run("ADD", "othernet", &other, json!({})).ok();
    let stale_veth = rs["interfaces"][0]["name"].as_str().unwrap().to_string();

    let inv = Invocation::new(our_binary(), "GC")
        .env("CNI_PATH", &path)
        .env("FAKE_IPAM_DIR", &ipam_dir.path().display().to_string())
        .stdin(
            &json!({"cniVersion": "1.1.0", "name": "demo", "type": "gwbridge-egress",
            "ipam": {"type": "fake-ipam"},
            "cni.dev/valid-attachments": [{"containerID": "gc-keep", "ifname": "eth0"}]}),
        );
    lab.run_on(0, &inv).ok();

    let table = nft_table(&lab, 0);
    assert!(
        !table.contains("8081") && !table.contains("gc-stale"),
        "{table}"
    );
    assert!(table.contains("8080") && table.contains("8082"), "{table}");
    assert!(!try_in_ns(
        &lab.host(0).ns,
        &["ip", "link", "show", &stale_veth]
    ));
    let log = std::fs::read_to_string(ipam_dir.path().join("log")).unwrap();
    assert!(log.lines().any(|l| l == "DEL gc-stale gwb0"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.starts_with("DEL gc-keep") || l.starts_with("DEL gc-other")),
        "{log}"
    );
    run(
        "CHECK",
        "demo",
        &keep,
        json!({"prevResult": check_prev_result(&keep)}),
    )
    .ok();

    // STATUS is the IPAM's.
    let status = Invocation::new(our_binary(), "STATUS")
        .env("CNI_PATH", &path)
        .env("FAKE_IPAM_DIR", &ipam_dir.path().display().to_string())
        .stdin(
            &json!({"cniVersion": "1.1.0", "name": "demo", "type": "gwbridge-egress",
            "ipam": {"type": "fake-ipam"}}),
        );
    lab.run_on(0, &status).ok();
    let log = std::fs::read_to_string(ipam_dir.path().join("log")).unwrap();
    assert!(log.lines().any(|l| l.starts_with("STATUS")), "{log}");

    run("DEL", "demo", &keep, json!({})).ok();
    run("DEL", "othernet", &other, json!({})).ok();
    run("DEL", "demo", &stale, json!({})).ok();
    assert!(!nft_table(&lab, 0).contains("cni_gwbridge"));
}

#[test]
fn egress_is_masqueraded_to_the_underlay_address() {
    scenario_egress(&reference_bridge());
}

#[test]
fn published_ports_are_reached_from_everywhere() {
    scenario_published_ports(&reference_bridge(), true);
}

#[test]
fn published_ports_are_reached_from_everywhere_without_br_netfilter() {
    scenario_published_ports(&reference_bridge(), false);
}

#[test]
fn containers_are_isolated_unless_icc() {
    scenario_isolation(&reference_bridge(), true);
}

#[test]
fn containers_are_isolated_unless_icc_without_br_netfilter() {
    scenario_isolation(&reference_bridge(), false);
}

#[test]
fn a_taken_host_port_is_refused_and_nothing_changes() {
    scenario_port_in_use(&reference_bridge());
}

#[test]
fn without_an_ipam_section_the_lowest_free_address_is_handed_out() {
    scenario_own_allocation(&reference_bridge());
}

#[test]
fn an_address_our_own_allocation_handed_out_is_refused_from_a_delegate() {
    scenario_pools_sharing_addresses(&reference_bridge());
}

#[test]
fn del_releases_a_lease_host_local_kept_before_the_upgrade() {
    scenario_legacy_lease_released();
}

#[test]
fn del_leaves_the_host_as_before() {
    scenario_cleanup(&reference_bridge());
}

#[test]
fn add_without_prev_result_is_code_7() {
    scenario_no_prev_result(&reference_bridge());
}

#[test]
fn check_passes_after_add_and_fails_without_gwb0() {
    scenario_check(&reference_bridge());
}

#[test]
fn chain_with_portmap_tuning_and_bandwidth() {
    scenario_full_chain(&reference_bridge());
}

#[test]
fn gc_removes_stale_attachments_only() {
    scenario_gc();
}

#[test]
fn dual_stack() {
    scenario_dual_stack(&reference_bridge());
}

// The same scenarios behind our own overlay, the chain overlayd's conflists use.

#[test]
fn overlay_egress_is_masqueraded_to_the_underlay_address() {
    scenario_egress(&vxlan_overlay());
}

#[test]
fn overlay_published_ports_are_reached_from_everywhere() {
    scenario_published_ports(&vxlan_overlay(), true);
}

#[test]
fn overlay_containers_are_isolated_on_the_gwbridge_unless_icc() {
    scenario_isolation(&vxlan_overlay(), true);
}

#[test]
fn overlay_del_leaves_the_host_as_before() {
    scenario_cleanup(&vxlan_overlay());
}

#[test]
fn overlay_check_passes_after_add_and_fails_without_gwb0() {
    scenario_check(&vxlan_overlay());
}

#[test]
fn overlay_chain_with_portmap_tuning_and_bandwidth() {
    scenario_full_chain(&vxlan_overlay());
}
