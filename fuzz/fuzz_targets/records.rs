//! The etcd record decoders: crates/model's records (the values of the store's keys) and the
//! store's address keys. The first byte picks the record type, the rest is the value read.
//!
//! Invariants: a value that is no record is Error::Corrupt naming the key (never a panic); a
//! record that decodes encodes to a value that decodes equal, and encodes to the same bytes
//! again (the records are written exactly as they are read); an address key that parses is
//! the key of that address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::records::{self, Allocation, Endpoint, Gone, Holder, Network, Node, Reclaimer};
use model::Error;
use serde::{de::DeserializeOwned, Serialize};
use store::keys::Keys;

const KEY: &[u8] = b"/cni-overlay/endpoints/demo/c1/eth0";

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &[u8]) {
    match records::decode::<T>(KEY, value) {
        Ok(record) => {
            let encoded = records::encode(&record);
            let again: T = records::decode(KEY, &encoded).expect("an encoded record decodes");
            assert_eq!(again, record);
            assert_eq!(records::encode(&again), encoded);
        }
        Err(Error::Corrupt { key, .. }) => assert_eq!(key.as_bytes(), KEY),
        Err(e) => panic!("decode failed with {e}, not Corrupt"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, value)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => round_trip::<Endpoint>(value),
        1 => round_trip::<Network>(value),
        2 => round_trip::<Allocation>(value),
        3 => round_trip::<Holder>(value),
        4 => round_trip::<Node>(value),
        5 => round_trip::<Gone>(value),
        6 => round_trip::<Reclaimer>(value),
        _ => {
            let keys = Keys::new("/cni-overlay");
            if let Some(ip) = keys.ip_from_key(value) {
                let key = keys.ip("demo", ip);
                assert_eq!(keys.ip_from_key(key.as_bytes()), Some(ip));
                // The same address in the same family and hex as the key read.
                assert!(value.ends_with(store::keys::address_hex(ip).as_bytes()));
            }
            if let Ok(key) = std::str::from_utf8(value) {
                if let Some(net) = keys.network_of_ipam_key(key) {
                    assert!(!net.is_empty() && !net.contains('/'));
                    assert!(
                        key.starts_with(&keys.ipam(net))
                            || key == keys.ipam(net).trim_end_matches('/')
                    );
                }
            }
        }
    }
});
