//! What each node holds across the cluster, and the release of all of it for a node that is gone:
//! `overlayctl node rm` and overlayd's elected reclaimer both use [`release_node`].
//!
//! A node holds, per attachment (network, container id, ifname): an allocation (etcd-ipam's owner
//! record with its address and name keys) and an endpoint record (vxlan-overlay's); either may be
//! missing (host-local as IPAM writes no allocation, etcd-ipam under another main plugin no endpoint
//! record). Allocations are found per network: the networks are those with keys under `ipam/`,
//! found by skipping from one network's keys to the next (two reads per network, however many
//! addresses it has), so that networks made without overlayctl are not missed.
//!
//! The release is one pass of guarded transactions ([`crate::release`]'s rule for each key), a
//! batch of attachments per transaction; an attachment's endpoint record and allocation go in the
//! same one, so an address is free exactly when nobody is told any more that it is there. Every
//! transaction is also guarded by the node having no lease (`nodes/<node>` absent; unless forced)
//! and by the caller's compares (the reclaimer's leadership): a node that comes back stops it.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use ipnetwork::IpNetwork;
use model::records::{self, Gone, Node};

use crate::client::{prefix_end, Store};
use crate::error::StoreError;
use crate::keys::Keys;
use crate::release::{HeldAllocation, HeldEndpoint};

/// etcd refuses a transaction of more than 128 operations (`--max-txn-ops`), counting at each
/// level of nesting what the levels above already have; a batch stays well under.
pub const MAX_OPS: usize = 100;
/// Attachments per transaction by default.
pub const DEFAULT_BATCH: usize = 32;

/// One attachment of a node, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub allocation: Option<HeldAllocation>,
    pub endpoint: Option<HeldEndpoint>,
}

impl Held {
    /// The container's name, as the allocation (or else the endpoint record) has it.
    pub fn name(&self) -> Option<&str> {
        self.allocation
            .as_ref()
            .and_then(|a| a.allocation.name.as_deref())
            .or_else(|| self.endpoint.as_ref()?.endpoint.name.as_deref())
    }

    /// Its addresses, as the allocation (or else the endpoint record) has them.
    pub fn addresses(&self) -> Vec<IpNetwork> {
        match (&self.allocation, &self.endpoint) {
            (Some(a), _) => a.allocation.ips.iter().map(|ip| ip.address).collect(),
            (None, Some(e)) => e.endpoint.ips.clone(),
            (None, None) => Vec::new(),
        }
    }

    /// The operations its release adds to a transaction's top level: one nested transaction for
    /// the endpoint record, one for the allocation.
    fn ops(&self) -> usize {
        usize::from(self.allocation.is_some()) + usize::from(self.endpoint.is_some())
    }

    /// The operations of its largest nested transaction (etcd counts each level against what
    /// the levels above left: `--max-txn-ops` less their operations).
    fn nested_ops(&self) -> usize {
        self.allocation.as_ref().map_or(1, HeldAllocation::ops)
    }
}

/// What one node holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// By (network, container id, ifname).
    pub attachments: Vec<Held>,
}

impl Holdings {
    pub fn is_empty(&self) -> bool {
        self.attachments.is_empty()
    }

    pub fn allocations(&self) -> usize {
        self.attachments
            .iter()
            .filter(|h| h.allocation.is_some())
            .count()
    }

    /// Reserved names (one per allocation that has one).
    pub fn names(&self) -> usize {
        (self.attachments.iter())
            .filter(|h| {
                h.allocation
                    .as_ref()
                    .is_some_and(|a| a.allocation.name.is_some())
            })
            .count()
    }

    pub fn endpoints(&self) -> usize {
        (self.attachments.iter())
            .filter(|h| h.endpoint.is_some())
            .count()
    }
}

