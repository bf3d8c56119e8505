//! etcd-ipam's configuration: host-local's fields (so the two can be swapped), plus `etcd`, `node`,
//! `exclude`. `etcd` and `node` may also sit in the enclosing plugin's object, since delegation hands
//! over the whole configuration; the ipam section's win.

use std::net::IpAddr;
use std::path::PathBuf;

use cni::{CniError, Dns, NetConf, Route};
use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;
use store::EtcdConfig;

use crate::pool::{default_end, default_start, to_num, Pool, Range};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/etcd-ipam";

#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub network: String,
    pub pools: Vec<Pool>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    pub etcd: EtcdConfig,
    pub node: String,
    /// Where the per-node allocation cursor is cached (a hint that saves a round trip).
    pub data_dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Section {
    #[serde(default)]
    ranges: Vec<Vec<RangeFields>>,
    #[serde(flatten)]
    legacy: LegacyFields,
    #[serde(default)]
    routes: Vec<RouteFields>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    etcd: Option<EtcdConfig>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    data_dir: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RangeFields {
    subnet: String,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

/// host-local's single-range form: `subnet`, `rangeStart`, `rangeEnd`, `gateway` at the top.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LegacyFields {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RouteFields {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

/// The fields etcd-ipam reads from the enclosing plugin object.
#[derive(Deserialize, Default)]
struct Enclosing {
    #[serde(default)]
    etcd: Option<EtcdConfig>,
    #[serde(default)]
    node: Option<String>,
}

impl IpamConfig {
    pub fn from_netconf(conf: &NetConf) -> Result<Self, CniError> {
        let section_value = conf
            .ipam
            .clone()
            .ok_or_else(|| CniError::invalid_config("an ipam section is required"))?;
        let section: Section = serde_json::from_value(section_value)
            .map_err(|e| CniError::decode(format!("invalid ipam section: {e}")))?;
        let enclosing: Enclosing = serde_json::from_value(strip_ipam(&conf.raw))
            .map_err(|e| CniError::decode(format!("invalid etcd or node field: {e}")))?;

        let etcd = etcd_config(section.etcd, enclosing.etcd)?;

        let node = match section.node.or(enclosing.node) {
            Some(node) => node,
            None => hostname()?,
        };
        if !cni::env::is_valid_identifier(&node) {
            return Err(CniError::invalid_config(format!(
                "node name {node:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
            )));
        }

        let exclude = section
            .exclude
            .iter()
            .map(|x| {
                x.parse::<IpNetwork>()
                    .map_err(|e| CniError::invalid_config(format!("exclude: {x:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut sets = section.ranges;
        let legacy = section.legacy;
        if let Some(subnet) = legacy.subnet {
            if !sets.is_empty() {
                return Err(CniError::invalid_config(
                    "give either ranges or subnet, not both",
                ));
            }
            sets.push(vec![RangeFields {
                subnet,
                range_start: legacy.range_start,
                range_end: legacy.range_end,
                gateway: legacy.gateway,
            }]);
        }
        if sets.is_empty() {
            return Err(CniError::invalid_config("ipam needs ranges (or subnet)"));
        }
        let mut pools = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            if set.is_empty() {
                return Err(CniError::invalid_config(format!("range set {i} is empty")));
            }
            let ranges = set.iter().map(parse_range).collect::<Result<Vec<_>, _>>()?;
            if ranges
                .iter()
                .any(|r| r.subnet.is_ipv6() != ranges[0].subnet.is_ipv6())
            {
                return Err(CniError::invalid_config(format!(
                    "range set {i} mixes IPv4 and IPv6"
                )));
            }
            let pool = Pool {
                ranges,
                exclude: exclude
                    .iter()
                    .filter(|x| x.is_ipv6() == set_is_v6(set))
                    .copied()
                    .collect(),
            };
            if pool.capacity() == 0 {
                return Err(CniError::invalid_config(format!(
                    "range set {i} has no address to hand out after exclusions"
                )));
            }
            pools.push(pool);
        }
        let all: Vec<&Range> = pools.iter().flat_map(|p| p.ranges.iter()).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.subnet.is_ipv6() == b.subnet.is_ipv6()
                    && to_num(a.start) <= to_num(b.end)
                    && to_num(b.start) <= to_num(a.end)
                {
                    return Err(CniError::invalid_config(format!(
                        "ranges {}-{} and {}-{} overlap",
                        a.start, a.end, b.start, b.end
                    )));
                }
            }
        }

        let routes =
            section
                .routes
                .iter()
                .map(|r| {
                    let dst = r.dst.parse::<IpNetwork>().map_err(|e| {
                        CniError::invalid_config(format!("route dst {:?}: {e}", r.dst))
                    })?;
                    let gw = match &r.gw {
                        None => None,
                        Some(g) => Some(g.parse::<IpAddr>().map_err(|e| {
                            CniError::invalid_config(format!("route gw {g:?}: {e}"))
                        })?),
                    };
                    Ok(Route::new(dst, gw))
                })
                .collect::<Result<Vec<_>, CniError>>()?;

        Ok(IpamConfig {
            network: conf.name.clone(),
            pools,
            routes,
            dns: section.dns.unwrap_or_default(),
            etcd,
            node,
            data_dir: PathBuf::from(
                section
                    .data_dir
                    .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
            ),
        })
    }
}

/// The etcd settings: the ipam section's, else the enclosing plugin object's.
fn etcd_config(
    section: Option<EtcdConfig>,
    enclosing: Option<EtcdConfig>,
) -> Result<EtcdConfig, CniError> {
    let etcd = section.or(enclosing).ok_or_else(|| {
        CniError::invalid_config(
            "etcd.endpoints is required (in the ipam section or the plugin object)",
        )
    })?;
    etcd.validate().map_err(CniError::from)?;
    Ok(etcd)
}

/// Reads the configuration; a network made with overlayctl may leave out `ranges` (and `subnet`):
/// they then come from the network's record in etcd (one extra round trip).
pub fn load(conf: &NetConf) -> Result<IpamConfig, CniError> {
    let Some(ipam) = conf.ipam.as_ref() else {
        return IpamConfig::from_netconf(conf);
    };
    // Only an absent (or empty) `ranges` means "from the record": a malformed one is an error.
    let given = ipam.get("subnet").is_some()
        || ipam.get("ranges").is_some_and(|r| {
            !matches!(r, Value::Null) && r.as_array().is_none_or(|a| !a.is_empty())
        });
    if given {
        return IpamConfig::from_netconf(conf);
    }
    let section_etcd = ipam
        .get("etcd")
        .map(|e| serde_json::from_value(e.clone()))
        .transpose()
        .map_err(|e| CniError::decode(format!("ipam.etcd: {e}")))?;
    let enclosing: Enclosing = serde_json::from_value(strip_ipam(&conf.raw))
        .map_err(|e| CniError::decode(format!("invalid etcd field: {e}")))?;
    let etcd = etcd_config(section_etcd, enclosing.etcd)?;
    let record = store::block_on(async { store::Store::new(etcd)?.network(&conf.name).await })??.ok_or_else(|| {
        CniError::new(
            cni::codes::UNKNOWN_NETWORK,
            format!("ipam gives no ranges and network {} has no record in etcd (overlayctl network create)", conf.name),
        )
    })?;
    let mut conf = conf.clone();
    if let Some(ipam) = conf.ipam.as_mut() {
        ipam["ranges"] = record.ipam_ranges();
    }
    IpamConfig::from_netconf(&conf)
}

fn set_is_v6(set: &[RangeFields]) -> bool {
    set[0].subnet.contains(':')
}

/// The plugin object without its ipam section, so that only `etcd` and `node` are read from it.
fn strip_ipam(raw: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["etcd", "node"] {
        if let Some(v) = raw.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    Value::Object(out)
}

fn parse_range(f: &RangeFields) -> Result<Range, CniError> {
    let subnet: IpNetwork = f
        .subnet
        .parse()
        .map_err(|e| CniError::invalid_config(format!("subnet {:?}: {e}", f.subnet)))?;
    if subnet.ip() != subnet.network() {
        return Err(CniError::invalid_config(format!(
            "subnet {} has host bits set (did you mean {}/{}?)",
            f.subnet,
            subnet.network(),
            subnet.prefix()
        )));
    }
    let too_small = if subnet.is_ipv4() {
        subnet.prefix() > 30
    } else {
        subnet.prefix() > 126
    };
    if too_small {
        return Err(CniError::invalid_config(format!(
            "subnet {} is too small to allocate from",
            f.subnet
        )));
    }
    let addr = |field: &str, v: &Option<String>| -> Result<Option<IpAddr>, CniError> {
        match v {
            None => Ok(None),
            Some(s) => {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|e| CniError::invalid_config(format!("{field} {s:?}: {e}")))?;
                if !subnet.contains(ip) {
                    return Err(CniError::invalid_config(format!(
                        "{field} {ip} is outside subnet {subnet}"
                    )));
                }
                Ok(Some(ip))
            }
        }
    };
    let start = addr("rangeStart", &f.range_start)?.unwrap_or_else(|| default_start(&subnet));
    let end = addr("rangeEnd", &f.range_end)?.unwrap_or_else(|| default_end(&subnet));
    // As host-local: the gateway defaults to the subnet's first address.
    let gateway = addr("gateway", &f.gateway)?.or(Some(default_start(&subnet)));
    if to_num(start) > to_num(end) {
        return Err(CniError::invalid_config(format!(
            "rangeStart {start} is after rangeEnd {end}"
        )));
    }
    if start == subnet.network()
        || (subnet.is_ipv4()
            && end
                == IpAddr::V4(match subnet {
                    IpNetwork::V4(n) => n.broadcast(),
                    _ => unreachable!(),
                }))
    {
        return Err(CniError::invalid_config(format!(
            "range {start}-{end} includes the network or broadcast address of {subnet}"
        )));
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

fn hostname() -> Result<String, CniError> {
    nix::unistd::gethostname()
        .map_err(|e| {
            CniError::invalid_config(format!("node not set and the hostname cannot be read: {e}"))
        })?
        .into_string()
        .map_err(|_| CniError::invalid_config("node not set and the hostname is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(ipam: Value, top: Value) -> Result<IpamConfig, CniError> {
        let mut obj =
            json!({"cniVersion": "1.0.0", "name": "demo", "type": "vxlan-overlay", "ipam": ipam});
        for (k, v) in top.as_object().unwrap() {
            obj[k] = v.clone();
        }
        IpamConfig::from_netconf(&NetConf::parse(obj.to_string().as_bytes()).unwrap())
    }

    const ETCD: &str = "127.0.0.1:2379";

    #[test]
    fn legacy_and_ranges_forms() {
        let a = conf(json!({"type": "etcd-ipam", "subnet": "10.0.0.0/24", "etcd": {"endpoints": [ETCD]}, "node": "n1"}), json!({})).unwrap();
        let b = conf(json!({"type": "etcd-ipam", "ranges": [[{"subnet": "10.0.0.0/24"}]], "etcd": {"endpoints": [ETCD]}, "node": "n1"}), json!({})).unwrap();
        assert_eq!(a.pools, b.pools);
        assert_eq!(
            a.pools[0].ranges[0].gateway,
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(a.network, "demo");
    }

    #[test]
    fn etcd_and_node_from_the_enclosing_object_and_ipam_wins() {
        let c = conf(
            json!({"type": "etcd-ipam", "subnet": "10.0.0.0/24"}),
            json!({"etcd": {"endpoints": ["a:1"]}, "node": "outer"}),
        )
        .unwrap();
        assert_eq!(
            (c.etcd.endpoints[0].as_str(), c.node.as_str()),
            ("a:1", "outer")
        );
        let c = conf(
            json!({"type": "etcd-ipam", "subnet": "10.0.0.0/24", "etcd": {"endpoints": ["b:1"]}, "node": "inner"}),
            json!({"etcd": {"endpoints": ["a:1"]}, "node": "outer"}),
        )
        .unwrap();
        assert_eq!(
            (c.etcd.endpoints[0].as_str(), c.node.as_str()),
            ("b:1", "inner")
        );
    }

    #[test]
    fn dual_stack_routes_dns_exclude() {
        let c = conf(
            json!({"type": "etcd-ipam", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64", "gateway": "fd00::1"}]],
                   "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.0.0.1"}],
                   "dns": {"nameservers": ["10.0.0.1"]}, "exclude": ["10.0.0.0/28"], "etcd": {"endpoints": [ETCD]}, "node": "n"}),
            json!({}),
        )
        .unwrap();
        assert_eq!(c.pools.len(), 2);
        assert!(c.pools[1].is_v6());
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.dns.nameservers, vec!["10.0.0.1"]);
        assert_eq!(c.pools[0].exclude.len(), 1);
        assert!(c.pools[1].exclude.is_empty());
    }

    #[test]
    fn bad_configurations_are_code_7_or_6() {
        let e = |ipam: Value| conf(ipam, json!({})).unwrap_err().code;
        let base = |extra: Value| {
            let mut v = json!({"type": "etcd-ipam", "etcd": {"endpoints": [ETCD]}, "node": "n"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        assert_eq!(e(base(json!({}))), 7, "no ranges");
        assert_eq!(e(base(json!({"subnet": "10.0.0.0/33"}))), 7);
        assert_eq!(e(base(json!({"subnet": "nonsense"}))), 7);
        assert_eq!(e(base(json!({"subnet": "10.0.0.5/24"}))), 7, "host bits");
        assert_eq!(e(base(json!({"subnet": "10.0.0.0/31"}))), 7, "too small");
        assert_eq!(
            e(base(
                json!({"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"})
            )),
            7
        );
        assert_eq!(
            e(base(
                json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.50", "rangeEnd": "10.0.0.10"})
            )),
            7
        );
        assert_eq!(
            e(base(
                json!({"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.10"})
            )),
            7
        );
        assert_eq!(
            e(base(
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]})
            )),
            7,
            "overlap"
        );
        assert_eq!(
            e(base(
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]})
            )),
            7,
            "mixed"
        );
        assert_eq!(e(base(json!({"ranges": [[]]}))), 7);
        assert_eq!(
            e(base(
                json!({"subnet": "10.0.0.0/24", "exclude": ["10.0.0.0/24"]})
            )),
            7,
            "all excluded"
        );
        assert_eq!(
            e(base(json!({"subnet": "10.0.0.0/24", "exclude": ["x"]}))),
            7
        );
        assert_eq!(
            e(base(
                json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "x"}]})
            )),
            7
        );
        assert_eq!(
            e(base(json!({"subnet": "10.0.0.0/24", "node": "bad/node"}))),
            7
        );
        assert_eq!(e(base(json!({"subnet": 10}))), 6);
        assert_eq!(e(base(json!({"ranges": "10.0.0.0/24"}))), 6);
        assert_eq!(
            e(json!({"type": "etcd-ipam", "subnet": "10.0.0.0/24", "node": "n"})),
            7,
            "no etcd"
        );
        assert_eq!(
            e(base(
                json!({"subnet": "10.0.0.0/24", "etcd": {"endpoints": []}})
            )),
            7
        );
    }
}
