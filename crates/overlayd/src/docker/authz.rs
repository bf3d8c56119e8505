//! `dockerd --authorization-plugin NAME`: the driver's socket is also an authorization plugin, so
//! that `docker network rm` of a network that containers on other hosts still use is refused
//! before Docker deletes anything. Docker deletes a network on its own host whatever the network
//! driver answers (libnetwork honours only its own ForbiddenError), so `DeleteNetwork` cannot refuse;
//! an authorization plugin is asked before the request is handled, and its "no" is the client's
//! error.
//!
//! Allowed: everything, except
//! * `DELETE /networks/<name, id or id prefix>` of a network of this driver whose record in etcd
//!   has endpoints on another host (endpoints on this host Docker refuses itself);
//! * `POST /networks/prune` while a network of this driver that prune would remove (no container
//!   attached on this host) has endpoints on another host.
//!
//! When etcd cannot be read, those two are refused (the removal would not reach etcd, and the
//! network would come back here), and nothing else is. The response check (`AuthZRes`) allows all.

use std::borrow::Cow;

use model::records::{self, Endpoint};
use store::{EtcdConfig, Store};
use tokio::sync::Mutex as AsyncMutex;

use super::engine::Engine;
use super::protocol::{AuthzAnswer, AuthzRequest};

/// What a request is to the check.
#[derive(Debug, PartialEq, Eq)]
pub enum Guarded<'a> {
    /// `DELETE /networks/<x>`: x as the client wrote it, percent-decoded as Docker's router does.
    RemoveNetwork(Cow<'a, str>),
    /// `POST /networks/prune`.
    PruneNetworks,
    Other,
}

/// Classifies an API request by method and URI (with or without the `/v1.41` version prefix, a
/// query ignored). Pure.
pub fn classify<'a>(method: &str, uri: &'a str) -> Guarded<'a> {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_start_matches('/');
    let path = match path.split_once('/') {
        Some((first, rest)) if is_version(first) => rest,
        _ => path,
    };
    let Some(target) = path.strip_prefix("networks/").filter(|t| !t.is_empty()) else {
        return Guarded::Other;
    };
    match method {
        "DELETE" => {
            Guarded::RemoveNetwork(percent_encoding::percent_decode_str(target).decode_utf8_lossy())
        }
        "POST" if target == "prune" => Guarded::PruneNetworks,
        _ => Guarded::Other,
    }
}

