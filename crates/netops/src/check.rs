//! The container side of CHECK, shared by the plugins: the interface prevResult names is in the
//! container, with prevResult's MAC, its addresses, and the routes through its gateways. What each
//! plugin owns beyond that (MTU, the host end, rules, records) it checks itself.

use cni::{CniResult, IpConfig};
use ipnetwork::IpNetwork;

use crate::error::Error;
use crate::link::{Link, Netlink};
use crate::mac::format_mac;

/// The container interface as CHECK found it.
#[derive(Debug)]
pub struct Checked {
    pub link: Link,
    /// Its index in prevResult's interfaces.
    pub index: usize,
    /// prevResult's addresses on it.
    pub ips: Vec<IpConfig>,
}

fn failed(msg: String) -> Error {
    Error::CheckFailed(msg)
}

/// Checks the container interface `ifname` (in the namespace `inside` is bound to) against
/// `prev`. Routes of prevResult through one of the interface's subnets must be on it with the
/// same destination and gateway; other routes may belong to later plugins of the chain.
pub async fn container_interface(
    inside: &Netlink,
    prev: &CniResult,
    ifname: &str,
) -> Result<Checked, Error> {
    let index = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && !i.sandbox.is_empty())
        .ok_or_else(|| failed(format!("prevResult has no container interface {ifname}")))?;
    let expected = &prev.interfaces[index];
    let link = inside
        .link(ifname)
        .await?
        .ok_or_else(|| failed(format!("interface {ifname} is missing in the container")))?;
    let mac = link.mac.map(|m| format_mac(&m)).unwrap_or_default();
    if !expected.mac.is_empty() && !expected.mac.eq_ignore_ascii_case(&mac) {
        return Err(failed(format!(
            "interface {ifname} has MAC {mac}, prevResult says {}",
            expected.mac
        )));
    }
    let ips: Vec<IpConfig> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(index))
        .cloned()
        .collect();
    let have = inside.addresses(link.index).await?;
    if let Some(missing) = ips.iter().find(|ip| !have.contains(&ip.address)) {
        return Err(failed(format!(
            "address {} is missing from {ifname}",
            missing.address
        )));
    }
    let routes = inside.routes(link.index).await?;
    for route in &prev.routes {
        let Some(gw) = route.gw else { continue };
        if !ips.iter().any(|ip| ip.address.contains(gw)) {
            continue;
        }
        let present = routes
            .iter()
            .any(|(dst, via)| same_network(dst, &route.dst) && *via == Some(gw));
        if !present {
            return Err(failed(format!(
                "route to {} via {gw} is missing on {ifname}",
                route.dst
            )));
        }
    }
    Ok(Checked { link, index, ips })
}

fn same_network(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.network() == b.network() && a.prefix() == b.prefix()
}
