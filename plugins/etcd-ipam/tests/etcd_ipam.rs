//! etcd-ipam driven as a runtime drives it: the built binary, environment and stdin, against a real
//! etcd started on a free loopback port.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use testutils::{Etcd, Invocation, Output, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_etcd-ipam");
const PREFIX: &str = "/cni-overlay";

struct Net {
    name: String,
    ipam: Value,
    data: TempDir,
}

impl Net {
    fn new(etcd: &Etcd, name: &str, ipam: Value) -> Net {
        let mut ipam = ipam;
        ipam["type"] = json!("etcd-ipam");
        ipam["etcd"] = json!({"endpoints": [etcd.endpoint()], "timeoutMs": 2000});
        Net {
            name: name.into(),
            ipam,
            data: TempDir::new("ipam-data"),
        }
    }

    fn config(&self, version: &str, node: &str) -> Value {
        let mut ipam = self.ipam.clone();
        ipam["node"] = json!(node);
        ipam["dataDir"] = json!(self.data.path());
        json!({"cniVersion": version, "name": self.name, "type": "vxlan-overlay", "ipam": ipam})
    }

    fn call(
        &self,
        command: &str,
        node: &str,
        container: &str,
        pod_name: Option<&str>,
    ) -> Invocation {
        let mut inv = Invocation::new(BIN, command)
            .attachment(container, &format!("/run/netns/{container}"), "eth0")
            .stdin(&self.config("1.0.0", node));
        // "ns/pod" is sent as containerd's CRI sends a pod, a bare name as podman sends a container.
        let mut args = String::from("IgnoreUnknown=1");
        match pod_name.map(|n| {
            n.split_once('/')
                .map_or((None, n), |(ns, pod)| (Some(ns), pod))
        }) {
            Some((Some(namespace), pod)) => args.push_str(&format!(
                ";K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};K8S_POD_UID=x"
            )),
            Some((None, name)) => args.push_str(&format!(";K8S_POD_NAME={name}")),
            None => {}
        }
        inv = inv.env("CNI_ARGS", &args).env("CNI_PATH", "/usr/lib/cni");
        inv
    }

    fn add(&self, node: &str, container: &str, name: Option<&str>) -> Output {
        self.call("ADD", node, container, name).run()
    }

    fn del(&self, node: &str, container: &str) -> Output {
        self.call("DEL", node, container, None)
            .without("CNI_NETNS")
            .run()
    }
}

fn address(result: &Value, i: usize) -> String {
    result["ips"][i]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[{i}] in {result}"))
        .to_string()
}

fn v4_net(etcd: &Etcd, name: &str) -> Net {
    Net::new(etcd, name, json!({"subnet": "10.0.0.0/24"}))
}

#[test]
fn the_seed_first_address_then_the_next_on_another_node() {
    let etcd = Etcd::start();
    let net = v4_net(&etcd, "demo");
    let first = net.add("node1", "c-test1", Some("test1")).ok();
    assert_eq!(address(&first, 0), "10.0.0.2/24");
    assert_eq!(first["ips"][0]["gateway"], "10.0.0.1");
    assert!(
        first.get("interfaces").is_none(),
        "IPAM results carry no interfaces"
    );
    assert!(first["ips"][0].get("interface").is_none());
    let second = net.add("node2", "c-test2", Some("test2")).ok();
    assert_eq!(address(&second, 0), "10.0.0.3/24");
}

#[test]
fn a_name_taken_on_one_node_is_refused_on_another_and_nothing_is_written() {
    let etcd = Etcd::start();
    let net = v4_net(&etcd, "demo");
    net.add("node1", "c1", Some("test1")).ok();
    let before = etcd.snapshot(PREFIX);
    let refused = net.add("node2", "c2", Some("test1")).err(100);
    assert_eq!(
        refused["msg"],
        "endpoint with name test1 already exists in network demo"
    );
    assert_eq!(etcd.snapshot(PREFIX), before, "a refused ADD changed etcd");
    // Case does not make a different name: DNS would answer both.
    net.add("node2", "c3", Some("TEST1")).err(100);
    net.del("node1", "c1").ok();
    let again = net.add("node2", "c2", Some("test1")).ok();
    assert_eq!(
        address(&again, 0),
        "10.0.0.2/24",
        "the address of the deleted container is free again"
    );
}

