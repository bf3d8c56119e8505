//! prevResult and delegate results, read from any version and written in each: CniResult's
//! from_json and to_json.
//!
//! Invariants: a result that reads is written in every version as a JSON object of that version
//! (`cniVersion`, `ips[].version` exactly before 1.0.0, no 1.1.0 fields before 1.1.0); what is
//! written reads back to the same result less the fields the version lacks, and is accepted as
//! the prevResult of a configuration of that version.
#![no_main]

use cni::{codes, CniResult, NetConf, Version};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const VERSIONS: [Version; 5] = [
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

/// What `version` can carry of `result`.
fn in_version(result: &CniResult, version: Version) -> CniResult {
    let mut r = result.clone();
    if !version.has_v1_1_fields() {
        for i in &mut r.interfaces {
            i.mtu = None;
            i.socket_path.clear();
            i.pci_id.clear();
        }
        for route in &mut r.routes {
            (
                route.mtu,
                route.advmss,
                route.priority,
                route.table,
                route.scope,
            ) = (None, None, None, None, None);
        }
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let result = match CniResult::from_json(&value) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                [codes::DECODING_FAILURE, codes::INCOMPATIBLE_VERSION].contains(&e.code),
                "{e}"
            );
            return;
        }
    };
    for version in VERSIONS {
        let out = result.to_json(version);
        let text = out.to_string();
        let reread: Value = serde_json::from_str(&text).expect("written JSON parses");
        assert_eq!(reread, out);
        let obj = out.as_object().expect("a JSON object");
        assert_eq!(obj["cniVersion"], version.as_str());
        for ip in obj
            .get("ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert_eq!(ip.get("version").is_some(), version.has_ip_version_field());
        }
        if !version.has_v1_1_fields() {
            for i in obj
                .get("interfaces")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for field in ["mtu", "socketPath", "pciID"] {
                    assert!(i.get(field).is_none(), "{version}: interface {field}");
                }
            }
        }
        let back = CniResult::from_json(&reread).expect("a written result reads back");
        assert_eq!(back, in_version(&result, version), "{version}");

        let conf =
            json!({"cniVersion": version.as_str(), "name": "n", "type": "t", "prevResult": out});
        let conf = NetConf::parse(conf.to_string().as_bytes()).expect("accepted as prevResult");
        assert_eq!(conf.prev_result.as_ref(), Some(&back));
    }
});
