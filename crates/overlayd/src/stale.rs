//! Coming back: this host's attachments that were released while it was gone.
//!
//! A host that was gone longer than the grace period comes back to containers whose addresses and
//! names the reclaimer (or `overlayctl node rm`) gave up, and that may be someone else's now. Such
//! an attachment must not be served twice: each one is taken off the overlay, its host veth down
//! (a container end without carrier sends and receives nothing; the bridge forgets what it learnt
//! on the port), and logged. No other host has an FDB or neighbour entry for it any more: those
//! follow the endpoint records, which are gone. The veth stays down until the runtime's DEL
//! removes it; that DEL succeeds and frees nothing of the new owners' ([`store::release`]).
//!
//! An attachment is stale when its endpoint record is missing or another node's, or its
//! allocation (etcd-ipam's owner record) is another node's. An allocation that is simply missing
//! says nothing: with host-local as IPAM there is none. Only veths that are ports of one of our
//! bridges (`ovbr<vni>` with the alias `cni-overlay:<network>`) and carry an attachment alias
//! (`<container id>/<ifname>`, on the name vxlan-overlay derives from it) count.
//!
//! An ADD in flight is never mistaken for a stale attachment: vxlan-overlay writes the endpoint
//! record before it creates the veth (the MAC in the record is derived, see
//! [`model::names::endpoint_mac`]), and this check reads etcd after listing the links, so every
//! veth it lists has its record unless it was released. (DEL and GC remove the veth before the
//! record, or remove both anyway.)
//!
//! It runs at start (the first listing of the endpoint records), on every resync
//! ([`crate::peers::RESYNC_EVERY`]), and whenever an endpoint record of this node is deleted
//! (`node rm --force` of a live node takes effect at once; then only the attachment of the
//! deleted record is looked at).

use std::collections::{HashMap, HashSet};

use model::names;
use model::records::{self, Allocation, Endpoint};
use netops::{Link, Netlink};
use store::etcd_client::{Txn, TxnOp, TxnOpResponse};
use store::Store;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::endpoints::Change;
use crate::error::Error;
use crate::peers::RESYNC_EVERY;

/// Gets per transaction (two per attachment), well under etcd's 128.
const READS_PER_TXN: usize = 100;

/// A container veth on one of our bridges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub link: String,
    pub index: u32,
    pub up: bool,
}

/// The container veths on our bridges, from one listing of the host's links.
pub fn ports(links: &[Link]) -> Vec<Port> {
    let bridges: HashMap<u32, &str> = links
        .iter()
        .filter_map(|l| Some((l.index, crate::watch::bridge_network(l)?.0)))
        .collect();
    links
        .iter()
        .filter(|l| l.kind == "veth")
        .filter_map(|l| {
            let network = bridges.get(&l.master?)?;
            let (container_id, ifname) = names::parse_attachment_alias(l.alias.as_deref()?)?;
            (l.name == names::host_veth(container_id, ifname)).then(|| Port {
                network: network.to_string(),
                container_id: container_id.into(),
                ifname: ifname.into(),
                link: l.name.clone(),
                index: l.index,
                up: l.up,
            })
        })
        .collect()
}

/// Why an attachment of `node` is stale, if it is: given its endpoint record and its allocation
/// as etcd has them (None: no such key; Err: unreadable, which proves nothing).
pub fn verdict<E, A>(
    node: &str,
    endpoint: Option<Result<Endpoint, E>>,
    allocation: Option<Result<Allocation, A>>,
) -> Option<String> {
    match endpoint {
        None => {
            return Some("its endpoint record is gone (released while this host was gone?)".into())
        }
        Some(Ok(e)) if e.node != node => {
            return Some(format!("its endpoint record is node {}'s now", e.node))
        }
        _ => {}
    }
    match allocation {
        Some(Ok(a)) if a.node != node => Some(format!("its allocation is node {}'s now", a.node)),
        _ => None,
    }
}

pub struct Stale {
    node: String,
    nl: Netlink,
    /// Ports reported already (by link name), so that each is logged once.
    reported: HashSet<String>,
}

impl Stale {
    pub fn new(node: String, nl: Netlink) -> Stale {
        Stale {
            node,
            nl,
            reported: HashSet::new(),
        }
    }

