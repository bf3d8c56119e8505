//! The nftables rules of gwbridge-egress: masquerade for a gateway bridge's subnet, icc=false
//! filtering on it, and its containers' published ports (DNAT) and records. (The isolation of
//! vxlan-overlay's hostAccess bridges is a separate module, [`overlay_isolation`], with a table of
//! its own.)
//!
//! Everything lives in one table of our own, `table inet cni_gwbridge`, so that nothing of the
//! host's own firewall (or of another tool's) is touched, and so that removing the table when the
//! last user leaves puts the host back exactly as it was:
//!
//! ```text
//! table inet cni_gwbridge {
//!   chain prerouting  { type nat hook prerouting priority dstnat; policy accept;
//!     fib daddr type local jump published comment "gwbridge-egress base" }
//!   chain output      { type nat hook output priority dstnat; policy accept;
//!     ip daddr 127.0.0.0/8 return comment "gwbridge-egress base"
//!     ip6 daddr ::1 return comment "gwbridge-egress base"
//!     fib daddr type local jump published comment "gwbridge-egress base" }
//!   chain published {
//!     meta nfproto ipv4 tcp dport 8080 dnat ip to 172.18.0.2:80 comment "demo:<container id>/eth1"
//!     ip daddr 192.168.205.10 udp dport 5353 dnat ip to 172.18.0.2:53 comment "demo:<container id>/eth1" }
//!   chain attachments {
//!     ip saddr 172.18.0.2 return comment "demo:<container id>/eth1" }
//!   chain forward     { type filter hook forward priority filter; policy accept;
//!     iifname "cni_gwbridge" oifname "cni_gwbridge" ct status dnat accept comment "bridge cni_gwbridge icc-published"
//!     iifname "cni_gwbridge" oifname "cni_gwbridge" drop comment "bridge cni_gwbridge icc-drop" }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr 172.18.0.0/16 oifname != "cni_gwbridge" masquerade comment "bridge cni_gwbridge masquerade 172.18.0.0/16"
//!     ip saddr 172.18.0.0/16 oifname "cni_gwbridge" ct status dnat masquerade comment "bridge cni_gwbridge hairpin 172.18.0.0/16"
//!     oifname "cni_gwbridge" ct status dnat fib saddr type local masquerade comment "bridge cni_gwbridge local" }
//! }
//! ```
//!
//! Rules are identified by their comment, never by their position: a container's rules carry its
//! tag ([`tag`]: network, container id, interface), a bridge's rules `bridge <name> <what>`, the
//! fixed rules `gwbridge-egress base`. `attachments` is never jumped to: its rules cost nothing and
//! record every attachment on the host, published ports or not, so that GC finds the attachments of
//! containers that died without a DEL.
//!
//! Rules are written through the `nftables` crate: typed JSON handed to `nft -j -f -`, so that one
//! call is one kernel transaction (all of a container's mappings appear, or none), container ids
//! need no quoting, and the table is read back as typed data rather than by parsing `nft list`
//! text. (The crate drives the `nft` binary; netlink batches by hand would be far more code for the
//! same transaction.)
//!
//! The forward rules exist only for bridges without inter-container communication (icc=false):
//! container to container over the bridge is dropped, except connections to published ports
//! (hairpin). They see bridged frames when br_netfilter hands them to the IP hooks
//! (bridge-nf-call-iptables=1), and routed ones always; the caller adds port isolation when
//! br_netfilter does not (isolated ports would also drop the bridged hairpin DNAT).
//!
//! Callers serialize check-and-add across processes (gwbridge-egress holds a per-host lock): the
//! port conflict check in [`Firewall::add_container`] and the addition are atomic only under it.

pub mod overlay_isolation;

