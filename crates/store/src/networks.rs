//! The networks' records, `networks/<net>` and `vnis/<vni>`: `network create` and `network rm`,
//! as overlayctl runs them and overlayd's Docker driver (a network made or removed in Docker).
//!
//! A create takes the name and the VNI together or not at all, in one transaction; without a VNI
//! given, it takes the lowest free one from [`model::types::FIRST_AUTO_VNI`] up. A remove is
//! refused while the network has endpoint records, and guarded so that a container attached
//! meanwhile keeps the network.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse,
};
use model::network::{pick_vni, NetworkRequest};
use model::records::{self, Endpoint, Network};
use model::types::{check_network_name, FIRST_AUTO_VNI, MAX_VNI};
use model::Vni;

use crate::client::{decode_all, prefix_range, Store};
use crate::error::StoreError;
use crate::keys::Keys;

/// How many VNIs a create tries before giving up on a busy cluster.
const VNI_ATTEMPTS: u32 = 10;

/// How often a remove re-reads a network that changed between its read and its delete.
const REMOVE_ATTEMPTS: usize = 3;

/// The model's refusal of a given value, as the store reports it: [`StoreError::Invalid`], with
/// the model's message (not the etcd configuration's error that other invalid values are).
fn invalid(e: model::Error) -> StoreError {
    match e {
        model::Error::Invalid(reason) => StoreError::Invalid(reason),
        corrupt => corrupt.into(),
    }
}

