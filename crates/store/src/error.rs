use cni::{codes, CniError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid etcd configuration: {0}")]
    Config(String),
    #[error("etcd unreachable at {endpoints} within {timeout_ms} ms: {last}")]
    Unavailable {
        endpoints: String,
        timeout_ms: u64,
        last: String,
    },
    #[error("etcd refused the request: {0}")]
    Refused(String),
    #[error("reading {path}: {source}")]
    Tls {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt record at {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

impl From<StoreError> for CniError {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::Config(_) | StoreError::Tls { .. } => codes::INVALID_CONFIG,
            // The runtime retries on 11; an unreachable etcd is transient by nature.
            StoreError::Unavailable { .. } => codes::TRY_AGAIN_LATER,
            StoreError::Refused(_) | StoreError::Corrupt { .. } => codes::IO_FAILURE,
        };
        CniError::new(code, e.to_string())
    }
}