#[test]
fn kubernetes_pods_of_one_name_in_two_namespaces_are_two_names() {
    let etcd = Etcd::start();
    let net = v4_net(&etcd, "demo");
    net.add("node1", "c1", Some("prod/web")).ok();
    net.add("node2", "c2", Some("dev/web")).ok();
    let before = etcd.snapshot(PREFIX);
    let refused = net.add("node2", "c3", Some("prod/web")).err(100);
    assert_eq!(
        refused["msg"],
        "endpoint with name web.prod already exists in network demo"
    );
    assert_eq!(etcd.snapshot(PREFIX), before, "a refused ADD changed etcd");
    let names: HashSet<String> = etcd
        .keys(&format!("{PREFIX}/ipam/demo/names/"))
        .into_iter()
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(names, HashSet::from(["web.prod".into(), "web.dev".into()]));
    // Any name a runtime sends is taken; a `/` (no runtime sends one) would split the name's key.
    net.add("node2", "c4", Some("prod/web/0")).err(4);
    assert_eq!(etcd.snapshot(PREFIX), before, "a bad name changed etcd");
}

#[test]
fn a_repeated_add_returns_the_same_addresses() {
    let etcd = Etcd::start();
    let net = Net::new(
        &etcd,
        "dual",
        json!({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64"}]]}),
    );
    let a = net.add("n1", "c1", Some("web")).ok();
    let b = net.add("n1", "c1", Some("web")).ok();
    assert_eq!(a, b);
    assert_eq!(address(&a, 0), "10.1.0.2/24");
    assert_eq!(address(&a, 1), "fd00:1::2/64");
}

#[test]
fn del_is_idempotent_needs_no_netns_and_leaves_no_key() {
    let etcd = Etcd::start();
    let net = v4_net(&etcd, "n");
    net.add("n1", "c1", Some("one")).ok();
    assert!(!etcd.keys(PREFIX).is_empty());
    net.del("n1", "c1").ok();
    net.del("n1", "c1").ok();
    net.call("DEL", "n1", "c1", None)
        .env("CNI_NETNS", "")
        .run()
        .ok();
    let left: Vec<String> = etcd
        .keys(PREFIX)
        .into_iter()
        .filter(|k| !k.contains("/cursor/"))
        .collect();
    assert!(left.is_empty(), "DEL left keys behind: {left:?}");
    // DEL of something never added also succeeds.
    net.del("n1", "never-added").ok();
}

#[test]
fn requested_addresses_are_honoured_from_all_three_places() {
    let etcd = Etcd::start();
    let net = v4_net(&etcd, "req");
    let a = net
        .call("ADD", "n1", "c1", None)
        .env("CNI_ARGS", "IgnoreUnknown=1;IP=10.0.0.50")
        .run()
        .ok();
    assert_eq!(address(&a, 0), "10.0.0.50/24");
    let mut conf = net.config("1.0.0", "n1");
    conf["runtimeConfig"] = json!({"ips": ["10.0.0.51/24"]});
    let b = Invocation::new(BIN, "ADD")
        .attachment("c2", "/run/netns/c2", "eth0")
        .stdin(&conf)
        .run()
        .ok();
    assert_eq!(address(&b, 0), "10.0.0.51/24");
    let mut conf = net.config("1.0.0", "n1");
    conf["args"] = json!({"cni": {"ips": ["10.0.0.52"]}});
    let c = Invocation::new(BIN, "ADD")
        .attachment("c3", "/run/netns/c3", "eth0")
        .stdin(&conf)
        .run()
        .ok();
    assert_eq!(address(&c, 0), "10.0.0.52/24");
    // Taken, outside every range, or the gateway: refused with 102, nothing written.
    let before = etcd.snapshot(PREFIX);
    net.call("ADD", "n1", "c4", None)
        .env("CNI_ARGS", "IP=10.0.0.50")
        .run()
        .err(102);
    net.call("ADD", "n1", "c4", None)
        .env("CNI_ARGS", "IP=10.9.0.5")
        .run()
        .err(102);
    net.call("ADD", "n1", "c4", None)
        .env("CNI_ARGS", "IP=10.0.0.1")
        .run()
        .err(102);
    assert_eq!(etcd.snapshot(PREFIX), before);
}

#[test]
fn exclusions_ranges_and_an_exhausted_pool() {
    let etcd = Etcd::start();
    let net = Net::new(
        &etcd,
        "small",
        json!({"subnet": "10.2.0.0/29", "rangeStart": "10.2.0.2", "rangeEnd": "10.2.0.5", "exclude": ["10.2.0.3/32"]}),
    );
    let got: HashSet<String> = (0..3)
        .map(|i| address(&net.add("n1", &format!("c{i}"), None).ok(), 0))
        .collect();
    assert_eq!(
        got,
        ["10.2.0.2/29", "10.2.0.4/29", "10.2.0.5/29"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let before = etcd.snapshot(PREFIX);
    let e = net.add("n1", "c9", Some("late")).err(101);
    assert!(e["msg"].as_str().unwrap().contains("10.2.0.0/29"), "{e}");
    assert_eq!(
        etcd.snapshot(PREFIX),
        before,
        "an exhausted pool must not write"
    );
    net.del("n1", "c1").ok();
    assert_eq!(
        address(&net.add("n1", "c9", None).ok(), 0),
        "10.2.0.4/29",
        "a freed address is found after wrapping"
    );
}

#[test]
fn two_hundred_parallel_adds_on_four_nodes_get_distinct_addresses() {
    let etcd = Etcd::start();
    let net = Net::new(&etcd, "big", json!({"subnet": "10.3.0.0/16"}));
    let results: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let net = &net;
                s.spawn(move || {
                    net.add(
                        &format!("node{}", i % 4),
                        &format!("par-{i}"),
                        Some(&format!("pod-{i}")),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = HashSet::new();
    for r in &results {
        let v = r.ok();
        assert!(
            seen.insert(address(&v, 0)),
            "address handed out twice: {}",
            address(&v, 0)
        );
    }
    assert_eq!(seen.len(), 200);
    assert_eq!(etcd.keys(&format!("{PREFIX}/ipam/big/ips/")).len(), 200);
    assert_eq!(etcd.keys(&format!("{PREFIX}/ipam/big/names/")).len(), 200);
}

#[test]
fn gc_keeps_valid_attachments_and_other_nodes_allocations() {
    let etcd = Etcd::start();
    let net = v4_net(&etcd, "gcnet");
    for (node, c) in [("n1", "keep"), ("n1", "stale"), ("n2", "other")] {
        net.add(node, c, Some(c)).ok();
    }
    let mut conf = net.config("1.1.0", "n1");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    Invocation::new(BIN, "GC")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(&conf)
        .run()
        .ok();
    let owners = etcd.keys(&format!("{PREFIX}/ipam/gcnet/owners/"));
    assert_eq!(
        owners,
        vec![
            format!("{PREFIX}/ipam/gcnet/owners/keep/eth0"),
            format!("{PREFIX}/ipam/gcnet/owners/other/eth0")
        ]
    );
    let names = etcd.keys(&format!("{PREFIX}/ipam/gcnet/names/"));
    assert!(
        !names.iter().any(|k| k.ends_with("/stale")),
        "the stale name was not released: {names:?}"
    );
    // The v1.1.0 tag's key is read too.
    let mut conf = net.config("1.1.0", "n2");
    conf["cni.dev/attachments"] = json!([]);
    Invocation::new(BIN, "GC").stdin(&conf).run().ok();
    assert_eq!(etcd.keys(&format!("{PREFIX}/ipam/gcnet/owners/")).len(), 1);
}

#[test]
fn check_compares_the_allocation_with_prev_result() {
    let etcd = Etcd::start();
    let net = v4_net(&etcd, "chk");
    let result = net.add("n1", "c1", None).ok();
    let mut conf = net.config("1.0.0", "n1");
    conf["prevResult"] = result.clone();
    let check = |conf: &Value| {
        Invocation::new(BIN, "CHECK")
            .attachment("c1", "/run/netns/c1", "eth0")
            .stdin(conf)
            .run()
    };
    check(&conf).ok();
    let mut wrong = conf.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.0.0.77/24");
    check(&wrong).err(107);
    net.del("n1", "c1").ok();
    check(&conf).err(107);
}

#[test]
/// 50 for a full pool (someone must act); ready through an etcd outage, which would otherwise make
/// every node NotReady at once (store::plugin::ready_through_outage).
fn status_is_ready_then_50_when_exhausted_and_ready_while_etcd_is_down() {
    let mut etcd = Etcd::start();
    let net = Net::new(&etcd, "st", json!({"subnet": "10.4.0.0/30"}));
    let status = |net: &Net| {
        Invocation::new(BIN, "STATUS")
            .stdin(&net.config("1.1.0", "n1"))
            .run()
    };
    status(&net).ok();
    net.add("n1", "only", None).ok();
    let e = status(&net).err(50);
    assert!(
        e["msg"].as_str().unwrap().contains("no free address"),
        "{e}"
    );
    net.del("n1", "only").ok();
    etcd.stop();
    let out = status(&net);
    out.ok();
    assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains("etcd unreachable"),
        "a warning: {}",
        out.stderr
    );
}

#[test]
fn etcd_down_gives_11_within_the_timeout_and_never_a_false_success() {
    let mut etcd = Etcd::start();
    let net = v4_net(&etcd, "down");
    net.add("n1", "held", Some("held")).ok();
    etcd.stop();
    let add = net.add("n1", "c1", Some("c1"));
    add.err(11);
    assert!(
        add.elapsed < Duration::from_millis(2000 + 1000),
        "ADD took {:?} with timeoutMs 2000",
        add.elapsed
    );
    let del = net.del("n1", "held");
    del.err(11);
    assert!(
        del.elapsed < Duration::from_millis(3000),
        "DEL took {:?}",
        del.elapsed
    );
    etcd.restart();
    assert_eq!(
        etcd.keys(&format!("{PREFIX}/ipam/down/owners/")).len(),
        1,
        "the failed DEL must leave the allocation"
    );
    net.del("n1", "held").ok();
    assert!(etcd.keys(&format!("{PREFIX}/ipam/down/owners/")).is_empty());
}

#[test]
fn a_dead_etcd_endpoint_is_passed_over() {
    let etcd = Etcd::start();
    let dead = format!("127.0.0.1:{}", testutils::free_port());
    let mut net = v4_net(&etcd, "failover");
    net.ipam["etcd"]["endpoints"] = json!([dead, etcd.endpoint()]);
    for i in 0..10 {
        net.add("n1", &format!("c{i}"), None).ok();
    }
}

#[test]
fn every_version_gets_its_own_result_shape() {
    let etcd = Etcd::start();
    let net = v4_net(&etcd, "ver");
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let r = Invocation::new(BIN, "ADD")
            .attachment(&format!("v{i}"), "/run/netns/x", "eth0")
            .stdin(&net.config(version, "n1"))
            .run()
            .ok();
        assert_eq!(r["cniVersion"], *version);
        assert_eq!(
            r["ips"][0].get("version").is_some(),
            version.starts_with('0'),
            "{version}: {r}"
        );
    }
    let v = Invocation::new(BIN, "VERSION")
        .env("CNI_NETNS", "dummy")
        .env("CNI_IFNAME", "dummy")
        .raw_stdin(r#"{"cniVersion":"1.1.0"}"#)
        .run()
        .ok();
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn bad_input_gets_the_right_code_and_changes_nothing() {
    let etcd = Etcd::start();
    let net = v4_net(&etcd, "bad");
    net.add("n1", "existing", Some("existing")).ok();
    let before = etcd.snapshot(PREFIX);
    let good = net.config("1.0.0", "n1");
    let with = |path: &str, value: Value| {
        let mut c = good.clone();
        let ptr: Vec<&str> = path.split('/').collect();
        let mut cur = &mut c;
        for p in &ptr[..ptr.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[ptr[ptr.len() - 1]] = value;
        c
    };
    let add = |conf: &Value| {
        Invocation::new(BIN, "ADD")
            .attachment("new", "/run/netns/new", "eth0")
            .env("CNI_ARGS", "K8S_POD_NAME=new")
            .stdin(conf)
            .run()
    };
    let cases: Vec<(&str, Output, u64)> = vec![
        (
            "not JSON",
            Invocation::new(BIN, "ADD")
                .attachment("new", "/x", "eth0")
                .raw_stdin("{nope")
                .run(),
            6,
        ),
        (
            "empty stdin",
            Invocation::new(BIN, "ADD")
                .attachment("new", "/x", "eth0")
                .raw_stdin("")
                .run(),
            6,
        ),
        (
            "huge stdin",
            Invocation::new(BIN, "ADD")
                .attachment("new", "/x", "eth0")
                .raw_stdin(vec![b' '; 17 << 20])
                .run(),
            6,
        ),
        (
            "unknown cniVersion",
            add(&with("cniVersion", json!("0.9.9"))),
            1,
        ),
        (
            "cniVersion not a string",
            add(&with("cniVersion", json!(1.0))),
            6,
        ),
        ("no ipam", add(&with("ipam", Value::Null)), 7),
        (
            "invalid subnet",
            add(&with("ipam/subnet", json!("10.0.0.0/40"))),
            7,
        ),
        (
            "subnet wrong type",
            add(&with("ipam/subnet", json!(["10.0.0.0/24"]))),
            6,
        ),
        (
            "gateway outside",
            add(&with("ipam/gateway", json!("192.168.1.1"))),
            7,
        ),
        (
            "range outside",
            add(&with("ipam/rangeStart", json!("10.0.1.5"))),
            7,
        ),
        (
            "start after end",
            add(&with("ipam/rangeEnd", json!("10.0.0.1")).pipe(|mut c| {
                c["ipam"]["rangeStart"] = json!("10.0.0.9");
                c
            })),
            7,
        ),
        (
            "no etcd endpoints",
            add(&with("ipam/etcd/endpoints", json!([]))),
            7,
        ),
        (
            "bad etcd endpoint",
            add(&with("ipam/etcd/endpoints", json!(["http://"]))),
            7,
        ),
        (
            "bad network name",
            add(&with("name", json!("has space"))),
            7,
        ),
        ("bad node name", add(&with("ipam/node", json!("a/b"))), 7),
        (
            "bad exclude",
            add(&with("ipam/exclude", json!(["10.0.0.0/99"]))),
            7,
        ),
        (
            "bad route",
            add(&with("ipam/routes", json!([{"dst": "nowhere"}]))),
            7,
        ),
        (
            "missing CNI_NETNS",
            Invocation::new(BIN, "ADD")
                .env("CNI_CONTAINERID", "new")
                .env("CNI_IFNAME", "eth0")
                .stdin(&good)
                .run(),
            4,
        ),
        (
            "missing CNI_CONTAINERID",
            Invocation::new(BIN, "ADD")
                .env("CNI_NETNS", "/x")
                .env("CNI_IFNAME", "eth0")
                .stdin(&good)
                .run(),
            4,
        ),
        (
            "bad container id",
            Invocation::new(BIN, "ADD")
                .attachment("-bad", "/x", "eth0")
                .stdin(&good)
                .run(),
            4,
        ),
        (
            "long ifname",
            Invocation::new(BIN, "ADD")
                .attachment("new", "/x", "eth0123456789abc")
                .stdin(&good)
                .run(),
            4,
        ),
        (
            "ifname with /",
            Invocation::new(BIN, "ADD")
                .attachment("new", "/x", "a/b")
                .stdin(&good)
                .run(),
            4,
        ),
        (
            "malformed CNI_ARGS",
            Invocation::new(BIN, "ADD")
                .attachment("new", "/x", "eth0")
                .env("CNI_ARGS", "K8S_POD_NAME")
                .stdin(&good)
                .run(),
            4,
        ),
        (
            "bad pod name",
            Invocation::new(BIN, "ADD")
                .attachment("new", "/x", "eth0")
                .env("CNI_ARGS", "K8S_POD_NAME=a/b")
                .stdin(&good)
                .run(),
            4,
        ),
        (
            "unknown command",
            Invocation::new(BIN, "MOVE").stdin(&good).run(),
            4,
        ),
        (
            "CHECK on 0.3.1",
            Invocation::new(BIN, "CHECK")
                .attachment("new", "/x", "eth0")
                .stdin(&with("cniVersion", json!("0.3.1")))
                .run(),
            1,
        ),
        (
            "GC on 1.0.0",
            Invocation::new(BIN, "GC").stdin(&good).run(),
            1,
        ),
        (
            "broken prevResult",
            Invocation::new(BIN, "CHECK")
                .attachment("new", "/x", "eth0")
                .stdin(&with("prevResult", json!({"ips": [{"address": 5}]})))
                .run(),
            6,
        ),
    ];
    for (what, output, code) in &cases {
        assert_ne!(output.code, 0, "{what}: succeeded");
        let v = output.json();
        assert_eq!(v["code"], *code, "{what}: {v}");
        assert!(!output.stderr.contains("panicked"), "{what} panicked");
    }
    assert!(cases.len() >= 15);
    assert_eq!(etcd.snapshot(PREFIX), before, "bad input changed etcd");
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl Pipe for Value {}
