//! Cluster-wide allocation in etcd.
//!
//! Every address is its own key, created in one transaction with the attachment's owner record and
//! its name key, each guarded by `create_revision == 0`: the address, the name and the owner are
//! written together or not at all, and two hosts can never both win one address or one name.
//!
//! No key is shared by all allocations in a compare, so concurrent ADDs on many hosts do not
//! serialise on a lock or a hot key. The candidate comes from a per-node cursor cached in a local
//! file (host-local keeps the same kind of cursor), so an ADD in a steady network is one round trip.
//! When the candidate is taken, the transaction's `else` branch already returns the next window of
//! used address keys after it (a keys-only range read, `WINDOW` keys), and the cluster-wide cursor,
//! so the retry needs no extra read. The cost of an ADD thus depends on the window, not on how many
//! addresses are taken: a /16 with 50,000 in use allocates like an empty one.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use cni::{codes, CniError, CniResult, IpConfig};
use ipnetwork::IpNetwork;
use model::addressing::{address, number, Pick, Pool};
use model::names;
use model::records::{self, AllocatedIp, Allocation, Holder};
use store::etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use store::{Keys, Store};

use crate::config::IpamConfig;

/// Used-address keys returned per window read.
const WINDOW: i64 = 64;
/// Transactions tried before giving up with "try again later".
const MAX_ATTEMPTS: usize = 16;

/// The attachment an allocation belongs to.
pub struct Attachment<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub name: Option<&'a str>,
}

