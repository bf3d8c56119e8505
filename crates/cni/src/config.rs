//! The parts of a plugin's stdin that every plugin reads the same way. Plugin-specific fields are
//! read by each plugin from [`NetConf::raw`].
//!
//! Error codes: malformed JSON and wrong JSON types are 6 (decode), well-typed but invalid values
//! are 7 (invalid configuration), an unsupported `cniVersion` is 1.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::env::is_valid_identifier;
use crate::error::CniError;
use crate::result::CniResult;
use crate::version::Version;

/// Configurations larger than this are refused: no runtime sends megabytes of JSON.
pub const MAX_CONFIG_BYTES: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct NetConf {
    pub version: Version,
    /// The network's name, shared by every host.
    pub name: String,
    pub plugin_type: String,
    /// The `ipam` section, when present.
    pub ipam: Option<Value>,
    pub dns: Option<crate::result::Dns>,
    pub runtime_config: RuntimeConfig,
    pub prev_result: Option<CniResult>,
    /// Addresses requested through `args.cni.ips`.
    pub args_ips: Vec<IpAddr>,
    /// GC's `cni.dev/valid-attachments` (or the v1.1.0 tag's `cni.dev/attachments`).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The whole object, for plugin-specific fields.
    pub raw: Value,
    /// The exact bytes received, handed unchanged to delegates.
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The runtime-supplied capabilities this suite understands. Keys inside objects are accepted in the
/// spec's camelCase and in the Go field names containerd sends (`HostPort`, `ContainerPort`, ...).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default, alias = "PortMappings")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default, deserialize_with = "addresses")]
    pub ips: Vec<IpAddr>,
    /// podman's `aliases`: network name to extra DNS names.
    #[serde(default)]
    pub aliases: HashMap<String, Vec<String>>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub bandwidth: Option<Value>,
    #[serde(default)]
    pub dns: Option<RuntimeDns>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeDns {
    #[serde(default, alias = "Servers")]
    pub servers: Vec<String>,
    #[serde(default, alias = "Searches")]
    pub searches: Vec<String>,
    #[serde(default, alias = "Options")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort", alias = "HostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort", alias = "ContainerPort")]
    pub container_port: u16,
    #[serde(default = "tcp", alias = "Protocol")]
    pub protocol: String,
    #[serde(default, rename = "hostIP", alias = "HostIP", alias = "hostIp")]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".to_string()
}

impl PortMapping {
    /// Checks ports, protocol (tcp or udp, any case) and host address; returns the lower-case protocol.
    pub fn validate(&self) -> Result<(), CniError> {
        if self.host_port == 0 || self.container_port == 0 {
            return Err(CniError::invalid_config(format!(
                "portMappings: port 0 is not a valid port ({}:{})",
                self.host_port, self.container_port
            )));
        }
        if !matches!(self.protocol.to_ascii_lowercase().as_str(), "tcp" | "udp") {
            return Err(CniError::unsupported_field(
                "portMappings.protocol",
                &self.protocol,
            ));
        }
        if !self.host_ip.is_empty() && self.host_ip.parse::<IpAddr>().is_err() {
            return Err(CniError::invalid_config(format!(
                "portMappings: hostIP {:?} is not an address",
                self.host_ip
            )));
        }
        Ok(())
    }

    pub fn protocol(&self) -> String {
        self.protocol.to_ascii_lowercase()
    }

    /// The host address the port is published on; None for every address, which is what an empty
    /// `hostIP` and the unspecified addresses (`0.0.0.0`, `::`, as Kubernetes may send) mean.
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host_ip
            .parse()
            .ok()
            .filter(|ip: &IpAddr| !ip.is_unspecified())
    }
}

/// Accepts `"10.0.0.5"` and `"10.0.0.5/24"`.
fn addresses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    let list: Vec<String> = Vec::deserialize(d)?;
    list.iter()
        .map(|s| parse_address(s).map_err(|e| serde::de::Error::custom(e.msg)))
        .collect()
}

fn parse_address(s: &str) -> Result<IpAddr, CniError> {
    s.split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| CniError::invalid_config(format!("{s:?} is not an IP address")))
}

