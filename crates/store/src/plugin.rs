//! One plugin call against etcd, the same shape for every plugin: the configuration parsed (no
//! I/O), one [`Store`] (one connection, one login with authentication), the network's record read
//! when the configuration leaves something to it, then the work on that same store.

use std::future::Future;

use cni::{codes, CniError};
use model::records::Network;

use crate::client::Store;
use crate::config::PluginSettings;
use crate::error::{StoreError, UNREACHABLE};

/// A plugin's configuration as given, before the network's record completes it.
pub trait PluginConf: Sized {
    /// The configuration the work runs with.
    type Complete;
    fn settings(&self) -> &PluginSettings;
    fn network(&self) -> &str;
    /// Whether the configuration leaves something to the network's record.
    fn needs_record(&self) -> bool;
    /// The configuration completed with `record` (read when [`PluginConf::needs_record`]).
    fn complete(self, record: Option<&Network>) -> Result<Self::Complete, CniError>;
}

/// Runs `work` on the completed configuration and the call's one store.
pub fn run<C, T, F>(conf: C, work: impl FnOnce(C::Complete, Store) -> F) -> Result<T, CniError>
where
    C: PluginConf,
    F: Future<Output = Result<T, CniError>>,
{
    let mut store = Store::new(conf.settings().etcd.clone())?;
    cni::skel::block_on(async move {
        let cfg = complete(conf, &mut store).await?;
        work(cfg, store).await
    })?
}

/// The configuration completed on `store`: the network's record read when the configuration
/// leaves something to it. For a plugin that runs another's work on its own store (vxlan-overlay
/// and etcd-ipam, see etcd_ipam::add_on).
pub async fn complete<C: PluginConf>(conf: C, store: &mut Store) -> Result<C::Complete, CniError> {
    let record = match conf.needs_record() {
        true => store.network(conf.network()).await?,
        false => None,
    };
    conf.complete(record.as_ref())
}

/// STATUS's verdict on a call that failed: ready when no etcd endpoint answered within
/// `timeoutMs` (an outage), not ready (50, or the call's own code) otherwise.
///
/// STATUS is how containerd ≥ 2.1 decides the node's network readiness: a failing STATUS makes
/// the kubelet report the node NotReady, the node controller then marks every pod of the node
/// NotReady (so they leave every Service's endpoints) and the kubelet stops starting and
/// restarting the node's containers. etcd is one for the whole cluster, so an outage would do
/// that to every node at once, while the data plane (devices, forwarding entries, DNS from
/// overlayd's last snapshot) works on and restarting a container in a running pod needs no CNI
/// call at all; ADD meanwhile fails with 11 (try again later), which the runtime retries by
/// itself. So STATUS fails only for what someone must fix: a wrong configuration, credentials or
/// certificates etcd refuses, a network without a record, a full pool, a missing IPAM plugin.
/// An outage is logged as a warning (containerd logs a plugin's stderr).
pub fn ready_through_outage(result: Result<(), CniError>) -> Result<(), CniError> {
    match result {
        Err(e) if e.code == codes::TRY_AGAIN_LATER && e.msg.starts_with(UNREACHABLE) => {
            log::warn!("STATUS: ready although {}", e.msg);
            Ok(())
        }
        // A refused TLS handshake is not an outage: this node's certificates need fixing.
        Err(e) if e.code == codes::TRY_AGAIN_LATER => {
            Err(CniError::new(codes::NOT_AVAILABLE, e.msg))
        }
        other => other,
    }
}

/// STATUS's verdict on an etcd request: an outage is [`ready_through_outage`]; any other
/// failure is code 50 (not available) naming it.
pub fn etcd_status(result: Result<(), StoreError>) -> Result<(), CniError> {
    match result {
        Ok(()) => Ok(()),
        Err(e @ StoreError::Unavailable { .. }) => ready_through_outage(Err(e.into())),
        Err(e) => Err(CniError::new(
            codes::NOT_AVAILABLE,
            format!("etcd is not available: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> StoreError {
        StoreError::Unavailable {
            endpoints: "http://192.0.2.1:2379".into(),
            timeout_ms: 1000,
            reasons: "timed out".into(),
        }
    }

    #[test]
    fn an_outage_is_ready_anything_else_is_not() {
        assert!(etcd_status(Ok(())).is_ok());
        assert!(etcd_status(Err(unavailable())).is_ok());
        // Met while reading the network's record: the same error as a CniError.
        assert!(ready_through_outage(Err(unavailable().into())).is_ok());
        let handshake = StoreError::Handshake("etcd refused our client certificate".into());
        assert_eq!(
            etcd_status(Err(handshake)).unwrap_err().code,
            codes::NOT_AVAILABLE
        );
        let handshake: CniError = StoreError::Handshake("x".into()).into();
        assert_eq!(
            ready_through_outage(Err(handshake)).unwrap_err().code,
            codes::NOT_AVAILABLE
        );
        let auth = StoreError::Auth("etcd refused the credentials of user u".into());
        assert_eq!(
            etcd_status(Err(auth)).unwrap_err().code,
            codes::NOT_AVAILABLE
        );
        let no_record = CniError::new(108, "network demo has no record");
        assert_eq!(ready_through_outage(Err(no_record)).unwrap_err().code, 108);
    }
}
