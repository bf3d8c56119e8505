//! etcd-ipam's configuration: host-local's fields (so the two can be swapped), plus `exclude`,
//! `dataDir`, and `etcd` and `node` (read by the store's one rule, [`store::PluginSettings`]).
//! Parsing is pure: a configuration that leaves its ranges to the network's record is completed
//! with the record the plugin call reads through its one etcd connection.

use std::net::IpAddr;
use std::path::PathBuf;

use cni::{CniError, Dns, NetConf, Route};
use ipnetwork::IpNetwork;
use model::addressing::{pools, Addressing, Pool, RangeSpec};
use model::records::Network;
use serde::Deserialize;
use store::{EtcdConfig, PluginSettings};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/etcd-ipam";

/// The configuration with its range sets: what the allocator works with.
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

/// The configuration as given: its range sets, or none when they are the network record's.
#[derive(Debug, Clone)]
pub struct Conf {
    pub network: String,
    pub settings: PluginSettings,
    /// None: the configuration gives neither `ranges` nor `subnet`; they come from the record.
    ranges: Option<Vec<Vec<RangeSpec>>>,
    exclude: Vec<IpNetwork>,
    routes: Vec<Route>,
    dns: Dns,
    data_dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Section {
    /// Absent, null or empty: the network record's.
    #[serde(default)]
    ranges: Option<Vec<Vec<RangeFields>>>,
    #[serde(flatten)]
    legacy: LegacyFields,
    #[serde(default)]
    routes: Vec<RouteFields>,
    #[serde(default)]
    dns: Option<Dns>,
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

impl RangeFields {
    fn spec(&self) -> Result<RangeSpec, CniError> {
        Ok(RangeSpec::parse(
            &self.subnet,
            self.range_start.as_deref(),
            self.range_end.as_deref(),
            self.gateway.as_deref(),
        )?)
    }
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

impl Conf {
    /// Reads the configuration; no I/O.
    pub fn parse(conf: &NetConf) -> Result<Conf, CniError> {
        let section_value = conf
            .ipam
            .clone()
            .ok_or_else(|| CniError::invalid_config("an ipam section is required"))?;
        let section: Section = serde_json::from_value(section_value)
            .map_err(|e| CniError::decode(format!("invalid ipam section: {e}")))?;
        let settings = PluginSettings::from_netconf(conf)?;

        let exclude = section
            .exclude
            .iter()
            .map(|x| {
                x.parse::<IpNetwork>()
                    .map_err(|e| CniError::invalid_config(format!("exclude: {x:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let sets = section.ranges.unwrap_or_default();
        let legacy = section.legacy;
        let ranges = match legacy.subnet {
            Some(_) if !sets.is_empty() => {
                return Err(CniError::invalid_config(
                    "give either ranges or subnet, not both",
                ))
            }
            Some(subnet) => Some(vec![vec![RangeFields {
                subnet,
                range_start: legacy.range_start,
                range_end: legacy.range_end,
                gateway: legacy.gateway,
            }
            .spec()?]]),
            None if sets.is_empty() => None,
            None => Some(
                sets.iter()
                    .map(|set| set.iter().map(RangeFields::spec).collect())
                    .collect::<Result<_, CniError>>()?,
            ),
        };

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

        Ok(Conf {
            network: conf.name.clone(),
            settings,
            ranges,
            exclude,
            routes,
            dns: section.dns.unwrap_or_default(),
            data_dir: PathBuf::from(
                section
                    .data_dir
                    .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
            ),
        })
    }

    /// Whether the range sets are the network record's (overlayctl's networks may leave them out).
    pub fn needs_record(&self) -> bool {
        self.ranges.is_none()
    }

    /// The configuration with its range sets checked: the given ones, or the network record's
    /// (`record`: the network's record, read when [`Conf::needs_record`]; none is code 108).
    pub fn complete(self, record: Option<&Network>) -> Result<IpamConfig, CniError> {
        let sets = match (self.ranges, record) {
            (Some(sets), _) => sets,
            (None, Some(record)) => Addressing::of(record).range_sets(),
            (None, None) => {
                return Err(CniError::new(
                    cni::codes::UNKNOWN_NETWORK,
                    format!(
                        "ipam gives no ranges and network {} has no record in etcd (overlayctl \
                         network create)",
                        self.network
                    ),
                ))
            }
        };
        Ok(IpamConfig {
            network: self.network,
            pools: pools(&sets, &self.exclude)?,
            routes: self.routes,
            dns: self.dns,
            etcd: self.settings.etcd,
            node: self.settings.node,
            data_dir: self.data_dir,
        })
    }
}

impl IpamConfig {
    /// A configuration that gives its ranges itself (tests; the plugin goes through [`Conf`]).
    pub fn from_netconf(conf: &NetConf) -> Result<Self, CniError> {
        Conf::parse(conf)?.complete(None)
    }
}

impl store::plugin::PluginConf for Conf {
    type Complete = IpamConfig;

    fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    fn network(&self) -> &str {
        &self.network
    }

    fn needs_record(&self) -> bool {
        Conf::needs_record(self)
    }

    fn complete(self, record: Option<&Network>) -> Result<IpamConfig, CniError> {
        Conf::complete(self, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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
    fn etcd_and_node_from_the_enclosing_object_and_both_must_agree() {
        let c = conf(
            json!({"type": "etcd-ipam", "subnet": "10.0.0.0/24"}),
            json!({"etcd": {"endpoints": ["a:1"]}, "node": "outer"}),
        )
        .unwrap();
        assert_eq!(
            (c.etcd.endpoints[0].as_str(), c.node.as_str()),
            ("a:1", "outer")
        );
        let e = conf(
            json!({"type": "etcd-ipam", "subnet": "10.0.0.0/24", "etcd": {"endpoints": ["b:1"]}, "node": "inner"}),
            json!({"etcd": {"endpoints": ["a:1"]}, "node": "outer"}),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("(a:1) and the ipam section (b:1)"), "{e}");
    }

    #[test]
    fn ranges_left_to_the_network_record() {
        let parse = |ipam: Value| {
            let obj = json!({"cniVersion": "1.0.0", "name": "demo", "type": "vxlan-overlay", "ipam": ipam});
            Conf::parse(&NetConf::parse(obj.to_string().as_bytes()).unwrap()).unwrap()
        };
        let base = json!({"type": "etcd-ipam", "etcd": {"endpoints": [ETCD]}, "node": "n", "exclude": ["10.0.0.0/28"]});
        let mut with_null = base.clone();
        with_null["ranges"] = Value::Null;
        let mut with_empty = base.clone();
        with_empty["ranges"] = json!([]);
        for ipam in [base.clone(), with_null, with_empty] {
            let c = parse(ipam);
            assert!(c.needs_record());
            assert_eq!(c.clone().complete(None).unwrap_err().code, 108);
            let record: Network = serde_json::from_value(json!({
                "name": "demo", "vni": 4096, "subnets": ["10.0.0.0/24", "fd00::/64"],
                "gateways": ["10.0.0.1", "fd00::1"], "ipRange": "10.0.0.128/25", "created": 0}))
            .unwrap();
            let cfg = c.complete(Some(&record)).unwrap();
            assert_eq!(cfg.pools.len(), 2);
            let r = &cfg.pools[0].ranges[0];
            assert_eq!(
                (r.start, r.end),
                ("10.0.0.129".parse().unwrap(), "10.0.0.254".parse().unwrap())
            );
            assert_eq!(
                cfg.pools[0].exclude.len(),
                1,
                "the configuration's exclusions stay"
            );
        }
        let mut given = base;
        given["subnet"] = json!("10.9.0.0/24");
        assert!(!parse(given).needs_record());
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
        assert_eq!(e(base(json!({}))), 108, "no ranges and no record");
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
                json!({"subnet": "10.0.0.0/24", "ranges": [[{"subnet": "10.1.0.0/24"}]]})
            )),
            7,
            "both forms"
        );
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