impl NetConf {
    /// Parses stdin. The version is checked first so that an old or unknown version is code 1.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(CniError::decode(format!(
                "network configuration of {} bytes is larger than the limit of {MAX_CONFIG_BYTES}",
                bytes.len()
            )));
        }
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::decode(format!("network configuration is not valid JSON: {e}"))
        })?;
        let obj = raw
            .as_object()
            .ok_or_else(|| CniError::decode("network configuration is not a JSON object"))?;

        let version = match obj.get("cniVersion") {
            None => {
                return Err(CniError::new(
                    crate::codes::INCOMPATIBLE_VERSION,
                    "cniVersion is missing (0.1.0 is not supported)",
                ))
            }
            Some(Value::String(s)) => Version::parse(s)?,
            Some(other) => {
                return Err(CniError::decode(format!(
                    "cniVersion must be a string, not {other}"
                )))
            }
        };
        let name = string_field(obj, "name")?.unwrap_or_default();
        if name.is_empty() {
            return Err(CniError::invalid_config("network name is missing"));
        }
        if !is_valid_identifier(&name) {
            return Err(CniError::invalid_config(format!(
                "invalid characters in network name {name:?}"
            )));
        }
        let plugin_type = string_field(obj, "type")?.unwrap_or_default();

        let ipam = match obj.get("ipam") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => {
                return Err(CniError::decode(format!(
                    "ipam must be an object, not {other}"
                )))
            }
        };
        let dns = typed_field(obj, "dns")?;
        let runtime_config: RuntimeConfig = typed_field(obj, "runtimeConfig")?.unwrap_or_default();
        for pm in &runtime_config.port_mappings {
            pm.validate()?;
        }
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(CniResult::from_json(v).map_err(|e| CniError {
                msg: format!("prevResult: {}", e.msg),
                ..e
            })?),
        };
        let args_ips = match raw.pointer("/args/cni/ips") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| CniError::decode("args.cni.ips must be strings"))
                        .and_then(parse_address)
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(CniError::decode("args.cni.ips must be a list")),
        };
        let valid_attachments = match obj
            .get("cni.dev/valid-attachments")
            .or_else(|| obj.get("cni.dev/attachments"))
        {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| CniError::decode(format!("cni.dev/valid-attachments: {e}")))?,
            ),
        };
        Ok(NetConf {
            version,
            name,
            plugin_type,
            ipam,
            dns,
            runtime_config,
            prev_result,
            args_ips,
            valid_attachments,
            raw,
            bytes: bytes.to_vec(),
        })
    }

    /// Reads the plugin's own fields from the object (unknown fields ignored).
    pub fn plugin_fields<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        serde_json::from_value(self.raw.clone()).map_err(|e| {
            CniError::decode(format!("invalid {} configuration: {e}", self.plugin_type))
        })
    }

    /// The `type` of the IPAM plugin to delegate to.
    pub fn ipam_type(&self) -> Result<&str, CniError> {
        let ipam = self
            .ipam
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("an ipam section is required"))?;
        match ipam.get("type") {
            Some(Value::String(t)) if !t.is_empty() => Ok(t),
            Some(Value::String(_)) | None => Err(CniError::invalid_config("ipam.type is missing")),
            Some(other) => Err(CniError::decode(format!(
                "ipam.type must be a string, not {other}"
            ))),
        }
    }

    /// Addresses requested by the runtime: runtimeConfig.ips, then args.cni.ips.
    pub fn requested_ips(&self) -> Vec<IpAddr> {
        let mut ips = self.runtime_config.ips.clone();
        ips.extend(self.args_ips.iter().copied());
        ips
    }
}

fn string_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::decode(format!(
            "{key} must be a string, not {other}"
        ))),
    }
}

