//! The `etcd` object of every plugin's configuration and of overlayd/overlayctl's options.

use std::time::Duration;

use serde::Deserialize;

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
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.endpoints.is_empty() {
            return Err(StoreError::Config("etcd.endpoints is empty".into()));
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
                "etcd.prefix {:?} must start with / and not end with /",
                self.prefix
            )));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 600_000 {
            return Err(StoreError::Config(format!(
                "etcd.timeoutMs {} must be between 1 and 600000",
                self.timeout_ms
            )));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(StoreError::Config(
                "etcd.username and etcd.password go together".into(),
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(StoreError::Config(
                    "etcd.tls.cert and etcd.tls.key go together".into(),
                ));
            }
            // No system roots are built in: without the CA no server certificate can be trusted.
            if tls.ca.is_none() {
                return Err(StoreError::Config(
                    "etcd.tls.ca is required with TLS: the CA that signed the etcd servers' \
                     certificates"
                        .into(),
                ));
            }
        }
        for ep in &self.endpoints {
            if self.tls.is_some() && ep.starts_with("http://") {
                return Err(StoreError::Config(format!(
                    "etcd endpoint {ep:?} is http:// but etcd.tls is set: use https://"
                )));
            }
            if self.tls.is_none() && ep.starts_with("https://") {
                return Err(StoreError::Config(format!(
                    "etcd endpoint {ep:?} is https:// but etcd.tls is not set: etcd.tls.ca \
                     must name the CA that signed the etcd servers' certificates"
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
}
