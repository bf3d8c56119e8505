//! The suite's shared state in etcd.
//!
//! Key layout (under `prefix`, default `/cni-overlay`); every value is JSON:
//!
//! | key | value ([`model::records`]) | written by |
//! |---|---|---|
//! | `ipam/<net>/ips/4/<8 hex>` and `ipam/<net>/ips/6/<32 hex>` | `Holder` | etcd-ipam, in the claim txn |
//! | `ipam/<net>/names/<name>` | `Holder` | etcd-ipam, in the same txn |
//! | `ipam/<net>/owners/<container id>/<ifname>` | `Allocation` | etcd-ipam, in the same txn |
//! | `ipam/<net>/cursor/<range set>` | last address handed out (a hint, never compared) | etcd-ipam |
//! | `endpoints/<net>/<container id>/<ifname>` | `Endpoint` | vxlan-overlay |
//! | `nodes/<node>` | `Node`, under a lease | overlayd |
//! | `gone/<node>` | `Gone`: since when the node has had no lease | overlayd's elected reclaimer |
//! | `reclaimer` | `Reclaimer`, under its lease | overlayd's elected reclaimer |
//! | `networks/<net>` and `vnis/<vni>` | `Network`, network name | [`networks`]: overlayctl, overlayd's Docker driver |
//!
//! Addresses are keyed by their number in fixed-width hex so that a key range read returns them in
//! address order: the allocator reads a window of keys after a cursor instead of the whole pool.

#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod keys;
pub mod networks;
pub mod nodes;
pub mod plugin;
pub mod release;
pub mod watch;

pub use client::Store;
pub use config::{EtcdConfig, PluginSettings, TlsFiles};
pub use error::StoreError;
pub use keys::Keys;
pub use watch::Follower;

/// Re-exported so that callers build transactions with the same types the store runs.
pub use etcd_client;
