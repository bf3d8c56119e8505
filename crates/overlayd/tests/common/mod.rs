//! Shared by overlayd's integration tests: overlayd processes inside lab hosts (held by PID, so a
//! test can SIGKILL one or read its exit status), an etcd client living in a lab host's
//! namespace, the kernel tables of a host's VXLAN device, and polling with a deadline.
//! Without root or etcd the tests fail (testutils' Lab asserts both).

#![allow(dead_code)]

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use model::records::{self, Endpoint, Node};
use model::{Mac, Vni};
use netops::{Netlink, Netns};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use store::{EtcdConfig, Store};
use testutils::lab::{in_ns, Lab};
use tokio::runtime::Runtime;

pub const PREFIX: &str = "/cni-overlay";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// One overlayd process inside a host namespace, its stderr in a file. `ip netns exec` execs
/// the program in place, so the child's PID is overlayd's own. Killed (SIGKILL) on drop; its log
/// is printed when the test failed.
pub struct Daemon {
    pub tag: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    pub fn start(tag: &str, ns: &str, dir: &Path, args: &[&str]) -> Daemon {
        let log = dir.join(format!("{tag}.log"));
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("create the overlayd log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_overlayd")])
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start overlayd");
        Daemon {
            tag: tag.to_string(),
            child,
            log,
            status: None,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal overlayd");
    }

    /// The exit status, waiting at most `within`.
    pub fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait for overlayd");
        }
        self.status
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!("overlayd {} exited ({status}):\n{}", self.tag, self.log());
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- log of overlayd {} ----\n{}", self.tag, self.log());
        }
    }
}

type Job = Box<dyn FnOnce(&Runtime, &mut Store) + Send>;

/// An etcd client on a thread that lives inside a lab host's namespace (etcd listens on the
/// underlay, unreachable from the test's own namespace). Calls block until etcd answered.
pub struct EtcdIn {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl EtcdIn {
    pub fn new(ns: &str, endpoint: &str) -> EtcdIn {
        let netns = File::open(format!("/run/netns/{ns}")).expect("open the host namespace");
        let config = EtcdConfig::new(vec![endpoint.to_string()]);
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            // This thread alone moves; the test thread stays where it is.
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("enter the host namespace");
            let rt = runtime();
            let mut store = Store::new(config).expect("etcd config");
            for job in rx {
                job(&rt, &mut store);
            }
        });
        EtcdIn {
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime, &mut Store) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .unwrap()
            .send(Box::new(move |rt, store| {
                let _ = tx.send(f(rt, store));
            }))
            .expect("etcd thread alive");
        rx.recv().expect("etcd job finished")
    }

    /// Writes a record; returns when etcd acknowledged it.
    pub fn put(&self, key: &str, value: Vec<u8>) -> Instant {
        let key = key.to_string();
        self.run(move |rt, store| {
            rt.block_on(store.call(|mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move { c.put(key, value, None).await }
            }))
            .expect("etcd put");
            Instant::now()
        })
    }

    pub fn put_endpoint(&self, key: &str, e: &Endpoint) -> Instant {
        self.put(key, records::encode(e))
    }

    pub fn delete(&self, key: &str) -> Instant {
        let key = key.to_string();
        self.run(move |rt, store| {
            rt.block_on(store.call(|mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            }))
            .expect("etcd delete");
            Instant::now()
        })
    }

    /// The value and lease id of a key.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, i64)> {
        let key = key.to_string();
        self.run(move |rt, store| {
            let resp = rt.block_on(store.get(key, None)).expect("etcd get");
            resp.kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.lease()))
        })
    }

    pub fn node(&self, name: &str) -> Option<(Node, i64)> {
        let key = format!("{PREFIX}/nodes/{name}");
        self.get(&key).map(|(value, lease)| {
            (
                records::decode(key.as_bytes(), &value).expect("node record"),
                lease,
            )
        })
    }

    /// The TTL a lease was granted with, and what is left of it; None when it does not exist.
    pub fn lease_ttl(&self, id: i64) -> Option<(i64, i64)> {
        self.run(move |rt, store| {
            let resp = rt
                .block_on(store.call(|mut c| async move { c.lease_time_to_live(id, None).await }))
                .expect("etcd lease ttl");
            (resp.ttl() > 0).then(|| (resp.granted_ttl(), resp.ttl()))
        })
    }
}

impl Drop for EtcdIn {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The FDB and neighbour tables of a VXLAN device in a host namespace, read through netlink.
pub struct Tables {
    rt: Runtime,
    nl: Netlink,
    ns: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// (mac, destination), MACs in text form.
    pub fdb: Vec<(String, IpAddr)>,
    /// (address, mac), permanent entries only.
    pub neigh: Vec<(IpAddr, String)>,
}

impl Entries {
    pub fn has_fdb(&self, mac: &str, dst: &str) -> bool {
        self.fdb.contains(&(mac.to_string(), dst.parse().unwrap()))
    }

    pub fn has_mac(&self, mac: &str) -> bool {
        self.fdb.iter().any(|(m, _)| m == mac) || self.neigh.iter().any(|(_, m)| m == mac)
    }

    pub fn has_neigh(&self, ip: &str, mac: &str) -> bool {
        self.neigh.contains(&(ip.parse().unwrap(), mac.to_string()))
    }