    /// Takes every stale attachment off the overlay; how many are off it now.
    pub async fn check(&mut self, store: &mut Store) -> Result<usize, Error> {
        let ports = ports(&self.nl.links().await?);
        self.reported
            .retain(|name| ports.iter().any(|p| &p.link == name));
        self.judge(store, &ports).await
    }

    /// The one attachment whose endpoint record was deleted: stale if its veth is still here
    /// (`node rm --force` of a live node). A DEL removes the veth before the record, so a DEL
    /// costs a link lookup and no etcd read; checking every attachment of the host on each
    /// deletion read two keys per attachment from etcd per DEL (scripts/bench.sh fleet's churn).
    pub async fn check_attachment(
        &mut self,
        store: &mut Store,
        container_id: &str,
        ifname: &str,
    ) -> Result<usize, Error> {
        let Some(veth) = self
            .nl
            .link(&names::host_veth(container_id, ifname))
            .await?
        else {
            return Ok(0);
        };
        let Some(bridge) = (match veth.master {
            Some(index) => self.nl.link_by_index(index).await?,
            None => None,
        }) else {
            return Ok(0);
        };
        let ports: Vec<Port> = ports(&[bridge, veth])
            .into_iter()
            .filter(|p| p.container_id == container_id && p.ifname == ifname)
            .collect();
        self.judge(store, &ports).await
    }

    /// Reads the records of `ports` and takes the stale ones off the overlay; how many.
    async fn judge(&mut self, store: &mut Store, ports: &[Port]) -> Result<usize, Error> {
        if ports.is_empty() {
            return Ok(0);
        }
        let keys = store.keys().clone();
        let mut stale = Vec::new();
        for chunk in ports.chunks(READS_PER_TXN / 2) {
            let mut reads = Vec::new();
            for p in chunk {
                reads.push(TxnOp::get(
                    keys.endpoint(&p.network, &p.container_id, &p.ifname),
                    None,
                ));
                reads.push(TxnOp::get(
                    keys.owner(&p.network, &p.container_id, &p.ifname),
                    None,
                ));
            }
            let resp = store.txn(Txn::new().and_then(reads)).await?;
            let mut found = resp.op_responses().into_iter().map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            for p in chunk {
                let endpoint = found
                    .next()
                    .flatten()
                    .map(|kv| records::decode::<Endpoint>(kv.key(), kv.value()));
                let allocation = found
                    .next()
                    .flatten()
                    .map(|kv| records::decode::<Allocation>(kv.key(), kv.value()));
                if let Some(why) = verdict(&self.node, endpoint, allocation) {
                    stale.push((p.clone(), why));
                }
            }
        }
        for (port, why) in &stale {
            self.isolate(port, why).await;
        }
        Ok(stale.len())
    }

    async fn isolate(&mut self, port: &Port, why: &str) {
        let what = format!(
            "{} (attachment {}/{} of network {})",
            port.link, port.container_id, port.ifname, port.network
        );
        if port.up {
            match self.nl.set_down(port.index).await {
                Ok(()) => log::warn!(
                    "took {what} off the overlay: {why}; it stays down until the runtime's DEL"
                ),
                // Deleted meanwhile (a DEL): nothing left to do.
                Err(e) if e.errno() == Some(libc::ENODEV) => return,
                Err(e) => {
                    log::warn!("taking {what} off the overlay ({why}): {e}");
                    return;
                }
            }
        } else if !self.reported.contains(&port.link) {
            log::info!("{what} is off the overlay: {why}");
        }
        self.reported.insert(port.link.clone());
    }
}