pub use overlay_isolation::OverlayIsolation;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use nftables::batch::Batch;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix, CT,
};
use nftables::helper::{self, NftablesError};
use nftables::schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{JumpTarget, Match, NATFamily, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// The table every gwbridge-egress rule lives in.
pub const TABLE: &str = "cni_gwbridge";

const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
const POSTROUTING: &str = "postrouting";
const FORWARD: &str = "forward";
/// The regular chain holding the DNAT rules, jumped to from prerouting and output for packets to
/// one of the host's own addresses.
const PUBLISHED: &str = "published";
/// The regular chain that records attachments; nothing jumps to it.
const ATTACHMENTS: &str = "attachments";

/// The comment of the fixed rules created with the table.
const BASE_COMMENT: &str = "gwbridge-egress base";

/// nft refuses comments longer than this.
const MAX_COMMENT: usize = 128;

/// The nat priorities of iptables (`dstnat`, `srcnat`), so our rules run where NAT rules usually do.
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;
/// The `filter` priority.
const FILTER: i32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host port and protocol already has a DNAT rule on this host.
    #[error("host port {port}/{protocol} is already published on this host by {holder}")]
    PortInUse {
        protocol: Protocol,
        port: u16,
        /// The tag of the rule's owner (`<network>:<container id>/<ifname>`).
        holder: String,
    },
    /// `nft` could not be run, or refused the request.
    #[error("nftables: {action}: {message}")]
    Nft { action: String, message: String },
}

impl Error {
    fn nft(action: &str, err: NftablesError) -> Error {
        let message = match err {
            NftablesError::NftFailed { stderr, stdout, .. } => {
                let text = if stderr.trim().is_empty() {
                    stdout
                } else {
                    stderr
                };
                text.trim().to_string()
            }
            other => other.to_string(),
        };
        Error::Nft {
            action: action.to_string(),
            message,
        }
    }
}

/// The one mapping into CNI errors: a taken port is 106, every other failure 105.
impl From<Error> for cni::CniError {
    fn from(err: Error) -> cni::CniError {
        let code = match err {
            Error::PortInUse { .. } => cni::codes::PORT_IN_USE,
            Error::Nft { .. } => cni::codes::FIREWALL,
        };
        cni::CniError::new(code, err.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// "tcp" or "udp", in any case.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port: packets to `host_port` on the host's addresses (only `host_ip` when given)
/// go to `container_addr:container_port`. One family: `host_ip`, when set, has the family of
/// `container_addr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mapping {
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_addr: IpAddr,
    pub container_port: u16,
}

impl Mapping {
    /// Whether a packet could be meant for both this mapping and one of `protocol` on `host_ip`
    /// (None: every address) and `host_port`: same protocol and port, and host addresses that
    /// overlap (either is every address, or both name the same one). Mappings on two different
    /// addresses of the host do not collide, as with Docker.
    pub fn overlaps(&self, protocol: Protocol, host_ip: Option<IpAddr>, host_port: u16) -> bool {
        self.protocol == protocol
            && self.host_port == host_port
            && match (self.host_ip, host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    fn overlaps_mapping(&self, other: &Mapping) -> bool {
        self.overlaps(other.protocol, other.host_ip, other.host_port)
    }
}

impl std::fmt::Display for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match self.container_addr {
            IpAddr::V4(a) => format!("{a}:{}", self.container_port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.container_port),
        };
        match self.host_ip {
            Some(ip) => write!(
                f,
                "{}/{} on {ip} -> {target}",
                self.host_port, self.protocol
            ),
            None => write!(f, "{}/{} -> {target}", self.host_port, self.protocol),
        }
    }
}

/// The bridge-wide rules wanted for one subnet of a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeRules {
    /// Masquerade traffic from the subnet that leaves through another interface (ipMasq).
    pub masquerade: bool,
    /// Drop container-to-container traffic over the bridge, published ports excepted (icc=false).
    pub isolate: bool,
}

/// What the table holds for one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRules {
    /// The addresses recorded with the attachment.
    pub addresses: Vec<IpAddr>,
    pub mappings: Vec<Mapping>,
}

/// A mapping found in the table, with the tag of the container it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub tag: String,
    pub mapping: Mapping,
}