/// `v1.41`, `v1.24`: Docker's router takes `/v{version:[0-9.]+}`.
fn is_version(segment: &str) -> bool {
    segment
        .strip_prefix('v')
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// The endpoints held on hosts other than `here`, as a refusal names them:
/// `test2 on node2, test3 on node3, 2 more`; None when there are none. Pure.
pub fn held_elsewhere(endpoints: &[Endpoint], here: &str) -> Option<String> {
    let remote: Vec<&Endpoint> = endpoints.iter().filter(|e| e.node != here).collect();
    if remote.is_empty() {
        return None;
    }
    Some(records::holders(remote.iter().copied(), remote.len()))
}

/// The refusal of `docker network rm`. Pure.
pub fn remove_refusal(network: &str, holders: &str) -> String {
    format!("network {network} has active endpoints on other hosts: {holders}")
}

/// The refusal of `docker network prune`, given each network it would remove and its holders. Pure.
pub fn prune_refusal(held: &[(String, String)]) -> String {
    let list: Vec<String> = held
        .iter()
        .map(|(network, holders)| format!("{network} ({holders})"))
        .collect();
    format!(
        "network prune would remove cni-overlay networks that have active endpoints on other hosts: \
         {}; remove them with docker network rm once no container is attached anywhere",
        list.join("; ")
    )
}

pub struct Authz {
    engine: Engine,
    node: String,
    /// Its own connection: a decision never waits behind the driver's etcd calls.
    store: AsyncMutex<Store>,
}

impl Authz {
    pub fn new(engine: Engine, node: String, etcd: EtcdConfig) -> Result<Authz, String> {
        let store = Store::new(etcd).map_err(|e| e.to_string())?;
        Ok(Authz {
            engine,
            node,
            store: AsyncMutex::new(store),
        })
    }

    /// `AuthZPlugin.AuthZReq`.
    pub async fn request(&self, req: &AuthzRequest) -> AuthzAnswer {
        let decision = match classify(&req.method, &req.uri) {
            Guarded::Other => Ok(()),
            Guarded::RemoveNetwork(target) => self.check_remove(&target).await,
            Guarded::PruneNetworks => self.check_prune().await,
        };
        match decision {
            Ok(()) => AuthzAnswer::allow(),
            Err(msg) => {
                log::info!("docker authz: refused {} {}: {msg}", req.method, req.uri);
                AuthzAnswer::deny(msg)
            }
        }
    }

    async fn check_remove(&self, target: &str) -> Result<(), String> {
        // Docker resolves a name, an id or an id prefix the same way for inspect as for delete.
        let network = match self.engine.network(target).await {
            Ok(Some(n)) => n,
            // Docker answers that itself.
            Ok(None) => return Ok(()),
            // Never refuse what cannot be told to be ours.
            Err(e) => {
                log::warn!("docker authz: allowing network rm {target}: {e}");
                return Ok(());
            }
        };
        if network.driver != self.engine.driver() {
            return Ok(());
        }
        match self.endpoints(&network.name).await? {
            Some(holders) => Err(remove_refusal(&network.name, &holders)),
            None => Ok(()),
        }
    }

    async fn check_prune(&self) -> Result<(), String> {
        let ours = match self.engine.networks().await {
            Ok(list) => list,
            Err(e) => {
                log::warn!("docker authz: allowing network prune: {e}");
                return Ok(());
            }
        };
        let mut held = Vec::new();
        for listed in ours {
            // Prune leaves a network with a container attached here; inspect lists them.
            match self.engine.network(&listed.id).await {
                Ok(Some(n)) if n.containers.is_empty() => {}
                Ok(_) => continue,
                Err(e) => {
                    log::warn!("docker authz: network prune: {e}");
                    continue;
                }
            }
            if let Some(holders) = self.endpoints(&listed.name).await? {
                held.push((listed.name, holders));
            }
        }
        if held.is_empty() {
            Ok(())
        } else {
            Err(prune_refusal(&held))
        }
    }

    /// The holders of `network`'s endpoints on other hosts, from etcd; an unreadable etcd refuses.
    async fn endpoints(&self, network: &str) -> Result<Option<String>, String> {
        let mut store = self.store.lock().await;
        let endpoints = store::networks::endpoints(&mut store, network)
            .await
            .map_err(|e| {
                format!(
                    "cannot read the endpoints of network {network} in etcd ({e}); removing it now \
                     would not reach the other hosts and it would come back here: try again when \
                     etcd answers"
                )
            })?;
        Ok(held_elsewhere(&endpoints, &self.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: Option<&str>, id: &str, node: &str) -> Endpoint {
        Endpoint {
            network: "demo".into(),
            container_id: id.into(),
            ifname: "eth0".into(),
            name: name.map(str::to_string),
            aliases: Vec::new(),
            ips: vec!["10.0.0.3/24".parse().unwrap()],
            mac: "02:00:00:00:00:01".parse().unwrap(),
            node: node.into(),
            vtep: "192.168.205.11".parse().unwrap(),
            vni: model::types::Vni::new(256).unwrap(),
        }
    }

    #[test]
    fn network_removal_with_and_without_the_version_prefix() {
        for uri in [
            "/v1.41/networks/demo",
            "/networks/demo",
            "/v1.24/networks/demo?x=1",
        ] {
            assert_eq!(
                classify("DELETE", uri),
                Guarded::RemoveNetwork("demo".into()),
                "{uri}"
            );
        }
        assert_eq!(
            classify("DELETE", "/v1.41/networks/3f2a9c"),
            Guarded::RemoveNetwork("3f2a9c".into())
        );
    }

    #[test]
    fn percent_encoded_names_are_decoded_as_docker_routes_them() {
        assert_eq!(
            classify("DELETE", "/v1.41/networks/de%6Do"),
            Guarded::RemoveNetwork("demo".into())
        );
    }

    #[test]
    fn prune_is_guarded() {
        assert_eq!(
            classify("POST", "/v1.41/networks/prune?filters=%7B%7D"),
            Guarded::PruneNetworks
        );
        assert_eq!(classify("POST", "/networks/prune"), Guarded::PruneNetworks);
    }

    #[test]
    fn everything_else_is_not() {
        for (method, uri) in [
            ("GET", "/v1.41/networks/demo"),
            ("POST", "/v1.41/networks/create"),
            ("POST", "/v1.41/networks/demo/disconnect"),
            ("DELETE", "/v1.41/containers/test1?force=1"),
            ("DELETE", "/v1.41/networks/"),
            ("DELETE", "/v1.41/networks"),
            ("GET", "/_ping"),
            ("DELETE", "/vx/networks/demo"),
            ("GET", ""),
        ] {
            assert_eq!(classify(method, uri), Guarded::Other, "{method} {uri}");
        }
    }

    #[test]
    fn only_other_hosts_hold() {
        let here = [endpoint(Some("test1"), "e1", "node1")];
        assert_eq!(held_elsewhere(&here, "node1"), None);
        assert_eq!(held_elsewhere(&[], "node1"), None);
        let mixed = [
            endpoint(Some("test1"), "e1", "node1"),
            endpoint(Some("test2"), "e2", "node2"),
            endpoint(None, "0123456789abcdef", "node3"),
        ];
        assert_eq!(
            held_elsewhere(&mixed, "node1").as_deref(),
            Some("test2 on node2, 0123456789ab on node3")
        );
    }

    #[test]
    fn many_holders_are_counted() {
        let many: Vec<Endpoint> = (0..8)
            .map(|i| endpoint(Some(&format!("c{i}")), &format!("e{i}"), "node2"))
            .collect();
        assert_eq!(
            held_elsewhere(&many, "node1").as_deref(),
            Some("c0 on node2, c1 on node2, c2 on node2, c3 on node2, c4 on node2, 3 more")
        );
    }

    #[test]
    fn the_refusals_name_the_network_and_holders() {
        assert_eq!(
            remove_refusal("demo", "test2 on node2"),
            "network demo has active endpoints on other hosts: test2 on node2"
        );
        let prune = prune_refusal(&[
            ("demo".into(), "test2 on node2".into()),
            ("late".into(), "test4 on node3".into()),
        ]);
        assert!(
            prune.contains("demo (test2 on node2); late (test4 on node3)"),
            "{prune}"
        );
    }
}