fn typed_field<T: DeserializeOwned>(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<T>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| CniError::decode(format!("{key}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn reads_the_common_fields() {
        let c = parse(json!({
            "cniVersion": "1.0.0", "name": "demo", "type": "vxlan-overlay",
            "ipam": {"type": "etcd-ipam"},
            "args": {"cni": {"ips": ["10.0.0.9/24"]}},
            "runtimeConfig": {"ips": ["10.0.0.8"]},
        }))
        .unwrap();
        assert_eq!(c.version, Version::V1_0_0);
        assert_eq!(c.name, "demo");
        assert_eq!(c.ipam_type().unwrap(), "etcd-ipam");
        assert_eq!(c.requested_ips().len(), 2);
    }

    #[test]
    fn port_mappings_in_both_spellings() {
        let c = parse(
            json!({"cniVersion": "0.4.0", "name": "n", "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "192.168.0.1"},
                {"HostPort": 5353, "ContainerPort": 53, "Protocol": "UDP", "HostIP": ""},
                {"hostPort": 9000, "containerPort": 9000},
                {"hostPort": 9001, "containerPort": 1, "hostIP": "0.0.0.0"},
                {"hostPort": 9002, "containerPort": 1, "hostIP": "::"},
            ]}}),
        )
        .unwrap();
        let pm = &c.runtime_config.port_mappings;
        assert_eq!(pm[0].host_ip(), Some("192.168.0.1".parse().unwrap()));
        assert_eq!(
            (
                pm[1].host_port,
                pm[1].container_port,
                pm[1].protocol().as_str()
            ),
            (5353, 53, "udp")
        );
        assert_eq!(pm[1].host_ip(), None);
        assert_eq!(pm[2].protocol(), "tcp");
        // The unspecified addresses mean every address, as an empty hostIP does.
        assert_eq!((pm[3].host_ip(), pm[4].host_ip()), (None, None));
    }

    #[test]
    fn bad_port_mappings() {
        let sctp = parse(
            json!({"cniVersion": "0.4.0", "name": "n", "runtimeConfig": {"portMappings": [
            {"hostPort": 1, "containerPort": 1, "protocol": "sctp"}]}}),
        )
        .unwrap_err();
        assert_eq!(sctp.code, 2);
        assert!(sctp.msg.contains("sctp") && sctp.msg.contains("protocol"));
        let zero = parse(
            json!({"cniVersion": "0.4.0", "name": "n", "runtimeConfig": {"portMappings": [
            {"hostPort": 0, "containerPort": 1}]}}),
        )
        .unwrap_err();
        assert_eq!(zero.code, 7);
        let big = parse(
            json!({"cniVersion": "0.4.0", "name": "n", "runtimeConfig": {"portMappings": [
            {"hostPort": 70000, "containerPort": 1}]}}),
        )
        .unwrap_err();
        assert_eq!(big.code, 6);
    }

    #[test]
    fn error_codes_for_bad_input() {
        let cases: Vec<(&[u8], u32)> = vec![
            (b"", 6),
            (b"{", 6),
            (b"[]", 6),
            (b"{\"name\":\"n\"}", 1),
            (b"{\"cniVersion\":\"0.2.0\",\"name\":\"n\"}", 1),
            (b"{\"cniVersion\":\"9.9.9\",\"name\":\"n\"}", 1),
            (b"{\"cniVersion\":1,\"name\":\"n\"}", 6),
            (b"{\"cniVersion\":\"1.0.0\"}", 7),
            (b"{\"cniVersion\":\"1.0.0\",\"name\":\"bad name\"}", 7),
            (b"{\"cniVersion\":\"1.0.0\",\"name\":7}", 6),
            (b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"ipam\":\"x\"}", 6),
            (b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"prevResult\":{\"ips\":[{\"address\":\"x\"}]}}", 6),
            (b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"args\":{\"cni\":{\"ips\":[\"nope\"]}}}", 7),
            (b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"cni.dev/valid-attachments\":[{\"x\":1}]}", 6),
        ];
        for (input, code) in cases {
            let got = NetConf::parse(input).unwrap_err();
            assert_eq!(
                got.code,
                code,
                "{}: {}",
                String::from_utf8_lossy(input),
                got.msg
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert_eq!(NetConf::parse(deep.as_bytes()).unwrap_err().code, 6);
        let huge = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert_eq!(NetConf::parse(&huge).unwrap_err().code, 6);
    }

    #[test]
    fn both_attachment_keys() {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let c = parse(json!({"cniVersion": "1.1.0", "name": "n", key: [{"containerID": "a", "ifname": "eth0"}]})).unwrap();
            assert_eq!(c.valid_attachments.unwrap()[0].container_id, "a");
        }
    }

    #[test]
    fn ipam_type_errors() {
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n"})).unwrap();
        assert_eq!(c.ipam_type().unwrap_err().code, 7);
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": 3}})).unwrap();
        assert_eq!(c.ipam_type().unwrap_err().code, 6);
    }
}