/// The cluster as far as nodes go: what each holds, the live ones (a node record under a lease)
/// and the marks of the gone ones.
#[derive(Debug, Clone, Default)]
pub struct Census {
    pub holdings: BTreeMap<String, Holdings>,
    pub live: BTreeMap<String, Node>,
    /// Mark and its mod revision, by node.
    pub marks: BTreeMap<String, (Gone, i64)>,
}

impl Census {
    /// Every node named anywhere: live, holding something, or marked.
    pub fn nodes(&self) -> Vec<String> {
        let mut all: Vec<String> = (self.live.keys())
            .chain(self.holdings.keys())
            .chain(self.marks.keys())
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// The networks that have keys under `ipam/`, in key order.
pub async fn ipam_networks(store: &mut Store) -> Result<Vec<String>, StoreError> {
    let keys = store.keys().clone();
    let root = keys.ipam_root();
    let end = prefix_end(root.as_bytes());
    let mut from = root.clone().into_bytes();
    let mut networks = Vec::new();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_keys_only()
            .with_limit(1);
        let resp = store.get(from, Some(options)).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(networks);
        };
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let Some(network) = keys.network_of_ipam_key(&key) else {
            // `ipam//...`: nothing of ours; step over it.
            let mut next = kv.key().to_vec();
            next.push(0);
            from = next;
            continue;
        };
        from = prefix_end(keys.ipam(network).as_bytes());
        networks.push(network.to_string());
    }
}

/// What `node` holds (every node's with None), by node.
async fn read_holdings(
    store: &mut Store,
    node: Option<&str>,
) -> Result<BTreeMap<String, Holdings>, StoreError> {
    let keys = store.keys().clone();
    let wanted = |n: &str| node.is_none_or(|want| want == n);
    // (node, network, container id, ifname) -> held
    let mut all: BTreeMap<(String, String, String, String), Held> = BTreeMap::new();
    // Page by page, keeping only the wanted node's: one node's holdings are read without holding
    // every record of the cluster at once.
    for network in ipam_networks(store).await? {
        let mut page = |kvs: Vec<etcd_client::KeyValue>| {
            for kv in &kvs {
                let held = match HeldAllocation::read(&network, kv) {
                    Ok(held) => held,
                    Err(e) => {
                        log::warn!("{e}; left out");
                        continue;
                    }
                };
                if !wanted(&held.allocation.node) {
                    continue;
                }
                let a = &held.allocation;
                let id = (
                    a.node.clone(),
                    network.clone(),
                    a.container_id.clone(),
                    a.ifname.clone(),
                );
                let entry = held_of(&network, &a.container_id, &a.ifname);
                all.entry(id).or_insert(entry).allocation = Some(held);
            }
        };
        store
            .get_prefix_pages(&keys.owners(&network), &mut page)
            .await?;
    }
    let mut page = |kvs: Vec<etcd_client::KeyValue>| {
        for kv in &kvs {
            let held = match HeldEndpoint::read(kv) {
                Ok(held) => held,
                Err(e) => {
                    log::warn!("{e}; left out");
                    continue;
                }
            };
            let e = &held.endpoint;
            if !wanted(&e.node) {
                continue;
            }
            let id = (
                e.node.clone(),
                e.network.clone(),
                e.container_id.clone(),
                e.ifname.clone(),
            );
            let entry = held_of(&e.network, &e.container_id, &e.ifname);
            all.entry(id).or_insert(entry).endpoint = Some(held);
        }
    };
    store
        .get_prefix_pages(&keys.all_endpoints(), &mut page)
        .await?;
    let mut by_node: BTreeMap<String, Holdings> = BTreeMap::new();
    for ((node, ..), held) in all {
        by_node.entry(node).or_default().attachments.push(held);
    }
    Ok(by_node)
}

fn held_of(network: &str, container_id: &str, ifname: &str) -> Held {
    Held {
        network: network.into(),
        container_id: container_id.into(),
        ifname: ifname.into(),
        allocation: None,
        endpoint: None,
    }
}

/// What one node holds.
pub async fn holdings(store: &mut Store, node: &str) -> Result<Holdings, StoreError> {
    Ok(read_holdings(store, Some(node))
        .await?
        .remove(node)
        .unwrap_or_default())
}

