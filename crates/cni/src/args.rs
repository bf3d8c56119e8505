//! CNI_ARGS: `KEY=VALUE;KEY=VALUE`. Unknown keys are kept and ignored by callers (every runtime sends
//! `IgnoreUnknown=1`); a malformed pair is refused with code 4, as libcni's `LoadArgs` does.

use std::net::IpAddr;

use crate::error::CniError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(raw: &str) -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        for pair in raw.split(';') {
            // An empty segment (a trailing ';') carries nothing; libcni is stricter, we are lenient.
            if pair.is_empty() {
                continue;
            }
            let mut parts = pair.split('=');
            let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(CniError::invalid_env(
                    "CNI_ARGS",
                    format!("invalid pair {pair:?}"),
                ));
            };
            if key.is_empty() || key.chars().any(char::is_whitespace) {
                return Err(CniError::invalid_env(
                    "CNI_ARGS",
                    format!("invalid key in pair {pair:?}"),
                ));
            }
            pairs.push((key.to_string(), value.to_string()));
        }
        Ok(CniArgs { pairs })
    }

    /// The value of the last occurrence of `key`, if any and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The container's name: `K8S_POD_NAME` (podman puts the container name there, containerd the pod's).
    pub fn pod_name(&self) -> Option<&str> {
        self.get("K8S_POD_NAME")
    }

    /// Addresses requested with `IP=a[,b]` (podman, nerdctl; host-local reads the same key).
    pub fn requested_ips(&self) -> Result<Vec<IpAddr>, CniError> {
        let Some(list) = self.get("IP") else {
            return Ok(Vec::new());
        };
        list.split(',')
            .map(|s| {
                let s = s.trim();
                // Accept "10.0.0.5" and "10.0.0.5/24" alike; the prefix comes from the range.
                let addr = s.split('/').next().unwrap_or(s);
                addr.parse::<IpAddr>().map_err(|_| {
                    CniError::invalid_env("CNI_ARGS", format!("IP={s} is not an address"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_runtimes_send() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=test1;IP=10.0.0.9",
        )
        .unwrap();
        assert_eq!(a.pod_name(), Some("test1"));
        assert_eq!(a.get("K8S_POD_NAMESPACE"), Some("default"));
        assert_eq!(
            a.requested_ips().unwrap(),
            vec!["10.0.0.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(a.get("UNKNOWN"), None);
    }

    #[test]
    fn empty_and_trailing_separators_are_fine() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert_eq!(CniArgs::parse("A=1;").unwrap().get("A"), Some("1"));
        assert_eq!(CniArgs::parse("A=").unwrap().get("A"), None);
    }

    #[test]
    fn malformed_pairs_are_code_4_naming_cni_args() {
        for raw in ["A", "A=1=2", "=1", "A=1;B", "K 8=1"] {
            let e = CniArgs::parse(raw).unwrap_err();
            assert_eq!(e.code, 4, "{raw}");
            assert!(e.msg.contains("CNI_ARGS"), "{raw}: {}", e.msg);
        }
    }

    #[test]
    fn several_requested_ips() {
        let a = CniArgs::parse("IP=10.0.0.9/24,fd00::9").unwrap();
        assert_eq!(a.requested_ips().unwrap().len(), 2);
        assert_eq!(
            CniArgs::parse("IP=nope")
                .unwrap()
                .requested_ips()
                .unwrap_err()
                .code,
            4
        );
    }
}
