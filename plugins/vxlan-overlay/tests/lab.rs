//! vxlan-overlay on a lab of simulated hosts (network namespaces on an underlay), driven through the
//! plugin binaries as a runtime drives them, with etcd and one overlayd per host inside the lab.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::{names, Vni};
use netops::Netns;
use serde_json::{json, Value};
use testutils::lab::{bin_dir, cni_path, in_ns, veth, Lab, OverlayNet};
use testutils::{Invocation, Output};

/// The bridge and VXLAN device of a network on a host.
fn br(vni: u32) -> String {
    names::bridge(Vni::new(vni).unwrap())
}

fn vx(vni: u32) -> String {
    names::vxlan(Vni::new(vni).unwrap())
}

/// The plugin binary for `command`, with the lab's CNI_PATH.
fn plugin(command: &str) -> Invocation {
    Invocation::new(bin_dir().join("vxlan-overlay"), command).env("CNI_PATH", &cni_path())
}

fn call(
    lab: &Lab,
    host: usize,
    net: &OverlayNet,
    command: &str,
    container: &str,
    netns: &str,
) -> Output {
    let inv = plugin(command)
        .attachment(container, netns, "eth0")
        .env(
            "CNI_ARGS",
            &format!("IgnoreUnknown=1;K8S_POD_NAME={container}"),
        )
        .stdin(&net.config(lab, host));
    lab.run_on(host, &inv)
}

/// The first address of an ADD's result, without its prefix length.
fn first_address(result: &Value) -> String {
    let address = result["ips"][0]["address"].as_str().unwrap();
    address.split('/').next().unwrap().to_string()
}

/// ADD of a new container namespace named `name` on `host`; returns (namespace, address without prefix, result).
fn add(lab: &mut Lab, host: usize, net: &OverlayNet, name: &str) -> (String, String, Value) {
    let (ns, path) = lab.container(name);
    let result = call(lab, host, net, "ADD", name, &path).ok();
    (ns, first_address(&result), result)
}

/// CHECK of container `name` (namespace `ns`) on `host` against the result of its ADD.
fn check(lab: &Lab, host: usize, net: &OverlayNet, name: &str, ns: &str, prev: &Value) -> Output {
    let mut conf = net.config(lab, host);
    conf["prevResult"] = prev.clone();
    let inv = plugin("CHECK")
        .attachment(name, &format!("/run/netns/{ns}"), "eth0")
        .stdin(&conf);
    lab.run_on(host, &inv)
}

fn del(lab: &Lab, host: usize, net: &OverlayNet, name: &str) {
    let inv = plugin("DEL")
        .attachment(name, "", "eth0")
        .stdin(&net.config(lab, host));
    lab.run_on(host, &inv).ok();
}

/// GC of `net` on host 0 with `keep` (ifname eth0) the one valid attachment.
fn gc_keeping(lab: &Lab, net: &OverlayNet, keep: &str) {
    let mut conf = net.config(lab, 0);
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": keep, "ifname": "eth0"}]);
    lab.run_on(0, &plugin("GC").stdin(&conf)).ok();
}

fn start_overlayd(lab: &mut Lab, host: usize) {
    start_overlayd_with(lab, host, &[]);
}

