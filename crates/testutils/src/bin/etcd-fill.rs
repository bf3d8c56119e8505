//! Fills a network's pool with N allocations laid out exactly as etcd-ipam writes them, in batched
//! transactions, so that a benchmark can measure ADD against a pool with 50,000 addresses in use.
//!
//! etcd-fill --endpoint HOST:PORT --network NAME --first IP --count N [--prefix /cni-overlay]

use std::net::Ipv4Addr;

use model::records::{self, AllocatedIp, Allocation, Holder};
use store::etcd_client::{Txn, TxnOp};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut endpoint, mut network, mut first, mut count, mut prefix) = (
        String::new(),
        String::new(),
        Ipv4Addr::UNSPECIFIED,
        0u32,
        String::from("/cni-overlay"),
    );
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--endpoint" => endpoint = value,
            "--network" => network = value,
            "--first" => {
                first = value
                    .parse()
                    .unwrap_or_else(|_| fail("--first is an IPv4 address"))
            }
            "--count" => {
                count = value
                    .parse()
                    .unwrap_or_else(|_| fail("--count is a number"))
            }
            "--prefix" => prefix = value,
            _ => fail(&format!("unknown flag {flag}")),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = store::EtcdConfig::new(vec![endpoint]);
        config.prefix = prefix;
        config.timeout_ms = 30_000;
        let mut store = store::Store::new(config).unwrap_or_else(|e| fail(&e.to_string()));
        let keys = store.keys().clone();
        let start = u32::from(first);
        // etcd allows 128 operations per transaction by default; 3 keys per allocation.
        for chunk_start in (0..count).step_by(40) {
            let mut ops = Vec::new();
            for i in chunk_start..(chunk_start + 40).min(count) {
                let ip = Ipv4Addr::from(start + i);
                let container_id = format!("fill-{i}");
                let holder = Holder {
                    container_id: container_id.clone(),
                    ifname: "eth0".into(),
                    node: "filler".into(),
                };
                let allocation = Allocation {
                    container_id: container_id.clone(),
                    ifname: "eth0".into(),
                    node: "filler".into(),
                    name: None,
                    ips: vec![AllocatedIp {
                        address: ipnetwork::IpNetwork::new(ip.into(), 16).unwrap(),
                        gateway: None,
                    }],
                };
                ops.push(TxnOp::put(
                    keys.ip(&network, ip.into()),
                    records::encode(&holder),
                    None,
                ));
                ops.push(TxnOp::put(
                    keys.owner(&network, &container_id, "eth0"),
                    records::encode(&allocation),
                    None,
                ));
            }
            let last = Ipv4Addr::from(start + (chunk_start + 40).min(count) - 1);
            ops.push(TxnOp::put(keys.cursor(&network, 0), last.to_string(), None));
            store
                .txn(Txn::new().and_then(ops))
                .await
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
    });
}

fn fail(problem: &str) -> ! {
    eprintln!("etcd-fill: {problem}");
    std::process::exit(2)
}
