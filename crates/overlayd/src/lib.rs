//! overlayd, the per-host agent of cni-overlay.
//!
//! * [`registration`]: the node record `nodes/<node>` under an etcd lease, kept alive, so that a
//!   host that dies drops out of `overlayctl node ls` when its lease expires.
//! * [`watch`]: lists and watches the endpoint records into the [`endpoints::EndpointCache`].
//! * [`peers`]: one consumer of that cache; it keeps the static FDB and neighbour entries of this
//!   host's VXLAN devices (`ovx<vni>`) equal to the endpoints of the other hosts.
//! * [`metrics`] and [`http`]: liveness, readiness and Prometheus metrics on `--metrics-addr`.
//! * [`dns`]: another consumer; per network with a container on this host, a DNS server at the
//!   gateway address answering the names of the network's containers on every host.
//! * [`reclaim`]: one overlayd at a time, elected through etcd, releases what a node holds once
//!   its lease has been gone for `--reclaim-after`.
//! * [`stale`]: this host's attachments released while it was gone are taken off the overlay.
//!
//! The vxlan-overlay plugin programs every remote endpoint that exists when it creates a
//! network's VXLAN device, so overlayd only follows changes (plus a full reconciliation at start,
//! after a lost watch, and every 30 s as a backstop). Later consumers of the endpoint records (a
//! DNS server per network, a conflist writer) subscribe to the same cache.
//!
//! * [`docker`] (`--docker-plugin`): a Docker network and IPAM driver on the same records, and
//!   the host's Docker networks kept equal to etcd's.
//!
//! [`install`] is `overlayd install-cni`, a command of its own: the plugins and the pod network's
//! conflist onto a node (the Kubernetes DaemonSet's init step).

pub mod cli;
pub mod conflists;
pub mod daemon;
pub mod dns;
pub mod docker;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod install;
pub mod metrics;
pub mod peers;
pub mod reclaim;
pub mod registration;
pub mod retry;
pub mod stale;
pub mod watch;

pub use error::Error;
