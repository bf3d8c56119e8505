//! One plugin call against etcd, the same shape for every plugin: the configuration parsed (no
//! I/O), one [`Store`] (one connection, one login with authentication), the network's record read
//! when the configuration leaves something to it, then the work on that same store.

use std::future::Future;

use cni::CniError;
use model::records::Network;

use crate::client::Store;
use crate::config::PluginSettings;

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
        let record = match conf.needs_record() {
            true => store.network(conf.network()).await?,
            false => None,
        };
        let cfg = conf.complete(record.as_ref())?;
        work(cfg, store).await
    })?
}
