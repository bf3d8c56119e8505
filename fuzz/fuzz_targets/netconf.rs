//! A plugin's stdin: crates/cni's NetConf, then each plugin's own configuration read from it
//! (vxlan-overlay and etcd-ipam completed both from the configuration alone and from a network
//! record; gwbridge-egress with the IPAM delegate's stdin it derives).
//!
//! Invariants: bad input is a CNI error with a code of the specification (never a panic); a
//! parsed configuration has a valid name; its prevResult converts to every version and reads
//! back; gwbridge-egress hands its delegate a configuration that parses, named after the bridge.
#![no_main]

use cni::{codes, CniResult, Command, Environment, NetConf, Request, Version};
use libfuzzer_sys::fuzz_target;
use model::records::Network;

/// The codes configuration parsing may give; 108 only when completing without a record.
const PARSE_CODES: &[u32] = &[
    codes::INCOMPATIBLE_VERSION,
    codes::UNSUPPORTED_FIELD,
    codes::DECODING_FAILURE,
    codes::INVALID_CONFIG,
];

fn record() -> Network {
    serde_json::from_str(
        r#"{"name":"demo","vni":4096,"subnets":["10.0.0.0/24","fd00::/64"],"gateways":["10.0.0.1","fd00::1"],"ipRange":"10.0.0.128/25","mtu":1400,"internal":false,"hostAccess":true,"created":1}"#,
    )
    .expect("the fixed record reads")
}

fn expect_code(what: &str, code: u32, allowed: &[u32]) {
    assert!(allowed.contains(&code), "{what}: unexpected code {code}");
}

fuzz_target!(|data: &[u8]| {
    let conf = match NetConf::parse(data) {
        Ok(conf) => conf,
        Err(e) => {
            expect_code("NetConf", e.code, PARSE_CODES);
            return;
        }
    };
    assert!(cni::env::is_valid_identifier(&conf.name));
    if let Some(prev) = &conf.prev_result {
        for v in [
            Version::V0_3_0,
            Version::V0_4_0,
            Version::V1_0_0,
            Version::V1_1_0,
        ] {
            let back = CniResult::from_json(&prev.to_json(v)).expect("prevResult reads back");
            assert_eq!(back.ips, prev.ips, "{v}");
        }
    }
    let record = record();
    let mut complete_codes = PARSE_CODES.to_vec();
    complete_codes.push(codes::UNKNOWN_NETWORK);

    match vxlan_overlay::config::Conf::parse(&conf) {
        Ok(c) => {
            for r in [None, Some(&record)] {
                if let Err(e) = c.clone().complete(r) {
                    expect_code("vxlan-overlay complete", e.code, &complete_codes);
                }
            }
        }
        Err(e) => expect_code("vxlan-overlay", e.code, PARSE_CODES),
    }

    match etcd_ipam::config::Conf::parse(&conf) {
        Ok(c) => {
            for r in [None, Some(&record)] {
                if let Err(e) = c.clone().complete(r) {
                    expect_code("etcd-ipam complete", e.code, &complete_codes);
                }
            }
        }
        Err(e) => expect_code("etcd-ipam", e.code, PARSE_CODES),
    }

    let env = Environment {
        command: Command::Add,
        container_id: "c1".into(),
        netns: "/run/netns/c1".into(),
        ifname: "eth0".into(),
        args: Default::default(),
        path: Vec::new(),
    };
    let req = Request { env, conf };
    match gwbridge_egress::config::Config::from_request(&req) {
        Ok(c) => {
            let delegate = NetConf::parse(&c.ipam_stdin).expect("the IPAM's stdin parses");
            assert_eq!(delegate.name, c.bridge);
            assert_eq!(delegate.ipam_type().expect("ipam.type"), c.ipam_type);
            assert_ne!(c.ifname, req.env.ifname);
        }
        Err(e) => expect_code("gwbridge-egress", e.code, PARSE_CODES),
    }
});
