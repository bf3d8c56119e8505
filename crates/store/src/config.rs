//! The `etcd` object of every plugin's configuration and of overlayd/overlayctl's options, and
//! the one rule by which a plugin finds its `etcd` and `node`.

use std::time::Duration;

use cni::{CniError, NetConf};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::StoreError;

pub const DEFAULT_PREFIX: &str = "/cni-overlay";
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The time budget of one plugin operation against etcd, retries on other endpoints included.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// What these settings are called where they were given, for the messages.
    #[serde(skip)]
    pub names: SettingNames,
}

/// What the etcd settings are called where an operator gave them, so that a message names the one
/// to change as it was written: the `etcd` object of a plugin's configuration
/// ([`SettingNames::CONF`], the default), or overlayd's and overlayctl's flags (`cli::FLAG_NAMES`,
/// beside the flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingNames {
    pub endpoints: &'static str,
    pub prefix: &'static str,
    pub timeout_ms: &'static str,
    pub username: &'static str,
    pub password: &'static str,
    /// What turns TLS on.
    pub tls: &'static str,
    pub tls_ca: &'static str,
    pub tls_cert: &'static str,
    pub tls_key: &'static str,
}

impl SettingNames {
    pub const CONF: SettingNames = SettingNames {
        endpoints: "etcd.endpoints",
        prefix: "etcd.prefix",
        timeout_ms: "etcd.timeoutMs",
        username: "etcd.username",
        password: "etcd.password",
        tls: "etcd.tls",
        tls_ca: "etcd.tls.ca",
        tls_cert: "etcd.tls.cert",
        tls_key: "etcd.tls.key",
    };
}

impl Default for SettingNames {
    fn default() -> Self {
        SettingNames::CONF
    }
}

/// PEM files: the CA that signed the etcd servers' certificates, and our client certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_string()
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: default_prefix(),
            tls: None,
            username: None,
            password: None,
            timeout_ms: default_timeout(),
            names: SettingNames::CONF,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<(), StoreError> {
        let names = &self.names;
        if self.endpoints.is_empty() {
            return Err(StoreError::Config(format!("{} is empty", names.endpoints)));
        }
        for ep in &self.endpoints {
            let rest = ep
                .strip_prefix("http://")
                .or_else(|| ep.strip_prefix("https://"))
                .unwrap_or(ep);
            let valid_port = rest.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid_port || rest.contains('/') {
                return Err(StoreError::Config(format!(
                    "etcd endpoint {ep:?} is not [http[s]://]host:port"
                )));
            }
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') || self.prefix.contains("//")
        {
            return Err(StoreError::Config(format!(
                "{} {:?} must start with / and not end with /",
                names.prefix, self.prefix
            )));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 600_000 {
            return Err(StoreError::Config(format!(
                "{} {} must be between 1 and 600000",
                names.timeout_ms, self.timeout_ms
            )));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(StoreError::Config(format!(
                "{} and {} go together",
                names.username, names.password
            )));
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(StoreError::Config(format!(
                    "{} and {} go together",
                    names.tls_cert, names.tls_key
                )));
            }
            // No system roots are built in: without the CA no server certificate can be trusted.
            if tls.ca.is_none() {
                return Err(StoreError::Config(format!(
                    "{} is required with TLS: the CA that signed the etcd servers' certificates",
                    names.tls_ca
                )));
            }
        }
        for ep in &self.endpoints {
            if self.tls.is_some() && ep.starts_with("http://") {
                return Err(StoreError::Config(format!(
                    "etcd endpoint {ep:?} is http:// but TLS is configured ({}): use https://",
                    names.tls
                )));
            }
            if self.tls.is_none() && ep.starts_with("https://") {
                return Err(StoreError::Config(format!(
                    "etcd endpoint {ep:?} is https:// but TLS is not configured: {} must \
                     name the CA that signed the etcd servers' certificates",
                    names.tls_ca
                )));
            }
        }
        Ok(())
    }

    /// Endpoint URLs with a scheme, as tonic wants them.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|ep| {
                if ep.contains("://") {
                    ep.clone()
                } else {
                    format!("{scheme}://{ep}")
                }
            })
            .collect()
    }
}

/// Where a plugin call keeps its state and who it is: `etcd` and `node`, as vxlan-overlay and
/// etcd-ipam both read them.
///
/// Each may sit in the plugin object or in its ipam section (delegation hands the IPAM plugin the
/// whole configuration, so both plugins see both). Given in both, the two must be the same: one
/// ADD must never put its endpoint record in one cluster and its allocation in another, nor
/// record two node names (GC, which goes by node, would miss half). `node` defaults to the
/// hostname. Reading them is pure: nothing connects here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSettings {
    pub etcd: EtcdConfig,
    pub node: String,
}

