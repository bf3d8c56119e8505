//! Shared by the gwbridge-egress tests: a conflist runner that chains plugins the way libcni does,
//! the chain's main plugin as a parameter (Debian's reference `bridge` here; vxlan-overlay later),
//! traffic helpers that open sockets inside namespaces (so every peer address is seen directly,
//! without conntrack or capture tools), and snapshots of a host for "nothing left behind".
//!
//! Everything runs inside a `testutils::lab::Lab`: never in the machine's own namespace.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testutils::lab::{in_ns, Lab};
use testutils::{Invocation, Output};

pub const VERSION: &str = "1.0.0";
/// Debian's containernetworking-plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
pub const GW_SUBNET: &str = "172.18.0.0/16";

pub fn our_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gwbridge-egress"))
}

/// Our binary's directory (where the workspace's other plugins are built too), then Debian's.
pub fn cni_path() -> String {
    format!(
        "{}:{REFERENCE_PLUGINS}",
        our_binary().parent().unwrap().display()
    )
}

/// The chain's main plugin: what gwbridge-egress is chained after.
pub struct MainPlugin {
    pub name: &'static str,
    /// Its object in the conflist on host `host` of the lab, for network number `net` (0 for the
    /// scenarios' main network; others must not share its bridge, subnet or VNI).
    pub config: fn(lab: &Lab, host: usize, net: usize) -> Value,
    /// Whether its CHECK accepts addresses that chained plugins added to prevResult. Debian's
    /// bridge 1.1.1 does not: it wants every prevResult address on CNI_IFNAME ("Failed to match
    /// addr ... on interface eth0"), whoever added it.
    pub check_accepts_chained_addresses: bool,
}

/// Debian's `bridge` + `host-local`, standing in for the overlay: a bridge `ovl<net>` per host
/// with 10.<77+net>.0.0/24 and no default route (egress is gwbridge-egress's job, as with
/// Docker's overlay networks).
pub fn reference_bridge() -> MainPlugin {
    MainPlugin {
        name: "bridge",
        config: |lab, host, net| {
            json!({
                "type": "bridge",
                "bridge": format!("ovl{net}"),
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": format!("10.{}.0.0/24", 77 + net)}]],
                    "dataDir": ipam_dir(lab, host),
                },
            })
        },
        check_accepts_chained_addresses: false,
    }
}

/// Our own overlay as the main plugin: vxlan-overlay with etcd-ipam, etcd from the lab.
pub fn vxlan_overlay() -> MainPlugin {
    MainPlugin {
        name: "vxlan-overlay",
        config: |lab, host, net| {
            json!({
                "type": "vxlan-overlay",
                "vni": 5000 + net as u32,
                "node": lab.host(host).name,
                "etcd": {"endpoints": [lab.etcd_endpoint]},
                "ipam": {
                    "type": "etcd-ipam",
                    "ranges": [[{"subnet": format!("10.{}.0.0/24", 77 + net)}]],
                    "dataDir": ipam_dir(lab, host),
                },
            })
        },
        check_accepts_chained_addresses: true,
    }
}

/// Where host `i` keeps host-local allocations (per network name below it).
pub fn ipam_dir(lab: &Lab, i: usize) -> String {
    lab.host(i).dir.join("ipam").display().to_string()
}

/// gwbridge-egress's object in the conflist, with host-local in the host's own directory.
pub fn gwbridge(lab: &Lab, i: usize, extra: Value) -> Value {
    let mut conf = json!({
        "type": "gwbridge-egress",
        "capabilities": {"portMappings": true},
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": GW_SUBNET}]],
            "dataDir": ipam_dir(lab, i),
        },
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            conf[k] = v;
        }
    }
    conf
}

/// A conflist: `plugins` in order, as libcni runs them.
pub struct Chain {
    pub name: String,
    pub version: String,
    pub plugins: Vec<Value>,
}

/// What the runtime knows of one attachment.
pub struct Attachment {
    pub container_id: String,
    pub ns: String,
    pub netns_path: String,
    /// CNI_IFNAME: eth0 for a container's first network, eth1 for its second, as runtimes do.
    pub ifname: String,
    pub port_mappings: Vec<Value>,
}

impl Attachment {
    pub fn new(container_id: &str, (ns, path): (String, String)) -> Attachment {
        Attachment {
            container_id: container_id.to_string(),
            ns,
            netns_path: path,
            ifname: "eth0".to_string(),
            port_mappings: Vec::new(),
        }
    }

    /// The same container on another network: same id and namespace, CNI_IFNAME `ifname`, no
    /// port mappings.
    pub fn another_network(&self, ifname: &str) -> Attachment {
        Attachment {
            container_id: self.container_id.clone(),
            ns: self.ns.clone(),
            netns_path: self.netns_path.clone(),
            ifname: ifname.to_string(),
            port_mappings: Vec::new(),
        }
    }

