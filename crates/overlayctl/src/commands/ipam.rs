//! `ipam usage`.

use serde::Serialize;
use store::{networks, Store};

use model::addressing::Addressing;

use crate::error::Error;
use crate::output::{or_dash, Render, Table};

pub async fn usage(store: &mut Store, name: Option<&str>) -> Result<Usage, Error> {
    let networks = match name {
        Some(name) => vec![networks::read(store, name).await?.0],
        None => networks::list(store).await?,
    };
    let keys = store.keys().clone();
    let mut rows = Vec::new();
    let mut ranges = Vec::new();
    for n in &networks {
        let addressing = Addressing::of(n);
        let handed_out = match addressing.ranges() {
            Ok(handed_out) => handed_out,
            Err(e) if name.is_none() => {
                log::warn!("network {}: {e}; left out", n.name);
                continue;
            }
            Err(e) => return Err(Error::Invalid(format!("network {}: {e}", n.name))),
        };
        for r in handed_out {
            // Address keys are fixed-width hex, so the keys of a range's addresses are exactly
            // the keys from its first address's to its last's: etcd counts them, nothing is sent.
            let mut end = keys.ip(&n.name, r.end).into_bytes();
            end.push(0);
            ranges.push((keys.ip(&n.name, r.start), end));
            let total = r.capacity(&[]);
            rows.push(RangeUsage {
                network: n.name.clone(),
                subnet: r.subnet.to_string(),
                ip_range: addressing.ip_range_of(&r.subnet).map(|x| x.to_string()),
                range_start: r.start.to_string(),
                range_end: r.end.to_string(),
                used: 0,
                free: total,
                total,
            });
        }
    }
    let counts = store.count_ranges(&ranges).await?;
    for (row, used) in rows.iter_mut().zip(counts) {
        row.used = u128::from(used);
        // A key on the gateway (written by hand) would make used exceed the total.
        row.free = row.total.saturating_sub(row.used);
    }
    Ok(Usage(rows))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeUsage {
    pub network: String,
    pub subnet: String,
    pub ip_range: Option<String>,
    /// First and last address of the range, as etcd-ipam hands them out.
    pub range_start: String,
    pub range_end: String,
    pub used: u128,
    pub free: u128,
    pub total: u128,
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Usage(pub Vec<RangeUsage>);

impl Render for Usage {
    fn table(&self) -> String {
        let mut table = Table::new(&["NETWORK", "SUBNET", "IP-RANGE", "USED", "FREE", "TOTAL"]);
        for r in &self.0 {
            table.row(vec![
                r.network.clone(),
                r.subnet.clone(),
                or_dash(r.ip_range.as_ref()),
                r.used.to_string(),
                r.free.to_string(),
                r.total.to_string(),
            ]);
        }
        table.render()
    }
}