pub async fn add(
    store: &mut Store,
    cfg: &IpamConfig,
    att: &Attachment<'_>,
    requested: &[IpAddr],
) -> Result<Allocation, CniError> {
    let keys = store.keys().clone();
    let net = cfg.network.as_str();
    let holder = Holder {
        container_id: att.container_id.into(),
        ifname: att.ifname.into(),
        node: cfg.node.clone(),
    };
    let owner_key = keys.owner(net, att.container_id, att.ifname);
    let name_key = att.name.map(|n| keys.name(net, n));

    let fixed = requested_per_pool(cfg, requested)?;
    let hints = Hints::new(cfg);
    let cached = hints.read(cfg.pools.len());
    let mut candidates: Vec<u128> = Vec::with_capacity(cfg.pools.len());
    for (i, pool) in cfg.pools.iter().enumerate() {
        let start = fixed[i]
            .or_else(|| {
                cached[i]
                    .filter(|h| h.is_ipv6() == pool.is_v6())
                    .and_then(|h| pool.next_usable(number(h) + 1))
            })
            .or_else(|| pool.first_usable())
            .ok_or_else(|| exhausted(cfg, i))?;
        candidates.push(start);
    }
    let mut wrapped = vec![false; cfg.pools.len()];
    let mut jumped = vec![false; cfg.pools.len()];
    let mut rng = Rng::seeded(att.container_id);

    for attempt in 0..MAX_ATTEMPTS {
        let allocation = Allocation {
            container_id: att.container_id.into(),
            ifname: att.ifname.into(),
            node: cfg.node.clone(),
            name: att.name.map(str::to_string),
            ips: candidates
                .iter()
                .enumerate()
                .map(|(i, &n)| allocated_ip(&cfg.pools[i], address(n, cfg.pools[i].is_v6())))
                .collect(),
        };
        let holder_json = records::encode(&holder);
        let mut when = vec![Compare::create_revision(
            owner_key.clone(),
            CompareOp::Equal,
            0,
        )];
        let mut then = vec![TxnOp::put(
            owner_key.clone(),
            records::encode(&allocation),
            None,
        )];
        let mut otherwise = vec![TxnOp::get(owner_key.clone(), None)];
        if let Some(name_key) = &name_key {
            when.push(Compare::create_revision(
                name_key.clone(),
                CompareOp::Equal,
                0,
            ));
            then.push(TxnOp::put(name_key.clone(), holder_json.clone(), None));
            otherwise.push(TxnOp::get(name_key.clone(), None));
        }
        for (i, &n) in candidates.iter().enumerate() {
            let pool = &cfg.pools[i];
            let ip = address(n, pool.is_v6());
            let ip_key = keys.ip(net, ip);
            when.push(Compare::create_revision(
                ip_key.clone(),
                CompareOp::Equal,
                0,
            ));
            then.push(TxnOp::put(ip_key.clone(), holder_json.clone(), None));
            if fixed[i].is_none() {
                then.push(TxnOp::put(keys.cursor(net, i), ip.to_string(), None));
            }
            otherwise.push(TxnOp::get(ip_key, Some(window_options(&keys, net, pool))));
            otherwise.push(TxnOp::get(keys.cursor(net, i), None));
        }
        let resp = store
            .txn(Txn::new().when(when).and_then(then).or_else(otherwise))
            .await?;
        if resp.succeeded() {
            hints.write(&cfg.pools, &candidates, &fixed);
            return Ok(allocation);
        }

        let mut responses = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g,
            _ => unreachable!("the else branch only reads"),
        });
        let owner = responses.next().expect("owner read");
        if let Some(kv) = owner.kvs().first() {
            // A repeated ADD of the same attachment gets what it got before.
            return records::decode::<Allocation>(kv.key(), kv.value()).map_err(CniError::from);
        }
        if let Some(name) = att.name {
            let taken = responses.next().expect("name read");
            if !taken.kvs().is_empty() {
                return Err(CniError::new(
                    codes::NAME_IN_USE,
                    format!("endpoint with name {name} already exists in network {net}"),
                ));
            }
        }
        for (i, pool) in cfg.pools.iter().enumerate() {
            let window = responses.next().expect("window read");
            let cursor = responses.next().expect("cursor read");
            let used: Vec<u128> = window
                .kvs()
                .iter()
                .filter_map(|kv| keys.ip_from_key(kv.key()))
                .map(number)
                .collect();
            if used.first() != Some(&candidates[i]) {
                continue; // this pool's candidate was free; another key lost the race
            }
            if let Some(n) = fixed[i] {
                return Err(CniError::new(
                    codes::ADDRESS_UNAVAILABLE,
                    format!(
                        "requested address {} is already in use in network {net}",
                        address(n, pool.is_v6())
                    ),
                ));
            }
            // Under contention, spread the contenders over the free addresses instead of all
            // taking the first one again.
            let skip = if attempt == 0 {
                0
            } else {
                rng.below(1 + 4 * attempt)
            };
            let full = used.len() as i64 >= WINDOW;
            let mut pick = pool.pick(candidates[i], &used, full, skip);
            if let Pick::ReadFrom(_) = pick {
                // A dense stretch: jump to where the cluster last allocated, once.
                let cluster_cursor = cursor
                    .kvs()
                    .first()
                    .and_then(|kv| kv.value_str().ok()?.parse::<IpAddr>().ok());
                if let Some(c) = cluster_cursor.filter(|c| {
                    !jumped[i] && number(*c) > candidates[i] && pool.range_of(*c).is_some()
                }) {
                    jumped[i] = true;
                    pick = match pool.next_usable(number(c) + 1) {
                        Some(n) => Pick::Free(n),
                        None => Pick::EndOfPool,
                    };
                } else {
                    pick = scan(store, &keys, net, pool, pick).await?;
                }
            }
            candidates[i] = match pick {
                Pick::Free(n) => n,
                Pick::ReadFrom(_) => unreachable!("scan resolves windows"),
                Pick::EndOfPool if !wrapped[i] => {
                    wrapped[i] = true;
                    pool.first_usable().ok_or_else(|| exhausted(cfg, i))?
                }
                Pick::EndOfPool => return Err(exhausted(cfg, i)),
            };
        }
        log::debug!("attempt {attempt} lost a race; next candidates {candidates:?}");
    }
    Err(CniError::try_again(format!(
        "lost the race for an address {MAX_ATTEMPTS} times in network {net}"
    )))
}

/// Reads windows until one has a free address or the pool ends.
async fn scan(
    store: &mut Store,
    keys: &Keys,
    net: &str,
    pool: &Pool,
    mut pick: Pick,
) -> Result<Pick, CniError> {
    while let Pick::ReadFrom(from) = pick {
        let ip = address(from, pool.is_v6());
        let window = store
            .get(keys.ip(net, ip), Some(window_options(keys, net, pool)))
            .await?;
        let used: Vec<u128> = window
            .kvs()
            .iter()
            .filter_map(|kv| keys.ip_from_key(kv.key()))
            .map(number)
            .collect();
        pick = pool.pick(from, &used, used.len() as i64 >= WINDOW, 0);
    }
    Ok(pick)
}

