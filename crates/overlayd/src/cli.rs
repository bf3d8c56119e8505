//! Command-line options (each also readable from an `OVERLAYD_*` environment variable, for
//! systemd units and containers) and the etcd configuration built from them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use store::cli::{EtcdArgs, Tuning};
use store::EtcdConfig;

use crate::error::Error;

/// The budget of one etcd request, failover included. Shorter than the store's default (which
/// suits plugins) so that a dead member is left quickly and keep-alives stay on time.
pub const ETCD_TIMEOUT_MS: u64 = 3000;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "overlayd",
    version,
    about = "cni-overlay host agent: registers this node in etcd and keeps the VXLAN forwarding \
             entries for the containers of other hosts",
    after_help = "Also: overlayd install-cni --help (installs the plugins and a conflist on this node)"
)]
pub struct Args {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// This host's node name: the `node` the vxlan-overlay plugin writes into this host's
    /// endpoint records.
    #[arg(long, env = "OVERLAYD_NODE")]
    pub node: String,

    /// This host's VTEP address, as published in the node record. Default: the address of the
    /// interface that carries the default route.
    #[arg(long, env = "OVERLAYD_VTEP")]
    pub vtep: Option<IpAddr>,

    /// TTL of the node's lease in seconds: how long after this host dies its node record stays.
    #[arg(long, env = "OVERLAYD_LEASE_TTL", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(2..=86_400))]
    pub lease_ttl: u64,

    /// How long a node must have had no lease (its overlayd dead or cut off) before what it holds
    /// (addresses, names, endpoint records) is released by the elected reclaimer: a duration such
    /// as 90s, 10m or 1h30m; 0 turns automatic reclaim off for this overlayd.
    #[arg(long, env = "OVERLAYD_RECLAIM_AFTER", default_value = crate::reclaim::DEFAULT_AFTER,
          value_parser = crate::reclaim::parse_after)]
    pub reclaim_after: Duration,

    /// Attachments released per etcd transaction when reclaiming.
    #[arg(long, env = "OVERLAYD_RECLAIM_BATCH", default_value_t = store::nodes::DEFAULT_BATCH as u64,
          value_parser = clap::value_parser!(u64).range(1..=50))]
    pub reclaim_batch: u64,

    /// Serve DNS for each network's container names at its gateway address (the default).
    #[arg(long, overrides_with = "no_dns")]
    pub dns: bool,

    /// Do not serve DNS.
    #[arg(long, env = "OVERLAYD_NO_DNS", overrides_with = "dns")]
    pub no_dns: bool,

    /// Resolvers for names that are not containers', IP[:PORT], comma-separated. Default: the
    /// nameservers of /etc/resolv.conf as overlayd sees it.
    #[arg(long, env = "OVERLAYD_DNS_UPSTREAM", value_delimiter = ',',
          value_parser = crate::dns::forward::parse_upstream)]
    pub dns_upstream: Vec<SocketAddr>,

    /// Where to keep one conflist per network of etcd (the runtimes' CNI configuration directory).
    #[arg(long, env = "OVERLAYD_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: std::path::PathBuf,

    /// Do not write conflists.
    #[arg(long, env = "OVERLAYD_NO_CONFLISTS")]
    pub no_conflists: bool,

    /// Where to serve /healthz, /readyz and /metrics over HTTP, IP:PORT, or `off`. Loopback by
    /// default: with hostNetwork, a kubelet's probes reach it there, and nothing else does.
    #[arg(long, env = "OVERLAYD_METRICS_ADDR", default_value = DEFAULT_METRICS_ADDR,
          value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,

    /// Also serve a Docker network and IPAM driver of this name (`docker network create -d NAME
    /// --ipam-driver NAME`), and keep the local Docker's networks of it equal to etcd's records.
    #[arg(long, env = "OVERLAYD_DOCKER_PLUGIN", value_name = "NAME")]
    pub docker_plugin: Option<String>,

    /// Where Docker looks for plugin sockets: the driver listens on DIR/NAME.sock.
    #[arg(
        long,
        env = "OVERLAYD_DOCKER_PLUGIN_DIR",
        default_value = "/run/docker/plugins"
    )]
    pub docker_plugin_dir: std::path::PathBuf,

    /// The local Docker Engine API (dockerd -H), a unix socket path.
    #[arg(long, env = "OVERLAYD_DOCKER_HOST", default_value = "/run/docker.sock")]
    pub docker_host: String,
}

pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9393";

/// `--metrics-addr`: an address, or None for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s == "off" {
        return Ok(MetricsAddr(None));
    }
    s.parse()
        .map(|a| MetricsAddr(Some(a)))
        .map_err(|_| format!("{s:?} is not IP:PORT or off"))
}

/// overlayd's etcd flags: `--etcd` required, also read from `OVERLAYD_*`.
const ETCD_FLAGS: Tuning = Tuning {
    env_prefix: "OVERLAYD",
    default_endpoint: None,
    timeout_ms: ETCD_TIMEOUT_MS,
    global: false,
};

impl Args {
    /// Parses a command line (the process's: `std::env::args_os()`).
    pub fn try_parse_args<I, T>(args: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        store::cli::parse(args, &ETCD_FLAGS)
    }

    /// The store configuration; invalid values are refused here, before anything starts.
    pub fn etcd_config(&self) -> Result<EtcdConfig, Error> {
        let config = self.etcd.config();
        config.validate()?;
        Ok(config)
    }

