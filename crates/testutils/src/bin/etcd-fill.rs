//! Fills etcd with records laid out exactly as the plugins write them (the record formats of
//! `model::records`, the keys of `store::Keys`), in batched transactions, for the benchmarks:
//!
//! ```text
//! etcd-fill --endpoint HOST:PORT --network NAME --first IP --count N [--prefix /cni-overlay]
//!     a network's pool with N allocations (etcd-ipam's keys), so that ADD is measured against a
//!     pool with 50,000 addresses in use
//! etcd-fill --endpoint HOST:PORT --mode endpoints --networks N --per-network M --nodes K
//!           [--vni-base 5000] [--network-prefix scale-] [--live-ttl SECS] [--prefix /cni-overlay]
//!     N networks (network records as overlayctl writes them, subnet 10.(100+i).0.0/16) of M
//!     endpoint records each, spread round-robin over K nodes (`fill-node-<k>`, VTEP
//!     100.64.0.0/10 + k); with --live-ttl, the K nodes registered as live under one lease of
//!     that TTL, as overlayd registers, so that a reclaimer leaves their records alone
//! ```

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use model::records::{self, AllocatedIp, Allocation, Endpoint, Holder, Network, Node};
use model::{names, Vni};
use store::etcd_client::{PutOptions, Txn, TxnOp};
use store::{Keys, Store};

/// Operations per transaction: under etcd's default `--max-txn-ops` of 128.
const BATCH: usize = 100;

#[derive(Default)]
struct Args {
    endpoint: String,
    prefix: String,
    mode: String,
    network: String,
    first: Option<Ipv4Addr>,
    count: u32,
    networks: u32,
    per_network: u32,
    nodes: u32,
    vni_base: u32,
    network_prefix: String,
    live_ttl: Option<i64>,
}

fn main() {
    let mut args = Args {
        prefix: "/cni-overlay".into(),
        mode: "ipam".into(),
        vni_base: 5000,
        network_prefix: "scale-".into(),
        ..Args::default()
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        let number = |what: &str| -> u32 {
            value
                .parse()
                .unwrap_or_else(|_| fail(&format!("{what} is a number")))
        };
        match flag.as_str() {
            "--endpoint" => args.endpoint = value,
            "--prefix" => args.prefix = value,
            "--mode" => args.mode = value,
            "--network" => args.network = value,
            "--first" => {
                args.first = Some(
                    value
                        .parse()
                        .unwrap_or_else(|_| fail("--first is an IPv4 address")),
                )
            }
            "--count" => args.count = number("--count"),
            "--networks" => args.networks = number("--networks"),
            "--per-network" => args.per_network = number("--per-network"),
            "--nodes" => args.nodes = number("--nodes"),
            "--vni-base" => args.vni_base = number("--vni-base"),
            "--network-prefix" => args.network_prefix = value,
            "--live-ttl" => args.live_ttl = Some(i64::from(number("--live-ttl"))),
            _ => fail(&format!("unknown flag {flag}")),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = store::EtcdConfig::new(vec![args.endpoint.clone()]);
        config.prefix = args.prefix.clone();
        config.timeout_ms = 30_000;
        let mut store = Store::new(config).unwrap_or_else(|e| fail(&e.to_string()));
        match args.mode.as_str() {
            "ipam" => fill_pool(&mut store, &args).await,
            "endpoints" => fill_endpoints(&mut store, &args).await,
            other => fail(&format!("unknown mode {other} (ipam, endpoints)")),
        }
    });
}

async fn commit(store: &mut Store, ops: &mut Vec<TxnOp>) {
    if ops.is_empty() {
        return;
    }
    store
        .txn(Txn::new().and_then(std::mem::take(ops)))
        .await
        .unwrap_or_else(|e| fail(&e.to_string()));
}