/// Keys-only read of at most `WINDOW` used addresses from the given key to the end of the pool.
fn window_options(keys: &Keys, net: &str, pool: &Pool) -> GetOptions {
    let (_, last) = pool.span();
    let mut end = keys.ip(net, address(last, pool.is_v6())).into_bytes();
    end.push(0);
    GetOptions::new()
        .with_range(end)
        .with_keys_only()
        .with_limit(WINDOW)
}

fn allocated_ip(pool: &Pool, ip: IpAddr) -> AllocatedIp {
    let range = pool.range_of(ip).expect("candidates lie in a range");
    AllocatedIp {
        address: IpNetwork::new(ip, range.subnet.prefix()).expect("the subnet's prefix fits"),
        gateway: range.gateway,
    }
}

fn exhausted(cfg: &IpamConfig, pool: usize) -> CniError {
    let subnets: Vec<String> = cfg.pools[pool]
        .ranges
        .iter()
        .map(|r| r.subnet.to_string())
        .collect();
    CniError::new(
        codes::POOL_EXHAUSTED,
        format!(
            "no free address left in {} of network {}",
            subnets.join(", "),
            cfg.network
        ),
    )
}

/// Assigns each requested address to the range set that contains it.
fn requested_per_pool(
    cfg: &IpamConfig,
    requested: &[IpAddr],
) -> Result<Vec<Option<u128>>, CniError> {
    let mut fixed = vec![None; cfg.pools.len()];
    for &ip in requested {
        let Some(i) = cfg.pools.iter().position(|p| p.range_of(ip).is_some()) else {
            return Err(CniError::new(
                codes::ADDRESS_UNAVAILABLE,
                format!(
                    "requested address {ip} is in no range of network {}",
                    cfg.network
                ),
            ));
        };
        if !cfg.pools[i].is_usable(ip) {
            return Err(CniError::new(
                codes::ADDRESS_UNAVAILABLE,
                format!("requested address {ip} is reserved (gateway or excluded)"),
            ));
        }
        if fixed[i].replace(number(ip)).is_some() {
            return Err(CniError::invalid_config(format!(
                "two requested addresses fall in the range set of {ip}"
            )));
        }
    }
    Ok(fixed)
}

/// Releases everything of one attachment of node `node` (the store's rule, shared with the
/// release of a whole node): the owner record if it is still the one read, its address and name
/// keys only if created with it. Ok(false) when nothing of that node was held: an allocation
/// another node wrote under the same key (the same container id on another host) is left alone.
pub async fn release(
    store: &mut Store,
    net: &str,
    node: &str,
    container_id: &str,
    ifname: &str,
) -> Result<bool, CniError> {
    let released =
        store::release::release_allocation(store, net, container_id, ifname, Some(node)).await?;
    Ok(released.is_some())
}

pub async fn get(
    store: &mut Store,
    cfg: &IpamConfig,
    container_id: &str,
    ifname: &str,
) -> Result<Option<Allocation>, CniError> {
    let resp = store
        .get(store.keys().owner(&cfg.network, container_id, ifname), None)
        .await?;
    match resp.kvs().first() {
        Some(kv) => Ok(Some(records::decode(kv.key(), kv.value())?)),
        None => Ok(None),
    }
}

