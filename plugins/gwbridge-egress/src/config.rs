//! gwbridge-egress's own configuration fields, and the configuration handed to the IPAM delegate.

use cni::{CniError, Request};
use serde::Deserialize;
use serde_json::{json, Value};

pub const DEFAULT_BRIDGE: &str = "cni_gwbridge";
/// `gwb0`: no runtime hands it out as CNI_IFNAME (`eth1` would be podman's, nerdctl's and Docker's
/// name for a container's second network).
pub const DEFAULT_IFNAME: &str = model::names::GWBRIDGE_IFNAME;
/// The IPAM used when the configuration has no `ipam` section: host-local, the same private range
/// on every host (the bridge is local, its addresses never leave the host unmasqueraded).
pub const DEFAULT_SUBNET: &str = "172.18.0.0/16";

#[derive(Debug, Clone)]
pub struct Config {
    /// The host's gateway bridge.
    pub bridge: String,
    /// Our interface in the container (CNI_IFNAME is the chain's main interface), shared by every
    /// network of the container that chains onto the same bridge.
    pub ifname: String,
    pub ip_masq: bool,
    /// Inter-container communication over the bridge; false isolates the bridge ports.
    pub icc: bool,
    /// None: the MTU of the host's default-route interface.
    pub mtu: Option<u32>,
    pub ipam_type: String,
    /// What the IPAM delegate reads on stdin.
    pub ipam_stdin: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    ifname: Option<String>,
    #[serde(default)]
    ip_masq: Option<bool>,
    #[serde(default)]
    icc: Option<bool>,
    #[serde(default)]
    mtu: Option<u32>,
}

impl Config {
    pub fn from_request(req: &Request) -> Result<Config, CniError> {
        let fields: Fields = req.conf.plugin_fields()?;
        let bridge = fields.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        // The bridge's name is also the IPAM's network name (see `ipam_stdin`), so it must be valid
        // as both.
        if !valid_ifname(&bridge) || !cni::env::is_valid_identifier(&bridge) {
            return Err(CniError::invalid_config(format!(
                "bridge {bridge:?} is not a valid name: 1-15 characters of a-z, A-Z, 0-9, '_', '.', '-'"
            )));
        }
        let ifname = fields.ifname.unwrap_or_else(|| DEFAULT_IFNAME.to_string());
        if !valid_ifname(&ifname) {
            return Err(CniError::invalid_config(format!(
                "ifname {ifname:?} is not a valid interface name"
            )));
        }
        if model::names::is_runtime_ifname(&ifname) {
            log::warn!(
                "ifname {ifname:?} is a name runtimes give a container's networks (eth<N>, \
                 net<N>): a container on a second network will collide with it; the default is \
                 {DEFAULT_IFNAME}"
            );
        }
        // GC, STATUS and VERSION have no CNI_IFNAME.
        if !req.env.ifname.is_empty() && ifname == req.env.ifname {
            return Err(CniError::invalid_config(format!(
                "ifname {ifname:?} is the chain's interface (CNI_IFNAME): gwbridge-egress adds a \
                 second interface and needs a name of its own"
            )));
        }
        if let Some(mtu) = fields.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(CniError::invalid_config(format!(
                    "mtu {mtu} is outside 68..65535"
                )));
            }
        }
        let mut delegate = req.conf.raw.clone();
        let obj = delegate
            .as_object_mut()
            .ok_or_else(|| CniError::decode("network configuration is not a JSON object"))?;
        if req.conf.ipam.is_none() {
            obj.insert("ipam".into(), default_ipam());
        }
        // The IPAM sees the bridge as its network: every network chaining gwbridge-egress onto the
        // same bridge then draws from one pool (as Docker's networks share docker_gwbridge), and
        // the allocation never mixes with the main plugin's, which is kept under the chain's name.
        obj.insert("name".into(), Value::String(bridge.clone()));
        // Requested addresses are for the main network: host-local would refuse one outside our range.
        obj.remove("args");
        if let Some(Value::Object(rc)) = obj.get_mut("runtimeConfig") {
            rc.remove("ips");
        }
        let ipam_type = match delegate.get("ipam").and_then(|i| i.get("type")) {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            Some(Value::String(_)) | None => {
                return Err(CniError::invalid_config("ipam.type is missing"))
            }
            Some(other) => {
                return Err(CniError::decode(format!(
                    "ipam.type must be a string, not {other}"
                )))
            }
        };
        let ipam_stdin = serde_json::to_vec(&delegate)
            .map_err(|e| CniError::decode(format!("encoding the IPAM configuration: {e}")))?;
        Ok(Config {
            bridge,
            ifname,
            ip_masq: fields.ip_masq.unwrap_or(true),
            icc: fields.icc.unwrap_or(false),
            mtu: fields.mtu,
            ipam_type,
            ipam_stdin,
        })
    }
}

