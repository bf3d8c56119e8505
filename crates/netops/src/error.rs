//! The crate's one error type and its single mapping into a CNI error result.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use cni::{codes, CniError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path given as a network namespace is missing, or is not an nsfs file of type net.
    #[error("{} is not a network namespace", path.display())]
    NotANamespace { path: PathBuf },

    /// A device (or a namespace entry) of that name is already there and may not be reused.
    #[error("{name} already exists")]
    Exists { name: String },

    /// A system call or netlink request failed. `op` says what was attempted, `target` on what.
    #[error("{op} {target}: {source}")]
    Kernel {
        op: &'static str,
        target: String,
        #[source]
        source: io::Error,
    },

    /// An argument was refused before anything was sent to the kernel.
    #[error("{op} {target}: {reason}")]
    Invalid {
        op: &'static str,
        target: String,
        reason: String,
    },

    /// A lock file could not be made, opened or locked.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },

    /// CHECK found the attachment missing or different from prevResult.
    #[error("{0}")]
    CheckFailed(String),

    /// Another invocation held a lock longer than we wait.
    #[error("another invocation has held {what} for {} s", waited.as_secs())]
    Busy { what: String, waited: Duration },
}

impl Error {
    pub(crate) fn kernel(op: &'static str, target: impl Into<String>, source: io::Error) -> Error {
        Error::Kernel {
            op,
            target: target.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        op: &'static str,
        target: impl Into<String>,
        reason: impl Into<String>,
    ) -> Error {
        Error::Invalid {
            op,
            target: target.into(),
            reason: reason.into(),
        }
    }

    /// The errno behind a kernel failure, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl From<Error> for CniError {
    fn from(err: Error) -> CniError {
        match &err {
            Error::NotANamespace { .. } => CniError::invalid_env("CNI_NETNS", &err),
            Error::Exists { .. } => CniError::new(codes::INTERFACE_EXISTS, err.to_string()),
            Error::Kernel { .. } | Error::Invalid { .. } => {
                CniError::new(codes::KERNEL, err.to_string())
            }
            Error::Io { .. } => CniError::new(codes::IO_FAILURE, err.to_string()),
            Error::Busy { .. } => CniError::try_again(err.to_string()),
            Error::CheckFailed(_) => CniError::new(codes::CHECK_FAILED, err.to_string()),
        }
    }
}

/// Turns an rtnetlink failure into an io::Error, keeping the errno when the kernel sent one so
/// callers can tell EEXIST/ENODEV/ENOENT apart.
pub(crate) fn nl_io(err: rtnetlink::Error) -> io::Error {
    match err {
        rtnetlink::Error::NetlinkError(msg) if msg.raw_code() != 0 => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// The errno carried by an rtnetlink failure (positive), or None.
pub(crate) fn nl_errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) if msg.raw_code() != 0 => Some(msg.raw_code().abs()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_namespace_names_cni_netns() {
        let e: CniError = Error::NotANamespace {
            path: "/tmp/x".into(),
        }
        .into();
        assert_eq!(e.code, codes::INVALID_ENVIRONMENT);
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
        assert!(e.msg.contains("/tmp/x"), "{}", e.msg);
    }

    #[test]
    fn exists_is_interface_exists() {
        let e: CniError = Error::Exists {
            name: "eth0".into(),
        }
        .into();
        assert_eq!(e.code, codes::INTERFACE_EXISTS);
        assert!(e.msg.contains("eth0"));
    }

    #[test]
    fn kernel_names_operation_and_device() {
        let err = Error::kernel(
            "create bridge",
            "br0",
            io::Error::from_raw_os_error(libc_eperm()),
        );
        assert_eq!(err.errno(), Some(libc_eperm()));
        let e: CniError = err.into();
        assert_eq!(e.code, codes::KERNEL);
        assert!(
            e.msg.contains("create bridge") && e.msg.contains("br0"),
            "{}",
            e.msg
        );
        let e: CniError = Error::invalid("set sysctl", "a..b", "bad key").into();
        assert_eq!(e.code, codes::KERNEL);
    }

    fn libc_eperm() -> i32 {
        nix::libc::EPERM
    }
}