/// Releases this node's allocations whose attachment is not in `valid`. Other nodes' are never
/// touched: their runtime knows nothing of ours. Continues past errors and reports the first.
pub async fn gc(
    store: &mut Store,
    cfg: &IpamConfig,
    valid: &HashSet<(String, String)>,
) -> Result<usize, CniError> {
    let (owners, _) = store.get_prefix(&store.keys().owners(&cfg.network)).await?;
    let mut released = 0;
    let mut first_error = None;
    for kv in owners {
        let allocation: Allocation = match records::decode(kv.key(), kv.value()) {
            Ok(a) => a,
            Err(e) => {
                first_error.get_or_insert(CniError::from(e));
                continue;
            }
        };
        // Another node's, a valid one, or one of overlayd's Docker driver (no CNI runtime's list
        // names those: the driver releases them).
        if allocation.node != cfg.node
            || valid.contains(&(allocation.container_id.clone(), allocation.ifname.clone()))
            || names::is_docker_attachment(&allocation.ifname)
        {
            continue;
        }
        match release(
            store,
            &cfg.network,
            &cfg.node,
            &allocation.container_id,
            &allocation.ifname,
        )
        .await
        {
            Ok(true) => released += 1,
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(released),
    }
}

/// Used addresses per range set, counted by etcd (count-only reads, one transaction).
pub async fn usage(
    store: &mut Store,
    cfg: &IpamConfig,
) -> Result<Vec<(u128, u128)>, store::StoreError> {
    let keys = store.keys().clone();
    let mut reads = Vec::new();
    for pool in &cfg.pools {
        for r in &pool.ranges {
            let mut end = keys.ip(&cfg.network, r.end).into_bytes();
            end.push(0);
            reads.push(TxnOp::get(
                keys.ip(&cfg.network, r.start),
                Some(GetOptions::new().with_range(end).with_count_only()),
            ));
        }
    }
    let resp = store.txn(Txn::new().and_then(reads)).await?;
    let mut counts = resp.op_responses().into_iter().map(|r| match r {
        TxnOpResponse::Get(g) => g.count() as u128,
        _ => 0,
    });
    Ok(cfg
        .pools
        .iter()
        .map(|pool| {
            let used: u128 = pool.ranges.iter().map(|_| counts.next().unwrap_or(0)).sum();
            (used, pool.capacity())
        })
        .collect())
}

pub fn to_result(allocation: &Allocation, cfg: &IpamConfig) -> CniResult {
    CniResult {
        interfaces: Vec::new(),
        ips: allocation
            .ips
            .iter()
            .map(|ip| IpConfig {
                address: ip.address,
                gateway: ip.gateway,
                interface: None,
            })
            .collect(),
        routes: cfg.routes.clone(),
        dns: cfg.dns.clone(),
    }
}

/// Moves this node's cursor back so that its next allocation in `ip`'s range set starts at `ip`:
/// for an address handed back unused right after it was allocated (overlayd's Docker driver, when
/// Docker rolls back a start), which would otherwise be passed over until the range wraps.
pub fn offer_again(cfg: &IpamConfig, ip: IpAddr) {
    let Some(i) = cfg.pools.iter().position(|p| p.range_of(ip).is_some()) else {
        return;
    };
    let hints = Hints::new(cfg);
    let mut cursor: Vec<u128> = hints
        .read(cfg.pools.len())
        .iter()
        .zip(&cfg.pools)
        .map(|(h, p)| {
            h.map(number)
                .or_else(|| p.first_usable().map(|n| n.saturating_sub(1)))
                .unwrap_or(0)
        })
        .collect();
    cursor[i] = number(ip).saturating_sub(1);
    hints.write(&cfg.pools, &cursor, &vec![None; cfg.pools.len()]);
}

/// The node's cursor, one line per range set, in `<dataDir>/<network>/<node>`. Only a hint: a
/// missing or garbled file costs a round trip, nothing else.
struct Hints {
    path: PathBuf,
}

impl Hints {
    fn new(cfg: &IpamConfig) -> Self {
        Hints {
            path: cfg.data_dir.join(&cfg.network).join(&cfg.node),
        }
    }

    fn read(&self, pools: usize) -> Vec<Option<IpAddr>> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut out: Vec<Option<IpAddr>> = text
            .lines()
            .map(|l| l.trim().parse::<IpAddr>().ok())
            .collect();
        out.resize(pools, None);
        out
    }

    fn write(&self, pools: &[Pool], candidates: &[u128], fixed: &[Option<u128>]) {
        if fixed.iter().all(Option::is_some) {
            return;
        }
        let text: String = candidates
            .iter()
            .zip(pools)
            .map(|(&n, p)| format!("{}\n", address(n, p.is_v6())))
            .collect();
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(self.path.parent().expect("has a parent"))?;
            std::fs::write(&self.path, text.as_bytes())
        };
        if let Err(e) = write() {
            log::debug!("cursor cache {}: {e}", self.path.display());
        }
    }
}

/// xorshift, seeded per process: only to spread contenders, nothing depends on its quality.
struct Rng(u64);

impl Rng {
    fn seeded(salt: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let mut seed = nanos ^ (std::process::id() as u64).rotate_left(32);
        for b in salt.bytes() {
            seed = (seed ^ b as u64).wrapping_mul(0x100000001b3);
        }
        Rng(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}