/// The comment that marks a container's rules: `<network>:<container id>/<ifname>`. Network names
/// and container ids hold neither `:` nor `/` (nor spaces), so a tag is read back unambiguously and
/// never looks like a bridge or base comment. When that is longer than nft allows, the container id
/// is shortened with a stable hash (marked `~`, a character ids never contain).
pub fn tag(network: &str, container_id: &str, ifname: &str) -> String {
    let full = format!("{network}:{container_id}/{ifname}");
    if full.len() <= MAX_COMMENT {
        return full;
    }
    let hash = fnv1a64(full.as_bytes());
    let room = MAX_COMMENT
        .saturating_sub(network.len() + ifname.len() + 19)
        .max(8);
    let keep: String = container_id.chars().take(room).collect();
    let short = format!("{network}:{keep}~{hash:016x}/{ifname}");
    // A network name long enough to overflow on its own is cut too; the hash keeps tags distinct.
    short.chars().take(MAX_COMMENT).collect()
}

/// The parts of a tag: (network, container id, ifname). The container id is None when the tag had to
/// be shortened (the full id cannot be recovered).
pub fn parse_tag(tag: &str) -> Option<(&str, Option<&str>, &str)> {
    let (network, rest) = tag.split_once(':')?;
    let (container_id, ifname) = rest.rsplit_once('/')?;
    if network.is_empty() || container_id.is_empty() || ifname.is_empty() {
        return None;
    }
    let id = (!container_id.contains('~')).then_some(container_id);
    Some((network, id, ifname))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn bridge_prefix(bridge: &str) -> String {
    format!("bridge {bridge} ")
}

fn masquerade_comment(bridge: &str, subnet: IpNetwork) -> String {
    format!("{}masquerade {}", bridge_prefix(bridge), network_of(subnet))
}

fn hairpin_comment(bridge: &str, subnet: IpNetwork) -> String {
    format!("{}hairpin {}", bridge_prefix(bridge), network_of(subnet))
}

fn local_comment(bridge: &str) -> String {
    format!("{}local", bridge_prefix(bridge))
}

fn icc_published_comment(bridge: &str) -> String {
    format!("{}icc-published", bridge_prefix(bridge))
}

fn icc_drop_comment(bridge: &str) -> String {
    format!("{}icc-drop", bridge_prefix(bridge))
}

fn network_of(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

/// The nftables operations of one host (the network namespace `nft` runs in: the caller's).
#[derive(Debug, Clone)]
pub struct Firewall {
    table: String,
    nft: PathBuf,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall::new()
    }
}

/// What the table holds now. `rules` is empty when the table does not exist.
struct Snapshot {
    exists: bool,
    rules: Vec<Rule<'static>>,
}

impl Snapshot {
    fn has_comment(&self, comment: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.comment.as_deref() == Some(comment))
    }

    fn base_complete(&self) -> bool {
        let count = |chain: &str| {
            self.rules
                .iter()
                .filter(|r| r.chain == chain && r.comment.as_deref() == Some(BASE_COMMENT))
                .count()
        };
        count(PREROUTING) == 1 && count(OUTPUT) == 3
    }

    /// True when nothing but the fixed rules is left: the table can go.
    fn only_base(&self) -> bool {
        self.rules
            .iter()
            .all(|r| r.comment.as_deref() == Some(BASE_COMMENT))
    }
}

impl Firewall {
    pub fn new() -> Firewall {
        Firewall::with_table(TABLE)
    }

