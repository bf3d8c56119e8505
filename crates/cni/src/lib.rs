//! The CNI protocol, as the specification (SPEC.md, versions 0.3.0 to 1.1.0) and libcni define it.
//!
//! Plugins call [`skel::run`] with something that implements [`skel::Plugin`]; everything about
//! environment variables, stdin, version negotiation, result conversion and error printing lives here,
//! so that a plugin's `main.rs` only parses its own configuration and dispatches.

pub mod args;
pub mod config;
pub mod env;
pub mod error;
pub mod invoke;
pub mod result;
pub mod skel;
pub mod version;

pub use args::CniArgs;
pub use config::{Attachment, NetConf, PortMapping, RuntimeConfig};
pub use env::{Command, Environment};
pub use error::{codes, CniError};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use skel::{Plugin, Request};
pub use version::Version;
