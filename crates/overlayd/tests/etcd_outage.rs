//! overlayd keeps running while etcd is away (down from the start, restarted, or out of reach
//! for longer than the lease) and converges again once it is back.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    add_vxlan, args, endpoint, endpoint_key, eventually, http_get, vx, wait_registered, Daemon,
    EtcdIn, Tables,
};
use testutils::lab::{in_ns, try_in_ns, Lab};

const H1: &str = "192.168.205.10";
const H2: &str = "192.168.205.11";

/// An etcd of the test's own inside a lab host, so that the test can kill and restart it.
struct OwnEtcd {
    ns: String,
    endpoint: String,
    peer: String,
    data: PathBuf,
    child: Option<Child>,
}

impl OwnEtcd {
    fn new(ns: &str, addr: &str, data: PathBuf) -> OwnEtcd {
        OwnEtcd {
            ns: ns.to_string(),
            endpoint: format!("{addr}:{}", testutils::free_port()),
            peer: format!("http://{addr}:{}", testutils::free_port()),
            data,
            child: None,
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let client = format!("http://{}", self.endpoint);
        let etcd = testutils::etcd_binary();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                etcd.to_str().unwrap(),
                "--name",
                "own",
                "--data-dir",
            ])
            .arg(&self.data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &self.peer,
                "--initial-advertise-peer-urls",
                &self.peer,
            ])
            .args([
                "--initial-cluster",
                &format!("own={}", self.peer),
                "--log-level",
                "error",
                "--logger",
                "zap",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        eventually(Duration::from_secs(20), || {
            try_in_ns(
                &self.ns,
                &[
                    "etcdctl",
                    "--endpoints",
                    &self.endpoint,
                    "endpoint",
                    "health",
                ],
            )
        })
        .expect("own etcd healthy");
    }

    /// SIGKILL: no goodbye to the clients, like a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn keeps_running_through_an_etcd_restart_and_converges() {
    let lab = Lab::new(2);
    let host = lab.host(1);
    add_vxlan(&host.ns, "blue", 42, H2);
    let tables = Tables::new(&host.ns);
    let mut own = OwnEtcd::new(&lab.host(0).ns, H1, lab.host(0).dir.join("own-etcd"));

    // Started before etcd exists: it waits, it does not exit.
    let mut daemon = Daemon::start(
        "node2",
        &host.ns,
        &host.dir,
        &args(&own.endpoint, "node2", &["--lease-ttl", "4"]),
    );
    std::thread::sleep(Duration::from_secs(2));
    daemon.assert_running();

    own.start();
    let etcd = EtcdIn::new(&own.ns, &own.endpoint);
    wait_registered(&etcd, &mut daemon, "node2", Duration::from_secs(10));
    let a = endpoint(
        "blue",
        42,
        "a",
        "node1",
        H1,
        "02:00:00:00:00:0a",
        &["10.42.0.10/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "a"), &a);
    tables
        .wait_for(&vx(42), Duration::from_secs(10), |t| {
            t.has_fdb("02:00:00:00:00:0a", H1) && t.has_neigh("10.42.0.10", "02:00:00:00:00:0a")
        })
        .unwrap_or_else(|| panic!("a not programmed:\n{}", daemon.log()));

    // Down for longer than the lease TTL.
    own.kill();
    std::thread::sleep(Duration::from_secs(6));
    daemon.assert_running();
    let t = tables.of(&vx(42));
    assert!(
        t.has_fdb("02:00:00:00:00:0a", H1),
        "entries must survive an etcd outage: {t:?}"
    );

    own.start();
    let back = Instant::now();
    let b = endpoint(
        "blue",
        42,
        "b",
        "node1",
        H1,
        "02:00:00:00:00:0b",
        &["10.42.0.11/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "b"), &b);
    etcd.delete(&endpoint_key("blue", "a"));
    let converged = tables
        .wait_for(&vx(42), Duration::from_secs(10), |t| {
            t.has_fdb("02:00:00:00:00:0b", H1)
                && t.has_neigh("10.42.0.11", "02:00:00:00:00:0b")
                && !t.has_mac("02:00:00:00:00:0a")
                && !t.has_ip("10.42.0.10")
        })
        .unwrap_or_else(|| {
            panic!(
                "no convergence after etcd came back: {:?}\n{}",
                tables.of(&vx(42)),
                daemon.log()
            )
        });
    println!("converged {:?} after etcd was back", converged - back);
    wait_registered(&etcd, &mut daemon, "node2", Duration::from_secs(10));
    daemon.assert_running();
    let log = daemon.log();
    assert!(
        log.contains("WARN"),
        "the outage is logged as warnings:\n{log}"
    );
}

#[test]
fn recovers_from_a_partition_longer_than_the_lease() {
    let lab = Lab::new(2);
    let host = lab.host(1);
    let etcd = EtcdIn::new(&lab.host(0).ns, &lab.etcd_endpoint);
    add_vxlan(&host.ns, "blue", 42, H2);
    let tables = Tables::new(&host.ns);
    let mut daemon = Daemon::start(
        "node2",
        &host.ns,
        &host.dir,
        &args(&lab.etcd_endpoint, "node2", &["--lease-ttl", "3"]),
    );
    let (_, first_lease) = wait_registered(&etcd, &mut daemon, "node2", Duration::from_secs(10));
    let a = endpoint(
        "blue",
        42,
        "a",
        "node1",
        H1,
        "02:00:00:00:00:0a",
        &["10.42.0.10/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "a"), &a);
    tables
        .wait_for(&vx(42), Duration::from_secs(10), |t| {
            t.has_fdb("02:00:00:00:00:0a", H1)
        })
        .unwrap_or_else(|| panic!("a not programmed:\n{}", daemon.log()));

    // The underlay switch drops host 2's frames silently (no RST, no ICMP): a partition.
    let switch = format!("{}-sw", lab.prefix);
    in_ns(
        &switch,
        &["bridge", "link", "set", "dev", "p2", "state", "0"],
    );
    let cut = Instant::now();
    eventually(Duration::from_secs(10), || etcd.node("node2").is_none())
        .expect("the lease expires during the partition");
    println!("node record expired {:?} into the partition", cut.elapsed());
    // Its record is gone: overlayd must not go on saying it is registered (it cannot confirm its
    // lease, and etcd has let it expire).
    let unready = eventually(Duration::from_secs(15), || {
        let (status, body) = http_get(&host.ns, "/readyz");
        status == 503 && body.contains("not registered")
    });
    assert!(
        unready.is_some(),
        "/readyz during the partition: {:?}\n{}",
        http_get(&host.ns, "/readyz"),
        daemon.log()
    );
    println!("not ready {:?} into the partition", cut.elapsed());
    etcd.delete(&endpoint_key("blue", "a"));
    let b = endpoint(
        "blue",
        42,
        "b",
        "node1",
        H1,
        "02:00:00:00:00:0b",
        &["10.42.0.11/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "b"), &b);
    std::thread::sleep(Duration::from_secs(2));
    daemon.assert_running();
    assert!(
        tables.of(&vx(42)).has_fdb("02:00:00:00:00:0a", H1),
        "nothing is torn down while etcd is out of reach"
    );

    in_ns(
        &switch,
        &["bridge", "link", "set", "dev", "p2", "state", "3"],
    );
    let healed = Instant::now();
    let (_, lease) = wait_registered(&etcd, &mut daemon, "node2", Duration::from_secs(15));
    assert_ne!(lease, first_lease, "registered again under a new lease");
    let ready = eventually(Duration::from_secs(10), || {
        http_get(&host.ns, "/readyz") == (200, "ready\n".to_string())
    });
    assert!(
        ready.is_some(),
        "/readyz after the partition: {:?}",
        http_get(&host.ns, "/readyz")
    );
    println!(
        "registered again {:?} after the partition healed",
        healed.elapsed()
    );
    tables
        .wait_for(&vx(42), Duration::from_secs(25), |t| {
            t.has_fdb("02:00:00:00:00:0b", H1)
                && !t.has_mac("02:00:00:00:00:0a")
                && !t.has_ip("10.42.0.10")
        })
        .unwrap_or_else(|| {
            panic!(
                "no convergence after the partition: {:?}\n{}",
                tables.of(&vx(42)),
                daemon.log()
            )
        });
    println!(
        "endpoints converged {:?} after the partition healed",
        healed.elapsed()
    );
    daemon.assert_running();
}