    /// A firewall on another table name (tests).
    pub fn with_table(table: &str) -> Firewall {
        Firewall {
            table: table.to_string(),
            nft: find_nft(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether our table exists.
    pub fn exists(&self) -> Result<bool> {
        Ok(self.snapshot()?.exists)
    }

    /// The bridge-wide rules of `subnet` behind `bridge`: masquerade of traffic from the subnet
    /// leaving through any other interface (when `rules.masquerade`); always, masquerade of
    /// connections to published ports that come back into the bridge from the subnet (hairpin:
    /// without it the reply would go straight from container to container, which isolation drops
    /// and the client would not expect) or from the host itself; and, when `rules.isolate`, the
    /// icc=false forward rules. Idempotent; each rule is added in the forward chain or
    /// postrouting in one transaction.
    pub fn ensure_bridge_rules(
        &self,
        bridge: &str,
        subnet: IpNetwork,
        rules: BridgeRules,
    ) -> Result<()> {
        let snap = self.snapshot()?;
        let mut batch = Batch::new();
        self.add_base(&snap, &mut batch);
        let wanted = self.bridge_rules(bridge, subnet, rules);
        // The forward rules only work in their order (accept before drop): if one is missing,
        // both are written anew.
        let forward_broken = wanted
            .iter()
            .any(|(chain, comment, _)| *chain == FORWARD && !snap.has_comment(comment));
        // Rules of this bridge and subnet that the options no longer want (icc or ipMasq changed
        // in the network's configuration since the bridge was made) go in the same transaction:
        // the bridge follows the configuration of its latest ADD.
        let every = self.bridge_rules(
            bridge,
            subnet,
            BridgeRules {
                masquerade: true,
                isolate: true,
            },
        );
        let mut changed = 0;
        for (_, comment, _) in every {
            if snap.has_comment(&comment) && !wanted.iter().any(|(_, c, _)| *c == comment) {
                self.delete_commented(&snap, &comment, &mut batch);
                changed += 1;
            }
        }
        for (chain, comment, stmts) in wanted {
            if chain == FORWARD && forward_broken {
                self.delete_commented(&snap, &comment, &mut batch);
            } else if snap.has_comment(&comment) {
                continue;
            }
            batch.add(self.rule(chain, stmts, &comment));
            changed += 1;
        }
        if changed == 0 && snap.exists && snap.base_complete() {
            return Ok(());
        }
        self.apply(batch, &format!("add the rules of {subnet} on {bridge}"))
    }

    /// The comments of the bridge rules [`Firewall::ensure_bridge_rules`] would add that are
    /// missing (empty when everything is in place), for CHECK.
    pub fn missing_bridge_rules(
        &self,
        bridge: &str,
        subnet: IpNetwork,
        rules: BridgeRules,
    ) -> Result<Vec<String>> {
        let snap = self.snapshot()?;
        let mut missing: Vec<String> = self
            .bridge_rules(bridge, subnet, rules)
            .into_iter()
            .map(|(_, comment, _)| comment)
            .filter(|c| !snap.has_comment(c))
            .collect();
        if !snap.base_complete() {
            missing.push(BASE_COMMENT.to_string());
        }
        Ok(missing)
    }

    /// Removes every rule of `bridge` (all its subnets), and the table when nothing else is left.
    /// Returns how many rules went.
    pub fn remove_bridge_rules(&self, bridge: &str) -> Result<usize> {
        let prefix = bridge_prefix(bridge);
        self.remove_where(&format!("remove the rules of {bridge}"), |c| {
            c.starts_with(&prefix)
        })
    }

    /// Records the container tagged `tag` (with its bridge addresses) and publishes `mappings` for
    /// it, all in one transaction. Refused with [`Error::PortInUse`] (and nothing changed) when a
    /// host port and protocol is already published on this host on an overlapping host address
    /// ([`Mapping::overlaps`]), by anyone, or twice in `mappings` for different targets.
    pub fn add_container(
        &self,
        tag: &str,
        addresses: &[IpAddr],
        mappings: &[Mapping],
    ) -> Result<()> {
        let snap = self.snapshot()?;
        let existing = published_in(&snap);
        check_conflicts(&existing, tag, mappings)?;
        let mut batch = Batch::new();
        self.add_base(&snap, &mut batch);
        for addr in addresses {
            batch.add(self.rule(ATTACHMENTS, attachment_statements(*addr), tag));
        }
        for m in mappings {
            batch.add(self.rule(PUBLISHED, dnat_statements(m), tag));
        }
        let list: Vec<String> = mappings.iter().map(|m| m.to_string()).collect();
        let action = if list.is_empty() {
            format!("record {tag}")
        } else {
            format!("publish {} for {tag}", list.join(", "))
        };
        self.apply(batch, &action)
    }

    /// Who publishes `port`/`protocol` on `host_ip` (None: any address) on this host, if anyone:
    /// lets a caller refuse a taken port before it changes anything else.
    pub fn holder_of(
        &self,
        protocol: Protocol,
        host_ip: Option<IpAddr>,
        port: u16,
    ) -> Result<Option<String>> {
        Ok(self
            .list_port_mappings()?
            .into_iter()
            .find(|p| p.mapping.overlaps(protocol, host_ip, port))
            .map(|p| p.tag))
    }

    /// The recorded addresses and published ports of the container tagged `tag`; None when the
    /// table has no rule of it.
    pub fn container(&self, tag: &str) -> Result<Option<ContainerRules>> {
        let snap = self.snapshot()?;
        let mut found = false;
        let mut rules = ContainerRules::default();
        for rule in snap
            .rules
            .iter()
            .filter(|r| r.comment.as_deref() == Some(tag))
        {
            found = true;
            if rule.chain == ATTACHMENTS {
                rules.addresses.extend(parse_attachment(&rule.expr));
            } else if rule.chain == PUBLISHED {
                rules.mappings.extend(parse_mapping(&rule.expr));
            }
        }
        Ok(found.then_some(rules))
    }

    /// Every published port on this host.
    pub fn list_port_mappings(&self) -> Result<Vec<Published>> {
        Ok(published_in(&self.snapshot()?))
    }

    /// The tags of every container that has rules here.
    pub fn tags(&self) -> Result<BTreeSet<String>> {
        let snap = self.snapshot()?;
        Ok(snap
            .rules
            .iter()
            .filter_map(|r| r.comment.as_deref())
            .filter(|c| is_tag(c))
            .map(str::to_string)
            .collect())
    }

    /// Removes every rule tagged `tag`, and the table when nothing else is left. Returns how many
    /// rules went; 0 (and success) when there were none.
    pub fn remove_tagged(&self, tag: &str) -> Result<usize> {
        self.remove_where(&format!("remove rules of {tag}"), |c| c == tag)
    }

    /// Deletes the table if it holds nothing but the fixed rules. Returns whether it went.
    pub fn remove_table_if_unused(&self) -> Result<bool> {
        let snap = self.snapshot()?;
        if !snap.exists || !snap.only_base() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.delete(NfListObject::Table(self.table_object()));
        self.apply(batch, &format!("delete table inet {}", self.table))?;
        Ok(true)
    }

    fn remove_where(&self, action: &str, matches: impl Fn(&str) -> bool) -> Result<usize> {
        let snap = self.snapshot()?;
        if !snap.exists {
            return Ok(0);
        }
        let doomed: Vec<&Rule> = snap
            .rules
            .iter()
            .filter(|r| r.comment.as_deref().is_some_and(&matches))
            .collect();
        let rest_is_base = snap.rules.iter().all(|r| {
            let c = r.comment.as_deref();
            c == Some(BASE_COMMENT) || c.is_some_and(&matches)
        });
        let mut batch = Batch::new();
        if rest_is_base {
            // Nothing of anyone else is left: the whole table goes, in the same transaction.
            batch.delete(NfListObject::Table(self.table_object()));
        } else if doomed.is_empty() {
            return Ok(0);
        } else {
            for rule in &doomed {
                batch.delete(self.rule_handle(rule));
            }
        }
        self.apply(batch, action)?;
        Ok(doomed.len())
    }

    /// Adds the deletion of every rule commented `comment` to `batch`.
    fn delete_commented(&self, snap: &Snapshot, comment: &str, batch: &mut Batch<'static>) {
        for rule in snap
            .rules
            .iter()
            .filter(|r| r.comment.as_deref() == Some(comment))
        {
            batch.delete(self.rule_handle(rule));
        }
    }

    fn rule_handle(&self, rule: &Rule) -> NfListObject<'static> {
        rule_handle(&self.table, rule)
    }

    fn table_object(&self) -> Table<'static> {
        table_object(&self.table)
    }

    fn rule(
        &self,
        chain: &str,
        stmts: Vec<Statement<'static>>,
        comment: &str,
    ) -> NfListObject<'static> {
        NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            chain: chain.to_string().into(),
            expr: Cow::Owned(stmts),
            handle: None,
            index: None,
            comment: Some(comment.to_string().into()),
        })
    }

    /// Adds table, chains and fixed rules to `batch` where the snapshot lacks them. `add` of an
    /// existing table or chain is a no-op for nft, so only rules need the check.
    fn add_base(&self, snap: &Snapshot, batch: &mut Batch<'static>) {
        batch.add(NfListObject::Table(self.table_object()));
        let base_chain = |name: &str, hook: NfHook, prio: i32| Chain {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            name: name.to_string().into(),
            _type: Some(NfChainType::NAT),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        };
        batch.add(NfListObject::Chain(base_chain(
            PREROUTING,
            NfHook::Prerouting,
            DSTNAT,
        )));
        batch.add(NfListObject::Chain(base_chain(
            OUTPUT,
            NfHook::Output,
            DSTNAT,
        )));
        batch.add(NfListObject::Chain(base_chain(
            POSTROUTING,
            NfHook::Postrouting,
            SRCNAT,
        )));
        batch.add(NfListObject::Chain(Chain {
            _type: Some(NfChainType::Filter),
            ..base_chain(FORWARD, NfHook::Forward, FILTER)
        }));
        for regular in [PUBLISHED, ATTACHMENTS] {
            batch.add(NfListObject::Chain(Chain {
                family: NfFamily::INet,
                table: self.table.clone().into(),
                name: regular.into(),
                ..Chain::default()
            }));
        }
        if snap.base_complete() {
            return;
        }
        // A partial base (someone deleted a rule by hand) is replaced as a whole.
        self.delete_commented(snap, BASE_COMMENT, batch);
        let jump = || {
            vec![
                matches(fib_type(FibFlag::Daddr), Operator::EQ, string("local")),
                Statement::Jump(JumpTarget {
                    target: PUBLISHED.into(),
                }),
            ]
        };
        batch.add(self.rule(PREROUTING, jump(), BASE_COMMENT));
        // Connections to loopback stay local: DNAT of 127.0.0.1 to a bridge would need
        // route_localnet on the host, which we do not touch.
        let loopback = |family: &'static str, net: &str| {
            vec![
                matches(
                    payload(family, "daddr"),
                    Operator::EQ,
                    prefix(net.parse().expect("constant network")),
                ),
                Statement::Return(None),
            ]
        };
        batch.add(self.rule(OUTPUT, loopback("ip", "127.0.0.0/8"), BASE_COMMENT));
        batch.add(self.rule(OUTPUT, loopback("ip6", "::1/128"), BASE_COMMENT));
        batch.add(self.rule(OUTPUT, jump(), BASE_COMMENT));
    }

    fn bridge_rules(
        &self,
        bridge: &str,
        subnet: IpNetwork,
        rules: BridgeRules,
    ) -> Vec<(&'static str, String, Vec<Statement<'static>>)> {
        let subnet = network_of(subnet);
        let family = if subnet.is_ipv4() { "ip" } else { "ip6" };
        let from_subnet = || matches(payload(family, "saddr"), Operator::EQ, prefix(subnet));
        let iifname = || matches(meta(MetaKey::Iifname), Operator::EQ, string(bridge));
        let oifname = |op| matches(meta(MetaKey::Oifname), op, string(bridge));
        // `in`, not `==`: the status is a bit mask and "dnat" one of its bits.
        let dnatted = || matches(ct("status"), Operator::IN, string("dnat"));
        let mut out = Vec::new();
        if rules.masquerade {
            out.push((
                POSTROUTING,
                masquerade_comment(bridge, subnet),
                vec![
                    from_subnet(),
                    oifname(Operator::NEQ),
                    Statement::Masquerade(None),
                ],
            ));
        }
        out.push((
            POSTROUTING,
            hairpin_comment(bridge, subnet),
            vec![
                from_subnet(),
                oifname(Operator::EQ),
                dnatted(),
                Statement::Masquerade(None),
            ],
        ));
        // From the host itself to a published port: the container answers the bridge's address,
        // whatever its default route is.
        out.push((
            POSTROUTING,
            local_comment(bridge),
            vec![
                oifname(Operator::EQ),
                dnatted(),
                matches(fib_type(FibFlag::Saddr), Operator::EQ, string("local")),
                Statement::Masquerade(None),
            ],
        ));
        if rules.isolate {
            out.push((
                FORWARD,
                icc_published_comment(bridge),
                vec![
                    iifname(),
                    oifname(Operator::EQ),
                    dnatted(),
                    Statement::Accept(None),
                ],
            ));
            out.push((
                FORWARD,
                icc_drop_comment(bridge),
                vec![iifname(), oifname(Operator::EQ), Statement::Drop(None)],
            ));
        }
        out
    }

    /// Reads the table.
    fn snapshot(&self) -> Result<Snapshot> {
        Ok(match read_table(&self.nft, &self.table)? {
            Some(rules) => Snapshot {
                exists: true,
                rules,
            },
            None => Snapshot {
                exists: false,
                rules: Vec::new(),
            },
        })
    }

    fn apply(&self, batch: Batch<'static>, action: &str) -> Result<()> {
        apply(&self.nft, batch, action)
    }
}

