//! The overlay's model, shared by the plugins, overlayd, overlayctl and the tests: what the parts
//! agree on, in one place.
//!
//! * [`types`]: VNIs, MACs, MTUs and their limits; node and network names; the VXLAN constants.
//! * [`records`]: the JSON records kept in etcd, typed, in the exact shape existing data has.
//! * [`names`]: every name the plugins give to what they make (devices, sandboxes, aliases, locks,
//!   conflists, the DNS domain), and the way back from a name to what it names.
//! * [`addressing`]: address arithmetic, ranges and range sets (etcd-ipam's pools), a network
//!   record's range sets, and the checks of `overlayctl network create`.
//! * [`network`]: what `network create` is given, the record it makes of it, the choice of a VNI.
//! * [`peers`]: the FDB and neighbour entries an endpoint of another host needs on a VXLAN
//!   device, and the plan that brings a device there.
//!
//! Pure: no I/O, no runtime, no etcd. The store, netops and the binaries build on it.

pub mod addressing;
pub mod error;
pub mod names;
pub mod network;
pub mod peers;
pub mod records;
pub mod types;

mod text;

pub use error::Error;
pub use types::{Mac, Mtu, Vni};
