//! A lab of simulated hosts built from network namespaces: the one lab of the Rust tests, the
//! demo, the benchmarks and the conformance suite (the last three through the `lab` binary).
//!
//! ```text
//!   <p>-inet  (the simulated internet: 203.0.113.1/24 on lo; the hosts' router, 192.168.205.1)
//!      |
//!   <p>-sw    (the underlay switch: bridge br0, port pN toward host N)
//!    |    |
//!   <p>-h1   <p>-h2 ...   (hosts: eth0 192.168.205.10, .11, ...; default route via .1)
//! ```
//! Containers are further namespaces (`<p>-c-<name>`). etcd runs on chosen hosts, one member each,
//! on the host's underlay address (ports 2379 and 2380), one cluster.
//!
//! Everything is removed on drop, by exact name and PID: processes, the plugins' gateway sandboxes
//! (`ovl-<vni>-<node>`) of this lab's nodes, the plugins' lock files of its host namespaces, the
//! namespaces and the lab's directory. A *kept* lab ([`Lab::keep`]) outlives its process instead:
//! it is described in `<dir>/lab.json`, [`Lab::load`] reads it back and [`Lab::down`] removes it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{free_port, Invocation, Output};

pub const UNDERLAY: &str = "192.168.205";
pub const INTERNET_ADDR: &str = "203.0.113.1";
/// The lab's etcd members listen on these ports of their host's underlay address.
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
/// The file describing a kept lab, in its directory.
pub const STATE_FILE: &str = "lab.json";

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

/// A veth pair, both ends down: `port` in namespace `ns` (a port of bridge `master` from birth,
/// if given), its peer `eth0` in namespace `peer_ns`.
pub fn veth(ns: &str, port: &str, master: Option<&str>, peer_ns: &str) {
    let mut args = vec!["ip", "-n", ns, "link", "add", port];
    if let Some(master) = master {
        args.extend(["master", master]);
    }
    args.extend(["type", "veth", "peer", "name", "eth0", "netns", peer_ns]);
    sh(&args);
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// The node name (`--node` of overlayd, `node` of the plugins).
    pub name: String,
    /// The host's network namespace.
    pub ns: String,
    pub addr: String,
    /// Per-host directory (plugin data, conflists, caches, the etcd member's data).
    pub dir: PathBuf,
}

/// How to build a lab; [`Lab::new`] takes the defaults.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub hosts: usize,
    /// Names the namespaces `<prefix>-sw`, `<prefix>-inet`, `<prefix>-hN`, `<prefix>-c-NAME`.
    /// Default: unique per process and lab.
    pub prefix: Option<String>,
    /// Node names are `<node_prefix>N`. Default `<prefix>-node`: unique, because the plugins name
    /// per-node namespaces after the node in the /run/netns that every lab shares.
    pub node_prefix: Option<String>,
    /// The hosts (0-based) that run a member of the lab's etcd cluster; none when empty.
    pub etcd_members: Vec<usize>,
    /// The lab's directory (new or empty), removed with the lab. Default: a new one in $TMPDIR.
    pub dir: Option<PathBuf>,
    /// Only the plugins' sandboxes `ovl-<vni>-<node>` with a VNI in this range are removed at the
    /// end (a lab whose node names are not unique must not take another's). Default: every VNI.
    pub sandbox_vnis: Option<(u32, u32)>,
}

impl LabConfig {
    pub fn new(hosts: usize) -> LabConfig {
        LabConfig {
            hosts,
            prefix: None,
            node_prefix: None,
            etcd_members: vec![0],
            dir: None,
            sandbox_vnis: None,
        }
    }
}

/// A process the lab started, known by PID and start time (so that a PID reused by another
/// process is never signalled); `child` only while the lab's own process holds it.
#[derive(Debug, Serialize, Deserialize)]
struct Process {
    tag: String,
    /// The network namespace it runs in.
    #[serde(default)]
    ns: String,
    pid: u32,
    start: u64,
    #[serde(skip)]
    child: Option<Child>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Lab {
    pub prefix: String,
    pub hosts: Vec<Host>,
    pub internet: String,
    switch: String,
    namespaces: Vec<String>,
    processes: Vec<Process>,
    /// The first etcd member's client endpoint (`192.168.205.10:2379`), as the plugins take it.
    pub etcd_endpoint: String,
    /// Every member's, in the order of [`LabConfig::etcd_members`].
    pub etcd_endpoints: Vec<String>,
    etcd_members: Vec<usize>,
    sandbox_vnis: Option<(u32, u32)>,
    dir: PathBuf,
    /// Kept past this process (written to the state file): dropping it removes nothing.
    #[serde(skip)]
    kept: bool,
}

impl Lab {
    /// `n` hosts, the switch, the internet, and an etcd in host 1.
    pub fn new(n: usize) -> Lab {
        Lab::with(LabConfig::new(n))
    }

