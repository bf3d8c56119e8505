//! containerd 1.6 with its CRI plugin on, inside a lab host, as a kubelet's node runs it: the
//! runtime of the CRI conformance suite (`crates/cri-conformance`). Set up as
//! `../shared/reference/cni-runtime-facts.md` records it:
//!
//! - containerd runs in the host's network namespace and in a **private mount namespace** with a
//!   tmpfs on `/run` (so CRI's `cni-<uuid>` namespaces, the plugins' gateway sandboxes and lock
//!   files stay per host and vanish with it) and a tmpfs on `/var/lib` with the host's own
//!   directory bind-mounted on `/var/lib/cni` (libcni's result cache path is fixed in 1.6; the
//!   plugins' data directories live there too). Nothing is mounted in, or written to, the
//!   machine's own namespaces.
//! - Its root, state, socket, configuration, CNI configuration and plugin directories are in the
//!   host's own directory; the CRI plugin has `restrict_oom_score_adj` (runc fails writing -998
//!   otherwise), `disable_apparmor`, `bin_dir`/`conf_dir`/`max_conf_num = 1` and a locally
//!   imported `sandbox_image` (busybox-static whose command sleeps: CRI never pulls an image it
//!   has). The same image serves the pods' containers.
//! - overlayd for that host runs in the same mount and network namespaces
//!   ([`CriHost::start_overlayd`]).
//!
//! Dropping a [`CriHost`] kills every task (through `ctr`), then containerd, its shims and
//! whatever else still runs in its mount namespace, each by exact PID, and removes its
//! directory. Drop it before its [`Lab`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::{bin_dir, Lab};
use crate::{Invocation, Output};

/// The image every pod runs (sandbox and containers): busybox-static with `sleep inf` as command.
pub const IMAGE: &str = "localhost/cni-overlay-busybox:cri";
/// The Kubernetes namespace of containerd's CRI.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// Debian's reference plugins: `loopback` (CRI sets up every pod's `lo` with it) and `host-local`
/// (gwbridge-egress's default IPAM).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// The containerd binary: $CONTAINERD_BIN or Debian's.
pub fn containerd_binary() -> PathBuf {
    std::env::var_os("CONTAINERD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/containerd"))
}