/// Creates the network `request` describes; everything is checked before the first request, so
/// a refused create writes nothing. Returns the record written.
pub async fn create(store: &mut Store, request: &NetworkRequest) -> Result<Network, StoreError> {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let planned = request.plan(created).map_err(invalid)?;
    let mut record = planned.record;

    if planned.vni_given {
        return match try_create(store, &record).await? {
            Outcome::Created => Ok(record),
            Outcome::NameTaken => Err(StoreError::NetworkNameTaken(record.name)),
            Outcome::VniTaken { owner, .. } => Err(StoreError::VniTaken {
                vni: record.vni.get(),
                owner,
            }),
        };
    }

    let keys = store.keys().clone();
    let listing = store
        .get(
            keys.vnis(),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    let mut taken = vnis_in(&keys, listing.kvs());
    for attempt in 0..VNI_ATTEMPTS {
        // The first try takes the lowest free VNI. Creators that lost a race would all go for the
        // same next one and lose again, so later tries pick among more and more of the lowest
        // free ones at random: with 20 concurrent creators, a handful of rounds settles them all.
        let spread = if attempt == 0 {
            1
        } else {
            1u32 << attempt.min(8)
        };
        let vni = pick_vni(&taken, random_below(spread)).ok_or(StoreError::VnisExhausted {
            first: FIRST_AUTO_VNI,
            last: MAX_VNI,
        })?;
        record.vni = Vni::new(vni).map_err(invalid)?;
        match try_create(store, &record).await? {
            Outcome::Created => return Ok(record),
            Outcome::NameTaken => return Err(StoreError::NetworkNameTaken(record.name)),
            Outcome::VniTaken { taken: fresh, .. } => {
                log::debug!("vni {vni} was taken meanwhile; choosing again");
                taken = fresh;
                taken.insert(vni);
            }
        }
    }
    Err(StoreError::Contended(format!(
        "every vni tried for network {} was taken by a concurrent create ({VNI_ATTEMPTS} attempts); try again",
        record.name
    )))
}

enum Outcome {
    Created,
    NameTaken,
    /// With the owner of the VNI and a fresh listing of all VNIs, read in the same transaction.
    VniTaken {
        owner: String,
        taken: BTreeSet<u32>,
    },
}

/// Takes the name and the VNI together or not at all: one transaction, both keys absent.
async fn try_create(store: &mut Store, record: &Network) -> Result<Outcome, StoreError> {
    let keys = store.keys().clone();
    let net_key = keys.network(&record.name);
    let vni_key = keys.vni(record.vni);
    let value = records::encode(record);
    let txn = Txn::new()
        .when(vec![
            Compare::create_revision(net_key.clone(), CompareOp::Equal, 0),
            Compare::create_revision(vni_key.clone(), CompareOp::Equal, 0),
        ])
        .and_then(vec![
            TxnOp::put(net_key.clone(), value.clone(), None),
            TxnOp::put(vni_key.clone(), record.name.clone(), None),
        ])
        .or_else(vec![
            TxnOp::get(net_key, None),
            TxnOp::get(vni_key, None),
            TxnOp::get(
                keys.vnis(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        ]);
    let resp = store.txn(txn).await?;
    if resp.succeeded() {
        return Ok(Outcome::Created);
    }
    let mut reads = resp.op_responses().into_iter().map(|r| match r {
        TxnOpResponse::Get(g) => g,
        _ => unreachable!("the else branch only reads"),
    });
    let (network, vni, all) = (reads.next(), reads.next(), reads.next());
    if let Some(existing) = network.as_ref().and_then(|g| g.kvs().first()) {
        // The store retries a transaction whose answer was lost; if the lost one was ours and
        // committed, the key holds exactly what we wrote.
        if existing.value() == value.as_slice() {
            return Ok(Outcome::Created);
        }
        return Ok(Outcome::NameTaken);
    }
    let owner = vni
        .as_ref()
        .and_then(|g| g.kvs().first())
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        .unwrap_or_default();
    let taken = all.map(|g| vnis_in(&keys, g.kvs())).unwrap_or_default();
    Ok(Outcome::VniTaken { owner, taken })
}

/// The VNIs named by `vnis/<vni>` keys.
fn vnis_in(keys: &Keys, kvs: &[KeyValue]) -> BTreeSet<u32> {
    let prefix = keys.vnis();
    kvs.iter()
        .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

/// A random number below `n`, from the standard library's randomly keyed hasher: enough to keep
/// concurrent creators apart, without a dependency for it.
fn random_below(n: u32) -> u32 {
    if n <= 1 {
        return 0;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let x = std::collections::hash_map::RandomState::new().hash_one((std::process::id(), nanos));
    (x % u64::from(n)) as u32
}

/// Every network's record, in name order (the key order); one that does not decode is left out,
/// with a warning.
pub async fn list(store: &mut Store) -> Result<Vec<Network>, StoreError> {
    let prefix = store.keys().networks();
    Ok(decode_all(&store.get_prefix(&prefix).await?.0))
}

/// The endpoint records of network `name`, in key order; one that does not decode is left out,
/// with a warning.
pub async fn endpoints(store: &mut Store, name: &str) -> Result<Vec<Endpoint>, StoreError> {
    let prefix = store.keys().endpoints(name);
    Ok(decode_all(&store.get_prefix(&prefix).await?.0))
}

/// One network's record and its revision; `network NAME not found` when there is none.
pub async fn read(store: &mut Store, name: &str) -> Result<(Network, i64), StoreError> {
    check_network_name(name).map_err(invalid)?;
    let key = store.keys().network(name);
    let resp = store.get(key, None).await?;
    let kv = resp
        .kvs()
        .first()
        .ok_or_else(|| StoreError::NetworkNotFound(name.to_string()))?;
    Ok((records::decode(kv.key(), kv.value())?, kv.mod_revision()))
}

/// Removes a network that no container uses any more: its record, its VNI key (if it still
/// names this network) and its allocation cursors. Returns the record removed.
pub async fn remove(store: &mut Store, name: &str) -> Result<Network, StoreError> {
    let keys = store.keys().clone();
    for _ in 0..REMOVE_ATTEMPTS {
        let (record, revision) = read(store, name).await?;
        let (endpoint_kvs, _) = store.get_prefix(&keys.endpoints(name)).await?;
        if !endpoint_kvs.is_empty() {
            return Err(in_use(name, &endpoint_kvs));
        }
        let vni_key = keys.vni(record.vni);
        // Guarded by the record's revision (nobody changed it since we read it) and by the
        // absence of endpoint records (a container attached meanwhile keeps the network); the
        // VNI key goes only if it still names this network.
        let txn = Txn::new()
            .when(vec![
                Compare::mod_revision(keys.network(name), CompareOp::Equal, revision),
                Compare::create_revision(keys.endpoints(name), CompareOp::Equal, 0).with_prefix(),
            ])
            .and_then(vec![
                TxnOp::delete(keys.network(name), None),
                TxnOp::txn(
                    Txn::new()
                        .when(vec![Compare::value(
                            vni_key.clone(),
                            CompareOp::Equal,
                            name,
                        )])
                        .and_then(vec![TxnOp::delete(vni_key, None)]),
                ),
                // The allocation cursors are hints for a network that no longer exists.
                TxnOp::delete(
                    format!("{}cursor/", keys.ipam(name)),
                    Some(DeleteOptions::new().with_prefix()),
                ),
            ]);
        if store.txn(txn).await?.succeeded() {
            warn_about_leftover_allocations(store, name).await;
            return Ok(record);
        }
        log::debug!("network {name} changed while being removed; reading it again");
    }
    Err(StoreError::Contended(format!(
        "network {name} kept changing while being removed ({REMOVE_ATTEMPTS} attempts); try again"
    )))
}

fn in_use(name: &str, kvs: &[KeyValue]) -> StoreError {
    let endpoints: Vec<Endpoint> = decode_all(kvs);
    StoreError::NetworkInUse {
        network: name.to_string(),
        count: kvs.len(),
        list: records::holders(&endpoints, kvs.len()),
    }
}

/// Address allocations without endpoints are leaks of failed ADDs; the network is gone either
/// way, but the operator should know that addresses stay held until their containers' DEL.
async fn warn_about_leftover_allocations(store: &mut Store, name: &str) {
    let owners = prefix_range(&store.keys().owners(name));
    if let Ok(counts) = store.count_ranges(&[owners]).await {
        if let Some(&n) = counts.first().filter(|&&n| n > 0) {
            log::warn!(
                "{n} address allocation{} of network {name} remain in etcd; the CNI DEL of their containers releases them",
                if n == 1 { "" } else { "s" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_below_stays_below() {
        assert_eq!(random_below(1), 0);
        assert!((0..100).all(|_| random_below(8) < 8));
    }

    #[test]
    fn the_model_refusals_keep_their_message() {
        let e = invalid(model::Error::Invalid("invalid vni \"x\"".into()));
        assert!(matches!(e, StoreError::Invalid(_)));
        assert_eq!(e.to_string(), "invalid vni \"x\"");
    }
}
