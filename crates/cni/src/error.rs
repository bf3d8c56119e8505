//! The CNI error result and the codes of the specification and of this suite.

use serde_json::json;

/// Error codes. 1-99 are the specification's; 100 and up are this suite's (listed in the README).
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;

    /// The container name is held by another container in the network.
    pub const NAME_IN_USE: u32 = 100;
    /// No free address is left in a range set.
    pub const POOL_EXHAUSTED: u32 = 101;
    /// A requested address is held by another container or lies outside every range.
    pub const ADDRESS_UNAVAILABLE: u32 = 102;
    /// The interface named by CNI_IFNAME already exists in the container.
    pub const INTERFACE_EXISTS: u32 = 103;
    /// A kernel operation (netlink, namespace, sysctl) failed.
    pub const KERNEL: u32 = 104;
    /// An nftables operation failed.
    pub const FIREWALL: u32 = 105;
    /// A host port is already published on this host.
    pub const PORT_IN_USE: u32 = 106;
    /// CHECK found the attachment different from prevResult or missing.
    pub const CHECK_FAILED: u32 = 107;
    /// The network named by the configuration has no record in etcd.
    pub const UNKNOWN_NETWORK: u32 = 108;
    /// A delegated plugin failed without a readable CNI error.
    pub const DELEGATE_FAILED: u32 = 109;
    /// A bug: the plugin panicked. It is reported instead of a crash so stdout stays valid JSON.
    pub const INTERNAL: u32 = 199;
}

/// A CNI error result: printed as `{cniVersion, code, msg, details}` on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {code}{})", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(codes::INVALID_CONFIG, msg)
    }

    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(codes::DECODING_FAILURE, msg)
    }

    /// Code 4; the message must name the variable.
    pub fn invalid_env(variable: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(codes::INVALID_ENVIRONMENT, format!("{variable}: {problem}"))
    }

    /// Code 2; the message must name the key and its value.
    pub fn unsupported_field(key: &str, value: impl std::fmt::Display) -> Self {
        Self::new(
            codes::UNSUPPORTED_FIELD,
            format!("unsupported value {value} for field {key}"),
        )
    }

    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(codes::TRY_AGAIN_LATER, msg)
    }

    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }

    /// Reads an error result printed by another plugin.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let code = value.get("code")?.as_u64()?;
        let msg = value
            .get("msg")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        let details = value
            .get("details")
            .and_then(|d| d.as_str())
            .unwrap_or_default();
        Some(CniError {
            code: u32::try_from(code).ok()?,
            msg: msg.to_string(),
            details: details.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_all_four_fields() {
        let e = CniError::invalid_env("CNI_IFNAME", "is empty");
        let v = e.to_json("0.4.0");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "CNI_IFNAME: is empty");
        assert_eq!(v["details"], "");
    }

    #[test]
    fn reads_back_what_it_prints() {
        let e = CniError::new(
            codes::NAME_IN_USE,
            "endpoint with name a already exists in network n",
        )
        .with_details("x");
        assert_eq!(CniError::from_json(&e.to_json("1.0.0")), Some(e));
        assert_eq!(
            CniError::from_json(&serde_json::json!({"msg": "no code"})),
            None
        );
    }
}