/// The rules of `table inet <table>`, in chain order; None when the table does not exist. Tables
/// are listed first so that a missing table is told apart from a failing `nft` without reading
/// its error text.
fn read_table(nft: &Path, table: &str) -> Result<Option<Vec<Rule<'static>>>> {
    let tables = helper::get_current_ruleset_with_args(Some(nft), &["list", "tables"])
        .map_err(|e| Error::nft("list tables", e))?;
    let exists = tables.objects.iter().any(|o| {
        matches!(o, NfObject::ListObject(NfListObject::Table(t))
            if t.family == NfFamily::INet && t.name == table)
    });
    if !exists {
        return Ok(None);
    }
    let listing =
        helper::get_current_ruleset_with_args(Some(nft), &["list", "table", "inet", table])
            .map_err(|e| Error::nft(&format!("list table inet {table}"), e))?;
    Ok(Some(rules_of(listing)))
}

/// Hands `batch` to `nft` as one transaction.
fn apply(nft: &Path, batch: Batch<'static>, action: &str) -> Result<()> {
    let doc: Nftables = batch.to_nftables();
    log::debug!(
        "nft {action}: {}",
        serde_json::to_string(&doc).unwrap_or_default()
    );
    helper::apply_ruleset_with_args(&doc, Some(nft), helper::DEFAULT_ARGS)
        .map_err(|e| Error::nft(action, e))
}