    pub fn with(config: LabConfig) -> Lab {
        assert!(nix_is_root(), "the lab needs root (network namespaces)");
        let id = LABS.fetch_add(1, Ordering::SeqCst);
        let prefix = config
            .prefix
            .unwrap_or_else(|| format!("l{}x{id}", std::process::id() % 100_000));
        let node_prefix = config
            .node_prefix
            .unwrap_or_else(|| format!("{prefix}-node"));
        let dir = config.dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "cni-overlay-lab-{prefix}-{}-{}",
                std::process::id(),
                free_port()
            ))
        });
        // The lab removes its directory at the end: it must hold nothing else.
        assert!(
            std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(true),
            "{} is not empty (a lab's directory must be new or empty)",
            dir.display()
        );
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create the lab directory {}: {e}", dir.display()));
        let mut lab = Lab {
            internet: format!("{prefix}-inet"),
            switch: format!("{prefix}-sw"),
            prefix: prefix.clone(),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            processes: Vec::new(),
            etcd_endpoint: String::new(),
            etcd_endpoints: Vec::new(),
            etcd_members: Vec::new(),
            sandbox_vnis: config.sandbox_vnis,
            dir,
            kept: false,
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

        for i in 0..config.hosts {
            let name = format!("{node_prefix}{}", i + 1);
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
            let dir = lab.dir.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            lab.hosts.push(Host {
                name,
                ns,
                addr,
                dir,
            });
        }
        if !config.etcd_members.is_empty() {
            lab.start_etcd(&config.etcd_members);
        }
        lab
    }

    fn add_ns(&mut self, ns: &str) {
        sh(&["ip", "netns", "add", ns]);
        self.namespaces.push(ns.to_string());
        in_ns(ns, &["ip", "link", "set", "lo", "up"]);
    }

    /// Connects namespace `ns` to the switch with `eth0` holding `cidr`.
    fn plug(&self, ns: &str, cidr: &str, port: &str) {
        veth(&self.switch, port, None, ns);
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

    /// One etcd cluster with a member on each of `members`, each named after its node, with its
    /// data and log in the host's directory. Waits until every member is healthy.
    fn start_etcd(&mut self, members: &[usize]) {
        self.etcd_members = members.to_vec();
        for &i in members {
            self.spawn_etcd_member(i);
            self.etcd_endpoints
                .push(format!("{}:{ETCD_CLIENT_PORT}", self.hosts[i].addr));
        }
        self.etcd_endpoint = self.etcd_endpoints[0].clone();
        let endpoints = self.etcd_endpoints.join(",");
        let ns = self.hosts[members[0]].ns.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if try_in_ns(
                &ns,
                &["etcdctl", "--endpoints", &endpoints, "endpoint", "health"],
            ) {
                return;
            }
            if let Some(dead) = self.processes.iter_mut().find_map(|p| {
                let exited = p.child.as_mut()?.try_wait().ok().flatten()?;
                Some(format!("pid {} {exited}", p.pid))
            }) {
                panic!(
                    "etcd exited during start-up ({dead}); see etcd.log in {}",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not start in the lab ({endpoints})");
    }

    /// Starts the etcd member of host `i` (0-based, one of the cluster's members), tagged `etcd`:
    /// at first with an empty data directory, later (after [`Lab::signal_etcd_member`]) on the
    /// data it kept, rejoining the cluster as the same member.
    fn spawn_etcd_member(&mut self, i: usize) -> u32 {
        let peer = |h: &Host| format!("http://{}:{ETCD_PEER_PORT}", h.addr);
        let cluster = self
            .etcd_members
            .iter()
            .map(|&m| format!("{}={}", self.hosts[m].name, peer(&self.hosts[m])))
            .collect::<Vec<_>>()
            .join(",");
        let h = self.hosts[i].clone();
        let client = format!("http://{}:{ETCD_CLIENT_PORT}", h.addr);
        let args =
            crate::etcd_member_args(&h.name, &h.dir.join("etcd"), &client, &peer(&h), &cluster);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn_logged(
            "etcd",
            &h.ns,
            crate::etcd_binary().to_str().unwrap(),
            &args,
            &h.dir.join("etcd.log"),
        )
    }

    /// The hosts (0-based) running a member of the lab's etcd cluster.
    pub fn etcd_members(&self) -> &[usize] {
        &self.etcd_members
    }

    /// Sends `signal` to the etcd member of host `i` (0-based) if it runs (SIGKILL for a crash);
    /// a member killed this way is forgotten, [`Lab::start_etcd_member`] starts it again.
    /// Returns whether it was running.
    pub fn signal_etcd_member(&mut self, i: usize, signal_number: i32) -> bool {
        assert!(
            self.etcd_members.contains(&i),
            "host {} runs no etcd member",
            i + 1
        );
        let ns = self.hosts[i].ns.clone();
        let Some(index) = self
            .processes
            .iter_mut()
            .position(|p| p.tag == "etcd" && p.ns == ns && p.alive())
        else {
            return false;
        };
        let mut p = self.processes.remove(index);
        signal(p.pid, signal_number);
        if signal_number == libc::SIGKILL || signal_number == libc::SIGTERM {
            let deadline = Instant::now() + Duration::from_secs(10);
            while p.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(child) = p.child.as_mut() {
                let _ = child.wait();
            }
        } else {
            self.processes.push(p);
        }
        true
    }

    /// Starts host `i`'s etcd member again (after [`Lab::signal_etcd_member`]); its PID. Does
    /// not wait for it: the caller decides what "back" means (a quorum, this member healthy).
    pub fn start_etcd_member(&mut self, i: usize) -> u32 {
        assert!(
            self.etcd_members.contains(&i),
            "host {} runs no etcd member",
            i + 1
        );
        let ns = self.hosts[i].ns.clone();
        assert!(
            !self
                .processes
                .iter_mut()
                .any(|p| p.tag == "etcd" && p.ns == ns && p.alive()),
            "host {}'s etcd member runs already",
            i + 1
        );
        self.spawn_etcd_member(i)
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
        self.record(tag, ns, child);
    }

    /// Starts a service inside `ns` with stdout and stderr appended to `log` and stdin closed, in
    /// the host's mount namespace (`nsenter --net`, not `ip netns exec`): it holds none of the
    /// caller's pipes and may outlive it, in a kept lab. Returns its PID.
    pub fn spawn_logged(
        &mut self,
        tag: &str,
        ns: &str,
        program: &str,
        args: &[&str],
        log: &Path,
    ) -> u32 {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} in {ns}: {e}"));
        self.record(tag, ns, child)
    }

    fn record(&mut self, tag: &str, ns: &str, child: Child) -> u32 {
        // nsenter and `ip netns exec` exec the program: the PID is the program's.
        let pid = child.id();
        self.processes.push(Process {
            tag: tag.to_string(),
            ns: ns.to_string(),
            pid,
            start: start_time(pid).unwrap_or(0),
            child: Some(child),
        });
        pid
    }

    /// The PIDs of the processes started with `tag` that still run (e.g. to SIGSTOP the etcd).
    pub fn pids(&mut self, tag: &str) -> Vec<u32> {
        self.processes
            .iter_mut()
            .filter(|p| p.tag == tag)
            .filter_map(|p| p.alive().then_some(p.pid))
            .collect()
    }

    /// Stops the processes started with `tag` (SIGTERM, then SIGKILL after 3 s).
    pub fn kill(&mut self, tag: &str) {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.processes)
            .into_iter()
            .partition(|p| p.tag == tag);
        self.processes = rest;
        for mut p in mine {
            p.stop();
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

    /// The lab's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace a name stands for: a host (its number from 1, or its node name), `internet`,
    /// `switch`, a container (the name given to [`Lab::container`]) or one of the lab's
    /// namespaces by its own name.
    pub fn namespace_of(&self, target: &str) -> Option<String> {
        if let Ok(n) = target.parse::<usize>() {
            return n
                .checked_sub(1)
                .and_then(|i| self.hosts.get(i))
                .map(|h| h.ns.clone());
        }
        if let Some(h) = self.hosts.iter().find(|h| h.name == target) {
            return Some(h.ns.clone());
        }
        match target {
            "internet" => return Some(self.internet.clone()),
            "switch" => return Some(self.switch.clone()),
            _ => {}
        }
        let container = format!("{}-c-{target}", self.prefix);
        let found = [container.as_str(), target]
            .into_iter()
            .find(|ns| self.namespaces.iter().any(|n| n == ns))
            .map(str::to_string);
        found
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

    /// The plugins' gateway sandboxes of this lab's nodes (`ovl-<vni>-<node>`), within the VNIs
    /// of [`LabConfig::sandbox_vnis`].
    pub fn sandboxes(&self) -> Vec<String> {
        Lab::namespaces_starting_with(model::names::SANDBOX_PREFIX)
            .into_iter()
            .filter(|ns| {
                self.hosts.iter().any(|h| {
                    model::names::vni_of_sandbox(ns, &h.name).is_some_and(|vni| {
                        self.sandbox_vnis
                            .is_none_or(|(first, last)| (first..=last).contains(&vni.get()))
                    })
                })
            })
            .collect()
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

    /// Host `host`'s state and etcd's, for "exactly as it was": see [`Snapshot`]. `container`
    /// adds a container namespace's links, addresses and routes.
    pub fn snapshot(&self, host: usize, container: Option<&str>) -> Snapshot {
        let mut snapshot = self.host_snapshot(host, container);
        if !self.etcd_members.is_empty() {
            snapshot.0.push(("etcd", self.etcd_dump("/cni-overlay")));
        }
        snapshot
    }

    /// [`Lab::snapshot`] without etcd (for when it is stopped).
    pub fn host_snapshot(&self, host: usize, container: Option<&str>) -> Snapshot {
        let ns = &self.hosts[host].ns;
        // An IPv6 address is "tentative" for a moment after its link comes up: not a change.
        let addrs = |ns: &str| in_ns(ns, &["ip", "-o", "addr", "show"]).replace(" tentative", "");
        let mut parts = vec![
            ("link", in_ns(ns, &["ip", "-o", "link", "show"])),
            ("addr", addrs(ns)),
            ("route", in_ns(ns, &["ip", "route", "show"])),
            ("route6", in_ns(ns, &["ip", "-6", "route", "show"])),
            ("nft", in_ns(ns, &["nft", "-s", "list", "ruleset"])),
        ];
        let mut namespaces: Vec<String> =
            Lab::namespaces_starting_with(&format!("{}-", self.prefix));
        namespaces.extend(self.sandboxes());
        namespaces.sort();
        parts.push(("netns", namespaces.join("\n")));
        if let Some(c) = container {
            parts.push(("container link", in_ns(c, &["ip", "-o", "link", "show"])));
            parts.push(("container addr", addrs(c)));
            parts.push(("container route", in_ns(c, &["ip", "route", "show"])));
        }
        Snapshot(parts)
    }

    /// Runs etcdctl against the lab's etcd (from the first member's host); its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let member = *self.etcd_members.first().expect("the lab has no etcd");
        let endpoints = self.etcd_endpoints.join(",");
        let mut full = vec!["etcdctl", "--endpoints", &endpoints];
        full.extend_from_slice(args);
        in_ns(&self.hosts[member].ns, &full)
    }

    /// The keys under `prefix`.
    pub fn etcd_keys(&self, prefix: &str) -> Vec<String> {
        self.etcdctl(&["get", "--prefix", "--keys-only", prefix])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Every key under `prefix`, one line each: key, value, create and mod revisions (from
    /// etcdctl's `fields` output, whose strings are quoted: one line per field, newlines escaped).
    pub fn etcd_dump(&self, prefix: &str) -> String {
        let fields = self.etcdctl(&["get", "--prefix", prefix, "-w", "fields"]);
        let mut out = String::new();
        for line in fields.lines() {
            let Some((name, value)) = line.split_once(" : ") else {
                continue;
            };
            match name {
                "\"Key\"" => out.push_str(&format!("\n{value}")),
                "\"CreateRevision\"" | "\"ModRevision\"" | "\"Value\"" => {
                    out.push_str(&format!(" {value}"))
                }
                _ => {}
            }
        }
        out.trim_start().to_string()
    }

    /// [`Lab::snapshot`] once the host is quiet: two consecutive ones agree (a bridge's carrier,
    /// for one, settles a moment after its first port comes up). At most about 3 s.
    pub fn settled_snapshot(&self, host: usize, container: Option<&str>) -> Snapshot {
        self.settled(|| self.snapshot(host, container))
    }

    /// [`Lab::host_snapshot`] once the host is quiet.
    pub fn settled_host_snapshot(&self, host: usize, container: Option<&str>) -> Snapshot {
        self.settled(|| self.host_snapshot(host, container))
    }

    fn settled(&self, take: impl Fn() -> Snapshot) -> Snapshot {
        let mut last = take();
        for _ in 0..6 {
            let next = take();
            if next == last {
                break;
            }
            last = next;
            std::thread::sleep(Duration::from_millis(500));
        }
        last
    }

    /// Keeps the lab past this process: writes `<dir>/lab.json`, which [`Lab::load`] reads back.
    /// Its processes run on; nothing is removed until [`Lab::down`].
    pub fn keep(&mut self) {
        self.kept = true;
        self.save();
    }

    /// Writes the state file (atomically: a new file renamed over the old one).
    pub fn save(&self) {
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(self).unwrap() + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, self.dir.join(STATE_FILE)).unwrap();
    }

    /// The kept lab described in `dir`, if any. Dropping it removes nothing.
    pub fn load(dir: &Path) -> Option<Lab> {
        let text = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
        let mut lab: Lab = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(STATE_FILE).display()));
        lab.kept = true;
        Some(lab)
    }

    /// Holds `<dir>/lab.lock` while it lives: changes of a kept lab (load, change, save) by
    /// concurrent processes are made one at a time.
    pub fn lock(dir: &Path) -> File {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lab.lock"))
            .unwrap_or_else(|e| panic!("open the lab's lock in {}: {e}", dir.display()));
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        file
    }

    /// Removes everything now (what dropping a lab that is not kept does).
    pub fn down(mut self) {
        self.teardown();
        self.kept = true;
    }

    fn teardown(&mut self) {
        for mut p in self.processes.drain(..).rev() {
            p.stop();
        }
        // Lock files the plugins keyed by this lab's host namespaces (their inodes).
        for host in &self.hosts {
            remove_lock_files(&host.ns);
        }
        // Namespaces the plugins made for this lab's nodes (vxlan-overlay's gateway sandboxes),
        // when the lab ended without deleting every container.
        let sandboxes = self.sandboxes();
        // Containers a test or script removed itself are gone already.
        for ns in sandboxes.into_iter().chain(self.namespaces.drain(..).rev()) {
            if Path::new("/run/netns").join(&ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.kept {
            self.teardown();
        }
    }
}

/// What "the host and etcd exactly as they were" compares, in named parts: the host's links,
/// addresses, routes (IPv4 and IPv6) and nftables ruleset; the lab's network namespaces and its
/// nodes' gateway sandboxes; a container's links, addresses and routes; every key under
/// `/cni-overlay` with its value and create and mod revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(pub Vec<(&'static str, String)>);

impl Snapshot {
    /// The lines that differ (`-` before, `+` after, with their part), at most `max`.
    pub fn diff(&self, after: &Snapshot, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        for ((part, before), (_, now)) in self.0.iter().zip(&after.0) {
            let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
            let (b, a) = (lines(before), lines(now));
            out.extend(
                b.iter()
                    .filter(|l| !a.contains(l))
                    .map(|l| format!("- {part}: {l}")),
            );
            out.extend(
                a.iter()
                    .filter(|l| !b.contains(l))
                    .map(|l| format!("+ {part}: {l}")),
            );
        }
        out.truncate(max);
        out
    }
}

impl Process {
    /// SIGTERM, then SIGKILL after 3 s, if it is still the process the lab started.
    fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
        }
        if !self.alive() {
            return;
        }
        signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(self.pid, libc::SIGKILL);
        if let Some(child) = self.child.as_mut() {
            let _ = child.wait();
        }
    }

    /// Running (not a zombie), and the same process: its start time is the one recorded.
    fn alive(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            return matches!(child.try_wait(), Ok(None));
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        fields.first() != Some(&"Z")
            && fields.get(19).and_then(|s| s.parse().ok()) == Some(self.start)
    }
}

/// A process's start time (field 22 of /proc/PID/stat, in clock ticks since boot).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a PID this lab started, checked against its start time by the caller.
    unsafe {
        libc::kill(pid as i32, signal);
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

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
