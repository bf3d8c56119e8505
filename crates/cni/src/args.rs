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

    /// `K8S_POD_NAME` as sent (podman puts the container name there, containerd's CRI the pod's).
    pub fn pod_name(&self) -> Option<&str> {
        self.get("K8S_POD_NAME")
    }

    /// The name a container is known by in its network (reserved by etcd-ipam, served by DNS):
    /// `K8S_POD_NAME`, qualified as `<pod>.<namespace>` when `K8S_POD_NAMESPACE` is given.
    /// Kubernetes pod names are unique only within a namespace, so two pods `web` in `prod` and
    /// `dev` are two names (`web.prod`, `web.dev`), as Kubernetes' own DNS qualifies them; podman
    /// sends no namespace and its container names stay as they are.
    ///
    /// Any name a runtime accepts is accepted, whatever its length (Kubernetes takes pod names of
    /// up to 253 characters): it is reserved for uniqueness, and served by DNS only if it can be a
    /// DNS name (`model::names::dns_unservable`). Refused with code 4 only what no runtime sends
    /// and what would break an etcd key segment: `/`, control characters (see [`check_name`]).
    pub fn container_name(&self) -> Result<Option<String>, CniError> {
        let Some(pod) = self.pod_name() else {
            return Ok(None);
        };
        check_name("K8S_POD_NAME", pod)?;
        let name = match self.get("K8S_POD_NAMESPACE") {
            Some(namespace) => {
                check_name("K8S_POD_NAMESPACE", namespace)?;
                format!("{pod}.{namespace}")
            }
            None => pod.to_string(),
        };
        Ok(Some(name))
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

/// A name (or namespace) is one segment of an etcd key (`ipam/<net>/names/<name>`): no `/`, and
/// no control characters, which no runtime sends. An empty value is no name at all ([`CniArgs::get`]).
fn check_name(key: &str, value: &str) -> Result<(), CniError> {
    let valid = !value.is_empty() && !value.chars().any(|c| c == '/' || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(CniError::invalid_env(
            "CNI_ARGS",
            format!("{key} {value:?} is not a valid name"),
        ))
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
    fn container_names_are_qualified_by_the_kubernetes_namespace() {
        let name = |raw: &str| CniArgs::parse(raw).unwrap().container_name();
        assert_eq!(name("IgnoreUnknown=1").unwrap(), None);
        assert_eq!(
            name("K8S_POD_NAME=test1").unwrap().as_deref(),
            Some("test1")
        );
        assert_eq!(
            name("K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0")
                .unwrap()
                .as_deref(),
            Some("web-0.prod")
        );
        // A namespace alone names nothing.
        assert_eq!(name("K8S_POD_NAMESPACE=prod").unwrap(), None);
        for bad in [
            "K8S_POD_NAME=a/b",
            "K8S_POD_NAME=web;K8S_POD_NAMESPACE=a/b",
            "K8S_POD_NAME=a\u{1}b",
            "K8S_POD_NAME=web;K8S_POD_NAMESPACE=prod\n",
            "K8S_POD_NAME=tab\there",
        ] {
            let e = name(bad).unwrap_err();
            assert_eq!(e.code, crate::codes::INVALID_ENVIRONMENT, "{bad}");
            assert!(e.msg.starts_with("CNI_ARGS: K8S_POD_"), "{bad}: {}", e.msg);
        }
    }

    #[test]
    fn any_name_a_runtime_accepts_is_accepted() {
        let name = |raw: &str| CniArgs::parse(raw).unwrap().container_name().unwrap();
        // Kubernetes: pod names up to 253 characters, in a namespace.
        let pod = "y".repeat(250);
        assert_eq!(
            name(&format!("K8S_POD_NAME={pod};K8S_POD_NAMESPACE=prod")),
            Some(format!("{pod}.prod"))
        );
        assert_eq!(
            name(&format!("K8S_POD_NAME={}", "x".repeat(100))),
            Some("x".repeat(100))
        );
        // podman's rule, [a-zA-Z0-9][a-zA-Z0-9_.-]*, takes these; DNS will not serve them all.
        for ok in ["a..b", "web.", "A_b-c.d", "0"] {
            assert_eq!(name(&format!("K8S_POD_NAME={ok}")).as_deref(), Some(ok));
        }
        // No runtime sends these, but they break no key either.
        assert_eq!(name("K8S_POD_NAME=bad name!").as_deref(), Some("bad name!"));
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
