//! Endpoint records in etcd, and the static FDB and neighbour entries that let this host's
//! containers reach the endpoints of other hosts (the model's rules, [`model::peers`]).

use std::net::IpAddr;

use cni::CniError;
use model::peers::{desired, plan, Remote};
use model::records::{self, Endpoint};
use model::Mac;
use netops::Netlink;
use store::client::decode_all;
use store::etcd_client::{GetOptions, Txn, TxnOp, TxnOpResponse};
use store::Store;

use crate::config::OverlayConfig;

/// What an ADD learns in the round trip that writes its record.
pub struct Published {
    /// Every record of the network, when asked for.
    pub endpoints: Option<Vec<Endpoint>>,
    /// This node has a live overlayd (its node record, held under the overlayd's lease).
    pub overlayd_live: bool,
}

/// Writes our record and reads, in the same round trip, this node's overlayd registration and,
/// with `list`, every record of the network.
pub async fn publish(
    store: &mut Store,
    cfg: &OverlayConfig,
    record: &Endpoint,
    list: bool,
) -> Result<Published, CniError> {
    let keys = store.keys().clone();
    let key = keys.endpoint(&cfg.network, &record.container_id, &record.ifname);
    let mut ops = vec![
        TxnOp::put(key, records::encode(record), None),
        TxnOp::get(
            keys.node(&cfg.node),
            Some(GetOptions::new().with_count_only()),
        ),
    ];
    if list {
        let prefix = keys.endpoints(&cfg.network);
        let end = store::client::prefix_end(prefix.as_bytes());
        ops.push(TxnOp::get(prefix, Some(GetOptions::new().with_range(end))));
    }
    let resp = store.txn(Txn::new().and_then(ops)).await?;
    let gets: Vec<_> = (resp.op_responses().into_iter())
        .filter_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        })
        .collect();
    Ok(Published {
        overlayd_live: gets.first().is_some_and(|g| g.count() > 0),
        endpoints: gets.get(1).map(|g| decode_all(g.kvs())),
    })
}

/// Every record of the network.
pub async fn list(store: &mut Store, cfg: &OverlayConfig) -> Result<Vec<Endpoint>, CniError> {
    Ok(store::networks::endpoints(store, &cfg.network).await?)
}

/// Programs, on the VXLAN device, what is missing for the remote endpoints of this network, by
/// the same rules overlayd reconciles with: the adds of the plan, never a delete (overlayd owns
/// reconciliation; a record deleted meanwhile is its to clean up). Reads the device's tables once
/// and adds only the difference, so an ADD on a busy network costs two dumps, not two calls per
/// peer. A record that cannot be programmed is skipped whole, with a warning.
pub async fn program(
    nl: &Netlink,
    vxlan: u32,
    cfg: &OverlayConfig,
    endpoints: &[Endpoint],
) -> Result<(), CniError> {
    let remotes: Vec<Remote> = endpoints
        .iter()
        .filter_map(|e| {
            Remote::of(e, &cfg.node)
                .inspect_err(|err| log::warn!("endpoint {}/{}: {err}", e.container_id, e.ifname))
                .ok()
                .flatten()
        })
        .collect();
    let fdb: Vec<(Mac, IpAddr)> = nl
        .fdb_entries(vxlan)
        .await?
        .into_iter()
        .map(|(mac, vtep)| (Mac::from(mac), vtep))
        .collect();
    let neigh: Vec<(IpAddr, Mac)> = nl
        .neigh_entries(vxlan)
        .await?
        .into_iter()
        .map(|(ip, mac)| (ip, Mac::from(mac)))
        .collect();
    let plan = plan(&desired(&remotes, cfg.vni), &fdb, &neigh);
    for (mac, vtep) in &plan.fdb_add {
        nl.fdb_add(vxlan, mac.octets(), *vtep).await?;
    }
    for (ip, mac) in &plan.neigh_add {
        nl.neigh_add(vxlan, *ip, mac.octets()).await?;
    }
    Ok(())
}

pub async fn get(
    store: &mut Store,
    cfg: &OverlayConfig,
    container_id: &str,
    ifname: &str,
) -> Result<Option<Endpoint>, CniError> {
    let key = store.keys().endpoint(&cfg.network, container_id, ifname);
    let resp = store.get(key, None).await?;
    resp.kvs()
        .first()
        .map(|kv| records::decode(kv.key(), kv.value()).map_err(CniError::from))
        .transpose()
}

/// Removes the endpoint record of an attachment if it is this node's (the store's rule): a record
/// of another node under the same key is left alone.
pub async fn remove(
    store: &mut Store,
    cfg: &OverlayConfig,
    container_id: &str,
    ifname: &str,
) -> Result<(), CniError> {
    store::release::release_endpoint(store, &cfg.network, container_id, ifname, &cfg.node).await?;
    Ok(())
}

/// This node's records in the network.
pub async fn of_node(store: &mut Store, cfg: &OverlayConfig) -> Result<Vec<Endpoint>, CniError> {
    let mut endpoints = list(store, cfg).await?;
    endpoints.retain(|e| e.node == cfg.node);
    Ok(endpoints)
}