impl PluginSettings {
    pub fn from_netconf(conf: &NetConf) -> Result<PluginSettings, CniError> {
        let ipam = conf.ipam.as_ref();
        let outer: Option<EtcdConfig> = field(conf.raw.get("etcd"), "etcd")?;
        let inner: Option<EtcdConfig> = field(ipam.and_then(|i| i.get("etcd")), "ipam.etcd")?;
        let etcd = match (outer, inner) {
            (Some(outer), Some(inner)) => {
                same_etcd(&outer, &inner)?;
                outer
            }
            (outer, inner) => outer.or(inner).ok_or_else(|| {
                CniError::invalid_config(
                    "etcd.endpoints is required (in the plugin object or the ipam section)",
                )
            })?,
        };
        etcd.validate()?;

        let outer: Option<String> = field(conf.raw.get("node"), "node")?;
        let inner: Option<String> = field(ipam.and_then(|i| i.get("node")), "ipam.node")?;
        let node = match (outer, inner) {
            (Some(outer), Some(inner)) if outer != inner => {
                return Err(CniError::invalid_config(format!(
                    "node differs between the plugin object ({outer}) and the ipam section \
                     ({inner}): one ADD must use one node name"
                )))
            }
            (outer, inner) => match outer.or(inner) {
                Some(node) => node,
                None => hostname()?,
            },
        };
        model::types::check_node_name(&node)?;
        Ok(PluginSettings { etcd, node })
    }
}

/// A field that may be absent or null.
fn field<T: DeserializeOwned>(value: Option<&Value>, name: &str) -> Result<Option<T>, CniError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| CniError::decode(format!("{name}: {e}"))),
    }
}

/// The plugin object's and the ipam section's `etcd`, both given: they must name one cluster,
/// one key space, and connect the same way. Endpoints are compared as URLs, in any order.
fn same_etcd(outer: &EtcdConfig, inner: &EtcdConfig) -> Result<(), CniError> {
    let sorted = |c: &EtcdConfig| {
        let mut urls = c.urls();
        urls.sort();
        urls.dedup();
        urls
    };
    let differ = |what: &str, a: &str, b: &str, why: &str| {
        Err(CniError::invalid_config(format!(
            "etcd {what} between the plugin object ({a}) and the ipam section ({b}): {why}"
        )))
    };
    if sorted(outer) != sorted(inner) {
        return differ(
            "endpoints differ",
            &outer.endpoints.join(","),
            &inner.endpoints.join(","),
            "one ADD must use one cluster",
        );
    }
    if outer.prefix != inner.prefix {
        return differ(
            "prefix differs",
            &outer.prefix,
            &inner.prefix,
            "one ADD must use one key space",
        );
    }
    let connection = |c: &EtcdConfig| (c.tls.clone(), c.username.clone(), c.timeout_ms);
    if connection(outer) != connection(inner) || outer.password != inner.password {
        return Err(CniError::invalid_config(
            "etcd differs between the plugin object and the ipam section (tls, username, \
             password or timeoutMs): give etcd once, or the same in both",
        ));
    }
    Ok(())
}