/// The nodes that hold anything (an allocation or an endpoint record), read page by page and
/// keeping only their names: the reclaimer's census of a cluster of 100,000 containers costs it
/// the names of the nodes, not every record at once.
pub async fn holders(store: &mut Store) -> Result<BTreeSet<String>, StoreError> {
    let keys = store.keys().clone();
    let mut holders = BTreeSet::new();
    for network in ipam_networks(store).await? {
        let mut page = |kvs: Vec<etcd_client::KeyValue>| {
            for kv in &kvs {
                match HeldAllocation::read(&network, kv) {
                    Ok(held) => {
                        holders.insert(held.allocation.node);
                    }
                    Err(e) => log::warn!("{e}; left out"),
                }
            }
        };
        store
            .get_prefix_pages(&keys.owners(&network), &mut page)
            .await?;
    }
    let mut page = |kvs: Vec<etcd_client::KeyValue>| {
        for kv in &kvs {
            match HeldEndpoint::read(kv) {
                Ok(held) => {
                    holders.insert(held.endpoint.node);
                }
                Err(e) => log::warn!("{e}; left out"),
            }
        }
    };
    store
        .get_prefix_pages(&keys.all_endpoints(), &mut page)
        .await?;
    Ok(holders)
}

/// Every node's holdings, the live nodes and the marks.
pub async fn census(store: &mut Store) -> Result<Census, StoreError> {
    let holdings = read_holdings(store, None).await?;
    Ok(Census {
        holdings,
        live: live(store).await?,
        marks: marks(store).await?,
    })
}

/// The live nodes (a node record under a lease), by name.
pub async fn live(store: &mut Store) -> Result<BTreeMap<String, Node>, StoreError> {
    let keys = store.keys().clone();
    let mut live = BTreeMap::new();
    for kv in store.get_prefix(&keys.nodes()).await?.0 {
        match records::decode::<Node>(kv.key(), kv.value()) {
            Ok(node) => {
                let name = Keys::last_segment(&String::from_utf8_lossy(kv.key())).to_string();
                live.insert(name, node);
            }
            Err(e) => log::warn!("{e}; left out"),
        }
    }
    Ok(live)
}

/// The marks of gone nodes, with their mod revisions.
pub async fn marks(store: &mut Store) -> Result<BTreeMap<String, (Gone, i64)>, StoreError> {
    let keys = store.keys().clone();
    let mut marks = BTreeMap::new();
    for kv in store.get_prefix(&keys.gones()).await?.0 {
        let node = Keys::last_segment(&String::from_utf8_lossy(kv.key())).to_string();
        match records::decode::<Gone>(kv.key(), kv.value()) {
            Ok(gone) => {
                marks.insert(node, (gone, kv.mod_revision()));
            }
            Err(e) => log::warn!("{e}; left out"),
        }
    }
    Ok(marks)
}

/// How [`release_node`] goes about it.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// Attachments per transaction (at most what fits in [`MAX_OPS`]).
    pub batch: usize,
    /// Release even while the node has a lease (`node rm --force`). Otherwise every transaction
    /// requires `nodes/<node>` not to exist.
    pub force: bool,
    /// Compares every transaction must pass as well (the reclaimer's leadership and mark).
    pub guards: Vec<Compare>,
}

impl Default for ReleaseOptions {
    fn default() -> Self {
        ReleaseOptions {
            batch: DEFAULT_BATCH,
            force: false,
            guards: Vec::new(),
        }
    }
}

/// What became of one part of an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The node held none.
    None,
    Released,
    /// It changed between the read and the release (someone else's now, or rewritten): left.
    Changed,
}

/// One attachment of a release.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedAttachment {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub name: Option<String>,
    /// With prefix length.
    pub addresses: Vec<String>,
    pub allocation: Outcome,
    pub endpoint: Outcome,
}

