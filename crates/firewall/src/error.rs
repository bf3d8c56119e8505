//! The crate's one error type, and its one mapping into CNI error codes.

use nftables::helper::NftablesError;

use crate::ports::Protocol;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host port and protocol already has a DNAT rule on this host.
    #[error("host port {port}/{protocol} is already published on this host by {holder}")]
    PortInUse {
        protocol: Protocol,
        port: u16,
        /// The tag of the rule's owner (`<network>:<container id>/<ifname>`).
        holder: String,
    },
    /// `nft` could not be run, or refused the request.
    #[error("nftables: {action}: {message}")]
    Nft { action: String, message: String },
}

impl Error {
    /// A failure of `nft` while doing `action`. When `nft` ran and refused, its own words are the
    /// message (stderr, or stdout when it wrote nothing there), without the crate's generic
    /// "did not return successfully" wrapper.
    pub(crate) fn nft(action: &str, err: NftablesError) -> Error {
        let message = match err {
            NftablesError::NftFailed { stderr, stdout, .. } => {
                let text = if stderr.trim().is_empty() {
                    stdout
                } else {
                    stderr
                };
                text.trim().to_string()
            }
            other => other.to_string(),
        };
        Error::Nft {
            action: action.to_string(),
            message,
        }
    }
}

/// The one mapping into CNI errors: a taken port is 106, every other failure 105.
impl From<Error> for cni::CniError {
    fn from(err: Error) -> cni::CniError {
        let code = match err {
            Error::PortInUse { .. } => cni::codes::PORT_IN_USE,
            Error::Nft { .. } => cni::codes::FIREWALL,
        };
        cni::CniError::new(code, err.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stdout: &str, stderr: &str) -> NftablesError {
        NftablesError::NftFailed {
            program: "nft".into(),
            hint: "applying ruleset".to_string(),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
        }
    }

    #[test]
    fn a_taken_port_is_cni_code_106_and_names_port_protocol_and_holder() {
        let err = Error::PortInUse {
            protocol: Protocol::Udp,
            port: 5353,
            holder: "demo:abc/gwb0".to_string(),
        };
        let cni: cni::CniError = err.into();
        assert_eq!(cni.code, cni::codes::PORT_IN_USE);
        assert_eq!(cni.code, 106);
        assert_eq!(
            cni.msg,
            "host port 5353/udp is already published on this host by demo:abc/gwb0"
        );
    }

    #[test]
    fn an_nft_failure_is_cni_code_105_with_the_action() {
        let cni: cni::CniError = Error::nft("publish 80/tcp for t", failed("", "boom")).into();
        assert_eq!(cni.code, cni::codes::FIREWALL);
        assert_eq!(cni.code, 105);
        assert_eq!(cni.msg, "nftables: publish 80/tcp for t: boom");
    }

    #[test]
    fn nft_refusals_are_told_in_nfts_own_words_stderr_first() {
        let message = |err: Error| match err {
            Error::Nft { message, .. } => message,
            other => panic!("not an nft error: {other:?}"),
        };
        assert_eq!(
            message(Error::nft(
                "a",
                failed("ignored", "\nError: No such file\n")
            )),
            "Error: No such file"
        );
        // nft writes some refusals on stdout only; an empty or blank stderr must not hide them.
        assert_eq!(
            message(Error::nft("a", failed("  out text \n", " \n\t"))),
            "out text"
        );
    }

    #[test]
    fn other_nft_errors_keep_the_crates_description() {
        let err = Error::nft(
            "list tables",
            NftablesError::NftExecution {
                program: "/nonexistent/nft".into(),
                inner: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
        );
        let text = err.to_string();
        assert!(
            text.starts_with("nftables: list tables: unable to execute"),
            "{text}"
        );
        assert!(text.contains("/nonexistent/nft"), "{text}");
    }
}
