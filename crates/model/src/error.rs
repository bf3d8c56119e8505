//! The crate's one error type, mapped once to CNI codes.

use cni::{codes, CniError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A value that breaks one of the model's rules (a VNI out of range, a bad name, a range
    /// that cannot be handed out of): the configuration's fault, code 7.
    #[error("{0}")]
    Invalid(String),
    /// A record in etcd that does not decode: code 5, as the store has always reported it.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }
}

impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::Invalid(_) => codes::INVALID_CONFIG,
            Error::Corrupt { .. } => codes::IO_FAILURE,
        };
        CniError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(CniError::from(Error::invalid("x")).code, 7);
        let corrupt = CniError::from(Error::Corrupt {
            key: "/k".into(),
            reason: "r".into(),
        });
        assert_eq!(
            (corrupt.code, corrupt.msg.as_str()),
            (5, "corrupt record at /k: r")
        );
    }
}