/// Checks at start, on every resync and when this node's records are deleted, until aborted.
pub async fn run(
    mut store: Store,
    node: String,
    mut changes: UnboundedReceiver<Change>,
) -> Result<(), Error> {
    let mut stale = Stale::new(node.clone(), Netlink::current().await?);
    let mut resync = interval_at(Instant::now() + RESYNC_EVERY, RESYNC_EVERY);
    resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Nothing before the first listing: until etcd has been read, nothing is known to be gone.
    let mut listed = false;
    loop {
        // None: every attachment; Some: the one whose record was deleted.
        let (why, only) = tokio::select! {
            change = changes.recv() => match change {
                Some(Change::Reset(..)) => {
                    listed = true;
                    ("fresh listing", None)
                }
                Some(Change::Delete { previous, .. }) if previous.node == node => {
                    ("a record of this node was deleted", Some(previous))
                }
                Some(_) => continue,
                None => {
                    return Err(Error::Task {
                        task: "stale attachments",
                        reason: "the endpoint cache went away".into(),
                    })
                }
            },
            _ = resync.tick() => ("periodic", None),
        };
        if !listed {
            continue;
        }
        let checked = match &only {
            Some(e) => {
                stale
                    .check_attachment(&mut store, &e.container_id, &e.ifname)
                    .await
            }
            None => stale.check(&mut store).await,
        };
        match checked {
            Ok(0) => log::debug!("stale check ({why}): none"),
            Ok(n) => log::debug!("stale check ({why}): {n} attachments off the overlay"),
            Err(e) => {
                store.reset();
                log::warn!("stale check ({why}): {e}; tried again at the next resync");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, kind: &str, master: Option<u32>, alias: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.into(),
            mac: None,
            mtu: 1450,
            master,
            up: true,
            alias: alias.map(str::to_string),
            peer_index: None,
            vxlan_id: None,
        }
    }

    #[test]
    fn only_attachment_veths_on_our_bridges_count() {
        let ours = names::host_veth("c1", "eth0");
        let links = vec![
            link(1, "ovbr4096", "bridge", None, Some("cni-overlay:demo")),
            link(2, "ovbr4097", "bridge", None, Some("someone else's")),
            link(3, "br0", "bridge", None, Some("cni-overlay:fake")),
            link(10, &ours, "veth", Some(1), Some("c1/eth0")),
            // The gateway sandbox's veth and the VXLAN device: no attachment alias.
            link(11, "ovgw4096", "veth", Some(1), None),
            link(12, "ovx4096", "vxlan", Some(1), None),
            // Not ours: a stranger's bridge, no bridge, a name that is not the alias's.
            link(
                13,
                &names::host_veth("c2", "eth0"),
                "veth",
                Some(2),
                Some("c2/eth0"),
            ),
            link(
                14,
                &names::host_veth("c3", "eth0"),
                "veth",
                Some(3),
                Some("c3/eth0"),
            ),
            link(
                15,
                &names::host_veth("c4", "eth0"),
                "veth",
                None,
                Some("c4/eth0"),
            ),
            link(16, "vethabc", "veth", Some(1), Some("c5/eth0")),
        ];
        assert_eq!(
            ports(&links),
            [Port {
                network: "demo".into(),
                container_id: "c1".into(),
                ifname: "eth0".into(),
                link: ours,
                index: 10,
                up: true,
            }]
        );
    }

    #[test]
    fn stale_when_released_or_someone_elses() {
        let endpoint = |node: &str| -> Option<Result<Endpoint, ()>> {
            Some(Ok(Endpoint {
                network: "demo".into(),
                container_id: "c1".into(),
                ifname: "eth0".into(),
                name: None,
                aliases: Vec::new(),
                ips: Vec::new(),
                mac: "02:00:00:00:00:01".parse().unwrap(),
                node: node.into(),
                vtep: "192.0.2.1".parse().unwrap(),
                vni: model::Vni::new(1).unwrap(),
            }))
        };
        let allocation = |node: &str| -> Option<Result<Allocation, ()>> {
            Some(Ok(Allocation {
                container_id: "c1".into(),
                ifname: "eth0".into(),
                node: node.into(),
                name: None,
                ips: Vec::new(),
            }))
        };
        assert_eq!(verdict("n2", endpoint("n2"), allocation("n2")), None);
        // host-local as IPAM: no allocation at all.
        let none_yet: Option<Result<Allocation, ()>> = None;
        assert_eq!(verdict("n2", endpoint("n2"), none_yet), None);
        // Unreadable: proves nothing.
        assert_eq!(verdict("n2", Some(Err(())), allocation("n2")), None);
        assert_eq!(verdict("n2", endpoint("n2"), Some(Err(()))), None);
        assert!(verdict::<(), ()>("n2", None, None)
            .unwrap()
            .contains("endpoint record is gone"));
        assert!(verdict::<(), ()>("n2", None, allocation("n2")).is_some());
        assert_eq!(
            verdict("n2", endpoint("n1"), allocation("n2")).as_deref(),
            Some("its endpoint record is node n1's now")
        );
        assert_eq!(
            verdict("n2", endpoint("n2"), allocation("n1")).as_deref(),
            Some("its allocation is node n1's now")
        );
    }
}
