//! `node ls`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use model::records::{Endpoint, Node};
use serde::Serialize;
use store::Store;

use super::decode_all;
use crate::error::Error;
use crate::output::{or_dash, yes_no, Render, Table};

pub async fn list(store: &mut Store) -> Result<Nodes, Error> {
    let keys = store.keys().clone();
    let nodes: Vec<Node> = decode_all(&store.get_prefix(&keys.nodes()).await?.0);
    let endpoints: Vec<Endpoint> = decode_all(&store.get_prefix(&keys.all_endpoints()).await?.0);

    let mut rows: BTreeMap<String, NodeView> = BTreeMap::new();
    // Node records live under overlayd's lease: one that exists is a live host.
    for n in nodes {
        rows.insert(
            n.name.clone(),
            NodeView {
                name: n.name,
                vtep: Some(n.vtep),
                alive: true,
                since: Some(n.since),
                endpoints: 0,
            },
        );
    }
    // A host whose overlayd is gone still has its containers' endpoint records: it is shown, not
    // alive, with the VTEP those records were written with.
    for e in endpoints {
        let row = rows.entry(e.node.clone()).or_insert_with(|| NodeView {
            name: e.node.clone(),
            vtep: None,
            alive: false,
            since: None,
            endpoints: 0,
        });
        row.endpoints += 1;
        if row.vtep.is_none() {
            row.vtep = Some(e.vtep);
        }
    }
    Ok(Nodes(rows.into_values().collect()))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    pub vtep: Option<IpAddr>,
    pub alive: bool,
    /// Unix seconds when the live overlayd registered.
    pub since: Option<u64>,
    /// Endpoint records on this node, across networks.
    pub endpoints: u64,
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Nodes(pub Vec<NodeView>);

impl Render for Nodes {
    fn table(&self) -> String {
        let mut table = Table::new(&["NAME", "VTEP", "ALIVE", "ENDPOINTS"]);
        for n in &self.0 {
            table.row(vec![
                n.name.clone(),
                or_dash(n.vtep.as_ref()),
                yes_no(n.alive),
                n.endpoints.to_string(),
            ]);
        }
        table.render()
    }
}
