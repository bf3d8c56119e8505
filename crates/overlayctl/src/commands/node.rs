//! `node ls` and `node rm`.

use std::net::IpAddr;

use serde::Serialize;
use store::nodes::{self, Outcome, ReleaseOptions, Released};
use store::Store;

use crate::error::Error;
use crate::output::{or_dash, utc, yes_no, Render, Table};

pub async fn list(store: &mut Store) -> Result<Nodes, Error> {
    let census = nodes::census(store).await?;
    let now = now_secs();
    let rows = census
        .nodes()
        .into_iter()
        .map(|name| {
            let live = census.live.get(&name);
            let holdings = census.holdings.get(&name);
            // Without a node record, the VTEP its endpoint records were written with.
            let vtep = live.map(|n| n.vtep).or_else(|| {
                holdings?
                    .attachments
                    .iter()
                    .find_map(|h| Some(h.endpoint.as_ref()?.endpoint.vtep))
            });
            let dead_since = match live {
                Some(_) => None,
                None => Some(census.marks.get(&name).map(|(gone, _)| gone.since)),
            };
            NodeView {
                vtep,
                alive: live.is_some(),
                since: live.map(|n| n.since),
                dead_since: dead_since.flatten(),
                dead_for: dead_since.flatten().map(|s| now.saturating_sub(s)),
                allocations: holdings.map_or(0, |h| h.allocations()) as u64,
                names: holdings.map_or(0, |h| h.names()) as u64,
                endpoints: holdings.map_or(0, |h| h.endpoints()) as u64,
                name,
            }
        })
        .collect();
    Ok(Nodes(rows))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    pub vtep: Option<IpAddr>,
    /// Its overlayd holds a lease.
    pub alive: bool,
    /// Unix seconds when the live overlayd registered.
    pub since: Option<u64>,
    /// Unix seconds since when a dead node has had no lease, as the reclaimer marked it (None:
    /// alive, or no reclaimer ever marked it).
    pub dead_since: Option<u64>,
    /// Seconds since then.
    pub dead_for: Option<u64>,
    /// Allocations (etcd-ipam) on this node, across networks.
    pub allocations: u64,
    /// Reserved names among them.
    pub names: u64,
    /// Endpoint records on this node, across networks.
    pub endpoints: u64,
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Nodes(pub Vec<NodeView>);

impl Render for Nodes {
    fn table(&self) -> String {
        let mut table = Table::new(&[
            "NAME",
            "VTEP",
            "ALIVE",
            "DEAD SINCE",
            "ALLOCATIONS",
            "NAMES",
            "ENDPOINTS",
        ]);
        for n in &self.0 {
            let dead = match (n.alive, n.dead_since) {
                (true, _) => "-".to_string(),
                (false, Some(since)) => format!(
                    "{} ({} ago)",
                    utc(since),
                    age(n.dead_for.unwrap_or_default())
                ),
                (false, None) => "unknown".to_string(),
            };
            table.row(vec![
                n.name.clone(),
                or_dash(n.vtep.as_ref()),
                yes_no(n.alive),
                dead,
                n.allocations.to_string(),
                n.names.to_string(),
                n.endpoints.to_string(),
            ]);
        }
        table.render()
    }
}

/// `3d4h`, `5m12s`, `40s`: the two largest units.
pub fn age(secs: u64) -> String {
    let units = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (unit, size) in units {
        if rest >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.len() == 2 && parts[1].starts_with('0') {
        parts.pop();
    }
    parts.concat()
}

/// Releases every allocation, name and endpoint record of `node`. Refused while it has a lease,
/// unless `force`.
pub async fn remove(store: &mut Store, node: &str, force: bool) -> Result<Removal, Error> {
    model::types::check_node_name(node)?;
    let node_key = store.keys().node(node);
    let alive = !store.get(node_key, None).await?.kvs().is_empty();
    if alive && !force {
        return Err(Error::NodeAlive(node.to_string()));
    }
    let holdings = nodes::holdings(store, node).await?;
    let options = ReleaseOptions {
        force,
        ..ReleaseOptions::default()
    };
    let released = nodes::release_node(store, node, &holdings, &options, |_| {}).await?;
    // node rm sets no guards of its own: only the node's return stops it.
    if released.stopped.is_some() {
        return Err(Error::NodeBack {
            node: node.to_string(),
            released: released.summary(),
        });
    }
    // Its countdown is over: nothing is left to reclaim.
    let guards = if force {
        Vec::new()
    } else {
        vec![store::etcd_client::Compare::create_revision(
            store.keys().node(node),
            store::etcd_client::CompareOp::Equal,
            0,
        )]
    };
    nodes::unmark(store, node, None, &guards).await?;
    Ok(Removal { alive, released })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    /// It had a lease (forced).
    pub alive: bool,
    #[serde(flatten)]
    pub released: Released,
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::None => "-",
        Outcome::Released => "released",
        Outcome::Changed => "left (changed)",
    }
}

impl Render for Removal {
    fn table(&self) -> String {
        let r = &self.released;
        if r.attachments.is_empty() {
            return format!("node {} holds nothing: nothing released\n", r.node);
        }
        let mut table = Table::new(&[
            "NETWORK",
            "CONTAINER",
            "IFNAME",
            "NAME",
            "ADDRESSES",
            "ALLOCATION",
            "ENDPOINT",
        ]);
        for a in &r.attachments {
            table.row(vec![
                a.network.clone(),
                model::names::short_id(&a.container_id),
                a.ifname.clone(),
                or_dash(a.name.as_ref()),
                if a.addresses.is_empty() {
                    "-".into()
                } else {
                    a.addresses.join(",")
                },
                outcome(a.allocation).into(),
                outcome(a.endpoint).into(),
            ]);
        }
        let mut out = table.render();
        out += &format!("released from node {}: {}\n", r.node, r.summary());
        let changed = r.changed().count();
        if changed > 0 {
            out += &format!(
                "left {changed} that changed since read (a new owner's now, or rewritten)\n"
            );
        }
        if self.alive {
            out += &format!(
                "node {} was alive (--force): its overlayd takes these containers off the overlay\n",
                r.node
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(40), "40s");
        assert_eq!(age(312), "5m12s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 86_400 + 4 * 3600 + 5), "3d4h");
    }
}