fn rules_of(listing: Nftables<'static>) -> Vec<Rule<'static>> {
    listing
        .objects
        .into_owned()
        .into_iter()
        .filter_map(|o| match o {
            NfObject::ListObject(NfListObject::Rule(r)) => Some(r),
            _ => None,
        })
        .collect()
}

fn is_tag(comment: &str) -> bool {
    parse_tag(comment).is_some() && !comment.contains(' ')
}

fn published_in(snap: &Snapshot) -> Vec<Published> {
    snap.rules
        .iter()
        .filter(|r| r.chain == PUBLISHED)
        .filter_map(|r| {
            let tag = r.comment.as_deref().filter(|c| is_tag(c))?;
            match parse_mapping(&r.expr) {
                Some(mapping) => Some(Published {
                    tag: tag.to_string(),
                    mapping,
                }),
                None => {
                    log::warn!("rule {:?} of {tag} is not a port mapping", r.handle);
                    None
                }
            }
        })
        .collect()
}

/// A rule of `table` by its handle alone: what deleting it needs.
fn rule_handle(table: &str, rule: &Rule) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: table.to_string().into(),
        chain: rule.chain.clone().into_owned().into(),
        expr: Cow::Owned(Vec::new()),
        handle: rule.handle,
        index: None,
        comment: None,
    })
}

