//! overlayd with exactly the capabilities deploy/ grants it (the DaemonSet's container and the
//! systemd unit): NET_ADMIN, SYS_ADMIN and NET_BIND_SERVICE, as root, nothing else. Enough for
//! every part on a lab of two hosts: the node registered, a container added on the other host
//! reached (peer entries programmed by overlayd), names answered in a gateway sandbox and on a
//! hostAccess bridge. And each is needed: without it, the part that uses it fails with EPERM or
//! EACCES in overlayd's log. `setpriv` empties the bounding and inheritable sets but for those
//! (what a container runtime does with `capabilities: {drop: [ALL], add: [...]}`).
//! Without root, etcd, dig or setpriv the tests fail.

mod common;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{resolves, EtcdIn};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use testutils::lab::{bin_dir, cni_path, Lab, OverlayNet, INTERNET_ADDR};
use testutils::Invocation;

const GRANTED: &str = "+net_admin,+sys_admin,+net_bind_service";

/// One overlayd in a lab host, with only the capabilities `caps` (setpriv's syntax).
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(lab: &Lab, h: usize, caps: &str) -> Agent {
        let host = lab.host(h);
        let log = host
            .dir
            .join(format!("overlayd-{}.log", caps.replace(',', "")));
        let stderr = File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &host.ns, "setpriv", "--inh-caps=-all"])
            .arg(format!("--bounding-set=-all,{caps}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_overlayd"))
            .args(["--etcd", &lab.etcd_endpoint, "--node", &host.name])
            .args(["--no-conflists", "--dns-upstream", INTERNET_ADDR])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start overlayd under setpriv");
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `what`; panics with the log after `within`.
    fn wait_log(&mut self, what: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.lines().any(|l| what.iter().all(|w| l.contains(w))) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("overlayd exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "no line with {what:?} in overlayd's log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- overlayd log ----\n{}", self.log());
        }
    }
}

/// ADD through the real plugin on `host`; the container's namespace and its first address.
fn add(lab: &mut Lab, host: usize, net: &OverlayNet, name: &str) -> (String, String) {
    let (ns, path) = lab.container(name);
    let inv = Invocation::new(bin_dir().join("vxlan-overlay"), "ADD")
        .attachment(name, &path, "eth0")
        .env("CNI_PATH", &cni_path())
        .env("CNI_ARGS", &format!("IgnoreUnknown=1;K8S_POD_NAME={name}"))
        .stdin(&net.config(lab, host));
    let result: Value = lab.run_on(host, &inv).ok();
    let addr = result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    (ns, addr)
}

fn del(lab: &Lab, host: usize, net: &OverlayNet, name: &str) {
    let inv = Invocation::new(bin_dir().join("vxlan-overlay"), "DEL")
        .attachment(name, "", "eth0")
        .env("CNI_PATH", &cni_path())
        .stdin(&net.config(lab, host));
    lab.run_on(host, &inv).ok();
}

#[test]
fn the_granted_capabilities_are_enough_for_every_part() {
    let mut lab = Lab::new(2);
    let etcd = EtcdIn::new(&lab.host(0).ns, &lab.etcd_endpoint);
    let _agents: Vec<Agent> = (0..2).map(|h| Agent::start(&lab, h, GRANTED)).collect();
    for h in 0..2 {
        let name = lab.host(h).name.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        while etcd.node(&name).is_none() {
            assert!(Instant::now() < deadline, "{name} never registered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // A network with gateway sandboxes: DNS needs setns (SYS_ADMIN) and port 53.
    let boxed = OverlayNet::new("boxed", 4301, "10.43.1.0/24");
    let (ns1, _) = add(&mut lab, 0, &boxed, "lp-a");
    let (_, a2) = add(&mut lab, 1, &boxed, "lp-b");
    // lp-b came after lp-a: host 0 knows it only from overlayd's peer entries (NET_ADMIN).
    assert!(
        lab.ping_within(&ns1, &a2, Duration::from_secs(5)),
        "lp-a cannot reach lp-b"
    );
    assert!(
        resolves(
            &ns1,
            "10.43.1.1",
            "lp-b.boxed.overlay",
            &a2,
            Duration::from_secs(5)
        ),
        "no answer from the sandbox's DNS"
    );

    // A hostAccess network: DNS on the bridge, in the host's namespace (port 53).
    let mut open = OverlayNet::new("open", 4302, "10.43.2.0/24");
    open.extra = json!({"hostAccess": true});
    let (ns3, _) = add(&mut lab, 0, &open, "lp-c");
    let (_, a4) = add(&mut lab, 1, &open, "lp-d");
    assert!(
        resolves(
            &ns3,
            "10.43.2.1",
            "lp-d.open.overlay",
            &a4,
            Duration::from_secs(5)
        ),
        "no answer on the bridge"
    );
    assert!(lab.ping_within(&ns3, &a4, Duration::from_secs(5)));
    for (h, net, name) in [
        (0, &boxed, "lp-a"),
        (1, &boxed, "lp-b"),
        (0, &open, "lp-c"),
        (1, &open, "lp-d"),
    ] {
        del(&lab, h, net, name);
    }
}

#[test]
fn each_granted_capability_is_needed() {
    let mut lab = Lab::new(2);
    let net = OverlayNet::new("needs", 4303, "10.43.3.0/24");
    // Host 1's agent has everything; host 0's misses one capability at a time.
    let _peer = Agent::start(&lab, 1, GRANTED);
    add(&mut lab, 0, &net, "lp-e");

    // Without SYS_ADMIN: no way into the gateway sandbox (setns: EPERM).
    let mut agent = Agent::start(&lab, 0, "+net_admin,+net_bind_service");
    agent.wait_log(
        &[
            "DNS of network needs",
            "enter network namespace",
            "not permitted",
        ],
        Duration::from_secs(10),
    );
    drop(agent);

    // Without NET_BIND_SERVICE: port 53 refused (EACCES).
    let mut agent = Agent::start(&lab, 0, "+net_admin,+sys_admin");
    agent.wait_log(
        &["DNS of network needs", "binding", "Permission denied"],
        Duration::from_secs(10),
    );
    drop(agent);

    // Without NET_ADMIN: the peer entries of a container added elsewhere cannot be written.
    let mut agent = Agent::start(&lab, 0, "+sys_admin,+net_bind_service");
    add(&mut lab, 1, &net, "lp-f");
    agent.wait_log(
        &["adding fdb", "ovx4303", "not permitted"],
        Duration::from_secs(10),
    );
    drop(agent);
    del(&lab, 0, &net, "lp-e");
    del(&lab, 1, &net, "lp-f");
}