impl ReleasedAttachment {
    pub fn released_any(&self) -> bool {
        self.allocation == Outcome::Released || self.endpoint == Outcome::Released
    }

    pub fn changed_any(&self) -> bool {
        self.allocation == Outcome::Changed || self.endpoint == Outcome::Changed
    }

    /// `network container-id/ifname name addresses`, for logs.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.allocation != Outcome::None {
            parts.push("allocation");
        }
        if self.endpoint != Outcome::None {
            parts.push("endpoint record");
        }
        format!(
            "{} of network {} ({}/{}{}, {})",
            parts.join(" and "),
            self.network,
            self.container_id,
            self.ifname,
            self.name
                .as_ref()
                .map(|n| format!(", name {n}"))
                .unwrap_or_default(),
            if self.addresses.is_empty() {
                "no address".to_string()
            } else {
                self.addresses.join(", ")
            }
        )
    }
}

/// Why a release stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Stopped {
    /// The node registered (again): its lease is alive.
    NodeAlive,
    /// One of the caller's guards failed (the reclaimer lost its leadership, the mark changed).
    GuardFailed,
}

/// The outcome of [`release_node`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Released {
    pub node: String,
    /// Every attachment tried, in order.
    pub attachments: Vec<ReleasedAttachment>,
    pub stopped: Option<Stopped>,
}

impl Released {
    pub fn released(&self) -> impl Iterator<Item = &ReleasedAttachment> {
        self.attachments.iter().filter(|a| a.released_any())
    }

    pub fn changed(&self) -> impl Iterator<Item = &ReleasedAttachment> {
        self.attachments.iter().filter(|a| a.changed_any())
    }

