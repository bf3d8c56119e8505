//! The node record: registered under a lease, kept alive, gone after SIGKILL once the lease
//! expires, gone at once after SIGTERM/SIGINT (exit code 0).

mod common;

use std::time::{Duration, Instant};

use common::{args, eventually, wait_registered, Daemon, EtcdIn};
use nix::sys::signal::Signal;
use testutils::lab::Lab;

const TTL: u64 = 4;

#[test]
fn node_record_lives_under_a_lease_and_expires_after_sigkill() {
    let lab = Lab::new(1);
    let host = lab.host(0);
    let etcd = EtcdIn::new(&host.ns, &lab.etcd_endpoint);
    let ttl = TTL.to_string();
    // No --vtep: it is taken from the interface with the default route (eth0).
    let mut daemon = Daemon::start(
        "node1",
        &host.ns,
        &host.dir,
        &args(&lab.etcd_endpoint, "node1", &["--lease-ttl", &ttl]),
    );
    let (node, lease) = wait_registered(&etcd, &mut daemon, "node1", Duration::from_secs(10));
    assert_eq!(node.name, "node1");
    assert_eq!(node.vtep.to_string(), host.addr);
    assert!(node.since > 0);
    assert_ne!(lease, 0, "the node record must be attached to a lease");
    let (granted, _) = etcd.lease_ttl(lease).expect("the lease exists");
    assert_eq!(granted, TTL as i64);

    // Kept alive well past its TTL, on the same lease.
    std::thread::sleep(Duration::from_secs(2 * TTL + 1));
    daemon.assert_running();
    let (_, still) = etcd
        .node("node1")
        .expect("the record outlives its TTL while overlayd runs");
    assert_eq!(still, lease);
    let (_, left) = etcd.lease_ttl(lease).expect("the lease is alive");
    assert!(left >= 1, "keep-alives renew the lease (left: {left} s)");

    daemon.signal(Signal::SIGKILL);
    daemon
        .wait(Duration::from_secs(5))
        .expect("overlayd dies on SIGKILL");
    let killed = Instant::now();
    assert!(
        etcd.node("node1").is_some(),
        "nobody revoked the lease: the record stays until it expires"
    );
    let gone = eventually(Duration::from_secs(TTL + 5), || {
        etcd.node("node1").is_none()
    })
    .expect("the node record expires with its lease");
    println!(
        "node record gone {:?} after SIGKILL (lease TTL {TTL} s)",
        gone - killed
    );
    assert!(etcd.lease_ttl(lease).is_none());
}

#[test]
fn sigterm_and_sigint_exit_zero_and_remove_the_record_at_once() {
    let lab = Lab::new(1);
    let host = lab.host(0);
    let etcd = EtcdIn::new(&host.ns, &lab.etcd_endpoint);
    for (signal, tag) in [(Signal::SIGTERM, "term"), (Signal::SIGINT, "int")] {
        let mut daemon = Daemon::start(
            tag,
            &host.ns,
            &host.dir,
            &args(&lab.etcd_endpoint, "node1", &["--vtep", "192.0.2.77"]),
        );
        let (node, _) = wait_registered(&etcd, &mut daemon, "node1", Duration::from_secs(10));
        assert_eq!(
            node.vtep.to_string(),
            "192.0.2.77",
            "--vtep is published as given"
        );
        let sent = Instant::now();
        daemon.signal(signal);
        let status = daemon
            .wait(Duration::from_secs(3))
            .unwrap_or_else(|| panic!("overlayd did not exit on {signal}:\n{}", daemon.log()));
        println!("{signal}: exited {:?} after the signal", sent.elapsed());
        assert_eq!(
            status.code(),
            Some(0),
            "{signal}: {status}\n{}",
            daemon.log()
        );
        assert!(
            etcd.node("node1").is_none(),
            "{signal}: the lease is revoked on the way out, the record must be gone already"
        );
        assert!(daemon.log().contains("revoked"), "{}", daemon.log());
    }
}

#[test]
fn refuses_bad_arguments() {
    let bin = env!("CARGO_BIN_EXE_overlayd");
    let out = std::process::Command::new(bin).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "usage error without --etcd/--node"
    );
    let out = std::process::Command::new(bin)
        .args([
            "--etcd",
            "127.0.0.1:1",
            "--node",
            "n1",
            "--etcd-prefix",
            "no-slash",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prefix"), "{stderr}");
    let out = std::process::Command::new(bin)
        .args(["--etcd", "127.0.0.1:1", "--node", "bad/name"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node"));
}
