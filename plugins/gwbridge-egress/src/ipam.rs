//! Our interface's addresses: gwbridge-egress's own allocation, or the `ipam` section's plugin.
//!
//! Our own ([`Allocator::Builtin`]) hands out the lowest free address of the subnet; what is in
//! use is what the attachment records of the nftables table hold, read under the per-host lock
//! that every ADD, DEL and GC takes, so two ADDs never pick the same one, and a refused or undone
//! ADD leaves nothing behind.
//!
//! A delegate gets the attachment variables of *our* interface: `cni::invoke` hands it the
//! process environment unchanged, but CNI_IFNAME must be our `ifname`, not the chain's (the
//! allocation belongs to our interface, and must never share a key with the main plugin's), GC
//! needs other containers' ids, and the runtime's CNI_ARGS (requested addresses, the container's
//! name) are meant for the main network. So the environment of each call is set explicitly
//! instead of changing the process's.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cni::{codes, CniError, CniResult, Command, IpConfig};
use firewall::Firewall;
use ipnetwork::IpNetwork;
use model::addressing::{address, number, Pick, Pool};

use crate::config::Allocator;

/// host-local's directory of a pool (its default `dataDir`, the network name below it).
const HOST_LOCAL_DIR: &str = "/var/lib/cni/networks";

pub struct Ipam<'a> {
    pub allocator: &'a Allocator,
    /// The bridge: host-local's network name for our pool.
    pub bridge: &'a str,
    pub path: &'a [PathBuf],
}

/// Whose allocation: container id, our interface name, and the namespace path (may be empty).
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: &'a str,
}

impl Ipam<'_> {
    /// ADD. Our own: the lowest address that no attachment record of `fw` holds. A delegate's:
    /// when it fails, DEL is run before the error is returned (the spec's delegation rule).
    pub fn add(&self, who: Who, fw: &Firewall) -> Result<CniResult, CniError> {
        match self.allocator {
            Allocator::Builtin { pool, gateway, .. } => {
                let address = lowest_free(pool, &fw.attached_addresses()?).ok_or_else(|| {
                    CniError::new(
                        codes::POOL_EXHAUSTED,
                        format!(
                            "no free address left in {} (bridge {})",
                            gateway_subnet(*gateway),
                            self.bridge
                        ),
                    )
                })?;
                let address = IpNetwork::new(address, gateway.prefix())
                    .map_err(|e| CniError::new(codes::POOL_EXHAUSTED, e.to_string()))?;
                Ok(CniResult {
                    ips: vec![IpConfig {
                        address,
                        gateway: Some(gateway.ip()),
                        interface: None,
                    }],
                    ..Default::default()
                })
            }
            Allocator::Delegate { plugin_type, stdin } => {
                let path = self.cni_path();
                let result = cni::invoke::add_with(
                    plugin_type,
                    self.path,
                    stdin,
                    &overrides(&path, Some(who)),
                )?;
                // The delegate knows only its own pool: a configuration with an `ipam` section
                // beside one without on the same subnet, or two overlapping pools, would give one
                // address twice on this host.
                let attached = fw.attached_addresses()?;
                let Some(taken) = result
                    .ips
                    .iter()
                    .map(|ip| ip.address.ip())
                    .find(|a| attached.contains(a))
                else {
                    return Ok(result);
                };
                if let Err(e) = self.exec(plugin_type, stdin, Command::Del, Some(who)) {
                    log::warn!("releasing {taken} from {plugin_type}: {e}");
                }
                Err(CniError::new(
                    codes::ADDRESS_UNAVAILABLE,
                    format!(
                        "IPAM plugin {plugin_type} handed out {taken}, which another container \
                         already has on this host's gateway bridges (two pools share addresses)"
                    ),
                ))
            }
        }
    }

    /// DEL. Our own allocation goes with the attachment record; what is left to release is a
    /// lease host-local kept for the default configuration before gwbridge-egress had its own.
    pub fn del(&self, who: Who) -> Result<(), CniError> {
        match self.allocator {
            Allocator::Builtin { legacy_stdin, .. } => {
                self.release_legacy(legacy_stdin, who);
                Ok(())
            }
            Allocator::Delegate { plugin_type, stdin } => self
                .exec(plugin_type, stdin, Command::Del, Some(who))
                .map(drop),
        }
    }

    /// CHECK: a delegate's. Our own allocation is the attachment record, which CHECK compares
    /// with the interface's addresses itself.
    pub fn check(&self, who: Who) -> Result<(), CniError> {
        match self.allocator {
            Allocator::Builtin { .. } => Ok(()),
            Allocator::Delegate { plugin_type, stdin } => self
                .exec(plugin_type, stdin, Command::Check, Some(who))
                .map(drop),
        }
    }

    pub fn status(&self) -> Result<(), CniError> {
        match self.allocator {
            Allocator::Builtin { .. } => Ok(()),
            Allocator::Delegate { plugin_type, stdin } => self
                .exec(plugin_type, stdin, Command::Status, None)
                .map(drop),
        }
    }

    /// Releases `who`'s lease in host-local's directory of our pool, if that directory exists
    /// (an upgraded host), and removes the directory once no lease is left in it, so that a host
    /// drains it with its last pre-upgrade container and then never looks again. A failure is
    /// logged, not returned: the lease blocks no address of ours, while a DEL that fails keeps
    /// failing.
    fn release_legacy(&self, legacy_stdin: &[u8], who: Who) {
        let dir = Path::new(HOST_LOCAL_DIR).join(self.bridge);
        if !dir.is_dir() {
            return;
        }
        if let Err(e) = self.exec("host-local", legacy_stdin, Command::Del, Some(who)) {
            log::warn!(
                "releasing {}/{}'s host-local lease in {}: {e}",
                who.container_id,
                who.ifname,
                dir.display()
            );
            return;
        }
        if holds_no_lease(&dir) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                log::warn!("removing {}: {e}", dir.display());
            }
        }
    }

    fn exec(
        &self,
        plugin_type: &str,
        stdin: &[u8],
        command: Command,
        who: Option<Who>,
    ) -> Result<Vec<u8>, CniError> {
        let path = self.cni_path();
        cni::invoke::exec_with(
            plugin_type,
            command,
            self.path,
            stdin,
            &overrides(&path, who),
        )
    }

    fn cni_path(&self) -> String {
        std::env::join_paths(self.path)
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }
}