/// One of our `inet` tables, by name.
fn table_object(table: &str) -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: table.to_string().into(),
        handle: None,
    }
}

fn check_conflicts(existing: &[Published], tag: &str, mappings: &[Mapping]) -> Result<()> {
    let in_use = |m: &Mapping, holder: &str| Error::PortInUse {
        protocol: m.protocol,
        port: m.host_port,
        holder: holder.to_string(),
    };
    for (i, m) in mappings.iter().enumerate() {
        if let Some(p) = existing.iter().find(|p| p.mapping.overlaps_mapping(m)) {
            return Err(in_use(m, &p.tag));
        }
        // The same port twice in one request is fine only as the two families of one mapping.
        let clash = mappings[..i].iter().any(|earlier| {
            earlier.overlaps_mapping(m)
                && !(earlier.host_ip == m.host_ip
                    && earlier.container_port == m.container_port
                    && earlier.container_addr.is_ipv4() != m.container_addr.is_ipv4())
        });
        if clash {
            return Err(in_use(m, tag));
        }
    }
    Ok(())
}

fn attachment_statements(addr: IpAddr) -> Vec<Statement<'static>> {
    let family = if addr.is_ipv4() { "ip" } else { "ip6" };
    vec![
        matches(
            payload(family, "saddr"),
            Operator::EQ,
            string(addr.to_string()),
        ),
        Statement::Return(None),
    ]
}

