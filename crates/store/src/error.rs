use cni::{codes, CniError};

/// How the message of [`StoreError::Unavailable`] starts: an outage, as STATUS tells it from
/// other errors of code 11 ([`crate::plugin::ready_through_outage`]).
pub const UNREACHABLE: &str = "etcd unreachable at ";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid etcd configuration: {0}")]
    Config(String),
    /// No endpoint answered within the time budget; `reasons` names each endpoint's last failure.
    /// Its message starts with [`UNREACHABLE`].
    #[error("etcd unreachable at {endpoints} within {timeout_ms} ms: {reasons}")]
    Unavailable {
        endpoints: String,
        timeout_ms: u64,
        reasons: String,
    },
    /// Every endpoint answered, but a certificate was refused on one side or the other: not
    /// worth retrying within the budget, and not to be mistaken for a dead etcd.
    #[error("etcd TLS handshake failed: {0}")]
    Handshake(String),
    /// etcd refused the credentials, or the user lacks a permission: the configuration's fault.
    #[error("{0}")]
    Auth(String),
    #[error("etcd refused the request: {0}")]
    Refused(String),
    #[error("reading {path}: {source}")]
    Tls {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt record at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// Other writers kept changing the records being worked on; a later attempt normally succeeds.
    #[error("{0}")]
    Contended(String),
    /// A watch ended, or went silent: whoever follows the prefix lists it again.
    #[error("the watch of {prefix} was lost: {reason}")]
    WatchLost { prefix: String, reason: String },

    // Refusals of `network create` and `network rm` ([`crate::networks`]); nothing was written.
    /// A value given that breaks the model's rules (a network name, a subnet, a VNI, an MTU).
    #[error("{0}")]
    Invalid(String),
    #[error("network {0} not found")]
    NetworkNotFound(String),
    #[error("network with name {0} already exists")]
    NetworkNameTaken(String),
    #[error("vni {vni} is already used by network {owner}")]
    VniTaken { vni: u32, owner: String },
    #[error("no free vni left between {first} and {last}")]
    VnisExhausted { first: u32, last: u32 },
    #[error("network {network} has {count} endpoint{plural} ({list}): remove the containers first", plural = if *.count == 1 { "" } else { "s" })]
    NetworkInUse {
        network: String,
        count: usize,
        list: String,
    },
}

impl From<StoreError> for CniError {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::Config(_) | StoreError::Tls { .. } | StoreError::Auth(_) => {
                codes::INVALID_CONFIG
            }
            // The runtime retries on 11: an unreachable etcd is transient by nature, and so may be
            // a certificate refused during a rotation. DEL must never pass while etcd is unusable.
            StoreError::Unavailable { .. }
            | StoreError::Handshake(_)
            | StoreError::WatchLost { .. }
            | StoreError::Contended(_) => codes::TRY_AGAIN_LATER,
            StoreError::Refused(_) | StoreError::Corrupt { .. } => codes::IO_FAILURE,
            // No plugin call manages networks; were one to, these are what its configuration asks.
            StoreError::Invalid(_)
            | StoreError::NetworkNameTaken(_)
            | StoreError::VniTaken { .. }
            | StoreError::VnisExhausted { .. }
            | StoreError::NetworkInUse { .. } => codes::INVALID_CONFIG,
            StoreError::NetworkNotFound(_) => codes::UNKNOWN_NETWORK,
        };
        CniError::new(code, e.to_string())
    }
}

/// The model's errors as the store reports them: a record that does not decode is corrupt (code
/// 5, as before records were typed).
impl From<model::Error> for StoreError {
    fn from(e: model::Error) -> Self {
        match e {
            model::Error::Corrupt { key, reason } => StoreError::Corrupt { key, reason },
            model::Error::Invalid(reason) => StoreError::Config(reason),
        }
    }
}