    pub fn has_ip(&self, ip: &str) -> bool {
        let ip: IpAddr = ip.parse().unwrap();
        self.neigh.iter().any(|(i, _)| *i == ip)
    }
}

impl Tables {
    pub fn new(ns: &str) -> Tables {
        let rt = runtime();
        let netns = Netns::open(format!("/run/netns/{ns}")).expect("open the host namespace");
        let nl = rt
            .block_on(Netlink::in_netns(&netns))
            .expect("netlink socket in the host namespace");
        Tables {
            rt,
            nl,
            ns: ns.to_string(),
        }
    }

    pub fn of(&self, dev: &str) -> Entries {
        self.rt.block_on(async {
            let link = self
                .nl
                .link(dev)
                .await
                .expect("look up device")
                .unwrap_or_else(|| panic!("{dev} missing in {}", self.ns));
            Entries {
                fdb: self
                    .nl
                    .fdb_entries(link.index)
                    .await
                    .expect("fdb dump")
                    .into_iter()
                    .map(|(m, d)| (Mac::from(m).to_string(), d))
                    .collect(),
                neigh: self
                    .nl
                    .neigh_entries(link.index)
                    .await
                    .expect("neighbour dump")
                    .into_iter()
                    .map(|(i, m)| (i, Mac::from(m).to_string()))
                    .collect(),
            }
        })
    }

    /// Polls (every millisecond) until `cond` holds; the time it took, or None after `within`.
    pub fn wait_for(
        &self,
        dev: &str,
        within: Duration,
        cond: impl Fn(&Entries) -> bool,
    ) -> Option<Instant> {
        let deadline = Instant::now() + within;
        loop {
            if cond(&self.of(dev)) {
                return Some(Instant::now());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Polls `cond` every 50 ms; the instant it held, or None after `within`.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Network `net`'s devices as the vxlan-overlay plugin makes them: its bridge `ovbr<vni>` with
/// the alias that ties it to the network (what tells overlayd the network is on this host), and
/// on it the VXLAN device `ovx<vni>` (learning off, proxy on); both up.
pub fn add_vxlan(ns: &str, net: &str, vni: u32, local: &str) {
    let (bridge, name) = (br(vni), vx(vni));
    let alias = model::names::bridge_alias(net);
    in_ns(ns, &["ip", "link", "add", &bridge, "type", "bridge"]);
    in_ns(ns, &["ip", "link", "set", &bridge, "alias", &alias, "up"]);
    let name = name.as_str();
    let vni = vni.to_string();
    in_ns(
        ns,
        &[
            "ip",
            "link",
            "add",
            name,
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            &model::types::DEFAULT_VXLAN_PORT.to_string(),
            "local",
            local,
            "dev",
            "eth0",
            "nolearning",
            "proxy",
        ],
    );
    in_ns(ns, &["ip", "link", "set", name, "master", &bridge, "up"]);
}

pub fn endpoint_key(net: &str, cid: &str) -> String {
    format!("{PREFIX}/endpoints/{net}/{cid}/eth0")
}

/// An endpoint record of `node` behind `vtep`.
pub fn endpoint(
    net: &str,
    vni: u32,
    cid: &str,
    node: &str,
    vtep: &str,
    mac: &str,
    ips: &[&str],
) -> Endpoint {
    Endpoint {
        network: net.to_string(),
        container_id: cid.to_string(),
        ifname: "eth0".into(),
        name: Some(cid.to_string()),
        aliases: Vec::new(),
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        mac: mac.parse().unwrap(),
        node: node.to_string(),
        vtep: vtep.parse().unwrap(),
        vni: Vni::new(vni).unwrap(),
    }
}

/// The overlayd arguments for a lab host.
pub fn args<'a>(etcd: &'a str, node: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    // Conflists are tested on their own (tests/conflists.rs); here they would go to /etc/cni/net.d.
    let mut v = vec!["--etcd", etcd, "--node", node, "--no-conflists"];
    v.extend_from_slice(extra);
    v
}

/// Log-and-wait helper: the node record of `node` exists (overlayd is up and talking to etcd).
pub fn wait_registered(
    etcd: &EtcdIn,
    daemon: &mut Daemon,
    node: &str,
    within: Duration,
) -> (Node, i64) {
    let mut found = None;
    eventually(within, || {
        daemon.assert_running();
        found = etcd.node(node);
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "node {node} did not register within {within:?}:\n{}",
            daemon.log()
        )
    })
}

pub fn lab_dir(lab: &Lab, host: usize) -> PathBuf {
    lab.host(host).dir.clone()
}

/// vxlan-overlay's VXLAN device of a VNI.
pub fn vx(vni: u32) -> String {
    model::names::vxlan(Vni::new(vni).unwrap())
}

/// vxlan-overlay's bridge of a VNI.
pub fn br(vni: u32) -> String {
    model::names::bridge(Vni::new(vni).unwrap())
}

/// GET `path` of the overlayd in `ns` at its default --metrics-addr (curl, inside the host's
/// namespace, where that loopback address is the daemon's own): the status and the body.
pub fn http_get(ns: &str, path: &str) -> (u16, String) {
    http(ns, "GET", path)
}

pub fn http(ns: &str, method: &str, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", overlayd::cli::DEFAULT_METRICS_ADDR);
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-m", "5", "-X", method])
        .args(["-w", "\n%{http_code}", &url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of one sample line of /metrics (`name{labels}` exactly as written), if present.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// `dig +short @server name` inside `ns`, retried until it answers `want` or `within` passed.
pub fn resolves(ns: &str, server: &str, name: &str, want: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "dig", "+short", "+time=1", "+tries=1"])
            .arg(format!("@{server}"))
            .arg(name)
            .output()
            .expect("dig (bind9-dnsutils)");
        if String::from_utf8_lossy(&out.stdout).trim() == want {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
