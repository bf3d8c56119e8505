//! Netlink and network-namespace operations for the cni-overlay plugins: namespaces, links
//! (bridge, VXLAN, veth), addresses, routes, FDB and neighbour entries, sysctls, and the per-host
//! locks between plugin invocations.
//!
//! Every async function runs on a tokio runtime with IO enabled (the plugins use a
//! current_thread one). No thread of the caller ever changes network namespace: work inside
//! another namespace happens on a short-lived thread ([`Netns::run`]) or through a netlink
//! socket opened there ([`Netlink::in_netns`]).

mod addr;
pub mod check;
mod error;
mod link;
mod lock;
mod mac;
mod neigh;
mod netns;
mod sysctl;

pub use error::Error;
pub use link::{Link, LinkEvents, Netlink, VethPeer};
pub use lock::HostLock;
pub use neigh::{NeighbourChange, NeighbourEvents};
pub use netns::{create_named_netns, delete_named_netns, named_netns_path, Netns, NETNS_RUN_DIR};
pub use sysctl::{get_sysctl, set_sysctl};
