//! The CNI_* environment and CNI_ARGS: the input is the variables' values separated by NUL bytes
//! (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH, CNI_ARGS), as a runtime can set
//! them (no NUL inside a value).
//!
//! Invariants: every refusal is code 4 (invalid environment), never a panic; an accepted
//! environment satisfies the rules it was checked against; a container name has no `/` or
//! control character (it is an etcd key segment); requested addresses come from `IP=`.
#![no_main]

use cni::{codes, CniArgs, Command, Environment};
use libfuzzer_sys::fuzz_target;

const VARIABLES: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_PATH",
    "CNI_ARGS",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values: Vec<&str> = text.split('\0').collect();
    let lookup = |k: &str| {
        let i = VARIABLES.iter().position(|v| *v == k)?;
        values.get(i).map(|v| v.to_string())
    };

    // CNI_ARGS alone, whatever the rest.
    let raw_args = values.get(5).copied().unwrap_or_default();
    match CniArgs::parse(raw_args) {
        Ok(args) => {
            match args.container_name() {
                Ok(Some(name)) => {
                    assert!(!name.is_empty());
                    assert!(
                        !name.chars().any(|c| c == '/' || c.is_control()),
                        "{name:?}"
                    );
                }
                Ok(None) => assert!(args.pod_name().is_none()),
                Err(e) => assert_eq!(e.code, codes::INVALID_ENVIRONMENT),
            }
            match args.requested_ips() {
                Ok(ips) => assert!(ips.is_empty() || args.get("IP").is_some()),
                Err(e) => assert_eq!(e.code, codes::INVALID_ENVIRONMENT),
            }
            // What parsed is found again: each key's last value, when not empty.
            for pair in raw_args.split(';').filter(|p| !p.is_empty()) {
                let (key, _) = pair.split_once('=').expect("an accepted pair has '='");
                let last = raw_args
                    .split(';')
                    .filter_map(|p| p.split_once('='))
                    .filter(|(k, _)| *k == key)
                    .map(|(_, v)| v)
                    .next_back();
                assert_eq!(args.get(key), last.filter(|v| !v.is_empty()));
            }
        }
        Err(e) => assert_eq!(e.code, codes::INVALID_ENVIRONMENT),
    }

    match Environment::from_lookup(lookup) {
        Ok(env) => {
            if matches!(env.command, Command::Add | Command::Del | Command::Check) {
                assert!(cni::env::is_valid_identifier(&env.container_id));
                assert!(cni::env::validate_ifname(&env.ifname).is_ok());
            } else {
                assert!(env.container_id.is_empty());
            }
            if matches!(env.command, Command::Add | Command::Check) {
                assert!(env.netns.starts_with('/'), "{:?}", env.netns);
            }
        }
        Err(e) => assert_eq!(e.code, codes::INVALID_ENVIRONMENT, "{e}"),
    }
});