fn default_ipam() -> Value {
    json!({"type": "host-local", "ranges": [[{"subnet": DEFAULT_SUBNET}]]})
}

/// The kernel's rule: 1-15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{Environment, NetConf};

    fn request(conf: Value, ifname: &str) -> Request {
        let env = Environment::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_NETNS" => Some("/run/netns/x".into()),
            "CNI_IFNAME" => Some(ifname.into()),
            _ => None,
        })
        .unwrap();
        let conf = NetConf::parse(conf.to_string().as_bytes()).unwrap();
        Request { env, conf }
    }

    #[test]
    fn defaults() {
        let req = request(
            json!({"cniVersion": "1.0.0", "name": "demo", "type": "gwbridge-egress"}),
            "eth0",
        );
        let c = Config::from_request(&req).unwrap();
        assert_eq!(
            (
                c.bridge.as_str(),
                c.ifname.as_str(),
                c.ip_masq,
                c.icc,
                c.mtu
            ),
            ("cni_gwbridge", "gwb0", true, false, None)
        );
        assert_eq!(c.ipam_type, "host-local");
        let delegate: Value = serde_json::from_slice(&c.ipam_stdin).unwrap();
        assert_eq!(delegate["name"], "cni_gwbridge");
        assert_eq!(delegate["ipam"]["ranges"][0][0]["subnet"], DEFAULT_SUBNET);
        assert_eq!(delegate["cniVersion"], "1.0.0");
    }

    #[test]
    fn explicit_fields_and_ipam_are_kept() {
        let req = request(
            json!({"cniVersion": "1.0.0", "name": "demo", "type": "gwbridge-egress",
                   "bridge": "gwb0", "ifname": "egress0", "ipMasq": false, "icc": true, "mtu": 1400,
                   "ipam": {"type": "etcd-ipam", "subnet": "172.30.0.0/16"},
                   "args": {"cni": {"ips": ["10.0.0.9"]}},
                   "runtimeConfig": {"ips": ["10.0.0.9"], "portMappings": []}}),
            "eth0",
        );
        let c = Config::from_request(&req).unwrap();
        assert_eq!(
            (
                c.bridge.as_str(),
                c.ifname.as_str(),
                c.ip_masq,
                c.icc,
                c.mtu
            ),
            ("gwb0", "egress0", false, true, Some(1400))
        );
        let delegate: Value = serde_json::from_slice(&c.ipam_stdin).unwrap();
        assert_eq!(delegate["ipam"]["subnet"], "172.30.0.0/16");
        assert_eq!(delegate["name"], "gwb0");
        assert_eq!(c.ipam_type, "etcd-ipam");
        assert!(delegate.get("args").is_none());
        assert!(delegate["runtimeConfig"].get("ips").is_none());
        assert!(delegate["runtimeConfig"].get("portMappings").is_some());
    }

    #[test]
    fn invalid_fields_are_code_7_or_6() {
        let base = json!({"cniVersion": "1.0.0", "name": "demo", "type": "gwbridge-egress"});
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            c
        };
        for (conf, code) in [
            (with("ifname", json!("eth0")), 7),
            (with("ifname", json!("a/b")), 7),
            (with("bridge", json!("this-name-is-too-long")), 7),
            (with("bridge", json!("br+x")), 7),
            (with("mtu", json!(20)), 7),
            (with("icc", json!("yes")), 6),
            (with("ipam", json!({"type": ""})), 7),
        ] {
            let e = Config::from_request(&request(conf.clone(), "eth0")).unwrap_err();
            assert_eq!(e.code, code, "{conf}: {}", e.msg);
        }
        // The default is refused only where a runtime would hand it out, which none does.
        assert_eq!(
            Config::from_request(&request(base.clone(), "gwb0"))
                .unwrap_err()
                .code,
            7
        );
        for runtime in ["eth0", "eth1", "eth2", "net1"] {
            Config::from_request(&request(base.clone(), runtime)).unwrap();
        }
    }
}