/// containerd's version, e.g. `1.6.20` (Debian's suffix left out).
pub fn containerd_version() -> String {
    let out = Command::new(containerd_binary())
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("containerd is required (install containerd): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .split('~')
        .next()
        .unwrap()
        .to_string()
}

/// One lab host's containerd with CRI (and, once started, its overlayd).
pub struct CriHost {
    /// The node name (the plugins' `node`, overlayd's `--node`).
    pub node: String,
    /// The host's network namespace (in the machine's `/run/netns`).
    pub ns: String,
    /// The host's underlay address.
    pub addr: String,
    /// Everything of this containerd: configuration, root, state, socket, CNI directories, logs.
    pub dir: PathBuf,
    containerd: Option<Child>,
    /// `mnt:[inode]` of containerd's mount namespace: what else runs there is ours.
    mount_ns: String,
    overlayd: Option<Child>,
}

impl CriHost {
    /// Starts containerd with CRI in lab host `host` (0-based), waits until the CRI plugin is up
    /// and imports [`IMAGE`].
    pub fn start(lab: &Lab, host: usize) -> CriHost {
        let h = lab.host(host).clone();
        assert!(
            containerd_binary().exists(),
            "containerd is required for the CRI suite: {} not found (install containerd)",
            containerd_binary().display()
        );
        for tool in ["ctr", "runc", "containerd-shim-runc-v2"] {
            assert!(
                which(tool).is_some(),
                "{tool} is required for the CRI suite (install containerd and runc)"
            );
        }
        for plugin in ["loopback", "host-local"] {
            assert!(
                Path::new(REFERENCE_PLUGINS).join(plugin).exists(),
                "{REFERENCE_PLUGINS}/{plugin} is required (install containernetworking-plugins)"
            );
        }
        let dir = lab.dir().join(format!("cri-{}", host + 1));
        // containerd's ttrpc socket is the longest path: unix sockets allow 107 bytes.
        let socket = dir.join("containerd.sock.ttrpc");
        assert!(
            socket.as_os_str().len() < 100,
            "{} is too long for a unix socket",
            socket.display()
        );
        for sub in ["root", "state", "net.d", "cni-bin", "cni-cache", "opt"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        link_plugins(&dir.join("cni-bin"));
        std::fs::write(dir.join("config.toml"), config_toml(&dir)).unwrap();

        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))
            .unwrap();
        // nsenter, unshare and sh each exec the next: the child's PID is containerd's.
        let script = r#"set -e
d=$1
mount -t tmpfs -o mode=755 cri-run /run
mkdir /run/netns
mount -t tmpfs -o mode=755 cri-var-lib /var/lib
mkdir /var/lib/cni
mount --bind "$d/cni-cache" /var/lib/cni
exec "$2" --config "$d/config.toml""#;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", h.ns))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", script, "cri-host"])
            .arg(&dir)
            .arg(containerd_binary())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let mut cri = CriHost {
            node: h.name.clone(),
            ns: h.ns.clone(),
            addr: h.addr.clone(),
            dir,
            mount_ns: String::new(),
            containerd: Some(child),
            overlayd: None,
        };
        cri.wait_up();
        let mount_ns = |pid: &str| {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        cri.mount_ns = mount_ns(&cri.pid().to_string());
        // Everything in that namespace is killed at the end: it must be containerd's own.
        assert!(
            !cri.mount_ns.is_empty() && cri.mount_ns != mount_ns("self"),
            "containerd is not in a mount namespace of its own"
        );
        cri.import_image();
        cri
    }

    /// containerd's PID.
    pub fn pid(&self) -> u32 {
        self.containerd.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The CRI socket (`unix://` left out).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The CNI configuration directory (`conf_dir`).
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    /// What is `/var/lib/cni` inside: libcni's cache is its `results/`.
    pub fn cni_cache(&self) -> PathBuf {
        self.dir.join("cni-cache")
    }

    /// The plugin directory (`bin_dir`): the workspace's plugins, Debian's reference plugins.
    pub fn cni_bin(&self) -> PathBuf {
        self.dir.join("cni-bin")
    }

    /// libcni's cached results, by file name (`<network>-<container id>-<ifname>`).
    pub fn cached_results(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.cni_cache().join("results"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Writes the CNI configuration list that CRI loads (the only file of `conf_dir`).
    pub fn write_conflist(&self, conflist: &Value) {
        let name = conflist["name"].as_str().expect("a conflist has a name");
        let path = self.conf_dir().join(format!("10-{name}.conflist"));
        let tmp = self.conf_dir().join(".conflist.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(conflist).unwrap()).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Runs a command in containerd's mount and network namespaces (where its plugins run).
    pub fn run_inside(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let out = Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.pid()))
            .arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .arg("--")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter {args:?}: {e}"));
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// Runs a plugin invocation where containerd runs its plugins: in its mount and network
    /// namespaces (the binary is taken as given, e.g. from [`CriHost::cni_bin`]).
    pub fn run_plugin(&self, invocation: &Invocation) -> Output {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--mount=/proc/{}/ns/mnt", self.pid()))
            .arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .arg("--")
            .arg(&invocation.binary);
        invocation.run_with(command)
    }

    /// The network namespaces in this host's private `/run/netns` (CRI's `cni-<uuid>`, the
    /// plugins' gateway sandboxes).
    pub fn named_netns(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .run_inside(&["ls", "-1", "/run/netns"])
            .stdout
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// Starts overlayd for this host in containerd's mount and network namespaces: DNS at the
    /// gateway, peers; `--no-conflists` (the suite writes the conflist CRI uses).
    pub fn start_overlayd(&mut self, etcd: &str) {
        assert!(self.overlayd.is_none(), "overlayd runs already");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("overlayd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.pid()))
            .arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .arg("--")
            .arg(bin_dir().join("overlayd"))
            .args(["--etcd", etcd, "--node", &self.node, "--no-conflists"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start overlayd");
        self.overlayd = Some(child);
    }

    /// Whether overlayd still runs (it must, all along).
    pub fn overlayd_running(&mut self) -> bool {
        self.overlayd
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines of containerd's and overlayd's logs, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for log in ["containerd.log", "overlayd.log"] {
            let text = std::fs::read_to_string(self.dir.join(log)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out += &format!("---- {} {log} ----\n{}\n", self.node, tail.join("\n"));
        }
        out
    }

    fn ctr(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ctr {args:?}: {e}"));
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// Until `ctr plugins ls` shows the CRI plugin `ok` (at most 30 s).
    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.containerd.as_mut().unwrap().try_wait().unwrap() {
                panic!("containerd exited ({status}):\n{}", self.logs(30));
            }
            if self.socket().exists() {
                let plugins = self.ctr(&["plugins", "ls"]);
                let cri = plugins
                    .stdout
                    .lines()
                    .find(|l| l.split_whitespace().nth(1) == Some("cri"));
                match cri.and_then(|l| l.split_whitespace().last()) {
                    Some("ok") => return,
                    Some("error") => {
                        panic!("containerd's CRI plugin failed to load:\n{}", self.logs(30))
                    }
                    _ => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "containerd's CRI did not come up within 30 s:\n{}",
                self.logs(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Builds [`IMAGE`] (scripts/lib/busybox-image.sh) and imports it into CRI's namespace.
    fn import_image(&self) {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/lib/busybox-image.sh"
        );
        let (rootfs, oci) = (self.dir.join("rootfs.tar"), self.dir.join("image.tar"));
        let status = Command::new("bash")
            .args([
                "-c",
                r#"source "$1" && busybox_rootfs_tar "$2" && busybox_oci_archive "$2" "$3" "$4" '["sleep","inf"]'"#,
                "busybox-image",
                script,
            ])
            .arg(&rootfs)
            .arg(&oci)
            .arg(IMAGE)
            .status()
            .expect("run bash");
        assert!(status.success(), "building the busybox image failed");
        let out = self.ctr(&[
            "-n",
            CRI_NAMESPACE,
            "images",
            "import",
            oci.to_str().unwrap(),
        ]);
        assert_eq!(out.code, 0, "ctr images import: {}", out.stderr);
        let _ = std::fs::remove_file(rootfs);
        let _ = std::fs::remove_file(oci);
    }

    /// Kills every task of CRI's namespace and removes its containers (no CNI teardown: the lab
    /// goes with it).
    fn kill_tasks(&self) {
        let ids = |what: &str| -> Vec<String> {
            self.ctr(&["-n", CRI_NAMESPACE, what, "ls", "-q"])
                .stdout
                .lines()
                .map(str::to_string)
                .collect()
        };
        for id in ids("tasks") {
            self.ctr(&["-n", CRI_NAMESPACE, "tasks", "kill", "-s", "SIGKILL", &id]);
        }
        for id in ids("tasks") {
            self.ctr(&["-n", CRI_NAMESPACE, "tasks", "delete", "-f", &id]);
        }
        for id in ids("containers") {
            self.ctr(&["-n", CRI_NAMESPACE, "containers", "delete", &id]);
        }
    }

    /// PIDs of processes that are ours: containerd's shims for this socket, and anything else in
    /// containerd's mount namespace.
    fn leftover_pids(&self) -> Vec<i32> {
        let socket = self.socket().display().to_string();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let shim = cmdline.contains("containerd-shim") && cmdline.contains(&socket);
            let in_ns = !self.mount_ns.is_empty()
                && std::fs::read_link(entry.path().join("ns/mnt"))
                    .is_ok_and(|l| l.display().to_string() == self.mount_ns);
            if (shim || in_ns) && pid as u32 != std::process::id() {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for CriHost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs(40));
        }
        if let Some(mut overlayd) = self.overlayd.take() {
            stop(&mut overlayd);
        }
        let running = self
            .containerd
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if running {
            self.kill_tasks();
        }
        if let Some(mut containerd) = self.containerd.take() {
            stop(&mut containerd);
        }
        // Shims outlive containerd, and a task ctr could not kill outlives its shim.
        for _ in 0..50 {
            let pids = self.leftover_pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) on a PID found just now to be this host's shim or in its
                // private mount namespace.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM, SIGKILL after 5 s, reaped.
fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// `bin_dir`: every reference plugin of Debian's, then the workspace's plugins over them.
fn link_plugins(dir: &Path) {
    for entry in std::fs::read_dir(REFERENCE_PLUGINS).into_iter().flatten() {
        let entry = entry.unwrap();
        let _ = std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name()));
    }
    let ours = bin_dir();
    for plugin in ["vxlan-overlay", "etcd-ipam", "gwbridge-egress"] {
        let target = ours.join(plugin);
        assert!(
            target.exists(),
            "{plugin} is not built in {} (cargo build --workspace --bins)",
            ours.display()
        );
        let link = dir.join(plugin);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, link).unwrap();
    }
}

fn config_toml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "{d}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{d}/cni-bin"
  conf_dir = "{d}/net.d"
  max_conf_num = 1
"#
    )
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.exists())
    })
}