/// The lowest address of `pool` that is not in `used`; None when every one is.
pub fn lowest_free(pool: &Pool, used: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let v6 = pool.is_v6();
    // A BTreeSet orders each family's addresses numerically, as `pick` wants them.
    let used: Vec<u128> = used
        .iter()
        .filter(|a| a.is_ipv6() == v6)
        .map(|a| number(*a))
        .collect();
    match pool.pick(0, &used, false, 0) {
        Pick::Free(n) => Some(address(n, v6)),
        Pick::ReadFrom(_) | Pick::EndOfPool => None,
    }
}

fn gateway_subnet(gateway: IpNetwork) -> IpNetwork {
    IpNetwork::new(gateway.network(), gateway.prefix()).unwrap_or(gateway)
}

/// Whether host-local's directory holds no lease: nothing but its lock and its cursors.
fn holds_no_lease(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().all(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name == "lock" || name.starts_with("last_reserved_ip")
    })
}

/// The delegate's environment: our interface's attachment (or none, for STATUS), the CNI_PATH we
/// were given, and no CNI_ARGS (they are meant for the main network).
fn overrides<'a>(path: &'a str, who: Option<Who<'a>>) -> Vec<(&'static str, Option<&'a str>)> {
    let mut overrides = vec![("CNI_ARGS", Some("")), ("CNI_PATH", Some(path))];
    match who {
        Some(who) => overrides.extend([
            ("CNI_CONTAINERID", Some(who.container_id)),
            ("CNI_IFNAME", Some(who.ifname)),
            ("CNI_NETNS", Some(who.netns)),
        ]),
        None => overrides.extend([
            ("CNI_CONTAINERID", None),
            ("CNI_IFNAME", None),
            ("CNI_NETNS", None),
        ]),
    }
    overrides
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::addressing::{pools, RangeSpec};

    fn pool(subnet: &str) -> Pool {
        pools(
            &[vec![RangeSpec::parse(subnet, None, None, None).unwrap()]],
            &[],
        )
        .unwrap()
        .remove(0)
    }

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_lowest_free_address_after_the_gateway() {
        let p = pool("172.18.0.0/16");
        assert_eq!(
            lowest_free(&p, &ips(&[])),
            Some("172.18.0.2".parse().unwrap())
        );
        // A gap left by a released container is filled first; other families do not count.
        let used = ips(&["172.18.0.2", "172.18.0.4", "fd00::3", "10.0.0.3"]);
        assert_eq!(lowest_free(&p, &used), Some("172.18.0.3".parse().unwrap()));
    }

    #[test]
    fn a_full_subnet_has_none() {
        // /29: .1 is the gateway, .2-.6 to hand out, .7 the broadcast.
        let p = pool("192.168.7.0/29");
        let used = ips(&["192.168.7.2", "192.168.7.3", "192.168.7.4", "192.168.7.5"]);
        assert_eq!(lowest_free(&p, &used), Some("192.168.7.6".parse().unwrap()));
        let all = ips(&[
            "192.168.7.2",
            "192.168.7.3",
            "192.168.7.4",
            "192.168.7.5",
            "192.168.7.6",
        ]);
        assert_eq!(lowest_free(&p, &all), None);
    }

    #[test]
    fn only_the_lock_and_cursors_mean_no_lease() {
        let dir = std::env::temp_dir().join(format!("gw-legacy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("lock"), "").unwrap();
        std::fs::write(dir.join("last_reserved_ip.0"), "172.18.0.9").unwrap();
        assert!(holds_no_lease(&dir));
        std::fs::write(dir.join("172.18.0.9"), "c1\r\ngwb0").unwrap();
        assert!(!holds_no_lease(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            !holds_no_lease(&dir),
            "a directory that is not there says nothing"
        );
    }
}
