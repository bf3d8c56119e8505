//! Releasing what one attachment holds: the one rule, used by etcd-ipam's DEL and GC, by
//! vxlan-overlay's DEL and GC, and by the release of a whole node ([`crate::nodes`]: `overlayctl
//! node rm` and overlayd's reclaimer).
//!
//! The rule: a key is deleted only if it still is what was read. The owner record
//! `ipam/<net>/owners/<container id>/<ifname>` only if its mod revision is the one read; each of
//! its address and name keys only if its create revision is the owner's (they were created in the
//! owner's transaction, so a key with another create revision is another container's, even when it
//! holds the same address or name); an endpoint record only if its mod revision is the one read
//! (and it was read as the node's). So whoever took an address or a name since is never touched.

use etcd_client::{Compare, CompareOp, KeyValue, Txn, TxnOp, TxnOpResponse};
use model::records::{self, Allocation, Endpoint};

use crate::client::Store;
use crate::error::StoreError;
use crate::keys::Keys;

/// How often a release re-reads a record that changed between its read and its delete.
const ATTEMPTS: usize = 16;

/// An allocation as read: its record, its key and the revisions that guard its release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAllocation {
    pub network: String,
    pub key: String,
    pub allocation: Allocation,
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl HeldAllocation {
    /// The owner record `kv` of network `network`.
    pub fn read(network: &str, kv: &KeyValue) -> Result<HeldAllocation, StoreError> {
        Ok(HeldAllocation {
            network: network.to_string(),
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            allocation: records::decode(kv.key(), kv.value())?,
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// Whether it is `node`'s; another node's (the same container id on another host) is left
    /// alone, and said so.
    pub fn is_of(&self, node: &str) -> bool {
        let mine = self.allocation.node == node;
        if !mine {
            log::warn!(
                "{} is node {}'s, not {node}'s: left alone",
                self.key,
                self.allocation.node
            );
        }
        mine
    }

    /// The address and name keys the owner record names.
    pub fn held_keys(&self, keys: &Keys) -> Vec<String> {
        let mut held: Vec<String> = (self.allocation.ips.iter())
            .map(|ip| keys.ip(&self.network, ip.address.ip()))
            .collect();
        if let Some(name) = &self.allocation.name {
            held.push(keys.name(&self.network, name));
        }
        held
    }

    /// The release as one transaction: the owner record if it is still the one read, and with it
    /// each address and name key created in its transaction.
    pub fn release(&self, keys: &Keys) -> Txn {
        let mut then = vec![TxnOp::delete(self.key.clone(), None)];
        for key in self.held_keys(keys) {
            then.push(TxnOp::txn(
                Txn::new()
                    .when(vec![Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        self.create_revision,
                    )])
                    .and_then(vec![TxnOp::delete(key, None)]),
            ));
        }
        Txn::new()
            .when(vec![Compare::mod_revision(
                self.key.clone(),
                CompareOp::Equal,
                self.mod_revision,
            )])
            .and_then(then)
    }

    /// The operations at the top level of [`HeldAllocation::release`] (etcd limits them).
    pub fn ops(&self) -> usize {
        1 + self.allocation.ips.len() + usize::from(self.allocation.name.is_some())
    }
}

/// An endpoint record as read, with the revision that guards its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEndpoint {
    pub key: String,
    pub endpoint: Endpoint,
    pub mod_revision: i64,
}

impl HeldEndpoint {
    pub fn read(kv: &KeyValue) -> Result<HeldEndpoint, StoreError> {
        Ok(HeldEndpoint {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            endpoint: records::decode(kv.key(), kv.value())?,
            mod_revision: kv.mod_revision(),
        })
    }

    /// The removal as one transaction: the record if it is still the one read.
    pub fn release(&self) -> Txn {
        Txn::new()
            .when(vec![Compare::mod_revision(
                self.key.clone(),
                CompareOp::Equal,
                self.mod_revision,
            )])
            .and_then(vec![TxnOp::delete(self.key.clone(), None)])
    }
}

/// Releases the allocation of (network, container id, ifname): DEL and GC of etcd-ipam. With
/// `node`, only an allocation of that node: a record another node wrote under the same key (the
/// same container id on another host) is left alone. The released allocation, or None when
/// nothing (of that node) was held.
pub async fn release_allocation(
    store: &mut Store,
    network: &str,
    container_id: &str,
    ifname: &str,
    node: Option<&str>,
) -> Result<Option<Allocation>, StoreError> {
    let keys = store.keys().clone();
    let owner_key = keys.owner(network, container_id, ifname);
    for _ in 0..ATTEMPTS {
        let resp = store.get(owner_key.clone(), None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let held = HeldAllocation::read(network, kv)?;
        if !node.is_none_or(|node| held.is_of(node)) {
            return Ok(None);
        }
        if store.txn(held.release(&keys)).await?.succeeded() {
            return Ok(Some(held.allocation));
        }
    }
    Err(StoreError::Contended(format!(
        "allocation of {container_id}/{ifname} in network {network} kept changing while being released"
    )))
}

/// Removes the endpoint record of (network, container id, ifname) if it is `node`'s: DEL and GC
/// of vxlan-overlay. A record of another node under the same key is left alone. Whether a record
/// of that node was removed.
pub async fn release_endpoint(
    store: &mut Store,
    network: &str,
    container_id: &str,
    ifname: &str,
    node: &str,
) -> Result<bool, StoreError> {
    let key = store.keys().endpoint(network, container_id, ifname);
    for _ in 0..ATTEMPTS {
        let resp = store.get(key.clone(), None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(false);
        };
        let Some(release) = endpoint_release(kv, node) else {
            return Ok(false);
        };
        if store.txn(release).await?.succeeded() {
            return Ok(true);
        }
    }
    Err(StoreError::Contended(format!(
        "endpoint record of {container_id}/{ifname} in network {network} kept changing while \
         being removed"
    )))
}

/// The removal of endpoint record `kv` if it is `node`'s (None: another node's, left alone). An
/// unreadable record is nobody's: this node's DEL may remove it.
fn endpoint_release(kv: &KeyValue, node: &str) -> Option<Txn> {
    match HeldEndpoint::read(kv) {
        Ok(held) if held.endpoint.node == node => Some(held.release()),
        Ok(held) => {
            log::warn!(
                "{} is node {}'s, not {node}'s: left alone",
                held.key,
                held.endpoint.node
            );
            None
        }
        Err(e) => {
            log::warn!("removing {e}");
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            Some(
                Txn::new()
                    .when(vec![Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then(vec![TxnOp::delete(key, None)]),
            )
        }
    }
}

/// What [`release_attachment`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Released {
    pub endpoint: bool,
    pub allocation: Option<Allocation>,
}

/// Releases `node`'s endpoint record (in `network`) and allocation (in `ipam_network`) of one
/// attachment together, each by its rule above, in one read and one write: vxlan-overlay's DEL
/// with etcd-ipam in process. One revision per DEL instead of two (and one fsync on etcd's disk).
/// A part whose guard failed (its key changed since the read) is read and tried again alone.
pub async fn release_attachment(
    store: &mut Store,
    network: &str,
    ipam_network: &str,
    container_id: &str,
    ifname: &str,
    node: &str,
) -> Result<Released, StoreError> {
    let keys = store.keys().clone();
    let endpoint_key = keys.endpoint(network, container_id, ifname);
    let owner_key = keys.owner(ipam_network, container_id, ifname);
    let mut released = Released::default();
    for _ in 0..ATTEMPTS {
        let read = Txn::new().and_then(vec![
            TxnOp::get(endpoint_key.clone(), None),
            TxnOp::get(owner_key.clone(), None),
        ]);
        let resp = store.txn(read).await?;
        let mut found = resp.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        });
        let (endpoint_kv, owner_kv) = (found.next().flatten(), found.next().flatten());
        let mut parts: Vec<(Option<Allocation>, Txn)> = Vec::new();
        if let Some(release) = endpoint_kv.and_then(|kv| endpoint_release(&kv, node)) {
            parts.push((None, release));
        }
        if let Some(kv) = owner_kv {
            let held = HeldAllocation::read(ipam_network, &kv)?;
            if held.is_of(node) {
                let release = held.release(&keys);
                parts.push((Some(held.allocation), release));
            }
        }
        if parts.is_empty() {
            return Ok(released);
        }
        let (what, releases): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let write = Txn::new().and_then(releases.into_iter().map(TxnOp::txn).collect::<Vec<_>>());
        let resp = store.txn(write).await?;
        let mut done = true;
        for (allocation, op) in what.into_iter().zip(resp.op_responses()) {
            let succeeded = matches!(op, TxnOpResponse::Txn(t) if t.succeeded());
            match (allocation, succeeded) {
                (None, true) => released.endpoint = true,
                (Some(allocation), true) => released.allocation = Some(allocation),
                (_, false) => done = false,
            }
        }
        if done {
            return Ok(released);
        }
    }
    Err(StoreError::Contended(format!(
        "attachment {container_id}/{ifname} in network {network} kept changing while being released"
    )))
}
