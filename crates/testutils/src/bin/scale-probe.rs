//! Measures how fast endpoint records reach the kernel, for `scripts/bench.sh scale`. Run inside
//! the host's network namespace (where overlayd programs `ovx<vni>`):
//!
//! ```text
//! scale-probe --endpoint HOST:PORT --network NAME --vni N --count C [--wait fdb|none]
//!             [--first-ip 10.x.y.z] [--prefix /cni-overlay]
//! ```
//! Writes C endpoint records of a remote node (`probe-node`, VTEP 100.127.0.1) into NAME, one at
//! a time in the record format of `model::records`; with `--wait fdb` (the default) waits for each
//! one's FDB entry on `ovx<N>` (the kernel's notification of it), then deletes them all. Prints JSON:
//! `{"count", "p50_ms", "p99_ms", "max_ms", "put_ms"}` (put_ms: the etcd round trip of a put).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use model::records::{self, Endpoint};
use model::{names, Vni};
use netops::{NeighbourEvents, Netlink};
use store::etcd_client::{Txn, TxnOp};
use store::Store;

const GIVE_UP: Duration = Duration::from_secs(10);

fn main() {
    let mut argv = std::env::args().skip(1);
    let (mut endpoint, mut prefix, mut network, mut vni, mut count, mut wait, mut first) = (
        String::new(),
        "/cni-overlay".to_string(),
        String::new(),
        0u32,
        0u32,
        "fdb".to_string(),
        Ipv4Addr::new(10, 255, 0, 2),
    );
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--endpoint" => endpoint = value,
            "--prefix" => prefix = value,
            "--network" => network = value,
            "--vni" => vni = value.parse().unwrap_or_else(|_| fail("--vni is a number")),
            "--count" => {
                count = value
                    .parse()
                    .unwrap_or_else(|_| fail("--count is a number"))
            }
            "--wait" => wait = value,
            "--first-ip" => first = value.parse().unwrap_or_else(|_| fail("--first-ip is IPv4")),
            _ => fail(&format!("unknown flag {flag}")),
        }
    }
    let vni = Vni::new(vni).unwrap_or_else(|e| fail(&e.to_string()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = store::EtcdConfig::new(vec![endpoint]);
        config.prefix = prefix;
        let mut store = Store::new(config).unwrap_or_else(|e| fail(&e.to_string()));
        let keys = store.keys().clone();
        let nl = Netlink::current().await.unwrap_or_else(|e| fail(&e.to_string()));
        let device = match wait.as_str() {
            "fdb" => Some(
                nl.link(&names::vxlan(vni))
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| fail("no VXLAN device for the VNI here"))
                    .index,
            ),
            "none" => None,
            _ => fail("--wait is fdb or none"),
        };
        // Subscribed before the first put: the kernel tells of each entry as it is added.
        let mut events = NeighbourEvents::current()
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        let mut latencies = Vec::new();
        let mut puts = Vec::new();
        let mut written = Vec::new();
        for i in 0..count {
            let ip = Ipv4Addr::from(u32::from(first) + i);
            let mac = names::endpoint_mac(&network, &[IpAddr::V4(ip)])
                .unwrap_or_else(|| fail("no MAC"));
            let container_id = format!("probe-{i}");
            let record = Endpoint {
                network: network.clone(),
                container_id: container_id.clone(),
                ifname: "eth0".into(),
                name: Some(format!("probe{i}")),
                aliases: Vec::new(),
                ips: vec![IpNetwork::new(ip.into(), 16).unwrap()],
                mac,
                node: "probe-node".into(),
                vtep: Ipv4Addr::new(100, 127, 0, 1).into(),
                vni,
            };
            let key = keys.endpoint(&network, &container_id, "eth0");
            let started = Instant::now();
            store
                .txn(Txn::new().and_then(vec![TxnOp::put(
                    key.clone(),
                    records::encode(&record),
                    None,
                )]))
                .await
                .unwrap_or_else(|e| fail(&e.to_string()));
            puts.push(started.elapsed());
            written.push(key);
            let Some(device) = device else { continue };
            let arrived = async {
                while let Some(c) = events.next().await {
                    if c.added && c.fdb && c.index == device && c.mac == Some(mac.octets()) {
                        return true;
                    }
                }
                false
            };
            match tokio::time::timeout(GIVE_UP, arrived).await {
                Ok(true) => latencies.push(started.elapsed()),
                _ => fail(&format!("record {i} not in the FDB within {GIVE_UP:?}")),
            }
        }
        for key in &written {
            store
                .txn(Txn::new().and_then(vec![TxnOp::delete(key.clone(), None)]))
                .await
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        let pct = |v: &mut Vec<Duration>, q: f64| -> f64 {
            v.sort();
            v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
                .map_or(0.0, ms)
        };
        println!(
            "{{\"count\":{count},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\"put_ms\":{:.2}}}",
            pct(&mut latencies, 0.5),
            pct(&mut latencies, 0.99),
            pct(&mut latencies, 1.0),
            pct(&mut puts, 0.5)
        );
    });
}

fn fail(problem: &str) -> ! {
    eprintln!("scale-probe: {problem}");
    std::process::exit(2)
}