fn parse_attachment(stmts: &[Statement]) -> Option<IpAddr> {
    stmts.iter().find_map(|s| match s {
        Statement::Match(Match {
            left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(field))),
            right: Expression::String(addr),
            ..
        }) if field.field == "saddr" => addr.parse().ok(),
        _ => None,
    })
}

fn dnat_statements(m: &Mapping) -> Vec<Statement<'static>> {
    let (family, nfproto, nat_family) = if m.container_addr.is_ipv4() {
        ("ip", "ipv4", NATFamily::IP)
    } else {
        ("ip6", "ipv6", NATFamily::IP6)
    };
    let mut stmts = Vec::new();
    match m.host_ip {
        Some(ip) => stmts.push(matches(
            payload(family, "daddr"),
            Operator::EQ,
            string(ip.to_string()),
        )),
        // The family has to be explicit: `dnat ip to` must never see an IPv6 packet.
        None => stmts.push(matches(
            meta(MetaKey::Nfproto),
            Operator::EQ,
            string(nfproto),
        )),
    }
    stmts.push(matches(
        payload(m.protocol.as_str(), "dport"),
        Operator::EQ,
        Expression::Number(u32::from(m.host_port)),
    ));
    stmts.push(Statement::DNAT(Some(NAT {
        addr: Some(string(m.container_addr.to_string())),
        family: Some(nat_family),
        port: Some(Expression::Number(u32::from(m.container_port))),
        flags: None,
    })));
    stmts
}

/// Reads a DNAT rule back (as `nft -j` lists it) into the mapping it implements.
fn parse_mapping(stmts: &[Statement]) -> Option<Mapping> {
    let mut protocol = None;
    let mut host_port = None;
    let mut host_ip = None;
    let mut target = None;
    for stmt in stmts {
        match stmt {
            Statement::Match(Match {
                left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(field))),
                right,
                op: Operator::EQ,
            }) => match (field.protocol.as_ref(), field.field.as_ref(), right) {
                (p, "dport", Expression::Number(n)) => {
                    protocol = Protocol::parse(p);
                    host_port = u16::try_from(*n).ok();
                }
                ("ip" | "ip6", "daddr", Expression::String(s)) => host_ip = s.parse().ok(),
                _ => {}
            },
            Statement::DNAT(Some(NAT {
                addr: Some(Expression::String(addr)),
                port: Some(Expression::Number(port)),
                ..
            })) => target = Some((addr.parse().ok()?, u16::try_from(*port).ok()?)),
            _ => {}
        }
    }
    let (container_addr, container_port) = target?;
    Some(Mapping {
        protocol: protocol?,
        host_ip,
        host_port: host_port?,
        container_addr,
        container_port,
    })
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn string(s: impl Into<String>) -> Expression<'static> {
    Expression::String(s.into().into())
}

fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.to_string().into(),
            field: field.to_string().into(),
        },
    )))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

fn fib_type(flag: FibFlag) -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: [flag].into_iter().collect(),
    }))
}

fn prefix(net: IpNetwork) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(net.network().to_string().into())),
        len: u32::from(net.prefix()),
    }))
}

/// `nft` from PATH, else its usual places: runtimes do not always pass a PATH to plugins.
fn find_nft() -> PathBuf {
    let from_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nft"))
            .find(|p| p.is_file())
    });
    from_path
        .or_else(|| {
            ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
                .iter()
                .map(Path::new)
                .find(|p| p.is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("nft"))
}
