//! The crate's one error type.

use std::io;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Command-line values that cannot work; overlayd exits instead of retrying.
    #[error("{0}")]
    Config(String),

    /// etcd through the store (with failover and a time budget).
    #[error(transparent)]
    Store(#[from] store::StoreError),

    /// etcd through a stream (watch, lease keep-alive) that the store does not wrap.
    #[error("etcd: {0}")]
    Etcd(#[from] store::etcd_client::Error),

    /// A stream answered nothing, or ended, where an answer was due.
    #[error("etcd: {0}")]
    Stream(String),

    #[error(transparent)]
    Net(#[from] netops::Error),

    #[error("installing the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: io::Error,
    },

    /// A network's DNS server cannot be set up (yet): no sandbox, no gateway address...
    /// Retried; never fatal.
    #[error("DNS: {0}")]
    Dns(String),

    #[error("DNS: binding {address}: {source}")]
    DnsSocket {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },

    #[error("metrics endpoint: binding {address}: {source}")]
    MetricsSocket {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },

    /// A long-running part stopped although it only ever should on shutdown.
    #[error("{task} stopped unexpectedly: {reason}")]
    Task { task: &'static str, reason: String },
}