/// overlayd on `host` with more flags, its log in the lab's directory; its PID once registered.
fn start_overlayd_with(lab: &mut Lab, host: usize, flags: &[&str]) -> u32 {
    let (ns, node, ep) = (
        lab.host(host).ns.clone(),
        lab.host(host).name.clone(),
        lab.etcd_endpoint.clone(),
    );
    let bin = bin_dir().join("overlayd");
    let log = lab.dir().join(format!("overlayd-{node}.log"));
    let mut args = vec!["--etcd", &ep, "--node", &node, "--no-conflists"];
    args.extend_from_slice(flags);
    let pid = lab.spawn_logged(
        &format!("overlayd-{node}"),
        &ns,
        bin.to_str().unwrap(),
        &args,
        &log,
    );
    // Registered once its node record is in etcd.
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = format!("/cni-overlay/nodes/{node}");
    while Instant::now() < deadline {
        if !lab.etcdctl(&["get", &key, "--keys-only"]).trim().is_empty() {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("overlayd on {node} did not register");
}

/// The host's links, without their operational state (a bridge goes from UNKNOWN to UP on its
/// own as its ports come up; that is not a change anyone made).
fn links(ns: &str) -> String {
    in_ns(ns, &["ip", "-o", "link", "show"])
        .lines()
        .map(|l| {
            l.split(" state ").next().unwrap_or(l).to_string()
                + l.split(" state ")
                    .nth(1)
                    .map_or("", |r| r.split_once(' ').map_or("", |x| x.1))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The nftables tables of namespace `ns`, one per line (`table inet cni_overlay`).
fn nft_tables(ns: &str) -> String {
    in_ns(ns, &["nft", "list", "tables"])
}

/// How many packets the isolation drop rule of `bridge` has dropped in namespace `ns`.
fn isolation_drops(ns: &str, bridge: &str) -> u64 {
    let table = in_ns(ns, &["nft", "list", "table", "inet", "cni_overlay"]);
    let line = table
        .lines()
        .find(|l| l.contains(&format!("\"bridge {bridge} isolation drop\"")))
        .unwrap_or_else(|| panic!("no drop rule for {bridge}:\n{table}"));
    line.split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {line}"))
}

#[test]
fn containers_on_two_hosts_ping_each_other_right_after_add() {
    let mut lab = Lab::new(2);
    start_overlayd(&mut lab, 0);
    start_overlayd(&mut lab, 1);
    let net = OverlayNet::new("demo", 4242, "10.0.0.0/24");
    let (c1, a1, r1) = add(&mut lab, 0, &net, "test1");
    let (c2, a2, _) = add(&mut lab, 1, &net, "test2");
    assert_eq!((a1.as_str(), a2.as_str()), ("10.0.0.2", "10.0.0.3"));
    assert!(
        lab.ping_within(&c2, &a1, Duration::from_secs(2)),
        "test2 (node2) cannot reach test1 (node1)"
    );
    assert!(
        lab.ping_within(&c1, &a2, Duration::from_secs(2)),
        "test1 (node1) cannot reach test2 (node2)"
    );
    // The result: bridge and host veth without sandbox, the container interface with sandbox and MAC.
    assert_eq!(r1["interfaces"][2]["name"], "eth0");
    assert!(r1["interfaces"][2]["sandbox"]
        .as_str()
        .unwrap()
        .starts_with("/run/netns/"));
    assert!(r1["interfaces"][1].get("sandbox").is_none());
    assert_eq!(r1["ips"][0]["interface"], 2);
    // An IPv4-only network: the container's interface makes no IPv6 address of its own (no
    // link-local address, DAD or MLD); its loopback keeps ::1.
    assert!(in_ns(&c1, &["ip", "-d", "link", "show", "eth0"]).contains("addrgenmode none"));
    assert_eq!(
        in_ns(&c1, &["ip", "-6", "-o", "addr", "show", "dev", "eth0"]),
        ""
    );
    assert!(in_ns(&c1, &["ip", "-6", "-o", "addr", "show", "dev", "lo"]).contains("::1"));
}

#[test]
fn mtu_is_underlay_less_50_and_check_passes_then_fails() {
    let mut lab = Lab::new(1);
    let net = OverlayNet::new("mtu", 77, "10.7.0.0/24");
    let (c1, _, result) = add(&mut lab, 0, &net, "m1");
    let mtu = in_ns(&c1, &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1450");
    check(&lab, 0, &net, "m1", &c1, &result).ok();
    in_ns(&c1, &["ip", "link", "set", "eth0", "mtu", "1300"]);
    check(&lab, 0, &net, "m1", &c1, &result).err(107);
}

#[test]
fn two_networks_on_one_subnet_stay_apart() {
    let mut lab = Lab::new(2);
    start_overlayd(&mut lab, 0);
    start_overlayd(&mut lab, 1);
    let a = OverlayNet::new("neta", 100, "10.10.0.0/24");
    let mut b = OverlayNet::new("netb", 200, "10.10.0.0/24");
    b.ipam["rangeStart"] = json!("10.10.0.100");
    let (a1, _, _) = add(&mut lab, 0, &a, "a1");
    let (_, a2_addr, _) = add(&mut lab, 1, &a, "a2");
    let (b1, _, _) = add(&mut lab, 0, &b, "b1");
    let (_, b2_addr, _) = add(&mut lab, 1, &b, "b2");
    assert!(lab.ping_within(&a1, &a2_addr, Duration::from_secs(2)));
    assert!(lab.ping_within(&b1, &b2_addr, Duration::from_secs(2)));
    assert!(!lab.ping(&a1, &b2_addr), "a container of neta reached netb");
    assert!(!lab.ping(&b1, &a2_addr), "a container of netb reached neta");
}

#[test]
fn host_access_false_keeps_the_host_out_and_true_lets_it_in() {
    let mut lab = Lab::new(1);
    let closed = OverlayNet::new("closed", 300, "10.30.0.0/24");
    let mut open = OverlayNet::new("open", 301, "10.31.0.0/24");
    open.extra = json!({"hostAccess": true});
    let (_, closed_addr, _) = add(&mut lab, 0, &closed, "c1");
    let (_, open_addr, _) = add(&mut lab, 0, &open, "o1");
    let host = lab.host(0).ns.clone();
    assert!(
        !lab.ping(&host, &closed_addr),
        "the host reached a hostAccess=false network"
    );
    assert!(
        lab.ping(&host, &open_addr),
        "the host cannot reach its container on a hostAccess=true network"
    );
    assert!(
        !in_ns(&host, &["ip", "route"]).contains("10.30.0.0/24"),
        "the host has a route into the closed overlay"
    );
}

#[test]
fn host_access_networks_are_not_reachable_through_the_host_from_each_other() {
    let mut lab = Lab::new(1);
    let host = lab.host(0).ns.clone();
    // The host routes between its interfaces, as with gwbridge-egress or on Kubernetes hosts: in
    // the simulated host's namespace only.
    in_ns(&host, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let mut a = OverlayNet::new("isoa", 410, "10.41.0.0/24");
    a.extra = json!({"hostAccess": true});
    let mut b = OverlayNet::new("isob", 420, "10.42.0.0/24");
    b.extra = json!({"hostAccess": true});
    let (a1, a1_addr, a1_result) = add(&mut lab, 0, &a, "a1");
    let (b1, b1_addr, _) = add(&mut lab, 0, &b, "b1");
    let check_a1 = |lab: &Lab| check(lab, 0, &a, "a1", &a1, &a1_result);
    check_a1(&lab).ok();
    // Each container sends the other network's subnet to its gateway: the host's address on its
    // bridge, which has a route to the other bridge.
    in_ns(
        &b1,
        &["ip", "route", "add", "10.41.0.0/24", "via", "10.42.0.1"],
    );
    in_ns(
        &a1,
        &["ip", "route", "add", "10.42.0.0/24", "via", "10.41.0.1"],
    );

    assert!(lab.ping(&host, &a1_addr), "the host cannot reach a1");
    assert!(lab.ping(&host, &b1_addr), "the host cannot reach b1");
    let tables = nft_tables(&host);
    assert!(tables.contains("table inet cni_overlay"), "{tables}");
    assert_eq!(
        (
            isolation_drops(&host, &br(410)),
            isolation_drops(&host, &br(420))
        ),
        (0, 0)
    );
    assert!(!lab.ping(&b1, &a1_addr), "b1 reached a1 through the host");
    assert!(!lab.ping(&a1, &b1_addr), "a1 reached b1 through the host");
    // The isolation rules are what stopped them.
    assert!(isolation_drops(&host, &br(410)) > 0);
    assert!(isolation_drops(&host, &br(420)) > 0);

    // A connection the host DNATs (a Kubernetes service or NodePort) still reaches a1 from b1.
    in_ns(&host, &["nft", "add", "table", "ip", "svc"]);
    in_ns(
        &host,
        &[
            "nft",
            "add",
            "chain",
            "ip",
            "svc",
            "pre",
            "{ type nat hook prerouting priority dstnat; }",
        ],
    );
    in_ns(
        &host,
        &[
            "nft",
            "add",
            "rule",
            "ip",
            "svc",
            "pre",
            "ip",
            "daddr",
            "10.96.0.10",
            "dnat",
            "to",
            &a1_addr,
        ],
    );
    in_ns(
        &b1,
        &["ip", "route", "add", "10.96.0.0/12", "via", "10.42.0.1"],
    );
    assert!(
        lab.ping_within(&b1, "10.96.0.10", Duration::from_secs(2)),
        "a DNATed connection into a hostAccess network was dropped"
    );
    in_ns(&host, &["nft", "delete", "table", "ip", "svc"]);

    // Without the rules the host does route b1 to a1; the next ADD of the network puts them back.
    in_ns(&host, &["nft", "delete", "table", "inet", "cni_overlay"]);
    assert!(
        lab.ping_within(&b1, &a1_addr, Duration::from_secs(2)),
        "b1 cannot reach a1 even without the isolation rules: the test proves nothing"
    );
    let missing = check_a1(&lab).err(107);
    assert!(
        missing["msg"]
            .as_str()
            .unwrap()
            .contains(&format!("isolation rules of {}", br(410))),
        "{missing}"
    );
    let (a2, _, _) = add(&mut lab, 0, &a, "a2");
    check_a1(&lab).ok();
    assert!(!lab.ping(&b1, &a1_addr), "the isolation did not come back");
    // Containers of one network still reach each other over the bridge.
    assert!(lab.ping_within(&a2, &a1_addr, Duration::from_secs(2)));

    // B's rules were deleted by hand above and not added since: its last DEL finds none and leaves
    // A's alone; A's go with A's last container.
    del(&lab, 0, &b, "b1");
    let table = in_ns(&host, &["nft", "list", "table", "inet", "cni_overlay"]);
    assert!(
        table.contains(&format!("bridge {} isolation drop", br(410))) && !table.contains(&br(420)),
        "{table}"
    );
    del(&lab, 0, &a, "a1");
    assert!(
        nft_tables(&host).contains("cni_overlay"),
        "a2 still needs the isolation"
    );
    del(&lab, 0, &a, "a2");
    assert!(
        in_ns(&host, &["nft", "list", "ruleset"]).trim().is_empty(),
        "nftables kept something after the last DEL:\n{}",
        in_ns(&host, &["nft", "list", "ruleset"])
    );
    assert!(!links(&host).contains(&br(410)) && !links(&host).contains(&br(420)));
}

#[test]
fn host_access_turned_off_before_the_last_del_still_takes_the_isolation_away() {
    let mut lab = Lab::new(1);
    let host = lab.host(0).ns.clone();
    let before = links(&host);
    let mut net = OverlayNet::new("isoc", 440, "10.44.0.0/24");
    net.extra = json!({"hostAccess": true});
    add(&mut lab, 0, &net, "h1");
    assert!(nft_tables(&host).contains("cni_overlay"));
    // The operator edited the conflist in between: the DEL says hostAccess false.
    net.extra = json!({"hostAccess": false});
    del(&lab, 0, &net, "h1");
    assert_eq!(links(&host), before);
    assert!(
        in_ns(&host, &["nft", "list", "ruleset"]).trim().is_empty(),
        "the isolation rules outlived their bridge:\n{}",
        in_ns(&host, &["nft", "list", "ruleset"])
    );
}

#[test]
fn host_access_add_is_undone_when_the_isolation_cannot_be_added() {
    let mut lab = Lab::new(1);
    let host = lab.host(0).ns.clone();
    let before = links(&host);
    // An `nft` that always fails, found first on PATH by the plugin.
    let fake = lab.host(0).dir.join("failing-nft");
    std::fs::create_dir_all(&fake).unwrap();
    let script = fake.join("nft");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'simulated nft failure' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut net = OverlayNet::new("isof", 430, "10.43.0.0/24");
    net.extra = json!({"hostAccess": true});
    let (_, path) = lab.container("f1");
    let inv = plugin("ADD")
        .attachment("f1", &path, "eth0")
        .env(
            "PATH",
            &format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", fake.display()),
        )
        .stdin(&net.config(&lab, 0));
    let err = lab.run_on(0, &inv).err(105);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("simulated nft failure"),
        "{err}"
    );
    assert_eq!(links(&host), before, "the failed ADD left links");
    assert!(
        lab.etcd_keys("/cni-overlay/ipam/isof/owners/").is_empty(),
        "the allocation leaked"
    );
    assert!(lab.etcd_keys("/cni-overlay/endpoints/isof/").is_empty());
    assert!(!nft_tables(&host).contains("cni_overlay"));
}

#[test]
fn del_leaves_no_link_entry_namespace_or_record() {
    let mut lab = Lab::new(2);
    start_overlayd(&mut lab, 0);
    start_overlayd(&mut lab, 1);
    let before: Vec<String> = (0..2).map(|i| links(&lab.host(i).ns)).collect();
    let net = OverlayNet::new("clean", 555, "10.55.0.0/24");
    let (c1, _, _) = add(&mut lab, 0, &net, "x1");
    let (_, a2, r2) = add(&mut lab, 1, &net, "x2");
    let mac2 = r2["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sandbox"].is_string())
        .and_then(|i| i["mac"].as_str())
        .unwrap()
        .to_string();
    assert!(lab.ping_within(&c1, &a2, Duration::from_secs(2)));
    // The ping taught node1's bridge where x2's MAC is (on the VXLAN port).
    assert!(in_ns(&lab.host(0).ns, &["bridge", "fdb", "show", "br", &br(555)]).contains(&mac2));
    // Without hostAccess nothing of ours is in nftables, at any time.
    for i in 0..2 {
        assert!(
            !nft_tables(&lab.host(i).ns).contains("cni_overlay"),
            "a hostAccess=false network made the isolation table"
        );
    }
    let fdb_before = fdb(&lab, 0, 555);
    assert!(
        fdb_before.contains("dst 192.168.205.11"),
        "no FDB entry for the remote endpoint: {fdb_before}"
    );
    // DEL on node2: node1 loses the FDB and neighbour entries of x2 (overlayd), node2 loses everything.
    del(&lab, 1, &net, "x2");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let entries = fdb(&lab, 0, 555);
        let neigh = in_ns(&lab.host(0).ns, &["ip", "neigh", "show", "dev", &vx(555)]);
        let learnt = in_ns(&lab.host(0).ns, &["bridge", "fdb", "show", "br", &br(555)]);
        if !entries.contains("192.168.205.11") && !neigh.contains(&a2) && !learnt.contains(&mac2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node1 kept entries of a deleted endpoint: {entries} {neigh} {learnt}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        links(&lab.host(1).ns),
        before[1],
        "node2 kept links after its last DEL"
    );
    del(&lab, 0, &net, "x1");
    del(&lab, 0, &net, "x1");
    assert_eq!(links(&lab.host(0).ns), before[0], "node1 kept links");
    for i in 0..2 {
        assert!(!nft_tables(&lab.host(i).ns).contains("cni_overlay"));
    }
    assert!(
        Lab::namespaces_starting_with(&format!("{}555-", names::SANDBOX_PREFIX)).is_empty(),
        "a sandbox namespace was left"
    );
    assert!(lab.etcd_keys("/cni-overlay/endpoints/clean/").is_empty());
    assert!(lab.etcd_keys("/cni-overlay/ipam/clean/owners/").is_empty());
    assert!(lab.etcd_keys("/cni-overlay/ipam/clean/ips/").is_empty());
    for i in 0..2 {
        let lock = lock_file(&lab, i, "vni555");
        assert!(!lock.exists(), "{} was left", lock.display());
    }
}

/// A Docker container on the same network and host (overlayd's driver: a macvlan child of the
/// bridge, its MAC local to the bridge) keeps the devices past the last CNI container's DEL; once
/// its entry is gone, a DEL removes them.
#[test]
fn a_local_entry_of_a_macvlan_child_keeps_the_devices_past_the_last_del() {
    let mut lab = Lab::new(1);
    let host = lab.host(0).ns.clone();
    let before = links(&host);
    let net = OverlayNet::new("mixed", 557, "10.57.0.0/24");
    let (_, a1, _) = add(&mut lab, 0, &net, "m1");
    assert!(!a1.is_empty(), "ADD failed");
    let mac = "02:42:0a:39:00:63";
    in_ns(
        &host,
        &[
            "bridge",
            "fdb",
            "add",
            mac,
            "dev",
            &br(557),
            "self",
            "local",
        ],
    );
    del(&lab, 0, &net, "m1");
    assert!(
        links(&host).contains(&br(557)),
        "the last CNI DEL removed the bridge under a macvlan child"
    );
    in_ns(
        &host,
        &["bridge", "fdb", "del", mac, "dev", &br(557), "self"],
    );
    del(&lab, 0, &net, "m1");
    assert_eq!(
        links(&host),
        before,
        "the devices stayed once nothing was attached"
    );
}

/// vxlan-overlay's lock file of a network (`vni<N>`) or of the isolation table on a lab host.
fn lock_file(lab: &Lab, host: usize, what: &str) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(format!("/run/netns/{}", lab.host(host).ns))
        .unwrap()
        .ino();
    format!("/run/cni-overlay/locks/{inode}-{what}.lock").into()
}

#[test]
fn adds_and_last_dels_racing_on_one_host_stay_consistent() {
    // Every round: four containers come and go at once, so the network's devices and its lock
    // file are made and removed again and again while others wait on the lock.
    let mut lab = Lab::new(1);
    let net = OverlayNet::new("churn", 778, "10.78.0.0/24");
    let paths: Vec<(String, String)> = (0..4).map(|i| lab.container(&format!("k{i}"))).collect();
    for round in 0..6 {
        std::thread::scope(|s| {
            for (i, (_, path)) in paths.iter().enumerate() {
                let (lab, net, paths) = (&lab, &net, &paths);
                s.spawn(move || {
                    // Staggered: some DELs overlap the next ADDs.
                    std::thread::sleep(Duration::from_millis(7 * i as u64));
                    let name = format!("k{i}");
                    call(lab, 0, net, "ADD", &name, path).ok();
                    // On the network's bridge, with its gateway sandbox, however the race went.
                    let (ns, _) = &paths[i];
                    assert!(
                        lab.ping_within(ns, "10.78.0.1", Duration::from_secs(2)),
                        "round {round}: {name} cannot reach the gateway"
                    );
                    del(lab, 0, net, &name);
                });
            }
        });
        let left = links(&lab.host(0).ns);
        assert!(
            !left.contains(&br(778)),
            "round {round}: devices left:\n{left}"
        );
        assert!(
            !lock_file(&lab, 0, "vni778").exists(),
            "round {round}: lock file left"
        );
    }
    assert!(lab.etcd_keys("/cni-overlay/ipam/churn/ips/").is_empty());
}

#[test]
fn an_add_finding_the_bridge_half_made_completes_it_and_a_strangers_is_refused() {
    // A first ADD makes ovbr<vni> and names it (its alias) in two netlink messages, under the
    // network's lock; a concurrent ADD looking in between, or any ADD after one killed in between,
    // sees the bridge without its alias. That is this exact state, made deterministically.
    let mut lab = Lab::new(1);
    let host_ns = lab.host(0).ns.clone();
    let net = OverlayNet::new("half", 779, "10.79.0.0/24");
    let conf = net.config(&lab, 0);
    let cfg = vxlan_overlay::config::OverlayConfig::from_netconf(
        &cni::NetConf::parse(conf.to_string().as_bytes()).unwrap(),
    )
    .unwrap();
    let mac = cfg.bridge_mac().to_string();
    in_ns(
        &host_ns,
        &[
            "ip",
            "link",
            "add",
            &br(779),
            "address",
            &mac,
            "type",
            "bridge",
        ],
    );
    let (ns, _, result) = add(&mut lab, 0, &net, "h1");
    let shown = in_ns(&host_ns, &["ip", "-d", "link", "show", &br(779)]);
    assert!(
        shown.contains(&format!("alias {}", names::bridge_alias("half"))),
        "{shown}"
    );
    assert_eq!(result["interfaces"][0]["mac"], json!(mac));
    assert!(lab.ping_within(&ns, "10.79.0.1", Duration::from_secs(2)));
    del(&lab, 0, &net, "h1");
    assert!(!links(&host_ns).contains(&br(779)));

    // A bridge of that name without the alias and without our MAC is a stranger's: the VNI is
    // taken (7), and nothing changes.
    in_ns(
        &host_ns,
        &[
            "ip",
            "link",
            "add",
            &br(779),
            "address",
            "02:00:00:00:07:79",
            "type",
            "bridge",
        ],
    );
    let host_links = links(&host_ns);
    let keys = lab.etcd_keys("/cni-overlay/");
    let (_, path) = lab.container("h2");
    let refused = call(&lab, 0, &net, "ADD", "h2", &path).err(7);
    assert!(
        refused["msg"]
            .as_str()
            .unwrap()
            .contains("vni 779 is already used"),
        "{refused}"
    );
    del(&lab, 0, &net, "h2");
    assert_eq!(links(&host_ns), host_links);
    assert_eq!(lab.etcd_keys("/cni-overlay/"), keys);
}

#[test]
fn the_bridge_keeps_the_mac_the_result_reports() {
    let mut lab = Lab::new(1);
    let net = OverlayNet::new("bmac", 780, "10.80.0.0/24");
    let (_, _, first) = add(&mut lab, 0, &net, "m1");
    let (_, _, second) = add(&mut lab, 0, &net, "m2");
    let shown = in_ns(
        &lab.host(0).ns,
        &["cat", &format!("/sys/class/net/{}/address", br(780))],
    );
    assert_eq!(first["interfaces"][0]["name"], json!(br(780)));
    assert_eq!(first["interfaces"][0]["mac"], json!(shown.trim()));
    assert_eq!(second["interfaces"][0]["mac"], json!(shown.trim()));
    del(&lab, 0, &net, "m1");
    del(&lab, 0, &net, "m2");
}

#[test]
fn del_works_after_the_namespace_is_gone() {
    let mut lab = Lab::new(1);
    let net = OverlayNet::new("gone", 66, "10.66.0.0/24");
    let (c1, _, _) = add(&mut lab, 0, &net, "g1");
    lab.remove_container(&c1);
    let inv = plugin("DEL")
        .attachment("g1", &format!("/run/netns/{c1}"), "eth0")
        .stdin(&net.config(&lab, 0));
    lab.run_on(0, &inv).ok();
    assert!(!links(&lab.host(0).ns).contains(&br(66)));
    assert!(lab.etcd_keys("/cni-overlay/ipam/gone/owners/").is_empty());
}

#[test]
fn overlayd_killed_and_restarted_converges() {
    let mut lab = Lab::new(2);
    start_overlayd(&mut lab, 0);
    start_overlayd(&mut lab, 1);
    let net = OverlayNet::new("conv", 88, "10.88.0.0/24");
    let (c1, _, _) = add(&mut lab, 0, &net, "k1");
    let node1 = lab.host(0).name.clone();
    lab.kill(&format!("overlayd-{node1}"));
    // While node1's agent is down, a container appears on node2: node1 cannot answer it yet.
    let (c2, a2, _) = add(&mut lab, 1, &net, "k2");
    let a1 = in_ns(&c1, &["ip", "-4", "-o", "addr", "show", "eth0"]);
    let a1 = a1
        .split_whitespace()
        .nth(3)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    start_overlayd(&mut lab, 0);
    assert!(
        lab.ping_within(&c2, &a1, Duration::from_secs(3)),
        "node1 did not converge after overlayd restarted"
    );
    assert!(lab.ping_within(&c1, &a2, Duration::from_secs(3)));
}

#[test]
fn twenty_containers_on_three_hosts_all_reach_each_other() {
    let mut lab = Lab::new(3);
    for h in 0..3 {
        start_overlayd(&mut lab, h);
    }
    let net = OverlayNet::new("many", 9000, "10.90.0.0/24");
    let mut containers = Vec::new();
    for i in 0..20 {
        containers.push(add(&mut lab, i % 3, &net, &format!("m{i}")));
    }
    let mut failures = Vec::new();
    for (from, _, _) in &containers {
        for (to, addr, _) in &containers {
            if from != to && !lab.ping_within(from, addr, Duration::from_secs(2)) {
                failures.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(failures.is_empty(), "unreachable pairs: {failures:?}");
}

#[test]
fn host_local_works_as_the_ipam() {
    let mut lab = Lab::new(1);
    let mut net = OverlayNet::new("hl", 123, "");
    net.ipam = json!({"type": "host-local", "subnet": "10.123.0.0/24"});
    let (c1, a1, _) = add(&mut lab, 0, &net, "h1");
    let (_, a2, _) = add(&mut lab, 0, &net, "h2");
    assert!(a1.starts_with("10.123.0."));
    assert!(lab.ping_within(&c1, &a2, Duration::from_secs(2)));
    del(&lab, 0, &net, "h1");
    del(&lab, 0, &net, "h2");
    assert!(!links(&lab.host(0).ns).contains(&br(123)));
}

#[test]
fn parallel_first_adds_on_one_host_build_one_network() {
    let mut lab = Lab::new(1);
    let net = OverlayNet::new("race", 777, "10.77.0.0/24");
    let paths: Vec<(String, String)> = (0..8).map(|i| lab.container(&format!("r{i}"))).collect();
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, (_, path))| {
                let (lab, net) = (&lab, &net);
                s.spawn(move || call(lab, 0, net, "ADD", &format!("r{i}"), path))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outputs {
        o.ok();
    }
    let host_links = links(&lab.host(0).ns);
    assert_eq!(host_links.matches(&format!("{}:", br(777))).count(), 1);
    let addr = first_address(&outputs[7].json());
    assert!(lab.ping_within(&paths[0].0, &addr, Duration::from_secs(2)));
}

#[test]
fn bad_input_changes_nothing() {
    let mut lab = Lab::new(1);
    let net = OverlayNet::new("badin", 99, "10.99.0.0/24");
    let (c1, _, _) = add(&mut lab, 0, &net, "ok1");
    let host_links = links(&lab.host(0).ns);
    let keys = lab.etcd_keys("/cni-overlay/");
    // A netns path that is not a namespace.
    let not_ns = call(&lab, 0, &net, "ADD", "nn", "/etc/hostname").err(4);
    assert!(not_ns["msg"].as_str().unwrap().contains("CNI_NETNS"));
    // The interface already exists in the container: 103, and the allocation is not leaked.
    call(&lab, 0, &net, "ADD", "dup", &format!("/run/netns/{c1}")).err(103);
    // A VNI taken on this host by another network.
    let clash = OverlayNet::new("other", 99, "10.98.0.0/24");
    let (_, path) = lab.container("cl");
    call(&lab, 0, &clash, "ADD", "cl", &path).err(7);
    // An IPAM type with a path in it.
    let mut evil = OverlayNet::new("badin", 99, "10.99.0.0/24");
    evil.ipam["type"] = json!("../../bin/true");
    call(&lab, 0, &evil, "ADD", "ev", &path).err(7);
    assert_eq!(
        links(&lab.host(0).ns),
        host_links,
        "bad input changed the host's links"
    );
    assert_eq!(
        lab.etcd_keys("/cni-overlay/"),
        keys,
        "bad input changed etcd"
    );
}

#[test]
fn gc_removes_what_is_not_valid_and_keeps_what_is() {
    let mut lab = Lab::new(1);
    let net = OverlayNet::new("gcn", 4000, "10.40.0.0/24");
    add(&mut lab, 0, &net, "keep");
    add(&mut lab, 0, &net, "stale");
    // An endpoint of overlayd's Docker driver on the same host and network, with its allocation:
    // no CNI runtime's valid attachments can name it, so GC leaves it to the driver.
    let node = lab.host(0).name.clone();
    let docker = format!("dockerendpoint/{}", names::DOCKER_IFNAME);
    lab.etcdctl(&[
        "put",
        &format!("/cni-overlay/endpoints/gcn/{docker}"),
        &json!({"network": "gcn", "containerId": "dockerendpoint", "ifname": names::DOCKER_IFNAME,
                "ips": ["10.40.0.200/24"], "mac": "02:00:0a:28:00:c8", "node": node,
                "vtep": lab.host(0).addr, "vni": 4000})
        .to_string(),
    ]);
    lab.etcdctl(&[
        "put",
        &format!("/cni-overlay/ipam/gcn/owners/{docker}"),
        &json!({"containerId": "dockerendpoint", "ifname": names::DOCKER_IFNAME, "node": node,
                "ips": [{"address": "10.40.0.200/24"}]})
        .to_string(),
    ]);
    gc_keeping(&lab, &net, "keep");
    let records = lab.etcd_keys("/cni-overlay/endpoints/gcn/");
    assert_eq!(
        records,
        vec![
            format!("/cni-overlay/endpoints/gcn/{docker}"),
            "/cni-overlay/endpoints/gcn/keep/eth0".to_string()
        ]
    );
    assert_eq!(
        lab.etcd_keys("/cni-overlay/ipam/gcn/owners/"),
        vec![
            format!("/cni-overlay/ipam/gcn/owners/{docker}"),
            "/cni-overlay/ipam/gcn/owners/keep/eth0".to_string()
        ]
    );
    let host_links = links(&lab.host(0).ns);
    assert!(
        host_links.contains(&names::host_veth("keep", "eth0"))
            && !host_links.contains(&names::host_veth("stale", "eth0")),
        "{host_links}"
    );
}

/// An ADD SIGKILLed after creating its veth (a port of the bridge from birth) and before naming
/// it with the attachment's alias leaves a port GC cannot tie to an attachment: it is removed,
/// and a veth of no bridge (someone else's) is left alone (scripts/faults.sh killed).
#[test]
fn gc_removes_a_port_left_without_its_alias_by_a_killed_add() {
    let mut lab = Lab::new(1);
    let net = OverlayNet::new("gck", 4001, "10.41.0.0/24");
    add(&mut lab, 0, &net, "keep");
    let ns = lab.host(0).ns.clone();
    let (killed_ns, _) = lab.container("killed");
    let killed = names::host_veth("killed", "eth0");
    veth(&ns, &killed, Some(&br(4001)), &killed_ns);
    let (other_ns, _) = lab.container("other");
    let other = names::host_veth("other", "eth0");
    veth(&ns, &other, None, &other_ns);
    gc_keeping(&lab, &net, "keep");
    let host_links = links(&ns);
    assert!(
        !host_links.contains(&killed),
        "the killed ADD's port is left: {host_links}"
    );
    assert!(
        host_links.contains(&names::host_veth("keep", "eth0")) && host_links.contains(&other),
        "GC removed what is not its own: {host_links}"
    );
}

/// A TCP relay inside lab host `host` in front of the lab's etcd, counting the connections
/// made through it: how many etcd connections (and logins, with authentication) a plugin call
/// costs. Its sockets are made inside the host's namespace; it serves until the test ends.
fn counting_relay(lab: &Lab, host: usize) -> (String, Arc<AtomicUsize>) {
    let ns = Netns::open(format!("/run/netns/{}", lab.host(host).ns)).unwrap();
    let bind = format!("{}:0", lab.host(host).addr);
    let listener = ns.run(move || TcpListener::bind(bind)).unwrap().unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (target, count) = (lab.etcd_endpoint.clone(), Arc::new(AtomicUsize::new(0)));
    let counted = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            let Ok(Ok(upstream)) = ns.run(move || TcpStream::connect(target)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                (upstream, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
    (addr, count)
}

#[test]
fn a_plugin_call_makes_one_etcd_connection_also_when_its_config_is_the_networks_record() {
    let mut lab = Lab::new(2);
    let (node, ns) = (lab.host(1).name.clone(), lab.host(1).ns.clone());
    let overlayctl = bin_dir().join("overlayctl");
    assert!(
        overlayctl.exists(),
        "overlayctl is not built (cargo build --workspace --bins)"
    );
    in_ns(
        &lab.host(0).ns,
        &[
            overlayctl.to_str().unwrap(),
            "--etcd",
            &lab.etcd_endpoint,
            "network",
            "create",
            "rec",
            "--subnet",
            "10.88.0.0/24",
            "--vni",
            "888",
        ],
    );
    let (relay, connections) = counting_relay(&lab, 1);
    // No VNI and no ranges: both plugins take them from the network's record.
    let conf = json!({"cniVersion": "1.0.0", "name": "rec", "type": "vxlan-overlay", "node": node,
                      "etcd": {"endpoints": [relay], "timeoutMs": 3000},
                      "ipam": {"type": "etcd-ipam", "dataDir": lab.host(1).dir.join("etcd-ipam")}});
    let (_, path) = lab.container("r1");
    let run = |command: &str, netns: &str| {
        let inv = plugin(command).attachment("r1", netns, "eth0").stdin(&conf);
        lab.run_on(1, &inv)
    };

    let result = run("ADD", &path).ok();
    assert_eq!(result["ips"][0]["address"], json!("10.88.0.2/24"));
    assert_eq!(result["interfaces"][0]["name"], json!(br(888)));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one ADD: one etcd connection, etcd-ipam's work (in vxlan-overlay's process) included"
    );
    run("DEL", "").ok();
    assert_eq!(connections.load(Ordering::SeqCst), 2, "one DEL: one more");
    assert!(!links(&ns).contains(&br(888)));
    assert!(lab.etcd_keys("/cni-overlay/ipam/rec/owners/").is_empty());
}

/// Sends SIG`name` to the process `pid` this test started.
fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// The FDB entries on a host's VXLAN device of `vni`, as `bridge fdb show` prints them.
fn fdb(lab: &Lab, host: usize, vni: u32) -> String {
    in_ns(
        &lab.host(host).ns,
        &["bridge", "fdb", "show", "dev", &vx(vni)],
    )
}

/// An ADD on a host where the network's devices already are leaves the other hosts' endpoints to
/// the live overlayd of its node (listing the network on every ADD made each ADD cost as much as
/// the network is large: scripts/bench.sh fleet); the ADD that makes the devices, and every ADD
/// on a node without a live overlayd, program them.
#[test]
fn an_add_leaves_peers_to_a_live_overlayd_and_programs_them_without_one() {
    let mut lab = Lab::new(2);
    let net = OverlayNet::new("peers", 4343, "10.43.0.0/24");
    // Node 1's overlayd registered (its lease outlives the test), then stopped: whatever reaches
    // node 1's kernel meanwhile is the plugin's doing.
    let overlayd = start_overlayd_with(&mut lab, 0, &["--lease-ttl", "120"]);
    let (_, _, r1) = add(&mut lab, 0, &net, "p1");
    signal(overlayd, "STOP");
    // Node 2 has no overlayd: its first ADD makes the devices and programs p1.
    let (_, _, r2) = add(&mut lab, 1, &net, "p2");
    let mac = |r: &Value| r["interfaces"][2]["mac"].as_str().unwrap().to_string();
    assert!(
        fdb(&lab, 1, 4343).contains(&mac(&r1)),
        "p2's ADD made the devices and did not program p1"
    );
    // Node 1's second ADD: its overlayd is alive, the entry for p2 is the overlayd's to make.
    let (_, _, r3) = add(&mut lab, 0, &net, "p3");
    assert!(
        !fdb(&lab, 0, 4343).contains(&mac(&r2)),
        "p3's ADD programmed p2 although node 1's overlayd follows the network"
    );
    // Node 2's second ADD, without an overlayd there: it programs p3 (added since p2's ADD).
    add(&mut lab, 1, &net, "p4");
    assert!(
        fdb(&lab, 1, 4343).contains(&mac(&r3)),
        "p4's ADD on a node without overlayd did not program p3"
    );
    signal(overlayd, "CONT");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fdb(&lab, 0, 4343).contains(&mac(&r2)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        fdb(&lab, 0, 4343).contains(&mac(&r2)),
        "node 1's overlayd did not program p2"
    );
}