    pub fn publish(mut self, host_port: u16, container_port: u16, protocol: &str) -> Attachment {
        self.port_mappings.push(json!({
            "hostPort": host_port, "containerPort": container_port, "protocol": protocol,
        }));
        self
    }
}

impl Chain {
    pub fn new(name: &str, plugins: Vec<Value>) -> Chain {
        Chain {
            name: name.to_string(),
            version: VERSION.to_string(),
            plugins,
        }
    }

    /// Plugin `i`'s stdin: its object with the list's name and version, runtimeConfig for the
    /// capabilities it declares, and prevResult.
    pub fn stdin(&self, i: usize, att: &Attachment, prev: Option<&Value>) -> Value {
        let mut conf = self.plugins[i].clone();
        conf["cniVersion"] = json!(self.version);
        conf["name"] = json!(self.name);
        if conf["capabilities"]["portMappings"] == json!(true) {
            conf["runtimeConfig"] = json!({"portMappings": att.port_mappings});
        }
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    pub fn invocation(
        &self,
        command: &str,
        i: usize,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Invocation {
        let binary = PathBuf::from(if self.plugins[i]["type"] == "gwbridge-egress" {
            our_binary().display().to_string()
        } else {
            find_plugin(self.plugins[i]["type"].as_str().unwrap())
        });
        Invocation::new(binary, command)
            .attachment(&att.container_id, &att.netns_path, &att.ifname)
            .env("CNI_PATH", &cni_path())
            .stdin(&self.stdin(i, att, prev))
    }

    /// ADD through the whole list; the final result, or the index and output of the plugin that
    /// failed (after DEL of the list, as libcni does).
    pub fn add(&self, lab: &Lab, host: usize, att: &Attachment) -> Result<Value, (usize, Output)> {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins.len() {
            let out = lab.run_on(host, &self.invocation("ADD", i, att, prev.as_ref()));
            if out.code != 0 {
                let _ = self.del(lab, host, att, prev.as_ref());
                return Err((i, out));
            }
            prev = Some(out.json());
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL in reverse order with the cached result; every plugin's output, in the order run.
    pub fn del(
        &self,
        lab: &Lab,
        host: usize,
        att: &Attachment,
        cached: Option<&Value>,
    ) -> Vec<Output> {
        (0..self.plugins.len())
            .rev()
            .map(|i| lab.run_on(host, &self.invocation("DEL", i, att, cached)))
            .collect()
    }

    /// CHECK of plugin `i` with the cached result.
    pub fn check(
        &self,
        lab: &Lab,
        host: usize,
        att: &Attachment,
        i: usize,
        cached: &Value,
    ) -> Output {
        lab.run_on(host, &self.invocation("CHECK", i, att, Some(cached)))
    }

    pub fn position(&self, plugin_type: &str) -> usize {
        self.plugins
            .iter()
            .position(|p| p["type"] == plugin_type)
            .unwrap_or_else(|| panic!("{plugin_type} is not in the chain"))
    }
}

pub fn find_plugin(plugin_type: &str) -> String {
    for dir in cni_path().split(':') {
        let p = Path::new(dir).join(plugin_type);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    panic!("plugin {plugin_type} not found in {}", cni_path());
}

pub fn assert_all_ok(outputs: &[Output]) {
    for out in outputs {
        out.ok();
    }
}

/// The container's gwbridge address (without prefix) from a chain result.
pub fn address_on(result: &Value, ifname: &str, sandbox: &str) -> String {
    let interfaces = result["interfaces"].as_array().unwrap();
    let index = interfaces
        .iter()
        .position(|i| i["name"] == ifname && i["sandbox"] == sandbox)
        .unwrap_or_else(|| panic!("no {ifname} in {sandbox} in {result}"));
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

// ----- traffic, from sockets opened inside namespaces -----

fn netns(ns: &str) -> netops::Netns {
    netops::Netns::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("open {ns}: {e}"))
}

/// Runs `f` on a thread inside namespace `ns`; sockets made there stay there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    netns(ns).run(f).expect("run in namespace")
}

/// A TCP server in a namespace that answers each connection with "<name> <peer address>\n".
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(ns: &str, bind: &str, name: &str) -> TcpServer {
        let bind: SocketAddr = bind.parse().unwrap();
        let listener = in_netns(ns, move || TcpListener::bind(bind))
            .unwrap_or_else(|e| panic!("bind {bind} in {ns}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = writeln!(conn, "{name} {}", peer.ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TcpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from namespace `ns` to `to` and returns the server's line.
pub fn tcp_ask(ns: &str, to: &str) -> Result<String, String> {
    let to: SocketAddr = to.parse().unwrap();
    in_netns(ns, move || -> Result<String, String> {
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .map_err(|e| format!("connect {to}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut line = String::new();
        conn.read_to_string(&mut line)
            .map_err(|e| format!("read from {to}: {e}"))?;
        Ok(line.trim().to_string())
    })
}

/// A UDP server in a namespace that answers each datagram with "<name> <peer address>".
pub struct UdpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    pub fn start(ns: &str, bind: &str, name: &str) -> UdpServer {
        let bind: SocketAddr = bind.parse().unwrap();
        let socket = in_netns(ns, move || UdpSocket::bind(bind))
            .unwrap_or_else(|e| panic!("bind udp {bind} in {ns}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
                }
            }
        });
        UdpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a datagram from namespace `ns` to `to` (a few tries) and returns the answer.
pub fn udp_ask(ns: &str, to: &str) -> Result<String, String> {
    let to: SocketAddr = to.parse().unwrap();
    in_netns(ns, move || -> Result<String, String> {
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..4 {
            socket
                .send_to(b"hello", to)
                .map_err(|e| format!("send to {to}: {e}"))?;
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string());
            }
        }
        Err(format!("no answer from udp {to}"))
    })
}

/// Retries `f` for a few seconds: the first packets may race ARP and the bridge's forwarding delay.
pub fn eventually(what: &str, f: impl Fn() -> Result<String, String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

// ----- what a host holds -----

/// Everything of a host that gwbridge-egress may touch, for before/after comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub ruleset: String,
    pub links: BTreeSet<String>,
    /// Allocation files of every host-local network of the host.
    pub allocations: BTreeSet<String>,
    pub lock_file: bool,
}

pub fn host_state(lab: &Lab, i: usize) -> HostState {
    let ns = &lab.host(i).ns;
    let ruleset = in_ns(ns, &["nft", "list", "ruleset"]);
    let links = in_ns(ns, &["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap().to_string())
        .collect();
    HostState {
        ruleset,
        links,
        allocations: allocations(lab, i),
        lock_file: lock_file(lab, i).exists(),
    }
}

/// host-local's allocation files (named by address) under the host's ipam directory.
pub fn allocations(lab: &Lab, i: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(networks) = std::fs::read_dir(ipam_dir(lab, i)) else {
        return out;
    };
    for net in networks.flatten() {
        for f in std::fs::read_dir(net.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                out.insert(format!("{}/{name}", net.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// The plugin's lock file of host `i`: named by the inode of the host's namespace.
pub fn lock_file(lab: &Lab, i: usize) -> PathBuf {
    let inode = std::fs::metadata(format!("/run/netns/{}", lab.host(i).ns))
        .unwrap()
        .ino();
    PathBuf::from(format!(
        "/run/cni-overlay/locks/{inode}-gwbridge-egress.lock"
    ))
}

pub fn nft_table(lab: &Lab, i: usize) -> String {
    in_ns(&lab.host(i).ns, &["nft", "list", "ruleset"])
}

/// br_netfilter's hand-over of bridged IPv4 frames to nftables on host `i` (its own namespace
/// only). New namespaces start with it on when the br_netfilter module is loaded.
pub fn set_br_netfilter(lab: &Lab, i: usize, on: bool) {
    let value = format!("net.bridge.bridge-nf-call-iptables={}", u8::from(on));
    in_ns(&lab.host(i).ns, &["sysctl", "-qw", &value]);
}

/// Removes the hosts' lock files when a test ends, also when it fails half-way (the plugin
/// removes them itself when the last container goes; the lab only removes namespaces).
pub struct LockFiles(Vec<PathBuf>);

impl LockFiles {
    pub fn of(lab: &Lab) -> LockFiles {
        LockFiles((0..lab.hosts.len()).map(|i| lock_file(lab, i)).collect())
    }
}

impl Drop for LockFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// An IPAM test double speaking 1.1.0: hands out 172.20.0.2, .3, ... and logs every call.
pub const FAKE_IPAM: &str = r#"#!/bin/sh
cat > /dev/null
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >> "$FAKE_IPAM_DIR/log"
case "$CNI_COMMAND" in
ADD)
    n=$(cat "$FAKE_IPAM_DIR/next" 2>/dev/null || echo 2)
    echo $((n + 1)) > "$FAKE_IPAM_DIR/next"
    echo "{\"cniVersion\":\"1.1.0\",\"ips\":[{\"address\":\"172.20.0.$n/16\",\"gateway\":\"172.20.0.1\"}]}"
    ;;
VERSION)
    echo '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}'
    ;;
esac
exit 0
"#;

/// A prevResult for CHECK of `att` built from what is in its namespace (the fake IPAM's address).
pub fn check_prev_result(att: &Attachment) -> Value {
    let addr = in_ns(&att.ns, &["ip", "-o", "-4", "addr", "show", "dev", "gwb0"]);
    let cidr = addr.split_whitespace().nth(3).unwrap().to_string();
    let mac = in_ns(&att.ns, &["cat", "/sys/class/net/gwb0/address"])
        .trim()
        .to_string();
    json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": "gwb0", "mac": mac, "sandbox": att.netns_path}],
        "ips": [{"address": cidr, "gateway": "172.20.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "172.20.0.1"}]})
}
