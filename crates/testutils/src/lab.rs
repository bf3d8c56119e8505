//! A lab of simulated hosts built from network namespaces, for black-box tests of the plugins.
//!
//! ```text
//!   <p>-inet  (the simulated internet: 203.0.113.1/24 on lo; the hosts' router, 192.168.205.1)
//!      |
//!   <p>-sw    (the underlay switch: bridge br0)
//!    |    |
//!   <p>-h1   <p>-h2 ...   (hosts: eth0 192.168.205.10, .11, ...; default route via .1)
//! ```
//! Containers are further namespaces (`<p>-c-<name>`). etcd runs inside host 1 on its underlay address.
//! Everything is removed on drop, by exact name.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{free_port, Invocation, Output, TempDir};

pub const UNDERLAY: &str = "192.168.205";
pub const INTERNET_ADDR: &str = "203.0.113.1";

static LABS: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip` (or anything) and panics with its stderr on failure: lab set-up must not half-work.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`sh`] but returns success instead of panicking.
pub fn try_sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    sh(&full)
}

pub fn try_in_ns(ns: &str, args: &[&str]) -> bool {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    try_sh(&full)
}

/// The directory of the workspace's binaries built with the running test (its profile's target
/// directory): the plugins' CNI_PATH. Fails the test, naming what to build, when they are missing.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for b in ["vxlan-overlay", "etcd-ipam", "overlayd"] {
        assert!(
            dir.join(b).exists(),
            "{b} is not built in {} (cargo test --workspace builds it)",
            dir.display()
        );
    }
    dir
}

/// CNI_PATH for the lab: our binaries first, then Debian's reference plugins.
pub fn cni_path() -> String {
    format!("{}:/usr/lib/cni", bin_dir().display())
}

/// A vxlan-overlay network as the lab's hosts configure it: etcd-ipam (or `ipam` replaced) with a
/// data directory per host, the lab's etcd, the host's node name; `extra` keys are added on top.
pub struct OverlayNet {
    pub name: String,
    pub vni: u32,
    pub ipam: Value,
    pub extra: Value,
}

impl OverlayNet {
    pub fn new(name: &str, vni: u32, subnet: &str) -> OverlayNet {
        OverlayNet {
            name: name.into(),
            vni,
            ipam: json!({"type": "etcd-ipam", "subnet": subnet}),
            extra: json!({}),
        }
    }

    /// The network's configuration on lab host `host`.
    pub fn config(&self, lab: &Lab, host: usize) -> Value {
        let h = lab.host(host);
        let mut ipam = self.ipam.clone();
        let data = if ipam["type"] == "etcd-ipam" {
            "etcd-ipam"
        } else {
            "host-local"
        };
        ipam["dataDir"] = json!(h.dir.join(data));
        let mut c = json!({"cniVersion": "1.0.0", "name": self.name, "type": "vxlan-overlay",
                           "vni": self.vni, "node": h.name,
                           "etcd": {"endpoints": [lab.etcd_endpoint], "timeoutMs": 3000},
                           "ipam": ipam});
        for (k, v) in self.extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }
}

pub struct Host {
    pub name: String,
    /// The host's network namespace.
    pub ns: String,
    pub addr: String,
    /// Per-host directory (plugin data, conflists, caches).
    pub dir: PathBuf,
}

pub struct Lab {
    pub prefix: String,
    pub hosts: Vec<Host>,
    pub internet: String,
    switch: String,
    namespaces: Vec<String>,
    processes: Vec<(String, Child)>,
    pub etcd_endpoint: String,
    _dir: TempDir,
}

impl Lab {
    /// `n` hosts, the switch, the internet, and an etcd in host 1.
    pub fn new(n: usize) -> Lab {
        assert!(nix_is_root(), "the lab needs root (network namespaces)");
        let id = LABS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("l{}x{id}", std::process::id() % 100_000);
        let dir = TempDir::new(&format!("lab-{prefix}"));
        let mut lab = Lab {
            internet: format!("{prefix}-inet"),
            switch: format!("{prefix}-sw"),
            prefix: prefix.clone(),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            processes: Vec::new(),
            etcd_endpoint: String::new(),
            _dir: dir,
        };
        let switch = lab.switch.clone();
        lab.add_ns(&switch);
        in_ns(&switch, &["ip", "link", "add", "br0", "type", "bridge"]);
        in_ns(&switch, &["ip", "link", "set", "br0", "up"]);

        let internet = lab.internet.clone();
        lab.add_ns(&internet);
        lab.plug(&internet, &format!("{UNDERLAY}.1/24"), "p0");
        in_ns(
            &internet,
            &[
                "ip",
                "addr",
                "add",
                &format!("{INTERNET_ADDR}/24"),
                "dev",
                "lo",
            ],
        );
        in_ns(&internet, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);

        for i in 0..n {
            // Unique per lab: labs of parallel tests share /run/netns, where plugins name
            // per-node namespaces after the node.
            let name = format!("{prefix}-node{}", i + 1);
            let ns = format!("{prefix}-h{}", i + 1);
            lab.add_ns(&ns);
            let addr = format!("{UNDERLAY}.{}", 10 + i);
            lab.plug(&ns, &format!("{addr}/24"), &format!("p{}", i + 1));
            in_ns(
                &ns,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("{UNDERLAY}.1"),
                ],
            );
            let dir = lab._dir.path().join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            lab.hosts.push(Host {
                name,
                ns,
                addr,
                dir,
            });
        }
        lab.start_etcd();
        lab
    }

    fn add_ns(&mut self, ns: &str) {
        sh(&["ip", "netns", "add", ns]);
        self.namespaces.push(ns.to_string());
        in_ns(ns, &["ip", "link", "set", "lo", "up"]);
    }

    /// Connects namespace `ns` to the switch with `eth0` holding `cidr`.
    fn plug(&self, ns: &str, cidr: &str, port: &str) {
        sh(&[
            "ip",
            "-n",
            &self.switch,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &self.switch,
            "link",
            "set",
            port,
            "master",
            "br0",
            "up",
        ]);
        in_ns(ns, &["ip", "addr", "add", cidr, "dev", "eth0"]);
        in_ns(ns, &["ip", "link", "set", "eth0", "up"]);
    }

    fn start_etcd(&mut self) {
        let host = &self.hosts[0];
        let (cport, pport) = (free_port(), free_port());
        let client = format!("http://{}:{cport}", host.addr);
        let peer = format!("http://{}:{pport}", host.addr);
        let data = host.dir.join("etcd");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.ns,
                crate::etcd_binary().to_str().unwrap(),
            ])
            .args(crate::etcd_args("lab", &data, &client, &peer))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd in the lab");
        self.processes.push(("etcd".into(), child));
        self.etcd_endpoint = format!("{}:{cport}", host.addr);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if try_in_ns(
                &self.hosts[0].ns,
                &[
                    "etcdctl",
                    "--endpoints",
                    &self.etcd_endpoint,
                    "endpoint",
                    "health",
                ],
            ) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not start in the lab");
    }

    /// Starts a long-running process inside `ns`; it is killed on drop (or by [`Lab::kill`]).
    pub fn spawn(
        &mut self,
        tag: &str,
        ns: &str,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} in {ns}: {e}"));
        self.processes.push((tag.to_string(), child));
    }

    /// Stops the processes started with `tag` (SIGTERM, then SIGKILL after 3 s).
    pub fn kill(&mut self, tag: &str) {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.processes)
            .into_iter()
            .partition(|(t, _)| t == tag);
        self.processes = rest;
        for (_, mut child) in mine {
            stop_child(&mut child);
        }
    }

    /// A container: a namespace `<p>-c-<name>`, returned with its path.
    pub fn container(&mut self, name: &str) -> (String, String) {
        let ns = format!("{}-c-{name}", self.prefix);
        self.add_ns(&ns);
        let path = format!("/run/netns/{ns}");
        (ns, path)
    }

    /// Removes a container namespace early (to test DEL without a namespace).
    pub fn remove_container(&mut self, ns: &str) {
        if try_sh(&["ip", "netns", "del", ns]) {
            self.namespaces.retain(|n| n != ns);
        }
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Runs a plugin invocation inside host `i`'s namespace, as the runtime on that host would.
    pub fn run_on(&self, i: usize, invocation: &Invocation) -> Output {
        invocation.run_in_netns(&self.hosts[i].ns)
    }

    /// Network namespaces whose name starts with `prefix` (e.g. leftovers of a plugin).
    pub fn namespaces_starting_with(prefix: &str) -> Vec<String> {
        std::fs::read_dir("/run/netns")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn ping(&self, from_ns: &str, to: &str) -> bool {
        try_in_ns(from_ns, &["ping", "-c", "1", "-W", "1", to])
    }

    /// Pings until one reply or `within` has passed.
    pub fn ping_within(&self, from_ns: &str, to: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if try_in_ns(from_ns, &["ping", "-c", "1", "-W", "1", to]) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in self.processes.iter_mut() {
            stop_child(child);
        }
        // Lock files the plugins keyed by this lab's host namespaces (their inodes).
        for host in &self.hosts {
            remove_lock_files(&host.ns);
        }
        // Namespaces the plugins made for this lab's nodes (vxlan-overlay's gateway sandboxes,
        // named ovl-<vni>-<node>), when a test ended without deleting every container.
        for host in &self.hosts {
            for ns in Lab::namespaces_starting_with(model::names::SANDBOX_PREFIX)
                .into_iter()
                .filter(|n| n.ends_with(&format!("-{}", host.name)))
            {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Removes the plugins' lock files of a host namespace: `/run/cni-overlay/locks/<inode>-*.lock`
/// (vxlan-overlay's `vni<N>` and `isolation`, gwbridge-egress's `gwbridge-egress`).
fn remove_lock_files(ns: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(inode) = std::fs::metadata(format!("/run/netns/{ns}")).map(|m| m.ino()) else {
        return;
    };
    if let Ok(entries) = std::fs::read_dir("/run/cni-overlay/locks") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{inode}-")) && name.ends_with(".lock") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn stop_child(child: &mut Child) {
    let pid = child.id() as i32;
    unsafe_kill(pid, 15);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn unsafe_kill(pid: i32, signal: i32) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

fn nix_is_root() -> bool {
    sh(&["id", "-u"]).trim() == "0"
}
