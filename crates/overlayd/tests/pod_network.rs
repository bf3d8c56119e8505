//! The pod network of deploy/kubernetes/ on two simulated hosts, set up as the DaemonSet sets it
//! up: the ConfigMap's conflist (read from 10-config.yaml, as applied) installed by `overlayd
//! install-cni` with the DaemonSet's flags, overlayd started with the DaemonSet's flags, and the
//! installed plugins run through the installed conflist the way libcni runs a list for a kubelet
//! (CNI_ARGS with the K8S_* keys, prevResult, runtimeConfig for the declared capabilities). Pods
//! get an address of the pod CIDR, the Service CIDR route through the gateway and the default
//! route on gwbridge-egress's interface; they reach each other across hosts, the node reaches its
//! pods (hostAccess: the kubelet's probes), names `<pod>.<namespace>.pods.overlay` answer at the
//! gateway, and DEL (twice) releases everything in etcd.
//!
//! The one change to the installed conflist: each host's IPAM data directories are moved into
//! the lab host's directory (the lab's hosts share this machine's file system; a node uses the
//! defaults under /var/lib/cni). Needs root, etcd, dig and Debian's host-local (gwbridge-egress's
//! default IPAM); without them the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{resolves, Daemon};
use model::names::GWBRIDGE_IFNAME;
use serde_json::{json, Value};
use testutils::lab::{bin_dir, in_ns, Lab, INTERNET_ADDR};
use testutils::{Invocation, Output};

/// Debian's containernetworking-plugins (host-local, gwbridge-egress's default IPAM).
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
const GATEWAY: &str = "10.244.0.1";

/// The value of `key` in the ConfigMap of deploy/kubernetes/10-config.yaml: a literal block
/// scalar (`key: |`) at the data's indentation. (40-manifests.sh validates the file as YAML;
/// this only needs the one block.)
fn configmap_block(key: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/10-config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no `{key}: |` in {path:?}"));
    let indent = header.len() - header.trim_start().len() + 2;
    let block: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect();
    block.join("\n")
}

/// One node: where install-cni put the plugins and the conflist, and its overlayd.
struct Node {
    bin: PathBuf,
    conflist: Value,
    _agent: Daemon,
}

/// The DaemonSet on lab host `h`: the init step, then the agent.
fn node(lab: &Lab, h: usize, template: &str) -> Node {
    let host = lab.host(h);
    let (bin, conf) = (host.dir.join("opt/cni/bin"), host.dir.join("etc/cni/net.d"));
    let out = Command::new(env!("CARGO_BIN_EXE_overlayd"))
        .arg("install-cni")
        .arg(format!("--bin-dir={}", bin.display()))
        .arg(format!("--conf-dir={}", conf.display()))
        .arg("--conflist-from-env")
        .arg(format!("--node={}", host.name))
        // The image keeps the plugins beside overlayd; here they are the build's.
        .arg(format!("--source-dir={}", bin_dir().display()))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("OVERLAYD_ETCD", &lab.etcd_endpoint)
        .env("OVERLAYD_CNI_CONFLIST", template)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install-cni: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conflist: Value =
        serde_json::from_slice(&std::fs::read(conf.join("10-cni-overlay.conflist")).unwrap())
            .unwrap();
    for plugin in conflist["plugins"].as_array_mut().unwrap() {
        match plugin["type"].as_str().unwrap() {
            "vxlan-overlay" => plugin["ipam"]["dataDir"] = json!(host.dir.join("etcd-ipam")),
            // gwbridge-egress's default IPAM, with the data directory moved.
            "gwbridge-egress" => {
                plugin["ipam"] = json!({"type": "host-local",
                    "ranges": [[{"subnet": "172.18.0.0/16"}]],
                    "dataDir": host.dir.join("host-local")})
            }
            other => panic!("a plugin this test does not know: {other}"),
        }
    }
    let agent = Daemon::start(
        &format!("overlayd-{h}"),
        &host.ns,
        &host.dir,
        &[
            "--etcd",
            &lab.etcd_endpoint,
            "--node",
            &host.name,
            "--no-conflists",
            "--dns-upstream",
            INTERNET_ADDR,
        ],
    );
    Node {
        bin,
        conflist,
        _agent: agent,
    }
}

/// A pod as the kubelet names it.
struct Pod {
    namespace: &'static str,
    name: &'static str,
    id: String,
    ns: String,
    netns: String,
}

impl Pod {
    fn new(lab: &mut Lab, namespace: &'static str, name: &'static str) -> Pod {
        let id = format!("{namespace}-{name}-sandbox");
        let (ns, netns) = lab.container(&format!("{namespace}-{name}"));
        Pod {
            namespace,
            name,
            id,
            ns,
            netns,
        }
    }
}

