//! The IPAM delegate of ADD and DEL (DEL releases the endpoint record with the addresses).
//! etcd-ipam, this project's IPAM, runs in this process on this call's etcd connection (its
//! library, the same code as its binary, given the same configuration and environment): no second
//! process and no second connection for every container, which was the largest part of
//! vxlan-overlay's own cost in `scripts/bench.sh chain`. Any other IPAM plugin is run from
//! CNI_PATH as the spec describes. (CHECK, GC and STATUS, which no container waits for, always run
//! the delegate's binary.)

use cni::{CniError, CniResult, Command, Request};
use store::release::release_attachment;
use store::Store;

use crate::config::OverlayConfig;
use crate::peers;

/// The IPAM type that runs in this process.
pub const IN_PROCESS: &str = "etcd-ipam";

/// ADD; when it fails, DEL before the error is returned (the spec's delegation rule, as
/// [`cni::invoke::add`] does for a delegate's binary).
pub async fn add(
    cfg: &OverlayConfig,
    req: &Request,
    store: &mut Store,
) -> Result<CniResult, CniError> {
    if cfg.ipam_type != IN_PROCESS {
        return cni::invoke::add(&cfg.ipam_type, &req.env.path, &req.conf.bytes);
    }
    match etcd_ipam::add_on(req, store).await {
        Ok(result) => Ok(result),
        Err(e) => {
            // Within the same bound as a delegate's binary gets (see the constant): an ADD that
            // failed for an etcd out of reach must not spend a second timeoutMs on this DEL.
            let within = cni::invoke::DEL_AFTER_FAILED_ADD_WITHIN;
            match tokio::time::timeout(within, etcd_ipam::del_on(req, store)).await {
                Ok(Ok(())) => {}
                Ok(Err(undo)) => log::warn!("IPAM DEL after a failed IPAM ADD: {undo}"),
                Err(_) => log::warn!(
                    "IPAM DEL after a failed IPAM ADD stopped after {} ms",
                    within.as_millis()
                ),
            }
            Err(e)
        }
    }
}

/// DEL's etcd part: the endpoint record, then the addresses. With etcd-ipam in this process both
/// go in one etcd write (one revision: store::release::release_attachment, each by its own rule);
/// another IPAM plugin's binary is run after the record is gone. With etcd unreachable this
/// fails (code 11), so that the runtime retries.
pub async fn release(
    cfg: &OverlayConfig,
    req: &Request,
    store: &mut Store,
) -> Result<(), CniError> {
    let (container_id, ifname) = (&req.env.container_id, &req.env.ifname);
    if cfg.ipam_type != IN_PROCESS {
        peers::remove(store, cfg, container_id, ifname).await?;
        return cni::invoke::run(&cfg.ipam_type, Command::Del, &req.env.path, &req.conf.bytes);
    }
    let ipam_network = etcd_ipam::del_network(req)?;
    let (network, node) = (&cfg.network, &cfg.node);
    release_attachment(store, network, &ipam_network, container_id, ifname, node).await?;
    Ok(())
}