    /// The node name must be usable as one etcd key segment, and match what the plugin accepts.
    pub fn validate_node(&self) -> Result<(), Error> {
        model::types::check_node_name(&self.node).map_err(|e| Error::Config(format!("--node: {e}")))
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl)
    }

    /// The reclaimer's settings.
    pub fn reclaim(&self) -> crate::reclaim::Settings {
        crate::reclaim::Settings {
            node: self.node.clone(),
            after: self.reclaim_after,
            batch: self.reclaim_batch as usize,
        }
    }

    /// DNS is on unless --no-dns came last.
    pub fn dns_enabled(&self) -> bool {
        !self.no_dns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_args(std::iter::once("overlayd").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_comma_separated_endpoints() {
        let a = parse(&["--etcd", "10.0.0.1:2379,http://e2:2379", "--node", "n1"]).unwrap();
        assert_eq!(a.etcd.etcd, ["10.0.0.1:2379", "http://e2:2379"]);
        assert_eq!(a.lease_ttl, 10);
        assert_eq!(a.vtep, None);
        assert_eq!(
            a.metrics_addr,
            MetricsAddr(Some("127.0.0.1:9393".parse().unwrap()))
        );
        let c = a.etcd_config().unwrap();
        assert_eq!(c.prefix, "/cni-overlay");
        assert_eq!(c.timeout_ms, ETCD_TIMEOUT_MS);
        assert_eq!(c.tls, None);
        a.validate_node().unwrap();
        assert!(a.dns_enabled());
        assert!(a.dns_upstream.is_empty());
        let r = a.reclaim();
        assert_eq!(
            (r.node.as_str(), r.after.as_secs(), r.batch),
            ("n1", 600, 32)
        );
    }

    #[test]
    fn reclaim_flags() {
        let base = ["--etcd", "h:1", "--node", "n"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        let r = with(&["--reclaim-after", "90s", "--reclaim-batch", "1"])
            .unwrap()
            .reclaim();
        assert_eq!((r.after.as_secs(), r.batch), (90, 1));
        assert!(with(&["--reclaim-after", "0"])
            .unwrap()
            .reclaim()
            .after
            .is_zero());
        assert!(
            with(&["--reclaim-after", "90"]).is_err(),
            "a unit is needed"
        );
        assert!(with(&["--reclaim-batch", "0"]).is_err());
        assert!(with(&["--reclaim-batch", "51"]).is_err());
    }

    #[test]
    fn dns_flags() {
        let base = ["--etcd", "h:1", "--node", "n"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat()).unwrap();
        assert!(!with(&["--no-dns"]).dns_enabled());
        assert!(
            with(&["--no-dns", "--dns"]).dns_enabled(),
            "the last one wins"
        );
        assert!(!with(&["--dns", "--no-dns"]).dns_enabled());
        assert_eq!(
            with(&["--dns-upstream", "203.0.113.1,[fd00::1]:5353"]).dns_upstream,
            [
                "203.0.113.1:53".parse::<SocketAddr>().unwrap(),
                "[fd00::1]:5353".parse().unwrap()
            ]
        );
        assert!(parse(&[&base[..], &["--dns-upstream", "dns.example"]].concat()).is_err());
    }

    #[test]
    fn tls_and_credentials() {
        let a = parse(&[
            "--etcd=h:2379",
            "--node=n1",
            "--etcd-ca=/ca.pem",
            "--etcd-cert=/c.pem",
            "--etcd-key=/k.pem",
            "--etcd-user=u",
            "--etcd-password=p",
            "--etcd-prefix=/other",
            "--vtep=192.0.2.1",
            "--lease-ttl=5",
        ])
        .unwrap();
        let c = a.etcd_config().unwrap();
        assert_eq!(c.urls(), ["https://h:2379"]);
        let tls = c.tls.unwrap();
        assert_eq!(tls.ca.as_deref(), Some("/ca.pem"));
        assert_eq!(tls.key.as_deref(), Some("/k.pem"));
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.prefix, "/other");
        assert_eq!(a.vtep, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(a.lease_ttl(), Duration::from_secs(5));
    }

    #[test]
    fn refuses_bad_values() {
        assert!(parse(&["--node", "n1"]).is_err(), "--etcd is required");
        assert!(parse(&["--etcd", "h:1"]).is_err(), "--node is required");
        assert!(parse(&["--etcd", "h:1", "--node", "n", "--lease-ttl", "1"]).is_err());
        assert!(parse(&["--etcd", "h:1", "--node", "n", "--etcd-user", "u"]).is_err());
        assert!(parse(&["--etcd", "h:1", "--node", "n", "--etcd-cert", "c"]).is_err());
        assert!(parse(&["--etcd", "h:1", "--node", "n", "--vtep", "x"]).is_err());
        assert!(parse(&["--etcd", "h:1", "--node", "n", "--metrics-addr", "9393"]).is_err());
        let off = parse(&["--etcd", "h:1", "--node", "n", "--metrics-addr", "off"]).unwrap();
        assert_eq!(off.metrics_addr, MetricsAddr(None));
        let bad_prefix = parse(&["--etcd", "h:1", "--node", "n", "--etcd-prefix", "p/"]).unwrap();
        assert!(bad_prefix.etcd_config().is_err());
        let bad_endpoint = parse(&["--etcd", "nohost", "--node", "n"]).unwrap();
        assert!(bad_endpoint.etcd_config().is_err());
        for node in ["", "-a", "a/b", "a b"] {
            let a = parse(&["--etcd", "h:1", &format!("--node={node}")]).unwrap();
            assert!(a.validate_node().is_err(), "{node:?}");
        }
    }
}
