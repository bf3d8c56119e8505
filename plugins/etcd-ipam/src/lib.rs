//! etcd-ipam: a CNI IPAM plugin that allocates addresses and reserves container names
//! cluster-wide, atomically, in etcd. See [`allocator`] for the design and `store` for the keys.

pub mod allocator;
pub mod config;

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;

use cni::{codes, CniError, CniResult, Plugin, Request};
use store::plugin::{etcd_status, ready_through_outage};
use store::Store;

use crate::allocator::Attachment;
use crate::config::{Conf, IpamConfig};

pub struct EtcdIpam;

/// Runs one verb: the configuration parsed (no I/O), then one store, one etcd connection
/// ([`store::plugin::run`]).
fn run<T, F>(req: &Request, work: impl FnOnce(IpamConfig, Store) -> F) -> Result<T, CniError>
where
    F: Future<Output = Result<T, CniError>>,
{
    store::plugin::run(Conf::parse(&req.conf)?, work)
}

impl Plugin for EtcdIpam {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        run(req, |cfg, mut store| async move {
            add(req, &cfg, &mut store).await
        })
    }

    /// Releases everything of (network, container id, ifname); success when nothing is held. With
    /// etcd unreachable it fails with 11 so that the runtime retries: it never reports success
    /// while the allocation stays.
    fn del(&self, req: &Request) -> Result<(), CniError> {
        run(req, |cfg, mut store| async move {
            del(req, &cfg, &mut store).await
        })
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let (cfg, allocation) = run(req, |cfg, mut store| async move {
            let allocation =
                allocator::get(&mut store, &cfg, &req.env.container_id, &req.env.ifname).await?;
            Ok((cfg, allocation))
        })?;
        let allocation = allocation.ok_or_else(|| {
            CniError::new(
                codes::CHECK_FAILED,
                format!(
                    "no allocation for {}/{} in network {}",
                    req.env.container_id, req.env.ifname, cfg.network
                ),
            )
        })?;
        let Some(prev) = &req.conf.prev_result else {
            return Ok(());
        };
        let expected: HashSet<IpAddr> = prev.ips.iter().map(|ip| ip.address.ip()).collect();
        for ip in &allocation.ips {
            if !expected.contains(&ip.address.ip()) {
                return Err(CniError::new(
                    codes::CHECK_FAILED,
                    format!("allocated address {} is not in prevResult", ip.address),
                ));
            }
        }
        // Every prevResult address inside our ranges must be ours (others may come from chained plugins).
        for ip in &prev.ips {
            let addr = ip.address.ip();
            let ours = cfg.pools.iter().any(|p| p.range_of(addr).is_some());
            if ours && !allocation.ips.iter().any(|a| a.address.ip() == addr) {
                return Err(CniError::new(
                    codes::CHECK_FAILED,
                    format!("prevResult address {addr} is not allocated to this container"),
                ));
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let valid: HashSet<(String, String)> = req
            .conf
            .valid_attachments
            .iter()
            .flatten()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        run(req, |cfg, mut store| async move {
            let released = allocator::gc(&mut store, &cfg, &valid).await?;
            log::info!(
                "GC released {released} allocations of node {} in network {}",
                cfg.node,
                cfg.network
            );
            Ok(())
        })
    }

    /// Ready while every range set has a free address; 50 otherwise, saying which. Ready, with a
    /// warning, while etcd does not answer (store::plugin::ready_through_outage says why).
    fn status(&self, req: &Request) -> Result<(), CniError> {
        let outcome = run(req, |cfg, mut store| async move {
            let usage = allocator::usage(&mut store, &cfg).await;
            Ok((cfg, usage))
        });
        let (cfg, usage) = match outcome {
            Ok(done) => done,
            Err(e) => return ready_through_outage(Err(e)),
        };
        let usage = match usage {
            Ok(usage) => usage,
            Err(e) => return etcd_status(Err(e)),
        };
        for (i, (used, capacity)) in usage.iter().enumerate() {
            if used >= capacity {
                let subnets: Vec<String> = cfg.pools[i]
                    .ranges
                    .iter()
                    .map(|r| r.subnet.to_string())
                    .collect();
                return Err(CniError::new(
                    codes::NOT_AVAILABLE,
                    format!(
                        "no free address: {used} of {capacity} in use in {} of network {}",
                        subnets.join(", "),
                        cfg.network
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// ADD as the binary makes it, for `req` (the configuration and environment the binary would be
/// given), on a store its caller holds: vxlan-overlay runs etcd-ipam in its own process, on its
/// own etcd connection (the configuration names one etcd for both: see
/// store::PluginSettings::from_netconf), instead of starting this binary for every container.
pub async fn add_on(req: &Request, store: &mut Store) -> Result<CniResult, CniError> {
    let cfg = store::plugin::complete(Conf::parse(&req.conf)?, store).await?;
    add(req, &cfg, store).await
}

/// The network whose allocation a DEL of `req` releases, by this plugin's configuration rule
/// (parsing only): for vxlan-overlay, which releases the allocation in the same etcd write as its
/// endpoint record (store::release::release_attachment).
pub fn del_network(req: &Request) -> Result<String, CniError> {
    Ok(Conf::parse(&req.conf)?.network)
}

/// DEL as the binary makes it, on a store its caller holds (see [`add_on`]).
pub async fn del_on(req: &Request, store: &mut Store) -> Result<(), CniError> {
    let cfg = store::plugin::complete(Conf::parse(&req.conf)?, store).await?;
    del(req, &cfg, store).await
}

async fn add(req: &Request, cfg: &IpamConfig, store: &mut Store) -> Result<CniResult, CniError> {
    let name = req.env.args.container_name()?;
    let requested = requested_ips(req)?;
    let attachment = Attachment {
        container_id: &req.env.container_id,
        ifname: &req.env.ifname,
        name: name.as_deref(),
    };
    let allocation = allocator::add(store, cfg, &attachment, &requested).await?;
    Ok(allocator::to_result(&allocation, cfg))
}

async fn del(req: &Request, cfg: &IpamConfig, store: &mut Store) -> Result<(), CniError> {
    allocator::release(
        store,
        &cfg.network,
        &cfg.node,
        &req.env.container_id,
        &req.env.ifname,
    )
    .await?;
    Ok(())
}

/// runtimeConfig.ips, args.cni.ips and CNI_ARGS IP=, in that order of precedence.
fn requested_ips(req: &Request) -> Result<Vec<IpAddr>, CniError> {
    let mut ips = req.conf.requested_ips();
    if ips.is_empty() {
        ips = req.env.args.requested_ips()?;
    }
    Ok(ips)
}
