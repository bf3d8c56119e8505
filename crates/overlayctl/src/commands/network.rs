//! `network create | ls | inspect | rm`.

use std::net::IpAddr;

use model::network::NetworkRequest;
use model::records::Network;
use model::Mac;
use serde::Serialize;
use store::client::prefix_range;
use store::{networks, Store};

use crate::cli::CreateArgs;
use crate::error::Error;
use crate::output::{fields, joined, or_dash, utc, yes_no, Render, Table};

pub async fn create(store: &mut Store, args: &CreateArgs) -> Result<Created, Error> {
    let request = NetworkRequest {
        name: args.name.clone(),
        subnets: args.subnet.clone(),
        gateways: args.gateway.clone(),
        ip_range: args.ip_range.clone(),
        vni: args.vni.clone(),
        mtu: args.mtu.clone(),
        internal: args.internal,
        host_access: args.host_access,
    };
    Ok(Created(networks::create(store, &request).await?))
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

pub async fn list(store: &mut Store) -> Result<Networks, Error> {
    let networks = networks::list(store).await?;
    let keys = store.keys().clone();
    let ranges: Vec<_> = networks
        .iter()
        .map(|n| prefix_range(&keys.endpoints(&n.name)))
        .collect();
    let counts = store.count_ranges(&ranges).await?;
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

pub async fn inspect(store: &mut Store, name: &str) -> Result<Inspection, Error> {
    let (network, _) = networks::read(store, name).await?;
    let mut endpoints = networks::endpoints(store, name).await?;
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
                    model::names::short_id(&e.container_id),
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
    Ok(Removed(networks::remove(store, name).await?))
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Removed(pub Network);

impl Render for Removed {
    fn table(&self) -> String {
        format!("removed network {} (vni {})\n", self.0.name, self.0.vni)
    }
}
