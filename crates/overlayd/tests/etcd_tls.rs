//! overlayd against an etcd that speaks TLS only, requires client certificates and has
//! user/password authentication on, configured with `--etcd-ca/--etcd-cert/--etcd-key/
//! --etcd-user/--etcd-password`: it registers its node, keeps it and revokes it on SIGTERM.
//!
//! overlayd programs the VXLAN devices of the namespace it runs in, so each test runs on a thread
//! of its own in a network namespace of its own (only `lo`), with its etcd and its overlayd; the
//! namespace goes with the thread and the processes it started. Needs root, like the other tests
//! of overlayd.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use model::records::{self, Node};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use store::{EtcdConfig, Store};
use testutils::{Auth, Etcd, TempDir};

const PREFIX: &str = "/cni-overlay";
const NODE: &str = "secure1";
const VTEP: &str = "192.0.2.41";

/// Runs `body` on a new thread inside a new network namespace with `lo` up.
fn in_own_netns(body: impl FnOnce() + Send + 'static) {
    let thread = std::thread::spawn(move || {
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        unshare(CloneFlags::CLONE_NEWNET).expect("a network namespace of our own (needs root)");
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_ne!(before, ours);
        // What this thread starts lives there too.
        let child = Command::new("readlink")
            .arg("/proc/self/ns/net")
            .output()
            .expect("run readlink");
        assert_eq!(
            String::from_utf8_lossy(&child.stdout).trim(),
            ours.display().to_string()
        );
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(up.success(), "ip link set lo up: {up}");
        body();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// overlayd with `args`, its log in `dir`; SIGKILLed on drop unless it exited.
struct Overlayd {
    child: Child,
    log: std::path::PathBuf,
    status: Option<ExitStatus>,
}

impl Overlayd {
    fn start(dir: &Path, args: &[String]) -> Overlayd {
        let log = dir.join("overlayd.log");
        let child = Command::new(env!("CARGO_BIN_EXE_overlayd"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create the log"))
            .spawn()
            .expect("start overlayd");
        Overlayd {
            child,
            log,
            status: None,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait for overlayd");
        }
        self.status
    }

    fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal overlayd");
    }
}

impl Drop for Overlayd {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- overlayd log ----\n{}", self.log());
        }
    }
}

/// overlayd's flags for `etcd`: TLS with its CA and client certificate, its user with `password`.
fn args(etcd: &Etcd, auth: &Auth, password: &str) -> Vec<String> {
    let pki = etcd.pki().unwrap();
    let mut args: Vec<String> = [
        "--etcd",
        &etcd.url(),
        "--node",
        NODE,
        "--vtep",
        VTEP,
        "--no-dns",
        "--no-conflists",
        "--lease-ttl",
        "4",
        "--etcd-user",
        &auth.user,
        "--etcd-password",
        password,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (flag, path) in [
        ("--etcd-ca", &pki.ca),
        ("--etcd-cert", &pki.client_cert),
        ("--etcd-key", &pki.client_key),
    ] {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    args
}

/// The node record and its lease, read as the test's own client (root, over TLS).
fn node_record(config: &EtcdConfig) -> Option<(Node, i64)> {
    let key = format!("{PREFIX}/nodes/{NODE}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut store = Store::new(config.clone()).unwrap();
            let resp = store.get(key.clone(), None).await.expect("read etcd");
            resp.kvs().first().map(|kv| {
                (
                    records::decode(key.as_bytes(), kv.value()).expect("node record"),
                    kv.lease(),
                )
            })
        })
}

fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn registers_over_tls_with_a_user_and_revokes_on_sigterm() {
    in_own_netns(|| {
        let mut etcd = Etcd::start_tls();
        let auth = etcd.enable_auth();
        let config = etcd.client_config();
        let dir = TempDir::new("overlayd-tls");
        let mut daemon = Overlayd::start(dir.path(), &args(&etcd, &auth, &auth.password));
        assert!(
            eventually(Duration::from_secs(10), || node_record(&config).is_some()),
            "overlayd did not register:\n{}",
            daemon.log()
        );
        let (node, lease) = node_record(&config).unwrap();
        assert_eq!(node.name, NODE);
        assert_eq!(node.vtep.to_string(), VTEP);
        assert_ne!(lease, 0, "the record is under a lease");

        // Kept alive past the lease's TTL: keep-alives pass over TLS with the token.
        std::thread::sleep(Duration::from_secs(6));
        assert!(
            daemon.exited().is_none(),
            "overlayd exited:\n{}",
            daemon.log()
        );
        assert_eq!(node_record(&config).map(|(_, l)| l), Some(lease));

        // Revoking the lease needs write permission on the record: the user's role has it.
        daemon.signal(Signal::SIGTERM);
        let status = daemon
            .wait(Duration::from_secs(3))
            .expect("overlayd exits on SIGTERM");
        assert_eq!(status.code(), Some(0), "{}", daemon.log());
        assert!(node_record(&config).is_none(), "{}", daemon.log());
        assert!(daemon.log().contains("revoked"), "{}", daemon.log());
    });
}

#[test]
fn a_wrong_password_is_logged_clearly_and_retried() {
    in_own_netns(|| {
        let mut etcd = Etcd::start_tls();
        let auth = etcd.enable_auth();
        let config = etcd.client_config();
        let dir = TempDir::new("overlayd-tls-wrong");
        let mut daemon = Overlayd::start(dir.path(), &args(&etcd, &auth, "wrong"));
        let expected = "refused user cni-overlay: etcdserver: authentication failed";
        assert!(
            eventually(Duration::from_secs(5), || daemon.log().contains(expected)),
            "no {expected:?} in the log:\n{}",
            daemon.log()
        );
        assert!(daemon.exited().is_none(), "overlayd keeps retrying");
        assert!(node_record(&config).is_none());
        assert!(etcd.keys("/").is_empty(), "nothing written");
    });
}

#[test]
fn an_unreadable_certificate_stops_it_at_start() {
    in_own_netns(|| {
        let mut etcd = Etcd::start_tls();
        let auth = etcd.enable_auth();
        let dir = TempDir::new("overlayd-tls-missing");
        let mut args = args(&etcd, &auth, &auth.password);
        let cert = args.iter().position(|a| a == "--etcd-cert").unwrap() + 1;
        args[cert] = dir.path().join("missing.pem").display().to_string();
        let mut daemon = Overlayd::start(dir.path(), &args);
        let status = daemon
            .wait(Duration::from_secs(3))
            .expect("overlayd exits on a configuration error");
        assert_eq!(status.code(), Some(1), "{}", daemon.log());
        assert!(daemon.log().contains("missing.pem"), "{}", daemon.log());
    });
}