/// Plugin `i` of the node's conflist, as libcni invokes it.
fn invocation(node: &Node, i: usize, command: &str, pod: &Pod, prev: Option<&Value>) -> Invocation {
    let list = &node.conflist;
    let mut conf = list["plugins"][i].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    if conf["capabilities"]["portMappings"] == true {
        conf["runtimeConfig"] = json!({"portMappings": []});
    }
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-{}",
        pod.namespace, pod.name, pod.id, pod.name
    );
    Invocation::new(node.bin.join(conf["type"].as_str().unwrap()), command)
        .attachment(&pod.id, &pod.netns, "eth0")
        .env(
            "CNI_PATH",
            &format!("{}:{REFERENCE_PLUGINS}", node.bin.display()),
        )
        .env("CNI_ARGS", &args)
        .stdin(&conf)
}

fn plugins(node: &Node) -> usize {
    node.conflist["plugins"].as_array().unwrap().len()
}

/// ADD through the list; the final result.
fn add(lab: &Lab, h: usize, node: &Node, pod: &Pod) -> Value {
    let mut prev: Option<Value> = None;
    for i in 0..plugins(node) {
        prev = Some(
            lab.run_on(h, &invocation(node, i, "ADD", pod, prev.as_ref()))
                .ok(),
        );
    }
    prev.unwrap()
}

/// DEL through the list in reverse, as libcni does; every plugin's output.
fn del(lab: &Lab, h: usize, node: &Node, pod: &Pod, prev: Option<&Value>) -> Vec<Output> {
    (0..plugins(node))
        .rev()
        .map(|i| lab.run_on(h, &invocation(node, i, "DEL", pod, prev)))
        .collect()
}

fn address(result: &Value, ifname: &str) -> String {
    let index = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .position(|i| i["name"] == ifname && i.get("sandbox").is_some())
        .unwrap_or_else(|| panic!("no {ifname} in {result}"));
    let ip = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ip| ip["interface"] == index)
        .unwrap_or_else(|| panic!("no address on {ifname} in {result}"));
    ip["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_configmaps_pod_network_works_as_the_daemonset_installs_it() {
    let mut lab = Lab::new(2);
    let template = configmap_block("OVERLAYD_CNI_CONFLIST");
    let nodes: Vec<Node> = (0..2).map(|h| node(&lab, h, &template)).collect();
    assert_eq!(nodes[0].conflist["cniVersion"], "1.0.0");

    let web = Pod::new(&mut lab, "prod", "web-0");
    let db = Pod::new(&mut lab, "prod", "db-0");
    let r_web = add(&lab, 0, &nodes[0], &web);
    let r_db = add(&lab, 1, &nodes[1], &db);
    let (a_web, a_db) = (address(&r_web, "eth0"), address(&r_db, "eth0"));
    for a in [&a_web, &a_db] {
        assert!(a.starts_with("10.244."), "{a} is not in the pod CIDR");
    }
    assert!(
        address(&r_web, GWBRIDGE_IFNAME).starts_with("172.18."),
        "{r_web}"
    );

    let routes = in_ns(&web.ns, &["ip", "-4", "route", "show"]);
    assert!(
        routes.contains(&format!("10.96.0.0/12 via {GATEWAY} dev eth0")),
        "the Service CIDR through the overlay's gateway:\n{routes}"
    );
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("default ") && l.contains(&format!("dev {GWBRIDGE_IFNAME}"))),
        "the default route on gwbridge-egress's interface:\n{routes}"
    );

    // Across hosts: db-0 came after web-0, so node 0 knows it only from its overlayd.
    assert!(lab.ping_within(&web.ns, &a_db, Duration::from_secs(10)));
    assert!(lab.ping_within(&db.ns, &a_web, Duration::from_secs(10)));
    // hostAccess: the node reaches its own pods (where the kubelet's probes come from).
    assert!(lab.ping_within(&lab.host(0).ns, &a_web, Duration::from_secs(5)));
    assert!(lab.ping_within(&lab.host(1).ns, &a_db, Duration::from_secs(5)));
    // Names: <pod>.<namespace>.<network>.overlay at the gateway, from either host's pods.
    assert!(resolves(
        &web.ns,
        GATEWAY,
        "db-0.prod.pods.overlay",
        &a_db,
        Duration::from_secs(10)
    ));
    assert!(resolves(
        &db.ns,
        GATEWAY,
        "web-0.prod.pods.overlay",
        &a_web,
        Duration::from_secs(10)
    ));

    let keys = || lab.etcdctl(&["get", "--prefix", "--keys-only", "/cni-overlay/"]);
    let held = keys();
    for pod in [&web, &db] {
        assert!(
            held.contains(&pod.id),
            "no record of {} in etcd:\n{held}",
            pod.id
        );
    }

    // DEL as the kubelet's runtime does it, then again (a retried StopPodSandbox).
    for (h, pod, result) in [(0, &web, &r_web), (1, &db, &r_db)] {
        for out in del(&lab, h, &nodes[h], pod, Some(result)) {
            assert_eq!(out.code, 0, "{out:?}");
        }
        for out in del(&lab, h, &nodes[h], pod, None) {
            assert_eq!(out.code, 0, "{out:?}");
        }
    }
    let left = keys();
    for pod in [&web, &db] {
        assert!(
            !left.contains(&pod.id) && !left.contains(&format!("{}.{}", pod.name, pod.namespace)),
            "{} left in etcd:\n{left}",
            pod.id
        );
    }
}
