//! gwbridge-egress's own configuration fields, and the configuration handed to the IPAM delegate.

use cni::{CniError, Request};
use ipnetwork::IpNetwork;
use model::addressing::{pools, Pool, RangeSpec};
use serde::Deserialize;
use serde_json::{json, Value};

pub const DEFAULT_BRIDGE: &str = "cni_gwbridge";
/// `gwb0`: no runtime hands it out as CNI_IFNAME (`eth1` would be podman's, nerdctl's and Docker's
/// name for a container's second network).
pub const DEFAULT_IFNAME: &str = model::names::GWBRIDGE_IFNAME;
/// The subnet handed out when the configuration has neither `ipam` nor `subnet`: the same
/// private range on every host (the bridge is local, its addresses never leave the host
/// unmasqueraded), Docker's docker_gwbridge's.
pub const DEFAULT_SUBNET: &str = "172.18.0.0/16";

/// Who hands out the addresses of our interface.
#[derive(Debug, Clone)]
pub enum Allocator {
    /// No `ipam` section: gwbridge-egress itself, the lowest free address of `pool` (after its
    /// gateway, the subnet's first address). The addresses in use are those of the attachment
    /// records in its nftables table, read under the per-host lock anyway; there is no other
    /// state. As Docker's built-in IPAM serves docker_gwbridge; delegating to host-local cost a
    /// process per ADD.
    Builtin {
        pool: Pool,
        /// The gateway with the subnet's prefix length: the bridge's address.
        gateway: IpNetwork,
        /// What host-local reads to release a lease that it handed out for the default
        /// configuration before gwbridge-egress had its own allocation (see
        /// `Ipam::del`).
        legacy_stdin: Vec<u8>,
    },
    /// The `ipam` section's plugin, run as the spec describes.
    Delegate {
        plugin_type: String,
        /// What the delegate reads on stdin.
        stdin: Vec<u8>,
    },
}

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
    pub allocator: Allocator,
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
    /// The subnet of gwbridge-egress's own allocation (no `ipam` section).
    #[serde(default)]
    subnet: Option<String>,
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
        let builtin =
            match (&req.conf.ipam, &fields.subnet) {
                (Some(_), Some(_)) => return Err(CniError::invalid_config(
                    "subnet is for gwbridge-egress's own allocation: give it in the ipam section \
                     instead, or leave the ipam section out",
                )),
                (Some(_), None) => None,
                (None, subnet) => {
                    let subnet = subnet.as_deref().unwrap_or(DEFAULT_SUBNET);
                    Some(builtin_pool(subnet)?)
                }
            };
        let mut delegate = req.conf.raw.clone();
        let obj = delegate
            .as_object_mut()
            .ok_or_else(|| CniError::decode("network configuration is not a JSON object"))?;
        if req.conf.ipam.is_none() {
            obj.insert("ipam".into(), default_ipam());
            obj.remove("subnet");
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
        let ipam_stdin = serde_json::to_vec(&delegate)
            .map_err(|e| CniError::decode(format!("encoding the IPAM configuration: {e}")))?;
        let allocator = match builtin {
            Some((pool, gateway)) => Allocator::Builtin {
                pool,
                gateway,
                legacy_stdin: ipam_stdin,
            },
            None => Allocator::Delegate {
                plugin_type: delegate_type(&delegate)?,
                stdin: ipam_stdin,
            },
        };
        Ok(Config {
            bridge,
            ifname,
            ip_masq: fields.ip_masq.unwrap_or(true),
            icc: fields.icc.unwrap_or(false),
            mtu: fields.mtu,
            allocator,
        })
    }
}

/// The `ipam` section's plugin type.
fn delegate_type(delegate: &Value) -> Result<String, CniError> {
    match delegate.get("ipam").and_then(|i| i.get("type")) {
        Some(Value::String(t)) if !t.is_empty() => Ok(t.clone()),
        Some(Value::String(_)) | None => Err(CniError::invalid_config("ipam.type is missing")),
        Some(other) => Err(CniError::decode(format!(
            "ipam.type must be a string, not {other}"
        ))),
    }
}

/// The pool and gateway of our own allocation: the subnet's host addresses, its first one the
/// gateway (host-local's defaults: [`model::addressing`]).
fn builtin_pool(subnet: &str) -> Result<(Pool, IpNetwork), CniError> {
    let invalid = |e: model::Error| CniError::invalid_config(format!("subnet: {e}"));
    let spec = RangeSpec::parse(subnet, None, None, None).map_err(invalid)?;
    let pool = pools(&[vec![spec]], &[]).map_err(invalid)?.remove(0);
    let range = &pool.ranges[0];
    let gateway = range.gateway.unwrap_or(range.start);
    let gateway = IpNetwork::new(gateway, range.subnet.prefix())
        .map_err(|e| CniError::invalid_config(format!("subnet {subnet}: {e}")))?;
    Ok((pool, gateway))
}

/// host-local's configuration for the default subnet, as gwbridge-egress delegated to it before
/// it had its own allocation.
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
        let Allocator::Builtin {
            pool,
            gateway,
            legacy_stdin,
        } = &c.allocator
        else {
            panic!("not our own allocation: {:?}", c.allocator);
        };
        assert_eq!(pool.ranges[0].subnet.to_string(), DEFAULT_SUBNET);
        assert_eq!(gateway.to_string(), "172.18.0.1/16");
        // What host-local was given for the default before: its leases are released from it.
        let legacy: Value = serde_json::from_slice(legacy_stdin).unwrap();
        assert_eq!(legacy["name"], "cni_gwbridge");
        assert_eq!(legacy["ipam"]["type"], "host-local");
        assert_eq!(legacy["ipam"]["ranges"][0][0]["subnet"], DEFAULT_SUBNET);
        assert_eq!(legacy["cniVersion"], "1.0.0");
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
        let Allocator::Delegate { plugin_type, stdin } = &c.allocator else {
            panic!("not a delegate: {:?}", c.allocator);
        };
        let delegate: Value = serde_json::from_slice(stdin).unwrap();
        assert_eq!(delegate["ipam"]["subnet"], "172.30.0.0/16");
        assert_eq!(delegate["name"], "gwb0");
        assert_eq!(plugin_type, "etcd-ipam");
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
            (with("subnet", json!("172.18.0.0/33")), 7),
            (with("subnet", json!("172.18.0.1/16")), 7),
            (with("subnet", json!("172.18.0.0/31")), 7),
            (with("subnet", json!(18)), 6),
        ] {
            let e = Config::from_request(&request(conf.clone(), "eth0")).unwrap_err();
            assert_eq!(e.code, code, "{conf}: {}", e.msg);
        }
        // A subnet of our own, and not beside an ipam section.
        let c =
            Config::from_request(&request(with("subnet", json!("10.99.0.0/24")), "eth0")).unwrap();
        match c.allocator {
            Allocator::Builtin { gateway, .. } => assert_eq!(gateway.to_string(), "10.99.0.1/24"),
            other => panic!("{other:?}"),
        }
        let mut both = with("subnet", json!("10.99.0.0/24"));
        both["ipam"] = json!({"type": "host-local"});
        assert_eq!(
            Config::from_request(&request(both, "eth0"))
                .unwrap_err()
                .code,
            7
        );
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
