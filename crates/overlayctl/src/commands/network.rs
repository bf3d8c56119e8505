//! `network create | ls | inspect | rm`.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use std::net::IpAddr;

use model::addressing::Addressing;
use model::records::{self, Endpoint, Network};
use model::types::{check_network_name, FIRST_AUTO_VNI, MAX_VNI};
use model::{Mac, Mtu, Vni};
use serde::Serialize;
use store::etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse,
};
use store::{Keys, Store};

use super::{count_ranges, decode_all, endpoint_label, prefix_range, short_id};
use crate::cli::CreateArgs;
use crate::error::Error;
use crate::output::{fields, joined, or_dash, utc, yes_no, Render, Table};

/// How many VNIs `network create` tries before giving up on a busy cluster.
const VNI_ATTEMPTS: u32 = 10;

/// How often `network rm` re-reads a network that changed between its read and its delete.
const REMOVE_ATTEMPTS: usize = 3;

/// How many endpoints a refusal to remove names before it just counts.
const NAMED_IN_REFUSAL: usize = 5;

pub async fn create(store: &mut Store, args: &CreateArgs) -> Result<Created, Error> {
    // Everything is checked before the first request: a refused create writes nothing.
    check_network_name(&args.name)?;
    let addressing = Addressing::plan(&args.subnet, &args.gateway, args.ip_range.as_deref())?;
    let vni = args.vni.as_deref().map(Vni::parse).transpose()?;
    let mtu = args.mtu.as_deref().map(Mtu::parse).transpose()?;
    let mut record = Network {
        name: args.name.clone(),
        vni: vni.unwrap_or(Vni::FIRST_AUTO),
        subnets: addressing.subnets.clone(),
        gateways: addressing.record_gateways(),
        ip_range: addressing.ip_range,
        mtu,
        internal: args.internal,
        host_access: args.host_access,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };

    if let Some(vni) = vni {
        return match try_create(store, &record).await? {
            Outcome::Created => Ok(Created(record)),
            Outcome::NameTaken => Err(Error::NameTaken(record.name)),
            Outcome::VniTaken { owner, .. } => Err(Error::VniTaken {
                vni: vni.get(),
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
        let vni = pick_vni(&taken, random_below(spread)).ok_or(Error::VnisExhausted {
            first: FIRST_AUTO_VNI,
            last: MAX_VNI,
        })?;
        record.vni = Vni::new(vni)?;
        match try_create(store, &record).await? {
            Outcome::Created => return Ok(Created(record)),
            Outcome::NameTaken => return Err(Error::NameTaken(record.name)),
            Outcome::VniTaken { taken: fresh, .. } => {
                log::debug!("vni {vni} was taken meanwhile; choosing again");
                taken = fresh;
                taken.insert(vni);
            }
        }
    }
    Err(Error::Contended(format!(
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
async fn try_create(store: &mut Store, record: &Network) -> Result<Outcome, Error> {
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

/// The `skip`-th lowest free VNI from [`FIRST_AUTO_VNI`] (the last free one if there are fewer).
fn pick_vni(taken: &BTreeSet<u32>, skip: u32) -> Option<u32> {
    (FIRST_AUTO_VNI..=MAX_VNI)
        .filter(|v| !taken.contains(v))
        .take(skip as usize + 1)
        .last()
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

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Created(pub Network);

impl Render for Created {
    fn table(&self) -> String {
        let n = &self.0;
        let mut line = format!("created network {}: vni {}", n.name, n.vni);
        for (i, subnet) in n.subnets.iter().enumerate() {
            line.push_str(&format!(", subnet {subnet}"));
            if let Some(gateway) = n.gateways.get(i) {
                line.push_str(&format!(", gateway {gateway}"));
            }
        }
        if let Some(range) = &n.ip_range {
            line.push_str(&format!(", ip-range {range}"));
        }
        if let Some(mtu) = n.mtu {
            line.push_str(&format!(", mtu {mtu}"));
        }
        if n.internal {
            line.push_str(", internal");
        }
        if n.host_access {
            line.push_str(", host access");
        }
        line.push('\n');
        line
    }
}

/// All networks, in name order (the key order).
async fn networks(store: &mut Store) -> Result<Vec<Network>, Error> {
    let prefix = store.keys().networks();
    Ok(decode_all(&store.get_prefix(&prefix).await?.0))
}

pub async fn list(store: &mut Store) -> Result<Networks, Error> {
    let networks = networks(store).await?;
    let keys = store.keys().clone();
    let ranges: Vec<_> = networks
        .iter()
        .map(|n| prefix_range(&keys.endpoints(&n.name)))
        .collect();
    let counts = count_ranges(store, &ranges).await?;
    Ok(Networks(
        networks
            .into_iter()
            .zip(counts)
            .map(|(network, endpoints)| NetworkSummary { network, endpoints })
            .collect(),
    ))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSummary {
    #[serde(flatten)]
    pub network: Network,
    /// How many endpoint records the network has, on all hosts.
    pub endpoints: u64,
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Networks(pub Vec<NetworkSummary>);

impl Render for Networks {
    fn table(&self) -> String {
        let mut table = Table::new(&[
            "NAME",
            "VNI",
            "SUBNETS",
            "GATEWAYS",
            "INTERNAL",
            "HOST-ACCESS",
            "ENDPOINTS",
        ]);
        for s in &self.0 {
            let n = &s.network;
            table.row(vec![
                n.name.clone(),
                n.vni.to_string(),
                joined(&n.subnets),
                joined(&n.gateways),
                yes_no(n.internal),
                yes_no(n.host_access),
                s.endpoints.to_string(),
            ]);
        }
        table.render()
    }
}

/// Reads one network's record; `network NAME not found` when there is none.
pub(super) async fn network(store: &mut Store, name: &str) -> Result<(Network, i64), Error> {
    check_network_name(name)?;
    let key = store.keys().network(name);
    let resp = store.get(key, None).await?;
    let kv = resp
        .kvs()
        .first()
        .ok_or_else(|| Error::NotFound(name.to_string()))?;
    Ok((records::decode(kv.key(), kv.value())?, kv.mod_revision()))
}

pub async fn inspect(store: &mut Store, name: &str) -> Result<Inspection, Error> {
    let (network, _) = network(store, name).await?;
    let prefix = store.keys().endpoints(name);
    let mut endpoints: Vec<Endpoint> = decode_all(&store.get_prefix(&prefix).await?.0);
    // Named containers first, by name; then by container id: how one looks for a container.
    endpoints.sort_by(|a, b| {
        (a.name.is_none(), &a.name, &a.container_id, &a.ifname).cmp(&(
            b.name.is_none(),
            &b.name,
            &b.container_id,
            &b.ifname,
        ))
    });
    Ok(Inspection {
        network,
        endpoints: endpoints
            .into_iter()
            .map(|e| EndpointView {
                in_dns: e
                    .name
                    .as_deref()
                    .is_some_and(|n| model::names::dns_unservable(n, name).is_none()),
                name: e.name,
                container_id: e.container_id,
                ifname: e.ifname,
                addresses: e.ips.iter().map(ToString::to_string).collect(),
                mac: e.mac,
                node: e.node,
                vtep: e.vtep,
            })
            .collect(),
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    #[serde(flatten)]
    pub network: Network,
    pub endpoints: Vec<EndpointView>,
}

/// A container attached to the network, on whichever host.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    /// The reserved name, whatever it is: names DNS cannot carry are reserved all the same.
    pub name: Option<String>,
    /// Whether DNS serves the name (`model::names::dns_unservable`).
    pub in_dns: bool,
    pub container_id: String,
    pub ifname: String,
    /// With prefix length, as in the record.
    pub addresses: Vec<String>,
    pub mac: Mac,
    pub node: String,
    pub vtep: IpAddr,
}

impl Render for Inspection {
    fn table(&self) -> String {
        let n = &self.network;
        let mut out = fields(&[
            ("NAME", n.name.clone()),
            ("VNI", n.vni.to_string()),
            ("SUBNETS", joined(&n.subnets)),
            ("GATEWAYS", joined(&n.gateways)),
            ("IP-RANGE", or_dash(n.ip_range.as_ref())),
            (
                "MTU",
                n.mtu
                    .map_or_else(|| "default".to_string(), |m| m.to_string()),
            ),
            ("INTERNAL", yes_no(n.internal)),
            ("HOST-ACCESS", yes_no(n.host_access)),
            ("CREATED", utc(n.created)),
            ("ENDPOINTS", self.endpoints.len().to_string()),
        ]);
        if !self.endpoints.is_empty() {
            let mut table = Table::new(&["NAME", "CONTAINER ID", "ADDRESSES", "MAC", "NODE"]);
            for e in &self.endpoints {
                let name = match (&e.name, e.in_dns) {
                    (Some(name), false) => format!("{name} (not in DNS)"),
                    (name, _) => or_dash(name.as_ref()),
                };
                table.row(vec![
                    name,
                    short_id(&e.container_id),
                    joined(&e.addresses),
                    e.mac.to_string(),
                    e.node.clone(),
                ]);
            }
            out.push('\n');
            out.push_str(&table.render());
        }
        out
    }
}

pub async fn remove(store: &mut Store, name: &str) -> Result<Removed, Error> {
    let keys = store.keys().clone();
    for _ in 0..REMOVE_ATTEMPTS {
        let (record, revision) = network(store, name).await?;
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
            return Ok(Removed(record));
        }
        log::debug!("network {name} changed while being removed; reading it again");
    }
    Err(Error::Contended(format!(
        "network {name} kept changing while being removed ({REMOVE_ATTEMPTS} attempts); try again"
    )))
}

fn in_use(name: &str, kvs: &[KeyValue]) -> Error {
    let endpoints: Vec<Endpoint> = decode_all(kvs);
    let mut named: Vec<String> = endpoints
        .iter()
        .take(NAMED_IN_REFUSAL)
        .map(|e| format!("{} on {}", endpoint_label(e), e.node))
        .collect();
    if kvs.len() > named.len() {
        named.push(format!("{} more", kvs.len() - named.len()));
    }
    Error::InUse {
        network: name.to_string(),
        count: kvs.len(),
        list: named.join(", "),
    }
}

/// Address allocations without endpoints are leaks of failed ADDs; the network is gone either
/// way, but the operator should know that addresses stay held until their containers' DEL.
async fn warn_about_leftover_allocations(store: &mut Store, name: &str) {
    let owners = prefix_range(&store.keys().owners(name));
    if let Ok(counts) = count_ranges(store, &[owners]).await {
        if let Some(&n) = counts.first().filter(|&&n| n > 0) {
            log::warn!(
                "{n} address allocation{} of network {name} remain in etcd; the CNI DEL of their containers releases them",
                if n == 1 { "" } else { "s" }
            );
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Removed(pub Network);

impl Render for Removed {
    fn table(&self) -> String {
        format!("removed network {} (vni {})\n", self.0.name, self.0.vni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_vni_or_a_later_one() {
        let taken: BTreeSet<u32> = [4096, 4097, 4099].into_iter().collect();
        assert_eq!(pick_vni(&taken, 0), Some(4098));
        assert_eq!(pick_vni(&taken, 1), Some(4100));
        assert_eq!(pick_vni(&BTreeSet::new(), 0), Some(FIRST_AUTO_VNI));
    }

    #[test]
    fn random_below_stays_below() {
        assert_eq!(random_below(1), 0);
        assert!((0..100).all(|_| random_below(8) < 8));
    }
}