async fn fill_pool(store: &mut Store, args: &Args) {
    let keys = store.keys().clone();
    let network = &args.network;
    let start = u32::from(args.first.unwrap_or_else(|| fail("--first is needed")));
    let count = args.count;
    // 2 keys per allocation and the cursor.
    let per_txn = 40;
    for chunk_start in (0..count).step_by(per_txn) {
        let mut ops = Vec::new();
        for i in chunk_start..(chunk_start + per_txn as u32).min(count) {
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
                    address: IpNetwork::new(ip.into(), 16).unwrap(),
                    gateway: None,
                }],
            };
            ops.push(TxnOp::put(
                keys.ip(network, ip.into()),
                records::encode(&holder),
                None,
            ));
            ops.push(TxnOp::put(
                keys.owner(network, &container_id, "eth0"),
                records::encode(&allocation),
                None,
            ));
        }
        let last = Ipv4Addr::from(start + (chunk_start + per_txn as u32).min(count) - 1);
        ops.push(TxnOp::put(keys.cursor(network, 0), last.to_string(), None));
        commit(store, &mut ops).await;
    }
}

/// The name of filled node `k`.
fn node_name(k: u32) -> String {
    format!("fill-node-{k}")
}

/// The VTEP of filled node `k`: 100.64.0.0/10 (shared address space) + k + 1.
fn node_vtep(k: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(100, 64, 0, 0)) + k + 1,
    ))
}

async fn fill_endpoints(store: &mut Store, args: &Args) {
    if args.networks == 0 || args.networks > 150 || args.nodes == 0 {
        fail("--networks 1..150 and --nodes >= 1 are needed");
    }
    if args.per_network > 60_000 {
        fail("--per-network is at most 60,000 (a /16 each)");
    }
    let keys: Keys = store.keys().clone();
    let mut ops = Vec::new();
    if let Some(ttl) = args.live_ttl {
        let mut client = store
            .client()
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        let lease = client
            .lease_grant(ttl, None)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()))
            .id();
        for k in 0..args.nodes {
            let node = Node {
                name: node_name(k),
                vtep: node_vtep(k),
                since: 1,
            };
            ops.push(TxnOp::put(
                keys.node(&node.name),
                records::encode(&node),
                Some(PutOptions::new().with_lease(lease)),
            ));
            if ops.len() == BATCH {
                commit(store, &mut ops).await;
            }
        }
        commit(store, &mut ops).await;
    }
    for i in 0..args.networks {
        let name = format!("{}{i:03}", args.network_prefix);
        let vni = Vni::new(args.vni_base + i).unwrap_or_else(|e| fail(&e.to_string()));
        let base = Ipv4Addr::new(10, 100 + i as u8, 0, 0);
        let network = Network {
            name: name.clone(),
            vni,
            subnets: vec![IpNetwork::new(base.into(), 16).unwrap()],
            gateways: vec![Ipv4Addr::new(10, 100 + i as u8, 0, 1).into()],
            ip_range: None,
            mtu: None,
            internal: false,
            host_access: false,
            created: 1,
        };
        ops.push(TxnOp::put(
            keys.network(&name),
            records::encode(&network),
            None,
        ));
        ops.push(TxnOp::put(keys.vni(vni), name.clone(), None));
        commit(store, &mut ops).await;
        for j in 0..args.per_network {
            // Above 10.x.100.0: etcd-ipam hands the bench's own containers the low addresses.
            let ip = Ipv4Addr::from(u32::from(base) + 100 * 256 + j);
            let address = IpNetwork::new(ip.into(), 16).unwrap();
            let k = (i * args.per_network + j) % args.nodes;
            // A container id as runtimes make them: 64 hex digits.
            let container_id = format!("{:064x}", (u128::from(i) << 32) | u128::from(j));
            let endpoint = Endpoint {
                network: name.clone(),
                container_id: container_id.clone(),
                ifname: "eth0".into(),
                name: Some(format!("c{j}")),
                aliases: Vec::new(),
                ips: vec![address],
                mac: names::endpoint_mac(&name, &[ip.into()])
                    .unwrap_or_else(|| fail("no MAC for the address")),
                node: node_name(k),
                vtep: node_vtep(k),
                vni,
            };
            ops.push(TxnOp::put(
                keys.endpoint(&name, &container_id, "eth0"),
                records::encode(&endpoint),
                None,
            ));
            if ops.len() == BATCH {
                commit(store, &mut ops).await;
            }
        }
        commit(store, &mut ops).await;
    }
}

fn fail(problem: &str) -> ! {
    eprintln!("etcd-fill: {problem}");
    std::process::exit(2)
}
