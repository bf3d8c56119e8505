//! overlayd's local HTTP endpoint (`--metrics-addr`, default 127.0.0.1:9393), read over HTTP as a
//! kubelet's probes and a Prometheus server would: /healthz answers while the process runs,
//! /readyz only once the node is registered and the endpoint records are listed, /metrics counts
//! what overlayd did (etcd errors while etcd is out of reach, endpoints, entries programmed,
//! resyncs, DNS answers in tests/dns.rs).

mod common;

use std::time::Duration;

use common::{
    add_vxlan, args, endpoint, endpoint_key, eventually, http, http_get, sample, vx,
    wait_registered, Daemon, EtcdIn, Tables,
};
use testutils::lab::Lab;

const H1: &str = "192.168.205.10";
const H2: &str = "192.168.205.11";

#[test]
fn healthy_at_once_ready_only_once_registered_and_listed() {
    let lab = Lab::new(2);
    let host = lab.host(1);
    // No etcd answers here: overlayd runs and retries, live but not ready.
    let nowhere = format!("{H1}:2999");
    let mut daemon = Daemon::start(
        "unready",
        &host.ns,
        &host.dir,
        &args(&nowhere, "node2", &["--timeout-ms", "500"]),
    );
    let live = eventually(Duration::from_secs(10), || {
        daemon.assert_running();
        http_get(&host.ns, "/healthz") == (200, "ok\n".to_string())
    });
    assert!(live.is_some(), "/healthz never answered:\n{}", daemon.log());
    let (status, body) = http_get(&host.ns, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not registered"), "{body}");
    assert!(body.contains("endpoint records not listed yet"), "{body}");
    let failing = eventually(Duration::from_secs(10), || {
        let (_, m) = http_get(&host.ns, "/metrics");
        sample(&m, "overlayd_etcd_errors_total{activity=\"registration\"}").unwrap_or(0.0) >= 1.0
    });
    assert!(
        failing.is_some(),
        "no etcd error counted:\n{}",
        http_get(&host.ns, "/metrics").1
    );
    drop(daemon);

    // With etcd: ready, and what it programs is counted.
    let etcd = EtcdIn::new(&lab.host(0).ns, &lab.etcd_endpoint);
    add_vxlan(&host.ns, "blue", 42, H2);
    let mut daemon = Daemon::start(
        "ready",
        &host.ns,
        &host.dir,
        &args(&lab.etcd_endpoint, "node2", &[]),
    );
    wait_registered(&etcd, &mut daemon, "node2", Duration::from_secs(10));
    let ready = eventually(Duration::from_secs(10), || {
        http_get(&host.ns, "/readyz") == (200, "ready\n".to_string())
    });
    assert!(
        ready.is_some(),
        "never ready: {:?}",
        http_get(&host.ns, "/readyz")
    );

    let remote = endpoint(
        "blue",
        42,
        "c1",
        "node1",
        H1,
        "02:00:00:00:01:01",
        &["10.42.0.2/24"],
    );
    etcd.put_endpoint(&endpoint_key("blue", "c1"), &remote);
    Tables::new(&host.ns)
        .wait_for(&vx(42), Duration::from_secs(10), |t| {
            t.has_neigh("10.42.0.2", "02:00:00:00:01:01")
        })
        .unwrap_or_else(|| panic!("the endpoint never arrived:\n{}", daemon.log()));
    let (status, m) = http_get(&host.ns, "/metrics");
    assert_eq!(status, 200);
    for (series, want) in [
        ("overlayd_endpoints", 1.0),
        // blue has its bridge here; the records of no other network are followed.
        ("overlayd_networks_followed", 1.0),
        (
            "overlayd_kernel_entry_updates_total{table=\"fdb\",op=\"add\"}",
            1.0,
        ),
        (
            "overlayd_kernel_entry_updates_total{table=\"neighbour\",op=\"add\"}",
            1.0,
        ),
        ("overlayd_resyncs_total{reason=\"fresh listing\"}", 1.0),
        ("overlayd_resync_duration_seconds_count", 1.0),
    ] {
        assert_eq!(sample(&m, series), Some(want), "{series} in\n{m}");
    }
    assert!(m.contains("# TYPE overlayd_watch_restarts counter"), "{m}");

    etcd.delete(&endpoint_key("blue", "c1"));
    let removed = eventually(Duration::from_secs(10), || {
        let (_, m) = http_get(&host.ns, "/metrics");
        sample(&m, "overlayd_endpoints") == Some(0.0)
            && sample(
                &m,
                "overlayd_kernel_entry_updates_total{table=\"neighbour\",op=\"del\"}",
            ) == Some(1.0)
    });
    assert!(removed.is_some(), "{}", http_get(&host.ns, "/metrics").1);

    assert_eq!(http_get(&host.ns, "/nothing").0, 404);
    assert_eq!(http(&host.ns, "POST", "/metrics").0, 405);
    daemon.assert_running();
}

#[test]
fn a_taken_metrics_port_stops_overlayd_with_a_clear_error() {
    let lab = Lab::new(2);
    let host = lab.host(1);
    let first = Daemon::start(
        "first",
        &host.ns,
        &host.dir,
        &args(&lab.etcd_endpoint, "node2", &[]),
    );
    let up = eventually(Duration::from_secs(10), || {
        http_get(&host.ns, "/healthz").0 == 200
    });
    assert!(up.is_some(), "{}", first.log());
    let mut second = Daemon::start(
        "second",
        &host.ns,
        &host.dir,
        &args(&lab.etcd_endpoint, "node2b", &[]),
    );
    let status = second
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("a second overlayd on the port kept running"));
    assert!(!status.success());
    assert!(
        second
            .log()
            .contains("metrics endpoint: binding 127.0.0.1:9393"),
        "{}",
        second.log()
    );
    // `off` serves nothing and needs no port.
    let mut third = Daemon::start(
        "third",
        &host.ns,
        &host.dir,
        &args(&lab.etcd_endpoint, "node2c", &["--metrics-addr", "off"]),
    );
    let etcd = EtcdIn::new(&lab.host(0).ns, &lab.etcd_endpoint);
    wait_registered(&etcd, &mut third, "node2c", Duration::from_secs(10));
}
