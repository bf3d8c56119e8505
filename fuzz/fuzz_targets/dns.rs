//! overlayd's DNS query handling: one UDP datagram answered from a fixed snapshot of records by
//! overlayd::dns::server::answer_query (hickory's parsing, overlayd's rule, hickory's encoding;
//! no sockets). The first byte picks the asking address, the rest is the datagram.
//!
//! Invariants: encoding never fails; a response parses, has the query's id, is a response,
//! fits the UDP limit (512 bytes, our EDNS payload with EDNS); a client outside the network is
//! refused; records answered are for the name and type asked.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use ipnetwork::IpNetwork;
use libfuzzer_sys::fuzz_target;
use model::records::Endpoint;
use overlayd::dns::records::{View, Zone};
use overlayd::dns::server::answer_query;

const NODE: &str = "node1";

fn endpoint(
    net: &str,
    cid: &str,
    node: &str,
    name: &str,
    aliases: &[&str],
    ips: &[&str],
) -> Endpoint {
    Endpoint {
        network: net.into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
        name: Some(name.into()),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        mac: "02:00:00:00:00:01".parse().unwrap(),
        node: node.into(),
        vtep: "192.0.2.1".parse().unwrap(),
        vni: model::Vni::new(4096).unwrap(),
    }
}

/// Two networks; web is on both (on this node), db on demo on another node, cache on back here.
fn view() -> &'static View {
    static VIEW: OnceLock<View> = OnceLock::new();
    VIEW.get_or_init(|| {
        let demo = [
            endpoint(
                "demo",
                "c1",
                NODE,
                "web",
                &["api.v1", "www"],
                &["10.0.0.2/24", "fd00::2/64"],
            ),
            endpoint(
                "demo",
                "c2",
                "node2",
                "db",
                &[],
                &["10.0.0.3/24", "fd00::3/64"],
            ),
        ];
        let back = [
            endpoint("back", "c1", NODE, "web", &[], &["10.1.0.2/24"]),
            endpoint("back", "c3", NODE, "cache", &["Redis"], &["10.1.0.4/24"]),
        ];
        let zones: HashMap<String, Arc<Zone>> = [
            (
                "demo".to_string(),
                Arc::new(Zone::build("demo", demo.iter())),
            ),
            (
                "back".to_string(),
                Arc::new(Zone::build("back", back.iter())),
            ),
        ]
        .into();
        let local: Vec<Endpoint> = demo
            .iter()
            .chain(&back)
            .filter(|e| e.node == NODE)
            .cloned()
            .collect();
        View::build(zones, local.iter())
    })
}

const CLIENTS: [&str; 6] = [
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.1",
    "fd00::2",
    "10.1.0.4",
    "192.0.2.77",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, query)) = data.split_first() else {
        return;
    };
    let client: IpAddr = CLIENTS[pick as usize % CLIENTS.len()].parse().unwrap();
    let gateways: Vec<IpNetwork> = vec![
        "10.0.0.1/24".parse().unwrap(),
        "fd00::1/64".parse().unwrap(),
    ];
    let src = SocketAddr::new(client, 40000);
    let response =
        answer_query("demo", &gateways, view(), src, query).expect("the response encodes");
    let Some(bytes) = response else {
        return;
    };
    let asked = Message::from_vec(query).ok();
    let limit = match asked.as_ref().and_then(|m| m.edns.as_ref()) {
        Some(_) => overlayd::dns::forward::EDNS_PAYLOAD as usize,
        None => 512,
    };
    assert!(bytes.len() <= limit, "{} bytes, limit {limit}", bytes.len());
    let answer = Message::from_vec(&bytes).expect("the response parses");
    assert_eq!(&bytes[..2], &query[..2], "the query's id");
    assert_eq!(answer.metadata.message_type, MessageType::Response);
    if !gateways.iter().any(|g| g.contains(client)) {
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
        assert!(answer.answers.is_empty());
    }
    if let (Some(asked), false) = (&asked, answer.answers.is_empty()) {
        assert_eq!(asked.queries.len(), 1);
        let q = &asked.queries[0];
        for record in &answer.answers {
            assert!(
                record.name.eq_case(q.name()) || record.name == *q.name(),
                "{record:?} for {q:?}"
            );
            assert!(
                q.query_type() == RecordType::ANY || record.record_type() == q.query_type(),
                "{record:?} for {q:?}"
            );
        }
    }
});