    /// `N allocations (K names), M endpoint records`, of what was released.
    pub fn summary(&self) -> String {
        let allocations = (self.released())
            .filter(|a| a.allocation == Outcome::Released)
            .count();
        let names = (self.released())
            .filter(|a| a.allocation == Outcome::Released && a.name.is_some())
            .count();
        let endpoints = (self.released())
            .filter(|a| a.endpoint == Outcome::Released)
            .count();
        format!(
            "{allocations} allocation{} ({names} name{}), {endpoints} endpoint record{}",
            plural(allocations),
            plural(names),
            plural(endpoints)
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Releases `holdings`, what `node` held as read, in one pass of guarded transactions of
/// `options.batch` attachments; `progress` hears of each transaction's outcome as it comes.
/// Running it again on a fresh reading releases what is left, if anything: idempotent.
pub async fn release_node(
    store: &mut Store,
    node: &str,
    holdings: &Holdings,
    options: &ReleaseOptions,
    mut progress: impl FnMut(&[ReleasedAttachment]),
) -> Result<Released, StoreError> {
    let keys = store.keys().clone();
    let node_key = keys.node(node);
    let mut guards = options.guards.clone();
    if !options.force {
        guards.push(Compare::create_revision(
            node_key.clone(),
            CompareOp::Equal,
            0,
        ));
    }
    let mut released = Released {
        node: node.to_string(),
        ..Released::default()
    };
    let batch = options.batch.max(1);
    let mut pending = holdings.attachments.as_slice();
    while !pending.is_empty() {
        // As many attachments as the batch allows and etcd takes (at least one).
        let (mut take, mut ops, mut nested) = (0, 0, 0);
        while take < pending.len() && take < batch {
            let held = &pending[take];
            let (more, deeper) = (ops + held.ops(), nested.max(held.nested_ops()));
            if take > 0 && more + deeper > MAX_OPS {
                break;
            }
            (ops, nested) = (more, deeper);
            take += 1;
        }
        let (now, rest) = pending.split_at(take);
        pending = rest;
        let mut then = Vec::new();
        for held in now {
            if let Some(e) = &held.endpoint {
                then.push(TxnOp::txn(e.release()));
            }
            if let Some(a) = &held.allocation {
                then.push(TxnOp::txn(a.release(&keys)));
            }
        }
        let txn = Txn::new()
            .when(guards.clone())
            .and_then(then)
            .or_else(vec![TxnOp::get(node_key.clone(), None)]);
        let resp = store.txn(txn).await?;
        if !resp.succeeded() {
            let alive = resp
                .op_responses()
                .iter()
                .any(|r| matches!(r, TxnOpResponse::Get(g) if !g.kvs().is_empty()));
            released.stopped = Some(if alive && !options.force {
                Stopped::NodeAlive
            } else {
                Stopped::GuardFailed
            });
            return Ok(released);
        }
        let mut outcomes = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Txn(t) if t.succeeded() => Outcome::Released,
            _ => Outcome::Changed,
        });
        let first = released.attachments.len();
        for held in now {
            let endpoint = match held.endpoint {
                Some(_) => outcomes.next().unwrap_or(Outcome::Changed),
                None => Outcome::None,
            };
            let allocation = match held.allocation {
                Some(_) => outcomes.next().unwrap_or(Outcome::Changed),
                None => Outcome::None,
            };
            released.attachments.push(ReleasedAttachment {
                network: held.network.clone(),
                container_id: held.container_id.clone(),
                ifname: held.ifname.clone(),
                name: held.name().map(str::to_string),
                addresses: held.addresses().iter().map(ToString::to_string).collect(),
                allocation,
                endpoint,
            });
        }
        progress(&released.attachments[first..]);
    }
    Ok(released)
}

/// Writes the mark of `node` (gone since `since`, Unix seconds) unless it has a lease or a mark
/// already, and the `guards` hold. The mark now in place with its mod revision (ours or the one
/// found), or None when the node has a lease or a guard failed.
pub async fn mark_gone(
    store: &mut Store,
    node: &str,
    since: u64,
    guards: &[Compare],
) -> Result<Option<(Gone, i64)>, StoreError> {
    let keys = store.keys().clone();
    let (node_key, mark_key) = (keys.node(node), keys.gone(node));
    let mark = Gone { since };
    let mut when = guards.to_vec();
    when.push(Compare::create_revision(
        node_key.clone(),
        CompareOp::Equal,
        0,
    ));
    when.push(Compare::create_revision(
        mark_key.clone(),
        CompareOp::Equal,
        0,
    ));
    let txn = Txn::new()
        .when(when)
        .and_then(vec![TxnOp::put(
            mark_key.clone(),
            records::encode(&mark),
            None,
        )])
        .or_else(vec![
            TxnOp::get(mark_key, None),
            TxnOp::get(node_key, Some(GetOptions::new().with_count_only())),
        ]);
    let resp = store.txn(txn).await?;
    if resp.succeeded() {
        let revision = resp.header().map_or(0, |h| h.revision());
        return Ok(Some((mark, revision)));
    }
    let gets: Vec<_> = (resp.op_responses().into_iter())
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect();
    let alive = gets.get(1).is_some_and(|g| g.count() > 0);
    match gets.first().and_then(|g| g.kvs().first()) {
        Some(kv) if !alive => Ok(Some((
            records::decode(kv.key(), kv.value())?,
            kv.mod_revision(),
        ))),
        _ => Ok(None),
    }
}

/// Removes the mark of `node` if it is still the one of `revision` (any, with None) and the
/// guards hold. Whether it was removed.
pub async fn unmark(
    store: &mut Store,
    node: &str,
    revision: Option<i64>,
    guards: &[Compare],
) -> Result<bool, StoreError> {
    let key = store.keys().gone(node);
    let mut when = guards.to_vec();
    if let Some(revision) = revision {
        when.push(Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            revision,
        ));
    }
    let txn = Txn::new()
        .when(when)
        .and_then(vec![TxnOp::delete(key, None)]);
    let resp = store.txn(txn).await?;
    Ok(resp.succeeded()
        && resp
            .op_responses()
            .iter()
            .any(|r| matches!(r, TxnOpResponse::Delete(d) if d.deleted() > 0)))
}