fn hostname() -> Result<String, CniError> {
    nix::unistd::gethostname()
        .map_err(|e| {
            CniError::invalid_config(format!(
                "node is not set and the hostname cannot be read: {e}"
            ))
        })?
        .into_string()
        .map_err(|_| CniError::invalid_config("node is not set and the hostname is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<EtcdConfig, String> {
        let c: EtcdConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults() {
        let c = cfg(r#"{"endpoints": ["127.0.0.1:2379"]}"#).unwrap();
        assert_eq!(c.prefix, "/cni-overlay");
        assert_eq!(c.timeout_ms, 5000);
        assert_eq!(c.urls(), vec!["http://127.0.0.1:2379"]);
    }

    #[test]
    fn refuses_bad_values() {
        for bad in [
            r#"{"endpoints": []}"#,
            r#"{"endpoints": ["nohost"]}"#,
            r#"{"endpoints": ["h:0"]}"#,
            r#"{"endpoints": ["h:99999"]}"#,
            r#"{"endpoints": ["http://h:1/path"]}"#,
            r#"{"endpoints": ["h:1"], "prefix": "x"}"#,
            r#"{"endpoints": ["h:1"], "prefix": "/x/"}"#,
            r#"{"endpoints": ["h:1"], "timeoutMs": 0}"#,
            r#"{"endpoints": ["h:1"], "username": "u"}"#,
            r#"{"endpoints": ["h:1"], "tls": {"cert": "c"}}"#,
            r#"{"endpoints": ["h:1"], "tls": {"cert": "c", "key": "k"}}"#,
            r#"{"endpoints": ["http://h:1"], "tls": {"ca": "c"}}"#,
            r#"{"endpoints": ["https://h:1"]}"#,
            r#"{"endpoints": ["h:1"], "unknown": 1}"#,
            r#"{"endpoints": "h:1"}"#,
        ] {
            assert!(cfg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_means_https() {
        let c = cfg(r#"{"endpoints": ["h:2379"], "tls": {"ca": "/ca.pem"}}"#).unwrap();
        assert_eq!(c.urls(), vec!["https://h:2379"]);
        let c = cfg(
            r#"{"endpoints": ["https://h:2379", "[::1]:2379"], "tls": {"ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem"}}"#,
        )
        .unwrap();
        assert_eq!(c.urls(), vec!["https://h:2379", "https://[::1]:2379"]);
    }

    fn settings(top: Value, ipam: Value) -> Result<PluginSettings, CniError> {
        let mut conf = serde_json::json!({"cniVersion": "1.0.0", "name": "demo", "type": "vxlan-overlay", "ipam": ipam});
        for (k, v) in top.as_object().unwrap() {
            conf[k] = v.clone();
        }
        PluginSettings::from_netconf(&NetConf::parse(conf.to_string().as_bytes())?)
    }

    #[test]
    fn etcd_and_node_from_either_place() {
        use serde_json::json;
        let s = settings(
            json!({"etcd": {"endpoints": ["a:1"]}, "node": "outer"}),
            json!({"type": "etcd-ipam"}),
        )
        .unwrap();
        assert_eq!(
            (s.etcd.endpoints[0].as_str(), s.node.as_str()),
            ("a:1", "outer")
        );
        let s = settings(
            json!({"etcd": null, "node": null}),
            json!({"type": "etcd-ipam", "etcd": {"endpoints": ["b:1"]}, "node": "inner"}),
        )
        .unwrap();
        assert_eq!(
            (s.etcd.endpoints[0].as_str(), s.node.as_str()),
            ("b:1", "inner")
        );
        // Given twice, the same: fine (endpoints as URLs, in any order).
        let s = settings(
            json!({"etcd": {"endpoints": ["a:1", "b:1"]}, "node": "n"}),
            json!({"type": "etcd-ipam", "etcd": {"endpoints": ["http://b:1", "a:1"]}, "node": "n"}),
        )
        .unwrap();
        assert_eq!(s.etcd.endpoints, ["a:1", "b:1"]);
        // No node anywhere: the hostname.
        let s = settings(
            json!({"etcd": {"endpoints": ["a:1"]}}),
            json!({"type": "x"}),
        )
        .unwrap();
        assert_eq!(
            s.node,
            nix::unistd::gethostname().unwrap().into_string().unwrap()
        );
    }

    #[test]
    fn two_clusters_or_two_nodes_are_refused_naming_both() {
        use serde_json::json;
        let e = settings(
            json!({"etcd": {"endpoints": ["a:1"]}, "node": "n"}),
            json!({"type": "etcd-ipam", "etcd": {"endpoints": ["b:1"]}}),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert_eq!(
            e.msg,
            "etcd endpoints differ between the plugin object (a:1) and the ipam section (b:1): \
             one ADD must use one cluster"
        );
        let e = settings(
            json!({"etcd": {"endpoints": ["a:1"]}, "node": "n1"}),
            json!({"type": "etcd-ipam", "node": "n2"}),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert_eq!(
            e.msg,
            "node differs between the plugin object (n1) and the ipam section (n2): one ADD \
             must use one node name"
        );
        let e = settings(
            json!({"etcd": {"endpoints": ["a:1"], "prefix": "/x"}, "node": "n"}),
            json!({"type": "etcd-ipam", "etcd": {"endpoints": ["a:1"]}}),
        )
        .unwrap_err();
        assert!(
            e.msg.contains("(/x) and the ipam section (/cni-overlay)"),
            "{}",
            e.msg
        );
        let e = settings(
            json!({"etcd": {"endpoints": ["a:1"], "timeoutMs": 100}, "node": "n"}),
            json!({"type": "etcd-ipam", "etcd": {"endpoints": ["a:1"]}}),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
    }

    #[test]
    fn bad_etcd_or_node() {
        use serde_json::json;
        let code = |top: Value, ipam: Value| settings(top, ipam).unwrap_err().code;
        assert_eq!(
            code(json!({"node": "n"}), json!({"type": "x"})),
            7,
            "no etcd"
        );
        assert_eq!(
            code(
                json!({"etcd": {"endpoints": []}, "node": "n"}),
                json!({"type": "x"})
            ),
            7
        );
        assert_eq!(
            code(json!({"etcd": "a:1", "node": "n"}), json!({"type": "x"})),
            6
        );
        assert_eq!(
            code(json!({"node": "n"}), json!({"type": "x", "etcd": 5})),
            6
        );
        assert_eq!(
            code(
                json!({"etcd": {"endpoints": ["a:1"]}, "node": 5}),
                json!({"type": "x"})
            ),
            6
        );
        for bad in ["a b", "bad/node", ""] {
            assert_eq!(
                code(
                    json!({"etcd": {"endpoints": ["a:1"]}, "node": bad}),
                    json!({"type": "x"})
                ),
                7,
                "{bad}"
            );
            assert_eq!(
                code(
                    json!({"etcd": {"endpoints": ["a:1"]}}),
                    json!({"type": "x", "node": bad})
                ),
                7,
                "{bad}"
            );
        }
        let long = "n".repeat(201);
        assert_eq!(
            code(
                json!({"etcd": {"endpoints": ["a:1"]}}),
                json!({"type": "x", "node": long})
            ),
            7
        );
    }
}
